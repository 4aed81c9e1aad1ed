"""Extraction: overhead vs a bare forward pass (suite benchmark ``extract``), and a 1.28M-class store from
features (``extract-scale``, not in the default suite: it writes ~4 GB of features first).

overhead: the same teacher, the same digits batches, in one process. ``bare`` is the loop a user would write
(preprocess a batch, ``forward_features`` + ``forward_head(pre_logits=True)``); ``extract`` is ``run_extract``
end to end (Accelerate setup, float64 accumulation, non-finite checks, progress bar off, writing the store).
The ratio extract / bare - 1 is the overhead (target <= 5%). The two are interleaved so that drifts (thermal,
other load) hit both alike.

scale: synthetic features (a few samples per class, random order) written to a memory-mapped ``.npy``, then
``lscdistill extract --features`` runs in a child process as a user would; its peak RSS comes from
``VmHWM``, reported by the child as it exits. The host accumulator is 8 * n_classes * (n_dim + 1) bytes (3.9 GB at
1.28M x 384); nothing of that size reaches the accelerator.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lscdistill.data import load_images, resolve_preprocess, select_indices
from lscdistill.extract import ExtractConfig, run_extract
from lscdistill.models import create_teacher, embed

from ._common import Section, headline, measure, ratio, stats

OVERHEAD_TARGET = 1.05  # extract / bare forward


@dataclass
class OverheadConfig:
    model: str = "resnet18"
    img_size: int = 64
    batch_size: int = 256
    repeats: int = 3

    @classmethod
    def quick(cls) -> OverheadConfig:
        return cls()  # already ~30 s; a smaller input would only show the fixed setup cost


@dataclass
class ScaleConfig:
    n_classes: int = 1_281_167
    per_class: int = 2
    n_dim: int = 384
    batch_size: int = 4096
    tmp: str | None = None  # directory for the synthetic features (needs rows * n_dim * 4 bytes)

    @classmethod
    def quick(cls) -> ScaleConfig:
        return cls(n_classes=100_000)


def overhead(cfg: OverheadConfig, device: torch.device) -> Section:
    torch.manual_seed(0)
    model = create_teacher(cfg.model).to(device)
    preprocess = resolve_preprocess(model, "digits", cfg.img_size)
    data = load_images("digits", preprocess)
    indices = select_indices(data.labels)

    def bare() -> None:
        with torch.inference_mode():
            for x, _, _ in data.batches(indices, cfg.batch_size):
                embed(model, x.to(device)).float().cpu()

    with tempfile.TemporaryDirectory() as tmp:
        extract_cfg = ExtractConfig(
            out=Path(tmp) / "m.h5",
            data="digits",
            teacher=cfg.model,
            img_size=cfg.img_size,
            batch_size=cfg.batch_size,
            overwrite=True,
            quiet=True,
            cpu=device.type == "cpu",
        )
        bare_t, extract_t = [], []
        for i in range(cfg.repeats):  # interleaved, so that drifts (thermal, other load) hit both alike
            bare_t += measure(bare, device, repeats=1, warmup=int(i == 0))[0]["values"]
            extract_t += measure(lambda: run_extract(extract_cfg), device, repeats=1, warmup=int(i == 0))[0]["values"]
    section = Section(config=asdict(cfg))
    case = f"{cfg.model} {cfg.img_size}px, {len(indices):,} digits"
    t = {"bare forward": stats(bare_t), "extract": stats(extract_t)}
    for method, stat in t.items():
        section.rows.append({"n_classes": int(data.labels.max()) + 1, "case": case, "method": method, "time_s": stat})
    section.headlines.append(
        headline(
            "extract / bare forward",
            ratio(t["extract"], t["bare forward"]),
            case=case,
            target=OVERHEAD_TARGET,
            higher_is_better=False,
        )
    )
    return section


# Runs ``python -m lscdistill ARGS`` and reports the process's own peak RSS on stderr as it exits.
_CLI_WITH_PEAK = (
    "import atexit, runpy, sys; from benchmarks._common import peak_rss_bytes; "
    "atexit.register(lambda: print(f'peak_rss_bytes={peak_rss_bytes()}', file=sys.stderr)); "
    "sys.argv[0] = 'lscdistill'; runpy.run_module('lscdistill', run_name='__main__')"
)


def _run_cli(args: list[str]) -> tuple[float, int]:
    """Run the lscdistill command line in a child process; return its wall time and its own peak RSS (bytes)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-c", _CLI_WITH_PEAK, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    wall = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("peak_rss_bytes="):
        raise RuntimeError(f"lscdistill {' '.join(args)} failed: {proc.stderr.strip()}")
    return wall, int(lines[-1].split("=")[1])


def scale(cfg: ScaleConfig, device: torch.device) -> Section:
    n, per, d = cfg.n_classes, cfg.per_class, cfg.n_dim
    rows = n * per
    section = Section(config=asdict(cfg))
    with tempfile.TemporaryDirectory(dir=cfg.tmp) as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        labels = rng.permutation(np.repeat(np.arange(n, dtype=np.int64), per))
        np.save(tmp / "y.npy", labels)
        x = np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.float32, shape=(rows, d))
        for lo in range(0, rows, 1 << 18):
            hi = min(rows, lo + (1 << 18))
            x[lo:hi] = rng.standard_normal((hi - lo, d), dtype=np.float32)
        x.flush()
        del x
        args = ["extract", "--features", str(tmp / "x.npy"), "--labels", str(tmp / "y.npy")]
        wall, peak = _run_cli([*args, "--out", str(tmp / "m.h5"), "-b", str(cfg.batch_size)])
        store_gb = (tmp / "m.h5").stat().st_size / 1e9
        from lscdistill.stores import open_store

        with open_store(tmp / "m.h5") as s:
            counts_ok = bool((s.counts == per).all())
            probe = np.sort(rng.choice(n, 5, replace=False))
            features = np.load(tmp / "x.npy", mmap_mode="r")
            exact = np.stack([np.asarray(features[labels == c], np.float64).mean(0) for c in probe])
            max_err = float(np.abs(s.gather(probe).numpy() - exact).max())
    note = (
        f"{rows:,} rows ({rows * d * 4 / 1e9:.1f} GB), store {store_gb:.1f} GB, counts ok: {counts_ok}, "
        f"max |error| on 5 classes {max_err:.1e}"
    )
    section.rows.append(
        {"n_classes": n, "case": f"features x{per}/class", "method": "extract --features", "time_s": stats([wall])}
        | {"memory_bytes": peak, "note": note, "counts_ok": counts_ok, "max_abs_error": max_err}
    )
    return section
