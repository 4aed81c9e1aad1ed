"""Shared CLI plumbing: consoles, one-line errors, option aliases."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..options import WORKERS_HELP, check_value, flag_name

__all__ = [
    "JsonOpt",
    "config_command",
    "err_console",
    "handle_errors",
    "out_console",
    "parse_floats",
    "parse_shard",
]

out_console = Console()  # results (stdout)
err_console = Console(stderr=True)  # progress, diagnostics, errors (stderr)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of text.")]
Workers = Annotated[int | None, typer.Option("--workers", "-j", min=0, help=WORKERS_HELP)]

F = TypeVar("F", bound=Callable[..., Any])

#: errors that mean "bad input": shown as one red line (set LSCDISTILL_DEBUG=1 for the traceback). The project
#: raises ValueError (and its StoreError) for bad input, and the OS errors below come from the paths given; anything
#: else (KeyError, IndexError, ...) is a bug and keeps its traceback.
KNOWN_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError)


def handle_errors(func: F) -> F:
    """Turn known errors into one red line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            if os.environ.get("LSCDISTILL_DEBUG"):
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
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


# ------------------------------------------------------------------------------------ options from a config
def _repeatable(tp: Any) -> bool:
    """``list[...]`` or ``list[...] | None``: an option given any number of times."""
    return typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))


def _parameters(config: type) -> list[inspect.Parameter]:
    """One Typer option per field of ``config`` that declares one (``lscdistill.options.opt``)."""
    hints = typing.get_type_hints(config)
    params = []
    for f in dataclasses.fields(config):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        bounds = {k: v for k in ("min", "max") if (v := getattr(cli, k)) is not None}
        if cli.argument:
            option = typer.Argument(help=cli.help, **bounds)
        else:
            option = typer.Option(*(cli.flags or (f"--{f.name.replace('_', '-')}",)), help=cli.help, **bounds)
        default = f.default if cli.cli_default is ... else cli.cli_default
        default = inspect.Parameter.empty if default is dataclasses.MISSING else default
        if _repeatable(cli.cli_type):
            default = None  # repeatable options start empty
        kind = inspect.Parameter.KEYWORD_ONLY
        annotation = Annotated[cli.cli_type or hints[f.name], option]
        params.append(inspect.Parameter(f.name, kind, default=default, annotation=annotation))
    return params


def config_from_options(config: type, values: dict[str, Any], converters: dict[str, Callable] | None = None) -> Any:
    """The config dataclass from parsed option values, each converted as its field declares (or as ``converters``
    says: command-line syntax such as ``--shard I/N`` that the library does not know), then checked against its
    declared allowed values (a ValueError naming the flag: one line, exit 1), as recipes check them."""
    kwargs, converters = {}, converters or {}
    for f in dataclasses.fields(config):
        if f.name not in values:
            continue
        value, cli = values[f.name], f.metadata.get("cli")
        if f.name in converters:
            value = converters[f.name](value)
        elif cli is not None and cli.to_config is not None:
            value = cli.to_config(value)
        elif cli is not None and _repeatable(cli.cli_type):
            value = tuple(value or ())
        if cli is not None:
            check_value(f, value, flag_name(f))
        kwargs[f.name] = value
    return config(**kwargs)


def config_command(config: type, **converters: Callable) -> Callable[[Callable[[Any], None]], Callable[..., None]]:
    """Decorator: a command ``body(cfg)`` becomes a Typer command whose options are ``config``'s fields, with the
    help declared on them (one declaration per flag: the dataclass), and whose ``--help`` text is the body's
    docstring; known errors become one line (:func:`handle_errors`). Keyword parameters of the body after ``cfg``
    (annotated like any Typer parameter) become options too and reach the body as they are. ``converters``: field
    name -> function of the parsed text, for command-line syntax (a ``typer.BadParameter`` it raises is a usage
    error)."""

    def decorate(body: Callable[..., None]) -> Callable[..., None]:
        # the body's own keyword parameters after ``cfg`` (e.g. ``as_json: JsonOpt = False``): output options
        # that are not part of the configuration, passed through as they are
        hints = typing.get_type_hints(body, include_extras=True)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name])
            for p in list(inspect.signature(body).parameters.values())[1:]
        ]
        params = _parameters(config) + own

        def command(**values: Any) -> None:
            passed = {p.name: values.pop(p.name) for p in own}
            return body(config_from_options(config, values, converters), **passed)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__qualname__, command.__doc__ = body.__name__, body.__qualname__, body.__doc__
        command.__module__ = body.__module__
        return handle_errors(command)

    return decorate
