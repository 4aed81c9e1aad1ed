"""Losses against the paper's equations written as plain loops in float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lscdistill.centers import SystemCenters, TableCenters
from lscdistill.losses import (
    MAX_BRUTE_FORCE_CLASSES,
    RADIUS_FRACTION,
    CombinedLoss,
    CosineLoss,
    DistanceLoss,
    create_loss,
    min_center_distance,
    spacing_radius,
)
from lscdistill.systems import create_system, list_systems


def _naive_cos(z, c) -> float:  # eq. 11
    total = 0.0
    for zb, cb in zip(z.tolist(), c.tolist(), strict=True):
        dot = sum(a * b for a, b in zip(zb, cb, strict=True))
        total += dot / (math.sqrt(sum(a * a for a in zb)) * math.sqrt(sum(b * b for b in cb)))
    return 1.0 - total / len(z)


def _naive_dist(z, c, r_c) -> float:  # eqs. 6-7, summed over the batch
    total = 0.0
    for i, (zb, cb) in enumerate(zip(z.tolist(), c.tolist(), strict=True)):
        x = math.sqrt(sum((a - b) ** 2 for a, b in zip(zb, cb, strict=True)))
        r = r_c[i] if isinstance(r_c, list) else r_c
        total += math.exp(max(x - r, 0.0)) - 1.0
    return total


@given(b=st.integers(1, 16), d=st.integers(1, 12), seed=st.integers(0, 10_000), r_c=st.floats(0.0, 3.0))
def test_losses_match_equations(b, d, seed, r_c):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=gen, dtype=torch.float64)
    c = torch.randn(b, d, generator=gen, dtype=torch.float64)
    assert CosineLoss()(z, c).item() == pytest.approx(_naive_cos(z, c), abs=1e-12)
    assert DistanceLoss(r_c)(z, c).item() == pytest.approx(_naive_dist(z, c, r_c), rel=1e-12, abs=1e-12)
    assert DistanceLoss(r_c, reduction="mean")(z, c).item() == pytest.approx(_naive_dist(z, c, r_c) / b, rel=1e-12)
    per = torch.rand(b, generator=gen, dtype=torch.float64) * 2
    assert DistanceLoss(r_c)(z, c, per).item() == pytest.approx(_naive_dist(z, c, per.tolist()), rel=1e-12, abs=1e-12)
    combined = CombinedLoss(r_c, distance_weight=0.5, cosine_weight=2.0)(z, c).item()  # both terms batch means
    expected = 0.5 * _naive_dist(z, c, r_c) / b + 2.0 * _naive_cos(z, c)
    assert combined == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_cosine_loss_is_zero_on_centers_and_scale_invariant_with_gradients():
    c = torch.randn(8, 5)
    z = (3.0 * c).requires_grad_()
    assert CosineLoss()(z, c).item() == pytest.approx(0.0, abs=1e-6)
    loss = CosineLoss()(z + torch.randn(8, 5), c)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_distance_loss_is_zero_inside_the_cluster_radius():
    c = torch.zeros(4, 3)
    z = torch.full((4, 3), 0.5)  # distance sqrt(0.75) < 1
    assert DistanceLoss(1.0)(z, c).item() == 0.0
    assert DistanceLoss(0.5)(z, c).item() > 0.0


def test_loss_factory_and_shape_errors():
    assert isinstance(create_loss("cos"), CosineLoss)
    assert isinstance(create_loss("dist", radius=2.0), DistanceLoss)
    assert isinstance(create_loss("cos+dist", radius=0.1), CombinedLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("ce")
    with pytest.raises(ValueError, match="needs a cluster radius"):
        create_loss("dist")
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        create_loss("dist", centers=SystemCenters(create_system("an", 3), 12), radius_fraction=1.0)
    with pytest.raises(ValueError, match=r"both be \[B, D\]"):
        CosineLoss()(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="reduction"):
        DistanceLoss(1.0, reduction="max")


# ------------------------------------------------------------------------ the default radius means something
# Every registered system at a small size, with the defaults `lscdistill train` uses: the radius comes from the
# centers' spacing. (Before: r_c = 1 with unit centers made the loss 0 at z = 0 and halfway between neighbours.)
SYSTEMS = [
    ("an", 3, {}),
    ("an", 3, {"projection": "orthonormal"}),
    ("an", 3, {"interpolations": 1}),
    ("anp", 4, {}),
    ("v21", 4, {}),
    ("v22", 5, {}),
    ("planar", 2, {"interpolations": 2}),
]


def _all_centers(name, n_dim, kw) -> SystemCenters:
    system = create_system(name, n_dim, seed=0, **kw)
    assert name in list_systems()
    return SystemCenters(system, len(system))


def _naive_min_distance(rows) -> float:
    best = math.inf
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            if i != j:
                best = min(best, math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True))))
    return best


def test_every_system_is_covered():
    assert {name for name, _, _ in SYSTEMS} == set(list_systems())


@pytest.mark.parametrize(("name", "n_dim", "kw"), SYSTEMS, ids=[f"{n}{d}{k}" for n, d, k in SYSTEMS])
def test_default_distance_loss_is_positive_at_zero_and_halfway_to_a_neighbour(name, n_dim, kw):
    centers = _all_centers(name, n_dim, kw)
    table = centers.gather(torch.arange(centers.n_classes), dtype=torch.float64)
    d_min = _naive_min_distance(table.tolist())
    assert min_center_distance(centers) == pytest.approx(d_min, rel=1e-9)
    r_c = spacing_radius(centers)
    assert r_c == pytest.approx(RADIUS_FRACTION * d_min / 2, rel=1e-9)
    for loss_name in ("dist", "cos+dist"):
        loss = create_loss(loss_name, centers=centers)  # the train defaults
        assert loss.radius == pytest.approx(r_c)
    dist = create_loss("dist", centers=centers)
    for c in range(centers.n_classes):
        own = table[c : c + 1]
        gaps = torch.linalg.vector_norm(table - own, dim=1)
        gaps[c] = math.inf
        neighbour = table[int(gaps.argmin()) : int(gaps.argmin()) + 1]
        at_zero = dist(torch.zeros_like(own), own).item()
        halfway = dist((own + neighbour) / 2, own).item()
        assert at_zero == pytest.approx(_naive_dist(torch.zeros_like(own), own, r_c), rel=1e-12) and at_zero > 0
        assert halfway == pytest.approx(_naive_dist((own + neighbour) / 2, own, r_c), rel=1e-12) and halfway > 0
        assert dist(own, own).item() == 0.0


@given(seed=st.integers(0, 10_000), system=st.sampled_from(SYSTEMS), scale=st.floats(0.0, 3.0))
def test_distance_loss_is_zero_only_inside_the_own_cluster(seed, system, scale):
    """A point at distance ``scale * r_c`` from a center: the loss toward that class is zero iff scale <= 1, and
    toward every other class it is positive (cluster balls do not touch)."""
    centers = _all_centers(*system)
    table = centers.gather(torch.arange(centers.n_classes), dtype=torch.float64)
    loss, r_c = create_loss("dist", centers=centers, reduction="mean"), spacing_radius(centers)
    gen = torch.Generator().manual_seed(seed)
    c = int(torch.randint(centers.n_classes, (1,), generator=gen))
    step = torch.randn(1, table.shape[1], generator=gen, dtype=torch.float64)
    z = table[c : c + 1] + scale * r_c * step / torch.linalg.vector_norm(step)
    for k in range(centers.n_classes):
        value = loss(z, table[k : k + 1]).item()
        assert value == pytest.approx(_naive_dist(z, table[k : k + 1], r_c), rel=1e-9, abs=1e-12)
        if k != c:
            assert value > 0
        elif scale < 0.999:
            assert value == 0.0
        elif scale > 1.001:
            assert value > 0


@given(seed=st.integers(0, 10_000), system=st.sampled_from(SYSTEMS))
def test_distance_loss_gradient_points_toward_the_center(seed, system):
    centers = _all_centers(*system)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(centers.n_classes, (6,), generator=gen)
    c = centers.gather(labels, dtype=torch.float64)
    z = (c + torch.randn(c.shape, generator=gen, dtype=torch.float64)).requires_grad_()
    for loss in (create_loss("dist", centers=centers), create_loss("cos+dist", centers=centers)):
        z.grad = None
        loss(z, c).backward()
        outside = torch.linalg.vector_norm(z.detach() - c, dim=1) > loss.radius + 1e-6
        toward = torch.nn.functional.cosine_similarity(-z.grad, c - z.detach(), dim=1)
        assert bool(outside.any())
        if isinstance(loss, DistanceLoss):  # exactly along the line to the center
            assert torch.allclose(toward[outside], torch.ones_like(toward[outside]), atol=1e-9)
        else:  # the cosine term bends it, but it still goes downhill toward the center
            assert bool((toward[outside] > 0).all())


def test_min_center_distance_of_a_table_against_a_naive_loop():
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    assert min_center_distance(TableCenters(table)) == pytest.approx(_naive_min_distance(table.tolist()), rel=1e-12)
    with pytest.raises(ValueError, match="give the radius"):
        min_center_distance(TableCenters(table[:1]))
    big = TableCenters(torch.zeros(MAX_BRUTE_FORCE_CLASSES + 1, 1))
    with pytest.raises(ValueError, match="--radius"):
        min_center_distance(big)
