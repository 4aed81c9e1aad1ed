"""LSC losses (paper §3.3). Each takes the batch embeddings ``z [B, D]`` and the *gathered* centers of their
labels ``centers [B, D]`` (Algorithm 1): nothing here ever sees all classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CombinedLoss", "CosineLoss", "DistanceLoss", "create_loss", "distance_penalty"]


def _check(z: torch.Tensor, centers: torch.Tensor) -> None:
    if z.dim() != 2 or z.shape != centers.shape:
        raise ValueError(
            f"embeddings and gathered centers must both be [B, D], got {tuple(z.shape)} and {tuple(centers.shape)}"
        )


def _weighted(per_sample: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return per_sample if weight is None else per_sample * weight.to(per_sample.dtype)


class CosineLoss(nn.Module):
    """Mean cosine distance to the class centers, eq. 11: ``L = 1 - (1/B) sum_b cos(z_b, C_{y_b})``.

    The paper's default and the one that trains in high dimensions (Table 5). Labels are then predicted by the
    largest cosine (eq. 12). ``weight [B]`` scales each sample's term ``1 - cos`` (mixup: see
    :mod:`lscdistill.mixup`).
    """

    def forward(self, z: torch.Tensor, centers: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        _check(z, centers)
        return _weighted(1.0 - F.cosine_similarity(z, centers.to(z.dtype), dim=1), weight).mean()


def distance_penalty(x: torch.Tensor, r_c: torch.Tensor | float) -> torch.Tensor:
    """Eq. 7: ``f_d(x, r_c) = exp(ReLU(x - r_c)) - 1``; zero inside the cluster radius, exponential outside."""
    return torch.expm1(F.relu(x - r_c))


class DistanceLoss(nn.Module):
    """Euclidean LSC loss, eqs. 6-7: ``L = sum_b f_d(||z_b - C_{y_b}||, r_c)``.

    Eq. 6 *sums* over the batch (and over classes, which the gathered centers already do); ``reduction="mean"``
    divides by B instead. Labels are predicted by the smallest distance (eq. 8). Works in low dimensions; in
    high dimensions the paper finds it fails (Table 5). The exponential grows fast: keep embeddings near the
    centers' scale (float32 overflows once a distance exceeds r_c by ~88).

    Args:
        radius: default cluster radius r_c (the paper uses 1 with centers on a circle of radius 5).
        reduction: ``"sum"`` (eq. 6) or ``"mean"``.
    """

    def __init__(self, radius: float = 1.0, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        self.radius, self.reduction = float(radius), reduction

    def forward(
        self,
        z: torch.Tensor,
        centers: torch.Tensor,
        radius: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``radius``: optional per-sample r_c ``[B]`` (e.g. the planar system's halving radii); ``weight [B]``
        scales each sample's term."""
        _check(z, centers)
        r_c = self.radius if radius is None else radius.to(z.dtype)
        per_sample = distance_penalty(torch.linalg.vector_norm(z - centers.to(z.dtype), dim=1), r_c)
        per_sample = _weighted(per_sample, weight)
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()


class CombinedLoss(nn.Module):
    """Distance plus cosine loss (paper Table 5, experiment 4): ``w_d * L_G + w_c * L_cos``."""

    def __init__(
        self, radius: float = 1.0, reduction: str = "sum", distance_weight: float = 1.0, cosine_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.distance, self.cosine = DistanceLoss(radius, reduction), CosineLoss()
        self.distance_weight, self.cosine_weight = float(distance_weight), float(cosine_weight)

    def forward(
        self,
        z: torch.Tensor,
        centers: torch.Tensor,
        radius: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        distance = self.distance(z, centers, radius, weight)
        return self.distance_weight * distance + self.cosine_weight * self.cosine(z, centers, weight)


def create_loss(name: str, *, radius: float = 1.0, reduction: str = "sum") -> nn.Module:
    """Loss by CLI name: ``cos`` (eq. 11), ``dist`` (eqs. 6-7) or ``cos+dist`` (Table 5, row 4)."""
    if name == "cos":
        return CosineLoss()
    if name == "dist":
        return DistanceLoss(radius, reduction)
    if name in ("cos+dist", "dist+cos"):
        return CombinedLoss(radius, reduction)
    raise ValueError(f"unknown loss {name!r}; choose cos, dist or cos+dist")
