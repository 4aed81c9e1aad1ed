"""Losses against the paper's equations written as plain loops in float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lscdistill.losses import CombinedLoss, CosineLoss, DistanceLoss, create_loss


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
    assert DistanceLoss()(z, c, per).item() == pytest.approx(_naive_dist(z, c, per.tolist()), rel=1e-12, abs=1e-12)
    combined = CombinedLoss(r_c, distance_weight=0.5, cosine_weight=2.0)(z, c).item()
    assert combined == pytest.approx(0.5 * _naive_dist(z, c, r_c) + 2.0 * _naive_cos(z, c), rel=1e-12, abs=1e-12)


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
    assert isinstance(create_loss("cos+dist"), CombinedLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("ce")
    with pytest.raises(ValueError, match=r"both be \[B, D\]"):
        CosineLoss()(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="reduction"):
        DistanceLoss(reduction="max")
