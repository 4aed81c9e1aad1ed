"""BatchNorm statistics during training: recomputed for the weights they are used with (``--bn-batches``, the
recomputation itself is :mod:`lscdistill.batchnorm`'s) before every validation, checkpoint and the final save, and
the end-of-run check of train-mode vs eval-mode accuracy on training samples, which warns of a gap."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..batchnorm import batchnorm_layers, recompute_batchnorm
from ..data import LabeledData
from ..evaluate import evaluate_model
from ..models import unwrap
from .config import TrainConfig

__all__ = ["BatchNormStats", "measure_mode_gap"]

MODE_GAP_SAMPLES = 1024  # training samples for the final train-mode vs eval-mode check
MODE_GAP_WARN = 0.02  # warn when eval mode is this much below train mode on training samples


def _bn_indices(n: int, cfg: TrainConfig, step: int, rank: int, world: int) -> tuple[np.ndarray, int, int]:
    """This process's samples for recomputing BatchNorm statistics at ``step``: ``(indices, batch size, total
    batches)``. Full batches from one seeded order of the samples, their number rounded down to a multiple of
    ``world`` (at least ``world``); process ``rank`` takes every ``world``-th batch, so every process forwards as
    many batches as the others."""
    bs = min(cfg.batch_size, max(1, n // world))
    total = min(cfg.bn_batches, n // bs)
    total = max(world, total - total % world)
    order = np.random.default_rng([cfg.seed, 104729, step]).permutation(n)[: total * bs]
    return np.concatenate([order[i * bs : (i + 1) * bs] for i in range(rank, total, world)]), bs, total


class BatchNormStats:
    """Recomputes BatchNorm statistics for the weights at a step (once per step), from unaugmented training
    images; records what was done for ``model.json``."""

    def __init__(self, cfg: TrainConfig, model, train_data: LabeledData) -> None:
        layers = len(batchnorm_layers(model))
        self.cfg, self.data = cfg, train_data if layers else None  # features only feed the MLP: no BatchNorm
        self.active = layers > 0 and cfg.bn_batches > 0
        self.step: int | None = None
        self.info: dict[str, Any] = {"layers": layers, "recomputed": self.active}

    def update(self, accelerator, model, step: int) -> None:
        if not self.active or self.step == step:
            return
        world, rank = accelerator.num_processes, accelerator.process_index
        idx, bs, total = _bn_indices(len(self.data), self.cfg, step, rank, world)
        inputs = (x for x, _, _ in self.data.batches(idx, bs))
        recompute_batchnorm(unwrap(accelerator, model), inputs, device=accelerator.device, world=world)
        self.step = step
        self.info |= {"batches": total, "batch_size": bs, "samples": total * bs, "step": step}


def measure_mode_gap(accelerator, model, centers, data: LabeledData, cfg: TrainConfig) -> dict[str, Any] | None:
    """Top-1 on training samples in eval mode (as saved) and with BatchNorm on each batch's own statistics (as in
    training), on the same full batches (a BatchNorm cannot take a batch of one); ``None`` if too few samples."""
    world = accelerator.num_processes
    bs = min(cfg.batch_size, min(MODE_GAP_SAMPLES, len(data)) // world)
    if bs < 2:
        return None
    n = min(MODE_GAP_SAMPLES, len(data)) // (world * bs) * (world * bs)  # every process: whole batches of bs
    idx = np.random.default_rng([cfg.seed, 15485863]).permutation(len(data))[:n]  # mixed classes
    model = unwrap(accelerator, model)
    kw = {"objective": cfg.objective, "indices": idx}
    evals = evaluate_model(accelerator, model, centers, data, bs, **kw)["top1"]
    trains = evaluate_model(accelerator, model, centers, data, bs, batch_stats=True, **kw)["top1"]
    check = {"samples": n, "batch_size": bs, "train_top1_eval_mode": evals, "train_top1_train_mode": trains}
    if trains - evals > MODE_GAP_WARN:
        check["warning"] = (
            f"eval mode scores {evals:.1%} on {n:,} training samples but train mode {trains:.1%}: the saved "
            "model's BatchNorm statistics do not fit its weights"
            + (" (try --bn-batches 32 or more)" if cfg.bn_batches < 32 else "")
        )
    return check
