"""Pattern systems: permutation families (:mod:`lscdistill.systems.families`) stacked into levels and projected.

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
from collections.abc import Sequence
from typing import Any

import torch

from . import native
from .base import Candidates, VectorSystem, row_divisor
from .extremes import block_ends
from .families import Family, PositiveRoots, pick
from .helmert import helmert, helmert_t
from .ranks import RankPlan, Ranks

__all__ = ["Family", "PatternSystem", "PositiveRoots", "helmert", "helmert_t"]  # families and helmert re-exported

_INF = float("inf")


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
        self._native: dict[str, native.Spec] = {}  # the C kernel's view of the system, built on first use

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
    def _search(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # Float32 rows searched where they are (no lift). On CPU one C kernel (native.py) reads each row twice and
        # gives the divisor, the rank table and the best variant; the tensor program below (export, CUDA) gives
        # the same bits: the block ends that pick the extremes' candidates also give each row's largest magnitude,
        # so the batch is read twice (ends, then the scaled copy and its norm) before the small [B, <=10] rank
        # table takes over. Any other case: the rows made safe, then searched.
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        if z.dtype != torch.float32 or self.projection == "orthonormal" or not self._plan.n_cols:
            return super()._search(z)
        spec = native.spec(self) if native.usable(z) else None
        if spec is not None:  # the same search, up to the norms, as one C kernel
            divisor, ok, finite, coords, values, idx, score = native.decode(z, spec)
            x = z / divisor.unsqueeze(1)
            if not spec.scored:
                idx, score = self._best(Ranks(x, coords, values))
            return idx, score / torch.linalg.vector_norm(x, dim=1), ok, finite
        top, bottom = block_ends(z)  # of the unscaled rows: divided by a row's divisor, those of the scaled row
        divisor, ok, finite = row_divisor(torch.maximum(top.amax(dim=1), bottom.amax(dim=1)).unsqueeze(1))
        x = z / divisor
        idx, score = self._best(self._plan.ranks(x, (top / divisor, bottom / divisor)))
        return idx, score / torch.linalg.vector_norm(x, dim=1), ok.squeeze(1), finite.squeeze(1)

    def _nearest(self, x: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self._plan
        lifted = self.lift(x)
        idx, score = self._best(plan.ranks(lifted) if plan.n_cols else Ranks(lifted, lifted[:, :0].long(), lifted))
        return idx, score / norm.squeeze(1)

    def _best(self, ranks: Ranks) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest member of the system from the rank table: ``(index [B], x . v / |v| [B])``, branch-free.

        Every variant of every family is scored at once (one ``[B, V]`` table) and the first maximum wins: the
        family listed first, then its first variant, as when each family picks its best and then the families
        are compared. Only systems with a family searched otherwise (A_np's prefix maximum) go family by family.
        """
        joint = self._plan.joint_tables(ranks.values.device, ranks.values.dtype)
        if joint is None:
            indices, scores = [], []
            for fam, lo in zip(self.families, self._offsets, strict=False):
                pos, score = fam.best(ranks, self._plan)
                indices.append((lo + fam.index(pos))[:, None])
                scores.append(score)
            idx, score = pick(indices, scores)
            return idx.squeeze(1), score
        dot_cols, vals, norms, pos_cols, family = joint
        b = ranks.values.shape[0]
        slots, n_var = dot_cols.shape  # one gather of every slot's values, then added slot by slot in order: what
        # sum(dim=-1) of [B, V, S] does on CPU (``sum(dim=1)`` of [B, S, V] gives the same bits but takes longer)
        terms = ranks.values.gather(1, dot_cols.view(1, -1).expand(b, -1)).view(b, slots, n_var).mul_(vals)
        dot = terms[:, 0]
        for s in range(1, slots):
            dot = dot + terms[:, s]
        score = dot.div_(norms)  # [B, V]
        k = score.argmax(dim=1)  # first maximum
        pos = ranks.coords.gather(1, pos_cols.index_select(0, k))  # [B, slots]
        families = zip(self.families, self._offsets, strict=False)  # offsets end with the size
        found = [lo + fam.index(pos[:, : len(fam.slot_values)]) for fam, lo in families]
        if len(found) > 1:
            found = [torch.stack(found, dim=1).gather(1, family.index_select(0, k).unsqueeze(1)).squeeze(1)]
        return found[0], score.gather(1, k.unsqueeze(1)).squeeze(1)

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
