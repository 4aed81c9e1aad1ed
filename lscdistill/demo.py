"""``lscdistill demo``: the whole pipeline on the digits shipped with scikit-learn, in a few minutes on a CPU.

1. train a cross-entropy teacher; 2. ``extract`` its class means; 3. ``snap`` them to A_n; 4. train students toward
(a) the teacher's means, (b) the snapped centers, (c) generated A_nr centers; 5. ``evaluate`` each by exact and
fast decoding; 6. print a table and write a report folder::

    OUT/runs/{teacher,student-means,student-snapped,student-anr}/   lscdistill train run directories
    OUT/stores/{teacher-means,snapped}.h5                             extract / snap stores
    OUT/training-curves.png, latent-2d.png, latent-3d.png, continual.png
    OUT/report.json, OUT/report.md                                    the table, the config, the timings
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .options import opt

__all__ = ["DemoConfig", "run_demo"]

MARKER = ".lscdistill-demo"  # marks a folder the demo wrote, so --overwrite never deletes anything else


@dataclass
class DemoConfig:
    out: Path = opt(Path("lscdistill-demo"), "Report folder (runs, stores, PNGs, report.md).", "--out", "-o")  # noqa: RUF009
    model: str = opt("test_resnet", "timm model of the teacher and the students.", "--model", "-m")
    data: str = "digits"  # digits:train trains, digits:val evaluates (the demo runs on digits only)
    epochs: int = opt(15, "Epochs of every training run.", min=1)
    batch_size: int = opt(64, "Batch size.", "--batch-size", "-b", min=1)
    lr: float | None = opt(None, "AdamW learning rate (default: train's, 3e-3 lsc / 1e-3 ce).")
    dim: int | None = opt(None, "Dim of the A_nr student (default: the model's width).", min=2)
    seed: int = opt(0, "Data order, initialisation and the A_nr shuffle key.")
    aug: str = opt("none", "Training augmentation of every run, as train's --aug (e.g. light, randaugment).")
    mixup: float = opt(0.0, "Mixup alpha of every run, as train's --mixup (e.g. 0.2); 0: off.", min=0.0)
    pictures: bool = opt(True, "Write latent-space and training-curve PNGs.", "--pictures/--no-pictures")
    overwrite: bool = opt(False, "Replace a report folder the demo wrote.")
    quiet: bool = opt(False, "No progress bars.", "--quiet", "-q")


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} was not written by lscdistill demo; refusing to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by lscdistill demo\n")


def _params(run_dir: Path) -> int:
    from .models import load_run_model

    model = load_run_model(run_dir)[0]
    return sum(p.numel() for p in model.parameters())


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the pipeline, print the table and write the report; returns what ``report.json`` holds."""
    from .evaluate import EvalConfig, run_evaluate
    from .extract import ExtractConfig, run_extract
    from .snap import SnapConfig, run_snap
    from .train import TrainConfig, run_train

    console = console or Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    if cfg.data != "digits":
        raise ValueError(f"the demo runs on the digits shipped with scikit-learn (--data digits), got {cfg.data!r}")
    out = Path(cfg.out)
    _prepare(out, cfg.overwrite)
    runs, stores = out / "runs", out / "stores"
    runs.mkdir()
    stores.mkdir()
    base = TrainConfig(
        out=runs / "teacher",
        model=cfg.model,
        data="digits:train",
        val_data="digits:val",
        lr=cfg.lr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        aug=cfg.aug,
        mixup=cfg.mixup,
        quiet=cfg.quiet,
    )
    timings: dict[str, float] = {}
    total = 6 if cfg.pictures else 5

    def step(n: int, title: str) -> None:
        console.rule(f"[bold]{n}/{total}[/] {title}", align="left")

    def timed(name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        timings[name] = time.perf_counter() - start
        return result

    step(1, f"cross-entropy teacher ({cfg.model}, {cfg.epochs} epochs on digits:train)")
    timed("teacher", run_train, replace(base, objective="ce"))
    step(2, "extract the teacher's class means")
    means = stores / "teacher-means.h5"
    timed(
        "extract",
        run_extract,
        ExtractConfig(out=means, data="digits:train", checkpoint=str(runs / "teacher"), quiet=cfg.quiet),
    )
    step(3, "snap the means to distinct A_n roots (maximum total cosine)")
    snapped = stores / "snapped.h5"
    _, snap_report = timed(
        "snap", run_snap, SnapConfig(means=means, out=snapped, system="an", seed_system=cfg.seed, method="exact")
    )
    console.print(
        f"  mean cosine of a class mean to its root {snap_report.mean_cosine:.3f} "
        f"(min {snap_report.min_cosine:.3f}), {snap_report.not_top1} classes not on their own nearest root"
    )
    students = {
        "student-means": ("teacher's class means", {"centers": str(means)}),
        "student-snapped": ("snapped A_n roots", {"centers": str(snapped)}),
        "student-anr": ("generated A_nr", {"system": "an", "seed_system": cfg.seed, "dim": cfg.dim}),
    }
    for name, (what, fields) in students.items():
        step(4, f"student toward the {what}")
        timed(name, run_train, replace(base, out=runs / name, **fields))
    step(5, "evaluate on digits:val by exact and fast decoding")
    rows = []
    for name, what in [("teacher", "cross-entropy head"), *((n, w) for n, (w, _) in students.items())]:
        result = run_evaluate(EvalConfig(run_dir=runs / name, data="digits:val"))
        rows.append(
            {
                "run": name,
                "centers": what,
                "samples": result["samples"],
                "top1": result["top1"],
                "top1_fast": result.get("top1_fast"),
                "fast_exact_agreement": result.get("fast_exact_agreement"),
                "new_class_flags": result.get("new_class_flags"),
                "params": _params(runs / name),
                "train_seconds": timings[name],
            }
        )
    pictures: list[str] = []
    if cfg.pictures:
        step(6, "pictures: training curves, latent spaces at dim 2 and 3, continual learning")
        from .demo_figures import latent_figures
        from .plots import plot_training_curves

        start = time.perf_counter()
        curves = plot_training_curves([runs / r["run"] for r in rows], out / "training-curves.png")
        figures = latent_figures(out, seed=cfg.seed, quiet=True)
        pictures = [Path(p).name for p in [curves, *figures]]
        timings["pictures"] = time.perf_counter() - start
    teacher = rows[0]["top1"]
    for r in rows:
        r["vs_teacher"] = r["top1"] / teacher if teacher else None
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "rows": rows,
        "snap": {k: v for k, v in snap_report.to_dict().items() if k != "timings"},
        "timings": timings,
        "pictures": pictures,
    }
    console.print(_table(rows))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(_markdown(rows, pictures))
    console.print(f"report: {out / 'report.md'}", highlight=False)
    return report


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


COLUMNS = ["run", "centers", "top-1 exact", "top-1 fast", "fast = exact", "new-class", "params", "train s"]


def _cells(r: dict[str, Any]) -> list[str]:
    flags = "-" if r["new_class_flags"] is None else str(r["new_class_flags"])
    return [
        r["run"],
        r["centers"],
        _pct(r["top1"]),
        _pct(r["top1_fast"]),
        _pct(r["fast_exact_agreement"]),
        flags,
        f"{r['params']:,}",
        f"{r['train_seconds']:.0f}",
    ]


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"lscdistill demo: accuracy on digits:val ({rows[0]['samples']} images)")
    for i, c in enumerate(COLUMNS):
        table.add_column(c, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*_cells(r))
    return table


def _markdown(rows: list[dict[str, Any]], pictures: list[str]) -> str:
    lines = ["# lscdistill demo", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    lines += ["", *(f"![{p}]({p})" for p in pictures)]
    return "\n".join(lines) + "\n"
