"""``lscdistill snap``: class means -> distinct vectors of a vector system (paper §6.6)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import JsonOpt, err_console, handle_errors


@handle_errors
def snap_command(
    means: Annotated[Path, typer.Argument(help="Class-means store (kind 'means', from extract or merge).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Snapped store to write (HDF5).")],
    system: Annotated[str, typer.Option("--system", "-s", help="Vector system: an, anp, v21, v22, planar.")] = "an",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seeded order of the system's indices (A_nr); same vectors.")
    ] = None,
    interpolations: Annotated[
        int, typer.Option("--interpolations", "-k", min=0, help="Interpolation levels (an: 0 or 1).")
    ] = 0,
    projection: Annotated[
        str | None, typer.Option("--projection", help="drop_last (an default) or orthonormal.")
    ] = None,
    dim: Annotated[
        int | None, typer.Option("--dim", min=1, help="Target n_dim (default: the store's); needs --reduce.")
    ] = None,
    reduce: Annotated[
        str, typer.Option("--reduce", help="none, or pca: reduce the means to --dim first (fitted on the means).")
    ] = "none",
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="auto (exact unless over 200,000 classes compete for the same vectors), exact (proven optimum) "
            "or greedy.",
        ),
    ] = "auto",
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Give classes with count 0 unused vectors instead of refusing.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output store.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Give every class a distinct system vector, maximizing the total cosine to the class means.

    Candidates come from each mean's top/bottom coordinates (no class x vector matrix); `exact` proves its
    optimum, `greedy` reports a bound on its gap. Classes with count 0 have no mean: refused unless
    --allow-empty. The output records the system (and the PCA) so that train and the decoders rebuild it.
    """
    from ..snap import SnapConfig, run_snap

    cfg = SnapConfig(
        means=means,
        out=out,
        system=system,
        seed=seed,
        interpolations=interpolations,
        projection=projection,
        dim=dim,
        reduce=reduce,
        method=method,
        allow_empty=allow_empty,
        overwrite=overwrite,
        command=" ".join(["lscdistill", *sys.argv[1:]]),
    )
    path, report = run_snap(cfg, log=lambda line: err_console.print(line, highlight=False, markup=False))
    status = "optimal" if report.optimal else f"within {report.relative_gap:.3%} of the optimum"
    err_console.print(
        f"{report.n_classes:,} classes, {report.method}: total cosine {report.total_cosine:,.2f} ({status}), "
        f"mean {report.mean_cosine:.4f}, min {report.min_cosine:.4f}, {report.not_top1:,} not on their own "
        f"top-1 vector, {report.seconds:.1f} s",
        highlight=False,
    )
    if as_json:
        typer.echo(json.dumps({"path": str(path), "report": report.to_dict()}))
    else:
        typer.echo(str(path))
