"""Label prediction, batch 1024, n_dim 384: the fast decoder against the exact decoder, a chunked brute-force
matmul, FAISS ``IndexFlatIP`` and the floor (one read of the batch), all in one process.

Class counts and systems: up to 147,840 classes are A_384r roots (seed 0), 1,281,167 classes take A_384r with one
interpolation level (56.8M vectors; the first 1.28M indices are all 147,840 roots, then interpolated vectors).

- ``fast``: ``SystemCenters.predict(z, "fast")``, the O(n_dim) nearest system vector with new-class flags; on CPU
  the search runs the C kernel (``lscdistill.systems.native``; see the section's notes when it is not available).
- ``fast, tensor program``: the same with the kernel switched off (``native.disabled()``): the branch-free tensor
  program that export and CUDA run, and the CPU fallback without a C compiler. The same answers, bit for bit.
- ``exact``: ``predict(z, "exact")``, the nearest *assigned* center (certified shortlist, brute-force fallback).
- ``brute``: ``exact_nearest`` over the materialized ``[n_classes, 384]`` table in chunks of 65,536 rows (what a
  classifier head costs; building the table is not timed).
- ``faiss``: ``IndexFlatIP`` over the same unit-norm table, ``search(z, 1)``, default settings; on CUDA only
  with a GPU build of FAISS (skipped with a note otherwise, as when FAISS is not installed).
- ``fast-compiled``: the same fast predict under ``torch.compile(fullgraph=True, dynamic=False)`` (one graph, no
  host sync; the C kernel is a custom op in it), at the largest class count only (compiling takes a while);
  checked equal to eager. Compile time goes into the note, not the timing.
- ``floor``: ``z.sum()``, reading the batch once: no decoder can be faster.

The floor ratio (target <= 30x at 1.28M classes, eager and compiled) is measured on CPU in **CPU time of one
intra-op thread** (``torch.set_num_threads(1)``, ``time.thread_time()``): the floor and the fast predicts are
called in turn, round by round (each call repeated until a sample lasts about a millisecond), and the ratio is the
ratio of the medians. CPU time of the calling thread counts neither the time it waits while other processes run
nor, with one intra-op thread, work done elsewhere, so the ratio holds on a shared 2-core machine where wall
clocks do not; the wall ratios (default threads) stay beside it. ``fast-compiled`` is compiled while one thread is
set (inductor bakes the OpenMP thread count into its kernels), so its wall figure is single-threaded too. These
CPU times are taken in a fresh child process per class count (:func:`worker`, after :func:`steady_heap`), so
what the suite did before (multi-GiB brute-force tables, compiling) does not move them.

Inputs: ``near-center`` (a class center plus noise, cosine ~0.9: what a trained model gives) and ``gaussian``
(no structure; at 1.28M classes almost every row's nearest system vector is unassigned, so ``exact`` falls back
to brute force there). The floor, fast and exact are timed interleaved (round by round); brute force and FAISS,
whose cost does not depend on the inputs, are timed on the first kind of inputs only. Each row's note holds a
check: fast, exact and FAISS agree with brute force.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch

from lscdistill.centers import SystemCenters
from lscdistill.decode import exact_nearest
from lscdistill.systems import create_system, native

from ._common import Section, headline, measure, measure_interleaved, ratio, run_worker, stats, worker_main

TARGETS = {"brute": 500.0, "faiss": 300.0}  # fast decoder speedups the issue asks for at TARGET_CLASSES
FLOOR_TARGET = 30.0  # fast decoder at most this many times the floor at TARGET_CLASSES (eager and compiled)
TARGET_CLASSES = 1_281_167
CHUNK = 65_536


@dataclass
class Config:
    classes: tuple[int, ...] = (10_000, 147_840, 1_281_167)
    inputs: tuple[str, ...] = ("near-center", "gaussian")
    batch: int = 1024
    n_dim: int = 384
    repeats: int = 30  # at most, for the floor, fast and exact
    slow_repeats: int = 3  # at most, for brute force and FAISS
    budget_s: float = 20.0  # stop repeating one figure after this long (at least 3 repetitions)
    compiled: bool = True  # also time the fast predict under torch.compile at the largest class count
    cpu_rounds: int = 40  # interleaved rounds of the single-thread CPU-time measurement (floor, fast, compiled)

    @classmethod
    def quick(cls) -> Config:
        return cls(inputs=("near-center",), repeats=10, slow_repeats=1, budget_s=5.0, cpu_rounds=20)


@contextlib.contextmanager
def single_thread():
    """One intra-op thread inside the block (the number of threads before it is restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def steady_heap() -> None:
    """Free a 30 MiB tensor so that glibc serves later temporaries below that size from its heap.

    glibc maps every allocation above its mmap threshold afresh and unmaps it on free, so each call that makes a
    temporary of ~1 MB faults its pages in again; freeing a mapped chunk raises the threshold to that chunk's size
    (up to 32 MiB). A process that has done some work is in that state already, a fresh one is not, and the
    decoder's CPU time (its temporaries are ~0.5-1.5 MB at batch 1024) swung with what the process had done before.
    Timing after this call measures the decoder, not the history of the process."""
    torch.empty(30 * 2**20 // 4).fill_(0.0)


def measure_cpu_interleaved(fns: dict[str, Callable[[], object]], rounds: int, sample_s: float = 1e-3) -> dict:
    """CPU time of the calling thread per call of each of ``fns``, in one intra-op thread, ``rounds`` interleaved
    rounds; within a round each function is called as many times as make about ``sample_s`` (found from its first
    timed call) and the sample is the mean per call. Returns :func:`stats` per name (the values are per call).
    Timed after :func:`steady_heap`."""
    steady_heap()
    with single_thread():
        calls = {}
        for name, fn in fns.items():
            fn()  # warm-up
            start = time.thread_time()
            fn()
            calls[name] = max(1, math.ceil(sample_s / max(time.thread_time() - start, 1e-7)))
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                start = time.thread_time()
                for _ in range(calls[name]):
                    fn()
                times[name].append((time.thread_time() - start) / calls[name])
    return {name: stats(values) for name, values in times.items()}


def _faiss(device: torch.device):
    """The FAISS module, or ``None`` and a note saying why the FAISS baseline is skipped."""
    try:
        import faiss
        import faiss.contrib.torch_utils  # indexes then take torch tensors (CPU or GPU) without copies
    except ImportError:
        return None, "FAISS not installed (pip install 'lscdistill[bench]'): FAISS baseline skipped"
    if device.type == "cuda" and not hasattr(faiss, "StandardGpuResources"):
        return None, "this FAISS build has no GPU index: FAISS baseline skipped on CUDA"
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss, None


def _flat_index(faiss, table: torch.Tensor):
    """A flat inner-product index holding ``table`` on its device: ``(index, GPU resources or None)``; the
    resources must outlive the index."""
    if table.device.type == "cuda":
        resources = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatIP(resources, table.shape[1])
    else:
        resources, index = None, faiss.IndexFlatIP(table.shape[1])
    index.add(table)
    return index, resources


def _inputs(centers: SystemCenters, cfg: Config, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(centers.n_classes)
    labels = torch.randint(0, centers.n_classes, (cfg.batch,), generator=gen)
    noise = torch.randn(cfg.batch, cfg.n_dim, generator=gen)
    made = {
        "near-center": centers.gather(labels) + 0.5 / cfg.n_dim**0.5 * noise,
        "gaussian": torch.randn(cfg.batch, cfg.n_dim, generator=gen),
    }
    return {name: made[name].to(device) for name in cfg.inputs}


def run(cfg: Config, device: torch.device) -> Section:
    section = Section(config=asdict(cfg))
    faiss, why = _faiss(device)
    if why:
        section.notes.append(why)
    if device.type == "cpu":
        kernel = "the C kernel" if native.available() else "the tensor program (the C kernel is not available here)"
        section.notes.append(f"fast decodes with {kernel}; 'fast, tensor program' switches the kernel off")
    for n in cfg.classes:
        _class_count(n, _prepare(n, cfg, device), cfg, device, faiss, section)
    return section


def _setup(n: int, cfg: Config, device: torch.device) -> tuple[SystemCenters, dict, dict, str]:
    """The centers and inputs of one class count, the timed functions of each kind of inputs (floor, fast, exact,
    and at the largest count the compiled fast predict) and the compile note."""
    system = create_system("an", cfg.n_dim, seed=0, interpolations=int(n > cfg.n_dim * (cfg.n_dim + 1)))
    centers = SystemCenters(system, n)
    inputs = _inputs(centers, cfg, device)
    compiled, compile_note = _compiled(centers, next(iter(inputs.values())), n, cfg)
    fns = {}
    for name, z in inputs.items():
        fns[name] = {"floor": z.sum, **{mode: partial(centers.predict, z, mode) for mode in ("fast", "exact")}}
        fns[name]["fast, tensor program"] = partial(tensor_program, centers.predict, z, "fast")
        if compiled is not None:
            fns[name]["fast-compiled"] = partial(compiled, z)
    return centers, inputs, fns, compile_note


def tensor_program(fn: Callable, *args: object) -> object:
    """``fn(*args)`` with the fast decoder's tensor program, the C kernel switched off (what export and CUDA run;
    on a CPU without a C compiler, what every decode runs)."""
    with native.disabled():
        return fn(*args)


def _prepare(n: int, cfg: Config, device: torch.device) -> dict:
    """:func:`_setup`, and on CPU the single-thread CPU times from a fresh child process (:func:`worker`)."""
    centers, inputs, fns, compile_note = _setup(n, cfg, device)
    cpu_times = {}
    if device.type == "cpu":
        cpu_times = run_worker("benchmarks.bench_predict", {"n": n, "config": asdict(cfg)})
        if "error" in cpu_times:
            raise RuntimeError(f"CPU-time worker for {n} classes failed: {cpu_times['error']}")
    return {"centers": centers, "inputs": inputs, "fns": fns, "compile_note": compile_note, "cpu": cpu_times}


def worker(spec: dict) -> dict:
    """In a process of its own: the floor, fast and (at the largest class count) compiled fast predict of each kind
    of inputs, single-thread CPU time, interleaved (:func:`measure_cpu_interleaved`). A fresh process measures the
    decoder, not what the suite did before it (after the brute-force tables and the compiler's work of earlier
    figures the same decoder measured slower, by amounts that changed from run to run, in the suite's own
    process)."""
    cfg = Config(**spec["config"])
    _, _, fns, _ = _setup(spec["n"], cfg, torch.device("cpu"))
    out = {}
    for name, timed in fns.items():
        # the tensor program in a round of its own: between the kernel's calls its ~1 MB of temporaries would evict
        # the batch from the cache and charge that to the kernel
        ours = {k: f for k, f in timed.items() if k not in ("exact", "fast, tensor program")}
        out[name] = measure_cpu_interleaved(ours, cfg.cpu_rounds)
        program = {"floor": timed["floor"], "fast": timed["fast, tensor program"]}
        program = measure_cpu_interleaved(program, cfg.cpu_rounds)
        out[name]["fast, tensor program"] = program["fast"]
        out[name]["floor (fast, tensor program's rounds)"] = program["floor"]
    return out


def _class_count(n: int, case: dict, cfg: Config, device: torch.device, faiss, section: Section) -> None:
    """All methods at one class count (prepared by :func:`_prepare`), on each kind of inputs; rows and headlines go
    into ``section``."""
    centers, inputs, fns, compile_note = case["centers"], case["inputs"], case["fns"], case["compile_note"]
    table = torch.cat([centers.gather(torch.arange(s, min(s + CHUNK, n))) for s in range(0, n, CHUNK)]).to(device)
    index, _resources = _flat_index(faiss, table) if faiss else (None, None)
    slow: dict = {}  # brute force and FAISS cost the same on any inputs: timed on the first ones only
    for name, z in inputs.items():
        # the floor and the fast predicts in rounds of their own; exact (brute force on most Gaussian rows at 1.28M
        # classes: seconds per call) and the tensor program (~1 MB of temporaries) each in others, so neither uses
        # up the rounds or the cache of the fast figures
        timed = {}
        for group in (("floor", "fast", "fast-compiled"), ("exact",), ("fast, tensor program",)):
            fn = {k: f for k, f in fns[name].items() if k in group}
            timed.update(measure_interleaved(fn, device, cfg.repeats, budget_s=cfg.budget_s))
        t = {name: stat for name, (stat, _) in timed.items()}
        r = {name: result for name, (_, result) in timed.items()}
        cpu = case["cpu"].get(name, {})
        brute = partial(exact_nearest, z, table, chunk_size=CHUNK)
        reps = cfg.slow_repeats if not slow else 1
        t["brute"], (brute_idx, _) = measure(brute, device, reps, warmup=0, budget_s=cfg.budget_s)
        notes = {"brute": f"table {n * cfg.n_dim * 4 / 2**20:,.0f} MiB"}
        if index is not None and not slow:
            search = partial(index.search, z, 1)
            t["faiss"], (_, found) = measure(search, device, cfg.slow_repeats, warmup=0, budget_s=cfg.budget_s)
            agree = float((found[:, 0].to(brute_idx.device) == brute_idx).float().mean())
            notes["faiss"] = f"agrees with brute force on {agree:.1%}"
        if slow:
            t.update(slow)
            notes["brute"] = notes["faiss"] = f"timed on {next(iter(cfg.inputs))} inputs"
        else:
            slow = {k: t[k] for k in ("brute", "faiss") if k in t}
        fast, exact = r["fast"], r["exact"]
        if "fast-compiled" in r:
            same = torch.equal(r["fast-compiled"][0], fast.labels)
            notes["fast-compiled"] = f"{compile_note}; labels {'equal' if same else 'DIFFER from'} eager"
        answered = ~fast.new_class
        agree = float((fast.labels[answered] == brute_idx[answered]).float().mean()) if answered.any() else 0.0
        notes["fast"] = f"{int(fast.new_class.sum())} new-class flags, {agree:.1%} of the rest agree"
        notes["exact"] = (
            f"agrees with brute force on {float((exact.labels == brute_idx).float().mean()):.1%}, "
            f"{exact.n_fallback} fallback rows"
        )
        for method, stat in t.items():
            section.rows.append(
                {"n_classes": n, "case": name, "method": method, "time_s": stat, "note": notes.get(method, "")}
            )
        for method, stat in cpu.items():
            note = "CPU time of 1 thread per call (time.thread_time), interleaved"
            section.rows.append(
                {"n_classes": n, "case": name, "method": f"{method} (1-thread CPU)", "time_s": stat, "note": note}
            )
        _floor_headlines(section, t, cpu, n, name)
        for base in ("brute", "faiss"):
            if base in t:
                section.headlines.append(
                    headline(
                        f"{base} / fast, wall (x faster)",
                        ratio(t[base], t["fast"]),
                        n_classes=n,
                        case=name,
                        target=TARGETS[base] if n == TARGET_CLASSES else None,
                    )
                )


def _floor_headlines(section: Section, wall: dict, cpu: dict, n: int, case: str) -> None:
    """Fast (eager, compiled) / floor: the single-thread CPU-time ratio carries the target; the wall ratio beside.
    The tensor program's ratio too (no target: on CPU it is the fallback)."""
    target = FLOOR_TARGET if n == TARGET_CLASSES else None
    for method in ("fast", "fast-compiled", "fast, tensor program"):
        own = f"floor ({method}'s rounds)"  # the tensor program's floor, where it was timed beside it
        for clock, t in (("1-thread CPU time", cpu), ("wall", wall)):
            if method in t:
                section.headlines.append(
                    headline(
                        f"{method} / floor, {clock} (x above the floor)",
                        ratio(t[method], t.get(own, t["floor"]), paired=own in t or method != "fast, tensor program"),
                        n_classes=n,
                        case=case,
                        target=target if (t is cpu or not cpu) and method != "fast, tensor program" else None,
                        higher_is_better=False,
                    )
                )


def _compiled(centers: SystemCenters, z: torch.Tensor, n: int, cfg: Config):
    """The fast predict compiled with ``fullgraph=True`` at the largest class count: ``(fn, note)``."""
    if not cfg.compiled or n != max(cfg.classes):
        return None, ""
    return compile_fast(centers, z)


def compile_fast(centers: SystemCenters, z: torch.Tensor):
    """``centers.predict(z, "fast")`` compiled with ``fullgraph=True`` and called once on ``z``: ``(fn, note)``."""

    def fast(z):
        p = centers.predict(z, "fast")
        return p.labels, p.cosine, p.new_class

    start = time.perf_counter()
    fn = torch.compile(fast, fullgraph=True, dynamic=False)
    with single_thread() if z.device.type == "cpu" else contextlib.nullcontext():  # kernels for one thread
        fn(z)
    threads = ", for 1 thread" if z.device.type == "cpu" else ""
    return fn, f"compiled in {time.perf_counter() - start:.0f} s{threads}"


if __name__ == "__main__":
    worker_main(worker, __doc__.splitlines()[0])
