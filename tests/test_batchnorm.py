"""BatchNorm statistics that belong to the weights: precise-BN recomputation against a naive reference, the
train-mode context that changes nothing, and the real-data regression that the eval-mode model works."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lscdistill.batchnorm import batch_statistics, batchnorm_layers, recompute_batchnorm
from lscdistill.cli import app
from lscdistill.models import build_student
from lscdistill.train import TrainConfig
from lscdistill.train.bnstats import _bn_indices

runner = CliRunner()


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4)
    )


def _naive_stats(net: nn.Module, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each BatchNorm's mean over batches of its input's batch mean and unbiased batch variance, in float64,
    the layers before it in eval mode except for the BatchNorms, which normalize with the batch's own statistics."""
    per_layer: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for x in batches:
        h = x.double()
        for i, layer in enumerate(net):
            if isinstance(layer, nn.BatchNorm2d):
                mean = h.mean(dim=(0, 2, 3))
                var_b = h.var(dim=(0, 2, 3), unbiased=False)
                n = h.numel() / h.shape[1]
                per_layer.setdefault(i, []).append((mean, var_b * n / (n - 1)))
                h = (h - mean[None, :, None, None]) / torch.sqrt(var_b[None, :, None, None] + layer.eps)
                h = h * layer.weight.double()[None, :, None, None] + layer.bias.double()[None, :, None, None]
            elif isinstance(layer, nn.Dropout):
                continue  # the reference has no dropout: the recomputation must not depend on it either
            else:
                h = layer.double()(h)
                layer.float()
    return [
        (torch.stack([m for m, _ in v]).mean(0), torch.stack([s for _, s in v]).mean(0))
        for _, v in sorted(per_layer.items())
    ]


def test_recompute_equals_the_naive_average_of_batch_statistics():
    net = _net()
    with torch.no_grad():
        for layer in batchnorm_layers(net):  # stale statistics and non-trivial affine parameters
            layer.running_mean.fill_(5.0)
            layer.running_var.fill_(9.0)
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.uniform_(-1.0, 1.0)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(6, 3, 7, 7, generator=gen) * (1 + i) + i for i in range(5)]
    net.eval()
    net[3].p = 0.0  # the naive reference has no dropout
    assert recompute_batchnorm(net, iter(batches)) == len(batches)
    assert not net.training  # mode restored
    for layer, (mean, var) in zip(batchnorm_layers(net), _naive_stats(net, batches), strict=True):
        torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-5, atol=1e-5)


def test_recompute_leaves_the_global_rng_as_it_was():
    """A dropout in train mode draws from the global RNG; a resumed run must not see those draws."""
    net = _net()  # Dropout(0.5) between the BatchNorms
    x = torch.randn(4, 3, 7, 7)
    rng_before = torch.random.get_rng_state()
    recompute_batchnorm(net, iter([x, x]))
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    net.train()
    net(x)  # the same forward outside the recomputation does draw
    assert not torch.equal(torch.random.get_rng_state(), rng_before)


def test_recompute_without_batchnorm_is_a_no_op():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recompute_batchnorm(net, iter([torch.randn(3, 4)])) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_batch_statistics_changes_nothing_and_uses_the_batch():
    net = _net().eval()
    net[3].train()  # a module's own flag must come back as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 3, 7, 7) * 3 + 2
    rng_before = torch.random.get_rng_state()
    with batch_statistics(net) as m:
        out_train = m(x)
    assert not net.training and net[3].training and torch.equal(torch.random.get_rng_state(), rng_before)
    for k, v in net.state_dict().items():
        assert torch.equal(before[k], v), k  # running statistics and num_batches_tracked restored
    # BatchNorm normalized with the batch: the last BatchNorm's output has the affine bias as its channel mean
    torch.testing.assert_close(out_train.mean(dim=(0, 2, 3)), net[5].bias.detach(), rtol=0, atol=1e-5)
    with batch_statistics(net) as m:
        again = m(x)
    torch.testing.assert_close(again, out_train, rtol=0, atol=0)  # dropout stays off: the same output twice


@pytest.mark.parametrize("n, world", [(1000, 1), (1000, 2), (1001, 2), (100, 2), (70, 2), (10, 3)])
def test_bn_batches_split_one_list_over_processes(n, world):
    cfg = TrainConfig(out="x", batch_size=32, bn_batches=5, seed=4)
    one, bs1, total1 = _bn_indices(n, cfg, 17, 0, 1)
    shares = [_bn_indices(n, cfg, 17, r, world) for r in range(world)]
    bs, total = shares[0][1], shares[0][2]
    assert {s[1] for s in shares} == {bs} and {s[2] for s in shares} == {total}
    assert total % world == 0 and total >= world and total * bs <= n
    assert len({len(s[0]) for s in shares}) == 1  # every process forwards the same number of full batches
    batches = [idx.reshape(-1, bs) for idx, _, _ in shares]
    merged = np.concatenate([batches[i % world][i // world] for i in range(total)])  # batch i on rank i % world
    assert len(np.unique(merged)) == len(merged)  # no sample twice
    if bs == bs1:  # the batches are a prefix of one process's list (rounded down to a multiple of world)
        np.testing.assert_array_equal(merged, one[: len(merged)])
        assert total == total1 - total1 % world or total == world
    assert not np.array_equal(one, _bn_indices(n, cfg, 18, 0, 1)[0])  # another step, other samples


def test_resnet18_at_32px_on_real_digits_works_in_eval_mode(tmp_path):
    """The defect this guards against: resnet18 at 32 px (its last stage sees 1x1 maps) trained with LSC on 300
    real MNIST digits scored 20% in eval mode (stale BatchNorm statistics) and ~90% in train mode."""
    from benchmarks.realdata import write_mnist

    per_class = 30
    split = write_mnist(tmp_path / "mnist", limit_per_class=per_class)  # 300 train / 70 val images
    run = tmp_path / "run"
    args = ["--model", "resnet18", "--img-size", "32", "--data", split.train, "--val-data", split.val]
    result = runner.invoke(app, ["train", *args, "--epochs", "3", "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "model.json").read_text())
    bn = meta["batchnorm"]
    n_layers = len(batchnorm_layers(build_student({"architecture": "resnet18", "n_dim": 8})))
    assert bn["recomputed"] and bn["layers"] == n_layers and bn["samples"] == bn["batches"] * bn["batch_size"] > 0
    check = bn["mode_check"]
    assert check["samples"] == 10 * per_class // 64 * 64  # whole batches of 64
    assert abs(check["train_top1_train_mode"] - check["train_top1_eval_mode"]) <= 0.02
    assert "warning" not in check and "warning" not in result.output
    evaluated = runner.invoke(app, ["evaluate", str(run), "--data", split.val, "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    top1 = json.loads(evaluated.stdout)["top1"]
    assert top1 == meta["final_metrics"]["top1"]  # validation during training reported the saved model
    assert top1 >= 0.6  # chance is 0.1; the stale-statistics model scored 0.2
