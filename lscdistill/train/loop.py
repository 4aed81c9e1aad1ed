"""The training loop of one run (:class:`Trainer`): epochs of batches, optimizer steps, validation, checkpoints
and the final save; the loss of a batch (:func:`_loss`, Algorithm 1); the EMA of the weights."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..centers import Centers, SystemCenters
from ..data import Augment, LabeledData, SplitLoader, default_workers
from ..evaluate import calibrate_after_training, calibration_scores, evaluate_model
from ..models import save_run_model, unwrap
from ..progress import progress_bar
from ..rundir import RunLog, create_run_dir, read_checkpoint, save_checkpoint
from .bnstats import BatchNormStats, measure_mode_gap
from .config import TrainConfig, TrainResult
from .schedule import create_scheduler, default_warmup
from .setup import Setup

__all__ = ["Trainer"]

_CRASH_AT_STEP = int(os.environ.get("LSCDISTILL_CRASH_AT_STEP", "-1"))  # fault injection for the resume test


class Trainer:
    """The training loop of one run, in the pieces a reader follows: ``__init__`` (steps, run directory,
    optimizer, schedule, loaders, Accelerate, EMA, resume), :meth:`fit` (epochs of :meth:`_epoch`, each batch
    through :meth:`_batch` and every optimizer step through :meth:`_step`, then :meth:`_end_epoch`: validate and
    checkpoint) and :meth:`finish` (the end-of-run check and ``model.json``)."""

    def __init__(self, cfg: TrainConfig, accelerator, setup: Setup, augment: Augment, mix) -> None:
        self.accelerator, self.setup, self.mix = accelerator, setup, mix
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.run_dir = run_dir = Path(cfg.out)
        per_rank = len(setup.train_data) // self.world
        if per_rank < 1:
            raise ValueError(f"{len(setup.train_data)} training samples for {self.world} processes")
        self.batches_per_epoch = math.ceil(per_rank / cfg.batch_size)
        total_steps = math.ceil(self.batches_per_epoch / cfg.grad_accum) * cfg.epochs
        if cfg.warmup_steps is None:  # resolved here, from the step count, so config.json records the number
            cfg = replace(cfg, warmup_steps=default_warmup(total_steps))
        self.cfg = cfg
        optimizer_meta = {"name": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay, "schedule": cfg.schedule}
        setup.meta["optimizer"] = optimizer_meta | {"warmup_steps": cfg.warmup_steps, "total_steps": total_steps}
        if accelerator.is_main_process and not cfg.resume:
            options = setup.meta["centers"].get("options")  # a generated system's: kept for a --resume
            create_run_dir(run_dir, cfg.to_json() | ({"system_options": options} if options is not None else {}))
        accelerator.wait_for_everyone()

        model = setup.model
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = create_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, total_steps)
        self.bn_stats = BatchNormStats(cfg, model, setup.train_data)
        workers, pin = default_workers(accelerator, cfg.workers), accelerator.device.type == "cuda"
        kw = {"workers": workers, "pin_memory": pin}
        self.train_loader = SplitLoader(setup.train_data, cfg.batch_size, augment=augment, seed=cfg.seed, **kw)
        self.val_loader = None if setup.val_data is None else SplitLoader(setup.val_data, cfg.batch_size, **kw)
        self.channels_last = cfg.channels_last and cfg.features is None  # image models only
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.scheduler.split_batches = True  # the scheduler steps once per optimizer step (not once per process)
        self.ema = _create_ema(accelerator, self.model, cfg)
        self.evaluated = self.model if self.ema is None else self.ema.module  # validated, checked and saved

        self.continual = None
        if setup.init_meta is not None and setup.val_data is not None:
            old_n = int(setup.init_meta["n_classes"])
            before = _old_class_accuracy(accelerator, self.model, setup.centers, setup.val_data, old_n, cfg)
            self.continual = {"old_classes": old_n, "old_class_top1_before": before}
        self.step, batches = read_checkpoint(accelerator, run_dir) if cfg.resume else (0, 0)
        self.first_epoch, self.batch_in_epoch = divmod(batches, self.batches_per_epoch)
        self.final: dict[str, Any] = {}
        self.val_scores: tuple[int, Any] = (-1, None)  # (step, scores) of the last validation pass
        self.seen, self.start = 0, time.perf_counter()

    def fit(self) -> None:
        cfg = self.cfg
        self.log = RunLog(self.accelerator, self.run_dir, cfg.to_json(), bool(cfg.log_with))
        done = self.first_epoch * self.batches_per_epoch + self.batch_in_epoch
        hidden = cfg.quiet or not self.accelerator.is_main_process
        try:
            with progress_bar("train", self.batches_per_epoch * cfg.epochs, disable=hidden, initial=done) as advance:
                for epoch in range(self.first_epoch, cfg.epochs):
                    self._epoch(epoch, advance)
                    self._end_epoch(epoch)
        finally:
            self.log.close()

    def _epoch(self, epoch: int, advance) -> None:
        cfg = self.cfg
        order = _epoch_order(len(self.setup.train_data), cfg.seed, epoch, self.rank, self.world)
        order = order[self.batch_in_epoch * cfg.batch_size :]
        self.model.train()
        self.running, self.n_run = 0.0, 0
        for x, y_cpu, _ in self.train_loader(order, epoch):
            shown = self._batch(x, y_cpu, epoch)
            advance(len(y_cpu), loss=shown, epoch=f"{epoch + 1}/{cfg.epochs}")
        self.batch_in_epoch = 0

    def _batch(self, x: torch.Tensor, y_cpu: torch.Tensor, epoch: int) -> float | None:
        """Forward and backward one batch; an optimizer step at the end of its accumulation group. Returns the
        running loss when it was logged (the only host sync of the loop)."""
        cfg, accelerator, device = self.cfg, self.accelerator, self.accelerator.device
        x, y = x.to(device, non_blocking=True), y_cpu.to(device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        group_start = self.batch_in_epoch - self.batch_in_epoch % cfg.grad_accum
        group = min(cfg.grad_accum, self.batches_per_epoch - group_start)  # the last group may be shorter
        self.batch_in_epoch += 1
        sync = self.batch_in_epoch - group_start == group
        with contextlib.nullcontext() if sync else accelerator.no_sync(self.model):
            s = self.setup
            loss = _loss(self.model, x, y, y_cpu, s.centers, s.loss_fn, cfg, self.mix)
            accelerator.backward(loss / group)
        self.seen += len(y) * self.world
        self.running, self.n_run = self.running + loss.detach(), self.n_run + 1  # on the device: no sync per batch
        return self._step(epoch) if sync else None

    def _step(self, epoch: int) -> float | None:
        cfg = self.cfg
        if cfg.clip_grad:  # 0: off
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.step += 1
        if self.ema is not None:
            self.ema.update(unwrap(self.accelerator, self.model), step=self.step)
        shown = None
        if cfg.log_every and self.step % cfg.log_every == 0:
            shown = float(self.running / self.n_run)
            rate = self.seen / (time.perf_counter() - self.start)
            lr = self.scheduler.get_last_lr()[0]
            self.log.log(step=self.step, epoch=epoch, loss=shown, lr=lr, samples_per_s=rate)
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.bn_stats.update(self.accelerator, self.evaluated, self.step)
            batches = epoch * self.batches_per_epoch + self.batch_in_epoch
            save_checkpoint(self.accelerator, self.run_dir, self.step, batches, cfg.keep_checkpoints)
        if self.step == _CRASH_AT_STEP:  # tests: die like a killed process, no cleanup
            os._exit(137)
        return shown

    def _end_epoch(self, epoch: int) -> None:
        """Validate and checkpoint what the run would save: statistics recomputed for the evaluated weights."""
        cfg, s = self.cfg, self.setup
        self.bn_stats.update(self.accelerator, self.evaluated, self.step)
        if self.val_loader is not None:
            scores = calibration_scores(s.centers, cfg.objective)  # kept for the calibration if these weights are final
            self.final = evaluate_model(
                self.accelerator, self.evaluated, s.centers, self.val_loader, objective=cfg.objective, scores=scores
            )
            self.val_scores = (self.step, scores)
            val = {f"val_{k}": v for k, v in self.final.items()}
            self.log.log(step=self.step, epoch=epoch + 1, train_loss=float(self.running / max(1, self.n_run)), **val)
        if not cfg.checkpoint_every:
            batches = (epoch + 1) * self.batches_per_epoch
            save_checkpoint(self.accelerator, self.run_dir, self.step, batches, cfg.keep_checkpoints)

    def finish(self) -> TrainResult:
        """The end-of-run check (train vs eval mode) and ``model.safetensors`` + ``model.json``."""
        cfg, s, accelerator, evaluated = self.cfg, self.setup, self.accelerator, self.evaluated
        self.bn_stats.update(accelerator, evaluated, self.step)  # a no-op unless resumed from the last checkpoint
        continual = self.continual
        if continual is not None:
            old = continual["old_classes"]
            continual["old_class_top1_after"] = _old_class_accuracy(
                accelerator, evaluated, s.centers, s.val_data, old, cfg
            )
        data = self.bn_stats.data
        mode_check = None if data is None else measure_mode_gap(accelerator, evaluated, s.centers, data, cfg)
        step, scores = self.val_scores
        scores = scores if step == self.step else None  # resumed after the last validation: score the split again
        calibrate_after_training(
            accelerator, evaluated, s.centers, self.val_loader, self.run_dir, cfg.objective, scores
        )
        if accelerator.is_main_process:
            meta = s.meta | {"steps": self.step, "final_metrics": self.final, "continual": continual}
            meta["ema"] = {"decay": cfg.ema_decay, "warmup": True} if self.ema is not None else None
            meta["batchnorm"] = self.bn_stats.info | ({"mode_check": mode_check} if mode_check else {})
            save_run_model(self.run_dir, unwrap(accelerator, evaluated), meta)
        accelerator.wait_for_everyone()
        seconds = time.perf_counter() - self.start
        return TrainResult(self.run_dir, self.step, self.final, continual, seconds, mode_check)


def _loss(model, x, y, y_cpu, centers: Centers | None, loss_fn, cfg: TrainConfig, mix=None) -> torch.Tensor:
    """Cross-entropy on the head's logits, or the LSC loss against the batch's gathered centers (Algorithm 1); with
    mixup/CutMix the λ-weighted sum of the losses toward both samples' targets (:mod:`lscdistill.mixup`).
    ``y_cpu``: the labels as the loader gave them (centers are gathered from host labels, no device sync)."""
    partner, lam = mix(x) if mix is not None else (None, None)
    out = model(x).float()
    if centers is None:
        if mix is None:
            return loss_fn(out, y)
        ce = torch.nn.functional.cross_entropy
        return (lam * ce(out, y, reduction="none") + (1 - lam) * ce(out, y[partner], reduction="none")).mean()
    c = centers.gather(y_cpu).to(y.device, non_blocking=True)
    kw = {}
    radius = centers.cluster_radius(y_cpu) if isinstance(centers, SystemCenters) and cfg.loss != "cos" else None
    if radius is not None:  # the planar system's per-class radii; None: the loss's own --radius
        kw["radius"] = radius.to(y.device, non_blocking=True)
    if mix is None:
        return loss_fn(out, c, **kw)
    flipped = {k: v[partner] for k, v in kw.items()}
    return loss_fn(out, c, weight=lam, **kw) + loss_fn(out, c[partner], weight=1 - lam, **flipped)


def _epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This process's samples of an epoch: a seeded shuffle, split into equal strided shares."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per = n // world
    return perm[rank::world][:per]


def _create_ema(accelerator, model, cfg: TrainConfig):
    """timm's ``ModelEmaV3`` of the (unwrapped) model when ``--ema-decay`` > 0, with its warmup (decay
    ``min(d, 1 - step^(-2/3)), 0 at step 1``); registered so checkpoints save and ``--resume`` restores it."""
    if cfg.ema_decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(unwrap(accelerator, model), decay=cfg.ema_decay, use_warmup=True)
    accelerator.register_for_checkpointing(ema)
    return ema


def _old_class_accuracy(accelerator, model, centers, val_data: LabeledData, old_n: int, cfg: TrainConfig) -> float:
    keep = np.flatnonzero(val_data.labels < old_n)
    result = evaluate_model(
        accelerator, model, centers, val_data, cfg.batch_size, objective=cfg.objective, indices=keep
    )
    return result["top1"]
