"""Benchmarks of the contract-design solver, printed as ratios measured side by side in one run.

    python benchmarks/contracts.py [--quick]

1. one hypergradient, matrix-free (CG on Hessian-vector products) against dense Jacobians + LU;
2. the multi-task solve at n = 10^5 against a sparse direct solve of (I + rCΣ)β = b (target: relative
   error 1e-8 in under 30 s on 2 CPU cores);
3. the cost of one Hessian-vector product at n = 10^5 against a SciPy CSR matrix-vector product
   (target: within 5x): forward mode, the replayed reverse-mode pullback that the solver uses for a
   generic agent, and the traced-once linearization that CG uses for the multi-task model, whose
   Jacobian is constant;
4. outer steps and CG iterations at n = 10^5 against n = 10^3;
5. CG with one torch thread against two.
"""
from __future__ import annotations

import argparse
import functools
import time
import warnings

import numpy as np
import torch
from torch.func import jvp, linearize, vjp

from theorylab import contracts as ct
from theorylab.runtime import median_seconds


def hypergradient_setup(n: int):
    env = ct.tridiagonal_multitask_env(n, seed=0)
    theta = torch.full((n,), 0.5, dtype=ct.DTYPE)
    return env, theta, env.best_response(theta)


def dense_against_matrix_free(sizes) -> None:
    print("1. one hypergradient (inner solution given to both)")
    for n in sizes:
        env, theta, action = hypergradient_setup(n)
        free = median_seconds(functools.partial(ct.hypergradient, env, theta, action=action), 5)
        dense = median_seconds(functools.partial(ct.dense_hypergradient, env, theta, action=action), 1)
        print(f"   n={n:>6}: dense {dense:8.3f} s, matrix-free {free * 1e3:7.2f} ms, ratio {dense / free:7.0f}x")


def large_solve(n: int) -> None:
    print(f"2. multi-task solve at n={n}")
    env = ct.tridiagonal_multitask_env(n, seed=0)
    start = time.perf_counter()
    reference = env.optimum_beta()
    direct = time.perf_counter() - start
    result = ct.solve(env, theta0=np.zeros(n), keep_trajectory=False)
    error = np.linalg.norm(result.beta - reference) / np.linalg.norm(reference)
    print(f"   gradient solve {result.seconds:.2f} s ({result.steps} outer steps), sparse direct solve "
          f"{direct:.3f} s, ratio {result.seconds / direct:.0f}x; relative error {error:.1e} "
          f"(target 1e-8 in < 30 s: {'met' if error <= 1e-8 and result.seconds < 30 else 'NOT met'})")
    return result


def hvp_cost(n: int) -> None:
    print(f"3. one Hessian-vector product at n={n}")
    env, theta, action = hypergradient_setup(n)
    u = torch.randn(n, dtype=ct.DTYPE)
    first_order = lambda a: env.first_order(theta, a)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # linearize's tracer warns about constants it folds
        start = time.perf_counter()
        _, linear = linearize(first_order, action)
        setup = time.perf_counter() - start
    # The generic one-agent path (contracts._first_order_and_product): J u = J^T u from one
    # reverse pass through G, recorded once per (theta, a) and replayed on every CG step.
    pullback = vjp(first_order, action)[1]
    csr, u_np = env.C.to_scipy(), u.numpy()
    times = {
        "scipy CSR matvec": median_seconds(lambda: csr @ u_np, 200),
        "torch explicit tridiagonal matvec": median_seconds(lambda: env._cost_matvec(u), 200),
        "torch.func.jvp of G (forward mode)": median_seconds(lambda: jvp(first_order, (action,), (u,)), 200),
        "vjp pullback of G, replayed (generic)": median_seconds(lambda: pullback(u), 200),
        "linearize product (CG, multi-task)": median_seconds(lambda: linear(u), 200),
    }
    base = times["scipy CSR matvec"]
    for name, seconds in times.items():
        print(f"   {name:<36} {seconds * 1e6:8.1f} us  ratio to CSR {seconds / base:5.1f}x")
    saved = times["torch.func.jvp of G (forward mode)"] - times["linearize product (CG, multi-task)"]
    print(f"   (linearize costs {setup * 1e3:.0f} ms to trace, once per environment with a constant Jacobian; "
          f"it pays beyond {setup / saved:.0f} products)")


def steps_against_size(small: int, large_result) -> None:
    env = ct.tridiagonal_multitask_env(small, seed=0)
    result = ct.solve(env, theta0=np.zeros(small), keep_trajectory=False)
    print(f"4. outer steps at the large n: {large_result.steps} vs n={small}: "
          f"{result.steps} (ratio {large_result.steps / result.steps:.2f}); largest CG count "
          f"{max(large_result.cg_iterations)} vs {max(result.cg_iterations)} "
          f"(ratio {max(large_result.cg_iterations) / max(result.cg_iterations):.2f})")


def thread_effect(n: int) -> None:
    env, theta, action = hypergradient_setup(n)
    timings = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        timings[threads] = median_seconds(lambda: ct.hypergradient(env, theta, action=action), 5)
    torch.set_num_threads(1)
    print(f"5. hypergradient at n={n}: 2 torch threads {timings[2] * 1e3:.1f} ms, 1 thread {timings[1] * 1e3:.1f} ms, "
          f"ratio {timings[2] / timings[1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    large = 10_000 if args.quick else 100_000
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, float64\n")
    dense_against_matrix_free((500, 1000) if args.quick else (1000, 4000))
    result = large_solve(large)
    hvp_cost(large)
    steps_against_size(1000, result)
    thread_effect(large)


if __name__ == "__main__":
    main()
