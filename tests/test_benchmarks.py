"""Smoke test of the benchmark suite: one tiny case of each in-process benchmark through the runner's API.

Benchmarks are never unit tests: nothing here checks a timing, only that the suite runs and writes what the README
describes (rows with statistics, finite ratios, the JSON file).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import cli_run
from rich.console import Console

from benchmarks.runner import run_suite


@pytest.fixture
def lscdistill_in_process(monkeypatch):
    """The benchmarks' ``python -m lscdistill ARGS`` subprocesses run the same command in this process instead
    (typer's runner), sparing each one the ~4 s of CPU that importing torch and timm again costs; any other command
    (the benchmarks' own workers) still starts a process. ``python -m lscdistill`` itself is run by the torchrun
    tests and the resume test."""
    start_process = subprocess.run

    def run(cmd, *args, **kwargs):
        cmd = [str(c) for c in cmd]
        if cmd[:3] != [sys.executable, "-m", "lscdistill"]:
            return start_process(cmd, *args, **kwargs)
        result = cli_run(*cmd[3:])
        stderr = result.stderr + (repr(result.exception) if result.exit_code and result.exception else "")
        done = subprocess.CompletedProcess(cmd, result.exit_code, result.stdout, stderr)
        if kwargs.get("check"):
            done.check_returncode()
        return done

    monkeypatch.setattr(subprocess, "run", run)


TINY = {
    "predict": {
        "classes": (500, 1056, 3000),
        "n_dim": 32,
        "batch": 64,
        "repeats": 2,
        "slow_repeats": 2,
        "compiled": False,  # compiling is slow on 2 cores: tests/test_decoder.py compiles the decoder (slow)
    }
    | {"inputs": ("near-center", "gaussian")},
    "inference": {"classes": (1056, 3000), "sweep": (10,), "batch": 64, "in_dim": 16, "hidden": 32, "n_dim": 32}
    | {"repeats": 2},
}


def test_suite_runs_tiny_cases_and_writes_finite_ratios(tmp_path):
    out = io.StringIO()
    payload = run_suite(
        ("predict", "inference"),
        quick=True,
        device="cpu",
        overrides=TINY,
        out_dir=tmp_path,
        plot=False,
        console=Console(file=out, width=200),
    )
    written = json.loads((tmp_path / "suite-predict-inference-quick-cpu.json").read_text())
    assert written["machine"]["torch"] and written["quick"] is True
    for name in ("predict", "inference"):
        section = written["benchmarks"][name]
        assert section["rows"] and section["headlines"]
        for row in section["rows"]:
            t = row["time_s"]
            assert t["min"] <= t["median"] <= t["max"] and t["n"] == len(t["values"]) >= 1
        for h in section["headlines"]:
            if h["unit"] == "x":
                assert math.isfinite(h["value"]) and h["value"] > 0 and h["low"] <= h["value"] <= h["high"]
    methods = {r["method"] for r in written["benchmarks"]["predict"]["rows"]}
    assert {"floor", "fast", "exact", "brute"} <= methods
    assert {r["n_classes"] for r in written["benchmarks"]["predict"]["rows"]} == {500, 1056, 3000}
    exact_notes = [r["note"] for r in written["benchmarks"]["predict"]["rows"] if r["method"] == "exact"]
    assert all(note.startswith("agrees with brute force on 100.0%") for note in exact_notes)
    assert "Headline figures" in out.getvalue()
    assert payload["paths"] == [str(tmp_path / "suite-predict-inference-quick-cpu.json")]


def test_plot_draws_the_written_results(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.plot import plot_suite

    payload = run_suite(
        ("predict",),
        quick=True,
        device="cpu",
        overrides={"predict": TINY["predict"] | {"classes": (500,)}},
        out_dir=tmp_path,
        plot=False,
        console=Console(file=io.StringIO()),
    )
    path = plot_suite(payload, tmp_path / "suite.png")
    assert path.stat().st_size > 10_000


TINY_MNIST = {"limit_per_class": 10}  # 100 training and 20 validation images


def _section(name: str, config: dict, tmp_path) -> dict:
    """One benchmark run alone with ``config`` replacing fields of its Config; its section of the suite's JSON."""
    payload = run_suite(
        (name,),
        device="cpu",
        overrides={name: config},
        out_dir=tmp_path,
        plot=False,
        console=Console(file=io.StringIO(), width=200),
    )
    return payload["benchmarks"][name]


def test_realdata_matrix_runs_the_cli_and_scores_saved_models(tmp_path, lscdistill_in_process):
    """One cell of the real-data matrix (100 MNIST images x test_resnet, 1 epoch): CE teacher, LSC on A_nr, LSC
    toward the teacher's means, each scored by `lscdistill evaluate` in eval mode, with the headline differences."""
    section = _section(
        "realdata", {"datasets": ("mnist",), "models": ("test_resnet",), "epochs": 1} | TINY_MNIST, tmp_path
    )
    rows = {r["method"]: r for r in section["rows"]}
    assert set(rows) == {"ce", "lsc", "lsc-means"}
    for r in rows.values():
        n_train = 10 * TINY_MNIST["limit_per_class"]
        assert r["n_classes"] == 10 and r["batchnorm"]["recomputed"]
        assert r["batchnorm"]["samples"] == min(32, n_train // 64) * 64  # --bn-batches 32 of 64, whole batches
        assert r["val_top1"] in {k / 20 for k in range(21)}  # scored on all 20 validation images
    assert rows["ce"]["val_top1_fast"] is None and rows["lsc"]["val_top1_fast"] is not None  # fast decoding: A_nr
    heads = {h["figure"]: h for h in section["headlines"]}
    assert heads["lsc - ce val top-1 (points)"]["value"] == pytest.approx(
        100 * (rows["lsc"]["val_top1"] - rows["ce"]["val_top1"])
    )
    assert rows["lsc"]["val_hits"] == round(rows["lsc"]["val_top1"] * 20) and rows["lsc"]["val_samples"] == 20
    gaps = [r["train_top1_train_mode"] - r["train_top1_eval_mode"] for r in rows.values()]
    assert heads["train-mode minus eval-mode top-1, worst (points)"]["value"] == pytest.approx(100 * max(gaps))


def test_trainloop_benchmark_compares_lscdistill_train_with_a_bare_loop(tmp_path):
    """One tiny round (test_resnet, 0 workers): a bare loop, lscdistill train on generated centers and on a store;
    both loops see every image once, are timed by wall and CPU clocks, and each lscdistill variant gets an overhead
    headline per clock."""
    tiny = {"model": "test_resnet", "workers": (0,), "store_classes": 1000, "rounds": 1} | TINY_MNIST
    section = _section("trainloop", tiny, tmp_path)
    assert {r["method"] for r in section["rows"]} == {"bare", "lsc-system", "lsc-store"}
    assert all(r["samples_per_s"] > 0 and math.isfinite(r["samples_per_s"]) for r in section["rows"])
    figures = [h["figure"] for h in section["headlines"]]
    expected = [
        f"lscdistill train overhead over a bare loop, {clock} ({v}, 0 workers)"
        for v in ("lsc-system", "lsc-store")
        for clock in ("wall time", "CPU time")
    ]
    assert figures == expected
    for row in section["rows"]:  # both clocks measured the same span: CPU time cannot exceed wall time by much
        assert all(0 < cpu <= 1.05 * wall for cpu, wall in zip(row["cpu_s"], row["wall_s"], strict=True))
        assert all(run["samples"] == 100 for run in row["runs"])  # every image once


def test_anatomy_times_every_stage_against_the_floor_and_counts_the_ops(tmp_path):
    """The decoder's anatomy, tiny: every stage and primitive timed beside the floor (the C kernel's and the tensor
    program's stages), a ratio per batch size both ways, and the op count of one fast predict both ways (views
    included in the total, not in the other)."""
    tiny = {"classes": 3000, "n_dim": 24, "batch": 32, "batches": (8, 32), "rounds": 2, "compiled": False}
    section = _section("anatomy", tiny, tmp_path)
    kinds = [r["method"].split(":")[0] for r in section["rows"]]
    assert kinds.count("stage") == 6 and kinds.count("primitive") == 6 and kinds.count("batch") == 10
    assert sum(r["method"].startswith("stage: tensor program") for r in section["rows"]) == 3
    assert all(r["time_s"]["median"] > 0 for r in section["rows"])
    heads = {(h["figure"], h["case"]): h["value"] for h in section["headlines"]}
    for way, count in (("fast", 2), ("fast, tensor program", 2), ("fast, portable rows (no AVX2)", 1)):
        ratios = [v for (figure, _), v in heads.items() if figure.startswith(f"{way} / floor")]
        assert len(ratios) == count and all(v > 1 for v in ratios)  # no decoder reads the batch faster than a sum
    for way in ("", ", tensor program"):
        total, compute = (
            heads[(f"aten ops per fast predict{way}", "batch 32")],
            heads[(f"without views{way}", "batch 32")],
        )
        assert 0 < compute < total
    # the kernel replaces most of the tensor program's ops
    assert heads[("without views", "batch 32")] < heads[("without views, tensor program", "batch 32")] / 3


def test_set_overrides_are_typed_by_the_config_fields():
    from benchmarks.__main__ import parse_overrides

    items = ["realdata.extra=--aug randaugment --mixup 0.2", "realdata.epochs=3", "trainloop.workers=0 1"]
    got = parse_overrides(items)
    assert got == {
        "realdata": {"extra": ("--aug", "randaugment", "--mixup", "0.2"), "epochs": 3},
        "trainloop": {"workers": (0, 1)},
    }
    for bad in ("nope.x=1", "realdata.nothing=1", "realdata.epochs"):
        with pytest.raises(ValueError, match="--set"):
            parse_overrides([bad])


def test_paper_benchmark_counts_parameters_and_bisects_batches_under_a_cap(tmp_path):
    """Table 9 on the meta device (test_vit: LSC without and with its projection, CE with a head) and Table 10 with
    a tiny cap: the parameter counts follow the formula, a batch is found for LSC, and CE's head at 10M classes
    (16 B x 8 x 10M = 1.2 GiB of state) does not fit a 64 MiB cap at any batch."""
    tiny = {"models": ("test_vit",), "param_classes": (10, 1000), "lsc_classes": (10,), "lsc_store_classes": ()}
    tiny |= {"experiments": ("table9", "table10")}
    tiny |= {"batch_classes": (10_000_000,), "cap_mib": 64, "n_dim": 8, "img_size": 64, "max_batch": 8}
    section = _section("paper", tiny | {"tolerance": 0.5}, tmp_path)
    rows = section["rows"]
    params = {(r["method"], r["n_classes"]): r["params"] for r in rows if r["case"] == "table9 test_vit"}
    backbone = params["lsc", 10]
    assert params["lsc", 1000] == backbone and params["lsc+proj", 10] == backbone + 64 * 64 + 64
    assert params["ce", 10] == backbone + 64 * 10 + 10 and params["ce", 1000] == backbone + 64 * 1000 + 1000
    batches = {r["method"]: r["max_batch"] for r in rows if r["case"].startswith("table10")}
    assert batches["lsc"] >= 1 and batches["ce"] == 0
    heads = {h["figure"]: h for h in section["headlines"]}
    assert heads["test_vit: classes at which the CE head outgrows the backbone"]["value"] == pytest.approx(
        backbone / 64
    )


TINY_PAPER = {"datasets": ("digits",), "seeds": (0,), "epochs": 2, "limit_per_class": 20, "extra": {"log_every": 1}}


def test_paper_training_runs_every_features_experiment_and_draws_its_figures(tmp_path):
    """The paper's training experiments on 200 digits, 2 epochs: every run of gap / table7 / table4 with its val
    curve, epochs to 95% of the CE teacher's final top-1 that agree with the curve, ratio headlines, PNGs."""
    from benchmarks.bench_paper_training import RUNS, epochs_to

    tiny = TINY_PAPER | {"experiments": ("gap", "table7", "table4"), "img_dir": str(tmp_path / "img")}
    section = _section("paper-training", tiny, tmp_path)
    rows = {r["method"]: r for r in section["rows"]}
    assert set(rows) == set(RUNS["gap"]) | set(RUNS["table7"]) | set(RUNS["table4"])
    for name, r in rows.items():
        assert len(r["curve"]) == 2 and all(0 <= v <= 1 for v in r["curve"]) and r["final"] == r["curve"][-1]
        teacher = rows["ce-dim3" if "dim3" in name else "ce"]["final"]
        assert r["target"] == pytest.approx(0.95 * teacher)
        e = r["epochs_to_target"]
        assert e == next((i + 1 for i, v in enumerate(r["curve"]) if v >= r["target"]), None)
        assert r["steps_to_target"] == (None if e is None else e * r["steps_per_epoch"])
        assert r["loss"] and r["steps"] == 2 * r["steps_per_epoch"]
    heads = {h["figure"]: h for h in section["headlines"]}
    for num, den in (("lsc-anr", "ce"), ("lsc-snapped", "lsc-anr")):
        a, b = rows[num]["epochs_to_target"], rows[den]["epochs_to_target"]
        figure = f"epochs to 95% of CE final: {num} / {den}"
        if a is not None and b is not None:
            assert heads[figure]["value"] == pytest.approx(a / b)
    assert heads["final val top-1: lsc-anr"]["value"] == pytest.approx(100 * rows["lsc-anr"]["final"])
    assert epochs_to([0.1, 0.5, 0.9], 0.5) == 2 and epochs_to([0.1], 0.5) is None
    pngs = sorted(p.name for p in (tmp_path / "img").glob("*.png"))
    assert pngs == ["paper-fig5.png", "paper-fig8.png", "paper-fig9.png", "paper-gap.png", "paper-s66.png"]
    from benchmarks.paper_training_plots import replot  # the figures again, from the written JSON alone

    redrawn = replot(tmp_path / "suite-paper-training-cpu.json", tmp_path / "again")
    assert sorted(Path(p).name for p in redrawn) == pngs


def test_paper_training_mixed_labels_permute_the_teachers_class_means(tmp_path):
    """Table 4's mixed labels: the mixed store gives every class another class's mean (a fixed permutation, no
    class keeps its own), and the plain store holds the per-class means of the teacher's embeddings."""
    import numpy as np

    from benchmarks.bench_paper_training import features, teacher_stores, train
    from lscdistill.models import load_run_model
    from lscdistill.stores.reader import open_store

    data = features("digits", tmp_path / "data", limit=10)
    train(tmp_path / "ce", data, 0, 1, objective="ce", n_dim=3)
    stores = teacher_stores(tmp_path / "ce", data, tmp_path, "m3", mixed=True)
    read = {}
    for key in ("m3", "m3-mixed"):
        with open_store(stores[key]) as store:
            read[key] = np.concatenate([rows for _, rows in store.iter_blocks("centers")])
    model, _ = load_run_model(tmp_path / "ce")
    x, y = np.load(data.train_x), np.load(data.train_y)
    emb = model.eval().embed(torch.from_numpy(x)).detach().numpy().astype(np.float64)
    expected = np.stack([emb[y == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(read["m3"], expected, rtol=1e-5, atol=1e-6)
    perm = np.roll(np.arange(10), 1)
    np.testing.assert_allclose(read["m3-mixed"][perm], read["m3"], rtol=1e-6)
    assert read["m3"].shape == (10, 3) and not (perm == np.arange(10)).any()


def test_paper_training_experiments_run_the_cli_and_score_saved_models(tmp_path, lscdistill_in_process):
    """Table 5, the planar system and §6.5 at a tiny size (12 KMeans classes on 500 MNIST images, one epoch):
    every cell trains through the CLI, is scored in eval mode, and the planar picture is written."""
    png = tmp_path / "planar.png"
    tiny = {"experiments": ("table5", "planar", "distill"), "seeds": (0,), "kmeans_classes": 12, "samples": 500}
    tiny |= {"loss_dims": (9,), "losses": ("cos", "dist"), "loss_optimizers": ("defaults",)}
    tiny |= {"loss_epochs": 1, "planar_epochs": 1, "planar_seeds": (0,), "planar_clips": (1.0,)}
    tiny |= {"planar_png": str(png), "distill_teacher": "test_vit", "teacher_epochs": 1, "student_epochs": 1}
    section = _section("paper", tiny, tmp_path)
    rows = section["rows"]
    cells = {(r["case"], r["method"]) for r in rows}
    assert cells == {
        ("table5 mlp dim 9, defaults optimizer", "cos"),
        ("table5 mlp dim 9, defaults optimizer", "dist"),
        ("planar dim 2, dist, clip-grad 1.0", "all"),
        ("distill teacher", "test_vit ce"),
        *(("distill student mlp", m) for m in ("means", "ce", "A_nr")),
    }
    from sklearn.datasets import load_digits

    from lscdistill.data import digits_split

    n_val = {
        "kmeans": tiny["samples"] - tiny["samples"] * 4 // 5,
        "digits": len(digits_split(load_digits().target, "val")),
    }
    for r in rows:  # each scored on every validation sample: a whole number of hits
        hits = r["val_top1"] * n_val["digits" if r["case"].startswith("distill") else "kmeans"]
        assert hits == pytest.approx(round(hits), abs=1e-6) and r["seconds"] > 0, r
    students = [r["val_top1"] for r in rows if r["case"] == "distill student mlp"]
    assert min(students) > 0.3, students  # digit pixels, one epoch: far above chance (0.1) whatever the centers
    planar = {r["method"]: r["r_c"] for r in rows if r["case"].startswith("planar")}
    assert planar == {"all": [1 / 32]}  # the library's planar default: every cluster halved at every doubling
    params = {r["method"]: r["params"] for r in rows if r["case"] == "distill student mlp"}
    # the MLP's 256 -> 64 projection to test_vit's means vs its 10-class head; A_nr projects to 512
    assert params["means"] - params["ce"] == 256 * 64 + 64 - (256 * 10 + 10)
    assert params["A_nr"] - params["means"] == 256 * (512 - 64) + (512 - 64)
    assert png.stat().st_size > 10_000


def test_mnist_singles_are_the_images_themselves_and_views_come_in_the_same_order(tmp_path):
    """Table 8's data: ``train/`` holds the chosen MNIST images unchanged (equally many of each digit), ``views/``
    one distortion of each under the same name, so ``--instance-labels`` numbers both folders alike."""
    import numpy as np
    from PIL import Image

    from benchmarks.realdata import mnist_arrays, prepare

    split = prepare("mnist-singles", tmp_path, n_images=30)
    train, views = sorted(Path(split.train).rglob("*.png")), sorted(Path(split.val).rglob("*.png"))
    assert split.n_classes == 30 and len(train) == 30
    assert [p.relative_to(split.train) for p in train] == [p.relative_to(split.val) for p in views]
    x, y = mnist_arrays()
    for path in train:
        index = int(path.stem)
        assert y[index] == int(path.parent.name)
        np.testing.assert_array_equal(np.asarray(Image.open(path)), x[index])
    assert sorted(int(p.parent.name) for p in train) == sorted(list(range(10)) * 3)
    moved = [not np.array_equal(np.asarray(Image.open(v)), x[int(v.stem)]) for v in views]
    assert sum(moved) >= 28  # a random affine view (rarely the identity on an 8-bit image)


def test_paper_table8_trains_with_instance_labels_past_the_root_level(tmp_path):
    """Table 8 at a tiny size: A_4 has 20 roots, so 12 classes train on roots and 30 on the interpolated level;
    every run is scored with instance labels on its training images and their unseen views."""
    png = tmp_path / "table8.png"
    tiny = {"experiments": ("table8",), "seeds": (0,), "instance_classes": (12, 30), "instance_dim": 4}
    tiny |= {"instance_epochs": 1, "instance_img_size": 16, "instance_png": str(png)}
    section = _section("paper", tiny, tmp_path)
    rows = {r["n_classes"]: r for r in section["rows"]}
    assert set(rows) == {12, 30}
    assert (rows[12]["interpolations"], rows[30]["interpolations"]) == (0, 1) and rows[12]["roots"] == 20
    assert rows[30]["method"] == "A_nr + 1 interpolation"
    for n, r in rows.items():  # one image per class, each scored: whole numbers of hits out of n
        for key in ("train_top1", "views_top1"):
            assert r[key] * n == pytest.approx(round(r[key] * n), abs=1e-9), (n, key, r[key])
        assert r["cpu_seconds"] > 0
    # the classes on the interpolated level alone (index >= roots): hits out of 30 - 20; none in the 12-class run
    late = rows[30]["train_top1_interpolated"] * (30 - rows[30]["roots"])
    assert late == pytest.approx(round(late), abs=1e-9) and rows[12]["train_top1_interpolated"] is None
    notes = section["notes"]
    assert any(n.startswith("benchmarks.bench_paper_instances:") and "s CPU" in n for n in notes)
    assert png.stat().st_size > 10_000
