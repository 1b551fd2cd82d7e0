"""Benchmark of the ARDT chapter, printed as ratios measured side by side in one run.

    python benchmarks/ardt.py [--quick]

Exhaustive verification throughput (inputs checked per second) of a compiled automaton tree run as an ARDT,
vectorised over all inputs of a length (one masked tree walk per generated token), against a plain Python
loop over the automaton's transition table, and against the same tree walked one input at a time.
"""
from __future__ import annotations

import argparse
import time

from theorylab import ardt


def throughput(name: str, transitions: dict, start, length: int) -> None:
    dfa = ardt.compile_dfa(transitions, start)
    inputs = ardt.all_inputs(length)
    began = time.perf_counter()
    dfa.run_all(length)
    vectorised = len(inputs) / (time.perf_counter() - began)
    rows = inputs.tolist()
    began = time.perf_counter()
    for row in rows:
        ardt.simulate_dfa(transitions, start, row)
    loop = len(rows) / (time.perf_counter() - began)
    sample = rows[: max(1, len(rows) // 16)]
    began = time.perf_counter()
    for row in sample:
        dfa.run(row)
    walked = len(sample) / (time.perf_counter() - began)
    print(f"{name:16s} n={length}: vectorised tree {vectorised:12,.0f} inputs/s | Python DFA loop {loop:10,.0f} "
          f"inputs/s | tree walked per input {walked:9,.0f} inputs/s | vectorised / loop {vectorised / loop:5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke test")
    args = parser.parse_args()
    length = 12 if args.quick else 18
    throughput("parity", *ardt.parity_dfa(), length)
    throughput("mod 3", *ardt.mod_k_dfa(3), length)
    throughput("random 50-state", *ardt.random_dfa(50, seed=0), length)


if __name__ == "__main__":
    main()
