"""Registry of vector systems and the ``create_system`` factory (timm-style: a decorator and a string name)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import VectorSystem
from .shuffled import ShuffledSystem

__all__ = [
    "SystemSpec",
    "create_system",
    "current_options",
    "get_spec",
    "list_systems",
    "register_system",
    "system_from_description",
    "system_size",
]


@dataclass(frozen=True)
class SystemSpec:
    """What the registry knows about a system without building it."""

    name: str
    build: Callable[..., VectorSystem]
    count: Callable[[int, int], int]  # (n_dim, interpolations) -> number of vectors
    min_dim: int
    max_dim: int | None
    max_interpolations: int
    projections: tuple[str, ...]  # the first is the default
    description: str
    #: options whose default changed: the value a stored description without the option was written with
    legacy_options: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, SystemSpec] = {}


def register_system(
    name: str,
    *,
    count: Callable[[int, int], int],
    min_dim: int,
    projections: tuple[str, ...],
    description: str,
    max_interpolations: int = 0,
    max_dim: int | None = None,
    legacy_options: dict[str, Any] | None = None,
) -> Callable[[Callable[..., VectorSystem]], Callable[..., VectorSystem]]:
    """Register ``build(n_dim, *, interpolations, projection, **kwargs) -> VectorSystem`` under ``name``."""

    def wrap(build: Callable[..., VectorSystem]) -> Callable[..., VectorSystem]:
        if name in _REGISTRY:
            raise ValueError(f"system {name!r} is already registered")
        _REGISTRY[name] = SystemSpec(
            name, build, count, min_dim, max_dim, max_interpolations, projections, description, legacy_options or {}
        )
        return build

    return wrap


def list_systems() -> list[str]:
    """Names of the registered systems."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> SystemSpec:
    """The registry entry of ``name``; a clear error lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown vector system {name!r}; available: {', '.join(list_systems())}") from None


def _check(spec: SystemSpec, n_dim: int, interpolations: int) -> None:
    if isinstance(n_dim, bool) or int(n_dim) != n_dim:
        raise ValueError(f"n_dim must be an integer, got {n_dim!r}")
    if n_dim < spec.min_dim or (spec.max_dim is not None and n_dim > spec.max_dim):
        span = f"= {spec.min_dim}" if spec.max_dim == spec.min_dim else f">= {spec.min_dim}"
        raise ValueError(f"system {spec.name!r} needs n_dim {span}, got {n_dim}")
    if not 0 <= interpolations <= spec.max_interpolations:
        raise ValueError(
            f"system {spec.name!r} supports interpolations 0..{spec.max_interpolations}, got {interpolations}"
        )


def system_size(name: str, n_dim: int, interpolations: int = 0) -> int:
    """Number of vectors of a system, from its formula (nothing is built)."""
    spec = get_spec(name)
    _check(spec, n_dim, interpolations)
    return spec.count(n_dim, interpolations)


def create_system(
    name: str,
    n_dim: int,
    *,
    seed: int | None = None,
    interpolations: int = 0,
    projection: str | None = None,
    **kwargs,
) -> VectorSystem:
    """Build a vector system by name.

    Args:
        name: one of :func:`list_systems` (``an``, ``anp``, ``v21``, ``v22``, ``planar``).
        n_dim: dimension of the vectors (the latent dimension).
        seed: if given, the seeded shuffle of the system (``an`` + seed is the paper's A_nr): a keyed
            bijective permutation within each interpolation level, computed per index.
        interpolations: interpolation levels (``an``: 0 or 1; ``planar``: number of doublings).
        projection: ``drop_last`` (A_n default, the paper's) or ``orthonormal`` for ``an``/``anp``; systems that
            live in ``n_dim`` coordinates natively only accept ``native``. ``None`` picks the system's default.
        **kwargs: system-specific options (``planar``: ``radius``, ``cluster_radius``).

    Returns:
        A :class:`~lscdistill.systems.VectorSystem`.
    """
    spec = get_spec(name)
    _check(spec, n_dim, interpolations)
    projection = spec.projections[0] if projection is None else projection
    if projection not in spec.projections:
        raise ValueError(f"system {name!r} supports projections {', '.join(spec.projections)}, got {projection!r}")
    system = spec.build(int(n_dim), interpolations=int(interpolations), projection=projection, **kwargs)
    return system if seed is None else ShuffledSystem(system, seed)


def current_options(name: str) -> dict[str, Any]:
    """Today's defaults of the options whose meaning changed (the keys of the system's ``legacy_options``), to record
    beside a generated system so that a later default cannot change what a run was trained with."""
    spec = get_spec(name)
    params = inspect.signature(spec.build).parameters
    return {key: params[key].default for key in spec.legacy_options}


def system_from_description(description: dict[str, Any]) -> VectorSystem:
    """Rebuild a system from its :meth:`~lscdistill.systems.VectorSystem.describe` output (e.g. a snapped store's
    ``system`` attribute). An option the description lacks takes the value it had when the description was written
    (the system's ``legacy_options``: a ``planar`` description without ``halving`` means ``"level"``), not today's
    default."""
    options = dict(description)
    name, n_dim = options.pop("name"), options.pop("n_dim")
    return create_system(name, n_dim, **(get_spec(name).legacy_options | options))
