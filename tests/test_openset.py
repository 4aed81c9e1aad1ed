"""New-class detection: metrics against scikit-learn and naive loops, the top-2 scan against brute force, the
calibration stored with a run and used by ``predict``, ``evaluate --unseen-features/--calibrate``, clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_runner import cli_ok, cli_run
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from lscdistill.centers import SystemCenters
from lscdistill.data import load_features
from lscdistill.decode import exact_top2
from lscdistill.evaluate import calibration_scores, evaluate_model
from lscdistill.openset import (
    UNASSIGNED_SCORE,
    auroc,
    batch_scores,
    calibrate,
    fpr_at_tpr,
    load_calibration,
    threshold_at,
)
from lscdistill.rundir import OPENSET, load_run
from lscdistill.runtime import create_accelerator
from lscdistill.systems import create_system

runner = CliRunner()
# scores on a coarse grid: many exact ties, the case where threshold and AUROC conventions matter
scores = st.lists(st.integers(-20, 20).map(lambda v: v / 10), min_size=1, max_size=60)


def _naive_threshold(known: list[float], accept: float) -> float:
    """The documented rule, by hand: k = ceil(accept * n); halfway between the k-th and (k+1)-th highest."""
    ordered = sorted((-math.inf if math.isnan(v) else v for v in known), reverse=True)
    k = max(1, math.ceil(accept * len(ordered) - 1e-9))
    if k == len(ordered) or ordered[k] == -math.inf:
        return ordered[k - 1]
    return (ordered[k - 1] + ordered[k]) / 2


@given(scores, scores)
def test_auroc_equals_sklearn_roc_auc_score(known, unseen):
    y = [1] * len(known) + [0] * len(unseen)
    assert auroc(known, unseen) == pytest.approx(roc_auc_score(y, known + unseen), abs=1e-12)


@given(scores, st.floats(0.01, 0.99))
def test_threshold_accepts_ceil_accept_n_samples_like_a_naive_loop(known, accept):
    t = threshold_at(known, accept)
    assert t == pytest.approx(_naive_threshold(known, accept), abs=1e-12)
    k = max(1, math.ceil(accept * len(known) - 1e-9))
    accepted = sum(1 for v in known if v >= t)
    kth = sorted(known, reverse=True)[k - 1]
    assert accepted == sum(1 for v in known if v >= kth) >= k  # exactly k unless the k-th score is tied


@given(scores, scores)
def test_fpr_at_95_tpr_counts_unseen_samples_above_the_threshold(known, unseen):
    t = _naive_threshold(known, 0.95)
    expected = sum(1 for u in unseen if u >= t) / len(unseen)
    assert fpr_at_tpr(known, unseen) == pytest.approx(expected)


def test_nan_scores_are_always_flagged_and_accept_is_checked():
    cal = calibrate([0.9, 0.8, float("nan"), 0.7], "cosine", 0.5, {"name": "x"}, "test")
    assert cal.threshold == pytest.approx(0.75) and cal.samples == 4
    assert cal.flags(np.array([np.nan, 0.76, 0.74])).tolist() == [True, False, True]
    assert auroc([np.nan], [0.1]) == 0.0
    for bad in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\)"):
            threshold_at([0.5], bad)


@given(st.integers(2, 40), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_exact_top2_matches_float64_brute_force(n_rows, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(n_rows, 5, generator=g)
    table[0] = 0  # an empty class: cosine 0 with everything
    z = torch.randn(7, 5, generator=g)
    z[1], z[2] = 0.0, float("nan")
    got = exact_top2(z, table, chunk_size=chunk)
    zz = torch.nn.functional.normalize(z[[0, *range(3, 7)]].double(), dim=1)
    tt = table.double() / table.double().norm(dim=1, keepdim=True).clamp_min(1e-300)
    expected = (zz @ tt.T).topk(2, dim=1).values
    torch.testing.assert_close(got[[0, *range(3, 7)]].double(), expected, atol=1e-5, rtol=0)
    assert got[1].tolist() == [0.0, 0.0] and got[2].isnan().all()
    with pytest.raises(ValueError, match="at least 2 rows"):
        exact_top2(z, table[:1])


def test_batch_scores_of_generated_centers_match_a_naive_reference():
    system = create_system("an", 6, seed=3)
    centers = SystemCenters(system, 9)  # 9 of the 42 vectors: many samples' nearest vector is unassigned
    z = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    exact, fast = centers.predict(z, "exact"), centers.predict(z, "fast")
    p = {"out": z, "score": exact.cosine, "fast_score": fast.cosine, "unassigned": fast.new_class}
    got = batch_scores(p, centers, ("cosine", "margin", "fast_cosine", "unassigned"))
    every = torch.nn.functional.normalize(z.double(), dim=1) @ system.materialize(torch.float64).T
    assigned = every[:, :9].sort(dim=1, descending=True).values
    torch.testing.assert_close(got["cosine"].double(), assigned[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got["margin"].double(), assigned[:, 0] - assigned[:, 1], atol=1e-5, rtol=0)
    unassigned = every.argmax(dim=1) >= 9
    assert 0 < int(unassigned.sum()) < 64
    expected_fast = torch.where(unassigned, UNASSIGNED_SCORE, every.max(dim=1).values)
    torch.testing.assert_close(got["fast_cosine"].double(), expected_fast, atol=1e-5, rtol=0)
    assert got["unassigned"].tolist() == (~unassigned).double().tolist()


# ------------------------------------------------------------------------------------------------ runs


def _fails(*args, match: str):
    result = cli_run(*args)
    assert result.exit_code == 1 and match in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output  # one line
    return result


def _blobs(path, name, classes, n, seed, dim=16):
    means = np.random.default_rng(123).normal(size=(8, dim)) * 2  # 8 classes; runs see a subset
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n)
    x = (means[y] + 0.6 * rng.normal(size=(n, dim))).astype(np.float32)
    np.save(path / f"{name}_x.npy", x)
    np.save(path / f"{name}_y.npy", y)
    return path / f"{name}_x.npy", path / f"{name}_y.npy"


FAST = ["--lr", "3e-3", "--epochs", "4", "-b", "32", "-q", "--hidden", "64", "--n-dim", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run on classes 0-3 with validation data (calibrated at the end of training), unseen classes 4-7."""
    root = tmp_path_factory.mktemp("openset")
    tx, ty = _blobs(root, "train", [0, 1, 2, 3], 400, 1)
    vx, vy = _blobs(root, "val", [0, 1, 2, 3], 200, 2)
    ux, _ = _blobs(root, "unseen", [4, 5, 6, 7], 150, 3)
    cli_ok(
        "train",
        "--features",
        tx,
        "--labels",
        ty,
        "--val-features",
        vx,
        "--val-labels",
        vy,
        *FAST,
        "--out",
        root / "run",
    )
    return root, root / "run", (vx, vy, ux)


def test_training_stores_a_calibration_from_its_validation_split(trained):
    _, run, (vx, vy, _) = trained
    stored = json.loads((run / OPENSET).read_text())
    assert stored["format"] == "lscdistill-openset" and stored["source"] == "train"
    assert (stored["score"], stored["accept"], stored["samples"]) == ("cosine", 0.95, 200)
    assert stored["data"]["samples"] == 200 and str(vx) in json.dumps(stored["data"])
    info = json.loads(cli_ok("evaluate", run, "--features", vx, "--labels", vy, "--json").stdout)  # no open set asked
    assert "open_set" not in info and "calibration" not in info
    # the scores training kept from its last validation pass are those of the saved model: score it again here
    model, centers, _ = load_run(run)
    accelerator = create_accelerator(cpu=True)
    scores = calibration_scores(centers, "lsc")
    evaluate_model(accelerator, model, centers, load_features(vx, vy), 64, scores=scores)
    fresh = calibrate(scores.gather(accelerator)["cosine"], "cosine", 0.95, {}, "test")
    assert stored["threshold"] == pytest.approx(fresh.threshold, abs=1e-6)


def test_predict_flags_by_the_stored_threshold_and_evaluate_reports_the_same(trained):
    root, run, (vx, vy, ux) = trained
    cal = load_calibration(run)
    known, unseen = root / "known.npz", root / "unseen.npz"
    cli_ok("predict", run, "--features", vx, "--out", known)
    cli_ok("predict", run, "--features", ux, "--out", unseen, "--require-calibration")
    k, u = np.load(known), np.load(unseen)
    assert set(k.files) == {"index", "label", "score", "fast_label", "unassigned", "open_score", "new_class"}
    np.testing.assert_array_equal(k["open_score"], k["score"])  # the calibrated score is the exact cosine
    np.testing.assert_array_equal(k["new_class"], k["score"] < cal.threshold)
    assert k["new_class"].mean() == pytest.approx(0.05, abs=0.011)  # 95% of the calibration data accepted
    info = json.loads(
        cli_ok("evaluate", run, "--features", vx, "--labels", vy, "--unseen-features", ux, "--json").stdout
    )
    report = info["open_set"]
    assert (report["known_samples"], report["unseen_samples"]) == (200, 150)
    y = np.r_[np.ones(200), np.zeros(150)]
    assert report["scores"]["cosine"]["auroc"] == pytest.approx(
        roc_auc_score(y, np.r_[k["score"], u["score"]]), abs=1e-6
    )
    assert report["calibrated"]["unseen_flag_rate"] == pytest.approx(u["new_class"].mean())
    assert report["calibrated"]["known_flag_rate"] == pytest.approx(k["new_class"].mean())
    assert report["unassigned"]["unseen_flag_rate"] == pytest.approx(u["unassigned"].mean())
    assert report["scores"]["cosine"]["auroc"] > 0.9  # well-separated blobs: unseen classes land away from centers


def test_recalibration_replaces_the_threshold_and_bad_input_writes_nothing(trained, tmp_path):
    _, run, (vx, vy, _) = trained
    before = (run / OPENSET).read_text()
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((5, 17), np.float32))
    feats = ["--features", vx, "--labels", vy]
    _fails("evaluate", run, *feats, "--calibrate", "--accept", "1.5", match="in (0, 1)")
    _fails("evaluate", run, *feats, "--accept", "0.9", match="with --calibrate")
    _fails("evaluate", run, *feats, "--calibrate", "--unseen-features", wide, match="17 features per row")
    _fails("evaluate", run, *feats, "--calibrate", "--score", "softmax", match="not available")
    assert (run / OPENSET).read_text() == before
    info = json.loads(cli_ok("evaluate", run, *feats, "--calibrate", "--accept", "0.99", "--json").stdout)
    cal = load_calibration(run)
    assert (cal.source, cal.accept, cal.samples) == ("evaluate", 0.99, 200)
    assert info["calibration"]["threshold"] == cal.threshold < json.loads(before)["threshold"]
    assert cal.known_flag_rate <= 0.01
    (run / OPENSET).write_text(before)  # the module's other tests keep the training calibration


def test_a_run_without_calibration_says_so_and_writes_no_file(trained, tmp_path):
    _, _, (vx, vy, ux) = trained
    run = tmp_path / "noval"
    cli_ok("train", "--features", vx, "--labels", vy, *FAST, "--out", run)
    assert not (run / OPENSET).exists()
    _fails("predict", run, "--features", ux, "--out", tmp_path / "p.csv", "--require-calibration", match="calibrat")
    assert not (tmp_path / "p.csv").exists()
    result = cli_ok("predict", run, "--features", ux, "--out", tmp_path / "p.csv")
    assert "no new_class column" in result.output
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "index,label,score,fast_label,unassigned"
    info = json.loads(
        cli_ok("evaluate", run, "--features", vx, "--labels", vy, "--unseen-features", ux, "--json").stdout
    )
    assert info["open_set"]["calibration"] is None and "calibrated" not in info["open_set"]
    assert info["open_set"]["scores"]["cosine"]["auroc"] > 0.5


def test_the_openset_benchmark_runs_end_to_end_and_draws_its_picture(tmp_path):
    from benchmarks import bench_openset

    cfg = bench_openset.Config(
        datasets=("digits",), dims=(4,), means=False, seeds=(0,), epochs=3, continual_dim=4, png=str(tmp_path / "o.png")
    )
    section = bench_openset.run(cfg, torch.device("cpu"))
    assert (tmp_path / "o.png").stat().st_size > 10_000
    cosine = [r for r in section.rows if r.get("score") == "cosine" and "auroc" in r]
    heads = {h["figure"]: h["value"] for h in section.headlines}
    assert len(cosine) == 1 and heads["AUROC (cosine)"] == cosine[0]["auroc"]  # one seed: the median is its value
    assert heads["FPR@95TPR (cosine)"] == cosine[0]["fpr_at_95tpr"]
    continual = {(r["continual"], r["group"]): r for r in section.rows if "continual" in r}
    assert set(continual) == {(when, g) for when in ("before", "after") for g in ("classes 0-4", "classes 5-9")}
    # before: a run on classes 0-4 labels no sample of 5-9 right, and flags ~5% of the known validation data it was
    # calibrated on (accept 0.95); after continuing on all ten classes, the new ones are learned
    assert continual["before", "classes 5-9"]["top1"] == 0.0
    assert continual["before", "classes 0-4"]["flag_rate"] == pytest.approx(0.05, abs=0.01)
    assert continual["after", "classes 5-9"]["top1"] > 0.5
