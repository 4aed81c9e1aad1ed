"""The README cannot rot: its Python example and its `lscdistill` command lines run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from lscdistill.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_cli_examples_run():
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
        for line in block.splitlines()
        if line.startswith("lscdistill ")
    ]
    assert len(lines) >= 3
    for line in lines:
        args = shlex.split(line)[1:]
        if args and args[0] == "demo":
            args += ["--n-dim", "16", "--batch", "32"]  # the same command, small enough for a test
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (line, result.output)
