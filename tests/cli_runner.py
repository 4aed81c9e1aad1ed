"""The CLI run in-process for the tests: ``cli_run(*args)`` gives typer's result, ``cli_ok(*args)`` also asserts that
the command succeeded (showing its output when it did not). Arguments may be paths or numbers."""

from __future__ import annotations

from typer.testing import CliRunner

from lscdistill.cli import app

runner = CliRunner()


def cli_run(*args):
    return runner.invoke(app, [str(a) for a in args])


def cli_ok(*args):
    result = cli_run(*args)
    assert result.exit_code == 0, result.output
    return result
