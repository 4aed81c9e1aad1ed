"""The C kernel of the fast decoder (``lscdistill.systems.native``) against the tensor program it replaces on CPU:
bit for bit, with the AVX2 and the plain C rows, ties, signed zeros and degenerate rows included; the custom op
under ``torch.compile``; none of it in an exported graph; and the fallback when there is no kernel."""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import warnings
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_decoder import SYSTEMS, _system, batches

from lscdistill.centers import SystemCenters
from lscdistill.systems import create_system, native
from lscdistill.systems.base import row_divisor


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if shutil.which(native._compiler()[0]) is None:
        pytest.skip(f"no C compiler {native._compiler()[0]!r} here: the tensor program runs instead (tested elsewhere)")
    assert native.available(), "a C compiler is here, so the kernel must build"


@contextlib.contextmanager
def plain_c(on: bool):
    """Run the plain C rows even where the CPU has AVX2."""
    flag = ctypes.c_int.in_dll(ctypes.CDLL(str(native.library_path())), "lsc_plain_only")
    flag.value = int(on)
    try:
        yield
    finally:
        flag.value = 0


def _both(fn):
    """``fn()`` with the kernel, then with the tensor program."""
    got = fn()
    with native.disabled():
        want = fn()
    return got, want


def _assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


@settings(max_examples=150, deadline=None)
@given(
    which=st.integers(0, len(SYSTEMS) - 1),
    n=st.integers(2, 40),
    seed=st.sampled_from([None, 0]),
    plain=st.booleans(),
    data=st.data(),
)
def test_nearest_and_predict_equal_the_tensor_program_bit_for_bit(which, n, seed, plain, data):
    system = _system(which, n, seed)
    centers = SystemCenters(system, max(1, len(system) * 2 // 3))
    z = data.draw(batches(system.n_dim)).float()
    with plain_c(plain):
        got, want = _both(lambda: (*system.nearest(z), *centers.predict(z, "fast")[:3]))
    _assert_same(got, want)


@pytest.mark.parametrize("width", [16, 17, 100, 384, 385])
@pytest.mark.parametrize("plain", [False, True])
def test_wide_tie_heavy_rows_equal_the_tensor_program(width, plain):
    # rows of a few integers (every extreme tied many times), +-0.0, and Gaussian rows, at widths of whole and
    # partial 16-lane passes; a row scaled past 2**40 or below 2**-40 is divided first (the scratch row)
    system = create_system("an", width, interpolations=1)
    gen = torch.Generator().manual_seed(width)
    ties = torch.randint(-2, 3, (64, width), generator=gen).float()
    ties[ties == 0] = torch.where(torch.rand(int((ties == 0).sum()), generator=gen) < 0.5, 0.0, -0.0)
    gauss = torch.randn(64, width, generator=gen)
    scaled = torch.cat([ties[:8] * 1e30, gauss[:8] * 3e-38, gauss[8:16] * 7e12])
    z = torch.cat([ties, gauss, scaled])
    with plain_c(plain):
        got, want = _both(lambda: system.nearest(z))
    _assert_same(got, want)


@pytest.mark.parametrize(("name", "kwargs"), [("an", {"interpolations": 1}), ("anp", {}), ("v22", {})])
def test_rank_table_and_row_flags_equal_the_tensor_program(name, kwargs):
    system = create_system(name, 30, **kwargs)
    z = torch.randn(40, 30)
    z[:8] = torch.randint(-1, 2, (8, 30)).float()
    z[8], z[9], z[10, 3], z[11, 7] = 0.0, 1e-42, float("nan"), float("inf")
    z[12] *= 1e36  # divided by its largest magnitude
    spec = native.spec(system)
    divisor, ok, finite, coords, values, index, score = native.decode(z, spec)
    want_divisor, want_ok, want_finite = row_divisor(torch.maximum(z.amax(1), -z.amin(1)).unsqueeze(1))
    assert torch.equal(divisor, want_divisor.squeeze(1))
    assert torch.equal(ok, want_ok.squeeze(1)) and torch.equal(finite, want_finite.squeeze(1))
    assert ok.sum() == 40 - 3  # the zero row and the two non-finite ones
    ranks = system._plan.ranks(z / want_divisor)
    assert torch.equal(coords[ok], ranks.coords[ok]) and torch.equal(values[ok], ranks.values[ok])
    assert ((coords >= 0) & (coords < system._plan.n_coords)).all()  # the other rows: in range
    assert spec.scored == (name != "anp")  # A_np's prefix maximum is scored by the tensor program
    if spec.scored:
        idx, sc = system._best(ranks)
        assert torch.equal(index[ok], idx[ok]) and torch.equal(score[ok], sc[ok])
    else:
        assert index.numel() == score.numel() == 0


def test_custom_op_schema_and_fake_agree():
    system = create_system("an", 12, interpolations=1)
    torch.library.opcheck(torch.ops.lscdistill.decode.default, (torch.randn(5, 12), *native.spec(system)))


def test_compile_runs_the_kernel_and_export_does_not():
    system = create_system("an", 10, seed=0, interpolations=1)

    class Nearest(torch.nn.Module):
        def forward(self, z):
            return system.nearest(z)

    graphs = []

    def record(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    z = torch.randn(6, 10)
    compiled = torch.compile(Nearest(), backend=record, fullgraph=True)
    _assert_same(compiled(z), system.nearest(z))
    assert "lscdistill.decode" in graphs[0]
    exported = torch.export.export(Nearest(), (z,))
    assert "lscdistill" not in str(exported.graph)  # a serving stack loads it without this library
    _assert_same(exported.module()(z), system.nearest(z))


@contextlib.contextmanager
def fresh_kernel(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    native._kernel.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        native._kernel.cache_clear()


def test_switched_off_runs_the_tensor_program_without_a_warning(monkeypatch):
    system = create_system("an", 20, interpolations=1)
    z = torch.randn(8, 20)
    want = system.nearest(z)
    with fresh_kernel(monkeypatch, LSCDISTILL_NATIVE="0"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not native.available()
        _assert_same(system.nearest(z), want)
    assert native.available()


def test_no_compiler_warns_once_and_decodes_the_same(monkeypatch, tmp_path):
    system = create_system("an", 20, interpolations=1)
    z = torch.randn(8, 20)
    want = system.nearest(z)
    with fresh_kernel(monkeypatch, CC=str(tmp_path / "no-such-cc"), LSCDISTILL_CACHE=str(tmp_path)):
        with pytest.warns(RuntimeWarning, match="no C compiler"):
            assert not native.available()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once: the answer is cached
            _assert_same(system.nearest(z), want)
        assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


def test_builds_into_the_cache_directory(monkeypatch, tmp_path):
    with fresh_kernel(monkeypatch, LSCDISTILL_CACHE=str(tmp_path)):
        assert native.available()
        assert native.library_path().parent == tmp_path and native.library_path().exists()
        assert [p.name for p in tmp_path.iterdir()] == [native.library_path().name]  # no temporary left


def test_disabled_runs_the_tensor_program_and_otherwise_the_kernel():
    system = create_system("an", 20, interpolations=1)
    z = torch.randn(4, 20)
    with mock.patch.object(native, "_run", side_effect=AssertionError("the kernel ran")):
        with native.disabled():
            system.nearest(z)
        with pytest.raises(AssertionError, match="the kernel ran"):
            system.nearest(z)
