"""Markdown reference of the command line, generated from the Typer app (``docs/cli.md``).

``python -m lscdistill.cli.reference docs/cli.md`` (or ``make docs``) rewrites the file; without a path the page
goes to stdout. The text comes from the commands' own help (docstrings, option help, defaults, ranges) read off
the click commands Typer builds, with Rich markup reduced to plain text: nothing depends on the terminal.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

__all__ = ["REGENERATE", "render_reference"]

#: how to bring docs/cli.md up to date (shown in the page and by the test that checks it)
REGENERATE = "python -m lscdistill.cli.reference docs/cli.md"


def _plain(text: str | None) -> str:
    """Help text as Typer shows it (``rich_markup_mode="rich"``), without the markup."""
    from rich.errors import MarkupError
    from rich.text import Text

    text = inspect.cleandoc(text or "")
    try:
        return Text.from_markup(text).plain
    except MarkupError:  # not valid markup: Rich shows such text as it is
        return text


def _summary(text: str) -> str:
    return " ".join(text.split("\n\n")[0].split())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(param: Any) -> str:
    """The default as ``--help`` shows it: required, a value, or the active name of an on/off flag."""
    if param.required:
        return "**required**"
    value = param.default
    if getattr(param, "is_flag", False):
        if param.secondary_opts:  # --pictures / --no-pictures
            return f"`{(param.opts if value else param.secondary_opts)[-1]}`"
        return "on" if value else ""
    if value is None or callable(value) or not getattr(param, "show_default", True):
        return ""
    return f"`{value}`"


def _bounds(param: Any) -> str:
    """Typer's range note, e.g. ``[x>=1]`` (min/max of an int or float option)."""
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is None and high is None:
        return ""
    if high is None:
        return f" [x>={low}]"
    return f" [x<={high}]" if low is None else f" [{low}<=x<={high}]"


def _rows(command: Any, ctx: Any, kind: str) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if param.param_type_name == kind else None
        if record is None:  # another kind, or hidden
            continue
        names, help_text = record
        rows.append(f"| `{_cell(names)}` | {_default(param)} | {_cell(_plain(help_text) + _bounds(param))} |")
    return rows


def _walk(command: Any, ctx: Any, path: str) -> list[tuple[str, Any, Any]]:
    """``(path, command, context)`` for a command and, depth first in registration order, its subcommands."""
    found = [(path, command, ctx)]
    for name in getattr(command, "list_commands", lambda _: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        found += _walk(sub, sub.context_class(sub, info_name=name, parent=ctx), f"{path} {name}")
    return found


def _section(path: str, command: Any, ctx: Any, level: int) -> list[str]:
    lines = [f"{'#' * level} `{path}`", "", _plain(command.help), ""]
    lines += ["```", f"{path} {' '.join(command.collect_usage_pieces(ctx))}", "```", ""]
    for kind, header in (("argument", "Argument"), ("option", "Option")):
        rows = _rows(command, ctx, kind)
        if rows:
            lines += [f"| {header} | Default | Description |", "|---|---|---|", *rows, ""]
    return lines


def render_reference(app: Any = None, prog: str = "lscdistill") -> str:
    """The Markdown page: the root command's help and options, an index, then one section per command."""
    import typer.main

    if app is None:
        from . import app
    root = typer.main.get_command(app)
    entries = _walk(root, root.context_class(root, info_name=prog), prog)
    lines = [
        "# Command-line reference",
        "",
        f"<!-- Generated from the Typer app by `{REGENERATE}` (`make docs`); do not edit by hand. -->",
        "",
        "Every command also takes `--help`. Errors are one line on stderr with exit code 1 "
        "(`LSCDISTILL_DEBUG=1` shows the traceback); bad flags exit with code 2.",
        "",
        "| Command | Summary |",
        "|---|---|",
    ]
    lines += [f"| [`{p}`](#{p.replace(' ', '-')}) | {_cell(_summary(_plain(c.help)))} |" for p, c, _ in entries[1:]]
    lines.append("")
    for path, command, ctx in entries:
        lines += _section(path, command, ctx, level=2)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    page = render_reference()
    if args:
        Path(args[0]).write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)


if __name__ == "__main__":
    main()
