"""The extreme coordinates a set of pattern families needs, computed once per batch and shared by all of them.

A search variant of a family (see :mod:`lscdistill.systems.pattern`) puts its ``p`` positive values on the ``p``
largest coordinates and its ``q`` negative values on the ``q`` smallest coordinates *outside* those ``p``
(``bottom(p, q)``), and possibly one value on the dropped coordinate. :class:`RankPlan` works out, from the
families' variants alone (configuration, not data), which of these lists are needed; :meth:`RankPlan.ranks` computes
them for a batch as columns of one ``[B, K]`` table of coordinates (and their values), and :meth:`RankPlan.tables`
says which columns each variant's slots read. Everything is fixed-shape: no value of the batch decides which
operations run. Memory: ``[B, K]`` with ``K`` <= 10 for every registered system, plus the small block and candidate
tensors of :func:`~lscdistill.systems.extremes.row_extremes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from .base import cached
from .extremes import first_outside, row_extremes

if TYPE_CHECKING:
    from .pattern import Family

__all__ = ["RankPlan", "Ranks"]


class Ranks(NamedTuple):
    """One batch's extreme coordinates: ``coords [B, K]`` (int64) and ``values [B, K]`` (x at them; 0 for the
    dropped coordinate, which is not part of x), plus the searched rows ``x [B, N]`` themselves."""

    x: torch.Tensor
    coords: torch.Tensor
    values: torch.Tensor


class RankPlan:
    """Columns of the rank table for ``families`` searched on rows of ``width`` coordinates.

    Column layout: ``top`` (the ``n_top`` largest, descending), then for each needed ``p`` the ``bottom(p, .)``
    block (smallest outside the ``p`` largest, ascending), then, with ``drop_last``, one column for the dropped
    coordinate ``n_coords - 1`` (value 0).
    """

    def __init__(self, families: list[Family], drop_last: bool, width: int, n_coords: int) -> None:
        self.drop_last, self.width, self.n_coords = drop_last, width, n_coords
        needs = [pq for fam in families for pq in fam.rank_needs(drop_last)]
        self.n_top = max((p for p, _ in needs), default=0)
        self.blocks: dict[int, int] = {}  # p -> how many of bottom(p, .) are needed
        for p, q in needs:
            if q:
                self.blocks[p] = max(self.blocks.get(p, 0), q)
        self.n_bottom = min(width, max((p + q for p, q in self.blocks.items()), default=0))
        self.offsets: dict[int, int] = {}
        col = self.n_top
        for p in sorted(self.blocks):
            self.offsets[p] = col
            col += self.blocks[p]
        self.drop_col = col if drop_last else None
        self.n_cols = col + int(drop_last)
        self._layouts = {id(f): self._layout(f) for f in families if f.by_variants}  # Python lists, built once
        self._joint = self._joint_layout(families) if all(f.by_variants for f in families) else None
        self._tables: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def column(self, kind: str, j: int, p: int = 0) -> int:
        """Column of ``top[j]`` (``kind="top"``), ``bottom(p)[j]`` (``"bottom"``) or the dropped coordinate."""
        if kind == "top":
            return j
        if kind == "bottom":
            return self.offsets[p] + j
        return self.drop_col

    def ranks(self, x: torch.Tensor, ends: tuple[torch.Tensor, torch.Tensor] | None = None) -> Ranks:
        """The rank table of the rows of finite ``x [B, width]`` (``ends``: see :func:`row_extremes`)."""
        top, bottom = row_extremes(x, self.n_top, self.n_bottom, ends)
        cols = [top] + [first_outside(bottom, top[:, :p], self.blocks[p]) for p in sorted(self.blocks)]
        coords = torch.cat(cols, dim=1)
        values = x.gather(1, coords)
        if self.drop_last:
            b = x.shape[0]
            coords = torch.cat([coords, coords.new_full((b, 1), self.n_coords - 1)], dim=1)
            values = torch.cat([values, values.new_zeros((b, 1))], dim=1)
        return Ranks(x, coords, values)

    def _layout(self, family: Family) -> tuple[list, list, list, list]:
        dot_cols, vals, norms, pos_cols = [], [], [], []
        slots = len(family.slot_values)
        pad = self.drop_col if self.drop_col is not None else 0
        for var in family.variants(self.drop_last):
            p = len(var.pos_slots)
            dots = [self.column("top", j) for j in range(p)]
            dots += [self.column("bottom", j, p) for j in range(len(var.neg_slots))]
            dot_cols.append(dots + [pad] * (slots - len(dots)))
            vals.append([*var.pos_vals, *var.neg_vals] + [0.0] * (slots - len(dots)))
            norms.append(var.norm)
            where = [0] * slots
            for j, s in enumerate(var.pos_slots):
                where[s] = self.column("top", j)
            for j, s in enumerate(var.neg_slots):
                where[s] = self.column("bottom", j, p)
            if var.drop_slot is not None:
                where[var.drop_slot] = self.column("drop", 0)
            pos_cols.append(where)
        return dot_cols, vals, norms, pos_cols

    def _joint_layout(self, families: list[Family]) -> tuple[list, list, list, list, list]:
        """The variants of all families in one table, slots padded to the most any family has (a padded slot
        adds value 0 times column ``pad``: an exact zero) and each variant's family listed."""
        slots = max(len(f.slot_values) for f in families)
        pad = self.drop_col if self.drop_col is not None else 0
        joint: tuple[list, list, list, list, list] = ([], [], [], [], [])
        for k, family in enumerate(families):
            dot_cols, vals, norms, pos_cols = self._layout(family)
            extra = slots - len(family.slot_values)
            joint[0].extend(row + [pad] * extra for row in dot_cols)
            joint[1].extend(row + [0.0] * extra for row in vals)
            joint[2].extend(norms)
            joint[3].extend(row + [0] * extra for row in pos_cols)
            joint[4].extend([k] * len(norms))
        return joint

    def joint_tables(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...] | None:
        """:meth:`tables` of every family at once, in family order, ``dot_cols`` and ``vals`` transposed (``[S, V]``:
        slot by slot), plus ``family [V]`` (which family each variant belongs to); ``None`` unless every family is
        searched by variants."""
        if self._joint is None:
            return None
        dot_cols, vals, norms, pos_cols, family = self._joint
        return cached(
            self._tables,
            ("joint", device, dtype),
            lambda: (
                torch.tensor(dot_cols, dtype=torch.long, device=device).T.contiguous(),
                torch.tensor(vals, dtype=dtype, device=device).T.contiguous(),
                torch.tensor(norms, dtype=dtype, device=device),
                torch.tensor(pos_cols, dtype=torch.long, device=device),
                torch.tensor(family, dtype=torch.long, device=device),
            ),
        )

    def tables(self, family: Family, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``(dot_cols [V, S], vals [V, S], norms [V], pos_cols [V, S])`` of the family's variants, cached.

        ``dot_cols``/``vals`` list a variant's placed values in the order the dot product adds them (positives,
        largest first, then negatives, most negative first; padded with the dropped column times 0, which adds an
        exact zero); ``pos_cols[v, s]`` is the column holding the coordinate of slot ``s``.
        """
        dot_cols, vals, norms, pos_cols = self._layouts[id(family)]
        return cached(
            self._tables,
            (id(family), device, dtype),
            lambda: (
                torch.tensor(dot_cols, dtype=torch.long, device=device),
                torch.tensor(vals, dtype=dtype, device=device),
                torch.tensor(norms, dtype=dtype, device=device),
                torch.tensor(pos_cols, dtype=torch.long, device=device),
            ),
        )
