"""The fast decoder's rank table as one C kernel on CPU, built with the system's C compiler on first use.

:meth:`RankPlan.ranks <lscdistill.systems.ranks.RankPlan.ranks>` is a tensor program of ~90 small aten ops (block
maxima, int64 keys, ``amax`` knock-out rounds, ``first_outside``): on CPU each op costs a dispatch, and the whole was
~50x the cost of reading the batch once. ``native.c`` does the same per row in two vectorized passes (AVX2 where the
CPU has it, plain C otherwise) and returns the same coordinates, values and row scales, bit for bit (the tests
compare them on tie-heavy rows, signed zeros and rows that need rescaling). It is used for float32 CPU batches,
eagerly and under ``torch.compile`` (as the custom op ``lscdistill::rank_table``); ``torch.export``, CUDA and other
dtypes run the tensor program, so an exported file never depends on this library.

The shared library is compiled once per source and compiler (~1 s) into ``$LSCDISTILL_CACHE`` (default
``~/.cache/lscdistill``; ``$XDG_CACHE_HOME`` is honoured) with ``$CC`` (default: Python's compiler, else ``cc``).
Without a compiler, or with ``LSCDISTILL_NATIVE=0``, everything runs the tensor program: the same answers, slower,
and one warning says why (none when switched off). Memory: the outputs (``[B, K]``, ``K`` <= 11) and one row of
scratch; nothing grows with the number of classes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .pattern import PatternSystem
    from .ranks import RankPlan

__all__ = ["Spec", "available", "decode", "disabled", "library_path", "spec", "usable"]

SOURCE = Path(__file__).with_name("native.c")
MAX_LIST = 32  # LSC_MAX in native.c: most top (bottom) coordinates a row's list holds
FLAGS = ("-O3", "-std=gnu11", "-ffp-contract=off", "-fPIC", "-shared")  # no FMA: the same float32 bits as aten


def _cache_dir() -> Path:
    if "LSCDISTILL_CACHE" in os.environ:
        return Path(os.environ["LSCDISTILL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lscdistill"


def _compiler() -> list[str]:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def library_path() -> Path:
    """Where the library for this source, compiler and machine is (or will be) cached."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(repr((_compiler(), FLAGS, platform.machine(), platform.system())).encode())
    return _cache_dir() / f"native-{key.hexdigest()[:16]}.so"


def _build(path: Path) -> None:
    """Compile ``native.c`` to ``path``: into a temporary file beside it, then renamed (concurrent builds by several
    processes each rename a complete file)."""
    cc = _compiler()
    if shutil.which(cc[0]) is None:
        raise OSError(f"no C compiler {cc[0]!r} (set CC)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run([*cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True)
        if done.returncode:
            raise OSError(f"{shlex.join(cc)} failed: {done.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)  # mkstemp made it private: other users of a shared cache load it too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _kernel() -> ctypes._CFuncPtr | None:
    if os.environ.get("LSCDISTILL_NATIVE", "1") == "0":
        return None
    path = library_path()
    try:
        if not path.exists():
            _build(path)
        fn = ctypes.CDLL(str(path)).lsc_decode
    except OSError as err:
        warnings.warn(
            f"lscdistill: the fast decoder's C kernel is not available ({err}); decoding runs the tensor program "
            "(the same answers, slower). LSCDISTILL_NATIVE=0 silences this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    fn.argtypes = [ptr, i64, i64, i64, i32, i32, i32, ptr, ptr, i64, i32, i32] + [ptr] * 14
    fn.restype = i32
    return fn


# torch.compile runs the kernel as a custom op (torch >= 2.4, and telling export from compile needs
# torch.compiler.is_exporting); with an older torch, tracing takes the tensor program
_TRACEABLE = hasattr(torch.library, "custom_op") and hasattr(torch.compiler, "is_exporting")


@getattr(torch.compiler, "assume_constant_result", lambda fn: fn)
def available() -> bool:
    """The kernel is built (or could be now) and not switched off; a constant to ``torch.compile``."""
    return _kernel() is not None


class Spec(NamedTuple):
    """What :func:`decode` needs of a pattern system: its rank plan's lists and, when every family is searched by
    variants, the scoring tables (``RankPlan.joint_tables``) and ``families`` (``[n, per family: first index,
    groups, then (k, stride) per group]``); ``scored`` False: the rank table only."""

    n_top: int
    n_bottom: int
    block_p: list[int]
    block_q: list[int]
    drop_col: int
    scored: bool
    dot_cols: torch.Tensor
    vals: torch.Tensor
    norms: torch.Tensor
    pos_cols: torch.Tensor
    family: torch.Tensor
    families: torch.Tensor


def spec(system: PatternSystem) -> Spec:
    """The :class:`Spec` of a (float32, CPU) pattern system, kept on the system once built outside tracing."""
    found = system._native.get("spec")
    if found is None:
        found = _spec(system)
        if all(type(t) is torch.Tensor for t in found if isinstance(t, torch.Tensor)):  # not tracing's fakes
            system._native["spec"] = found
    return found


def _spec(system: PatternSystem) -> Spec:
    plan = system._plan
    ps = sorted(plan.blocks)
    joint = plan.joint_tables(torch.device("cpu"), torch.float32)
    families = [len(system.families)]
    for fam, lo in zip(system.families, system.offsets, strict=False):
        groups = [v for (_, k), stride in zip(fam.groups, fam._strides, strict=True) for v in (k, stride)]
        families += [lo, len(fam.groups), *groups]
    none = torch.empty(0, dtype=torch.long)
    tables = joint if joint is not None else (none, none.float(), none.float(), none, none)
    return Spec(
        plan.n_top, plan.n_bottom, ps, [plan.blocks[p] for p in ps], plan.n_coords - 1 if plan.drop_last else -1,
        joint is not None, *tables, torch.tensor(families, dtype=torch.long),
    )  # fmt: skip


_off = False  # inside disabled()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Decode with the tensor program inside the block (its reference; what export and CUDA run), e.g. to compare
    the two or to time the kernel against it."""
    global _off
    before, _off = _off, True
    try:
        yield
    finally:
        _off = before


def usable(z: torch.Tensor, plan: RankPlan) -> bool:
    """:func:`decode` serves this batch and plan: float32 on CPU, lists short enough, not being exported."""
    return (
        not _off
        and z.device.type == "cpu"
        and z.dtype == torch.float32
        and z.dim() == 2
        and plan.n_top <= MAX_LIST
        and plan.n_bottom <= MAX_LIST
        and (not torch.compiler.is_compiling() or (_TRACEABLE and not torch.compiler.is_exporting()))
        and available()
    )


Decoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def decode(z: torch.Tensor, spec: Spec) -> Decoded:
    """The fast search of float32 rows ``z [B, width]`` on CPU (see :func:`usable`) up to the rows' norms:

    ``(divisor [B], ok [B], finite [B], coords [B, K], values [B, K], index [B], score [B])``: what
    :func:`~lscdistill.systems.base.row_divisor` gives from the rows' largest magnitudes, then
    :meth:`RankPlan.ranks <lscdistill.systems.ranks.RankPlan.ranks>` of the rows divided by the divisor, then (with
    ``spec.scored``; else ``index`` and ``score`` are empty) ``PatternSystem._best`` of that rank table: the base
    system's index and ``x . v / |v|``.
    """
    if torch.compiler.is_compiling():
        return torch.ops.lscdistill.decode(z, *spec)
    return _run(z, *spec)


def _run(
    z: torch.Tensor,
    n_top: int,
    n_bottom: int,
    block_p: list[int],
    block_q: list[int],
    drop_col: int,
    scored: bool,
    dot_cols: torch.Tensor,
    vals: torch.Tensor,
    norms: torch.Tensor,
    pos_cols: torch.Tensor,
    family: torch.Tensor,
    families: torch.Tensor,
) -> Decoded:
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("the native decoder is not available (see lscdistill.systems.native)")
    if z.stride(1) != 1:
        z = z.contiguous()
    rows, width = z.shape
    k = n_top + sum(block_q) + (drop_col >= 0)
    n_var, n_slots = (dot_cols.shape[1], dot_cols.shape[0]) if scored else (0, 0)
    divisor, ok, finite = z.new_empty(rows), z.new_empty(rows, dtype=torch.bool), z.new_empty(rows, dtype=torch.bool)
    coords, values = z.new_empty((rows, k), dtype=torch.long), z.new_empty((rows, k))
    index, score = z.new_empty(rows if scored else 0, dtype=torch.long), z.new_empty(rows if scored else 0)
    blocks = torch.tensor([*block_p, *block_q], dtype=torch.long)
    scratch = z.new_empty(width)  # one row divided by its divisor (held here: the kernel writes it)
    done = kernel(
        z.data_ptr(), rows, width, z.stride(0), n_top, n_bottom, len(block_p), blocks.data_ptr(),
        blocks.data_ptr() + 8 * len(block_p), drop_col, n_var, n_slots, dot_cols.data_ptr(), vals.data_ptr(),
        norms.data_ptr(), pos_cols.data_ptr(), family.data_ptr(), families.data_ptr(), scratch.data_ptr(),
        divisor.data_ptr(), ok.data_ptr(), finite.data_ptr(), coords.data_ptr(), values.data_ptr(), index.data_ptr(),
        score.data_ptr(),
    )  # fmt: skip
    if done:
        raise ValueError("the native decoder cannot take this system (lists, slots or families out of range)")
    return divisor, ok, finite, coords, values, index, score


def _decode_op(
    z: torch.Tensor,
    n_top: int,
    n_bottom: int,
    block_p: list[int],
    block_q: list[int],
    drop_col: int,
    scored: bool,
    dot_cols: torch.Tensor,
    vals: torch.Tensor,
    norms: torch.Tensor,
    pos_cols: torch.Tensor,
    family: torch.Tensor,
    families: torch.Tensor,
) -> Decoded:
    tables = (dot_cols, vals, norms, pos_cols, family, families)
    return _run(z, n_top, n_bottom, block_p, block_q, drop_col, scored, *tables)  # eagerly, decode() calls _run


def _decode_fake(z, n_top, n_bottom, block_p, block_q, drop_col, scored, *tables):
    rows, k, m = z.shape[0], n_top + sum(block_q) + (drop_col >= 0), z.shape[0] if scored else 0
    flags = (z.new_empty(rows, dtype=torch.bool), z.new_empty(rows, dtype=torch.bool))
    table = (z.new_empty((rows, k), dtype=torch.long), z.new_empty((rows, k)))
    return z.new_empty(rows), *flags, *table, z.new_empty(m, dtype=torch.long), z.new_empty(m)


if _TRACEABLE:
    _decode_op = torch.library.custom_op("lscdistill::decode", _decode_op, mutates_args=(), device_types="cpu")
    _decode_op.register_fake(_decode_fake)
