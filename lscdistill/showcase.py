"""The vector-system showcase behind ``lscdistill demo`` (until the full pipeline demo lands)."""

from __future__ import annotations

import time

import torch
from rich.console import Console
from rich.table import Table

from .centers import SystemCenters
from .decode import exact_nearest
from .planner import plan
from .systems import create_system

__all__ = ["run_showcase"]

SHOWCASE = (
    ("A_n (paper, drop-last)", "an", {}),
    ("A_n orthonormal", "an", {"projection": "orthonormal"}),
    ("A_n + 1 interpolation", "an", {"interpolations": 1}),
    ("A_np (positive roots)", "anp", {}),
    ("V21", "v21", {}),
    ("V22", "v22", {}),
)


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run_showcase(n_dim: int = 384, batch: int = 1024, seed: int = 0, console: Console | None = None) -> dict:
    """Print the systems at ``n_dim``, then decode noisy embeddings of A_nr fast and by brute force.

    Returns the measured figures (also printed) so callers and tests can check them.
    """
    console = console or Console()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, n_dim, generator=gen)

    table = Table(title=f"Vector systems at n_dim = {n_dim} (no table of vectors is ever built)")
    for col in ("system", "vectors", "min angle", f"fast nearest, batch {batch}"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for label, name, kwargs in SHOWCASE:
        system = create_system(name, n_dim, seed=seed, **kwargs)
        seconds, _ = _timed(lambda s=system: s.nearest(z))
        table.add_row(label, f"{len(system):,}", f"{system.min_angle:.2f}°", f"{seconds * 1e3:.1f} ms")
    console.print(table)

    system = create_system("an", n_dim, seed=seed)
    centers = SystemCenters(system, len(system))
    labels = torch.randint(0, len(system), (batch,), generator=gen)
    noisy = centers.gather(labels) + 0.6 / n_dim**0.5 * torch.randn(batch, n_dim, generator=gen)
    fast_s, (fast_idx, fast_cos) = _timed(lambda: system.nearest(noisy))
    brute_s, (brute_idx, brute_cos) = _timed(
        lambda: exact_nearest(noisy, lambda a, b: system.vectors(torch.arange(a, b)), n_rows=len(system)), repeats=1
    )
    result = {
        "n_classes": len(system),
        "agreement": float((fast_idx == brute_idx).float().mean()),
        "max_cosine_gap": float((brute_cos - fast_cos).abs().max()),
        "recovered": float((fast_idx == labels).float().mean()),
        "fast_ms": fast_s * 1e3,
        "brute_ms": brute_s * 1e3,
    }
    mean_cos = float(torch.nn.functional.cosine_similarity(noisy, centers.gather(labels)).mean())
    console.print(
        f"\n[bold]A_{n_dim}r[/], all {len(system):,} roots as classes, {batch} noisy embeddings "
        f"(mean cosine to their center {mean_cos:.2f}):"
    )
    console.print(
        f"  fast decoder (top/bottom coordinates): {result['fast_ms']:.1f} ms | brute force over all centers: "
        f"{result['brute_ms']:.0f} ms | [bold green]{result['brute_ms'] / result['fast_ms']:.0f}x faster[/]"
    )
    console.print(
        f"  same label as brute force: {result['agreement']:.1%} (largest cosine gap {result['max_cosine_gap']:.1e}); "
        f"true class recovered: {result['recovered']:.1%}"
    )
    console.print("\n[bold]Smallest n_dim[/] with one interpolation level (paper §5.4):")
    for n_classes in (300_000, 600_000, 1_281_167):
        p = plan(n_classes, "an", interpolations=1)
        console.print(f"  {n_classes:>9,} classes -> A_{p.n_dim} ({p.size:,} vectors)")
    return result
