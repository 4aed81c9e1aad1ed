"""Shared benchmark plumbing: timing with device synchronization, statistics, ratios, machine description.

Every benchmark module returns a :class:`Section`: ``rows`` (one measured figure each: ``n_classes``, ``case``,
``method``, ``time_s`` statistics and/or ``memory_bytes``, a short ``note``) and ``headlines`` (the ratios the
issue asks for, each with its spread and, where there is one, its target).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


@dataclass
class Section:
    """What one benchmark returns: its resolved config, measured rows, headline ratios and notes."""

    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    headlines: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min/max and quartiles of repeated measurements (``n`` of them, all kept in ``values``)."""
    q1, q3 = statistics.quantiles(values, n=4, method="inclusive")[::2] if len(values) > 1 else (values[0],) * 2
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "q1": q1,
        "q3": q3,
        "n": len(values),
        "values": values,
    }


def measure(
    fn: Callable[[], Any], device: torch.device, repeats: int, *, warmup: int = 1, budget_s: float | None = None
) -> tuple[dict[str, Any], Any]:
    """Time ``repeats`` calls of ``fn`` (seconds, the device synchronized before each clock read).

    ``warmup`` untimed calls come first. With ``budget_s``, repetitions stop once that much time has been spent
    and at least ``min(3, repeats)`` calls are timed, so slow baselines stay bounded. Returns the statistics of
    :func:`stats` and the last call's result (so a check can reuse it instead of running ``fn`` again).
    """
    return measure_interleaved({"fn": fn}, device, repeats, warmup=warmup, budget_s=budget_s)["fn"]


def measure_interleaved(
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    repeats: int,
    *,
    warmup: int = 1,
    budget_s: float | None = None,
) -> dict[str, tuple[dict[str, Any], Any]]:
    """:func:`measure` for several functions, called in turn in each round, so that a drift in the machine's
    speed (other load, clocks) affects all of them alike and their ratio stays fair."""
    results: dict[str, Any] = dict.fromkeys(fns)
    for _ in range(warmup):
        for name, fn in fns.items():
            results[name] = fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    begin = time.perf_counter()
    for done in range(1, repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
        if budget_s is not None and time.perf_counter() - begin > budget_s and done >= min(3, repeats):
            break
    return {name: (stats(times[name]), results[name]) for name in fns}


def ratio(num: dict[str, Any], den: dict[str, Any], *, paired: bool = False) -> dict[str, float]:
    """``num / den`` of two timing statistics: the ratio of medians, and its range. ``paired`` (the two were
    measured interleaved, see :func:`measure_interleaved`): the range of the per-round ratios; otherwise the
    widest range the extremes allow."""
    if paired and num["n"] == den["n"]:
        per_round = [a / b for a, b in zip(num["values"], den["values"], strict=True)]
        return {"value": num["median"] / den["median"], "low": min(per_round), "high": max(per_round)}
    return {"value": num["median"] / den["median"], "low": num["min"] / den["max"], "high": num["max"] / den["min"]}


def headline(
    figure: str,
    value: dict[str, float] | float,
    *,
    n_classes: int | None = None,
    case: str = "",
    unit: str = "x",
    target: float | None = None,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """A figure the README reports, with its spread (``low``/``high``) and whether it meets ``target``."""
    v = value if isinstance(value, dict) else {"value": value, "low": value, "high": value}
    met = None
    if target is not None:
        met = bool(v["value"] >= target) if higher_is_better else bool(v["value"] <= target)
    return {
        "figure": figure,
        "n_classes": n_classes,
        "case": case,
        **v,
        "unit": unit,
        "target": target,
        "higher_is_better": higher_is_better,
        "met": met,
    }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes.

    On Linux this is ``VmHWM`` of ``/proc/self/status``, which starts afresh at ``exec``: ``ru_maxrss`` does not
    (a child started from a large parent reports at least the parent's size), so it would hide what a benchmark
    case in a child process really used. Elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured: CPU/GPU, thread count, library versions."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": _version("timm"),
        "faiss": _version("faiss-cpu") or _version("faiss-gpu") or _version("faiss"),
        "lscdistill": _version("lscdistill"),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def run_worker(module: str, spec: dict, env: dict[str, str] | None = None) -> dict:
    """``python -m MODULE --worker JSON`` in a child process of its own: its last line of output read as JSON, or
    ``{"error": its last line of stderr}`` when it failed (the module's ``main`` is :func:`worker_main`)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        env=env,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_main(worker: Callable[[dict], dict], description: str) -> None:
    """The command line of a benchmark's child process: ``--worker JSON`` in, the worker's result as JSON out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--worker", required=True, help="JSON description of one case (see worker())")
    print(json.dumps(worker(json.loads(parser.parse_args().worker))))
