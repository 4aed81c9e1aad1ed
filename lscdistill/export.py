"""``lscdistill export``: a run's whole inference (:class:`lscdistill.inference.DecisionModule`) as one file that a
serving stack loads without lscdistill.

Formats, by the output's suffix:

- ``.pt2``: ``torch.export`` (``torch.export.load(path).module()(images)``), with the batch dimension dynamic;
  the description (inputs, preprocessing, outputs, threshold, the run's model and centers) is stored in the
  archive as ``extra/lscdistill.json``.
- ``.onnx``: ONNX through ``torch.onnx.export(dynamo=True)`` when ``onnx`` and ``onnxscript`` are installed
  (``pip install 'lscdistill[onnx]'``); the description is the model's ``lscdistill`` metadata property.

The file's size is the model's plus, for class means and snapped stores, the table of n_classes rows (see the
inference module); for generated centers it is the same at 10 and 10,000,000 classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .files import atomic_file
from .inference import CALIBRATED, DecisionModule, describe, load
from .stores.writer import check_output_path

__all__ = ["FORMATS", "export_module", "export_run", "read_description"]

FORMATS = {".pt2": "torch.export", ".onnx": "onnx"}
EXTRA = "lscdistill.json"  # name of the description inside a .pt2 archive
EXAMPLE_BATCH = 2  # traced with this many rows; the batch dimension stays dynamic


def _check_format(out: Path) -> str:
    if out.suffix not in FORMATS:
        raise ValueError(f"--out must end in {' or '.join(FORMATS)} (torch.export or ONNX), got {out.name}")
    if FORMATS[out.suffix] == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ValueError(
                "ONNX export needs the onnx and onnxscript packages: pip install 'lscdistill[onnx]'"
            ) from None
    return FORMATS[out.suffix]


def example_inputs(module: DecisionModule, meta: dict[str, Any], batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """Inputs of the shape the module takes (random pixels in [0, 1], or random features)."""
    gen = torch.Generator().manual_seed(0)
    if module.images:
        size = int(meta["preprocess"]["img_size"])
        chans = int(meta["model"].get("in_chans") or 3)
        return torch.rand(batch, chans, size, size, generator=gen)
    return torch.randn(batch, int(meta["model"]["in_dim"]), generator=gen)


def export_module(module: DecisionModule, example: torch.Tensor, out: str | os.PathLike, description: str) -> None:
    """Write ``module`` to ``out`` (format by suffix) atomically: no file is left behind if anything fails."""
    out = Path(out)
    fmt = _check_format(out)
    module = module.eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with torch.inference_mode(False), torch.no_grad(), atomic_file(out) as tmp:
        if fmt == "torch.export":
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, tmp, extra_files={EXTRA: description})
        else:
            program = torch.onnx.export(
                module,
                (example,),
                dynamic_shapes=({0: batch},),
                input_names=["inputs"],
                output_names=["label", "score", "new_class"],
                dynamo=True,
                verbose=False,
            )
            program.model.metadata_props["lscdistill"] = description
            program.save(str(tmp))


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    threshold: float | str | None = CALIBRATED,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a finished run to ``out`` (``.pt2`` or ``.onnx``) and check the file against the run: the loaded
    artifact must give the run's labels on example inputs. ``threshold``: as in :func:`lscdistill.load` (default:
    the run's calibrated one). Returns what was written (path, format, bytes, threshold)."""
    out = Path(out)
    fmt = _check_format(out)
    check_output_path(out, overwrite)
    classifier = load(run_dir, device="cpu", threshold=threshold)
    module, meta = classifier.module, classifier.meta
    example = example_inputs(module, meta)
    description = describe(meta, module)
    export_module(module, example, out, description)
    try:
        _check_artifact(out, module, example_inputs(module, meta, batch=3))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return {
        "path": str(out),
        "format": fmt,
        "bytes": out.stat().st_size,
        "n_classes": classifier.n_classes,
        "threshold": module.threshold,
    }


def load_artifact(path: str | os.PathLike):
    """A callable ``inputs -> (label, score, new_class)`` from an exported file (what a server does, in torch)."""
    path = Path(path)
    if path.suffix == ".pt2":
        return torch.export.load(path).module()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor):
        return tuple(torch.from_numpy(v) for v in session.run(None, {"inputs": x.numpy()}))

    return run


def _check_artifact(path: Path, module: DecisionModule, x: torch.Tensor) -> None:
    with torch.no_grad():
        want = module(x)
    got = load_artifact(path)(x)
    if not torch.equal(got[0], want[0]):
        raise RuntimeError(f"the exported {path.name} gives other labels than the run ({got[0]} vs {want[0]})")


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    """The description stored in an exported file."""
    path = Path(path)
    if path.suffix == ".pt2":
        extra = {EXTRA: ""}
        torch.export.load(path, extra_files=extra)
        return json.loads(extra[EXTRA])
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}["lscdistill"])
