"""Where class centers come from, and label prediction against them.

:class:`SystemCenters` — the first ``n_classes`` vectors of a (shuffled) vector system: gathered from the labels
by formula, nothing of size n_classes is ever stored. :class:`TableCenters` — an explicit ``[n_classes, D]``
table (teacher class means); memory grows with n_classes, so it is meant for host memory.
:class:`StoreCenters` — rows of a store (class means), read by label. :class:`SnappedCenters` — a snapped store:
each class owns one vector of a system, so labels can also be decoded fast.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, NamedTuple

import torch

from .decode import exact_nearest
from .planner import fit_message
from .systems import system_from_description
from .systems.base import VectorSystem, cached, mark_degenerate, unit_rows

if TYPE_CHECKING:
    from .stores.reader import RowCache

__all__ = [
    "Centers",
    "Prediction",
    "SnappedCenters",
    "StoreCenters",
    "SystemCenters",
    "TableCenters",
    "load_system",
    "store_centers",
]

MODES = ("exact", "fast")


class Prediction(NamedTuple):
    """Labels predicted for a batch of embeddings.

    Attributes:
        labels: ``[B]`` int64 class index; ``-1`` for rows flagged as a new class (fast mode) and for rows
            with NaN/Inf. A zero row is equally near every center and gets class 0.
        cosine: ``[B]`` cosine to the returned center (fast mode, flagged rows: to the nearest system vector).
        new_class: ``[B]`` bool, fast mode: the nearest system vector belongs to no class (seed 002's signal).
        fallback: ``[B]`` bool, exact mode: rows the shortlist could not certify, decoded by brute force.
        method: ``"fast"``, ``"shortlist"`` (certified shortlist + brute-force fallback) or ``"bruteforce"``.
    """

    labels: torch.Tensor
    cosine: torch.Tensor
    new_class: torch.Tensor
    fallback: torch.Tensor
    method: str

    @property
    def n_fallback(self) -> int:
        return int(self.fallback.sum())


class Centers(ABC):
    """Class centers: ``gather(labels) -> [B, D]`` for the loss, ``predict(z)`` for label prediction."""

    n_classes: int
    n_dim: int
    fast: bool = False  #: predict(mode="fast") is available (the centers are vectors of a system)

    def close(self) -> None:
        """Release what the centers hold open (a store); a no-op for generated centers."""
        return None

    def check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D integer tensor, got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            bad = labels[(labels < 0) | (labels >= self.n_classes)][0].item()
            raise ValueError(f"label {bad} is outside [0, {self.n_classes}) of the {self.n_classes:,} class centers")
        return labels.long()

    @abstractmethod
    def gather(self, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Centers of the labels in a batch (Algorithm 1): ``[B] -> [B, D]`` on the labels' device."""

    @abstractmethod
    def predict(self, z: torch.Tensor, mode: str = "exact") -> Prediction:
        """Predicted class of each row of ``z [B, D]``."""

    def _check_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    def _scan(self, z: torch.Tensor, mode: str, rows, no_fast: str) -> Prediction:
        """Exact prediction by a chunked brute-force scan of ``rows`` (a table, or a store read chunk by chunk)."""
        self._check_mode(mode)
        if mode == "fast":
            raise ValueError(f"{no_fast} no structure for fast decoding; use mode='exact'")
        if z.dim() != 2 or z.shape[1] != self.n_dim:
            raise ValueError(f"embeddings must have shape [B, {self.n_dim}], got {tuple(z.shape)}")
        idx, cos = exact_nearest(z, rows, chunk_size=self.chunk_size)
        none = torch.zeros_like(idx, dtype=torch.bool)
        return Prediction(idx, cos, none, none, "bruteforce")


class SystemCenters(Centers):
    """Class ``c`` has center ``radius * system.vectors(c)``, for ``c < n_classes``.

    Args:
        system: a vector system (use a seeded one for the paper's A_nr).
        n_classes: number of classes; must not exceed ``len(system)``.
        brute_force_below: exact prediction scans all centers directly up to this many classes (a matmul beats
            the shortlist there); above it, a certified shortlist is tried first.
        chunk_size: rows per chunk of the brute-force scan.
    """

    fast = True

    def __init__(
        self, system: VectorSystem, n_classes: int, *, brute_force_below: int = 8192, chunk_size: int = 8192
    ) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        if n_classes > len(system):
            d = system.describe()
            raise ValueError(fit_message(n_classes, system.name, system.n_dim, d.get("interpolations", 0)))
        self.system, self.n_classes, self.n_dim = system, int(n_classes), system.n_dim
        self.brute_force_below, self.chunk_size = int(brute_force_below), int(chunk_size)

    def __repr__(self) -> str:
        return f"SystemCenters({self.system!r}, n_classes={self.n_classes})"

    def gather(self, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        vectors = self.system.vectors(self.check_labels(labels), dtype=dtype)
        return vectors if self.system.radius == 1.0 else vectors * self.system.radius

    def cluster_radius(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Per-class r_c of eq. 7 where the system defines one (``planar``), else ``None``."""
        return self.system.cluster_radius(self.check_labels(labels))

    def _rows(self, start: int, stop: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self.system.vectors(torch.arange(start, stop, device=device), dtype=dtype)

    def _bruteforce(self, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return exact_nearest(
            unit,
            lambda a, b: self._rows(a, b, unit.device, unit.dtype),
            n_rows=self.n_classes,
            chunk_size=self.chunk_size,
        )

    def predict(self, z: torch.Tensor, mode: str = "exact") -> Prediction:
        """Predict labels.

        ``mode="fast"``: the nearest vector of the *whole* system in O(n_dim); a row whose nearest vector is
        not one of the first n_classes is flagged ``new_class`` (label -1). ``mode="exact"``: the nearest
        *assigned* center; with all vectors assigned this is the fast search, otherwise a certified shortlist
        (top-m / bottom-m coordinates) with brute-force fallback for uncertified rows, or plain brute force
        below ``brute_force_below`` classes.
        """
        self._check_mode(mode)
        idx, cos = self.system.nearest(z)  # also validates z
        none = torch.zeros_like(idx, dtype=torch.bool)
        if mode == "fast" or self.n_classes == len(self.system):
            new = idx >= self.n_classes
            return Prediction(torch.where(new, -1, idx), cos, new, none, "fast")
        unit, ok, finite = unit_rows(z)
        if self.n_classes <= self.brute_force_below or not self.system.shortlist_sizes():
            idx, cos = self._bruteforce(unit)
            idx, cos = mark_degenerate(idx, cos, ok, finite)
            return Prediction(idx, cos, none, none, "bruteforce")
        # Rows whose nearest system vector is assigned are already exact.
        done = ok & (idx < self.n_classes)
        idx, cos = idx.clone(), cos.clone()
        pending = (ok & ~done).nonzero().squeeze(1)
        for m in self.system.shortlist_sizes():
            if pending.numel() == 0:
                break
            found = self.system.candidates(unit[pending], m)
            assigned = (found.index >= 0) & (found.index < self.n_classes)
            score = torch.where(assigned, found.score, -float("inf"))
            best, arg = score.max(dim=1)
            certified = best >= found.bound
            rows = pending[certified]
            idx[rows] = found.index[certified].gather(1, arg[certified, None]).squeeze(1)
            cos[rows] = best[certified].to(cos.dtype)
            pending = pending[~certified]
        fallback = torch.zeros_like(none)
        if pending.numel():
            fallback[pending] = True
            idx[pending], cos[pending] = self._bruteforce(unit[pending])
        idx, cos = mark_degenerate(idx, cos, ok, finite)
        return Prediction(idx, cos, none, fallback, "shortlist")


class TableCenters(Centers):
    """An explicit table of class centers ``[n_classes, D]`` (e.g. teacher class means, CEembs).

    The table stays where it is (keep it on the host for large n_classes); :meth:`gather` moves only the rows of
    a batch. Prediction is exact, by chunked brute force.
    """

    def __init__(self, table: torch.Tensor, *, chunk_size: int = 8192) -> None:
        if not isinstance(table, torch.Tensor) or table.dim() != 2 or not table.dtype.is_floating_point:
            raise ValueError("table must be a floating [n_classes, D] tensor")
        if not bool(torch.isfinite(table).all()):
            raise ValueError("the center table contains NaN or Inf")
        self.table, self.n_classes, self.n_dim, self.chunk_size = table, table.shape[0], table.shape[1], chunk_size

    def gather(self, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        labels = self.check_labels(labels)
        return self.table[labels.to(self.table.device)].to(device=labels.device, dtype=dtype)

    def predict(self, z: torch.Tensor, mode: str = "exact") -> Prediction:
        return self._scan(z, mode, self.table, "a table of centers has")


TABLE_CACHE_BYTES = 512 * 1024 * 1024  # a store's centers are kept in host memory up to this size


class StoreCenters(Centers):
    """Centers read from a store (class means or snapped centers) by rows: training loads nothing of size n_classes
    up front.

    :meth:`gather` returns the rows of a batch's labels on the labels' device. A store whose centers take at most
    ``table_cache_bytes`` (default 512 MiB, e.g. 1.3M classes x 96 float32 dims) is read into a host table a chunk
    at a time as labels ask for rows (:class:`~lscdistill.stores.reader.RowCache`): each chunk of the file is read
    once, later gathers are in-memory indexing, off the file. A larger store is read row by row for every batch.
    :meth:`predict` is exact, a chunked brute-force scan of that same table (completed, and copied to the device of
    the embeddings if that is not the CPU), so evaluating many batches reads the store once; a store above the cap
    is streamed chunk by chunk for every batch (memory: one chunk). **Memory that grows with n_classes**: the host
    table, up to the cap (plus its device copy for predictions on a GPU).
    """

    def __init__(self, store, *, chunk_size: int = 65536, table_cache_bytes: int = TABLE_CACHE_BYTES) -> None:
        if store.kind not in ("means", "snapped"):
            raise ValueError(f"{store.path} is a {store.kind!r} store: train on a 'means' or 'snapped' store")
        self.store, self.n_classes, self.n_dim, self.chunk_size = store, store.n_classes, store.n_dim, chunk_size
        self.table_cache_bytes = table_cache_bytes
        self._cache: RowCache | None = None
        self._table: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"StoreCenters({self.store.path}, n_classes={self.n_classes}, n_dim={self.n_dim})"

    def gather(self, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.store.gather(self.check_labels(labels), dtype=dtype, cache=self._row_cache())

    def close(self) -> None:
        self._cache, self._table = None, None
        self.store.close()

    def predict(self, z: torch.Tensor, mode: str = "exact") -> Prediction:
        return self._scan(z, mode, self._rows(z.device), "class means have")

    def _row_cache(self) -> RowCache | None:
        """The host table of the centers, created on first use; ``None`` when it would exceed the cap."""
        from .stores.reader import RowCache

        if self._cache is None and RowCache.nbytes(self.store) <= self.table_cache_bytes:
            self._cache = RowCache(self.store)
        return self._cache

    def _rows(self, device: torch.device):
        """What exact decoding scans: the whole table on ``device`` when it fits the cap (on the CPU, the host table
        itself), else the store."""
        cache = self._row_cache()
        if cache is None:
            return self.store
        if self._table is None or self._table.device != device:
            self._table = torch.from_numpy(cache.complete()).to(device=device, dtype=torch.float32)
        return self._table


def load_system(store) -> VectorSystem:
    """Rebuild the vector system of a snapped store from its ``system`` attribute (no table needed)."""
    from .stores import StoreError

    if store.kind != "snapped" or "system" not in store.attrs:
        raise StoreError(f"{store.path}: not a snapped store with a 'system' attribute")
    return system_from_description(json.loads(store.attrs["system"]))


class SnappedCenters(StoreCenters):
    """A snapped store: class ``c``'s center is vector ``system_index[c]`` of the store's system.

    Training gathers rows like :class:`StoreCenters`. ``predict(mode="fast")`` finds the nearest vector of the whole
    system in O(n_dim) and maps it back to its class by a binary search in the sorted system indices; a vector that
    no class owns flags a new class (label -1). That inverse map is built on the first fast prediction (evaluation,
    including validation during training; training steps never need it) and holds ``2 * n_classes`` int64
    (20 MB at 1.28M classes), once per device.
    """

    fast = True

    def __init__(self, store, *, chunk_size: int = 65536) -> None:
        super().__init__(store, chunk_size=chunk_size)
        self.system = load_system(store)
        self._inverse: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"SnappedCenters({self.store.path}, {self.system!r}, n_classes={self.n_classes})"

    def _inverse_map(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        def build():
            index = torch.from_numpy(self.store.dataset("system_index")[:]).long()
            return tuple(t.to(device) for t in torch.sort(index))

        return cached(self._inverse, device, build)  # never keeps a traced (fake) tensor

    def predict(self, z: torch.Tensor, mode: str = "exact") -> Prediction:
        self._check_mode(mode)
        if mode == "exact":
            return super().predict(z, mode)
        idx, cos = self.system.nearest(z)  # also validates z; -1 for NaN/Inf rows
        owned, owner = self._inverse_map(idx.device)
        pos = torch.searchsorted(owned, idx).clamp_(max=len(owned) - 1)
        hit = owned[pos] == idx
        new = ~hit & (idx >= 0)
        none = torch.zeros_like(new)
        return Prediction(torch.where(hit, owner[pos], -1), cos, new, none, "fast")


def store_centers(store) -> StoreCenters:
    """Centers for an open store: :class:`SnappedCenters` for a snapped store, :class:`StoreCenters` otherwise."""
    return SnappedCenters(store) if store.kind == "snapped" else StoreCenters(store)
