"""What every picture shares: matplotlib's Agg backend imported on first use, the output check, the atomic save,
and the loss a run was trained with (for legends and titles)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..files import atomic_file
from ..rundir import CONFIG

__all__ = ["check_png", "loss_name", "pyplot", "run_config", "save_png"]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def check_png(out_png: str | os.PathLike) -> Path:
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise ValueError(f"the picture must be a .png file, got {out_png}")
    if not out_png.parent.is_dir():
        raise FileNotFoundError(f"output directory {out_png.parent} does not exist")
    return out_png


def save_png(fig, out_png: Path) -> None:
    """Written under a temporary name and renamed: a crash never leaves a half-written PNG."""
    try:
        with atomic_file(out_png) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        pyplot().close(fig)


def run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    return json.loads(path.read_text()) if path.is_file() else {}


def loss_name(run_dir: str | os.PathLike) -> str:
    """``ce`` for a cross-entropy run, else its LSC loss (``cos``, ``dist``, ``cos+dist``); from ``config.json``."""
    config = run_config(run_dir)
    return "ce" if config.get("objective") == "ce" else config.get("loss", "cos")
