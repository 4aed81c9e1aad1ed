"""Permutation families: all distinct placements of a short pattern of nonzero values among zeros.

A *family* is one pattern in ``N`` coordinates, e.g. ``(1, -1)`` (the A_n roots ``e_i - e_j``) or
``(2, -1, -1)``. A family is a sequence of groups ``(value, k)``: ``k`` equal values placed on a ``k``-subset
of the coordinates the earlier groups left free. Indices are mixed-radix over the groups, each group's subset
ranked in the combinatorial number system (colex), so index <-> positions is integer arithmetic.

Every member of a family has the same norm, so by the rearrangement inequality its best member for a query
``x`` puts the positive values (largest first) on the largest coordinates of ``x`` and the negative values
(most negative first) on the smallest: only the top-p / bottom-q coordinates matter, O(N) per row. Where the
last coordinate is dropped (the ``drop_last`` projection of :mod:`lscdistill.systems.pattern`), each value that
can sit there is one more search variant (:class:`_Variant`), with its own norm.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import torch

from .ranks import RankPlan, Ranks

__all__ = ["Family", "PositiveRoots", "pick"]

_INF = float("inf")


# ------------------------------------------------------------------------------------------- combinatorics
def _comb2(x: torch.Tensor) -> torch.Tensor:
    return (x * (x - 1)) >> 1  # x (x - 1) >= 0 for every integer: a shift (int64 // is not vectorized on CPU)


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


def _unskip(pos: torch.Tensor, occupied: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`_skip`: absolute positions -> rank among the free coordinates (``occupied``: the earlier
    groups' coordinates, one tensor of ``pos``'s shape each; two small ops per occupied coordinate)."""
    rank = pos
    for c in occupied:
        rank = rank - (c < pos).long()
    return rank


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
        idx: torch.Tensor | None = None
        occupied: list[torch.Tensor] = []
        start = 0
        for (_, k), stride in zip(self.groups, self._strides, strict=True):
            cols = [pos[..., start + j] for j in range(k)]
            if k == 1:
                r = _unskip(cols[0], occupied)
            else:
                lo, hi = torch.minimum(cols[0], cols[1]), torch.maximum(cols[0], cols[1])
                r = _comb2(_unskip(hi, occupied)) + _unskip(lo, occupied)
            term = r * stride if stride != 1 or idx is None else r  # the first term a new tensor: never a view of pos
            idx = term if idx is None else idx + term
            occupied += cols
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
        return pick(positions, scores)


def pick(positions: list[torch.Tensor], scores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the candidate of highest score; ties go to the first in the list (``argmax``: first maximum)."""
    if len(scores) == 1:
        return positions[0], scores[0]
    score = torch.stack(scores, dim=1)
    k = score.argmax(dim=1, keepdim=True)
    pos = torch.stack(positions, dim=1)
    pos = pos.gather(1, k.unsqueeze(2).expand(-1, 1, pos.shape[2])).squeeze(1)
    return pos, score.gather(1, k).squeeze(1)
