"""``lscdistill demo``: teacher -> extract -> snap -> three students -> evaluate, on digits, in minutes on a CPU."""

from __future__ import annotations

import typer

from ..demo import DemoConfig
from ._common import config_command


@config_command(DemoConfig)
def demo_command(cfg: DemoConfig) -> None:
    """Run the whole pipeline on the digits shipped with scikit-learn, in a few minutes on a CPU (or a GPU if present).

    1. a cross-entropy teacher; 2. extract its class means; 3. snap them to distinct A_n roots; 4. students toward
    (a) the means, (b) the snapped roots, (c) generated A_nr centers; 5. evaluate each by exact and fast decoding;
    6. a table on the terminal and a report folder with report.md / report.json and PNGs.
    """
    from ..demo import run_demo

    report = run_demo(cfg)
    typer.echo(str(cfg.out / "report.md") if report else "")
