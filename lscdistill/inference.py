"""A finished run as a classifier: ``load(run).predict(images)`` in Python, and the same decision as one module.

:class:`DecisionModule` is the whole inference of a run as a plain ``nn.Module``: images in ``[0, 1]`` (or
features, for runs trained on features) -> ``(label, score, new_class)``. The run's normalization is inside it;
resizing to the run's image size is the caller's (recorded in :attr:`Classifier.preprocess` and in an exported
file's metadata). Labels come from the decoding that needs no table where the centers allow it:

- generated centers (a vector system): the fast O(n_dim) nearest system vector; a vector no class owns flags a new
  class (label -1). The module holds the system's formulas only: **its size does not depend on n_classes**.
- snapped centers: the same search, mapped back to classes through the sorted system indices the classes own:
  ``2 x n_classes`` int64 (160 MB at 10M classes) — memory that grows with n_classes.
- class means (a store or table): exact, the nearest unit-norm mean: the ``[n_classes, D]`` float32 table is
  part of the module (memory that grows with n_classes).
- cross-entropy runs: the classifier's argmax; the score is its softmax probability.

``score`` is the cosine to the returned center (the softmax probability for cross-entropy); with a ``threshold``
(by default the run's calibrated one, see :mod:`lscdistill.openset`), rows scoring below it are also flagged
``new_class`` (their label stays the best guess). Rows with NaN/Inf get
label -1 and score NaN and are flagged.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .centers import Centers, SnappedCenters, StoreCenters, SystemCenters, TableCenters
from .rundir import load_run
from .systems.base import mark_degenerate, unit_rows

__all__ = ["Classifier", "Decision", "DecisionModule", "load"]


class Decision(NamedTuple):
    """What a classifier decides for a batch: ``labels [B]`` int64 (-1: a new class by the fast rule, or NaN
    input), ``scores [B]`` (cosine to the returned center; softmax probability for cross-entropy), ``new_class [B]``
    bool."""

    labels: torch.Tensor
    scores: torch.Tensor
    new_class: torch.Tensor


class _SystemHead(nn.Module):
    def __init__(self, centers: SystemCenters) -> None:
        super().__init__()
        self.system, self.n_classes = centers.system, centers.n_classes

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx, cos = self.system.nearest(z)
        unassigned = (idx >= self.n_classes) | (idx < 0)
        return torch.where(unassigned, -1, idx), cos, unassigned


class _SnappedHead(nn.Module):
    def __init__(self, centers: SnappedCenters) -> None:
        super().__init__()
        self.system = centers.system
        owned, owner = centers._inverse_map(torch.device("cpu"))
        self.register_buffer("owned", owned)
        self.register_buffer("owner", owner)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx, cos = self.system.nearest(z)
        pos = torch.searchsorted(self.owned, idx).clamp(max=self.owned.shape[0] - 1)
        hit = self.owned[pos] == idx
        return torch.where(hit, self.owner[pos], -1), cos, ~hit


class _TableHead(nn.Module):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        table = table.float()
        norms = torch.linalg.vector_norm(table, dim=1, keepdim=True)
        self.register_buffer("table", table / torch.where(norms > 0, norms, 1.0))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        unit, ok, finite = unit_rows(z.float())
        cos, idx = (unit @ self.table.T).max(dim=1)
        idx, cos = mark_degenerate(idx, cos, ok, finite)
        return idx, cos, idx < 0


class _SoftmaxHead(nn.Module):
    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prob, label = logits.float().softmax(dim=1).max(dim=1)
        bad = ~torch.isfinite(prob)
        return torch.where(bad, -1, label), prob, bad


def decision_head(centers: Centers | None) -> nn.Module:
    """The label rule of :class:`DecisionModule` for a run's centers (``None``: a cross-entropy run)."""
    if centers is None:
        return _SoftmaxHead()
    if isinstance(centers, SnappedCenters):
        return _SnappedHead(centers)
    if isinstance(centers, SystemCenters):
        return _SystemHead(centers)
    if isinstance(centers, StoreCenters):
        return _TableHead(torch.as_tensor(centers.store[0 : centers.n_classes]))
    if isinstance(centers, TableCenters):
        return _TableHead(centers.table)
    raise TypeError(f"no decision rule for {type(centers).__name__}")


class DecisionModule(nn.Module):
    """``inputs -> (label [B], score [B], new_class [B])``: normalization, the model, the label rule (module doc).

    Args:
        model: the run's model (eval mode is set here).
        centers: the run's centers, ``None`` for cross-entropy.
        preprocess: the run's ``preprocess`` (mean and std applied to ``[B, C, H, W]`` inputs in ``[0, 1]``);
            ``None`` for runs on features (inputs are passed to the model as they are).
        threshold: rows scoring below it are flagged ``new_class`` too (``None``: only the label rule flags).
    """

    def __init__(
        self,
        model: nn.Module,
        centers: Centers | None,
        preprocess: dict[str, Any] | None,
        threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.model, self.head = model.eval(), decision_head(centers)
        self.images = preprocess is not None
        if self.images:
            self.register_buffer("mean", torch.tensor(preprocess["mean"], dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(preprocess["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.threshold = None if threshold is None else float(threshold)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for inputs in the module's convention (embeddings; logits for cross-entropy)."""
        if self.images:
            x = (x - self.mean) / self.std
        return self.model(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        label, score, new = self.head(self.embed(x))
        if self.threshold is not None:
            new = new | ~(score >= self.threshold)  # NaN scores are flagged too
        return label, score, new


class Classifier:
    """A finished ``lscdistill train`` run, ready to label inputs (build it with :func:`load`).

    ``predict`` and ``embed`` take a float tensor ``[B, C, H, W]`` of pixels in ``[0, 1]`` at the run's image size
    (``[B, in_dim]`` features for runs on features), or PIL images / image file paths, which go through the run's
    evaluation transform (timm's: resize, center crop, to ``[0, 1]``). They run without gradients, in eval mode.

    Attributes:
        module: the :class:`DecisionModule` (what :func:`lscdistill.export.export_run` writes to a file).
        meta: the run's ``model.json``. ``class_names``: names of the classes, when the run has them.
        preprocess: image size, mean, std, interpolation, crop fraction of the run (``None`` for features).
    """

    def __init__(self, module: DecisionModule, meta: dict[str, Any], device: torch.device) -> None:
        self.module, self.meta, self.device = module.to(device), meta, device
        self.preprocess = meta.get("preprocess") if module.images else None
        self.class_names = meta.get("class_names")

    def __repr__(self) -> str:
        return f"Classifier({self.meta['model']['architecture']}, {self.meta['objective']}, {self.n_classes:,} classes)"

    @property
    def n_classes(self) -> int:
        return int(self.meta["n_classes"])

    def inputs(self, x) -> torch.Tensor:
        """Inputs as the module takes them: tensors as they are, PIL images and paths through the run's transform."""
        if isinstance(x, torch.Tensor):
            return x.to(self.device, torch.float32)
        if isinstance(x, np.ndarray):
            return torch.from_numpy(x).to(self.device, torch.float32)
        if not self.module.images:
            raise ValueError("this run was trained on features: give a [B, in_dim] tensor or array")
        items = list(x) if isinstance(x, list | tuple) else [x]
        return torch.stack([self._transform(_open_image(item)) for item in items]).to(self.device)

    @functools.cached_property
    def _transform(self):
        from timm.data import create_transform

        p = self.preprocess
        size = int(p["img_size"])
        # mean 0 / std 1: the module normalizes; the transform only resizes, crops and scales to [0, 1]
        return create_transform(
            (3, size, size),
            is_training=False,
            interpolation=p.get("interpolation", "bilinear"),
            crop_pct=float(p.get("crop_pct", 1.0)),
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        )

    @torch.inference_mode()
    def embed(self, x) -> torch.Tensor:
        """Embeddings ``[B, D]`` (logits for a cross-entropy run)."""
        return self.module.embed(self.inputs(x))

    @torch.inference_mode()
    def predict(self, x) -> Decision:
        """``Decision(labels, scores, new_class)`` for a batch (see the module doc for the rule)."""
        return Decision(*self.module(self.inputs(x)))


def _open_image(item):
    from PIL import Image

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    path = Path(item)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


CALIBRATED = "calibrated"
#: calibrations whose score the module computes: cosine to the center (fast_cosine: the same with the fast rule,
#: which the module applies anyway) and the softmax probability of cross-entropy runs
MODULE_SCORES = ("cosine", "fast_cosine", "softmax")


def run_threshold(run_dir: str | Path, threshold: float | str | None = CALIBRATED) -> float | None:
    """The new-class threshold for a run's module: ``"calibrated"``: the run's calibration (``openset.json``,
    written by ``train`` from its validation split or by ``evaluate --calibrate``) when it has one, else none; a
    number: that; ``None``: none (only the label rule flags)."""
    if threshold != CALIBRATED:
        return None if threshold is None else float(threshold)
    from .openset import load_calibration

    calibration = load_calibration(run_dir)
    if calibration is None:
        return None
    if calibration.score not in MODULE_SCORES:
        raise ValueError(
            f"{run_dir} is calibrated on the {calibration.score!r} score, which the exported decision does not "
            f"compute; recalibrate with `lscdistill evaluate {run_dir} --data VAL --calibrate --score cosine`, or give "
            "a threshold"
        )
    return calibration.threshold


def load(
    run_dir: str | Path, device: str | torch.device | None = None, threshold: float | str | None = CALIBRATED
) -> Classifier:
    """A finished run as a :class:`Classifier` on ``device`` (default: CUDA when available, else CPU).

    ``threshold``: rows scoring below it are flagged as new classes too (see :class:`DecisionModule`); by default
    the run's calibrated threshold (:func:`run_threshold`), ``None`` for the label rule alone."""
    threshold = run_threshold(run_dir, threshold)
    model, centers, meta = load_run(run_dir)
    try:
        preprocess = meta.get("preprocess") if meta["model"]["architecture"] != "mlp" else None
        module = DecisionModule(model, centers, preprocess, threshold)
    finally:
        if centers is not None:
            centers.close()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Classifier(module, meta, device)


def describe(meta: dict[str, Any], module: DecisionModule) -> str:
    """JSON stored beside an exported module: what goes in, what comes out, where it came from."""
    inputs = (
        {"kind": "images", "layout": "[B, 3, H, W] float32 in [0, 1]", **(meta.get("preprocess") or {})}
        if module.images
        else {"kind": "features", "layout": f"[B, {meta['model'].get('in_dim')}] float32"}
    )
    outputs = {"label": "[B] int64, -1: new class or NaN input", "score": "[B] float32", "new_class": "[B] bool"}
    keep = ("format_version", "lscdistill", "model", "objective", "n_classes", "centers", "class_names")
    return json.dumps(
        {"inputs": inputs, "outputs": outputs, "threshold": module.threshold, "run": {k: meta.get(k) for k in keep}}
    )
