"""The n_dim planner against the paper (§5.4) and against a linear search over the count formulas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lscdistill.planner import fit_message, plan, plan_dim
from lscdistill.systems import system_size


@pytest.mark.parametrize(("n_classes", "n_dim"), [(300_000, 67), (600_000, 85), (1_281_167, 109)])
def test_paper_5_4_minimum_dimensions_with_one_interpolation(n_classes, n_dim):
    assert plan_dim(n_classes, "an", interpolations=1) == n_dim


def test_a384_holds_exactly_147840_roots():
    assert plan_dim(147_840) == 384 and plan_dim(147_841) == 385 and plan_dim(10) == 3


@given(n_classes=st.integers(1, 200_000), system=st.sampled_from(["an", "anp", "v21", "v22"]))
def test_plan_dim_is_the_smallest_dimension_that_fits(n_classes, system):
    n = plan_dim(n_classes, system)
    assert system_size(system, n) >= n_classes
    lowest = {"v21": 3, "v22": 4}.get(system, 1)
    assert n == lowest or system_size(system, n - 1) < n_classes


def test_plan_reports_size_and_angle():
    p = plan(1_281_167, "an", 1)
    assert (p.n_dim, p.size) == (109, 1_306_910)
    assert p.min_angle_deg == pytest.approx(18.434949, abs=1e-6)
    assert plan(16, "planar", 2).min_angle_deg == 22.5


def test_planar_and_messages():
    with pytest.raises(ValueError, match="use interpolations=3"):
        plan_dim(20, "planar", 1)
    assert "use n_dim >= 447 or interpolations=1" in fit_message(200_000, "an", 384)
    with pytest.raises(ValueError, match="positive integer"):
        plan_dim(0)
