"""Figures for the docs and ``lscdistill demo`` that train their own small models (an MLP on the 8x8 digits'
pixels, CPU): the latent space in 2 and 3 dims (the paper's Figure 6) and continual learning (Figure 7).

``python -m lscdistill.demo_figures OUT_DIR`` regenerates the README pictures (default ``docs/img``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import LabeledData, load_features
from .plots import plot_continual, plot_latent

__all__ = ["digits_features", "latent_figures"]

NO_CHECKPOINTS = 10**9  # latent_figures' runs are never resumed; saving state every epoch would triple their time


def digits_features(root: Path, max_class: int) -> tuple[LabeledData, dict[str, str]]:
    """The 8x8 digits as 64 pixel features in [0, 1], classes ``< max_class``, the fixed train/val split."""
    from sklearn.datasets import load_digits

    from .data import digits_split

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    paths = {}
    for split in ("train", "val"):
        idx = digits_split(y, split)
        idx = idx[y[idx] < max_class]
        for name, values in (("x", x[idx]), ("y", y[idx])):
            paths[f"{split}_{name}"] = str(root / f"{split}-{name}{max_class}.npy")
            np.save(paths[f"{split}_{name}"], values)
    return load_features(paths["val_x"], paths["val_y"]), paths


def latent_figures(
    out_dir: str | os.PathLike,
    *,
    epochs: int = 60,
    seed: int = 0,
    quiet: bool = True,
    work_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Train small models on the digits (an MLP on the 64 pixels, CPU) and draw their latent spaces.

    Writes into ``out_dir``: ``latent-2d.png`` (the planar system of §5.1, 10 classes, distance loss with r = 5 and
    r_c = 1 as in the paper's Figure 6), ``latent-3d.png`` (A_3r, 10 classes, cosine loss) and ``continual.png``
    (Figure 7: planar, 5 classes, then continued on 9 with ``--init-from``). 20-35 s on 2 busy CPU cores.

    Args:
        out_dir: folder for the PNGs (created if missing).
        epochs: epochs of every training run (the continued run gets the same).
        seed: initialization and data-order seed.
        quiet: no progress bars.
        work_dir: keep the features and run directories here (default: a temporary folder, removed).

    Returns:
        The paths of the three PNGs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # tiny MLPs: one thread is as fast on an idle machine and several times faster on a busy one
    torch.set_num_threads(1)
    try:
        return _latent_figures(out_dir, epochs, seed, quiet, work_dir)
    finally:
        torch.set_num_threads(threads)


def _latent_figures(
    out_dir: Path, epochs: int, seed: int, quiet: bool, work_dir: str | os.PathLike | None
) -> list[Path]:
    from .train import TrainConfig, run_train

    with tempfile.TemporaryDirectory(prefix="lscdistill-latent-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)

        def train(name: str, max_class: int, **kw: Any) -> tuple[Path, LabeledData]:
            val, p = digits_features(root, max_class)
            cfg = TrainConfig(
                out=root / name,
                features=p["train_x"],
                labels=p["train_y"],
                val_features=p["val_x"],
                val_labels=p["val_y"],
                hidden=256,
                lr=2e-3,
                schedule="cosine",
                epochs=epochs,
                seed=seed,
                cpu=True,
                quiet=quiet,
                overwrite=True,
                log_every=5,
                checkpoint_every=NO_CHECKPOINTS,
                **kw,
            )
            return run_train(cfg).run_dir, val

        # planar in index order: the first 4 classes at 90 degrees, then 45, then 22.5 (the paper's 2-D system)
        planar = {"system": "planar", "n_dim": 2, "interpolations": 2, "seed_system": None, "loss": "dist"}
        run_2d, val = train("latent-2d", 10, **planar)
        paths = [plot_latent(run_2d, val, out_dir / "latent-2d.png").path]
        run_3d, val = train("latent-3d", 10, system="an", n_dim=3, seed_system=seed, loss="cos")
        paths.append(plot_latent(run_3d, val, out_dir / "latent-3d.png").path)
        first, _ = train("continual-5", 5, **planar)
        second, val = train("continual-9", 9, init_from=str(first), **planar)
        paths.append(plot_continual(first, second, val, out_dir / "continual.png")[0].path)
    return paths


if __name__ == "__main__":  # python -m lscdistill.demo_figures OUT_DIR: regenerate the README pictures
    import sys

    start = time.perf_counter()
    print(*latent_figures(sys.argv[1] if len(sys.argv) > 1 else "docs/img", quiet=False), sep="\n")
    print(f"{time.perf_counter() - start:.1f} s")
