"""``run_train``: check the options, create the Accelerate runtime, build what the run trains and run the loop."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..runtime import create_accelerator
from .config import TrainConfig, TrainResult, check_options, check_run_dir, inherit_defaults, resolve_defaults
from .loop import Trainer
from .setup import build_setup

__all__ = ["run_train"]


def run_train(cfg: TrainConfig) -> TrainResult:
    """Train a student; returns the run directory, steps and the final validation metrics."""
    with contextlib.ExitStack() as cleanup:  # closes store-backed centers however the run ends
        return _run_train(cfg, cleanup)


def _run_train(cfg: TrainConfig, cleanup: contextlib.ExitStack) -> TrainResult:
    from accelerate.utils import set_seed

    if cfg.resume:
        cfg = inherit_defaults(cfg)
    cfg = resolve_defaults(cfg)
    augment, mix = check_options(cfg)
    run_dir = Path(cfg.out)
    # gradient accumulation is done here (not by Accelerate) so an epoch's last, shorter group still steps
    accelerator = create_accelerator(
        cfg.precision,
        cfg.cpu,
        dynamo_plugin=_compile_plugin(cfg.compile),
        log_with=list(cfg.log_with) or None,
        project_dir=str(run_dir / "logs") if cfg.log_with else None,
    )
    check_run_dir(cfg, run_dir)  # fail before any work; nothing is created until the inputs are validated
    set_seed(cfg.seed)
    setup = build_setup(cfg, cleanup)
    trainer = Trainer(cfg, accelerator, setup, augment, mix)
    trainer.fit()
    return trainer.finish()


def _compile_plugin(compile_model: bool):
    """``--compile``: Accelerate's torch.compile with inductor and static shapes. With automatic dynamic shapes an
    epoch's shorter last batch recompiles the graph as dynamic, whose kernels round differently from the static
    ones a resumed run compiles first: the resumed run would drift from the uninterrupted one (measured: 2e-3 in
    the weights after 2 epochs). Static shapes compile one graph per batch size, the same in both."""
    if not compile_model:
        return None
    from accelerate.utils import TorchDynamoPlugin

    return TorchDynamoPlugin(backend="inductor", dynamic=False)
