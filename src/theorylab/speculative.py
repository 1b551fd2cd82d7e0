r"""Latency model of plain, speculative and distributed speculative inference (chapter
``speculative-inference``, after Timor et al., *Distributed Speculative Inference*, ICLR 2025).

Notation of the chapter: target latency :math:`t` (time per output token), drafter latency :math:`d`,
acceptance rate :math:`a`, lookahead :math:`L`, tokens :math:`N`, speculation-parallelism degree
:math:`P` (target servers). A run is a walk over the committed prefix; with :math:`R` tokens left,

* **non-SI** emits one token per :math:`t`: :math:`T = Nt` (definition D2);
* **SI** drafts :math:`k=\min(L,R-1)` tokens, verifies them in one pass and emits
  :math:`\min(n,k)+1`, at cost :math:`kd+t` (D3);
* **DSI** runs in epochs (D4): the drafter never pauses, task :math:`j` verifies the first
  :math:`m_j=\min(jL,R-1)` drafts and is submitted at :math:`m_jd`; the task
  :math:`j^*=\lceil n/L\rceil` that reveals the first wrong draft ends the epoch at
  :math:`s_{j^*}+t`, with the FIFO start times :math:`s_j=\max(m_jd,\,s_{j-P}+t)`; it commits
  :math:`n+1` tokens.

:math:`n`, the number of drafts accepted before the first rejection, is geometric,
:math:`\Pr(n)=a^n(1-a)`, truncated at the drafts available. The functions here give the exact
expectation (dynamic programming over :math:`R`), the asymptotic rate per token (closed forms and
renewal-reward series), vectorised Monte-Carlo paths, a replay of a recorded acceptance trace, a task
timeline for Gantt charts, and an emulation of the paper's thread-pool simulator with its handicaps.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .validation import number_in, positive_int, positive_number

ALGORITHMS = ("nonsi", "si", "dsi")
PAPER_HANDICAPS = ("block_rule", "no_correction", "draw_cap", "restart_call", "lifo", "second_seed")
"""Rules of the paper's simulator that differ from the idealised model, in the order the chapter
switches them on (see :func:`emulate_paper`)."""
PAPER_DRAW_CAP = 20
"""The simulator's ``maximum_correct_tokens``: a draw of accepted drafts is capped at 20."""
PAPER_SERVER_BUDGET = 7
"""The simulator runs DSI only where :math:`\\lceil t/(Ld)\\rceil\\le7` (``ConfigDSI``)."""


# ----------------------------------------------------------------------------------------------
# Validation


def check_algorithm(algorithm: Any) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: got {algorithm!r}, expected one of {list(ALGORITHMS)}")
    return algorithm


def check_acceptance_rate(acceptance_rate: Any) -> float:
    return number_in("acceptance_rate", acceptance_rate, 0.0, 1.0)


@dataclass(frozen=True)
class Setting:
    """One validated configuration of the latency model (a drafter slower than the target is allowed)."""

    t: float
    d: float
    a: float
    L: int
    P: int | None
    nonsi_thread: bool = False

    @classmethod
    def make(cls, *, target_latency: Any, drafter_latency: Any, acceptance_rate: Any, lookahead: Any,
             sp_degree: Any = None, nonsi_thread: bool = False) -> Setting:
        return cls(t=positive_number("target_latency", target_latency), d=positive_number("drafter_latency", drafter_latency),
                   a=check_acceptance_rate(acceptance_rate), L=positive_int("lookahead", lookahead),
                   P=None if sp_degree is None else positive_int("sp_degree", sp_degree),
                   nonsi_thread=bool(nonsi_thread))


# ----------------------------------------------------------------------------------------------
# One step of each algorithm


def servers_needed(target_latency: float, drafter_latency: float, lookahead: int) -> int:
    r"""S1: the number of target servers with which no task waits, :math:`\lceil t/(Ld)\rceil`."""
    t, d = positive_number("target_latency", target_latency), positive_number("drafter_latency", drafter_latency)
    return max(1, math.ceil(t / (positive_int("lookahead", lookahead) * d) - 1e-12))


def fifo_start(j: np.ndarray, s: Setting) -> np.ndarray:
    r"""Start of task :math:`j` of an epoch that never runs out of tokens, relative to the epoch start.

    With submissions :math:`jLd` and :math:`P` FIFO servers busy :math:`t` per task,
    :math:`s_j=\max(jLd,\,s_{j-P}+t)=jLd+\lfloor j/P\rfloor\max(0,\,t-PLd)` (no waiting without a
    server limit).
    """
    j = np.asarray(j)
    start = j * s.L * s.d
    if s.P is not None:
        start = start + (j // s.P) * max(0.0, s.t - s.P * s.L * s.d)
    return start


def dsi_epoch_duration(n: np.ndarray, remaining: np.ndarray, s: Setting) -> np.ndarray:
    r"""Duration of a DSI epoch (D4) that commits :math:`n+1` of the ``remaining`` :math:`R` tokens.

    The revealing task is :math:`j^*=\lceil n/L\rceil`. Its start is :func:`fifo_start` unless it is the
    epoch's last task, whose submission is capped at the :math:`R-1` drafts there are:
    :math:`s_{j^*}=\max((R-1)d,\,s_{j^*-P}+t)`. The duration is :math:`s_{j^*}+t`, and
    :math:`\min(s_{j^*}+t,\,(n+1)t)` with the non-SI thread.
    """
    n = np.asarray(n)
    remaining = np.asarray(remaining)
    j = -(-n // s.L)
    start = fifo_start(j, s)
    capped = j * s.L > remaining - 1
    if capped.any():
        last = (remaining - 1) * s.d
        if s.P is not None:
            previous = np.where(j >= s.P, fifo_start(np.maximum(j - s.P, 0), s) + s.t, -np.inf)
            last = np.maximum(last, previous)
        start = np.where(capped, last, start)
    duration = start + s.t
    if s.nonsi_thread:
        duration = np.minimum(duration, (n + 1) * s.t)
    return duration


def accepted_pmf(a: float, cap: int) -> np.ndarray:
    r""":math:`\Pr(n=j)` for :math:`j=0..\text{cap}`: :math:`a^j(1-a)` below the cap, :math:`a^{\text{cap}}` at it."""
    pmf = a ** np.arange(cap + 1) * (1 - a)
    pmf[cap] = a ** cap
    return pmf


# ----------------------------------------------------------------------------------------------
# Exact expectations and rates


def expected_latency(algorithm: str, *, target_latency: float, drafter_latency: float, acceptance_rate: float,
                     lookahead: int, n_tokens: int, sp_degree: int | None = None,
                     nonsi_thread: bool = False) -> float:
    r"""Exact :math:`\mathbb E\,T` of generating ``n_tokens`` tokens.

    non-SI: :math:`Nt`. SI (D3): :math:`E_R=kd+t+\sum_{j\le k}p_jE_{R-1-j}` with :math:`k=\min(L,R-1)`.
    DSI (D4): :math:`E_R=\sum_{n<R}p_n\,(D_R(n)+E_{R-1-n})` with :func:`dsi_epoch_duration` :math:`D_R`.
    ``sp_degree=None`` means enough servers; otherwise a FIFO queue over ``sp_degree`` servers.
    """
    check_algorithm(algorithm)
    s = Setting.make(target_latency=target_latency, drafter_latency=drafter_latency,
                     acceptance_rate=acceptance_rate, lookahead=lookahead, sp_degree=sp_degree,
                     nonsi_thread=nonsi_thread)
    n_tokens = positive_int("n_tokens", n_tokens)
    if algorithm == "nonsi":
        return n_tokens * s.t
    expected = np.zeros(n_tokens + 1)
    for remaining in range(1, n_tokens + 1):
        if algorithm == "si":
            k = min(s.L, remaining - 1)
            pmf = accepted_pmf(s.a, k)
            expected[remaining] = k * s.d + s.t + pmf @ expected[remaining - 1 - np.arange(k + 1)]
        else:
            n = np.arange(remaining)
            pmf = accepted_pmf(s.a, remaining - 1)
            expected[remaining] = pmf @ (dsi_epoch_duration(n, remaining, s) + expected[remaining - 1 - n])
    return float(expected[n_tokens])


def si_rate(t: Any, d: Any, a: Any, L: Any) -> np.ndarray:
    r"""SI's expected latency per token for :math:`N\to\infty`: :math:`(Ld+t)\frac{1-a}{1-a^{L+1}}` (array-wise)."""
    t, d, a, L = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, d, a, L)))
    with np.errstate(invalid="ignore", divide="ignore"):
        tokens = np.where(a < 1, (1 - a ** (L + 1)) / np.where(a < 1, 1 - a, 1), L + 1)
    return (L * d + t) / tokens


def dsi_rate(t: Any, d: Any, a: Any, L: Any, P: Any = None) -> np.ndarray:
    r"""DSI's expected latency per token for :math:`N\to\infty` (no non-SI thread), array-wise.

    Renewal reward over epochs, with :math:`\mathbb E\lceil n/L\rceil=a/(1-a^L)` and, with :math:`P` FIFO
    servers, :math:`\mathbb E\lfloor j^*/P\rfloor=a^{(P-1)L+1}/(1-a^{PL})`:
    :math:`\rho=(1-a)\big(t+\frac{Lda}{1-a^L}+\max(0,t-PLd)\frac{a^{(P-1)L+1}}{1-a^{PL}}\big)`;
    at :math:`a=1`, :math:`d+\max(0,t-PLd)/(PL)`.
    """
    no_limit = P is None
    t, d, a, L, P = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, d, a, L, 1 if no_limit else P)))
    safe = np.where(a < 1, a, 0.5)
    rate = (1 - safe) * (t + L * d * safe / (1 - safe ** L))
    limit = d.copy()
    if not no_limit:
        wait = np.maximum(0.0, t - P * L * d)
        rate = rate + (1 - safe) * wait * safe ** ((P - 1) * L + 1) / (1 - safe ** (P * L))
        limit = limit + wait / (P * L)
    return np.where(a < 1, rate, limit)


def dsi_rate_series(s: Setting, tolerance: float = 1e-16) -> float:
    r"""DSI's rate by summing the renewal-reward series over :math:`n` (any setting, non-SI thread included):
    :math:`\rho=(1-a)\sum_n a^n(1-a)D_\infty(n)`, truncated where :math:`a^n<` ``tolerance``."""
    if s.a >= 1:
        raise ValueError("acceptance_rate: the series needs a < 1")
    terms = 1 if s.a == 0 else max(1, math.ceil(math.log(tolerance) / math.log(s.a)))
    n = np.arange(terms)
    durations = dsi_epoch_duration(n, np.full(terms, np.iinfo(np.int64).max // 4), s)
    return float((1 - s.a) * ((s.a ** n * (1 - s.a)) @ durations))


def best_si_rate(t: Any, d: Any, a: Any, max_lookahead: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """SI's smallest rate over lookaheads 1..``max_lookahead`` and the lookahead that attains it."""
    lookaheads = np.arange(1, max_lookahead + 1).reshape((-1,) + (1,) * np.ndim(np.broadcast(t, d, a)))
    rates = si_rate(t, d, a, lookaheads)
    return rates.min(axis=0), lookaheads.ravel()[rates.argmin(axis=0)]


def symbolic_identities(max_lookahead: int = 6) -> tuple[list[bool], list]:
    r"""SymPy checks, for :math:`L=1..` ``max_lookahead``, of the identities the proofs use, with
    :math:`s_i=\sum_{k<i}a^k`: tokens per SI iteration :math:`=s_{L+1}`;
    :math:`\mathbb E\lceil n/L\rceil=a/(1-a^L)` as a power series up to :math:`a^{39}`;
    :math:`\rho_{SI}-\rho_{DSI}=\frac{1-a}{(1-a^{L+1})s_L}\big(ta^{L+1}s_L-Ld(a^L+a^{L+1}-1)\big)`;
    and :math:`a^{L+1}s_L-L(a^L+a^{L+1}-1)=(1-a)\big(Ls_L-a^{L+1}\sum_{i<L}s_i\big)`. Returns one
    verdict per :math:`L` and the solutions :math:`d` of :math:`\rho_{SI}(1)=t` (Proposition 3's
    crossover)."""
    import sympy

    a, d, t = sympy.symbols("a d t", positive=True)
    checked = []
    for L in range(1, positive_int("max_lookahead", max_lookahead) + 1):
        def s(i):
            return sum(a**k for k in range(i))
        tokens = sum(a**j * (1 - a) * (j + 1) for j in range(L)) + a**L * (L + 1)
        ceiling = sum(a**n * (1 - a) * math.ceil(n / L) for n in range(40))
        rho_si = (L * d + t) * (1 - a) / (1 - a ** (L + 1))
        rho_dsi = (1 - a) * (t + L * d * a / (1 - a**L))
        gap = (1 - a) / ((1 - a ** (L + 1)) * s(L)) * (t * a ** (L + 1) * s(L) - L * d * (a**L + a ** (L + 1) - 1))
        f = a ** (L + 1) * s(L) - L * (a**L + a ** (L + 1) - 1)
        checked.append(sympy.simplify(tokens - s(L + 1)) == 0
                       and sympy.series(a / (1 - a**L) - ceiling, a, 0, 40).removeO() == 0
                       and sympy.simplify(rho_si - rho_dsi - gap) == 0
                       and sympy.expand(f - (1 - a) * (L * s(L) - a ** (L + 1) * sum(s(i) for i in range(1, L)))) == 0)
    crossover = sympy.solve(sympy.Eq((d + t) * (1 - a) / (1 - a**2), t), d)
    return checked, [sympy.sstr(root) for root in crossover]


def theorem_2_grid(cs: Iterable[float], accs: Iterable[float], lookaheads: Iterable[int], n_tokens: int = 50
                   ) -> tuple[float, float]:
    r"""Over a grid of :math:`(c,a,L)` with :math:`t=1` and enough servers: the largest
    :math:`\mathbb E T_{DSI}/\mathbb E T_{SI}` at ``n_tokens`` (same lookahead), and the largest of
    :math:`\rho_{DSI}(L)-\rho_{SI}(L)` and :math:`\rho_{DSI}(1)-\rho_{DSI}(L)` (Theorem 2 says both
    are at most 0)."""
    worst_finite, worst_rate = -np.inf, -np.inf
    for c in cs:
        for a in accs:
            for L in lookaheads:
                kw = dict(target_latency=1.0, drafter_latency=c, acceptance_rate=a, lookahead=L, n_tokens=n_tokens)
                worst_finite = max(worst_finite, expected_latency("dsi", **kw) / expected_latency("si", **kw))
                worst_rate = max(worst_rate, float(dsi_rate(1, c, a, L) - si_rate(1, c, a, L)),
                                 float(dsi_rate(1, c, a, 1) - dsi_rate(1, c, a, L)))
    return worst_finite, worst_rate


# ----------------------------------------------------------------------------------------------
# Sampled paths and trace replay


def _walk(algorithm: str, s: Setting, n_tokens: int, n_runs: int,
          draw: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Latencies of ``n_runs`` paths, vectorised across paths; ``draw(runs, positions, caps)`` gives
    the accepted drafts of each active path's next iteration (SI) or epoch (DSI)."""
    if algorithm == "nonsi":
        return np.full(n_runs, n_tokens * s.t)
    position = np.zeros(n_runs, dtype=np.int64)
    latency = np.zeros(n_runs)
    runs = np.arange(n_runs)
    while runs.size:
        remaining = n_tokens - position[runs]
        if algorithm == "si":
            drafts = np.minimum(s.L, remaining - 1)
            n = draw(runs, position[runs], drafts)
            latency[runs] += drafts * s.d + s.t
        else:
            n = draw(runs, position[runs], remaining - 1)
            latency[runs] += dsi_epoch_duration(n, remaining, s)
        position[runs] += n + 1
        runs = runs[position[runs] < n_tokens]
    return latency


def simulate(algorithm: str, *, target_latency: float, drafter_latency: float, acceptance_rate: float,
             lookahead: int, n_tokens: int, n_runs: int, seed: int = 0, sp_degree: int | None = None,
             nonsi_thread: bool = False) -> np.ndarray:
    r"""Sampled latencies of ``n_runs`` independent generations of ``n_tokens`` tokens (same model as
    :func:`expected_latency`), with :math:`n` drawn i.i.d. geometric per iteration/epoch and truncated
    at the drafts available."""
    check_algorithm(algorithm)
    s = Setting.make(target_latency=target_latency, drafter_latency=drafter_latency,
                     acceptance_rate=acceptance_rate, lookahead=lookahead, sp_degree=sp_degree,
                     nonsi_thread=nonsi_thread)
    n_tokens, n_runs = positive_int("n_tokens", n_tokens), positive_int("n_runs", n_runs)
    rng = np.random.default_rng(seed)

    def draw(runs, positions, caps):
        if s.a == 1:
            return caps
        return np.minimum(rng.geometric(1 - s.a, size=runs.size) - 1, caps)

    return _walk(algorithm, s, n_tokens, n_runs, draw)


def worst_pathwise_ratio(*, n_settings: int, paths: int, n_tokens: int = 50, seed: int = 0) -> dict[str, float]:
    r"""Largest :math:`T_{DSI}/(Nt)` over sampled paths of random settings with
    :math:`\lceil 1/(Lc)\rceil` servers, in three cases: ``"Ld <= t"`` (:math:`c\sim U(0.01,1)`,
    :math:`L\le 1/c`), ``"Ld > t"`` (:math:`c\sim U(0.3,1)`, :math:`1/c<L<8`) and the same with the
    non-SI thread; :math:`a\sim U(0,0.99)`, ``paths // n_settings`` paths per setting (Theorem 1)."""
    rng = np.random.default_rng(seed)
    worst = {"Ld <= t": 0.0, "Ld > t": 0.0, "Ld > t, non-SI thread": 0.0}
    for k in range(positive_int("n_settings", n_settings)):
        a = rng.uniform(0, 0.99)
        for case in worst:
            if case == "Ld <= t":
                c = rng.uniform(0.01, 1)
                L = int(rng.integers(1, max(1, int(1 / c)) + 1))
            else:
                c = rng.uniform(0.3, 1)
                L = int(rng.integers(math.floor(1 / c) + 1, 8))
            runs = simulate("dsi", target_latency=1.0, drafter_latency=c, acceptance_rate=a, lookahead=L,
                            n_tokens=n_tokens, n_runs=max(1, paths // n_settings), seed=seed + 3 * k + len(case),
                            sp_degree=servers_needed(1.0, c, L), nonsi_thread=case.endswith("thread"))
            worst[case] = max(worst[case], float(runs.max()) / n_tokens)
    return worst


def replay(algorithm: str, run_lengths: Iterable[int], *, target_latency: float, drafter_latency: float,
           lookahead: int, sp_degree: int | None = None, nonsi_thread: bool = False) -> float:
    r"""Latency of one generation whose acceptance pattern is recorded, not sampled.

    ``run_lengths[p]`` is how many drafts the drafter gets right when it starts from the committed prefix
    of length :math:`p` (for greedy decoding this is a property of the output, not of the algorithm), so
    every algorithm's path is determined: :math:`n=\min(\text{run\_lengths}[p],\text{cap})`.
    """
    check_algorithm(algorithm)
    lengths = np.asarray(list(run_lengths), dtype=np.int64)
    if lengths.ndim != 1 or lengths.size == 0 or (lengths < 0).any():
        raise ValueError("run_lengths: expected a non-empty sequence of non-negative integers")
    s = Setting.make(target_latency=target_latency, drafter_latency=drafter_latency, acceptance_rate=0.5,
                     lookahead=lookahead, sp_degree=sp_degree, nonsi_thread=nonsi_thread)
    return float(_walk(algorithm, s, lengths.size, 1, lambda runs, pos, caps: np.minimum(lengths[pos], caps))[0])


def estimate_acceptance_rate(run_lengths: Iterable[int]) -> float:
    r"""The paper's estimator from exact-match run lengths: :math:`\hat a=\bar n/(1+\bar n)` (the MLE of a geometric law)."""
    mean = float(np.mean(list(run_lengths)))
    return mean / (1 + mean)


# ----------------------------------------------------------------------------------------------
# Timelines for Gantt charts


@dataclass(frozen=True)
class Interval:
    """One bar of a Gantt chart: who (``drafter``, ``target``, ``server k``) did what, when."""

    lane: str
    start: float
    end: float
    kind: str  # "draft", "verify", "preempted", "decode"


def timeline(algorithm: str, run_lengths: Iterable[int], *, target_latency: float, drafter_latency: float,
             lookahead: int, sp_degree: int | None = None) -> list[Interval]:
    """Bars of one generation with a recorded acceptance pattern (see :func:`replay`); DSI's tasks sit on
    server ``j mod P`` (FIFO with equal service times), and a task still running when its epoch ends is
    ``preempted``. Ends at the same time as :func:`replay`."""
    check_algorithm(algorithm)
    lengths = [int(v) for v in run_lengths]
    s = Setting.make(target_latency=target_latency, drafter_latency=drafter_latency, acceptance_rate=0.5,
                     lookahead=lookahead, sp_degree=sp_degree)
    bars: list[Interval] = []
    clock, position, total = 0.0, 0, len(lengths)
    if algorithm == "nonsi":
        return [Interval("target", k * s.t, (k + 1) * s.t, "decode") for k in range(total)]
    while position < total:
        remaining = total - position
        if algorithm == "si":
            k = min(s.L, remaining - 1)
            bars += [Interval("drafter", clock + i * s.d, clock + (i + 1) * s.d, "draft") for i in range(k)]
            bars.append(Interval("target", clock + k * s.d, clock + k * s.d + s.t, "verify"))
            clock += k * s.d + s.t
            position += min(lengths[position], k) + 1
            continue
        n = min(lengths[position], remaining - 1)
        end = clock + float(dsi_epoch_duration(np.array([n]), np.array([remaining]), s)[0])
        drafts = min(remaining - 1, math.floor((end - clock) / s.d + 1e-9))
        bars += [Interval("drafter", clock + i * s.d, clock + (i + 1) * s.d, "draft") for i in range(drafts)]
        for j in range(-(-(remaining - 1) // s.L) + 1):
            submitted = min(j * s.L, remaining - 1) * s.d
            if clock + submitted > end - 1e-12:
                break
            # the epoch that ends right after task j has j's start plus t as its duration
            start = clock + float(dsi_epoch_duration(np.array([min(j * s.L, remaining - 1)]), np.array([remaining]), s)[0]) - s.t
            if start >= end - 1e-12:
                continue
            server = j % s.P if s.P is not None else j
            finished = start + s.t <= end + 1e-12
            bars.append(Interval(f"server {server}", start, min(start + s.t, end), "verify" if finished else "preempted"))
        clock = end
        position += n + 1
    return bars


# ----------------------------------------------------------------------------------------------
# The paper's thread-pool simulator, emulated


def queue_starts(submissions: np.ndarray, service: float, servers: int, discipline: str = "fifo") -> np.ndarray:
    """Start times of tasks submitted at ``submissions`` (non-decreasing) to ``servers`` identical servers
    busy ``service`` per task, served first-in-first-out or last-in-first-out (an event loop)."""
    if discipline not in ("fifo", "lifo"):
        raise ValueError(f"discipline: got {discipline!r}, expected 'fifo' or 'lifo'")
    submissions = np.asarray(submissions, dtype=float)
    starts = np.full(submissions.size, np.inf)
    free = [0.0] * positive_int("servers", servers)
    waiting: list[int] = []
    next_task = 0
    while next_task < submissions.size or waiting:
        now = free[0]
        # admit every task submitted by the time the earliest server frees (or the next submission)
        if not waiting:
            now = max(now, submissions[next_task])
        while next_task < submissions.size and submissions[next_task] <= now:
            waiting.append(next_task)
            next_task += 1
        task = waiting.pop(0 if discipline == "fifo" else -1)
        starts[task] = max(now, submissions[task])
        heapq.heapreplace(free, starts[task] + service)
    return starts


def _paper_dsi_epoch(s: Setting, n: int, remaining: int, blocks: int | None, rules: set[str]) -> float:
    """Duration of one DSI epoch of :func:`emulate_paper`: the epoch ends when the first task that can
    reveal the rejection finishes (with LIFO a newer task may overtake the oldest one)."""
    if blocks is None:  # D4: tasks check min(jL, R-1) drafts; task ceil(n/L) is the first to reveal
        first = -(-n // s.L)
        drafted = np.minimum(np.arange(-(-(remaining - 1) // s.L) + 1) * s.L, remaining - 1)
    else:  # block rule: the drafter never stops; the first task past the rejection reveals it
        first = blocks
        drafted = np.arange(blocks + 2 * math.ceil(s.t / (s.L * s.d)) + 2) * s.L
    extra = "restart_call" in rules and blocks is None  # a task with no drafts, holding a server
    submissions = drafted * s.d
    if s.P >= math.ceil(s.t / (s.L * s.d) - 1e-12) + extra:  # no task ever waits
        return float(submissions[first] + s.t)
    if extra:
        submissions = np.concatenate([[0.0], submissions])
        first += 1
    # a task submitted 2t after the first revealing one cannot finish before it: a server frees within t
    submissions = submissions[submissions <= submissions[first] + 2 * s.t]
    starts = queue_starts(submissions, s.t, s.P, "lifo" if "lifo" in rules else "fifo")
    return float((starts[first:] + s.t).min())


def emulate_paper(algorithm: str, *, target_latency: float, drafter_latency: float, acceptance_rate: float,
                  lookahead: int, n_tokens: int, n_runs: int, seed: int = 0, sp_degree: int = 1,
                  handicaps: Iterable[str] = (), second: float | None = None, pipe_wait: float = 0.0,
                  restart_cost: float = 0.0) -> np.ndarray:
    r"""Latencies under the rules of the paper's thread-pool simulator, each switched on by name.

    With no handicap this is the idealised model (SI: D3; DSI: D4 with FIFO servers), run until at
    least ``n_tokens`` are committed. Handicaps (``dsi/online/simul`` of the paper's repository):

    * ``block_rule``: a fully accepted block earns no bonus token; the rejection after :math:`n`
      accepted drafts is found by the first call that drafted past it, :math:`\lfloor n/L\rfloor+1`
      (SI pays :math:`(\lfloor n/L\rfloor+1)(Ld+t)`, DSI waits for that task);
    * ``no_correction``: an epoch commits the :math:`n` accepted drafts, not the target's correction
      token as well (``fix_history`` adds ``correct`` tokens);
    * ``draw_cap``: :math:`n=\min(G-1,\,20)` with :math:`G` geometric (``maximum_correct_tokens``);
    * ``restart_call``: every restart first issues a target call with no drafts: blocking for SI
      (+t), a task that holds a server for DSI; with ``block_rule`` the run ends only at a call that
      finds the drawn drafts past the end (committed :math:`+\,n>N`, the simulator's stop test),
      normally that zero-draft call;
    * ``lifo``: DSI's pool serves the newest waiting task first;
    * ``second_seed`` (an early version of the simulator, ``dsi/online/run/core.py`` of 1-4 July
      2024): the draw of :math:`n` is seeded by the integer wall-clock second, read after the
      ``pipe_wait`` that starts every restart, so restarts within one second reuse it; ``second``
      and ``pipe_wait`` are in units of the target latency (:math:`1000/t_{\mathrm{ms}}` and
      :math:`100/t_{\mathrm{ms}}` target passes for the simulator's 1 s and 0.1 s); each run starts
      at a uniform phase.

    The simulator subtracts its 0.1 s pipe wait from the latency it reports, so the wait moves only
    the wall clock that ``second_seed`` reads. ``restart_cost`` (units of :math:`t`, default 0) is a
    cost paid by both algorithms at every restart, such as starting the process there; the
    simulator pays one but does not report its size. First calls are assumed to cost what later
    calls cost (the simulator charges each pool thread's and the drafter's first call a separate
    time to first token).
    """
    check_algorithm(algorithm)
    unknown = sorted(set(handicaps) - set(PAPER_HANDICAPS))
    if unknown:
        raise ValueError(f"handicaps: unknown {unknown}; expected some of {list(PAPER_HANDICAPS)}")
    rules = set(handicaps)
    if "second_seed" in rules:
        second = positive_number("second (target passes per wall-clock second)", second)
    for name, value in (("pipe_wait", pipe_wait), ("restart_cost", restart_cost)):
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name}: got {value!r}, expected a finite number >= 0")
    s = Setting.make(target_latency=target_latency, drafter_latency=drafter_latency,
                     acceptance_rate=acceptance_rate, lookahead=lookahead, sp_degree=sp_degree)
    n_tokens, n_runs = positive_int("n_tokens", n_tokens), positive_int("n_runs", n_runs)
    rng = np.random.default_rng(seed)
    if algorithm == "nonsi":
        return np.full(n_runs, n_tokens * s.t)
    latencies = np.zeros(n_runs)
    for run in range(n_runs):
        latencies[run] = _paper_run(algorithm, s, n_tokens, rules, rng, second, pipe_wait, restart_cost)
    return latencies


def _paper_run(algorithm: str, s: Setting, n_tokens: int, rules: set[str], rng: np.random.Generator,
               second: float | None, pipe_wait: float, restart_cost: float) -> float:
    """One generation of :func:`emulate_paper`."""
    clock, committed, waited = 0.0, 0, 0.0
    phase = rng.uniform(0, second) if "second_seed" in rules else 0.0
    reused: dict[int, int] = {}
    restarting = True  # the first start is a restart too
    # with both rules the simulator ends only at a call that finds committed + n > N
    stop_call_only = {"block_rule", "restart_call"} <= rules
    while committed < n_tokens or stop_call_only:
        remaining = n_tokens - committed
        if algorithm == "dsi" or restarting:  # a new process: its start cost, then the pipe wait
            clock += restart_cost
            waited += pipe_wait
        draw = int(rng.geometric(1 - s.a)) - 1 if s.a < 1 else n_tokens + PAPER_DRAW_CAP
        if "draw_cap" in rules:
            draw = min(draw, PAPER_DRAW_CAP)
        if "second_seed" in rules:
            draw = reused.setdefault(int((clock + waited + phase) // second), draw)
        call = "restart_call" in rules and (algorithm == "dsi" or restarting)
        if call and committed + draw > n_tokens:  # the zero-draft call finds the end
            return clock + s.t
        gained = 0 if "no_correction" in rules else 1
        n = min(draw, n_tokens) if "block_rule" in rules else min(draw, remaining - 1)
        blocks = n // s.L + 1 if "block_rule" in rules else None
        if algorithm == "si":
            clock += s.t if call else 0.0
            if blocks is None:  # D3, iteration by iteration
                k = min(s.L, remaining - 1)
                clock += k * s.d + s.t
                committed += min(n, k) + gained if n < k else k + 1
                restarting = n < k
            else:
                clock += blocks * (s.L * s.d + s.t)
                committed += n + gained
            continue
        clock += _paper_dsi_epoch(s, n, remaining, blocks, rules)
        committed += n + gained
    return clock


# ----------------------------------------------------------------------------------------------
# Heatmaps and the paper's Table 1


def heatmaps(c: np.ndarray, a: np.ndarray, *, max_si_lookahead: int = 200, budget: int = 7,
             max_dsi_lookahead: int = 20) -> dict[str, np.ndarray]:
    r"""Per-token latency ratios over a grid of drafter fractions :math:`c=d/t` and acceptance rates
    (``c`` and ``a`` broadcast together; :math:`t=1`), from the rates of :func:`si_rate` and :func:`dsi_rate`.

    SI takes its best lookahead :math:`\le` ``max_si_lookahead``. DSI in the paper's setting is
    :math:`L=1` with :math:`\lceil1/c\rceil` servers, :math:`\rho=(1-a)+ac`. With a fixed budget of
    ``budget`` servers it takes its best :math:`L\le` ``max_dsi_lookahead`` among those needing at most
    ``budget`` servers, with the non-SI thread (which binds only when :math:`Lc>1`; then the series of
    :func:`dsi_rate_series` is summed). Keys: ``nonsi/si``, ``si/dsi``, ``nonsi/dsi``, ``baseline/dsi``
    (baseline = the faster of SI and non-SI), ``si/dsi budget``, and ``budget feasible`` (some
    :math:`L` fits the budget).
    """
    c, a = np.broadcast_arrays(np.asarray(c, dtype=float), np.asarray(a, dtype=float))
    if (c <= 0).any() or (a < 0).any() or (a > 1).any():
        raise ValueError("heatmaps: need c > 0 and a in [0, 1]")
    si, _ = best_si_rate(1.0, c, a, max_si_lookahead)
    dsi = dsi_rate(1.0, c, a, 1)
    budget_rate = np.full(c.shape, np.inf)
    for L in range(1, max_dsi_lookahead + 1):
        fits = np.ceil(1 / (L * c) - 1e-12) <= budget
        rate = dsi_rate(1.0, c, a, L)
        for index in zip(*np.nonzero(fits & (L * c > 1)), strict=True):  # the non-SI thread binds
            rate[index] = dsi_rate_series(Setting(1.0, float(c[index]), float(a[index]), L, None, True)) \
                if a[index] < 1 else rate[index]
        budget_rate = np.where(fits, np.minimum(budget_rate, rate), budget_rate)
    return {"nonsi/si": 1 / si, "si/dsi": si / dsi, "nonsi/dsi": 1 / dsi,
            "baseline/dsi": np.minimum(si, 1.0) / dsi, "si/dsi budget": si / budget_rate,
            "budget feasible": np.isfinite(budget_rate)}


def finite_heatmaps(c: np.ndarray, a: np.ndarray, *, n_tokens: int = 1000, n_runs: int = 20, seed: int = 0,
                    max_si_lookahead: int = 200) -> dict[str, np.ndarray]:
    r"""The heatmaps of :func:`heatmaps` in the paper's setting, simulated at a finite length
    ``n_tokens`` as the paper's offline simulator does: per cell ``n_runs`` paths of SI (D3, at the
    lookahead that is best asymptotically) and of DSI (:math:`L=1`, enough servers), all cells at once.

    Keys: ``nonsi/si``, ``si/dsi``, ``nonsi/dsi``, ``baseline/dsi`` (ratios of mean latencies; the
    baseline is the faster of SI and non-SI), ``si/dsi se`` (its
    standard error by the delta method), and ``dsi z``, the z-score of DSI's mean latency against its
    exact expectation :math:`ca(N-1)+(1-a)(N-1)+1` (Proposition 1, :math:`t=1`).
    """
    c, a = np.broadcast_arrays(np.asarray(c, dtype=float), np.asarray(a, dtype=float))
    if (c <= 0).any() or (c > 1).any() or (a < 0).any() or (a >= 1).any():
        raise ValueError("finite_heatmaps: need 0 < c <= 1 and 0 <= a < 1")
    n_tokens, n_runs = positive_int("n_tokens", n_tokens), positive_int("n_runs", n_runs)
    _, si_lookahead = best_si_rate(1.0, c, a, max_si_lookahead)
    rng = np.random.default_rng(seed)
    cells = np.repeat(np.arange(c.size), n_runs)
    pc, pa, pl = c.ravel()[cells], a.ravel()[cells], si_lookahead.ravel()[cells]
    latency = {}
    for algorithm in ("si", "dsi"):
        position, clock = np.zeros(cells.size, dtype=np.int64), np.zeros(cells.size)
        active = np.arange(cells.size)
        while active.size:
            remaining = n_tokens - position[active]
            drafts = np.minimum(pl[active] if algorithm == "si" else remaining - 1, remaining - 1)
            n = np.minimum(rng.geometric(1 - pa[active]) - 1, drafts)
            # SI pays its k drafts and a pass; DSI at L = 1 without queueing pays n drafts and a pass
            clock[active] += (drafts if algorithm == "si" else n) * pc[active] + 1.0
            position[active] += n + 1
            active = active[position[active] < n_tokens]
        latency[algorithm] = clock.reshape(c.size, n_runs)
    mean = {k: v.mean(axis=1) for k, v in latency.items()}
    var = {k: v.var(axis=1, ddof=1) / n_runs for k, v in latency.items()}
    ratio = mean["si"] / mean["dsi"]
    exact = c.ravel() * a.ravel() * (n_tokens - 1) + (1 - a.ravel()) * (n_tokens - 1) + 1
    shape = c.shape
    return {"nonsi/si": (n_tokens / mean["si"]).reshape(shape), "si/dsi": ratio.reshape(shape),
            "baseline/dsi": (np.minimum(mean["si"], n_tokens) / mean["dsi"]).reshape(shape),
            "nonsi/dsi": (n_tokens / mean["dsi"]).reshape(shape),
            "si/dsi se": (ratio * np.sqrt(var["si"] / mean["si"] ** 2 + var["dsi"] / mean["dsi"] ** 2)).reshape(shape),
            "dsi z": ((mean["dsi"] - exact) / np.sqrt(np.maximum(var["dsi"], 1e-300))).reshape(shape)}


def draw_heatmap(ax, c_grid: np.ndarray, a_grid: np.ndarray, ratio: np.ndarray, title: str):
    """One log2-ratio map over (c, a), red where the second algorithm is slower, with the line a = c."""
    image = ax.pcolormesh(c_grid, a_grid, np.log2(ratio).T, cmap="RdBu", vmin=-2, vmax=2, shading="nearest")
    ax.plot([0, 0.99], [0, 0.99], "k--", linewidth=0.8)
    ax.set_title(f"{title}: {ratio.min():.2f} to {ratio.max():.2f}")
    ax.set_xlabel("c = d / t")
    ax.set_ylabel("acceptance a")
    return image


@dataclass(frozen=True)
class PaperRow:
    """A row of the paper's Table 1 (PMLR version): latencies in ms, drafter fraction, acceptance, DSI/SI."""

    target: str
    drafter: str
    dataset: str
    t: float
    d: float
    c: float
    acceptance: float
    speedup: float


PAPER_TABLE_1 = tuple(PaperRow(*row) for row in [
    ("Vicuna-13B", "Vicuna-68M", "CNN-DM", 37.7, 2.5, 0.065, 0.63, 1.47),
    ("Vicuna-13B", "Vicuna-68M", "Alpaca", 33.3, 2.5, 0.074, 0.58, 1.41),
    ("Vicuna-7B", "Vicuna-68M", "CNN-DM", 29.4, 2.5, 0.084, 0.67, 1.29),
    ("Vicuna-7B", "Vicuna-68M", "Alpaca", 26.0, 2.5, 0.095, 0.59, 1.70),
    ("Starcoder-15B", "Starcoder-168M", "HumanEval", 20.6, 6.8, 0.323, 0.93, 1.92),
    ("Starcoder-15B", "Starcoder-168M", "MBPP", 21.0, 6.8, 0.329, 0.90, 1.66),
    ("Phi3-14B", "Phi3-4B", "HumanEval", 52.1, 34.0, 0.653, 0.95, 1.41),
    ("Phi3-14B", "Phi3-4B", "MBPP", 52.2, 34.3, 0.658, 0.94, 1.37),
    ("Phi3-14B", "Phi3-4B", "CNN-DM", 52.4, 34.6, 0.660, 0.93, 1.39),
    ("Phi3-14B", "Phi3-4B", "Alpaca", 49.6, 33.4, 0.674, 0.87, 1.60),
])
"""Table 1 of Timor et al. (PMLR 262, 2024); ``c`` is the unrounded d % column over 100."""


def paper_lookaheads(c: float, lookaheads: Iterable[int] = (1, 5, 10),
                     budget: int = PAPER_SERVER_BUDGET) -> tuple[int, ...]:
    r"""The lookaheads the paper's simulator runs DSI with: those needing at most ``budget`` target
    servers, :math:`\lceil 1/(Lc)\rceil\le` ``budget`` (S1 with :math:`t=1`, :math:`d=c`)."""
    feasible = tuple(L for L in lookaheads if servers_needed(1.0, c, L) <= budget)
    if not feasible:
        raise ValueError(f"lookaheads {tuple(lookaheads)}: none needs at most {budget} servers at c={c}")
    return feasible


def table_speedup(row: PaperRow, *, n_tokens: int = 50, lookaheads: tuple[int, ...] = (1, 5, 10),
                  sp_degree: int = PAPER_SERVER_BUDGET, handicaps: Iterable[str] | None = None,
                  n_runs: int = 0, seed: int = 0, restart_ms: float = 0.0) -> dict[str, Any]:
    r"""DSI/SI for one row: SI at its best lookahead against DSI at its best lookahead among those that
    need at most ``sp_degree`` servers (:func:`paper_lookaheads`), on that many servers, with
    :math:`t=1`, :math:`d=c` (the speedup depends on :math:`t,d` only through :math:`c`).

    ``handicaps=None`` gives exact expectations of the idealised model; otherwise means of ``n_runs``
    paths of :func:`emulate_paper` with those rules, a wall-clock second being :math:`1000/t_{ms}`
    target passes and the pipe wait :math:`100/t_{ms}`, and ``restart_ms`` milliseconds paid by both
    algorithms at every restart (the latency arrays of the best configurations are returned too,
    under ``si runs`` and ``dsi runs``).
    """
    common = dict(target_latency=1.0, drafter_latency=row.c, acceptance_rate=row.acceptance, n_tokens=n_tokens)
    dsi_lookaheads = paper_lookaheads(row.c, lookaheads, sp_degree)
    if handicaps is None:
        si = {L: expected_latency("si", lookahead=L, **common) for L in lookaheads}
        dsi = {L: expected_latency("dsi", lookahead=L, sp_degree=sp_degree, **common) for L in dsi_lookaheads}
    else:
        n_runs = positive_int("n_runs", n_runs)
        runs = {}
        for algorithm, choices in (("si", lookaheads), ("dsi", dsi_lookaheads)):
            for L in choices:
                runs[algorithm, L] = emulate_paper(
                    algorithm, lookahead=L, sp_degree=sp_degree, handicaps=handicaps, n_runs=n_runs,
                    seed=seed + 7 * L + (algorithm == "dsi"), second=1000.0 / row.t, pipe_wait=100.0 / row.t,
                    restart_cost=restart_ms / row.t, **common)
        si = {L: runs["si", L].mean() for L in lookaheads}
        dsi = {L: runs["dsi", L].mean() for L in dsi_lookaheads}
    best_si, best_dsi = min(si, key=si.get), min(dsi, key=dsi.get)
    result = {"speedup": si[best_si] / dsi[best_dsi], "si lookahead": best_si, "dsi lookahead": best_dsi}
    if handicaps is not None:
        result["si runs"], result["dsi runs"] = runs["si", best_si], runs["dsi", best_dsi]
    return result


def ratio_of_means_band(numerator: np.ndarray, denominator: np.ndarray, batch: int = 30, draws: int = 2000,
                        seed: int = 0, quantiles: tuple[float, float] = (0.05, 0.95)) -> tuple[float, float]:
    """Quantiles of ``mean(numerator)/mean(denominator)`` over bootstrap batches of ``batch`` runs each: the
    spread of an estimate made from ``batch`` runs, as the paper's 30-run averages were."""
    rng = np.random.default_rng(seed)
    top = rng.choice(numerator, size=(draws, batch)).mean(axis=1)
    bottom = rng.choice(denominator, size=(draws, batch)).mean(axis=1)
    low, high = np.quantile(top / bottom, quantiles)
    return float(low), float(high)


MERGED_SIMULATOR = PAPER_HANDICAPS[:5]
"""The rules of the simulator as merged into the paper's repository (all but ``second_seed``)."""


@dataclass
class PaperTable:
    """Table 1 set beside the model: the paper's speedups, the idealised model's (exact expectations),
    the emulation's mean speedup with the simulator's rules switched on cumulatively
    (``emulated[stage]``; stage ``"none"`` is the emulator with no rule, a Monte-Carlo estimate of the
    idealised model), the 5-95% band of a 30-run estimate under the merged simulator's rules
    (:data:`MERGED_SIMULATOR`), DSI's lookaheads, and the mean gap under those rules when every
    restart costs both algorithms ``restart_gaps`` keys' milliseconds."""

    rows: tuple[PaperRow, ...]
    idealised: np.ndarray
    emulated: dict[str, np.ndarray]
    bands: np.ndarray
    dsi_lookaheads: list[tuple[int, ...]]
    restart_gaps: dict[float, float]

    @property
    def paper(self) -> np.ndarray:
        return np.array([row.speedup for row in self.rows])

    def mean_gap(self) -> dict[str, float]:
        """Mean of paper minus ours: ``"idealised"`` (exact), then each emulated stage."""
        gaps = {"idealised": float(np.mean(self.paper - self.idealised))}
        gaps.update({stage: float(np.mean(self.paper - values)) for stage, values in self.emulated.items()})
        return gaps

    def inside_bands(self) -> int:
        """How many of the paper's speedups lie inside the 30-run band under the merged simulator's rules."""
        return int(np.sum((self.bands[:, 0] <= self.paper) & (self.paper <= self.bands[:, 1])))

    def closing_restart_ms(self) -> float:
        """The restart cost (ms, linear interpolation of ``restart_gaps``) at which the mean gap under
        the merged simulator's rules is zero; NaN if the computed costs do not bracket it."""
        costs, gaps = np.array(list(self.restart_gaps)), np.array(list(self.restart_gaps.values()))
        crossing = np.nonzero(np.diff(np.sign(gaps)) > 0)[0]
        if crossing.size == 0:
            return float("nan")
        i = crossing[0]
        return float(costs[i] - gaps[i] * (costs[i + 1] - costs[i]) / (gaps[i + 1] - gaps[i]))

    def bars(self, ax) -> None:
        """Bars of the paper's, the idealised and the fully emulated speedup per row, with the band."""
        x, final = np.arange(len(self.rows)), self.emulated[MERGED_SIMULATOR[-1]]
        ax.bar(x - 0.27, self.paper, 0.27, label="paper")
        ax.bar(x, self.idealised, 0.27, label="idealised model")
        ax.bar(x + 0.27, final, 0.27, label="simulator's rules R1-R5 (emulated)")
        ax.errorbar(x + 0.27, final, yerr=np.abs(self.bands.T - final), fmt="none", color="k", linewidth=0.8)
        ax.axhline(1, color="k", linewidth=0.6)
        ax.set_xticks(x, [f"{r.target} {r.dataset}" for r in self.rows], fontsize=8, rotation=60, ha="right")
        ax.set_ylabel("DSI / SI speedup")
        ax.legend()

    def text(self) -> str:
        """The table as text, rules numbered R1, R2, ... in the order they are switched on; measured
        (emulated) values are marked with a leading approximately-sign."""
        stages = [stage for stage in self.emulated if stage != "none"]
        head = (f"{'target, data':24s} {'c':>5s} {'a':>4s} {'DSI L':>6s} {'paper':>5s} {'ideal':>5s} "
                + " ".join(f"{f'R{k + 1}':>5s}" for k in range(len(stages))) + "  30-run band")
        lines = [head]
        for i, row in enumerate(self.rows):
            cells = " ".join(f"{f'≈{self.emulated[stage][i]:.2f}':>5s}" for stage in stages)
            lookaheads = ",".join(map(str, self.dsi_lookaheads[i]))
            lines.append(f"{row.target + ' ' + row.dataset:24s} {row.c:5.3f} {row.acceptance:4.2f} "
                         f"{lookaheads:>6s} {row.speedup:5.2f} {self.idealised[i]:5.2f} {cells}  "
                         + f"≈[{self.bands[i, 0]:.2f}, {self.bands[i, 1]:.2f}]")
        legend = ", ".join(f"R{k + 1} {stage}" for k, stage in enumerate(stages))
        return "\n".join(lines + [f"rules switched on cumulatively: {legend}; band: R1-R{len(MERGED_SIMULATOR)}"])


def paper_table(*, n_runs: int, seed: int = 0, rows: tuple[PaperRow, ...] = PAPER_TABLE_1,
                restart_ms: tuple[float, ...] = (10.0, 20.0, 40.0)) -> PaperTable:
    """:class:`PaperTable` of ``rows``: exact idealised speedups, then :func:`table_speedup` with the
    first k rules of :data:`PAPER_HANDICAPS` for k = 0..6 (``n_runs`` paths per configuration), and
    the merged simulator's rules with each restart cost of ``restart_ms``."""
    idealised = np.array([table_speedup(row)["speedup"] for row in rows])
    emulated, bands = {}, np.zeros((len(rows), 2))
    for k in range(len(PAPER_HANDICAPS) + 1):
        results = [table_speedup(row, handicaps=PAPER_HANDICAPS[:k], n_runs=n_runs, seed=seed + 11 * i)
                   for i, row in enumerate(rows)]
        emulated["none" if k == 0 else PAPER_HANDICAPS[k - 1]] = np.array([r["speedup"] for r in results])
        if PAPER_HANDICAPS[:k] == MERGED_SIMULATOR:
            bands = np.array([ratio_of_means_band(r["si runs"], r["dsi runs"], seed=seed + i)
                              for i, r in enumerate(results)])
    paper = np.array([row.speedup for row in rows])
    restart_gaps = {0.0: float(np.mean(paper - emulated[MERGED_SIMULATOR[-1]]))}
    for ms in restart_ms:
        speedups = [table_speedup(row, handicaps=MERGED_SIMULATOR, n_runs=n_runs, seed=seed + 11 * i,
                                  restart_ms=ms)["speedup"] for i, row in enumerate(rows)]
        restart_gaps[float(ms)] = float(np.mean(paper - np.array(speedups)))
    return PaperTable(rows, idealised, emulated, bands, [paper_lookaheads(row.c) for row in rows],
                      restart_gaps)
