"""Benchmark of the canonical-representations chapter, printed as ratios measured side by side in one run.

    python benchmarks/alignment.py [--quick]

1. Exact per-sample neuron gradients of one layer: ``alignment.layer_statistics`` (one summed-loss backward
   pass over all samples) against a loop of one backward pass per sample (the obvious way to get them).
2. A training step of the chapter's MLP (batch 32) with one torch thread against two.
3. A PAH bootstrap: ``alignment.pah_exponent`` (quadratic forms as moments of rotated coordinates) against
   forming the covariance and projecting it for each resample.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from theorylab import alignment, data, training
from theorylab.runtime import median_seconds


def per_sample_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: int) -> np.ndarray:
    linear = alignment.linear_layers(model)[layer]
    rows = []
    for i in range(len(y)):
        store: dict = {}
        handle = linear.register_forward_hook(lambda _m, _a, out, store=store: store.setdefault("out", out))
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        handle.remove()
        rows.append(-torch.autograd.grad(loss, store["out"])[0][0].numpy())
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke test")
    args = parser.parse_args()
    split = data.digits(1797, standardize=False, unit_interval=True)
    n = 200 if args.quick else 1797
    x, y = split.x_train[:n], split.y_train[:n]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = training.mlp([64, 128, 128, 128, 128, 10])

    batched = median_seconds(lambda: alignment.layer_statistics(model, x, y, 2), repeats=3)
    loop = median_seconds(lambda: per_sample_loop(model, x, y, 2), repeats=1)
    stats = alignment.layer_statistics(model, x, y, 2)
    assert np.allclose(stats.g_b, per_sample_loop(model, x, y, 2), atol=1e-5)
    print(f"per-sample gradients, N={n}: layer_statistics {batched * 1e3:7.1f} ms | per-sample loop "
          f"{loop * 1e3:8.1f} ms | ratio {loop / batched:6.1f}x")

    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=5e-3)
    batch_x, batch_y = split.x_train[:32], split.y_train[:32]

    def step() -> None:
        for _ in range(100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(batch_x), batch_y).backward()
            optimizer.step()

    one = median_seconds(step, repeats=3)
    torch.set_num_threads(2)
    two = median_seconds(step, repeats=3)
    torch.set_num_threads(1)
    print(f"SGD step, batch 32: 1 thread {one * 10:6.3f} ms | 2 threads {two * 10:6.3f} ms | "
          f"2 threads / 1 thread {two / one:5.1f}x")

    boots = 20 if args.quick else 200
    fast = median_seconds(lambda: alignment.pah_exponent(stats, "a", boots=boots), repeats=1)
    slow = median_seconds(lambda: alignment.pah_exponent(stats, "a", boots=boots, mode="normalised"), repeats=1)
    print(f"PAH bootstrap, {boots} resamples: rotated coordinates {fast:6.2f} s | covariance per resample "
          f"(normalised mode) {slow:6.2f} s | ratio {slow / fast:5.1f}x")


if __name__ == "__main__":
    main()
