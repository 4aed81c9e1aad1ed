"""Figures of :mod:`benchmarks.bench_paper_training`: one PNG per experiment, a column per data set, the mean over
seeds with a min-max band (val top-1 per epoch in eval mode, or the training loss ``metrics.jsonl`` logged)."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------------------------------- plots
#: the PNGs: file stem -> (title, methods, panel rows: "val" = val top-1 per epoch, "loss" = logged train loss)
FIGURES = {
    "paper-gap": (
        "§6.7 convergence gap: val top-1 per epoch (CLI defaults; dashed: the paper's lr 1e-4 constant)",
        ("ce", "lsc-anr", "lsc-snapped", "lsc-plan-dim", "lsc-v21", "ce-paper-opt", "lsc-anr-paper-opt"),
        ("val",),
    ),
    "paper-fig8": (
        "Table 7 / Figure 8: target configurations (loss: cosine loss 1 - cos)",
        ("lsc-an", "lsc-anp", "lsc-ceembs", "lsc-anr"),
        ("val", "loss"),
    ),
    "paper-fig5": (
        "Table 4 / Figure 5: dim-3 encoder, CE vs its CEembs vs CEembs with mixed labels",
        ("ce-dim3", "lsc-ceembs-dim3", "lsc-ceembs-dim3-mixed"),
        ("val",),
    ),
    "paper-s66": ("§6.6: teacher means snapped to A_n vs random A_nr", ("lsc-snapped", "lsc-anr"), ("val", "loss")),
    "paper-fig9": (
        "Figure 9 / §5.4: planner's minimum n_dim vs the default (the MLP's width, 256)",
        ("lsc-plan-dim", "lsc-anr"),
        ("loss", "val"),
    ),
    "paper-table6": (
        "Table 6: A_n vs A_np, with and without augmentation (digit images)",
        ("lsc-an-aug-none", "lsc-an-aug-light", "lsc-anp-aug-none", "lsc-anp-aug-light"),
        ("val", "loss"),
    ),
}


def _band(ax, runs: list[dict[str, Any]], kind: str, label: str, style: str) -> None:
    if kind == "val":
        x = np.arange(1, len(runs[0]["curve"]) + 1)
        ys = np.array([[100 * v for v in r["curve"]] for r in runs])
    else:
        x = np.array([s for s, _ in runs[0]["loss"]])
        ys = np.array([[v for _, v in r["loss"]] for r in runs])
    line = ax.plot(x, ys.mean(0), style, label=f"{label} (n={len(runs)})")[0]
    if len(runs) > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)


def plot(cells: dict[tuple[str, int], dict[str, dict[str, Any]]], img_dir: Path) -> list[str]:
    """One PNG per :data:`FIGURES` entry with runs: a column per data set, mean over seeds, band = min-max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, (title, methods, kinds) in FIGURES.items():
        datasets = [
            d
            for d in dict.fromkeys(d for d, _ in cells)
            if any(m in cells[d, s] for (dd, s) in cells if dd == d for m in methods)
        ]
        if not datasets:
            continue
        fig, axes = plt.subplots(
            len(kinds), len(datasets), figsize=(5.5 * len(datasets), 3.6 * len(kinds)), squeeze=False
        )
        for col, d in enumerate(datasets):
            seeds = [runs for (dd, _), runs in cells.items() if dd == d]
            for row, kind in enumerate(kinds):
                ax = axes[row, col]
                for method in methods:
                    runs = [s[method] for s in seeds if method in s]
                    if runs and not (kind == "loss" and method.startswith("ce")):
                        _band(ax, runs, kind, method, "--" if "paper-opt" in method else "-")
                if kind == "val":
                    teacher = "ce-dim3" if stem == "paper-fig5" else "ce"
                    ref = [s.get(teacher, {}).get("target") for s in seeds]
                    if all(ref) and stem != "paper-table6":
                        ax.axhline(100 * median(ref), color="gray", lw=0.8, ls=":", label="95% of CE final")
                    ax.set(xlabel="epoch", ylabel="val top-1 (%, eval mode)", ylim=(max(0, ax.get_ylim()[0]), 100))
                else:
                    ax.set(xlabel="optimizer step", ylabel="train loss (logged)", yscale="log")
                ax.set_title(d, fontsize=10)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = img_dir / f"{stem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def replot(result: Path, img_dir: Path) -> list[str]:
    """Redraw the figures from a written ``suite-paper-training*.json`` (its rows hold every curve)."""
    rows = json.loads(Path(result).read_text())["benchmarks"]["paper-training"]["rows"]
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["seed"]), {})[r["method"]] = r
    return plot(cells, img_dir)


if __name__ == "__main__":  # python -m benchmarks.paper_training_plots RESULT.json [IMG_DIR]
    import sys

    print("\n".join(replot(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "docs/img"))))
