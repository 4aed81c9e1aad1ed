"""The paper's §6.5 in kind: distillation into a smaller student of another architecture through class means
(part of ``python -m benchmarks run --only paper``).

The paper trains an encoder (9m parameters) toward the CEembs (class means of the embeddings) of a ViT-S teacher
(22m) and finds "similar" accuracy. Here, with the CLI as a user would run it and its defaults:

1. the teacher: ``train -m resnet18 --objective ce`` on scikit-learn's digits (``digits:train``, 32 px);
2. ``extract --checkpoint TEACHER --data digits:train``: its 512-wide class means (the only thing the student sees
   of the teacher: no teacher forward pass during the student's training);
3. the students, an MLP on the digits' 64 pixels (``train --features``: no convolution at all), each seed:
   ``--centers means.h5`` (distilled), ``--objective ce`` (the same MLP with a linear head, no teacher), and
   ``--n-dim 512`` toward generated A_nr centers (same width as the means, no teacher);

every saved model scored in eval mode on ``digits:val``, with its parameter count.

Memory: the digits (1,797 x 64) and a 10 x 512 means store.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ._common import Section, headline
from .bench_paper_losses import cli, n_params, spread, top1, train_run

STUDENTS = {  # method -> train flags beside the features
    "means": lambda means: ["--centers", means],
    "ce": lambda means: ["--objective", "ce"],
    "A_nr": lambda means: ["--n-dim", 512],
}


def digits_features(root: Path) -> dict[str, str]:
    """``digits:train`` and ``digits:val`` (the CLI's fixed split) as pixel features in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    from lscdistill.data import digits_split

    digits = load_digits()
    paths = {}
    for split in ("train", "val"):
        idx = digits_split(digits.target, split)
        for name, arr in (("features", digits.data[idx] / 16.0), ("labels", digits.target[idx])):
            paths[f"{split}_{name}"] = str(root / f"digits-{split}-{name}.npy")
            np.save(paths[f"{split}_{name}"], arr.astype(np.float32 if name == "features" else np.int64))
    return paths


def _teacher(cfg, section: Section, tmp: Path) -> tuple[Path, float]:
    teacher, means = tmp / "teacher", tmp / "teacher-means.h5"
    seconds = train_run(teacher, "-m", cfg.distill_teacher, "--data", "digits:train", "--val-data", "digits:val",
                        "--objective", "ce", "--epochs", cfg.teacher_epochs, threads=cfg.threads)  # fmt: skip
    start = time.perf_counter()
    cli("extract", "--checkpoint", teacher, "--data", "digits:train", "--out", means, "-q", threads=cfg.threads)
    extract_s = time.perf_counter() - start
    acc, params = top1(teacher, data="digits:val"), n_params(teacher)
    section.rows.append(
        {"n_classes": 10, "case": "distill teacher", "method": f"{cfg.distill_teacher} ce", "time_s": None}
        | {"seed": 0, "seconds": seconds, "extract_s": extract_s, "val_top1": acc, "params": params}
        | {"note": f"val {acc:.1%}, {params / 1e6:.2f}M params, {seconds:.0f} s (+ extract {extract_s:.0f} s)"}
    )
    return means, acc


def run(cfg, section: Section, tmp: Path) -> None:
    if "distill" not in cfg.experiments:
        return
    means, teacher_acc = _teacher(cfg, section, tmp)
    data = digits_features(tmp)
    found: dict[str, list[float]] = {}
    for method, flags in STUDENTS.items():
        for seed in cfg.seeds:
            out = tmp / f"student-{method}-{seed}"
            seconds = train_run(out, "--features", data["train_features"], "--labels", data["train_labels"],
                                "--epochs", cfg.student_epochs, "--seed", seed, *flags(means),
                                threads=cfg.threads)  # fmt: skip
            acc = top1(out, features=data["val_features"], labels=data["val_labels"])
            params = n_params(out)
            found.setdefault(method, []).append(100 * acc)
            section.rows.append(
                {"n_classes": 10, "case": "distill student mlp", "method": method, "time_s": None, "seed": seed}
                | {"seconds": seconds, "val_top1": acc, "params": params}
                | {"note": f"val {acc:.1%}, {params / 1e6:.3f}M params, {seconds:.0f} s"}
            )
    for method, values in found.items():
        section.headlines.append(headline(f"distill: MLP student val top-1, {method}", spread(values), unit="%"))
        gap = spread([v - 100 * teacher_acc for v in values])
        section.headlines.append(headline(f"distill: {method} student minus teacher, val top-1", gap, unit="points"))
    section.notes.append(
        f"distill: teacher {cfg.distill_teacher} (CE, {cfg.teacher_epochs} epochs, digits 32 px) -> class means -> "
        f"MLP students ({cfg.student_epochs} epochs, seeds {', '.join(map(str, cfg.seeds))}), CLI defaults"
    )
