"""``lscdistill extract``: teacher pass -> per-class mean embeddings store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import ModelKwargs, Workers, err_console, handle_errors, parse_floats, parse_shard


@handle_errors
def extract_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Store to write (HDF5), e.g. means.h5.")],
    data: Annotated[
        str | None, typer.Option("--data", help="'digits' (scikit-learn's 1,797 8x8 digits) or an ImageFolder dir.")
    ] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="timm model name of the teacher.")] = None,
    model_kwargs: ModelKwargs = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Teacher weights: .pt/.pth/.safetensors or a run directory.")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Precomputed embeddings instead of a teacher: X.npy or X.h5[:name]."),
    ] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="Integer labels .npy for --features.")] = None,
    img_size: Annotated[
        int | None, typer.Option("--img-size", help="Input size (default: the model's; digits 32).")
    ] = None,
    mean: Annotated[str | None, typer.Option("--mean", help="Normalization mean, e.g. 0.485,0.456,0.406.")] = None,
    std: Annotated[str | None, typer.Option("--std", help="Normalization std, e.g. 0.229,0.224,0.225.")] = None,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--raw", help="Average unit-normalized embeddings (default: raw, the paper's CEembs)."
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per batch.")] = 256,
    workers: Workers = None,
    limit_per_class: Annotated[
        int | None, typer.Option("--limit-per-class", min=1, help="Use at most the first N samples of each class.")
    ] = None,
    n_classes: Annotated[
        int | None, typer.Option("--n-classes", min=1, help="Number of classes (default: from data).")
    ] = None,
    shard: Annotated[str, typer.Option("--shard", help="Process only shard I/N of the samples (then merge).")] = "0/1",
    partial: Annotated[
        bool, typer.Option("--partial", help="Write a mergeable partial store (sums + counts).")
    ] = False,
    keep_sums: Annotated[
        bool, typer.Option("--keep-sums", help="Keep float64 sums in the means store (mergeable).")
    ] = False,
    precision: Annotated[str, typer.Option("--precision", help="Teacher pass precision: no, fp16, bf16.")] = "no",
    cpu: Annotated[bool, typer.Option("--cpu", help="Run on the CPU even if a GPU is present.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Initialization of a teacher without --checkpoint.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output store.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Run a teacher over labeled data and store each class's mean embedding (CEembs, paper §4.3).

    Distributed: `accelerate launch -m lscdistill extract ...` or `torchrun --nproc_per_node N -m lscdistill ...`;
    each process takes every N-th sample and the sums are reduced exactly before the one store is written.
    """
    from ..extract import ExtractConfig, run_extract

    cfg = ExtractConfig(
        out=out,
        data=data,
        features=features,
        labels=str(labels) if labels else None,
        teacher=teacher,
        model_kwargs=tuple(model_kwargs or ()),
        checkpoint=str(checkpoint) if checkpoint else None,
        img_size=img_size,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
        normalize=normalize,
        batch_size=batch_size,
        workers=workers,
        limit_per_class=limit_per_class,
        n_classes=n_classes,
        shard=parse_shard(shard),
        partial=partial,
        keep_sums=keep_sums,
        overwrite=overwrite,
        precision=precision,
        cpu=cpu,
        seed=seed,
        quiet=quiet,
        command=" ".join(["lscdistill", *sys.argv[1:]]),
    )
    result = run_extract(cfg)
    if result.path is None:
        return
    if not quiet:
        err_console.print(
            f"{result.samples:,} samples, {result.n_classes:,} classes x {result.n_dim} dims, "
            f"{result.empty_classes:,} empty classes, {result.seconds:.1f} s ({result.throughput:,.0f} samples/s)",
            highlight=False,
        )
    typer.echo(str(result.path))
