"""``docs/cli.md`` is generated from the Typer app and must match it."""

from __future__ import annotations

from pathlib import Path

from lscdistill.cli import app
from lscdistill.cli.reference import REGENERATE, main, render_reference

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_matches_the_app():
    page = render_reference()
    assert DOCS.is_file(), f"docs/cli.md is missing: run `{REGENERATE}` (or `make docs`)"
    assert DOCS.read_text(encoding="utf-8") == page, (
        f"docs/cli.md is out of date with the command line: run `{REGENERATE}` (or `make docs`) and commit it"
    )


def test_cli_reference_documents_every_command_and_option(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "37")  # the page must not depend on the terminal
    main([str(tmp_path / "cli.md")])
    page = (tmp_path / "cli.md").read_text(encoding="utf-8")
    assert page == render_reference()
    for command in app.registered_commands:
        assert f"## `lscdistill {command.name}`" in page
    assert "| `-b, --batch-size <int range>` | `64` | Samples per batch per process. [x>=1] |" in page
    assert "| `-o, --out <path>` | **required** |" in page
