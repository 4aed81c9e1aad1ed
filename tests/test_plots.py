"""Pictures: PNGs are written, and what they draw is what the runs hold (points on their centers)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lscdistill.cli import app
from lscdistill.data import load_features
from lscdistill.demo_figures import digits_features
from lscdistill.plots import plot_continual, plot_latent, plot_training_curves, read_metrics
from lscdistill.train import TrainConfig, run_train

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def _features(root: Path, max_class: int) -> dict[str, str]:
    """Digits pixels of the classes < max_class as .npy features, the fixed train/val split (the library's own)."""
    return digits_features(root, max_class)[1]


def _train(out: Path, paths: dict[str, str], **kw) -> Path:
    """A tiny MLP run on one thread (several threads only slow such small matrices down on a busy machine)."""
    cfg = TrainConfig(
        out=out,
        features=paths["train_x"],
        labels=paths["train_y"],
        val_features=paths["val_x"],
        val_labels=paths["val_y"],
        hidden=64,
        lr=3e-3,
        epochs=6,
        log_every=3,
        checkpoint_every=10**9,  # no checkpoints: faster, and these runs are never resumed
        cpu=True,
        quiet=True,
        **kw,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_train(cfg).run_dir
    finally:
        torch.set_num_threads(threads)


PLANAR = {"system": "planar", "n_dim": 2, "interpolations": 1, "seed_system": None}  # 8 directions, 45 degrees apart


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A planar dim-2 run on classes 0-3, and its continuation on classes 0-5 (``--init-from``)."""
    root = tmp_path_factory.mktemp("plots")
    four, six = _features(root, 4), _features(root, 6)
    first = _train(root / "first", four, **PLANAR)
    second = _train(root / "second", six, init_from=str(first), **PLANAR)
    return {"first": first, "second": second, "val4": four, "val6": six, "root": root}


def test_training_curves_one_series_per_run_from_metrics(runs, tmp_path):
    out = tmp_path / "curves.png"
    plot = plot_training_curves([runs["first"], runs["second"]], out)
    assert _is_png(out) and plot.path == out and Path(plot) == out  # path-like, for callers that want the file
    assert list(plot.series) == ["first", "second"]
    records = read_metrics(runs["first"])
    logged = [r for r in records if "loss" in r]
    assert plot.series["first"]["loss"] == [r["loss"] for r in logged]
    assert plot.series["first"]["val_top1"] == [r["val_top1"] for r in records if "val_top1" in r]
    assert plot.series["first"]["epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_latent_2d_points_lie_on_their_planar_centers(runs, tmp_path):
    val = load_features(runs["val4"]["val_x"], runs["val4"]["val_y"])
    out = tmp_path / "latent.png"
    plot = plot_latent(runs["first"], val, out)
    assert _is_png(out)
    assert plot.space == "unit" and plot.points.shape == (len(val), 2)
    np.testing.assert_allclose(np.linalg.norm(plot.points, axis=1), 1.0, atol=1e-9)  # cosine run: normalized
    # the planar system's first four vectors, in index order: 0, 90, 180, 270 degrees
    angles = [math.radians(a) for a in (0, 90, 180, 270)]
    np.testing.assert_allclose(plot.centers, [[math.cos(a), math.sin(a)] for a in angles], atol=1e-12)
    own = np.einsum("nd,nd->n", plot.points, plot.centers[plot.labels])
    assert np.median(own) > 0.95  # the clusters sit on their centers
    meta = json.loads((runs["first"] / "model.json").read_text())
    assert plot.top1 == pytest.approx(meta["final_metrics"]["top1"])  # nearest drawn center = exact decoding
    assert plot.top1 > 0.9


def test_distance_loss_run_is_drawn_raw_at_radius_5(runs, tmp_path):
    run = _train(runs["root"] / "dist", runs["val4"], loss="dist", **PLANAR)
    plot = plot_latent(run, load_features(runs["val4"]["val_x"], runs["val4"]["val_y"]), tmp_path / "d.png")
    assert plot.space == "raw"
    np.testing.assert_allclose(np.linalg.norm(plot.centers, axis=1), 5.0)  # planar centers at r = 5 (§5.1)


def test_continual_three_panels_like_figure_7(runs, tmp_path):
    val = load_features(runs["val6"]["val_x"], runs["val6"]["val_y"])
    out = tmp_path / "continual.png"
    a, b, c = plot_continual(runs["first"], runs["second"], val, out)
    assert _is_png(out)
    assert set(a.labels.tolist()) == {0, 1, 2, 3} and set(b.labels.tolist()) == set(range(6))
    assert len(a.centers) == 4 and len(b.centers) == len(c.centers) == 6
    # (a) and (b) are the same model: the old classes' points are the same points
    np.testing.assert_array_equal(a.points, b.points[b.labels < 4])
    assert c.top1 > 0.8  # after continued training every class sits on its center
    with pytest.raises(ValueError, match="does not continue"):
        plot_continual(runs["second"], runs["first"], val, tmp_path / "x.png")


def test_plot_cli_writes_curves_and_latent(runs, tmp_path):
    out = tmp_path / "c.png"
    result = runner.invoke(app, ["plot", str(runs["first"]), str(runs["second"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and _is_png(out)
    v = runs["val4"]
    args = ["plot", str(runs["first"]), "--latent", "--features", v["val_x"], "--labels", v["val_y"], "-o"]
    result = runner.invoke(app, [*args, str(tmp_path / "l.png")])
    assert result.exit_code == 0, result.output
    assert _is_png(tmp_path / "l.png") and "nearest-center top-1" in result.stderr


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("missing", [], "does not exist"),
        ("empty_dir", [], "has no metrics.jsonl"),
        ("empty_metrics", [], "holds no records"),
        ("run", ["--latent", "--data", "digits:val"], "give --features"),
        ("two_runs", ["--latent", "--data", "digits:val"], "--latent draws one run"),
        ("run", ["--data", "digits:val"], "are for --latent"),
        ("run", ["--out", "nowhere/x.png"], "does not exist"),
    ],
)
def test_plot_cli_bad_input_is_one_clear_line(runs, tmp_path, setup, extra, message):
    target = {"missing": [str(tmp_path / "nope")], "two_runs": [str(runs["first"])] * 2}.get(setup, [str(tmp_path)])
    if setup == "empty_metrics":
        (tmp_path / "metrics.jsonl").write_text("")
    if setup == "run":
        target = [str(runs["first"])]
    if extra[:1] == ["--out"]:
        extra = ["--out", str(tmp_path / extra[1])]
    result = runner.invoke(app, ["plot", *target, *extra])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


def test_matplotlib_is_not_imported_by_the_package_or_the_cli():
    modules = "lscdistill.plots, lscdistill.demo_figures, lscdistill.cli"
    code = f"import sys, {modules}; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_dir_copy_without_metrics_is_an_error(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["first"], copy)
    (copy / "metrics.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"no metrics\.jsonl"):
        plot_training_curves([copy], tmp_path / "x.png")
