"""Smallest latent dimension for a number of classes (paper §5.4), and what fits when something does not."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .systems import create_system, get_spec, system_size

__all__ = ["Plan", "fit_message", "plan", "plan_dim"]


def plan_dim(n_classes: int, system: str = "an", interpolations: int = 0) -> int:
    """Smallest ``n_dim`` whose system has at least ``n_classes`` vectors.

    Example (paper §5.4): one interpolation level of A_n fits 300k / 600k / 1.28M classes from n = 67 / 85 / 109.

    Raises:
        ValueError: if no dimension fits (e.g. ``planar``, which only exists in 2-D).
    """
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    spec = get_spec(system)
    lo = spec.min_dim
    if spec.max_dim is not None:  # fixed-dimension system: it fits or it does not
        if system_size(system, lo, interpolations) >= n_classes:
            return lo
        raise ValueError(fit_message(n_classes, system, lo, interpolations))
    hi = lo
    while system_size(system, hi, interpolations) < n_classes:
        hi *= 2
    while lo < hi:  # counts grow with n_dim: binary search for the first that fits
        mid = (lo + hi) // 2
        if system_size(system, mid, interpolations) >= n_classes:
            hi = mid
        else:
            lo = mid + 1
    return lo


def fit_message(n_classes: int, system: str, n_dim: int, interpolations: int = 0) -> str:
    """One-line explanation that a system is too small for ``n_classes``, with what would fit instead."""
    spec = get_spec(system)
    size = system_size(system, n_dim, interpolations)
    head = (
        f"system {system!r} (n_dim={n_dim}, interpolations={interpolations}) has {size:,} vectors, "
        f"fewer than {n_classes:,} classes"
    )
    options = []
    if spec.max_dim is None:
        options.append(f"n_dim >= {plan_dim(n_classes, system, interpolations):,}")
    for k in range(interpolations + 1, spec.max_interpolations + 1):
        if system_size(system, n_dim, k) >= n_classes:
            options.append(f"interpolations={k} ({system_size(system, n_dim, k):,} vectors at n_dim={n_dim})")
            break
    return head + (": use " + " or ".join(options) if options else "")


@dataclass(frozen=True)
class Plan:
    """A planned configuration: the smallest dimension and what it gives."""

    system: str
    interpolations: int
    n_classes: int
    n_dim: int
    size: int
    min_angle_deg: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan(n_classes: int, system: str = "an", interpolations: int = 0) -> Plan:
    """:func:`plan_dim` plus the system's size and minimum angle at that dimension."""
    n_dim = plan_dim(n_classes, system, interpolations)
    built = create_system(system, n_dim, interpolations=interpolations)
    angle = built.min_angle
    return Plan(
        system, interpolations, int(n_classes), n_dim, len(built), round(angle, 6) if math.isfinite(angle) else angle
    )
