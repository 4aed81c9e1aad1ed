"""``lscdistill demo``: a quick showcase of the vector systems and the fast decoder."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import handle_errors


@handle_errors
def demo_command(
    n_dim: Annotated[int, typer.Option("--n-dim", help="Latent dimension of the showcased systems.", min=4)] = 384,
    batch: Annotated[int, typer.Option("--batch", help="Embeddings decoded per timing.", min=1)] = 1024,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffled systems and the random data.")] = 0,
) -> None:
    """Build the vector systems, decode noisy embeddings fast and by brute force, and compare.

    For now this showcases the vector-system core (the training pipeline joins it as it lands).
    """
    from ..showcase import run_showcase

    run_showcase(n_dim=n_dim, batch=batch, seed=seed)
