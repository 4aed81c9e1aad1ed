"""The seeded shuffle of a system (the paper's A_nr): class c gets vector ``perm(c)`` of the base system.

The permutation is a :class:`~lscdistill.systems.keyed.KeyedPermutation` per level, so it stays within a level
(the first classes always take root vectors before any interpolated one) and is computed per index in both
directions: no shuffled table exists. The map is a fixed-shape tensor program (no host synchronization): every
index is located in its level by a binary search over the level starts, the mixed-radix levels are permuted together
in one pass with per-index radices and keys, and the other levels (cycle-walked, small) each in their own pass,
selected with ``torch.where``.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Candidates, VectorSystem, cached
from .keyed import KeyedPermutation, feistel_radix

__all__ = ["ShuffledSystem"]


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
        self._radix_levels = [k for k, (_, p) in enumerate(self._levels) if p.size > 1 and p.radix]
        self._walk_levels = [k for k, (_, p) in enumerate(self._levels) if p.size > 1 and not p.radix]
        self._consts: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _describe_extra(self) -> dict[str, Any]:
        return {**self.base._describe_extra(), "seed": self.seed}

    def _min_angle(self) -> float:
        return self.base.min_angle

    def _constants(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-level starts, radices and keys as tensors on ``device`` (built once; a few hundred bytes)."""
        radix = [self._levels[k][1] for k in self._radix_levels]
        ones = [(1, 1)] * len(self._levels)
        keys = [[0] * len(radix[0].keys) if radix else [] for _ in self._levels]
        for k, perm in zip(self._radix_levels, radix, strict=True):
            ones[k], keys[k] = perm.radix, perm.keys
        starts = [lo for lo, _ in self._levels]
        built = cached(
            self._consts,
            device,
            lambda: (
                torch.tensor(starts, device=device),
                torch.tensor(ones, device=device),
                torch.tensor(keys, dtype=torch.long, device=device),
            ),
        )
        return dict(zip(("starts", "radix", "keys"), built, strict=True))

    def _map(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        if not self._radix_levels and not self._walk_levels:
            return idx.clone()
        c = self._constants(idx.device)
        if len(self._levels) == 1:
            level, lo = None, 0
        else:
            level = torch.bucketize(idx, c["starts"][1:], right=True)  # levels before each index
            lo = c["starts"][level]
        local = (idx - lo).clamp(min=0)  # negative indices pass through (below)
        out = local  # identity for levels of one element
        mixed = len(self._radix_levels) + len(self._walk_levels) < len(self._levels) or bool(self._walk_levels)
        if len(self._radix_levels) == 1:  # plain integers, nothing to look up
            k = self._radix_levels[0]
            perm = self._levels[k][1]
            mapped = feistel_radix(local.clamp(max=perm.size - 1), *perm.radix, perm.keys, inverse)
            out = torch.where(level == k, mapped, out) if mixed else mapped
        elif self._radix_levels:  # per-index radices and keys (1 and 0 outside the radix levels)
            radix = c["radix"][level]
            mapped = feistel_radix(local, radix[..., 0], radix[..., 1], c["keys"][level].unbind(-1), inverse)
            out = torch.where(radix[..., 0] > 1, mapped, out) if mixed else mapped
        for k in self._walk_levels:
            perm = self._levels[k][1]
            part = local.clamp(max=perm.size - 1)
            mapped = perm.inverse(part) if inverse else perm.forward(part)
            out = torch.where(level == k, mapped, out) if level is not None else mapped
        return torch.where(idx >= 0, lo + out, idx)

    def to_base(self, idx: torch.Tensor) -> torch.Tensor:
        """Base-system index of each shuffled index."""
        return self._map(idx, inverse=False)

    def from_base(self, idx: torch.Tensor) -> torch.Tensor:
        """Shuffled index of each base-system index (negative values pass through)."""
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
