"""Naive references shared by the tests: explicit loops over the documented definitions, float64 throughout."""

from __future__ import annotations

import itertools
import math
import os

# One intra-op thread per test process, and for the processes the tests start: `make test` runs two pytest workers
# on two cores, and these small models only slow down when their threads compete. Set before torch is imported.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)
pytest.register_assert_rewrite("cli_runner")  # its assert shows the values, as in a test module

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")

# Families in the documented index order: groups (value, k), each k-subset of the still-free coordinates in colex
# order (sorted by the reversed tuple).
FAMILIES = {
    "an": [[((1, 1), (-1, 1))], [((2, 1), (-1, 2)), ((1, 2), (-2, 1))]],
    "v21": [[((1, 2), (-1, 1))]],
    "v22": [[((1, 2), (-1, 2))]],
}


def _colex(items: list[int], k: int) -> list[tuple[int, ...]]:
    return sorted(itertools.combinations(items, k), key=lambda c: tuple(reversed(c)))


def naive_family(groups, n_coords: int) -> list[list[float]]:
    """All members of a pattern family, in index order, built one by one."""
    rows: list[tuple[dict[int, float], list[int]]] = [({}, list(range(n_coords)))]
    for value, k in groups:
        nxt = []
        for placed, free in rows:
            # relative positions among the free coordinates, colex order
            for rel in _colex(list(range(len(free))), k):
                chosen = [free[r] for r in rel]
                nxt.append(({**placed, **dict.fromkeys(chosen, value)}, [c for c in free if c not in chosen]))
        rows = nxt
    return [[placed.get(c, 0.0) for c in range(n_coords)] for placed, _ in rows]


def naive_vectors(name: str, n_dim: int, interpolations: int = 0, projection: str | None = None) -> torch.Tensor:
    """Unit vectors of a system in index order, float64, from the definitions alone."""
    if name == "anp":
        n = n_dim + 1
        raw = [[1.0 if c == i else -1.0 if c == j else 0.0 for c in range(n)] for i, j in _colex(list(range(n)), 2)]
        levels = [raw]
    elif name == "planar":
        angles = [m * 90.0 for m in range(4)]
        for level in range(1, interpolations + 1):
            angles += [(2 * m + 1) * 90.0 / 2**level for m in range(4 * 2 ** (level - 1))]
        rad = torch.tensor([math.radians(a) for a in angles], dtype=torch.float64)
        return torch.stack([rad.cos(), rad.sin()], dim=1)
    else:
        native = name in ("v21", "v22")
        n = n_dim if native else n_dim + 1
        levels = [[row for groups in level for row in naive_family(groups, n)] for level in FAMILIES[name]]
        levels = levels[: interpolations + 1]
    v = torch.tensor([row for level in levels for row in level], dtype=torch.float64)
    projection = projection or ("native" if name in ("v21", "v22") else "drop_last")
    if projection == "drop_last":
        v = v[:, :n_dim]
    elif projection == "orthonormal":
        n = v.shape[1]
        basis = torch.zeros(n - 1, n, dtype=torch.float64)  # Helmert rows, built explicitly
        for k in range(1, n):
            basis[k - 1, :k] = 1.0
            basis[k - 1, k] = -k
            basis[k - 1] /= math.sqrt(k * (k + 1))
        v = v @ basis.T
    return v / v.norm(dim=1, keepdim=True)


def brute_nearest(z: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest cosine of each row of z against all rows of table, float64."""
    zz = z.double()
    zz = zz / zz.norm(dim=1, keepdim=True)
    return (zz @ table.double().T).max(dim=1)


def cosine_of(z: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    zz = z.double()
    return (zz / zz.norm(dim=1, keepdim=True) * table.double()[idx]).sum(1)


SMALL_SYSTEMS = [
    ("an", {}),
    ("an", {"projection": "orthonormal"}),
    ("an", {"interpolations": 1}),
    ("an", {"interpolations": 1, "projection": "orthonormal"}),
    ("anp", {}),
    ("anp", {"projection": "orthonormal"}),
    ("v21", {}),
    ("v22", {}),
]


def system_id(param) -> str:
    name, kwargs = param
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


@pytest.fixture(params=SMALL_SYSTEMS, ids=system_id)
def small_system_spec(request):
    return request.param


def min_dim(name: str) -> int:
    return {"v21": 3, "v22": 4}.get(name, 2)
