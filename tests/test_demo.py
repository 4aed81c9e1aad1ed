"""``lscdistill demo``: the whole pipeline end to end on digits, small enough for a test."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lscdistill.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    result = runner.invoke(app, ["demo", "--out", str(out), "--epochs", "3", "--no-pictures", "-q"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text())


def test_the_demo_runs_every_step_and_its_table_matches_evaluate(demo):
    out, report = demo
    rows = {r["run"]: r for r in report["rows"]}
    assert list(rows) == ["teacher", "student-means", "student-snapped", "student-anr"]
    for name, row in rows.items():
        info = json.loads(
            runner.invoke(app, ["evaluate", str(out / "runs" / name), "--data", "digits:val", "--json"]).stdout
        )
        assert row["top1"] == info["top1"] and row["samples"] == info["samples"] == 359
        assert row["top1"] > 0.5, (name, row)  # 3 epochs: well above chance (10%)
        assert row["vs_teacher"] == pytest.approx(row["top1"] / rows["teacher"]["top1"])
    # fast decoding exists for system vectors (snapped, generated), not for class means or a CE head
    assert rows["teacher"]["top1_fast"] is None and rows["student-means"]["top1_fast"] is None
    assert rows["student-snapped"]["fast_exact_agreement"] is not None and rows["student-anr"]["top1_fast"] is not None
    # no student parameter depends on the classes: the same count whatever the centers
    assert rows["student-means"]["params"] == rows["student-snapped"]["params"] == rows["student-anr"]["params"]
    assert report["snap"]["optimal"] and report["snap"]["n_classes"] == 10
    assert "| teacher |" in (out / "report.md").read_text()


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
