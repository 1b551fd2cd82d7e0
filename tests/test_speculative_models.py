"""The real-model path of the speculative chapter, on a tiny random Llama pair saved and loaded through
``transformers`` exactly as downloaded weights are (no network)."""
import json
import threading
import time

import numpy as np
import pytest
import torch

from theorylab import speculative as sp
from theorylab import speculative_engine as engine
from theorylab import speculative_models as sm
from theorylab.data import DatasetUnavailable


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("pair")
    path = sm.write_fake_alpaca(folder, seed=3)
    sm.quiet_transformers()
    files = sm.write_tiny_pair(folder / "pair", sm.alpaca_prompts(path, 40, seed=1), seed=0)
    target, drafter, tokenizer = sm.load_pair(files)
    prompts = sm.encode(tokenizer, sm.alpaca_prompts(path, 3, seed=0))
    return target, drafter, tokenizer, prompts


def test_alpaca_reader_round_trip(tmp_path):
    records = [{"instruction": f"Say {k}.", "input": "loudly" if k == 2 else "", "output": "x"} for k in range(5)]
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(records))
    texts = sm.alpaca_prompts(path, 5, seed=0, template="<{instruction}>")
    assert sorted(texts) == sorted(["<Say 0.>", "<Say 1.>", "<Say 2.\nloudly>", "<Say 3.>", "<Say 4.>"])
    assert sm.alpaca_prompts(path, 2, seed=7) == sm.alpaca_prompts(path, 2, seed=7)
    with pytest.raises(ValueError, match="holds 5"):
        sm.alpaca_prompts(path, 6)


def test_alpaca_offline_says_what_to_do(tmp_path):
    with pytest.raises(DatasetUnavailable, match="alpaca_data.json"):
        sm.ensure_alpaca(tmp_path, download=False)
    sm.write_fake_alpaca(tmp_path)
    assert sm.ensure_alpaca(tmp_path, download=False).exists()


def test_missing_weights_offline_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("THEORYLAB_DATA", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetUnavailable, match="hf download"):
        sm.load_pair(sm.ModelPair(str(tmp_path / "absent-target"), str(tmp_path / "absent-drafter"), "t", "d"),
                     download=False)


def test_tokenizer_and_scorer_agree_with_the_model(pair):
    target, drafter, tokenizer, prompts = pair
    assert tokenizer.decode(prompts[0], skip_special_tokens=True).split()[:3] == ["A", "chat", "between"]
    with torch.no_grad():
        logits = target.model(torch.tensor([prompts[0]])).logits[0].double().numpy()
    scored = target(prompts[0])
    assert len(scored) == len(prompts[0])
    np.testing.assert_allclose(scored[-1], logits[-1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.stack(list(scored[3:6])), logits[3:6], rtol=1e-6, atol=1e-6)
    # the drafter is the target's first layer: same embeddings, different (fewer) layers
    assert torch.equal(drafter.model.model.embed_tokens.weight, target.model.model.embed_tokens.weight)
    assert not np.allclose(drafter(prompts[0])[-1], scored[-1])


def test_greedy_speculation_is_lossless_on_the_real_model_path(pair):
    target, drafter, _, prompts = pair
    with engine.Workers(4) as workers:
        for prompt in prompts:
            reference = engine.generate("nonsi", target, drafter, prompt, 10).tokens
            for algorithm, L, P in (("si", 3, 1), ("dsi", 1, 3), ("dsi", 3, 2)):
                out = engine.generate(algorithm, target, drafter, prompt, 10, lookahead=L, sp_degree=P,
                                      workers=workers)
                assert out.tokens == reference
                assert sm.first_flip(target, prompt, reference, out.tokens) is None


def test_first_flip_names_position_margin_and_cause(pair):
    target, _, _, prompts = pair
    prompt = prompts[0]
    reference = engine.generate("nonsi", target, target, prompt, 6).tokens
    row = target(prompt + reference[:2])[-1]
    second = int(np.argsort(row)[-2])
    wrong = reference[:2] + [second] + reference[3:]
    flip = sm.first_flip(target, prompt, reference, wrong)
    assert flip["position"] == 2
    assert flip["margin"] == pytest.approx(np.sort(row)[-1] - np.sort(row)[-2])
    assert not flip["explained"]  # the target never puts the runner-up first: not a rounding flip


def test_workers_too_few_threads_refused(pair):
    target, drafter, _, prompts = pair
    with engine.Workers(2) as workers, pytest.raises(ValueError, match="needs 4 threads"):
        engine.generate("dsi", target, drafter, prompts[0], 4, sp_degree=3, workers=workers)


class Sleeper:
    """A scorer that holds its thread for ``seconds`` (releasing the interpreter, like a GPU kernel)."""

    def __init__(self, seconds):
        self.seconds, self.calls, self.lock = seconds, 0, threading.Lock()

    def __call__(self, tokens):
        with self.lock:
            self.calls += 1
        time.sleep(self.seconds)


def test_concurrent_pass_seconds_of_passes_that_overlap():
    scorer = Sleeper(0.02)
    with engine.Workers(4) as workers:
        seconds = sm.concurrent_pass_seconds([scorer], [1, 2], 4, workers, repeats=3)
        with pytest.raises(ValueError, match="need 5 threads"):
            sm.concurrent_pass_seconds([scorer], [1, 2], 5, workers)
    assert scorer.calls == 4 * (1 + 3)
    assert 0.02 <= seconds < 0.03  # sleeps overlap: t(4) = t(1)


def test_plan_runs_against_brute_force():
    t_of = {1: 0.03, 2: 0.035, 3: 0.05, 4: 0.07}
    d, a, n = 0.004, 0.6, 50
    plans = sm.plan_runs(t_of, d, a, n)
    si = {L: sp.expected_latency("si", target_latency=0.03, drafter_latency=d, acceptance_rate=a,
                                 lookahead=L, n_tokens=n) for L in range(1, 11)}
    assert plans["si"] == dict(lookahead=min(si, key=si.get))
    best = None
    for L in (1, 5, 10):
        P = min(int(np.ceil(0.03 / (L * d) - 1e-12)), 4)
        latency = sp.expected_latency("dsi", target_latency=t_of[P], drafter_latency=d, acceptance_rate=a,
                                      lookahead=L, n_tokens=n, sp_degree=P)
        best = min(best or (latency, L, P), (latency, L, P))
    assert plans["dsi"] == dict(lookahead=best[1], sp_degree=best[2])


def test_predictions_of_non_si_are_n_t_and_summary_ratios():
    item = sm.PromptRun([1], {a: engine.GenerationResult(a, [], s) for a, s in
                              (("nonsi", 1.0), ("si", 0.5), ("dsi", 0.4))}, np.array([1, 0, 2, 0]))
    t_of, plans = {1: 0.25, 2: 0.3}, {"nonsi": dict(lookahead=1), "si": dict(lookahead=2),
                                      "dsi": dict(lookahead=1, sp_degree=2)}
    out = sm.predictions(item, t_of, 0.05, plans, 4)
    assert out["nonsi"]["iid_constant_t"] == pytest.approx(4 * 0.25)
    assert out["nonsi"]["replay_measured_t"] == pytest.approx(4 * 0.25)
    assert out["dsi"]["iid_measured_t"] > out["dsi"]["iid_constant_t"]  # t(2) > t(1)
    means = sm.summary([item, item], t_of, 0.05, plans, 4)
    assert means["dsi"]["speedup_measured"] == pytest.approx(2.5)
    assert "speedup of dsi" in sm.summary_text(means, plans)


def test_control_power_against_simulated_tests():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8))
    q = rng.dirichlet(np.ones(8))
    b = engine.fresh_target_law(p, q)
    assert b.sum() == pytest.approx(1) and np.all(b >= np.minimum(p, q) - 1e-15)
    draws, level = 150, 0.01
    rejected = np.mean([engine.goodness_of_fit(rng.multinomial(draws, b), p) < level for _ in range(2000)])
    assert abs(sm.control_power(p, q, draws, level=level) - rejected) < 0.05
    assert sm.control_power(p, p, draws, level=level) == pytest.approx(level, abs=1e-9)


def test_sampling_test_accepts_the_residual_rule(pair):
    target, drafter, _, prompts = pair
    with engine.Workers(3) as workers:
        result = sm.sampling_test(target, drafter, prompts[0], 600, lookahead=1, sp_degree=2, seed=11,
                                  workers=workers)
    assert result["residual"] > 1e-3
    assert 0 <= result["control_power"] <= 1


def test_prefetch_offline_stops_before_work(tmp_path, monkeypatch):
    monkeypatch.setenv("THEORYLAB_DATA", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sm.prefetch(dict(model_pair="none", real_prompts=20))  # nothing to fetch
    with pytest.raises(DatasetUnavailable, match="alpaca"):
        sm.prefetch(dict(model_pair="vicuna-7b", real_prompts=20))
    sm.write_fake_alpaca(tmp_path)
    with pytest.raises(DatasetUnavailable, match="hf download lmsys/vicuna-7b-v1.3"):
        sm.prefetch(dict(model_pair="vicuna-7b", real_prompts=20))


def test_box_names_the_downloads():
    from theorylab import chapters

    text = chapters.full_profile_text("speculative-inference")
    assert "Alpaca instructions" in text and "Vicuna-68M" in text and "stops before any work" in text


def test_goodness_of_fit_refuses_a_test_with_one_cell():
    law = np.full(50, 1 / 50)
    with pytest.raises(ValueError, match="needs more draws"):
        engine.goodness_of_fit(np.bincount(np.arange(40) % 50, minlength=50), law)
