"""``lscdistill demo``: the whole pipeline on the digits shipped with scikit-learn, in a few minutes on a CPU.

The demo is the recipe ``recipes/demo.yaml`` (``lscdistill run demo --dry-run`` lists its steps): 1. train a
cross-entropy teacher; 2. ``extract`` its class means; 3. ``snap`` them to A_n; 4. train students toward (a) the
teacher's means, (b) the snapped centers, (c) generated A_nr centers; 5. ``evaluate`` each by exact and fast
decoding; 6. a ``report`` step prints the table and writes the report folder::

    OUT/runs/{teacher,student-means,student-snapped,student-anr}/   lscdistill train run directories
    OUT/stores/{teacher-means,snapped}.h5                             extract / snap stores
    OUT/training-curves.png, latent-2d.png, latent-3d.png, continual.png
    OUT/report.json, OUT/report.md, OUT/recipe.yaml                   the table, the timings, the resolved recipe

:class:`DemoConfig` holds the options of ``lscdistill demo``; each sets the recipe var of the same name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import opt, timm_model

__all__ = ["DemoConfig", "demo_recipe", "run_demo"]


@dataclass
class DemoConfig:
    """The options of ``lscdistill demo``: the vars of ``recipes/demo.yaml``."""

    out: Path = opt(Path("lscdistill-demo"), "Report folder (runs, stores, PNGs, report.md).", "--out", "-o")  # noqa: RUF009
    model: str = opt("test_resnet", "timm model of the teacher and the students.", "--model", "-m", check=timm_model)
    epochs: int = opt(15, "Epochs of every training run.", min=1)
    batch_size: int = opt(64, "Batch size.", "--batch-size", "-b", min=1)
    lr: float | None = opt(None, "AdamW learning rate (default: train's, 3e-3 lsc / 1e-3 ce).")
    n_dim: int | None = opt(None, "n_dim of the A_nr student (default: the model's width).", "--n-dim", "--dim", min=2)
    seed: int = opt(0, "Data order, initialisation and the A_nr shuffle key.")
    aug: str = opt("none", "Training augmentation of every run, as train's --aug (e.g. light, randaugment).")
    mixup: float = opt(0.0, "Mixup alpha of every run, as train's --mixup (e.g. 0.2); 0: off.", min=0.0)
    pictures: bool = opt(True, "Write latent-space and training-curve PNGs.", "--pictures/--no-pictures")
    overwrite: bool = opt(False, "Replace a report folder the demo wrote.")
    quiet: bool = opt(False, "No progress bars.", "--quiet", "-q")


def demo_recipe(cfg: DemoConfig) -> Any:
    """``recipes/demo.yaml`` (the shipped one) with ``cfg`` as its vars, checked; nothing runs."""
    from .recipes import load_recipe, shipped_recipe

    variables = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    variables["out"] = str(cfg.out)
    return load_recipe(shipped_recipe("demo"), variables=variables)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the demo recipe (the report step prints the table); returns what ``report.json`` holds."""
    from .steps import run_recipe

    return run_recipe(demo_recipe(cfg), log=log)[-1].result
