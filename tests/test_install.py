"""The environment `make` builds: torch and torchvision must be a working pair (timm imports torchvision)."""

from __future__ import annotations

import torch


def test_timm_model_runs_forward():
    import timm

    model = timm.create_model("test_resnet", num_classes=0)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, model.num_features) and torch.isfinite(out).all()
