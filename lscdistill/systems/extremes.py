"""The largest and smallest coordinates of each row, in rank order, as a branch-free tensor program.

The fast decoders only look at a few extreme coordinates of each row (rearrangement inequality). This module finds
them with fixed output shapes, no host synchronization and no data-dependent Python branch, so the decoder can be
exported (``torch.export``), compiled (``torch.compile(fullgraph=True)``) or captured in a CUDA graph.

Order and ties: ``top`` is by value descending, ``bottom`` by value ascending, equal values (``-0.0 == 0.0``) in
order of increasing coordinate index, exactly as repeated ``argmax``/``argmin`` (first occurrence) would give.

Each extreme is one ``argmax``/``argmin`` (first occurrence) over a working copy in which the coordinates already
taken are knocked out (``-inf``/``+inf``): one read of the batch per extreme, the fewest passes over memory of the
branch-free variants tried (an ``amax`` + ``sign`` first-index trick or packed int64 keys need 4-8 passes, slower on
a loaded CPU). Memory: two ``[B, N]`` working copies when more than one extreme is taken on a side; nothing grows
with the number of classes.
"""

from __future__ import annotations

import torch

__all__ = ["first_outside", "row_extremes"]


def _take(x: torch.Tensor, count: int, largest: bool) -> torch.Tensor:
    """``count`` times: the first coordinate of the largest (smallest) value, then knocked out of a working copy."""
    work = x.clone() if count > 1 else x
    cols = []
    for c in range(count):
        cols.append(work.argmax(dim=1, keepdim=True) if largest else work.argmin(dim=1, keepdim=True))
        if c + 1 < count:
            work.scatter_(1, cols[-1], -float("inf") if largest else float("inf"))
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
    top = _take(x, n_top, True) if n_top else empty
    bottom = _take(x, n_bottom, False) if n_bottom else empty
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
