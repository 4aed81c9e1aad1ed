"""The ``lscdistill`` command line (Typer). Each command is a thin wrapper over a library function."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from .demo import demo_command
from .extract import extract_command
from .plan import plan_command
from .plot import plot_command
from .run import run_command
from .snap import snap_command
from .stores import inspect_command, merge_command
from .train import evaluate_command, predict_command, train_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="lscdistill",
    help="Train networks toward fixed class centers (latent space configuration) instead of a classifier layer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lscdistill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """lscdistill: class centers from vector systems or teacher means, cosine loss, O(n_dim) label prediction.

    Set LSCDISTILL_DEBUG=1 to see tracebacks instead of one-line errors.
    """


app.command("extract")(extract_command)
app.command("snap")(snap_command)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("predict")(predict_command)
app.command("merge")(merge_command)
app.command("inspect")(inspect_command)
app.command("plan")(plan_command)
app.command("plot")(plot_command)
app.command("demo")(demo_command)
app.command("run")(run_command)


def main() -> None:
    try:
        app()
    finally:  # a clean shutdown of a torchrun / accelerate launch process group (a rank could abort on exit)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
