"""Where the fast decoder's time goes, against the floor (one read of the batch), with the C kernel and without it.

At the predict benchmark's largest case (A_384r with one interpolation level, 1,281,167 classes, batch 1024,
near-center inputs), all in CPU time of one intra-op thread (``time.thread_time``, ``torch.set_num_threads(1)``),
each figure called in interleaved rounds with the floor (``z.sum()``) and given as a multiple of it:

- ``stage``: the decoder's steps one by one, on the same batch. With the C kernel (``lscdistill.systems.native``,
  what a float32 CPU batch runs): the kernel (row divisor, rank table and best variant), the rows divided and their
  norms, the seeded shuffle's inverse map. The tensor program it replaces (``tensor program:``, what export and
  CUDA run): the block maxima and minima (the full read of the batch that picks the extremes' candidates), the rank
  table from the block ends, scoring every variant and indexing the winner.
- ``primitive``: single aten operations the tensor program is built from or could be: a block reduction, a row
  reduction, ``argmax``/``topk`` over rows, an int64 remainder, and one elementwise op on ``[B]`` (what every small
  op costs at least: dispatch and launch).
- ``batch``: the fast predict / floor ratio at several batch sizes, with the kernel and with the tensor program (the
  per-call overhead of small ops weighs less as the batch grows; what remains is the per-row work), and at the main
  batch size with the kernel's portable rows (4-wide vectors: what a CPU without AVX2 runs).
- ``ops``: aten operations one fast predict dispatches (``TorchDispatchMode``), all and without views, both ways.
- ``compiled kernel``: with ``compiled``, the fast predict under ``torch.compile(fullgraph=True)`` and the CPU time
  the profiler gives each of inductor's fused kernels (``torch._inductor.config.cpp.enable_kernel_profile``) and the
  C kernel's custom op.

``python -m benchmarks run --only anatomy`` (CPU only: the ratios are about one CPU thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lscdistill.centers import SystemCenters
from lscdistill.systems import create_system, native
from lscdistill.systems.base import row_divisor
from lscdistill.systems.extremes import block_ends, block_width

from ._common import Section, headline
from .bench_predict import compile_fast, measure_cpu_interleaved, single_thread, tensor_program

VIEWS = {"view", "slice", "select", "unsqueeze", "expand", "as_strided", "squeeze", "t", "transpose", "unbind"}
VIEWS |= {"alias", "_unsafe_view", "reshape", "permute", "detach", "lift_fresh"}


@dataclass
class Config:
    classes: int = 1_281_167
    n_dim: int = 384
    batch: int = 1024
    batches: tuple[int, ...] = (256, 1024, 4096, 16384)  # the batch sweep
    rounds: int = 30  # interleaved rounds of each single-thread CPU-time measurement
    compiled: bool = True  # also compile the fast predict and list inductor's kernels

    @classmethod
    def quick(cls) -> Config:
        return cls(classes=3000, n_dim=24, batch=64, batches=(16, 64), rounds=4, compiled=False)


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _batch(centers: SystemCenters, batch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(batch)
    labels = torch.randint(0, centers.n_classes, (batch,), generator=gen)
    return centers.gather(labels) + 0.5 / centers.n_dim**0.5 * torch.randn(batch, centers.n_dim, generator=gen)


def _stages(centers: SystemCenters, z: torch.Tensor) -> tuple[dict, dict]:
    """The steps of ``PatternSystem._search`` (float32, drop-last) and the shuffle on ``z``, each callable alone:
    ``(with the C kernel, when it is available here; the tensor program's)``."""
    system = centers.system
    base = getattr(system, "base", system)
    plan = base._plan
    kernel, program = {}, {}
    spec = native.spec(base) if native.usable(z) else None
    if spec is not None:
        row_div = native.decode(z, spec)[0].unsqueeze(1)
        kernel["C kernel: row divisor, rank table, best variant"] = partial(native.decode, z, spec)
        kernel["rows divided and their norms"] = lambda: torch.linalg.vector_norm(z / row_div, dim=1)
    ends = block_ends(z)
    divisor, _, _ = row_divisor(torch.maximum(ends[0].amax(dim=1), ends[1].amax(dim=1)).unsqueeze(1))
    x = z / divisor
    scaled = (ends[0] / divisor, ends[1] / divisor)
    ranks = plan.ranks(x, scaled)
    idx, _ = base._best(ranks)
    if system is not base:
        kernel["seeded shuffle, inverse map"] = partial(system.from_base, idx)
    program["tensor program: block ends (max and min of each block)"] = partial(block_ends, z)
    program["tensor program: rank table from the block ends"] = partial(plan.ranks, x, scaled)
    program["tensor program: score every variant, index the winner"] = partial(base._best, ranks)
    return kernel, program


def _portable_rows(fn: Callable, *args: object) -> object:
    """``fn(*args)`` with the C kernel's portable rows (what a CPU without AVX2 runs)."""
    with native.portable_rows():
        return fn(*args)


def _primitives(z: torch.Tensor) -> dict:
    b, n = z.shape
    w = block_width(n)
    small = torch.arange(b)
    keys = torch.randint(0, 2**40, (b, n // w))
    return {
        f"amax over {w}-wide blocks [B, N/{w}, {w}]": partial(torch.amax, z.view(b, n // w, w), 2),
        "amax over rows [B, N]": partial(torch.amax, z, 1),
        "argmax over rows [B, N]": partial(torch.argmax, z, 1),
        "topk(2) over rows [B, N]": partial(torch.topk, z, 2),
        f"int64 remainder [B, N/{w}]": partial(torch.remainder, keys, 12345),
        "one int64 op on [B] (dispatch floor)": partial(torch.bitwise_xor, small, 5),
    }


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config=asdict(cfg))
    if device.type != "cpu":
        section.notes.append("the anatomy is measured on CPU only (one thread); skipped on this device")
        return section
    system = create_system("an", cfg.n_dim, seed=0, interpolations=int(cfg.classes > cfg.n_dim * (cfg.n_dim + 1)))
    centers = SystemCenters(system, cfg.classes)
    z = _batch(centers, cfg.batch)
    case = f"batch {cfg.batch}"
    # each group in rounds of its own: between the kernel's calls, the tensor program's ~1 MB of temporaries would
    # evict the batch from the cache and charge that to the kernel
    kernel, program = _stages(centers, z)
    for kind, fns in (("stage", kernel), ("stage", program), ("primitive", _primitives(z))):
        times = measure_cpu_interleaved({"floor": z.sum, **fns}, cfg.rounds)
        _rows(section, cfg.classes, case, kind, times)
    if not native.usable(z):
        section.notes.append("the C kernel is not available here: every figure is the tensor program's")
    for batch in cfg.batches:
        zb = _batch(centers, batch)
        methods = {
            "fast": partial(centers.predict, zb, "fast"),
            "fast, tensor program": partial(tensor_program, centers.predict, zb, "fast"),
        }
        if batch == cfg.batch and native.usable(zb):
            methods["fast, portable rows (no AVX2)"] = partial(_portable_rows, centers.predict, zb, "fast")
        for method, fn in methods.items():
            floor = f"floor ({method}'s rounds)"
            times = measure_cpu_interleaved({floor: zb.sum, method: fn}, cfg.rounds)
            _rows(section, cfg.classes, f"batch {batch}", "batch", times, floor)
            section.headlines.append(
                headline(
                    f"{method} / floor, 1-thread CPU time (x above the floor)",
                    times[method]["median"] / times[floor]["median"],
                    n_classes=cfg.classes,
                    case=f"batch {batch}",
                    higher_is_better=False,
                )
            )
    _op_counts(section, centers, z, cfg.classes, case)
    if cfg.compiled:
        _compiled_kernels(section, centers, z, cfg, case)
    return section


def _rows(section: Section, n: int, case: str, kind: str, times: dict, floor_key: str = "floor") -> None:
    floor = times[floor_key]["median"]
    for name, stat in times.items():
        if name != floor_key or kind == "batch":
            note = f"{stat['median'] / floor:.1f}x the floor ({floor * 1e6:.1f} us), 1-thread CPU time"
            section.rows.append(
                {"n_classes": n, "case": case, "method": f"{kind}: {name}", "time_s": stat, "note": note}
            )


def _op_counts(section: Section, centers: SystemCenters, z: torch.Tensor, n: int, case: str) -> None:
    for way, fn in (("", centers.predict), (", tensor program", partial(tensor_program, centers.predict))):
        fn(z, "fast")
        with _Count() as count:
            fn(z, "fast")
        compute = {k: v for k, v in count.ops.items() if k not in VIEWS}
        top = ", ".join(f"{k} {v}" for k, v in sorted(compute.items(), key=lambda kv: -kv[1])[:12])
        section.notes.append(
            f"one fast predict{way} dispatches {sum(count.ops.values())} aten ops, {sum(compute.values())} "
            f"without views; most frequent: {top}"
        )
        for figure, value in (
            (f"aten ops per fast predict{way}", sum(count.ops.values())),
            (f"without views{way}", sum(compute.values())),
        ):
            section.headlines.append(
                headline(figure, float(value), n_classes=n, case=case, unit="ops", higher_is_better=False)
            )


def _compiled_kernels(section: Section, centers: SystemCenters, z: torch.Tensor, cfg: Config, case: str) -> None:
    import torch._inductor.config as inductor_config
    from torch.profiler import profile

    with single_thread(), _kernel_profile(inductor_config):
        fn, _ = compile_fast(centers, z)
        times = measure_cpu_interleaved({"floor": z.sum, "fast compiled": partial(fn, z)}, cfg.rounds)
        calls = 20
        with profile() as prof:
            for _ in range(calls):
                fn(z)
    _rows(section, cfg.classes, case, "compiled", times)
    floor = times["floor"]["median"]
    for event in prof.key_averages():
        if "cpp_fused" in event.key or event.key == "lscdistill::decode":
            mean = event.self_cpu_time_total / 1e6 / calls
            fused = event.key.split("cpp_fused_", 1)[-1][:90]
            section.rows.append(
                {
                    "n_classes": cfg.classes,
                    "case": case,
                    "method": f"compiled kernel: {fused}",
                    "time_s": {"median": mean, "min": mean, "max": mean, "n": 1},
                    "note": f"{mean / floor:.1f}x the floor; profiler self time per call (mean of {calls})",
                }
            )


@contextlib.contextmanager
def _kernel_profile(config):
    before = config.cpp.enable_kernel_profile
    config.cpp.enable_kernel_profile = True
    try:
        yield
    finally:
        config.cpp.enable_kernel_profile = before
