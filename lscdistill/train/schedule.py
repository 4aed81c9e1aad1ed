"""The learning-rate schedule: a linear warmup, then constant, cosine (decay to 0 over all the steps after the warmup),
wsd (warmup, stable, decay: constant, then a cosine decay to 0 over the last :data:`WSD_DECAY_FRACTION` of the
steps after the warmup) or step (x :data:`STEP_GAMMA` at each of :data:`STEP_MILESTONES` of the steps after the
warmup: torch's ``MultiStepLR`` with milestones placed by the run's length).

It is torch's ``LambdaLR`` over a closed-form factor of the optimizer step, not torch's chainable parts
(``LinearLR`` → ``ConstantLR`` / ``CosineAnnealingLR`` under ``SequentialLR``), which cannot give the same run:

- wsd's decay starts at step ``warmup + 0.8 (total - warmup)``, generally not an integer, and its cosine runs over
  ``0.2 (total - warmup)`` steps; ``SequentialLR`` switches at integer milestones and ``CosineAnnealingLR`` starts
  its cosine at 1 there. Measured against the factor below (torch 2.14): relative LR errors of 0.44 (warmup 7,
  93 steps), 0.96 (warmup 13, 1,000 steps), 2.2 (warmup 1, 100 steps); they agree (< 3e-14) only where the decay
  length is an integer, and for constant and cosine.
- ``--resume`` may change ``--epochs``, so the total: the factor then follows the new total from the restored step,
  where ``SequentialLR``'s state (milestones, each child's ``T_max``) is restored from the checkpoint and its
  chainable steps scale the restored LR, so it keeps the old total's schedule, and past the old end
  ``CosineAnnealingLR`` climbs back up (measured: LR at 0.99 of the peak at the end of a run resumed at twice the
  epochs).

timm's schedulers are closed forms too (its ``WSDLRScheduler`` included), but they are not torch ``LRScheduler``\\ s:
Accelerate would neither hold them back on the optimizer steps a fp16 overflow skips nor save them in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "SCHEDULES",
    "STEP_GAMMA",
    "STEP_MILESTONES",
    "WARMUP_FRACTION",
    "WSD_DECAY_FRACTION",
    "create_scheduler",
    "default_warmup",
    "lr_factor",
]

SCHEDULES = ("constant", "cosine", "wsd", "step")
WSD_DECAY_FRACTION = 0.2  # wsd: constant, then a cosine decay to 0 over this last share of the steps after warmup
STEP_MILESTONES = (0.5, 0.75)  # step: where the LR drops, as shares of the steps after the warmup
STEP_GAMMA = 0.1  # step: the factor of each drop
WARMUP_FRACTION = 0.05  # default linear warmup: this share of all optimizer steps


def default_warmup(total_steps: int) -> int:
    """Warmup steps when ``--warmup-steps`` is not given: :data:`WARMUP_FRACTION` of all optimizer steps."""
    return round(WARMUP_FRACTION * total_steps)


def lr_factor(schedule: str, warmup: int, total_steps: int) -> Callable[[int], float]:
    """The LR factor (of ``--lr``) at each optimizer step ``0, 1, ...``: ``(step + 1) / warmup`` during the warmup,
    then ``schedule``'s (1 for constant, ``(1 + cos(pi p)) / 2`` for cosine and wsd, ``p`` its progress in [0, 1],
    ``STEP_GAMMA ** (milestones passed)`` for step)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {SCHEDULES}, got {schedule!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if schedule == "step":
            return STEP_GAMMA ** sum(progress >= m for m in STEP_MILESTONES)
        if schedule == "wsd":  # warmup, stable, decay
            progress = max(0.0, progress - (1 - WSD_DECAY_FRACTION)) / WSD_DECAY_FRACTION
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def create_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, warmup: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` of :func:`lr_factor`: stepped once per optimizer step; its state is the step count alone (the
    factor is a closure, which ``state_dict`` leaves out), so a resumed run follows the current total."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, warmup, total_steps))
