"""``evaluate`` and ``predict``: accuracy by exact and fast decoding, new-class detection, per-sample predictions.

Multi-process: each process takes every ``world_size``-th sample (no padding, no repeats); the counts are summed
and the open-set scores gathered across processes, so every sample is counted exactly once.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batchnorm import batch_statistics
from .centers import Centers
from .data import (
    LabeledData,
    SplitLoader,
    default_workers,
    load_features,
    load_images,
    resolve_preprocess,
    use_instance_labels,
)
from .files import atomic_file
from .models import unwrap
from .openset import (
    DEFAULT_ACCEPT,
    ScoreCollector,
    available_scores,
    calibrate,
    check_accept,
    check_score,
    default_score,
    load_calibration,
    no_calibration_message,
    open_set_report,
    save_calibration,
)
from .options import DATA_HELP, FEATURES_HELP, LABELS_HELP, opt, workers_option
from .rundir import load_run
from .runtime import create_accelerator
from .stores.writer import check_output_path

__all__ = [
    "EvalConfig",
    "calibrate_after_training",
    "calibration_scores",
    "evaluate_model",
    "load_run",
    "run_evaluate",
    "run_predict",
]

TOP5_MAX_CLASSES = 10_000  # top-5 scores all centers: cheap only for small class counts


def _unit(z: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(z.float(), dim=1)


class _Top5:
    """Top-5 hits against all centers, materialized once (only when n_classes <= TOP5_MAX_CLASSES)."""

    def __init__(self, centers: Centers | None, device: torch.device) -> None:
        self.table = None
        if centers is None or centers.n_classes > TOP5_MAX_CLASSES or centers.n_classes < 5:
            return
        table = centers.gather(torch.arange(centers.n_classes))  # at most TOP5_MAX_CLASSES rows
        self.table = _unit(table).to(device)

    def hits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        top = (_unit(z) @ self.table.T).topk(5, dim=1).indices
        return (top == y[:, None]).any(dim=1).sum()


class _Tally:
    """The counts of one evaluation pass (samples, exact and fast top-1 hits, their agreement, new-class flags,
    exact-decoder fallbacks, top-5 hits), added on the device batch by batch (no host sync), summed over processes
    once at the end."""

    NAMES = ("n", "top1", "top1_fast", "agree", "new_class", "fallback", "top5")

    def __init__(self, centers: Centers | None, objective: str, n_classes: int, device: torch.device) -> None:
        self.sums = torch.zeros(len(self.NAMES), dtype=torch.int64, device=device)
        self.at = {name: i for i, name in enumerate(self.NAMES)}  # sums[at[name]] += count
        self.objective, self.device = objective, device
        self.has_fast = centers is not None and centers.fast
        self.top5 = _Top5(centers, device)
        self.has_top5 = (objective == "ce" and n_classes >= 5) or self.top5.table is not None

    def add(self, p: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        """One batch's predictions (:func:`_predict_batch`) against its labels ``y [B]`` (on the device)."""
        sums, at, device = self.sums, self.at, self.device
        label = p["label"].to(device)
        sums[at["n"]] += len(y)
        sums[at["top1"]] += (label == y).sum()
        if self.has_fast:
            fast = p["fast_label"].to(device)
            sums[at["top1_fast"]] += (fast == y).sum()
            sums[at["agree"]] += (fast == label).sum()
            sums[at["new_class"]] += p["unassigned"].to(device).sum()
        if "fallback" in p:
            sums[at["fallback"]] += p["fallback"].to(device).sum()
        if self.objective == "ce" and self.has_top5:
            k = min(5, p["out"].shape[1])
            sums[at["top5"]] += (p["out"].topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
        elif self.has_top5:
            sums[at["top5"]] += self.top5.hits(p["out"], y)

    def result(self, accelerator) -> dict[str, Any]:
        """The metrics over every process's samples (one all-reduce)."""
        sums = self.sums
        if accelerator.num_processes > 1:
            torch.distributed.all_reduce(sums)
        sums = dict(zip(self.NAMES, sums.tolist(), strict=True))
        n = max(1, sums["n"])
        result: dict[str, Any] = {"samples": sums["n"], "top1": sums["top1"] / n}
        if self.has_top5:
            result["top5"] = sums["top5"] / n
        if self.has_fast:
            result |= {
                "top1_fast": sums["top1_fast"] / n,
                "fast_exact_agreement": sums["agree"] / n,
                "new_class_flags": sums["new_class"],
            }
        if self.objective == "lsc":
            result["exact_fallback_rows"] = sums["fallback"]
        return result


def _predict_batch(model, centers: Centers | None, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact (and, where the centers allow, fast) predictions for one batch."""
    out = model(x).float()
    if centers is None:  # cross-entropy head
        prob = out.softmax(dim=1)
        conf, label = prob.max(dim=1)
        return {"out": out, "label": label, "score": conf}
    exact = centers.predict(out, mode="exact")
    result = {"out": out, "label": exact.labels, "score": exact.cosine, "fallback": exact.fallback}
    if centers.fast:
        fast = centers.predict(out, mode="fast")
        result |= {"fast_label": fast.labels, "fast_score": fast.cosine, "unassigned": fast.new_class}
    return result


def evaluate_model(
    accelerator,
    model,
    centers: Centers | None,
    data: LabeledData | SplitLoader,
    batch_size: int | None = None,
    *,
    objective: str = "lsc",
    indices: np.ndarray | None = None,
    batch_stats: bool = False,
    scores: ScoreCollector | None = None,
) -> dict[str, Any]:
    """Top-1 (exact), top-1 (fast), their agreement, new-class flags, top-5 where cheap; summed over processes.

    ``data``: a source (read ``batch_size`` at a time) or a run's :class:`SplitLoader` for it. The model runs in
    eval mode, as it is saved (unwrapped from DDP, so processes with fewer batches never wait in a collective);
    ``batch_stats=True`` puts its BatchNorm layers on each batch's own statistics instead, as in training (nothing
    in the model changed), for the train-mode vs eval-mode check. Counts stay on the device until the end.
    ``scores``: collects every sample's open-set scores (gather them with ``scores.gather(accelerator)``).
    ``new_class_flags`` counts the unassigned-vector rule (the calibrated rule is :mod:`lscdistill.openset`'s)."""
    loader = data if isinstance(data, SplitLoader) else SplitLoader(data, batch_size, persistent=False)
    data, device = loader.data, accelerator.device
    indices = np.arange(len(data)) if indices is None else indices
    mine = indices[accelerator.process_index :: accelerator.num_processes]
    tally = _Tally(centers, objective, data.n_classes, device)
    model = unwrap(accelerator, model)
    was_training = model.training
    model.eval()
    with batch_statistics(model) if batch_stats else torch.inference_mode():
        for x, y, _ in loader(mine):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            p = _predict_batch(model, centers, x)
            tally.add(p, y)
            if scores is not None:
                scores.add(p)
    model.train(was_training)
    return tally.result(accelerator)


# ------------------------------------------------------------------------------------------------ run dirs
def _data_for_run(model, meta, data, features, labels, need_labels: bool, prefix: str = ""):
    """The data a run reads: images through its preprocessing (any image size is resized to the run's), or
    feature rows of the width its MLP takes. ``prefix``: ``"unseen-"`` names the ``--unseen-*`` flags in errors."""
    flag_data, flag_features = f"--{prefix}data", f"--{prefix}features"
    if (data is None) == (features is None):
        raise ValueError(
            f"give exactly one of {flag_data} (digits, an image folder or a .tar of one) and {flag_features}"
        )
    arch = meta["model"]["architecture"]
    if features is not None:
        if arch != "mlp":
            raise ValueError(f"this run trained {arch} on images: give {flag_data}, not {flag_features}")
        if labels is None and need_labels:
            raise ValueError(f"{flag_features} needs --labels to measure accuracy")
        loaded = load_features(features, labels)  # without labels: every row labeled -1
        width = meta["model"].get("in_dim")
        if width is not None and loaded.n_dim != int(width):
            raise ValueError(
                f"{flag_features} {features} has {loaded.n_dim} features per row; this run's MLP takes {width}"
            )
        return loaded
    if arch == "mlp":
        raise ValueError(f"this run trained an MLP on features: give {flag_features} (and --labels)")
    return load_images(data, resolve_preprocess(model, data))


@dataclass
class EvalConfig:
    """Everything ``lscdistill evaluate`` needs (its options are derived from these fields); ``predict`` uses the
    data fields, ``batch_size``, ``workers`` and ``cpu``."""

    run_dir: Path = opt(MISSING, "A finished `lscdistill train` run directory.", argument=True)  # noqa: RUF009
    data: str | None = opt(None, DATA_HELP)
    features: str | None = opt(None, FEATURES_HELP)
    labels: str | None = opt(None, LABELS_HELP)
    unseen_data: str | None = opt(None, "Samples of classes the run never saw (as --data): open-set metrics.")
    unseen_features: str | None = opt(None, "Unseen-class features (as --features; no labels).")
    calibrate: bool = opt(False, "Store a new new-class threshold from this known-class data (openset.json).")
    accept: float | None = opt(None, "With --calibrate: share of known samples to accept, in (0, 1) [default: 0.95].")
    score: str | None = opt(
        None, "With --calibrate: cosine (default), margin, fast_cosine, unassigned; softmax for CE."
    )
    batch_size: int = opt(256, "Samples per batch.", "--batch-size", "-b", min=1)
    workers: int | None = workers_option()
    cpu: bool = opt(False, "Run on the CPU even if a GPU is present.")
    instance_labels: bool = opt(False, "Every sample its own class, in data order (for runs trained that way).")


def run_evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Accuracy on labeled data; with ``unseen_data``/``unseen_features`` the open-set metrics; with ``calibrate``
    a new threshold for the run (written last, by the main process, once everything else succeeded)."""
    if not cfg.calibrate and (cfg.accept is not None or cfg.score is not None):
        raise ValueError("--accept and --score choose the calibration: give them with --calibrate")
    accept = check_accept(DEFAULT_ACCEPT if cfg.accept is None else cfg.accept)
    accelerator = create_accelerator(cpu=cfg.cpu)
    model, centers, meta = load_run(cfg.run_dir)
    try:
        result, calibration = _evaluate(cfg, accelerator, model, centers, meta, accept)
    finally:
        if centers is not None:
            centers.close()
    if cfg.calibrate and accelerator.is_main_process:
        result["calibration_path"] = str(save_calibration(cfg.run_dir, calibration))
    return result


def _evaluate(cfg: EvalConfig, accelerator, model, centers, meta, accept: float):
    data = _data_for_run(model, meta, cfg.data, cfg.features, cfg.labels, need_labels=True)
    if cfg.instance_labels:
        data = use_instance_labels(data)
    if int(data.labels.max()) >= int(meta["n_classes"]):
        raise ValueError(f"label {int(data.labels.max())} is outside the run's {meta['n_classes']} classes")
    unseen = None
    if cfg.unseen_data is not None or cfg.unseen_features is not None:
        unseen = _data_for_run(model, meta, cfg.unseen_data, cfg.unseen_features, None, False, prefix="unseen-")
    score = check_score(cfg.score or default_score(meta["objective"]), centers, meta["objective"])
    names = available_scores(centers, meta["objective"]) if unseen is not None else (score,) * cfg.calibrate
    model = model.to(accelerator.device)
    start = time.perf_counter()
    workers = default_workers(accelerator, cfg.workers)
    known = ScoreCollector(centers, names)
    loader = SplitLoader(data, cfg.batch_size, workers=workers, persistent=False)
    result = evaluate_model(accelerator, model, centers, loader, objective=meta["objective"], scores=known)
    result |= {"run": str(cfg.run_dir), "objective": meta["objective"], "n_classes": meta["n_classes"]}
    known_scores = known.gather(accelerator) if names else {}
    calibration = load_calibration(cfg.run_dir)
    if cfg.calibrate:
        calibration = calibrate(known_scores[score], score, accept, data.description, "evaluate")
        result["calibration"] = asdict(calibration)
    if unseen is not None:
        collector = ScoreCollector(centers, names)
        unseen_loader = SplitLoader(unseen, cfg.batch_size, workers=workers, persistent=False)
        evaluate_model(accelerator, model, centers, unseen_loader, objective=meta["objective"], scores=collector)
        result["open_set"] = open_set_report(known_scores, collector.gather(accelerator), calibration)
    result["seconds"] = time.perf_counter() - start
    return result, calibration


def calibration_scores(centers, objective: str) -> ScoreCollector:
    """A collector of what the end-of-training calibration needs, to pass to a validation pass as ``scores``."""
    return ScoreCollector(centers, (default_score(objective),))


def calibrate_after_training(
    accelerator,
    model,
    centers,
    loader: SplitLoader | None,
    run_dir: Path,
    objective: str,
    scores: ScoreCollector | None = None,
):
    """The end of ``lscdistill train``: calibrate the run's new-class threshold on its validation split (default
    score, :data:`~lscdistill.openset.DEFAULT_ACCEPT`) and write ``openset.json`` (main process). ``scores``: what
    the last validation pass of these weights collected (:func:`calibration_scores`); without it, the validation
    split is scored here. Every process calls it (the scores are gathered); a run without validation data gets no
    calibration."""
    if loader is None:
        return None
    score = default_score(objective)
    if scores is None:
        scores = calibration_scores(centers, objective)
        evaluate_model(accelerator, model, centers, loader, objective=objective, scores=scores)
    calibration = calibrate(scores.gather(accelerator)[score], score, DEFAULT_ACCEPT, loader.data.description, "train")
    if accelerator.is_main_process:
        save_calibration(run_dir, calibration)
    return calibration


def run_predict(
    cfg: EvalConfig, out: Path, overwrite: bool = False, require_calibration: bool = False
) -> dict[str, Any]:
    """Write per sample ``index, label, score`` (exact), ``fast_label, unassigned`` (fast decoding: the nearest
    system vector belongs to no class) and, when the run has a calibration (``openset.json``), ``open_score`` and
    ``new_class`` (``open_score`` below its threshold) to ``.csv`` or ``.npz`` (atomically). Without a calibration
    those two columns are absent and ``result["calibration"]`` is None; ``require_calibration`` makes that an error
    (raised before anything is read or written)."""
    if out.suffix not in (".csv", ".npz"):
        raise ValueError(f"--out must end in .csv or .npz, got {out}")
    check_output_path(out, overwrite)
    calibration = load_calibration(cfg.run_dir)
    if calibration is None and require_calibration and (Path(cfg.run_dir) / "model.json").is_file():
        raise ValueError(no_calibration_message(cfg.run_dir))  # (a run that never finished: load_run says so)
    accelerator = create_accelerator(cpu=cfg.cpu)
    if accelerator.num_processes > 1:
        raise ValueError("predict runs in one process (it writes one file in sample order)")
    model, centers, meta = load_run(cfg.run_dir)
    try:
        data = _data_for_run(model, meta, cfg.data, cfg.features, cfg.labels, need_labels=False)
        if calibration is not None:
            check_score(calibration.score, centers, meta["objective"])
        scores = ScoreCollector(centers, (calibration.score,) if calibration is not None else ())
        model = model.to(accelerator.device)
        columns: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            workers = default_workers(accelerator, cfg.workers)
            for x, _, idx in data.batches(np.arange(len(data)), cfg.batch_size, workers):
                p = _predict_batch(model, centers, x.to(accelerator.device))
                row = {"index": idx, "label": p["label"], "score": p["score"]}
                if "fast_label" in p:
                    row |= {"fast_label": p["fast_label"], "unassigned": p["unassigned"]}
                for k, v in row.items():
                    columns.setdefault(k, []).append(v.cpu().numpy() if isinstance(v, torch.Tensor) else v)
                scores.add(p)
    finally:
        if centers is not None:
            centers.close()
    if calibration is not None:
        open_score = scores.gather(accelerator)[calibration.score]
        columns |= {"open_score": [open_score], "new_class": [calibration.flags(open_score)]}
    table = {k: np.concatenate(v) for k, v in columns.items()}
    with atomic_file(out) as tmp:
        if out.suffix == ".npz":
            np.savez(tmp, **table)
        else:
            names = list(table)
            with tmp.open("w") as f:
                f.write(",".join(names) + "\n")
                for i in range(len(table["index"])):
                    f.write(",".join(_fmt(table[k][i]) for k in names) + "\n")
    summary = None if calibration is None else {"score": calibration.score, "threshold": calibration.threshold}
    return {"path": str(out), "samples": len(table["index"]), "columns": list(table), "calibration": summary}


def _fmt(v) -> str:
    if isinstance(v, np.bool_ | bool):
        return str(int(v))
    if isinstance(v, np.floating | float):
        return f"{float(v):.6g}"
    return str(v)
