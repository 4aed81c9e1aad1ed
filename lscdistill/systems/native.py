"""The fast decoder's search on CPU as one C kernel, built with the system's C compiler on first use.

``PatternSystem._search`` as a tensor program (:func:`~lscdistill.systems.extremes.row_extremes`,
:meth:`RankPlan.ranks <lscdistill.systems.ranks.RankPlan.ranks>`, ``PatternSystem._best``) is ~230 small aten ops on
a batch; on CPU each op costs its dispatch, and the whole was ~80x the cost of reading the batch once at 1.28M
classes. ``native.c`` does the same per row, two vectorized passes (AVX2 where the CPU has it, else portable 4-wide
vectors) then the rank table and the best variant, and returns the same divisor, flags, rank table, index and score,
bit for bit (``tests/test_native.py`` compares them on tie-heavy rows, signed zeros, rows that need rescaling and
degenerate rows). It serves float32 CPU batches eagerly and under ``torch.compile`` (as the custom op
``lscdistill::decode``); ``torch.export``, CUDA, other dtypes, other tracers (``jit.trace``, ``vmap``, fake
tensors) and inputs that require grad run the tensor program, so an exported file never needs this library; systems
beyond the kernel's limits get the rank table from it and are scored by the tensor program (see :func:`spec`).

The shared library is compiled once per source, compiler and machine (~1 s) into ``$LSCDISTILL_CACHE`` (default
``$XDG_CACHE_HOME/lscdistill`` or ``~/.cache/lscdistill``) with ``$CC``, else the first of Python's compiler, ``cc``,
``gcc`` and ``clang`` found. Without a compiler, or with ``LSCDISTILL_NATIVE=0``, everything runs the tensor
program: the same answers, slower, and one warning says why (none when switched off). Memory: the outputs
(``[B, K]``, ``K`` <= 11 for the registered systems) and one row of scratch; nothing grows with the number of
classes.
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

__all__ = ["Spec", "available", "decode", "disabled", "library_path", "portable_rows", "spec", "usable"]

SOURCE = Path(__file__).with_name("native.c")
MAX_LIST = 32  # LSC_MAX in native.c: most top (bottom) coordinates a row's list holds
FLAGS = ("-O3", "-std=gnu11", "-ffp-contract=off", "-fPIC", "-shared")  # no FMA: the same float32 bits as aten


MAX_FAMILIES, MAX_GROUPS, MAX_COLS = 8, 8, 64  # the same names in native.c


def _cache_dir() -> Path:
    if os.environ.get("LSCDISTILL_CACHE"):
        return Path(os.environ["LSCDISTILL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lscdistill"


def _compiler() -> list[str]:
    """``$CC`` when set, else the first compiler found of Python's own, ``cc``, ``gcc``, ``clang`` (else ``cc``)."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    candidates = [shlex.split(sysconfig.get_config_var("CC") or "cc"), ["cc"], ["gcc"], ["clang"]]
    return next((cc for cc in candidates if cc and shutil.which(cc[0])), ["cc"])


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


def _load(path: Path) -> ctypes._CFuncPtr:
    """The library's ``lsc_decode``, its ``lsc_plain_only`` switch beside it (``.plain_only``)."""
    lib = ctypes.CDLL(str(path))
    fn = lib.lsc_decode
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    fn.argtypes = [ptr, i64, i64, i64, i32, i32, i32, ptr, ptr, i64, i32, i32] + [ptr] * 14
    fn.restype = i32
    fn.plain_only = ctypes.c_int.in_dll(lib, "lsc_plain_only")
    return fn


@functools.cache
def _kernel() -> ctypes._CFuncPtr | None:
    """The kernel, built if need be (once per process: the answer is cached); ``None`` after one warning."""
    if os.environ.get("LSCDISTILL_NATIVE", "1") == "0":
        return None
    try:
        path = library_path()
        if path.exists():
            try:
                return _load(path)
            except (OSError, AttributeError, ValueError):  # a damaged or foreign file in the cache: built again
                path.unlink()
        _build(path)
        return _load(path)
    except Exception as err:  # no compiler, no source, no cache directory: the tensor program, never a crash
        warnings.warn(
            f"lscdistill: the fast decoder's C kernel is not available ({err}); decoding runs the tensor program "
            "(the same answers, slower). LSCDISTILL_NATIVE=0 silences this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


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


def spec(system: PatternSystem) -> Spec | None:
    """The :class:`Spec` of a (float32, CPU) pattern system, kept on the system once built outside tracing;
    ``None`` when its rank table is beyond the kernel's limits."""
    if "spec" not in system._native:
        found = _spec(system)
        if found is None or all(type(t) is torch.Tensor for t in found if isinstance(t, torch.Tensor)):
            system._native["spec"] = found  # (not tracing's fake tensors)
        return found
    return system._native["spec"]


def _spec(system: PatternSystem) -> Spec | None:
    from .families import Family

    plan = system._plan
    ps = sorted(plan.blocks)
    drop_col = plan.n_coords - 1 if plan.drop_last else -1
    if plan.n_top > MAX_LIST or plan.n_bottom > MAX_LIST or plan.n_cols > MAX_COLS:
        return None
    families = system.families
    joint = plan.joint_tables(torch.device("cpu"), torch.float32)
    scored = (
        len(families) <= MAX_FAMILIES
        and all(len(f.groups) <= MAX_GROUPS and type(f).index is Family.index for f in families)  # its arithmetic
        and joint is not None
    )
    none = torch.empty(0, dtype=torch.long)
    tables = (none, none.float(), none.float(), none, none)
    layout = [len(families)]
    if scored:
        tables = joint
        for fam, lo in zip(families, system.offsets, strict=False):
            groups = [v for (_, k), stride in zip(fam.groups, fam._strides, strict=True) for v in (k, stride)]
            layout += [lo, len(fam.groups), *groups]
    blocks = [plan.blocks[p] for p in ps]
    return Spec(plan.n_top, plan.n_bottom, ps, blocks, drop_col, scored, *tables, torch.tensor(layout))


_off = False  # inside disabled()
_functorch_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", lambda z: False)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Decode with the tensor program inside the block (its reference; what export and CUDA run), e.g. to compare
    the two or to time the kernel against it. The switch is process-wide (every thread)."""
    global _off
    before, _off = _off, True
    try:
        yield
    finally:
        _off = before


@contextlib.contextmanager
def portable_rows() -> Iterator[None]:
    """Inside the block the kernel runs its portable rows (4-wide vectors, what a CPU without AVX2 runs) even where
    the CPU has AVX2: for the tests and the benchmarks. Process-wide and not for overlapping use by several threads
    (the first to leave switches it back for all); the kernel must be available."""
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("the native decoder is not available (see lscdistill.systems.native)")
    flag = kernel.plain_only
    before, flag.value = flag.value, 1
    try:
        yield
    finally:
        flag.value = before


def _tracing_mode() -> bool:
    """A fake, proxy (``make_fx``) or functional dispatch mode is on: tensors without data, or a trace that would
    not see the kernel's writes. (Other modes, such as an op counter, see the kernel's outputs made and pass.)"""
    keys = getattr(torch._C, "_TorchDispatchModeKey", None)
    if keys is None:  # an older torch: any mode at all
        return torch._C._len_torch_dispatch_stack() > 0
    return any(torch._C._get_dispatch_mode(k) is not None for k in (keys.FAKE, keys.PROXY, keys.FUNCTIONAL))


def usable(z: torch.Tensor) -> bool:
    """:func:`decode` serves this batch: float32 on CPU, and either plain eager (no other tracer, mode or wrapper,
    no grad) or ``torch.compile`` (the custom op), not ``torch.export``."""
    if _off or z.device.type != "cpu" or z.dtype != torch.float32 or z.dim() != 2:
        return False
    if torch.compiler.is_compiling():
        return _TRACEABLE and not torch.compiler.is_exporting() and available()
    plain = type(z) is torch.Tensor and not z.requires_grad and not z.is_neg()
    return (
        plain
        and not torch.jit.is_tracing()
        and not _tracing_mode()
        and not _functorch_wrapped(z)  # vmap, grad
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
    n_var, n_slots = (dot_cols.shape[1], dot_cols.shape[0]) if scored else (0, 0)
    divisor, ok, finite, coords, values, index, score = _outputs(z, n_top, block_q, drop_col, scored)
    blocks = torch.tensor([*block_p, *block_q], dtype=torch.long)
    scratch = z.new_empty(width)  # one row divided by its divisor (held here: the kernel writes it)
    done = kernel(
        z.data_ptr(), rows, width, z.stride(0), n_top, n_bottom, len(block_p), blocks.data_ptr(),
        blocks.data_ptr() + 8 * len(block_p), drop_col, n_var, n_slots, dot_cols.data_ptr(), vals.data_ptr(),
        norms.data_ptr(), pos_cols.data_ptr(), family.data_ptr(), families.data_ptr(), scratch.data_ptr(),
        divisor.data_ptr(), ok.data_ptr(), finite.data_ptr(), coords.data_ptr(), values.data_ptr(), index.data_ptr(),
        score.data_ptr(),
    )  # fmt: skip
    if done:  # spec() keeps systems beyond the limits away: not reached
        raise ValueError("the native decoder cannot take this system (lists, slots or families out of range)")
    return divisor, ok, finite, coords, values, index, score


def _outputs(z: torch.Tensor, n_top: int, block_q: list[int], drop_col: int, scored: bool) -> Decoded:
    """Empty outputs of :func:`decode` for ``z`` (real or fake tensors: the kernel fills them, or tracing reads
    their shapes)."""
    rows, k, m = z.shape[0], n_top + sum(block_q) + (drop_col >= 0), z.shape[0] if scored else 0
    flags = (z.new_empty(rows, dtype=torch.bool), z.new_empty(rows, dtype=torch.bool))
    table = (z.new_empty((rows, k), dtype=torch.long), z.new_empty((rows, k)))
    return z.new_empty(rows), *flags, *table, z.new_empty(m, dtype=torch.long), z.new_empty(m)


def _decode_fake(z, n_top, n_bottom, block_p, block_q, drop_col, scored, *tables):
    return _outputs(z, n_top, block_q, drop_col, scored)


if _TRACEABLE:  # the op runs _run (eagerly, decode() calls _run directly: no dispatch)
    _decode_op = torch.library.custom_op("lscdistill::decode", _run, mutates_args=(), device_types="cpu")
    _decode_op.register_fake(_decode_fake)
