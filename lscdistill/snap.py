"""``snap``: give every class a distinct vector of a vector system, closest to its mean embedding (paper §6.6).

The problem is an assignment: classes x system vectors, weight ``cos(mean_c, v_s)``, each class one vector, no
vector twice, total cosine maximal. No ``[n_classes, |S|]`` matrix is ever built (A_384 with one interpolation
level has 56.8M vectors); each class gets a short **candidate list** with a **bound** instead:

- Candidates, O(n_dim) per class. A permutation family scores a placement as ``sum(value * x[coord]) / norm``, so
  good placements put the positive values on the largest coordinates of the (lifted) mean and the negative ones
  on the smallest. We enumerate the placements on the top-T / bottom-T coordinates (plus the dropped coordinate of
  ``drop_last``) with outer sums and keep the K best. Any other vector has a positive value on a coordinate at most
  the (T+1)-th largest or a negative value on one at least the (T+1)-th smallest, the rest bounded by the
  rearrangement optimum: that, or the (K+1)-th score, bounds the cosine of every vector off the list.
- Exact (``method="exact"``): every class also gets a private *dummy* vector worth its bound. Any assignment of the
  whole system maps to this small problem with at least the same total (a class on a vector off its list moves to
  its dummy), so the small problem's optimum bounds the true one from above; when no class takes its dummy, the
  solution is a real assignment reaching that bound: **proven optimal**. Classes that take their dummy get wider
  lists and the problem is solved again. The small problem is split into connected components, solved with SciPy's
  LAPJVsp (``min_weight_full_bipartite_matching``) in the square form of :func:`_solve_batch`.
- Greedy (``method="greedy"``): deferred acceptance (classes propose down their lists, a vector keeps its best
  proposer) gives the greedy matching by decreasing cosine; classes that run out of candidates get wider lists.
  Its gap is bounded by ``sum of each class's own top-1 cosine - total``.
- ``auto``: exact up to :data:`EXACT_AUTO_MAX` classes, greedy above. Either way the result is reported optimal
  when every class got its own nearest vector.

Scores are float32 (the optimum is exact up to that rounding) and are the stored cosines; only classes given a
leftover vector have theirs computed from the vectors. Memory is O(n_classes * (n_dim + K)).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from . import __version__
from .centers import load_system
from .planner import fit_message
from .stores import Store, StoreError, StoreWriter, check_output_path, open_store
from .stores.writer import BLOCK_ROWS
from .systems import create_system
from .systems.base import VectorSystem
from .systems.pattern import Family, PatternSystem, helmert, helmert_t
from .systems.shuffled import ShuffledSystem

__all__ = [
    "EXACT_AUTO_MAX",
    "METHODS",
    "Pca",
    "SnapConfig",
    "SnapReport",
    "SnapResult",
    "fit_pca",
    "load_system",
    "run_snap",
    "snap",
]

METHODS = ("auto", "exact", "greedy")
#: ``method="auto"`` solves exactly unless more than this many classes compete for the same vectors (one
#: connected component of the candidate graph), where it keeps the greedy matching
EXACT_AUTO_MAX = 200_000
#: (T, K) per widening level: the K best placements on the top-T / bottom-T coordinates
LEVELS = ((3, 4), (4, 16), (8, 64), (16, 256), (32, 1024), (64, 4096))
BRUTE_FORCE_MAX = 1 << 20  # systems without candidate structure (planar) are scanned whole up to this size
CHUNK_SCORES = 1 << 23  # candidate scores computed at once (rows per chunk = this / placements per row) ...
CHUNK_ROWS = 16_384  # ... and at most this many rows (larger chunks fall out of the CPU caches)
BATCH_NODES = 200_000  # components are solved together up to this many rows + columns
DENSE_MAX = 1 << 22  # problems with at most this many rows x (columns + rows) are solved as dense matrices
DUMMY_FLOOR = -5.0  # dummy weight of a complete list (bound -inf): below any cosine


# ------------------------------------------------------------------------------------------------ candidates
def _combos(t: int, k: int) -> torch.Tensor:
    c = list(itertools.combinations(range(t), k))
    return torch.tensor(c, dtype=torch.long).reshape(len(c), k)


def _top(
    index: torch.Tensor | None, score: torch.Tensor, bound: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` best columns of ``score [B, M]`` (their ``index`` entries, or positions) and the bound raised to
    the (k+1)-th score. Invalid (-inf) entries get index -1."""
    k1 = min(k + 1, score.shape[1])
    best, arg = torch.topk(score, k1, dim=1)
    if k1 > k:
        bound, best, arg = torch.maximum(bound, best[:, k]), best[:, :k], arg[:, :k]
    keys = arg if index is None else index.gather(1, arg)
    return torch.where(torch.isfinite(best), keys, -1), best, bound


class _FamilyGrid:
    """Placements of one family (one positive and one negative group, 1 or 2 slots each) with its positive slots
    on the top-t coordinates, negative slots on the bottom-t and, with drop_last, one slot on the dropped one."""

    def __init__(self, family: Family, drop: bool, t: int) -> None:
        (v1, k1), (v2, k2) = family.groups
        self.pos_first = v1 > 0
        (self.vp, self.kp), (self.vn, self.kn) = ((v1, k1), (v2, k2)) if self.pos_first else ((v2, k2), (v1, k1))
        self.t = t
        self.variants = [(self.kp, self.kn, math.sqrt(family.sq_norm))]  # (positive slots listed, negative, norm)
        if drop:  # a slot on the dropped coordinate adds nothing to the dot product and shortens the norm
            self.variants.append((self.kp - 1, self.kn, math.sqrt(family.sq_norm - self.vp**2)))
            self.variants.append((self.kp, self.kn - 1, math.sqrt(family.sq_norm - self.vn**2)))
        codes = []  # coordinate codes in slot order: [0, t) top list, [t, 2t) bottom list, 2t the dropped one
        for a, b, _ in self.variants:
            for p in itertools.combinations(range(t), a):
                for q in itertools.combinations(range(t), b):
                    pos, neg = [*p, *[2 * t] * (self.kp - a)], [*(t + j for j in q), *[2 * t] * (self.kn - b)]
                    codes.append(pos + neg if self.pos_first else neg + pos)
        self.codes = torch.tensor(codes, dtype=torch.long)
        self.combos = {k: _combos(t, k) for k in {self.kp, self.kp - 1, self.kn, self.kn - 1}}

    def scores(self, top: torch.Tensor, bot: torch.Tensor, clash: torch.Tensor | None) -> torch.Tensor:
        """``[B, n_codes]`` cosines from the top values ``[B, t]`` (descending) and the bottom ones (ascending).
        ``clash [B, t, t]`` (float) marks top and bottom entries on the same coordinate (ties), or is None."""
        out = []
        for a, b, norm in self.variants:
            p, q = self.combos[a], self.combos[b]
            s = (top[:, p].sum(-1) * self.vp)[:, :, None] + (bot[:, q].sum(-1) * self.vn)[:, None, :]
            if clash is not None and a and b:
                hit = torch.einsum("pi,bij,qj->bpq", _onehot(p, self.t), clash, _onehot(q, self.t)) > 0
                s = s.masked_fill(hit, -math.inf)
            out.append((s / norm).flatten(1))
        return torch.cat(out, dim=1)

    def bound(self, top: torch.Tensor, bot: torch.Tensor, top_out: torch.Tensor, bot_out: torch.Tensor) -> torch.Tensor:
        """Bound on every placement with a slot off its list: that slot on the (t+1)-th value, the rest best."""
        out = []
        for a, b, norm in self.variants:
            pos_rest, neg_rest = self.vp * top[:, :a].sum(1), self.vn * bot[:, :b].sum(1)
            if a:
                out.append((self.vp * (top_out + top[:, : a - 1].sum(1)) + neg_rest) / norm)
            if b:
                out.append((self.vn * (bot_out + bot[:, : b - 1].sum(1)) + pos_rest) / norm)
        return torch.stack(out, dim=1).amax(dim=1)


def _onehot(combos: torch.Tensor, t: int) -> torch.Tensor:
    return torch.zeros(combos.shape[0], t).scatter_(1, combos, 1.0)


class _Candidates:
    """Candidate lists of a system for unit rows, in an integer *key* space (equal key <=> same vector).

    The grid path keys a placement by its family and its sorted coordinates (cheaper than the system index);
    the other paths use base-system indices. :meth:`base_indices` turns keys into indices of the unshuffled
    system; a seeded system's indices are mapped at the very end.
    """

    def __init__(self, system: VectorSystem) -> None:
        self.base = system.base if isinstance(system, ShuffledSystem) else system
        b = self.base
        pattern = isinstance(b, PatternSystem)
        self.grid = pattern and all(
            type(f) is Family and len(f.groups) == 2 and (f.groups[0][0] > 0) != (f.groups[1][0] > 0)
            for f in b.families
        )
        self.shortlist = not self.grid and pattern and bool(b.shortlist_sizes())
        if not (self.grid or self.shortlist) and len(b) > BRUTE_FORCE_MAX:
            raise ValueError(
                f"snap cannot search {b!r}: no candidate structure and more than {BRUTE_FORCE_MAX:,} vectors"
            )
        if self.grid:
            self.n_coords, self.width = b.n_coords, b.n_coords - b._drop
            self.slots = max(len(f.slot_values) for f in b.families)
            self.radix = self.n_coords**self.slots
        self._grids: dict[int, tuple[list[_FamilyGrid], torch.Tensor, torch.Tensor]] = {}
        self._table: torch.Tensor | None = None

    def placements(self, level: int) -> int:
        """Scores computed per row at ``level`` (sets the chunk size)."""
        if self.grid:
            return self._grid_tables(min(LEVELS[level][0], self.width))[1].shape[0]
        return 4 * LEVELS[level][0] ** 2 * len(self.base.families) if self.shortlist else len(self.base)

    def __call__(self, unit: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(keys [B, K], score [B, K] float32, bound [B] float32)`` for finite unit rows ``[B, D]``, sorted by
        decreasing score, padded with key -1 / score -inf."""
        t, k = LEVELS[level]
        if self.grid:
            return self._grid(unit, min(t, self.width), k)
        if self.shortlist:
            sizes = self.base.shortlist_sizes()
            found = self.base.candidates(unit, next((m for m in sizes if m >= t), sizes[-1]))
            return _top(found.index, found.score, found.bound, k)
        if self._table is None:
            self._table = self.base.materialize()
        score = unit @ self._table.T
        everything = torch.arange(len(self.base)).expand_as(score)
        return _top(everything, score, score.new_full(score[:, 0].shape, -math.inf), k)

    def _grid_tables(self, t: int) -> tuple[list[_FamilyGrid], torch.Tensor, torch.Tensor]:
        if t not in self._grids:
            grids = [_FamilyGrid(f, self.base._drop, t) for f in self.base.families]
            pad = [torch.cat([g.codes, g.codes[:, -1:].expand(-1, self.slots - g.codes.shape[1])], 1) for g in grids]
            family = torch.cat([torch.full((g.codes.shape[0],), f, dtype=torch.long) for f, g in enumerate(grids)])
            self._grids[t] = (grids, torch.cat(pad), family)
        return self._grids[t]

    def _grid(self, unit: torch.Tensor, t: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = helmert_t(unit) if self.base.projection == "orthonormal" else unit
        b = x.shape[0]
        top_v, top_i = torch.topk(x, min(t + 1, self.width), dim=1)
        bot_v, bot_i = torch.topk(-x, min(t + 1, self.width), dim=1)
        bot_v = -bot_v
        top_i, bot_i = top_i[:, :t], bot_i[:, :t]
        clash = top_i[:, :, None] == bot_i[:, None, :]  # one coordinate on both lists (ties, or 2t > width)
        clash = clash.float() if bool(clash.any()) else None
        grids, codes, family = self._grid_tables(t)
        score = torch.cat([g.scores(top_v[:, :t], bot_v[:, :t], clash) for g in grids], dim=1)
        if t < self.width:
            bound = torch.stack([g.bound(top_v, bot_v, top_v[:, t], bot_v[:, t]) for g in grids], 1).amax(1)
        else:  # every coordinate is on both lists: nothing is left out
            bound = x.new_full((b,), -math.inf)
        arg, score, bound = _top(None, score, bound, k)
        valid, arg = arg >= 0, arg.clamp(min=0)
        support = torch.cat([top_i, bot_i, top_i.new_full((b, 1), self.n_coords - 1)], dim=1)
        pos = support.gather(1, codes[arg].flatten(1)).view(*arg.shape, self.slots)
        fam = family[arg]
        key = torch.zeros_like(arg)
        for f, family_f in enumerate(self.base.families):  # sort within groups, then mixed radix
            p, start = pos[..., : len(family_f.slot_values)], 0
            digits = []
            for _, size in family_f.groups:
                g = p[..., start : start + size]
                digits += (
                    [g[..., 0]]
                    if size == 1
                    else [torch.minimum(g[..., 0], g[..., 1]), torch.maximum(g[..., 0], g[..., 1])]
                )
                start += size
            packed = sum(d * self.n_coords**s for s, d in enumerate(digits))
            key = torch.where(fam == f, f * self.radix + packed, key)
        return torch.where(valid, key, -1), score, bound

    def vectors(self, keys: np.ndarray) -> torch.Tensor:
        """Unit vectors ``[B, n_dim]`` float32 of ``keys``, straight from the coordinates of the grid's keys."""
        if not self.grid:
            return self.base.vectors(torch.from_numpy(keys))
        keys = torch.from_numpy(keys)
        family, rest = keys // self.radix, keys % self.radix
        digits = torch.stack([(rest // self.n_coords**s) % self.n_coords for s in range(self.slots)], dim=1)
        values = torch.zeros(len(keys), self.slots)
        for f, fam in enumerate(self.base.families):  # a key's digits are in slot order; pad with the last slot
            slot_values = [*fam.slot_values, *[fam.slot_values[-1]] * (self.slots - len(fam.slot_values))]
            values = torch.where((family == f)[:, None], torch.tensor(slot_values), values)
            last = len(fam.slot_values) - 1
            digits[family == f, last + 1 :] = digits[family == f, last : last + 1]
        v = torch.zeros(len(keys), self.n_coords).scatter_(1, digits, values)
        b = self.base  # the projection of PatternSystem._vectors
        v = v[:, : b.n_dim] if b._drop else helmert(v) if b.projection == "orthonormal" else v
        return v / torch.linalg.vector_norm(v, dim=1, keepdim=True)

    def base_indices(self, keys: np.ndarray) -> np.ndarray:
        """Indices in the unshuffled system of ``keys``."""
        keys = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.int64))
        if not self.grid:
            return keys.numpy()
        idx = torch.empty_like(keys)
        family, rest = keys // self.radix, keys % self.radix
        for f, fam in enumerate(self.base.families):
            sel = family == f
            digits = [(rest[sel] // self.n_coords**s) % self.n_coords for s in range(len(fam.slot_values))]
            idx[sel] = self.base._offsets[f] + fam.index(torch.stack(digits, dim=1))
        return idx.numpy()


# ------------------------------------------------------------------------------------------------ the lists
@dataclass
class _Lists:
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


class _UnitRows:
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


def _generate(cands: _Candidates, unit: _UnitRows, rows: np.ndarray, level: int) -> tuple[np.ndarray, ...]:
    """Lists of ``rows`` at ``level``: ``(keys [r, K], score [r, K], bound [r])`` computed chunk by chunk."""
    chunk = max(1, min(CHUNK_ROWS, CHUNK_SCORES // max(1, cands.placements(level))))
    parts = [cands(unit(rows[s : s + chunk]), level) for s in range(0, len(rows), chunk)]
    return tuple(torch.cat([p[i] for p in parts]).numpy() for i in range(3))


def _build(cands: _Candidates, unit: _UnitRows, lists: _Lists | None, rows: np.ndarray, level: np.ndarray) -> _Lists:
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
    return _Lists(indptr, np.concatenate(keys)[order], np.concatenate(scores)[order], bound, levels)


def _widen(
    cands: _Candidates, unit: _UnitRows, lists: _Lists, rows: np.ndarray, step: int = 1
) -> tuple[_Lists, np.ndarray]:
    """Lists ``step`` levels wider for ``rows``; returns the new lists and the rows that were already at the top."""
    top = lists.level[rows] >= len(LEVELS) - 1
    rows = rows[~top]
    if rows.size:
        lists = _build(cands, unit, lists, rows, np.minimum(lists.level[rows] + step, len(LEVELS) - 1))
    return lists, np.flatnonzero(top)


def _edges_of(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Edge positions of ``rows`` (in row order)."""
    counts = indptr[rows + 1] - indptr[rows]
    starts = np.repeat(indptr[rows] - np.cumsum(counts) + counts, counts)
    return starts + np.arange(counts.sum())


# ------------------------------------------------------------------------------------------------- greedy
def _greedy(
    cands: _Candidates, unit: _UnitRows, lists: _Lists, log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray, _Lists]:
    """The greedy matching by decreasing cosine over the whole system.

    Deferred acceptance over the lists gives the matching in which no class and vector both prefer each other to
    their partners (stable), which for preferences from one common weight is the greedy matching. A class whose
    vector scores below its list's bound might prefer a vector off its list: its list is widened and the
    matching redone until none is left. Returns ``(edge per class or -1, classes left without a vector, lists)``.
    """
    for rounds in itertools.count(1):
        edge, stuck, lists = _accept(cands, unit, lists)
        held = np.flatnonzero(edge >= 0)
        low = held[(lists.score[edge[held]] < lists.bound[held]) & (lists.level[held] < len(LEVELS) - 1)]
        log(f"greedy round {rounds}: {len(stuck):,} classes without a vector, {len(low):,} need wider lists")
        if not low.size:
            return edge, stuck, lists
        lists, _ = _widen(cands, unit, lists, low)
    raise AssertionError("unreachable")


def _accept(cands: _Candidates, unit: _UnitRows, lists: _Lists) -> tuple[np.ndarray, np.ndarray, _Lists]:
    """Deferred acceptance: each free class proposes to its next candidate, each vector keeps its best proposer
    (higher cosine, then the earlier holder); classes that run out of candidates get wider lists."""
    n = len(lists.bound)
    cols, cid = np.unique(lists.key, return_inverse=True)
    owner, owner_score = np.full(len(cols), -1, np.int64), np.full(len(cols), -np.inf, np.float32)
    offset = np.zeros(n, dtype=np.int64)  # next candidate of each class, within its list
    free, stuck = np.arange(n), np.zeros(0, dtype=np.int64)
    while free.size:
        while free.size:
            ptr = lists.indptr[free] + offset[free]
            has = ptr < lists.indptr[free + 1]
            exhausted, f, e = free[~has], free[has], ptr[has]
            offset[f] += 1
            c, s = cid[e], lists.score[e]
            order = np.lexsort((f, -s, c))
            f, c, s = f[order], c[order], s[order]
            first = np.ones(len(c), dtype=bool)
            first[1:] = c[1:] != c[:-1]
            win = first.copy()
            win[first] = s[first] > owner_score[c[first]]
            displaced = owner[c[win]]
            owner[c[win]], owner_score[c[win]] = f[win], s[win]
            free = np.concatenate([f[~win], displaced[displaced >= 0]])
            if exhausted.size:
                break
        if not exhausted.size:
            continue
        # Wider lists for the classes that ran out; keep every class's place and every vector's owner.
        held = owner >= 0
        held_cols, held_by = cols[held], owner[held]
        lists, top = _widen(cands, unit, lists, exhausted)
        stuck = np.concatenate([stuck, exhausted[top]])
        widened = exhausted[~np.isin(np.arange(exhausted.size), top)]
        offset[widened] = 0
        cols, cid = np.unique(lists.key, return_inverse=True)
        owner, owner_score = np.full(len(cols), -1, np.int64), np.full(len(cols), -np.inf, np.float32)
        at = np.searchsorted(cols, held_cols)
        owner[at] = held_by
        owner_score[at] = lists.score[_edge_to(lists, cid, held_by, at)]
        offset[held_by] = _edge_to(lists, cid, held_by, at) - lists.indptr[held_by] + 1
        free = np.concatenate([free, widened])
    edge = np.full(n, -1, dtype=np.int64)
    held = owner >= 0
    edge[owner[held]] = _edge_to(lists, cid, owner[held], np.flatnonzero(held))
    return edge, stuck, lists


def _edge_to(lists: _Lists, cid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Position of the edge (row, col) in the CSR lists, for pairs known to exist."""
    e = _edges_of(lists.indptr, rows)
    match = cid[e] == np.repeat(cols, np.diff(lists.indptr)[rows])
    return e[match]


# -------------------------------------------------------------------------------------------------- exact
def _solve_batch(row: np.ndarray, col: np.ndarray, weight: np.ndarray, dummy: np.ndarray) -> np.ndarray:
    """Best assignment of R rows to distinct columns (``(row, col, weight)`` edges, local ids) or to their private
    dummy (weight ``dummy [R]``). Returns the chosen edge of each row, -1 for its dummy.

    SciPy's LAPJVsp costs O(rows x columns) on a rectangular problem (every row starts free), so the problem is
    made square: one filler row per real column, adjacent to that column and to the dummy of every row listing
    it. A filler edge has the same weight everywhere, so it does not change the optimum; making it the heaviest
    lets LAPJVsp's initialization settle most rows before any shortest-path search.
    """
    r, c = len(dummy), int(col.max()) + 1 if col.size else 0
    dummy = np.maximum(dummy, DUMMY_FLOOR)
    if r * (c + r) <= DENSE_MAX:  # small: a dense matrix (missing edges far below any dummy) is faster
        dense = np.full((r, c + r), -1e6)
        dense[row, col] = weight
        dense[np.arange(r), c + np.arange(r)] = dummy
        chosen = linear_sum_assignment(dense, maximize=True)[1]
    else:
        filler = 10.0  # above every shifted cosine weight (at most 3)
        rows = np.concatenate([row, np.arange(r), r + np.arange(c), r + col])
        cols = np.concatenate([col, c + np.arange(r), np.arange(c), c + row])
        data = np.concatenate([weight + 2.0, dummy + 2.0, np.full(c + len(col), filler)])
        graph = sp.csr_array((data, (rows, cols)), shape=(r + c, r + c))  # weights in [1, 3] and -3: never zero
        chosen = min_weight_full_bipartite_matching(graph, maximize=True)[1][:r]
    edge = np.full(r, -1, dtype=np.int64)
    real = np.flatnonzero(chosen < c)
    pair = row.astype(np.int64) * max(c, 1) + col
    order = np.argsort(pair)
    edge[real] = order[np.searchsorted(pair, real * max(c, 1) + chosen[real], sorter=order)]
    return edge


def _exact_round(lists: _Lists, rows: np.ndarray, label: np.ndarray, cid: np.ndarray) -> np.ndarray:
    """Solve the components of ``rows`` (whole components); returns the chosen edge per row, -1 = its dummy.

    ``label`` holds the component of every class (first ``n``) and every column (after).
    """
    n = len(lists.bound)
    comp = label[:n][rows]
    counts = np.diff(lists.indptr)
    edge = np.full(len(rows), -1, dtype=np.int64)
    n_rows = np.bincount(comp, minlength=label.max() + 1)
    single = n_rows[comp] == 1  # alone with its columns: its best candidate, unless the dummy is better
    first = lists.indptr[rows[single]]
    has = counts[rows[single]] > 0
    ok = has & (lists.score[np.minimum(first, max(len(cid) - 1, 0))] >= lists.bound[rows[single]])
    edge[np.flatnonzero(single)[ok]] = first[ok]
    multi = np.flatnonzero(~single)
    if not multi.size:
        return edge
    multi = multi[np.argsort(comp[multi], kind="stable")]
    nodes = n_rows + np.bincount(label[n:], minlength=len(n_rows))  # rows + columns per component
    comps = np.unique(comp[multi])
    batch_of = np.zeros(len(n_rows), dtype=np.int64)
    batch_of[comps] = np.cumsum(nodes[comps]) // BATCH_NODES
    for b in np.unique(batch_of[comps]):
        sel = multi[batch_of[comp[multi]] == b]
        e = _edges_of(lists.indptr, rows[sel])
        local_row = np.repeat(np.arange(len(sel)), counts[rows[sel]])
        _, local_col = np.unique(cid[e], return_inverse=True)
        chosen = _solve_batch(
            local_row, local_col, lists.score[e].astype(np.float64), lists.bound[rows[sel]].astype(np.float64)
        )
        edge[sel] = np.where(chosen >= 0, e[np.maximum(chosen, 0)], -1)
    return edge


def _exact(
    cands: _Candidates,
    unit: _UnitRows,
    lists: _Lists,
    start: np.ndarray,
    log: Callable[[str], None],
    max_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float, bool, _Lists] | None:
    """Optimal assignment over the lists with dummies, widening the lists of classes that take their dummy.

    Returns ``(edge per class or -1, classes left without a vector, upper bound on the optimum, proven, lists)``.
    The bound is the lowest optimum of a round whose dummies all had valid bounds; ``proven``: the last round
    used no dummy and no bound was dropped, so the assignment reaches the bound. Returns None at once if a
    group of competing classes (a connected component) has more than ``max_rows`` classes. ``start`` is an
    assignment to compare with (the greedy one): classes that move in a round with dummies sit on the chains
    of displacements that the dummies end, and get wider lists too (fewer rounds).
    """
    before = np.where(start >= 0, lists.key[np.maximum(start, 0)], -1)
    n = len(lists.bound)
    offset = np.full(n, -1, dtype=np.int64)  # chosen candidate within each list (lists change between rounds)
    dirty, floored = np.arange(n), np.zeros(n, dtype=bool)
    upper, rounds = math.inf, 0
    while dirty.size:
        rounds += 1
        cols, cid = np.unique(lists.key, return_inverse=True)
        ones = np.ones(len(cid), dtype=np.int8)
        graph = sp.csr_array((ones, (lists.rows_of_edges(), n + cid)), shape=(n + len(cols),) * 2)
        _, label = connected_components(graph, directed=False)
        largest = int(np.bincount(label[:n]).max())
        if rounds == 1 and max_rows is not None and largest > max_rows:
            log(f"{largest:,} classes compete for the same vectors: more than {max_rows:,}, keeping greedy")
            return None
        todo = np.zeros(label.max() + 1, dtype=bool)
        todo[label[dirty]] = True
        rows = np.flatnonzero(todo[label[:n]])
        chosen = _exact_round(lists, rows, label, cid)
        offset[rows] = np.where(chosen >= 0, chosen - lists.indptr[rows], -1)
        edge = np.where(offset >= 0, lists.indptr[:-1] + offset, -1)
        dummy = np.flatnonzero(edge < 0)
        if not floored.any():
            value = lists.score[edge[edge >= 0]].astype(np.float64).sum() + lists.bound[dummy].astype(np.float64).sum()
            upper = min(upper, value)
        log(f"exact round {rounds}: {len(rows):,} classes solved, {dummy.size:,} need wider lists")
        now = np.where(edge >= 0, lists.key[np.maximum(edge, 0)], -1)
        moved = np.flatnonzero((now != before) & (edge >= 0)) if dummy.size else dummy
        before = now
        dummy = dummy[~floored[dummy]]
        lists, top = _widen(cands, unit, lists, dummy, step=min(rounds, 2))  # each round costs a solve
        lists, _ = _widen(cands, unit, lists, moved)
        if top.size:  # complete lists that still lose to their bound: take real vectors if any are left
            floored[dummy[top]] = True
            lists.bound[dummy[top]] = -np.inf
        dirty = dummy
    edge = np.where(offset >= 0, lists.indptr[:-1] + offset, -1)
    return edge, np.flatnonzero(edge < 0), upper, not floored.any() and (edge >= 0).all(), lists


def _certify_heads(cands: _Candidates, unit: _UnitRows, lists: _Lists) -> _Lists:
    """Widen the lists whose first candidate is below the bound, so that it is the class's true nearest vector."""
    while True:
        rows = np.flatnonzero(lists.head < lists.bound)
        rows = rows[lists.level[rows] < len(LEVELS) - 1]
        if not rows.size:
            return lists
        lists, _ = _widen(cands, unit, lists, rows)


# --------------------------------------------------------------------------------------------------- PCA
@dataclass
class Pca:
    """PCA of the class means: ``reduce(x) = (x - mean) @ components.T`` (float64)."""

    mean: np.ndarray  # [D_in]
    components: np.ndarray  # [dim, D_in], orthonormal rows by decreasing variance
    explained_variance: np.ndarray  # [dim]
    total_variance: float
    n_fitted: int  # class means it was fitted on

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D_in] -> [B, dim]`` float64."""
        return (x.double() - torch.from_numpy(self.mean)) @ torch.from_numpy(self.components).T

    def describe(self) -> dict[str, Any]:
        return {
            "method": "pca",
            "dim": int(self.components.shape[0]),
            "input_dim": int(self.components.shape[1]),
            "fitted_on_classes": self.n_fitted,
            "explained_variance_ratio": float(self.explained_variance.sum() / self.total_variance)
            if self.total_variance > 0
            else 1.0,
        }


def fit_pca(means: torch.Tensor, dim: int, rows: np.ndarray | None = None, block: int = 65_536) -> Pca:
    """Fit a ``dim``-component PCA on the rows of ``means [n, D_in]`` (all, or ``rows``), in float64.

    The covariance is accumulated block by block (memory O(block * D_in + D_in^2)); each component's sign makes its
    largest-magnitude entry positive, so the result is deterministic.
    """
    d_in = means.shape[1]
    if not 1 <= dim <= d_in:
        raise ValueError(f"--dim {dim} for PCA must be between 1 and the means' n_dim {d_in}")
    rows = np.arange(len(means)) if rows is None else rows
    if rows.size == 0:
        raise ValueError("PCA needs at least one class mean")
    total = torch.zeros(d_in, dtype=torch.float64)
    for s in range(0, len(rows), block):
        total += means[torch.from_numpy(rows[s : s + block])].double().sum(0)
    mean = total / len(rows)
    cov = torch.zeros(d_in, d_in, dtype=torch.float64)
    for s in range(0, len(rows), block):
        x = means[torch.from_numpy(rows[s : s + block])].double() - mean
        cov += x.T @ x
    values, vectors = torch.linalg.eigh(cov / len(rows))
    values, vectors = values.flip(0)[:dim], vectors.flip(1)[:, :dim].T
    sign = torch.sign(vectors.gather(1, vectors.abs().argmax(1, keepdim=True)))
    vectors = vectors * torch.where(sign == 0, 1.0, sign)
    return Pca(
        mean.numpy(),
        vectors.contiguous().numpy(),
        values.clamp(min=0).numpy(),
        float(cov.trace()) / len(rows),
        len(rows),
    )


# -------------------------------------------------------------------------------------------------- snap
@dataclass
class SnapReport:
    """What a snap did and how good it is. Cosines are float64 sums over the classes."""

    n_classes: int
    method: str  # "exact" or "greedy": what ran
    optimal: bool  # proven: exact certificate, or every class got its own nearest vector
    total_cosine: float
    mean_cosine: float
    min_cosine: float
    not_top1: int  # classes that did not get their own nearest system vector
    upper_bound: float  # proven upper bound on the best possible total cosine
    gap: float  # upper_bound - total_cosine (>= the true gap to the optimum)
    relative_gap: float
    leftover: int  # classes without a usable mean (empty, zero) given unused vectors, cosine 0
    levels: dict[str, int]  # classes per candidate-list width "T/K"
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SnapResult:
    system_index: np.ndarray  # [n] int64, indices of the system as given (seeded: its shuffled order)
    cosine: np.ndarray  # [n] float64 (0 for leftover classes)
    report: SnapReport
    vectors: Callable[[slice], torch.Tensor]  # unit vectors of the classes in a slice, [r, n_dim] float32


def snap(
    means: torch.Tensor,
    system: VectorSystem,
    *,
    method: str = "auto",
    counts: np.ndarray | None = None,
    allow_empty: bool = False,
    log: Callable[[str], None] | None = None,
) -> SnapResult:
    """Give every class a distinct vector of ``system``, maximizing the total cosine to the class means.

    Args:
        means: ``[n, n_dim]`` class means (any float dtype), ``n <= len(system)``.
        system: the target vector system (seeded or not; the indices returned are in its own order).
        method: ``exact`` (proven optimum), ``greedy`` (fast, gap bounded) or ``auto`` (exact up to
            :data:`EXACT_AUTO_MAX` classes).
        counts: samples per class; a class with count 0 has no mean (refused unless ``allow_empty``).
        allow_empty: give empty classes (and zero means) unused vectors, cosine 0, instead of refusing.
        log: receives one line per stage (progress, diagnostics).

    Raises:
        ValueError: bad shapes, NaN/Inf means, empty classes (unless allowed), more classes than vectors.
    """
    log = log or (lambda _msg: None)
    start, timings = time.perf_counter(), {}
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(means, torch.Tensor) or means.dim() != 2 or not means.dtype.is_floating_point:
        raise ValueError("means must be a floating [n_classes, n_dim] tensor")
    n = means.shape[0]
    if means.shape[1] != system.n_dim:
        raise ValueError(f"the means have n_dim {means.shape[1]} but the system has {system.n_dim}")
    if n > len(system):
        d = system.describe()
        raise ValueError(fit_message(n, system.name, system.n_dim, d.get("interpolations", 0)))
    finite, nonzero = _scan(means)
    if not finite.all():
        raise ValueError(_nan_message(finite))
    empty = np.zeros(n, dtype=bool) if counts is None else np.asarray(counts) == 0
    if empty.any() and not allow_empty:
        raise ValueError(_empty_message(counts))
    usable = ~empty & nonzero
    active = np.flatnonzero(usable)
    cands = _Candidates(system)
    sub = _UnitRows(means, active)
    first = _build(cands, sub, None, np.arange(len(active)), np.zeros(len(active), np.int8))
    lists = _certify_heads(cands, sub, first)
    top1 = lists.head.astype(np.float64)
    timings["candidates"] = time.perf_counter() - start
    log(f"candidates for {len(active):,} classes in {timings['candidates']:.1f} s")
    t = time.perf_counter()
    # Greedy first: it is optimal when every class gets its own nearest vector, and it widens the lists where
    # classes compete, which saves the exact solver rounds.
    edge, stuck, lists = _greedy(cands, sub, lists, log)
    upper, proven, ran = math.inf, False, "greedy"
    if method != "greedy" and not (stuck.size == 0 and (lists.score[edge] >= top1).all()):
        solved = _exact(cands, sub, lists, edge, log, max_rows=EXACT_AUTO_MAX if method == "auto" else None)
        if solved is not None:
            (edge, stuck, upper, proven, lists), ran = solved, "exact"
    timings["assign"] = time.perf_counter() - t
    log(f"{ran} assignment in {timings['assign']:.1f} s")

    got = edge >= 0
    keys = np.full(n, -1, dtype=np.int64)
    keys[active[got]] = lists.key[edge[got]]
    base = np.full(n, -1, dtype=np.int64)
    base[active[got]] = cands.base_indices(keys[active[got]])
    left = np.concatenate([np.flatnonzero(~usable), active[~got]])
    if left.size:  # the lowest unused vectors
        used = np.sort(base[base >= 0])
        base[left] = np.setdiff1d(np.arange(min(len(cands.base), used.size + left.size)), used, True)[: left.size]
    index = base if not isinstance(system, ShuffledSystem) else system.from_base(torch.from_numpy(base)).numpy()

    def vectors(rows: slice) -> torch.Tensor:
        k = keys[rows]
        if (k >= 0).all():
            return cands.vectors(k)
        out = system.vectors(torch.from_numpy(index[rows]))
        out[torch.from_numpy(k >= 0)] = cands.vectors(k[k >= 0])
        return out

    cosine = np.zeros(n)  # the scores are the cosines (float32): no need to build the vectors
    cosine[active[got]] = lists.score[edge[got]]
    stray = active[~got]  # given leftover vectors
    if stray.size:
        u = _UnitRows(means, stray)(np.arange(stray.size))
        cosine[stray] = (u * system.vectors(torch.from_numpy(index[stray]))).sum(1).double().numpy()

    score = np.where(got, lists.score[np.maximum(edge, 0)], -np.inf)
    total = float(cosine.sum())
    not_top1 = int((score < top1.astype(np.float32)).sum())
    proven = stuck.size == 0 and (proven or not_top1 == 0)
    upper = total if proven else min(upper, float(top1.sum()))
    gap = max(0.0, upper - total)
    levels = np.bincount(lists.level, minlength=len(LEVELS))
    report = SnapReport(
        n_classes=n,
        method=ran,
        optimal=bool(proven),
        total_cosine=total,
        mean_cosine=total / n,
        min_cosine=float(cosine.min()),
        not_top1=not_top1,
        upper_bound=upper,
        gap=gap,
        relative_gap=gap / abs(upper) if upper else 0.0,
        leftover=int(left.size),
        levels={f"{t}/{k}": int(c) for (t, k), c in zip(LEVELS, levels, strict=True) if c},
        seconds=time.perf_counter() - start,
        timings=timings,
    )
    return SnapResult(index, cosine, report, vectors)


def _nan_message(finite: np.ndarray) -> str:
    bad = np.flatnonzero(~finite)
    return f"{len(bad):,} class means contain NaN or Inf (classes {bad[:5].tolist()}); fix the store first"


def _empty_message(counts: np.ndarray) -> str:
    empty = np.flatnonzero(np.asarray(counts) == 0)
    return (
        f"{len(empty):,} classes have no samples (count 0, e.g. classes {empty[:5].tolist()}), so no mean to snap; "
        "pass --allow-empty to give them unused vectors (cosine 0)"
    )


def _scan(means: torch.Tensor, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Per row: all finite, and not all zero (block by block: no temporary the size of the means)."""
    finite, nonzero = np.ones(len(means), dtype=bool), np.ones(len(means), dtype=bool)
    for s in range(0, len(means), block):
        x = means[s : s + block]
        norm = torch.linalg.vector_norm(x, dim=1)  # fast; overflow and underflow are checked exactly below
        ok, big = torch.isfinite(norm), norm > 0
        odd = (~ok | ~big).nonzero().squeeze(1)
        if odd.numel():
            ok[odd], big[odd] = torch.isfinite(x[odd]).all(dim=1), (x[odd] != 0).any(dim=1)
        finite[s : s + block], nonzero[s : s + block] = ok.numpy(), big.numpy()
    return finite, nonzero


# ------------------------------------------------------------------------------------------ store to store
@dataclass
class SnapConfig:
    """Everything ``lscdistill snap`` needs (the CLI flags one to one)."""

    means: Path  # a class-means store (kind "means", from extract or merge)
    out: Path  # the snapped store to write
    system: str = "an"  # vector system name
    seed: int | None = None  # seeded shuffle of the system's indices (A_nr); the vectors are the same
    interpolations: int = 0
    projection: str | None = None  # None: the system's default (an: drop_last)
    dim: int | None = None  # target n_dim; None: the store's n_dim
    reduce: str = "none"  # "pca": reduce the means to `dim` first (fitted on the class means)
    method: str = "auto"  # auto, exact, greedy
    allow_empty: bool = False  # give empty classes unused vectors instead of refusing
    overwrite: bool = False
    command: str | None = None  # recorded in the provenance


def _open_means(path: Path) -> Store:
    store = open_store(path)
    if store.kind != "means":
        store.close()
        hint = {
            "partial": "it holds sums only: merge it into a means store first (lscdistill merge OUT.h5 PARTIAL.h5 ...)",
            "snapped": "it is already snapped: snap the class-means store it was made from",
        }[store.kind]
        raise StoreError(f"{path} is a {store.kind!r} store, snap needs a 'means' store; {hint}")
    return store


def run_snap(cfg: SnapConfig, log: Callable[[str], None] | None = None) -> tuple[Path, SnapReport]:
    """Read a class-means store, snap it to a vector system and write a snapped store (atomically)."""
    log = log or (lambda _msg: None)
    check_output_path(cfg.out, cfg.overwrite)  # fail before any work
    if cfg.reduce not in ("none", "pca"):
        raise ValueError(f"--reduce must be none or pca, got {cfg.reduce!r}")
    if cfg.method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    with _open_means(cfg.means) as store:
        dim = store.n_dim if cfg.dim is None else cfg.dim
        if cfg.reduce == "none" and dim != store.n_dim:
            raise ValueError(
                f"dimension mismatch: the means have n_dim {store.n_dim} but --dim is {dim}; "
                f"pass --reduce pca to reduce them to {dim} dims first"
            )
        system = create_system(
            cfg.system, dim, seed=cfg.seed, interpolations=cfg.interpolations, projection=cfg.projection
        )
        if store.n_classes > len(system):
            raise ValueError(fit_message(store.n_classes, cfg.system, dim, cfg.interpolations))
        counts, names = store.counts, store.class_names
        if (counts == 0).any() and not cfg.allow_empty:
            raise ValueError(_empty_message(counts))
        source = {"path": str(Path(cfg.means).resolve()), "provenance": store.provenance}
        start = time.perf_counter()
        means = torch.empty(store.n_classes, store.n_dim)
        for s, rows in store.iter_blocks("centers"):
            means[s : s + len(rows)] = torch.from_numpy(rows)
        read = time.perf_counter() - start
    pca = None
    if cfg.reduce == "pca":
        finite, _ = _scan(means)
        if not finite.all():
            raise ValueError(_nan_message(finite))
        pca = fit_pca(means, dim, np.flatnonzero(counts > 0))
        reduced = torch.empty(len(means), dim)
        for s in range(0, len(means), BLOCK_ROWS):
            reduced[s : s + BLOCK_ROWS] = pca.reduce(means[s : s + BLOCK_ROWS]).float()
        means = reduced
        means[torch.from_numpy(counts == 0)] = 0.0  # an empty class has no mean, before or after PCA
        log(f"PCA {store.n_dim} -> {dim} dims keeps {pca.describe()['explained_variance_ratio']:.1%} of the variance")
    result = snap(means, system, method=cfg.method, counts=counts, allow_empty=cfg.allow_empty, log=log)
    report, definition = result.report, system.describe()
    report.timings["read"] = read
    provenance = {
        "snap": {"system": definition, "method": cfg.method, "reduce": pca.describe() if pca else None},
        "report": {k: v for k, v in report.to_dict().items() if k != "timings"},
        "source": source,
        "command": cfg.command,
        "lscdistill": __version__,
    }
    start = time.perf_counter()
    with StoreWriter(
        cfg.out,
        kind="snapped",
        n_classes=len(means),
        n_dim=dim,
        provenance=provenance,
        class_names=names,
        overwrite=cfg.overwrite,
    ) as writer:
        writer.file.attrs["system"] = json.dumps(definition)
        if pca is not None:
            writer.file.attrs["reduce"] = json.dumps(pca.describe())
            writer.file.create_dataset("pca_mean", data=pca.mean)
            writer.file.create_dataset("pca_components", data=pca.components)
        for s in range(0, len(means), BLOCK_ROWS):
            writer.write_rows(
                s,
                counts=counts[s : s + BLOCK_ROWS],
                centers=result.vectors(slice(s, s + BLOCK_ROWS)).mul_(system.radius),
                system_index=result.system_index[s : s + BLOCK_ROWS],
                cosine=result.cosine[s : s + BLOCK_ROWS].astype(np.float32),
            )
    report.timings["write"] = time.perf_counter() - start
    return Path(cfg.out), report
