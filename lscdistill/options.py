"""Command options declared once: each field of a command's config dataclass carries its help text and, where the
command line differs from the field, its flags, bounds and conversion.

The Typer command (``lscdistill.cli._common.config_command``), ``--help``, docs/cli.md and the recipe field docs are
all derived from these declarations, so a flag's meaning is written in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["WORKERS_HELP", "Cli", "as_str", "model_kwargs_option", "negative_is_none", "opt", "workers_option"]

WORKERS_HELP = (
    "DataLoader worker processes for image data (default: 0 on the CPU, on a GPU min(8, CPU cores per process)); "
    "results do not depend on it."
)


@dataclass(frozen=True)
class Cli:
    """How a config field appears on the command line.

    Args:
        help: what the option means (``--help``, docs/cli.md, docs/recipes.md).
        flags: option names (default: ``--field-name``), e.g. ``("--model", "-m")``.
        min, max: bounds the command line checks (Typer's ``min``/``max``).
        cli_type: the type the command line parses when it differs from the field's (a ``Path`` for a ``str``
            field; tuple fields are parsed as repeatable options).
        cli_default: the command line's default when it is spelled differently from the field's (``"0/1"`` for
            ``(0, 1)``).
        to_config: the parsed value -> the field's value (repeatable options: ``tuple(value or ())``).
        argument: a positional argument instead of an option (``flags`` unused).
    """

    help: str
    flags: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    cli_type: Any = None
    cli_default: Any = ...  # ...: the field's own default
    to_config: Callable[[Any], Any] | None = None
    argument: bool = False


def opt(default: Any, help: str, *flags: str, **cli: Any) -> Any:
    """A dataclass field with its command-line description (``default=MISSING``: a required option)."""
    kwargs = {} if default is MISSING else {"default": default}
    return field(**kwargs, metadata={"cli": Cli(help, flags, **cli)})


def as_str(value: Path | None) -> str | None:
    return None if value is None else str(value)


def negative_is_none(value: int | None) -> int | None:
    return None if value is not None and value < 0 else value


def workers_option() -> Any:
    """``--workers/-j``, the same for every command that reads data."""
    return opt(None, WORKERS_HELP, "--workers", "-j", min=0)


def model_kwargs_option() -> Any:
    """``--model-kwargs KEY=VALUE`` (repeatable), the same for every command that builds a timm model."""
    return opt(
        (),
        "KEY=VALUE keyword argument for timm.create_model, repeatable, as in timm's train.py (e.g. --model-kwargs "
        "patch_size=4 for a ViT at 32 px); a run records it in model.json.",
        cli_type=list[str] | None,
    )
