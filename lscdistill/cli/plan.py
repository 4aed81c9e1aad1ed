"""``lscdistill plan``: the smallest latent dimension for a number of classes."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ._common import JsonOpt, handle_errors, out_console


@handle_errors
def plan_command(
    n_classes: Annotated[int, typer.Option("--n-classes", "-n", help="Number of classes to fit.", min=1)],
    system: Annotated[str, typer.Option("--system", "-s", help="Vector system: an, anp, v21, v22, planar.")] = "an",
    interpolations: Annotated[
        int, typer.Option("--interpolations", "-k", help="Interpolation levels (an: 0 or 1; planar: doublings).", min=0)
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Smallest n_dim whose vector system has at least N vectors, with the count and the minimum angle.

    Example: `lscdistill plan -n 1281167 -k 1` gives 109 (paper §5.4: A_109 with one interpolation level).
    """
    from ..planner import plan

    result = plan(n_classes, system, interpolations)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    out_console.print(
        f"[bold]{system}[/] with {interpolations} interpolation level(s): n_dim = [bold green]{result.n_dim}[/] "
        f"-> {result.size:,} vectors for {n_classes:,} classes, minimum angle {result.min_angle_deg:.2f}°",
        highlight=False,
    )
