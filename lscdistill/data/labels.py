"""Labels: checked when a source is loaded, one class per sample (``--instance-labels``), and the selection and
sharding of samples before any batch is read (each sample in exactly one shard, none repeated)."""

from __future__ import annotations

import numpy as np

from .loader import LabeledData

__all__ = ["check_labels", "select_indices", "use_instance_labels"]


def check_labels(labels: np.ndarray, where: str, n_classes: int | None) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must be a 1-D array, got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{where}: labels must be integers, got non-integer values")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size == 0:
        raise ValueError(f"{where}: no samples")
    if labels.min() < 0:
        raise ValueError(f"{where}: labels must be >= 0, found {int(labels.min())}")
    found = int(labels.max()) + 1
    if n_classes is not None and found > n_classes:
        raise ValueError(f"{where}: label {found - 1} is outside [0, {n_classes}) (--n-classes {n_classes})")
    return labels, n_classes or found


def use_instance_labels(data: LabeledData) -> LabeledData:
    """Every sample its own class (the paper's §5.3 construction): ``labels = arange(N)``."""
    data.labels = np.arange(len(data.labels), dtype=np.int64)
    data.n_classes, data.class_names = len(data.labels), None
    data.description = {**data.description, "instance_labels": True}
    return data


def select_indices(
    labels: np.ndarray, *, limit_per_class: int | None = None, shard: tuple[int, int] = (0, 1)
) -> np.ndarray:
    """Sample indices to process: the first ``limit_per_class`` of each class (dataset order), then shard
    ``i`` of ``n`` (every ``n``-th sample from ``i``). The union over shards is exactly the selection."""
    idx = np.arange(len(labels))
    if limit_per_class is not None:
        if limit_per_class < 1:
            raise ValueError(f"--limit-per-class must be >= 1, got {limit_per_class}")
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        first = np.searchsorted(sorted_labels, sorted_labels, side="left")
        rank_in_class = np.arange(len(labels)) - first
        idx = np.sort(order[rank_in_class < limit_per_class])
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n} is invalid: need 0 <= i < n")
    return idx[i::n]
