"""Greedy snapping (``method="greedy"``): deferred acceptance over the candidate lists.

Classes propose down their lists and a vector keeps its best proposer; this gives the greedy matching by
decreasing cosine. Classes that run out of candidates get wider lists. Its gap is bounded by
``sum of each class's own top-1 cosine - total``. Memory O(n_classes + list entries).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from .candidates import LEVELS, SystemCandidates
from .lists import Lists, UnitRows, edges_of, widen

__all__ = ["greedy"]


def greedy(
    cands: SystemCandidates, unit: UnitRows, lists: Lists, log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray, Lists]:
    """The greedy matching by decreasing cosine over the whole system.

    Deferred acceptance over the lists gives the matching in which no class and vector both prefer each other to
    their partners (stable), which for preferences from one common weight is the greedy matching. A class whose
    vector scores below its list's bound might prefer a vector off its list: its list is widened and the
    matching redone until none is left. Returns ``(edge per class or -1, classes left without a vector, lists)``.
    """
    for rounds in itertools.count(1):
        edge, stuck, lists = _accept(cands, unit, lists)
        held = np.flatnonzero(edge >= 0)
        low = held[(lists.score[edge[held]] < lists.bound[held]) & (lists.level[held] < len(LEVELS) - 1)]
        log(f"greedy round {rounds}: {len(stuck):,} classes without a vector, {len(low):,} need wider lists")
        if not low.size:
            return edge, stuck, lists
        lists, _ = widen(cands, unit, lists, low)
    raise AssertionError("unreachable")


def _accept(cands: SystemCandidates, unit: UnitRows, lists: Lists) -> tuple[np.ndarray, np.ndarray, Lists]:
    """Deferred acceptance: each free class proposes to its next candidate, each vector keeps its best proposer
    (higher cosine, then the earlier holder); classes that run out of candidates get wider lists."""
    n = len(lists.bound)
    cols, cid = np.unique(lists.key, return_inverse=True)
    owner, owner_score = np.full(len(cols), -1, np.int64), np.full(len(cols), -np.inf, np.float32)
    offset = np.zeros(n, dtype=np.int64)  # next candidate of each class, within its list
    free, stuck = np.arange(n), np.zeros(0, dtype=np.int64)
    while free.size:
        while free.size:
            ptr = lists.indptr[free] + offset[free]
            has = ptr < lists.indptr[free + 1]
            exhausted, f, e = free[~has], free[has], ptr[has]
            offset[f] += 1
            c, s = cid[e], lists.score[e]
            order = np.lexsort((f, -s, c))
            f, c, s = f[order], c[order], s[order]
            first = np.ones(len(c), dtype=bool)
            first[1:] = c[1:] != c[:-1]
            win = first.copy()
            win[first] = s[first] > owner_score[c[first]]
            displaced = owner[c[win]]
            owner[c[win]], owner_score[c[win]] = f[win], s[win]
            free = np.concatenate([f[~win], displaced[displaced >= 0]])
            if exhausted.size:
                break
        if not exhausted.size:
            continue
        # Wider lists for the classes that ran out; keep every class's place and every vector's owner.
        held = owner >= 0
        held_cols, held_by = cols[held], owner[held]
        lists, top = widen(cands, unit, lists, exhausted)
        stuck = np.concatenate([stuck, exhausted[top]])
        widened = exhausted[~np.isin(np.arange(exhausted.size), top)]
        offset[widened] = 0
        cols, cid = np.unique(lists.key, return_inverse=True)
        owner, owner_score = np.full(len(cols), -1, np.int64), np.full(len(cols), -np.inf, np.float32)
        at = np.searchsorted(cols, held_cols)
        owner[at] = held_by
        owner_score[at] = lists.score[_edge_to(lists, cid, held_by, at)]
        offset[held_by] = _edge_to(lists, cid, held_by, at) - lists.indptr[held_by] + 1
        free = np.concatenate([free, widened])
    edge = np.full(n, -1, dtype=np.int64)
    held = owner >= 0
    edge[owner[held]] = _edge_to(lists, cid, owner[held], np.flatnonzero(held))
    return edge, stuck, lists


def _edge_to(lists: Lists, cid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Position of the edge (row, col) in the CSR lists, for pairs known to exist."""
    e = edges_of(lists.indptr, rows)
    match = cid[e] == np.repeat(cols, np.diff(lists.indptr)[rows])
    return e[match]
