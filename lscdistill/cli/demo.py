"""``lscdistill demo``: the recipe recipes/demo.yaml, its vars set from the options."""

from __future__ import annotations

import typer

from ..demo import DemoConfig
from ._common import config_command, err_console


@config_command(DemoConfig)
def demo_command(cfg: DemoConfig) -> None:
    """Run the whole pipeline on the digits shipped with scikit-learn, in a few minutes on a CPU (or a GPU if present).

    1. a cross-entropy teacher; 2. extract its class means; 3. snap them to distinct A_n roots; 4. students toward
    (a) the means, (b) the snapped roots, (c) generated A_nr centers; 5. evaluate each by exact and fast decoding;
    6. a table on the terminal and a report folder with report.md / report.json and PNGs.

    These are the steps of the recipe recipes/demo.yaml (`lscdistill run demo --dry-run` shows every field); each
    option sets the recipe var of the same name.
    """
    from ..demo import run_demo

    run_demo(cfg, log=lambda line: err_console.print(line, highlight=False, markup=False))
    typer.echo(str(cfg.out / "report.md"))
