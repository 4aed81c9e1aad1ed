"""The keyed permutation behind shuffled systems: a bijection, invertible per index, no table; the shuffled map's
table lookups give the same bits as the frozen Feistel arithmetic."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from legacy_decoder import legacy_feistel_radix, legacy_shuffled_map

from lscdistill.systems import KeyedPermutation, create_system
from lscdistill.systems.keyed import feistel_radix


@given(size=st.integers(0, 3000), seed=st.integers(0, 2**40), salt=st.integers(0, 3))
def test_keyed_permutation_is_a_bijection_with_inverse(size, seed, salt):
    perm = KeyedPermutation(size, seed, salt=salt)
    idx = torch.arange(size)
    fwd = perm.forward(idx)
    assert torch.equal(torch.sort(fwd).values, idx)
    assert torch.equal(perm.inverse(fwd), idx)
    assert torch.equal(perm.forward(perm.inverse(idx)), idx)


@given(size=st.integers(2**20, 2**61), seed=st.integers(0, 2**31), data=st.data())
def test_keyed_permutation_round_trip_on_huge_domains(size, seed, data):
    perm = KeyedPermutation(size, seed)
    idx = torch.tensor(data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=50)))
    out = perm.forward(idx)
    assert ((out >= 0) & (out < size)).all()
    assert torch.equal(perm.inverse(out), idx)


def test_seeds_give_different_shuffles_and_the_same_seed_the_same():
    idx = torch.arange(10_000)
    a, b, c = (KeyedPermutation(10_000, s).forward(idx) for s in (1, 2, 1))
    assert torch.equal(a, c)
    assert (a != b).float().mean() > 0.99
    assert (a != idx).float().mean() > 0.99  # it really shuffles
    # roughly uniform: the first 1,000 indices land evenly over the 10 deciles of the range
    counts = torch.bincount(a[:1000] // 1000, minlength=10)
    assert counts.min() > 60 and counts.max() < 140


def test_shuffled_system_is_a_permutation_of_the_base_system():
    base = create_system("an", 6, interpolations=1)
    shuffled = create_system("an", 6, interpolations=1, seed=42)
    vb, vs = base.materialize(torch.float64), shuffled.materialize(torch.float64)
    roots = base.level_sizes[0]
    for lo, hi in ((0, roots), (roots, len(base))):  # same vectors within each level, different order
        assert torch.equal(torch.unique(vb[lo:hi], dim=0), torch.unique(vs[lo:hi], dim=0))
    assert not torch.equal(vb, vs)
    assert shuffled.describe() == {"name": "an", "n_dim": 6, "interpolations": 1, "projection": "drop_last", "seed": 42}


def test_both_constructions_are_bijections():
    # mixed radix: 147,840 = 384 * 385 and 8,192 = 64 * 128; binary: the primes 7,919 and 65,537, 8,193 = 3 * 2,731
    for size, mixed in ((147_840, True), (7_919, False), (2**13, True), (2**13 + 1, False), (65_537, False)):
        perm = KeyedPermutation(size, 123)
        assert (perm.radix is not None) == mixed, size
        idx = torch.arange(size)
        out = perm.forward(idx)
        assert torch.equal(torch.sort(out).values, idx)
        assert torch.equal(perm.inverse(out), idx)


def _apply_lookup(perm, v, inverse):
    """The lookup form of ``perm`` run by hand, one index at a time (Python ints)."""
    radix, steps, final_a, final_b = perm.lookup(inverse)
    out = []
    for i in v.tolist():
        a, b = divmod(i, radix)
        for updates_a, table in steps:
            a, b = (a + int(table[b]), b) if updates_a else (a, b + int(table[a]))
        out.append(int(final_a[a]) + int(final_b[b]))
    return torch.tensor(out, dtype=torch.long)


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([0, 1, 2, 37, 256, 7_919, 2**13, 2**13 + 1, 147_840, 10**6]), seed=st.integers(0, 2**40))
def test_lookup_form_is_the_permutation(size, seed):
    perm = KeyedPermutation(size, seed, salt=1)
    v = torch.randint(0, max(size, 1), (60,)) if size else torch.zeros(0, dtype=torch.long)
    if size:
        v[:2] = torch.tensor([0, size - 1])
    for inverse in (False, True):
        want = perm.inverse(v) if inverse else perm.forward(v)
        assert torch.equal(_apply_lookup(perm, v, inverse), want)


def test_lookup_form_is_refused_for_a_large_cycle_walked_domain():
    perm = KeyedPermutation(65_537, 0)  # prime: cycle-walked, above the 2**16 tables
    assert perm.radix is None and perm.lookup_span is None
    with pytest.raises(ValueError, match="no lookup form"):
        perm.lookup(inverse=True)


@given(size=st.integers(2**8, 2**61), seed=st.integers(0, 2**31), data=st.data())
def test_mixed_radix_feistel_gives_the_frozen_bits(size, seed, data):
    perm = KeyedPermutation(size, seed)
    if perm.radix is None:
        return
    idx = torch.tensor(data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=50)))
    for inverse in (False, True):
        want = legacy_feistel_radix(idx, *perm.radix, perm.keys, inverse)
        assert torch.equal(feistel_radix(idx, *perm.radix, perm.keys, inverse), want)


# (name, n_dim, interpolations): lookup levels (mixed radix, cycle-walked, one element), one table of the whole map,
# levels beyond the lookup budget (a radix level, large cycle walks), none mapped by lookups
_SHAPES = {
    ("an", 384, 1): 2,  # the 1.28M-class A_384r+1: two radix levels by lookups
    ("an", 8, 1): 2,  # a cycle-walked level and a radix level, one table of the whole map
    ("an", 1, 1): 2,  # levels of two elements and of none
    ("an", 3, 0): 1,
    ("anp", 8, 0): 1,
    ("v21", 64, 0): 1,
    ("v21", 384, 0): 1,  # one radix level by lookups
    ("v22", 384, 0): 0,  # radices beyond the budget: the Feistel arithmetic
    ("an", 2048, 1): 1,  # roots by lookups, the interpolated level by arithmetic
    ("planar", 2, 12): 13,  # thirteen levels
    ("planar", 2, 38): 27,  # ... and levels beyond the budget: radix and cycle-walked above 2**24
}


@pytest.fixture(scope="module")
def shuffled_systems():
    return {shape: create_system(shape[0], shape[1], interpolations=shape[2], seed=11) for shape in _SHAPES}


def _check_against_frozen(system, idx):
    for inverse in (False, True):
        want = legacy_shuffled_map(system, idx.reshape(-1), inverse).reshape(idx.shape)
        got = system.from_base(idx) if inverse else system.to_base(idx)
        assert got.shape == idx.shape and torch.equal(got, want), (system.describe(), inverse)


@settings(max_examples=80, deadline=None)
@given(shape=st.sampled_from(sorted(_SHAPES)), data=st.data())
def test_shuffled_map_gives_the_frozen_bits(shuffled_systems, shape, data):
    system = shuffled_systems[shape]
    assert system._n_lookup == _SHAPES[shape]
    n = len(system)
    edges = [e for lo, perm in system._levels if perm.size for e in (lo, lo + perm.size - 1)]
    values = st.one_of(st.integers(0, n - 1), st.sampled_from(edges), st.integers(-(2**62), -1))
    idx = torch.tensor(data.draw(st.lists(values, min_size=1, max_size=200)), dtype=torch.long)
    _check_against_frozen(system, idx)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**62), n_dim=st.sampled_from([1, 2, 3, 5, 8, 16, 30]), interpolations=st.integers(0, 1))
def test_shuffled_map_gives_the_frozen_bits_for_every_index_of_small_systems(seed, n_dim, interpolations):
    system = create_system("an", n_dim, interpolations=interpolations, seed=seed)
    idx = torch.arange(-2, len(system))
    _check_against_frozen(system, idx)
    inside = idx[2:]
    assert torch.equal(system.to_base(system.from_base(inside)), inside)


@pytest.mark.parametrize("seed", [0, 1, 2**40 + 3])
def test_shuffled_map_of_the_imagenet_size_system_gives_the_frozen_bits(seed):
    system = create_system("an", 384, interpolations=1, seed=seed)  # A_384r+1; ImageNet's 1,281,167 classes
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat(
        [
            torch.randint(0, 1_281_167, (20_000,), generator=g),
            torch.randint(0, len(system), (20_000,), generator=g),
            torch.tensor([-1, -5, 0, 147_839, 147_840, len(system) - 1]),
        ]
    )
    _check_against_frozen(system, idx)
    _check_against_frozen(system, idx[:20_000].reshape(500, 40))  # candidates come as [B, K]
    assert torch.equal(system.to_base(system.from_base(idx[:-6])), idx[:-6])


@pytest.mark.parametrize("shape", [("an", 384, 1), ("an", 8, 1), ("v21", 64, 0), ("planar", 2, 12)])
def test_traced_shuffled_map_runs_the_arithmetic_with_the_same_bits(shuffled_systems, shape, monkeypatch):
    """Under torch.export / torch.compile every level runs the Feistel arithmetic (no tables in an exported file);
    it gives the frozen bits like the eager lookups."""
    system = shuffled_systems[shape]
    g = torch.Generator().manual_seed(len(system) % 1000)
    idx = torch.cat([torch.randint(0, len(system), (3000,), generator=g), torch.tensor([-1, 0, len(system) - 1])])
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    _check_against_frozen(system, idx)


def test_shuffled_map_takes_int32_and_stays_in_range_past_the_end(shuffled_systems):
    big = shuffled_systems[("planar", 2, 38)]  # more than 2**31 indices
    idx = torch.tensor([-3, 0, 5, 2**31 - 2])
    for inverse in (False, True):
        want = big.from_base(idx) if inverse else big.to_base(idx)
        got = big.from_base(idx.int()) if inverse else big.to_base(idx.int())
        assert got.dtype == torch.int64 and torch.equal(got, want)
    system = shuffled_systems[("an", 384, 1)]
    past = torch.tensor([len(system), len(system) + 7, 2**62])
    for mapped in (system.to_base(past), system.from_base(past)):
        assert ((mapped >= 0) & (mapped < len(system))).all()  # documented: some index in range, no error
