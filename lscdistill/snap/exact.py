"""Exact snapping (``method="exact"``): an assignment over the candidate lists, proven optimal.

Every class also gets a private *dummy* vector worth its bound. Any assignment of the whole system maps to this
small problem with at least the same total (a class on a vector off its list moves to its dummy), so the small
problem's optimum bounds the true one from above; when no class takes its dummy, the solution is a real
assignment reaching that bound: **proven optimal**. Classes that take their dummy get wider lists and the problem
is solved again. The small problem is split into connected components, solved with SciPy's LAPJVsp
(``min_weight_full_bipartite_matching``) in the square form of :func:`_solve_batch`. Memory O(list entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from .candidates import SystemCandidates
from .lists import Lists, UnitRows, edges_of, widen

__all__ = ["exact"]

BATCH_NODES = 200_000  # components are solved together up to this many rows + columns
DENSE_MAX = 1 << 22  # problems with at most this many rows x (columns + rows) are solved as dense matrices
DUMMY_FLOOR = -5.0  # dummy weight of a complete list (bound -inf): below any cosine


def _solve_batch(row: np.ndarray, col: np.ndarray, weight: np.ndarray, dummy: np.ndarray) -> np.ndarray:
    """Best assignment of R rows to distinct columns (``(row, col, weight)`` edges, local ids) or to their private
    dummy (weight ``dummy [R]``). Returns the chosen edge of each row, -1 for its dummy.

    SciPy's LAPJVsp costs O(rows x columns) on a rectangular problem (every row starts free), so the problem is
    made square: one filler row per real column, adjacent to that column and to the dummy of every row listing
    it. A filler edge has the same weight everywhere, so it does not change the optimum; making it the heaviest
    lets LAPJVsp's initialization settle most rows before any shortest-path search.
    """
    r, c = len(dummy), int(col.max()) + 1 if col.size else 0
    dummy = np.maximum(dummy, DUMMY_FLOOR)
    if r * (c + r) <= DENSE_MAX:  # small: a dense matrix (missing edges far below any dummy) is faster
        dense = np.full((r, c + r), -1e6)
        dense[row, col] = weight
        dense[np.arange(r), c + np.arange(r)] = dummy
        chosen = linear_sum_assignment(dense, maximize=True)[1]
    else:
        filler = 10.0  # above every shifted cosine weight (at most 3)
        rows = np.concatenate([row, np.arange(r), r + np.arange(c), r + col])
        cols = np.concatenate([col, c + np.arange(r), np.arange(c), c + row])
        data = np.concatenate([weight + 2.0, dummy + 2.0, np.full(c + len(col), filler)])
        graph = sp.csr_array((data, (rows, cols)), shape=(r + c, r + c))  # weights in [1, 3] and -3: never zero
        chosen = min_weight_full_bipartite_matching(graph, maximize=True)[1][:r]
    edge = np.full(r, -1, dtype=np.int64)
    real = np.flatnonzero(chosen < c)
    pair = row.astype(np.int64) * max(c, 1) + col
    order = np.argsort(pair)
    edge[real] = order[np.searchsorted(pair, real * max(c, 1) + chosen[real], sorter=order)]
    return edge


def _exact_round(lists: Lists, rows: np.ndarray, label: np.ndarray, cid: np.ndarray) -> np.ndarray:
    """Solve the components of ``rows`` (whole components); returns the chosen edge per row, -1 = its dummy.

    ``label`` holds the component of every class (first ``n``) and every column (after).
    """
    n = len(lists.bound)
    comp = label[:n][rows]
    counts = np.diff(lists.indptr)
    edge = np.full(len(rows), -1, dtype=np.int64)
    n_rows = np.bincount(comp, minlength=label.max() + 1)
    single = n_rows[comp] == 1  # alone with its columns: its best candidate, unless the dummy is better
    first = lists.indptr[rows[single]]
    has = counts[rows[single]] > 0
    ok = has & (lists.score[np.minimum(first, max(len(cid) - 1, 0))] >= lists.bound[rows[single]])
    edge[np.flatnonzero(single)[ok]] = first[ok]
    multi = np.flatnonzero(~single)
    if not multi.size:
        return edge
    multi = multi[np.argsort(comp[multi], kind="stable")]
    nodes = n_rows + np.bincount(label[n:], minlength=len(n_rows))  # rows + columns per component
    comps = np.unique(comp[multi])
    batch_of = np.zeros(len(n_rows), dtype=np.int64)
    batch_of[comps] = np.cumsum(nodes[comps]) // BATCH_NODES
    for b in np.unique(batch_of[comps]):
        sel = multi[batch_of[comp[multi]] == b]
        e = edges_of(lists.indptr, rows[sel])
        local_row = np.repeat(np.arange(len(sel)), counts[rows[sel]])
        _, local_col = np.unique(cid[e], return_inverse=True)
        chosen = _solve_batch(
            local_row, local_col, lists.score[e].astype(np.float64), lists.bound[rows[sel]].astype(np.float64)
        )
        edge[sel] = np.where(chosen >= 0, e[np.maximum(chosen, 0)], -1)
    return edge


def exact(
    cands: SystemCandidates,
    unit: UnitRows,
    lists: Lists,
    start: np.ndarray,
    log: Callable[[str], None],
    max_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float, bool, Lists] | None:
    """Optimal assignment over the lists with dummies, widening the lists of classes that take their dummy.

    Returns ``(edge per class or -1, classes left without a vector, upper bound on the optimum, proven, lists)``.
    The bound is the lowest optimum of a round whose dummies all had valid bounds; ``proven``: the last round
    used no dummy and no bound was dropped, so the assignment reaches the bound. Returns None at once if a
    group of competing classes (a connected component) has more than ``max_rows`` classes. ``start`` is an
    assignment to compare with (the greedy one): classes that move in a round with dummies sit on the chains
    of displacements that the dummies end, and get wider lists too (fewer rounds).
    """
    before = np.where(start >= 0, lists.key[np.maximum(start, 0)], -1)
    n = len(lists.bound)
    offset = np.full(n, -1, dtype=np.int64)  # chosen candidate within each list (lists change between rounds)
    dirty, floored = np.arange(n), np.zeros(n, dtype=bool)
    upper, rounds = math.inf, 0
    while dirty.size:
        rounds += 1
        cols, cid = np.unique(lists.key, return_inverse=True)
        ones = np.ones(len(cid), dtype=np.int8)
        graph = sp.csr_array((ones, (lists.rows_of_edges(), n + cid)), shape=(n + len(cols),) * 2)
        _, label = connected_components(graph, directed=False)
        largest = int(np.bincount(label[:n]).max())
        if rounds == 1 and max_rows is not None and largest > max_rows:
            log(f"{largest:,} classes compete for the same vectors: more than {max_rows:,}, keeping greedy")
            return None
        todo = np.zeros(label.max() + 1, dtype=bool)
        todo[label[dirty]] = True
        rows = np.flatnonzero(todo[label[:n]])
        chosen = _exact_round(lists, rows, label, cid)
        offset[rows] = np.where(chosen >= 0, chosen - lists.indptr[rows], -1)
        edge = np.where(offset >= 0, lists.indptr[:-1] + offset, -1)
        dummy = np.flatnonzero(edge < 0)
        if not floored.any():
            value = lists.score[edge[edge >= 0]].astype(np.float64).sum() + lists.bound[dummy].astype(np.float64).sum()
            upper = min(upper, value)
        log(f"exact round {rounds}: {len(rows):,} classes solved, {dummy.size:,} need wider lists")
        now = np.where(edge >= 0, lists.key[np.maximum(edge, 0)], -1)
        moved = np.flatnonzero((now != before) & (edge >= 0)) if dummy.size else dummy
        before = now
        dummy = dummy[~floored[dummy]]
        lists, top = widen(cands, unit, lists, dummy, step=min(rounds, 2))  # each round costs a solve
        lists, _ = widen(cands, unit, lists, moved)
        if top.size:  # complete lists that still lose to their bound: take real vectors if any are left
            floored[dummy[top]] = True
            lists.bound[dummy[top]] = -np.inf
        dirty = dummy
    edge = np.where(offset >= 0, lists.indptr[:-1] + offset, -1)
    return edge, np.flatnonzero(edge < 0), upper, not floored.any() and (edge >= 0).all(), lists
