"""Snapping class means to distinct system vectors: against dense assignment, a naive greedy loop and brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import naive_vectors
from scipy.optimize import linear_sum_assignment
from typer.testing import CliRunner

from lscdistill.centers import SnappedCenters
from lscdistill.cli import app
from lscdistill.planner import plan_dim
from lscdistill.snap import fit_pca, load_system, snap
from lscdistill.snap.candidates import LEVELS, SystemCandidates
from lscdistill.stores import StoreWriter, open_store
from lscdistill.systems import create_system

runner = CliRunner()

# (system, n_dim, kwargs): each has just over 1,000 vectors, so 1,000 classes compete hard for them
SYSTEMS = {
    "an": ("an", 32, {}),  # 1,056 roots, drop_last
    "an-seeded": ("an", 32, {"seed": 7}),
    "an-orthonormal": ("an", 32, {"projection": "orthonormal"}),
    "an-interpolated": ("an", 10, {"interpolations": 1}),  # 110 roots + 990 interpolated
    "v21": ("v21", 14, {}),  # 1,092
    "v22": ("v22", 10, {}),  # 1,260
    "anp": ("anp", 45, {}),  # 1,035, through the systems' own certified shortlist
    "planar": ("planar", 2, {"interpolations": 8}),  # 1,024 directions, scanned whole
}


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x / x.norm(dim=1, keepdim=True)


def _all_vectors(system) -> torch.Tensor:
    """Every vector in index order, float64; from the definitions where the system is unshuffled."""
    d = system.describe()
    if "seed" in d or d["name"] == "planar":
        return system.materialize(torch.float64)
    return naive_vectors(d["name"], d["n_dim"], d.get("interpolations", 0), d.get("projection"))


def _means(system, kind: str, n: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, system.n_dim, generator=g), None
    planted = torch.randperm(len(system), generator=g)[:n]
    noise = 0.2 if system.name != "planar" else 0.001  # planar neighbours are 0.35° apart
    return system.vectors(planted) + noise * torch.randn(n, system.n_dim, generator=g) / system.n_dim**0.5, planted


def _dense_optimum(means: torch.Tensor, system) -> float:
    cos = (_unit(means) @ _all_vectors(system).T).numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(cos[rows, cols].sum())


def _check_assignment(result, means: torch.Tensor, system) -> None:
    idx = result.system_index
    assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < len(system)
    cos = (_unit(means) * system.vectors(torch.from_numpy(idx), torch.float64)).sum(1).numpy()
    np.testing.assert_allclose(result.cosine, cos, atol=1e-5)


@pytest.mark.parametrize("name", list(SYSTEMS))
@pytest.mark.parametrize("kind", ["random", "planted"])
def test_exact_snap_equals_dense_assignment_over_all_vectors(name, kind):
    system_name, n_dim, kwargs = SYSTEMS[name]
    system = create_system(system_name, n_dim, **kwargs)
    means, planted = _means(system, kind)
    result = snap(means, system, method="exact")
    _check_assignment(result, means, system)
    optimum = _dense_optimum(means, system)
    assert result.report.total_cosine == pytest.approx(optimum, rel=1e-6, abs=1e-4)
    assert result.report.optimal and result.report.gap == 0.0
    if planted is not None:
        assert (result.system_index == planted.numpy()).all()


def _naive_greedy(means: torch.Tensor, system) -> np.ndarray:
    """The greedy matching, one pair at a time: highest cosine first, skip taken classes and vectors."""
    cos = (_unit(means) @ system.materialize(torch.float64).T).numpy()
    out, taken = np.full(len(cos), -1), set()
    for flat in np.argsort(-cos, axis=None, kind="stable"):
        c, v = divmod(int(flat), cos.shape[1])
        if out[c] < 0 and v not in taken:
            out[c] = v
            taken.add(v)
            if len(taken) == len(cos):
                break
    return out


@pytest.mark.parametrize("name", ["an", "an-seeded", "an-interpolated", "v22"])
def test_greedy_is_the_greedy_matching_and_its_bound_holds(name):
    system_name, n_dim, kwargs = SYSTEMS[name]
    system = create_system(system_name, n_dim, **kwargs)
    means, _ = _means(system, "random", seed=1)
    result = snap(means, system, method="greedy")
    _check_assignment(result, means, system)
    np.testing.assert_array_equal(result.system_index, _naive_greedy(means, system))
    optimum = _dense_optimum(means, system)
    report = result.report
    assert report.method == "greedy" and not report.optimal
    assert report.total_cosine <= optimum + 1e-4 <= report.upper_bound + 2e-4  # the bound is an upper bound
    assert report.not_top1 > 0 and report.gap == pytest.approx(report.upper_bound - report.total_cosine)


def test_auto_reports_optimal_when_every_class_gets_its_nearest_vector():
    system = create_system("an", 384, seed=0, interpolations=1)  # 56.8M vectors
    means, planted = _means(system, "planted", n=20_000)
    result = snap(means, system)
    assert (result.system_index == planted.numpy()).all()
    assert result.report.optimal and result.report.not_top1 == 0


def _structured_rows(n_dim: int, system) -> torch.Tensor:
    """Rows with ties: system vectors themselves, midpoints of two, sparse rows, a constant row."""
    g = torch.Generator().manual_seed(3)
    v = system.vectors(torch.randint(0, len(system), (40,), generator=g))
    sparse = torch.where(torch.rand(20, n_dim, generator=g) < 0.7, 0.0, torch.randn(20, n_dim, generator=g))
    rows = torch.cat(
        [torch.randn(40, n_dim, generator=g), v, v[:20] + v[20:], sparse, torch.ones(1, n_dim), -torch.ones(1, n_dim)]
    )
    return rows[rows.abs().amax(dim=1) > 0]  # zero rows never reach the candidates


@pytest.mark.parametrize("name", ["an", "an-seeded", "an-orthonormal", "an-interpolated", "v21", "v22", "anp"])
def test_candidate_lists_hold_true_cosines_and_bound_every_other_vector(name):
    system_name, n_dim, kwargs = SYSTEMS[name]
    system = create_system(system_name, n_dim, **kwargs)
    cands = SystemCandidates(system)
    base = cands.base
    everything = base.materialize(torch.float64)
    z = _unit(_structured_rows(n_dim, system)).float()
    truth = (z.double() @ everything.T).numpy()
    for level in range(len(LEVELS)):
        keys, score, bound = (t.numpy() for t in cands(z, level))
        for row in range(len(z)):
            listed = keys[row][keys[row] >= 0]
            idx = cands.base_indices(listed)
            assert len(set(idx.tolist())) == len(idx), "a vector listed twice"
            np.testing.assert_allclose(score[row][: len(idx)], truth[row, idx], atol=1e-5)
            assert (np.diff(score[row][: len(idx)]) <= 1e-7).all(), "lists are sorted"
            off = np.ones(len(base), dtype=bool)
            off[idx] = False
            assert truth[row, off].max(initial=-np.inf) <= bound[row] + 1e-5, f"level {level}, row {row}"
        if cands.grid:  # vectors straight from the keys equal the system's
            flat = keys[keys >= 0]
            torch.testing.assert_close(cands.vectors(flat), base.vectors(torch.from_numpy(cands.base_indices(flat))))


def test_fit_pca_matches_numpy_svd():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(4)) * torch.linspace(4, 0.5, 12) + 2.0
    pca = fit_pca(x, 5)
    centered = x.double().numpy() - x.double().numpy().mean(0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    np.testing.assert_allclose(pca.explained_variance, s[:5] ** 2 / 300, rtol=1e-9)
    np.testing.assert_allclose(np.abs(pca.components @ vt[:5].T), np.eye(5), atol=1e-9)
    np.testing.assert_allclose(pca.reduce(x).numpy(), centered @ pca.components.T, atol=1e-9)


def _eigh_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hand-written PCA that scikit-learn's replaced: eigenvectors of the float64 covariance, by decreasing
    eigenvalue. Returns (mean, components [dim, D], population variances [dim])."""
    mean = x.mean(0)
    values, vectors = np.linalg.eigh((x - mean).T @ (x - mean) / len(x))
    return mean, vectors[:, ::-1][:, :dim].T, values[::-1][:dim]


@pytest.mark.parametrize("block, max_values", [(65_536, 1 << 27), (48, 0)], ids=["in-memory", "block-wise"])
@pytest.mark.parametrize("n, d, dim", [(300, 12, 5), (500, 24, 24), (130, 40, 9)])
def test_fit_pca_projects_like_the_covariance_eigenvectors_up_to_sign(n, d, dim, block, max_values):
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 5.0 * torch.randn(d, generator=g)
    pca = fit_pca(x, dim, block=block, max_values=max_values)
    mean, components, variances = _eigh_pca(x.double().numpy(), dim)
    ours, ref = pca.reduce(x).numpy(), (x.double().numpy() - mean) @ components.T
    sign = np.sign((ours * ref).sum(0))  # one sign per component
    assert set(sign.tolist()) <= {-1.0, 1.0}
    np.testing.assert_allclose(ours, ref * sign, atol=1e-8 * np.abs(ref).max())
    np.testing.assert_allclose(pca.explained_variance, variances, rtol=1e-9)
    np.testing.assert_allclose(pca.mean, mean, atol=1e-12 * np.abs(mean).max())
    total = float(x.double().numpy().var(0).sum())
    assert pca.total_variance == pytest.approx(total, rel=1e-12)
    assert pca.describe()["explained_variance_ratio"] == pytest.approx(variances.sum() / total, rel=1e-9)
    top = np.abs(pca.components).argmax(axis=1)  # the recorded sign rule: largest-magnitude entry positive
    assert (pca.components[np.arange(dim), top] > 0).all()


def test_fit_pca_with_fewer_classes_than_dims_keeps_distances_and_completes_the_basis():
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    pca = fit_pca(x, 10)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(10), atol=1e-12)
    z = pca.reduce(x)
    torch.testing.assert_close(torch.cdist(z, z), torch.cdist(x, x), atol=1e-10, rtol=0)  # 6 points span 5 dims
    np.testing.assert_allclose(pca.explained_variance[5:], 0.0, atol=1e-12)
    assert pca.describe()["explained_variance_ratio"] == pytest.approx(1.0)


# -------------------------------------------------------------------------------------------------- stores, CLI
def _store(path, means, counts=None, kind="means", names=None):
    means = np.asarray(means, dtype=np.float32)
    counts = np.full(len(means), 3) if counts is None else np.asarray(counts)
    with StoreWriter(
        path, kind=kind, n_classes=len(means), n_dim=means.shape[1], provenance={"test": True}, class_names=names
    ) as w:
        if kind == "partial":
            w.write_rows(0, counts=counts, sums=means.astype(np.float64) * counts[:, None])
        else:
            w.write_rows(0, counts=counts, centers=means)
        if kind == "snapped":
            w.write_rows(0, system_index=np.arange(len(means)), cosine=np.ones(len(means)))
    return path


def test_cli_writes_a_snapped_store_that_rebuilds_its_system(tmp_path):
    system = create_system("an", 16, seed=5, interpolations=1)
    means, planted = _means(system, "planted", n=300)
    src = _store(tmp_path / "means.h5", means, names=[f"c{i}" for i in range(300)])
    args = [
        "snap",
        str(src),
        "--system",
        "an",
        "--system-seed",
        "5",
        "-k",
        "1",
        "--out",
        str(tmp_path / "s.h5"),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["report"]["optimal"] and out["report"]["n_classes"] == 300
    assert "classes, exact" in result.stderr or "classes, greedy" in result.stderr
    with open_store(out["path"]) as s:
        assert (s.kind, s.n_classes, s.n_dim) == ("snapped", 300, 16)
        rebuilt = load_system(s)
        assert rebuilt.describe() == system.describe()
        idx = s.dataset("system_index")[:]
        np.testing.assert_array_equal(idx, planted.numpy())
        torch.testing.assert_close(torch.from_numpy(s.dataset("centers")[:]), rebuilt.vectors(torch.from_numpy(idx)))
        cos = (_unit(means) * rebuilt.vectors(torch.from_numpy(idx), torch.float64)).sum(1)
        np.testing.assert_allclose(s.dataset("cosine")[:], cos.numpy(), atol=1e-5)
        np.testing.assert_array_equal(s.counts, np.full(300, 3))
        assert s.class_names[:2] == ["c0", "c1"] and s.provenance["source"]["provenance"] == {"test": True}
    result = runner.invoke(app, args)  # the output exists now
    assert result.exit_code == 1 and "--overwrite" in result.stderr


def test_snapped_centers_decode_fast_and_exact_like_brute_force(tmp_path):
    system = create_system("an", 9, seed=2)  # 72 roots, 40 owned by classes
    means, _ = _means(system, "random", n=40, seed=4)
    src = _store(tmp_path / "means.h5", means)
    assert runner.invoke(app, ["snap", str(src), "--system-seed", "2", "--out", str(tmp_path / "s.h5")]).exit_code == 0
    g = torch.Generator().manual_seed(8)
    z = torch.cat([torch.randn(300, 9, generator=g), torch.full((1, 9), float("nan"))])
    with open_store(tmp_path / "s.h5") as s:
        centers = SnappedCenters(s)
        owner = dict(zip(s.dataset("system_index")[:].tolist(), range(40), strict=False))
        table = torch.from_numpy(s.dataset("centers")[:]).double()
        fast, exact = centers.predict(z, mode="fast"), centers.predict(z, mode="exact")
    unit = _unit(z[:300])
    nearest = (unit @ system.materialize(torch.float64).T).argmax(dim=1).tolist()
    expected = [owner.get(i, -1) for i in nearest] + [-1]
    assert fast.labels.tolist() == expected
    assert fast.new_class.tolist() == [i not in owner for i in nearest] + [False]  # a NaN row is no new class
    assert exact.labels[:300].tolist() == (unit @ _unit(table).T).argmax(dim=1).tolist()
    assert 0 < sum(fast.new_class.tolist()) < 300


def test_pca_reduction_round_trips_through_the_store(tmp_path):
    g = torch.Generator().manual_seed(6)
    means = torch.randn(200, 32, generator=g) @ torch.randn(32, 32, generator=g) + 3.0  # anisotropic, offset
    src = _store(tmp_path / "means.h5", means)
    args = ["snap", str(src), "--n-dim", "14", "--reduce", "pca", "--method", "exact", "--out", str(tmp_path / "s.h5")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "s.h5") as s:
        assert s.n_dim == 14 and json.loads(s.attrs["reduce"])["n_dim"] == 14
        mean, components = s.dataset("pca_mean")[:], s.dataset("pca_components")[:]
        reduced = torch.from_numpy((means.double().numpy() - mean) @ components.T)
        system = load_system(s)
        again = snap(reduced, system, method="exact")
        np.testing.assert_array_equal(s.dataset("system_index")[:], again.system_index)
        np.testing.assert_allclose(s.dataset("cosine")[:], again.cosine, atol=1e-6)
        assert again.report.total_cosine == pytest.approx(_dense_optimum(reduced, system), rel=1e-6)


def test_allow_empty_gives_empty_and_zero_classes_unused_vectors(tmp_path):
    system = create_system("an", 12)
    means, _ = _means(system, "random", n=120)
    means[[3, 50]] = 0.0
    counts = np.full(120, 2)
    counts[[3, 7]] = 0  # class 50 has samples but a zero mean: equally near every vector
    src = _store(tmp_path / "means.h5", means, counts=counts)
    result = runner.invoke(app, ["snap", str(src), "--allow-empty", "--out", str(tmp_path / "s.h5"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["report"]["leftover"] == 3  # count 0 means no mean, whatever the row holds
    with open_store(tmp_path / "s.h5") as s:
        idx, cos = s.dataset("system_index")[:], s.dataset("cosine")[:]
    assert len(np.unique(idx)) == 120 and (cos[[3, 7, 50]] == 0.0).all()
    usable = np.setdiff1d(np.arange(120), [3, 7, 50])
    assert cos[usable].sum() == pytest.approx(_dense_optimum(means[usable], system), rel=1e-6)


def _bad_inputs(tmp_path):
    ok = np.random.default_rng(0).normal(size=(20, 6))
    nan = ok.copy()
    nan[4, 2] = np.nan
    counts = np.full(20, 5)
    counts[[2, 9]] = 0
    big = np.random.default_rng(1).normal(size=(50, 6))  # A_6 has 42 roots
    return {
        "too many classes": (_store(tmp_path / "big.h5", big), [], f"n_dim >= {plan_dim(50)}"),
        "dimension mismatch": (_store(tmp_path / "a.h5", ok), ["--n-dim", "4"], "pass --reduce pca"),
        "nan means": (_store(tmp_path / "nan.h5", nan), [], "NaN or Inf (classes [4])"),
        "partial store": (_store(tmp_path / "p.h5", ok, kind="partial"), [], "'partial' store"),
        "snapped store": (_store(tmp_path / "s.h5", ok, kind="snapped"), [], "'snapped' store"),
        "empty classes": (_store(tmp_path / "e.h5", ok, counts=counts), [], "(count 0, e.g. classes [2, 9])"),
        "bad method": (_store(tmp_path / "m.h5", ok), ["--method", "best"], "method must be one of"),
        "missing store": (tmp_path / "nothing.h5", [], "does not exist"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "too many classes",
        "dimension mismatch",
        "nan means",
        "partial store",
        "snapped store",
        "empty classes",
        "bad method",
        "missing store",
    ],
)
def test_bad_input_is_one_line_exit_1_and_no_output(tmp_path, case):
    src, extra, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "snapped.h5"
    out.parent.mkdir()
    result = runner.invoke(app, ["snap", str(src), "--out", str(out), *extra])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr and "Traceback" not in result.output
    assert not any(out.parent.iterdir()), "nothing may be left behind"
    if case == "too many classes":
        assert "interpolations=1" in result.stderr
