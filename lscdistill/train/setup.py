"""What a run trains, built and checked against each other before anything is written: the student (a timm
backbone or an MLP for features, with its projection; ``--init-from`` weights), its data, its centers (a generated
system or a store; none for cross-entropy) and its loss, and the run's ``model.json`` description (:class:`Setup`)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..centers import Centers, StoreCenters
from ..data import LabeledData, Preprocess, load_features, load_images, resolve_preprocess, use_instance_labels
from ..losses import create_loss
from ..models import (
    PROJECTIONS,
    Student,
    build_student,
    load_run_model,
    parse_model_kwargs,
    signed_features,
    spec_n_dim,
)
from ..rundir import create_centers
from ..systems import current_options
from .config import TrainConfig, saved_config

__all__ = ["Setup", "build_setup"]


@dataclass
class Setup:
    """What a run trains: the student, its data, its centers (None: cross-entropy head), its loss, ``model.json``."""

    model: Student
    train_data: LabeledData
    val_data: LabeledData | None
    centers: Centers | None
    loss_fn: torch.nn.Module
    meta: dict[str, Any]
    init_meta: dict[str, Any] | None


def _student_spec(cfg: TrainConfig) -> tuple[dict[str, Any], LabeledData | None, dict[str, Any] | None, Any]:
    """The student's description (``model.json``'s ``model``), the training features (for ``--features``), the
    centers store's facts and the ``--init-from`` run ``(model, meta)`` (or None)."""
    arch = cfg.model or ("mlp" if cfg.features is not None else None)
    if arch is None:
        raise ValueError("give --model (a timm model name)")
    if cfg.features is not None and arch != "mlp":
        raise ValueError("--features train a small MLP: drop --model (or pass --model mlp)")
    if cfg.features is None and arch == "mlp":
        raise ValueError("--model mlp is for --features; give a timm model name for images")
    features = None
    if cfg.features is not None:
        if not cfg.labels:
            raise ValueError("--features needs --labels")
        features = load_features(cfg.features, cfg.labels)
    store = _store_facts(cfg.centers) if cfg.centers is not None else None
    n_dim = cfg.n_dim or (store["n_dim"] if store is not None else None)
    if store is not None and n_dim != store["n_dim"]:
        raise ValueError(
            f"--centers {cfg.centers} has n_dim {store['n_dim']} but --n-dim is {n_dim}: the student must embed "
            f"to the centers' dimension (drop --n-dim, or snap/extract the centers at {n_dim} dims)"
        )
    in_dim = features.n_dim if features is not None else None
    spec = {"architecture": arch, "in_dim": in_dim, "hidden": cfg.hidden, "in_chans": 3, "n_dim": n_dim}
    if cfg.model_kwargs:
        spec["kwargs"] = parse_model_kwargs(cfg.model_kwargs)
    spec["project"] = _project(cfg)
    init = None
    if cfg.init_from is not None:
        init = load_run_model(cfg.init_from)
        old = init[1]["model"]
        if old["architecture"] != arch or (n_dim is not None and spec_n_dim(old) != n_dim):
            raise ValueError(
                f"--init-from {cfg.init_from} holds {old['architecture']} with n_dim {spec_n_dim(old)}; "
                f"this run asks for {arch} with n_dim {n_dim}"
            )
        if (old.get("kwargs") or {}) != spec.get("kwargs", {}):
            raise ValueError(
                f"--init-from {cfg.init_from} was built with --model-kwargs {old.get('kwargs') or {}}; "
                f"this run asks for {spec.get('kwargs', {})}"
            )
        spec["n_dim"] = spec_n_dim(old)
    return spec, features, store, init


def _project(cfg: TrainConfig) -> bool | str:
    """``model.json``'s ``project`` for ``--projection-layer``: ``True`` (linear), ``False`` (only when the widths
    differ) or ``"none"``. ``auto`` is linear for LSC (CNN and MLP features end in ReLU/GELU, centers need signs),
    except for backbones whose features take both signs at the width asked for (:func:`_signed_auto`)."""
    if cfg.projection_layer not in PROJECTIONS:
        raise ValueError(f"--projection-layer must be one of {', '.join(PROJECTIONS)}, got {cfg.projection_layer!r}")
    if cfg.projection_layer == "none":
        return "none"
    return cfg.projection_layer == "linear" or cfg.objective == "lsc"


def _signed_auto(cfg: TrainConfig, spec: dict[str, Any], probe) -> bool:
    """``--projection-layer auto`` for an LSC student whose backbone ends in a LayerNorm (a ViT: features of both
    signs, :func:`~lscdistill.models.signed_features`) and whose ``--n-dim`` is its width (or not given): no projection
    layer, as the paper's ViT-S. Measured on MNIST with ``test_vit`` (docs/training.md, "Projection")."""
    if cfg.projection_layer != "auto" or cfg.objective != "lsc" or spec.get("architecture") == "mlp":
        return False
    return signed_features(probe.backbone) and probe.n_dim == int(probe.backbone.num_features)


def build_setup(cfg: TrainConfig, cleanup: contextlib.ExitStack) -> Setup:
    """Model first (its data config decides the preprocessing), then data, then centers; checked against each
    other before anything is written."""
    spec, train_data, store, init = _student_spec(cfg)
    probe = build_student(spec)
    if _signed_auto(cfg, spec, probe):  # an LSC student whose features already take both signs: no extra layer
        spec["project"] = "none"
        probe = build_student(spec)
    spec["n_dim"] = n_dim = probe.n_dim
    pre = None
    if cfg.features is None:
        pre = resolve_preprocess(probe.backbone, cfg.data, cfg.img_size)
        train_data = load_images(cfg.data, pre)
    val_data = None
    if cfg.val_data is not None or cfg.val_features is not None:
        val_data = _load(cfg.val_data, cfg.val_features, cfg.val_labels, pre)
    if cfg.instance_labels:
        train_data = use_instance_labels(train_data)
        if val_data is not None:
            raise ValueError("--instance-labels: every sample is its own class, so a validation set cannot share them")
    n_classes = cfg.n_classes or max(train_data.n_classes, val_data.n_classes if val_data else 0)
    if store is not None and cfg.n_classes is None:
        n_classes = store["n_classes"]
    for d, where in ((train_data, "training data"), (val_data, "validation data")):
        if d is not None and int(d.labels.max()) >= n_classes:
            raise ValueError(f"{where}: label {int(d.labels.max())} is outside [0, {n_classes}) of the centers")
    centers_spec = _centers_spec(cfg, n_dim, store) if cfg.objective == "lsc" else {"type": "head"}
    centers = create_centers(centers_spec, n_classes) if cfg.objective == "lsc" else None
    if centers is not None:
        cleanup.callback(centers.close)
        _check_store_covers(centers, train_data.labels, "training data")
    if cfg.objective == "ce":
        spec["n_head_classes"] = n_classes
    model = build_student(spec)
    if init is not None:
        _init_from(model, init[0], cfg)
    if cfg.objective == "lsc":
        loss_fn = create_loss(cfg.loss, radius=cfg.radius, centers=centers, radius_fraction=cfg.radius_fraction)
    else:
        loss_fn = torch.nn.CrossEntropyLoss()
    meta = {
        "format": "lscdistill-run",
        "format_version": 1,
        "lscdistill": __version__,
        "model": spec,
        "objective": cfg.objective,
        "n_classes": n_classes,
        "centers": centers_spec,
        "preprocess": pre.to_dict() if isinstance(pre, Preprocess) else None,
        "class_names": train_data.class_names,
        "data": train_data.description,
    }
    return Setup(model, train_data, val_data, centers, loss_fn, meta, None if init is None else init[1])


def _load(data: str | None, features: str | None, labels: str | None, pre):
    if features is not None:
        if labels is None:
            raise ValueError("--features needs --labels (and --val-features needs --val-labels)")
        return load_features(features, labels)
    return load_images(data, pre)


def _store_facts(path: str) -> dict[str, Any]:
    """What training needs to know of a centers store before building anything (the file is closed again)."""
    from ..stores import open_store

    with open_store(path) as store:
        facts = {"kind": store.kind, "n_dim": store.n_dim, "n_classes": store.n_classes}
        if store.kind == "snapped":  # the decoders rebuild the system from here or from the store
            facts["system"] = json.loads(store.attrs["system"])
    return facts


def _system_options(cfg: TrainConfig) -> dict[str, Any]:
    """Options of the generated system whose defaults changed: today's for a new run; a resumed run keeps those of
    its ``config.json`` (the old meaning where the run is older than the option)."""
    return saved_config(cfg.out)["system_options"] if cfg.resume else current_options(cfg.system)


def _centers_spec(cfg: TrainConfig, n_dim: int, store: dict[str, Any] | None) -> dict[str, Any]:
    if store is not None:
        spec = {"type": "store", "path": str(Path(cfg.centers).resolve()), "kind": store["kind"]}
        return spec | ({"system": store["system"]} if "system" in store else {})
    return {
        "type": "system",
        "name": cfg.system,
        "n_dim": n_dim,
        "seed": cfg.seed_system,
        "interpolations": cfg.interpolations,
        "projection": cfg.projection,
        "options": _system_options(cfg),  # e.g. planar's halving: what this run trains with
    }


def _check_store_covers(centers: Centers, labels: np.ndarray, where: str) -> None:
    """Every class that has training samples must have a center (a means store's empty classes have none)."""
    if not isinstance(centers, StoreCenters) or centers.store.kind != "means":  # snapped: every class has a vector
        return
    present = np.unique(labels)
    empty = present[centers.store.counts[present] == 0]
    if empty.size:
        raise ValueError(
            f"{where} has samples of {empty.size:,} classes that are empty in {centers.store.path} "
            f"(e.g. class {int(empty[0])}): they have no mean to train toward"
        )


def _init_from(model: Student, old: Student, cfg: TrainConfig) -> None:
    """Continual learning: copy the previous run's backbone, and its projection where both students have one (an
    LSC student started from a CE run gets a fresh projection); the head, if any, is new."""
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in [*missing, *unexpected] if not k.startswith(("head.", "proj."))]
    if bad:
        raise ValueError(f"--init-from {cfg.init_from}: weights do not fit this student (e.g. {bad[0]})")
