"""``lscdistill demo``: the recipe recipes/demo.yaml end to end on digits, small enough for a test."""

from __future__ import annotations

import json

import pytest
import yaml
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from lscdistill.cli import app
from lscdistill.data import digits_split
from lscdistill.report import MARKER, ReportConfig, prepare_report

N_VAL = len(digits_split(load_digits().target, "val"))  # the demo's validation split (digits:val)

runner = CliRunner()
RUNS = ["teacher", "student-means", "student-snapped", "student-anr"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    result = runner.invoke(app, ["demo", "--out", str(out), "--epochs", "3", "--no-pictures", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / "report.md")
    return out, json.loads((out / "report.json").read_text())


def test_the_demo_runs_every_step_and_its_table_matches_evaluate(demo):
    out, report = demo
    rows = {r["run"]: r for r in report["rows"]}
    assert list(rows) == RUNS
    for name, row in rows.items():
        info = json.loads(
            runner.invoke(app, ["evaluate", str(out / "runs" / name), "--data", "digits:val", "--json"]).stdout
        )
        assert row["top1"] == info["top1"] and row["samples"] == info["samples"] == N_VAL
        assert row["top1_fast"] == info.get("top1_fast")
        assert row["top1"] > 0.5, (name, row)  # 3 epochs: well above chance (10%)
        assert row["vs_teacher"] == pytest.approx(row["top1"] / rows["teacher"]["top1"])
        assert row["train_seconds"] == report["timings"][name] > 0  # the time of the step that trained it
    # fast decoding exists for system vectors (snapped, generated), not for class means or a CE head
    assert rows["teacher"]["top1_fast"] is None and rows["student-means"]["top1_fast"] is None
    assert rows["student-snapped"]["fast_exact_agreement"] is not None and rows["student-anr"]["top1_fast"] is not None
    # no student parameter depends on the classes: the same count whatever the centers
    assert rows["student-means"]["params"] == rows["student-snapped"]["params"] == rows["student-anr"]["params"]
    assert report["snap"]["optimal"] and report["snap"]["n_classes"] == 10
    assert report["pictures"] == [] and not list(out.glob("*.png"))
    table = (out / "report.md").read_text().splitlines()
    assert table[0] == "# lscdistill demo" and table[2].startswith("| run | centers | top-1 exact |")
    teacher = rows["teacher"]
    assert table[4] == (
        f"| teacher | cross-entropy head | {teacher['top1']:.2%} | - | - | - | {teacher['params']:,} | "
        f"{teacher['train_seconds']:.0f} |"
    )
    snapped = rows["student-snapped"]
    assert table[6].startswith(f"| student-snapped | snapped A_n roots | {snapped['top1']:.2%} | ")


def test_the_demo_is_the_demo_recipe_with_its_options_as_vars(demo):
    """`lscdistill demo` = `lscdistill run demo --var ...`: the resolved recipe it saved is the one a dry run of
    the recipe with those vars shows, and every output carries it."""
    out, _ = demo
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    args = ["run", "demo", "--var", f"out={out}", "--var", "epochs=3", "--var", "pictures=false", "--var", "quiet=true"]
    planned = json.loads(runner.invoke(app, [*args, "--dry-run", "--json"]).stdout)["recipe"]
    assert planned["steps"] == saved["steps"] and planned["vars"] == saved["vars"]
    assert [next(iter(s)) for s in saved["steps"]] == [
        "train",
        "extract",
        "snap",
        *["train"] * 3,
        *["evaluate"] * 4,
        "report",
    ]
    for copy in [*(out / "runs" / r / "recipe.yaml" for r in RUNS), out / "stores" / "snapped.h5.recipe.yaml"]:
        assert yaml.safe_load(copy.read_text()) == saved


def test_the_demo_never_replaces_a_folder_it_did_not_write(demo, tmp_path):
    out, _ = demo
    result = runner.invoke(app, ["demo", "--out", str(out), "--epochs", "1", "--no-pictures", "-q"])
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    result = runner.invoke(app, ["demo", "--out", str(mine), "--overwrite", "--no-pictures", "-q"])
    assert result.exit_code == 1 and "not written by lscdistill demo" in result.stderr
    assert (mine / "thesis.tex").read_text() == "precious"


def test_overwrite_empties_a_report_folder_lscdistill_wrote(tmp_path):
    out = tmp_path / "report"
    prepare_report(ReportConfig(out=out))
    (out / "runs").mkdir()
    (out / "latent-2d.png").write_text("stale")  # a picture of an earlier demo run with --pictures
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_report(ReportConfig(out=out))
    prepare_report(ReportConfig(out=out, overwrite=True))
    assert [p.name for p in out.iterdir()] == [MARKER]
