"""The command line as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lscdistill import __version__, planner
from lscdistill.cli import app

runner = CliRunner()


def test_help_lists_commands_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "plan" in result.output and "demo" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"lscdistill {__version__}"


def test_plan_json_and_text():
    result = runner.invoke(app, ["plan", "--n-classes", "1281167", "--interpolations", "1", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["n_dim"] == 109 and data["size"] == 1_306_910 and data["system"] == "an"
    result = runner.invoke(app, ["plan", "-n", "147840"])
    assert result.exit_code == 0 and "n_dim = 384" in result.stdout and "147,840 vectors" in result.stdout


def test_bad_input_is_one_line_on_stderr_with_exit_1():
    result = runner.invoke(app, ["plan", "-n", "100", "--system", "bn"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unknown vector system 'bn'")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = runner.invoke(app, ["plan", "-n", "0"])
    assert result.exit_code == 2  # bad flag value: Click's usage error


@pytest.mark.parametrize("error", [KeyError("n_dim"), IndexError("list index out of range")], ids=type)
def test_an_unexpected_error_inside_a_command_is_a_traceback_not_one_line(monkeypatch, error):
    """A KeyError or IndexError from the code is a bug: it propagates (traceback), not a one-line "bad input"."""

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(planner, "plan", broken)
    monkeypatch.delenv("LSCDISTILL_DEBUG", raising=False)
    with pytest.raises(type(error)) as raised:
        runner.invoke(app, ["plan", "-n", "100"], catch_exceptions=False)
    assert raised.value is error


def test_an_unexpected_error_from_the_console_entry_point_is_a_traceback():
    """The same through ``main()`` in a fresh process, as the ``lscdistill`` script runs it."""
    code = "import lscdistill.planner as p, lscdistill.cli as c; p.plan = lambda *a: {}['n_dim']; c.main()"
    out = subprocess.run([sys.executable, "-c", code, "plan", "-n", "100"], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr and "KeyError: 'n_dim'" in out.stderr
    assert not out.stderr.startswith("error:")


def test_a_value_error_inside_a_command_stays_one_line(monkeypatch):
    def refuses(*args, **kwargs):
        raise ValueError("no system fits [here]")

    monkeypatch.setattr(planner, "plan", refuses)
    monkeypatch.delenv("LSCDISTILL_DEBUG", raising=False)
    result = runner.invoke(app, ["plan", "-n", "100"])
    assert result.exit_code == 1 and result.stderr == "error: no system fits [here]\n", result.stderr
    assert "Traceback" not in result.output


def test_error_text_in_square_brackets_is_printed_as_is(tmp_path):
    """Rich markup would eat ``[bench]``: user and package text in messages is escaped."""
    result = runner.invoke(app, ["extract", "--features", str(tmp_path / "x[bench].npy"), "--labels", "y.npy",
                                 "--out", str(tmp_path / "m.h5")])  # fmt: skip
    assert result.exit_code == 1 and "x[bench].npy does not exist" in result.stderr, result.stderr


def test_console_script_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-c", "from lscdistill.cli import main; main()", "plan", "-n", "1000", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["n_dim"] == 32
