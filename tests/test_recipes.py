"""Recipes: every shipped recipe loads and validates, bad input is one clear error naming file, step and field,
overrides land where they say, and a recipe runs end to end through ``lscdistill run`` and saves itself."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from lscdistill.cli import app
from lscdistill.cli.run import fields_markdown
from lscdistill.options import declared_fields, field_docs, field_value
from lscdistill.planner import plan
from lscdistill.recipes import load_recipe, parse_recipe
from lscdistill.steps import STEP_TYPES, run_recipe
from lscdistill.stores import open_store

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
runner = CliRunner()


def test_recipes_folder_is_not_empty():
    assert len(RECIPES) >= 6, "recipes/ should hold the demo and the paper's experiments"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_loads_validates_and_round_trips(path):
    recipe = load_recipe(path)  # types, required fields, vars, timm names, systems, losses: all checked here
    assert recipe.name == path.stem
    assert all(text.strip() for text in (recipe.description, recipe.paper, recipe.dataset))
    assert "\n" not in recipe.description.strip()
    for step in recipe.steps:
        assert isinstance(step.config, STEP_TYPES[step.kind].config)
        for value in dataclasses.asdict(step.config).values():
            assert "${" not in str(value)
    again = parse_recipe(yaml.safe_load(recipe.to_yaml()), "resolved")
    assert [(s.kind, s.config) for s in again.steps] == [(s.kind, s.config) for s in recipe.steps]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_comments_every_field_and_var(path):
    text = path.read_text()
    lines = text.splitlines()
    root = yaml.compose(text)
    top = {key.value: value for key, value in root.value}
    keys = list(root.value) + list(top.get("vars", yaml.MappingNode("", [])).value)  # top-level keys and vars
    for step in top["steps"].value:
        ((kind, body),) = step.value
        keys += [(kind, body)] + (list(body.value) if isinstance(body, yaml.MappingNode) else [])
    for key, _ in keys:
        line = lines[key.start_mark.line]
        above = lines[key.start_mark.line - 1].strip()
        assert "#" in line or above.startswith("#"), (
            f"{path.name}:{key.start_mark.line + 1}: {key.value} has no comment"
        )


def test_planner_recipe_uses_the_planners_minimum_dim():
    recipe = load_recipe(ROOT / "recipes" / "planner-min-dim.yaml")
    assert plan(recipe.vars["n_classes"], "an", 1).n_dim == recipe.vars["min_dim"] == 109
    assert [plan(n, "an", 1).n_dim for n in (300_000, 600_000)] == [67, 85]  # the numbers its comments give
    assert [s.config.n_dim for s in recipe.steps if s.kind == "train"] == [109, 384]
    assert [s.config.instance_labels for s in recipe.steps if s.kind == "evaluate"] == [True, True]


def test_every_step_field_has_a_supported_type_a_meaning_and_its_default_reads_back():
    for kind, step in STEP_TYPES.items():
        hints = typing.get_type_hints(step.config)
        docs = field_docs(step.config)
        for f in declared_fields(step.config):
            assert docs[f.name].strip(), f"{kind}.{f.name} has no meaning: declare its help with opt()"
            if f.default is not dataclasses.MISSING:
                plain = list(f.default) if isinstance(f.default, tuple) else f.default
                plain = str(plain) if isinstance(plain, Path) else plain
                assert field_value(f, hints[f.name], plain, f"{kind}.{f.name}") == f.default


def test_docs_field_tables_are_current():
    text = (ROOT / "docs" / "recipes.md").read_text()
    block = re.search(r"<!-- fields: begin[^>]*-->\n(.*)<!-- fields: end -->", text, re.S)
    assert block, "docs/recipes.md lost its generated-fields markers"
    assert block.group(1) == fields_markdown(), (
        "docs/recipes.md is out of date: run `make docs` (lscdistill.cli.run.update_fields_docs)"
    )


# ------------------------------------------------------------------------------------------------ bad input
BASE = {"name": "t", "description": "d", "paper": "p", "dataset": "x", "vars": {"n": 3, "root": "/data"}}


def _recipe(*steps, **top):
    return {**BASE, **top, "steps": list(steps)}


def _train(**fields):
    return {"train": {"out": "r", **fields}}


@pytest.mark.parametrize(
    ("data", "overrides", "expected"),
    [
        (_recipe(_train(epoch=3)), [], "t.yaml: step 1 (train): unknown field 'epoch' (did you mean 'epochs'?)"),
        (
            _recipe(_train(epochs="ten")),
            [],
            "t.yaml: step 1 (train), field 'epochs' must be an integer, got 'ten' (str)",
        ),
        (_recipe(_train(instance_labels=1)), [], "field 'instance_labels' must be true or false, got 1 (int)"),
        (_recipe(_train(lr="fast")), [], "field 'lr' must be a number, got 'fast' (str)"),
        (_recipe({"extract": {"out": "m.h5", "shard": [0]}}), [], "field 'shard' must be a list of 2 values"),
        (_recipe({"trian": {"out": "r"}}), [], "step 1: unknown step type 'trian' (did you mean 'train'?)"),
        (_recipe({"demo": {"out": "d"}}), [], "step 1: the 'demo' step type is gone: run `lscdistill demo`"),
        (_recipe(_train(dim=8, n_dim=8)), [], "field 'n_dim' is given twice, also by its old name 'dim'"),
        (_recipe({"snap": {"out": "s.h5"}}), [], "step 1 (snap): required field 'means' is missing"),
        (_recipe(_train(out="${rot}/r")), [], "field 'out': unknown var ${rot} (did you mean 'root'?)"),
        (_recipe(_train(loss="cosine")), [], "field 'loss': unknown loss 'cosine'"),
        (_recipe(_train(system="bn")), [], "field 'system': unknown vector system 'bn'"),
        (_recipe(_train(model="vit_smal_patch16_224")), [], "field 'model': unknown timm model 'vit_smal_patch16_224'"),
        (_recipe(_train(schedule="cosin")), [], "'schedule' must be one of constant, cosine, wsd, step, got 'cosin'"),
        # out of range or not allowed: the bounds and choices the command line declares
        (_recipe(_train(epochs=0)), [], "t.yaml: step 1 (train), field 'epochs' must be >= 1, got 0"),
        (_recipe(_train(hflip=1.5)), [], "field 'hflip' must be <= 1.0, got 1.5"),
        (_recipe(_train(mixup=-0.2)), [], "field 'mixup' must be >= 0.0, got -0.2"),
        (_recipe(_train(precision="fp8")), [], "field 'precision' must be one of no, fp16, bf16, got 'fp8'"),
        (_recipe({"snap": {"means": "m.h5", "out": "s.h5", "method": "best"}}), [], "field 'method' must be one of"),
        (_recipe({"evaluate": {"run_dir": "r", "batch_size": 0}}), [], "(evaluate), field 'batch_size' must be >= 1"),
        (_recipe({"extract": {"out": "m.h5", "mean": "0.5,0.5,0.5"}}), [], "field 'mean' must be a list of numbers"),
        (_recipe(_train()), ["train.epochs=0"], "--set train.epochs=0: step 1 (train), field 'epochs' must be >= 1"),
        # a report tabulates the evaluate steps before it, one centers label each
        (_recipe(_train(), {"report": {"out": "o"}}), [], "step 2 (report): no evaluate step before it"),
        (
            _recipe(_train(), {"evaluate": {"run_dir": "r"}}, {"report": {"out": "o", "centers": ["a", "b"]}}),
            [],
            "t.yaml: step 3 (report), field 'centers': 2 labels for the 1 evaluate steps before it",
        ),
        (_recipe(_train(), speed=1), [], "t.yaml: unknown key 'speed'"),
        (_recipe(), [], "t.yaml: 'steps' must be a non-empty list"),
        (_recipe(_train(), _train()), ["train.epochs"], "--set train.epochs: expected TYPE.FIELD=VALUE"),
        (_recipe(_train()), ["evaluate.cpu=true"], "--set evaluate.cpu=true: t.yaml has no evaluate step"),
        (_recipe(_train()), ["3.lr=1"], "--set 3.lr=1: t.yaml has steps 1 to 1"),
        (_recipe(_train()), ["trian.lr=1"], "'trian' (did you mean 'train'?) is not a step type"),
        (_recipe(_train()), ["vars.data=/x"], "--set vars.data=/x: t.yaml declares no var 'data'"),
        (_recipe(_train()), ["train.epochs=ten"], "--set train.epochs=ten: step 1 (train), field 'epochs' must be"),
        (_recipe(_train()), ["train.epoch=2"], "--set train.epoch=2: step 1 (train): unknown field 'epoch'"),
    ],
)
def test_bad_recipe_is_one_clear_error(data, overrides, expected):
    with pytest.raises(ValueError) as info:
        parse_recipe(data, "t.yaml", overrides)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_bad_recipe_on_the_command_line_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_recipe({"train": {"out": "r", "epoch": 3}})))
    result = runner.invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {path}: step 1 (train): unknown field 'epoch' (did you mean 'epochs'?)"
    path.write_text("steps: [train: {out: r}\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {path}: not valid YAML")
    result = runner.invoke(app, ["run", "no-such-recipe"])
    assert result.exit_code == 1 and "no recipe 'no-such-recipe'" in result.stderr


def test_yaml_cannot_execute_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system [echo hacked]\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(path)


# ------------------------------------------------------------------------------------------------ overrides
def test_overrides_and_vars_land_where_they_say():
    data = _recipe(
        {"train": {"out": "${root}/a", "epochs": "${n}", "lr": "1e-4"}},
        {"train": {"out": "${root}/b-${n}", "aug": "light"}},
        {"evaluate": {"run_dir": "${root}/b-${n}"}},
    )
    recipe = parse_recipe(data, "t.yaml")
    a, b, ev = (s.config for s in recipe.steps)
    assert (a.epochs, a.lr, str(a.out), str(b.out)) == (3, 1e-4, "/data/a", "/data/b-3")  # whole ${n} keeps int
    recipe = parse_recipe(data, "t.yaml", ["vars.n=5", "vars.root=/mnt", "train.batch_size=8", "2.lr=1e-5"])
    a, b, ev = (s.config for s in recipe.steps)
    assert (a.epochs, str(a.out), str(b.out), str(ev.run_dir)) == (5, "/mnt/a", "/mnt/b-5", "/mnt/b-5")
    assert (a.batch_size, b.batch_size, a.lr, b.lr) == (8, 8, 1e-4, 1e-5)  # train.* hits both, 2.* only step 2
    assert recipe.overrides == ("vars.n=5", "vars.root=/mnt", "train.batch_size=8", "2.lr=1e-5")
    assert recipe.steps[1].given == ("out", "aug", "batch_size", "lr")


def test_recipe_and_command_line_build_the_same_config_from_the_same_declarations():
    """Conversions declared once: --system-seed -1 and a recipe's seed_system: -1 both mean unshuffled; a Path
    option and a recipe's text become the same str field; a repeatable option and a YAML list the same tuple."""
    from lscdistill.cli._common import config_from_options

    recipe = parse_recipe(_recipe(_train(seed_system=-1, centers="c.h5", model_kwargs=["a=1"], lr="1e-3")), "t.yaml")
    options = {"out": Path("r"), "seed_system": -1, "centers": Path("c.h5"), "model_kwargs": ["a=1"], "lr": 1e-3}
    cli = config_from_options(STEP_TYPES["train"].config, options)
    assert recipe.steps[0].config == cli
    assert (cli.seed_system, cli.centers, cli.model_kwargs, cli.lr) == (None, "c.h5", ("a=1",), 1e-3)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--out", "r", "--data", "digits", "--loss", "cosine"], "error: --loss: unknown loss 'cosine'"),
        (["train", "--out", "r", "--data", "digits", "--schedule", "cosin"], "error: --schedule must be one of"),
        (["snap", "m.h5", "--out", "s.h5", "--reduce", "pcaa"], "error: --reduce must be one of none, pca, got"),
        (["evaluate", "run", "--data", "digits", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    ],
)
def test_command_line_checks_the_declared_choices_before_anything_runs(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code in (1, 2) and expected in result.output, result.output
    assert not any(tmp_path.iterdir())  # nothing was written


def test_demo_options_set_the_demo_recipes_vars():
    """`lscdistill demo`'s options are the demo recipe's vars, each landing in the steps it names."""
    from lscdistill.demo import DemoConfig, demo_recipe

    demo = load_recipe(ROOT / "recipes" / "demo.yaml")
    assert list(demo.vars) == [f.name for f in dataclasses.fields(DemoConfig)]
    cfg = DemoConfig(out=Path("a b: c"), epochs=2, lr=1e-3, n_dim=5, seed=3, aug="light", pictures=False, quiet=True)
    recipe = demo_recipe(cfg)
    assert [s.kind for s in recipe.steps] == ["train", "extract", "snap", *["train"] * 3, *["evaluate"] * 4, "report"]
    trains = [s.config for s in recipe.steps if s.kind == "train"]
    assert [str(t.out) for t in trains] == [
        f"a b: c/runs/{n}" for n in ("teacher", "student-means", "student-snapped", "student-anr")
    ]
    assert {(t.epochs, t.lr, t.seed, t.aug, t.quiet) for t in trains} == {(2, 1e-3, 3, "light", True)}
    assert [t.objective for t in trains] == ["ce", "lsc", "lsc", "lsc"]
    assert [t.centers for t in trains] == [None, "a b: c/stores/teacher-means.h5", "a b: c/stores/snapped.h5", None]
    assert (trains[3].n_dim, trains[3].seed_system, recipe.steps[2].config.seed_system) == (5, 3, 3)
    report = recipe.steps[-1].config
    assert (str(report.out), report.pictures, report.seed, len(report.centers)) == ("a b: c", False, 3, 4)
    with pytest.raises(ValueError, match="declares no var 'epoch'"):
        load_recipe(ROOT / "recipes" / "demo.yaml", variables={"epoch": 2})
    with pytest.raises(ValueError, match="field 'epochs' must be >= 1, got 0"):
        load_recipe(ROOT / "recipes" / "demo.yaml", variables={"epochs": 0})


def test_missing_inputs_are_found_before_anything_runs(tmp_path):
    x, y = str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    data = _recipe(
        {"train": {"out": str(tmp_path / "run"), "features": x, "labels": y}},
        {"evaluate": {"run_dir": str(tmp_path / "run"), "features": x, "labels": y}},
        {"evaluate": {"run_dir": str(tmp_path / "other"), "data": "digits:val"}},
    )
    with pytest.raises(FileNotFoundError) as info:
        run_recipe(parse_recipe(data, "t.yaml"))
    message = str(info.value)
    assert message.startswith(f"t.yaml: step 1 (train), field 'features': {tmp_path / 'x.npy'} does not exist")
    assert "(and 4 more)" in message  # x.npy and y.npy twice, the other run dir; not step 2's run dir, nor digits
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ end to end
def test_recipe_runs_the_pipeline_and_saves_itself_with_every_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 8)) * 3
    y = rng.integers(0, 4, size=200)
    np.save("x.npy", (means[y] + 0.3 * rng.normal(size=(200, 8))).astype(np.float32))
    np.save("y.npy", y)
    Path("tiny.yaml").write_text(
        "name: tiny\n"
        "description: blobs -> class means -> snapped A_n -> MLP -> evaluate\n"
        "paper: none\n"
        "dataset: x.npy [N, 8] float32, y.npy [N] int\n"
        "vars: {out: runs, epochs: 5}\n"
        "steps:\n"
        "  - extract: {out: '${out}/means.h5', features: x.npy, labels: y.npy, quiet: true}\n"
        "  - snap: {means: '${out}/means.h5', out: '${out}/snapped.h5'}\n"
        "  - train: {out: '${out}/mlp', centers: '${out}/snapped.h5', features: x.npy, labels: y.npy, hidden: 32,\n"
        "            lr: 3e-3, epochs: '${epochs}', batch_size: 32, log_every: 1, quiet: true, cpu: true}\n"
        "  - evaluate: {run_dir: '${out}/mlp', features: x.npy, labels: y.npy, cpu: true}\n"
    )
    result = runner.invoke(app, ["run", "tiny.yaml", "--var", "epochs=1", "--set", "train.seed=3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["type"] for s in summary] == ["extract", "snap", "train", "evaluate"]
    copies = [Path("runs/means.h5.recipe.yaml"), Path("runs/snapped.h5.recipe.yaml"), Path("runs/mlp/recipe.yaml")]
    assert [s.get("recipe") for s in summary] == [*map(str, copies), None]
    metrics = summary[3]["metrics"]
    assert metrics["samples"] == 200 and metrics["top1"] * 200 == pytest.approx(round(metrics["top1"] * 200))  # hits

    run = Path("runs/mlp")
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    assert (run / "metrics.jsonl").read_text().strip()  # the run logged its loss
    saved = yaml.safe_load(copies[2].read_text())
    assert all(yaml.safe_load(c.read_text()) == saved for c in copies)
    train = saved["steps"][2]["train"]
    assert set(train) == {f.name for f in dataclasses.fields(STEP_TYPES["train"].config)}  # every field, defaults too
    assert (train["epochs"], train["seed"], train["out"], train["weight_decay"]) == (1, 3, "runs/mlp", 1e-5)
    assert saved["resolved"]["overrides"] == ["vars.epochs=1", "train.seed=3"]
    assert json.loads((run / "config.json").read_text())["epochs"] == 1
    with open_store("runs/means.h5") as store:  # the store's provenance names the recipe and the step
        assert json.loads(store.attrs["provenance"])["command"] == "lscdistill run tiny.yaml (step 1)"

    # the saved copy is itself a recipe: a dry run of it shows the same steps, with nothing missing
    result = runner.invoke(app, ["run", str(copies[2]), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)
    assert planned["missing_inputs"] == [] and planned["recipe"]["steps"] == saved["steps"]


def test_list_shows_the_shipped_recipes(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["run", "--list", "--json"])
    assert result.exit_code == 0, result.output
    assert {r["name"] for r in json.loads(result.stdout)} == {p.stem for p in RECIPES}


def test_a_recipe_written_with_dim_sets_n_dim():
    """Recipes (and the recipe.yaml every run saves) from before the embedding size was called n_dim."""
    recipe = parse_recipe(_recipe(_train(dim=8), {"snap": {"means": "m.h5", "out": "s.h5", "dim": 4, "reduce": "pca"}}))
    assert (recipe.steps[0].config.n_dim, recipe.steps[1].config.n_dim) == (8, 4)
