"""Multi-process paths under ``torchrun --nproc_per_node 2`` (CPU, gloo) give the one-process result."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_runner import cli_ok
from safetensors.numpy import load_file

from lscdistill.batchnorm import batchnorm_layers
from lscdistill.models import build_student
from lscdistill.stores import open_store

pytestmark = pytest.mark.distributed
#: every process on the CPU (gloo), also on a GPU host: two ranks on a one-GPU machine would ask for cuda:1
CPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(*args, nproc: int = 2, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    env = {**os.environ, **CPU_ENV}
    result = subprocess.run(
        [*cmd, "-m", "lscdistill", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _accelerate_launch(*args, nproc: int = 2, cwd) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu`` starts its processes through torch.distributed.run, on CPU too (with
    ``--cpu`` it would start one process); port 0 picks a free port, HF_HOME hides a user's accelerate config."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc)]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HOME": str(cwd / "hf"),
    }
    result = subprocess.run(
        [*cmd, "-m", "lscdistill", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _single(*args, cwd, monkeypatch) -> str:
    """The one-process reference, run in this process (in ``cwd``, as the torchrun command is): its stdout."""
    monkeypatch.chdir(cwd)
    return cli_ok(*args).stdout


def _assert_same_store(a_path, b_path) -> None:
    with open_store(a_path) as a, open_store(b_path) as b:
        np.testing.assert_array_equal(a.counts, b.counts)
        ca, cb = a.dataset("centers")[:].astype(np.float64), b.dataset("centers")[:].astype(np.float64)
        scale = np.abs(cb).max(axis=1, keepdims=True) + 1e-30  # relative to each class mean's magnitude
        assert (np.abs(ca - cb) / scale).max() <= 1e-6
        assert b.provenance["world_size"] == 2 and a.provenance["world_size"] == 1


def test_torchrun_extract_features_equals_one_process(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(1001, 16)) * 4 - 1).astype(np.float32)  # 1001 = 2 * 500 + 1: ranks get 501 and 500
    y = rng.integers(0, 37, size=1001)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    common = ["extract", "--features", "x.npy", "--labels", "y.npy", "-b", 64, "-q"]
    _single(*common, "--out", "one.h5", cwd=tmp_path, monkeypatch=monkeypatch)
    _torchrun(*common, "--out", "two.h5", cwd=tmp_path)
    _assert_same_store(tmp_path / "one.h5", tmp_path / "two.h5")
    with open_store(tmp_path / "two.h5") as s:
        assert int(s.counts.sum()) == 1001  # nothing dropped, nothing repeated


def test_torchrun_extract_digits_teacher_equals_one_process(tmp_path, monkeypatch):
    common = ["extract", "--data", "digits", "--teacher", "test_resnet", "--limit-per-class", 7, "-b", 16, "-q"]
    _single(*common, "--out", "one.h5", cwd=tmp_path, monkeypatch=monkeypatch)  # 70 samples: 35 per rank, batches
    # of 16 do not divide
    _torchrun(*common, "--out", "two.h5", cwd=tmp_path)
    _assert_same_store(tmp_path / "one.h5", tmp_path / "two.h5")
    with open_store(tmp_path / "two.h5") as s:
        np.testing.assert_array_equal(s.counts, np.full(10, 7))


def _blobs(folder, seed: int, n_train: int, n_val: int, n_unseen: int = 0) -> tuple[list[str], list[str]]:
    """5 Gaussian classes in 12 dims as train/val feature files in ``folder`` (and ``unseen_x.npy``: 3 other
    classes); the train and val flags."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(8, 12)) * 2
    for name, n, classes in (("train", n_train, 5), ("val", n_val, 5), ("unseen", n_unseen, range(5, 8))):
        y = rng.choice(classes, size=n)
        np.save(folder / f"{name}_x.npy", (means[y] + 0.5 * rng.normal(size=(n, 12))).astype(np.float32))
        np.save(folder / f"{name}_y.npy", y)
    train = ["--features", "train_x.npy", "--labels", "train_y.npy"]
    return train, ["--val-features", "val_x.npy", "--val-labels", "val_y.npy"]


def test_torchrun_and_accelerate_launch_train_alike_and_evaluate_counts_every_sample_once(tmp_path, monkeypatch):
    """Training under torchrun and under ``accelerate launch`` gives bit-identical runs; evaluate under torchrun
    counts every sample once, the open-set report too (every known and unseen score gathered once)."""
    n_train, epochs, batch = 601, 3, 32
    data, val = _blobs(tmp_path, 4, n_train, 201, n_unseen=151)  # odd sizes: ranks get unequal shares
    args = ["train", *data, *val, "--epochs", epochs, "--lr", "3e-3", "-b", batch, "--n-dim", 8, "--cpu", "-q"]
    _torchrun(*args, "--out", "run", cwd=tmp_path)
    _accelerate_launch(*args, "--out", "accelerate", cwd=tmp_path)
    meta = {k: json.loads((tmp_path / k / "model.json").read_text()) for k in ("run", "accelerate")}
    steps = epochs * -(-(n_train // 2) // batch)  # each rank takes 300 samples, the last batch partial
    assert meta["accelerate"]["steps"] == meta["run"]["steps"] == steps
    assert meta["accelerate"]["final_metrics"] == meta["run"]["final_metrics"]
    assert meta["run"]["final_metrics"]["samples"] == 201 and meta["run"]["final_metrics"]["top1"] >= 0.9
    torchrun, accelerate = (load_file(tmp_path / k / "model.safetensors") for k in ("run", "accelerate"))
    assert torchrun.keys() == accelerate.keys()
    for key in torchrun:
        np.testing.assert_array_equal(accelerate[key], torchrun[key], err_msg=key)  # bit-identical weights

    args = ["evaluate", "run", "--features", "val_x.npy", "--labels", "val_y.npy", "--unseen-features", "unseen_x.npy"]
    two = json.loads(_torchrun(*args, "--json", cwd=tmp_path).stdout)
    one = json.loads(_single(*args, "--json", cwd=tmp_path, monkeypatch=monkeypatch))
    assert two["samples"] == one["samples"] == 201
    for key in ("top1", "top5", "top1_fast", "fast_exact_agreement", "new_class_flags"):
        assert two[key] == one[key], key
    one, two = one["open_set"], two["open_set"]
    assert (two["known_samples"], two["unseen_samples"]) == (201, 151)  # 101 + 100 and 76 + 75, none twice
    assert two["calibration"]["source"] == "train"  # the torchrun training calibrated on its validation split
    for name, metrics in one["scores"].items():
        for key, value in metrics.items():
            assert two["scores"][name][key] == pytest.approx(value, abs=1e-6), (name, key)
    assert two["calibrated"] == pytest.approx(one["calibrated"])


_BN_SCRIPT = """
import os, sys
import numpy as np, torch
from lscdistill.batchnorm import recompute_batchnorm
from lscdistill.data import Preprocess, load_images
from lscdistill.models import build_student
from lscdistill.train import TrainConfig
from lscdistill.train.bnstats import _bn_indices

world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
if world > 1:
    torch.distributed.init_process_group("gloo")
torch.manual_seed(0)
model = build_student({"architecture": "test_resnet", "n_dim": 8, "project": True})
data = load_images("digits:val", Preprocess(32, (0.5,) * 3, (0.5,) * 3))
idx, bs, total = _bn_indices(len(data), TrainConfig(out="x", batch_size=16, bn_batches=6, seed=1), 5, rank, world)
n = recompute_batchnorm(model, (x for x, _, _ in data.batches(idx, bs)), world=world)
assert n == total // world, (n, total)
state = {k: v for k, v in model.state_dict().items() if "running" in k}
torch.save(state, sys.argv[1] + f"-{world}-{rank}.pt")
if world > 1:  # as lscdistill's CLI ends: gloo's threads can abort the interpreter's exit after all work is done
    torch.distributed.destroy_process_group()
    os._exit(0)
"""


def test_torchrun_batchnorm_statistics_are_the_same_on_every_rank_and_as_one_process(tmp_path, monkeypatch):
    """Each rank forwards every other batch of the one list; the averaged statistics are bitwise the same on both
    ranks and equal, up to float rounding, to one process forwarding the whole list (this one)."""
    script = tmp_path / "bn.py"
    script.write_text(_BN_SCRIPT)
    env = {**os.environ, **CPU_ENV}
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "bn")])
    rng = torch.random.get_rng_state()
    runpy.run_path(str(script), run_name="__main__")
    torch.random.set_rng_state(rng)  # the script seeds the global generator
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run([*cmd, script, tmp_path / "bn"], check=True, env=env, timeout=180, capture_output=True)
    one, r0, r1 = (torch.load(tmp_path / f"bn-{w}-{r}.pt") for w, r in ((1, 0), (2, 0), (2, 1)))
    n_layers = len(batchnorm_layers(build_student({"architecture": "test_resnet", "n_dim": 8, "project": True})))
    assert one.keys() == r0.keys() == r1.keys() and len(one) == 2 * n_layers > 0
    for k in one:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(r0[k], one[k], rtol=1e-5, atol=1e-6, msg=k)


def test_torchrun_batchnorm_training_validates_the_saved_model(tmp_path, monkeypatch):
    """Two processes recompute the statistics together: the validation they report (each rank scoring its share of
    the samples with its own copy) equals one process evaluating the saved model."""
    args = ["--model", "test_resnet", "--data", "digits:val", "--val-data", "digits:val", "--bn-batches", 4]
    _torchrun("train", *args, "--epochs", 1, "-b", 32, "--lr", "1e-3", "-q", "--out", "run", cwd=tmp_path)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["batchnorm"]["recomputed"] and meta["batchnorm"]["batches"] == 4
    one = json.loads(
        _single("evaluate", "run", "--data", "digits:val", "--json", cwd=tmp_path, monkeypatch=monkeypatch)
    )
    for key in ("samples", "top1", "top1_fast", "new_class_flags"):
        assert meta["final_metrics"][key] == one[key], key
