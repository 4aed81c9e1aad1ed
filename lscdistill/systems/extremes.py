"""The largest and smallest coordinates of each row, in rank order, as a branch-free tensor program.

The fast decoders only look at a few extreme coordinates of each row (rearrangement inequality). This module finds
them with fixed output shapes, no host synchronization and no data-dependent Python branch, so the decoder can be
exported (``torch.export``), compiled (``torch.compile(fullgraph=True)``) or captured in a CUDA graph.

Order and ties: ``top`` is by value descending, ``bottom`` by value ascending, equal values (``-0.0 == 0.0``) in
order of increasing coordinate index, exactly as repeated ``argmax``/``argmin`` (first occurrence) would give.

For float32 rows each coordinate becomes one int64 key, ``(order-preserving int32 of the value) * 2**32 + index
part``, so one ``amax`` over the keys gives the value *and* its coordinate, ties resolved: a handful of passes over
the batch instead of an ``argmax`` (not vectorized on CPU) per extreme. Other dtypes (float64) use ``argmax`` and
``argmin``. Memory: two int64 copies of the batch, ``[B, D]`` each; nothing grows with the number of classes.
"""

from __future__ import annotations

import torch

__all__ = ["first_outside", "row_extremes"]

_LOW = 0xFFFFFFFF
_MIN = torch.iinfo(torch.int64).min


def _ordered_keys(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique int64 keys of float32 ``x [B, N]``: ``amax`` of the first picks the largest value (lowest index on
    ties), ``amax`` of the second the smallest; the low 32 bits hold ``N - 1 - index`` in both."""
    bits = x.view(torch.int32)
    sign = bits >> 31  # -1 for negative values (and -0.0), else 0
    # sign-magnitude -> two's complement: -0.0 and 0.0 both map to 0, order is the float order
    ordered = ((bits ^ (sign & 0x7FFFFFFF)) - sign).long() * (_LOW + 1)
    rev = torch.arange(x.shape[1] - 1, -1, -1, device=x.device)
    return ordered + rev, rev - ordered


def _take(keys: torch.Tensor, count: int, width: int) -> torch.Tensor:
    """``count`` times: the coordinate of the largest key, which is then knocked out (``keys`` is modified)."""
    cols = []
    for c in range(count):
        best = keys.amax(dim=1, keepdim=True)
        cols.append((width - 1) - (best & _LOW))
        if c + 1 < count:
            keys.scatter_(1, cols[-1], _MIN)
    return torch.cat(cols, dim=1)


def _take_arg(work: torch.Tensor, count: int, largest: bool) -> torch.Tensor:
    """The same with ``argmax``/``argmin`` on a working copy (dtypes the keys do not cover)."""
    fill = -float("inf") if largest else float("inf")
    cols = []
    for c in range(count):
        i = work.argmax(dim=1, keepdim=True) if largest else work.argmin(dim=1, keepdim=True)
        cols.append(i)
        if c + 1 < count:
            work.scatter_(1, i, fill)
    return torch.cat(cols, dim=1)


def row_extremes(x: torch.Tensor, n_top: int, n_bottom: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of the ``n_top`` largest and ``n_bottom`` smallest values of each row of finite ``x [B, N]``.

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
        high, low = _ordered_keys(x)
        top = _take(high, n_top, width) if n_top else empty
        bottom = _take(low, n_bottom, width) if n_bottom else empty
        return top, bottom
    top = _take_arg(x.clone(), n_top, True) if n_top else empty
    bottom = _take_arg(x.clone(), n_bottom, False) if n_bottom else empty
    return top, bottom


def first_outside(order: torch.Tensor, taken: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` entries of each row of ``order [B, L]`` that are not in that row of ``taken [B, P]``.

    With ``order`` the ``bottom`` list of :func:`row_extremes` and ``taken`` the first ``P`` of ``top``, this is
    the ``count`` smallest coordinates outside the ``P`` largest; ``L >= P + count`` guarantees enough remain.
    """
    if taken.shape[1] == 0:
        return order[:, :count]
    length = order.shape[1]
    hit = (order.unsqueeze(2) == taken.unsqueeze(1)).any(dim=2)  # [B, L]
    rank = hit.long() * length + torch.arange(length, device=order.device)  # kept entries first, in order
    keep = torch.topk(rank, count, dim=1, largest=False, sorted=True).indices  # keys unique: deterministic
    return order.gather(1, keep)
