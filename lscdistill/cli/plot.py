"""``lscdistill plot``: training curves of runs, or the latent space of one run (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import err_console, handle_errors


@handle_errors
def plot_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories of `lscdistill train`.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="PNG to write (default: training-curves.png, or latent.png with --latent)."),
    ] = None,
    latent: Annotated[
        bool,
        typer.Option(
            "--latent", help="Draw one run's embeddings of --data and its class centers instead of the curves."
        ),
    ] = False,
    data: Annotated[
        str | None, typer.Option("--data", help="--latent: 'digits:val', 'digits' or an ImageFolder directory.")
    ] = None,
    features: Annotated[
        str | None, typer.Option("--features", help="--latent, for a --features run: X.npy or X.h5[:name].")
    ] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Integer labels .npy for --features.")] = None,
) -> None:
    """Training loss and validation top-1 of one or more runs, one line per run (from metrics.jsonl); or, with
    --latent, the latent space of one run: its embeddings coloured by class with the class centers as stars
    (dim 2: plane, dim 3: sphere from two sides, larger: PCA; cosine runs normalized, distance-loss runs raw).
    An existing PNG is replaced."""
    from ..plots import plot_latent, plot_training_curves

    if not latent:
        if data or features or labels:
            raise ValueError("--data, --features and --labels are for --latent")
        result = plot_training_curves(run_dirs, out or Path("training-curves.png"))
        err_console.print(f"{len(result.series)} run(s): {', '.join(result.series)}", highlight=False)
        typer.echo(str(result.path))
        return
    if len(run_dirs) != 1:
        raise ValueError(f"--latent draws one run, got {len(run_dirs)} run directories")
    if (data is None) == (features is None):
        raise ValueError("--latent needs exactly one of --data (images) and --features (with --labels)")
    if features is not None:
        from ..data import load_features

        if labels is None:
            raise ValueError("--features needs --labels (the points are coloured by class)")
        source = load_features(features, labels)
    else:
        source = data
    plot = plot_latent(run_dirs[0], source, out or Path("latent.png"))
    err_console.print(f"{len(plot.labels):,} points ({plot.space}); nearest-center top-1 {plot.top1:.1%}")
    typer.echo(str(plot.path))
