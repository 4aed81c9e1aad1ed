"""The suite's figure: time and memory vs the number of classes, LSC against its baselines (log axes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): no display needed

# method -> (label, style); LSC solid, baselines dashed, the floor dotted
STYLES = {
    "fast": ("LSC fast decoder", dict(color="C0", ls="-", marker="o")),
    "exact": ("LSC exact (nearest assigned)", dict(color="C2", ls="-", marker="s")),
    "brute": ("brute-force matmul", dict(color="C3", ls="--", marker="v")),
    "faiss": ("FAISS IndexFlatIP", dict(color="C1", ls="--", marker="^")),
    "floor": ("read the batch once (floor)", dict(color="grey", ls=":", marker=".")),
    "lsc-fast": ("LSC: encoder + fast decoder", dict(color="C0", ls="-", marker="o")),
    "linear-head": ("encoder + linear head", dict(color="C3", ls="--", marker="v")),
    "lsc-system": ("LSC, generated centers", dict(color="C0", ls="-", marker="o")),
    "lsc-store": ("LSC, centers from a store", dict(color="C2", ls="-", marker="s")),
    "ce": ("linear head + cross-entropy", dict(color="C3", ls="--", marker="v")),
    "params:lsc-fast": ("inference model, LSC (parameters)", dict(color="C0", ls=":", marker=".")),
    "params:linear-head": ("inference model, linear head (parameters)", dict(color="C3", ls=":", marker=".")),
}


def _series(
    rows: list[dict], key, case: str | None = None, prefix: str = ""
) -> dict[str, tuple[list[int], list[float]]]:
    """``{method: (n_classes, values)}`` of the rows (of one ``case`` if given), sorted by class count."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in sorted((r for r in rows if r["n_classes"]), key=lambda r: r["n_classes"]):
        value = key(r)
        if value is None or (case is not None and r["case"] != case):
            continue
        xs, ys = out.setdefault(prefix + r["method"], ([], []))
        xs.append(r["n_classes"])
        ys.append(value)
    return out


def _time_ms(row: dict) -> float | None:
    return row["time_s"]["median"] * 1e3 if row.get("time_s") else None


def _mem_gib(row: dict) -> float | None:
    return None if row.get("memory_bytes") is None else row["memory_bytes"] / 2**30


def _samples_per_s(row: dict) -> float | None:
    return row.get("samples_per_s")


def _panel(ax, series: dict, title: str, ylabel: str) -> None:
    for method, (xs, ys) in series.items():
        label, style = STYLES.get(method, (method, {}))
        ax.plot(xs, ys, label=label, **style)
    ax.set(xscale="log", yscale="log", xlabel="number of classes", ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)


def plot_suite(payload: dict[str, Any], path: Path) -> Path:
    """Four panels: label prediction time, whole inference time (with the crossover), peak memory (training step;
    parameters of the inference models), training throughput."""
    bench = payload["benchmarks"]
    predict = [r for r in bench.get("predict", {}).get("rows", []) if not r["method"].startswith("floor (")]
    first_case = predict[0]["case"] if predict else None
    inference = bench.get("inference", {})
    train = bench.get("train", {})
    train_cfg = train.get("config", {})
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    _panel(
        axes[0, 0],
        _series(predict, _time_ms, first_case),
        f"Label prediction, batch {bench.get('predict', {}).get('config', {}).get('batch', '')} ({first_case})",
        "ms per batch",
    )
    _panel(
        axes[0, 1],
        _series(inference.get("rows", []), _time_ms),
        "Whole inference: MLP encoder + label prediction",
        "ms per batch",
    )
    for h in inference.get("headlines", []):
        if h["unit"] == "classes" and h["value"] == h["value"]:  # not NaN
            axes[0, 1].axvline(h["value"], color="grey", lw=0.8)
            axes[0, 1].annotate(f"crossover ~{h['value']:,.0f}", (h["value"], 0.95), xycoords=("data", "axes fraction"))
    memory = _series(train.get("rows", []), _mem_gib)
    memory |= _series(inference.get("rows", []), _mem_gib, prefix="params:")
    _panel(
        axes[1, 0],
        memory,
        f"Memory: training step peak ({train_cfg.get('model', '')}, b{train_cfg.get('batch', '')}); inference params",
        "GiB (CPU: process peak RSS; CUDA: max allocated)",
    )
    _panel(axes[1, 1], _series(train.get("rows", []), _samples_per_s), "Training throughput", "samples / s")
    m = payload["machine"]
    where = m.get("gpu") or f"{m['cpu']} x{m['torch_threads']} threads"
    fig.suptitle(f"lscdistill benchmarks{' (quick)' if payload['quick'] else ''}: {where}, torch {m['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
