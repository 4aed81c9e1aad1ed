"""Peak memory and time of a training step vs the number of classes: LSC (generated or store-backed centers)
against a linear head with cross-entropy.

    python -m benchmarks.bench_train_memory [--model resnet18] [--classes 10,1000,100000,1000000] [--device cuda]

Every case runs in a fresh process (so one case's peak cannot hide another's): build the student
(``--dim 384``), the centers and AdamW, then ``--steps`` training steps through the same loss code as
``lscdistill train`` on random 64x64 inputs with random labels in [0, n_classes). Generated centers are A_384r
with one interpolation level (56.8M vectors, so every class count up to 10M fits at the same dim); store-backed
centers are a means store of n_classes x 384 float32 written beforehand. Peak memory on CPU is the process's
peak RSS (``ru_maxrss``), on CUDA ``torch.cuda.max_memory_allocated``. The claim under test: LSC's peak does not
depend on n_classes (< 5% between 10 and 1,000,000), while CE's grows with its n_classes x dim head (+ AdamW state).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ._common import machine, write_result

console = Console(stderr=True)
DIM = 384


def worker(args: argparse.Namespace) -> None:
    from lscdistill.losses import CosineLoss
    from lscdistill.models import build_student
    from lscdistill.train import TrainConfig, _loss, create_centers

    device = torch.device(args.device)
    torch.manual_seed(0)
    n = args.n_classes
    ce = args.kind == "ce"
    spec = {"architecture": args.model, "dim": DIM, "n_head_classes": n if ce else None}
    model = build_student(spec).to(device)
    if args.kind == "lsc-system":
        centers = create_centers({"type": "system", "name": "an", "n_dim": DIM, "seed": 0, "interpolations": 1}, n)
    elif args.kind == "lsc-store":
        centers = create_centers({"type": "store", "path": args.store}, n)
    else:
        centers = None
    loss_fn = torch.nn.CrossEntropyLoss() if ce else CosineLoss()
    cfg = TrainConfig(out=Path("."), loss="cos")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(1)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.steps):
        x = torch.randn(args.batch, 3, 64, 64, generator=gen).to(device)
        y = torch.randint(0, n, (args.batch,), generator=gen).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = _loss(model, x, y, centers, loss_fn, cfg, device)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"peak_bytes": peak, "step_s": float(np.median(times[1:] or times)), "params": params}))


def _make_store(path: Path, n: int) -> None:
    from lscdistill.stores import StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(path, kind="means", n_classes=n, n_dim=DIM, provenance={"benchmark": "random"}) as w:
        for start in range(0, n, 65536):
            rows = min(65536, n - start)
            w.write_rows(
                start,
                counts=np.ones(rows, dtype=np.int64),
                centers=rng.standard_normal((rows, DIM), dtype=np.float32),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--classes", default="10,1000,100000,1000000")
    parser.add_argument("--lsc-extra", default="10000000", help="Class counts run for generated LSC only.")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", choices=["lsc-system", "lsc-store", "ce"], dest="kind")
    parser.add_argument("--n-classes", type=int)
    parser.add_argument("--store")
    args = parser.parse_args()
    if args.kind:
        worker(args)
        return
    classes = [int(c) for c in args.classes.split(",")]
    extra = [int(c) for c in args.lsc_extra.split(",") if c]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("lsc-system", "lsc-store", "ce"):
            for n in classes + (extra if kind == "lsc-system" else []):
                cmd = [sys.executable, "-m", "benchmarks.bench_train_memory", "--worker", kind, "--n-classes", str(n)]
                cmd += ["--model", args.model, "--batch", str(args.batch), "--steps", str(args.steps)]
                cmd += ["--device", args.device]
                if kind == "lsc-store":
                    store = Path(tmp) / f"means-{n}.h5"
                    _make_store(store, n)
                    cmd += ["--store", str(store)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    out = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
                else:
                    out = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append({"kind": kind, "n_classes": n, **out})
                console.print(rows[-1])
    base = {r["kind"]: r["peak_bytes"] for r in rows if r["n_classes"] == classes[0] and "peak_bytes" in r}
    table = Table(title=f"Training step, {args.model}, batch {args.batch}, dim {DIM}, {args.device}")
    for col in ("objective", "classes", "params", "peak memory", "vs fewest classes", "step time"):
        table.add_column(col, justify="right")
    for r in rows:
        if "peak_bytes" not in r:
            table.add_row(r["kind"], f"{r['n_classes']:,}", "-", r["error"], "-", "-")
            continue
        r["vs_fewest_pct"] = 100 * (r["peak_bytes"] / base[r["kind"]] - 1)
        table.add_row(
            r["kind"],
            f"{r['n_classes']:,}",
            f"{r['params'] / 1e6:.1f}M",
            f"{r['peak_bytes'] / 2**20:,.0f} MiB",
            f"{r['vs_fewest_pct']:+.1f}%",
            f"{r['step_s'] * 1000:.0f} ms",
        )
    Console().print(table)
    path = write_result(
        "train-memory",
        {"machine": machine(torch.device(args.device)), "model": args.model, "batch": args.batch, "rows": rows},
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
