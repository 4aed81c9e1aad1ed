"""The ``lscdistill`` command line (Typer). Each command is a thin wrapper over a library function."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .._version import __version__
from .demo import demo_command
from .export import export_command
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
app.command("export")(export_command)
app.command("merge")(merge_command)
app.command("inspect")(inspect_command)
app.command("plan")(plan_command)
app.command("plot")(plot_command)
app.command("demo")(demo_command)
app.command("run")(run_command)


def main() -> None:
    try:
        app()
    except SystemExit as exc:  # how every command ends (typer), with its exit status
        _end_process_group(exc.code)
        raise
    finally:  # a crash still shuts the process group down (and keeps its traceback)
        _end_process_group(None, leave=False)


def _end_process_group(code: int | str | None, leave: bool = True) -> None:
    """Shut down a torchrun / accelerate launch process group. ``leave``: then end the process at once with
    ``code``: after all work is done, torch's gloo/TCPStore threads can abort the interpreter's own exit
    (``terminate called without an active exception``, exit -6: about 1 in 30 two-process runs on 2 CPU cores),
    which would report a finished run as failed; the outputs are all written and closed by then."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.destroy_process_group()
    if leave:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
