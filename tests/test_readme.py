"""The README cannot rot: its Python example and its `lscdistill` command lines run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner

from lscdistill.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()
#: README lines, by their --out, that are parsed against the CLI but not run: nothing later in the README reads what
#: they write, and another test runs the same command on the same kind of input
PARSED_ONLY = {
    "student": "tests/test_train.py trains toward a class-means store",
    "student-snapped": "tests/test_train.py trains toward a snapped store",
    "student-anr.pt2": "tests/test_export.py exports a test_resnet run on generated centers",
}


def _check_options(args: list[str]) -> None:
    """Parse ``lscdistill ARGS`` with the CLI's own parser: raises on an unknown command, option or bad value."""
    group = typer.main.get_command(app)
    ctx = group.make_context("lscdistill", list(args), resilient_parsing=False)
    command = group.get_command(ctx, args[0])
    assert command is not None, args
    command.make_context(args[0], list(args[1:]))


def test_readme_cli_and_python_examples_run(tmp_path, monkeypatch):
    """Every command line, in order, in a fresh directory (the inputs it names are made here); then the Python
    examples there (they load a run the command lines trained). The PARSED_ONLY lines are only parsed."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.save("emb.npy", rng.normal(size=(60, 8)).astype(np.float32))
    np.save("y.npy", rng.integers(0, 5, size=60))
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
        for line in block.splitlines()
        if line.startswith("lscdistill ")
    ]
    assert len(lines) >= 3
    parsed = []
    for line in lines:
        args = shlex.split(line)[1:]
        if "--out" in args and args[args.index("--out") + 1] in PARSED_ONLY:
            _check_options(args)
            parsed.append(args[args.index("--out") + 1])
            continue
        if args and args[0] == "train":
            args[args.index("--epochs") + 1] = "1"  # the same command, one epoch
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (line, result.output)
    assert sorted(parsed) == sorted(PARSED_ONLY)  # each is still in the README; a later line reading one would fail
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def _launcher_lines() -> list[list[str]]:
    """The lscdistill arguments of the README's torchrun / accelerate launch / docker lines (they need GPUs or
    Docker, so they are parsed, not run)."""
    out = []
    for line in README.splitlines():
        if not line.startswith(("torchrun ", "accelerate ", "docker run ")):
            continue
        words = shlex.split(line.split(" #")[0])
        if words[0] in ("torchrun", "accelerate") and "-m" in words:
            out.append(words[words.index("-m") + 2 :])
        elif words[:2] == ["docker", "run"] and "lscdistill" in words:
            out.append(words[words.index("lscdistill") + 1 :])
    return out


def test_readme_launcher_lines_name_real_commands_and_options():
    lines = _launcher_lines()
    assert len(lines) >= 4
    for args in lines:
        _check_options(args)
