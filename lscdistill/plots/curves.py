"""Training curves of runs: loss per optimizer step and validation top-1 per epoch, from ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..rundir import METRICS
from ._common import check_png, loss_name, pyplot, save_png

__all__ = ["CurvesPlot", "plot_training_curves", "read_metrics"]


@dataclass
class CurvesPlot:
    """What :func:`plot_training_curves` drew: ``series[run name] = {"step", "loss", "epoch", "val_top1"}``.

    Path-like: ``Path(result)`` and ``open(result)`` give the PNG.
    """

    path: Path
    series: dict[str, dict[str, list[float]]]

    def __fspath__(self) -> str:
        return str(self.path)


def _run_names(run_dirs: list[Path]) -> list[str]:
    names = [p.resolve().name for p in run_dirs]
    if len(set(names)) < len(names):  # e.g. a/run and b/run
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in run_dirs]
    return names


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a missing directory or file, or no record, is an error)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: not a `lscdistill train` run directory")
    lines = path.read_text().splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                break  # a run being written: its last line may be incomplete
            raise ValueError(f"{path}, line {n}: not JSON") from None
    if not records:
        raise ValueError(f"{path} holds no records yet (the run logs every --log-every steps and every epoch)")
    return records


def _curves(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    steps = [r for r in records if "loss" in r]
    if not steps:  # logged only per epoch (--log-every 0, or fewer steps than --log-every)
        steps = [{"step": r["step"], "loss": r["train_loss"]} for r in records if "train_loss" in r]
    epochs = [r for r in records if "val_top1" in r]
    return {
        "step": [float(r["step"]) for r in steps],
        "loss": [float(r["loss"]) for r in steps],
        "epoch": [float(r["epoch"]) for r in epochs],
        "val_top1": [float(r["val_top1"]) for r in epochs],
    }


def plot_training_curves(run_dirs: list[str | os.PathLike], out_png: str | os.PathLike) -> CurvesPlot:
    """Training loss per optimizer step and validation top-1 per epoch, one line per run (labelled by name).

    Args:
        run_dirs: ``lscdistill train`` run directories (finished or still running: only ``metrics.jsonl`` is read).
        out_png: the PNG to write (its directory must exist).

    Returns:
        The path and the plotted series per run.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("give at least one run directory")
    out_png = check_png(out_png)
    series = {name: _curves(read_metrics(p)) for name, p in zip(_run_names(run_dirs), run_dirs, strict=True)}
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, ((name, s), run_dir) in enumerate(zip(series.items(), run_dirs, strict=True)):
        color, label = f"C{i % 10}", f"{name} ({loss_name(run_dir)})"
        ax_loss.plot(s["step"], s["loss"], color=color, label=label, lw=1.5)
        if s["val_top1"]:
            ax_acc.plot(s["epoch"], s["val_top1"], color=color, marker="o", ms=3, label=label, lw=1.5)
    if all(v > 0 for s in series.values() for v in s["loss"]):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation top-1", title="validation accuracy (exact decoding)")
    if not any(s["val_top1"] for s in series.values()):
        ax_acc.text(0.5, 0.5, "no validation data\n(train with --val-data)", ha="center", va="center")
    else:
        ax_acc.set_ylim(0, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    save_png(fig, out_png)
    return CurvesPlot(out_png, series)
