"""theorylab.speculative against independent oracles: an event-driven simulation written here with a
heap of servers, Monte Carlo against exact expectations, closed forms, and the theorems' inequalities."""
import heapq
import math

import numpy as np
import pytest

from theorylab import speculative as sp

KW = dict(target_latency=1.0, drafter_latency=0.1, acceptance_rate=0.8, lookahead=3)


def event_driven_latency(algorithm, run_lengths, t, d, L, P=None, nonsi_thread=False):
    """Oracle: one generation with a recorded acceptance pattern, by explicit events.

    DSI: the drafter emits draft i of the epoch at T0 + i d; every L drafts (and at T0, and at the last
    draft) a task enters a FIFO queue; servers are a heap of free times; the epoch ends when the first
    task covering the first wrong draft finishes (or the non-SI thread reaches it)."""
    N = len(run_lengths)
    clock, position = 0.0, 0
    while position < N:
        remaining = N - position
        if algorithm == "si":
            k = min(L, remaining - 1)
            clock += k * d + t
            position += min(run_lengths[position], k) + 1
            continue
        n = min(run_lengths[position], remaining - 1)
        servers = [clock] * (P if P is not None else remaining + 1)
        heapq.heapify(servers)
        drafted = 0
        end = math.inf
        while True:
            submitted = clock + drafted * d
            start = max(submitted, heapq.heappop(servers))
            heapq.heappush(servers, start + t)
            if drafted >= n:  # this task scores the prefix and the first wrong draft (or the last token)
                end = start + t
                break
            if drafted == remaining - 1:
                raise AssertionError("unreachable: the last task covers every draft")
            drafted = min(drafted + L, remaining - 1)
        if nonsi_thread:
            end = min(end, clock + (n + 1) * t)
        clock = end
        position += n + 1
    return clock if algorithm != "nonsi" else N * t


@pytest.mark.parametrize("algorithm", ["si", "dsi"])
def test_replay_matches_an_event_driven_oracle_on_random_traces(algorithm):
    rng = np.random.default_rng(0)
    for _ in range(300):
        N = int(rng.integers(1, 40))
        lengths = rng.geometric(1 - rng.uniform(0, 0.95), size=N) - 1
        t, d = 1.0, float(rng.uniform(0.02, 1.5))
        L = int(rng.integers(1, 6))
        P = None if rng.random() < 0.3 else int(rng.integers(1, 5))
        cap = bool(rng.random() < 0.5) and algorithm == "dsi"
        ours = sp.replay(algorithm, lengths, target_latency=t, drafter_latency=d, lookahead=L, sp_degree=P,
                         nonsi_thread=cap)
        assert ours == pytest.approx(event_driven_latency(algorithm, lengths, t, d, L, P, cap), rel=1e-12)


@pytest.mark.parametrize("algorithm,P,cap", [("si", None, False), ("dsi", None, False), ("dsi", 2, False),
                                              ("dsi", 1, False), ("dsi", 1, True)])
def test_simulation_mean_matches_the_exact_expectation(algorithm, P, cap):
    kwargs = dict(KW, n_tokens=120, sp_degree=P, nonsi_thread=cap)
    exact = sp.expected_latency(algorithm, **kwargs)
    runs = sp.simulate(algorithm, n_runs=20_000, seed=3, **kwargs)
    assert abs(runs.mean() - exact) < 4 * runs.std() / math.sqrt(runs.size) + 1e-12


def test_exact_expectation_matches_an_enumeration_of_every_path():
    """Brute force over all acceptance patterns of a short generation (each position accepted w.p. a)."""
    N, a = 7, 0.6
    for algorithm, P in [("si", None), ("dsi", None), ("dsi", 1), ("dsi", 2)]:
        total = 0.0
        for pattern in range(2 ** N):
            accepted = [(pattern >> i) & 1 for i in range(N)]
            probability = np.prod([a if bit else 1 - a for bit in accepted])
            # run length from position p: consecutive accepted positions p, p+1, ...
            lengths = [next((k for k in range(N - p) if not accepted[p + k]), N - p) for p in range(N)]
            total += probability * event_driven_latency(algorithm, lengths, 1.0, 0.3, 2, P)
        exact = sp.expected_latency(algorithm, target_latency=1.0, drafter_latency=0.3, acceptance_rate=a,
                                    lookahead=2, n_tokens=N, sp_degree=P)
        assert exact == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("a,L", [(0.0, 1), (0.5, 1), (0.8, 4), (0.95, 10)])
def test_si_per_token_cost_tends_to_the_closed_form(a, L):
    """For large N the boundary effect is constant, so E_{2N} - E_N = N (Ld+t)(1-a)/(1-a^{L+1})."""
    kwargs = dict(target_latency=1.0, drafter_latency=0.07, acceptance_rate=a, lookahead=L)
    gap = sp.expected_latency("si", n_tokens=800, **kwargs) - sp.expected_latency("si", n_tokens=400, **kwargs)
    assert gap / 400 == pytest.approx(float(sp.si_rate(1.0, 0.07, a, L)), rel=1e-9)


@pytest.mark.parametrize("a,L,P", [(0.3, 1, None), (0.8, 3, None), (0.9, 2, 1), (0.9, 2, 3), (0.7, 5, 2)])
def test_dsi_rate_closed_form_matches_the_dp_and_the_series(a, L, P):
    kwargs = dict(target_latency=1.0, drafter_latency=0.09, acceptance_rate=a, lookahead=L, sp_degree=P)
    gap = sp.expected_latency("dsi", n_tokens=800, **kwargs) - sp.expected_latency("dsi", n_tokens=400, **kwargs)
    closed = float(sp.dsi_rate(1.0, 0.09, a, L, P))
    assert gap / 400 == pytest.approx(closed, rel=1e-9)
    assert sp.dsi_rate_series(sp.Setting.make(**kwargs)) == pytest.approx(closed, rel=1e-12)


def test_proposition_1_holds_with_equality_at_lookahead_one():
    for a in (0.0, 0.3, 0.9, 1.0):
        for N in (1, 2, 17, 60):
            t1, t2 = 0.2, 1.0
            bound = t1 * a * (N - 1) + t2 * ((1 - a) * (N - 1) + 1)
            exact = sp.expected_latency("dsi", target_latency=t2, drafter_latency=t1, acceptance_rate=a,
                                        lookahead=1, n_tokens=N)
            assert exact == pytest.approx(bound, rel=1e-12, abs=1e-12)


def test_dsi_never_slower_than_nonsi_on_any_sampled_path_when_Ld_at_most_t():
    rng = np.random.default_rng(1)
    for _ in range(200):
        c, a, L = rng.uniform(0.01, 1), rng.uniform(0, 0.99), int(rng.integers(1, 8))
        if L * c > 1:
            L = max(1, int(1 / c))
        P = sp.servers_needed(1.0, c, L)
        runs = sp.simulate("dsi", target_latency=1.0, drafter_latency=c, acceptance_rate=a, lookahead=L,
                           n_tokens=40, n_runs=50, seed=int(rng.integers(1 << 30)), sp_degree=P)
        assert runs.max() <= 40 + 1e-9


def test_without_the_nonsi_thread_dsi_can_lose_to_nonsi_when_Ld_exceeds_t():
    slow = dict(target_latency=1.0, drafter_latency=0.9, acceptance_rate=0.3, lookahead=3, n_tokens=40)
    assert sp.replay("dsi", [1] * 40, target_latency=1.0, drafter_latency=0.9, lookahead=3) > 40
    capped = sp.simulate("dsi", n_runs=500, seed=0, nonsi_thread=True, **slow)
    assert capped.max() <= 40 + 1e-9


def test_theorem_2_dsi_expected_latency_at_most_si_for_the_same_lookahead():
    for c in (0.02, 0.1, 0.4, 1.0):
        for a in (0.0, 0.4, 0.8, 0.97):
            for L in (1, 2, 5, 12):
                kwargs = dict(target_latency=1.0, drafter_latency=c, acceptance_rate=a, lookahead=L, n_tokens=50)
                assert sp.expected_latency("dsi", **kwargs) <= sp.expected_latency("si", **kwargs) + 1e-9
                assert sp.dsi_rate(1, c, a, L) <= sp.si_rate(1, c, a, L) + 1e-12
                assert sp.dsi_rate(1, c, a, 1) <= sp.dsi_rate(1, c, a, L) + 1e-12


def test_si_beats_nonsi_exactly_when_acceptance_exceeds_the_latency_ratio():
    c, a = np.meshgrid(np.linspace(0.01, 1, 40), np.append(np.linspace(0, 0.99, 40), [0.1, 0.5]))
    best, _ = sp.best_si_rate(1.0, c, a)
    apart = np.abs(a - c) > 1e-9
    assert np.array_equal((best < 1)[apart], (a > c)[apart])
    assert np.all(best[~apart] >= 1 - 1e-12)


def test_fifo_queue_matches_the_closed_form_start_times():
    for P, L, d in [(1, 1, 0.1), (2, 3, 0.1), (4, 1, 0.3), (3, 2, 0.5)]:
        s = sp.Setting.make(target_latency=1.0, drafter_latency=d, acceptance_rate=0.5, lookahead=L, sp_degree=P)
        j = np.arange(30)
        starts = sp.queue_starts(j * L * d, 1.0, P, "fifo")
        np.testing.assert_allclose(starts, sp.fifo_start(j, s), atol=1e-12)


def test_lifo_queue_serves_the_newest_waiting_task_first():
    starts = sp.queue_starts(np.array([0.0, 0.1, 0.2, 0.3]), 1.0, 1, "lifo")
    np.testing.assert_allclose(starts, [0.0, 3.0, 2.0, 1.0])


def test_timeline_ends_when_replay_does_and_no_server_runs_two_tasks_at_once():
    rng = np.random.default_rng(2)
    lengths = rng.geometric(0.3, size=30) - 1
    for algorithm, P in [("si", None), ("dsi", 2), ("dsi", None)]:
        bars = sp.timeline(algorithm, lengths, target_latency=1.0, drafter_latency=0.2, lookahead=2, sp_degree=P)
        end = sp.replay(algorithm, lengths, target_latency=1.0, drafter_latency=0.2, lookahead=2, sp_degree=P)
        assert max(bar.end for bar in bars) == pytest.approx(end)
        for lane in {bar.lane for bar in bars}:
            spans = sorted((bar.start, bar.end) for bar in bars if bar.lane == lane)
            assert all(a_end <= b_start + 1e-9 for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


def test_paper_emulation_without_handicaps_is_the_idealised_model():
    for algorithm, P in [("si", 1), ("dsi", 7), ("dsi", 2)]:
        kwargs = dict(target_latency=1.0, drafter_latency=0.15, acceptance_rate=0.7, lookahead=2, n_tokens=50)
        runs = sp.emulate_paper(algorithm, n_runs=3000, seed=4, sp_degree=P, **kwargs)
        exact = sp.expected_latency(algorithm, sp_degree=P if algorithm == "dsi" else None, **kwargs)
        assert abs(runs.mean() - exact) < 4 * runs.std() / math.sqrt(runs.size)


def test_paper_block_rule_costs_si_the_predicted_time_per_epoch():
    """With a = 0 every epoch commits one token after one block: N (Ld + t). With the restart call each
    epoch pays t more, and the run ends only at a zero-draft call that finds committed + n > N: after
    N + 1 epochs, one more t."""
    kwargs = dict(target_latency=1.0, drafter_latency=0.1, acceptance_rate=0.0, lookahead=4, n_tokens=10, n_runs=3)
    assert sp.emulate_paper("si", handicaps=["block_rule"], **kwargs) == pytest.approx([14.0] * 3)
    assert sp.emulate_paper("si", handicaps=["block_rule", "restart_call"], **kwargs) == pytest.approx([11 * 2.4 + 1.0] * 3)


@pytest.mark.parametrize("bad,name", [
    (dict(acceptance_rate=1.5), "acceptance_rate"), (dict(acceptance_rate=-0.1), "acceptance_rate"),
    (dict(target_latency=0.0), "target_latency"), (dict(drafter_latency=-1.0), "drafter_latency"),
    (dict(lookahead=0), "lookahead"), (dict(sp_degree=0), "sp_degree"), (dict(n_tokens=0), "n_tokens"),
])
def test_bad_input_names_the_argument(bad, name):
    kwargs = dict(KW, n_tokens=10, **bad) if "n_tokens" not in bad else dict(KW, **bad)
    with pytest.raises(ValueError, match=name):
        sp.expected_latency("dsi", **kwargs)
    with pytest.raises(ValueError, match=name):
        sp.simulate("dsi", n_runs=2, **kwargs)


def test_unknown_algorithm_is_rejected():
    with pytest.raises(ValueError, match="algorithm"):
        sp.expected_latency("ssi", n_tokens=5, **KW)


def test_drafter_slower_than_target_is_allowed():
    assert sp.expected_latency("si", target_latency=1.0, drafter_latency=2.0, acceptance_rate=0.5,
                               lookahead=1, n_tokens=5) > 5


# --- The paper's simulator: an independent transcription of dsi/online/simul (t = 1, draws shared) ---

CAP = 20


def _simulator_si_run(draws, c, L, N):
    """SI as the simulator runs it: a zero-draft call, then a blocking call every L drafts; a call
    that finds a rejection commits n; a call that finds all drafts right stops once total + n > N."""
    clock, total = 0.0, 0
    while True:
        n = min(next(draws), CAP)
        clock += 1.0
        if total + n > N:
            return clock
        drafts = 0
        while True:
            clock += c
            drafts += 1
            if drafts % L == 0:
                clock += 1.0
                if n < drafts:
                    total += n
                    break
                if total + n > N:
                    return clock


def _simulator_dsi_epoch(n, total, c, L, P, N):
    """One DSI epoch of the simulator: task j (j L drafts) is submitted at j L c to a LIFO pool of P
    workers busy 1 per task; the first task whose result decides (a rejection, or the stop) ends it.
    Returns (duration, stopped)."""
    waiting, running, running_tasks, j = [], [], [], 0  # finish times and tasks of the busy workers
    while True:
        submit = j * L * c
        finish = min(running) if running else math.inf
        if submit <= finish:  # the drafter submits task j
            waiting.append(j)
            j += 1
            now = submit
        else:  # a worker finishes: the task that started earliest among those running
            now = finish
            task = running_tasks.pop(running.index(finish))
            running.remove(finish)
            if n < task * L:
                return now, False
            if total + n > N:
                return now, True
        while waiting and len(running) < P:
            started = waiting.pop()  # LIFO
            running.append(now + 1.0)
            running_tasks.append(started)


def _simulator_dsi_run(draws, c, L, P, N):
    clock, total = 0.0, 0
    while True:
        n = min(next(draws), CAP)
        duration, stopped = _simulator_dsi_epoch(n, total, c, L, P, N)
        clock += duration
        if stopped:
            return clock
        total += n


SIMULATOR_RULES = ("block_rule", "no_correction", "draw_cap", "restart_call", "lifo")


@pytest.mark.parametrize("algorithm,c,a,L,P", [
    ("si", 0.1, 0.6, 1, 7), ("si", 0.3, 0.9, 5, 7), ("dsi", 0.3, 0.9, 5, 7), ("dsi", 0.3, 0.9, 1, 4),
    ("dsi", 0.07, 0.63, 5, 7), ("dsi", 0.2, 0.95, 2, 2),
])
def test_paper_emulation_matches_a_transcription_of_the_simulator(algorithm, c, a, L, P):
    N, runs, seed = 50, 40, 3
    emulated = sp.emulate_paper(algorithm, target_latency=1.0, drafter_latency=c, acceptance_rate=a, lookahead=L,
                                n_tokens=N, n_runs=runs, seed=seed, sp_degree=P, handicaps=SIMULATOR_RULES)
    rng = np.random.default_rng(seed)
    draws = iter(lambda: int(rng.geometric(1 - a)) - 1, None)
    if algorithm == "si":
        expected = [_simulator_si_run(draws, c, L, N) for _ in range(runs)]
    else:
        expected = [_simulator_dsi_run(draws, c, L, P, N) for _ in range(runs)]
    assert emulated == pytest.approx(expected, rel=1e-12)


def test_paper_rules_on_a_deterministic_path():
    """a = 1: every draw is capped at 20; SI pays t + 5 (5 d + t) per epoch, DSI 5 L d + t; at 80
    committed tokens the zero-draft call sees 80 + 20 > 90 and stops after t."""
    kwargs = dict(target_latency=1.0, drafter_latency=0.1, acceptance_rate=1.0, lookahead=5, n_tokens=90,
                  n_runs=2, sp_degree=7, handicaps=SIMULATOR_RULES)
    assert sp.emulate_paper("si", **kwargs) == pytest.approx([4 * 8.5 + 1] * 2)
    assert sp.emulate_paper("dsi", **kwargs) == pytest.approx([4 * 3.5 + 1] * 2)


def test_second_seed_needs_the_length_of_a_second():
    kwargs = dict(target_latency=1.0, drafter_latency=0.1, acceptance_rate=0.5, lookahead=2, n_tokens=10,
                  n_runs=2, handicaps=["second_seed"])
    with pytest.raises(ValueError, match="second"):
        sp.emulate_paper("si", **kwargs)


def test_table_speedup_counts_a_second_as_1000_over_t_ms_target_passes(monkeypatch):
    seen = []
    original = sp.emulate_paper

    def spy(*args, **kwargs):
        seen.append(kwargs["second"])
        return original(*args, **kwargs)

    monkeypatch.setattr(sp, "emulate_paper", spy)
    row = sp.PAPER_TABLE_1[0]
    sp.table_speedup(row, handicaps=["second_seed"], n_runs=2)
    assert seen and all(second == pytest.approx(1000 / 37.7) for second in seen)


def test_dsi_runs_only_with_at_most_seven_servers():
    """The simulator's ConfigDSI rejects ceil(t / (max(1, k) c)) > 7 target servers."""
    for row in sp.PAPER_TABLE_1:
        allowed = {k for k in (1, 5, 10) if math.ceil(row.t / (k * row.t * row.c)) <= 7}
        assert set(sp.paper_lookaheads(row.c)) == allowed
        assert sp.table_speedup(row)["dsi lookahead"] in allowed
    assert sp.paper_lookaheads(0.065) == (5, 10)  # the Vicuna rows cannot run DSI at L = 1
    with pytest.raises(ValueError, match="servers"):
        sp.paper_lookaheads(0.01, (1, 5, 10))


def test_finite_heatmaps_agree_with_exact_finite_expectations():
    c, a = np.array([0.1, 0.4]), np.array([0.8, 0.5])
    maps = sp.finite_heatmaps(c, a, n_tokens=300, n_runs=400, seed=2)
    _, lookahead = sp.best_si_rate(1.0, c, a)
    for i in range(2):
        kw = dict(target_latency=1.0, drafter_latency=c[i], acceptance_rate=a[i], n_tokens=300)
        si = sp.expected_latency("si", lookahead=int(lookahead[i]), **kw)
        dsi = sp.expected_latency("dsi", lookahead=1, **kw)
        assert abs(maps["si/dsi"][i] / (si / dsi) - 1) < 5 * maps["si/dsi se"][i] / maps["si/dsi"][i]
        assert abs(maps["dsi z"][i]) < 5
        assert maps["nonsi/dsi"][i] == pytest.approx(300 / dsi, rel=0.02)
    with pytest.raises(ValueError, match="0 <= a < 1"):
        sp.finite_heatmaps(np.array([0.1]), np.array([1.0]))


def test_pathwise_ratio_finds_the_violation_only_without_the_thread():
    worst = sp.worst_pathwise_ratio(n_settings=20, paths=2000, seed=1)
    assert worst["Ld <= t"] <= 1 + 1e-12 and worst["Ld > t, non-SI thread"] <= 1 + 1e-12
    assert worst["Ld > t"] > 1


def test_paper_table_summaries_follow_their_definitions():
    table = sp.paper_table(n_runs=30, seed=1)
    paper = np.array([row.speedup for row in sp.PAPER_TABLE_1])
    assert table.mean_gap()["idealised"] == pytest.approx(np.mean(paper - table.idealised))
    assert list(table.emulated) == ["none", *sp.PAPER_HANDICAPS]
    inside = sum(low <= p <= high for (low, high), p in zip(table.bands, paper, strict=True))
    assert table.inside_bands() == inside
    assert len(table.text().splitlines()) == len(paper) + 2


def test_symbolic_identities_hold_numerically_too():
    checked, crossover = sp.symbolic_identities(max_lookahead=3)
    assert checked == [True, True, True] and crossover == ["a*t"]
    rng = np.random.default_rng(0)
    for a, d, t, L in zip(rng.uniform(0.05, 0.95, 20), rng.uniform(0.01, 1, 20), rng.uniform(1, 2, 20),
                          rng.integers(1, 7, 20), strict=True):
        s = [sum(a**k for k in range(i)) for i in range(L + 2)]
        gap = (1 - a) / ((1 - a ** (L + 1)) * s[L]) * (t * a ** (L + 1) * s[L] - L * d * (a**L + a ** (L + 1) - 1))
        assert float(sp.si_rate(t, d, a, L) - sp.dsi_rate(t, d, a, L)) == pytest.approx(gap, rel=1e-9, abs=1e-12)
    assert sp.si_rate(1.0, 0.3, 0.3, 1) == pytest.approx(1.0)  # the crossover d = a t at L = 1


def test_theorem_2_grid_is_the_worst_case_over_its_grid():
    worst_finite, worst_rate = sp.theorem_2_grid((0.1, 0.5), (0.3, 0.9), (1, 4), n_tokens=20)
    ratios = [sp.expected_latency("dsi", target_latency=1.0, drafter_latency=c, acceptance_rate=a, lookahead=L,
                                  n_tokens=20)
              / sp.expected_latency("si", target_latency=1.0, drafter_latency=c, acceptance_rate=a, lookahead=L,
                                    n_tokens=20)
              for c in (0.1, 0.5) for a in (0.3, 0.9) for L in (1, 4)]
    assert worst_finite == pytest.approx(max(ratios)) and worst_finite < 1 and worst_rate <= 1e-12


def test_closing_restart_cost_interpolates_the_sign_change():
    table = sp.PaperTable(sp.PAPER_TABLE_1[:1], np.ones(1), {}, np.zeros((1, 2)), [(5, 10)],
                          {0.0: -0.2, 10.0: -0.1, 20.0: 0.1})
    assert table.closing_restart_ms() == pytest.approx(15.0)
    table.restart_gaps = {0.0: -0.2, 10.0: -0.1}
    assert math.isnan(table.closing_restart_ms())


def test_restart_cost_is_paid_by_both_and_the_pipe_wait_by_neither():
    kwargs = dict(target_latency=1.0, drafter_latency=0.1, acceptance_rate=1.0, lookahead=5, n_tokens=90,
                  n_runs=2, sp_degree=7, handicaps=SIMULATOR_RULES)
    for algorithm, base in (("si", 4 * 8.5 + 1), ("dsi", 4 * 3.5 + 1)):
        assert sp.emulate_paper(algorithm, restart_cost=0.5, **kwargs) == pytest.approx([base + 5 * 0.5] * 2)
        assert sp.emulate_paper(algorithm, pipe_wait=3.0, **kwargs) == pytest.approx([base] * 2)
    with pytest.raises(ValueError, match="restart_cost"):
        sp.emulate_paper("si", restart_cost=-1.0, **kwargs)


def test_second_seed_reads_a_clock_that_includes_the_pipe_wait():
    """a = 0.5, N = 60: with a second far longer than a run every epoch reuses the first draw; a pipe
    wait of a second per restart makes every epoch draw afresh (the restart call pays t + Ld + t...)."""
    common = dict(target_latency=1.0, drafter_latency=0.1, acceptance_rate=0.5, lookahead=1, n_tokens=60,
                  n_runs=400, sp_degree=7, seed=5)
    rules = (*SIMULATOR_RULES, "second_seed")
    reused = sp.emulate_paper("si", handicaps=rules, second=1e6, **common)
    fresh = sp.emulate_paper("si", handicaps=rules, second=1.0, pipe_wait=1.0, **common)
    independent = sp.emulate_paper("si", handicaps=SIMULATOR_RULES, **common)
    assert reused.std() > 2 * independent.std()  # one draw per run: latencies spread far more
    assert abs(fresh.mean() - independent.mean()) < 4 * math.hypot(fresh.std(), independent.std()) / 20
