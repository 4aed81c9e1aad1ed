"""The data layer: sources as torch Datasets, one DataLoader per split, timm augmentation seeded per sample."""

from __future__ import annotations

import random
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lscdistill.data import Augment, Preprocess, SplitLoader, load_features, load_images

PRE = Preprocess(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _tree(root, n_per_class=4, size=20, names=("cat", "dog", "emu")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for k in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{k:02d}.png")
    return root


def _all(loader, indices, epoch=0):
    xs, ys, idx = zip(*loader(indices, epoch), strict=True)
    return torch.cat(xs), torch.cat(ys), np.concatenate(idx)


def test_unaugmented_digits_equal_a_batched_reference():
    """Per-sample reading gives exactly what upsampling the whole batch at once gives."""
    from sklearn.datasets import load_digits

    from lscdistill.data import digits_split

    data = load_images("digits:val", PRE)
    idx = np.arange(0, len(data), 3)
    x, y, got = _all(SplitLoader(data, 16), idx)
    digits = load_digits()
    keep = digits_split(digits.target, "val")
    raw = torch.from_numpy(digits.images[keep][idx]).float().div(16.0).unsqueeze(1)
    ref = F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    ref = (ref - 0.5) / 0.25
    torch.testing.assert_close(x, ref, rtol=0, atol=0)
    np.testing.assert_array_equal(got, idx)
    np.testing.assert_array_equal(y.numpy(), digits.target[keep][idx])


@pytest.mark.parametrize("policy", ["light", "randaugment"])
def test_augmented_batches_do_not_depend_on_workers_or_where_a_pass_starts(tmp_path, policy):
    """The draws for sample i in epoch e come from (seed, e, i): 0 and 2 workers give the same batches, a pass
    restarted in the middle (a resume) continues with the same images, another epoch draws new ones."""
    for data in (load_images("digits:val", PRE), load_images(str(_tree(tmp_path / policy)), PRE)):
        aug = Augment(policy, re_prob=0.25)
        order = np.random.default_rng(1).permutation(len(data))[:24]
        base = _all(SplitLoader(data, 8, augment=aug, seed=7), order, epoch=3)[0]
        workers = SplitLoader(data, 8, workers=2, augment=aug, seed=7)
        torch.testing.assert_close(_all(workers, order, epoch=3)[0], base, rtol=0, atol=0)
        torch.testing.assert_close(_all(workers, order, epoch=3)[0], base, rtol=0, atol=0)  # workers persist
        tail = _all(SplitLoader(data, 8, augment=aug, seed=7), order[8:], epoch=3)[0]
        torch.testing.assert_close(tail, base[8:], rtol=0, atol=0)
        odd_batches = _all(SplitLoader(data, 5, augment=aug, seed=7), order, epoch=3)[0]  # batches seed per sample
        torch.testing.assert_close(odd_batches, base, rtol=0, atol=0)
        other_epoch = _all(SplitLoader(data, 8, augment=aug, seed=7), order, epoch=4)[0]
        plain = _all(SplitLoader(data, 8), order)[0]
        assert not torch.equal(other_epoch, base) and not torch.equal(plain, base)
        assert base.shape == plain.shape == (len(order), 3, 32, 32)


def test_augmentation_leaves_the_callers_random_streams_alone():
    """Reading augmented samples in the main process (0 workers) must not move Python's, NumPy's or torch's
    generators: the training loop's own draws (dropout, mixup) stay the same with and without augmentation."""
    data = load_images("digits:val", PRE)
    loader = SplitLoader(data, 8, augment=Augment("randaugment"), seed=0)
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    torch.manual_seed(5)
    _all(loader, np.arange(16))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # noqa: NPY002


def test_a_tar_of_an_image_folder_reads_like_the_folder(tmp_path):
    root = _tree(tmp_path / "imgs")
    with tarfile.open(tmp_path / "imgs.tar", "w") as tar:
        for path in sorted(root.rglob("*.png")):
            tar.add(path, arcname=str(path.relative_to(root)))
    folder, packed = load_images(str(root), PRE), load_images(str(tmp_path / "imgs.tar"), PRE)
    assert folder.class_names == packed.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(folder.labels, [0] * 4 + [1] * 4 + [2] * 4)
    np.testing.assert_array_equal(packed.labels, folder.labels)
    a, b = _all(SplitLoader(folder, 5), np.arange(12)), _all(SplitLoader(packed, 5), np.arange(12))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


def test_feature_batches_are_read_in_one_sorted_slice(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(50) % 5)
    data = load_features(tmp_path / "x.npy", tmp_path / "y.npy")
    order = np.random.default_rng(2).permutation(50)
    for (xb, yb, idx), start in zip(SplitLoader(data, 16, workers=2)(order), range(0, 50, 16), strict=True):
        np.testing.assert_array_equal(idx, np.sort(order[start : start + 16]))  # workers=2 is capped to 0
        np.testing.assert_array_equal(xb.numpy(), x[idx])
        np.testing.assert_array_equal(yb.numpy(), idx % 5)
    unlabeled = load_features(tmp_path / "x.npy", None)
    assert unlabeled.n_classes == 0 and (unlabeled.labels == -1).all()


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        (Augment("heavy"), "--aug 'heavy': use none, light, randaugment or a timm auto_augment string"),
        (Augment("rand-q9"), "--aug 'rand-q9': timm cannot build it"),
        (Augment("light", hflip=1.5), "--hflip must be a probability in [0, 1], got 1.5"),
        (Augment("light", re_prob=-0.1), "--re-prob must be a probability in [0, 1], got -0.1"),
        (Augment("light", color_jitter=-1), "--color-jitter must be >= 0, got -1"),
    ],
)
def test_bad_augmentation_is_one_clear_error(augment, message):
    with pytest.raises(ValueError) as info:
        augment.check()
    assert message in str(info.value)


def test_randaugment_at_full_magnitude_runs_on_recent_pillow():
    """timm's strongest posterize keeps 0 bits, which Pillow 13 rejects: it gives the black image it used to."""
    from PIL import Image
    from timm.data.auto_augment import NAME_TO_OP, posterize

    Augment("rand-m10-n3-mstd0-inc1").check()
    assert NAME_TO_OP["PosterizeIncreasing"] is not posterize
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    assert not np.asarray(NAME_TO_OP["PosterizeIncreasing"](image, 0)).any()
    np.testing.assert_array_equal(np.asarray(NAME_TO_OP["Posterize"](image, 3)), np.asarray(posterize(image, 3)))
    data = load_images("digits:val", PRE)
    x = _all(SplitLoader(data, 32, augment=Augment("rand-m10-n3-mstd0-inc1"), seed=0), np.arange(96))[0]
    assert x.shape == (96, 3, 32, 32) and torch.isfinite(x).all()


def test_default_workers_share_the_cores_of_a_gpu_machine(monkeypatch):
    from types import SimpleNamespace

    from lscdistill.data import MAX_DEFAULT_WORKERS, default_workers

    cpu, gpu = (SimpleNamespace(device=torch.device(t)) for t in ("cpu", "cuda"))
    monkeypatch.setattr("os.cpu_count", lambda: 12)
    assert default_workers(cpu) == 0 and default_workers(cpu, 3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers(gpu) == 3  # 12 cores / 4 processes on this machine
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert default_workers(gpu) == MAX_DEFAULT_WORKERS
