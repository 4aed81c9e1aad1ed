"""Permutation systems: all distinct placements of a short pattern of nonzero values among zeros.

A *family* is one pattern in ``N`` coordinates, e.g. ``(1, -1)`` (the A_n roots ``e_i - e_j``) or
``(2, -1, -1)``. A family is a sequence of groups ``(value, k)``: ``k`` equal values placed on a ``k``-subset
of the coordinates the earlier groups left free. Indices are mixed-radix over the groups, each group's subset
ranked in the combinatorial number system (colex), so index <-> positions is integer arithmetic.

Every member of a family has the same norm, so by the rearrangement inequality its best member for a query
``x`` puts the positive values (largest first) on the largest coordinates of ``x`` and the negative values
(most negative first) on the smallest: only the top-p / bottom-q coordinates matter, O(N) per row.

A :class:`PatternSystem` stacks families (grouped into levels) and projects them to ``n_dim``:

- ``native``: the family lives in ``n_dim`` coordinates already (V21, V22);
- ``drop_last``: the paper's A_n projection, the last of ``n_dim + 1`` coordinates is dropped. Members now
  have different norms depending on the value that sat on the dropped coordinate, so the search tries each
  possible value ``t`` there (0 or one of the pattern's values) and compares cosines, each with its own norm;
- ``orthonormal``: an orthonormal (Helmert) basis of the hyperplane ``sum(x) = 0`` keeps every angle; queries
  are lifted back with the transposed basis and searched in ``n_dim + 1`` coordinates.

Ties between coordinates go to the lower coordinate index (``argmax``/``argmin`` return the first
occurrence); ties between variants and families go to the one listed first (roots before interpolated
vectors). On an exact tie between system vectors the fast decoder is thus deterministic but does not always return
the lower system index, which is the exact decoder's rule (the cosine is the same).

The search (:meth:`PatternSystem.nearest`) is a branch-free tensor program: the extreme coordinates all families
need are found once (:class:`~lscdistill.systems.ranks.RankPlan`), every variant is scored from them, and the best
is picked with ``argmax``: fixed shapes, no host synchronization, exportable with ``torch.export``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch

from .base import Candidates, VectorSystem
from .ranks import RankPlan, Ranks

__all__ = ["Family", "PatternSystem", "PositiveRoots", "helmert", "helmert_t"]

_INF = float("inf")


# ------------------------------------------------------------------------------------------- combinatorics
def _comb2(x: torch.Tensor) -> torch.Tensor:
    return x * (x - 1) // 2


def _unrank_pair(r: torch.Tensor) -> torch.Tensor:
    """Colex unranking of 2-subsets: ``r = C(b, 2) + a`` with ``a < b``. Returns ``[..., 2]`` = (a, b)."""
    b = torch.floor((1 + torch.sqrt(1 + 8 * r.double())) / 2).long()
    b = b - (_comb2(b) > r).long()  # float rounding may be off by one either way at huge r
    b = b + (_comb2(b + 1) <= r).long()
    return torch.stack([r - _comb2(b), b], dim=-1)


def _skip(rel: torch.Tensor, occupied: torch.Tensor) -> torch.Tensor:
    """Map relative positions among the free coordinates to absolute ones; ``occupied`` sorted ascending."""
    for c in range(occupied.shape[-1]):
        rel = rel + (rel >= occupied[..., c : c + 1]).long()
    return rel


def _unskip(pos: torch.Tensor, occupied: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_skip`: absolute positions -> rank among the free coordinates."""
    if occupied.shape[-1] == 0:
        return pos
    return pos - (occupied.unsqueeze(-2) < pos.unsqueeze(-1)).long().sum(-1)


# --------------------------------------------------------------------------------------------- rankings
class _Ranked:
    """Largest and smallest coordinates of each row of ``x``, computed on demand (the exact decoder's shortlist).

    ``top(p)`` are the ``p`` largest coordinates (descending, ties to the lower index); ``bottom(p, q)`` the
    ``q`` smallest among the coordinates *outside* ``top(p)`` (ascending), so the two never overlap.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self._top = x.new_empty((x.shape[0], 0), dtype=torch.long)
        self._top_work: torch.Tensor | None = None
        self._argmin: torch.Tensor | None = None
        self._bottom: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def top(self, p: int) -> torch.Tensor:
        if p == 1 and self._top.shape[1] == 0:  # the common case needs no working copy
            self._top = self.x.argmax(dim=1, keepdim=True)
        if p > self._top.shape[1]:
            if self._top_work is None:
                self._top_work = self.x.scatter(1, self._top, -_INF)
            cols = [self._top]
            for _ in range(p - self._top.shape[1]):  # next largest, first occurrence
                i = self._top_work.argmax(dim=1, keepdim=True)
                self._top_work.scatter_(1, i, -_INF)
                cols.append(i)
            self._top = torch.cat(cols, dim=1)
        return self._top[:, :p]

    def bottom(self, p: int, q: int) -> torch.Tensor:
        if q == 1 and p not in self._bottom:  # the common case: the minimum is not among the top p
            if self._argmin is None:
                self._argmin = self.x.argmin(dim=1, keepdim=True)
            if p == 0 or not bool((self._argmin == self.top(p)).any()):
                return self._argmin
        if p not in self._bottom:
            work = self.x.clone()
            if p:
                work.scatter_(1, self.top(p), _INF)
            self._bottom[p] = (work, self.x.new_empty((self.x.shape[0], 0), dtype=torch.long))
        work, have = self._bottom[p]
        if q > have.shape[1]:
            cols = [have]
            for _ in range(q - have.shape[1]):
                j = work.argmin(dim=1, keepdim=True)
                work.scatter_(1, j, _INF)
                cols.append(j)
            have = torch.cat(cols, dim=1)
            self._bottom[p] = (work, have)
        return have[:, :q]

    def place(self, pos_vals: Sequence[float], neg_vals: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Best placement of the values (positives descending, negatives ascending): ``(coords, dot)``."""
        top = self.top(len(pos_vals))
        bot = self.bottom(len(pos_vals), len(neg_vals))
        coords = torch.cat([top, bot], dim=1)
        vals = torch.tensor([*pos_vals, *neg_vals], dtype=self.x.dtype, device=self.x.device)
        return coords, (self.x.gather(1, coords) * vals).sum(dim=1)


class _Variant:
    """One way to search a family: which slot (if any) sits on the dropped coordinate, and the order in
    which the remaining slots take the top / bottom coordinates."""

    def __init__(self, family: Family, drop_slot: int | None, excluded: Sequence[int] = ()) -> None:
        vals = family.slot_values
        rest = [s for s in range(len(vals)) if s != drop_slot and s not in excluded]
        self.pos_slots = sorted((s for s in rest if vals[s] > 0), key=lambda s: -vals[s])
        self.neg_slots = sorted((s for s in rest if vals[s] < 0), key=lambda s: vals[s])
        self.pos_vals = [vals[s] for s in self.pos_slots]
        self.neg_vals = [vals[s] for s in self.neg_slots]
        self.drop_slot = drop_slot
        dropped = vals[drop_slot] ** 2 if drop_slot is not None else 0.0
        self.norm = math.sqrt(family.sq_norm - dropped)
        self.n_placed = len(rest)


# -------------------------------------------------------------------------------------------- families
class Family:
    """All distinct placements of ``groups`` = ``[(value, k), ...]`` into ``n_coords`` coordinates (k <= 2).

    Slots are numbered group by group; ``positions(idx)[:, s]`` is the coordinate of slot ``s``.
    """

    by_variants = True  #: the nearest member is the best of :meth:`variants`, scored from the rank table

    def __init__(self, groups: Sequence[tuple[float, int]], n_coords: int) -> None:
        if any(k not in (1, 2) for _, k in groups):
            raise ValueError("groups of 1 or 2 equal values are supported")
        self.groups = tuple((float(v), int(k)) for v, k in groups)
        self.n_coords = int(n_coords)
        self.slot_values = tuple(v for v, k in self.groups for _ in range(k))
        self.sq_norm = float(sum(v * v for v in self.slot_values))
        free, counts = self.n_coords, []
        for _, k in self.groups:
            counts.append(math.comb(free, k) if free >= k else 0)
            free -= k
        self.size = math.prod(counts)
        self._strides = [math.prod(counts[g + 1 :]) for g in range(len(counts))]
        self._counts = counts

    def __repr__(self) -> str:
        return f"Family({self.slot_values}, N={self.n_coords}, size={self.size})"

    def positions(self, idx: torch.Tensor) -> torch.Tensor:
        """``[B] -> [B, n_slots]`` coordinates of each slot (within a group ascending)."""
        out: list[torch.Tensor] = []
        occupied = idx.new_empty((idx.shape[0], 0))
        for (_, k), stride, count in zip(self.groups, self._strides, self._counts, strict=True):
            r = (idx // stride) % count
            rel = r.unsqueeze(1) if k == 1 else _unrank_pair(r)
            pos = _skip(rel, occupied)
            out.append(pos)
            occupied = torch.sort(torch.cat([occupied, pos], dim=1), dim=1).values
        return torch.cat(out, dim=1)

    def index(self, pos: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`positions` for ``[..., n_slots]`` coordinates (any order within a group)."""
        idx = torch.zeros(pos.shape[:-1], dtype=torch.long, device=pos.device)
        occupied = pos[..., :0]
        start = 0
        for (_, k), stride in zip(self.groups, self._strides, strict=True):
            p = pos[..., start : start + k]
            if k == 1:
                r = _unskip(p, occupied)[..., 0]
            else:
                lo = torch.minimum(p[..., :1], p[..., 1:])
                hi = torch.maximum(p[..., :1], p[..., 1:])
                r = (_comb2(_unskip(hi, occupied)) + _unskip(lo, occupied))[..., 0]
            idx = idx + r * stride
            occupied = torch.cat([occupied, p], dim=-1)
            start += k
        return idx

    def valid(self, pos: torch.Tensor) -> torch.Tensor | None:
        """Mask of placements that belong to the family (``None``: all of them)."""
        return None

    @lru_cache(maxsize=2)  # noqa: B019 - families are few and live as long as their system
    def variants(self, drop_last: bool) -> list[_Variant]:
        """Search variants: without a dropped coordinate one; with one, one per value that can sit there."""
        if not drop_last:
            return [_Variant(self, None)]
        out = [_Variant(self, None)]
        seen: set[float] = set()
        for s, v in enumerate(self.slot_values):
            if v not in seen:
                seen.add(v)
                out.append(_Variant(self, s))
        return [v for v in out if v.n_placed <= self.n_coords - 1]

    def rank_needs(self, drop_last: bool) -> list[tuple[int, int]]:
        """``(p, q)`` of each search variant: it reads the ``p`` largest coordinates and ``bottom(p, q)``."""
        return [(len(v.pos_slots), len(v.neg_slots)) for v in self.variants(drop_last)]

    def best(self, ranks: Ranks, plan: RankPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Member of largest cosine with each row: ``(positions [B, n_slots], score [B])``, branch-free.

        ``score`` is ``x . v / |v|`` with ``|v|`` the norm after projection. All variants are scored at once from
        the rank table; ties between variants go to the first (the variant without a dropped coordinate, then
        the dropped values in slot order).
        """
        dot_cols, vals, norms, pos_cols = plan.tables(self, ranks.values.device, ranks.values.dtype)
        score = (ranks.values[:, dot_cols] * vals).sum(dim=-1) / norms  # [B, V]
        if score.shape[1] == 1:
            return ranks.coords.gather(1, pos_cols.expand(score.shape[0], -1)), score[:, 0]
        k = score.argmax(dim=1)  # first maximum
        return ranks.coords.gather(1, pos_cols[k]), score.gather(1, k[:, None]).squeeze(1)

    @lru_cache(maxsize=2)  # noqa: B019
    def bound_variants(self, drop_last: bool) -> list[tuple[float, _Variant]]:
        """(value u, variant) pairs for the certificate: slot of value u forced off the shortlist."""
        out = []
        for var in self.variants(drop_last):
            seen: set[float] = set()
            for s in var.pos_slots + var.neg_slots:
                u = self.slot_values[s]
                if u not in seen:
                    seen.add(u)
                    out.append((u, _Variant(self, var.drop_slot, excluded=(s,))))
        return out

    @lru_cache(maxsize=32)  # noqa: B019 - families are few and live as long as their system
    def local_table(self, s: int) -> torch.Tensor:
        """All placements of the slots on ``s`` local coordinates: ``[K, n_slots]`` local indices."""
        rows: list[tuple[int, ...]] = [()]
        for _, k in self.groups:
            rows = [
                row + combo
                for row in rows
                for combo in itertools.combinations([c for c in range(s) if c not in row], k)
            ]
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(self.slot_values))


class PositiveRoots(Family):
    """A_np: the positive roots ``e_i - e_j`` with ``i < j`` (slot 0 holds +1 at i, slot 1 holds -1 at j).

    Index ``C(j, 2) + i``. The best member is not given by argmax/argmin (they may come out with i > j); the
    exact rule is ``max_j (max_{i<j} x_i - x_j)``, a prefix maximum, still O(N).
    """

    def __init__(self, n_coords: int) -> None:
        super().__init__([(1.0, 1), (-1.0, 1)], n_coords)
        self.size = math.comb(self.n_coords, 2)
        self.by_variants = False  # a prefix maximum, not the rearrangement variants

    def positions(self, idx: torch.Tensor) -> torch.Tensor:
        return _unrank_pair(idx)

    def index(self, pos: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.minimum(pos[..., 0], pos[..., 1]), torch.maximum(pos[..., 0], pos[..., 1])
        return _comb2(hi) + lo

    def valid(self, pos: torch.Tensor) -> torch.Tensor:
        return pos[..., 0] < pos[..., 1]

    def rank_needs(self, drop_last: bool) -> list[tuple[int, int]]:
        return [(1, 0)] if drop_last else []  # the largest coordinate, for -1 on the dropped one

    def best(self, ranks: Ranks, plan: RankPlan) -> tuple[torch.Tensor, torch.Tensor]:
        x = ranks.x
        b, m = x.shape
        positions, scores = [], []
        if m >= 2:  # both slots on kept coordinates
            prefix = torch.cummax(x, dim=1).values
            gain = torch.cat([x.new_full((b, 1), -_INF), prefix[:, :-1] - x[:, 1:]], dim=1)
            j = gain.argmax(dim=1, keepdim=True)
            cols = torch.arange(m, device=x.device)
            i = torch.where(cols < j, x, -_INF).argmax(dim=1, keepdim=True)
            positions.append(torch.cat([i, j], dim=1))
            scores.append(gain.gather(1, j).squeeze(1) / math.sqrt(2.0))
        if plan.drop_last:  # -1 on the dropped (largest) coordinate: e_i - e_N projects to e_i, norm 1
            top = plan.column("top", 0)
            i = ranks.coords[:, top : top + 1]
            positions.append(torch.cat([i, torch.full_like(i, self.n_coords - 1)], dim=1))
            scores.append(ranks.values[:, top])
        return _pick(positions, scores)


def _pick(positions: list[torch.Tensor], scores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the candidate of highest score; ties go to the first in the list (``argmax``: first maximum)."""
    if len(scores) == 1:
        return positions[0], scores[0]
    score = torch.stack(scores, dim=1)
    k = score.argmax(dim=1, keepdim=True)
    pos = torch.stack(positions, dim=1)
    pos = pos.gather(1, k.unsqueeze(2).expand(-1, 1, pos.shape[2])).squeeze(1)
    return pos, score.gather(1, k).squeeze(1)


# ------------------------------------------------------------------------------------------ projections
def _helmert_scale(n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.arange(1, n + 1, device=like.device, dtype=like.dtype)
    return k, torch.sqrt(k * (k + 1))


def helmert(v: torch.Tensor) -> torch.Tensor:
    """Coordinates of ``v [B, N]`` in the Helmert basis of ``sum(x) = 0``: ``[B, N - 1]``, O(N) per row.

    Basis vector k (1..N-1) is ``(1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1))`` with k ones; the rows are
    orthonormal and orthogonal to ``(1, ..., 1)``.
    """
    k, s = _helmert_scale(v.shape[1] - 1, v)
    prefix = torch.cumsum(v, dim=1)[:, :-1]
    return (prefix - k * v[:, 1:]) / s


def helmert_t(y: torch.Tensor) -> torch.Tensor:
    """Transpose of :func:`helmert`: ``[B, N - 1] -> [B, N]`` (lifts a query back to N coordinates)."""
    k, s = _helmert_scale(y.shape[1], y)
    w = y / s
    suffix = torch.flip(torch.cumsum(torch.flip(w, [1]), dim=1), [1])
    zero = y.new_zeros((y.shape[0], 1))
    return torch.cat([suffix, zero], dim=1) - torch.cat([zero, k * w], dim=1)


# ---------------------------------------------------------------------------------------------- system
PROJECTIONS = ("drop_last", "orthonormal", "native")


class PatternSystem(VectorSystem):
    """A vector system made of permutation families, grouped into levels, projected to ``n_dim``.

    Args:
        name: registry name.
        n_dim: output dimension.
        levels: families of each level, in index order.
        projection: ``"native"`` (families live in n_dim coordinates), ``"drop_last"`` or ``"orthonormal"``
            (families live in n_dim + 1 coordinates).
        definition: extra fields for :meth:`describe` (seedless parameters such as interpolations).
    """

    #: largest shortlist (vectors per row) that :meth:`candidates` enumerates
    max_candidates = 6000
    garbage_rows_ok = True  # NaN/Inf/zero rows only give in-range coordinates (see extremes), later overwritten

    def __init__(
        self,
        name: str,
        n_dim: int,
        levels: Sequence[Sequence[Family]],
        projection: str,
        definition: dict[str, Any] | None = None,
    ) -> None:
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.name, self.n_dim, self.projection = name, int(n_dim), projection
        self.n_coords = self.n_dim + (projection != "native")
        self.families = [f for level in levels for f in level]
        if any(f.n_coords != self.n_coords for f in self.families):
            raise ValueError("family coordinate counts do not match the projection")
        self.level_sizes = tuple(sum(f.size for f in level) for level in levels)
        self._offsets = list(itertools.accumulate([0] + [f.size for f in self.families]))
        self._definition = dict(definition or {})
        self._drop = projection == "drop_last"
        self._plan = RankPlan(self.families, self._drop, self.n_coords - self._drop, self.n_coords)

    def _describe_extra(self) -> dict[str, Any]:
        return {**self._definition, "projection": self.projection}

    # --------------------------------------------------------------------------------------- geometry
    def _min_angle(self) -> float:
        # A pair of vectors touches at most 2 * slots coordinates (plus the dropped one). Any pair embeds
        # order-preservingly into 2 * slots + 1 coordinates, so the minimum angle is that of the system at
        # that size: compute it there by brute force.
        slots = max(len(f.slot_values) for f in self.families)
        small = 2 * slots + 1
        if self.n_dim <= small or self.size <= 20_000:
            return super()._min_angle()
        return self._resized(small).min_angle

    def _resized(self, n_dim: int) -> PatternSystem:
        from ._registry import create_system  # local import: the registry imports this module

        return create_system(
            self.name, n_dim, **{k: v for k, v in self.describe().items() if k not in ("name", "n_dim")}
        )

    # ---------------------------------------------------------------------------------------- vectors
    def _dense(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros((idx.shape[0], self.n_coords), dtype=dtype, device=idx.device)
        for fam, lo in zip(self.families, self._offsets, strict=False):
            sel = ((idx >= lo) & (idx < lo + fam.size)).nonzero().squeeze(1)
            if sel.numel():
                pos = fam.positions(idx[sel] - lo)
                vals = torch.tensor(fam.slot_values, dtype=dtype, device=idx.device).expand_as(pos)
                out[sel[:, None], pos] = vals
        return out

    def _vectors(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        v = self.project(self._dense(idx, dtype))  # small integers: exact in any float dtype
        return (v / torch.linalg.vector_norm(v, dim=1, keepdim=True)).to(dtype)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Family coordinates ``[B, n_coords]`` -> ``[B, n_dim]``, not normalized: the last coordinate dropped
        (``drop_last``), the orthonormal (Helmert) projection, or as they are (``native``)."""
        return v[:, : self.n_dim] if self._drop else helmert(v) if self.projection == "orthonormal" else v

    def lift(self, z: torch.Tensor) -> torch.Tensor:
        """A query ``[B, n_dim]`` -> ``[B, n_coords]`` in family coordinates, where its dot product with a family
        vector ``v`` equals the query's with ``project(v)`` (drop_last: the dropped coordinate's dot product
        is 0; orthonormal: the transpose of the projection)."""
        return helmert_t(z) if self.projection == "orthonormal" else z

    @property
    def drop_last(self) -> bool:
        """The last of ``n_coords`` coordinates is dropped (the paper's A_n projection)."""
        return self._drop

    @property
    def offsets(self) -> list[int]:
        """First system index of each family (and the system's size last)."""
        return list(self._offsets)

    # ---------------------------------------------------------------------------------------- nearest
    def _nearest(self, x: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Branch-free: the extreme coordinates every family needs are found once (fixed shapes, no host sync),
        # then every family scores all its variants from them. Ties: see the module docstring.
        plan = self._plan
        lifted = self.lift(x)
        ranks = plan.ranks(lifted) if plan.n_cols else Ranks(lifted, lifted[:, :0].long(), lifted[:, :0])
        indices, scores = [], []
        for fam, lo in zip(self.families, self._offsets, strict=False):
            pos, score = fam.best(ranks, plan)
            indices.append((lo + fam.index(pos))[:, None])
            scores.append(score)
        idx, score = _pick(indices, scores)
        return idx.squeeze(1), score / norm.squeeze(1)

    def shortlist_sizes(self) -> list[int]:
        """The ``m`` values worth trying in :meth:`candidates`, smallest first (shortlist stays bounded)."""
        out = []
        for m in (2, 4, 8, 16, 32, 64):
            s = min(2 * m, self.n_coords - self._drop) + self._drop
            if sum(f.local_table(s).shape[0] for f in self.families) > self.max_candidates:
                break
            out.append(m)
            if 2 * m >= self.n_coords:
                break
        return out

    def candidates(self, z: torch.Tensor, m: int) -> Candidates:
        """Every vector supported on the top-m / bottom-m coordinates (+ the dropped one), and a bound.

        A vector left out has a nonzero value ``u`` on a coordinate ``c`` outside the shortlist's support, so
        ``x_c`` is at most the largest (for u > 0) or at least the smallest (u < 0) coordinate outside it;
        the rest of the vector is bounded by the unconstrained rearrangement optimum. The bound is the largest
        such value over ``u`` and the value on the dropped coordinate, each divided by its own norm.
        """
        x = self.lift(z)
        b, width = x.shape
        ranked = _Ranked(x)
        p = min(m, width)
        support = torch.cat([ranked.top(p), ranked.bottom(p, min(m, width - p))], dim=1)
        outside = torch.ones_like(x, dtype=torch.bool).scatter_(1, support, False)
        out_max = torch.where(outside, x, -_INF).amax(dim=1)
        out_min = torch.where(outside, x, _INF).amin(dim=1)
        if self._drop:
            support = torch.cat([support, support.new_full((b, 1), self.n_coords - 1)], dim=1)
            x = torch.cat([x, x.new_zeros((b, 1))], dim=1)  # the dropped coordinate contributes nothing
        indices, scores, bounds = [], [], []
        for fam, lo in zip(self.families, self._offsets, strict=False):
            table = fam.local_table(support.shape[1]).to(x.device)
            pos = support[:, table]  # [B, K, slots]
            vals = torch.tensor(fam.slot_values, dtype=x.dtype, device=x.device)
            dot = (x.gather(1, pos.flatten(1)).view(pos.shape) * vals).sum(-1)
            sq = torch.full_like(dot, fam.sq_norm)
            if self._drop:
                sq = sq - ((pos == self.n_coords - 1).to(x.dtype) * vals**2).sum(-1)
            score = dot / sq.sqrt()
            idx = lo + fam.index(pos)
            valid = fam.valid(pos)
            if valid is not None:
                score = torch.where(valid, score, -_INF)
                idx = torch.where(valid, idx, -1)
            indices.append(idx)
            scores.append(score)
            for u, var in fam.bound_variants(self._drop):
                if var.n_placed > width:
                    continue
                _, rest = ranked.place(var.pos_vals, var.neg_vals)
                bounds.append((u * (out_max if u > 0 else out_min) + rest) / var.norm)
        bound = torch.stack(bounds, dim=1).amax(dim=1) if bounds else x.new_full((b,), -_INF)
        return Candidates(torch.cat(indices, dim=1), torch.cat(scores, dim=1), bound)
