"""``lscdistill run``: a recipe (YAML) of extract / snap / train / evaluate / report steps."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ..progress import is_main_process
from ._common import JsonOpt, err_console, handle_errors, out_console

__all__ = ["fields_markdown", "run_command", "update_fields_docs"]


@handle_errors
def run_command(
    recipe: Annotated[
        str | None, typer.Argument(help="A recipe file, or the name of one in recipes/ (see --list).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override: TYPE.FIELD=VALUE (every step of that type, e.g. train.epochs=3), N.FIELD=VALUE "
            "(step N as --dry-run numbers them) or vars.NAME=VALUE. Values are read as YAML. Repeatable.",
        ),
    ] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="Set a recipe var: NAME=VALUE (= --set vars.NAME=VALUE).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved steps and check the inputs; run nothing.")
    ] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the recipes found in recipes/ and exit.")] = False,
    fields: Annotated[
        bool, typer.Option("--fields", help="Print every step field (type, default, meaning) as Markdown and exit.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Run a recipe: its steps in order, every field checked before anything starts.

    The resolved recipe (all fields, vars substituted) is saved with each output: RUN_DIR/recipe.yaml for a
    train run or report folder, STORE.h5.recipe.yaml beside a store. Relative paths are relative to the current
    directory. Multi-GPU: `accelerate launch -m lscdistill run RECIPE` (every step is distributed-aware).
    """
    from ..recipes import find_recipe, list_recipes, load_recipe
    from ..steps import check_inputs, run_recipe

    if fields:
        typer.echo(fields_markdown(), nl=False)
        return
    if list_:
        _print_list(list_recipes(), json_)
        return
    if recipe is None:
        raise typer.BadParameter("give a recipe file or name (lscdistill run --list shows the shipped ones)")
    overrides = [f"vars.{v}" for v in var or []] + list(set_ or [])
    resolved = load_recipe(find_recipe(recipe), overrides)
    if dry_run:
        _print_plan(resolved, check_inputs(resolved), json_)
        return
    main = is_main_process()  # under accelerate launch / torchrun only rank 0 reports
    log = (lambda line: err_console.print(line, highlight=False, markup=False)) if main else None
    results = run_recipe(resolved, log=log)
    if not main:
        return
    summary = [_summary(r) for r in results]
    if json_:
        typer.echo(json.dumps(summary, default=str))
        return
    for item in summary:
        metrics = {k: v for k, v in (item.get("metrics") or {}).items() if k in ("top1", "top1_fast", "top5")}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        target = item.get("output") or item.get("run_dir") or ""
        out_console.print(f"{item['step']}. {item['type']}: {target}" + (f" ({shown})" if shown else ""))


def _summary(r: Any) -> dict[str, Any]:
    """One step's outcome for stdout: output, saved recipe copy, metrics (evaluate: all of them; train: the last
    validation)."""
    item: dict[str, Any] = {"step": r.step.number, "type": r.step.kind}
    if r.step.output is not None:
        item["output"] = str(r.step.output)
    if r.recipe_copy is not None:
        item["recipe"] = str(r.recipe_copy)
    if r.step.kind == "evaluate":
        item["run_dir"] = str(r.step.config.run_dir)
        item["metrics"] = {k: v for k, v in r.result.items() if k != "run"}
    elif r.step.kind == "train":
        item["metrics"] = dict(r.result.final)
    return item


def _print_list(paths: list[Path], as_json: bool) -> None:
    import yaml

    rows = []
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            data = {}
        rows.append({"name": path.stem, "path": str(path), "description": str(data.get("description", "?"))})
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.table import Table

    table = Table(title="recipes (lscdistill run NAME --dry-run shows one)")
    table.add_column("name", style="bold")
    table.add_column("description")
    for row in rows:
        table.add_row(row["name"], row["description"])
    out_console.print(table)


def _print_plan(recipe: Any, problems: list[str], as_json: bool) -> None:
    from ..options import declared_fields, format_scalar
    from ..steps import recipe_copy_path

    if as_json:
        typer.echo(json.dumps({"recipe": recipe.to_dict(), "missing_inputs": problems}))
        return
    from rich.markup import escape
    from rich.table import Table

    show = out_console.print
    show(f"[bold]{escape(recipe.name)}[/]: {escape(recipe.description)}", soft_wrap=True)
    show(f"[bold]paper:[/]\n{escape(recipe.paper.rstrip())}", soft_wrap=True, highlight=False)
    for step in recipe.steps:
        table = Table(title=f"{step.number}. {step.kind}", title_justify="left", show_header=False, box=None)
        table.add_column("field", style="cyan")
        table.add_column("value")
        for name in step.given:
            table.add_row(name, escape(format_scalar(getattr(step.config, name))))
        show(table)
        rest = len(declared_fields(type(step.config))) - len(step.given)
        copy = recipe_copy_path(step)
        notes = [f"+ {rest} fields at their defaults"] if rest else []
        notes += [f"resolved recipe -> {copy}"] if copy is not None else []
        if notes:
            show(f"   [dim]{escape('; '.join(notes))}[/]", soft_wrap=True)
    for problem in problems:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    show("[dim]dry run: nothing was run (lscdistill run --fields lists every field)[/]")


# ------------------------------------------------------------------------------------------------ field docs
def fields_markdown() -> str:
    """One Markdown table per step type (field, type, default, meaning), from the fields' declarations: the
    generated block of docs/recipes.md."""
    from ..options import fields_markdown as tables
    from ..steps import STEP_TYPES

    return tables((kind, step.config) for kind, step in STEP_TYPES.items())


def update_fields_docs(path: str | Path = "docs/recipes.md") -> None:
    """Rewrite the generated block of ``docs/recipes.md`` (``make docs``)."""
    path = Path(path)
    text = re.sub(
        r"(<!-- fields: begin[^>]*-->\n).*(<!-- fields: end -->)",
        lambda m: m.group(1) + fields_markdown() + m.group(2),
        path.read_text(),
        flags=re.S,
    )
    path.write_text(text)
