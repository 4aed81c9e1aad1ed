"""The keyed permutation behind shuffled systems: a bijection, invertible per index, no table."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from lscdistill.systems import KeyedPermutation, create_system


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
