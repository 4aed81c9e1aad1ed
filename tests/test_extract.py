"""``lscdistill extract``: means equal a naive group-by; shards merge exactly; bad input gives one clean error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import cli_ok, cli_run
from typer.testing import CliRunner

from lscdistill.data import DIGITS_IMG_SIZE
from lscdistill.models import create_teacher, embed
from lscdistill.stores import open_store

runner = CliRunner()


def _groupby_mean(x: np.ndarray, y: np.ndarray, n_classes: int, normalize: bool = False):
    """Naive float64 reference: a Python loop over samples."""
    sums = np.zeros((n_classes, x.shape[1]))
    counts = np.zeros(n_classes, dtype=np.int64)
    for row, label in zip(x.astype(np.float64), y, strict=True):
        sums[label] += row / np.linalg.norm(row) if normalize else row
        counts[label] += 1
    means = np.divide(sums, np.maximum(counts, 1)[:, None])
    return means, counts


@pytest.fixture
def features(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(997, 12)) * 5 + 2).astype(np.float32)  # 997: no batch size divides it
    y = rng.integers(0, 30, size=997)
    y[y == 7] = 8  # an empty class
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy", x, y


def _no_leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# --------------------------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("normalize", [False, True])
def test_features_means_equal_naive_groupby(tmp_path, features, normalize):
    xp, yp, x, y = features
    out = tmp_path / "m.h5"
    flag = "--normalize" if normalize else "--raw"
    cli_ok("extract", "--features", xp, "--labels", yp, "--out", out, "-b", 64, flag, "-q", "--n-classes", 31)
    means, counts = _groupby_mean(x, y, 31, normalize)
    with open_store(out) as s:
        assert (s.kind, s.n_classes, s.n_dim) == ("means", 31, 12)
        np.testing.assert_array_equal(s.counts, counts)
        assert s.counts[7] == 0 and s.counts[30] == 0
        np.testing.assert_allclose(s.dataset("centers")[:], means, rtol=1e-6, atol=1e-6)
        assert s.summary()["empty_classes"] == 2
        assert s.provenance["normalize_embeddings"] is normalize


def test_limit_per_class_takes_the_first_samples_of_each_class(tmp_path, features):
    xp, yp, x, y = features
    out = tmp_path / "m.h5"
    cli_ok("extract", "--features", xp, "--labels", yp, "--out", out, "--limit-per-class", 3, "-q")
    keep = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        keep[np.flatnonzero(y == c)[:3]] = True
    means, counts = _groupby_mean(x[keep], y[keep], int(y.max()) + 1)
    with open_store(out) as s:
        np.testing.assert_array_equal(s.counts, counts)
        assert s.counts.max() == 3
        np.testing.assert_allclose(s.dataset("centers")[:], means, rtol=1e-6, atol=1e-6)


def test_features_from_hdf5_dataset(tmp_path, features):
    import h5py

    _, yp, x, y = features
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["emb"] = x
        f["other"] = np.zeros((3, 3))
    cli_ok("extract", "--features", f"{tmp_path / 'f.h5'}:emb", "--labels", yp, "--out", tmp_path / "m.h5", "-q")
    means, _ = _groupby_mean(x, y, int(y.max()) + 1)
    with open_store(tmp_path / "m.h5") as s:
        np.testing.assert_allclose(s.dataset("centers")[:], means, rtol=1e-6, atol=1e-6)
    result = cli_run("extract", "--features", tmp_path / "f.h5", "--labels", yp, "--out", tmp_path / "m2.h5")
    assert result.exit_code == 1 and "choose one" in result.output


@pytest.mark.parametrize("n_shards", [2, 3])
def test_shards_merge_to_the_whole(tmp_path, features, n_shards):
    xp, yp, _x, _y = features
    whole = tmp_path / "whole.h5"
    cli_ok("extract", "--features", xp, "--labels", yp, "--out", whole, "--keep-sums", "-q")
    parts = []
    for i in range(n_shards):
        part = tmp_path / f"part{i}.h5"
        cli_ok("extract", "--features", xp, "--labels", yp, "--out", part, "--partial", "--shard", f"{i}/{n_shards}")
        parts.append(part)
    cli_ok("merge", tmp_path / "merged.h5", *parts)
    with open_store(whole) as a, open_store(tmp_path / "merged.h5") as b:
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.dataset("sums")[:], b.dataset("sums")[:])  # exact: float64 sums of floats
        np.testing.assert_allclose(a.dataset("centers")[:], b.dataset("centers")[:], rtol=1e-6, atol=1e-7)


def _seeded_teacher(name: str = "test_resnet", seed: int = 0):
    torch.manual_seed(seed)
    return create_teacher(name)


def _digits_inputs(idx: np.ndarray) -> torch.Tensor:
    """Digits preprocessing written out once more: [0,1] images, bilinear to 32 px, 3 channels, timm mean/std."""
    from sklearn.datasets import load_digits

    from lscdistill.data import resolve_preprocess

    p = resolve_preprocess(_seeded_teacher(), "digits")
    images = torch.from_numpy(load_digits().images[idx]).float() / 16
    x = torch.nn.functional.interpolate(images[:, None], size=(DIGITS_IMG_SIZE,) * 2, mode="bilinear")
    x = x.repeat(1, 3, 1, 1)
    return (x - torch.tensor(p.mean)[:, None, None]) / torch.tensor(p.std)[:, None, None]


def test_digits_through_test_resnet_equal_a_per_image_loop(tmp_path):
    from sklearn.datasets import load_digits

    out = tmp_path / "digits.h5"
    cli_ok("extract", "--data", "digits", "--teacher", "test_resnet", "--out", out, "--limit-per-class", 4, "-b", 7)
    y = load_digits().target
    idx = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(10)])
    model = _seeded_teacher()
    with torch.inference_mode():
        z = np.stack([embed(model, _digits_inputs(np.array([i])))[0].numpy() for i in idx])  # one image at a time
    means, counts = _groupby_mean(z, y[idx], 10)
    with open_store(out) as s:
        np.testing.assert_array_equal(s.counts, counts)
        assert s.n_dim == model.num_features
        np.testing.assert_allclose(s.dataset("centers")[:], means, rtol=1e-4, atol=1e-5)
        assert s.class_names == [str(c) for c in range(10)]
        assert s.provenance["teacher"] == "test_resnet"
        assert s.provenance["dataset"]["preprocess"]["img_size"] == DIGITS_IMG_SIZE


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_with_a_classifier_head_loads_and_is_used(tmp_path, suffix):
    import timm

    torch.manual_seed(5)
    trained = timm.create_model("test_resnet", num_classes=10).eval()  # a "CE teacher" with its head
    state = trained.state_dict()
    ckpt = tmp_path / f"teacher{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(ckpt))
    else:
        torch.save({"state_dict": state}, ckpt)
    out = tmp_path / "m.h5"
    args = ["--data", "digits", "--teacher", "test_resnet", "--checkpoint", ckpt, "--limit-per-class", 2, "-q"]
    cli_ok("extract", *args, "--out", out)
    from sklearn.datasets import load_digits

    y = load_digits().target
    idx = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)])
    with torch.inference_mode():
        z = trained.forward_head(trained.forward_features(_digits_inputs(idx)), pre_logits=True).numpy()
    means, _ = _groupby_mean(z, y[idx], 10)
    with open_store(out) as s:
        np.testing.assert_allclose(s.dataset("centers")[:], means, rtol=1e-4, atol=1e-5)
        assert len(s.provenance["checkpoint_sha256"]) == 64


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for name in ("cat", "dog", "emu"):
        (root / name).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / name / f"{k}.png")
    out = tmp_path / "m.h5"
    cli_ok("extract", "--data", root, "--teacher", "test_resnet", "--img-size", 32, "--out", out, "-q")
    with open_store(out) as s:
        assert s.class_names == ["cat", "dog", "emu"]
        np.testing.assert_array_equal(s.counts, [3, 3, 3])
        assert s.provenance["dataset"]["name"] == "imagefolder"
        assert np.isfinite(s.dataset("centers")[:]).all()


# --------------------------------------------------------------------------------------------- bad input
def _bad_inputs(tmp_path, features):
    xp, yp, x, y = features
    nan_x = x.copy()
    nan_x[500, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan_x)
    inf_x = x.copy()
    inf_x[17, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf_x)
    np.save(tmp_path / "short.npy", y[:-1])
    np.save(tmp_path / "neg.npy", np.where(y == 3, -1, y))
    np.save(tmp_path / "frac.npy", y + 0.5)
    np.save(tmp_path / "strs.npy", y.astype(str))
    torch.manual_seed(0)
    import timm

    torch.save(timm.create_model("test_vit", num_classes=0).state_dict(), tmp_path / "vit.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "empty_folder").mkdir()
    bad_img = tmp_path / "bad_imgs" / "a"
    bad_img.mkdir(parents=True)
    (bad_img / "x.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "existing.h5").write_bytes(b"keep me")
    feats = ["--features", xp, "--labels", yp]
    digits = ["--data", "digits", "--teacher", "test_resnet", "--limit-per-class", 1]
    return {
        "missing checkpoint": ([*digits, "--checkpoint", tmp_path / "nope.pth"], "does not exist"),
        "other architecture": ([*digits, "--checkpoint", tmp_path / "vit.pth"], "does not fit the timm model"),
        "unreadable checkpoint": ([*digits, "--checkpoint", tmp_path / "garbage.pth"], "cannot read checkpoint"),
        "unknown model": (["--data", "digits", "--teacher", "no_such_net_v9"], "unknown timm model"),
        "empty image folder": (
            ["--data", tmp_path / "empty_folder", "--teacher", "test_resnet"],
            "not a usable image folder",
        ),
        "missing image folder": (["--data", tmp_path / "nowhere", "--teacher", "test_resnet"], "does not exist"),
        "unreadable image": (["--data", tmp_path / "bad_imgs", "--teacher", "test_resnet"], "cannot read image"),
        "length mismatch": (["--features", xp, "--labels", tmp_path / "short.npy"], "996 labels"),
        "negative labels": (["--features", xp, "--labels", tmp_path / "neg.npy"], "must be >= 0"),
        "non-integer labels": (["--features", xp, "--labels", tmp_path / "frac.npy"], "must be integers"),
        "string labels": (["--features", xp, "--labels", tmp_path / "strs.npy"], "must be integers"),
        "NaN embeddings": (["--features", tmp_path / "nan.npy", "--labels", yp], "non-finite embeddings"),
        "Inf embeddings": (["--features", tmp_path / "inf.npy", "--labels", yp], "non-finite embeddings"),
        "label >= n_classes": ([*feats, "--n-classes", 5], "outside [0, 5)"),
        "both data and features": ([*feats, "--data", "digits"], "exactly one of"),
        "features with a teacher": ([*feats, "--teacher", "test_resnet"], "drop --teacher"),
    }


BAD_CASES = [
    "missing checkpoint",
    "other architecture",
    "unreadable checkpoint",
    "unknown model",
    "empty image folder",
    "missing image folder",
    "unreadable image",
    "length mismatch",
    "negative labels",
    "non-integer labels",
    "string labels",
    "NaN embeddings",
    "Inf embeddings",
    "label >= n_classes",
    "both data and features",
    "features with a teacher",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_clear_error_and_no_output(tmp_path, features, case):
    args, expected = _bad_inputs(tmp_path, features)[case]
    before = _no_leftovers(tmp_path)
    result = cli_run("extract", *args, "--out", tmp_path / "out.h5")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert expected in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out.h5").exists()
    assert _no_leftovers(tmp_path) == before


def test_output_path_problems(tmp_path, features):
    xp, yp, _, _ = features
    result = cli_run("extract", "--features", xp, "--labels", yp, "--out", tmp_path / "missing" / "m.h5")
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not (tmp_path / "missing").exists()
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"keep me")
    result = cli_run("extract", "--features", xp, "--labels", yp, "--out", existing)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert existing.read_bytes() == b"keep me"
    cli_ok("extract", "--features", xp, "--labels", yp, "--out", existing, "--overwrite", "-q")
    with open_store(existing) as s:
        assert s.kind == "means"


def test_a_failure_mid_run_keeps_the_previous_output(tmp_path, features):
    """--overwrite replaces a store only when the new one is complete."""
    xp, yp, x, _ = features
    out = tmp_path / "m.h5"
    cli_ok("extract", "--features", xp, "--labels", yp, "--out", out, "-q")
    before = out.read_bytes()
    bad = x.copy()
    bad[-1, 0] = np.nan  # found in the last batch, after most of the work
    np.save(tmp_path / "bad.npy", bad)
    result = cli_run(
        "extract", "--features", tmp_path / "bad.npy", "--labels", yp, "--out", out, "--overwrite", "-b", 8
    )
    assert result.exit_code == 1
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n truncated", b"plain text"])
def test_inspect_and_merge_refuse_broken_files(tmp_path, content):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(content)
    for args in (["inspect", bad], ["merge", tmp_path / "out.h5", bad]):
        result = cli_run(*args)
        assert result.exit_code == 1
        assert result.output.startswith("error:") and "bad.h5" in result.output
    assert not (tmp_path / "out.h5").exists()


def test_inspect_json_of_an_extracted_store(tmp_path, features):
    xp, yp, _, y = features
    cli_ok("extract", "--features", xp, "--labels", yp, "--out", tmp_path / "m.h5", "-q")
    info = json.loads(cli_ok("inspect", tmp_path / "m.h5", "--json").stdout)
    assert info["kind"] == "means" and info["n_classes"] == int(y.max()) + 1 and info["n_dim"] == 12
    assert info["empty_classes"] == 1 and info["samples"] == len(y)
