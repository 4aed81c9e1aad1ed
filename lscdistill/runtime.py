"""One Accelerate ``Accelerator`` per command, safe to create again in the same process."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch

__all__ = ["PRECISIONS", "create_accelerator"]

PRECISIONS = ("no", "fp16", "bf16")  # fp8 needs a backend (TransformerEngine, MS-AMP) lscdistill does not set up
#: how long a process waits for the others in a collective: rank 0 may write a 1M-class store or snap while the
#: others wait (NCCL's default, 10 minutes, would end the run)
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


def create_accelerator(precision: str = "no", cpu: bool = False, **kwargs: Any):
    """An ``Accelerator`` with ``mixed_precision=precision``, on the CPU when ``cpu`` or without CUDA.

    Accelerate keeps its state (precision, device) process-wide, so a second command in one process (a recipe's
    next step, a notebook, the test suite on a GPU host) with another precision or ``--cpu`` would fail with
    "AcceleratorState has already been initialized". That state is reset first; under ``torchrun`` / ``accelerate
    launch`` the process group's part (``PartialState``) is kept. (``_reset_state`` is what Accelerate's own tests
    use between cases.) Collectives wait up to ``PROCESS_GROUP_TIMEOUT`` (2 hours) for a slow rank.
    """
    import torch.distributed as dist
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    AcceleratorState._reset_state(reset_partial_state=not (dist.is_available() and dist.is_initialized()))
    handlers = [InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)]
    return Accelerator(
        mixed_precision=precision, cpu=cpu or not torch.cuda.is_available(), kwargs_handlers=handlers, **kwargs
    )
