"""Pictures (PNG, matplotlib's Agg backend): training curves of runs, and the latent space of a run like the
paper's Figures 3, 6 and 7 (class clusters on their predefined centers; continual learning from 5 to 9 classes).

matplotlib is imported inside the functions, so the rest of the package does not need it at import time.

- :func:`plot_training_curves` — loss per optimizer step and validation top-1 per epoch, one line per run, read
  from each run's ``metrics.jsonl``.
- :func:`plot_latent` — a run's embeddings of a data set coloured by class, with its class centers marked: a 2-D
  scatter (``dim 2``), a 3-D scatter on the unit sphere (``dim 3``), a PCA projection above that.
- :func:`plot_continual` — Figure 7's three panels: the first run on its classes, the first run on the data of
  all classes (new classes not trained yet), the continued run on all classes.
- :func:`latent_figures` — trains the small models itself (an MLP on the 8x8 digits' pixels, CPU) and writes
  ``latent-2d.png``, ``latent-3d.png`` and ``continual.png``.

Coordinates: a run trained with the cosine loss (or cross-entropy) only constrains directions, so its
embeddings and centers are drawn normalized, on the unit circle/sphere; a run trained with a distance loss
(``dist``, ``cos+dist``) is drawn as it is, centers at their radius (``planar``: 5) with their cluster radius r_c.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .centers import SystemCenters
from .data import LabeledData, load_features
from .files import atomic_file
from .rundir import CONFIG, METRICS

__all__ = [
    "CurvesPlot",
    "LatentPlot",
    "latent_figures",
    "plot_continual",
    "plot_latent",
    "plot_training_curves",
    "read_metrics",
]

MAX_POINTS = 3000  # points drawn per panel (a seeded subset above this)
MAX_CLASSES = 256  # a latent plot of more class centers is unreadable
_SUBSET_SEED = 0
NO_CHECKPOINTS = 10**9  # latent_figures' runs are never resumed; saving state every epoch would triple their time


@dataclass
class CurvesPlot:
    """What :func:`plot_training_curves` drew: ``series[run name] = {"step", "loss", "epoch", "val_top1"}``.

    Path-like: ``Path(result)`` and ``open(result)`` give the PNG.
    """

    path: Path
    series: dict[str, dict[str, list[float]]]

    def __fspath__(self) -> str:
        return str(self.path)


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


# ------------------------------------------------------------------------------------------------ metrics
def _run_names(run_dirs: list[Path]) -> list[str]:
    names = [p.resolve().name for p in run_dirs]
    if len(set(names)) < len(names):  # e.g. a/run and b/run
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in run_dirs]
    return names


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a missing directory or file, or no record, is an error)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: not a `lscdistill train` run directory")
    lines = path.read_text().splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                break  # a run being written: its last line may be incomplete
            raise ValueError(f"{path}, line {n}: not JSON") from None
    if not records:
        raise ValueError(f"{path} holds no records yet (the run logs every --log-every steps and every epoch)")
    return records


def _curves(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    steps = [r for r in records if "loss" in r]
    if not steps:  # logged only per epoch (--log-every 0, or fewer steps than --log-every)
        steps = [{"step": r["step"], "loss": r["train_loss"]} for r in records if "train_loss" in r]
    epochs = [r for r in records if "val_top1" in r]
    return {
        "step": [float(r["step"]) for r in steps],
        "loss": [float(r["loss"]) for r in steps],
        "epoch": [float(r["epoch"]) for r in epochs],
        "val_top1": [float(r["val_top1"]) for r in epochs],
    }


def plot_training_curves(run_dirs: list[str | os.PathLike], out_png: str | os.PathLike) -> CurvesPlot:
    """Training loss per optimizer step and validation top-1 per epoch, one line per run (labelled by name).

    Args:
        run_dirs: ``lscdistill train`` run directories (finished or still running: only ``metrics.jsonl`` is read).
        out_png: the PNG to write (its directory must exist).

    Returns:
        The path and the plotted series per run.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("give at least one run directory")
    out_png = _check_out(out_png)
    series = {name: _curves(read_metrics(p)) for name, p in zip(_run_names(run_dirs), run_dirs, strict=True)}
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, ((name, s), run_dir) in enumerate(zip(series.items(), run_dirs, strict=True)):
        color, label = f"C{i % 10}", f"{name} ({_loss_name(run_dir)})"
        ax_loss.plot(s["step"], s["loss"], color=color, label=label, lw=1.5)
        if s["val_top1"]:
            ax_acc.plot(s["epoch"], s["val_top1"], color=color, marker="o", ms=3, label=label, lw=1.5)
    if all(v > 0 for s in series.values() for v in s["loss"]):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation top-1", title="validation accuracy (exact decoding)")
    if not any(s["val_top1"] for s in series.values()):
        ax_acc.text(0.5, 0.5, "no validation data\n(train with --val-data)", ha="center", va="center")
    else:
        ax_acc.set_ylim(0, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, out_png)
    return CurvesPlot(out_png, series)


# ------------------------------------------------------------------------------------------------ latent
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _check_out(out_png: str | os.PathLike) -> Path:
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise ValueError(f"the picture must be a .png file, got {out_png}")
    if not out_png.parent.is_dir():
        raise FileNotFoundError(f"output directory {out_png.parent} does not exist")
    return out_png


def _save(fig, out_png: Path) -> None:
    """Written under a temporary name and renamed: a crash never leaves a half-written PNG."""
    try:
        with atomic_file(out_png) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(fig)


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
    from .evaluate import _data_for_run, load_run

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
        space = "raw" if "dist" in _loss_name(run_dir) else "unit"
        names = meta.get("class_names") or [str(k) for k in range(max(n_classes, int(labels.max()) + 1))]
        return _Embedded(z.astype(np.float64), labels, c, list(names), space, radius, meta)
    finally:
        if centers is not None:
            centers.close()


def _run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    return json.loads(path.read_text()) if path.is_file() else {}


def _loss_name(run_dir: str | os.PathLike) -> str:
    """``ce`` for a cross-entropy run, else its LSC loss (``cos``, ``dist``, ``cos+dist``); from ``config.json``."""
    config = _run_config(run_dir)
    return "ce" if config.get("objective") == "ce" else config.get("loss", "cos")


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
    plt = _pyplot()
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
    return f"dim {m['model'].get('dim')}, {m['n_classes']} classes, {what}; {where}; nearest-center top-1 {top1:.0%}"


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
    out_png = _check_out(out_png)
    e = _embed(run_dir, data)
    points, centers, space, _ = _coords(e)
    top1 = _top1(e.z, e.labels, e.centers)
    plt = _pyplot()
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
    _save(fig, out_png)
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
    out_png = _check_out(out_png)
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
    plt = _pyplot()
    three_d = points_b.shape[1] == 3
    fig = plt.figure(figsize=(16, 5.6))
    lim = None if three_d else max(_limit(points_b, centers_new), _limit(points_c, centers_new))
    result = []
    for i, (run, points, rows, shown, trained, name) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1, projection="3d" if three_d else None)
        pts, labels, centers = points[rows], run.labels[rows], centers_new[:shown]
        _draw(
            ax,
            pts,
            labels,
            centers,
            new.names,
            space,
            trained=trained,
            n_colors=n_new,
            cluster_radius=new.cluster_radius,
            lim=lim,
        )
        top1 = _top1(run.z[rows], labels, new.centers[:trained])
        ax.set_title(f"{name}\nnearest-center top-1 (trained classes) {top1:.0%}", fontsize=10)
        result.append(LatentPlot(out_png, pts, labels, centers, space, top1))
    fig.suptitle(
        f"Continual learning without changing the model (dim {new.z.shape[1]}, {new.meta['centers'].get('name', '')})"
    )
    _save(fig, out_png)
    return result


# ------------------------------------------------------------------------------------------------ demo figures
def _digits_features(root: Path, max_class: int) -> tuple[LabeledData, dict[str, str]]:
    """The 8x8 digits as 64 pixel features in [0, 1], classes ``< max_class``, the fixed train/val split."""
    from sklearn.datasets import load_digits

    from .data import digits_split

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    paths = {}
    for split in ("train", "val"):
        idx = digits_split(y, split)
        idx = idx[y[idx] < max_class]
        for name, values in (("x", x[idx]), ("y", y[idx])):
            paths[f"{split}_{name}"] = str(root / f"{split}-{name}{max_class}.npy")
            np.save(paths[f"{split}_{name}"], values)
    return load_features(paths["val_x"], paths["val_y"]), paths


def latent_figures(
    out_dir: str | os.PathLike,
    *,
    epochs: int = 60,
    seed: int = 0,
    quiet: bool = True,
    work_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Train small models on the digits (an MLP on the 64 pixels, CPU) and draw their latent spaces.

    Writes into ``out_dir``: ``latent-2d.png`` (the planar system of §5.1, 10 classes, distance loss with r = 5 and
    r_c = 1 as in the paper's Figure 6), ``latent-3d.png`` (A_3r, 10 classes, cosine loss) and ``continual.png``
    (Figure 7: planar, 5 classes, then continued on 9 with ``--init-from``). 20-35 s on 2 busy CPU cores.

    Args:
        out_dir: folder for the PNGs (created if missing).
        epochs: epochs of every training run (the continued run gets the same).
        seed: initialization and data-order seed.
        quiet: no progress bars.
        work_dir: keep the features and run directories here (default: a temporary folder, removed).

    Returns:
        The paths of the three PNGs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # tiny MLPs: one thread is as fast on an idle machine and several times faster on a busy one
    torch.set_num_threads(1)
    try:
        return _latent_figures(out_dir, epochs, seed, quiet, work_dir)
    finally:
        torch.set_num_threads(threads)


def _latent_figures(
    out_dir: Path, epochs: int, seed: int, quiet: bool, work_dir: str | os.PathLike | None
) -> list[Path]:
    from .train import TrainConfig, run_train

    with tempfile.TemporaryDirectory(prefix="lscdistill-latent-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)

        def train(name: str, max_class: int, **kw: Any) -> tuple[Path, LabeledData]:
            val, p = _digits_features(root, max_class)
            cfg = TrainConfig(
                out=root / name,
                features=p["train_x"],
                labels=p["train_y"],
                val_features=p["val_x"],
                val_labels=p["val_y"],
                hidden=256,
                lr=2e-3,
                schedule="cosine",
                epochs=epochs,
                seed=seed,
                cpu=True,
                quiet=quiet,
                overwrite=True,
                log_every=5,
                checkpoint_every=NO_CHECKPOINTS,
                **kw,
            )
            return run_train(cfg).run_dir, val

        # planar in index order: the first 4 classes at 90 degrees, then 45, then 22.5 (the paper's 2-D system)
        planar = {"system": "planar", "dim": 2, "interpolations": 2, "seed_system": None, "loss": "dist"}
        run_2d, val = train("latent-2d", 10, **planar)
        paths = [plot_latent(run_2d, val, out_dir / "latent-2d.png").path]
        run_3d, val = train("latent-3d", 10, system="an", dim=3, seed_system=seed, loss="cos")
        paths.append(plot_latent(run_3d, val, out_dir / "latent-3d.png").path)
        first, _ = train("continual-5", 5, **planar)
        second, val = train("continual-9", 9, init_from=str(first), **planar)
        paths.append(plot_continual(first, second, val, out_dir / "continual.png")[0].path)
    return paths


if __name__ == "__main__":  # python -m lscdistill.plots OUT_DIR: regenerate the README pictures
    import sys

    start = time.perf_counter()
    print(*latent_figures(sys.argv[1] if len(sys.argv) > 1 else "docs/img", quiet=False), sep="\n")
    print(f"{time.perf_counter() - start:.1f} s")
