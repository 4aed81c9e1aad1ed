"""``lscdistill demo``: teacher -> extract -> snap -> three students -> evaluate, on digits, in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import handle_errors


@handle_errors
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (runs, stores, PNGs, report.md).")] = Path(
        "lscdistill-demo"
    ),
    model: Annotated[str, typer.Option("--model", "-m", help="timm model of the teacher and the students.")] = (
        "test_resnet"
    ),
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs of every training run.")] = 15,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Batch size.")] = 64,
    lr: Annotated[
        float | None, typer.Option("--lr", help="AdamW learning rate (default: train's, 3e-3 lsc / 1e-3 ce).")
    ] = None,
    dim: Annotated[
        int | None, typer.Option("--dim", min=2, help="Dim of the A_nr student (default: the model's width).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Data order, initialisation and the A_nr shuffle key.")] = 0,
    pictures: Annotated[
        bool, typer.Option("--pictures/--no-pictures", help="Write latent-space and training-curve PNGs.")
    ] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a report folder the demo wrote.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the whole pipeline on the digits shipped with scikit-learn, in a few minutes on a CPU (or a GPU if present).

    1. a cross-entropy teacher; 2. extract its class means; 3. snap them to distinct A_n roots; 4. students toward
    (a) the means, (b) the snapped roots, (c) generated A_nr centers; 5. evaluate each by exact and fast decoding;
    6. a table on the terminal and a report folder with report.md / report.json and PNGs.
    """
    from ..demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=out,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        dim=dim,
        seed=seed,
        pictures=pictures,
        overwrite=overwrite,
        quiet=quiet,
    )
    report = run_demo(cfg)
    typer.echo(str(out / "report.md") if report else "")
