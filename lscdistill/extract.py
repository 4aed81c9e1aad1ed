"""``extract``: a teacher pass that writes per-class mean embeddings (CEembs, paper §4.3) to a store.

Sums are accumulated in float64 and counts in int64 on the host; each batch's embeddings are the only thing on
the accelerator, so device memory does not depend on n_classes. Under ``accelerate launch`` / ``torchrun`` each
process takes every ``world_size``-th selected sample (no padding, no repeats), and the sums are reduced to the
main process block by block before the one store is written.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .data import (
    FeatureData,
    LabeledData,
    default_workers,
    load_features,
    load_images,
    resolve_preprocess,
    select_indices,
)
from .models import Student, checkpoint_sha256, create_teacher, embed, parse_model_kwargs, resolve_checkpoint
from .options import as_str, model_kwargs_option, one_of, opt, timm_model, workers_option
from .progress import progress_bar
from .runtime import PRECISIONS, create_accelerator
from .stores.writer import BLOCK_ROWS, MeanAccumulator, StoreWriter, check_output_path

__all__ = ["ExtractConfig", "ExtractResult", "run_extract"]


@dataclass
class ExtractConfig:
    """Everything ``lscdistill extract`` needs; every field but ``command`` is a command-line option."""

    out: Path = opt(MISSING, "Store to write (HDF5), e.g. means.h5.", "--out", "-o")  # noqa: RUF009
    data: str | None = opt(
        None, "'digits' (scikit-learn's 1,797 8x8 digits), an image folder (one sub-folder per class) or a .tar of one."
    )
    teacher: str | None = opt(None, "timm model name of the teacher.", check=timm_model)
    model_kwargs: tuple[str, ...] = model_kwargs_option()
    checkpoint: str | None = opt(
        None, "Teacher weights: .pt/.pth/.safetensors or a run directory.", cli_type=Path | None, to_config=as_str
    )
    features: str | None = opt(None, "Precomputed embeddings instead of a teacher: X.npy or X.h5[:name].")
    labels: str | None = opt(None, "Integer labels .npy for --features.", cli_type=Path | None, to_config=as_str)
    img_size: int | None = opt(None, "Input size (default: the model's; digits 32).")
    mean: tuple[float, ...] | None = opt(None, "Normalization mean, e.g. 0.485,0.456,0.406.", cli_type=str | None)
    std: tuple[float, ...] | None = opt(None, "Normalization std, e.g. 0.229,0.224,0.225.", cli_type=str | None)
    normalize: bool = opt(
        False, "Average unit-normalized embeddings (default: raw, the paper's CEembs).", "--normalize/--raw"
    )
    batch_size: int = opt(256, "Samples per batch.", "--batch-size", "-b", min=1)
    workers: int | None = workers_option()
    limit_per_class: int | None = opt(None, "Use at most the first N samples of each class.", min=1)
    n_classes: int | None = opt(None, "Number of classes (default: from data).", min=1)
    shard: tuple[int, int] = opt(
        (0, 1), "Process only shard I/N of the samples (then merge).", cli_type=str, cli_default="0/1"
    )
    partial: bool = opt(False, "Write a mergeable partial store (sums + counts).")
    keep_sums: bool = opt(False, "Keep float64 sums in the means store (mergeable).")
    precision: str = opt("no", "Teacher pass precision: no, fp16, bf16.", check=one_of(*PRECISIONS))
    cpu: bool = opt(False, "Run on the CPU even if a GPU is present.")
    seed: int = opt(0, "Initialization of a teacher without --checkpoint.")
    overwrite: bool = opt(False, "Replace an existing output store.")
    quiet: bool = opt(False, "No progress bar or summary.", "--quiet", "-q")
    command: str | None = None  # the command line, recorded in the store's provenance


@dataclass
class ExtractResult:
    path: Path | None  # None on non-main processes
    samples: int
    n_classes: int
    n_dim: int
    empty_classes: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")


def _source(cfg: ExtractConfig) -> tuple[LabeledData, torch.nn.Module | None, dict[str, Any]]:
    if (cfg.data is None) == (cfg.features is None):
        raise ValueError("give exactly one of --data (digits, an image folder or a .tar of one) and --features")
    if cfg.features is not None:
        if cfg.labels is None:
            raise ValueError("--features needs --labels (a .npy of integer class indices)")
        if cfg.teacher or cfg.checkpoint:
            raise ValueError("--features are embeddings already: drop --teacher/--checkpoint")
        return load_features(cfg.features, cfg.labels, cfg.n_classes), None, {}
    torch.manual_seed(cfg.seed)  # only matters for a randomly initialized teacher (no checkpoint)
    model = create_teacher(cfg.teacher, cfg.checkpoint, kwargs=parse_model_kwargs(cfg.model_kwargs))
    info: dict[str, Any] = {"teacher": cfg.teacher, "seed": None if cfg.checkpoint else cfg.seed}
    if cfg.checkpoint is not None:
        weights, meta = resolve_checkpoint(cfg.checkpoint)
        arch = meta.get("model", {}).get("architecture", cfg.teacher)
        info |= {"teacher": arch, "checkpoint": str(Path(cfg.checkpoint).resolve())}
        info["checkpoint_sha256"] = checkpoint_sha256(weights)
    preprocess = resolve_preprocess(model, cfg.data, cfg.img_size, cfg.mean, cfg.std)
    data = load_images(cfg.data, preprocess)
    if cfg.n_classes is not None:
        if cfg.n_classes < data.n_classes:
            raise ValueError(f"--n-classes {cfg.n_classes} is below the dataset's {data.n_classes} classes")
        data.n_classes = cfg.n_classes
        data.class_names = (
            None if data.class_names is None else data.class_names + [""] * (cfg.n_classes - len(data.class_names))
        )
    return data, model, info


def run_extract(cfg: ExtractConfig) -> ExtractResult:
    """Extract class means (or partial sums) and write one store; returns what was done."""

    # Accelerate only goes multi-process on CPU (gloo) when told to use the CPU.
    accelerator = create_accelerator(cfg.precision, cfg.cpu)
    main = accelerator.is_main_process
    if main:
        check_output_path(cfg.out, cfg.overwrite)  # fail before any work
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    data, model, info = _source(cfg)
    if isinstance(data, FeatureData):
        n_dim = data.n_dim
    else:
        n_dim = model.n_dim if isinstance(model, Student) else int(model.num_features)
    selected = select_indices(data.labels, limit_per_class=cfg.limit_per_class, shard=cfg.shard)
    mine = selected[accelerator.process_index :: accelerator.num_processes]
    if model is not None:
        model = model.to(accelerator.device)

    acc = MeanAccumulator(data.n_classes, n_dim)
    start = time.perf_counter()
    _accumulate(cfg, accelerator, data, model, mine, acc)
    _reduce_to_main(accelerator, acc)
    seconds = time.perf_counter() - start

    empty = int((acc.counts == 0).sum())
    result = ExtractResult(None, int(acc.counts.sum()), data.n_classes, n_dim, empty, seconds)
    if main:
        _write_store(cfg, accelerator, data, n_dim, info, acc)
        result.path = Path(cfg.out)
    accelerator.wait_for_everyone()
    return result


def _accumulate(cfg: ExtractConfig, accelerator, data: LabeledData, model, mine, acc: MeanAccumulator) -> None:
    """This process's samples ``mine`` through the teacher (``model``; None: features as they are) into ``acc``;
    a non-finite embedding stops every process with one error."""
    failure = ""
    n_batches = -(-len(mine) // cfg.batch_size)
    with progress_bar("extract", n_batches, disable=cfg.quiet or not accelerator.is_main_process) as advance:
        for x, y, idx in data.batches(mine, cfg.batch_size, default_workers(accelerator, cfg.workers)):
            if model is None:
                z = x
            else:
                with torch.inference_mode(), accelerator.autocast():
                    z = embed(model, x.to(accelerator.device)).float()
            bad = ~torch.isfinite(z).all(dim=1)
            if bool(bad.any()):
                failure = f"non-finite embeddings for samples {idx[bad.cpu().numpy()][:5].tolist()} (NaN or Inf)"
                break
            if cfg.normalize:
                z = torch.nn.functional.normalize(z, dim=1)
            acc.update(y, z)
            advance(len(idx))
        _agree_or_raise(accelerator, failure)  # inside the bar: an error removes it


def _write_store(cfg: ExtractConfig, accelerator, data: LabeledData, n_dim: int, info, acc: MeanAccumulator) -> None:
    """The store of the reduced sums (main process), with where they came from."""
    shard_i, shard_n = cfg.shard
    provenance = {
        **info,
        "dataset": data.description,
        "normalize_embeddings": cfg.normalize,
        "limit_per_class": cfg.limit_per_class,
        "shard": f"{shard_i}/{shard_n}",
        "world_size": accelerator.num_processes,
        "precision": cfg.precision,
        "command": cfg.command,
        "lscdistill": __version__,
    }
    with StoreWriter(
        cfg.out,
        kind="partial" if cfg.partial else "means",
        n_classes=data.n_classes,
        n_dim=n_dim,
        provenance=provenance,
        class_names=data.class_names,
        with_sums=cfg.keep_sums,
        overwrite=cfg.overwrite,
    ) as writer:
        acc.write(writer)


def _agree_or_raise(accelerator, failure: str) -> None:
    """Every process learns whether any failed, so none waits forever in the reduction."""
    if accelerator.num_processes > 1:
        flag = torch.tensor([1 if failure else 0], device=accelerator.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and not failure:
            failure = "another process failed (see its message)"
    if failure:
        raise ValueError(failure)


def _reduce_to_main(accelerator, acc: MeanAccumulator) -> None:
    """Sum counts and sums of all processes into the main one, a block of rows at a time."""
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    device = accelerator.device if accelerator.device.type == "cuda" else torch.device("cpu")
    counts = acc.counts.to(device)
    dist.reduce(counts, dst=0)
    acc.counts = counts.cpu()
    for start in range(0, acc.n_classes, BLOCK_ROWS):
        block = acc.sums[start : start + BLOCK_ROWS].to(device)
        dist.reduce(block, dst=0)
        acc.sums[start : start + BLOCK_ROWS] = block.cpu()
