"""The concurrent engine and the tiny language models, against independent truths: the target's own greedy
decode, exact enumerated laws, Monte Carlo frequencies, the latency model's replay, and causality."""
import numpy as np
import pytest
import torch

from theorylab import speculative as sp
from theorylab import speculative_engine as engine
from theorylab import tinylm as tl

VOCAB = 8


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    table = tl.markov_source(VOCAB, 2, 0.3, 0.4, seed=0)
    text = tl.sample_text(table, 300, 24, seed=1)
    target = tl.TinyTransformer(VOCAB, width=16, layers=1, heads=2, max_len=40)
    tl.train_lm(target, text, steps=60, lr=1e-2)
    drafter = tl.BigramLM(VOCAB)
    tl.train_lm(drafter, text, steps=60, lr=5e-2, teacher=target)
    return tl.Scorer(target, "target"), tl.Scorer(drafter, "drafter")


def test_greedy_si_and_dsi_reproduce_the_targets_own_greedy_decode(models):
    target, drafter = models
    for k, prompt in enumerate([[1], [2, 5], [0, 0, 7], [3, 1, 4, 1]]):
        reference = engine.generate("nonsi", target, drafter, prompt, 12).tokens
        manual = list(prompt)
        for _ in range(12):  # the oracle: argmax of the target, one token at a time
            manual.append(int(np.argmax(target(manual)[-1])))
        assert reference == manual[len(prompt):]
        for algorithm in ("si", "dsi"):
            for lookahead in (1, 3):
                for sp_degree in (1, 2, 4):
                    out = engine.generate(algorithm, engine.Jittered(target, seed=k),
                                          engine.Jittered(drafter, seed=k + 1), prompt, 12,
                                          lookahead=lookahead, sp_degree=sp_degree)
                    assert out.tokens == reference, (algorithm, lookahead, sp_degree)


def test_sampled_dsi_output_does_not_depend_on_thread_timing(models):
    target, drafter = models
    outputs = {tuple(engine.generate("dsi", engine.Jittered(target, seed=k), drafter, [1, 2], 10, lookahead=2, sp_degree=p,
                                 temperature=1.0, seed=11).tokens) for k, p in [(0, 1), (1, 3), (2, 2)]}
    assert len(outputs) == 1


def test_residual_rule_commits_the_target_law_and_the_fresh_rule_does_not():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    q = np.array([0.1, 0.2, 0.3, 0.4])
    logp, logq = np.log(p), np.log(q)
    draws = 40_000
    for rule, law in [("residual", p), ("fresh_target", np.minimum(p, q) + (1 - np.minimum(p, q).sum()) * p)]:
        decider = engine.Decider(temperature=1.0, seed=5, rule=rule)
        counts = np.zeros(4)
        for pos in range(draws):
            draft = decider.draft(pos, logq)
            counts[decider.decide(pos, logp, logq, draft)[0]] += 1
        assert engine.goodness_of_fit(counts, law) > 1e-4, rule
        if rule == "fresh_target":
            assert engine.goodness_of_fit(counts, p) < 1e-6


def test_drafts_follow_the_drafter_law():
    q = np.array([0.6, 0.25, 0.1, 0.05])
    decider = engine.Decider(temperature=1.0, seed=2)
    counts = np.bincount([decider.draft(pos, np.log(q)) for pos in range(20_000)], minlength=4)
    assert engine.goodness_of_fit(counts, q) > 1e-4


def test_si_target_passes_equal_the_iterations_of_a_replayed_trace(models):
    target, drafter = models
    prompt = [4, 2]
    out = engine.generate("si", target, drafter, prompt, 20, lookahead=3)
    trace = engine.acceptance_trace(drafter, prompt, out.tokens)
    # with d = 0 and t = 1, SI's latency counts its verification passes
    assert sp.replay("si", trace, target_latency=1.0, drafter_latency=1e-12, lookahead=3) == pytest.approx(out.target_passes)


def test_acceptance_trace_counts_matching_greedy_drafts(models):
    _, drafter = models
    prompt = [3]
    own = engine.generate("nonsi", drafter, drafter, prompt, 6).tokens  # the drafter's own greedy text
    assert list(engine.acceptance_trace(drafter, prompt, own)) == [6, 5, 4, 3, 2, 1]


def test_padded_dsi_is_faster_than_nonsi_and_preempts_stale_tasks(models):
    target, drafter = models
    slow = dict(target_delay=0.02, drafter_delay=0.002)
    nonsi = engine.generate("nonsi", target, drafter, [1], 10, **slow)
    dsi = engine.generate("dsi", target, drafter, [1], 10, lookahead=1, sp_degree=10, **slow)
    assert dsi.tokens == nonsi.tokens
    assert dsi.seconds < nonsi.seconds
    assert nonsi.seconds >= 10 * 0.02


@pytest.mark.parametrize("kwargs,name", [
    (dict(algorithm="fast"), "algorithm"), (dict(lookahead=0), "lookahead"), (dict(sp_degree=0), "sp_degree"),
    (dict(n_tokens=0), "n_tokens"), (dict(target_delay=-1.0), "target_delay"), (dict(rule="first"), "rule"),
    (dict(temperature=-0.5), "temperature"), (dict(prompt=[]), "prompt"),
])
def test_engine_bad_input_names_the_argument(models, kwargs, name):
    target, drafter = models
    call = dict(algorithm="dsi", prompt=[1], n_tokens=3)
    call.update(kwargs)
    with pytest.raises(ValueError, match=name):
        engine.generate(call.pop("algorithm"), target, drafter, call.pop("prompt"), call.pop("n_tokens"), **call)


def test_markov_source_rows_are_distributions_and_text_follows_them():
    table = tl.markov_source(4, 1, 1.0, seed=3)
    np.testing.assert_allclose(table.sum(axis=-1), 1.0)
    text = tl.sample_text(table, 400, 200, seed=4).numpy()
    pairs = np.zeros((4, 4))
    np.add.at(pairs, (text[:, :-1].ravel(), text[:, 1:].ravel()), 1)
    np.testing.assert_allclose(pairs / pairs.sum(axis=1, keepdims=True), table, atol=0.02)


def test_continuation_distribution_is_the_product_of_conditionals(models):
    target, _ = models
    law = tl.continuation_distribution(target, [1, 2], 2)
    assert law.sum() == pytest.approx(1.0)
    x1, x2 = 3, 5
    first = tl.softmax(target([1, 2])[-1])[x1]
    second = tl.softmax(target([1, 2, x1])[-1])[x2]
    assert law[x1, x2] == pytest.approx(first * second, rel=1e-5)  # float32 passes over different lengths


def test_transformer_is_causal(models):
    target, _ = models
    a = target([1, 2, 3, 4])
    b = target([1, 2, 3, 7])
    np.testing.assert_allclose(a[:3], b[:3], atol=1e-5)


def test_training_lowers_the_loss():
    torch.manual_seed(1)
    text = tl.sample_text(tl.markov_source(VOCAB, 1, 0.2, seed=1), 200, 20, seed=2)
    losses = tl.train_lm(tl.TinyTransformer(VOCAB, width=16, layers=1, heads=2, max_len=32), text, steps=80, lr=1e-2)
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])


def test_control_prompt_picks_the_largest_divergence(models):
    target, drafter = models
    candidates = [[a, b] for a in range(VOCAB) for b in range(VOCAB)]
    chosen = engine.control_prompt(target, drafter, candidates)
    assert chosen in candidates


def test_sampled_counts_count_every_draw_and_do_not_depend_on_servers(models):
    target, drafter = models
    one = engine.sampled_counts(target, drafter, [1, 2], 3, 40, lookahead=2, sp_degree=1, seed=3)
    four = engine.sampled_counts(target, drafter, [1, 2], 3, 40, lookahead=1, sp_degree=4, seed=3)
    assert one.shape == (VOCAB,) * 3 and one.sum() == 40
    np.testing.assert_array_equal(one, four)  # decisions keyed by position: same seed, same output
    with pytest.raises(ValueError, match="draws"):
        engine.sampled_counts(target, drafter, [1, 2], 3, 0)
