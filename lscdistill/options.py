"""Command options declared once: each field of a command's config dataclass carries its help text and, where the
command line differs from the field, its flags, bounds, allowed values and conversion.

Everything else is derived from these declarations: the Typer command (``lscdistill.cli._common.config_command``),
``--help`` and docs/cli.md, the checks and YAML coercion of recipe steps (:func:`field_value`, used by
``lscdistill.recipes``) and the recipe field tables of docs/recipes.md (:func:`fields_markdown`). A flag's meaning,
type, bounds and choices are written in one place.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "WORKERS_HELP",
    "Cli",
    "as_str",
    "check_value",
    "declared_fields",
    "field_value",
    "flag_name",
    "format_scalar",
    "loss_name",
    "model_kwargs_option",
    "negative_is_none",
    "one_of",
    "opt",
    "timm_model",
    "type_name",
    "vector_system",
    "workers_option",
]

WORKERS_HELP = (
    "DataLoader worker processes for image data (default: 0 on the CPU, on a GPU min(8, CPU cores per process)); "
    "results do not depend on it."
)

#: ``check(value, subject)`` raises a ValueError that starts with ``subject`` (``--loss`` on the command line,
#: ``recipe.yaml: step 2 (train), field 'loss'`` in a recipe) when ``value`` is not allowed
Check = Callable[[Any, str], None]


@dataclass(frozen=True)
class Cli:
    """How a config field appears on the command line (and in recipes).

    Args:
        help: what the option means (``--help``, docs/cli.md, docs/recipes.md).
        flags: option names (default: ``--field-name``), e.g. ``("--model", "-m")``.
        min, max: bounds (Typer's ``min``/``max`` on the command line, :func:`check_value` in recipes).
        cli_type: the type the command line parses when it differs from the field's (a ``Path`` for a ``str``
            field; tuple fields are parsed as repeatable options).
        cli_default: the command line's default when it is spelled differently from the field's (``"0/1"`` for
            ``(0, 1)``).
        to_config: the parsed value -> the field's value (repeatable options: ``tuple(value or ())``); it must also
            accept a value of the field's own type (recipes give those).
        argument: a positional argument instead of an option (``flags`` unused).
        check: the allowed values (:func:`one_of`, :func:`timm_model`, ...), checked before anything runs.
    """

    help: str
    flags: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    cli_type: Any = None
    cli_default: Any = ...  # ...: the field's own default
    to_config: Callable[[Any], Any] | None = None
    argument: bool = False
    check: Check | None = None


def opt(default: Any, help: str, *flags: str, **cli: Any) -> Any:
    """A dataclass field with its command-line description (``default=MISSING``: a required option)."""
    kwargs = {} if default is MISSING else {"default": default}
    return field(**kwargs, metadata={"cli": Cli(help, flags, **cli)})


def as_str(value: Path | str | None) -> str | None:
    return None if value is None else str(value)


def negative_is_none(value: int | None) -> int | None:
    return None if value is not None and value < 0 else value


#: what --data, --features and --labels take, the same for every command that reads samples
DATA_HELP = (
    "'digits', 'digits:train', 'digits:val' (fixed 80/20 split), an image folder (one sub-folder per class) or a "
    ".tar of one."
)
FEATURES_HELP = "Precomputed features X.npy or X.h5[:name]."
LABELS_HELP = "Integer labels .npy for --features."


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


# ------------------------------------------------------------------------------------------------ allowed values
def one_of(*choices: str) -> Check:
    """A check that allows only ``choices``."""

    def check(value: Any, subject: str) -> None:
        if value not in choices:
            raise ValueError(f"{subject} must be one of {', '.join(choices)}, got {value!r}")

    return check


def timm_model(value: str, subject: str) -> None:
    """A timm model name (``mlp``: the small MLP for features; ``hf-hub:``/``local-dir:`` sources are not listed)."""
    import timm

    source = value.partition(":")[0] if ":" in value else ""
    if value != "mlp" and source not in ("hf-hub", "hf_hub", "local-dir") and not timm.is_model(value):
        raise ValueError(f"{subject}: unknown timm model {value!r} (timm.list_models('*vit*') lists some)")


def vector_system(value: str, subject: str) -> None:
    from .systems import get_spec

    try:
        get_spec(value)
    except ValueError as exc:  # its message lists the valid names
        raise ValueError(f"{subject}: {exc}") from None


def loss_name(value: str, subject: str) -> None:
    from .losses import check_loss

    try:
        check_loss(value)
    except ValueError as exc:
        raise ValueError(f"{subject}: {exc}") from None


# ------------------------------------------------------------------------------------------------ derived
def declared_fields(config: type) -> list[dataclasses.Field]:
    """The fields of ``config`` that declare an option (:func:`opt`); the others are set by code (``command``)."""
    return [f for f in dataclasses.fields(config) if "cli" in f.metadata]


def flag_name(f: dataclasses.Field) -> str:
    """How the command line names a field: its first flag (``--pictures`` of ``--pictures/--no-pictures``)."""
    cli: Cli = f.metadata["cli"]
    if cli.argument:
        return f.name.upper()
    return cli.flags[0].partition("/")[0] if cli.flags else f"--{f.name.replace('_', '-')}"


def check_value(f: dataclasses.Field, value: Any, subject: str) -> None:
    """The declared bounds and allowed values of field ``f`` (``None`` always passes: it means "not set")."""
    cli: Cli | None = f.metadata.get("cli")
    if cli is None or value is None:
        return
    if cli.min is not None and value < cli.min:
        raise ValueError(f"{subject} must be >= {cli.min}, got {value!r}")
    if cli.max is not None and value > cli.max:
        raise ValueError(f"{subject} must be <= {cli.max}, got {value!r}")
    if cli.check is not None:
        cli.check(value, subject)


def field_value(f: dataclasses.Field, hint: Any, value: Any, subject: str) -> Any:
    """A YAML value (a recipe step's field) as field ``f`` (annotation ``hint``) holds it: coerced to its type,
    converted as the command line converts it, checked against its bounds and allowed values."""
    value = _coerce(value, hint, subject)
    cli: Cli | None = f.metadata.get("cli")
    if cli is not None and cli.to_config is not None:
        value = cli.to_config(value)
    check_value(f, value, subject)
    return value


def _coerce(value: Any, tp: Any, subject: str) -> Any:
    """``value`` as type ``tp`` or a clear error; YAML lists become tuples."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(value, options[0], subject)
        raise TypeError(f"{subject}: unsupported field type {tp}")  # no config uses other unions
    if value is None:
        raise ValueError(f"{subject} must be {type_name(tp)}, got null")
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
        try:
            return float(value)
        except ValueError:
            pass
    if origin is tuple and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{subject}[{i}]") for i, v in enumerate(value))
        if len(value) == len(args):
            return tuple(_coerce(v, a, f"{subject}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    elif origin is None and tp not in _SCALARS:
        raise TypeError(f"{subject}: unsupported field type {tp}")
    elif _SCALARS.get(tp, lambda _v: False)(value):
        return float(value) if tp is float else Path(value) if tp is Path else value
    raise ValueError(f"{subject} must be {type_name(tp)}, got {value!r} ({type(value).__name__})")


#: the scalar field types and the YAML values each accepts (bool is an int in Python, not in a recipe)
_SCALARS: dict[Any, Callable[[Any], bool]] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    Path: lambda v: isinstance(v, str) and bool(v),
}


def type_name(tp: Any) -> str:
    """How an error names a type: ``an integer``, ``a list of 2 values (an integer, an integer)``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path"}
    return names.get(tp, str(tp))


def format_scalar(value: Any) -> str:
    """A value as YAML would write it inline: null, true/false, [a, b] for a tuple, else ``str``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, tuple):
        return "[" + ", ".join(format_scalar(v) for v in value) + "]"
    return str(value)


# ------------------------------------------------------------------------------------------------ field docs
def field_docs(config: type) -> dict[str, str]:
    """The meaning of every declared field of ``config`` as a recipe reads it: its help, with ``--flag`` written
    as the field it sets (``--val-data`` -> ``val_data``), and how a recipe spells a value whose command-line
    syntax is its own (``--shard I/N``: a list)."""
    fields = declared_fields(config)
    names = {f.name for f in fields}
    hints = typing.get_type_hints(config)

    def as_field(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")
        return f"`{name}`" if name in names else m.group(0)

    docs = {}
    for f in fields:
        cli: Cli = f.metadata["cli"]
        text = re.sub(r"--([a-z][a-z0-9-]*)", as_field, " ".join(cli.help.split()))
        field_type = _without_none(hints[f.name])
        if _without_none(cli.cli_type) is str and field_type is not str:  # the command line has its own syntax
            text += f" In a recipe: {type_name(field_type)}."
        docs[f.name] = text
    return docs


def _without_none(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def fields_markdown(step_types: Iterable[tuple[str, type]]) -> str:
    """One Markdown table per step type: field, type, default, meaning (the block in docs/recipes.md)."""
    parts = []
    for kind, config in step_types:
        docs = field_docs(config)
        lines = [f"### `{kind}` ({config.__name__})", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for f in declared_fields(config):
            default = "**required**" if f.default is MISSING else f"`{format_scalar(f.default)}`"
            type_text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            type_text, meaning = (text.replace("|", "\\|") for text in (type_text, docs[f.name]))
            lines.append(f"| `{f.name}` | `{type_text}` | {default} | {meaning} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
