"""Benchmarks of the speculative-inference chapter, printed as ratios measured side by side in one run.

    python benchmarks/speculative.py [--quick]

1. simulated tokens per second of the vectorised DSI simulation against a per-path event loop
   (``emulate_paper`` with no handicap, the same model one path and one epoch at a time);
2. the closed-form heatmap (100 x 100 cells, SI over L <= 200) against per-cell Monte Carlo
   (target: >= 100x faster per cell, whole grid < 60 s);
3. the concurrent engine: measured DSI wall time against the replay of its own acceptance pattern
   (target [0.85, 1.15]), the overhead per verification task as a fraction of t (target < 5%), and the
   delay from a commit to the drafter's first new draft as a fraction of d (target < 0.5);
4. measured against replayed speedup over non-SI per SP degree, with the knee at ceil(t/(Ld)).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from theorylab import speculative as spec
from theorylab import speculative_engine as engine
from theorylab import tinylm

SETTING = dict(target_latency=1.0, drafter_latency=0.1, acceptance_rate=0.8, lookahead=2, sp_degree=5)


def simulation_throughput(quick: bool) -> None:
    print("1. DSI simulation: simulated tokens per second")
    runs, tokens = (2000, 100) if quick else (10_000, 100)
    start = time.perf_counter()
    spec.simulate("dsi", n_tokens=tokens, n_runs=runs, seed=0, **SETTING)
    vectorised = runs * tokens / (time.perf_counter() - start)
    loop_runs = 200
    start = time.perf_counter()
    spec.emulate_paper("dsi", n_tokens=tokens, n_runs=loop_runs, seed=0, **SETTING)
    looped = loop_runs * tokens / (time.perf_counter() - start)
    print(f"   vectorised {vectorised:,.0f} tokens/s ({runs * tokens:,} tokens), per-path loop {looped:,.0f} "
          f"tokens/s: ratio {vectorised / looped:.0f}x")


def heatmap_against_monte_carlo(quick: bool) -> None:
    print("2. heatmap: closed forms against per-cell Monte Carlo")
    size = 40 if quick else 100
    c, a = np.meshgrid(np.linspace(0.01, 1, size), np.linspace(0, 0.99, size), indexing="ij")
    start = time.perf_counter()
    spec.heatmaps(c, a)
    closed = time.perf_counter() - start
    cells = 20
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(cells):  # one cell by Monte Carlo: SI at each L <= 200 and DSI at L = 1, 1000 runs of 200 tokens
        c_, a_ = rng.uniform(0.01, 1), rng.uniform(0, 0.99)
        kwargs = dict(target_latency=1.0, drafter_latency=c_, acceptance_rate=a_, n_tokens=200, n_runs=1000)
        for L in range(1, 201, 10 if quick else 1):
            spec.simulate("si", lookahead=L, **kwargs)
        spec.simulate("dsi", lookahead=1, **kwargs)
    per_cell_mc = (time.perf_counter() - start) / cells * (10 if quick else 1)
    per_cell_closed = closed / c.size
    print(f"   {c.size} cells in {closed:.2f} s ({per_cell_closed * 1e3:.3f} ms per cell); Monte Carlo "
          f"{per_cell_mc * 1e3:.0f} ms per cell: ratio {per_cell_mc / per_cell_closed:,.0f}x")


def trained_pair():
    torch.set_num_threads(1)
    source = tinylm.markov_source(16, order=2, alpha=0.2, context_weight=0.3, seed=0)
    text = tinylm.sample_text(source, 2000, 41, seed=1)
    torch.manual_seed(0)
    target = tinylm.TinyTransformer(16, width=32, max_len=64)
    tinylm.train_lm(target, text, steps=300, lr=5e-3)
    drafter = tinylm.BigramLM(16)
    tinylm.train_lm(drafter, text, steps=200, lr=5e-2, teacher=target)
    return tinylm.Scorer(target), tinylm.Scorer(drafter), tinylm.sample_text(source, 1, 6, seed=2)[0].tolist()


def engine_overhead(quick: bool) -> None:
    print("3. concurrent engine against the latency model (t = 40 ms padded, N = 50)")
    target, drafter, prompt = trained_pair()
    t = 0.04
    reference = engine.generate("nonsi", target, drafter, prompt, 50)
    trace = engine.acceptance_trace(drafter, prompt, reference.tokens)
    for c in ((0.3,) if quick else (0.1, 0.3)):
        P = spec.servers_needed(1.0, c, 1)
        run = engine.generate("dsi", target, drafter, prompt, 50, lookahead=1, sp_degree=P, target_delay=t,
                            drafter_delay=c * t)
        verify = [b.end - b.start for b in run.intervals if b.kind == "verify"]
        drafts = [b.end - b.start for b in run.intervals if b.kind == "draft"]
        replay = spec.replay("dsi", trace, target_latency=float(np.mean(verify)),
                             drafter_latency=float(np.mean(drafts)), lookahead=1, sp_degree=P)
        print(f"   c={c}, P={P}: measured/replay {run.seconds / replay:.3f}; overhead per task "
              f"{np.mean(verify) / t - 1:.1%} of t; preemption-to-restart delay "
              f"{np.mean(run.restart_delays) / (c * t):.2f} d; {run.preempted} passes preempted, {run.dropped} dropped")
    print("4. speedup over non-SI per SP degree (L = 3, c = 0.1: knee at ceil(t/(Ld)) = "
          f"{spec.servers_needed(1.0, 0.1, 3)})")
    nonsi = engine.generate("nonsi", target, drafter, prompt, 50, target_delay=t).seconds
    for P in ((1, 4) if quick else (1, 2, 3, 4, 6)):
        run = engine.generate("dsi", target, drafter, prompt, 50, lookahead=3, sp_degree=P, target_delay=t,
                            drafter_delay=0.1 * t)
        replay = spec.replay("dsi", trace, target_latency=t, drafter_latency=0.1 * t, lookahead=3, sp_degree=P)
        print(f"   P={P}: measured {nonsi / run.seconds:.2f}x, replayed {nonsi / replay:.2f}x "
              f"(measured/predicted speedup {replay / run.seconds:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args()
    simulation_throughput(args.quick)
    heatmap_against_monte_carlo(args.quick)
    engine_overhead(args.quick)


if __name__ == "__main__":
    main()
