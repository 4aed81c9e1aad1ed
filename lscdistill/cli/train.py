"""``lscdistill train | evaluate | predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..evaluate import EvalConfig
from ..options import DATA_HELP, FEATURES_HELP, LABELS_HELP
from ..progress import is_main_process
from ..train import TrainConfig
from ._common import JsonOpt, Workers, config_command, err_console, handle_errors, out_console

Data = Annotated[str | None, typer.Option("--data", help=DATA_HELP)]
Features = Annotated[str | None, typer.Option("--features", help=FEATURES_HELP)]
Labels = Annotated[str | None, typer.Option("--labels", help=LABELS_HELP)]
Cpu = Annotated[bool, typer.Option("--cpu", help="Run on the CPU even if a GPU is present.")]


@config_command(TrainConfig)
def train_command(cfg: TrainConfig) -> None:
    """Train a student toward fixed class centers (LSC), or a cross-entropy baseline/teacher.

    Centers: --centers STORE, or a generated system (default A_nr: --system an --system-seed 0, dimension from
    --n-dim or the model). Only the centers of a batch's labels reach the device, so device memory does not depend
    on the number of classes. Multi-process: `accelerate launch -m lscdistill train ...` or `torchrun`.
    """
    from ..train import run_train

    result = run_train(cfg)
    if not is_main_process():
        return
    if result.mode_check and "warning" in result.mode_check:  # shown with --quiet too
        err_console.print(f"[yellow]warning:[/] {escape(result.mode_check['warning'])}", soft_wrap=True)
    if cfg.quiet:
        return
    final = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.final.items())
    err_console.print(f"{result.steps} steps in {result.seconds:.1f} s" + (f"; validation: {final}" if final else ""))
    if result.continual:
        c = result.continual
        err_console.print(
            f"old classes (< {c['old_classes']}): top-1 {c['old_class_top1_before']:.4f} before, "
            f"{c['old_class_top1_after']:.4f} after"
        )
    typer.echo(str(result.run_dir))


@config_command(EvalConfig)
def evaluate_command(cfg: EvalConfig, json_: JsonOpt = False) -> None:
    """Accuracy of a run: top-1 by exact decoding (nearest assigned center) and by fast O(n_dim) decoding,
    their agreement, unassigned-vector flags, and top-5 where cheap (<= 10,000 classes). With --unseen-data: AUROC,
    FPR at 95% TPR and flag rates on known and unseen samples of each open-set score. With --calibrate: a new
    threshold for `predict`'s new_class, accepting --accept of this data."""
    from ..evaluate import run_evaluate

    result = run_evaluate(cfg)
    if not is_main_process():
        return
    if json_:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_table(cfg.run_dir, result)
    if cfg.unseen_data is not None or cfg.unseen_features is not None:
        if result["open_set"]["calibration"] is None and not cfg.calibrate:
            err_console.print(f"note: no calibrated flag rates: {escape(_no_calibration(cfg.run_dir))}", soft_wrap=True)


def _print_table(run_dir: Path, result: dict) -> None:
    """``evaluate``'s metrics as a table on stdout, one row per (flattened) metric."""
    from rich.table import Table

    table = Table(title=f"{run_dir} ({result['objective']}, {result['n_classes']:,} classes)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in _flat(result):
        if key in ("run", "objective", "n_classes") or key.startswith(("open_set.calibration.", "calibration.data")):
            continue
        table.add_row(key, _cell(value))
    out_console.print(table)


def _cell(value) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(str(value))
    return f"{value:.4f}" if isinstance(value, float) else f"{value:,}"


def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif v is not None:
            yield f"{prefix}{k}", v


def _no_calibration(run_dir: Path) -> str:
    from ..openset import no_calibration_message

    return no_calibration_message(run_dir)


@handle_errors
def predict_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished `lscdistill train` run directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Predictions file: .csv or .npz.")],
    data: Data = None,
    features: Features = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Not needed; accepted for symmetry.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 256,
    workers: Workers = None,
    cpu: Cpu = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    require_calibration: Annotated[
        bool,
        typer.Option(
            "--require-calibration", help="Fail (and write nothing) unless the run has a new-class calibration."
        ),
    ] = False,
) -> None:
    """Predict a label per sample: columns index, label (exact), score (cosine, or softmax for CE); for centers
    with fast decoding fast_label and unassigned (the fast decoder's nearest vector belongs to no class); with the
    run's calibration (openset.json) open_score and new_class (open_score below the calibrated threshold)."""
    from ..evaluate import run_predict

    cfg = EvalConfig(run_dir, data, features, labels, batch_size=batch_size, cpu=cpu, workers=workers)
    result = run_predict(cfg, out, overwrite, require_calibration)
    err_console.print(f"{result['samples']:,} predictions ({', '.join(result['columns'])})", highlight=False)
    if result["calibration"] is None:
        err_console.print(f"note: no new_class column: {escape(_no_calibration(run_dir))}", soft_wrap=True)
    typer.echo(result["path"])
