"""The run directory of ``lscdistill train``: what a run writes, and how it is read back.

A run directory holds ``config.json`` (the resolved configuration), ``metrics.jsonl`` (and, with ``--log-with``,
tracker logs in ``logs/``), ``checkpoints/step_N`` (Accelerate ``save_state``: model, optimizer, scheduler, RNG
states, the EMA when on, plus ``trainer.json``) and, at the end, ``model.safetensors`` + ``model.json``
(self-describing: architecture, dim, centers, preprocessing; :func:`lscdistill.models.save_run_model`) and, when
the run had validation data (or was calibrated later), ``openset.json``: the new-class rule's score and threshold
(:mod:`lscdistill.openset`).
``evaluate``, ``predict``, ``extract --checkpoint`` and ``plot`` read runs through :func:`load_run`; nothing here
depends on the training loop.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .centers import Centers, SystemCenters, store_centers

__all__ = [
    "RunLog",
    "checkpoints",
    "create_centers",
    "create_run_dir",
    "latest_checkpoint",
    "load_run",
    "read_checkpoint",
    "save_checkpoint",
]

CONFIG, METRICS, CHECKPOINTS, TRAINER_STATE = "config.json", "metrics.jsonl", "checkpoints", "trainer.json"
OPENSET = "openset.json"  # the calibrated new-class threshold (lscdistill.openset.Calibration)
TRAIN_CHUNK_CACHE = 4 * 1024 * 1024  # bytes of HDF5 chunk cache for store-backed centers


def create_centers(spec: dict[str, Any], n_classes: int) -> Centers:
    """Centers from a description: ``{"type": "system", name, n_dim, seed, interpolations, projection, options}`` or
    ``{"type": "store", "path": ...}``."""
    if spec["type"] == "system":
        from .systems import create_system, get_spec

        options = spec.get("options", get_spec(spec["name"]).legacy_options)  # runs from before "options": old meaning
        system = create_system(
            spec["name"],
            spec["n_dim"],
            seed=spec.get("seed"),
            interpolations=spec.get("interpolations", 0),
            projection=spec.get("projection"),
            **options,
        )
        return SystemCenters(system, n_classes)
    if spec["type"] == "store":
        from .stores import open_store

        # random rows rarely share a chunk: a small chunk cache bounds the memory at any n_classes
        store = open_store(spec["path"], rdcc_nbytes=TRAIN_CHUNK_CACHE)
        if n_classes > store.n_classes:
            raise ValueError(f"labels reach class {n_classes - 1} but {spec['path']} has {store.n_classes:,} classes")
        return store_centers(store)
    raise ValueError(f"unknown centers type {spec['type']!r}")


def load_run(run_dir: str | Path):
    """``(model, centers or None, meta)`` of a finished run, centers rebuilt from ``model.json`` (close them with
    ``centers.close()`` when done: store-backed centers hold the store open)."""
    from .models import load_run_model

    model, meta = load_run_model(run_dir)
    centers = None
    if meta["objective"] == "lsc":
        centers = create_centers(meta["centers"], int(meta["n_classes"]))
    return model, centers, meta


def create_run_dir(run_dir: Path, config: dict[str, Any]) -> None:
    """An empty run directory (an existing one is replaced: ``--overwrite`` was checked) with ``config.json``."""
    if run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(exist_ok=True)
    (run_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (a checkpoint is complete once it has its trainer.json)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, run_dir: Path, step: int, batches: int, keep: int) -> None:
    """``save_state`` into ``checkpoints/step_N`` (written under a temporary name, renamed when complete), with
    ``trainer.json`` (step, batches seen, processes); only the last ``keep`` checkpoints stay."""
    final = run_dir / CHECKPOINTS / f"step_{step}"
    tmp = run_dir / CHECKPOINTS / f".step_{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process has written its part (e.g. its RNG state) before the rename
    if accelerator.is_main_process:
        state = {"step": step, "batches": batches, "processes": accelerator.num_processes}
        (tmp / TRAINER_STATE).write_text(json.dumps(state) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def read_checkpoint(accelerator, run_dir: Path) -> tuple[int, int]:
    """Restore the latest checkpoint into the prepared objects: ``(step, batches seen)``, ``(0, 0)`` if none."""
    path = latest_checkpoint(run_dir)
    if path is None:
        return 0, 0
    state = json.loads((path / TRAINER_STATE).read_text())
    world = accelerator.num_processes
    if int(state.get("processes", world)) != world:  # an epoch's shares depend on the process count
        raise ValueError(
            f"--resume: {path} was written by {state['processes']} process(es), this run has {world}; resume with "
            "the same number of processes"
        )
    accelerator.load_state(str(path))
    return int(state["step"]), int(state["batches"])


class RunLog:
    """``metrics.jsonl`` (main process) and the same numbers to Accelerate's trackers (``--log-with``, logging into
    ``OUT/logs``), with the resolved configuration as their hyperparameters."""

    def __init__(self, accelerator, run_dir: Path, config: dict[str, Any], trackers: bool) -> None:
        self.accelerator, self.trackers = accelerator, trackers
        self.file = (run_dir / METRICS).open("a") if accelerator.is_main_process else None
        if trackers:  # hyperparameters must be scalars for TensorBoard
            config = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in config.items()}
            accelerator.init_trackers("lscdistill", config=config)

    def log(self, step: int, **values: Any) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"time": time.time(), "step": step, **values}) + "\n")
            self.file.flush()
        if self.trackers:  # Accelerate logs on the main process only
            numbers = {k: v for k, v in values.items() if isinstance(v, int | float)}
            self.accelerator.log(numbers, step=step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.trackers:
            self.accelerator.end_training()
