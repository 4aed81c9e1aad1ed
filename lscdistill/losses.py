"""LSC losses (paper §3.3). Each takes the batch embeddings ``z [B, D]`` and the *gathered* centers of their
labels ``centers [B, D]`` (Algorithm 1): nothing here ever sees all classes.

The distance losses need a cluster radius r_c (eq. 7). The paper gives one only for its 2-D system (r_c = 1 with
centers on a circle of radius 5, §5.1); for any other centers :func:`spacing_radius` sets it relative to how far
apart the centers are: ``r_c = fraction * d_min / 2`` (default fraction :data:`RADIUS_FRACTION`), so the loss is
zero only inside a ball around each center that no other class's ball touches, and positive at ``z = 0`` and
halfway to a neighbouring center.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSSES",
    "RADIUS_FRACTION",
    "CombinedLoss",
    "CosineLoss",
    "DistanceLoss",
    "check_loss",
    "create_loss",
    "distance_penalty",
    "min_center_distance",
    "spacing_radius",
]

LOSSES = ("cos", "dist", "cos+dist")
#: Default r_c as a fraction of half the minimum distance between two centers. The paper's 2-D system has
#: r_c = 1 against a half-spacing of 5 sin 45° = 3.54 at its first level (0.28), tending to 0.25 as it doubles.
RADIUS_FRACTION = 0.25
MAX_BRUTE_FORCE_CLASSES = 20_000  # table/store centers: all pairs are compared up to this many classes


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
    divides by B instead (with AdamW the two train alike: Adam's step does not depend on the gradient's scale).
    Labels are predicted by the smallest distance (eq. 8), the largest cosine for centers of equal length. Works
    in low dimensions; in high dimensions the paper finds it fails (Table 5). The exponential grows fast: keep
    embeddings near the centers' scale (float32 overflows once a distance exceeds r_c by ~88).

    Args:
        radius: cluster radius r_c, in the centers' units. It must be smaller than half the distance between
            two centers, or a whole region between classes costs nothing: :func:`spacing_radius` picks one.
        reduction: ``"sum"`` (eq. 6) or ``"mean"``.
    """

    def __init__(self, radius: float, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not (math.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius must be a finite number >= 0, got {radius}")
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
    """Distance plus cosine loss (paper Table 5, experiment 4): ``w_d * mean_b f_d + w_c * mean_b (1 - cos)``.

    Both terms are batch means, so their balance does not change with the batch size (eq. 6's sum would make the
    distance term B times heavier than eq. 11's mean; the paper does not say how it combined them).
    """

    def __init__(self, radius: float, distance_weight: float = 1.0, cosine_weight: float = 1.0) -> None:
        super().__init__()
        self.distance, self.cosine = DistanceLoss(radius, "mean"), CosineLoss()
        self.distance_weight, self.cosine_weight = float(distance_weight), float(cosine_weight)

    @property
    def radius(self) -> float:
        return self.distance.radius

    def forward(
        self,
        z: torch.Tensor,
        centers: torch.Tensor,
        radius: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        distance = self.distance(z, centers, radius, weight)
        return self.distance_weight * distance + self.cosine_weight * self.cosine(z, centers, weight)


def min_center_distance(centers) -> float:
    """Smallest Euclidean distance between the centers of two different classes of a
    :class:`~lscdistill.centers.Centers`.

    Generated centers (a system, or a snapped store): ``2 R sin(theta_min / 2)`` from the system's minimum angle
    and center length R, in closed form (the whole system's minimum: a lower bound for its first n_classes
    vectors). A table or store of class means: every pair is compared, in chunks (time O(n_classes^2 D), memory
    ``chunk x n_classes``), up to :data:`MAX_BRUTE_FORCE_CLASSES` classes; above that, give the radius yourself.
    """
    system = getattr(centers, "system", None)  # SystemCenters, SnappedCenters (rows: system vectors x R)
    if system is not None:
        try:
            angle = system.min_angle
        except NotImplementedError:
            raise ValueError(f"{system!r} has no closed-form minimum angle: give the cluster radius") from None
        return 2.0 * float(system.radius) * math.sin(math.radians(angle) / 2)
    n = int(centers.n_classes)
    if n < 2:
        raise ValueError("one class has no neighbouring center to measure the spacing from: give the radius")
    if n > MAX_BRUTE_FORCE_CLASSES:
        raise ValueError(
            f"{n:,} class means are too many to compare every pair (at most {MAX_BRUTE_FORCE_CLASSES:,}): "
            "give the cluster radius yourself (--radius)"
        )
    table = centers.gather(torch.arange(n), dtype=torch.float64)
    best = math.inf
    for start in range(0, n, 2048):
        d = torch.cdist(table[start : start + 2048], table)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = math.inf
        best = min(best, float(d.min()))
    return best


def spacing_radius(centers, fraction: float = RADIUS_FRACTION) -> float:
    """Cluster radius r_c = ``fraction * d_min / 2`` with ``d_min`` from :func:`min_center_distance`.

    ``0 < fraction < 1`` keeps every cluster ball apart from the others, so the distance loss is zero only near
    the class's own center. Unit A_n roots after drop-last (45°): d_min = 0.765, r_c = 0.096 at the default.
    """
    if not (0.0 < fraction < 1.0):
        raise ValueError(f"the radius fraction must be in (0, 1) so that clusters do not touch, got {fraction}")
    return fraction * min_center_distance(centers) / 2.0


def check_loss(name: str) -> str:
    """``name`` if it is a loss :func:`create_loss` builds, else a clear error."""
    if name not in (*LOSSES, "dist+cos"):
        raise ValueError(f"unknown loss {name!r}; choose {', '.join(LOSSES)}")
    return name


def create_loss(
    name: str,
    *,
    radius: float | None = None,
    centers=None,
    radius_fraction: float = RADIUS_FRACTION,
    reduction: str = "sum",
) -> nn.Module:
    """Loss by CLI name: ``cos`` (eq. 11), ``dist`` (eqs. 6-7) or ``cos+dist`` (Table 5, row 4).

    The distance losses take ``radius`` (r_c, absolute) or else :func:`spacing_radius` of ``centers`` with
    ``radius_fraction``. ``reduction`` is the ``dist`` loss's (eq. 6 sums); ``cos+dist`` always takes batch means.
    """
    if check_loss(name) == "cos":
        return CosineLoss()
    if radius is None:
        if centers is None:
            raise ValueError(f"the {name} loss needs a cluster radius, or the centers to derive one from")
        radius = spacing_radius(centers, radius_fraction)
    if name == "dist":
        return DistanceLoss(radius, reduction)
    return CombinedLoss(radius)
