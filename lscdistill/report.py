"""The ``report`` step of a recipe: a table of the runs the recipe evaluated, ``report.md`` / ``report.json`` and,
optionally, pictures (the end of the demo, ``recipes/demo.yaml``)::

    OUT/report.md, OUT/report.json       the table (one row per evaluate step before the report), timings, snap
    OUT/training-curves.png              with pictures: the evaluated runs' training curves, and the digits
    OUT/latent-2d.png, latent-3d.png, continual.png     latent spaces (lscdistill.demo_figures)

The report owns its folder: the recipe runner prepares it before the first step runs (an existing folder is
replaced only with ``overwrite`` and only if lscdistill wrote it), so the runs and stores of the recipe can live
inside it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import opt

if TYPE_CHECKING:
    from .recipes import Step
    from .steps import StepResult

__all__ = ["ReportConfig", "check_report", "prepare_report", "run_report"]

MARKER = ".lscdistill-demo"  # marks a folder lscdistill wrote, so overwrite never deletes anything else
COLUMNS = ["run", "centers", "top-1 exact", "top-1 fast", "fast = exact", "new-class", "params", "train s"]


@dataclass
class ReportConfig:
    """The ``report`` step: what it writes and how it labels the runs."""

    out: Path = opt(MISSING, "Report folder (report.md, report.json, PNGs); earlier steps may write inside it.")  # noqa: RUF009
    title: str = opt("lscdistill report", "Title of the table and of report.md.")
    centers: tuple[str, ...] = opt(
        (), "The table's centers column: one label per evaluate step before the report, in order (empty: -)."
    )
    pictures: bool = opt(
        True, "Draw the evaluated runs' training curves and the digits latent-space figures (paper Figures 6, 7)."
    )
    seed: int = opt(0, "Seed of the small models the latent-space figures train.")
    overwrite: bool = opt(False, "Replace a report folder lscdistill wrote (never another folder).")


def check_report(cfg: ReportConfig, earlier: Sequence[Step], where: str) -> None:
    """One ``centers`` label per evaluated run (checked when the recipe is read)."""
    evaluated = sum(step.kind == "evaluate" for step in earlier)
    if not evaluated:
        raise ValueError(f"{where} (report): no evaluate step before it; the report tabulates evaluated runs")
    if cfg.centers and len(cfg.centers) != evaluated:
        raise ValueError(
            f"{where} (report), field 'centers': {len(cfg.centers)} labels for the {evaluated} evaluate steps before it"
        )


def prepare_report(cfg: ReportConfig) -> None:
    """An empty report folder before the recipe's first step: a folder lscdistill wrote is replaced with
    ``overwrite``; any other non-empty folder is refused."""
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not cfg.overwrite:
            raise FileExistsError(
                f"{out} exists and is not empty; pass --overwrite (a recipe: report.overwrite=true) or choose "
                f"another --out"
            )
        if not (out / MARKER).is_file():
            raise FileExistsError(
                f"{out} was not written by lscdistill demo (or a report step); refusing to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by lscdistill demo\n")


def run_report(cfg: ReportConfig, earlier: Sequence[StepResult]) -> dict[str, Any]:
    """The table of the earlier evaluate steps (and pictures); returns what ``report.json`` holds."""
    from rich.console import Console

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = _rows(cfg, earlier)
    timings = {_timing_name(r): r.seconds for r in earlier}
    pictures: list[str] = []
    if cfg.pictures:
        start = time.perf_counter()
        pictures = _pictures(out, [Path(r.step.config.run_dir) for r in earlier if r.step.kind == "evaluate"], cfg)
        timings["pictures"] = time.perf_counter() - start
    snaps = [r.result[1] for r in earlier if r.step.kind == "snap" and r.result is not None]
    report = {
        "title": cfg.title,
        "rows": rows,
        "snap": {k: v for k, v in snaps[-1].to_dict().items() if k != "timings"} if snaps else None,
        "timings": timings,
        "pictures": pictures,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(_markdown(cfg.title, rows, pictures))
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    if snaps:
        s = snaps[-1]
        console.print(
            f"snap: mean cosine of a class mean to its vector {s.mean_cosine:.3f} (min {s.min_cosine:.3f}), "
            f"{s.not_top1} classes not on their own nearest vector",
            highlight=False,
        )
    console.print(_table(cfg.title, _data_name(earlier), rows))
    console.print(f"report: {out / 'report.md'}", highlight=False)
    return report


def _rows(cfg: ReportConfig, earlier: Sequence[StepResult]) -> list[dict[str, Any]]:
    """One row per evaluate step: its metrics, the run's parameter count and the time of the step that trained
    it; ``vs_teacher``: top-1 relative to the first row."""
    trained = {r.step.output.resolve(): r.seconds for r in earlier if r.step.kind == "train"}
    evaluated = [r for r in earlier if r.step.kind == "evaluate"]
    labels = cfg.centers or ("-",) * len(evaluated)
    rows = []
    for r, label in zip(evaluated, labels, strict=True):
        run_dir, metrics = Path(r.step.config.run_dir), r.result
        rows.append(
            {
                "run": run_dir.name,
                "centers": label,
                "samples": metrics["samples"],
                "top1": metrics["top1"],
                "top1_fast": metrics.get("top1_fast"),
                "fast_exact_agreement": metrics.get("fast_exact_agreement"),
                "new_class_flags": metrics.get("new_class_flags"),
                "params": _params(run_dir),
                "train_seconds": trained.get(run_dir.resolve()),
            }
        )
    first = rows[0]["top1"]
    for row in rows:
        row["vs_teacher"] = row["top1"] / first if first else None
    return rows


def _timing_name(r: StepResult) -> str:
    """``teacher`` (a train step: its run), ``extract``, ``snap``, ``evaluate teacher``, ``report``."""
    if r.step.kind == "train":
        return r.step.output.name
    if r.step.kind == "evaluate":
        return f"evaluate {Path(r.step.config.run_dir).name}"
    return r.step.kind


def _data_name(earlier: Sequence[StepResult]) -> str:
    cfg = next(r.step.config for r in earlier if r.step.kind == "evaluate")
    return str(cfg.data or cfg.features)


def _params(run_dir: Path) -> int:
    from .models import load_run_model

    model = load_run_model(run_dir)[0]
    return sum(p.numel() for p in model.parameters())


def _pictures(out: Path, runs: list[Path], cfg: ReportConfig) -> list[str]:
    from .demo_figures import latent_figures
    from .plots import plot_training_curves

    curves = plot_training_curves(runs, out / "training-curves.png")
    figures = latent_figures(out, seed=cfg.seed, quiet=True)
    return [Path(p).name for p in [curves, *figures]]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _cells(r: dict[str, Any]) -> list[str]:
    flags = "-" if r["new_class_flags"] is None else str(r["new_class_flags"])
    seconds = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
    return [
        r["run"],
        r["centers"],
        _pct(r["top1"]),
        _pct(r["top1_fast"]),
        _pct(r["fast_exact_agreement"]),
        flags,
        f"{r['params']:,}",
        seconds,
    ]


def _table(title: str, data: str, rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=f"{title}: accuracy on {data} ({rows[0]['samples']} images)")
    for i, c in enumerate(COLUMNS):
        table.add_column(c, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*_cells(r))
    return table


def _markdown(title: str, rows: list[dict[str, Any]], pictures: list[str]) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    lines += ["", *(f"![{p}]({p})" for p in pictures)]
    return "\n".join(lines) + "\n"
