"""``train``: a student toward fixed class centers (LSC, Algorithm 1), or the cross-entropy baseline.

Device memory does not depend on n_classes for LSC: each step gathers only the centers of the batch's labels
(from a vector system by formula, or from a store by rows). Under ``accelerate launch`` / ``torchrun`` every
process takes an equal, disjoint share of each epoch's shuffled samples (the at most ``world_size - 1`` left over
samples of an epoch are skipped, different ones every epoch), so processes stay in lock-step.

The run directory (config, metrics, checkpoints, the final ``model.safetensors`` + ``model.json``) is
:mod:`lscdistill.rundir`'s; data, augmentation and loaders are :mod:`lscdistill.data`'s; mixup toward centers is
:mod:`lscdistill.mixup`; every option is declared once on :class:`TrainConfig` (:mod:`lscdistill.options`).

BatchNorm statistics are recomputed with the current weights (:mod:`lscdistill.batchnorm`, ``--bn-batches``)
before every validation, checkpoint and the final save, so everything reported and saved is what the model does in
eval mode; at the end the train-mode vs eval-mode accuracy on training samples is measured and a gap is warned of.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .batchnorm import batchnorm_layers, recompute_batchnorm
from .centers import Centers, StoreCenters, SystemCenters
from .data import (
    Augment,
    LabeledData,
    Preprocess,
    SplitLoader,
    default_workers,
    load_features,
    load_images,
    resolve_preprocess,
    use_instance_labels,
)
from .evaluate import calibrate_after_training, calibration_scores, evaluate_model
from .losses import RADIUS_FRACTION, create_loss
from .mixup import CenterMixup
from .models import (
    PROJECTIONS,
    Student,
    build_student,
    load_run_model,
    parse_model_kwargs,
    save_run_model,
    signed_features,
    unwrap,
)
from .options import (
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
from .progress import progress_bar
from .rundir import CONFIG, RunLog, create_centers, create_run_dir, read_checkpoint, save_checkpoint
from .runtime import PRECISIONS, create_accelerator

__all__ = ["TrainConfig", "TrainResult", "create_centers", "resolve_defaults", "run_train"]

OBJECTIVES = ("lsc", "ce")
SCHEDULES = ("constant", "cosine", "wsd")
WSD_DECAY_FRACTION = 0.2  # wsd: constant, then a cosine decay to 0 over this last share of the steps after warmup
#: defaults by objective, chosen by a sweep on real images (docs/training.md); the paper's: --lr 1e-4, constant.
#: LSC converges more slowly than cross-entropy (paper §6.7) and keeps gaining from a large step held until late
#: (wsd), where cross-entropy does best with a smaller one that decays all along (cosine).
DEFAULT_LR = {"lsc": 3e-3, "ce": 1e-3}
DEFAULT_SCHEDULE = {"lsc": "wsd", "ce": "cosine"}
WARMUP_FRACTION = 0.05  # default linear warmup: this share of all optimizer steps
AUTO_FIELDS = ("lr", "schedule", "warmup_steps")  # None: the default above (or, on --resume, the run's own value)
_CRASH_AT_STEP = int(os.environ.get("LSCDISTILL_CRASH_AT_STEP", "-1"))  # fault injection for the resume test
#: fields that may change when a run is resumed (everything else must match the checkpoint)
RESUMABLE_CHANGES = {"epochs", "resume", "quiet", "log_every", "checkpoint_every", "keep_checkpoints", "workers"}
MODE_GAP_SAMPLES = 1024  # training samples for the final train-mode vs eval-mode check
MODE_GAP_WARN = 0.02  # warn when eval mode is this much below train mode on training samples


@dataclass
class TrainConfig:
    """Everything ``lscdistill train`` needs; every field is a command-line option (its help is declared here)."""

    out: Path = opt(MISSING, "Run directory to create (or continue with --resume).", "--out", "-o")  # noqa: RUF009
    model: str | None = opt(
        None, "timm model name (default for --features: a small MLP).", "--model", "-m", check=timm_model
    )
    model_kwargs: tuple[str, ...] = model_kwargs_option()
    data: str | None = opt(
        None,
        "'digits', 'digits:train', 'digits:val' (fixed 80/20 split), an image folder (one sub-folder per class) or a "
        ".tar of one.",
    )
    features: str | None = opt(None, "Precomputed features X.npy or X.h5[:name].")
    labels: str | None = opt(None, "Integer labels .npy for --features.")
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
    dim: int | None = opt(
        None,
        "Embedding size: LSC students end in a linear projection from the model's width to it (default: the centers "
        "store's n_dim, else the model's width).",
        min=1,
    )
    projection_layer: str = opt(
        "auto",
        "Layer between the model's features and the embedding: linear (always), none (the features themselves: "
        "--dim must equal the model's width; for outputs that take both signs, e.g. a ViT's final LayerNorm) or auto "
        "(lsc: none when the model ends in a LayerNorm, e.g. a ViT, and --dim is its width or not given, else "
        "linear; ce: linear only when --dim differs from the width).",
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
        "After the warmup: constant, cosine (decay to 0 over all steps) or wsd (constant, then a cosine decay to 0 "
        "over the last 20% of the steps) (default: wsd for lsc, cosine for ce).",
        check=one_of(*SCHEDULES),
    )
    warmup_steps: int | None = opt(None, "Linear warmup steps (default: 5% of all steps).", min=0)
    epochs: int = opt(10, "Passes over the training data.", "--epochs", "-e", min=1)
    batch_size: int = opt(64, "Samples per batch per process.", "--batch-size", "-b", min=1)
    grad_accum: int = opt(1, "Batches per optimizer step.", min=1)
    precision: str = opt("no", "Mixed precision: no, fp16, bf16.", check=one_of(*PRECISIONS))
    compile: bool = opt(False, "torch.compile the model (Accelerate's inductor backend).")
    channels_last: bool = opt(False, "Channels-last memory format (faster convolutions on GPUs).")
    clip_grad: float | None = opt(None, "Clip the gradients' global L2 norm to this value.")
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


# ------------------------------------------------------------------------------------------------ pieces
def _load(data: str | None, features: str | None, labels: str | None, pre):
    if features is not None:
        if labels is None:
            raise ValueError("--features needs --labels (and --val-features needs --val-labels)")
        return load_features(features, labels)
    return load_images(data, pre)


def _store_facts(path: str) -> dict[str, Any]:
    """What training needs to know of a centers store before building anything (the file is closed again)."""
    from .stores import open_store

    with open_store(path) as store:
        facts = {"kind": store.kind, "n_dim": store.n_dim, "n_classes": store.n_classes}
        if store.kind == "snapped":  # the decoders rebuild the system from here or from the store
            facts["system"] = json.loads(store.attrs["system"])
    return facts


def _centers_spec(cfg: TrainConfig, dim: int, store: dict[str, Any] | None) -> dict[str, Any]:
    if store is not None:
        spec = {"type": "store", "path": str(Path(cfg.centers).resolve()), "kind": store["kind"]}
        return spec | ({"system": store["system"]} if "system" in store else {})
    return {
        "type": "system",
        "name": cfg.system,
        "n_dim": dim,
        "seed": cfg.seed_system,
        "interpolations": cfg.interpolations,
        "projection": cfg.projection,
    }


def _check_store_covers(centers: Centers, labels: np.ndarray, where: str) -> None:
    """Every class that has training samples must have a center (a means store's empty classes have none)."""
    if not isinstance(centers, StoreCenters) or centers.store.kind != "means":  # snapped: every class has a vector
        return
    present = np.unique(labels)
    empty = present[centers.store.counts[present] == 0]
    if empty.size:
        raise ValueError(
            f"{where} has samples of {empty.size:,} classes that are empty in {centers.store.path} "
            f"(e.g. class {int(empty[0])}): they have no mean to train toward"
        )


def resolve_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the objective's default learning rate and schedule where they are not given."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
    lr = DEFAULT_LR[cfg.objective] if cfg.lr is None else cfg.lr
    schedule = DEFAULT_SCHEDULE[cfg.objective] if cfg.schedule is None else cfg.schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {SCHEDULES}, got {schedule!r}")
    return replace(cfg, lr=lr, schedule=schedule)


def _inherit_defaults(cfg: TrainConfig) -> TrainConfig:
    """On ``--resume``: the fields left to their default (lr, schedule, warmup) take the run's recorded values, so a
    run continues as it started, even with ``--epochs`` changed or a newer lscdistill's defaults."""
    try:
        saved = json.loads((Path(cfg.out) / CONFIG).read_text())
    except (OSError, ValueError):
        return cfg  # the resume check says what is wrong
    return replace(cfg, **{k: saved.get(k) for k in AUTO_FIELDS if getattr(cfg, k) is None})


def _schedule(cfg: TrainConfig, total_steps: int):
    """The LR factor per optimizer step; ``cfg.warmup_steps`` is resolved (an int) by the time this is built."""
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.schedule == "wsd":  # warmup, stable, decay
            progress = max(0.0, progress - (1 - WSD_DECAY_FRACTION)) / WSD_DECAY_FRACTION
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This process's samples of an epoch: a seeded shuffle, split into equal strided shares."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per = n // world
    return perm[rank::world][:per]


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


class _BatchNormStats:
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


def _mode_check(accelerator, model, centers, data: LabeledData, cfg: TrainConfig) -> dict[str, Any] | None:
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


def _check_resume(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    saved_path = run_dir / CONFIG
    if not saved_path.is_file():
        raise FileNotFoundError(f"--resume: {run_dir} has no config.json (not an lscdistill run directory)")
    saved = json.loads(saved_path.read_text())
    now = cfg.to_json()
    diff = [k for k in now if k not in RESUMABLE_CHANGES and k != "overwrite" and saved.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise ValueError(
            f"--resume: the configuration differs from the run's config.json in {len(diff)} field(s), "
            f"e.g. {k}: run has {saved.get(k)!r}, now {now[k]!r} (only {sorted(RESUMABLE_CHANGES)} may change)"
        )
    return saved


# ------------------------------------------------------------------------------------------------ main
def run_train(cfg: TrainConfig) -> TrainResult:
    """Train a student; returns the run directory, steps and the final validation metrics."""
    with contextlib.ExitStack() as cleanup:  # closes store-backed centers however the run ends
        return _run_train(cfg, cleanup)


def _run_train(cfg: TrainConfig, cleanup: contextlib.ExitStack) -> TrainResult:
    from accelerate.utils import set_seed

    if cfg.resume:
        cfg = _inherit_defaults(cfg)
    cfg = resolve_defaults(cfg)
    augment, mix = _check_options(cfg)
    run_dir = Path(cfg.out)
    # gradient accumulation is done here (not by Accelerate) so an epoch's last, shorter group still steps
    accelerator = create_accelerator(
        cfg.precision,
        cfg.cpu,
        dynamo_plugin=_compile_plugin(cfg.compile),
        log_with=list(cfg.log_with) or None,
        project_dir=str(run_dir / "logs") if cfg.log_with else None,
    )
    _check_run_dir(cfg, run_dir)  # fail before any work; nothing is created until the inputs are validated
    set_seed(cfg.seed)
    setup = _setup(cfg, cleanup)
    trainer = _Trainer(cfg, accelerator, setup, augment, mix)
    trainer.fit()
    return trainer.finish()


@dataclass
class _Setup:
    """What a run trains: the student, its data, its centers (None: cross-entropy head), its loss, ``model.json``."""

    model: Student
    train_data: LabeledData
    val_data: LabeledData | None
    centers: Centers | None
    loss_fn: torch.nn.Module
    meta: dict[str, Any]
    init_meta: dict[str, Any] | None


def _student_spec(cfg: TrainConfig) -> tuple[dict[str, Any], LabeledData | None, dict[str, Any] | None, Any]:
    """The student's description (``model.json``'s ``model``), the training features (for ``--features``), the
    centers store's facts and the ``--init-from`` run ``(model, meta)`` (or None)."""
    arch = cfg.model or ("mlp" if cfg.features is not None else None)
    if arch is None:
        raise ValueError("give --model (a timm model name)")
    if cfg.features is not None and arch != "mlp":
        raise ValueError("--features train a small MLP: drop --model (or pass --model mlp)")
    if cfg.features is None and arch == "mlp":
        raise ValueError("--model mlp is for --features; give a timm model name for images")
    features = None
    if cfg.features is not None:
        if not cfg.labels:
            raise ValueError("--features needs --labels")
        features = load_features(cfg.features, cfg.labels)
    store = _store_facts(cfg.centers) if cfg.centers is not None else None
    dim = cfg.dim or (store["n_dim"] if store is not None else None)
    if store is not None and dim != store["n_dim"]:
        raise ValueError(
            f"--centers {cfg.centers} has n_dim {store['n_dim']} but --dim is {dim}: the student must embed "
            f"to the centers' dimension (drop --dim, or snap/extract the centers at {dim} dims)"
        )
    in_dim = features.n_dim if features is not None else None
    spec = {"architecture": arch, "in_dim": in_dim, "hidden": cfg.hidden, "in_chans": 3, "dim": dim}
    if cfg.model_kwargs:
        spec["kwargs"] = parse_model_kwargs(cfg.model_kwargs)
    spec["project"] = _project(cfg)
    init = None
    if cfg.init_from is not None:
        init = load_run_model(cfg.init_from)
        old = init[1]["model"]
        if old["architecture"] != arch or (dim is not None and old["dim"] != dim):
            raise ValueError(
                f"--init-from {cfg.init_from} holds {old['architecture']} with dim {old['dim']}; "
                f"this run asks for {arch} with dim {dim}"
            )
        if (old.get("kwargs") or {}) != spec.get("kwargs", {}):
            raise ValueError(
                f"--init-from {cfg.init_from} was built with --model-kwargs {old.get('kwargs') or {}}; "
                f"this run asks for {spec.get('kwargs', {})}"
            )
        spec["dim"] = old["dim"]
    return spec, features, store, init


def _project(cfg: TrainConfig) -> bool | str:
    """``model.json``'s ``project`` for ``--projection-layer``: ``True`` (linear), ``False`` (only when the widths
    differ) or ``"none"``. ``auto`` is linear for LSC (CNN and MLP features end in ReLU/GELU, centers need signs),
    except for backbones whose features take both signs at the width asked for (:func:`_signed_auto`)."""
    if cfg.projection_layer not in PROJECTIONS:
        raise ValueError(f"--projection-layer must be one of {', '.join(PROJECTIONS)}, got {cfg.projection_layer!r}")
    if cfg.projection_layer == "none":
        return "none"
    return cfg.projection_layer == "linear" or cfg.objective == "lsc"


def _signed_auto(cfg: TrainConfig, spec: dict[str, Any], probe) -> bool:
    """``--projection-layer auto`` for an LSC student whose backbone ends in a LayerNorm (a ViT: features of both
    signs, :func:`~lscdistill.models.signed_features`) and whose ``--dim`` is its width (or not given): no projection
    layer, as the paper's ViT-S. Measured on MNIST with ``test_vit`` (docs/training.md, "Projection")."""
    if cfg.projection_layer != "auto" or cfg.objective != "lsc" or spec.get("architecture") == "mlp":
        return False
    return signed_features(probe.backbone) and probe.dim == int(probe.backbone.num_features)


def _setup(cfg: TrainConfig, cleanup: contextlib.ExitStack) -> _Setup:
    """Model first (its data config decides the preprocessing), then data, then centers; checked against each
    other before anything is written."""
    spec, train_data, store, init = _student_spec(cfg)
    probe = build_student(spec)
    if _signed_auto(cfg, spec, probe):  # an LSC student whose features already take both signs: no extra layer
        spec["project"] = "none"
        probe = build_student(spec)
    spec["dim"] = dim = probe.dim
    pre = None
    if cfg.features is None:
        pre = resolve_preprocess(probe.backbone, cfg.data, cfg.img_size)
        train_data = load_images(cfg.data, pre)
    val_data = None
    if cfg.val_data is not None or cfg.val_features is not None:
        val_data = _load(cfg.val_data, cfg.val_features, cfg.val_labels, pre)
    if cfg.instance_labels:
        train_data = use_instance_labels(train_data)
        if val_data is not None:
            raise ValueError("--instance-labels: every sample is its own class, so a validation set cannot share them")
    n_classes = cfg.n_classes or max(train_data.n_classes, val_data.n_classes if val_data else 0)
    if store is not None and cfg.n_classes is None:
        n_classes = store["n_classes"]
    for d, where in ((train_data, "training data"), (val_data, "validation data")):
        if d is not None and int(d.labels.max()) >= n_classes:
            raise ValueError(f"{where}: label {int(d.labels.max())} is outside [0, {n_classes}) of the centers")
    centers_spec = _centers_spec(cfg, dim, store) if cfg.objective == "lsc" else {"type": "head"}
    centers = create_centers(centers_spec, n_classes) if cfg.objective == "lsc" else None
    if centers is not None:
        cleanup.callback(centers.close)
        _check_store_covers(centers, train_data.labels, "training data")
    if cfg.objective == "ce":
        spec["n_head_classes"] = n_classes
    model = build_student(spec)
    if init is not None:
        _init_from(model, init[0], cfg)
    if cfg.objective == "lsc":
        loss_fn = create_loss(cfg.loss, radius=cfg.radius, centers=centers, radius_fraction=cfg.radius_fraction)
    else:
        loss_fn = torch.nn.CrossEntropyLoss()
    meta = {
        "format": "lscdistill-run",
        "format_version": 1,
        "lscdistill": __version__,
        "model": spec,
        "objective": cfg.objective,
        "n_classes": n_classes,
        "centers": centers_spec,
        "preprocess": pre.to_dict() if isinstance(pre, Preprocess) else None,
        "class_names": train_data.class_names,
        "data": train_data.description,
    }
    return _Setup(model, train_data, val_data, centers, loss_fn, meta, None if init is None else init[1])


class _Trainer:
    """The training loop of one run, in the pieces a reader follows: ``__init__`` (steps, run directory,
    optimizer, schedule, loaders, Accelerate, EMA, resume), :meth:`fit` (epochs of :meth:`_epoch`, each batch
    through :meth:`_batch` and every optimizer step through :meth:`_step`, then :meth:`_end_epoch`: validate and
    checkpoint) and :meth:`finish` (the end-of-run check and ``model.json``)."""

    def __init__(self, cfg: TrainConfig, accelerator, setup: _Setup, augment: Augment, mix) -> None:
        self.accelerator, self.setup, self.mix = accelerator, setup, mix
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.run_dir = run_dir = Path(cfg.out)
        per_rank = len(setup.train_data) // self.world
        if per_rank < 1:
            raise ValueError(f"{len(setup.train_data)} training samples for {self.world} processes")
        self.batches_per_epoch = math.ceil(per_rank / cfg.batch_size)
        total_steps = math.ceil(self.batches_per_epoch / cfg.grad_accum) * cfg.epochs
        if cfg.warmup_steps is None:  # resolved here, from the step count, so config.json records the number
            cfg = replace(cfg, warmup_steps=round(WARMUP_FRACTION * total_steps))
        self.cfg = cfg
        optimizer_meta = {"name": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay, "schedule": cfg.schedule}
        setup.meta["optimizer"] = optimizer_meta | {"warmup_steps": cfg.warmup_steps, "total_steps": total_steps}
        if accelerator.is_main_process and not cfg.resume:
            create_run_dir(run_dir, cfg.to_json())
        accelerator.wait_for_everyone()

        model = setup.model
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, total_steps))
        self.bn_stats = _BatchNormStats(cfg, model, setup.train_data)
        workers, pin = default_workers(accelerator, cfg.workers), accelerator.device.type == "cuda"
        kw = {"workers": workers, "pin_memory": pin}
        self.train_loader = SplitLoader(setup.train_data, cfg.batch_size, augment=augment, seed=cfg.seed, **kw)
        self.val_loader = None if setup.val_data is None else SplitLoader(setup.val_data, cfg.batch_size, **kw)
        self.channels_last = cfg.channels_last and cfg.features is None  # image models only
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.scheduler.split_batches = True  # the scheduler steps once per optimizer step (not once per process)
        self.ema = _create_ema(accelerator, self.model, cfg)
        self.evaluated = self.model if self.ema is None else self.ema.module  # validated, checked and saved

        self.continual = None
        if setup.init_meta is not None and setup.val_data is not None:
            old_n = int(setup.init_meta["n_classes"])
            before = _old_class_accuracy(accelerator, self.model, setup.centers, setup.val_data, old_n, cfg)
            self.continual = {"old_classes": old_n, "old_class_top1_before": before}
        self.step, batches = read_checkpoint(accelerator, run_dir) if cfg.resume else (0, 0)
        self.first_epoch, self.batch_in_epoch = divmod(batches, self.batches_per_epoch)
        self.final: dict[str, Any] = {}
        self.val_scores: tuple[int, Any] = (-1, None)  # (step, scores) of the last validation pass
        self.seen, self.start = 0, time.perf_counter()

    def fit(self) -> None:
        cfg = self.cfg
        self.log = RunLog(self.accelerator, self.run_dir, cfg.to_json(), bool(cfg.log_with))
        done = self.first_epoch * self.batches_per_epoch + self.batch_in_epoch
        hidden = cfg.quiet or not self.accelerator.is_main_process
        try:
            with progress_bar("train", self.batches_per_epoch * cfg.epochs, disable=hidden, initial=done) as advance:
                for epoch in range(self.first_epoch, cfg.epochs):
                    self._epoch(epoch, advance)
                    self._end_epoch(epoch)
        finally:
            self.log.close()

    def _epoch(self, epoch: int, advance) -> None:
        cfg = self.cfg
        order = _epoch_order(len(self.setup.train_data), cfg.seed, epoch, self.rank, self.world)
        order = order[self.batch_in_epoch * cfg.batch_size :]
        self.model.train()
        self.running, self.n_run = 0.0, 0
        for x, y_cpu, _ in self.train_loader(order, epoch):
            shown = self._batch(x, y_cpu, epoch)
            advance(len(y_cpu), loss=shown, epoch=f"{epoch + 1}/{cfg.epochs}")
        self.batch_in_epoch = 0

    def _batch(self, x: torch.Tensor, y_cpu: torch.Tensor, epoch: int) -> float | None:
        """Forward and backward one batch; an optimizer step at the end of its accumulation group. Returns the
        running loss when it was logged (the only host sync of the loop)."""
        cfg, accelerator, device = self.cfg, self.accelerator, self.accelerator.device
        x, y = x.to(device, non_blocking=True), y_cpu.to(device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        group_start = self.batch_in_epoch - self.batch_in_epoch % cfg.grad_accum
        group = min(cfg.grad_accum, self.batches_per_epoch - group_start)  # the last group may be shorter
        self.batch_in_epoch += 1
        sync = self.batch_in_epoch - group_start == group
        with contextlib.nullcontext() if sync else accelerator.no_sync(self.model):
            s = self.setup
            loss = _loss(self.model, x, y, y_cpu, s.centers, s.loss_fn, cfg, self.mix)
            accelerator.backward(loss / group)
        self.seen += len(y) * self.world
        self.running, self.n_run = self.running + loss.detach(), self.n_run + 1  # on the device: no sync per batch
        return self._step(epoch) if sync else None

    def _step(self, epoch: int) -> float | None:
        cfg = self.cfg
        if cfg.clip_grad is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.step += 1
        if self.ema is not None:
            self.ema.update(unwrap(self.accelerator, self.model), step=self.step)
        shown = None
        if cfg.log_every and self.step % cfg.log_every == 0:
            shown = float(self.running / self.n_run)
            rate = self.seen / (time.perf_counter() - self.start)
            lr = self.scheduler.get_last_lr()[0]
            self.log.log(step=self.step, epoch=epoch, loss=shown, lr=lr, samples_per_s=rate)
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.bn_stats.update(self.accelerator, self.evaluated, self.step)
            batches = epoch * self.batches_per_epoch + self.batch_in_epoch
            save_checkpoint(self.accelerator, self.run_dir, self.step, batches, cfg.keep_checkpoints)
        if self.step == _CRASH_AT_STEP:  # tests: die like a killed process, no cleanup
            os._exit(137)
        return shown

    def _end_epoch(self, epoch: int) -> None:
        """Validate and checkpoint what the run would save: statistics recomputed for the evaluated weights."""
        cfg, s = self.cfg, self.setup
        self.bn_stats.update(self.accelerator, self.evaluated, self.step)
        if self.val_loader is not None:
            scores = calibration_scores(s.centers, cfg.objective)  # kept for the calibration if these weights are final
            self.final = evaluate_model(
                self.accelerator, self.evaluated, s.centers, self.val_loader, objective=cfg.objective, scores=scores
            )
            self.val_scores = (self.step, scores)
            val = {f"val_{k}": v for k, v in self.final.items()}
            self.log.log(step=self.step, epoch=epoch + 1, train_loss=float(self.running / max(1, self.n_run)), **val)
        if not cfg.checkpoint_every:
            batches = (epoch + 1) * self.batches_per_epoch
            save_checkpoint(self.accelerator, self.run_dir, self.step, batches, cfg.keep_checkpoints)

    def finish(self) -> TrainResult:
        """The end-of-run check (train vs eval mode) and ``model.safetensors`` + ``model.json``."""
        cfg, s, accelerator, evaluated = self.cfg, self.setup, self.accelerator, self.evaluated
        self.bn_stats.update(accelerator, evaluated, self.step)  # a no-op unless resumed from the last checkpoint
        continual = self.continual
        if continual is not None:
            old = continual["old_classes"]
            continual["old_class_top1_after"] = _old_class_accuracy(
                accelerator, evaluated, s.centers, s.val_data, old, cfg
            )
        data = self.bn_stats.data
        mode_check = None if data is None else _mode_check(accelerator, evaluated, s.centers, data, cfg)
        step, scores = self.val_scores
        scores = scores if step == self.step else None  # resumed after the last validation: score the split again
        calibrate_after_training(
            accelerator, evaluated, s.centers, self.val_loader, self.run_dir, cfg.objective, scores
        )
        if accelerator.is_main_process:
            meta = s.meta | {"steps": self.step, "final_metrics": self.final, "continual": continual}
            meta["ema"] = {"decay": cfg.ema_decay, "warmup": True} if self.ema is not None else None
            meta["batchnorm"] = self.bn_stats.info | ({"mode_check": mode_check} if mode_check else {})
            save_run_model(self.run_dir, unwrap(accelerator, evaluated), meta)
        accelerator.wait_for_everyone()
        seconds = time.perf_counter() - self.start
        return TrainResult(self.run_dir, self.step, self.final, continual, seconds, mode_check)


def _loss(model, x, y, y_cpu, centers: Centers | None, loss_fn, cfg: TrainConfig, mix=None) -> torch.Tensor:
    """Cross-entropy on the head's logits, or the LSC loss against the batch's gathered centers (Algorithm 1); with
    mixup/CutMix the λ-weighted sum of the losses toward both samples' targets (:mod:`lscdistill.mixup`).
    ``y_cpu``: the labels as the loader gave them (centers are gathered from host labels, no device sync)."""
    partner, lam = mix(x) if mix is not None else (None, None)
    out = model(x).float()
    if centers is None:
        if mix is None:
            return loss_fn(out, y)
        ce = torch.nn.functional.cross_entropy
        return (lam * ce(out, y, reduction="none") + (1 - lam) * ce(out, y[partner], reduction="none")).mean()
    c = centers.gather(y_cpu).to(y.device, non_blocking=True)
    kw = {}
    radius = centers.cluster_radius(y_cpu) if isinstance(centers, SystemCenters) and cfg.loss != "cos" else None
    if radius is not None:  # the planar system's per-class radii; None: the loss's own --radius
        kw["radius"] = radius.to(y.device, non_blocking=True)
    if mix is None:
        return loss_fn(out, c, **kw)
    flipped = {k: v[partner] for k, v in kw.items()}
    return loss_fn(out, c, weight=lam, **kw) + loss_fn(out, c[partner], weight=1 - lam, **flipped)


def _compile_plugin(compile_model: bool):
    """``--compile``: Accelerate's torch.compile with inductor and static shapes. With automatic dynamic shapes an
    epoch's shorter last batch recompiles the graph as dynamic, whose kernels round differently from the static
    ones a resumed run compiles first: the resumed run would drift from the uninterrupted one (measured: 2e-3 in
    the weights after 2 epochs). Static shapes compile one graph per batch size, the same in both."""
    if not compile_model:
        return None
    from accelerate.utils import TorchDynamoPlugin

    return TorchDynamoPlugin(backend="inductor", dynamic=False)


def _create_ema(accelerator, model, cfg: TrainConfig):
    """timm's ``ModelEmaV3`` of the (unwrapped) model when ``--ema-decay`` > 0, with its warmup (decay
    ``min(d, 1 - step^(-2/3)), 0 at step 1``); registered so checkpoints save and ``--resume`` restores it."""
    if cfg.ema_decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(unwrap(accelerator, model), decay=cfg.ema_decay, use_warmup=True)
    accelerator.register_for_checkpointing(ema)
    return ema


def _check_run_dir(cfg: TrainConfig, run_dir: Path) -> None:
    if not run_dir.parent.is_dir():
        raise FileNotFoundError(f"cannot create {run_dir}: directory {run_dir.parent} does not exist")
    if cfg.resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume: run directory {run_dir} does not exist")
        _check_resume(cfg, run_dir)
    elif run_dir.exists() and any(run_dir.iterdir()) and not cfg.overwrite:
        raise FileExistsError(f"{run_dir} exists and is not empty: pass --overwrite, or --resume to continue it")


def _check_options(cfg: TrainConfig) -> tuple[Augment, CenterMixup | None]:
    """Every option checked before anything is created (one clear error, no run directory left behind); returns
    the augmentation and the mixup it describes."""
    if (cfg.data is None) == (cfg.features is None):
        raise ValueError("give exactly one of --data (digits, an image folder or a .tar of one) and --features")
    if cfg.objective == "ce" and cfg.centers is not None:
        raise ValueError("--centers is for --objective lsc; cross-entropy trains its own classifier head")
    for name in ("epochs", "batch_size", "grad_accum"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    positive = {"lr": cfg.lr, "clip_grad": cfg.clip_grad}
    at_least_zero = {"weight_decay": cfg.weight_decay, "radius": cfg.radius, "warmup_steps": cfg.warmup_steps}
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


def _init_from(model: Student, old: Student, cfg: TrainConfig) -> None:
    """Continual learning: copy the previous run's backbone, and its projection where both students have one (an
    LSC student started from a CE run gets a fresh projection); the head, if any, is new."""
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in [*missing, *unexpected] if not k.startswith(("head.", "proj."))]
    if bad:
        raise ValueError(f"--init-from {cfg.init_from}: weights do not fit this student (e.g. {bad[0]})")


def _old_class_accuracy(accelerator, model, centers, val_data: LabeledData, old_n: int, cfg: TrainConfig) -> float:
    keep = np.flatnonzero(val_data.labels < old_n)
    result = evaluate_model(
        accelerator, model, centers, val_data, cfg.batch_size, objective=cfg.objective, indices=keep
    )
    return result["top1"]


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
