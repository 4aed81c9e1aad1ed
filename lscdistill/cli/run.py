"""``lscdistill run``: a recipe (YAML) of extract / snap / train / evaluate / demo steps."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from ..progress import is_main_process
from ._common import JsonOpt, err_console, handle_errors, out_console

__all__ = ["field_docs", "fields_markdown", "run_command"]


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
    train run or demo folder, STORE.h5.recipe.yaml beside a store. Relative paths are relative to the current
    directory. Multi-GPU: `accelerate launch -m lscdistill run RECIPE` (every step is distributed-aware).
    """
    from ..recipes import check_inputs, find_recipe, list_recipes, load_recipe, run_recipe

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
    from ..recipes import format_scalar, recipe_copy_path

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
        rest = len(dataclasses.fields(step.config)) - len(step.given)
        copy = recipe_copy_path(step)
        notes = [f"+ {rest} fields at their defaults"] if rest else []
        notes += [f"resolved recipe -> {copy}"] if copy is not None else []
        if notes:
            show(f"   [dim]{escape('; '.join(notes))}[/]", soft_wrap=True)
    for problem in problems:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    show("[dim]dry run: nothing was run (lscdistill run --fields lists every field)[/]")


# ------------------------------------------------------------------------------------------------ field docs
#: meanings where the CLI help describes a flag's own syntax (``--shard I/N``) or no text exists anywhere
_YAML_DOCS = {
    ("extract", "mean"): "Normalization mean per channel, e.g. [0.485, 0.456, 0.406] (default: the model's).",
    ("extract", "std"): "Normalization std per channel, e.g. [0.229, 0.224, 0.225] (default: the model's).",
    ("extract", "shard"): "Process only shard [i, n] of the samples (then merge the partial stores).",
    ("train", "seed_system"): "Shuffle key of the system (A_nr); null: the unshuffled A_n order.",
    ("evaluate", "batch_size"): "Samples per batch.",
}


def _commands() -> dict[str, Any]:
    from .demo import demo_command
    from .extract import extract_command
    from .snap import snap_command
    from .train import evaluate_command, train_command

    return {
        "extract": extract_command,
        "snap": snap_command,
        "train": train_command,
        "evaluate": evaluate_command,
        "demo": demo_command,
    }


def _source_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` lines of a dataclass body: {name: comment}."""
    import inspect

    comments = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m:
            comments[m.group(1)] = m.group(2).strip()
    return comments


def _cli_help(command: Any) -> dict[str, str]:
    hints = typing.get_type_hints(command, include_extras=True)
    docs = {}
    for name, hint in hints.items():
        for meta in getattr(hint, "__metadata__", ()):
            text = getattr(meta, "help", None)
            if text:
                docs[name] = " ".join(text.split())
    return docs


def field_docs(kind: str) -> dict[str, str]:
    """Meaning of every field of a step type: the help declared on the field, else the help of the CLI flag that
    sets it, else the comment beside the dataclass field. Flags that are fields too (``--val-data``) are written
    as fields (``val_data``)."""
    from ..recipes import STEP_CONFIGS

    cls = STEP_CONFIGS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    comments, helps = _source_comments(cls), _cli_help(_commands()[kind])

    def as_field(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")
        return f"`{name}`" if name in names else m.group(0)

    docs = {}
    for f in dataclasses.fields(cls):
        declared = f.metadata.get("cli")  # lscdistill.options.opt: the help declared on the field itself
        text = _YAML_DOCS.get((kind, f.name)) or (declared and declared.help) or helps.get(f.name)
        text = text or comments.get(f.name, "")
        docs[f.name] = re.sub(r"--([a-z][a-z0-9-]*)", as_field, text)
    return docs


def fields_markdown() -> str:
    """One Markdown table per step type: field, type, default, meaning (the block in docs/recipes.md)."""
    from ..recipes import STEP_CONFIGS, format_scalar

    parts = []
    for kind, cls in STEP_CONFIGS.items():
        docs = field_docs(kind)
        lines = [f"### `{kind}` ({cls.__name__})", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = "**required**" if f.default is dataclasses.MISSING else f"`{format_scalar(f.default)}`"
            type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            type_name, meaning = (text.replace("|", "\\|") for text in (type_name, docs[f.name]))
            lines.append(f"| `{f.name}` | `{type_name}` | {default} | {meaning} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


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
