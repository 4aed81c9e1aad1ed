"""PCA of the class means before snapping (``--reduce pca``), with scikit-learn.

What a snapped store records about it (``reduce`` attribute, ``pca_mean`` and ``pca_components`` datasets) comes
from :class:`Pca`; ``reduce(x) = (x - mean) @ components.T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["IN_MEMORY_VALUES", "Pca", "fit_pca"]

#: fitted means (rows x D_in) up to this many values are fitted at once, in float64 (1 GiB); more go block-wise
IN_MEMORY_VALUES = 1 << 27


@dataclass
class Pca:
    """PCA of the class means: ``reduce(x) = (x - mean) @ components.T`` (float64)."""

    mean: np.ndarray  # [D_in]
    components: np.ndarray  # [dim, D_in], orthonormal rows by decreasing variance
    explained_variance: np.ndarray  # [dim], population variance (divided by n_fitted) along each component
    total_variance: float  # population variance of the fitted means, summed over the D_in coordinates
    n_fitted: int  # class means it was fitted on

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D_in] -> [B, dim]`` float64."""
        return (x.double() - torch.from_numpy(self.mean)) @ torch.from_numpy(self.components).T

    def describe(self) -> dict[str, Any]:
        return {
            "method": "pca",
            "n_dim": int(self.components.shape[0]),
            "input_dim": int(self.components.shape[1]),
            "fitted_on_classes": self.n_fitted,
            "explained_variance_ratio": float(self.explained_variance.sum() / self.total_variance)
            if self.total_variance > 0
            else 1.0,
        }


def fit_pca(
    means: torch.Tensor,
    dim: int,
    rows: np.ndarray | None = None,
    block: int = 65_536,
    max_values: int = IN_MEMORY_VALUES,
) -> Pca:
    """Fit a ``dim``-component PCA on the rows of ``means [n, D_in]`` (all, or ``rows``), in float64.

    Up to ``max_values`` values (``n * D_in``) are fitted at once with :class:`sklearn.decomposition.PCA` (the
    eigenvectors of the covariance, memory O(n * D_in)). More are read ``block`` rows at a time, twice: the mean,
    then the centered covariance, whose eigenvectors are the same solve as sklearn's ``covariance_eigh`` (sklearn
    has no streaming form of it; its ``IncrementalPCA`` is exact with all components kept but costs an SVD per
    block, ~50x slower here): memory O(block * D_in + D_in^2) whatever the number of classes. Each component's
    sign makes its largest-magnitude entry positive, so the result is deterministic. With fewer fitted classes than
    ``dim``, the components past the data's are an orthonormal completion with zero variance.
    """
    import scipy.linalg  # imported here: `import lscdistill` stays light

    d_in = means.shape[1]
    if not 1 <= dim <= d_in:
        raise ValueError(f"--n-dim {dim} for PCA must be between 1 and the means' n_dim {d_in}")
    rows = np.arange(len(means)) if rows is None else np.asarray(rows)
    if rows.size == 0:
        raise ValueError("PCA needs at least one class mean")
    n = len(rows)
    if n * d_in <= max_values or n <= d_in:
        mean, components, variance, total = _fit_in_memory(means[torch.from_numpy(rows)].double().numpy(), dim)
    else:
        mean, components, variance, total = _fit_blockwise(means, rows, dim, block)
    if len(components) < dim:  # fewer classes than dims: complete the basis (directions the means do not span)
        rest = scipy.linalg.null_space(components).T[: dim - len(components)]
        components, variance = np.concatenate([components, rest]), np.concatenate([variance, np.zeros(len(rest))])
    sign = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    components = components * np.where(sign == 0, 1.0, sign)[:, None]
    return Pca(mean, np.ascontiguousarray(components), variance, total, n)


def _fit_in_memory(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.decomposition import PCA

    n, d_in = x.shape
    solver = "covariance_eigh" if n > d_in else "full"  # covariance_eigh: D_in x D_in, fast for n >> D_in
    with np.errstate(divide="ignore", invalid="ignore"):  # one class: sklearn's unused variances divide by 0
        est = PCA(n_components=min(dim, n), svd_solver=solver).fit(x)
    return est.mean_.copy(), est.components_, est.singular_values_**2 / n, float(x.var(axis=0).sum())


def _fit_blockwise(
    means: torch.Tensor, rows: np.ndarray, dim: int, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    def blocks():
        for s in range(0, len(rows), block):
            yield means[torch.from_numpy(rows[s : s + block])].double().numpy()

    n = len(rows)
    mean = sum(b.sum(axis=0) for b in blocks()) / n
    cov = sum((b - mean).T @ (b - mean) for b in blocks()) / n  # population covariance, D_in x D_in
    variance, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(variance)[::-1][:dim]
    return mean, vectors[:, order].T, np.clip(variance[order], 0.0, None), float(np.trace(cov))
