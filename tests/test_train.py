"""``lscdistill train | evaluate | predict``: learning, self-describing runs, exact resume, continual learning,
predictions that match a brute-force reference, and one clear error for bad input."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_runner import cli_ok, cli_run
from typer.testing import CliRunner

from lscdistill.evaluate import load_run
from lscdistill.models import load_run_model, load_state_dict
from lscdistill.stores import MeanAccumulator, StoreWriter
from lscdistill.train import (
    DEFAULT_LR,
    DEFAULT_SCHEDULE,
    WARMUP_FRACTION,
    WSD_DECAY_FRACTION,
    TrainConfig,
    resolve_defaults,
)
from lscdistill.train.config import inherit_defaults

runner = CliRunner()


def _blobs(path, name, n, n_classes, dim=16, seed=0, spread=0.6):
    """Gaussian blobs around fixed random class means (the same means for every split)."""
    means = np.random.default_rng(123).normal(size=(n_classes, dim)) * 2
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = (means[y] + spread * rng.normal(size=(n, dim))).astype(np.float32)
    np.save(path / f"{name}_x.npy", x)
    np.save(path / f"{name}_y.npy", y)
    return path / f"{name}_x.npy", path / f"{name}_y.npy"


@pytest.fixture
def blobs(tmp_path):
    tx, ty = _blobs(tmp_path, "train", 600, 6, seed=1)
    vx, vy = _blobs(tmp_path, "val", 200, 6, seed=2)
    return ["--features", tx, "--labels", ty, "--val-features", vx, "--val-labels", vy], (vx, vy)


def _steps_per_epoch(args, batch_size: int) -> int:
    """Optimizer steps in an epoch of the training features in ``args`` (the last, partial batch included)."""
    return -(-len(np.load(args[args.index("--labels") + 1])) // batch_size)


FAST = ["--lr", "3e-3", "--epochs", "4", "-b", "32", "-q", "--hidden", "64"]


def test_lsc_on_features_learns_and_the_run_describes_itself(tmp_path, blobs):
    args, _ = blobs
    run = tmp_path / "run"
    cli_ok("train", *args, *FAST, "--n-dim", "8", "--out", run)
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"] == {
        "architecture": "mlp",
        "in_dim": 16,
        "hidden": 64,
        "in_chans": 3,
        "n_dim": 8,
        "project": True,
    }
    assert meta["centers"] == {
        "type": "system",
        "name": "an",
        "n_dim": 8,
        "seed": 0,
        "interpolations": 0,
        "projection": None,
        "options": {},  # A_n has no option whose default changed (planar's halving has)
    }
    assert meta["final_metrics"]["top1"] >= 0.95
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 3e-3 and config["objective"] == "lsc"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in lines if "val_top1" in m]
    assert [m["epoch"] for m in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    per_epoch = _steps_per_epoch(args, 32)
    kept = sorted((p.name for p in (run / "checkpoints").iterdir()), key=lambda name: int(name.split("_")[1]))
    assert kept == [f"step_{3 * per_epoch}", f"step_{4 * per_epoch}"]  # one per epoch, the last 2 kept


@pytest.mark.parametrize("objective", ["lsc", "ce"])
def test_defaults_by_objective_are_resolved_and_recorded(tmp_path, blobs, objective):
    args, _ = blobs
    run = tmp_path / objective
    cli_ok("train", *args, "--objective", objective, "--epochs", "4", "-b", "32", "-q", "--hidden", "16", "--out", run)
    total = 4 * _steps_per_epoch(args, 32)  # optimizer steps: 4 epochs of batches of 32
    warmup = round(WARMUP_FRACTION * total)
    config = json.loads((run / "config.json").read_text())
    assert (config["lr"], config["schedule"]) == (DEFAULT_LR[objective], DEFAULT_SCHEDULE[objective])
    assert config["warmup_steps"] == warmup  # resolved from the step count when the run was created
    assert config["clip_grad"] == 0.0  # the cosine loss and cross-entropy are not clipped by default
    optimizer = json.loads((run / "model.json").read_text())["optimizer"]
    assert optimizer == {
        "name": "AdamW",
        "lr": DEFAULT_LR[objective],
        "weight_decay": 1e-5,
        "schedule": DEFAULT_SCHEDULE[objective],
        "warmup_steps": warmup,
        "total_steps": total,
    }
    logged = [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in m]
    assert [m["step"] for m in logged] == list(range(10, total + 1, 10)) and warmup < 10  # all after the warmup
    lrs = [m["lr"] for m in logged]
    if DEFAULT_SCHEDULE[objective] == "wsd":  # constant until the last WSD_DECAY_FRACTION, then decaying
        decay_from = warmup + (1 - WSD_DECAY_FRACTION) * (total - warmup)
        assert any(m["step"] > decay_from for m in logged)  # the decay is logged too
        for m in logged:
            assert (m["lr"] == pytest.approx(DEFAULT_LR[objective])) == (m["step"] <= decay_from), m
    else:
        assert DEFAULT_SCHEDULE[objective] == "cosine"
        assert all(a > b for a, b in itertools.pairwise(lrs))  # decreasing from the first logged step
    explicit = resolve_defaults(TrainConfig(out=run, objective=objective, lr=1e-4, schedule="constant"))
    assert (explicit.lr, explicit.schedule) == (1e-4, "constant")  # the paper's settings, one flag away


def test_resume_keeps_the_runs_own_lr_schedule_and_warmup(tmp_path, blobs):
    """Flags left to their default take the run's recorded values on --resume: a run made with other settings (or
    by an older lscdistill with other defaults) continues as it started, also with more epochs."""
    args, _ = blobs
    run = tmp_path / "run"
    common = [*args, "-b", "32", "-q", "--hidden", "16", "--out", run]
    cli_ok("train", *common, "--epochs", "1", "--lr", "5e-4", "--schedule", "cosine")
    per_epoch = _steps_per_epoch(args, 32)
    warmup = round(WARMUP_FRACTION * per_epoch)
    assert round(WARMUP_FRACTION * 2 * per_epoch) != warmup  # a warmup re-resolved for 2 epochs would show
    before = json.loads((run / "config.json").read_text())
    assert (before["lr"], before["schedule"], before["warmup_steps"]) == (5e-4, "cosine", warmup)
    cli_ok("train", *common, "--epochs", "2", "--resume")  # refused if the defaults (3e-3, constant) were taken
    optimizer = json.loads((run / "model.json").read_text())["optimizer"]
    assert (optimizer["lr"], optimizer["schedule"], optimizer["warmup_steps"]) == (5e-4, "cosine", warmup)
    assert optimizer["total_steps"] == 2 * per_epoch  # the schedule now spans both epochs; the warmup did not stretch


def test_evaluate_and_predict_equal_a_brute_force_reference(tmp_path, blobs):
    args, (vx, vy) = blobs
    run = tmp_path / "run"
    cli_ok("train", *args, *FAST, "--n-dim", "8", "--out", run)
    model, centers, _ = load_run(run)
    x, y = torch.from_numpy(np.load(vx)), np.load(vy)
    with torch.inference_mode():
        z = model(x).double()
    table = centers.system.vectors(torch.arange(centers.system.size), dtype=torch.float64)[:6]  # the 6 centers
    cos = torch.nn.functional.normalize(z, dim=1) @ table.T
    expected = cos.argmax(dim=1).numpy()
    everything = torch.nn.functional.normalize(z, dim=1) @ centers.system.materialize(torch.float64).T
    nearest = everything.argmax(dim=1).numpy()  # over the whole system: the fast decoder's answer
    info = json.loads(cli_ok("evaluate", run, "--features", vx, "--labels", vy, "--json").stdout)
    assert info["samples"] == 200
    assert info["top1"] == pytest.approx((expected == y).mean())
    assert info["top5"] == pytest.approx((np.argsort(-cos.numpy(), axis=1)[:, :5] == y[:, None]).any(1).mean())
    assert info["new_class_flags"] == int((nearest >= 6).sum())
    assert info["top1_fast"] == pytest.approx((np.where(nearest < 6, nearest, -1) == y).mean())
    cli_ok("predict", run, "--features", vx, "--out", tmp_path / "p.npz")
    p = np.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(p["index"], np.arange(200))
    np.testing.assert_array_equal(p["label"], expected)
    np.testing.assert_allclose(p["score"], cos.max(dim=1).values.numpy(), atol=1e-5)
    np.testing.assert_array_equal(p["unassigned"], nearest >= 6)  # the old rule; new_class: tests/test_openset.py
    cli_ok("predict", run, "--features", vx, "--out", tmp_path / "p.csv")
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "index,label,score,fast_label,unassigned,open_score,new_class" and len(rows) == 201
    assert [int(r.split(",")[1]) for r in rows[1:]] == expected.tolist()


def test_cross_entropy_baseline_and_a_student_on_its_class_means(tmp_path, blobs):
    args, _ = blobs
    cli_ok("train", *args, *FAST, "--objective", "ce", "--out", tmp_path / "ce")
    ce = json.loads((tmp_path / "ce" / "model.json").read_text())
    assert ce["centers"] == {"type": "head"} and ce["final_metrics"]["top1"] >= 0.95
    # class means of the features themselves, as `extract --features` would make them
    x, y = np.load(args[1]), np.load(args[3])
    acc = MeanAccumulator(6, 16)
    acc.update(torch.from_numpy(y), torch.from_numpy(x))
    with StoreWriter(tmp_path / "means.h5", kind="means", n_classes=6, n_dim=16, provenance={}) as w:
        acc.write(w)
    cli_ok("train", *args, *FAST, "--centers", tmp_path / "means.h5", "--out", tmp_path / "stud")
    meta = json.loads((tmp_path / "stud" / "model.json").read_text())
    assert meta["model"]["n_dim"] == 16 and meta["centers"]["type"] == "store"
    assert meta["centers"]["kind"] == "means" and "system" not in meta["centers"]
    assert meta["final_metrics"]["top1"] >= 0.95 * ce["final_metrics"]["top1"]
    # an LSC student can start from the CE run: backbone copied, a fresh projection, the head dropped
    cli_ok("train", *args, *FAST, "--init-from", tmp_path / "ce", "--out", tmp_path / "from-ce")
    meta = json.loads((tmp_path / "from-ce" / "model.json").read_text())
    assert meta["model"]["project"] and meta["final_metrics"]["top1"] >= 0.95 * ce["final_metrics"]["top1"]
    # snap the means to A_16 and train toward the snapped centers: evaluate decodes them fast as well
    cli_ok("snap", tmp_path / "means.h5", "--system", "an", "--system-seed", "3", "--out", tmp_path / "snapped.h5")
    cli_ok("train", *args, *FAST, "--centers", tmp_path / "snapped.h5", "--out", tmp_path / "snapstud")
    meta = json.loads((tmp_path / "snapstud" / "model.json").read_text())
    assert meta["centers"]["kind"] == "snapped" and meta["centers"]["system"]["seed"] == 3
    info = json.loads(
        cli_ok("evaluate", tmp_path / "snapstud", "--features", args[5], "--labels", args[7], "--json").stdout
    )
    assert info["top1"] >= 0.95 * ce["final_metrics"]["top1"]
    model, centers, _ = load_run(tmp_path / "snapstud")
    with torch.inference_mode():
        z = torch.nn.functional.normalize(model(torch.from_numpy(np.load(args[5]))).double(), dim=1)
    owner = dict(zip(centers.store.dataset("system_index")[:].tolist(), range(6), strict=False))
    nearest = (z @ centers.system.materialize(torch.float64).T).argmax(dim=1).tolist()  # the whole system
    fast = np.array([owner.get(i, -1) for i in nearest])
    y = np.load(args[7])
    assert info["top1_fast"] == pytest.approx((fast == y).mean())
    assert info["new_class_flags"] == int((fast == -1).sum())


def test_resume_after_a_kill_ends_with_the_same_weights(tmp_path, blobs):
    """With mixup draws, the shuffled data order and an EMA of the weights all in play (the EMA is what is saved);
    killed mid-epoch at step 10 of 2 * 19. Only the killed run needs its own process; augmentation draws are
    covered by tests/test_data.py (batches do not depend on where a pass starts)."""
    args, _ = blobs
    flags = [*args, "--hidden", "16", "--mixup", "0.4", "--mixup-mode", "elem", "--ema-decay", "0.9", "--epochs", "2",
             "-b", "32", "--lr", "1e-3", "--checkpoint-every", "4", "-q"]  # fmt: skip
    cli_ok("train", *flags, "--out", tmp_path / "whole")
    crash = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "LSCDISTILL_CRASH_AT_STEP": "10"}
    cmd = [sys.executable, "-m", "lscdistill", "train", *map(str, flags), "--out", str(tmp_path / "cut")]
    killed = subprocess.run(cmd, env=crash, capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step_4", "step_8"]
    bad = cli_run("train", *flags, "--out", tmp_path / "cut", "--resume", "--lr", "5e-4")
    assert bad.exit_code == 1 and "lr: run has 0.001, now 0.0005" in bad.output, bad.output
    cli_ok("train", *flags, "--out", tmp_path / "cut", "--resume")
    whole = load_state_dict(tmp_path / "whole" / "model.safetensors")
    resumed = load_state_dict(tmp_path / "cut" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0, msg=k)


def test_continual_learning_adds_classes_and_reports_old_class_accuracy(tmp_path):
    tx, ty = _blobs(tmp_path, "train", 600, 6, seed=1)
    vx, vy = _blobs(tmp_path, "val", 200, 6, seed=2)
    for name, keep in (("old", lambda y: y < 4), ("all", lambda y: y < 6)):
        for x_path, y_path in ((tx, ty), (vx, vy)):
            x, y = np.load(x_path), np.load(y_path)
            np.save(tmp_path / f"{name}_{x_path.name}", x[keep(y)])
            np.save(tmp_path / f"{name}_{y_path.name}", y[keep(y)])

    def data(name):
        files = [tmp_path / f"{name}_{p.name}" for p in (tx, ty, vx, vy)]
        return ["--features", files[0], "--labels", files[1], "--val-features", files[2], "--val-labels", files[3]]

    cli_ok("train", *data("old"), *FAST, "--dim", "8", "--out", tmp_path / "r1")  # --dim: the old spelling of --n-dim
    assert json.loads((tmp_path / "r1" / "model.json").read_text())["model"]["n_dim"] == 8
    loud = [a for a in FAST if a != "-q"]  # the summary reports the old classes
    result = cli_ok("train", *data("all"), *loud, "--init-from", tmp_path / "r1", "--out", tmp_path / "r2")
    meta = json.loads((tmp_path / "r2" / "model.json").read_text())
    c = meta["continual"]
    assert c["old_classes"] == 4 and meta["n_classes"] == 6
    first = json.loads((tmp_path / "r1" / "model.json").read_text())["final_metrics"]["top1"]
    assert c["old_class_top1_before"] == pytest.approx(first, abs=1e-9)  # same weights, same first 4 centers
    assert c["old_class_top1_after"] >= 0.9 and meta["final_metrics"]["top1"] >= 0.9
    assert "old classes (< 4)" in result.output


# --------------------------------------------------------------------------------------------- bad input
def _store(path, n_classes, n_dim):
    acc = MeanAccumulator(n_classes, n_dim)
    acc.update(torch.arange(n_classes), torch.randn(n_classes, n_dim))
    with StoreWriter(path, kind="means", n_classes=n_classes, n_dim=n_dim, provenance={}) as w:
        acc.write(w)
    return path


def test_bad_input_one_clear_error(tmp_path, blobs):
    args, (vx, vy) = blobs
    _store(tmp_path / "d8.h5", 6, 8)
    _store(tmp_path / "c3.h5", 3, 16)
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "x").write_text("")
    cases = {
        "centers dim": ([*args, "--centers", tmp_path / "d8.h5", "--n-dim", 16], "has n_dim 8 but --n-dim is 16"),
        "labels beyond centers": ([*args, "--centers", tmp_path / "c3.h5"], "outside [0, 3) of the centers"),
        "system too small": (
            [*args, "--system", "anp", "--n-dim", 2],
            "has 3 vectors, fewer than 6 classes: use n_dim >= 3",
        ),
        "unknown model": (["--model", "no_such_net_v9", "--data", "digits"], "unknown timm model"),
        "missing init run": ([*args, "--init-from", tmp_path / "nope"], "does not exist"),
        "resume missing": ([*args, "--resume"], "does not exist"),
        "features with a timm model": ([*args, "--model", "test_resnet"], "train a small MLP"),
        "ce with centers": ([*args, "--objective", "ce", "--centers", tmp_path / "c3.h5"], "--centers is for"),
        "bad objective": ([*args, "--objective", "svm"], "--objective must be one of"),
        "model kwargs for the MLP": ([*args, "--model-kwargs", "patch_size=4"], "not the --features MLP"),
        "cutmix on features": ([*args, "--cutmix", "1.0"], "--cutmix cuts image patches"),
        "mixup mode": ([*args, "--mixup", "0.2", "--mixup-mode", "rows"], "--mixup-mode must be one of"),
        "ema decay": ([*args, "--ema-decay", "1.5"], "--ema-decay must be in [0, 1)"),
        "unknown tracker": ([*args, "--log-with", "notebook"], "not a tracker Accelerate knows"),
        "tracker not installed": ([*args, "--log-with", "aim"], "the aim package is not installed"),
        "aug policy": (["--model", "test_resnet", "--data", "digits", "--aug", "strong"], "--aug 'strong'"),
        "negative lr": ([*args, "--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
        "nan lr": ([*args, "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        "negative weight decay": ([*args, "--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
        "infinite radius": ([*args, "--radius", "inf"], "--radius must be a finite number >= 0, got inf"),
        "negative clip": ([*args, "--clip-grad", "-1"], "--clip-grad must be a finite number >= 0, got -1.0"),
        "fp8": ([*args, "--precision", "fp8"], "--precision must be one of no, fp16, bf16, got 'fp8'"),
        "crop scale": ([*args, "--scale", "0.5", "2"], "--scale must be two area fractions 0 < MIN <= MAX <= 1"),
        "model kwargs not KEY=VALUE": (
            ["--model", "test_vit", "--data", "digits", "--model-kwargs", "patch_size"],
            "expected KEY=VALUE",
        ),
        "model kwargs the model lacks": (
            ["--model", "test_resnet", "--data", "digits", "--model-kwargs", "patch_size=4"],
            "does not take the keyword arguments {'patch_size': 4}",
        ),
    }
    for name, (case, expected) in cases.items():
        result = cli_run("train", *FAST, *case, "--out", tmp_path / "out")  # the case's flags win
        assert result.exit_code == 1, (name, result.output)
        assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1, result.output
        assert expected in result.output, (name, result.output)
        assert not (tmp_path / "out").exists(), name  # nothing half-made
    result = cli_run("train", *args, *FAST, "--out", tmp_path / "existing")
    assert result.exit_code == 1 and "--overwrite" in result.output
    for cmd in (["evaluate", tmp_path / "nope", "--features", vx, "--labels", vy],
                ["predict", tmp_path / "nope", "--features", vx, "--out", tmp_path / "p.csv"]):  # fmt: skip
        result = cli_run(*cmd)
        assert result.exit_code == 1 and "does not exist" in result.output
    assert not (tmp_path / "p.csv").exists()


def test_instance_labels_make_every_sample_a_class_and_evaluate_counts_them(tmp_path, blobs):
    x = np.load(blobs[0][1])[:40]
    np.save(tmp_path / "x40.npy", x)
    np.save(tmp_path / "y40.npy", np.zeros(40, dtype=np.int64))  # ignored: each row becomes its own class
    feats = ["--features", tmp_path / "x40.npy", "--labels", tmp_path / "y40.npy"]
    cli_ok("train", *feats, "--instance-labels", "--n-dim", "9", "--lr", "3e-3", "--epochs", "30", "-b", "8", "-q",
        "--out", tmp_path / "inst")  # fmt: skip
    meta = json.loads((tmp_path / "inst" / "model.json").read_text())
    assert meta["n_classes"] == 40
    info = json.loads(cli_ok("evaluate", tmp_path / "inst", *feats, "--instance-labels", "--json").stdout)
    model, centers, _ = load_run(tmp_path / "inst")
    with torch.inference_mode():
        z = torch.nn.functional.normalize(model(torch.from_numpy(x)).double(), dim=1)
    table = centers.system.vectors(torch.arange(40), dtype=torch.float64)
    expected = (z @ table.T).argmax(dim=1).numpy()
    assert info["samples"] == 40 and info["n_classes"] == 40
    assert info["top1"] == pytest.approx((expected == np.arange(40)).mean()) and info["top1"] >= 0.9


def test_model_kwargs_reach_timm_and_the_saved_run_rebuilds_with_them(tmp_path):
    """``--model-kwargs patch_size=8``: a test_vit with a 4x4 token grid at 32 px (timm's default is 16 px patches),
    recorded in model.json so evaluate/extract rebuild the same architecture."""
    run = tmp_path / "vit"
    cli_ok("train", "-m", "test_vit", "--model-kwargs", "patch_size=8", "--model-kwargs", "drop_path_rate=0.0",
        "--data", "digits:val", "--epochs", "1", "-b", "64", "-q", "--out", run)  # fmt: skip
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"]["kwargs"] == {"patch_size": 8, "drop_path_rate": 0.0}
    assert json.loads((run / "config.json").read_text())["model_kwargs"] == ["patch_size=8", "drop_path_rate=0.0"]
    model, _ = load_run_model(run)
    assert model.backbone.patch_embed.patch_size == (8, 8)
    assert model.backbone.patch_embed.proj.weight.shape[-2:] == (8, 8)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, model.n_dim)
    resumed = cli_run("train", "-m", "test_vit", "--model-kwargs", "patch_size=4", "--data", "digits:val",
                   "--epochs", "1", "-b", "64", "-q", "--out", run, "--resume")  # fmt: skip
    assert resumed.exit_code == 1 and "model_kwargs: run has ['patch_size=8', 'drop_path_rate=0.0']" in resumed.output


def test_tensorboard_event_file_holds_the_loss_and_val_top1(tmp_path, blobs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args, _ = blobs
    run = tmp_path / "tb"
    cli_ok("train", *args, *FAST, "--log-every", "5", "--log-with", "tensorboard", "--out", run)
    events = list((run / "logs").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in run.rglob("*"))
    scalars = {}
    for path in events:
        acc = EventAccumulator(str(path.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    vals = [(r["step"], r["val_top1"]) for r in logged if "val_top1" in r]
    assert len(losses) >= 2 and len(vals) == 4
    for tag, expected in (("loss", losses), ("val_top1", vals)):
        got = scalars[tag]
        assert [s for s, _ in got] == [s for s, _ in expected]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], rtol=1e-6)


def test_commands_with_other_precisions_and_devices_run_in_one_process(tmp_path, blobs):
    """Accelerate's process-wide state must not make a second run with another precision or --cpu fail."""
    args, (vx, vy) = blobs
    for name, extra in (("a", []), ("b", ["--precision", "bf16"]), ("c", ["--cpu"])):
        cli_ok("train", *args, *FAST, *extra, "--out", tmp_path / name)
        cli_ok("evaluate", tmp_path / name, "--features", vx, "--labels", vy, "--cpu")


def test_a_compiled_model_saves_plain_names_and_loads(tmp_path, blobs):
    """--compile (torch.compile through Accelerate): model.safetensors has the model's own names (no
    ``_orig_mod.``), and the run loads and evaluates to what training validated; --clip-grad and
    --channels-last are accepted on the way."""
    args, (vx, vy) = blobs
    run = tmp_path / "compiled"
    cli_ok("train", *args, *FAST, "--compile", "--clip-grad", "0.5", "--channels-last", "--out", run)
    names = list(load_state_dict(run / "model.safetensors"))
    from safetensors.torch import load_file

    raw = list(load_file(run / "model.safetensors"))
    assert raw == names and not any("_orig_mod" in k for k in raw)
    meta = json.loads((run / "model.json").read_text())
    result = json.loads(cli_ok("evaluate", run, "--features", vx, "--labels", vy, "--json").stdout)
    assert result["top1"] == meta["final_metrics"]["top1"] > 0.5


def test_exact_decoding_scores_in_full_precision_and_restores_the_setting():
    from lscdistill.decode import exact_nearest

    seen = []

    def rows(start, stop):
        seen.append(torch.get_float32_matmul_precision())
        return torch.eye(4)[start:stop]

    torch.set_float32_matmul_precision("medium")  # what a user enabling TF32 / bf16 matmuls sets
    try:
        idx, _ = exact_nearest(torch.tensor([[0.1, 0.9, 0.0, 0.0]]), rows, n_rows=4, chunk_size=2)
        assert seen == ["highest", "highest"] and idx.tolist() == [1]
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")


@pytest.mark.parametrize(
    ("objective", "loss", "given", "expected"),
    [
        ("lsc", "cos", None, 0.0),
        ("lsc", "dist", None, 1.0),  # distance losses: clipped by default (unstable without, docs/paper.md §5.1)
        ("lsc", "cos+dist", None, 1.0),
        ("ce", "dist", None, 0.0),  # cross-entropy has no distance loss
        ("lsc", "dist", 0.0, 0.0),  # 0 turns the default off
        ("lsc", "cos", 0.5, 0.5),
    ],
)
def test_clip_grad_default_by_loss(tmp_path, objective, loss, given, expected):
    cfg = TrainConfig(out=tmp_path / "r", data="digits", objective=objective, loss=loss, clip_grad=given)
    assert resolve_defaults(cfg).clip_grad == expected


def test_resume_of_a_run_from_before_the_clip_default_keeps_training_unclipped(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"lr": 1e-3, "schedule": "cosine", "warmup_steps": 3, "clip_grad": None})
    )
    cfg = inherit_defaults(TrainConfig(out=run, data="digits", loss="dist"))
    assert resolve_defaults(cfg).clip_grad == 0.0


def test_a_run_written_by_an_older_version_still_loads_and_resumes(tmp_path, blobs):
    """Runs from before the embedding size was called n_dim everywhere ("dim" in config.json and model.json), before
    --clip-grad had a default by loss (null in config.json) and before config.json kept the system's options."""
    args, _ = blobs
    run = tmp_path / "old"
    cli_ok("train", *args, *FAST, "--n-dim", "8", "--epochs", "1", "--loss", "dist", "--out", run)
    for name in ("config.json", "model.json"):
        meta = json.loads((run / name).read_text())
        where = meta["model"] if name == "model.json" else meta
        where["dim"] = where.pop("n_dim")
        if name == "config.json":
            assert meta["clip_grad"] == 1.0 and meta.pop("system_options") == {}
            meta["clip_grad"] = None
        (run / name).write_text(json.dumps(meta))
    model, meta = load_run_model(run)
    assert model.n_dim == 8
    cli_ok("train", *args, *FAST, "--n-dim", "8", "--epochs", "2", "--loss", "dist", "--resume", "--out", run)
    assert json.loads((run / "model.json").read_text())["model"]["n_dim"] == 8  # the resumed run saved anew


def test_a_planar_run_keeps_its_halving_on_resume(tmp_path, blobs):
    """config.json records the generated system's options whose default changed (planar's halving); a run that
    does not record them was made with the old default (per-level halving) and resumes with it."""
    args, _ = blobs
    planar = ["--system", "planar", "--interpolations", "1", "--system-seed", "-1", "--n-dim", "2", "--loss", "dist"]
    run = tmp_path / "planar"
    cli_ok("train", *args, *FAST, *planar, "--epochs", "1", "--out", run)
    config = json.loads((run / "config.json").read_text())
    assert config["system_options"] == {"halving": "all"}
    assert json.loads((run / "model.json").read_text())["centers"]["options"] == {"halving": "all"}
    del config["system_options"]  # as an older version wrote it
    (run / "config.json").write_text(json.dumps(config))
    cli_ok("train", *args, *FAST, *planar, "--epochs", "2", "--resume", "--out", run)
    assert json.loads((run / "model.json").read_text())["centers"]["options"] == {"halving": "level"}
