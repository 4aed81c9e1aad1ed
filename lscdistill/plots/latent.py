"""The latent space of a run like the paper's Figures 3, 6 and 7: class clusters on their predefined centers, and
continual learning (a run continued with more classes).

Coordinates: a run trained with the cosine loss (or cross-entropy) only constrains directions, so its
embeddings and centers are drawn normalized, on the unit circle/sphere; a run trained with a distance loss
(``dist``, ``cos+dist``) is drawn as it is, centers at their radius (``planar``: 5) with their cluster radius r_c.
Memory grows with the points drawn (at most :data:`MAX_POINTS`) and the centers (at most :data:`MAX_CLASSES`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..centers import SystemCenters
from ..data import LabeledData
from ..models import spec_n_dim
from ._common import check_png, loss_name, pyplot, save_png

__all__ = ["MAX_CLASSES", "MAX_POINTS", "LatentPlot", "plot_continual", "plot_latent"]

MAX_POINTS = 3000  # points drawn per panel (a seeded subset above this)
MAX_CLASSES = 256  # a latent plot of more class centers is unreadable
_SUBSET_SEED = 0


@dataclass
class LatentPlot:
    """What :func:`plot_latent` drew, in the plotted coordinates (path-like: ``Path(result)`` is the PNG).

    Attributes:
        path: the PNG.
        points: ``[N, k]`` embeddings as drawn (k = 2 or 3; normalized for cosine runs, PCA for dim > 3).
        labels: ``[N]`` class of each point.
        centers: ``[C, k]`` class centers as drawn (row c is class c; for a CE run the class means).
        space: ``"unit"`` (normalized), ``"raw"`` or ``"pca"``.
        top1: fraction of samples whose most similar center (cosine, in the model's space) is their class's.
    """

    path: Path
    points: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    space: str
    top1: float = 0.0

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass
class _Embedded:
    """A run's embeddings of a data set: ``z [N, D]``, ``labels [N]``, ``centers [C, D]`` (raw model space)."""

    z: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    names: list[str]
    space: str  # "unit" or "raw"
    cluster_radius: np.ndarray | None
    meta: dict[str, Any]


def _embed(run_dir: str | os.PathLike, data: str | LabeledData, batch_size: int = 256) -> _Embedded:
    from ..evaluate import _data_for_run, load_run

    model, centers, meta = load_run(run_dir)
    try:
        n_classes = int(meta["n_classes"])
        if n_classes > MAX_CLASSES:
            raise ValueError(
                f"{run_dir} has {n_classes:,} classes: latent plots draw at most {MAX_CLASSES} class centers"
            )
        if isinstance(data, str):
            data = _data_for_run(model, meta, data, None, None, need_labels=True)
        order = np.arange(len(data))
        if len(order) > MAX_POINTS:
            order = np.sort(np.random.default_rng(_SUBSET_SEED).choice(len(order), MAX_POINTS, replace=False))
        zs, ys = [], []
        with torch.inference_mode():
            for x, y, _ in data.batches(order, batch_size):
                zs.append(model.embed(x).float().numpy())
                ys.append(y.numpy())
        z, labels = np.concatenate(zs), np.concatenate(ys)
        radius = None
        if centers is not None:
            c = centers.gather(torch.arange(n_classes)).double().numpy()
            if isinstance(centers, SystemCenters):  # planar: r_c of eq. 7 per class (None for other systems)
                radius = centers.cluster_radius(torch.arange(n_classes))
                radius = None if radius is None else radius.numpy()
        else:  # cross-entropy run: the class means of its embeddings (the paper's CEembs, Figure 3)
            unit = _unit(z)
            c = np.stack(
                [unit[labels == k].mean(0) if (labels == k).any() else np.zeros(z.shape[1]) for k in range(n_classes)]
            )
        space = "raw" if "dist" in loss_name(run_dir) else "unit"
        names = meta.get("class_names") or [str(k) for k in range(max(n_classes, int(labels.max()) + 1))]
        return _Embedded(z.astype(np.float64), labels, c, list(names), space, radius, meta)
    finally:
        if centers is not None:
            centers.close()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _coords(e: _Embedded, basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str, np.ndarray | None]:
    """Plotted ``(points, centers, space, basis)``; above 3 dims a PCA basis of the (unit) centers and points."""
    z, c = (_unit(e.z), _unit(e.centers)) if e.space == "unit" else (e.z, e.centers)
    if z.shape[1] <= 3:
        return z, c, e.space, None
    if basis is None:
        stacked = np.concatenate([c, z])
        _, _, vt = np.linalg.svd(stacked - stacked.mean(0), full_matrices=False)
        basis = vt[:2].T
    return z @ basis, c @ basis, "pca", basis


def _top1(z: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> float:
    """Fraction of the embeddings ``z [N, D]`` (model space) whose most similar center (cosine, the exact decoder's
    rule) is their class's; samples of classes without a center are left out."""
    known = labels < len(centers)
    if not known.any():
        return 0.0
    cos = _unit(z[known]) @ _unit(centers).T
    return float((cos.argmax(1) == labels[known]).mean())


def _colors(n: int):
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(k % cmap.N) for k in range(n)]


def _draw(
    ax,
    points: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray,
    names: list[str],
    space: str,
    *,
    trained: int,
    n_colors: int,
    cluster_radius: np.ndarray | None = None,
    lim: float | None = None,
    azim: float = 40.0,
) -> None:
    """Points coloured by class; centers of the first ``trained`` classes filled stars, the others hollow."""
    colors = _colors(n_colors)
    three_d = points.shape[1] == 3
    t = np.linspace(0, 2 * np.pi, 361)
    if three_d:
        u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 37), np.linspace(0, np.pi, 19))
        ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.4)
    elif space != "pca":  # the circle the centers lie on
        ring = 1.0 if space == "unit" else float(np.median(np.linalg.norm(centers, axis=1)))
        ax.plot(ring * np.cos(t), ring * np.sin(t), color="0.75", lw=1, ls="--", zorder=0)
    style = {"depthshade": False} if three_d else {}
    for k in np.unique(labels):
        color = colors[k % n_colors]
        ax.scatter(*points[labels == k].T, s=16 if three_d else 10, color=color, alpha=0.7, lw=0, **style)
    for k, c in enumerate(centers):
        # in 3-D a filled star would hide its own (tight) cluster: outlines there, grey for untrained classes
        face = "none" if three_d else colors[k % n_colors] if k < trained else "white"
        edge = "black" if k < trained or not three_d else "0.55"
        ax.scatter(*c, s=280, marker="*", facecolor=face, edgecolor=edge, lw=1.2, zorder=5, **style)
        if cluster_radius is not None and not three_d and space == "raw":  # r_c of eq. 7
            r = float(cluster_radius[k])
            ax.plot(c[0] + r * np.cos(t), c[1] + r * np.sin(t), color=colors[k % n_colors], lw=0.8, ls=":")
        name = names[k] if k < len(names) else str(k)
        if space == "pca":  # no circle to place the name outside of: beside the star
            ax.annotate(name, c, xytext=(9, 9), textcoords="offset points", fontsize=11, weight="bold", zorder=6)
        else:
            ax.text(*c * 1.2, name, fontsize=11, weight="bold", ha="center", va="center")
    if three_d:  # the unit sphere and its axes, without the box (panes and ticks hide the clusters)
        for i, name in enumerate(("z1", "z2", "z3")):
            end = np.eye(3)[i] * 1.25
            ax.plot(*np.stack([-end, end]).T, color="0.6", lw=0.8)
            ax.text(*end * 1.05, name, color="0.4", fontsize=9)
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-1.0, 1.0)
        ax.set_box_aspect((1, 1, 1), zoom=1.25)
        ax.view_init(elev=20, azim=azim)
        ax.set_axis_off()
        return
    lim = lim or _limit(points, centers)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set(xlabel="z1" if space != "pca" else "PC 1", ylabel="z2" if space != "pca" else "PC 2")
    ax.grid(alpha=0.2)


def _limit(points: np.ndarray, centers: np.ndarray) -> float:
    """Half-width of a 2-D panel: the centers with their labels, and all but the farthest 1% of the points."""
    return max(float(np.linalg.norm(centers, axis=1).max()) * 1.3, float(np.quantile(np.abs(points), 0.99)) * 1.05)


def _title(e: _Embedded, space: str, top1: float) -> str:
    m = e.meta
    c = m.get("centers", {})
    what = {"system": f"{c.get('name')} centers", "head": "class means"}.get(c.get("type"), "store centers")
    where = {"unit": "normalized (cosine)", "raw": "raw embeddings", "pca": "PCA of normalized embeddings"}[space]
    return f"n_dim {spec_n_dim(m['model'])}, {m['n_classes']} classes, {what}; {where}; nearest-center top-1 {top1:.0%}"


def plot_latent(
    run_dir: str | os.PathLike, data: str | LabeledData, out_png: str | os.PathLike, *, title: str | None = None
) -> LatentPlot:
    """The latent space of a run: its embeddings of ``data`` coloured by class, its class centers as stars.

    Args:
        run_dir: a finished ``lscdistill train`` run directory.
        data: a data spec for an image run (``digits:val``, an ImageFolder directory) or a :class:`LabeledData`
            (e.g. ``load_features(X, y)`` for a ``--features`` run). At most ``MAX_POINTS`` samples are drawn.
        out_png: the PNG to write (its directory must exist).
        title: replaces the automatic title (dim, classes, centers, coordinates, nearest-center top-1).

    Returns:
        The drawn coordinates (see :class:`LatentPlot`).
    """
    out_png = check_png(out_png)
    e = _embed(run_dir, data)
    points, centers, space, _ = _coords(e)
    top1 = _top1(e.z, e.labels, e.centers)
    plt = pyplot()
    n_colors = max(len(centers), int(e.labels.max()) + 1)
    views = (40.0, 220.0) if points.shape[1] == 3 else (None,)  # a sphere has a far side: show it from both
    fig = plt.figure(figsize=(6.4 * len(views), 6.4))
    for i, azim in enumerate(views):
        ax = fig.add_subplot(1, len(views), i + 1, projection="3d" if azim is not None else None)
        draw = {"azim": azim} if azim is not None else {"cluster_radius": e.cluster_radius}
        _draw(ax, points, e.labels, centers, e.names, space, trained=len(centers), n_colors=n_colors, **draw)
        if azim is not None:
            view = f"{'front' if i == 0 else 'back'} (azimuth {azim:.0f}°)"
            ax.text2D(0.5, 0.02, view, transform=ax.transAxes, ha="center", fontsize=9)
    (fig.suptitle if len(views) > 1 else fig.axes[0].set_title)(title or _title(e, space, top1), fontsize=10)
    save_png(fig, out_png)
    return LatentPlot(out_png, points, e.labels, centers, space, top1)


def plot_continual(
    first_run: str | os.PathLike,
    second_run: str | os.PathLike,
    data: str | LabeledData,
    out_png: str | os.PathLike,
) -> list[LatentPlot]:
    """The paper's Figure 7 in three panels: (a) the first run on the data of its own classes; (b) the first run
    on the data of all classes, the new classes' centers hollow (where new samples land before any training on
    them); (c) the run continued from it (``--init-from``) on all classes.

    Args:
        first_run: the run trained on the first classes.
        second_run: the run continued from ``first_run`` with more classes (same system and dim).
        data: samples of all the second run's classes (a data spec or a :class:`LabeledData`).
        out_png: the PNG to write.

    Returns:
        One :class:`LatentPlot` per panel (all with ``path = out_png``).
    """
    out_png = check_png(out_png)
    old, new = _embed(first_run, data), _embed(second_run, data)
    n_old, n_new = len(old.centers), len(new.centers)
    if n_new <= n_old or new.z.shape[1] != old.z.shape[1]:
        raise ValueError(
            f"{second_run} ({n_new} classes, dim {new.z.shape[1]}) does not continue {first_run} "
            f"({n_old} classes, dim {old.z.shape[1]}) with more classes"
        )
    points_c, centers_new, space, basis = _coords(new)
    points_b = _coords(old, basis)[0]  # panels (a) and (b): the first run's embeddings, in the same coordinates
    old_rows, all_rows = old.labels < n_old, old.labels < n_new
    panels = [  # (run, its drawn points, samples, classes with a center drawn, trained classes, title)
        (old, points_b, old_rows, n_old, n_old, f"(a) trained on classes 0-{n_old - 1}"),
        (old, points_b, all_rows, n_new, n_old, f"(b) + samples of classes {n_old}-{n_new - 1}, before training"),
        (new, points_c, all_rows, n_new, n_new, f"(c) after continued training on {n_new} classes"),
    ]
    return _draw_continual(panels, new, centers_new, space, out_png)


def _draw_continual(panels: list[tuple], new: _Embedded, centers: np.ndarray, space: str, out_png) -> list[LatentPlot]:
    """:func:`plot_continual`'s panels side by side in one PNG (2-D: the same axis limits in all three), each
    titled with its nearest-center top-1 on the classes trained so far."""
    plt = pyplot()
    three_d = panels[0][1].shape[1] == 3
    fig = plt.figure(figsize=(16, 5.6))
    lim = None if three_d else max(_limit(panel[1], centers) for panel in panels)
    n_new, result = len(new.centers), []
    for i, (run, points, rows, shown, trained, name) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1, projection="3d" if three_d else None)
        pts, labels, drawn = points[rows], run.labels[rows], centers[:shown]
        kw = {"trained": trained, "n_colors": n_new, "cluster_radius": new.cluster_radius, "lim": lim}
        _draw(ax, pts, labels, drawn, new.names, space, **kw)
        top1 = _top1(run.z[rows], labels, new.centers[:trained])
        ax.set_title(f"{name}\nnearest-center top-1 (trained classes) {top1:.0%}", fontsize=10)
        result.append(LatentPlot(out_png, pts, labels, drawn, space, top1))
    fig.suptitle(
        f"Continual learning without changing the model (dim {new.z.shape[1]}, {new.meta['centers'].get('name', '')})"
    )
    save_png(fig, out_png)
    return result
