"""``lscdistill train | evaluate | predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..progress import is_main_process
from ._common import JsonOpt, ModelKwargs, Workers, err_console, handle_errors, out_console

Data = Annotated[
    str | None,
    typer.Option("--data", help="'digits', 'digits:train', 'digits:val' (fixed 80/20 split) or an ImageFolder dir."),
]
Features = Annotated[str | None, typer.Option("--features", help="Precomputed features X.npy or X.h5[:name].")]
Labels = Annotated[str | None, typer.Option("--labels", help="Integer labels .npy for --features.")]
Cpu = Annotated[bool, typer.Option("--cpu", help="Run on the CPU even if a GPU is present.")]


@handle_errors
def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create (or continue with --resume).")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="timm model name (default for --features: a small MLP).")
    ] = None,
    model_kwargs: ModelKwargs = None,
    data: Data = None,
    features: Features = None,
    labels: Labels = None,
    val_data: Annotated[str | None, typer.Option("--val-data", help="Validation images, e.g. digits:val.")] = None,
    val_features: Annotated[str | None, typer.Option("--val-features", help="Validation features.")] = None,
    val_labels: Annotated[str | None, typer.Option("--val-labels", help="Validation labels .npy.")] = None,
    objective: Annotated[
        str, typer.Option("--objective", help="lsc: toward fixed centers; ce: linear head + cross-entropy.")
    ] = "lsc",
    centers: Annotated[
        Path | None, typer.Option("--centers", help="Centers store (class means from extract, or snapped).")
    ] = None,
    system: Annotated[
        str, typer.Option("--system", help="Generated centers when no --centers: an, anp, v21...")
    ] = "an",
    seed_system: Annotated[
        int | None, typer.Option("--system-seed", help="Shuffle key of the system (A_nr); -1: unshuffled.")
    ] = 0,
    interpolations: Annotated[int, typer.Option("--interpolations", min=0, help="Interpolation levels.")] = 0,
    projection: Annotated[str | None, typer.Option("--projection", help="drop_last or orthonormal (an/anp).")] = None,
    dim: Annotated[
        int | None,
        typer.Option(
            "--dim",
            min=1,
            help="Embedding size: LSC students end in a linear projection from the model's width to it "
            "(default: the centers store's n_dim, else the model's width).",
        ),
    ] = None,
    hidden: Annotated[int, typer.Option("--hidden", min=1, help="MLP width for --features.")] = 256,
    n_classes: Annotated[
        int | None, typer.Option("--n-classes", min=1, help="Classes (default: from the data or the store).")
    ] = None,
    instance_labels: Annotated[
        bool, typer.Option("--instance-labels", help="Every sample is its own class (paper §5.3).")
    ] = False,
    loss: Annotated[str, typer.Option("--loss", help="cos (eq. 11), dist (eqs. 6-7) or cos+dist.")] = "cos",
    radius: Annotated[float, typer.Option("--radius", help="Cluster radius r_c of eq. 7 (dist losses).")] = 1.0,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="AdamW learning rate (default: 3e-3 for lsc, 1e-3 for ce; the paper's: 1e-4)."),
    ] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (paper: 1e-5).")] = 1e-5,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule",
            help="After the warmup: constant, cosine (decay to 0 over all steps) or wsd (constant, then a cosine "
            "decay to 0 over the last 20% of the steps) (default: wsd for lsc, cosine for ce).",
        ),
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option("--warmup-steps", min=0, help="Linear warmup steps (default: 5% of all steps).")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", "-e", min=1, help="Passes over the training data.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per batch per process.")] = 64,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Batches per optimizer step.")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="Mixed precision: no, fp16, bf16.")] = "no",
    compile_: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (Accelerate's inductor backend).")
    ] = False,
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="Channels-last memory format (faster convolutions on GPUs).")
    ] = False,
    clip_grad: Annotated[
        float | None, typer.Option("--clip-grad", help="Clip the gradients' global L2 norm to this value.")
    ] = None,
    img_size: Annotated[
        int | None, typer.Option("--img-size", help="Input size (default: model's; digits 32).")
    ] = None,
    aug: Annotated[
        str,
        typer.Option(
            "--aug",
            help="Training augmentation (timm's transforms): none; light (random resized crop, flip, color jitter; "
            "digits: random shifts); randaugment (light + rand-m9-mstd0.5-inc1); or a timm auto_augment string "
            "(rand-m7-n3, augmix-m5, original, trivial...). Seeded per sample: the same with any --workers.",
        ),
    ] = "none",
    hflip: Annotated[
        float, typer.Option("--hflip", min=0.0, max=1.0, help="Horizontal flip probability under --aug.")
    ] = 0.5,
    color_jitter: Annotated[
        float, typer.Option("--color-jitter", min=0.0, help="Color jitter strength under --aug (timm's).")
    ] = 0.4,
    re_prob: Annotated[
        float, typer.Option("--re-prob", min=0.0, max=1.0, help="Random erasing probability under --aug.")
    ] = 0.0,
    mixup: Annotated[
        float,
        typer.Option(
            "--mixup",
            min=0.0,
            help="Mixup alpha (timm's Mixup on the inputs; the target is the lambda-weighted pair of the two samples' "
            "centers, nothing of size n_classes); 0: off. E.g. 0.2.",
        ),
    ] = 0.0,
    cutmix: Annotated[float, typer.Option("--cutmix", min=0.0, help="CutMix alpha (images); 0: off. E.g. 1.0.")] = 0.0,
    mixup_prob: Annotated[
        float, typer.Option("--mixup-prob", min=0.0, max=1.0, help="Probability of mixing a batch.")
    ] = 1.0,
    mixup_switch_prob: Annotated[
        float,
        typer.Option("--mixup-switch-prob", min=0.0, max=1.0, help="Probability of CutMix when both are on."),
    ] = 0.5,
    mixup_mode: Annotated[
        str, typer.Option("--mixup-mode", help="batch, pair or elem: one lambda per batch, pair or sample (timm's).")
    ] = "batch",
    log_with: Annotated[
        list[str] | None,
        typer.Option(
            "--log-with",
            help="Also log to an experiment tracker through Accelerate, repeatable: tensorboard (pip install "
            "tensorboard, or lscdistill[tensorboard]), wandb, mlflow, ... or all; logs go to OUT/logs. "
            "metrics.jsonl is written either way.",
        ),
    ] = None,
    ema_decay: Annotated[
        float,
        typer.Option(
            "--ema-decay",
            help="Keep an exponential moving average of the weights with this decay (timm's ModelEmaV3, with "
            "warmup: min(decay, 1 - step^(-2/3))), validate and save it instead of the raw weights; 0: off. "
            "E.g. 0.999 for a few thousand steps, 0.9998 for long runs.",
        ),
    ] = 0.0,
    workers: Workers = None,
    seed: Annotated[int, typer.Option("--seed", help="Initialization, shuffling and augmentation seed.")] = 0,
    cpu: Cpu = False,
    log_every: Annotated[int, typer.Option("--log-every", min=0, help="Log the loss every N steps.")] = 10,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", min=0, help="Save state every N steps (0: every epoch).")
    ] = 0,
    keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", min=1, help="Checkpoints kept.")] = 2,
    bn_batches: Annotated[
        int,
        typer.Option(
            "--bn-batches",
            min=0,
            help="BatchNorm models: recompute the BatchNorm statistics with the current weights from this many "
            "unaugmented training batches before every validation, checkpoint and the final save (0: keep the "
            "running averages, which can be stale: see docs/training.md).",
        ),
    ] = 32,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    init_from: Annotated[
        Path | None, typer.Option("--init-from", help="Start from a finished run's weights (continual learning).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Train a student toward fixed class centers (LSC), or a cross-entropy baseline/teacher.

    Centers: --centers STORE, or a generated system (default A_nr: --system an --system-seed 0, dimension from
    --dim or the model). Only the centers of a batch's labels reach the device, so device memory does not depend
    on the number of classes. Multi-process: `accelerate launch -m lscdistill train ...` or `torchrun`.
    """
    from ..train import TrainConfig, run_train

    cfg = TrainConfig(
        out=out,
        model=model,
        model_kwargs=tuple(model_kwargs or ()),
        data=data,
        features=features,
        labels=labels,
        val_data=val_data,
        val_features=val_features,
        val_labels=val_labels,
        objective=objective,
        centers=str(centers) if centers else None,
        system=system,
        seed_system=None if seed_system is not None and seed_system < 0 else seed_system,
        interpolations=interpolations,
        projection=projection,
        dim=dim,
        hidden=hidden,
        n_classes=n_classes,
        instance_labels=instance_labels,
        loss=loss,
        radius=radius,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup_steps=warmup_steps,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        precision=precision,
        compile=compile_,
        channels_last=channels_last,
        clip_grad=clip_grad,
        img_size=img_size,
        aug=aug,
        hflip=hflip,
        color_jitter=color_jitter,
        re_prob=re_prob,
        mixup=mixup,
        cutmix=cutmix,
        mixup_prob=mixup_prob,
        mixup_switch_prob=mixup_switch_prob,
        mixup_mode=mixup_mode,
        ema_decay=ema_decay,
        log_with=tuple(log_with or ()),
        workers=workers,
        seed=seed,
        cpu=cpu,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        bn_batches=bn_batches,
        resume=resume,
        init_from=str(init_from) if init_from else None,
        overwrite=overwrite,
        quiet=quiet,
    )
    result = run_train(cfg)
    if not is_main_process():
        return
    if result.mode_check and "warning" in result.mode_check:  # shown with --quiet too
        err_console.print(f"[yellow]warning:[/] {escape(result.mode_check['warning'])}", soft_wrap=True)
    if quiet:
        return
    final = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.final.items())
    err_console.print(f"{result.steps} steps in {result.seconds:.1f} s" + (f"; validation: {final}" if final else ""))
    if result.continual:
        c = result.continual
        err_console.print(
            f"old classes (< {c['old_classes']}): top-1 {c['old_class_top1_before']:.4f} before, "
            f"{c['old_class_top1_after']:.4f} after"
        )
    typer.echo(str(result.run_dir))


@handle_errors
def evaluate_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished `lscdistill train` run directory.")],
    data: Data = None,
    features: Features = None,
    labels: Labels = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 256,
    workers: Workers = None,
    cpu: Cpu = False,
    instance_labels: Annotated[
        bool,
        typer.Option(
            "--instance-labels", help="Every sample its own class, in data order (for runs trained that way)."
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Accuracy of a run: top-1 by exact decoding (nearest assigned center) and by fast O(n_dim) decoding,
    their agreement, new-class flags, and top-5 where cheap (<= 10,000 classes)."""
    from ..evaluate import EvalConfig, run_evaluate

    result = run_evaluate(EvalConfig(run_dir, data, features, labels, batch_size, cpu, instance_labels, workers))
    if not is_main_process():
        return
    if json_:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{run_dir} ({result['objective']}, {result['n_classes']:,} classes)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key in ("run", "objective", "n_classes"):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
    out_console.print(table)


@handle_errors
def predict_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished `lscdistill train` run directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Predictions file: .csv or .npz.")],
    data: Data = None,
    features: Features = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Not needed; accepted for symmetry.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 256,
    workers: Workers = None,
    cpu: Cpu = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Predict a label per sample: columns index, label (exact), score (cosine, or softmax for CE), and for
    generated centers fast_label and new_class (the fast decoder's nearest vector belongs to no class)."""
    from ..evaluate import EvalConfig, run_predict

    result = run_predict(EvalConfig(run_dir, data, features, labels, batch_size, cpu, workers=workers), out, overwrite)
    err_console.print(f"{result['samples']:,} predictions ({', '.join(result['columns'])})", highlight=False)
    typer.echo(result["path"])
