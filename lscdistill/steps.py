"""The step types a recipe chains and the one runner that runs them.

A step type is a config dataclass whose fields are declared with ``lscdistill.options.opt`` (the command line, the
recipe checks and the docs all come from those declarations), the fields that name its inputs, whether its ``out``
is a folder or a file, and the function that runs it. :func:`run_recipe` checks that every input exists or is
written by an earlier step, prepares the folders report steps own, runs the steps in order, and saves the resolved
recipe (all fields, vars substituted) with each output: ``RUN_DIR/recipe.yaml`` in a folder (train run, report),
``STORE.h5.recipe.yaml`` beside a file (extract, snap).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .evaluate import EvalConfig, run_evaluate
from .extract import ExtractConfig, run_extract
from .progress import is_main_process
from .report import ReportConfig, check_report, prepare_report, run_report
from .snap import SnapConfig, run_snap
from .train import TrainConfig, run_train

if TYPE_CHECKING:
    from .recipes import Recipe, Step

__all__ = ["STEP_TYPES", "StepContext", "StepResult", "StepType", "check_inputs", "recipe_copy_path", "run_recipe"]


@dataclass
class StepResult:
    step: Step
    result: Any  # what the step's run function returned
    recipe_copy: Path | None  # where the resolved recipe was saved with the step's output
    seconds: float = 0.0  # wall-clock time of the step


@dataclass
class StepContext:
    """What a step's run function gets besides its config."""

    command: str  # ``lscdistill run RECIPE (step N)``: the provenance stores record
    log: Callable[[str], None]
    earlier: list[StepResult]  # the results of the steps before it


@dataclass(frozen=True)
class StepType:
    """A kind of recipe step.

    Args:
        config: its config dataclass; the declared fields are the step's fields.
        run: ``run(config, context)`` -> the step's result.
        inputs: fields that name an input (must exist, or be written by an earlier step).
        folder: ``out`` is a folder (the resolved recipe goes inside) rather than a file (it goes beside).
        prepare: called on the main process for each step of this type before the recipe's first step runs.
        check: ``check(config, earlier_steps, where)`` raises a ValueError when the step does not fit the steps
            before it; called while the recipe is parsed.
    """

    config: type
    run: Callable[[Any, StepContext], Any]
    inputs: tuple[str, ...] = ()
    folder: bool = False
    prepare: Callable[[Any], None] | None = None
    check: Callable[[Any, Sequence[Step], str], None] | None = None


def _barrier() -> None:
    """Wait for every process of a torchrun / accelerate launch (sets up the process group if no step has yet)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def _with_command(cfg: Any, ctx: StepContext) -> Any:
    """Stores record the recipe and step as their provenance ``command``."""
    return cfg if cfg.command is not None else dataclasses.replace(cfg, command=ctx.command)


def _snap(cfg: SnapConfig, ctx: StepContext) -> Any:
    """One process snaps (CPU work on the whole store); the others wait for its output."""
    result = run_snap(_with_command(cfg, ctx), log=ctx.log) if is_main_process() else None
    _barrier()
    return result


def _report(cfg: ReportConfig, ctx: StepContext) -> Any:
    """The main process writes the report; the others wait."""
    result = run_report(cfg, ctx.earlier) if is_main_process() else None
    _barrier()
    return result


#: step type (the key a recipe step uses) -> how it is checked and run
STEP_TYPES: dict[str, StepType] = {
    "extract": StepType(
        ExtractConfig,
        lambda cfg, ctx: run_extract(_with_command(cfg, ctx)),
        inputs=("data", "features", "labels", "checkpoint"),
    ),
    "snap": StepType(SnapConfig, _snap, inputs=("means",)),
    "train": StepType(
        TrainConfig,
        lambda cfg, ctx: run_train(cfg),
        inputs=("data", "features", "labels", "val_data", "val_features", "val_labels", "centers", "init_from"),
        folder=True,
    ),
    "evaluate": StepType(
        EvalConfig,
        lambda cfg, ctx: run_evaluate(cfg),
        inputs=("run_dir", "data", "features", "labels", "unseen_data", "unseen_features"),
    ),
    "report": StepType(ReportConfig, _report, folder=True, prepare=prepare_report, check=check_report),
}


def recipe_copy_path(step: Step) -> Path | None:
    """Where the resolved recipe is saved with a step's output: ``OUT/recipe.yaml`` in a folder (train, report),
    ``STORE.h5.recipe.yaml`` beside a file (extract, snap); ``None`` for a step without output (evaluate)."""
    out = step.output
    if out is None:
        return None
    return out / "recipe.yaml" if STEP_TYPES[step.kind].folder else out.with_name(out.name + ".recipe.yaml")


def check_inputs(recipe: Recipe) -> list[str]:
    """Input paths that neither exist nor are written by an earlier step, one message each."""
    from .data import is_digits

    written: list[Path] = []
    problems = []
    for step in recipe.steps:
        for name in STEP_TYPES[step.kind].inputs:
            value = getattr(step.config, name)
            if value is None or (name.endswith("data") and is_digits(str(value))):
                continue
            path = Path(str(value))
            if not path.exists() and name.endswith("features") and ":" in str(value):
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
    if is_main_process():
        for step in recipe.steps:
            prepare = STEP_TYPES[step.kind].prepare
            if prepare is not None:
                prepare(step.config)
    _barrier()
    text = recipe.to_yaml()
    results: list[StepResult] = []
    for step in recipe.steps:
        log(f"step {step.number}/{len(recipe.steps)}: {step.kind}" + (f" -> {step.output}" if step.output else ""))
        if step.output is not None:  # a recipe's outputs usually share a folder of their own
            step.output.parent.mkdir(parents=True, exist_ok=True)
        context = StepContext(f"lscdistill run {recipe.source} (step {step.number})", log, list(results))
        start = time.perf_counter()
        result = STEP_TYPES[step.kind].run(step.config, context)
        seconds = time.perf_counter() - start
        copy = recipe_copy_path(step)
        if copy is not None and copy.parent.is_dir() and is_main_process():
            copy.write_text(text)
        else:
            copy = None
        results.append(StepResult(step, result, copy, seconds))
    return results
