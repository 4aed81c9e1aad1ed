"""``lscdistill.load`` and ``lscdistill export``: the same labels as ``lscdistill predict`` for generated, snapped and
class-means centers; files that load without lscdistill; a size that does not grow with generated classes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_runner import cli_ok
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import lscdistill
from lscdistill.centers import SystemCenters
from lscdistill.cli import app
from lscdistill.data import load_images, resolve_preprocess
from lscdistill.export import example_inputs, export_module, export_run, load_artifact, read_description
from lscdistill.inference import DecisionModule, describe
from lscdistill.models import MLP, Student
from lscdistill.stores import MeanAccumulator, StoreWriter
from lscdistill.systems import create_system

runner = CliRunner()


FAST = ["--epochs", "2", "-b", "64", "-q", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four finished runs: test_resnet on digit images (generated A_nr, and cross-entropy), MLPs on digit pixels
    toward their class means and toward the means snapped to A_64."""
    root = tmp_path_factory.mktemp("runs")
    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    acc = MeanAccumulator(10, 64)
    acc.update(torch.from_numpy(y), torch.from_numpy(x))
    with StoreWriter(root / "means.h5", kind="means", n_classes=10, n_dim=64, provenance={}) as w:
        acc.write(w)
    cli_ok("snap", root / "means.h5", "--system", "an", "--out", root / "snapped.h5")
    feats = ["--features", root / "x.npy", "--labels", root / "y.npy", "--hidden", "64"]
    feats += ["--val-features", root / "x.npy", "--val-labels", root / "y.npy"]  # runs calibrate on validation data
    images = ["--data", "digits:train", "--val-data", "digits:val", "--model", "test_resnet"]
    cli_ok("train", *images, *FAST, "--out", root / "anr")
    cli_ok("train", *images, "--objective", "ce", *FAST, "--out", root / "ce")
    cli_ok("train", *feats, "--centers", root / "means.h5", *FAST, "--out", root / "means")
    cli_ok("train", *feats, "--centers", root / "snapped.h5", *FAST, "--out", root / "snapped")
    return root


def _predict_csv(run, out, *data):
    cli_ok("predict", run, *data, "--out", out)
    rows = [line.split(",") for line in out.read_text().splitlines()]
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])}


def _pixels(run):
    """Digits as ``predict --data digits`` feeds them, un-normalized back to [0, 1] pixels."""
    model, meta = lscdistill.load(run, device="cpu").module.model, json.loads((run / "model.json").read_text())
    model.preprocess = meta["preprocess"]
    data = load_images("digits", resolve_preprocess(model, "digits"))
    x = torch.stack([data.dataset()[(0, i)][0] for i in range(len(data))])
    mean, std = (torch.tensor(meta["preprocess"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    return x * std + mean


@pytest.mark.parametrize("kind", ["anr", "ce", "means", "snapped"])
def test_api_and_exported_file_give_the_labels_of_predict(runs, kind, tmp_path):
    run = runs / kind
    images = kind in ("anr", "ce")
    data = ["--data", "digits"] if images else ["--features", runs / "x.npy"]
    csv = _predict_csv(run, tmp_path / "p.csv", *data)
    # the fast rule for generated and snapped centers (fast_label), exact for means and cross-entropy (label)
    want = np.array(csv["fast_label" if kind in ("anr", "snapped") else "label"], dtype=np.int64)
    x = _pixels(run) if images else torch.from_numpy(np.load(runs / "x.npy"))
    got = lscdistill.load(run, device="cpu").predict(x)
    np.testing.assert_array_equal(got.labels.numpy(), want)
    # csv's score is the exact decoding's: the same cosine wherever the fast rule found an assigned vector
    same = (got.labels >= 0).numpy()
    np.testing.assert_allclose(got.scores.numpy()[same], np.array(csv["score"], dtype=np.float32)[same], atol=1e-4)
    # new_class: the run's calibrated threshold on the score, and (fast rule) a nearest vector owned by no class
    flagged = np.array(csv["new_class"]) == "1"
    if "unassigned" in csv:
        flagged |= np.array(csv["unassigned"]) == "1"
    assert 0 < flagged.sum() < len(flagged)
    np.testing.assert_array_equal(got.new_class.numpy(), flagged)
    out = tmp_path / "model.pt2"
    cli_ok("export", run, "--out", out)
    label, score, new = load_artifact(out)(x)
    np.testing.assert_array_equal(label.numpy(), want)
    torch.testing.assert_close(score, got.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(new, got.new_class)
    description = read_description(out)
    assert description["run"]["n_classes"] == 10 and description["inputs"]["kind"] == (
        "images" if images else "features"
    )


def test_exported_file_runs_without_lscdistill(runs, tmp_path):
    out = tmp_path / "m.pt2"
    export_run(runs / "anr", out)
    x = torch.rand(7, 3, 32, 32)
    want = lscdistill.load(runs / "anr", device="cpu").predict(x)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch; sys.modules['lscdistill'] = None\n"  # any import of lscdistill now fails
        f"m = torch.export.load({str(out)!r}).module()\n"
        f"label, score, new = m(torch.load({str(tmp_path / 'x.pt')!r}))\n"
        "print(','.join(map(str, label.tolist())))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ",".join(map(str, want.labels.tolist()))


def test_onnx_export_gives_the_same_labels(runs, tmp_path):
    out = tmp_path / "m.onnx"
    export_run(runs / "means", out)
    x = torch.from_numpy(np.load(runs / "x.npy"))[:50]
    want = lscdistill.load(runs / "means", device="cpu").predict(x)
    label, score, new = load_artifact(out)(x)
    np.testing.assert_array_equal(label.numpy(), want.labels.numpy())
    torch.testing.assert_close(score, want.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(new, want.new_class)
    assert read_description(out)["run"]["centers"]["type"] == "store"


def test_threshold_flags_low_scores_and_nan_rows(runs):
    x = _pixels(runs / "anr")[:64]
    plain = lscdistill.load(runs / "anr", device="cpu", threshold=None).predict(x)
    cut = float(plain.scores.median())
    flagged = lscdistill.load(runs / "anr", device="cpu", threshold=cut).predict(x)
    np.testing.assert_array_equal(flagged.new_class.numpy(), (plain.new_class | (plain.scores < cut)).numpy())
    np.testing.assert_array_equal(flagged.labels.numpy(), plain.labels.numpy())  # the best guess is kept
    x[0] = float("nan")
    bad = lscdistill.load(runs / "anr", device="cpu", threshold=None).predict(x)
    assert bad.labels[0] == -1 and bad.new_class[0] and torch.isnan(bad.scores[0])


def test_size_of_an_export_with_generated_centers_does_not_grow_with_the_classes(tmp_path):
    system = create_system("an", 128, seed=0, interpolations=1)  # 2,113,536 vectors, 16,512 of them roots
    sizes = {}
    for n in (10, len(system)):
        model = Student(MLP(32, 64), n_dim=128, project=True)
        module = DecisionModule(model, SystemCenters(system, n), None)
        meta = {"model": {"in_dim": 32, "architecture": "mlp"}, "n_classes": n}
        export_module(module, example_inputs(module, meta), tmp_path / f"{n}.pt2", describe(meta, module))
        sizes[n] = (tmp_path / f"{n}.pt2").stat().st_size
    small, large = sizes.values()
    assert len(system) > 100 * 128 * 129 and abs(large - small) < 0.01 * small, sizes


@pytest.mark.parametrize(
    "setup, out, message",
    [
        ("unfinished", "m.pt2", "not a finished lscdistill run"),
        ("missing", "m.pt2", "does not exist"),
        ("run", "m.txt", "must end in .pt2 or .onnx"),
        ("run", "nowhere/m.pt2", "does not exist"),
        ("run", "exists.pt2", "already exists"),
    ],
)
def test_bad_input_one_clear_error_and_no_file(runs, tmp_path, setup, out, message):
    run = {"run": runs / "means", "unfinished": tmp_path / "half", "missing": tmp_path / "nope"}[setup]
    if setup == "unfinished":
        run.mkdir()
        (run / "config.json").write_text("{}")
    (tmp_path / "exists.pt2").write_text("keep me")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / out)])
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "exists.pt2").read_text() == "keep me"
