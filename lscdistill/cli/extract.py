"""``lscdistill extract``: teacher pass -> per-class mean embeddings store."""

from __future__ import annotations

import sys
from dataclasses import replace

import typer

from ..extract import ExtractConfig
from ._common import config_command, err_console, parse_floats, parse_shard


@config_command(
    ExtractConfig,
    mean=lambda text: parse_floats(text, "--mean"),
    std=lambda text: parse_floats(text, "--std"),
    shard=parse_shard,
)
def extract_command(cfg: ExtractConfig) -> None:
    """Run a teacher over labeled data and store each class's mean embedding (CEembs, paper §4.3).

    Distributed: `accelerate launch -m lscdistill extract ...` or `torchrun --nproc_per_node N -m lscdistill ...`;
    each process takes every N-th sample and the sums are reduced exactly before the one store is written.
    """
    from ..extract import run_extract

    cfg = replace(cfg, command=" ".join(["lscdistill", *sys.argv[1:]]))
    result = run_extract(cfg)
    if result.path is None:
        return
    if not cfg.quiet:
        err_console.print(
            f"{result.samples:,} samples, {result.n_classes:,} classes x {result.n_dim} dims, "
            f"{result.empty_classes:,} empty classes, {result.seconds:.1f} s ({result.throughput:,.0f} samples/s)",
            highlight=False,
        )
    typer.echo(str(result.path))
