"""Label prediction: the fast decoder vs brute-force matmul at 147,840 and 1.28M classes (batch 1024, n_dim 384).

    python -m benchmarks.bench_nearest [--quick] [--device cuda] [--batch 1024]

Cases (the paper's sizes):
- 147,840 classes: every root of A_384r is a class, so the fast decoder's answer is the exact label.
- 1,281,167 classes: A_384r with one interpolation level (56.8M vectors); classes are its first 1.28M indices
  (all 147,840 roots, then interpolated vectors). ``fast`` is the O(n_dim) nearest system vector (seed-002 rule,
  with new-class flags); ``exact`` is the nearest *assigned* center through the certified shortlist.

Inputs are embeddings near a class center (cosine ~0.9, like a trained model's) and plain Gaussian ones.
The brute force scores the batch against the materialized center table in chunks of 65,536 rows (building the
table is not timed: it is what a classifier head holds in memory). The floor is one read of the batch.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from lscdistill.centers import SystemCenters
from lscdistill.decode import exact_nearest
from lscdistill.systems import create_system

from ._common import machine, measure, write_result

CASES = {147_840: {"interpolations": 0}, 1_281_167: {"interpolations": 1}}


def run_case(n_classes: int, interpolations: int, batch: int, device: torch.device, quick: bool) -> dict:
    n_dim = 384
    system = create_system("an", n_dim, seed=0, interpolations=interpolations)
    centers = SystemCenters(system, n_classes)
    gen = torch.Generator().manual_seed(n_classes)
    labels = torch.randint(0, n_classes, (batch,), generator=gen)
    near = (centers.gather(labels) + 0.5 / n_dim**0.5 * torch.randn(batch, n_dim, generator=gen)).to(device)
    gauss = torch.randn(batch, n_dim, generator=gen).to(device)
    table = centers.gather(torch.arange(n_classes, device=device))  # [n_classes, 384] for the brute force

    def brute(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return exact_nearest(z, table, chunk_size=65_536)

    reps = {"fast": 5 if quick else 30, "exact": 3 if quick else 10, "brute": 1 if quick else 3}
    out: dict = {"n_classes": n_classes, "system_size": len(system), "batch": batch, "n_dim": n_dim, "inputs": {}}
    for name, z in (("near-center", near), ("gaussian", gauss)):
        brute_idx, brute_cos = brute(z)
        fast = centers.predict(z, "fast")
        exact = centers.predict(z, "exact")
        timings = {
            "floor": measure(lambda z=z: z.sum(), device, reps["fast"]),
            "fast": measure(lambda z=z: system.nearest(z), device, reps["fast"]),
            "exact": measure(lambda z=z: centers.predict(z, "exact"), device, reps["exact"]),
            "brute": measure(lambda z=z: brute(z), device, reps["brute"], warmup=0),
        }
        answered = ~fast.new_class
        out["inputs"][name] = {
            "timings": timings,
            "fast_vs_brute": timings["brute"]["median_s"] / timings["fast"]["median_s"],
            "exact_vs_brute": timings["brute"]["median_s"] / timings["exact"]["median_s"],
            "fast_vs_floor": timings["fast"]["median_s"] / timings["floor"]["median_s"],
            "exact_label_agreement": float((exact.labels == brute_idx).float().mean()),
            "exact_max_cosine_gap": float((exact.cosine - brute_cos).abs().max()),
            "exact_fallback_rows": exact.n_fallback,
            "fast_new_class_rows": int(fast.new_class.sum()),
            "fast_label_agreement_where_answered": float((fast.labels[answered] == brute_idx[answered]).float().mean())
            if bool(answered.any())
            else None,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, only 147,840 classes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    console = Console(width=200)
    cases = {k: v for k, v in CASES.items() if not args.quick or k == 147_840}
    results = [run_case(n, spec["interpolations"], args.batch, device, args.quick) for n, spec in cases.items()]

    table = Table(title=f"Label prediction, batch {args.batch}, n_dim 384, {device} (median ms)")
    for col in (
        "classes",
        "inputs",
        "floor",
        "fast",
        "exact",
        "brute force",
        "brute/fast",
        "brute/exact",
        "exact agrees",
        "fallback rows",
        "new-class flags",
    ):
        table.add_column(col, justify="right")
    for res in results:
        for name, r in res["inputs"].items():
            t = r["timings"]
            table.add_row(
                f"{res['n_classes']:,}",
                name,
                *(f"{t[k]['median_s'] * 1e3:.2f}" for k in ("floor", "fast", "exact")),
                f"{t['brute']['median_s'] * 1e3:.0f}",
                f"{r['fast_vs_brute']:.0f}x",
                f"{r['exact_vs_brute']:.0f}x",
                f"{r['exact_label_agreement']:.1%}",
                str(r["exact_fallback_rows"]),
                str(r["fast_new_class_rows"]),
            )
    console.print(table)
    payload = {"machine": machine(device), "quick": args.quick, "cases": results}
    path = write_result("nearest" + ("-quick" if args.quick else ""), payload)
    console.print(f"written to {path}")
    return payload


if __name__ == "__main__":
    main()
