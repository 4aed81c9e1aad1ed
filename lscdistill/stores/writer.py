"""Writing stores: an atomic HDF5 writer and the float64 per-class accumulator behind ``extract``."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .._version import __version__
from .format import FORMAT_NAME, FORMAT_VERSION, KINDS, StoreError, chunk_rows

__all__ = ["MeanAccumulator", "StoreWriter", "check_output_path"]

BLOCK_ROWS = 65_536  # rows per write/read block: memory of a block pass is O(BLOCK_ROWS * n_dim)


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early, before any work, if ``path`` cannot be written as a new store."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"output {path} is a directory; give a file name such as {path / 'means.h5'}")
    if not path.parent.is_dir():
        raise StoreError(f"output directory {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise StoreError(f"output {path} already exists; pass --overwrite to replace it")
    return path


class StoreWriter:
    """Write a store atomically: to a hidden temporary file beside ``path``, renamed into place on success.

    A crash or an exception inside the ``with`` block removes the temporary file, so nothing that reads as a
    finished store is ever left behind. Datasets are filled block by block (any order), never held whole.

    Args:
        path: the store to create.
        kind: ``means``, ``partial`` or ``snapped``.
        n_classes, n_dim: shape of the class dimension and of the embeddings.
        provenance: JSON-serializable description of how the store was made.
        class_names: optional names, one per class.
        with_sums: also keep float64 ``sums`` in a ``means`` store (makes it mergeable; partial stores always
            have them).
        overwrite: replace an existing file (only when the new one is complete).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        n_classes: int,
        n_dim: int,
        provenance: dict[str, Any],
        class_names: list[str] | None = None,
        with_sums: bool = False,
        overwrite: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise StoreError(f"kind must be one of {KINDS}, got {kind!r}")
        if n_classes < 1 or n_dim < 1:
            raise StoreError(f"a store needs n_classes >= 1 and n_dim >= 1, got {n_classes} and {n_dim}")
        if class_names is not None and len(class_names) != n_classes:
            raise StoreError(f"{len(class_names)} class names for {n_classes} classes")
        self.path = check_output_path(path, overwrite)
        self.kind, self.n_classes, self.n_dim = kind, int(n_classes), int(n_dim)
        self._tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        self._file: h5py.File | None = h5py.File(self._tmp, "w")
        attrs = self._file.attrs
        attrs["format"], attrs["format_version"], attrs["kind"] = FORMAT_NAME, FORMAT_VERSION, kind
        attrs["n_classes"], attrs["n_dim"] = self.n_classes, self.n_dim
        attrs["producer"] = f"lscdistill {__version__}"
        attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        attrs["provenance"] = json.dumps(provenance, default=str)
        self._file.create_dataset("counts", shape=(self.n_classes,), dtype=np.int64)
        if kind in ("means", "snapped"):
            self._matrix("centers", np.float32)
        if kind == "partial" or with_sums:
            self._matrix("sums", np.float64)
        if kind == "snapped":  # each class's vector in the system (see the `system` attribute) and its cosine
            self._file.create_dataset("system_index", shape=(self.n_classes,), dtype=np.int64)
            self._file.create_dataset("cosine", shape=(self.n_classes,), dtype=np.float32)
        if class_names is not None:
            self._file.create_dataset(
                "class_names", data=np.array(class_names, dtype=object), dtype=h5py.string_dtype()
            )

    def _matrix(self, name: str, dtype: type) -> None:
        rows = chunk_rows(self.n_classes, self.n_dim, np.dtype(dtype).itemsize)
        self._file.create_dataset(name, shape=(self.n_classes, self.n_dim), dtype=dtype, chunks=(rows, self.n_dim))

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            raise StoreError("the store writer is closed")
        return self._file

    def write_rows(self, start: int, **arrays: np.ndarray | torch.Tensor) -> None:
        """Write rows ``start:start+len`` of the named datasets (``counts``, ``centers``, ``sums``, ...)."""
        for name, values in arrays.items():
            values = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
            self.file[name][start : start + len(values)] = values

    def commit(self) -> Path:
        """Close the temporary file and move it into place."""
        self.file.close()
        self._file = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class MeanAccumulator:
    """Per-class float64 sums and int64 counts, kept in host memory.

    Memory is ``8 * n_classes * (n_dim + 1)`` bytes of host RAM (3.9 GB at 1.28M classes x 384 dims); only a
    batch ever goes through the accelerator, so device memory does not depend on n_classes.
    """

    def __init__(self, n_classes: int, n_dim: int) -> None:
        self.n_classes, self.n_dim = int(n_classes), int(n_dim)
        self.sums = torch.zeros((self.n_classes, self.n_dim), dtype=torch.float64)
        self.counts = torch.zeros(self.n_classes, dtype=torch.int64)

    def update(self, labels: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Add a batch: ``labels [B]`` in ``[0, n_classes)``, ``embeddings [B, n_dim]`` (any device/dtype)."""
        labels = labels.detach().to("cpu", torch.int64)
        self.sums.index_add_(0, labels, embeddings.detach().to("cpu", torch.float64))
        self.counts.index_add_(0, labels, torch.ones_like(labels))  # O(batch), not O(n_classes), per update

    def write(self, writer: StoreWriter, block_rows: int = BLOCK_ROWS) -> None:
        """Write counts, sums (if the store keeps them) and float32 means (zero rows for empty classes)."""
        for start in range(0, self.n_classes, block_rows):
            write_block(writer, start, self.counts[start : start + block_rows], self.sums[start : start + block_rows])


def write_block(writer: StoreWriter, start: int, counts: torch.Tensor, sums: torch.Tensor) -> None:
    """Write one block of counts and sums, deriving the float32 means where the store has centers."""
    arrays: dict[str, torch.Tensor] = {"counts": counts}
    if "sums" in writer.file:
        arrays["sums"] = sums
    if "centers" in writer.file:
        arrays["centers"] = (sums / counts.clamp(min=1).to(torch.float64)[:, None]).float()
    writer.write_rows(start, **arrays)
