"""Why a saved model fails in eval mode: per BatchNorm, its saved statistics vs the statistics of its weights.

``python benchmarks/bn_drift.py RUN DATA [--batches 32] [--batch-size 64]``

For every BatchNorm of a finished run, forwards ``--batches`` unaugmented training batches in train mode (the
weights as saved) and records each layer's batch mean and variance of its input; prints, per layer: the input's
spatial size, the saved running variance over the population variance (median and max over channels), the saved
running mean's error in population standard deviations (channel average), and the population's |mean| / std
(an almost constant input makes a BatchNorm amplify a tiny variation, and its mean then has to be exact).
Run it on a model trained with ``--bn-batches 0`` to see the moving averages; a default run shows recomputed ones.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from lscdistill.batchnorm import batchnorm_layers
from lscdistill.data import load_images, resolve_preprocess
from lscdistill.evaluate import load_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bn_drift.py", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished `lscdistill train` run directory")
    parser.add_argument("data", help="its training data (digits:train or an ImageFolder directory)")
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    model, centers, _ = load_run(args.run)
    if centers is not None:
        centers.close()
    data = load_images(args.data, resolve_preprocess(model, args.data))
    bn = set(batchnorm_layers(model))
    layers = {name: m for name, m in model.named_modules() if m in bn}
    saved = {n: (m.running_mean.double().clone(), m.running_var.double().clone()) for n, m in layers.items()}
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor, int]]] = {n: [] for n in layers}

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].double().transpose(0, 1).flatten(1)  # [C, B * H * W]
            seen[name].append((x.mean(1), x.var(1), inputs[0][0, 0].numel()))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    order = np.random.default_rng(0).permutation(len(data))[: args.batches * args.batch_size]
    model.train()
    with torch.no_grad():
        for x, _, _ in data.batches(order, args.batch_size):
            model(x)
    for h in handles:
        h.remove()
    print(f"{'layer':34s} {'HxW':>5s} {'var saved/pop':>16s} {'mean err (std)':>15s} {'|mean|/std':>11s}")
    for name in layers:
        means = torch.stack([m for m, _, _ in seen[name]])
        variances = torch.stack([v for _, v, _ in seen[name]])
        pop_mean, pop_var = means.mean(0), variances.mean(0)
        std = pop_var.sqrt().clamp_min(1e-12)
        ratio = saved[name][1] / pop_var.clamp_min(1e-24)
        err = ((saved[name][0] - pop_mean).abs() / std).mean()
        offset = (pop_mean.abs() / std).median()
        hw = seen[name][0][2]
        print(
            f"{name:34s} {hw:5d} {float(ratio.median()):7.2f} {float(ratio.max()):8.2f} {float(err):15.2f} "
            f"{float(offset):11.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
