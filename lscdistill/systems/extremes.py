"""The largest and smallest coordinates of each row, in rank order, as a branch-free tensor program.

The fast decoders only look at a few extreme coordinates of each row (rearrangement inequality). This module finds
them with fixed output shapes, no host synchronization and no data-dependent Python branch, so the decoder can be
exported (``torch.export``), compiled (``torch.compile(fullgraph=True)``) or captured in a CUDA graph.

Order and ties: ``top`` is by value descending, ``bottom`` by value ascending, equal values (``-0.0 == 0.0``) in
order of increasing coordinate index, exactly as repeated ``argmax``/``argmin`` (first occurrence) would give.

Float32 rows (what the decoder sees for float32/float16/bfloat16 input) are cut into blocks of ~32 coordinates
(:func:`block_width`); one ``amax`` (``amin``) per side over the blocks picks the few blocks that must hold the
answer, and only those are read again, as unique int64 keys (value bits in the high word, reversed position in the
low word) whose ``amax`` is the next extreme. On CPU this replaced 5 ``argmax``/``argmin`` over the whole batch
(each ~17 reads of it: the index-tracking reduction is not vectorized) and their full-size working copies (fresh
``[B, N]`` temporaries cost page faults on every call) by 2 vectorized reductions and small ``[B, k * 32]`` tensors.
The few best blocks and the next extreme are each taken by ``amax`` rounds over unique keys (knocked out with a
one-element ``scatter_``), not ``topk``, whose per-row partial sort cost ~100 us on ``[1024, 12]`` on one CPU thread
(~10% of the A_384r + interpolation decoder, single-thread CPU time, A/B in one process).
Float64 rows (no room for a position next to 64 value bits) keep the repeated ``argmax`` on a working copy.
Memory: ``[B, N / 32]`` block extremes and ``[B, count * 32]`` candidate keys per side (two ``[B, N]`` working copies
for float64); nothing grows with the number of classes.
"""

from __future__ import annotations

import torch

__all__ = ["block_ends", "block_width", "first_outside", "row_extremes"]


_LOW = 0xFFFFFFFF  # low word of a key: the reversed position
_KNOCKED = torch.iinfo(torch.int64).min
BLOCK = (32, 16, 128)  # preferred block width, and the range a divisor of the row width is taken from


def _keys(v: torch.Tensor) -> torch.Tensor:
    """int64 keys of float32 ``v [..., L]``, unique along the last dimension: the largest key is the largest value
    at the lowest position. High word: the value's bits made monotone (``-0.0`` and ``0.0`` equal); low word:
    ``L - 1 - position``. Widened, shifted and or-ed in place (stacking the two int32 words and reading them as
    one int64 took longer: that interleaving copy is not vectorized)."""
    bits = v.view(torch.int32)
    sign = bits >> 31  # -1 for negative values, else 0
    mono = bits & 0x7FFFFFFF
    mono ^= sign
    mono -= sign  # sign-magnitude -> two's complement: monotone in the value, both zeros 0
    low = torch.arange(v.shape[-1] - 1, -1, -1, device=v.device)
    return mono.long().bitwise_left_shift_(32).bitwise_or_(low)


def _take_keys(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of the ``count`` largest keys along the last dimension, largest first (``keys`` is knocked out in
    place): ``count`` vectorized ``amax`` and a one-element ``scatter_`` per row between them."""
    last = keys.shape[-1] - 1
    best = []
    for c in range(count):
        best.append(keys.amax(dim=-1, keepdim=True))
        if c + 1 < count:
            keys.scatter_(-1, last - (best[-1] & _LOW), _KNOCKED)
    return last - (torch.cat(best, dim=-1) & _LOW)


def block_width(width: int) -> int:
    """Width of the blocks :func:`row_extremes` cuts a row of ``width`` coordinates into: the divisor of
    ``width`` in ``[16, 128]`` nearest 32, or ``width`` itself (one block) when there is none."""
    want, lo, hi = BLOCK
    divisors = [d for d in range(lo, hi + 1) if width % d == 0]
    return min(divisors, key=lambda d: (abs(d - want), d)) if divisors else width


def block_ends(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, nb], [B, nb])``: the largest value of each block of the rows of ``x [B, N]`` and minus the smallest
    (both "larger is better"), blocks of :func:`block_width`; NaN propagates. Two vectorized reductions.

    A positive divisor per row commutes with them exactly (rounding is monotone): ``block_ends(x) / d`` equals
    ``block_ends(x / d)``, so the decoder takes them from the unscaled rows and its rows' scale from them.
    """
    b, n = x.shape
    blocked = x.view(b, n // block_width(n), block_width(n))
    return blocked.amax(dim=2), blocked.amin(dim=2).neg_()


def _take(x: torch.Tensor, count: int, largest: bool, ends: torch.Tensor | None = None) -> torch.Tensor:
    """The ``count`` largest (smallest) values of float32 rows, first occurrence first, from a few reductions.

    The row is cut into blocks; the first ``k`` coordinates in (value, position) order lie in the ``k`` blocks
    that come first in (block extreme, block position) order, since each block ranked above holds a coordinate
    ranked above. Only those blocks are read again, in coordinate order, as unique int64 keys (see :func:`_keys`;
    the smallest are the largest of ``-x``: negation is exact and keeps ties) whose ``amax`` is the next
    coordinate: no ``argmax``/``topk`` (slow on CPU) and no full-size temporary.
    """
    b, n = x.shape
    width = block_width(n)
    nb = n // width
    blocked = x.view(b, nb, width)
    k = min(count, nb)
    if nb > 1:
        if ends is None:
            ends = blocked.amax(dim=2) if largest else blocked.amin(dim=2).neg_()  # [B, nb], larger is better
        blocks = _take_keys(_keys(ends), k)  # keys are unique: deterministic
        blocks = blocks.sort(dim=1).values if k > 1 else blocks  # candidates in coordinate order
        rows = blocks + torch.arange(0, b * nb, nb, device=x.device).unsqueeze(1)
        cand = blocked.reshape(b * nb, width).index_select(0, rows.view(-1)).view(b, k * width)
        cand = cand if largest else cand.neg_()
    else:
        cand = x if largest else -x
    local = _take_keys(_keys(cand), count)
    if nb == 1:
        return local
    if width & (width - 1) == 0:  # shifts and masks: int64 // and % are not vectorized on CPU
        shift = width.bit_length() - 1
        return (blocks.gather(1, local >> shift) << shift) | (local & (width - 1))
    return blocks.gather(1, local // width) * width + local % width


def row_extremes(
    x: torch.Tensor, n_top: int, n_bottom: int, ends: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of the ``n_top`` largest and ``n_bottom`` smallest values of each row of finite ``x [B, N]``.

    ``ends`` (float32 only): ``block_ends(x)`` when the caller has it (computed otherwise).

    Returns:
        ``(top [B, n_top], bottom [B, n_bottom])`` int64, ``top`` by value descending, ``bottom`` ascending, ties
        to the lower coordinate index. The two lists are independent (a coordinate may be in both when
        ``n_top + n_bottom > N`` or the row has ties); see :func:`first_outside`.
    """
    width = x.shape[1]
    if not (0 <= n_top <= width and 0 <= n_bottom <= width):
        raise ValueError(f"cannot take {n_top} largest and {n_bottom} smallest of {width} coordinates")
    empty = x.new_zeros((x.shape[0], 0), dtype=torch.long)
    if x.dtype == torch.float32:
        top_ends, bottom_ends = (None, None) if ends is None else ends
        top = _take(x, n_top, True, top_ends) if n_top else empty
        bottom = _take(x, n_bottom, False, bottom_ends) if n_bottom else empty
    else:
        top = _take_argmax(x, n_top, True) if n_top else empty
        bottom = _take_argmax(x, n_bottom, False) if n_bottom else empty
    return top, bottom


def _take_argmax(x: torch.Tensor, count: int, largest: bool) -> torch.Tensor:
    """:func:`_take` for other dtypes (float64 has no room for a position next to its bits): ``count`` times
    ``argmax`` (``argmin``), first occurrence, knocked out of a working copy."""
    work = x.clone() if count > 1 else x
    cols = []
    for c in range(count):
        cols.append(work.argmax(dim=1, keepdim=True) if largest else work.argmin(dim=1, keepdim=True))
        if c + 1 < count:
            work.scatter_(1, cols[-1], -float("inf") if largest else float("inf"))
    return torch.cat(cols, dim=1)


def first_outside(order: torch.Tensor, taken: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` entries of each row of ``order [B, L]`` that are not in that row of ``taken [B, P]``.

    With ``order`` the ``bottom`` list of :func:`row_extremes` and ``taken`` the first ``P`` of ``top``, this is
    the ``count`` smallest coordinates outside the ``P`` largest; ``L >= P + count`` guarantees enough remain.
    """
    if taken.shape[1] == 0:
        return order[:, :count]
    b, length = order.shape
    hit = order == taken[:, :1]  # a few [B, L] comparisons (one broadcast [B, L, P] comparison was slower)
    for p in range(1, taken.shape[1]):
        hit |= order == taken[:, p : p + 1]
    slot = torch.where(hit, length, (~hit).cumsum(dim=1) - 1)  # kept entries' ranks; the others to a spare slot
    return order.new_empty((b, length + 1)).scatter_(1, slot, order)[:, :count]  # no sort (slow on CPU)
