"""V21 and V22 (follow-up paper): permutations of (1, 1, -1) and (1, 1, -1, -1) living natively in n dims.

V21 has n * C(n-1, 2) vectors with a largest cosine of 2/3 between neighbours (48.19°); V22 has
C(n, 2) * C(n-2, 2) vectors with a largest cosine of 3/4 (41.41°): many more vectors than A_n at a
similar separation.
"""

from __future__ import annotations

from math import comb

from ._registry import register_system
from .base import VectorSystem
from .pattern import Family, PatternSystem

__all__: list[str] = []


@register_system(
    "v21",
    count=lambda n, _: n * comb(n - 1, 2),
    min_dim=3,
    projections=("native",),
    description="permutations of (1, 1, -1): n·C(n-1,2) vectors, min angle 48.19°",
)
def build_v21(n_dim: int, *, interpolations: int, projection: str) -> VectorSystem:
    return PatternSystem("v21", n_dim, [[Family([(1, 2), (-1, 1)], n_dim)]], projection)


@register_system(
    "v22",
    count=lambda n, _: comb(n, 2) * comb(n - 2, 2),
    min_dim=4,
    projections=("native",),
    description="permutations of (1, 1, -1, -1): C(n,2)·C(n-2,2) vectors, min angle 41.41°",
)
def build_v22(n_dim: int, *, interpolations: int, projection: str) -> VectorSystem:
    return PatternSystem("v22", n_dim, [[Family([(1, 2), (-1, 2)], n_dim)]], projection)
