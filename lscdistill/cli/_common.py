"""Shared CLI plumbing: consoles, one-line errors, option aliases."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

__all__ = ["JsonOpt", "err_console", "handle_errors", "out_console", "parse_floats", "parse_shard"]

out_console = Console()  # results (stdout)
err_console = Console(stderr=True)  # progress, diagnostics, errors (stderr)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of text.")]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=0,
        help="DataLoader worker processes for image data (default: 0 on the CPU, on a GPU min(8, CPU cores per "
        "process)); results do not depend on it.",
    ),
]
ModelKwargs = Annotated[
    list[str] | None,
    typer.Option(
        "--model-kwargs",
        help="KEY=VALUE keyword argument for timm.create_model, repeatable, as in timm's train.py "
        "(e.g. --model-kwargs patch_size=4 for a ViT at 32 px); a run records it in model.json.",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])

#: errors that mean "bad input": shown as one red line (set LSCDISTILL_DEBUG=1 for the traceback)
KNOWN_ERRORS = (ValueError, IndexError, FileNotFoundError, FileExistsError, PermissionError, KeyError)


def handle_errors(func: F) -> F:
    """Turn known errors into one red line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            if os.environ.get("LSCDISTILL_DEBUG"):
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def parse_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` -> ``(0.5, 0.5, 0.5)``; a bad value is a usage error."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{flag} must be comma-separated numbers, got {text!r}") from None


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise typer.BadParameter(f"--shard {text}: need 0 <= I < N")
    return i, n
