"""Mixup/CutMix toward class centers against a naive per-sample loop; EMA of weights against a hand-rolled EMA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lscdistill.centers import SystemCenters
from lscdistill.cli import app
from lscdistill.losses import create_loss
from lscdistill.mixup import CenterMixup
from lscdistill.models import load_state_dict
from lscdistill.systems import create_system
from lscdistill.train import TrainConfig
from lscdistill.train.loop import _loss


@pytest.mark.parametrize("batch", [8, 7])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_mixed_inputs_equal_a_per_sample_loop(mode, batch):
    x = torch.randn(batch, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    np.random.seed(1)  # noqa: NPY002 (timm draws lambda from NumPy's global generator)
    mixed = x.clone()
    partner, lam = CenterMixup(mixup_alpha=0.4, mode=mode)(mixed)
    n = batch - batch % 2
    for b in range(batch):
        p = n - 1 - b if b < n else b
        assert int(partner[b]) == p
        expected = lam[b] * x[b] + (1 - lam[b]) * x[p]
        torch.testing.assert_close(mixed[b], expected, rtol=1e-6, atol=1e-6)
    assert lam[n:].eq(1).all() and ((lam > 0) & (lam <= 1)).all()
    if mode == "pair":  # a pair shares its lambda
        torch.testing.assert_close(lam[:n], lam[:n].flip(0))


def _mixed_loss(objective, loss_name, mode, cutmix):
    """``train._loss`` with mixing, and the same loss computed one sample at a time from the returned pairing."""
    torch.manual_seed(0)
    n_classes, dim, batch = 10_000_000, 3200, 9  # centers by formula: nothing of size n_classes is built
    centers = SystemCenters(create_system("an", dim, seed=0), n_classes) if objective == "lsc" else None
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, dim if centers else 12))
    x = torch.randn(batch, 3, 4, 4)
    y = torch.randint(0, n_classes if centers else 12, (batch,))
    mix = CenterMixup(mixup_alpha=0.8, cutmix_alpha=1.0 if cutmix else 0.0, mode=mode)
    cfg = TrainConfig(out=".", loss=loss_name)
    loss_fn = create_loss(loss_name, radius=0.5) if centers else torch.nn.CrossEntropyLoss()
    np.random.seed(3)  # noqa: NPY002
    got = _loss(model, x.clone(), y, y, centers, loss_fn, cfg, mix)
    np.random.seed(3)  # noqa: NPY002
    mixed = x.clone()
    partner, lam = mix(mixed)
    z = model(mixed).float()
    terms = []
    for b in range(batch):
        pair = [(y[b], lam[b]), (y[partner[b]], 1 - lam[b])]
        if centers is None:
            terms.append(sum(w * F.cross_entropy(z[b : b + 1], t.view(1)) for t, w in pair))
            continue
        term = 0.0
        for t, w in pair:
            c = centers.gather(t.view(1)).float()
            cos = F.cosine_similarity(z[b : b + 1], c, dim=1)[0]
            dist = torch.expm1(F.relu(torch.linalg.vector_norm(z[b] - c[0]) - 0.5))
            term = term + w * {"cos": 1 - cos, "dist": dist, "cos+dist": 1 - cos + dist}[loss_name]  # both batch means
        terms.append(term)
    total = torch.stack(terms)
    expected = total.sum() if loss_name == "dist" else total.mean()
    return got, expected


@pytest.mark.parametrize(
    ("objective", "loss_name", "mode", "cutmix"),
    [
        ("lsc", "cos", "batch", False),
        ("lsc", "cos", "elem", True),
        ("lsc", "dist", "pair", False),
        ("lsc", "cos+dist", "elem", False),
        ("ce", "cos", "batch", True),
        ("ce", "cos", "elem", False),
    ],
)
def test_mixed_loss_equals_a_per_sample_loop(objective, loss_name, mode, cutmix):
    got, expected = _mixed_loss(objective, loss_name, mode, cutmix)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_cross_entropy_mix_equals_timms_soft_targets():
    """For cross-entropy the weighted pair of terms is timm's Mixup + SoftTargetCrossEntropy (no smoothing)."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    x = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    y = torch.arange(8) % 5
    np.random.seed(7)  # noqa: NPY002
    xt, soft = Mixup(mixup_alpha=0.5, label_smoothing=0.0, num_classes=5)(x.clone(), y)
    np.random.seed(7)  # noqa: NPY002
    xm = x.clone()
    partner, lam = CenterMixup(mixup_alpha=0.5)(xm)
    torch.testing.assert_close(xm, xt)
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(5))
    ours = (lam * F.cross_entropy(logits, y, reduction="none")).mean()
    ours = ours + ((1 - lam) * F.cross_entropy(logits, y[partner], reduction="none")).mean()
    torch.testing.assert_close(ours, SoftTargetCrossEntropy()(logits, soft))


def test_bad_mixup_settings_are_clear_errors():
    for kwargs, message in [
        ({"mixup_alpha": -1}, "--mixup and --cutmix must be >= 0"),
        ({"mixup_alpha": 0.2, "prob": 2}, "must be in [0, 1]"),
        ({"mixup_alpha": 0.2, "mode": "row"}, "--mixup-mode must be one of"),
    ]:
        with pytest.raises(ValueError, match=None) as info:
            CenterMixup(**kwargs)
        assert message in str(info.value)


def test_ema_weights_equal_a_hand_rolled_ema(tmp_path):
    """Every optimizer step: ema = d_t * ema + (1 - d_t) * w_t with d_t = min(d, 1 - t^(-2/3)) (timm's
    warmup; 0 at step 1: the EMA starts as the first step's weights), checked from each step's checkpoint
    (weights and EMA); the saved model is the last EMA."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 96))
    run, decay = tmp_path / "run", 0.95
    args = ["train", "--features", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--hidden", 16,
            "--epochs", 2, "-b", 16, "--ema-decay", decay, "--checkpoint-every", 1, "--keep-checkpoints", 100,
            "-q", "--out", run]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    steps = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").iterdir())
    assert steps == list(range(1, 13))

    def state(step, name):
        path = run / "checkpoints" / f"step_{step}" / name
        if name.endswith(".pkl"):
            return {k.removeprefix("module."): v for k, v in torch.load(path, weights_only=True).items()}
        return load_state_dict(path)

    ema = state(1, "custom_checkpoint_0.pkl")
    for t in steps[1:]:
        d = min(decay, 1 - t ** (-2 / 3))
        weights = state(t, "model.safetensors")
        ema = {k: d * v + (1 - d) * weights[k] for k, v in ema.items()}
        saved = state(t, "custom_checkpoint_0.pkl")
        for k in ema:
            torch.testing.assert_close(saved[k], ema[k], rtol=1e-5, atol=1e-6, msg=f"step {t} {k}")
    final = load_state_dict(run / "model.safetensors")
    for k in final:
        torch.testing.assert_close(final[k], saved[k], rtol=0, atol=0)
    assert not torch.equal(final["backbone.net.0.weight"], weights["backbone.net.0.weight"])
    assert json.loads((run / "model.json").read_text())["ema"] == {"decay": decay, "warmup": True}
