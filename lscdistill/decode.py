"""Exact label prediction by chunked brute force, for center tables without structure (class means).

The table is read one chunk of rows at a time and scored against the whole batch, so at most one
``[B, chunk_size]`` score matrix exists at once: memory is O(B * chunk_size), whatever the number of classes
(time is O(B * n_classes * n_dim): that is what the fast decoder of structured systems avoids).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import torch

from .systems.base import mark_degenerate, unit_rows

__all__ = ["RowSource", "exact_nearest", "exact_top2", "full_precision_matmul"]


class RowSource(Protocol):
    """Anything with a length whose row slices convert to a tensor: a tensor, a numpy array, an h5py dataset."""

    def __len__(self) -> int: ...

    def __getitem__(self, item: slice) -> Any: ...


def exact_nearest(
    z: torch.Tensor,
    table: RowSource | Callable[[int, int], torch.Tensor],
    *,
    n_rows: int | None = None,
    chunk_size: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row of ``table`` with the largest cosine similarity to each row of ``z`` (eq. 12), by brute force.

    Args:
        z: ``[B, D]`` embeddings; the scores are computed on its device, in its dtype (half types in float32).
        table: ``[C, D]`` centers (tensor, array, h5py dataset: anything sliceable by rows) or a function
            ``rows(start, stop) -> Tensor[stop - start, D]`` (then ``n_rows`` is required).
        n_rows: number of rows (defaults to ``len(table)``).
        chunk_size: rows scored at once; bounds the score matrix to ``[B, chunk_size]``.

    Returns:
        ``(index [B] int64, cosine [B])``. Ties go to the lowest index. Zero table rows (empty classes) have
        cosine 0 with everything. Zero embedding rows get ``(0, 0.0)``, rows with NaN/Inf ``(-1, NaN)``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows, n_rows = _row_reader(table, n_rows)
    if n_rows < 1:
        raise ValueError("the center table is empty")
    with full_precision_matmul():
        return _scan(z, rows, n_rows, chunk_size)


def _row_reader(table, n_rows: int | None) -> tuple[Callable[[int, int], torch.Tensor], int]:
    if callable(table) and not isinstance(table, torch.Tensor):
        if n_rows is None:
            raise ValueError("n_rows is required when table is a function")
        return table, n_rows
    return (lambda start, stop: torch.as_tensor(table[start:stop])), len(table) if n_rows is None else n_rows


def exact_top2(
    z: torch.Tensor,
    table: RowSource | Callable[[int, int], torch.Tensor],
    *,
    n_rows: int | None = None,
    chunk_size: int = 8192,
) -> torch.Tensor:
    """The two largest cosine similarities of each row of ``z`` to the rows of ``table``, by brute force.

    Same arguments as :func:`exact_nearest`; the table needs at least 2 rows. Memory is O(B * chunk_size) whatever
    the number of rows (one ``[B, chunk_size]`` score matrix and a ``[B, 2]`` running best); time O(B * C * D).

    Returns:
        ``[B, 2]`` cosines, best first (the second may equal the first: two centers equally near). Zero table rows
        have cosine 0 with everything; zero embedding rows get ``(0, 0)``, rows with NaN/Inf ``(NaN, NaN)``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows, n_rows = _row_reader(table, n_rows)
    if n_rows < 2:
        raise ValueError(f"the two nearest centers need at least 2 rows, the table has {n_rows}")
    unit, ok, finite = unit_rows(z)
    best = torch.full((unit.shape[0], 2), -float("inf"), dtype=unit.dtype, device=unit.device)
    with full_precision_matmul():
        for start in range(0, n_rows, chunk_size):
            stop = min(start + chunk_size, n_rows)
            chunk = _unit_chunk(rows(start, stop), start, stop, unit)
            top = (unit @ chunk.T).topk(min(2, stop - start), dim=1).values
            best = torch.cat([best, top], dim=1).topk(2, dim=1).values
    best = torch.where(ok[:, None], best, 0.0)
    return torch.where(finite[:, None], best, float("nan"))


def _unit_chunk(chunk: torch.Tensor, start: int, stop: int, unit: torch.Tensor) -> torch.Tensor:
    chunk = chunk.to(device=unit.device, dtype=unit.dtype)
    if chunk.dim() != 2 or chunk.shape != (stop - start, unit.shape[1]):
        raise ValueError(f"center rows {start}:{stop} have shape {tuple(chunk.shape)}, expected [*, {unit.shape[1]}]")
    norms = torch.linalg.vector_norm(chunk, dim=1)
    return chunk / torch.where(norms > 0, norms, 1.0)[:, None]


@contextlib.contextmanager
def full_precision_matmul():
    """float32 matrix products in full precision while scoring: TF32 (``torch.set_float32_matmul_precision("high")``
    or Accelerate's ``tf32``), which a user may switch on for training, keeps 10 mantissa bits and would let an
    "exact" decoder pick a different center when two cosines differ below ~1e-3."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _scan(z: torch.Tensor, rows, n_rows: int, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    unit, ok, finite = unit_rows(z)
    best = torch.full((unit.shape[0],), -float("inf"), dtype=unit.dtype, device=unit.device)
    best_idx = torch.zeros(unit.shape[0], dtype=torch.long, device=unit.device)
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        chunk = _unit_chunk(rows(start, stop), start, stop, unit)
        score, arg = (unit @ chunk.T).max(dim=1)
        better = score > best  # strict: earlier chunks keep ties
        best = torch.where(better, score, best)
        best_idx = torch.where(better, arg + start, best_idx)
    return mark_degenerate(best_idx, best, ok, finite)
