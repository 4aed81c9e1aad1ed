"""Recipes: YAML files that chain the pipeline's steps (``extract``, ``snap``, ``train``, ``evaluate``,
``report``), every field typed and checked before anything runs.

A recipe (format in ``docs/recipes.md``)::

    name: imagenet-vits-anr        # the file's stem
    description: ...               # one line
    paper: ...                     # section / table and the numbers the paper reports
    dataset: ...                   # the data layout the steps expect
    vars:                          # scalars, substituted as ${name} in step fields
      imagenet: /data/imagenet
    steps:                         # run in order; each a one-key mapping {step type: {field: value}}
      - train: {out: runs/anr, model: vit_small_patch16_224, data: "${imagenet}/train"}
      - evaluate: {run_dir: runs/anr, data: "${imagenet}/train"}

The file is read with ``yaml.safe_load`` (no tags, nothing executes) and each step becomes the config dataclass of
its step type (``lscdistill.steps.STEP_TYPES``: :class:`~lscdistill.train.TrainConfig`, ...), defaults filled in.
Every value goes through its field's declaration (``lscdistill.options.field_value``: the type, bounds, allowed
values and conversion the command line uses). An unknown key, a value of the wrong type or out of range, a missing
required field, an unknown ``${var}`` or a bad override is one :class:`ValueError` that names the file (or the
override), the step and the field. Overrides (``--set``) use ``yaml.safe_load`` on the value and go through the
same checks:

- ``TYPE.FIELD=VALUE``: that field of every step of that type (``train.epochs=1``);
- ``N.FIELD=VALUE``: step N only, counted from 1 as ``lscdistill run --dry-run`` lists them (``3.lr=1e-5``);
- ``vars.NAME=VALUE``: a var the recipe declares (``vars.imagenet=/mnt/in1k``).

``lscdistill.steps.run_recipe`` runs a recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import site
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._version import __version__
from .options import declared_fields, field_value, format_scalar
from .steps import STEP_TYPES, StepResult, check_inputs, recipe_copy_path, run_recipe

__all__ = [
    "Recipe",
    "Step",
    "StepResult",
    "check_inputs",
    "find_recipe",
    "list_recipes",
    "load_recipe",
    "parse_recipe",
    "recipe_copy_path",
    "recipes_dirs",
    "run_recipe",
    "shipped_recipe",
]

HEADER_KEYS = ("name", "description", "paper", "dataset")  # required text
TOP_KEYS = (*HEADER_KEYS, "vars", "steps", "resolved")  # `resolved` is written by lscdistill into saved copies
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Step:
    """One resolved step: its number in the recipe (from 1), type, config dataclass and the fields the recipe (or an
    override) set; the others hold their defaults."""

    number: int
    kind: str
    config: Any
    given: tuple[str, ...] = ()

    @property
    def output(self) -> Path | None:
        """What the step writes (store, run directory, report folder); ``None`` for ``evaluate``."""
        out = getattr(self.config, "out", None)
        return Path(out) if out is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self.config, f.name)) for f in declared_fields(type(self.config))}


@dataclass
class Recipe:
    name: str
    description: str
    paper: str
    dataset: str
    vars: dict[str, Any]
    steps: list[Step]
    source: str = "<recipe>"
    overrides: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe: every field of every step, vars substituted; loads back to the same recipe."""
        return {
            "name": self.name,
            "description": self.description,
            "paper": self.paper,
            "dataset": self.dataset,
            "vars": dict(self.vars),
            "steps": [{s.kind: s.to_dict()} for s in self.steps],
            "resolved": {"source": self.source, "overrides": list(self.overrides), "lscdistill": __version__},
        }

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


# ------------------------------------------------------------------------------------------------ loading
def load_recipe(
    path: str | os.PathLike, overrides: Sequence[str] = (), variables: Mapping[str, Any] | None = None
) -> Recipe:
    """Read a recipe file (``yaml.safe_load``), set ``variables`` (vars it declares, as Python values), apply
    ``--set`` style overrides, check every field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist (lscdistill run --list shows the shipped ones)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_recipe(data, str(path), overrides, variables)


def parse_recipe(
    data: Any, source: str = "<recipe>", overrides: Sequence[str] = (), variables: Mapping[str, Any] | None = None
) -> Recipe:
    """A recipe from its parsed YAML; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping with keys {', '.join(TOP_KEYS[:-1])}")
    for key in data:
        if key not in TOP_KEYS:
            raise ValueError(f"{source}: unknown key {key!r}{_suggest(key, TOP_KEYS)} (keys: {', '.join(TOP_KEYS)})")
    for key in HEADER_KEYS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{source}: {key!r} is required and must be text")
    declared = _vars(data.get("vars"), source)
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{source}: 'steps' must be a non-empty list of {{type: {{field: value}}}} mappings")
    bodies = [_step_body(item, n, source) for n, item in enumerate(steps, 1)]
    given = [f"vars.{name}={format_scalar(value)}" for name, value in (variables or {}).items()]
    for name, value in (variables or {}).items():
        _set_var(declared, name, value, f"var {name!r}", source)
    origin: dict[tuple[int, str], str] = {}  # (step number, field) -> the override that set it
    for text in overrides:
        _apply_override(text, declared, bodies, origin, source)
    resolved = [_build_step(n, kind, body, declared, origin, source) for n, (kind, body) in enumerate(bodies, 1)]
    for step in resolved:
        check = STEP_TYPES[step.kind].check
        if check is not None:
            check(step.config, [s for s in resolved if s.number < step.number], f"{source}: step {step.number}")
    header = {key: data[key] for key in HEADER_KEYS}
    return Recipe(**header, vars=declared, steps=resolved, source=source, overrides=(*given, *overrides))


def _vars(variables: Any, source: str) -> dict[str, Any]:
    if not isinstance(variables or {}, dict):
        raise ValueError(f"{source}: 'vars' must be a mapping of names to values")
    variables = dict(variables or {})
    for name, value in variables.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{source}: var name {name!r} must be an identifier (letters, digits, _)")
        _check_scalar(value, f"{source}: var {name!r}")
    return variables


def _set_var(variables: dict[str, Any], name: str, value: Any, where: str, source: str) -> None:
    if name not in variables:
        known = ", ".join(variables) or "none"
        raise ValueError(f"{where}: {source} declares no var {name!r}{_suggest(name, variables)} (vars: {known})")
    _check_scalar(value, where)
    variables[name] = value


def _step_body(item: Any, number: int, source: str) -> tuple[str, dict[str, Any]]:
    kinds = ", ".join(STEP_TYPES)
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError(f"{source}: step {number} must be a mapping with one key, the step type ({kinds})")
    kind, body = next(iter(item.items()))
    if kind == "demo":  # the step type that ran the demo before it became recipes/demo.yaml
        raise ValueError(
            f"{source}: step {number}: the 'demo' step type is gone: run `lscdistill demo` (or the "
            "recipe it runs, `lscdistill run demo`)"
        )
    if kind not in STEP_TYPES:
        raise ValueError(f"{source}: step {number}: unknown step type {kind!r}{_suggest(kind, STEP_TYPES)} ({kinds})")
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise ValueError(f"{source}: step {number} ({kind}) must map field names to values")
    return kind, dict(body)


def _apply_override(
    text: str,
    variables: dict[str, Any],
    bodies: list[tuple[str, dict[str, Any]]],
    origin: dict[tuple[int, str], str],
    source: str,
) -> None:
    where = f"--set {text}"
    key, sep, raw = text.partition("=")
    selector, dot, name = key.strip().rpartition(".")
    if not sep or not dot or not selector or not name:
        raise ValueError(f"{where}: expected TYPE.FIELD=VALUE, N.FIELD=VALUE or vars.NAME=VALUE (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ValueError(f"{where}: the value is not a YAML scalar or list; quote it") from None
    if selector == "vars":
        _set_var(variables, name, value, where, source)
        return
    if selector.isdigit():
        numbers = [int(selector)]
        if not 1 <= numbers[0] <= len(bodies):
            raise ValueError(f"{where}: {source} has steps 1 to {len(bodies)}")
    elif selector in STEP_TYPES:
        numbers = [n for n, (kind, _) in enumerate(bodies, 1) if kind == selector]
        if not numbers:
            raise ValueError(f"{where}: {source} has no {selector} step")
    else:
        raise ValueError(
            f"{where}: {selector!r}{_suggest(selector, STEP_TYPES)} is not a step type "
            f"({', '.join(STEP_TYPES)}), a step number or 'vars'"
        )
    for n in numbers:
        bodies[n - 1][1][name] = value
        origin[(n, name)] = where


def _build_step(
    number: int,
    kind: str,
    body: dict[str, Any],
    variables: Mapping[str, Any],
    origin: Mapping[tuple[int, str], str],
    source: str,
) -> Step:
    """The step's config from its fields, each through its declaration (type, conversion, bounds, choices)."""
    cls = STEP_TYPES[kind].config
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in declared_fields(cls)}
    values: dict[str, Any] = {}
    for given, raw in body.items():
        where = f"{origin.get((number, given), source)}: step {number} ({kind})"
        name = OLD_FIELD_NAMES.get(given, given) if OLD_FIELD_NAMES.get(given) in fields else given
        if name in values:
            old = next(k for k, v in OLD_FIELD_NAMES.items() if v == name)
            raise ValueError(f"{where}: field {name!r} is given twice, also by its old name {old!r}")
        if name not in fields:
            hint = _suggest(name, fields) or " (lscdistill run --fields lists the fields)"
            raise ValueError(f"{where}: unknown field {name!r}{hint}")
        subject = f"{where}, field {name!r}"
        values[name] = field_value(fields[name], hints[name], _substitute(raw, variables, subject), subject)
    missing = [f.name for f in fields.values() if _required(f) and f.name not in values]
    if missing:
        raise ValueError(f"{source}: step {number} ({kind}): required field {missing[0]!r} is missing")
    return Step(number, kind, cls(**values), tuple(values))


#: fields renamed since recipes were first written: the old key still sets the field (saved recipe.yaml files hold
#: every field of their step)
OLD_FIELD_NAMES = {"dim": "n_dim"}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _substitute(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    """``${name}`` alone keeps the var's type (``epochs: ${epochs}`` stays an int); inside text it is formatted."""
    if isinstance(value, list):
        return [_substitute(v, variables, where) for v in value]
    if not isinstance(value, str):
        return value
    for name in _VAR.findall(value):
        if name not in variables:
            known = ", ".join(variables) or "none"
            raise ValueError(f"{where}: unknown var ${{{name}}}{_suggest(name, variables)} (vars: {known})")
    whole = _VAR.fullmatch(value)
    if whole:
        return variables[whole.group(1)]
    return _VAR.sub(lambda m: format_scalar(variables[m.group(1)]), value)


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, list | tuple):
        for v in value:
            _check_scalar(v, where)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"{where}: must be text, a number, true/false, null or a list of those")


def _suggest(word: Any, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------------------------------ output
def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line text as ``|`` blocks (the paper notes stay readable)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


# ------------------------------------------------------------------------------------------------ finding
def _shipped_dirs() -> list[Path]:
    """The recipes that ship with lscdistill: the source checkout's ``recipes/``, else the installed copy
    (``pip install`` puts them in ``PREFIX/share/lscdistill/recipes``, ``--user`` under the user base)."""
    installed = [Path(prefix) / "share" / "lscdistill" / "recipes" for prefix in (sys.prefix, site.USER_BASE or "")]
    return [Path(__file__).resolve().parents[1] / "recipes", *installed]


def recipes_dirs() -> list[Path]:
    """Where recipe names are looked up: ``./recipes``, then the shipped recipes."""
    unique: list[Path] = []
    for d in [Path.cwd() / "recipes", *_shipped_dirs()]:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def shipped_recipe(name: str) -> Path:
    """A recipe that ships with lscdistill (``demo``), whatever ``./recipes`` holds."""
    for folder in _shipped_dirs():
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise FileNotFoundError(f"the {name} recipe is missing from this installation (looked in {_shipped_dirs()[0]})")


def find_recipe(name: str) -> Path:
    """A recipe path, or a name such as ``demo`` looked up as ``recipes/demo.yaml``."""
    path = Path(name)
    if path.is_file():
        return path
    for folder in recipes_dirs():
        candidate = folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
        if candidate.is_file():
            return candidate
    known = [p.stem for p in list_recipes()]
    raise FileNotFoundError(
        f"no recipe {name!r}{_suggest(name, known)}: give a YAML file or one of {', '.join(known) or 'none found'}"
    )


def list_recipes() -> list[Path]:
    """The recipe files of :func:`recipes_dirs` (the first folder wins a name)."""
    found: dict[str, Path] = {}
    for folder in recipes_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return sorted(found.values(), key=lambda p: p.stem)
