"""CUDA smoke checks: a machine with a GPU runs them in a few minutes (``pytest -m cuda``); CI (CPU) deselects them.

Each check compares the CUDA path with the CPU one: decoders, store gathers, losses under bf16 autocast, the CLI's
extract / train / evaluate / predict on digits, resume, ``--compile`` and the benchmarks' CUDA paths.
``LSCDISTILL_TEST_DEVICE=cpu pytest -m cuda`` runs the same checks with the "device" on the CPU (to check the checks).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_runner import cli_ok
from conftest import SMALL_SYSTEMS, system_id
from rich.console import Console
from typer.testing import CliRunner

from lscdistill.losses import create_loss
from lscdistill.models import load_state_dict
from lscdistill.stores import StoreWriter, open_store
from lscdistill.systems import create_system

DEVICE = torch.device(os.environ.get("LSCDISTILL_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]
runner = CliRunner()


@pytest.mark.parametrize("spec", SMALL_SYSTEMS, ids=system_id)
def test_fast_decoder_on_the_device_equals_the_cpu_where_the_answer_is_clear(spec):
    """Labels equal wherever the best cosine beats the second by more than 1e-6 (float64 brute force)."""
    name, kwargs = spec
    system = create_system(name, 8, **kwargs)
    z = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
    cpu_idx, cpu_cos = system.nearest(z)
    dev_idx, dev_cos = system.nearest(z.to(DEVICE))
    table = system.vectors(torch.arange(len(system)), dtype=torch.float64)
    scores = torch.nn.functional.normalize(z.double(), dim=1) @ torch.nn.functional.normalize(table, dim=1).T
    top2 = scores.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-6
    assert clear.float().mean() > 0.5
    assert torch.equal(dev_idx.cpu()[clear], cpu_idx[clear])
    torch.testing.assert_close(dev_cos.cpu(), cpu_cos, rtol=1e-5, atol=1e-5)


def test_store_gather_lands_on_the_labels_device(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(1000, 16)).astype(np.float32)
    with StoreWriter(tmp_path / "m.h5", kind="means", n_classes=1000, n_dim=16, provenance={"test": "cuda"}) as w:
        w.write_rows(0, counts=np.ones(1000, dtype=np.int64), centers=centers)
    labels = torch.tensor([5, 999, 5, 0])
    with open_store(tmp_path / "m.h5") as store:
        got = store.gather(labels.to(DEVICE))
    assert got.device.type == DEVICE.type
    np.testing.assert_array_equal(got.cpu().numpy(), centers[labels.numpy()])


@pytest.mark.parametrize("loss", ["cos", "dist", "cos+dist"])
def test_losses_under_bf16_autocast_follow_float32(loss):
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 16).to(DEVICE)
    x, c = torch.randn(64, 32, device=DEVICE), torch.nn.functional.normalize(torch.randn(64, 16, device=DEVICE))
    fn = create_loss(loss, radius=0.5)
    full = fn(layer(x).float() * 0.1, c)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        z = layer(x)
    low = fn(z.float() * 0.1, c)
    assert torch.isfinite(low)
    torch.testing.assert_close(low, full, rtol=0.05, atol=0.02)


def test_cli_on_the_device_matches_cpu_runs(tmp_path):
    """train / evaluate / predict / extract on digits, on the device and with --cpu: the same data, steps and
    accuracy within a few points (kernels differ), predictions mostly equal."""
    common = ["--model", "test_resnet", "--data", "digits:train", "--val-data", "digits:val", "--epochs", 2, "-q"]
    runs = {}
    for where, flag in (("device", []), ("cpu", ["--cpu"])):
        run = tmp_path / where
        cli_ok("train", *common, *flag, "--out", run)
        runs[where] = json.loads((run / "model.json").read_text())
        cli_ok("predict", run, "--data", "digits:val", *flag, "--out", tmp_path / f"{where}.npz")
        cli_ok("extract", "--checkpoint", run, "--data", "digits:train", *flag, "--out", tmp_path / f"{where}.h5", "-q")
    assert runs["device"]["steps"] == runs["cpu"]["steps"]
    assert abs(runs["device"]["final_metrics"]["top1"] - runs["cpu"]["final_metrics"]["top1"]) < 0.05
    device, cpu = (np.load(tmp_path / f"{w}.npz") for w in ("device", "cpu"))
    assert (device["label"] == cpu["label"]).mean() > 0.9
    evaluated = json.loads(cli_ok("evaluate", tmp_path / "device", "--data", "digits:val", "--json").stdout)
    assert evaluated["top1"] == pytest.approx(runs["device"]["final_metrics"]["top1"], abs=1e-9)


def test_resume_and_compile_on_the_device(tmp_path):
    cmd = [sys.executable, "-m", "lscdistill", "train", "--model", "test_resnet", "--data", "digits:val",
           "--epochs", "2", "-b", "48", "--checkpoint-every", "4", "--compile", "-q"]  # fmt: skip
    env = dict(os.environ)
    if DEVICE.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, env=env)
    killed = subprocess.run([*cmd, "--out", str(tmp_path / "cut")], env={**env, "LSCDISTILL_CRASH_AT_STEP": "10"})
    assert killed.returncode == 137
    subprocess.run([*cmd, "--out", str(tmp_path / "cut"), "--resume"], check=True, env=env)
    whole, resumed = (load_state_dict(tmp_path / w / "model.safetensors") for w in ("whole", "cut"))
    assert whole.keys() == resumed.keys() and not any("_orig_mod" in k for k in whole)
    tol = {"rtol": 1e-3, "atol": 1e-4} if DEVICE.type == "cuda" else {"rtol": 0, "atol": 0}  # GPU: not bitwise
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], **tol, msg=k)


def test_benchmarks_run_their_device_paths(tmp_path):
    from benchmarks.runner import run_suite

    tiny = {
        "predict": {"classes": (500, 1056), "n_dim": 32, "batch": 64, "repeats": 2, "slow_repeats": 2},
        "inference": {"classes": (1056,), "sweep": (10,), "batch": 64, "in_dim": 16, "hidden": 32, "n_dim": 32},
        "train": {"classes": (10, 1000), "lsc_extra": (), "steps": 3, "batch": 8, "img_size": 32},
    }
    payload = run_suite(
        ("predict", "inference", "train"),
        quick=True,
        device=DEVICE.type,
        overrides=tiny,
        out_dir=tmp_path,
        plot=False,
        console=Console(file=io.StringIO(), width=200),
    )
    for name in ("predict", "inference", "train"):
        rows = payload["benchmarks"][name]["rows"]
        assert rows and not [r for r in rows if r.get("time_s") is None and "error" in str(r.get("note", ""))]
