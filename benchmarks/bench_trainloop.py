"""The training loop's overhead: one epoch through ``lscdistill train`` vs a bare PyTorch + timm loop.

Both read the same image folder (MNIST from :mod:`benchmarks.realdata`) in the same order (lscdistill's seeded
shuffle of epoch 0) with the same loader settings (batch size, workers, timm's eval transform through timm's
reader, no augmentation), train the same model (a timm backbone with ``num_classes=0`` and a linear projection to
``n_dim``) with AdamW toward the same A_nr centers with the cosine loss, one epoch. The bare loop, written here, is
what a user would write by hand: a ``DataLoader`` over the shuffled order, ``centers[y]`` from a table of the
classes it needs, ``loss.backward()``, ``optimizer.step()``. ``lscdistill train`` (its command line, run in the
worker process) adds everything a run has (its loader, sharding, gradient accumulation bookkeeping, Accelerate's
wrappers, the schedule, progress, logging, checkpoints at the end of the epoch) with ``--bn-batches 0`` and no
validation, so what is compared is the training epoch itself.

Both are timed the same way, from just before the first batch to the last optimizer step (lscdistill: from the run
log's creation to its entry at the last step), with the wall clock and the process's CPU time
(``time.process_time``). At 0 workers all the work is in that process, so its CPU time is the loop's cost, immune
to other load on the machine (which inflates wall time, the more so with several threads waiting on each other);
with workers it is the main process's share (the critical path when the workers keep up). Every process runs with
``threads`` intra-op threads (default 1: the overhead is a property of the loop, not of thread scheduling).

Variants: generated centers (``--system an``) and a means store of 1,000,000 classes (``--centers``; the labels
0-9 of the data pick 10 of its rows), each with 0, 1 and 2 ``DataLoader`` workers. Every run is a fresh process;
each round runs the bare loop and both lscdistill variants back to back (in reverse order every other round), so
a drift of the machine hits all alike; overheads are ratios of medians, their range the per-round ratios. The CPU
time that other processes took during each run is recorded (``others_cpu_share``: of the machine's CPU time).

    python -m benchmarks.bench_trainloop --worker '{...}'   # one run (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import realdata
from ._common import Section, headline

OVERHEAD_TARGET = 3.0  # percent (issue 13)
VARIANTS = ("bare", "lsc-system", "lsc-store")


@dataclass
class Config:
    model: str = "resnet18"
    img_size: int = 32
    batch: int = 64
    n_dim: int = 64
    workers: tuple[int, ...] = (0, 1, 2)
    store_classes: int = 1_000_000
    rounds: int = 2
    threads: int = 1  # intra-op threads of every process (OMP_NUM_THREADS and torch.set_num_threads)
    limit_per_class: int | None = None  # MNIST training images per class (default: all 400)
    cache: str | None = None  # where the image folder is written (default: a temporary directory)

    @classmethod
    def quick(cls) -> Config:
        return cls(model="test_resnet", workers=(0, 1), store_classes=100_000, rounds=1, limit_per_class=40)


def _centers_table(n_classes: int, dim: int) -> torch.Tensor:
    """The A_nr centers of classes 0..n_classes-1 (what ``lscdistill train --system an`` trains toward)."""
    from lscdistill.centers import SystemCenters
    from lscdistill.systems import create_system

    return SystemCenters(create_system("an", dim, seed=0), n_classes).gather(torch.arange(n_classes)).float()


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _span(start: tuple[float, float], end: tuple[float, float], samples: int) -> dict[str, Any]:
    wall, cpu = end[0] - start[0], end[1] - start[1]
    return {"samples": samples, "wall_s": wall, "cpu_s": cpu, "samples_per_s": samples / wall}


def bare_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """One epoch of a hand-written loop, timed from the first batch to the last optimizer step."""
    import timm
    from timm.data import create_dataset, create_transform, resolve_data_config

    torch.manual_seed(0)
    backbone = timm.create_model(spec["model"], pretrained=False, num_classes=0)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, spec["n_dim"]))
    cfg = resolve_data_config({}, model=backbone)
    size = spec["img_size"]
    transform = create_transform(  # what lscdistill's resolve_preprocess gives for an image folder
        (3, size, size), interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"]
    )
    dataset = create_dataset("", root=spec["data"], split="", search_split=False, transform=transform)
    order = np.random.default_rng([0, 0]).permutation(len(dataset)).tolist()  # lscdistill's order (seed 0, epoch 0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=spec["batch"], sampler=order, num_workers=spec["workers"], persistent_workers=False
    )
    centers = _centers_table(10, spec["n_dim"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-5)
    model.train()
    seen, start = 0, _clocks()
    for x, y in loader:
        z = model(x)
        loss = 1 - torch.nn.functional.cosine_similarity(z, centers[y], dim=1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen += len(y)
    float(loss.detach())
    return _span(start, _clocks(), seen)


def lscdistill_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """One epoch of ``lscdistill train`` (its command line, in this process), timed by the run log: from its
    creation (just before the first batch) to its entry at the last step."""
    from lscdistill import rundir
    from lscdistill.cli import app

    steps = -(-spec["samples"] // spec["batch"])
    marks: dict[str, tuple[float, float]] = {}
    init, log = rundir.RunLog.__init__, rundir.RunLog.log

    def timed_init(self, *args, **kwargs):
        marks["start"] = _clocks()
        init(self, *args, **kwargs)

    def timed_log(self, step, **values):
        if step == steps:
            marks["end"], marks["rate"] = _clocks(), values.get("samples_per_s")
        log(self, step, **values)

    rundir.RunLog.__init__, rundir.RunLog.log = timed_init, timed_log
    cmd = ["train", "--model", spec["model"], "--data", spec["data"], "--img-size", spec["img_size"],
           "--n-dim", spec["n_dim"], "-b", spec["batch"], "--epochs", 1, "--workers", spec["workers"],
           "--bn-batches", 0, "--log-every", steps, "--lr", "3e-3", "--schedule", "constant",
           "--warmup-steps", 0, "--out", spec["out"], "--overwrite", "-q"]  # fmt: skip
    if spec.get("centers"):
        cmd += ["--centers", spec["centers"]]
    try:
        app(list(map(str, cmd)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"lscdistill train exited with {exc.code}") from None
    return _span(marks["start"], marks["end"], spec["samples"]) | {"run_samples_per_s": marks["rate"]}


def _worker(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """One run in a fresh process; with the share of the machine's CPU time other processes took meanwhile."""
    from .runner import _cpu_seconds

    cmd = [sys.executable, "-m", "benchmarks.bench_trainloop", "--worker", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before, begin = _cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1], env=env)
    after, wall = _cpu_seconds(), time.perf_counter() - begin
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['loop']} loop failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if before is not None and after is not None:
        others = max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
        out["others_cpu_share"] = others / (wall * (os.cpu_count() or 1))
    return out


def _store(path: Path, n_classes: int, dim: int) -> None:
    """A means store whose first 10 rows are the A_nr centers (so both loops train toward the same targets)."""
    from lscdistill.stores import StoreWriter

    rng = np.random.default_rng(0)
    first = _centers_table(10, dim).numpy()
    with StoreWriter(path, kind="means", n_classes=n_classes, n_dim=dim, provenance={"benchmark": "trainloop"}) as w:
        for start in range(0, n_classes, 65536):
            rows = min(65536, n_classes - start)
            block = rng.standard_normal((rows, dim), dtype=np.float32)
            if start == 0:
                block[:10] = first
            w.write_rows(start, counts=np.ones(rows, dtype=np.int64), centers=block)


def _overhead(lsc: list[float], bare: list[float]) -> dict[str, float]:
    """Percent more time per sample than the bare loop: ratio of the medians, range of the per-round ratios."""
    per_round = [100 * (a / b - 1) for a, b in zip(lsc, bare, strict=True)]
    return {"value": 100 * (statistics.median(lsc) / statistics.median(bare) - 1), "low": min(per_round),
            "high": max(per_round)}  # fmt: skip


def _measure(cfg: Config, data: str, samples: int, store: Path, tmp: Path) -> dict[tuple[str, int], list[dict]]:
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(cfg.rounds):
        for workers in cfg.workers:
            spec = {"model": cfg.model, "img_size": cfg.img_size, "batch": cfg.batch, "n_dim": cfg.n_dim}
            spec |= {"workers": workers, "data": data, "samples": samples, "threads": cfg.threads}
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                loop = {"loop": "bare"} if variant == "bare" else {"loop": "lsc", "out": str(tmp / variant)}
                if variant == "lsc-store":
                    loop["centers"] = str(store)
                runs.setdefault((variant, workers), []).append(_worker(spec | loop, cfg.threads))
    return runs


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config=asdict(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(cfg.cache or tmp)
        split = realdata.write_mnist(root / "mnist", limit_per_class=cfg.limit_per_class)
        samples = sum(1 for _ in Path(split.train).rglob("*.png"))
        store = Path(tmp) / "store.h5"
        _store(store, cfg.store_classes, cfg.n_dim)
        os.sync()
        runs = _measure(cfg, split.train, samples, store, Path(tmp))
    for (variant, workers), outs in sorted(runs.items(), key=lambda kv: (kv[0][1], VARIANTS.index(kv[0][0]))):
        wall, cpu = [o["wall_s"] for o in outs], [o["cpu_s"] for o in outs]
        rate = statistics.median(o["samples_per_s"] for o in outs)
        row = {"n_classes": cfg.store_classes if variant == "lsc-store" else 10, "method": variant}
        row |= {"case": f"{cfg.model} {cfg.img_size}px b{cfg.batch}, {workers} workers", "workers": workers}
        row |= {"samples_per_s": rate, "wall_s": wall, "cpu_s": cpu, "runs": outs}
        note = f"{rate:,.0f} images/s, CPU {1e3 * statistics.median(cpu) / outs[0]['samples']:.2f} ms/image"
        section.rows.append(row | {"note": note})
        if variant == "bare":
            continue
        bare = runs["bare", workers]
        cpu_what = "CPU time" if workers == 0 else "main-process CPU time"
        for clock, what in (("wall_s", "wall time"), ("cpu_s", cpu_what)):
            target = None if clock == "cpu_s" and workers else OVERHEAD_TARGET  # workers: only part of the CPU time
            value = _overhead([o[clock] for o in outs], [o[clock] for o in bare])
            section.headlines.append(
                headline(
                    f"lscdistill train overhead over a bare loop, {what} ({variant}, {workers} workers)",
                    value,
                    unit="%",
                    target=target,
                    higher_is_better=False,
                    n_classes=cfg.store_classes if variant == "lsc-store" else 10,
                )
            )
    shares = [o["others_cpu_share"] for outs in runs.values() for o in outs if "others_cpu_share" in o]
    section.notes.append(
        f"One epoch of {samples:,} MNIST images, {cfg.rounds} round(s), {cfg.threads} intra-op thread(s) per "
        f"process; the store variant's store has {cfg.store_classes:,} classes x {cfg.n_dim} dims."
    )
    if shares:
        section.notes.append(
            f"Other processes took {statistics.median(shares):.0%} (median; max {max(shares):.0%}) of the machine's "
            "CPU time during the runs: wall times are contaminated by that much, CPU times much less."
        )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", required=True, help="JSON description of one run (see _measure())")
    spec = json.loads(parser.parse_args().worker)
    torch.set_num_threads(spec["threads"])
    print(json.dumps(bare_loop(spec) if spec["loop"] == "bare" else lscdistill_loop(spec)))


if __name__ == "__main__":
    main()
