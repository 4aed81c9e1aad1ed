"""Recipes: YAML files that chain the pipeline's steps (``extract``, ``snap``, ``train``, ``evaluate``, ``demo``),
every field typed and checked before anything runs.

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
its ``run_*`` function (:class:`~lscdistill.train.TrainConfig`, ...), defaults filled in. An unknown key, a value of
the wrong type, a missing required field, an unknown ``${var}`` or a bad override is one :class:`ValueError` that
names the file (or the override), the step and the field. Overrides (``--set``) use ``yaml.safe_load`` on the value:

- ``TYPE.FIELD=VALUE``: that field of every step of that type (``train.epochs=1``);
- ``N.FIELD=VALUE``: step N only, counted from 1 as ``lscdistill run --dry-run`` lists them (``3.lr=1e-5``);
- ``vars.NAME=VALUE``: a var the recipe declares (``vars.imagenet=/mnt/in1k``).

:func:`run_recipe` checks that every input path exists or is written by an earlier step, runs the steps, and saves
the resolved recipe (all fields, vars substituted) with each output: ``RUN_DIR/recipe.yaml`` in a directory
(train run, demo report), ``STORE.h5.recipe.yaml`` beside a file (extract, snap).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._version import __version__
from .demo import DemoConfig, run_demo
from .evaluate import EvalConfig, run_evaluate
from .extract import ExtractConfig, run_extract
from .progress import is_main_process
from .runtime import PRECISIONS
from .snap import METHODS, SnapConfig, run_snap
from .train import OBJECTIVES, SCHEDULES, TrainConfig, run_train

__all__ = [
    "STEP_CONFIGS",
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
]

#: step type -> the config dataclass its fields are checked against
STEP_CONFIGS: dict[str, type] = {
    "extract": ExtractConfig,
    "snap": SnapConfig,
    "train": TrainConfig,
    "evaluate": EvalConfig,
    "demo": DemoConfig,
}
HEADER_KEYS = ("name", "description", "paper", "dataset")  # required text
TOP_KEYS = (*HEADER_KEYS, "vars", "steps", "resolved")  # `resolved` is written by lscdistill into saved copies
#: fields that name an input (must exist, or be written by an earlier step) and the field that names the output
INPUT_FIELDS = {
    "extract": ("data", "features", "labels", "checkpoint"),
    "snap": ("means",),
    "train": ("data", "features", "labels", "val_data", "val_features", "val_labels", "centers", "init_from"),
    "evaluate": ("run_dir", "data", "features", "labels"),
    "demo": (),
}
OUTPUT_FIELD = "out"
DIRECTORY_OUTPUTS = ("train", "demo")  # these write a folder; extract and snap write one file
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
        out = getattr(self.config, OUTPUT_FIELD, None)
        return Path(out) if out is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self.config, f.name)) for f in dataclasses.fields(self.config)}


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


@dataclass
class StepResult:
    step: Step
    result: Any  # what the step's run_* function returned
    recipe_copy: Path | None  # where the resolved recipe was saved with the step's output


# ------------------------------------------------------------------------------------------------ loading
def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file (``yaml.safe_load``), apply ``--set`` style overrides, check every field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist (lscdistill run --list shows the shipped ones)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_recipe(data, str(path), overrides)


def parse_recipe(data: Any, source: str = "<recipe>", overrides: Sequence[str] = ()) -> Recipe:
    """A recipe from its parsed YAML; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping with keys {', '.join(TOP_KEYS[:-1])}")
    for key in data:
        if key not in TOP_KEYS:
            raise ValueError(f"{source}: unknown key {key!r}{_suggest(key, TOP_KEYS)} (keys: {', '.join(TOP_KEYS)})")
    for key in HEADER_KEYS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{source}: {key!r} is required and must be text")
    variables = data.get("vars") or {}
    if not isinstance(variables, dict):
        raise ValueError(f"{source}: 'vars' must be a mapping of names to values")
    variables = dict(variables)
    for name, value in variables.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{source}: var name {name!r} must be an identifier (letters, digits, _)")
        _check_scalar(value, f"{source}: var {name!r}")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{source}: 'steps' must be a non-empty list of {{type: {{field: value}}}} mappings")
    bodies = [_step_body(item, n, source) for n, item in enumerate(steps, 1)]
    origin: dict[tuple[int, str], str] = {}  # (step number, field) -> the override that set it
    for text in overrides:
        _apply_override(text, variables, bodies, origin, source)
    resolved = [_build_step(n, kind, body, variables, origin, source) for n, (kind, body) in enumerate(bodies, 1)]
    return Recipe(
        name=data["name"],
        description=data["description"],
        paper=data["paper"],
        dataset=data["dataset"],
        vars=variables,
        steps=resolved,
        source=source,
        overrides=tuple(overrides),
    )


def _step_body(item: Any, number: int, source: str) -> tuple[str, dict[str, Any]]:
    kinds = ", ".join(STEP_CONFIGS)
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError(f"{source}: step {number} must be a mapping with one key, the step type ({kinds})")
    kind, body = next(iter(item.items()))
    if kind not in STEP_CONFIGS:
        raise ValueError(f"{source}: step {number}: unknown step type {kind!r}{_suggest(kind, STEP_CONFIGS)} ({kinds})")
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
        if name not in variables:
            known = ", ".join(variables) or "none"
            raise ValueError(f"{where}: {source} declares no var {name!r}{_suggest(name, variables)} (vars: {known})")
        _check_scalar(value, where)
        variables[name] = value
        return
    if selector.isdigit():
        numbers = [int(selector)]
        if not 1 <= numbers[0] <= len(bodies):
            raise ValueError(f"{where}: {source} has steps 1 to {len(bodies)}")
    elif selector in STEP_CONFIGS:
        numbers = [n for n, (kind, _) in enumerate(bodies, 1) if kind == selector]
        if not numbers:
            raise ValueError(f"{where}: {source} has no {selector} step")
    else:
        raise ValueError(
            f"{where}: {selector!r}{_suggest(selector, STEP_CONFIGS)} is not a step type "
            f"({', '.join(STEP_CONFIGS)}), a step number or 'vars'"
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
    cls = STEP_CONFIGS[kind]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for name, raw in body.items():
        where = f"{origin.get((number, name), source)}: step {number} ({kind})"
        if name not in hints:
            hint = _suggest(name, names) or " (lscdistill run --fields lists the fields)"
            raise ValueError(f"{where}: unknown field {name!r}{hint}")
        value = _substitute(raw, variables, f"{where}, field {name!r}")
        values[name] = _coerce(value, hints[name], f"{where}, field {name!r}")
        _check_choice(kind, name, values[name], f"{where}, field {name!r}")
    missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in values]
    if missing:
        raise ValueError(f"{source}: step {number} ({kind}): required field {missing[0]!r} is missing")
    return Step(number, kind, cls(**values), tuple(values))


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


def format_scalar(value: Any) -> str:
    """A value as YAML would write it inline: null, true/false, [a, b] for a tuple, else ``str``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, tuple):
        return "[" + ", ".join(format_scalar(v) for v in value) + "]"
    return str(value)


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, list):
        for v in value:
            _check_scalar(v, where)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"{where}: must be text, a number, true/false, null or a list of those")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (the field's annotation) or a clear error; YAML lists become tuples."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(value, options[0], where)
        raise TypeError(f"{where}: unsupported field type {tp}")  # no config uses other unions
    expected = _type_name(tp)
    if value is None:
        raise ValueError(f"{where}: must be {expected}, got null")
    got = f"{value!r} ({type(value).__name__})"
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
    elif origin is tuple:
        if isinstance(value, list | tuple):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    else:
        raise TypeError(f"{where}: unsupported field type {tp}")
    raise ValueError(f"{where}: must be {expected}, got {got}")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "text",
        Path: "a path",
    }.get(tp, str(tp))


def _check_choice(kind: str, name: str, value: Any, where: str) -> None:
    """Names that are only checked deep inside a run (a misspelt loss in the last step of a recipe should not
    surface hours later): the same lists the run_* functions use."""
    if value is None:
        return
    choices: Sequence[str] | None = None
    if name in ("model", "teacher") and value != "mlp":
        import timm

        if not timm.is_model(value):
            raise ValueError(f"{where}: {value!r} is not a timm model name (timm.list_models('*vit*') lists some)")
    elif name in ("system", "loss"):
        from .losses import check_loss
        from .systems import get_spec

        try:
            get_spec(value) if name == "system" else check_loss(value)  # their errors list the valid names
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    elif name == "precision":
        choices = PRECISIONS
    elif kind == "train" and name == "objective":
        choices = OBJECTIVES
    elif kind == "train" and name == "schedule":
        choices = SCHEDULES
    elif kind == "snap" and name == "method":
        choices = METHODS
    elif kind == "snap" and name == "reduce":
        choices = ("none", "pca")
    if choices is not None and value not in choices:
        raise ValueError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")


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


def recipe_copy_path(step: Step) -> Path | None:
    """Where the resolved recipe is saved with a step's output: ``RUN_DIR/recipe.yaml`` in a folder (train, demo),
    ``STORE.h5.recipe.yaml`` beside a file (extract, snap); ``None`` for a step without output (evaluate)."""
    out = step.output
    if out is None:
        return None
    return out / "recipe.yaml" if step.kind in DIRECTORY_OUTPUTS else out.with_name(out.name + ".recipe.yaml")


def _barrier() -> None:
    """Wait for every process of a torchrun / accelerate launch (sets up the process group if no step has yet)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


# ------------------------------------------------------------------------------------------------ running
def check_inputs(recipe: Recipe) -> list[str]:
    """Input paths that neither exist nor are written by an earlier step, one message each."""
    from .data import is_digits

    written: list[Path] = []
    problems = []
    for step in recipe.steps:
        for name in INPUT_FIELDS[step.kind]:
            value = getattr(step.config, name)
            if value is None or (name in ("data", "val_data") and is_digits(str(value))):
                continue
            path = Path(str(value))
            if not path.exists() and name in ("features", "val_features") and ":" in str(value):
                path = Path(str(value).rpartition(":")[0])  # X.h5:dataset
            made = any(path.resolve() == w or w in path.resolve().parents for w in written)
            if not path.exists() and not made:
                problems.append(
                    f"step {step.number} ({step.kind}), field {name!r}: {path} does not exist and no earlier step "
                    f"writes it"
                )
        if step.output is not None:
            written.append(step.output.resolve())
    return problems


def run_recipe(recipe: Recipe, log: Callable[[str], None] | None = None) -> list[StepResult]:
    """Run the steps in order (creating the folders their outputs go in) and save the resolved recipe with each
    step's output. Inputs are checked first: a missing one stops the recipe before any step runs."""
    log = log or (lambda _msg: None)
    problems = check_inputs(recipe)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise FileNotFoundError(f"{recipe.source}: {problems[0]}{more}")
    text = recipe.to_yaml()
    results = []
    for step in recipe.steps:
        log(f"step {step.number}/{len(recipe.steps)}: {step.kind}" + (f" -> {step.output}" if step.output else ""))
        if step.output is not None:  # a recipe's outputs usually share a folder of their own
            step.output.parent.mkdir(parents=True, exist_ok=True)
        result = _run_step(step, log, f"lscdistill run {recipe.source} (step {step.number})")
        copy = recipe_copy_path(step)
        if copy is not None and copy.parent.is_dir() and is_main_process():
            copy.write_text(text)
        else:
            copy = None
        results.append(StepResult(step, result, copy))
    return results


def _run_step(step: Step, log: Callable[[str], None], command: str) -> Any:
    """The step's ``run_*`` function on its config; stores record the recipe as their provenance ``command``."""
    cfg = step.config
    if step.kind in ("extract", "snap") and cfg.command is None:
        cfg = dataclasses.replace(cfg, command=command)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if step.kind == "demo" and world > 1:
        raise ValueError(f"step {step.number} (demo) runs in one process; run this recipe without a launcher")
    if step.kind == "snap":  # one process snaps (CPU work on the whole store); the others wait for its output
        result = run_snap(cfg, log=log) if is_main_process() else None
        _barrier()
        return result
    return {"extract": run_extract, "train": run_train, "evaluate": run_evaluate, "demo": run_demo}[step.kind](cfg)


# ------------------------------------------------------------------------------------------------ finding
def recipes_dirs() -> list[Path]:
    """Where recipe names are looked up: ``./recipes`` and the ``recipes/`` of the source checkout."""
    dirs = [Path.cwd() / "recipes", Path(__file__).resolve().parents[1] / "recipes"]
    unique = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


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
