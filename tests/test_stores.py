"""The HDF5 store: atomic writes, validation with one clear error, row gathering, exact merges."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lscdistill.cli import app
from lscdistill.stores import MeanAccumulator, StoreError, StoreWriter, merge_stores, open_store


def _groupby_mean(x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Naive float64 reference: a loop over classes."""
    means = np.zeros((n_classes, x.shape[1]))
    counts = np.zeros(n_classes, dtype=np.int64)
    for c in range(n_classes):
        rows = x[y == c].astype(np.float64)
        counts[c] = len(rows)
        if len(rows):
            means[c] = rows.mean(axis=0)
    return means, counts


def _write(path, x, y, n_classes, *, kind="partial", names=None, with_sums=False, block_rows=None):
    acc = MeanAccumulator(n_classes, x.shape[1])
    acc.update(torch.from_numpy(y), torch.from_numpy(x))
    with StoreWriter(
        path,
        kind=kind,
        n_classes=n_classes,
        n_dim=x.shape[1],
        provenance={"test": True},
        class_names=names,
        with_sums=with_sums,
    ) as w:
        acc.write(w, **({"block_rows": block_rows} if block_rows else {}))
    return path


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 7)).astype(np.float32) * 3 + 1
    y = rng.integers(0, 40, size=500)
    y[y == 13] = 12  # class 13 is empty
    return x, y, 41  # class 40 is empty too


def test_means_store_matches_naive_groupby_and_reads_rows(tmp_path, data):
    x, y, n = data
    path = _write(tmp_path / "m.h5", x, y, n, kind="means", block_rows=8)  # many blocks
    means, counts = _groupby_mean(x, y, n)
    with open_store(path) as s:
        assert (s.kind, s.n_classes, s.n_dim) == ("means", n, 7)
        np.testing.assert_array_equal(s.counts, counts)
        np.testing.assert_allclose(s.dataset("centers")[:], means, rtol=1e-6, atol=1e-6)
        labels = torch.tensor([5, 3, 5, 40, 0])
        torch.testing.assert_close(s.gather(labels), torch.from_numpy(means[[5, 3, 5, 40, 0]]).float())
        assert s.summary()["empty_classes"] == 2 and s.provenance == {"test": True}
        with pytest.raises(StoreError, match=r"label 41 is outside \[0, 41\)"):
            s.gather(torch.tensor([41]))


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_merge_of_any_split_equals_the_whole(tmp_path, data, parts):
    x, y, n = data
    whole = _write(tmp_path / "whole.h5", x, y, n)
    rng = np.random.default_rng(parts)
    assign = rng.integers(0, parts, size=len(y))
    pieces = []
    for p in range(parts):
        sel = assign == p
        top = n if p == 0 else int(y[sel].max()) + 1  # the others see fewer classes
        pieces.append(_write(tmp_path / f"p{p}.h5", x[sel], y[sel], top))
    # merge in two different groupings: all at once, and pairwise-then-rest
    flat = merge_stores(tmp_path / "flat.h5", pieces)
    first = merge_stores(tmp_path / "first.h5", pieces[:2], partial=True)
    nested = merge_stores(tmp_path / "nested.h5", [first, *pieces[2:]])
    with open_store(whole) as w, open_store(flat) as a, open_store(nested) as b:
        for s in (a, b):
            assert s.n_classes == n and s.kind == "means"
            np.testing.assert_array_equal(s.counts, w.counts)
            np.testing.assert_allclose(s.dataset("sums")[:], w.dataset("sums")[:], rtol=1e-12, atol=1e-12)
            means, _ = _groupby_mean(x, y, n)
            np.testing.assert_allclose(s.dataset("centers")[:], means, rtol=1e-6, atol=1e-6)
        assert len(a.provenance["merged_from"]) == parts


def test_writer_is_atomic_and_refuses_to_clobber(tmp_path, data):
    x, y, n = data
    target = tmp_path / "s.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with StoreWriter(target, kind="means", n_classes=n, n_dim=7, provenance={}) as w:
            w.write_rows(0, counts=np.ones(3, dtype=np.int64))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary file
    _write(target, x, y, n)
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        _write(target, x, y, n)
    with pytest.raises(StoreError, match="does not exist"):
        _write(tmp_path / "missing" / "s.h5", x, y, n)


def test_reader_rejects_bad_files_with_one_clear_error(tmp_path, data):
    x, y, n = data
    good = _write(tmp_path / "good.h5", x, y, n, kind="means")
    (tmp_path / "text.h5").write_text("not hdf5")
    raw = good.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with h5py.File(tmp_path / "v9.h5", "w") as f:
        f.attrs.update({"format": "lscdistill-store", "format_version": 9})
    with h5py.File(tmp_path / "noc.h5", "w") as f:
        f.attrs.update({"format": "lscdistill-store", "format_version": 1, "kind": "means", "n_classes": 3, "n_dim": 2})
        f["counts"] = np.zeros(3, dtype=np.int64)
    cases = {
        "text.h5": "not a readable HDF5 file",
        "trunc.h5": "not a readable HDF5 file",
        "other.h5": "not an lscdistill store",
        "v9.h5": "format version 9; this lscdistill reads version 1",
        "noc.h5": "needs the dataset 'centers'",
        "nope.h5": "does not exist",
    }
    for name, message in cases.items():
        with pytest.raises(StoreError, match=message) as err:
            open_store(tmp_path / name)
        assert name in str(err.value)


def test_merge_errors(tmp_path, data):
    x, y, n = data
    means = _write(tmp_path / "m.h5", x, y, n, kind="means")
    part = _write(tmp_path / "p.h5", x, y, n)
    other = _write(tmp_path / "o.h5", np.ones((4, 3), np.float32), np.arange(4), 4)
    with pytest.raises(StoreError, match="without sums cannot be merged"):
        merge_stores(tmp_path / "out.h5", [means, part])
    with pytest.raises(StoreError, match="different n_dim"):
        merge_stores(tmp_path / "out.h5", [part, other])
    a = _write(tmp_path / "a.h5", x, y, n, names=[f"c{i}" for i in range(n)])
    b = _write(tmp_path / "b.h5", x, y, n, names=[f"d{i}" for i in range(n)])
    with pytest.raises(StoreError, match="class names differ"):
        merge_stores(tmp_path / "out.h5", [a, b])
    assert not (tmp_path / "out.h5").exists()


def test_inspect_and_merge_cli(tmp_path, data):
    x, y, n = data
    a = _write(tmp_path / "a.h5", x[:250], y[:250], n)
    b = _write(tmp_path / "b.h5", x[250:], y[250:], n)
    runner = CliRunner()
    result = runner.invoke(app, ["merge", str(tmp_path / "m.h5"), str(a), str(b)])
    assert result.exit_code == 0 and result.stdout.strip() == str(tmp_path / "m.h5")
    result = runner.invoke(app, ["inspect", str(tmp_path / "m.h5"), "--json"])
    info = json.loads(result.stdout)
    assert info["kind"] == "means" and info["samples"] == 500 and info["empty_classes"] == 2 and info["finite"]
    result = runner.invoke(app, ["inspect", str(tmp_path / "m.h5")])
    assert result.exit_code == 0 and "41 x 7" in result.stdout
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    for args in (["inspect", str(tmp_path / "bad.h5")], ["merge", str(tmp_path / "z.h5"), str(tmp_path / "bad.h5")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "z.h5").exists()


def _chunked_store(path, n_classes=100, n_dim=1024):
    """A means store with 16-row chunks (64 KiB of float32 rows at 1024 dims; the last chunk holds 4 rows)."""
    table = np.random.default_rng(1).normal(size=(n_classes, n_dim)).astype(np.float32)
    with StoreWriter(path, kind="means", n_classes=n_classes, n_dim=n_dim, provenance={"test": True}) as w:
        w.write_rows(0, counts=np.ones(n_classes, dtype=np.int64), centers=table)
    return table


LABEL_CASES = {
    "random": np.random.default_rng(2).integers(0, 100, 64),
    "duplicates": np.array([7, 7, 7, 99, 0, 7, 99]),
    "sorted": np.arange(10, 40),
    "first_and_last": np.array([0, 99]),
    "across_a_chunk_boundary": np.array([14, 15, 16, 17, 31, 32, 95, 96]),
    "empty": np.zeros(0, dtype=np.int64),
}


@pytest.mark.parametrize("case", LABEL_CASES)
def test_gather_equals_a_naive_per_row_read_with_and_without_the_row_cache(tmp_path, case):
    from lscdistill.stores.reader import RowCache

    labels = LABEL_CASES[case]
    _chunked_store(tmp_path / "m.h5")
    with open_store(tmp_path / "m.h5") as s:
        ds = s.dataset("centers")
        assert ds.chunks == (16, 1024)
        naive = torch.from_numpy(np.stack([ds[int(i)] for i in labels]) if labels.size else np.zeros((0, 1024)))
        cache = RowCache(s)
        for got in (s.gather(labels), s.gather(labels, cache=cache), s.gather(labels, cache=cache)):  # 2nd: hits
            assert got.shape == (len(labels), 1024) and got.dtype == torch.float32
            assert torch.equal(got, naive.float())
        touched = np.unique(labels // 16)
        assert np.array_equal(np.flatnonzero(cache.loaded), touched)  # only the chunks of the labels were read


def test_row_cache_reads_each_chunk_once_and_neighbouring_chunks_together(tmp_path, monkeypatch):
    from lscdistill.stores.reader import RowCache

    table = _chunked_store(tmp_path / "m.h5")
    with open_store(tmp_path / "m.h5") as s:
        reads = []
        original = type(s).read_into
        monkeypatch.setattr(
            type(s), "read_into", lambda self, out, a, b: (reads.append((a, b)), original(self, out, a, b))
        )
        cache = RowCache(s)
        assert RowCache.nbytes(s) == 100 * 1024 * 4
        s.gather(torch.tensor([3, 20, 40, 99]), cache=cache)  # chunks 0, 1, 2, 6: 0-2 in one read
        assert reads == [(0, 48), (96, 100)]
        s.gather(torch.tensor([47, 5, 98]), cache=cache)
        assert len(reads) == 2  # all cached
        np.testing.assert_array_equal(cache.complete(), table)
        assert reads[2:] == [(48, 96)]


def test_gather_rejects_nan_rows_and_bad_labels_with_or_without_the_cache(tmp_path):
    from lscdistill.stores.reader import RowCache

    table = np.ones((40, 8), dtype=np.float32)
    table[33] = np.nan
    with StoreWriter(tmp_path / "m.h5", kind="means", n_classes=40, n_dim=8, provenance={}) as w:
        w.write_rows(0, counts=np.ones(40, dtype=np.int64), centers=table)
    with open_store(tmp_path / "m.h5") as s:
        for cache in (None, RowCache(s)):
            assert torch.equal(s.gather(torch.tensor([0, 32, 34]), cache=cache), torch.ones(3, 8))  # NaN row unread
            with pytest.raises(StoreError, match="NaN or Inf"):
                s.gather(torch.tensor([1, 33]), cache=cache)
            with pytest.raises(StoreError, match=r"label 40 is outside \[0, 40\)"):
                s.gather(torch.tensor([40]), cache=cache)
