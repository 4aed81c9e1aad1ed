"""The training loop's overhead: one epoch through ``lscdistill train`` vs a bare PyTorch + timm loop.

Both read the same image folder (MNIST from :mod:`benchmarks.realdata`) with the same loader settings (batch
size, workers, timm's eval transform through timm's reader, no augmentation), train the same model (a timm
backbone with ``num_classes=0`` and a linear projection to ``dim``) with AdamW toward the same A_nr centers with the
cosine loss, one epoch. The bare loop, written here, is what a user would write by hand: a ``DataLoader`` over a
shuffled order, ``centers[y]`` from a table of the classes it needs, ``loss.backward()``, ``optimizer.step()``.
``lscdistill train`` adds everything a run has (its loader, sharding, gradient accumulation bookkeeping, the
schedule, progress, logging, checkpoints at the end of the epoch) with ``--bn-batches 0`` and no validation, so
what is compared is the training epoch itself; its samples/s is the run's own (``metrics.jsonl`` at the last step,
from the first batch to the last optimizer step), the bare loop's is measured the same way.

Variants: generated centers (``--system an``) and a means store of 1,000,000 classes (``--centers``; the labels
0-9 of the data pick 10 of its rows, read through the store's chunk cache every step), each with 0, 1 and 2
``DataLoader`` workers. Every run is a fresh process; rounds alternate the variants so a drift of the machine hits
all alike. Headline: lscdistill's overhead over the bare loop per variant and worker count (target <= 3%).

    python -m benchmarks.bench_trainloop --worker '{...}'   # one bare-loop run (internal)
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


@dataclass
class Config:
    model: str = "resnet18"
    img_size: int = 32
    batch: int = 64
    dim: int = 64
    workers: tuple[int, ...] = (0, 1, 2)
    store_classes: int = 1_000_000
    rounds: int = 2
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


def bare_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """One epoch of a hand-written loop: returns samples/s from the first batch to the last optimizer step."""
    import timm
    from timm.data import create_dataset, create_transform, resolve_data_config

    torch.manual_seed(0)
    backbone = timm.create_model(spec["model"], pretrained=False, num_classes=0)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, spec["dim"]))
    cfg = resolve_data_config({}, model=backbone)
    size = spec["img_size"]
    transform = create_transform(  # what lscdistill's resolve_preprocess gives for an image folder
        (3, size, size), interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"]
    )
    dataset = create_dataset("", root=spec["data"], split="", search_split=False, transform=transform)
    order = np.random.default_rng(0).permutation(len(dataset)).tolist()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=spec["batch"], sampler=order, num_workers=spec["workers"], persistent_workers=False
    )
    centers = _centers_table(10, spec["dim"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-5)
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        z = model(x)
        loss = 1 - torch.nn.functional.cosine_similarity(z, centers[y], dim=1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen += len(y)
    float(loss)
    return {"samples": seen, "samples_per_s": seen / (time.perf_counter() - start)}


def _bare(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_trainloop", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"bare loop failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _lscdistill(spec: dict[str, Any], run: Path, centers: Path | None) -> dict[str, Any]:
    steps = -(-spec["samples"] // spec["batch"])
    cmd = [sys.executable, "-m", "lscdistill", "train", "--model", spec["model"], "--data", spec["data"],
           "--img-size", spec["img_size"], "--dim", spec["dim"], "-b", spec["batch"], "--epochs", 1,
           "--workers", spec["workers"], "--bn-batches", 0, "--log-every", steps, "--lr", "3e-3",
           "--schedule", "constant", "--warmup-steps", 0, "--out", run, "--overwrite", "-q"]  # fmt: skip
    if centers is not None:
        cmd += ["--centers", centers]
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env={**os.environ})
    if proc.returncode != 0:
        raise RuntimeError(f"lscdistill train failed:\n{proc.stderr[-3000:]}")
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    return {"samples": steps * spec["batch"], "samples_per_s": last["samples_per_s"], "step": last["step"]}


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


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config=asdict(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(cfg.cache or tmp)
        split = realdata.write_mnist(root / "mnist", limit_per_class=cfg.limit_per_class)
        samples = sum(1 for _ in Path(split.train).rglob("*.png"))
        store = Path(tmp) / "store.h5"
        _store(store, cfg.store_classes, cfg.dim)
        os.sync()
        rates: dict[tuple[str, int], list[float]] = {}
        for _ in range(cfg.rounds):
            for workers in cfg.workers:
                spec = {"model": cfg.model, "img_size": cfg.img_size, "batch": cfg.batch, "dim": cfg.dim}
                spec |= {"workers": workers, "data": split.train, "samples": samples}
                for variant in ("bare", "lsc-system", "lsc-store"):
                    if variant == "bare":
                        out = _bare(spec)
                    else:
                        out = _lscdistill(spec, Path(tmp) / variant, store if variant == "lsc-store" else None)
                    rates.setdefault((variant, workers), []).append(out["samples_per_s"])
    for (variant, workers), values in sorted(rates.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rate = statistics.median(values)
        row = {"n_classes": cfg.store_classes if variant == "lsc-store" else 10, "method": variant}
        row |= {"case": f"{cfg.model} {cfg.img_size}px b{cfg.batch}, {workers} workers", "workers": workers}
        section.rows.append(row | {"samples_per_s": rate, "values": values, "note": f"{rate:,.0f} images/s"})
        if variant != "bare":
            bare = statistics.median(rates["bare", workers])
            overhead = 100 * (bare / rate - 1)
            section.headlines.append(
                headline(
                    f"lscdistill train overhead over a bare loop ({variant}, {workers} workers)",
                    overhead,
                    unit="%",
                    target=OVERHEAD_TARGET,
                    higher_is_better=False,
                    n_classes=cfg.store_classes if variant == "lsc-store" else 10,
                )
            )
    section.notes.append(
        f"One epoch of {samples:,} MNIST images, median of {cfg.rounds} round(s); the store variant's store has "
        f"{cfg.store_classes:,} classes x {cfg.dim} dims."
    )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", required=True, help="JSON description of one bare-loop run (see bare_loop())")
    print(json.dumps(bare_loop(json.loads(parser.parse_args().worker))))


if __name__ == "__main__":
    main()
