"""Class centers and label prediction: fast and exact decoding against brute force over the materialized centers."""

from __future__ import annotations

import pytest
import torch
from conftest import brute_nearest, cosine_of

from lscdistill.centers import SystemCenters, TableCenters
from lscdistill.decode import exact_nearest
from lscdistill.systems import create_system


def _queries(centers, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, centers.n_classes, (150,), generator=gen)
    near = centers.gather(labels, torch.float64) + 0.15 * torch.randn(150, n, generator=gen, dtype=torch.float64)
    far = torch.randn(150, n, generator=gen, dtype=torch.float64)
    ties = torch.randint(-1, 2, (100, n), generator=gen).double()
    return torch.cat([near, far, ties[ties.abs().sum(1) > 0]])


@pytest.mark.parametrize(
    ("name", "n", "kwargs"),
    [
        ("an", 9, {}),
        ("an", 9, {"projection": "orthonormal"}),
        ("an", 7, {"interpolations": 1}),
        ("anp", 9, {}),
        ("v21", 8, {}),
        ("v22", 8, {}),
        ("an", 64, {}),
        ("an", 24, {"interpolations": 1}),
    ],
)
@pytest.mark.parametrize("fraction", [0.05, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_prediction_equals_bruteforce_over_assigned_centers(name, n, kwargs, fraction, dtype):
    system = create_system(name, n, seed=3, **kwargs)
    n_classes = max(2, int(len(system) * fraction))
    centers = SystemCenters(system, n_classes, brute_force_below=0)  # always take the shortlist path
    table = centers.gather(torch.arange(n_classes), torch.float64)
    z = _queries(centers, n, seed=n).to(dtype)
    pred = centers.predict(z, "exact")
    best, _ = brute_nearest(z, table)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert pred.method == "shortlist"
    assert ((pred.labels >= 0) & (pred.labels < n_classes)).all()
    assert (best - cosine_of(z, table, pred.labels)).abs().max() <= tol
    torch.testing.assert_close(pred.cosine.double(), cosine_of(z, table, pred.labels), atol=10 * tol, rtol=0)
    assert not pred.new_class.any()


def test_exact_prediction_reports_fallback_rows_and_they_are_still_exact():
    system = create_system("an", 128, seed=0)
    centers = SystemCenters(system, 200, brute_force_below=0)  # 200 of 16,512: random queries rarely certify
    z = torch.randn(64, 128, dtype=torch.float64)
    pred = centers.predict(z, "exact")
    assert pred.n_fallback > 0 and pred.fallback.dtype == torch.bool
    table = centers.gather(torch.arange(200), torch.float64)
    best, _ = brute_nearest(z, table)
    torch.testing.assert_close(cosine_of(z, table, pred.labels), best, atol=1e-12, rtol=0)
    near = centers.gather(torch.arange(64), torch.float64) + 0.01 * torch.randn(64, 128, dtype=torch.float64)
    assert centers.predict(near, "exact").n_fallback == 0  # embeddings on their centers certify at once


def test_exact_bruteforce_path_below_threshold_and_shortlist_agree():
    system = create_system("an", 48, seed=1, interpolations=1)
    z = torch.randn(200, 48)
    small = SystemCenters(system, 3000).predict(z, "exact")
    listed = SystemCenters(system, 3000, brute_force_below=0).predict(z, "exact")
    assert small.method == "bruteforce" and listed.method == "shortlist"
    torch.testing.assert_close(small.cosine, listed.cosine, atol=2e-6, rtol=0)


@pytest.mark.parametrize(("name", "n", "kwargs"), [("an", 10, {}), ("an", 6, {"interpolations": 1}), ("v21", 7, {})])
def test_fast_prediction_flags_rows_whose_nearest_system_vector_is_unassigned(name, n, kwargs):
    system = create_system(name, n, seed=9, **kwargs)
    n_classes = len(system) // 3
    centers = SystemCenters(system, n_classes)
    everything = system.materialize(torch.float64)
    z = torch.randn(500, n, dtype=torch.float64)
    pred = centers.predict(z, "fast")
    best, arg = brute_nearest(z, everything)
    assert torch.equal(pred.new_class, arg >= n_classes)  # Gaussian rows: no exact ties
    assert torch.equal(pred.labels, torch.where(arg >= n_classes, -1, arg))
    torch.testing.assert_close(pred.cosine, best, atol=1e-12, rtol=0)
    exact = centers.predict(z, "exact")
    agree = ~pred.new_class
    assert torch.equal(exact.labels[agree], pred.labels[agree])  # where fast returns a class, it is the exact one


def test_all_vectors_assigned_makes_exact_the_fast_search():
    system = create_system("an", 384, seed=2)
    centers = SystemCenters(system, len(system))
    labels = torch.randint(0, len(system), (300,))
    z = centers.gather(labels) + 0.02 * torch.randn(300, 384)
    for mode in ("fast", "exact"):
        pred = centers.predict(z, mode)
        assert torch.equal(pred.labels, labels) and not pred.new_class.any()


def test_large_n_classes_exact_prediction_on_a384r():
    system = create_system("an", 384, seed=4)
    centers = SystemCenters(system, 50_000)
    labels = torch.randint(0, 50_000, (256,))
    z = torch.cat([centers.gather(labels) + 0.03 * torch.randn(256, 384), torch.randn(32, 384)])
    pred = centers.predict(z, "exact")
    assert torch.equal(pred.labels[:256], labels)
    table = centers.gather(torch.arange(50_000))
    best, _ = brute_nearest(z[256:], table)
    torch.testing.assert_close(cosine_of(z[256:], table, pred.labels[256:]), best, atol=2e-6, rtol=0)


def test_predict_degenerate_rows():
    centers = SystemCenters(create_system("an", 16, seed=0), 100)
    z = torch.randn(3, 16)
    z[1] = 0
    z[2, 0] = float("nan")
    for mode in ("fast", "exact"):
        pred = centers.predict(z, mode)
        assert pred.labels[1] == 0 and pred.cosine[1] == 0
        assert pred.labels[2] == -1 and pred.cosine[2].isnan()


def test_gather_validates_labels_and_scales_planar_centers():
    centers = SystemCenters(create_system("an", 8), 10)
    with pytest.raises(ValueError, match=r"label 10 is outside \[0, 10\)"):
        centers.gather(torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="label -1"):
        centers.gather(torch.tensor([-1]))
    planar = SystemCenters(create_system("planar", 2, interpolations=1, radius=5.0), 8)
    torch.testing.assert_close(planar.gather(torch.arange(8)).norm(dim=1), torch.full((8,), 5.0))
    torch.testing.assert_close(  # every cluster halved by the one doubling (the default reading)
        planar.cluster_radius(torch.tensor([0, 4])), torch.tensor([0.5, 0.5], dtype=torch.float64)
    )


@pytest.mark.parametrize("written", ["all", "level", None])
def test_snapped_store_rebuilds_planar_with_the_halving_it_was_written_with(tmp_path, written):
    import json

    from lscdistill.centers import SnappedCenters
    from lscdistill.stores import StoreWriter, open_store

    system = create_system("planar", 2, interpolations=2, halving=written or "level")
    description = system.describe()
    if written is None:  # a store written before the option existed
        del description["halving"]
    with StoreWriter(tmp_path / "s.h5", kind="snapped", n_classes=16, n_dim=2, provenance={"test": 1}) as w:
        w.file.attrs["system"] = json.dumps(description)
        w.write_rows(0, counts=torch.ones(16, dtype=torch.long), centers=system.materialize(), cosine=torch.ones(16))
        w.write_rows(0, system_index=torch.arange(16))
    with open_store(tmp_path / "s.h5") as store:
        centers = SnappedCenters(store)
        assert centers.system.describe()["halving"] == (written or "level")
        expected = [0.25] * 4 if written == "all" else [1.0, 0.5, 0.25, 0.25]
        torch.testing.assert_close(
            centers.system.cluster_radius(torch.tensor([0, 4, 8, 15])), torch.tensor(expected, dtype=torch.float64)
        )


def test_too_many_classes_says_what_would_fit():
    with pytest.raises(
        ValueError, match=r"147,840 vectors, fewer than 200,000 classes: use n_dim >= 447 or interpolations=1"
    ):
        SystemCenters(create_system("an", 384, seed=0), 200_000)


# --------------------------------------------------------------------------------------- chunked bruteforce
class _CountingRows:
    """A row source that records how many rows each read asked for."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table, self.reads = table, []

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, item: slice) -> torch.Tensor:
        self.reads.append(item.stop - item.start)
        return self.table[item]


def _naive_argmax_cosine(z: torch.Tensor, table: torch.Tensor) -> tuple[list[int], list[float]]:
    out_i, out_c = [], []
    for row in z.double():
        best, best_i = -2.0, -1
        for i, c in enumerate(table.double()):
            nc = c.norm().item()
            cos = 0.0 if nc == 0 else (row @ c).item() / (row.norm().item() * nc)
            if cos > best + 1e-12:  # first occurrence wins ties
                best, best_i = cos, i
        out_i.append(best_i)
        out_c.append(best)
    return out_i, out_c


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_exact_nearest_matches_naive_loop_and_reads_one_chunk_at_a_time(chunk_size):
    gen = torch.Generator().manual_seed(chunk_size)
    table = torch.randn(130, 6, generator=gen, dtype=torch.float64)
    table[5] = 0  # an empty class
    table[17] = table[90]  # duplicate centers: the lower index wins
    z = torch.cat([torch.randn(40, 6, generator=gen, dtype=torch.float64), table[[90, 3]] * 2.0])
    rows = _CountingRows(table)
    idx, cos = exact_nearest(z, rows, chunk_size=chunk_size)
    ref_i, ref_c = _naive_argmax_cosine(z, table)
    assert idx.tolist() == ref_i
    torch.testing.assert_close(cos, torch.tensor(ref_c, dtype=torch.float64), atol=1e-12, rtol=0)
    assert max(rows.reads) <= chunk_size and sum(rows.reads) == len(table)
    assert idx[-2] == 17


def test_table_centers_gather_and_predict():
    table = torch.randn(50, 12)
    centers = TableCenters(table, chunk_size=8)
    labels = torch.tensor([4, 4, 49, 0])
    assert torch.equal(centers.gather(labels), table[labels])
    pred = centers.predict(table[labels] * 3.0)
    assert torch.equal(pred.labels, labels) and pred.method == "bruteforce"
    with pytest.raises(ValueError, match="no structure for fast decoding"):
        centers.predict(table[:2], "fast")
    with pytest.raises(ValueError, match="NaN or Inf"):
        TableCenters(torch.full((3, 2), float("nan")))


def test_store_exact_decoding_reads_a_small_table_once_and_streams_a_large_one(tmp_path, monkeypatch):
    """The cached table and the streamed store give the same answers (and brute force's); with the cache the store
    is read once for many batches, without it once per chunk per batch."""
    import numpy as np

    from lscdistill.centers import StoreCenters
    from lscdistill.stores import StoreWriter, open_store

    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 12)).astype(np.float32)
    with StoreWriter(tmp_path / "m.h5", kind="means", n_classes=300, n_dim=12, provenance={"test": 1}) as w:
        w.write_rows(0, counts=np.ones(300, dtype=np.int64), centers=table)
    batches = [torch.from_numpy(rng.normal(size=(17, 12)).astype(np.float32)) for _ in range(3)]
    unit = torch.nn.functional.normalize(torch.from_numpy(table).double(), dim=1)
    expected = [brute_nearest(z, unit) for z in batches]  # (cosine, index) in float64
    for cap, reads_expected in ((10**9, 1), (0, 3 * 3)):  # 300 rows in chunks of 128: 3 reads per batch
        with open_store(tmp_path / "m.h5") as store:
            reads, original, original_into = [], type(store).__getitem__, type(store).read_into

            def counted(self, item, reads=reads, original=original):
                reads.append(item)
                return original(self, item)

            def counted_into(self, out, start, stop, reads=reads, original=original_into):
                reads.append((start, stop))
                return original(self, out, start, stop)

            monkeypatch.setattr(type(store), "__getitem__", counted)
            monkeypatch.setattr(type(store), "read_into", counted_into)
            centers = StoreCenters(store, chunk_size=128, table_cache_bytes=cap)
            for z, (cos, idx) in zip(batches, expected, strict=True):
                p = centers.predict(z)
                assert torch.equal(p.labels, idx)
                torch.testing.assert_close(p.cosine.double(), cos, rtol=1e-5, atol=1e-6)
            monkeypatch.undo()
        assert len(reads) == reads_expected, (cap, reads)


def test_store_centers_keep_a_host_table_only_under_the_cap(tmp_path):
    """Under the cap the store's rows are read once into a host table (gather and exact decoding share it, on the
    CPU without a copy); above it nothing is kept and every gather reads the file. Same rows either way."""
    import numpy as np

    from lscdistill.centers import StoreCenters
    from lscdistill.stores import StoreWriter, open_store

    table = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
    with StoreWriter(tmp_path / "m.h5", kind="means", n_classes=300, n_dim=12, provenance={"test": 1}) as w:
        w.write_rows(0, counts=np.ones(300, dtype=np.int64), centers=table)
    labels = torch.tensor([299, 0, 5, 5, 150])
    for cap, cached in ((300 * 12 * 4, True), (300 * 12 * 4 - 1, False)):
        with open_store(tmp_path / "m.h5") as store:
            centers = StoreCenters(store, table_cache_bytes=cap)
            assert torch.equal(centers.gather(labels), torch.from_numpy(table[labels.numpy()]))
            assert (centers._cache is not None) == cached
            if cached:
                scanned = centers._rows(torch.device("cpu"))
                assert scanned.data_ptr() == centers._cache.table.ctypes.data  # the same memory, not a copy
                assert torch.equal(scanned, torch.from_numpy(table))
            else:
                assert centers._rows(torch.device("cpu")) is store
