"""``lscdistill export``: a finished run as one self-contained file (torch.export or ONNX)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._common import JsonOpt, err_console, handle_errors


@handle_errors
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished `lscdistill train` run directory.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The file to write: .pt2 (torch.export) or .onnx (needs onnx).")
    ],
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Also flag rows whose score (cosine to the center) is below this. Default: the run's calibrated "
            "threshold (openset.json) when it has one.",
        ),
    ] = None,
    uncalibrated: Annotated[
        bool, typer.Option("--uncalibrated", help="No threshold: only the label rule flags new classes.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Write the run's whole inference, images in [0, 1] -> (label, score, new_class), as one file that loads
    without lscdistill: `torch.export.load(FILE).module()(images)` or onnxruntime.

    The run's normalization is inside; resize images to the run's size first (stored in the file's description).
    Generated centers decode by the fast O(n_dim) rule inside the graph (the file's size does not grow with the
    classes); class means and snapped stores carry their table. The file is checked against the run before it is
    kept.

    Example: `lscdistill export runs/digits --out digits.pt2`
    """
    from ..export import export_run
    from ..inference import CALIBRATED

    if uncalibrated and threshold is not None:
        raise ValueError("give --threshold or --uncalibrated, not both")
    chosen = None if uncalibrated else CALIBRATED if threshold is None else threshold
    result = export_run(run_dir, out, threshold=chosen, overwrite=overwrite)
    if json_:
        typer.echo(json.dumps(result))
        return
    rule = "no threshold" if result["threshold"] is None else f"new class below score {result['threshold']:.4f}"
    err_console.print(
        f"{result['format']}: {result['n_classes']:,} classes, {rule}, {result['bytes'] / 2**20:.2f} MiB",
        highlight=False,
    )
    typer.echo(result["path"])
