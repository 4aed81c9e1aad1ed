"""Reading stores: validated on open, rows gathered without loading the file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .format import FORMAT_NAME, FORMAT_VERSION, KINDS, StoreError
from .writer import BLOCK_ROWS

__all__ = ["RowCache", "Store", "open_store"]

_REQUIRED = {"means": ("centers",), "partial": ("sums",), "snapped": ("centers", "system_index", "cosine")}


def consecutive_runs(sorted_ids: np.ndarray) -> list[np.ndarray]:
    """``sorted_ids`` (sorted, distinct) cut where they stop being consecutive: one read per piece."""
    return np.split(sorted_ids, np.flatnonzero(np.diff(sorted_ids) != 1) + 1)


class Store:
    """A read-only store. Opening checks the format, version, kind, shapes and dtypes; one :class:`StoreError`
    names the file and what is wrong.

    Attributes:
        kind, n_classes, n_dim: from the root attributes.
        counts: ``[n_classes]`` int64 samples per class (loaded: 8 bytes per class).
        provenance: how the store was made (dict).
        class_names: list of names or ``None``.
    """

    def __init__(self, path: str | os.PathLike, *, rdcc_nbytes: int = 64 * 1024 * 1024) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(
                f"store {self.path} does not exist" if not self.path.exists() else f"{self.path} is not a file"
            )
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=rdcc_nbytes)
        except OSError as exc:
            raise StoreError(f"{self.path} is not a readable HDF5 file (truncated or another format): {exc}") from None
        try:
            self._validate()
        except StoreError:
            self._file.close()
            raise

    def _fail(self, what: str) -> StoreError:
        return StoreError(f"{self.path}: {what}")

    def _validate(self) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT_NAME:
            raise self._fail(f"not an lscdistill store (root attribute format={attrs.get('format')!r})")
        version = int(attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise self._fail(f"store format version {version}; this lscdistill reads version {FORMAT_VERSION}")
        self.kind = str(attrs.get("kind"))
        if self.kind not in KINDS:
            raise self._fail(f"unknown store kind {self.kind!r} (expected one of {KINDS})")
        self.n_classes, self.n_dim = int(attrs.get("n_classes", 0)), int(attrs.get("n_dim", 0))
        if self.n_classes < 1 or self.n_dim < 1:
            raise self._fail(f"invalid shape attributes n_classes={self.n_classes}, n_dim={self.n_dim}")
        expected = {"counts": ((self.n_classes,), "i"), "centers": ((self.n_classes, self.n_dim), "f")}
        expected |= {"sums": ((self.n_classes, self.n_dim), "f"), "system_index": ((self.n_classes,), "i")}
        expected |= {"cosine": ((self.n_classes,), "f"), "class_names": ((self.n_classes,), "O")}
        for name in ("counts", *_REQUIRED[self.kind]):
            if name not in self._file:
                raise self._fail(f"a {self.kind} store needs the dataset '{name}', which is missing")
        for name, (shape, dtype_kind) in expected.items():
            if name in self._file:
                ds = self._file[name]
                if not isinstance(ds, h5py.Dataset) or ds.shape != shape or ds.dtype.kind != dtype_kind:
                    got = (ds.shape, ds.dtype) if isinstance(ds, h5py.Dataset) else "a group"
                    raise self._fail(f"dataset '{name}' should have shape {shape}, got {got}")
        try:
            self.provenance: dict[str, Any] = json.loads(attrs.get("provenance", "{}"))
        except json.JSONDecodeError:
            raise self._fail("the provenance attribute is not valid JSON") from None
        self.counts = self._file["counts"][:]
        if (self.counts < 0).any():
            raise self._fail("negative class counts")
        self.class_names = (
            [n.decode() if isinstance(n, bytes) else str(n) for n in self._file["class_names"][:]]
            if "class_names" in self._file
            else None
        )
        self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}

    # ------------------------------------------------------------------------------------------ access
    @property
    def has_sums(self) -> bool:
        return "sums" in self._file

    def dataset(self, name: str) -> h5py.Dataset:
        if name not in self._file:
            raise self._fail(f"has no dataset '{name}'")
        return self._file[name]

    def __len__(self) -> int:
        return self.n_classes

    def __getitem__(self, item: slice) -> np.ndarray:
        """Rows of the centers (what :func:`lscdistill.decode.exact_nearest` reads chunk by chunk)."""
        return self.dataset("centers")[item]

    def gather(
        self, labels: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float32, *, cache: RowCache | None = None
    ) -> torch.Tensor:
        """Centers of ``labels [B]`` as ``[B, n_dim]`` on the labels' device, reading only the rows of the distinct
        labels: from ``cache`` (:class:`RowCache`, which reads each chunk of the file once) or, without one, from
        the file (a run of consecutive rows in one read, through HDF5's chunk cache)."""
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.dtype.is_floating_point:
            raise StoreError(f"labels must be a 1-D integer tensor, got {tuple(labels.shape)} {labels.dtype}")
        lab = labels.cpu().numpy().astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= self.n_classes):
            raise self._fail(
                f"label {int(lab[(lab < 0) | (lab >= self.n_classes)][0])} is outside [0, {self.n_classes})"
            )
        unique, inverse = np.unique(lab, return_inverse=True)
        rows = cache.rows(unique) if cache is not None else self._read_rows(unique)
        if not np.isfinite(rows).all():
            raise self._fail("centers contain NaN or Inf")
        return torch.from_numpy(rows[inverse]).to(device=labels.device, dtype=dtype)

    def _read_rows(self, unique: np.ndarray) -> np.ndarray:
        """Rows ``unique`` (sorted, distinct) of the centers: one read per run of consecutive rows (h5py's fancy
        indexing, a point selection, is 4-6x slower on random rows)."""
        if not unique.size:
            return np.zeros((0, self.n_dim), self.dataset("centers").dtype)
        ds = self.dataset("centers")
        return np.concatenate([ds[int(r[0]) : int(r[-1]) + 1] for r in consecutive_runs(unique)])

    def read_into(self, out: np.ndarray, start: int, stop: int, name: str = "centers") -> None:
        """Rows ``start:stop`` of a dataset into the same rows of ``out`` (no temporary copy)."""
        self.dataset(name).read_direct(out, np.s_[start:stop], np.s_[start:stop])

    def iter_blocks(self, name: str, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` blocks of a dataset, in order; memory O(block_rows * n_dim)."""
        ds = self.dataset(name)
        for start in range(0, ds.shape[0], block_rows):
            yield start, ds[start : start + block_rows]

    def summary(self) -> dict[str, Any]:
        """Human-level facts: kind, shape, empty classes, count and norm statistics, provenance."""
        counts = self.counts
        nonempty = counts[counts > 0]
        out: dict[str, Any] = {
            "path": str(self.path),
            "kind": self.kind,
            "format_version": self.attrs.get("format_version"),
            "n_classes": self.n_classes,
            "n_dim": self.n_dim,
            "samples": int(counts.sum()),
            "empty_classes": int((counts == 0).sum()),
            "counts": {
                "min": int(nonempty.min()) if nonempty.size else 0,
                "median": float(np.median(nonempty)) if nonempty.size else 0.0,
                "max": int(counts.max()),
            },
            "has_sums": self.has_sums,
            "class_names": self.class_names[:5] if self.class_names else None,
            "producer": self.attrs.get("producer"),
            "created": self.attrs.get("created"),
            "provenance": self.provenance,
            "file_bytes": self.path.stat().st_size,
        }
        name = "centers" if "centers" in self._file else "sums"
        lo, hi, total, finite = np.inf, 0.0, 0.0, True
        for start, rows in self.iter_blocks(name):
            if name == "sums":
                rows = rows / np.maximum(counts[start : start + len(rows)], 1)[:, None]
            finite &= bool(np.isfinite(rows).all())
            norms = np.linalg.norm(rows.astype(np.float64), axis=1)[counts[start : start + len(rows)] > 0]
            if norms.size:
                lo, hi, total = min(lo, norms.min()), max(hi, norms.max()), total + norms.sum()
        out["center_norms"] = {
            "min": float(lo) if nonempty.size else None,
            "mean": float(total / nonempty.size) if nonempty.size else None,
            "max": float(hi) if nonempty.size else None,
        }
        out["finite"] = finite
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RowCache:
    """A store's centers in host memory, each HDF5 chunk read once, the first time a label of it is asked for.

    Training gathers the rows of every batch's labels; after the first pass over the classes every gather is an
    in-memory index. **Memory that grows with n_classes**: the table (``n_classes x n_dim`` in the store's dtype) is
    allocated at once but the OS commits its pages only as chunks are read, so it grows with the classes seen, up
    to the whole table; :meth:`nbytes` says how much that is, so callers can cap it (see
    :class:`~lscdistill.centers.StoreCenters`). Neighbouring chunks that are both missing are read in one call.
    """

    def __init__(self, store: Store) -> None:
        ds = store.dataset("centers")
        self.store = store
        self.table = np.empty(ds.shape, dtype=ds.dtype)
        self.block = int(ds.chunks[0]) if ds.chunks else 256  # rows read together
        self.loaded = np.zeros(-(-store.n_classes // self.block), dtype=bool)

    @staticmethod
    def nbytes(store: Store) -> int:
        """Bytes of the whole table: what the cache of ``store`` holds once every class has been gathered."""
        ds = store.dataset("centers")
        return store.n_classes * store.n_dim * ds.dtype.itemsize

    def rows(self, unique: np.ndarray) -> np.ndarray:
        """Rows ``unique`` (sorted, distinct row indices) ``[len(unique), n_dim]``, reading their missing chunks."""
        self._load(np.unique(unique // self.block))
        return self.table[unique]

    def complete(self) -> np.ndarray:
        """The whole table ``[n_classes, n_dim]`` (read what is still missing)."""
        self._load(np.arange(len(self.loaded)))
        return self.table

    def _load(self, blocks: np.ndarray) -> None:
        missing = blocks[~self.loaded[blocks]]
        if not missing.size:
            return
        for run in consecutive_runs(missing):
            start, stop = int(run[0]) * self.block, min((int(run[-1]) + 1) * self.block, self.store.n_classes)
            self.store.read_into(self.table, start, stop)
            self.loaded[run] = True


def open_store(path: str | os.PathLike, *, rdcc_nbytes: int = 64 * 1024 * 1024) -> Store:
    """Open and validate a store (see :class:`Store`); ``rdcc_nbytes`` is HDF5's chunk cache size."""
    return Store(path, rdcc_nbytes=rdcc_nbytes)
