"""The interface every vector system implements.

A vector system is a finite, ordered set of unit vectors in ``R^n_dim`` addressed by an integer index. The
index -> vector map and the nearest-vector search are computed from the index or the embedding alone, in
O(n_dim) per row: no table of all vectors ever exists, so a system of 56 million vectors costs nothing to hold.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import torch

__all__ = ["Candidates", "VectorSystem", "cached", "mark_degenerate", "row_divisor", "safe_rows", "unit_rows"]


_SAFE = (2.0**-40, 2.0**40)  # rows whose largest magnitude lies here have norms that neither overflow nor underflow


def cached(cache: dict, key: Any, build: Any) -> Any:
    """``cache[key]``, built by ``build()`` on a miss. A result holding anything but plain tensors (the fake or
    functional tensors of ``torch.export``/``torch.compile`` tracing) is returned but not kept, so tracing never
    leaves placeholders behind for later eager calls."""
    if key in cache:
        return cache[key]
    value = build()
    parts = value if isinstance(value, (tuple, list)) else (value,)
    if all(type(t) is torch.Tensor for t in parts):
        cache[key] = value
    return value


def safe_rows(
    z: torch.Tensor, placeholder: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows of ``z [B, D]`` made safe for norms and dot products: a branch-free tensor program.

    Rows whose largest magnitude is outside ``[2**-40, 2**40]`` are divided by it (so 1e35 does not overflow
    a float32 norm, nor 1e-40 underflow); the others are divided by 1 (left as they are). Half-precision input
    is computed in float32. No value of ``z`` decides which operations run (no host synchronization).

    Returns:
        ``(x [B, D], norm [B, 1], ok [B], finite [B])``: ``ok`` is False for zero and non-finite rows, whose
        ``x`` row is a placeholder of ones (never NaN) with ``placeholder``, else left as it is (zero, or holding
        NaN/Inf: one full pass cheaper, for callers that discard those rows); ``finite`` is False for rows with
        NaN or Inf.
    """
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()  # half precision cannot separate 60-degree neighbours reliably at large n_dim
    # max |z| without an |z| copy; maximum() propagates NaN, and an Inf makes the scale Inf
    divisor, ok, finite = row_divisor(torch.maximum(z.amax(dim=1, keepdim=True), -z.amin(dim=1, keepdim=True)))
    x = z / divisor
    if placeholder:
        x = torch.where(ok, x, 1.0)
    return x, torch.linalg.vector_norm(x, dim=1, keepdim=True), ok.squeeze(1), finite.squeeze(1)


def row_divisor(scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`safe_rows` divides each row by, from its largest magnitude ``scale [B, 1]`` (NaN for rows with
    NaN): ``(divisor [B, 1], ok [B, 1], finite [B, 1])``; the divisor is the scale outside ``[2**-40, 2**40]``,
    else 1 (dividing by 1 is exact: most rows are left as they are)."""
    finite = torch.isfinite(scale)
    ok = finite & (scale > 0)
    outside = (scale < _SAFE[0]) | (scale > _SAFE[1])
    return torch.where(outside & ok, scale, 1.0), ok, finite


def unit_rows(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-norm copy of the rows of ``z``: ``(unit [B, D], ok [B], finite [B])`` as in :func:`safe_rows`."""
    x, norm, ok, finite = safe_rows(z)
    return x / norm, ok, finite


def mark_degenerate(
    idx: torch.Tensor, cos: torch.Tensor, ok: torch.Tensor, finite: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the documented results for degenerate rows: zero rows -> (0, 0.0), non-finite -> (-1, NaN)."""
    idx = torch.where(ok, idx, torch.where(finite, 0, -1))
    cos = torch.where(ok, cos, torch.where(finite, 0.0, float("nan")).to(cos.dtype))
    return idx, cos


class Candidates(NamedTuple):
    """Result of :meth:`VectorSystem.candidates`: ``(index [B, K], score [B, K], bound [B])``.

    ``index`` holds system indices (``-1`` pads invalid slots, whose score is ``-inf``), ``score`` their cosine
    similarity with each row, and ``bound`` an upper bound on the cosine of every system vector *not* listed.
    """

    index: torch.Tensor
    score: torch.Tensor
    bound: torch.Tensor


class VectorSystem(ABC):
    """A finite ordered set of unit vectors in ``R^n_dim``, addressed by index without a table.

    Subclasses implement :meth:`_vectors` and :meth:`_nearest` on validated input; this base class does the
    checks, the handling of zero and non-finite rows, and the dtype/device plumbing.

    Attributes:
        name: registry name (``"an"``, ``"v21"``, ...).
        n_dim: dimension of the vectors.
        level_sizes: sizes of consecutive index ranges that belong together (A_n roots, then the interpolated
            vectors); a seeded shuffle permutes within each level, so the first classes always use the
            coarsest level.
        radius: length of a class center built from this system (1 for all but ``planar``).
    """

    name: str = ""
    n_dim: int
    #: whether :meth:`_nearest` copes with zero/NaN/Inf rows left in place (their answers are overwritten);
    #: if not, those rows are replaced by a placeholder of ones first (one more pass over the batch)
    garbage_rows_ok: bool = False
    level_sizes: tuple[int, ...]
    radius: float = 1.0

    # ----------------------------------------------------------------------------------------------- sizes
    @property
    def size(self) -> int:
        """Number of vectors in the system."""
        return sum(self.level_sizes)

    def __len__(self) -> int:
        return self.size

    @property
    def min_angle(self) -> float:
        """Smallest angle in degrees between two distinct vectors (computed from the structure)."""
        return self._min_angle()

    def _min_angle(self) -> float:
        if self.size > 20_000:
            raise NotImplementedError(f"{type(self).__name__} has no closed-form minimum angle")
        v = self.materialize(dtype=torch.float64)
        g = v @ v.T
        g.fill_diagonal_(-2.0)
        return math.degrees(math.acos(min(1.0, float(g.max()))))

    # ------------------------------------------------------------------------------------------ definition
    def describe(self) -> dict[str, Any]:
        """JSON-ready definition from which :func:`lscdistill.systems.create_system` rebuilds this system."""
        return {"name": self.name, "n_dim": self.n_dim, **self._describe_extra()}

    def _describe_extra(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({args}, size={self.size})"

    # ------------------------------------------------------------------------------------------ index->vec
    def vectors(self, idx: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Unit vectors of the given indices.

        Args:
            idx: integer tensor ``[B]`` of indices in ``[0, size)``; the result lives on its device.
            dtype: floating dtype of the result.

        Returns:
            ``[B, n_dim]`` unit vectors, computed in O(B * n_dim).
        """
        idx = torch.as_tensor(idx)
        if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.dim() != 1:
            raise ValueError(f"indices must be a 1-D integer tensor, got {tuple(idx.shape)} {idx.dtype}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating point, got {dtype}")
        idx = idx.long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.size):
            bad = idx[(idx < 0) | (idx >= self.size)][0].item()
            raise IndexError(f"index {bad} is outside [0, {self.size}) of {self!r}")
        return self._vectors(idx, dtype)

    def materialize(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
        """All vectors as one ``[size, n_dim]`` tensor. Memory grows with the size: for tests and small systems."""
        return self.vectors(torch.arange(self.size, device=device), dtype=dtype)

    @abstractmethod
    def _vectors(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor: ...

    # ------------------------------------------------------------------------------------------ vec->index
    def nearest(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact nearest system vector by cosine similarity, for every row of ``z``.

        Computed in O(n_dim) per row for permutation systems: only the largest and smallest coordinates of
        each row matter (rearrangement inequality). Rows are rescaled by their largest magnitude before any
        norm is taken, so huge values do not overflow.

        Args:
            z: ``[B, n_dim]`` floating tensor (any device); computed in its dtype (half types in float32).

        Returns:
            ``(index [B] int64, cosine [B])``. Ties are broken deterministically (see the system's docs).
            A zero row is equally near to every vector: it gets index 0 and cosine 0. A row with NaN or Inf
            gets index -1 and cosine NaN.
        """
        return mark_degenerate(*self._search(self._check_embeddings(z)))

    def _search(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`nearest` before the degenerate rows' answers: ``(index, cosine, ok, finite)``, each ``[B]`` (see
        :func:`safe_rows`). By default the rows are made safe and :meth:`_nearest` searches them; a system can
        take the rows' scale from reductions it needs anyway (:class:`~lscdistill.systems.PatternSystem`)."""
        x, norm, ok, finite = safe_rows(z, placeholder=not self.garbage_rows_ok)
        idx, cos = self._nearest(x, norm)
        return idx, cos, ok, finite

    @abstractmethod
    def _nearest(self, x: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest vector for finite nonzero rows ``x [B, D]`` of norms ``norm [B, 1]``: ``(index, cosine)``."""

    def candidates(self, z: torch.Tensor, m: int) -> Candidates | None:
        """A shortlist of vectors near each row of ``z`` with a certificate for everything left out.

        Used to find the nearest vector of a *subset* of the system (the assigned classes) without scanning
        it. ``z`` must hold finite unit-norm rows. Returns ``None`` where the system has no such structure.
        """
        return None

    def shortlist_sizes(self) -> list[int]:
        """Shortlist widths ``m`` that :meth:`candidates` supports, smallest first (empty: none)."""
        return []

    def cluster_radius(self, idx: torch.Tensor) -> torch.Tensor | None:
        """Per-class cluster radius r_c of eq. 7 where the system defines one (``planar``), else ``None``."""
        return None

    def _check_embeddings(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or not z.dtype.is_floating_point:
            raise ValueError("embeddings must be a floating-point torch.Tensor")
        if z.dim() != 2 or z.shape[1] != self.n_dim:
            raise ValueError(f"embeddings must have shape [B, {self.n_dim}] for {self!r}, got {tuple(z.shape)}")
        return z
