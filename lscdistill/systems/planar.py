"""The 2-D rotation-doubling system of the paper's §5.1.

Four vectors at 90° on a circle of radius r; each doubling adds a copy of all existing vectors rotated by half
the current angle (4, 8, 16, ... vectors) and halves the cluster radius r_c. With K doublings the vectors are the
4 * 2**K equally spaced directions, so the nearest one is a rounding of the angle: O(1).

"The cluster size is also reduced by the factor of two" at each doubling reads two ways: ``halving="all"`` (the
default) halves every cluster, so all classes have r_c / 2**K and no two zero-loss balls touch; ``"level"`` halves
only the new vectors' clusters (level l: r_c / 2**l), so the first four classes keep r_c and their balls cover
neighbouring centers once K >= 2. At 84 classes (K = 5, distance loss, gradient clipping) "all" trains to
99.7-99.8 % train top-1 against 95.3-95.7 % for "level" (``benchmarks/bench_paper_losses.py``, docs/paper.md §5.1).

Index order: level 0 holds the angles 0°, 90°, 180°, 270°; level l >= 1 holds the 4 * 2**(l-1) angles
(2m + 1) * 90° / 2**l, m = 0, 1, ...
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._registry import register_system
from .base import VectorSystem

__all__ = ["HALVINGS", "PlanarSystem"]

HALVINGS = ("all", "level")  # readings of "the cluster size halves at each doubling"; the first is the default


class PlanarSystem(VectorSystem):
    """Rotation-doubling directions in 2-D (paper §5.1).

    Args:
        doublings: number of doublings K (the system's interpolation levels); 4 * 2**K vectors.
        radius: circle radius r of the class centers (the paper uses 5).
        cluster_radius: r_c before any doubling (the paper uses 1).
        halving: ``"all"``: every doubling halves every class's r_c (all classes: ``cluster_radius / 2**K``);
            ``"level"``: it halves only the new classes' (level l: ``cluster_radius / 2**l``), the library's only
            reading before this option existed, so a stored description without ``halving`` means it.
    """

    name = "planar"
    n_dim = 2

    def __init__(
        self, doublings: int = 0, radius: float = 5.0, cluster_radius: float = 1.0, halving: str = HALVINGS[0]
    ) -> None:
        if doublings < 0 or doublings > 40:
            raise ValueError(f"planar doublings must be in [0, 40], got {doublings}")
        if radius <= 0 or cluster_radius <= 0:
            raise ValueError("radius and cluster_radius must be positive")
        if halving not in HALVINGS:
            raise ValueError(f"planar halving must be one of {', '.join(HALVINGS)}, got {halving!r}")
        self.doublings, self.radius, self.r_c = int(doublings), float(radius), float(cluster_radius)
        self.halving = halving
        self.level_sizes = (4, *(4 * 2 ** (level - 1) for level in range(1, self.doublings + 1)))

    def _describe_extra(self) -> dict[str, Any]:
        return {
            "interpolations": self.doublings,
            "radius": self.radius,
            "cluster_radius": self.r_c,
            "halving": self.halving,
        }

    def _min_angle(self) -> float:
        return 90.0 / 2**self.doublings

    def _levels(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(level, position within level) of each index."""
        level = torch.zeros_like(idx)
        for lev in range(1, self.doublings + 1):
            level = level + (idx >= 4 * 2 ** (lev - 1)).long()
        start = torch.where(level == 0, 0, 4 * 2 ** (level - 1).clamp(min=0))
        return level, idx - start

    def angles(self, idx: torch.Tensor) -> torch.Tensor:
        """Angle of each vector in radians (float64)."""
        level, m = self._levels(idx)
        m, quarter = m.double(), math.pi / 2
        return torch.where(level == 0, m * quarter, (2 * m + 1) * quarter / 2.0 ** level.double())

    def cluster_radius(self, idx: torch.Tensor) -> torch.Tensor:
        """r_c of each class ``[B]`` (float64): ``cluster_radius / 2**K`` (``"all"``) or ``/ 2**level``."""
        if self.halving == "all":
            return torch.full(idx.shape, self.r_c / 2.0**self.doublings, dtype=torch.float64, device=idx.device)
        level, _ = self._levels(idx)
        return self.r_c / 2.0 ** level.double()

    def _vectors(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        theta = self.angles(idx)
        return torch.stack([torch.cos(theta), torch.sin(theta)], dim=1).to(dtype)

    def _nearest(self, x: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unit = x / norm
        k, count = self.doublings, 4 * 2**self.doublings
        step = (math.pi / 2) / 2**k
        theta = torch.atan2(unit[:, 1].double(), unit[:, 0].double())
        p = torch.floor(theta / step + 0.5).long() % count  # ties round up (counter-clockwise)
        low = p & -p  # lowest set bit; p = odd * 2**tz
        tz = torch.where(p > 0, torch.log2(low.clamp(min=1).double()).round().long(), k)
        level = torch.where(tz >= k, 0, k - tz)
        idx = torch.where(level == 0, p >> k, 4 * 2 ** (level - 1).clamp(min=0) + ((p >> tz.clamp(max=62)) - 1) // 2)
        cos = (unit.double() * self._vectors(idx, torch.float64)).sum(dim=1)
        return idx, cos.to(unit.dtype)


@register_system(
    "planar",
    count=lambda _, k: 4 * 2**k,
    min_dim=2,
    max_dim=2,
    max_interpolations=40,
    projections=("native",),
    legacy_options={"halving": "level"},  # descriptions written before the option existed used per-level halving
    description="2-D rotation doubling (§5.1): 4·2^K directions on a circle of radius r; K = interpolations",
)
def build_planar(
    n_dim: int,
    *,
    interpolations: int,
    projection: str,
    radius: float = 5.0,
    cluster_radius: float = 1.0,
    halving: str = HALVINGS[0],
) -> VectorSystem:
    return PlanarSystem(interpolations, radius=radius, cluster_radius=cluster_radius, halving=halving)
