"""Exported inference (``lscdistill export``): file size as the classes grow, and speed beside the run's own
``predict``.

- **Size**: the same student (an MLP on 512-d features, projection to the planned dimension) exported with
  generated A_nr centers (one interpolation level) at 10, 1M and 10M classes: the file holds the system's formulas,
  not its vectors. Beside it, the same student with a class-means table: written at 10 and 1M classes; at 10M the
  size is the table's ``10M x n_dim x 4`` bytes plus the model (computed, not written: 4 GB).
- **Speed**: ``resnet18`` at 32 px toward 1,000 A_nr centers (random weights: speed does not depend on them), batch 1
  latency and batch 256 throughput of (a) the loaded ``.pt2`` program, (b) ``lscdistill.load(run).predict`` (the
  same module, eager) and (c) what ``lscdistill predict`` computes per batch (the model, exact and fast decoding;
  no file reading), timed interleaved.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from lscdistill.centers import SystemCenters, TableCenters
from lscdistill.evaluate import _predict_batch
from lscdistill.export import example_inputs, export_module, load_artifact
from lscdistill.inference import DecisionModule, describe
from lscdistill.models import build_student
from lscdistill.planner import plan_dim
from lscdistill.systems import create_system

from ._common import Section, headline, measure_interleaved, ratio

PREPROCESS = {"img_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}


@dataclass
class Config:
    size_classes: tuple[int, ...] = (10, 1_000_000, 10_000_000)
    table_classes: tuple[int, ...] = (10, 1_000_000)  # class-means tables actually written
    in_dim: int = 512
    model: str = "resnet18"
    speed_classes: int = 1000
    batches: tuple[int, ...] = (1, 256)
    repeats: int = 30
    budget_s: float = 15.0

    @classmethod
    def quick(cls) -> Config:
        return cls(size_classes=(10, 100_000), table_classes=(10,), model="test_resnet", repeats=5, budget_s=3.0)


def _export_size(module: DecisionModule, meta: dict, path: Path) -> int:
    export_module(module, example_inputs(module, meta), path, describe(meta, module))
    return path.stat().st_size


def _sizes(cfg: Config, section: Section, tmp: Path) -> None:
    n_dim = plan_dim(max(cfg.size_classes), "an", 1)
    system = create_system("an", n_dim, seed=0, interpolations=1)
    spec = {"architecture": "mlp", "in_dim": cfg.in_dim, "hidden": 256, "n_dim": n_dim, "project": True}
    torch.manual_seed(0)
    model = build_student(spec).eval()
    meta = {"model": spec, "n_classes": 0}
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    for n in cfg.size_classes:
        meta["n_classes"] = n
        size = _export_size(DecisionModule(model, SystemCenters(system, n), None), meta, tmp / f"sys{n}.pt2")
        note = (
            f"{size / 2**20:.2f} MiB file; A_{n_dim}r, 1 interpolation level; parameters {model_bytes / 2**20:.1f} MiB"
        )
        section.rows.append({"n_classes": n, "case": "generated", "method": "pt2-size", "bytes": size, "note": note})
    for n in cfg.size_classes:
        meta["n_classes"] = n
        if n in cfg.table_classes:
            table = torch.randn(n, n_dim)
            size = _export_size(DecisionModule(model, TableCenters(table), None), meta, tmp / f"tab{n}.pt2")
            note, base = "written", size - n * n_dim * 4
            del table
        else:
            size, note = base + n * n_dim * 4, "computed: the written files' size without their table, plus the table"
        note = f"{size / 2**20:,.2f} MiB file; {note}"
        section.rows.append({"n_classes": n, "case": "class means", "method": "pt2-size", "bytes": size, "note": note})
    generated = [r["bytes"] for r in section.rows if r["case"] == "generated"]
    figure = f"export size at {max(cfg.size_classes):,} / {min(cfg.size_classes)} classes, generated centers"
    section.headlines.append(headline(figure, generated[-1] / generated[0], unit="x"))


def _speed(cfg: Config, section: Section, device: torch.device, tmp: Path) -> None:
    spec = {"architecture": cfg.model, "n_dim": 64, "project": True, "in_chans": 3}
    torch.manual_seed(0)
    model = build_student(spec).to(device).eval()
    centers = SystemCenters(create_system("an", 64, seed=0), cfg.speed_classes)
    module = DecisionModule(model, centers, PREPROCESS).to(device)
    meta = {"model": spec, "n_classes": cfg.speed_classes, "preprocess": PREPROCESS}
    export_module(module.cpu(), example_inputs(module, meta), tmp / "speed.pt2", describe(meta, module))
    program = load_artifact(tmp / "speed.pt2").to(device)
    module = module.to(device)
    for batch in cfg.batches:
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)).to(device)
        normalized = (x - 0.5) / 0.5
        with torch.inference_mode():
            timed = measure_interleaved(
                {
                    "exported": partial(program, x),
                    "load-predict": partial(module, x),
                    "predict-command": partial(_predict_batch, model, centers, normalized),
                },
                device,
                cfg.repeats,
                budget_s=cfg.budget_s,
            )
        same = torch.equal(timed["exported"][1][0], timed["predict-command"][1]["fast_label"])
        for method, (t, _) in timed.items():
            note = f"{batch / t['median']:,.0f} images/s" + ("" if method != "exported" else f"; same labels: {same}")
            section.rows.append(
                {"n_classes": cfg.speed_classes, "case": f"{cfg.model} 32px, batch {batch}", "method": method}
                | {"time_s": t, "samples_per_s": batch / t["median"], "note": note}
            )
        r = ratio(timed["predict-command"][0], timed["exported"][0], paired=True)
        section.headlines.append(headline(f"predict per batch / exported program, batch {batch}", r))


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config=asdict(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        _sizes(cfg, section, Path(tmp))
        _speed(cfg, section, device, Path(tmp))
    return section
