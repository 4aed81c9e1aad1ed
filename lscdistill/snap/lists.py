"""Every class's candidate list as one CSR structure, built chunk by chunk and widened where needed.

Memory is O(n_classes * K) for the lists (K grows with a class's widening level, see :data:`LEVELS`), plus
O(chunk * placements) while a chunk of rows is scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .candidates import LEVELS, SystemCandidates

__all__ = ["Lists", "UnitRows", "build_lists", "certify_heads", "edges_of", "widen"]

CHUNK_SCORES = 1 << 23  # candidate scores computed at once (rows per chunk = this / placements per row) ...
CHUNK_ROWS = 16_384  # ... and at most this many rows (larger chunks fall out of the CPU caches)


@dataclass
class Lists:
    """Every class's candidates as CSR rows sorted by decreasing score, with its bound and widening level."""

    indptr: np.ndarray  # [n + 1] int64
    key: np.ndarray  # [E] int64
    score: np.ndarray  # [E] float32
    bound: np.ndarray  # [n] float32: no vector off the list has a larger cosine
    level: np.ndarray  # [n] int8

    @property
    def head(self) -> np.ndarray:
        """Score of each class's first candidate (-inf for an empty list)."""
        counts = np.diff(self.indptr)
        return np.where(counts > 0, self.score[np.minimum(self.indptr[:-1], len(self.score) - 1)], -np.inf)

    def rows_of_edges(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.bound)), np.diff(self.indptr))


class UnitRows:
    """Unit-norm float32 rows of the usable class means, made on demand (no normalized copy of all means)."""

    def __init__(self, means: torch.Tensor, active: np.ndarray) -> None:
        self.means, self.active = means, active

    def __len__(self) -> int:
        return len(self.active)

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        x = self.means[torch.from_numpy(self.active[rows])].float()
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        odd = ~((norm > 1e-30) & (norm < 1e30)).squeeze(1)  # rescale first where float32 norms fail
        if bool(odd.any()):
            y = x[odd] / x[odd].abs().amax(dim=1, keepdim=True)
            x[odd], norm[odd] = y, torch.linalg.vector_norm(y, dim=1, keepdim=True)
        return x / norm


def _generate(cands: SystemCandidates, unit: UnitRows, rows: np.ndarray, level: int) -> tuple[np.ndarray, ...]:
    """Lists of ``rows`` at ``level``: ``(keys [r, K], score [r, K], bound [r])`` computed chunk by chunk."""
    chunk = max(1, min(CHUNK_ROWS, CHUNK_SCORES // max(1, cands.placements(level))))
    parts = [cands(unit(rows[s : s + chunk]), level) for s in range(0, len(rows), chunk)]
    return tuple(torch.cat([p[i] for p in parts]).numpy() for i in range(3))


def build_lists(
    cands: SystemCandidates, unit: UnitRows, lists: Lists | None, rows: np.ndarray, level: np.ndarray
) -> Lists:
    """New lists for ``rows`` at their ``level`` (an array, one per row), the other rows kept."""
    n = len(unit)
    edge_rows, keys, scores = [], [], []
    if lists is not None:
        keep = np.ones(n, dtype=bool)
        keep[rows] = False
        old = lists.rows_of_edges()
        sel = keep[old]
        edge_rows, keys, scores = [old[sel]], [lists.key[sel]], [lists.score[sel]]
        bound, levels = lists.bound.copy(), lists.level.copy()
    else:
        bound, levels = np.full(n, -np.inf, np.float32), np.zeros(n, np.int8)
    for lev in np.unique(level):
        r = rows[level == lev]
        k, s, b = _generate(cands, unit, r, int(lev))
        valid = k >= 0
        edge_rows.append(np.repeat(r, valid.sum(1)))
        keys.append(k[valid])
        scores.append(s[valid])
        bound[r], levels[r] = b, lev
    edge_rows = np.concatenate(edge_rows)
    order = np.argsort(edge_rows, kind="stable")  # each row's edges come from one source, already sorted
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(edge_rows, minlength=n), out=indptr[1:])
    return Lists(indptr, np.concatenate(keys)[order], np.concatenate(scores)[order], bound, levels)


def widen(
    cands: SystemCandidates, unit: UnitRows, lists: Lists, rows: np.ndarray, step: int = 1
) -> tuple[Lists, np.ndarray]:
    """Lists ``step`` levels wider for ``rows``; returns the new lists and the rows that were already at the top."""
    top = lists.level[rows] >= len(LEVELS) - 1
    rows = rows[~top]
    if rows.size:
        lists = build_lists(cands, unit, lists, rows, np.minimum(lists.level[rows] + step, len(LEVELS) - 1))
    return lists, np.flatnonzero(top)


def edges_of(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Edge positions of ``rows`` (in row order)."""
    counts = indptr[rows + 1] - indptr[rows]
    starts = np.repeat(indptr[rows] - np.cumsum(counts) + counts, counts)
    return starts + np.arange(counts.sum())


def certify_heads(cands: SystemCandidates, unit: UnitRows, lists: Lists) -> Lists:
    """Widen the lists whose first candidate is below the bound, so that it is the class's true nearest vector."""
    while True:
        rows = np.flatnonzero(lists.head < lists.bound)
        rows = rows[lists.level[rows] < len(LEVELS) - 1]
        if not rows.size:
            return lists
        lists, _ = widen(cands, unit, lists, rows)
