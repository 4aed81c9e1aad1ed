"""Candidate lists: for each unit class mean, the K best vectors of a system and a bound on every other one.

A permutation family scores a placement as ``sum(value * x[coord]) / norm``, so good placements put the positive
values on the largest coordinates of the (lifted) mean and the negative ones on the smallest. We enumerate the
placements on the top-T / bottom-T coordinates (plus the dropped coordinate of ``drop_last``) with outer sums and
keep the K best. Any other vector has a positive value on a coordinate at most the (T+1)-th largest or a negative
value on one at least the (T+1)-th smallest, the rest bounded by the rearrangement optimum: that, or the (K+1)-th
score, bounds the cosine of every vector off the list. O(n_dim + K) memory per class; nothing grows with
``n_classes`` here (the callers chunk the rows).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ..systems.base import VectorSystem
from ..systems.pattern import Family, PatternSystem
from ..systems.shuffled import ShuffledSystem

__all__ = ["BRUTE_FORCE_MAX", "LEVELS", "PatternLayout", "SystemCandidates", "pattern_layout"]

#: (T, K) per widening level: the K best placements on the top-T / bottom-T coordinates
LEVELS = ((3, 4), (4, 16), (8, 64), (16, 256), (32, 1024), (64, 4096))
BRUTE_FORCE_MAX = 1 << 20  # systems without candidate structure (planar) are scanned whole up to this size


class PatternLayout(NamedTuple):
    """What snap's grid path needs from a :class:`PatternSystem` (its public ``drop_last``, ``offsets``, ``lift``,
    ``project``)."""

    drop_last: bool  # the last of n_coords coordinates is dropped (the paper's A_n projection)
    offsets: list[int]  # first system index of each family
    lift: Callable[[torch.Tensor], torch.Tensor]  # query [B, n_dim] -> [B, n_coords]
    project: Callable[[torch.Tensor], torch.Tensor]  # coordinates [B, n_coords] -> [B, n_dim], not normalized


def pattern_layout(system: PatternSystem) -> PatternLayout:
    """What snap's grid path needs from a :class:`PatternSystem`, through its public methods."""
    return PatternLayout(system.drop_last, system.offsets, system.lift, system.project)


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


class SystemCandidates:
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
            self.layout = pattern_layout(b)
            self.n_coords, self.width = b.n_coords, b.n_coords - self.layout.drop_last
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
            grids = [_FamilyGrid(f, self.layout.drop_last, t) for f in self.base.families]
            pad = [torch.cat([g.codes, g.codes[:, -1:].expand(-1, self.slots - g.codes.shape[1])], 1) for g in grids]
            family = torch.cat([torch.full((g.codes.shape[0],), f, dtype=torch.long) for f, g in enumerate(grids)])
            self._grids[t] = (grids, torch.cat(pad), family)
        return self._grids[t]

    def _grid(self, unit: torch.Tensor, t: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layout.lift(unit)
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
        v = self.layout.project(v)
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
            idx[sel] = self.layout.offsets[f] + fam.index(torch.stack(digits, dim=1))
        return idx.numpy()
