r"""A real, concurrent implementation of non-SI, SI and DSI over two language models
(chapter ``speculative-inference``; called as ``theorylab.speculative.generate``).

A *scorer* is a callable ``tokens -> (len(tokens), vocab)`` array of next-token logits
(:class:`theorylab.tinylm.Scorer`). Every committed token is decided by :class:`Decider`, whose
randomness is keyed to the token's absolute position, so the decision at a position depends only on the
prefix, the draft there and that position's uniforms, never on which task or thread finished first.

DSI runs one drafter thread and ``sp_degree`` target worker threads around a coordinator (the calling
thread). The drafter never waits for verification: each epoch it drafts from the verified prefix and,
every ``lookahead`` drafts (and at its last draft), submits a verification task tagged with the epoch
id to a FIFO queue. A worker scores the prefix plus the task's drafts in one pass; the coordinator
commits as soon as it knows the first wrong draft, opens a new epoch, and preempts the old one: queued
tasks of an old epoch are dropped, and a running task's padding is cut short (the forward pass itself
cannot be interrupted).

``workers`` (:class:`Workers`) runs those threads on one pool kept for a whole run, so that no thread (and
no CUDA stream of a thread) is created per call; without it each DSI call starts its own threads.

``target_delay`` and ``drafter_delay`` pad each forward pass to that many seconds, emulating large models
on a machine whose cores cannot run ``sp_degree`` real passes in parallel; sleeping releases the GIL.
"""
from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .speculative import (Interval, check_algorithm, estimate_acceptance_rate, expected_latency, replay,
                          servers_needed, simulate)
from .tinylm import softmax
from .validation import positive_int

Scorer = Callable[[Sequence[int]], np.ndarray]
RULES = ("residual", "fresh_target")


class Decider:
    r"""Every token decision, keyed by absolute position ``pos``.

    Greedy (``temperature == 0``): drafts are the drafter's argmax, a draft is accepted iff it is the
    target's argmax, and the committed token is the target's argmax.

    Sampling: the draft is :math:`x=F_q^{-1}(u_{pos})`; it is accepted iff
    :math:`v_{pos}<p(x)/q(x)`; otherwise the committed token is :math:`F_r^{-1}(w_{pos})` with the residual
    :math:`r\propto(p-q)_+` (rule ``residual``), or, for the biased control rule ``fresh_target``, a fresh
    target sample :math:`F_p^{-1}(w_{pos})`. Where no draft exists (the last token, a bonus, non-SI) the
    token is :math:`F_p^{-1}(w_{pos})`. The uniforms :math:`u,v,w` come from a generator seeded with
    ``(seed, pos)``.
    """

    def __init__(self, temperature: float = 0.0, seed: int = 0, rule: str = "residual"):
        if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature: got {temperature!r}, expected a finite number >= 0")
        if rule not in RULES:
            raise ValueError(f"rule: got {rule!r}, expected one of {list(RULES)}")
        self.temperature, self.seed, self.rule = float(temperature), int(seed), rule

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def _uniforms(self, pos: int) -> np.ndarray:
        return np.random.default_rng([self.seed, pos]).random(3)

    @staticmethod
    def _inverse_cdf(probabilities: np.ndarray, u: float) -> int:
        return int(min(np.searchsorted(np.cumsum(probabilities), u * probabilities.sum(), side="right"),
                       probabilities.size - 1))

    def draft(self, pos: int, drafter_logits: np.ndarray) -> int:
        if self.greedy:
            return int(np.argmax(drafter_logits))
        return self._inverse_cdf(softmax(drafter_logits, self.temperature), self._uniforms(pos)[0])

    def decide(self, pos: int, target_logits: np.ndarray, drafter_logits: np.ndarray | None = None,
               draft: int | None = None) -> tuple[int, bool]:
        """The committed token at ``pos`` and whether it is the draft (accepted)."""
        if self.greedy:
            token = int(np.argmax(target_logits))
            return token, token == draft
        _, v, w = self._uniforms(pos)
        p = softmax(target_logits, self.temperature)
        if draft is None:
            return self._inverse_cdf(p, w), False
        q = softmax(drafter_logits, self.temperature)
        if v < p[draft] / q[draft]:
            return draft, True
        if self.rule == "fresh_target":
            return self._inverse_cdf(p, w), False
        residual = np.maximum(p - q, 0.0)
        if residual.sum() <= 0:  # p == q: acceptance was certain
            return draft, True
        return self._inverse_cdf(residual, w), False


@dataclass
class GenerationResult:
    """What a generation produced and how: the tokens after the prompt, the wall time, and the trace."""

    algorithm: str
    tokens: list[int]
    seconds: float
    target_passes: int = 0
    drafter_passes: int = 0
    epochs: int = 0
    preempted: int = 0
    dropped: int = 0
    intervals: list[Interval] = field(default_factory=list)
    restart_delays: list[float] = field(default_factory=list)


class _Padded:
    """A scorer whose passes last at least ``delay`` seconds; the padding ends early if ``cancel`` is set."""

    def __init__(self, scorer: Scorer, delay: float, lane: str, origin: float, intervals: list[Interval]):
        self.scorer, self.delay, self.lane, self.origin, self.intervals = scorer, delay, lane, origin, intervals

    def __call__(self, tokens: Sequence[int], lane: str | None = None, cancel: threading.Event | None = None,
                 kind: str = "verify") -> tuple[np.ndarray, bool]:
        start = time.perf_counter()
        logits = self.scorer(tokens)
        left = self.delay - (time.perf_counter() - start)
        interrupted = False
        if left > 0 and cancel is None:
            time.sleep(left)
        elif left > 0:
            interrupted = cancel.wait(left)  # set when the task's epoch goes stale: preemption
        end = time.perf_counter()
        self.intervals.append(Interval(lane or self.lane, start - self.origin, end - self.origin,
                                       "preempted" if interrupted else kind))
        return logits, interrupted


class Workers:
    """One pool of ``size`` threads for a whole run: DSI's drafter and target servers run on it call
    after call (a call needs ``1 + sp_degree`` of them), as do :func:`concurrent_pass_seconds`' copies."""

    def __init__(self, size: int):
        self.size = positive_int("size", size)
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="theorylab-engine")

    def submit(self, function: Callable, *args):
        return self._executor.submit(function, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _launch(workers: Workers | None, function: Callable, *args) -> Callable[[], object]:
    """Start ``function(*args)`` on a pool thread or a new thread; return what waits for it."""
    if workers is None:
        thread = threading.Thread(target=function, args=args, daemon=True)
        thread.start()
        return thread.join
    return workers.submit(function, *args).result  # re-raises the thread's exception here


def generate(algorithm: str, target: Scorer | Sequence[Scorer], drafter: Scorer, prompt: Sequence[int], n_tokens: int, *,
             lookahead: int = 1, sp_degree: int = 1, temperature: float = 0.0, seed: int = 0,
             target_delay: float = 0.0, drafter_delay: float = 0.0, rule: str = "residual",
             workers: Workers | None = None) -> GenerationResult:
    """Generate ``n_tokens`` tokens after ``prompt`` with ``algorithm`` in ``{"nonsi", "si", "dsi"}``.

    Lossless: with ``temperature=0`` every algorithm returns the target's own greedy continuation; with
    sampling, every algorithm's output has the target's law (see :class:`Decider`). ``target`` may be a
    list of scorers, copies of one model (one per GPU, say): DSI's server ``k`` uses ``target[k % len]``,
    non-SI and SI the first.
    """
    check_algorithm(algorithm)
    n_tokens = positive_int("n_tokens", n_tokens)
    lookahead = positive_int("lookahead", lookahead)
    sp_degree = positive_int("sp_degree", sp_degree)
    if len(prompt) == 0:
        raise ValueError("prompt: expected at least one token")
    for name, delay in (("target_delay", target_delay), ("drafter_delay", drafter_delay)):
        if not np.isfinite(delay) or delay < 0:
            raise ValueError(f"{name}: got {delay!r}, expected a non-negative number of seconds")
    if workers is not None and algorithm == "dsi" and workers.size < 1 + sp_degree:
        raise ValueError(f"workers: DSI with sp_degree={sp_degree} needs {1 + sp_degree} threads, "
                         f"the pool has {workers.size}")
    decider = Decider(temperature, seed, rule)
    origin = time.perf_counter()
    intervals: list[Interval] = []
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    if not targets:
        raise ValueError("target: expected a scorer or a non-empty list of scorers")
    target_pass = [_Padded(scorer, target_delay, "target", origin, intervals) for scorer in targets]
    drafter_pass = _Padded(drafter, drafter_delay, "drafter", origin, intervals)
    run = {"nonsi": _nonsi, "si": _si, "dsi": _dsi}[algorithm]
    extra = (workers,) if algorithm == "dsi" else ()
    result = run(list(prompt), n_tokens, lookahead, sp_degree, decider, target_pass, drafter_pass, *extra)
    result.seconds = time.perf_counter() - origin
    result.intervals = sorted(intervals, key=lambda bar: bar.start)
    return result


def _nonsi(prompt, n_tokens, lookahead, sp_degree, decider, target_passes, drafter_pass) -> GenerationResult:
    target_pass = target_passes[0]
    sequence = list(prompt)
    for _ in range(n_tokens):
        logits, _ = target_pass(sequence, kind="decode")
        sequence.append(decider.decide(len(sequence), logits[-1])[0])
    return GenerationResult("nonsi", sequence[len(prompt):], 0.0, target_passes=n_tokens)


def _si(prompt, n_tokens, lookahead, sp_degree, decider, target_passes, drafter_pass) -> GenerationResult:
    target_pass = target_passes[0]
    sequence = list(prompt)
    end = len(prompt) + n_tokens
    result = GenerationResult("si", [], 0.0)
    while len(sequence) < end:
        k = min(lookahead, end - len(sequence) - 1)
        drafts, drafter_logits = [], []
        for _ in range(k):
            logits, _ = drafter_pass(sequence + drafts, kind="draft")
            drafter_logits.append(logits[-1])
            drafts.append(decider.draft(len(sequence) + len(drafts), logits[-1]))
        scores, _ = target_pass(sequence + drafts)
        result.target_passes += 1
        result.drafter_passes += k
        base = len(sequence)
        for i in range(k + 1):
            if i == k:
                token, accepted = decider.decide(base + i, scores[base + i - 1])
            else:
                token, accepted = decider.decide(base + i, scores[base + i - 1], drafter_logits[i], drafts[i])
            sequence.append(token)
            if not accepted:
                break
        result.epochs += 1
    result.tokens = sequence[len(prompt):]
    return result


@dataclass
class _Epoch:
    """The state of one DSI epoch: the verified prefix, the drafts, and what the target has said so far."""

    number: int
    prefix: list[int]
    remaining: int
    drafts: list[int] = field(default_factory=list)
    drafter_logits: list[np.ndarray] = field(default_factory=list)
    target_logits: dict[int, np.ndarray] = field(default_factory=dict)  # by offset 0..m after the prefix
    confirmed: int = 0  # drafts accepted so far
    stale: threading.Event = field(default_factory=threading.Event)
    opened: float = 0.0


def _dsi(prompt, n_tokens, lookahead, sp_degree, decider, target_passes, drafter_pass, workers=None
         ) -> GenerationResult:
    result = GenerationResult("dsi", [], 0.0)
    lock = threading.Condition()
    tasks: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    done = threading.Event()
    epoch = _Epoch(0, list(prompt), n_tokens, opened=time.perf_counter())
    tasks.put((epoch, 0))

    def drafter_loop():
        while not done.is_set():
            with lock:
                current = epoch
                while len(current.drafts) >= current.remaining - 1 and current is epoch and not done.is_set():
                    lock.wait()
                if current is not epoch or done.is_set():
                    continue
                context = current.prefix + current.drafts
            if not current.drafts and current.number > 0:
                result.restart_delays.append(time.perf_counter() - current.opened)
            logits, interrupted = drafter_pass(context, cancel=current.stale, kind="draft")
            with lock:
                if interrupted or current is not epoch:
                    continue
                current.drafter_logits.append(logits[-1])
                current.drafts.append(decider.draft(len(context), logits[-1]))
                result.drafter_passes += 1
                drafted = len(current.drafts)
                if drafted % lookahead == 0 or drafted == current.remaining - 1:
                    tasks.put((current, drafted))
                results.put(None)  # a new draft may complete a decision

    def target_loop(server: int):
        target_pass = target_passes[server % len(target_passes)]
        while True:
            item = tasks.get()
            if item is None:
                return
            task_epoch, drafted = item
            if task_epoch.stale.is_set():
                with lock:
                    result.dropped += 1
                continue
            scores, interrupted = target_pass(task_epoch.prefix + task_epoch.drafts[:drafted],
                                              lane=f"server {server}", cancel=task_epoch.stale)
            with lock:
                result.target_passes += 1
                result.preempted += interrupted
            if not interrupted:
                results.put((task_epoch, drafted, scores[len(task_epoch.prefix) - 1:]))

    joins = [_launch(workers, drafter_loop)] + [_launch(workers, target_loop, k) for k in range(sp_degree)]
    committed = list(prompt)
    try:
        while len(committed) < len(prompt) + n_tokens:
            item = results.get()
            with lock:
                if item is not None and item[0] is epoch:
                    for offset, logits in enumerate(item[2]):
                        epoch.target_logits.setdefault(offset, logits)
                verdict = _scan(epoch, decider)
                if verdict is None:
                    continue
                committed = epoch.prefix + epoch.drafts[:epoch.confirmed] + [verdict]
                epoch.stale.set()
                result.epochs += 1
                epoch = _Epoch(epoch.number + 1, committed, len(prompt) + n_tokens - len(committed),
                               opened=time.perf_counter())
                if epoch.remaining > 0:
                    tasks.put((epoch, 0))
                lock.notify_all()
    finally:
        done.set()
        epoch.stale.set()
        with lock:
            lock.notify_all()
        for _ in range(sp_degree):
            tasks.put(None)
        for join in joins:
            join()
    result.tokens = committed[len(prompt):]
    return result


def _scan(epoch: _Epoch, decider: Decider) -> int | None:
    """Advance the epoch's accepted drafts as far as the target's logits and the drafts allow; return the
    token that ends the epoch (the first rejection's correction, or the last token) or ``None``."""
    base = len(epoch.prefix)
    while epoch.confirmed in epoch.target_logits:
        i = epoch.confirmed
        if i == epoch.remaining - 1:  # the last token of the generation: no draft there
            return decider.decide(base + i, epoch.target_logits[i])[0]
        if i >= len(epoch.drafts):  # the target is ahead of the drafter: wait for the draft
            return None
        token, accepted = decider.decide(base + i, epoch.target_logits[i], epoch.drafter_logits[i], epoch.drafts[i])
        if not accepted:
            return token
        epoch.confirmed += 1
    return None


def acceptance_trace(drafter: Scorer, prompt: Sequence[int], output: Sequence[int]) -> np.ndarray:
    """For each committed prefix length ``p`` of a greedy ``output``, how many of the drafter's greedy tokens
    from ``prompt + output[:p]`` match ``output[p:]`` (the run lengths :func:`theorylab.speculative.replay`
    takes)."""
    sequence = list(prompt) + list(output)
    lengths = np.zeros(len(output), dtype=np.int64)
    for p in range(len(output)):
        context = sequence[:len(prompt) + p]
        while p + lengths[p] < len(output):
            guess = int(np.argmax(drafter(context)[-1]))
            if guess != output[p + lengths[p]]:
                break
            context.append(guess)
            lengths[p] += 1
    return lengths


class Jittered:
    """A scorer that sleeps a random ``0..max_seconds`` after each pass (seeded), so that threads finish in
    varying orders: losslessness must not depend on timing."""

    def __init__(self, scorer: Scorer, max_seconds: float = 0.002, seed: int = 0):
        self.scorer, self.max_seconds, self.random = scorer, max_seconds, random.Random(seed)
        self.vocab = getattr(scorer, "vocab", None)

    def __call__(self, tokens: Sequence[int]) -> np.ndarray:
        logits = self.scorer(tokens)
        time.sleep(self.random.uniform(0, self.max_seconds))
        return logits


def sampled_counts(target: Scorer, drafter: Scorer, prompt: Sequence[int], n_tokens: int, draws: int, *,
                   algorithm: str = "dsi", lookahead: int = 1, sp_degree: int = 1, rule: str = "residual",
                   seed: int = 0) -> np.ndarray:
    """Counts, of shape ``(vocab,)*n_tokens``, of the continuations of ``draws`` generations at
    temperature 1, generation ``i`` seeded ``seed + i`` (compare with the exact law by
    :func:`goodness_of_fit`)."""
    if draws < 1 or n_tokens < 1:
        raise ValueError(f"sampled_counts: need draws >= 1 and n_tokens >= 1, got {draws}, {n_tokens}")
    counts = np.zeros((target.vocab,) * n_tokens)
    for draw in range(draws):
        out = generate(algorithm, target, drafter, prompt, n_tokens, lookahead=lookahead, sp_degree=sp_degree,
                       temperature=1.0, seed=seed + draw, rule=rule).tokens
        counts[tuple(out)] += 1
    return counts


def goodness_of_fit(counts: np.ndarray, law: np.ndarray, min_expected: float = 5.0) -> float:
    """p-value of Pearson's chi-square test of ``counts`` against the exact ``law``; cells expected fewer than
    ``min_expected`` times are pooled into one (the chi-square approximation needs it)."""
    from scipy import stats

    counts, law = np.ravel(counts).astype(float), np.ravel(law)
    if counts.shape != law.shape or counts.sum() <= 0 or not np.isclose(law.sum(), 1.0):
        raise ValueError("goodness_of_fit: counts and a law that sums to 1, of the same shape, are required")
    expected = law * counts.sum()
    small = expected < min_expected
    observed = np.append(counts[~small], counts[small].sum()) if small.any() else counts
    expected = np.append(expected[~small], expected[small].sum()) if small.any() else expected
    if observed.size < 2:
        raise ValueError(f"goodness_of_fit: {counts.sum():.0f} draws leave one cell expected at least "
                         f"{min_expected:g} times; the test needs more draws")
    return float(stats.chisquare(observed, expected).pvalue)


def control_prompt(target: Scorer, drafter: Scorer, candidates: Sequence[Sequence[int]],
                   temperature: float = 1.0) -> list[int]:
    r"""The candidate prompt where the biased ``fresh_target`` rule is easiest to detect: the largest
    :math:`\sum_x(b(x)-p(x))^2/p(x)` for the first token, with :math:`b=\min(p,q)+(1-\sum\min(p,q))\,p`."""
    def divergence(prompt):
        p = softmax(target(prompt)[-1], temperature)
        return float(((fresh_target_law(p, softmax(drafter(prompt)[-1], temperature)) - p) ** 2 / p).sum())

    return list(max(candidates, key=lambda prompt: divergence(list(prompt))))


def fresh_target_law(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""The law of a drafted token under the biased ``fresh_target`` rule, target law ``p``, drafter law
    ``q``: accepted with probability :math:`\min(p,q)`, else a fresh target sample,
    :math:`b=\min(p,q)+(1-\sum\min(p,q))\,p`."""
    overlap = np.minimum(p, q)
    return overlap + (1 - overlap.sum()) * p


def mean_pass_times(result: GenerationResult) -> tuple[float, float]:
    """Mean measured target and drafter pass times of a run, preempted passes excluded (drafter 0 if
    the run drafted nothing)."""
    verify = [b.end - b.start for b in result.intervals if b.kind in ("verify", "decode")]
    drafts = [b.end - b.start for b in result.intervals if b.kind == "draft"]
    return float(np.mean(verify)), float(np.mean(drafts)) if drafts else 0.0


def timed_against_model(targets, drafter: Scorer, prompt: Sequence[int], trace: Sequence[int], *,
                        c: float, target_seconds: float, n_tokens: int = 50, iid_runs: int = 2000,
                        seed: int = 0) -> dict[str, dict]:
    r"""Time non-SI, SI and DSI once each, padded to :math:`t` = ``target_seconds`` and :math:`d=ct`,
    and set beside each run what the latency model says with the run's measured mean pass times:

    * ``replay``: the run's own acceptance pattern ``trace`` replayed (a fit, not a prediction);
    * ``iid``: the i.i.d. model's exact expectation at :math:`\hat a` estimated from ``trace``, and
      ``iid band``, the 0.5-99.5% quantiles of one run's latency under that model (``iid_runs``
      simulated runs): the prediction.

    SI runs at the lookahead the i.i.d. model finds best at :math:`\hat a` (1..10); DSI at :math:`L=1`
    on :math:`\lceil 1/c\rceil` servers.
    """

    a_hat = estimate_acceptance_rate(trace)
    si_lookahead = min(range(1, 11), key=lambda L: expected_latency(
        "si", target_latency=1, drafter_latency=c, acceptance_rate=a_hat, lookahead=L, n_tokens=n_tokens))
    plans = {"nonsi": dict(lookahead=1), "si": dict(lookahead=si_lookahead),
             "dsi": dict(lookahead=1, sp_degree=servers_needed(1.0, c, 1))}
    timed = {}
    for k, (algorithm, plan) in enumerate(plans.items()):
        run = generate(algorithm, targets, drafter, prompt, n_tokens, target_delay=target_seconds,
                       drafter_delay=c * target_seconds, **plan)
        t_hat, d_hat = mean_pass_times(run)
        model = dict(target_latency=t_hat, drafter_latency=d_hat or c * target_seconds, **plan)
        paths = simulate(algorithm, acceptance_rate=a_hat, n_tokens=n_tokens, n_runs=iid_runs,
                         seed=seed + k, **model)
        timed[algorithm] = dict(seconds=run.seconds, replay=replay(algorithm, trace, **model),
                                iid=expected_latency(algorithm, acceptance_rate=a_hat, n_tokens=n_tokens, **model),
                                iid_band=tuple(np.quantile(paths, [0.005, 0.995])), run=run, plan=plan,
                                a_hat=a_hat)
    return timed


def predicted_orderings(timed: dict, margin: float = 1.1) -> list[tuple]:
    """Pairs (c, fast, slow, predicted, measured) of :func:`timed_against_model` results keyed by
    (c, algorithm) where the replay predicts ``slow``/``fast`` above ``margin``; ``measured`` is the
    ratio on the clock."""
    found = []
    for c in sorted({c for c, _ in timed}):
        for fast, slow in (("si", "nonsi"), ("dsi", "si"), ("dsi", "nonsi")):
            predicted = timed[c, slow]["replay"] / timed[c, fast]["replay"]
            if predicted > margin:
                found.append((c, fast, slow, predicted, timed[c, slow]["seconds"] / timed[c, fast]["seconds"]))
    return found


def engine_overheads(dsi_runs: Sequence[GenerationResult], cs: Sequence[float], target_seconds: float
                     ) -> tuple[float, float]:
    """Mean verification time over the padded :math:`t`, minus 1, and mean preemption-to-restart
    delay over :math:`d=ct`, of padded DSI runs made at drafter fractions ``cs``."""
    overhead = np.mean([(b.end - b.start) / target_seconds - 1 for r in dsi_runs for b in r.intervals
                        if b.kind == "verify"])
    restart = np.mean([np.mean(r.restart_delays) / (c * target_seconds) for r, c in zip(dsi_runs, cs, strict=True)])
    return float(overhead), float(restart)


def wall_clock_text(timed: dict) -> str:
    """One line per (c, algorithm): the plan, measured seconds, replay and i.i.d. prediction (measured
    values marked with an approximately-sign)."""
    lines = []
    for (c, algorithm), v in timed.items():
        mark = "≈" if algorithm == "si" else ""  # SI's lookahead is chosen at the measured a_hat
        plan = ", ".join(f"{k} {mark}{n}" for k, n in v["plan"].items())
        low, high = v["iid_band"]
        lines.append(f"c={c} {algorithm:5s} ({plan}): measured ≈{v['seconds']:.3f} s, replay "
                     f"≈{v['replay']:.3f} s, i.i.d. model ≈{v['iid']:.3f} s, band ≈[{low:.3f}, {high:.3f}]")
    return "\n".join(lines)


def train_pair(*, vocab: int = 16, width: int, steps: int, seed: int = 0):
    """The chapter's models, on text from a random order-2 Markov source over ``vocab`` tokens
    (2000 sequences of 41): a small causal transformer (the target) and a bigram table distilled from
    it (the drafter). Returns ``(source, target_model, drafter_model, target_loss, distillation_kl)``."""
    import torch

    from . import tinylm

    source = tinylm.markov_source(vocab, order=2, alpha=0.2, context_weight=0.3, seed=seed)
    text = tinylm.sample_text(source, 2000, 41, seed=seed + 1)
    torch.manual_seed(seed)
    target_model = tinylm.TinyTransformer(vocab, width=width, max_len=64)
    target_losses = tinylm.train_lm(target_model, text, steps=steps, lr=5e-3, seed=seed)
    drafter_model = tinylm.BigramLM(vocab)
    drafter_losses = tinylm.train_lm(drafter_model, text, steps=200, lr=5e-2, seed=seed, teacher=target_model)
    return source, target_model, drafter_model, target_losses[-1], drafter_losses[-1]


def greedy_mismatches(target: Scorer, drafter: Scorer, prompts: Sequence[Sequence[int]], n_tokens: int
                      ) -> tuple[int, int, list[list[int]]]:
    """Run SI and DSI with L in {1, 3} and P in {1, 2, 4} on every prompt, with timing jitter, against
    the target's own greedy decode. Returns (mismatching runs, runs, the acceptance trace per prompt)."""
    mismatches, compared, traces = 0, 0, []
    for k, prompt in enumerate(prompts):
        reference = generate("nonsi", target, drafter, prompt, n_tokens).tokens
        traces.append(acceptance_trace(drafter, prompt, reference))
        for algorithm in ("si", "dsi"):
            for lookahead in (1, 3):
                for sp_degree in (1, 2, 4):
                    out = generate(algorithm, Jittered(target, seed=k), Jittered(drafter, seed=k + 99), prompt,
                                   n_tokens, lookahead=lookahead, sp_degree=sp_degree)
                    mismatches += out.tokens != reference
                    compared += 1
    return mismatches, compared, traces


def server_sweep(targets, drafter: Scorer, prompt: Sequence[int], trace: Sequence[int], *, servers: Sequence[int],
                 lookahead: int, c: float, target_seconds: float, n_tokens: int = 50) -> dict[int, tuple[float, float]]:
    """For each number of servers P: (measured seconds of one padded DSI run, its replay through the FIFO
    latency model with the run's measured mean pass times)."""

    sweep = {}
    for P in servers:
        run = generate("dsi", targets, drafter, prompt, n_tokens, lookahead=lookahead, sp_degree=P,
                       target_delay=target_seconds, drafter_delay=c * target_seconds)
        t_hat, d_hat = mean_pass_times(run)
        sweep[P] = (run.seconds, replay("dsi", trace, target_latency=t_hat, drafter_latency=d_hat,
                                        lookahead=lookahead, sp_degree=P))
    return sweep
