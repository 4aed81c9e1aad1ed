"""The suite: runs the benchmarks in one process (training cases and snap in fresh child processes for their own
peak memory), prints a table per benchmark and one of headline ratios, writes one JSON and a PNG plot.

``run_suite`` is the API (the smoke test calls it with tiny configs); ``python -m benchmarks run`` the command.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from . import (
    bench_anatomy,
    bench_export,
    bench_extract,
    bench_inference,
    bench_openset,
    bench_paper,
    bench_paper_training,
    bench_predict,
    bench_realdata,
    bench_snap,
    bench_train,
    bench_trainloop,
)
from ._common import RESULTS, Section, machine


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    config: type  # a dataclass with defaults for the full run and a ``quick()`` classmethod
    run: Callable[[Any, torch.device], Section]
    default: bool = True  # part of a plain ``run`` (not only with ``--only``)


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("predict", "Label prediction: fast decoder vs baselines", bench_predict.Config, bench_predict.run),
        Benchmark(
            "inference", "Whole inference: MLP encoder + prediction", bench_inference.Config, bench_inference.run
        ),
        Benchmark("train", "One training step: peak memory and throughput", bench_train.Config, bench_train.run),
        Benchmark("extract", "Extraction vs a bare forward pass", bench_extract.OverheadConfig, bench_extract.overhead),
        Benchmark("snap", "Snap: class means -> distinct system vectors (CPU)", bench_snap.Config, bench_snap.run),
        Benchmark(
            "extract-scale",
            "Extract a class-means store from features at scale",
            bench_extract.ScaleConfig,
            bench_extract.scale,
            default=False,
        ),
        Benchmark(
            "trainloop",
            "One training epoch: lscdistill train vs a bare PyTorch + timm loop",
            bench_trainloop.Config,
            bench_trainloop.run,
            default=False,
        ),
        Benchmark(
            "anatomy",
            "Where the fast decoder's time goes, against the floor (CPU, one thread)",
            bench_anatomy.Config,
            bench_anatomy.run,
            default=False,
        ),
        Benchmark(
            "export",
            "Exported inference: file size as the classes grow, speed beside predict",
            bench_export.Config,
            bench_export.run,
            default=False,
        ),
        Benchmark(
            "realdata",
            "Real images x backbones: CE teacher vs LSC students, eval mode, CLI defaults",
            bench_realdata.Config,
            bench_realdata.run,
            default=False,
        ),
        Benchmark(
            "openset",
            "New-class detection on digits (5 held-back classes), calibrated; continual learning",
            bench_openset.Config,
            bench_openset.run,
            default=False,
        ),
        Benchmark(
            "paper",
            "The paper in kind: Tables 5, 8, 9, 10, the planar system at 84 classes, distillation through means",
            bench_paper.Config,
            bench_paper.run,
            default=False,
        ),
        Benchmark(
            "paper-training",
            "The paper's training experiments in kind: convergence gap (§6.7), Tables 4/6/7, Figures 5/8/9, §6.6",
            bench_paper_training.Config,
            bench_paper_training.run,
            default=False,
        ),
    )
}
DEFAULT = tuple(name for name, b in BENCHMARKS.items() if b.default)
PLOTTED = {"predict", "inference", "train"}  # what the PNG draws (no PNG for a run of none of them)
OTHERS_WARN = 0.05  # warn when other processes took more than this share of the machine's CPU time


def result_stem(names: tuple[str, ...], quick: bool, device: torch.device, tag: str = "") -> str:
    """``suite[-quick]-<device>`` for the default set; a subset run names its benchmarks so it never replaces
    the full results; a tag (runs with changed settings) goes before the device."""
    subset = "" if tuple(names) == DEFAULT else "-" + "-".join(names)
    return f"suite{subset}{'-quick' if quick else ''}{'-' + tag if tag else ''}-{device.type}"


def run_suite(
    names: tuple[str, ...] | None = None,
    *,
    quick: bool = False,
    device: str | torch.device | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    out_dir: Path = RESULTS,
    plot: bool = True,
    console: Console | None = None,
    command: str | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """Run benchmarks and write ``<out_dir>/<stem>.json`` (+ ``.png``); returns the JSON payload.

    Args:
        names: benchmarks to run, in order (default: every default one).
        quick: each benchmark's ``quick()`` config (fewer repetitions and cases) instead of the full one.
        device: ``"cpu"`` or ``"cuda"`` (default: CUDA if available).
        overrides: per benchmark, config fields to replace (e.g. tiny sizes for a smoke test).
        out_dir: where the JSON and PNG go.
        plot: draw the PNG (needs matplotlib; skipped with a note without it).
        console: where tables go (default: stdout).
        command: the command line to record in the JSON.
        tag: added to the result file's name (see :func:`result_stem`).
    """
    names = tuple(names or DEFAULT)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    console = console or Console(width=200)
    log = Console(stderr=True)
    payload: dict[str, Any] = {
        "suite": "lscdistill benchmarks",
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(device),
        "benchmarks": {},
    }
    cpu_start = _cpu_seconds()
    begin = time.perf_counter()
    for name in names:
        bench = BENCHMARKS[name]
        cfg = bench.config.quick() if quick else bench.config()
        cfg = dataclasses.replace(cfg, **(overrides or {}).get(name, {}))
        log.print(f"[bold]{name}[/]: {bench.title} ...")
        start = time.perf_counter()
        section = bench.run(cfg, device)
        seconds = time.perf_counter() - start
        payload["benchmarks"][name] = {"title": bench.title, "duration_s": seconds, **dataclasses.asdict(section)}
        console.print(section_table(name, payload["benchmarks"][name]))
        console.print("  config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()), markup=False)
        for note in section.notes:
            console.print(f"  note: {note}", markup=False)
        log.print(f"{name} done in {seconds:.0f} s")
    payload["duration_s"] = time.perf_counter() - begin
    payload["other_processes"] = _others(cpu_start, _cpu_seconds(), payload["duration_s"])
    console.print(headline_table(payload))
    others = payload["other_processes"] or {"cpu_share": 0.0, "cpu_seconds": 0.0}
    share = others["cpu_share"]
    if share > OTHERS_WARN and others["cpu_seconds"] > 1.0:  # (below a second: clock-tick noise)
        console.print(
            f"[red]warning[/]: other processes used {share:.0%} of the machine's CPU time during this run: "
            "timings are contaminated (small multi-threaded ops most: each waits for a descheduled thread)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result_stem(names, quick, device, tag)}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    payload["paths"] = [str(path)]
    if plot and set(names) & PLOTTED:
        try:
            from .plot import plot_suite
        except ImportError:
            console.print("plot skipped: matplotlib is not installed (pip install 'lscdistill[bench]')", markup=False)
        else:
            payload["paths"].append(str(plot_suite(payload, path.with_suffix(".png"))))
    console.print(f"{len(names)} benchmark(s) in {payload['duration_s']:.0f} s; written: {', '.join(payload['paths'])}")
    return payload


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its finished children), or
    ``None`` where ``/proc/stat`` does not exist."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = sum(u.ru_utime + u.ru_stime for u in usage)
    return busy, own


def _others(start: tuple[float, float] | None, end: tuple[float, float] | None, wall: float) -> dict | None:
    """CPU time other processes took during the run, and its share of all the machine's CPU time."""
    if start is None or end is None or wall <= 0:
        return None
    seconds = max(0.0, (end[0] - start[0]) - (end[1] - start[1]))
    return {"cpu_seconds": seconds, "cpu_share": seconds / (wall * (os.cpu_count() or 1))}


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# ------------------------------------------------------------------------------------------------- tables
def fmt_time(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "x":
        return f"{value:,.1f}x" if value < 100 else f"{value:,.0f}x"
    if unit == "classes":
        return f"{value:,.0f}"
    if unit == "%":
        return f"{value:.2f}%"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:.4g}"


def section_table(name: str, section: dict[str, Any]) -> Table:
    table = Table(title=f"{name}: {section['title']} ({section['duration_s']:.0f} s)", title_justify="left")
    for col in ("classes", "case", "method", "median", "min - max", "n", "memory", "note"):
        table.add_column(col, justify="left" if col in ("case", "method", "note") else "right")
    for r in section["rows"]:
        t = r.get("time_s")
        table.add_row(
            "-" if r["n_classes"] is None else f"{r['n_classes']:,}",
            r["case"],
            r["method"],
            fmt_time(t["median"]) if t else "-",
            f"{fmt_time(t['min'])} - {fmt_time(t['max'])}" if t and t["n"] > 1 else "-",
            str(t["n"]) if t else "-",
            fmt_bytes(r.get("memory_bytes")),
            r.get("note", ""),
        )
    return table


def headline_table(payload: dict[str, Any]) -> Table:
    table = Table(title="Headline figures (median; range from the extremes of the repetitions)", title_justify="left")
    for col in ("benchmark", "figure", "classes", "case", "value", "range", "target", "met"):
        table.add_column(col, justify="left" if col in ("benchmark", "figure", "case") else "right")
    for name, section in payload["benchmarks"].items():
        for h in section["headlines"]:
            spread = h["low"] != h["high"]
            target = (
                None
                if h["target"] is None
                else ("≥ " if h["higher_is_better"] else "≤ ") + fmt_value(h["target"], h["unit"])
            )
            table.add_row(
                name,
                h["figure"],
                "-" if h["n_classes"] is None else f"{h['n_classes']:,}",
                h["case"],
                fmt_value(h["value"], h["unit"]),
                f"{fmt_value(h['low'], h['unit'])} - {fmt_value(h['high'], h['unit'])}" if spread else "-",
                target or "-",
                {None: "-", True: "[green]yes[/]", False: "[red]no[/]"}[h["met"]],
            )
    return table
