"""``run_snap``: a class-means store in, a snapped store out (atomically), with the report in its provenance.

Memory is O(n_classes * n_dim) for the means (float32, plus the reduced copy with ``--reduce pca``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..options import negative_is_none, one_of, opt, vector_system
from ..planner import fit_message
from ..stores import Store, StoreError, StoreWriter, check_output_path, open_store
from ..stores.writer import BLOCK_ROWS
from ..systems import create_system
from ..systems.base import VectorSystem
from .assign import METHODS, SnapReport, SnapResult, empty_message, nan_message, scan_rows, snap
from .pca import Pca, fit_pca

__all__ = ["SnapConfig", "run_snap"]


@dataclass
class SnapConfig:
    """Everything ``lscdistill snap`` needs (the command's options are derived from these fields)."""

    means: Path = opt(MISSING, "Class-means store (kind 'means', from extract or merge).", argument=True)  # noqa: RUF009
    out: Path = opt(MISSING, "Snapped store to write (HDF5).", "--out", "-o")  # noqa: RUF009
    system: str = opt("an", "Vector system: an, anp, v21, v22, planar.", "--system", "-s", check=vector_system)
    seed_system: int | None = opt(
        None,
        "Shuffle key of the system (A_nr: a seeded order of the same vectors), as train's --system-seed; "
        "omitted or -1: the unshuffled order.",
        "--system-seed",
        to_config=negative_is_none,
    )
    interpolations: int = opt(0, "Interpolation levels (an: 0 or 1).", "--interpolations", "-k", min=0)
    projection: str | None = opt(None, "drop_last (an default) or orthonormal.")
    n_dim: int | None = opt(
        None,
        "Target n_dim (default: the store's); needs --reduce. --dim is the old spelling.",
        "--n-dim",
        "--dim",
        min=1,
    )
    reduce: str = opt(
        "none", "none, or pca: reduce the means to --n-dim first (fitted on the means).", check=one_of("none", "pca")
    )
    method: str = opt(
        "auto",
        "auto (exact unless over 200,000 classes compete for the same vectors), exact (proven optimum) or greedy.",
        check=one_of(*METHODS),
    )
    allow_empty: bool = opt(False, "Give classes with count 0 unused vectors instead of refusing.")
    overwrite: bool = opt(False, "Replace an existing output store.")
    command: str | None = None  # recorded in the provenance


@dataclass
class _Source:
    """What run_snap read from the class-means store."""

    means: torch.Tensor  # [n, D_in] float32
    counts: np.ndarray  # [n]
    names: list[str] | None
    source: dict  # path and provenance of the store, for the output's provenance
    seconds: float


def _open_means(path: Path) -> Store:
    store = open_store(path)
    if store.kind != "means":
        store.close()
        hint = {
            "partial": "it holds sums only: merge it into a means store first (lscdistill merge OUT.h5 PARTIAL.h5 ...)",
            "snapped": "it is already snapped: snap the class-means store it was made from",
        }[store.kind]
        raise StoreError(f"{path} is a {store.kind!r} store, snap needs a 'means' store; {hint}")
    return store


def run_snap(cfg: SnapConfig, log: Callable[[str], None] | None = None) -> tuple[Path, SnapReport]:
    """Read a class-means store, snap it to a vector system and write a snapped store (atomically)."""
    log = log or (lambda _msg: None)
    check_output_path(cfg.out, cfg.overwrite)  # fail before any work
    if cfg.reduce not in ("none", "pca"):
        raise ValueError(f"--reduce must be none or pca, got {cfg.reduce!r}")
    if cfg.method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    src, system, dim = _read(cfg)
    means, pca = src.means, None
    if cfg.reduce == "pca":
        means, pca = _reduce(src.means, src.counts, dim, log)
    result = snap(means, system, method=cfg.method, counts=src.counts, allow_empty=cfg.allow_empty, log=log)
    result.report.timings["read"] = src.seconds
    start = time.perf_counter()
    _write(cfg, src, system, dim, pca, result)
    result.report.timings["write"] = time.perf_counter() - start
    return Path(cfg.out), result.report


def _read(cfg: SnapConfig) -> tuple[_Source, VectorSystem, int]:
    """The means, counts and names of the store, and the system to snap to (checked before reading the means)."""
    with _open_means(cfg.means) as store:
        dim = store.n_dim if cfg.n_dim is None else cfg.n_dim
        if cfg.reduce == "none" and dim != store.n_dim:
            raise ValueError(
                f"dimension mismatch: the means have n_dim {store.n_dim} but --n-dim is {dim}; "
                f"pass --reduce pca to reduce them to {dim} dims first"
            )
        system = create_system(
            cfg.system, dim, seed=cfg.seed_system, interpolations=cfg.interpolations, projection=cfg.projection
        )
        if store.n_classes > len(system):
            raise ValueError(fit_message(store.n_classes, cfg.system, dim, cfg.interpolations))
        counts, names = store.counts, store.class_names
        if (counts == 0).any() and not cfg.allow_empty:
            raise ValueError(empty_message(counts))
        source = {"path": str(Path(cfg.means).resolve()), "provenance": store.provenance}
        start = time.perf_counter()
        means = torch.empty(store.n_classes, store.n_dim)
        for s, rows in store.iter_blocks("centers"):
            means[s : s + len(rows)] = torch.from_numpy(rows)
    return _Source(means, counts, names, source, time.perf_counter() - start), system, dim


def _reduce(means: torch.Tensor, counts: np.ndarray, dim: int, log: Callable[[str], None]) -> tuple[torch.Tensor, Pca]:
    """``[n, D_in] -> [n, dim]`` float32 by a PCA fitted on the non-empty classes; empty classes stay zero."""
    finite, _ = scan_rows(means)
    if not finite.all():
        raise ValueError(nan_message(finite))
    pca = fit_pca(means, dim, np.flatnonzero(counts > 0))
    reduced = torch.empty(len(means), dim)
    for s in range(0, len(means), BLOCK_ROWS):
        reduced[s : s + BLOCK_ROWS] = pca.reduce(means[s : s + BLOCK_ROWS]).float()
    reduced[torch.from_numpy(counts == 0)] = 0.0  # an empty class has no mean, before or after PCA
    d_in = means.shape[1]
    log(f"PCA {d_in} -> {dim} dims keeps {pca.describe()['explained_variance_ratio']:.1%} of the variance")
    return reduced, pca


def _write(cfg: SnapConfig, src: _Source, system: VectorSystem, dim: int, pca: Pca | None, result: SnapResult) -> None:
    """The snapped store: centers (scaled to the system's radius), system indices, cosines, the system and PCA."""
    definition, n = system.describe(), len(src.means)
    report = result.report
    provenance = {
        "snap": {"system": definition, "method": cfg.method, "reduce": pca.describe() if pca else None},
        "report": {k: v for k, v in report.to_dict().items() if k != "timings"},
        "source": src.source,
        "command": cfg.command,
        "lscdistill": __version__,
    }
    with StoreWriter(
        cfg.out,
        kind="snapped",
        n_classes=n,
        n_dim=dim,
        provenance=provenance,
        class_names=src.names,
        overwrite=cfg.overwrite,
    ) as writer:
        writer.file.attrs["system"] = json.dumps(definition)
        if pca is not None:
            writer.file.attrs["reduce"] = json.dumps(pca.describe())
            writer.file.create_dataset("pca_mean", data=pca.mean)
            writer.file.create_dataset("pca_components", data=pca.components)
        for s in range(0, n, BLOCK_ROWS):
            writer.write_rows(
                s,
                counts=src.counts[s : s + BLOCK_ROWS],
                centers=result.vectors(slice(s, s + BLOCK_ROWS)).mul_(system.radius),
                system_index=result.system_index[s : s + BLOCK_ROWS],
                cosine=result.cosine[s : s + BLOCK_ROWS].astype(np.float32),
            )
