"""Vector systems against their definitions: counts (paper Table 1), vectors, angles, nearest vs brute force."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SMALL_SYSTEMS, brute_nearest, cosine_of, min_dim, naive_vectors, system_id
from hypothesis import given
from hypothesis import strategies as st

from lscdistill.systems import create_system, list_systems, system_from_description, system_size
from lscdistill.systems.pattern import Family, helmert, helmert_t

TABLE1 = {  # paper Table 1 and DESIGN §2 count formulas
    ("an", 0): lambda n: n * (n + 1),
    ("an", 1): lambda n: n * (n + 1) + n * (n * n - 1),
    ("anp", 0): lambda n: n * (n + 1) // 2,
    ("v21", 0): lambda n: n * math.comb(n - 1, 2),
    ("v22", 0): lambda n: math.comb(n, 2) * math.comb(n - 2, 2),
}


@pytest.mark.parametrize(
    ("key", "n"), [(key, n) for key in TABLE1 for n in range(2, 10) if n >= min_dim(key[0])], ids=str
)
def test_counts_match_table1_and_materialized_vectors_are_distinct_unit(key, n):
    name, k = key
    system = create_system(name, n, interpolations=k)
    assert len(system) == system.size == TABLE1[key](n) == system_size(name, n, k)
    v = system.materialize(torch.float64)
    assert v.shape == (TABLE1[key](n), n)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(len(v), dtype=torch.float64))
    assert torch.unique(v.round(decimals=9), dim=0).shape[0] == len(v)


def test_interpolated_count_is_sums_of_60_degree_root_pairs():
    n = 5
    roots = naive_vectors("an", n, projection="orthonormal")
    g = roots @ roots.T
    pairs = {
        tuple((roots[i] + roots[j]).div((roots[i] + roots[j]).norm()).round(decimals=9).tolist())
        for i in range(len(roots))
        for j in range(len(roots))
        if abs(g[i, j] - 0.5) < 1e-9
    }
    assert len(pairs) == n * (n * n - 1)
    interp = create_system("an", n, interpolations=1, projection="orthonormal").materialize(torch.float64)
    assert {tuple(r) for r in interp[len(roots) :].round(decimals=9).tolist()} == pairs


@pytest.mark.parametrize("n", range(4, 10))
def test_vectors_match_naive_construction_in_index_order(small_system_spec, n):
    name, kwargs = small_system_spec
    system = create_system(name, n, **kwargs)
    expected = naive_vectors(name, n, **kwargs)
    torch.testing.assert_close(system.materialize(torch.float64), expected)


@pytest.mark.parametrize(
    ("name", "kwargs", "angle"),
    [
        ("an", {}, 45.0),  # Table 1: drop-last brings roots touching the last coordinate to +-e_i
        ("an", {"projection": "orthonormal"}, 60.0),
        ("an", {"interpolations": 1, "projection": "orthonormal"}, 30.0),  # one level halves the angle
        ("an", {"interpolations": 1}, math.degrees(math.atan(1 / 3))),
        ("anp", {}, 45.0),
        ("anp", {"projection": "orthonormal"}, 60.0),
        ("v21", {}, math.degrees(math.acos(2 / 3))),
        ("v22", {}, math.degrees(math.acos(3 / 4))),
    ],
)
@pytest.mark.parametrize("n", [6, 9, 40, 384])
def test_min_angle_matches_table1_and_brute_force(name, kwargs, angle, n):
    system = create_system(name, n, **kwargs)
    assert system.min_angle == pytest.approx(angle, abs=1e-6)
    if n <= 9:
        v = naive_vectors(name, n, **kwargs)
        g = v @ v.T
        g.fill_diagonal_(-2)
        assert math.degrees(math.acos(min(1.0, g.max().item()))) == pytest.approx(angle, abs=1e-6)


def _existing(dims) -> list:
    """``(spec, n)`` for each small system and each of ``dims``, raised to the smallest dimension the system exists
    in (below it: covered by test_bad_input), each pair once."""
    cases = sorted({(i, max(n, min_dim(spec[0]))) for i, spec in enumerate(SMALL_SYSTEMS) for n in dims})
    return [pytest.param(SMALL_SYSTEMS[i], n, id=f"{system_id(SMALL_SYSTEMS[i])}-{n}") for i, n in cases]


@pytest.mark.parametrize(("spec", "n"), _existing(range(2, 6)))
def test_min_angle_of_small_systems_matches_brute_force(spec, n):
    name, kwargs = spec
    v = naive_vectors(name, n, **kwargs)
    g = v @ v.T
    g.fill_diagonal_(-2)
    expected = math.degrees(math.acos(min(1.0, g.max().item())))
    assert create_system(name, n, **kwargs).min_angle == pytest.approx(expected, abs=1e-6)


def test_orthonormal_projection_keeps_every_angle_and_helmert_is_orthonormal():
    n = 7
    h = helmert(torch.eye(n + 1, dtype=torch.float64))  # [n+1, n] = H^T
    torch.testing.assert_close(h.T @ h, torch.eye(n, dtype=torch.float64))
    torch.testing.assert_close(h.sum(0), torch.zeros(n, dtype=torch.float64))
    y = torch.randn(5, n, dtype=torch.float64)
    torch.testing.assert_close(helmert_t(y), y @ h.T)
    system = create_system("an", n, projection="orthonormal")
    v = system.materialize(torch.float64)
    i, j = torch.randint(0, len(v), (2, 200))
    # cos of projected roots == cos of (e_a - e_b).(e_c - e_d) / 2 in n+1 dims
    lifted = helmert_t(v)
    torch.testing.assert_close((v[i] * v[j]).sum(1), (lifted[i] * lifted[j]).sum(1))
    assert set(lifted.mul(math.sqrt(2)).round(decimals=9).unique().tolist()) == {-1.0, 0.0, 1.0}


def _naive_planar_radii(doublings: int, halving: str, r_c: float = 1.0) -> list[float]:
    """r_c of each class in index order, from the rule as the paper states it, level by level."""
    radii = [r_c] * 4
    for _ in range(doublings):
        if halving == "all":  # every cluster halves, the new copies get the halved size too
            radii = [r / 2 for r in radii]
            radii += [radii[0]] * len(radii)
        else:  # only the new copies get half the size of the previous level's
            radii += [r_c / 2 ** (len(radii).bit_length() - 2)] * len(radii)
    return radii


@pytest.mark.parametrize("halving", ["all", "level"])
def test_planar_doubling_geometry_and_cluster_radius(halving):
    system = create_system("planar", 2, interpolations=3, radius=5.0, halving=halving)
    assert len(system) == 32 and system.level_sizes == (4, 4, 8, 16)
    torch.testing.assert_close(system.materialize(torch.float64), naive_vectors("planar", 2, interpolations=3))
    assert system.min_angle == pytest.approx(90 / 8)
    r_c = system.cluster_radius(torch.arange(32))
    torch.testing.assert_close(r_c, torch.tensor(_naive_planar_radii(3, halving), dtype=torch.float64))
    expected = {"all": [0.125] * 8, "level": [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]}[halving]
    picked = system.cluster_radius(torch.tensor([0, 3, 4, 7, 8, 15, 16, 31]))
    torch.testing.assert_close(picked, torch.tensor(expected, dtype=torch.float64))


def test_planar_default_halves_every_cluster_so_no_zero_loss_ball_holds_another_center():
    assert create_system("planar", 2, interpolations=5).describe()["halving"] == "all"
    for halving, overlap in (("all", False), ("level", True)):
        system = create_system("planar", 2, interpolations=5, radius=5.0, halving=halving)
        centers = 5.0 * system.materialize(torch.float64)[:84]  # the paper's 84 classes (§5.1)
        distance = torch.cdist(centers, centers).fill_diagonal_(math.inf)
        inside = distance <= system.cluster_radius(torch.arange(84))[:, None]  # center j in class i's ball
        assert bool(inside.any()) is overlap


def test_planar_description_round_trips_and_old_descriptions_mean_per_level_halving():
    for halving in ("all", "level"):
        system = create_system("planar", 2, interpolations=2, seed=3, cluster_radius=0.5, halving=halving)
        rebuilt = system_from_description(system.describe())
        assert rebuilt.describe() == system.describe()
        torch.testing.assert_close(rebuilt.cluster_radius(torch.arange(16)), system.cluster_radius(torch.arange(16)))
    old = {"name": "planar", "n_dim": 2, "interpolations": 2, "radius": 5.0, "cluster_radius": 1.0}  # before halving
    assert system_from_description(old).describe()["halving"] == "level"
    an = create_system("an", 5, seed=1, interpolations=1)
    assert system_from_description(an.describe()).describe() == an.describe()


# ------------------------------------------------------------------------------------------------ nearest
def _inputs(system, n: int, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    v = system.materialize(torch.float64)
    pick = torch.randint(0, len(v), (200,), generator=gen)
    pick2 = torch.randint(0, len(v), (200,), generator=gen)
    return {
        "gaussian": torch.randn(300, n, generator=gen, dtype=torch.float64),
        "near-center": v[pick] + 0.05 * torch.randn(200, n, generator=gen, dtype=torch.float64),
        "exact-center": v[pick],
        "midpoints": v[pick] + v[pick2],  # ties between two vectors
        "lattice": torch.randint(-2, 3, (300, n), generator=gen).double(),  # repeated max/min coordinates
        "constant": torch.full((3, n), 1.5, dtype=torch.float64),
    } | {"_dtype": dtype}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("spec", "n"), _existing([2, 3, 5, 9]))
def test_nearest_matches_brute_force(spec, n, dtype):
    name, kwargs = spec
    for seed in (0, 1):
        system = create_system(name, n, seed=seed if seed else None, **kwargs)
        table = system.materialize(torch.float64)
        tol = 1e-12 if dtype == torch.float64 else 2e-6
        for label, z in _inputs(system, n, dtype, seed).items():
            if label.startswith("_"):
                continue
            z = z.to(dtype)
            zero = (z == 0).all(1)
            idx, cos = system.nearest(z)
            best, _ = brute_nearest(z[~zero], table)
            got = cosine_of(z[~zero], table, idx[~zero])
            assert (best - got).abs().max() <= tol, (label, (best - got).abs().max())
            torch.testing.assert_close(cos[~zero].double(), got, atol=tol * 10, rtol=0)
            assert (idx[zero] == 0).all() and (cos[zero] == 0).all()


@st.composite
def _lattice_case(draw):
    """A small system, a dimension it exists in, and a nonzero integer row of that length."""
    name, kwargs = draw(st.sampled_from(SMALL_SYSTEMS))
    n = draw(st.integers(max(3, min_dim(name)), 9))
    row = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n).filter(any))
    return name, kwargs, n, row


@given(case=_lattice_case(), scale=st.sampled_from([1e-30, 1.0, 1e30]))
def test_nearest_property_lattice_rows(case, scale):
    name, kwargs, n, row = case
    system = create_system(name, n, **kwargs)
    z = torch.tensor(row, dtype=torch.float64)[None] * scale
    table = system.materialize(torch.float64)
    idx, _ = system.nearest(z)
    best, _ = brute_nearest(z / scale, table)
    assert cosine_of(z / scale, table, idx).item() == pytest.approx(best.item(), abs=1e-12)


def test_nearest_degenerate_rows_and_overflow():
    system = create_system("an", 16, seed=3)
    z = torch.randn(6, 16)
    z[1] = 0
    z[2, 3] = float("nan")
    z[3, 0] = float("inf")
    z[4] = z[0] * 1e35  # float32 norm of this row would overflow
    z[5] = z[0] * 1e-40  # subnormal
    idx, cos = system.nearest(z)
    assert idx[1] == 0 and cos[1] == 0
    assert idx[2] == -1 and idx[3] == -1 and cos[2:4].isnan().all()
    assert idx[4] == idx[0] and idx[5] == idx[0]
    torch.testing.assert_close(cos[[4, 5]], cos[[0, 0]])


def test_nearest_is_deterministic_and_follows_input_dtype_and_device():
    system = create_system("an", 32, interpolations=1, seed=7)
    z = torch.randint(-1, 2, (500, 32)).float()  # many ties
    a, ca = system.nearest(z)
    b, cb = system.nearest(z.clone())
    assert torch.equal(a, b) and torch.equal(ca, cb)
    assert ca.dtype == torch.float32 and system.nearest(z.double())[1].dtype == torch.float64
    assert system.vectors(torch.tensor([0, 1]), dtype=torch.float64).dtype == torch.float64
    assert system.nearest(z.half())[1].dtype == torch.float32


def test_drop_last_unit_norm_vectors_are_predictable():
    """Vectors touching the dropped coordinate (norm 1 before normalizing) must be found: decode by cosine."""
    n = 20
    system = create_system("an", n)
    touching = [i * n + n - 1 for i in range(n)] + [n * n + j for j in range(n)]  # (i, n) and (n, j)
    v = system.vectors(torch.tensor(touching))
    assert (v.abs().sum(1) == 1).all()  # +-e_i
    assert torch.equal(system.nearest(v)[0], torch.tensor(touching))


# --------------------------------------------------------------------------------------- large n, no tables
def test_shuffled_an384_round_trip_over_all_root_indices():
    system = create_system("an", 384, seed=11)
    assert len(system) == 147_840
    idx = torch.cat([torch.tensor([0, 1, 147_838, 147_839]), torch.randint(0, 147_840, (4000,))])
    idx_back, cos = system.nearest(system.vectors(idx))
    assert torch.equal(idx_back, idx)
    torch.testing.assert_close(cos, torch.ones_like(cos))


def test_interpolated_an384_indices_beyond_1_28m_round_trip():
    system = create_system("an", 384, interpolations=1, seed=5)
    assert system.level_sizes == (147_840, 56_622_720)
    idx = torch.cat(
        [torch.tensor([147_840, 1_280_000, 1_281_166, len(system) - 1]), torch.randint(0, len(system), (3000,))]
    )
    back, _ = system.nearest(system.vectors(idx))
    assert torch.equal(back, idx)
    # the shuffle stays within levels: the first 147,840 shuffled indices are roots (two nonzeros, +-1 pattern)
    roots = system.vectors(torch.randint(0, 147_840, (500,)))
    assert ((roots != 0).sum(1) <= 2).all()


def test_huge_system_needs_no_table():
    system = create_system("v22", 384, seed=1)  # 5.35e9 vectors
    idx = torch.tensor([0, len(system) - 1, len(system) // 2])
    assert torch.equal(system.nearest(system.vectors(idx))[0], idx)


@given(idx=st.integers(0, 2**62))
def test_family_rank_unrank_round_trip(idx):
    for family in (Family([(1, 1), (-1, 1)], 385), Family([(2, 1), (-1, 2)], 385), Family([(1, 2), (-1, 2)], 100_000)):
        i = torch.tensor([idx % family.size])
        pos = family.positions(i)
        assert len(set(pos[0].tolist())) == pos.shape[1] and (pos >= 0).all() and (pos < family.n_coords).all()
        assert family.index(pos).item() == i.item()


@given(st.lists(st.integers(0, 384), min_size=4, max_size=4, unique=True))
def test_family_index_positions_round_trip_from_positions(coords):
    family = Family([(1, 2), (-1, 2)], 385)
    pos = torch.tensor([coords])
    back = family.positions(family.index(pos))
    assert sorted(back[0, :2].tolist()) == sorted(coords[:2]) and sorted(back[0, 2:].tolist()) == sorted(coords[2:])


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: create_system("bn", 4), "unknown vector system 'bn'"),
        (lambda: create_system("an", 0), "needs n_dim >= 1"),
        (lambda: create_system("an", 4, interpolations=2), "interpolations 0..1"),
        (lambda: create_system("v21", 8, projection="drop_last"), "supports projections native"),
        (lambda: create_system("planar", 3), "needs n_dim = 2"),
        (lambda: create_system("planar", 2, halving="some"), "planar halving must be one of all, level"),
        (lambda: create_system("an", 4).vectors(torch.tensor([20])), r"index 20 is outside \[0, 20\)"),
        (lambda: create_system("an", 4).vectors(torch.tensor([0.5])), "integer tensor"),
        (lambda: create_system("an", 4).nearest(torch.randn(2, 5)), r"shape \[B, 4\]"),
    ],
)
def test_bad_input_gives_one_clear_error(call, match):
    with pytest.raises((ValueError, IndexError), match=match):
        call()


def test_registry_lists_every_system():
    assert list_systems() == ["an", "anp", "planar", "v21", "v22"]


@pytest.mark.parametrize("doublings", [0, 1, 3, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planar_nearest_matches_brute_force(doublings, dtype):
    system = create_system("planar", 2, interpolations=doublings, seed=doublings or None)
    table = system.materialize(torch.float64)
    gen = torch.Generator().manual_seed(doublings)
    mid = table[:-1] + table[1:]  # ties between neighbours in index order (drop opposite pairs: zero rows)
    z = torch.cat([torch.randn(2000, 2, generator=gen, dtype=torch.float64), table, mid[mid.norm(dim=1) > 1e-9]])
    z = z.to(dtype)
    idx, cos = system.nearest(z)
    best, _ = brute_nearest(z, table)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert (best - cosine_of(z, table, idx)).abs().max() <= tol
    torch.testing.assert_close(cos.double(), cosine_of(z, table, idx), atol=10 * tol, rtol=0)


@given(
    which=st.sampled_from(range(8)),
    n=st.sampled_from([5, 17, 384]),
    seed=st.one_of(st.none(), st.integers(0, 2**31)),
    frac=st.floats(0, 1, exclude_max=True),
)
def test_index_vector_round_trip_property(which, n, seed, frac):
    from conftest import SMALL_SYSTEMS

    name, kwargs = SMALL_SYSTEMS[which]
    system = create_system(name, n, seed=seed, **kwargs)
    i = torch.tensor([int(frac * len(system)), len(system) - 1])
    v = system.vectors(i, dtype=torch.float64)
    back, cos = system.nearest(v)
    assert torch.equal(back, i)
    torch.testing.assert_close(cos, torch.ones(2, dtype=torch.float64))


def test_a_run_records_the_planar_reading_it_trained_with_and_old_runs_keep_theirs():
    from lscdistill.rundir import create_centers
    from lscdistill.systems import current_options

    assert current_options("planar") == {"halving": "all"} and current_options("an") == {}
    spec = {"type": "system", "name": "planar", "n_dim": 2, "seed": None, "interpolations": 2, "projection": None}
    old = create_centers(spec, 16)  # a run written before "options" existed: per-level halving
    new = create_centers(spec | {"options": current_options("planar")}, 16)
    labels = torch.arange(16)
    assert old.system.describe()["halving"] == "level" and new.system.describe()["halving"] == "all"
    assert not torch.equal(old.cluster_radius(labels), new.cluster_radius(labels))
