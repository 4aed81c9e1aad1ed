"""``train``: a student toward fixed class centers (LSC, Algorithm 1), or the cross-entropy baseline.

Device memory does not depend on n_classes for LSC: each step gathers only the centers of the batch's labels
(from a vector system by formula, or from a store by rows). Under ``accelerate launch`` / ``torchrun`` every
process takes an equal, disjoint share of each epoch's shuffled samples (the at most ``world_size - 1`` left over
samples of an epoch are skipped, different ones every epoch), so processes stay in lock-step.

The pieces, in the order a run uses them: :mod:`.config` (every option, declared once on :class:`TrainConfig`, its
defaults and checks), :mod:`.run` (:func:`run_train`), :mod:`.setup` (the student, data, centers and loss),
:mod:`.schedule` (the learning rate per step), :mod:`.loop` (the :class:`~.loop.Trainer`) and :mod:`.bnstats`
(BatchNorm statistics for the weights in use, the end-of-run train- vs eval-mode check). The run directory
(config, metrics, checkpoints, the final ``model.safetensors`` + ``model.json``) is :mod:`lscdistill.rundir`'s;
data, augmentation and loaders are :mod:`lscdistill.data`'s; mixup toward centers is :mod:`lscdistill.mixup`.

BatchNorm statistics are recomputed with the current weights (:mod:`lscdistill.batchnorm`, ``--bn-batches``)
before every validation, checkpoint and the final save, so everything reported and saved is what the model does in
eval mode; at the end the train-mode vs eval-mode accuracy on training samples is measured and a gap is warned of.
"""

from ..rundir import create_centers
from .config import DEFAULT_LR, DEFAULT_SCHEDULE, OBJECTIVES, TrainConfig, TrainResult, resolve_defaults
from .run import run_train
from .schedule import SCHEDULES, WARMUP_FRACTION, WSD_DECAY_FRACTION

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_SCHEDULE",
    "OBJECTIVES",
    "SCHEDULES",
    "WARMUP_FRACTION",
    "WSD_DECAY_FRACTION",
    "TrainConfig",
    "TrainResult",
    "create_centers",
    "resolve_defaults",
    "run_train",
]
