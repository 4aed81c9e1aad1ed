"""Whole inference, batch 1024: a small encoder's forward pass + label prediction, LSC-fast against the same
encoder with a linear classification head, and the class count where LSC starts to win (the crossover).

The encoder is lscdistill's own :class:`~lscdistill.models.MLP` student on precomputed features
(``in_dim`` 512 -> 1024 -> 1024, GELU + LayerNorm, linear projection to 384): about 2 GFLOP per batch, the
size of head a feature-based classifier puts on top of a frozen backbone. LSC predicts with
``SystemCenters.predict(z, "fast")`` (A_384r, one interpolation level above 147,840 classes); the baseline
scores ``z @ W.T + b`` for every class and takes the argmax, in chunks of 65,536 classes with a running
maximum (the full ``[1024, 1.28M]`` logits would take 5.2 GB). Memory: the parameters each model holds (the
head's grow with n_classes, LSC's do not).

Besides the issue's class counts, a sweep of small counts (head only costs more there) locates the crossover:
it is interpolated on log axes between the two counts where the head / LSC ratio passes 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from functools import partial

import torch

from lscdistill.centers import SystemCenters
from lscdistill.models import build_student
from lscdistill.systems import create_system

from ._common import Section, headline, measure_interleaved, ratio

PAPER_SPEEDUP = 11.6  # companion paper, best overall speedup of LSC inference over a linear head
TARGET_CLASSES = 1_281_167  # where the speedup is compared with the paper's
CHUNK = 65_536


@dataclass
class Config:
    classes: tuple[int, ...] = (10_000, 147_840, 1_281_167)
    sweep: tuple[int, ...] = (30, 100, 300, 1_000, 3_000)  # extra class counts to locate the crossover
    batch: int = 1024
    in_dim: int = 512
    hidden: int = 1024
    n_dim: int = 384
    repeats: int = 20  # at most
    budget_s: float = 20.0  # stop repeating one figure after this long (at least 3 repetitions)

    @classmethod
    def quick(cls) -> Config:
        return cls(repeats=5, budget_s=5.0)


def head_predict(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Argmax over classes of ``z @ weight.T + bias`` (``[B, D]``, ``[C, D]``, ``[C]`` -> ``[B]``), ``chunk``
    classes at a time so that the logits never exceed ``[B, chunk]``."""
    best = torch.full((z.shape[0],), -math.inf, device=z.device, dtype=z.dtype)
    best_idx = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, weight.shape[0], chunk):
        score, arg = torch.addmm(bias[start : start + chunk], z, weight[start : start + chunk].T).max(dim=1)
        better = score > best
        best, best_idx = torch.where(better, score, best), torch.where(better, arg + start, best_idx)
    return best_idx


def crossover(points: list[tuple[int, float]]) -> float | None:
    """Class count where ``head / lsc`` first reaches 1, interpolated on log-log axes between measured counts.

    ``points`` are ``(n_classes, head / lsc)``. Returns ``None`` if the head is faster everywhere measured, and
    the smallest count if LSC already wins there (the crossover is at or below it).
    """
    points = sorted(points)
    if points[0][1] >= 1:
        return float(points[0][0])
    for (n0, r0), (n1, r1) in itertools.pairwise(points):
        if r0 < 1 <= r1:
            f = -math.log(r0) / (math.log(r1) - math.log(r0))
            return math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0)))
    return None


def _lsc_predict(encoder: torch.nn.Module, centers: SystemCenters, x: torch.Tensor):
    return centers.predict(encoder.embed(x), "fast")


def _head_forward(encoder: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return head_predict(encoder.embed(x), head.weight, head.bias)


def _param_bytes(*modules: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config=asdict(cfg))
    torch.manual_seed(0)
    encoder = build_student({"architecture": "mlp", "in_dim": cfg.in_dim, "hidden": cfg.hidden, "n_dim": cfg.n_dim})
    encoder = encoder.to(device).eval()
    x = torch.randn(cfg.batch, cfg.in_dim, generator=torch.Generator().manual_seed(1)).to(device)
    roots = cfg.n_dim * (cfg.n_dim + 1)
    systems = {}
    points = []
    with torch.inference_mode():
        for n in sorted({*cfg.sweep, *cfg.classes}):
            level = int(n > roots)
            if level not in systems:
                systems[level] = create_system("an", cfg.n_dim, seed=0, interpolations=level)
            centers = SystemCenters(systems[level], n)
            head = torch.nn.Linear(cfg.n_dim, n, device=device)
            fns = {"lsc": partial(_lsc_predict, encoder, centers, x), "head": partial(_head_forward, encoder, head, x)}
            if not points:  # the encoder alone, once, in the same rounds
                fns["encoder"] = partial(encoder.embed, x)
            timed = measure_interleaved(fns, device, cfg.repeats, budget_s=cfg.budget_s)
            if "encoder" in timed:
                row = {"n_classes": None, "case": "encoder only", "method": "encoder", "note": "no prediction"}
                section.rows.append({**row, "time_s": timed["encoder"][0]})
            (lsc_s, pred), (head_s, _) = timed["lsc"], timed["head"]
            case = "main" if n in cfg.classes else "sweep"
            flags = f"{int(pred.new_class.sum())} of {cfg.batch} rows flagged new-class"
            section.rows += [
                {"n_classes": n, "case": case, "method": "lsc-fast", "time_s": lsc_s, "note": flags}
                | {"memory_bytes": _param_bytes(encoder)},
                {"n_classes": n, "case": case, "method": "linear-head", "time_s": head_s, "note": ""}
                | {"memory_bytes": _param_bytes(encoder, head)},
            ]
            r = ratio(head_s, lsc_s, paired=True)
            points.append((n, r["value"]))
            if n in cfg.classes:
                target = PAPER_SPEEDUP if n == TARGET_CLASSES else None
                figure = "linear head / LSC-fast, whole inference"
                section.headlines.append(headline(figure, r, n_classes=n, target=target))
            del head
    cross = crossover(points)
    fewest = min(n for n, _ in points)
    case = "LSC wins at every count measured" if cross == fewest else "log-log interpolation"
    figure = "crossover: LSC-fast wins from this many classes"
    section.headlines.append(headline(figure, cross or math.nan, unit="classes", case=case))
    if cross is None:
        section.notes.append(f"the linear head was faster at every class count up to {max(n for n, _ in points):,}")
    return section
