"""``snap()``: give every class a distinct vector of a vector system, closest to its mean embedding (paper §6.6).

The problem is an assignment: classes x system vectors, weight ``cos(mean_c, v_s)``, each class one vector, no
vector twice, total cosine maximal. No ``[n_classes, |S|]`` matrix is ever built (A_384 with one interpolation
level has 56.8M vectors); each class gets a short candidate list with a bound instead (:mod:`.candidates`),
solved greedily (:mod:`.greedy`) and, unless ``method="greedy"``, exactly (:mod:`.exact`). ``auto`` is exact up
to :data:`EXACT_AUTO_MAX` competing classes, greedy above. Either way the result is reported optimal when every
class got its own nearest vector.

Scores are float32 (the optimum is exact up to that rounding) and are the stored cosines; only classes given a
leftover vector have theirs computed from the vectors. Memory is O(n_classes * (n_dim + K)).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..planner import fit_message
from ..systems.base import VectorSystem
from ..systems.shuffled import ShuffledSystem
from .candidates import LEVELS, SystemCandidates
from .exact import exact
from .greedy import greedy
from .lists import Lists, UnitRows, build_lists, certify_heads

__all__ = ["EXACT_AUTO_MAX", "METHODS", "SnapReport", "SnapResult", "empty_message", "nan_message", "scan_rows", "snap"]

METHODS = ("auto", "exact", "greedy")
#: ``method="auto"`` solves exactly unless more than this many classes compete for the same vectors (one
#: connected component of the candidate graph), where it keeps the greedy matching
EXACT_AUTO_MAX = 200_000


@dataclass
class SnapReport:
    """What a snap did and how good it is. Cosines are float64 sums over the classes."""

    n_classes: int
    method: str  # "exact" or "greedy": what ran
    optimal: bool  # proven: exact certificate, or every class got its own nearest vector
    total_cosine: float
    mean_cosine: float
    min_cosine: float
    not_top1: int  # classes that did not get their own nearest system vector
    upper_bound: float  # proven upper bound on the best possible total cosine
    gap: float  # upper_bound - total_cosine (>= the true gap to the optimum)
    relative_gap: float
    leftover: int  # classes without a usable mean (empty, zero) given unused vectors, cosine 0
    levels: dict[str, int]  # classes per candidate-list width "T/K"
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SnapResult:
    system_index: np.ndarray  # [n] int64, indices of the system as given (seeded: its shuffled order)
    cosine: np.ndarray  # [n] float64 (0 for leftover classes)
    report: SnapReport
    vectors: Callable[[slice], torch.Tensor]  # unit vectors of the classes in a slice, [r, n_dim] float32


@dataclass
class _Assignment:
    """The solvers' answer over the usable classes (rows of the lists)."""

    lists: Lists
    edge: np.ndarray  # [r] chosen list entry per row, -1: none
    stuck: np.ndarray  # rows left without a vector
    upper: float  # upper bound from the exact solver (inf after greedy)
    proven: bool  # the exact solver's certificate
    method: str  # what ran
    top1: np.ndarray  # [r] float64, each row's own best cosine


def snap(
    means: torch.Tensor,
    system: VectorSystem,
    *,
    method: str = "auto",
    counts: np.ndarray | None = None,
    allow_empty: bool = False,
    log: Callable[[str], None] | None = None,
) -> SnapResult:
    """Give every class a distinct vector of ``system``, maximizing the total cosine to the class means.

    Args:
        means: ``[n, n_dim]`` class means (any float dtype), ``n <= len(system)``.
        system: the target vector system (seeded or not; the indices returned are in its own order).
        method: ``exact`` (proven optimum), ``greedy`` (fast, gap bounded) or ``auto`` (exact up to
            :data:`EXACT_AUTO_MAX` classes).
        counts: samples per class; a class with count 0 has no mean (refused unless ``allow_empty``).
        allow_empty: give empty classes (and zero means) unused vectors, cosine 0, instead of refusing.
        log: receives one line per stage (progress, diagnostics).

    Raises:
        ValueError: bad shapes, NaN/Inf means, empty classes (unless allowed), more classes than vectors.
    """
    log = log or (lambda _msg: None)
    start, timings = time.perf_counter(), {}
    usable = _check(means, system, method, counts, allow_empty)
    active = np.flatnonzero(usable)
    cands = SystemCandidates(system)
    sub = UnitRows(means, active)
    lists = build_lists(cands, sub, None, np.arange(len(active)), np.zeros(len(active), np.int8))
    lists = certify_heads(cands, sub, lists)
    timings["candidates"] = time.perf_counter() - start
    log(f"candidates for {len(active):,} classes in {timings['candidates']:.1f} s")
    t = time.perf_counter()
    solved = _assign(cands, sub, lists, method, log)
    timings["assign"] = time.perf_counter() - t
    log(f"{solved.method} assignment in {timings['assign']:.1f} s")

    got = solved.edge >= 0
    keys = np.full(len(means), -1, dtype=np.int64)
    keys[active[got]] = solved.lists.key[solved.edge[got]]
    index, left = _indices(system, cands, keys, usable, active[~got])

    def vectors(rows: slice) -> torch.Tensor:
        k = keys[rows]
        if (k >= 0).all():
            return cands.vectors(k)
        out = system.vectors(torch.from_numpy(index[rows]))
        out[torch.from_numpy(k >= 0)] = cands.vectors(k[k >= 0])
        return out

    cosine = np.zeros(len(means))  # the scores are the cosines (float32): no need to build the vectors
    cosine[active[got]] = solved.lists.score[solved.edge[got]]
    stray = active[~got]  # given leftover vectors
    if stray.size:
        u = UnitRows(means, stray)(np.arange(stray.size))
        cosine[stray] = (u * system.vectors(torch.from_numpy(index[stray]))).sum(1).double().numpy()
    report = _report(solved, cosine, int(left.size), start, timings)
    return SnapResult(index, cosine, report, vectors)


def _check(
    means: torch.Tensor, system: VectorSystem, method: str, counts: np.ndarray | None, allow_empty: bool
) -> np.ndarray:
    """Refuse bad input (ValueError); returns the usable classes (a mean, not zero) as a mask ``[n]``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(means, torch.Tensor) or means.dim() != 2 or not means.dtype.is_floating_point:
        raise ValueError("means must be a floating [n_classes, n_dim] tensor")
    n = means.shape[0]
    if means.shape[1] != system.n_dim:
        raise ValueError(f"the means have n_dim {means.shape[1]} but the system has {system.n_dim}")
    if n > len(system):
        d = system.describe()
        raise ValueError(fit_message(n, system.name, system.n_dim, d.get("interpolations", 0)))
    finite, nonzero = scan_rows(means)
    if not finite.all():
        raise ValueError(nan_message(finite))
    empty = np.zeros(n, dtype=bool) if counts is None else np.asarray(counts) == 0
    if empty.any() and not allow_empty:
        raise ValueError(empty_message(counts))
    return ~empty & nonzero


def _assign(
    cands: SystemCandidates, sub: UnitRows, lists: Lists, method: str, log: Callable[[str], None]
) -> _Assignment:
    """Greedy first: it is optimal when every class gets its own nearest vector, and it widens the lists where
    classes compete, which saves the exact solver rounds. Then exact, unless greedy was asked for or proven."""
    top1 = lists.head.astype(np.float64)
    edge, stuck, lists = greedy(cands, sub, lists, log)
    out = _Assignment(lists, edge, stuck, math.inf, False, "greedy", top1)
    if method != "greedy" and not (stuck.size == 0 and (lists.score[edge] >= top1).all()):
        solved = exact(cands, sub, lists, edge, log, max_rows=EXACT_AUTO_MAX if method == "auto" else None)
        if solved is not None:
            edge, stuck, upper, proven, lists = solved
            out = _Assignment(lists, edge, stuck, upper, proven, "exact", top1)
    return out


def _indices(
    system: VectorSystem, cands: SystemCandidates, keys: np.ndarray, usable: np.ndarray, unplaced: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """System indices ``[n]`` of every class (in ``system``'s own order) and the classes given leftover vectors:
    the unusable ones and ``unplaced`` get the lowest unused vectors."""
    base = np.full(len(keys), -1, dtype=np.int64)
    placed = keys >= 0
    base[placed] = cands.base_indices(keys[placed])
    left = np.concatenate([np.flatnonzero(~usable), unplaced])
    if left.size:
        used = np.sort(base[base >= 0])
        base[left] = np.setdiff1d(np.arange(min(len(cands.base), used.size + left.size)), used, True)[: left.size]
    if isinstance(system, ShuffledSystem):
        return system.from_base(torch.from_numpy(base)).numpy(), left
    return base, left


def _report(
    solved: _Assignment, cosine: np.ndarray, leftover: int, start: float, timings: dict[str, float]
) -> SnapReport:
    got = solved.edge >= 0
    score = np.where(got, solved.lists.score[np.maximum(solved.edge, 0)], -np.inf)
    total, n = float(cosine.sum()), len(cosine)
    not_top1 = int((score < solved.top1.astype(np.float32)).sum())
    proven = solved.stuck.size == 0 and (solved.proven or not_top1 == 0)
    upper = total if proven else min(solved.upper, float(solved.top1.sum()))
    gap = max(0.0, upper - total)
    levels = np.bincount(solved.lists.level, minlength=len(LEVELS))
    return SnapReport(
        n_classes=n,
        method=solved.method,
        optimal=bool(proven),
        total_cosine=total,
        mean_cosine=total / n,
        min_cosine=float(cosine.min()),
        not_top1=not_top1,
        upper_bound=upper,
        gap=gap,
        relative_gap=gap / abs(upper) if upper else 0.0,
        leftover=leftover,
        levels={f"{t}/{k}": int(c) for (t, k), c in zip(LEVELS, levels, strict=True) if c},
        seconds=time.perf_counter() - start,
        timings=timings,
    )


def nan_message(finite: np.ndarray) -> str:
    bad = np.flatnonzero(~finite)
    return f"{len(bad):,} class means contain NaN or Inf (classes {bad[:5].tolist()}); fix the store first"


def empty_message(counts: np.ndarray) -> str:
    empty = np.flatnonzero(np.asarray(counts) == 0)
    return (
        f"{len(empty):,} classes have no samples (count 0, e.g. classes {empty[:5].tolist()}), so no mean to snap; "
        "pass --allow-empty to give them unused vectors (cosine 0)"
    )


def scan_rows(means: torch.Tensor, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Per row: all finite, and not all zero (block by block: no temporary the size of the means)."""
    finite, nonzero = np.ones(len(means), dtype=bool), np.ones(len(means), dtype=bool)
    for s in range(0, len(means), block):
        x = means[s : s + block]
        norm = torch.linalg.vector_norm(x, dim=1)  # fast; overflow and underflow are checked exactly below
        ok, big = torch.isfinite(norm), norm > 0
        odd = (~ok | ~big).nonzero().squeeze(1)
        if odd.numel():
            ok[odd], big[odd] = torch.isfinite(x[odd]).all(dim=1), (x[odd] != 0).any(dim=1)
        finite[s : s + block], nonzero[s : s + block] = ok.numpy(), big.numpy()
    return finite, nonzero
