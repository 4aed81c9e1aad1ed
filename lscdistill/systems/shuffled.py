"""The seeded shuffle of a system (the paper's A_nr): class c gets vector ``perm(c)`` of the base system.

The permutation is a :class:`~lscdistill.systems.keyed.KeyedPermutation` per level, so it stays within a level
(the first classes always take root vectors before any interpolated one) and is computed per index in both
directions. The map is a fixed-shape tensor program (no host synchronization). Eagerly, the leading levels whose
:meth:`~lscdistill.systems.keyed.KeyedPermutation.lookup` tables fit ``_LOOKUP_MAX`` entries (every level of A_n up
to n = 617, with or without interpolations, and most above) are mapped together in one pass: the level of each index
by a binary search over the level starts, then per round one gather and one in-place add on ``[N]`` int64 tensors,
each level's part of a table at its own offset: ~30 tensor ops where the Feistel arithmetic with per-index radices
and keys took ~55 (on 1,024 indices an op costs a microsecond or two, almost all of it overhead). When those levels
hold at most ``_LOOKUP_MAX`` indices in all, their map is one table (one gather). Any later level (radices beyond the
budget, a cycle-walked domain above ``2**16``) runs its own arithmetic over every index, selected with
``torch.where``; traced (``torch.export``, ``torch.compile``) every level does, so an exported file holds no tables.
The tables (per direction at most ~20 MiB; ~3 MiB for A_384r with one interpolation) are built on CPU by the first
eager map in that direction; each device a map runs on gets its own copy on first use.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Candidates, VectorSystem, cached
from .keyed import KeyedPermutation

__all__ = ["ShuffledSystem"]

_LOOKUP_MAX = 2**18  # table entries of the levels mapped by lookups: (rounds + 2) tables, <= 20 MiB per direction


class ShuffledSystem(VectorSystem):
    """``base`` in a seeded order: ``vectors(i) == base.vectors(perm(i))`` within each level."""

    def __init__(self, base: VectorSystem, seed: int) -> None:
        if isinstance(base, ShuffledSystem):
            raise ValueError("the system is already shuffled")
        self.base, self.seed = base, int(seed)
        self.name, self.n_dim, self.level_sizes, self.radius = base.name, base.n_dim, base.level_sizes, base.radius
        self.garbage_rows_ok = base.garbage_rows_ok
        self._levels: list[tuple[int, KeyedPermutation]] = []
        lo = 0
        for level, size in enumerate(base.level_sizes):
            self._levels.append((lo, KeyedPermutation(size, self.seed, salt=level)))
            lo += size
        self._identity = all(perm.size <= 1 for _, perm in self._levels)
        self._n_lookup, span = 0, 0  # the leading levels mapped by table lookups
        for _, perm in self._levels:
            if perm.lookup_span is None or span + perm.lookup_span > _LOOKUP_MAX:
                break
            self._n_lookup, span = self._n_lookup + 1, span + perm.lookup_span
        self._lookup_end = lo if self._n_lookup == len(self._levels) else self._levels[self._n_lookup][0]
        self._writes_a: dict[bool, list[bool]] = {}  # per direction, per round: the round adds to ``a`` (else ``b``)
        # per (device, direction), built on the first eager call that needs them (a traced map never reads them)
        self._tables: dict[tuple[torch.device, bool], tuple[torch.Tensor, ...]] = {}

    def _describe_extra(self) -> dict[str, Any]:
        return {**self.base._describe_extra(), "seed": self.seed}

    def _min_angle(self) -> float:
        return self.base.min_angle

    def _build_tables(self, inverse: bool) -> tuple[torch.Tensor, ...]:
        """The lookup levels' tables side by side (level k's part at offset ``o_k``: both ``a`` and ``b`` carry it)
        and, per level, the radix that splits a local index, the shift that turns a global index into
        ``(a + o_k) * radix + b`` and ``o_k`` (added to ``b`` by the first table when the first round writes ``b``).
        Lookup levels of at most ``_LOOKUP_MAX`` indices in all are instead one table of the whole map (one gather).
        """
        offset, parts, consts = 0, [], []
        for lo, perm in self._levels[: self._n_lookup]:
            radix, steps, final_a, final_b = perm.lookup(inverse)
            self._writes_a[inverse] = [writes_a for writes_a, _ in steps]  # the same rounds at every level
            steps = [table for _, table in steps]
            if not self._writes_a[inverse][0]:  # the first round writes b: its table brings b's level offset too
                steps[0] = steps[0] + offset
            parts.append([*steps, final_a + lo, final_b])
            consts.append((radix, offset * radix - lo, offset))
            offset += perm.lookup_span
        bounds = torch.tensor([lo for lo, _ in self._levels[1 : self._n_lookup]], dtype=torch.long)
        radix, shift, offsets = (torch.tensor(c, dtype=torch.long) for c in zip(*consts, strict=True))
        tables = bounds, radix, shift, offsets, *(torch.cat(column) for column in zip(*parts, strict=True))
        if self._lookup_end <= _LOOKUP_MAX:
            return (self._run_lookup(torch.arange(self._lookup_end), tables, inverse),)
        return tables

    def _run_lookup(self, x: torch.Tensor, tables: tuple[torch.Tensor, ...], inverse: bool) -> torch.Tensor:
        """:meth:`KeyedPermutation.lookup` of every lookup level in one pass; ``x [N]`` holds indices below
        ``_lookup_end``. Every op but the first few makes or updates an ``[N]`` int64 tensor in place."""
        bounds, radix, shift, offsets, *steps, final_a, final_b = tables
        if self._n_lookup > 1:
            level = torch.bucketize(x, bounds, right=True)
            radix = radix.index_select(0, level)
            x = x + shift.index_select(0, level)  # (a + o) * radix + b
        a = torch.div(x, radix, rounding_mode="floor")  # one level: radix [1] broadcasts, shift and offset are 0
        b = x % radix
        writes_a = self._writes_a[inverse]
        if self._n_lookup > 1 and writes_a[0]:
            b.add_(offsets.index_select(0, level))
        for to_a, table in zip(writes_a, steps, strict=True):
            if to_a:
                a.add_(table.index_select(0, b))
            else:
                b.add_(table.index_select(0, a))
        return final_a.index_select(0, a).add_(final_b.index_select(0, b))

    def _lookup(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        cpu = cached(self._tables, (torch.device("cpu"), inverse), lambda: self._build_tables(inverse))
        tables = cached(self._tables, (x.device, inverse), lambda: tuple(t.to(x.device) for t in cpu))
        return tables[0].index_select(0, x) if len(tables) == 1 else self._run_lookup(x, tables, inverse)

    def _map(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        if self._identity:
            return idx.clone()
        flat = (idx if idx.dim() == 1 else idx.reshape(-1)).long()
        x = flat.clamp(0, len(self) - 1)  # negative indices pass through (below); beyond the end: never out of bounds
        out = None
        # Traced (torch.export, torch.compile) every level runs the Feistel arithmetic: the lookup tables would be
        # constants of the exported file (MiBs, where the arithmetic is a few hundred bytes) and inductor fuses the
        # arithmetic (constant radices) but turns gathers into scalar loads. Eager, the tables: fewer, cheaper ops.
        n_lookup = 0 if torch.compiler.is_compiling() else self._n_lookup
        if n_lookup:
            out = self._lookup(x if self._lookup_end == len(self) else x.clamp(max=self._lookup_end - 1), inverse)
        for lo, perm in self._levels[n_lookup:]:
            if perm.size:
                local = (x - lo).clamp(0, perm.size - 1)
                mapped = (perm.inverse(local) if inverse else perm.forward(local)) + lo
                out = mapped if out is None else torch.where(x >= lo, mapped, out)
        out = torch.where(flat >= 0, out, flat)
        return out if idx.dim() == 1 else out.reshape(idx.shape)

    def to_base(self, idx: torch.Tensor) -> torch.Tensor:
        """Base-system index of each shuffled index."""
        return self._map(idx, inverse=False)

    def from_base(self, idx: torch.Tensor) -> torch.Tensor:
        """Shuffled index of each base-system index (negative values pass through; an index at or beyond
        ``len(self)`` gives some index in range, no error)."""
        return self._map(idx, inverse=True)

    def _vectors(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.base._vectors(self.to_base(idx), dtype)

    def _nearest(self, x: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx, cos = self.base._nearest(x, norm)
        return self.from_base(idx), cos

    def _search(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        idx, cos, ok, finite = self.base._search(z)
        return self.from_base(idx), cos, ok, finite

    def candidates(self, z: torch.Tensor, m: int) -> Candidates | None:
        found = self.base.candidates(z, m)
        if found is None:
            return None
        return Candidates(self.from_base(found.index), found.score, found.bound)

    def shortlist_sizes(self) -> list[int]:
        return self.base.shortlist_sizes()

    def cluster_radius(self, idx: torch.Tensor) -> torch.Tensor | None:
        return self.base.cluster_radius(self.to_base(idx))
