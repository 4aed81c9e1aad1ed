"""What ``lscdistill train`` is asked to do: :class:`TrainConfig` (every option, declared once: its command-line flag,
help and default, :mod:`lscdistill.options`), the objective's defaults, and every check made before anything is
created (one clear error, no run directory left behind); :class:`TrainResult` is what a run returns."""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data import Augment
from ..losses import RADIUS_FRACTION
from ..mixup import CenterMixup
from ..options import (
    DATA_HELP,
    FEATURES_HELP,
    LABELS_HELP,
    as_str,
    loss_name,
    model_kwargs_option,
    negative_is_none,
    one_of,
    opt,
    timm_model,
    vector_system,
    workers_option,
)
from ..rundir import CONFIG
from ..runtime import PRECISIONS
from ..systems import get_spec, list_systems
from .schedule import SCHEDULES

__all__ = ["DEFAULT_LR", "DEFAULT_SCHEDULE", "OBJECTIVES", "TrainConfig", "TrainResult", "resolve_defaults"]

OBJECTIVES = ("lsc", "ce")
#: defaults by objective, chosen by a sweep on real images (docs/training.md); the paper's: --lr 1e-4, constant.
#: LSC converges more slowly than cross-entropy (paper §6.7) and keeps gaining from a large step held until late
#: (wsd), where cross-entropy does best with a smaller one that decays all along (cosine).
DEFAULT_LR = {"lsc": 3e-3, "ce": 1e-3}
DEFAULT_SCHEDULE = {"lsc": "wsd", "ce": "cosine"}
#: gradient clipping by loss: the distance losses' gradients grow with the distance to the center, and without
#: clipping the planar system at 84 classes trained to 16-94% instead of 99.7% (docs/paper.md, §5.1)
DEFAULT_CLIP_GRAD = {"cos": 0.0, "dist": 1.0, "cos+dist": 1.0, "dist+cos": 1.0}
AUTO_FIELDS = (
    "lr",
    "schedule",
    "warmup_steps",
    "clip_grad",
)  # None: the default above (or, on --resume, the run's own value)
#: fields that may change when a run is resumed (everything else must match the checkpoint)
RESUMABLE_CHANGES = {"epochs", "resume", "quiet", "log_every", "checkpoint_every", "keep_checkpoints", "workers"}


@dataclass
class TrainConfig:
    """Everything ``lscdistill train`` needs; every field is a command-line option (its help is declared here)."""

    out: Path = opt(MISSING, "Run directory to create (or continue with --resume).", "--out", "-o")  # noqa: RUF009
    model: str | None = opt(
        None, "timm model name (default for --features: a small MLP).", "--model", "-m", check=timm_model
    )
    model_kwargs: tuple[str, ...] = model_kwargs_option()
    data: str | None = opt(None, DATA_HELP)
    features: str | None = opt(None, FEATURES_HELP)
    labels: str | None = opt(None, LABELS_HELP)
    val_data: str | None = opt(None, "Validation images, e.g. digits:val.")
    val_features: str | None = opt(None, "Validation features.")
    val_labels: str | None = opt(None, "Validation labels .npy.")
    objective: str = opt(
        "lsc", "lsc: toward fixed centers; ce: linear head + cross-entropy.", check=one_of(*OBJECTIVES)
    )
    centers: str | None = opt(
        None, "Centers store (class means from extract, or snapped).", cli_type=Path | None, to_config=as_str
    )
    system: str = opt("an", "Generated centers when no --centers: an, anp, v21...", check=vector_system)
    seed_system: int | None = opt(
        0, "Shuffle key of the system (A_nr); -1: unshuffled.", "--system-seed", to_config=negative_is_none
    )
    interpolations: int = opt(0, "Interpolation levels.", min=0)
    projection: str | None = opt(None, "drop_last or orthonormal (an/anp).")
    n_dim: int | None = opt(
        None,
        "Embedding size (n_dim): LSC students end in a linear projection from the model's width to it (default: the "
        "centers store's n_dim, else the model's width). --dim is the old spelling.",
        "--n-dim",
        "--dim",
        min=1,
    )
    projection_layer: str = opt(
        "auto",
        "Layer between the model's features and the embedding: linear (always), none (the features themselves: "
        "--n-dim must equal the model's width; for outputs that take both signs, e.g. a ViT's final LayerNorm) or auto "
        "(lsc: none when the model ends in a LayerNorm, e.g. a ViT, and --n-dim is its width or not given, else "
        "linear; ce: linear only when --n-dim differs from the width).",
    )
    hidden: int = opt(256, "MLP width for --features.", min=1)
    n_classes: int | None = opt(None, "Classes (default: from the data or the store).", min=1)
    instance_labels: bool = opt(False, "Every sample is its own class (paper §5.3).")
    loss: str = opt("cos", "cos (eq. 11), dist (eqs. 6-7) or cos+dist.", check=loss_name)
    radius: float | None = opt(
        None,
        "Cluster radius r_c of eq. 7 (dist losses), in the centers' units; default: --radius-fraction of half the "
        "minimum distance between two class centers (the planar system brings its own per-class radii).",
    )
    radius_fraction: float = opt(
        RADIUS_FRACTION,
        "Default r_c as a fraction of half the minimum center distance, in (0, 1): zero loss only near the class's "
        "own center (the paper's 2-D system: 0.25-0.28).",
    )
    lr: float | None = opt(None, "AdamW learning rate (default: 3e-3 for lsc, 1e-3 for ce; the paper's: 1e-4).")
    weight_decay: float = opt(1e-05, "AdamW weight decay (paper: 1e-5).")
    schedule: str | None = opt(
        None,
        "After the warmup: constant, cosine (decay to 0 over all steps), wsd (constant, then a cosine decay to 0 "
        "over the last 20% of the steps) or step (x0.1 at 50% and at 75% of the steps) (default: wsd for lsc, "
        "cosine for ce).",
        check=one_of(*SCHEDULES),
    )
    warmup_steps: int | None = opt(None, "Linear warmup steps (default: 5% of all steps).", min=0)
    epochs: int = opt(10, "Passes over the training data.", "--epochs", "-e", min=1)
    batch_size: int = opt(64, "Samples per batch per process.", "--batch-size", "-b", min=1)
    grad_accum: int = opt(1, "Batches per optimizer step.", min=1)
    precision: str = opt("no", "Mixed precision: no, fp16, bf16.", check=one_of(*PRECISIONS))
    compile: bool = opt(False, "torch.compile the model (Accelerate's inductor backend).")
    channels_last: bool = opt(False, "Channels-last memory format (faster convolutions on GPUs).")
    clip_grad: float | None = opt(
        None,
        "Clip the gradients' global L2 norm to this value; 0: no clipping (default: 1.0 for the dist and cos+dist "
        "losses, whose gradients grow with the distance to the center; 0 for cos and ce).",
    )
    img_size: int | None = opt(None, "Input size (default: model's; digits 32).")
    aug: str = opt(
        "none",
        "Training augmentation (timm's transforms): none; light (random resized crop, flip, color jitter; digits: "
        "random shifts); randaugment (light + rand-m9-mstd0.5-inc1); or a timm auto_augment string (rand-m7-n3, "
        "augmix-m5, original, trivial...). Seeded per sample: the same with any --workers.",
    )
    hflip: float = opt(0.5, "Horizontal flip probability under --aug.", min=0.0, max=1.0)
    color_jitter: float = opt(0.4, "Color jitter strength under --aug (timm's).", min=0.0)
    re_prob: float = opt(0.0, "Random erasing probability under --aug.", min=0.0, max=1.0)
    scale: tuple[float, float] | None = opt(
        None,
        "Area range of the random resized crop under --aug, e.g. 0.5 1.0 (default: timm's 0.08 1.0 for image files, "
        "0.5 1.0 for digits; small images lose their content in timm's smallest crops).",
    )
    mixup: float = opt(
        0.0,
        "Mixup alpha (timm's Mixup on the inputs; the target is the lambda-weighted pair of the two samples' centers, "
        "nothing of size n_classes); 0: off. E.g. 0.2.",
        min=0.0,
    )
    cutmix: float = opt(0.0, "CutMix alpha (images); 0: off. E.g. 1.0.", min=0.0)
    mixup_prob: float = opt(1.0, "Probability of mixing a batch.", min=0.0, max=1.0)
    mixup_switch_prob: float = opt(0.5, "Probability of CutMix when both are on.", min=0.0, max=1.0)
    mixup_mode: str = opt("batch", "batch, pair or elem: one lambda per batch, pair or sample (timm's).")
    log_with: tuple[str, ...] = opt(
        (),
        "Also log to an experiment tracker through Accelerate, repeatable: tensorboard (pip install tensorboard, or "
        "lscdistill[tensorboard]), wandb, mlflow, ... or all; logs go to OUT/logs. metrics.jsonl is written either "
        "way.",
        cli_type=list[str] | None,
    )
    ema_decay: float = opt(
        0.0,
        "Keep an exponential moving average of the weights with this decay (timm's ModelEmaV3, with warmup: min(decay,"
        " 1 - step^(-2/3))), validate and save it instead of the raw weights; 0: off. E.g. 0.999 for a few thousand "
        "steps, 0.9998 for long runs.",
    )
    workers: int | None = workers_option()
    seed: int = opt(0, "Initialization, shuffling and augmentation seed.")
    cpu: bool = opt(False, "Run on the CPU even if a GPU is present.")
    log_every: int = opt(10, "Log the loss every N steps.", min=0)
    checkpoint_every: int = opt(0, "Save state every N steps (0: every epoch).", min=0)
    keep_checkpoints: int = opt(2, "Checkpoints kept.", min=1)
    bn_batches: int = opt(
        32,
        "BatchNorm models: recompute the BatchNorm statistics with the current weights from this many unaugmented "
        "training batches before every validation, checkpoint and the final save (0: keep the running averages, which "
        "can be stale: see docs/training.md).",
        min=0,
    )
    resume: bool = opt(False, "Continue the run in --out from its last checkpoint.")
    init_from: str | None = opt(
        None, "Start from a finished run's weights (continual learning).", cli_type=Path | None, to_config=as_str
    )
    overwrite: bool = opt(False, "Replace an existing run directory.")
    quiet: bool = opt(False, "No progress bar or summary.", "--quiet", "-q")

    def to_json(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v

        return {k: plain(v) for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final: dict[str, Any] = field(default_factory=dict)  # last validation metrics
    continual: dict[str, Any] | None = None
    seconds: float = 0.0
    mode_check: dict[str, Any] | None = None  # train- vs eval-mode top-1 on training samples (BatchNorm models)


# ------------------------------------------------------------------------------------------------ defaults
def resolve_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the objective's default learning rate and schedule where they are not given."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    lr = DEFAULT_LR[cfg.objective] if cfg.lr is None else cfg.lr
    schedule = DEFAULT_SCHEDULE[cfg.objective] if cfg.schedule is None else cfg.schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {SCHEDULES}, got {schedule!r}")
    clip_grad = cfg.clip_grad
    if clip_grad is None:
        clip_grad = DEFAULT_CLIP_GRAD.get(cfg.loss, 0.0) if cfg.objective == "lsc" else 0.0
    return replace(cfg, lr=lr, schedule=schedule, clip_grad=clip_grad)


def saved_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.json`` with what older versions wrote read as today's: ``dim`` is ``n_dim``; a null
    ``clip_grad`` (runs from before its default by loss) is 0, no clipping, which is how they trained; no
    ``system_options`` means the system's options before their defaults changed (planar: per-level halving)."""
    saved = json.loads((Path(run_dir) / CONFIG).read_text())
    if "dim" in saved and "n_dim" not in saved:
        saved["n_dim"] = saved.pop("dim")
    if "clip_grad" in saved and saved["clip_grad"] is None:
        saved["clip_grad"] = 0.0
    if "system_options" not in saved and saved.get("system") in list_systems():
        saved["system_options"] = get_spec(saved["system"]).legacy_options
    return saved


def inherit_defaults(cfg: TrainConfig) -> TrainConfig:
    """On ``--resume``: the fields left to their default (lr, schedule, warmup, clip-grad) take the run's recorded
    values, so a run continues as it started, even with ``--epochs`` changed or a newer lscdistill's defaults."""
    try:
        saved = saved_config(cfg.out)
    except (OSError, ValueError):
        return cfg  # the resume check says what is wrong
    return replace(cfg, **{k: saved.get(k) for k in AUTO_FIELDS if getattr(cfg, k) is None})


# -------------------------------------------------------------------------------------------------- checks
def check_options(cfg: TrainConfig) -> tuple[Augment, CenterMixup | None]:
    """Every option checked before anything is created (one clear error, no run directory left behind); returns
    the augmentation and the mixup it describes."""
    if (cfg.data is None) == (cfg.features is None):
        raise ValueError("give exactly one of --data (digits, an image folder or a .tar of one) and --features")
    if cfg.objective == "ce" and cfg.centers is not None:
        raise ValueError("--centers is for --objective lsc; cross-entropy trains its own classifier head")
    for name in ("epochs", "batch_size", "grad_accum"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    positive = {"lr": cfg.lr}
    at_least_zero = {
        "weight_decay": cfg.weight_decay,
        "radius": cfg.radius,
        "warmup_steps": cfg.warmup_steps,
        "clip_grad": cfg.clip_grad,
    }
    for name, value in (positive | at_least_zero).items():
        if value is not None and not (math.isfinite(value) and (value > 0 if name in positive else value >= 0)):
            bound = "> 0" if name in positive else ">= 0"
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number {bound}, got {value}")
    if not 0.0 < cfg.radius_fraction < 1.0:
        raise ValueError(
            f"--radius-fraction must be in (0, 1) so that clusters do not touch, got {cfg.radius_fraction}"
        )
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"--ema-decay must be in [0, 1) (0: off), got {cfg.ema_decay}")
    _check_trackers(cfg.log_with)
    augment = Augment(cfg.aug, cfg.hflip, cfg.color_jitter, cfg.re_prob, cfg.scale).check()
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return augment, None
    if cfg.cutmix > 0 and cfg.features is not None:
        raise ValueError("--cutmix cuts image patches: it is for --data, not --features (use --mixup)")
    return augment, CenterMixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.mixup_mode)


def _check_trackers(names: tuple[str, ...]) -> None:
    """Every ``--log-with`` tracker is one Accelerate knows and is installed (Accelerate would drop it silently)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    installed = {getattr(t, "value", str(t)) for t in get_available_trackers()}
    for name in names:
        if name != "all" and name not in LOGGER_TYPE_TO_CLASS:
            raise ValueError(f"--log-with {name!r}: not a tracker Accelerate knows ({', '.join(LOGGER_TYPE_TO_CLASS)})")
        if name != "all" and name not in installed:
            raise ValueError(f"--log-with {name}: the {name} package is not installed (pip install {name})")


def check_run_dir(cfg: TrainConfig, run_dir: Path) -> None:
    if not run_dir.parent.is_dir():
        raise FileNotFoundError(f"cannot create {run_dir}: directory {run_dir.parent} does not exist")
    if cfg.resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume: run directory {run_dir} does not exist")
        _check_resume(cfg, run_dir)
    elif run_dir.exists() and any(run_dir.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"{run_dir} exists and is not empty: pass --overwrite, or --resume to continue it")


def _check_resume(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    saved_path = run_dir / CONFIG
    if not saved_path.is_file():
        raise FileNotFoundError(f"--resume: {run_dir} has no config.json (not an lscdistill run directory)")
    saved = saved_config(run_dir)
    now = cfg.to_json()
    diff = [k for k in now if k not in RESUMABLE_CHANGES and k != "overwrite" and saved.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise ValueError(
            f"--resume: the configuration differs from the run's config.json in {len(diff)} field(s), "
            f"e.g. {k}: run has {saved.get(k)!r}, now {now[k]!r} (only {sorted(RESUMABLE_CHANGES)} may change)"
        )
    return saved
