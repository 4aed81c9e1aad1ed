"""Precomputed features as a labeled source: a ``.npy`` matrix (memory-mapped) or an HDF5 dataset, with labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .labels import check_labels
from .loader import LabeledData
from .transforms import NO_AUGMENT, Augment

__all__ = ["FeatureData", "load_features"]


class FeatureData(LabeledData):
    """Precomputed embeddings ``X [N, D]`` (``.npy``, memory-mapped, or an HDF5 dataset) with labels ``y [N]``
    (without labels, e.g. for ``predict``: every row labeled -1). Rows are read a batch at a time, in the main
    process (HDF5 handles do not survive a fork)."""

    max_workers = 0

    def __init__(
        self, features: str | os.PathLike, labels: str | os.PathLike | None, n_classes: int | None = None
    ) -> None:
        self._x, where = _open_matrix(str(features))
        self.n_dim = int(self._x.shape[1])
        self.class_names = None
        self.description = {"name": "features", "features": where, "samples": int(self._x.shape[0])}
        if labels is None:
            self.labels, self.n_classes = np.full(self._x.shape[0], -1, dtype=np.int64), 0
            return
        y_path = Path(labels)
        if not y_path.is_file():
            raise FileNotFoundError(f"labels file {y_path} does not exist")
        try:
            y = np.load(y_path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"cannot read labels {y_path}: {exc}") from None
        if len(y) != self._x.shape[0]:
            raise ValueError(f"{len(y):,} labels in {y_path} for {self._x.shape[0]:,} feature rows in {where}")
        self.labels, self.n_classes = check_labels(y, str(y_path), n_classes)
        self.description["labels"] = str(y_path.resolve())

    def dataset(self, augment: Augment = NO_AUGMENT, seed: int = 0) -> _FeatureRows:
        return _FeatureRows(self)


class _FeatureRows(torch.utils.data.Dataset):
    """A batch of feature rows in one read (``__getitems__``), sorted by index: ``(X [B, D], y [B], idx [B])``."""

    def __init__(self, data: FeatureData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, keys: list[tuple[int, int]]):
        idx = np.sort(np.fromiter((i for _, i in keys), dtype=np.int64, count=len(keys)))
        contiguous = idx.size and idx[-1] - idx[0] + 1 == idx.size
        x = self.data._x
        rows = x[idx[0] : idx[-1] + 1] if contiguous else x[idx]
        return torch.from_numpy(np.array(rows, dtype=np.float32)), torch.from_numpy(self.data.labels[idx]), idx

    @staticmethod
    def collate(batch):
        return batch


def _open_matrix(spec: str):
    """``X.npy`` (memory-mapped) or ``X.h5[:dataset]`` (the only 2-D dataset if not named)."""
    path, _, name = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} does not exist")
    if path.suffix == ".npy":
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"cannot read features {path}: {exc}") from None
    elif path.suffix in (".h5", ".hdf5"):
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise ValueError(f"cannot read features {path}: {exc}") from None
        names = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2]
        if not name and len(names) != 1:
            raise ValueError(f"{path} holds 2-D datasets {names}: choose one with {path}:NAME")
        name = name or names[0]
        if name not in f:
            raise ValueError(f"{path} has no dataset {name!r}")
        x = f[name]
    else:
        raise ValueError(f"features must be a .npy or .h5 file, got {path}")
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"features {path} must be a 2-D float array, got shape {x.shape} dtype {x.dtype}")
    return x, f"{path.resolve()}" + (f":{name}" if name else "")


def load_features(
    features: str | os.PathLike, labels: str | os.PathLike | None, n_classes: int | None = None
) -> FeatureData:
    return FeatureData(features, labels, n_classes)
