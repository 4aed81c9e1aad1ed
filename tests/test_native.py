"""The C kernel of the fast decoder (``lscdistill.systems.native``) against the tensor program it replaces on CPU:
bit for bit, with the AVX2 and the plain C rows, ties, signed zeros and degenerate rows included; the custom op
under ``torch.compile``; none of it in an exported graph; and the fallback when there is no kernel."""

from __future__ import annotations

import contextlib
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


def plain_c(on: bool):
    """The portable rows even where the CPU has AVX2 (``on``), else the CPU's best."""
    return native.portable_rows() if on else contextlib.nullcontext()


def _both(fn):
    """``fn()`` with the kernel, then with the tensor program."""
    got = fn()
    with native.disabled():
        want = fn()
    return got, want


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t  # -0.0 and 0.0 differ, NaN equals itself


def _assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and torch.equal(_bits(g), _bits(w))


# the systems whose float32 search reaches the kernel (orthonormal and planar systems search lifted rows)
KERNEL_SYSTEMS = [i for i, (name, kw) in enumerate(SYSTEMS) if name != "planar" and "projection" not in kw]


@settings(max_examples=150, deadline=None)
@given(
    which=st.sampled_from(KERNEL_SYSTEMS),
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


def _wide_batch(width: int) -> torch.Tensor:
    """Rows of a few integers (every extreme tied many times, +-0.0), Gaussian rows, rows a divisor applies to (past
    2**40, below 2**-40, the scratch row), rows whose largest magnitude is exactly 2**40 or 2**-40 (divisor 1) or
    one float beyond it (not 1), and a zero row."""
    gen = torch.Generator().manual_seed(width)
    ties = torch.randint(-2, 3, (64, width), generator=gen).float()
    ties[ties == 0] = torch.where(torch.rand(int((ties == 0).sum()), generator=gen) < 0.5, 0.0, -0.0)
    gauss = torch.randn(64, width, generator=gen)
    scaled = torch.cat([ties[:8] * 1e30, gauss[:8] * 3e-38, gauss[8:16] * 7e12])
    edges = []
    for edge in (2.0**40, 2.0**-40):
        for nudge in (1.0, 1.0 + 2.0**-23, 1.0 - 2.0**-24):
            row = gauss[16] / gauss[16].abs().max() * 0.5 * edge
            row[3] = -edge * nudge
            edges.append(row)
    return torch.cat([ties, gauss, scaled, torch.stack(edges), torch.zeros(1, width)])


@pytest.mark.parametrize("width", [16, 17, 100, 384, 385])
@pytest.mark.parametrize("plain", [False, True])
def test_wide_tie_heavy_rows_equal_the_tensor_program(width, plain):
    system = create_system("an", width, interpolations=1)
    z = _wide_batch(width)
    with plain_c(plain):
        got, want = _both(lambda: system.nearest(z))
    _assert_same(got, want)


@pytest.mark.parametrize(("name", "kwargs"), [("an", {}), ("anp", {}), ("v21", {}), ("v22", {})])
@pytest.mark.parametrize("plain", [False, True])
def test_other_systems_at_width_100_equal_the_tensor_program(name, kwargs, plain):
    system = create_system(name, 100, seed=1, **kwargs)
    z = _wide_batch(100)
    with plain_c(plain):
        got, want = _both(lambda: system.nearest(z))
    _assert_same(got, want)


@pytest.mark.parametrize("plain", [False, True])
def test_long_lists_equal_the_tensor_program(plain):
    # the 8 largest and the 16 smallest coordinates of a row (the registered systems need at most 2 and 4): the lane
    # bounds knock out up to all 16 lanes; 16 one-value groups are beyond the kernel's scoring: it gives the rank table
    from lscdistill.systems.families import Family
    from lscdistill.systems.pattern import PatternSystem

    groups = [(float(a), 1) for a in range(8, 0, -1)] + [(-float(a), 1) for a in range(1, 9)]
    system = PatternSystem("long", 20, [[Family(groups, 20)]], "native")
    assert (system._plan.n_top, system._plan.n_bottom) == (8, 16) and not native.spec(system).scored
    z = _wide_batch(20)
    with plain_c(plain):
        got, want = _both(lambda: system.nearest(z))
    _assert_same(got, want)


def test_strided_expanded_transposed_and_empty_batches():
    system = create_system("an", 40, seed=0, interpolations=1)
    wide = torch.randn(12, 64)
    for z in (wide[:, 5:45], wide[:1, :40].expand(7, 40), torch.randn(40, 9).t(), torch.empty(0, 40)):
        assert native.usable(z)
        got, want = _both(lambda z=z: system.nearest(z))
        _assert_same(got, want)
        assert torch.equal(got[0], system.nearest(z.contiguous())[0])  # (torch's norm of a transposed z: other bits)


def test_systems_beyond_the_kernel_limits_are_scored_by_the_tensor_program():
    from lscdistill.systems.families import Family
    from lscdistill.systems.pattern import PatternSystem

    class Reindexed(Family):
        def index(self, pos):
            return super().index(pos)

    many = PatternSystem("many", 12, [[Family([(a, 1), (-1, 1)], 12) for a in range(1, 10)]], "native")
    deep = PatternSystem("deep", 20, [[Family([(1, 1)] * 9, 20)]], "native")  # 9 groups
    odd = PatternSystem("odd", 12, [[Reindexed([(1, 1), (-1, 1)], 13)]], "drop_last")  # its own index()
    z = torch.randn(16, 12)
    for system in (many, deep, odd):
        assert not native.spec(system).scored  # the rank table from the kernel, the rest from the tensor program
        rows = torch.randn(16, system.n_dim)
        got, want = _both(lambda s=system, r=rows: s.nearest(r))
        _assert_same(got, want)
    assert z.shape[1] == many.n_dim


@pytest.mark.parametrize(("name", "kwargs"), [("an", {"interpolations": 1}), ("anp", {}), ("v22", {})])
def test_rank_table_and_row_flags_equal_the_tensor_program(name, kwargs):
    system = create_system(name, 30, **kwargs)
    z = torch.randn(40, 30)
    z[:8] = torch.randint(-1, 2, (8, 30)).float()
    z[:4] = torch.randint(0, 2, (4, 30)).float()  # the smallest coordinates: zeros, of either sign
    z[:8][z[:8] == 0] = torch.where(torch.rand(int((z[:8] == 0).sum())) < 0.5, 0.0, -0.0)
    z[8], z[9], z[10, 3], z[11, 7] = 0.0, 1e-42, float("nan"), float("inf")
    z[12] *= 1e36  # divided by its largest magnitude
    z[13], z[14] = z[13] / z[13].abs().max() * 2.0**40, z[14] / z[14].abs().max() * 2.0**-40  # the edges: by 1
    spec = native.spec(system)
    divisor, ok, finite, coords, values, index, score = native.decode(z, spec)
    want_divisor, want_ok, want_finite = row_divisor(torch.maximum(z.amax(1), -z.amin(1)).unsqueeze(1))
    assert torch.equal(_bits(divisor), _bits(want_divisor.squeeze(1)))
    assert torch.equal(ok, want_ok.squeeze(1)) and torch.equal(finite, want_finite.squeeze(1))
    assert ok.sum() == 40 - 3  # the zero row and the two non-finite ones
    ranks = system._plan.ranks(z / want_divisor)
    assert torch.equal(coords[ok], ranks.coords[ok]) and torch.equal(_bits(values[ok]), _bits(ranks.values[ok]))
    assert ((coords >= 0) & (coords < system._plan.n_coords)).all()  # the other rows: in range
    assert spec.scored == (name != "anp")  # A_np's prefix maximum is scored by the tensor program
    if spec.scored:
        idx, sc = system._best(ranks)
        assert torch.equal(index[ok], idx[ok]) and torch.equal(_bits(score[ok]), _bits(sc[ok]))
    else:
        assert index.numel() == score.numel() == 0


def test_custom_op_schema_and_fake_agree():
    system = create_system("an", 12, interpolations=1)
    torch.library.opcheck(torch.ops.lscdistill.decode.default, (torch.randn(5, 12), *native.spec(system)))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated", "ignore:There is a performance drop")
def test_other_tracers_and_grad_take_the_tensor_program():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    system = create_system("an", 20, seed=0, interpolations=1)
    z = torch.randn(5, 20)
    want = system.nearest(z)
    with FakeTensorMode(allow_non_fake_inputs=True):  # tensors without data: the kernel would write through null
        idx, _ = system.nearest(torch.randn(5, 20))
        assert idx.shape == (5,)
    graph = make_fx(lambda x: system.nearest(x))(
        z
    )  # a trace with real tensors: the kernel's writes would be invisible to it
    _assert_same(graph(z), want)
    _assert_same(graph(z.flip(0)), system.nearest(z.flip(0)))
    seen = []  # jit.trace would record the kernel's outputs as empty tensors, its writes invisible to the trace
    torch.jit.trace(lambda x: seen.append(native.usable(x)) or x * 2, (z,), check_trace=False)
    assert seen == [False]
    batched = torch.vmap(system.nearest)(torch.stack([z, z.flip(0)]))
    _assert_same((batched[0][0], batched[1][0]), want)
    _assert_same((batched[0][1], batched[1][1]), system.nearest(z.flip(0)))
    with mock.patch.object(native, "_run", side_effect=AssertionError("the kernel ran")):
        idx, _ = system.nearest(z.clone().requires_grad_())
    assert torch.equal(idx, want[0])


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
    through_aot = torch.compile(Nearest(), backend="aot_eager", fullgraph=True)  # the fake implementation's shapes
    _assert_same(through_aot(z), system.nearest(z))
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


def test_a_damaged_library_in_the_cache_is_built_again(monkeypatch, tmp_path):
    with fresh_kernel(monkeypatch, LSCDISTILL_CACHE=str(tmp_path)):
        native.library_path().write_bytes(b"not a shared library")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert native.available()
        assert native.library_path().stat().st_size > 1000


def test_a_missing_source_warns_and_decodes_the_same(monkeypatch, tmp_path):
    system = create_system("an", 20, interpolations=1)
    z = torch.randn(8, 20)
    want = system.nearest(z)
    monkeypatch.setattr(native, "SOURCE", tmp_path / "gone.c")
    with fresh_kernel(monkeypatch, LSCDISTILL_CACHE=str(tmp_path)):
        with pytest.warns(RuntimeWarning, match="gone.c"):
            assert not native.available()
        _assert_same(system.nearest(z), want)


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
