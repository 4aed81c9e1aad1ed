"""The fast decoder as a plain tensor program: same answers as the old decoder (ties included) and as brute force,
no host synchronization, and it exports (``torch.export``, dynamic batch) and compiles (``fullgraph=True``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from legacy_decoder import legacy_nearest
from torch.utils._python_dispatch import TorchDispatchMode

from lscdistill.centers import SystemCenters
from lscdistill.systems import KeyedPermutation, create_system
from lscdistill.systems.extremes import block_width, row_extremes

SYSTEMS = [
    ("an", {}),
    ("an", {"interpolations": 1}),
    ("an", {"projection": "orthonormal"}),
    ("an", {"interpolations": 1, "projection": "orthonormal"}),
    ("anp", {}),
    ("anp", {"projection": "orthonormal"}),
    ("v21", {}),
    ("v22", {}),
    ("planar", {"interpolations": 3}),
]
_MIN = {"v21": 3, "v22": 4}


def _system(which: int, n: int, seed: int | None):
    name, kwargs = SYSTEMS[which]
    n = 2 if name == "planar" else max(n, _MIN.get(name, 2))
    return create_system(name, n, seed=seed, **kwargs)


@st.composite
def batches(draw, n: int):
    """Rows with many exact ties (small integers), plus zero, NaN, Inf, huge and tiny rows."""
    kind = draw(st.sampled_from(["ties", "gauss", "mixed"]))
    b = draw(st.integers(1, 12))
    rows = []
    for _ in range(b):
        if kind == "ties" or (kind == "mixed" and draw(st.booleans())):
            row = draw(st.lists(st.integers(-2, 2), min_size=n, max_size=n))
        else:
            row = draw(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=n, max_size=n))
        special = draw(st.sampled_from([None, None, None, "zero", "nan", "inf", "huge", "tiny"]))
        if special == "zero":
            row = [0.0] * n
        elif special in ("nan", "inf"):
            row[draw(st.integers(0, n - 1))] = float(special)
        elif special == "huge":
            row = [v * 1e30 for v in row]
        elif special == "tiny":
            row = [v * 1e-30 for v in row]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@given(
    which=st.integers(0, len(SYSTEMS) - 1),
    n=st.integers(2, 9),
    seed=st.sampled_from([None, 0, 5]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    data=st.data(),
)
def test_nearest_equals_the_old_decoder_ties_and_degenerate_rows_included(which, n, seed, dtype, data):
    system = _system(which, n, seed)
    z = data.draw(batches(system.n_dim)).to(dtype)
    idx, cos = system.nearest(z)
    old_idx, old_cos = legacy_nearest(system, z)
    assert idx.dtype == torch.int64 and idx.shape == cos.shape == (z.shape[0],)
    assert torch.equal(idx, old_idx)
    torch.testing.assert_close(cos, old_cos, equal_nan=True, rtol=1e-6, atol=1e-6)


@given(which=st.integers(0, len(SYSTEMS) - 1), n=st.integers(2, 7), seed=st.sampled_from([None, 3]), data=st.data())
def test_nearest_attains_the_brute_force_maximum_in_float64(which, n, seed, data):
    system = _system(which, n, seed)
    z = data.draw(batches(system.n_dim))
    idx, cos = system.nearest(z)
    table = system.materialize(torch.float64)
    ok = torch.isfinite(z).all(1) & (z != 0).any(1)
    unit = z[ok] / z[ok].norm(dim=1, keepdim=True)
    best = (unit @ table.T).amax(1)
    torch.testing.assert_close(cos[ok], best, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close((unit * table[idx[ok]]).sum(1), best, rtol=1e-9, atol=1e-9)
    zero = (z == 0).all(1)
    assert (idx[zero] == 0).all() and (cos[zero] == 0).all()
    bad = ~torch.isfinite(z).all(1)
    assert (idx[bad] == -1).all() and cos[bad].isnan().all()


def _naive_extremes(x: torch.Tensor, n_top: int, n_bottom: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row's (value, coordinate) pairs in Python: the order row_extremes promises (ties to the lower
    coordinate, -0.0 == 0.0)."""
    top, bottom = [], []
    for row in x.tolist():
        top.append(sorted(range(len(row)), key=lambda c: (-row[c], c))[:n_top])
        bottom.append(sorted(range(len(row)), key=lambda c: (row[c], c))[:n_bottom])
    return torch.tensor(top, dtype=torch.long).view(len(top), n_top), torch.tensor(bottom, dtype=torch.long).view(
        len(bottom), n_bottom
    )


@given(
    width=st.sampled_from([2, 7, 16, 31, 48, 64, 96, 100, 257, 384]),
    n_top=st.integers(0, 5),
    n_bottom=st.integers(0, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    data=st.data(),
)
def test_row_extremes_equal_a_sort_of_value_and_coordinate(width, n_top, n_bottom, dtype, data):
    """Widths with one block, a few and many; rows of few distinct values (ties across blocks), signed zeros."""
    n_top, n_bottom = min(n_top, width), min(n_bottom, width)
    b = data.draw(st.integers(1, 6))
    levels = data.draw(st.lists(st.sampled_from([-2.0, -0.0, 0.0, 1.5, 3.0, -1e-40, 1e30]), min_size=1, max_size=4))
    seed = data.draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    x = torch.tensor(levels, dtype=dtype)[torch.randint(0, len(levels), (b, width), generator=gen)]
    if data.draw(st.booleans()):
        x = x + torch.randn(b, width, generator=gen, dtype=dtype) * (torch.rand(b, width, generator=gen) < 0.3)
    top, bottom = row_extremes(x, n_top, n_bottom)
    want_top, want_bottom = _naive_extremes(x, n_top, n_bottom)
    assert torch.equal(top, want_top) and torch.equal(bottom, want_bottom)


def test_row_extremes_blocks_and_nan_rows_stay_in_range():
    assert block_width(384) == 32 and block_width(385) == 35 and block_width(257) == 257
    x = torch.randn(4, 384)
    x[1, 5] = float("nan")
    x[2] = float("inf")
    top, bottom = row_extremes(x, 3, 4)
    assert ((top >= 0) & (top < 384)).all() and ((bottom >= 0) & (bottom < 384)).all()
    ok = [0, 3]
    want_top, want_bottom = _naive_extremes(x[ok], 3, 4)
    assert torch.equal(top[ok], want_top) and torch.equal(bottom[ok], want_bottom)


@given(
    which=st.sampled_from([0, 1, 2, 3, 6, 7]),
    n=st.sampled_from([31, 32, 48, 64, 95]),
    seed=st.sampled_from([None, 4]),
    data=st.data(),
)
def test_nearest_equals_the_old_decoder_at_widths_of_several_blocks(which, n, seed, data):
    system = _system(which, n, seed)
    z = data.draw(batches(system.n_dim)).float()
    idx, cos = system.nearest(z)
    old_idx, old_cos = legacy_nearest(system, z)
    assert torch.equal(idx, old_idx)
    torch.testing.assert_close(cos, old_cos, equal_nan=True, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [3, 72, 200, 65_537, 70_001])
def test_cycle_walk_fixed_rounds_equal_the_loop(size):
    perm = KeyedPermutation(size, seed=7)
    assert perm.radix is None  # these sizes are cycle-walked
    idx = torch.arange(size)
    fwd = perm.forward(idx)
    assert torch.equal(fwd, perm._walk_loop(idx, inverse=False))
    assert torch.equal(perm.inverse(fwd), idx)
    assert torch.equal(perm.inverse(idx), perm._walk_loop(idx, inverse=True))


class _Count(TorchDispatchMode):
    """Counts aten ops and the ones that read a tensor value back to the host (syncs) or have a data-dependent shape."""

    HOST = frozenset({torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default})

    def __init__(self):
        super().__init__()
        self.ops, self.host = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func in self.HOST or func.name().startswith("aten::masked_select"):
            self.host.append(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("which", range(len(SYSTEMS)))
@pytest.mark.parametrize("seed", [None, 1])
def test_fast_path_has_no_host_sync(which, seed):
    system = _system(which, 6, seed)
    centers = SystemCenters(system, max(1, len(system) // 2))
    z = torch.randn(16, system.n_dim)
    z[0] = 0
    z[1, 0] = float("nan")
    centers.system.nearest(z)  # builds the cached constants
    with _Count() as count:
        centers.predict(z, "fast")
    assert count.host == [] and count.ops < 400


class _Fast(torch.nn.Module):
    def __init__(self, centers):
        super().__init__()
        self.centers = centers

    def forward(self, z):
        p = self.centers.predict(z, "fast")
        idx, cos = self.centers.system.nearest(z)
        return p.labels, p.cosine, p.new_class, idx, cos


@pytest.mark.parametrize(
    ("name", "n", "kwargs"),
    [("an", 8, {"seed": 0, "interpolations": 1}), ("an", 20, {"seed": 2}), ("v21", 6, {}), ("planar", 2, {})],
)
def test_fast_predict_exports_with_a_dynamic_batch_and_matches_eager(name, n, kwargs):
    system = create_system(name, n, **kwargs)
    module = _Fast(SystemCenters(system, max(1, len(system) * 2 // 3)))
    z = torch.randn(8, n)
    z[0] = 0
    z[1, 1] = float("inf")
    batch = torch.export.Dim("batch", min=2, max=4096)
    program = torch.export.export(module, (z,), dynamic_shapes={"z": {0: batch}})
    for rows in (z, torch.randn(37, n), torch.randint(-1, 2, (5, n)).float()):
        for got, want in zip(program.module()(rows), module(rows), strict=True):
            torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.slow
def test_fast_predict_compiles_fullgraph_and_matches_eager():
    module = _Fast(SystemCenters(create_system("an", 8, seed=0, interpolations=1), 100))
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
    z = torch.randn(32, 8)
    z[0] = 0
    for got, want in zip(compiled(z), module(z), strict=True):
        torch.testing.assert_close(got, want, equal_nan=True)
