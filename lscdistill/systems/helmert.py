"""The orthonormal projection of the hyperplane ``sum(x) = 0`` (the Helmert basis) and its transpose, O(N) per row:
``orthonormal`` pattern systems project their ``n_dim + 1`` family coordinates with :func:`helmert` (every angle
kept) and lift queries back with :func:`helmert_t`."""

from __future__ import annotations

import torch

__all__ = ["helmert", "helmert_t"]


def _helmert_scale(n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.arange(1, n + 1, device=like.device, dtype=like.dtype)
    return k, torch.sqrt(k * (k + 1))


def helmert(v: torch.Tensor) -> torch.Tensor:
    """Coordinates of ``v [B, N]`` in the Helmert basis of ``sum(x) = 0``: ``[B, N - 1]``, O(N) per row.

    Basis vector k (1..N-1) is ``(1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1))`` with k ones; the rows are
    orthonormal and orthogonal to ``(1, ..., 1)``.
    """
    k, s = _helmert_scale(v.shape[1] - 1, v)
    prefix = torch.cumsum(v, dim=1)[:, :-1]
    return (prefix - k * v[:, 1:]) / s


def helmert_t(y: torch.Tensor) -> torch.Tensor:
    """Transpose of :func:`helmert`: ``[B, N - 1] -> [B, N]`` (lifts a query back to N coordinates)."""
    k, s = _helmert_scale(y.shape[1], y)
    w = y / s
    suffix = torch.flip(torch.cumsum(torch.flip(w, [1]), dim=1), [1])
    zero = y.new_zeros((y.shape[0], 1))
    return torch.cat([suffix, zero], dim=1) - torch.cat([zero, k * w], dim=1)
