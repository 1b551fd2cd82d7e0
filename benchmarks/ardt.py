"""Benchmark of the ARDT chapter, printed as ratios measured side by side in one run.

    python benchmarks/ardt.py [--quick]

Exhaustive verification throughput (inputs per second) of a compiled automaton tree run as an ARDT on every
input of a length, five ways: a plain Python loop over the automaton's transition table (the baseline of
every ratio); the tree walked one input at a time (``CompiledDFA.run``, on a sample); the old vectorised walk
(``WindowTree.predict``, one masked subtree walk per generated token); the flat walk with NumPy
(``ardt.flat_generate``); and the same flat walk with torch on CUDA where there is one, else on the CPU
(``ardt.flat_generate_torch``). Each gets its inputs in its own form, built before the clock starts (lists for
the loops, an int64 array for the old walk, a uint8 array with one row per position for the flat walks);
every walk's output is checked against the direct simulation. At the larger length the loops and the old walk
run on the first 2^18 inputs only (throughput per input does not depend on how many there are).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from theorylab import ardt


def rate(count: int, fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return count / best


def throughput(name: str, transitions: dict, start, length: int, device: torch.device, sample: int) -> None:
    dfa = ardt.compile_dfa(transitions, start)
    k = len(dfa.alphabet)
    count = k ** length
    columns = ardt.input_block(length, k, 0, count)
    part = np.ascontiguousarray(columns[:, :min(count, sample)].T.astype(np.int64))
    truth = ardt.simulate_dfa_batch(transitions, start, dfa.states, dfa.alphabet, part)
    rows = [[dfa.alphabet[s] for s in row] for row in part.tolist()]
    loop = rate(len(rows), lambda: [ardt.simulate_dfa(transitions, start, row) for row in rows])
    few = rows[: max(1, len(rows) // 64)]
    per_input = rate(len(few), lambda: [dfa.run(row) for row in few])
    vocabulary = dfa.vocabulary
    old = rate(len(part), lambda: dfa.tree.generate_batch(part, length, vocabulary, context_length=length))
    assert np.array_equal(dfa.tree.generate_batch(part, length, vocabulary, context_length=length) - k, truth)
    flat = ardt.flatten_tree(dfa.tree, vocabulary, length)
    written = ardt.flat_generate(flat, columns, length, by_columns=True)
    assert np.array_equal(written[:, :len(part)].T.astype(np.int64) - k, truth)
    numpy_walk = rate(count, lambda: ardt.flat_generate(flat, columns, length, by_columns=True), repeats=3)
    on_device = torch.from_numpy(columns).to(device)

    def torch_walk():
        ardt.flat_generate_torch(flat, on_device, length, device, by_columns=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch_walk()  # warm-up
    written = ardt.flat_generate_torch(flat, on_device, length, device, by_columns=True)
    assert np.array_equal(written[:, :len(part)].T.cpu().numpy().astype(np.int64) - k, truth)
    torch_rate = rate(count, torch_walk, repeats=3)
    print(f"{name:16s} n={length:2d}  Python DFA loop {loop:11,.0f}/s | per input {per_input:8,.0f}/s "
          f"({per_input / loop:4.2f}x) | old vectorised {old:11,.0f}/s ({old / loop:4.2f}x) | "
          f"flat NumPy {numpy_walk:12,.0f}/s ({numpy_walk / loop:5.1f}x) | "
          f"flat torch {device.type} {torch_rate:13,.0f}/s ({torch_rate / loop:6.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke test")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lengths = (10, 12) if args.quick else (18, 22)
    print(f"torch threads {torch.get_num_threads()}, device {device}")
    machines = {"parity": ardt.parity_dfa(), "mod 3": ardt.mod_k_dfa(3),
                "random 50-state": ardt.random_dfa(50, seed=0),
                "random 128-state": ardt.random_accessible_dfa(128, seed=0)}
    for length in lengths:
        for name, (transitions, start) in machines.items():
            throughput(name, transitions, start, length, device, sample=2**18)


if __name__ == "__main__":
    main()
