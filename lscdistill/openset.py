"""New-class (open-set) detection: a score per sample, a threshold calibrated on known-class data, and metrics.

Every score is "higher = more like a known class"; a sample is flagged ``new_class`` when its score is below the
run's calibrated threshold. The scores (paper §5.1.1: samples of unseen classes land between the class centers):

- ``cosine``: cosine to the predicted center (exact decoding: the nearest *assigned* center). The default, chosen
  by measurement (``docs/openset.md``): on digits with 5 held-back classes it beats or ties the others.
- ``margin``: the cosine to the nearest center minus the cosine to the second nearest (exact, by a chunked
  brute-force scan of all centers: time O(B * n_classes * n_dim), memory O(B * chunk)).
- ``fast_cosine``: the fast O(n_dim) decoder's cosine to the nearest vector of the whole system, and
  :data:`UNASSIGNED_SCORE` (below every cosine) where that vector belongs to no class: the unassigned-vector rule
  and a cosine threshold combined (centers with ``fast`` only).
- ``unassigned``: the old rule alone as a score: 1 if the fast decoder's nearest vector belongs to a class, else 0.
- ``softmax``: the largest softmax probability (cross-entropy runs).

Calibration: the threshold at which a chosen share ``accept`` of known-class validation samples is accepted
(:func:`threshold_at`), stored in the run directory as :data:`lscdistill.rundir.OPENSET` (:class:`Calibration`).
Metrics: AUROC (known = positive) and the false-positive rate at 95% true-positive rate (the share of unseen samples
accepted by the threshold that accepts 95% of the known ones).

Memory: the collected scores grow with the number of *samples* (one float per sample and score), never with
n_classes; the ``margin`` scan holds one ``[B, chunk]`` score matrix at a time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decode import exact_top2
from .files import atomic_file
from .rundir import OPENSET

__all__ = [
    "DEFAULT_ACCEPT",
    "DEFAULT_SCORE",
    "SCORES",
    "Calibration",
    "ScoreCollector",
    "auroc",
    "available_scores",
    "batch_scores",
    "calibrate",
    "check_accept",
    "fpr_at_tpr",
    "load_calibration",
    "open_set_report",
    "save_calibration",
    "threshold_at",
]

SCORES = ("cosine", "margin", "fast_cosine", "unassigned", "softmax")
DEFAULT_SCORE = "cosine"  # the best measured on digits (docs/openset.md); cheap, exact and fast decoding alike
CE_SCORE = "softmax"
DEFAULT_ACCEPT = 0.95
UNASSIGNED_SCORE = -2.0  # fast_cosine of a sample whose nearest system vector has no class: below any cosine
FORMAT = "lscdistill-openset"


def available_scores(centers, objective: str = "lsc") -> tuple[str, ...]:
    """The scores a run can compute: ``softmax`` for cross-entropy runs; ``cosine`` and ``margin`` (2+ classes)
    for any centers; ``fast_cosine`` and ``unassigned`` where the centers decode fast."""
    if objective == "ce" or centers is None:
        return (CE_SCORE,)
    names = ["cosine"] + (["margin"] if centers.n_classes >= 2 else [])
    return tuple(names + (["fast_cosine", "unassigned"] if centers.fast else []))


def default_score(objective: str) -> str:
    return CE_SCORE if objective == "ce" else DEFAULT_SCORE


def check_score(name: str, centers, objective: str) -> str:
    names = available_scores(centers, objective)
    if name not in names:
        raise ValueError(f"score {name!r} is not available for this run: choose from {', '.join(names)}")
    return name


def check_accept(accept: float) -> float:
    if not 0.0 < accept < 1.0:
        raise ValueError(f"--accept is the share of known samples to accept: it must be in (0, 1), got {accept}")
    return float(accept)


def batch_scores(p: dict[str, torch.Tensor], centers, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Scores ``[B]`` (float32) for one batch from the predictions of ``evaluate._predict_batch`` (``out``, exact
    ``score``, and where fast decoding ran ``fast_score`` and ``unassigned``)."""
    found: dict[str, torch.Tensor] = {}
    for name in names:
        if name in ("cosine", "softmax"):
            found[name] = p["score"]
        elif name == "margin":
            found[name] = margin(p["out"], centers)
        elif name == "fast_cosine":
            found[name] = torch.where(p["unassigned"], UNASSIGNED_SCORE, p["fast_score"].float())
        elif name == "unassigned":
            found[name] = (~p["unassigned"]).float()
        else:
            raise ValueError(f"unknown open-set score {name!r}; choose from {', '.join(SCORES)}")
    return {k: v.float() for k, v in found.items()}


def margin(z: torch.Tensor, centers) -> torch.Tensor:
    """Cosine to the nearest center minus cosine to the second nearest, ``[B, D] -> [B]``: a brute-force scan of
    all ``centers.n_classes`` centers read ``chunk`` rows at a time (memory O(B * chunk), time O(B * C * D))."""
    chunk = getattr(centers, "chunk_size", 8192)

    def rows(start: int, stop: int) -> torch.Tensor:  # generated centers by formula, stores by rows: nothing kept
        return centers.gather(torch.arange(start, stop, device=z.device))

    top = exact_top2(z, rows, n_rows=centers.n_classes, chunk_size=chunk)
    return top[:, 0] - top[:, 1]


class ScoreCollector:
    """Collects per-sample scores batch by batch (on the device: no sync per batch) and gathers them from all
    processes. Memory: one float per sample and score (grows with the samples, not with n_classes)."""

    def __init__(self, centers, names: tuple[str, ...]) -> None:
        self.centers, self.names = centers, tuple(names)
        self.parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}

    def add(self, p: dict[str, torch.Tensor]) -> None:
        for name, value in batch_scores(p, self.centers, self.names).items():
            self.parts[name].append(value)

    def gather(self, accelerator) -> dict[str, np.ndarray]:
        """Every process's scores, concatenated (the order across processes is irrelevant to the metrics)."""
        device = accelerator.device
        out = {}
        for name, parts in self.parts.items():
            mine = torch.cat(parts).to(device) if parts else torch.zeros(0, device=device)
            out[name] = _gather_uneven(accelerator, mine)
        return out


def _gather_uneven(accelerator, t: torch.Tensor) -> np.ndarray:
    """All processes' 1-D tensors of different lengths, concatenated: padded to the longest, gathered, cut."""
    if accelerator.num_processes == 1:
        return t.cpu().numpy()
    lengths = accelerator.gather(torch.tensor([len(t)], device=t.device)).tolist()
    padded = torch.zeros(max(lengths), dtype=t.dtype, device=t.device)
    padded[: len(t)] = t
    rows = accelerator.gather(padded).view(len(lengths), -1).cpu()
    return torch.cat([rows[i, :n] for i, n in enumerate(lengths)]).numpy()


# ------------------------------------------------------------------------------------------------ metrics
def _clean(scores: Any) -> np.ndarray:
    """Scores as float64; NaN (an embedding with NaN/Inf) becomes -inf: always flagged, never accepted."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    return np.where(np.isnan(s), -np.inf, s)


def threshold_at(known: Any, accept: float) -> float:
    """A threshold ``t`` that accepts (``score >= t``) the ``k = ceil(accept * n)`` highest of the ``n`` known
    scores: halfway between the k-th and the (k+1)-th highest, so that a score recomputed a rounding error away
    (fast vs exact decoding) falls on the same side. Ties at the k-th score are all accepted (then more than k)."""
    check_accept(accept)
    s = np.sort(_clean(known))[::-1]
    if s.size == 0:
        raise ValueError("calibration needs at least one known-class sample")
    k = max(1, math.ceil(accept * s.size - 1e-9))  # the float product must not round 95.0 up to 96
    if k == s.size or not np.isfinite(s[k]):  # nothing finite below: the k-th score itself
        return float(s[k - 1])
    return float((s[k - 1] + s[k]) / 2)


def auroc(known: Any, unseen: Any) -> float:
    """Area under the ROC curve of telling known (positive) from unseen samples by score (ties count one half):
    the Mann-Whitney statistic from average ranks, O(N log N)."""
    from scipy.stats import rankdata

    k, u = _clean(known), _clean(unseen)
    if k.size == 0 or u.size == 0:
        raise ValueError("AUROC needs known and unseen samples")
    ranks = rankdata(np.concatenate([k, u]))
    return float((ranks[: k.size].sum() - k.size * (k.size + 1) / 2) / (k.size * u.size))


def fpr_at_tpr(known: Any, unseen: Any, tpr: float = 0.95) -> float:
    """Share of unseen samples accepted by the threshold that accepts ``tpr`` of the known ones."""
    return float((_clean(unseen) >= threshold_at(known, tpr)).mean())


def flag_rate(scores: Any, threshold: float) -> float:
    """Share of samples flagged new (``score < threshold``)."""
    s = _clean(scores)
    return float((s < threshold).mean()) if s.size else 0.0


# ------------------------------------------------------------------------------------------------ calibration
@dataclass
class Calibration:
    """A run's new-class rule: flag a sample when its ``score`` is below ``threshold``.

    ``accept``: the share of the calibration samples (``samples`` known-class samples of ``data``) that the
    threshold accepts; ``source``: ``train`` (the run's validation split, at the end of training) or ``evaluate``
    (``lscdistill evaluate --calibrate``)."""

    score: str
    threshold: float
    accept: float
    samples: int
    data: dict[str, Any]
    source: str
    known_flag_rate: float
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def flags(self, scores: torch.Tensor | np.ndarray) -> np.ndarray:
        return _clean(scores.cpu().numpy() if isinstance(scores, torch.Tensor) else scores) < self.threshold


def calibrate(scores: Any, score: str, accept: float, data: dict[str, Any], source: str) -> Calibration:
    """The threshold accepting ``accept`` of the known-class ``scores`` (of the score named ``score``)."""
    t = threshold_at(scores, accept)
    s = _clean(scores)
    return Calibration(score, t, float(accept), int(s.size), dict(data), source, flag_rate(s, t))


def save_calibration(run_dir: str | Path, calibration: Calibration) -> Path:
    """Write ``run_dir/openset.json`` atomically (a run's previous calibration is replaced)."""
    path = Path(run_dir) / OPENSET
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "format_version": 1, **asdict(calibration)}, indent=2) + "\n")
    return path


def load_calibration(run_dir: str | Path) -> Calibration | None:
    """The run's calibration, or None if it has none (trained without validation data, or before calibration)."""
    path = Path(run_dir) / OPENSET
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    if d.pop("format", None) != FORMAT:
        raise ValueError(f"{path} is not an lscdistill open-set calibration")
    d.pop("format_version", None)
    return Calibration(**d)


def no_calibration_message(run_dir: str | Path) -> str:
    return (
        f"{run_dir} has no open-set calibration ({OPENSET}; runs trained without validation data have none): "
        f"calibrate it with `lscdistill evaluate {run_dir} --data VAL --calibrate` (or --features/--labels)"
    )


def open_set_report(
    known: dict[str, np.ndarray], unseen: dict[str, np.ndarray], calibration: Calibration | None
) -> dict[str, Any]:
    """AUROC and FPR at 95% TPR of every score; flag rates on known and unseen samples of the calibrated rule
    (with fast decoding too: the same threshold on ``fast_cosine`` when the rule is ``cosine``) and of the
    unassigned-vector rule."""
    report: dict[str, Any] = {"known_samples": 0, "unseen_samples": 0, "scores": {}}
    for name in known:
        k, u = known[name], unseen[name]
        report["known_samples"], report["unseen_samples"] = len(k), len(u)
        report["scores"][name] = {"auroc": auroc(k, u), "fpr_at_95tpr": fpr_at_tpr(k, u)}
    rules: dict[str, tuple[str, float]] = {}
    if calibration is not None:
        rules["calibrated"] = (calibration.score, calibration.threshold)
        if calibration.score == "cosine" and "fast_cosine" in known:
            rules["calibrated_fast"] = ("fast_cosine", calibration.threshold)
    if "unassigned" in known:
        rules["unassigned"] = ("unassigned", 0.5)  # flagged: score 0
    for rule, (name, t) in rules.items():
        report[rule] = {
            "score": name,
            "threshold": t,
            "known_flag_rate": flag_rate(known[name], t),
            "unseen_flag_rate": flag_rate(unseen[name], t),
        }
    report["calibration"] = None if calibration is None else asdict(calibration)
    return report
