"""``lscdistill snap``: class means -> distinct vectors of a vector system (paper §6.6)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import typer

from ..snap import SnapConfig
from ._common import JsonOpt, config_command, err_console


@config_command(SnapConfig)
def snap_command(cfg: SnapConfig, as_json: JsonOpt = False) -> None:
    """Give every class a distinct system vector, maximizing the total cosine to the class means.

    Candidates come from each mean's top/bottom coordinates (no class x vector matrix); `exact` proves its
    optimum, `greedy` reports a bound on its gap. Classes with count 0 have no mean: refused unless
    --allow-empty. The output records the system (and the PCA) so that train and the decoders rebuild it.
    """
    from ..snap import run_snap

    cfg = replace(cfg, command=" ".join(["lscdistill", *sys.argv[1:]]))
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
