"""The README cannot rot: its Python example and its `lscdistill` command lines run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from lscdistill.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_cli_and_python_examples_run(tmp_path, monkeypatch):
    """Every command line, in order, in a fresh directory (the inputs it names are made here); then the Python
    examples there (they load a run the command lines trained)."""
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
    for line in lines:
        args = shlex.split(line)[1:]
        if args and args[0] == "demo":
            args += ["--epochs", "1", "--no-pictures", "-q"]  # the same command, small enough for a test
        if args and args[0] == "train":
            args[args.index("--epochs") + 1] = "1"  # the same command, one epoch
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (line, result.output)
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
    import typer

    group = typer.main.get_command(app)
    lines = _launcher_lines()
    assert len(lines) >= 4
    for args in lines:
        ctx = group.make_context("lscdistill", list(args), resilient_parsing=False)
        command = group.get_command(ctx, args[0])
        assert command is not None, args
        command.make_context(args[0], list(args[1:]))  # raises on an unknown option or a bad value
