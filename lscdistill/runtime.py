"""One Accelerate ``Accelerator`` per command, safe to create again in the same process."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["create_accelerator"]


def create_accelerator(precision: str = "no", cpu: bool = False, **kwargs: Any):
    """An ``Accelerator`` with ``mixed_precision=precision``, on the CPU when ``cpu`` or without CUDA.

    Accelerate keeps its state (precision, device) process-wide, so a second command in one process (a recipe's
    next step, a notebook, the test suite on a GPU host) with another precision or ``--cpu`` would fail with
    "AcceleratorState has already been initialized". That state is reset first; under ``torchrun`` / ``accelerate
    launch`` the process group's part (``PartialState``) is kept. (``_reset_state`` is what Accelerate's own tests
    use between cases.)
    """
    import torch.distributed as dist
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=not (dist.is_available() and dist.is_initialized()))
    return Accelerator(mixed_precision=precision, cpu=cpu or not torch.cuda.is_available(), **kwargs)
