"""One training step vs the number of classes: peak memory and throughput, LSC (generated or store-backed
centers) against a linear head with cross-entropy (paper Table 10 in kind).

Every case runs in a fresh process (so one case's peak cannot hide another's): build the timm student
(``dim`` 384), the centers and AdamW, then ``steps`` training steps through the same loss code as
``lscdistill train`` on random images with random labels in [0, n_classes); the first step (AdamW allocates its
state there) is not timed. Generated centers are A_384r with one interpolation level (56.8M vectors, so every
class count up to 10M fits at the same dim); store-backed centers are a means store of n_classes x 384 float32
written beforehand. Peak memory on CPU is the process's peak RSS (``VmHWM``: Python, torch and the data
included, alike for both objectives), on CUDA ``torch.cuda.max_memory_allocated``. The claim under test:
LSC's peak does not depend on n_classes (< 5% between the fewest and the most), CE's grows with its
n_classes x dim head and its AdamW state. On CPU both checks use the peak above the baseline RSS each case
process has before it builds anything (``base_bytes``, ~0.5 GiB of Python and libraries); the table shows the
whole peak.

    python -m benchmarks.bench_train --worker '{"kind": "ce", "n_classes": 1000, ...}'   # one case (internal)
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ._common import Section, headline, peak_rss_bytes, ratio, run_worker, stats, worker_main

DIM = 384
LSC_FLAT_PCT = 5.0  # LSC peak memory may vary at most this much across class counts


@dataclass
class Config:
    model: str = "resnet18"
    batch: int = 64
    img_size: int = 64
    steps: int = 11  # the first is not timed
    classes: tuple[int, ...] = (10, 1_000, 100_000, 1_000_000)
    lsc_extra: tuple[int, ...] = (10_000_000,)  # run for generated LSC centers only
    kinds: tuple[str, ...] = ("lsc-system", "lsc-store", "ce")

    @classmethod
    def quick(cls) -> Config:
        return cls(batch=32, img_size=32, steps=6, classes=(10, 1_000, 100_000), lsc_extra=(1_000_000, 10_000_000))


def worker(spec: dict) -> dict:
    """One case, in this process: ``kind``, ``n_classes``, ``model``, ``batch``, ``img_size``, ``steps``,
    ``device`` and (``lsc-store``) ``store``. Returns peak memory, step times and parameter count."""
    from lscdistill.losses import CosineLoss
    from lscdistill.models import build_student
    from lscdistill.train import TrainConfig, create_centers
    from lscdistill.train.loop import _loss

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    n, kind = spec["n_classes"], spec["kind"]
    base = peak_rss_bytes() if device.type == "cpu" else 0  # Python + torch + timm, before anything of the case
    model = build_student({"architecture": spec["model"], "n_dim": DIM, "n_head_classes": n if kind == "ce" else None})
    model = model.to(device)
    if kind == "lsc-system":
        centers = create_centers({"type": "system", "name": "an", "n_dim": DIM, "seed": 0, "interpolations": 1}, n)
    elif kind == "lsc-store":
        centers = create_centers({"type": "store", "path": spec["store"]}, n)
    else:
        centers = None
    loss_fn = torch.nn.CrossEntropyLoss() if kind == "ce" else CosineLoss()
    cfg = TrainConfig(out=Path("."), loss="cos")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(1)
    times = []
    for _ in range(spec["steps"]):
        x = torch.randn(spec["batch"], 3, spec["img_size"], spec["img_size"], generator=gen).to(device)
        y_cpu = torch.randint(0, n, (spec["batch"],), generator=gen)
        y = y_cpu.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = _loss(model, x, y, y_cpu, centers, loss_fn, cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()
    params = sum(p.numel() for p in model.parameters())
    return {"peak_bytes": peak, "base_bytes": base, "step_s": times[1:] or times, "params": params}


def _make_store(path: Path, n: int) -> None:
    from lscdistill.stores import StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(path, kind="means", n_classes=n, n_dim=DIM, provenance={"benchmark": "random"}) as w:
        for start in range(0, n, 65536):
            rows = min(65536, n - start)
            w.write_rows(
                start, counts=np.ones(rows, dtype=np.int64), centers=rng.standard_normal((rows, DIM), dtype=np.float32)
            )


def _case(spec: dict) -> dict:
    return run_worker("benchmarks.bench_train", spec)


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config=asdict(cfg))
    common = {"model": cfg.model, "batch": cfg.batch, "img_size": cfg.img_size, "steps": cfg.steps}
    results: dict[tuple[str, int], dict] = {}
    # class-count major, so that a drift in the machine's speed hits LSC and CE at one count alike
    cases = [(kind, n) for n in cfg.classes for kind in cfg.kinds]
    cases += [("lsc-system", n) for n in cfg.lsc_extra if "lsc-system" in cfg.kinds]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, n in cases:
            spec = {"kind": kind, "n_classes": n, "device": str(device), **common}
            if kind == "lsc-store":
                spec["store"] = str(Path(tmp) / f"means-{n}.h5")
                _make_store(Path(spec["store"]), n)
                os.sync()  # flush the fresh store now: its writeback would otherwise compete with the timed steps
            out = _case(spec)
            if kind == "lsc-store":
                Path(spec["store"]).unlink()
            row = {"n_classes": n, "case": f"{cfg.model} b{cfg.batch} {cfg.img_size}px", "method": kind}
            if "error" in out:
                section.rows.append({**row, "time_s": None, "note": out["error"]})
                continue
            step = stats(out["step_s"])
            results[kind, n] = {**out, "step": step}
            note = f"{out['params'] / 1e6:.1f}M params, {cfg.batch / step['median']:,.1f} samples/s"
            section.rows.append(
                {**row, "time_s": step, "memory_bytes": out["peak_bytes"], "base_bytes": out["base_bytes"]}
                | {"samples_per_s": cfg.batch / step["median"], "params": out["params"], "note": note}
            )
    section.rows.sort(key=lambda r: (cfg.kinds.index(r["method"]), r["n_classes"]))
    for n in cfg.classes:
        lsc, ce = results.get(("lsc-system", n)), results.get(("ce", n))
        if lsc and ce:
            used = {k: r["peak_bytes"] - r["base_bytes"] for k, r in (("lsc", lsc), ("ce", ce))}
            figure = "CE / LSC peak memory" + (" above the baseline" if lsc["base_bytes"] else "")
            section.headlines.append(headline(figure, used["ce"] / used["lsc"], n_classes=n))
            speed = ratio(ce["step"], lsc["step"])
            section.headlines.append(headline("LSC / CE training throughput", speed, n_classes=n))
    for kind in cfg.kinds:
        peaks = {n: r["peak_bytes"] - r["base_bytes"] for (k, n), r in results.items() if k == kind}
        if kind != "ce" and len(peaks) > 1:
            change = 100 * max(abs(p / peaks[min(peaks)] - 1) for p in peaks.values())
            section.headlines.append(
                headline(
                    f"{kind} peak memory change, {min(peaks):,} to {max(peaks):,} classes"
                    + (" (above the baseline)" if device.type == "cpu" else ""),
                    change,
                    unit="%",
                    target=LSC_FLAT_PCT,
                    higher_is_better=False,
                )
            )
    return section


if __name__ == "__main__":
    worker_main(worker, __doc__.splitlines()[0])
