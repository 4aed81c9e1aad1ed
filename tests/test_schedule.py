"""The learning rate at every optimizer step: the schedule against a naive reference of its definition, and what a
``--resume`` restores (the same sequence; with more epochs, the longer schedule from the restored step on)."""

from __future__ import annotations

import math

import pytest
import torch

from lscdistill.train.schedule import SCHEDULES, STEP_GAMMA, STEP_MILESTONES, WSD_DECAY_FRACTION, create_scheduler

LR = 3e-3


def reference_lr(schedule: str, warmup: int, total: int, step: int) -> float:
    """The definition, written out piece by piece: (step + 1) / warmup of the LR during the warmup; then 1
    (constant), a cosine from 1 to 0 over the steps after the warmup (cosine), or 1 until ``decay_from`` and a
    cosine from 1 to 0 over the remaining ``WSD_DECAY_FRACTION`` of the steps after the warmup (wsd)."""
    if step < warmup:
        return LR * (step + 1) / warmup
    after = max(1, total - warmup)  # steps after the warmup (at least one)
    if schedule == "constant":
        return LR
    if schedule == "step":  # one drop at each milestone the step has reached
        return LR * STEP_GAMMA ** len([m for m in STEP_MILESTONES if step >= warmup + m * after])
    if schedule == "cosine":
        start, length = warmup, after
    else:
        start, length = warmup + (1 - WSD_DECAY_FRACTION) * after, WSD_DECAY_FRACTION * after
    if step <= start:
        return LR
    if step >= start + length:
        return 0.0
    return LR * (1 + math.cos(math.pi * (step - start) / length)) / 2


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    """The LR each of the next ``steps`` optimizer steps uses."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _fresh(schedule: str, warmup: int, total: int):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=LR)
    return create_scheduler(optimizer, schedule, warmup, total), optimizer


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(("warmup", "total"), [(0, 100), (1, 100), (5, 100), (7, 93), (13, 1000), (0, 37), (50, 40)])
def test_every_step_follows_the_schedules_definition(schedule, warmup, total):
    """Also where wsd's decay starts between two steps (7 of 93: at step 75.8), which torch's SequentialLR cannot
    give (its milestones are integers), and a warmup longer than the run."""
    got = _lrs(*_fresh(schedule, warmup, total), total + 1)  # the LR after the last step too (logged)
    want = [reference_lr(schedule, warmup, total, k) for k in range(total + 1)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15 * LR)
    if schedule not in ("constant", "step") and warmup < total:
        assert got[-1] == pytest.approx(0.0, abs=1e-15 * LR) and max(got) == pytest.approx(LR)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_resume_restores_the_same_sequence_and_follows_a_longer_run(schedule):
    """A run cut at step 40, rebuilt and given the saved optimizer and scheduler states (what a checkpoint holds):
    the same LRs, bit for bit; with the total raised (``--resume --epochs`` more), the longer run's LRs from the
    first step the restored scheduler computes on."""
    warmup, total, cut = 5, 100, 40
    whole = _lrs(*_fresh(schedule, warmup, total), total + 1)
    for new_total in (total, 2 * total):
        scheduler, optimizer = _fresh(schedule, warmup, total)
        _lrs(scheduler, optimizer, cut)
        saved = optimizer.state_dict(), scheduler.state_dict()
        scheduler, optimizer = _fresh(schedule, warmup, new_total)
        optimizer.load_state_dict(saved[0])
        scheduler.load_state_dict(saved[1])
        resumed = _lrs(scheduler, optimizer, new_total + 1 - cut)
        if new_total == total:
            assert resumed == whole[cut:]
        else:  # the first LR was set before the checkpoint; every later one follows the new total
            assert resumed[0] == whole[cut]
            want = [reference_lr(schedule, warmup, new_total, k) for k in range(cut + 1, new_total + 1)]
            assert resumed[1:] == pytest.approx(want, rel=1e-12, abs=1e-15 * LR)


def test_step_is_torchs_multistep_where_the_milestones_are_whole_steps():
    total = 200
    milestones = [round(m * total) for m in STEP_MILESTONES]
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=LR)
    torch_lrs = _lrs(torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=STEP_GAMMA), optimizer, total)
    assert _lrs(*_fresh("step", 0, total), total) == pytest.approx(torch_lrs, rel=1e-12)
    assert torch_lrs[-1] == pytest.approx(LR * STEP_GAMMA ** len(STEP_MILESTONES))  # the reference really drops
