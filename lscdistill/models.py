"""timm models for teachers and students: construction, safe checkpoint loading, pre-logits embeddings."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import atomic_file

__all__ = [
    "MLP",
    "PROJECTIONS",
    "Student",
    "build_student",
    "checkpoint_sha256",
    "create_teacher",
    "embed",
    "load_run_model",
    "load_state_dict",
    "parse_model_kwargs",
    "resolve_checkpoint",
    "save_run_model",
    "signed_features",
    "unwrap",
]

RUN_WEIGHTS, RUN_META = "model.safetensors", "model.json"  # what a `lscdistill train` run directory holds


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """A weights file, or a run directory (``model.safetensors`` + ``model.json``): ``(weights, metadata)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        weights, meta = path / RUN_WEIGHTS, path / RUN_META
        if not weights.is_file():
            raise FileNotFoundError(f"{path} is a directory without {RUN_WEIGHTS}: not an lscdistill run directory")
        return weights, json.loads(meta.read_text()) if meta.is_file() else {}
    return path, {}


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.pt/.pth`` file loaded with ``weights_only=True``.

    Neither format can run code. Common wrappers (``state_dict``, ``model``; ``module.`` and torch.compile's
    ``_orig_mod.`` prefixes) are removed.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError):
            reason = "not a tensor checkpoint, or it holds objects that only an unsafe load could restore"
        else:
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        raise ValueError(f"cannot read checkpoint {path} ({reason}); checkpoints are loaded safely") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def unwrap(accelerator, model: nn.Module) -> nn.Module:
    """The plain module under Accelerate's wrappers: without DDP and without ``torch.compile`` (whose state dict
    names every tensor ``_orig_mod.*``), as it is evaluated, averaged and saved."""
    model = accelerator.unwrap_model(model)
    return getattr(model, "_orig_mod", model)


def checkpoint_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def create_teacher(
    name: str | None,
    checkpoint: str | os.PathLike | None = None,
    *,
    in_chans: int = 3,
    kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A timm model without its classifier (``num_classes=0``), with weights from a local checkpoint; ``kwargs``
    go to ``timm.create_model`` (a run directory records its own).

    A checkpoint of the same architecture trained *with* a classifier loads too: its classifier weights are
    ignored. Any other mismatch (missing or unexpected backbone weights, wrong shapes) is an error.
    """
    if checkpoint is not None:
        weights, _ = resolve_checkpoint(checkpoint)
        if Path(checkpoint).is_dir():  # a `lscdistill train` run: its own student, embeddings after projection
            model, meta = load_run_model(checkpoint)
            arch = meta["model"]["architecture"]
            if name and name != arch:
                raise ValueError(f"--teacher {name} but the run directory {checkpoint} holds a {arch} model")
            if kwargs:
                raise ValueError(f"--model-kwargs: the run directory {checkpoint} records its model's own")
            return model
    if not name or name == "mlp":
        raise ValueError("give a timm model name with --teacher (or a run directory that records it)")
    model = build_student({"architecture": name, "in_chans": in_chans, "kwargs": kwargs}).backbone
    if checkpoint is not None:
        _load_into(model, load_state_dict(weights), weights, name)
    return model.eval()


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    head = _classifier_prefixes(model)
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise ValueError(f"checkpoint {path} does not fit the timm model {name!r}: {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-logits embeddings, what a classifier layer sees (the paper's CEembs): ``[B, num_features]``.

    For a :class:`Student` (a ``lscdistill train`` run) this is its embedding, after the projection.
    """
    if isinstance(model, Student):
        return model.embed(x)
    return model.forward_head(model.forward_features(x), pre_logits=True)


def parse_model_kwargs(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as keyword arguments for ``timm.create_model`` (timm ``train.py``'s
    ``--model-kwargs``): values are Python literals where they parse as one (``4``, ``0.1``, ``True``,
    ``(32, 32)``), text otherwise."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-kwargs {item!r}: expected KEY=VALUE, e.g. patch_size=4")
        try:
            kwargs[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            kwargs[key] = text.strip()
    return kwargs


# ------------------------------------------------------------------------------------------------ students
class MLP(nn.Module):
    """A small MLP for precomputed features: ``in_dim -> hidden -> hidden`` with GELU and LayerNorm."""

    def __init__(self, in_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.num_features = hidden
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


PROJECTIONS = ("auto", "linear", "none")  # what a Student puts between its backbone and its embedding


def signed_features(backbone: nn.Module) -> bool:
    """Whether the backbone's pre-logits features can take either sign: its last module with parameters is a
    LayerNorm with no activation registered after it (a ViT's final ``norm``/``fc_norm``, a ConvNeXt head's
    ``norm``), not a BatchNorm or convolution followed by ReLU/SiLU and pooling (CNN features are non-negative or
    nearly so). Judged from the order modules are registered in, which is the forward order in timm's models."""
    modules = list(backbone.modules())
    owners = [i for i, m in enumerate(modules) if next(m.parameters(recurse=False), None) is not None]
    if not owners or not isinstance(modules[owners[-1]], nn.LayerNorm):
        return False
    after = modules[owners[-1] + 1 :]  # an activation after the norm (e.g. EfficientViT's head) clips the signs
    return not any(isinstance(m, _ACTIVATIONS) for m in after)


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.ELU, nn.LeakyReLU, nn.Softplus)


class Student(nn.Module):
    """Backbone (timm, ``num_classes=0``, or :class:`MLP`) -> optional linear projection to ``n_dim`` -> optional
    linear classifier head (``n_classes``, only for the cross-entropy objective).

    ``embed(x)`` is what LSC trains toward the class centers (and what ``extract`` reads from a CE teacher run):
    the backbone's pre-logits features, through the projection. ``project`` says when there is one:

    - ``"linear"`` (or ``True``): always a ``Linear(width, n_dim)``. ``lscdistill train`` uses it for LSC students
      by default: pooled CNN features come after a ReLU (and the MLP's after a GELU), so without a linear layer they
      cannot have the negative coordinates of an A_n root (cosine stalls at 1/sqrt(2)).
    - ``"auto"`` (or ``False``): only when ``n_dim`` differs from the backbone's width.
    - ``"none"``: never; ``n_dim`` must equal the width. For backbones whose features can already take either sign,
      e.g. a ViT's final LayerNorm output (the paper's Table 9 ViT-S has no extra layer).

    The projection's size is ``width x n_dim`` (+ ``n_dim``), independent of the number of classes.
    """

    def __init__(
        self, backbone: nn.Module, n_dim: int | None = None, n_classes: int | None = None, project: bool | str = False
    ) -> None:
        super().__init__()
        mode = {True: "linear", False: "auto"}.get(project, project) if isinstance(project, bool) else project
        if mode not in PROJECTIONS:
            raise ValueError(f"projection layer must be one of {', '.join(PROJECTIONS)}, got {project!r}")
        self.backbone = backbone
        width = int(backbone.num_features)
        self.n_dim = int(n_dim or width)
        if mode == "none" and self.n_dim != width:
            raise ValueError(
                f"no projection layer: the embedding is the backbone's output, {width} wide, but n_dim is "
                f"{self.n_dim} (use --n-dim {width}, or a linear projection layer)"
            )
        linear = mode == "linear" or (mode == "auto" and self.n_dim != width)
        self.proj = nn.Linear(width, self.n_dim) if linear else nn.Identity()
        self.head = nn.Linear(self.n_dim, n_classes) if n_classes else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        z = b(x) if isinstance(b, MLP) else b.forward_head(b.forward_features(x), pre_logits=True)
        return self.proj(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, n_dim]`` (LSC), or logits ``[B, n_classes]`` when the student has a head (CE)."""
        z = self.embed(x)
        return z if self.head is None else self.head(z)


def build_student(spec: dict[str, Any]) -> Student:
    """A student from its description (``model.json``'s ``model`` entry): ``architecture`` (timm name or
    ``mlp``), ``in_dim`` (mlp), ``hidden`` (mlp), ``in_chans``, ``kwargs`` (more ``timm.create_model`` arguments),
    ``n_dim``, ``n_head_classes``, ``project`` (``True``/``"linear"``, ``False``/``"auto"`` or ``"none"``: see
    :class:`Student`)."""
    arch, kwargs = spec["architecture"], dict(spec.get("kwargs") or {})
    if arch == "mlp":
        if kwargs:
            raise ValueError(f"model keyword arguments {sorted(kwargs)} are for timm models, not the --features MLP")
        backbone = MLP(int(spec["in_dim"]), int(spec.get("hidden", 256)))
    else:
        import timm

        in_chans = int(spec.get("in_chans", 3))
        try:
            backbone = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        except RuntimeError as exc:
            raise ValueError(f"unknown timm model {arch!r}: {exc}") from None
        except TypeError as exc:  # a keyword the architecture does not take
            raise ValueError(f"timm model {arch!r} does not take the keyword arguments {kwargs}: {exc}") from None
    return Student(backbone, spec_n_dim(spec), spec.get("n_head_classes"), spec.get("project", False))


def spec_n_dim(spec: dict[str, Any]) -> int | None:
    """A model description's embedding size (``n_dim``; ``dim`` in runs written before the name was unified)."""
    return spec.get("n_dim", spec.get("dim"))


def save_run_model(run_dir: str | os.PathLike, model: Student, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` into a run directory (each atomically)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_file(run_dir / RUN_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    with atomic_file(run_dir / RUN_META) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")


def load_run_model(run_dir: str | os.PathLike) -> tuple[Student, dict[str, Any]]:
    """The final model of a ``lscdistill train`` run and its self-description (``model.json``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    meta_path = run_dir / RUN_META
    if not meta_path.is_file() or not (run_dir / RUN_WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {RUN_WEIGHTS} + {RUN_META}: not a finished lscdistill run (still training, or "
            "interrupted: continue it with `lscdistill train ... --resume`)"
        )
    try:
        meta = json.loads(meta_path.read_text())
        spec = meta["model"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{meta_path} is not a valid lscdistill model description ({exc})") from None
    model = build_student(spec)
    state = load_state_dict(run_dir / RUN_WEIGHTS)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{run_dir / RUN_WEIGHTS} does not match {meta_path}: {first}") from None
    model.preprocess = meta.get("preprocess")  # how its inputs were made (used by resolve_preprocess)
    return model.eval(), meta
