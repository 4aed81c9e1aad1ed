"""The seeded shuffle of a system (the paper's A_nr): class c gets vector ``perm(c)`` of the base system.

The permutation is a :class:`~lscdistill.systems.keyed.KeyedPermutation` per level, so it stays within a level
(the first classes always take root vectors before any interpolated one) and is computed per index in both
directions: no shuffled table exists.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Candidates, VectorSystem
from .keyed import KeyedPermutation

__all__ = ["ShuffledSystem"]


class ShuffledSystem(VectorSystem):
    """``base`` in a seeded order: ``vectors(i) == base.vectors(perm(i))`` within each level."""

    def __init__(self, base: VectorSystem, seed: int) -> None:
        if isinstance(base, ShuffledSystem):
            raise ValueError("the system is already shuffled")
        self.base, self.seed = base, int(seed)
        self.name, self.n_dim, self.level_sizes, self.radius = base.name, base.n_dim, base.level_sizes, base.radius
        self._levels: list[tuple[int, KeyedPermutation]] = []
        lo = 0
        for level, size in enumerate(base.level_sizes):
            self._levels.append((lo, KeyedPermutation(size, self.seed, salt=level)))
            lo += size

    def _describe_extra(self) -> dict[str, Any]:
        return {**self.base._describe_extra(), "seed": self.seed}

    def _min_angle(self) -> float:
        return self.base.min_angle

    def _map(self, idx: torch.Tensor, inverse: bool) -> torch.Tensor:
        out = idx.clone()
        for lo, perm in self._levels:
            sel = (idx >= lo) & (idx < lo + perm.size)
            if bool(sel.any()):
                local = idx[sel] - lo
                out[sel] = lo + (perm.inverse(local) if inverse else perm.forward(local))
        return out

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

    def candidates(self, z: torch.Tensor, m: int) -> Candidates | None:
        found = self.base.candidates(z, m)
        if found is None:
            return None
        return Candidates(self.from_base(found.index), found.score, found.bound)

    def shortlist_sizes(self) -> list[int]:
        return self.base.shortlist_sizes()

    def cluster_radius(self, idx: torch.Tensor) -> torch.Tensor | None:
        return self.base.cluster_radius(self.to_base(idx))
