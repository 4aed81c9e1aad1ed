"""A_n root systems (paper §3.2.1, Table 1): ``an``, its positive half ``anp``, and one interpolation level.

A_n lives in n + 1 coordinates: the roots are ``e_i - e_j`` (i != j), n(n + 1) of them, neighbours at 60°.
The paper brings them to n dimensions by dropping the last coordinate (``drop_last``: the 2n roots touching it
become +-e_i of norm 1, so the minimum angle drops to 45°); ``orthonormal`` uses a Helmert basis of the
hyperplane sum(x) = 0 instead and keeps every angle.

One interpolation level adds the normalized sums of two roots at 60°: ``2e_i - e_j - e_k`` and
``e_i + e_j - 2e_k``, n(n^2 - 1) vectors, indexed after all roots.
"""

from __future__ import annotations

from ._registry import register_system
from .base import VectorSystem
from .pattern import Family, PatternSystem, PositiveRoots

__all__: list[str] = []


def _an_count(n: int, interpolations: int) -> int:
    return n * (n + 1) + (n * (n * n - 1) if interpolations else 0)


@register_system(
    "an",
    count=_an_count,
    min_dim=1,
    max_interpolations=1,
    projections=("drop_last", "orthonormal"),
    description="A_n roots e_i - e_j: n(n+1) vectors at 60° (45° after drop-last); +n(n²-1) with interpolations=1",
)
def build_an(n_dim: int, *, interpolations: int, projection: str) -> VectorSystem:
    n_coords = n_dim + 1
    levels = [[Family([(1, 1), (-1, 1)], n_coords)]]
    if interpolations:
        levels.append([Family([(2, 1), (-1, 2)], n_coords), Family([(1, 2), (-2, 1)], n_coords)])
    return PatternSystem("an", n_dim, levels, projection, {"interpolations": interpolations})


@register_system(
    "anp",
    count=lambda n, _: n * (n + 1) // 2,
    min_dim=1,
    projections=("drop_last", "orthonormal"),
    description="A_n positive roots e_i - e_j, i < j: n(n+1)/2 vectors, no two opposite",
)
def build_anp(n_dim: int, *, interpolations: int, projection: str) -> VectorSystem:
    return PatternSystem("anp", n_dim, [[PositiveRoots(n_dim + 1)]], projection, {"interpolations": interpolations})
