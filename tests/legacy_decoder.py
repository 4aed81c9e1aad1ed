"""A frozen copy of the fast decoder as it was before it became a branch-free tensor program (commit cf37aab).

It has data-dependent branches (``bool(tensor.any())``, boolean-mask indexing, cycle-walking ``while`` loops), which
is why it was replaced; the tests keep it as a reference: the new decoder must give the same answers, ties included.
Only the search is copied; families, variants and index arithmetic come from the package (they did not change).
"""

from __future__ import annotations

import math

import torch

from lscdistill.systems.base import mark_degenerate
from lscdistill.systems.keyed import KeyedPermutation
from lscdistill.systems.pattern import PatternSystem, PositiveRoots
from lscdistill.systems.shuffled import ShuffledSystem

_INF = float("inf")
_SAFE = (2.0**-40, 2.0**40)


def legacy_safe_rows(z):
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    scale = z.abs().amax(dim=1, keepdim=True)
    finite = torch.isfinite(scale)
    ok = finite & (scale > 0)
    outside = ~ok | (scale < _SAFE[0]) | (scale > _SAFE[1])
    if bool(outside.any()):
        z = torch.where(ok, z / torch.where(outside & ok, scale, 1.0), 1.0)
    return z, torch.linalg.vector_norm(z, dim=1, keepdim=True), ok.squeeze(1), finite.squeeze(1)


class _Ranked:
    def __init__(self, x):
        self.x = x
        self._top = x.new_empty((x.shape[0], 0), dtype=torch.long)
        self._top_work = None
        self._argmin = None
        self._bottom = {}

    def top(self, p):
        if p == 1 and self._top.shape[1] == 0:
            self._top = self.x.argmax(dim=1, keepdim=True)
        if p > self._top.shape[1]:
            if self._top_work is None:
                self._top_work = self.x.scatter(1, self._top, -_INF)
            cols = [self._top]
            for _ in range(p - self._top.shape[1]):
                i = self._top_work.argmax(dim=1, keepdim=True)
                self._top_work.scatter_(1, i, -_INF)
                cols.append(i)
            self._top = torch.cat(cols, dim=1)
        return self._top[:, :p]

    def bottom(self, p, q):
        if q == 1 and p not in self._bottom:
            if self._argmin is None:
                self._argmin = self.x.argmin(dim=1, keepdim=True)
            if p == 0 or not bool((self._argmin == self.top(p)).any()):
                return self._argmin
        if p not in self._bottom:
            work = self.x.clone()
            if p:
                work.scatter_(1, self.top(p), _INF)
            self._bottom[p] = (work, self.x.new_empty((self.x.shape[0], 0), dtype=torch.long))
        work, have = self._bottom[p]
        if q > have.shape[1]:
            cols = [have]
            for _ in range(q - have.shape[1]):
                j = work.argmin(dim=1, keepdim=True)
                work.scatter_(1, j, _INF)
                cols.append(j)
            have = torch.cat(cols, dim=1)
            self._bottom[p] = (work, have)
        return have[:, :q]

    def place(self, pos_vals, neg_vals):
        top = self.top(len(pos_vals))
        bot = self.bottom(len(pos_vals), len(neg_vals))
        coords = torch.cat([top, bot], dim=1)
        vals = torch.tensor([*pos_vals, *neg_vals], dtype=self.x.dtype, device=self.x.device)
        return coords, (self.x.gather(1, coords) * vals).sum(dim=1)


def _pick(positions, scores):
    if len(scores) == 1:
        return positions[0], scores[0]
    score = torch.stack(scores, dim=1)
    k = score.argmax(dim=1)
    pos = torch.stack(positions, dim=1)[torch.arange(k.shape[0], device=k.device), k]
    return pos, score.gather(1, k[:, None]).squeeze(1)


def _family_best(fam, ranked, drop_last):
    if isinstance(fam, PositiveRoots):
        return _positive_roots_best(fam, ranked, drop_last)
    positions, scores = [], []
    for var in fam.variants(drop_last):
        coords, dot = ranked.place(var.pos_vals, var.neg_vals)
        pos = torch.empty((coords.shape[0], len(fam.slot_values)), dtype=torch.long, device=coords.device)
        pos[:, var.pos_slots + var.neg_slots] = coords
        if var.drop_slot is not None:
            pos[:, var.drop_slot] = fam.n_coords - 1
        positions.append(pos)
        scores.append(dot / var.norm)
    return _pick(positions, scores)


def _positive_roots_best(fam, ranked, drop_last):
    x = ranked.x
    b, m = x.shape
    positions, scores = [], []
    if m >= 2:
        prefix = torch.cummax(x, dim=1).values
        gain = torch.cat([x.new_full((b, 1), -_INF), prefix[:, :-1] - x[:, 1:]], dim=1)
        j = gain.argmax(dim=1, keepdim=True)
        cols = torch.arange(m, device=x.device)
        i = torch.where(cols < j, x, -_INF).argmax(dim=1, keepdim=True)
        positions.append(torch.cat([i, j], dim=1))
        scores.append(gain.gather(1, j).squeeze(1) / math.sqrt(2.0))
    if drop_last:
        i = x.argmax(dim=1, keepdim=True)
        positions.append(torch.cat([i, torch.full_like(i, fam.n_coords - 1)], dim=1))
        scores.append(x.gather(1, i).squeeze(1))
    return _pick(positions, scores)


def _pattern_nearest(system: PatternSystem, x, norm):
    ranked = _Ranked(system.lift(x))
    indices, scores = [], []
    for fam, lo in zip(system.families, system._offsets, strict=False):
        pos, score = _family_best(fam, ranked, system._drop)
        indices.append((lo + fam.index(pos))[:, None])
        scores.append(score)
    idx, score = _pick(indices, scores)
    return idx.squeeze(1), score / norm.squeeze(1)


def _walk_inverse(perm: KeyedPermutation, idx):
    out = perm._decrypt(idx)
    outside = out >= perm.size
    while bool(outside.any()):
        out[outside] = perm._decrypt(out[outside])
        outside = out >= perm.size
    return out


def _perm_inverse(perm: KeyedPermutation, idx):
    idx = idx.long()
    if perm.size <= 1 or idx.numel() == 0:
        return idx.clone()
    return perm._radix(idx, True) if perm.radix else _walk_inverse(perm, idx)


def _from_base(system: ShuffledSystem, idx):
    out = idx.clone()
    for lo, perm in system._levels:
        sel = (idx >= lo) & (idx < lo + perm.size)
        if bool(sel.any()):
            out[sel] = lo + _perm_inverse(perm, idx[sel] - lo)
    return out


def legacy_nearest(system, z):
    """``system.nearest(z)`` as the old decoder computed it."""
    x, norm, ok, finite = legacy_safe_rows(system._check_embeddings(z))
    if isinstance(system, ShuffledSystem):
        idx, cos = _raw_nearest(system.base, x, norm)
        idx = _from_base(system, idx)
    else:
        idx, cos = _raw_nearest(system, x, norm)
    return mark_degenerate(idx, cos, ok, finite)


def _raw_nearest(system, x, norm):
    if isinstance(system, PatternSystem):
        return _pattern_nearest(system, x, norm)
    return system._nearest(x, norm)  # planar: already branch-free


# ---------------------------------------------------------------------------------------------------------------
# The seeded shuffle's level map as it was before it became table lookups (commit 7ff90f9): mixed-radix Feistel
# rounds with per-index radices and keys gathered from small tables. The new map must give the same bits.
_LEGACY_MIX, _LEGACY_SHIFT = 0x045D9F3B, 17


def legacy_feistel_radix(v, big_a, big_b, keys, inverse):
    a, b = v // big_b, v % big_b
    order = list(enumerate(keys))
    step = torch.sub if inverse else torch.add
    for r, key in reversed(order) if inverse else order:
        if r % 2 == 0:
            b = step(b, ((a ^ key) * _LEGACY_MIX) >> _LEGACY_SHIFT) % big_b
        else:
            a = step(a, ((b ^ key) * _LEGACY_MIX) >> _LEGACY_SHIFT) % big_a
    return a * big_b + b


def legacy_shuffled_map(system: ShuffledSystem, idx, inverse):
    """``system.from_base(idx)`` (``inverse``) or ``system.to_base(idx)`` as the old ``ShuffledSystem._map``."""
    levels = system._levels
    radix_levels = [k for k, (_, p) in enumerate(levels) if p.size > 1 and p.radix]
    walk_levels = [k for k, (_, p) in enumerate(levels) if p.size > 1 and not p.radix]
    if not radix_levels and not walk_levels:
        return idx.clone()
    starts = torch.tensor([lo for lo, _ in levels])
    radices = [(1, 1)] * len(levels)
    keys = [[0] * len(levels[radix_levels[0]][1].keys) if radix_levels else [] for _ in levels]
    for k in radix_levels:
        radices[k], keys[k] = levels[k][1].radix, levels[k][1].keys
    radices, keys = torch.tensor(radices), torch.tensor(keys, dtype=torch.long)
    if len(levels) == 1:
        level, lo = None, 0
    else:
        level = torch.bucketize(idx, starts[1:], right=True)
        lo = starts[level]
    local = (idx - lo).clamp(min=0)
    out = local
    mixed = len(radix_levels) + len(walk_levels) < len(levels) or bool(walk_levels)
    if len(radix_levels) == 1:
        k = radix_levels[0]
        perm = levels[k][1]
        mapped = legacy_feistel_radix(local.clamp(max=perm.size - 1), *perm.radix, perm.keys, inverse)
        out = torch.where(level == k, mapped, out) if mixed else mapped
    elif radix_levels:
        radix = radices[level]
        mapped = legacy_feistel_radix(local, radix[..., 0], radix[..., 1], keys[level].unbind(-1), inverse)
        out = torch.where(radix[..., 0] > 1, mapped, out) if mixed else mapped
    for k in walk_levels:
        perm = levels[k][1]
        part = local.clamp(max=perm.size - 1)
        mapped = perm.inverse(part) if inverse else perm.forward(part)
        out = torch.where(level == k, mapped, out) if level is not None else mapped
    return torch.where(idx >= 0, lo + out, idx)
