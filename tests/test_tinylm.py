"""Tests of ``theorylab.tinylm``: Markov sources, tiny language models, scorers and sentence-model helpers.

Oracles: rows of transition tables summing to one; empirical transition frequencies against the table
within binomial tolerances; deterministic (permutation) sources whose text is known exactly; causality of
the transformer checked by perturbing later tokens; losses recomputed by hand on batches whose rows are all
equal (so the random row choice does not matter); brute-force enumeration of the product of conditionals;
stub language models whose accuracy, perplexity, samples and agreement rate are computed by hand."""
from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from theorylab.tinylm import (
    BigramLM,
    Memoized,
    Scorer,
    TinyTransformer,
    TransformerLM,
    agreement_rate,
    continuation_distribution,
    evaluate_lm,
    final_states,
    markov_source,
    right_padded,
    sample_sentences,
    sample_text,
    sentence_prefixes,
    sentence_rows,
    softmax,
    train_lm,
)


def tiny_transformer(vocab: int = 5, seed: int = 0, max_len: int = 12) -> TinyTransformer:
    torch.manual_seed(seed)
    return TinyTransformer(vocab, width=8, layers=1, heads=2, max_len=max_len).eval()


class StubScorer:
    """A causal scorer: row i of the logits is a fixed pseudo-random function of tokens[:i+1]; counts calls."""

    def __init__(self, vocab: int = 3, name: str = "stub"):
        self.vocab, self.name, self.calls = vocab, name, []

    def row(self, prefix):
        return np.random.default_rng([7, len(prefix), *prefix]).normal(size=self.vocab) * 2

    def __call__(self, tokens):
        self.calls.append(tuple(tokens))
        return np.stack([self.row(tokens[:i + 1]) for i in range(len(tokens))])


class TableLM:
    """A sentence model whose next-token law depends on the last token only, through a fixed table."""

    def __init__(self, table: np.ndarray):
        self.table = table

    def next_token_probabilities(self, prefixes):
        return np.stack([self.table[p[-1]] for p in prefixes])


# markov_source -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab, order, weight", [(2, 1, 1.0), (4, 2, 1.0), (3, 3, 0.5), (5, 2, 0.0)])
def test_markov_source_rows_are_probability_distributions_of_the_documented_shape(vocab, order, weight):
    table = markov_source(vocab, order, alpha=0.3, context_weight=weight, seed=1)
    assert table.shape == (vocab,) * (order + 1)
    assert table.min() >= 0
    np.testing.assert_allclose(table.sum(axis=-1), 1.0, atol=1e-12)


def test_markov_source_with_zero_context_weight_depends_on_the_last_token_only():
    table = markov_source(4, order=3, context_weight=0.0, seed=2)
    np.testing.assert_array_equal(table, np.broadcast_to(table[:1, :1], table.shape))


def test_markov_source_is_a_mixture_of_full_context_and_last_token_tables():
    full = markov_source(3, 2, context_weight=1.0, seed=4)
    last = markov_source(3, 2, context_weight=0.0, seed=4)
    np.testing.assert_allclose(markov_source(3, 2, context_weight=0.3, seed=4), 0.3 * full + 0.7 * last, atol=1e-12)


def test_markov_source_small_alpha_gives_peaked_rows():
    # averages over 100 Dirichlet rows: E[max] is about 0.8 for alpha 0.05 and about 0.13 for alpha 100
    peaked = markov_source(10, 2, alpha=0.05, seed=0)
    flat = markov_source(10, 2, alpha=100.0, seed=0)
    assert peaked.max(axis=-1).mean() > 0.6 > 0.2 > flat.max(axis=-1).mean()


def test_markov_source_deterministic_for_a_seed_and_different_across_seeds():
    assert np.array_equal(markov_source(3, seed=5), markov_source(3, seed=5))
    assert not np.array_equal(markov_source(3, seed=5), markov_source(3, seed=6))


@pytest.mark.parametrize("kwargs", [dict(vocab=1), dict(vocab=3, order=0), dict(vocab=3, alpha=0.0),
                                    dict(vocab=3, context_weight=1.5), dict(vocab=3, context_weight=-0.1)])
def test_markov_source_rejects_bad_arguments_with_value_error(kwargs):
    with pytest.raises(ValueError):
        markov_source(**kwargs)


# sample_text ------------------------------------------------------------------------------------------------


def test_sample_text_shape_dtype_and_range():
    text = sample_text(markov_source(4, 2, seed=0), n_sequences=6, length=9, seed=0)
    assert text.shape == (6, 9) and text.dtype == torch.int64
    assert int(text.min()) >= 0 and int(text.max()) < 4


def test_sample_text_of_a_deterministic_source_follows_the_permutation_exactly():
    permutation = np.array([2, 0, 3, 1])
    table = np.eye(4)[permutation]  # P(next = permutation[x] | x) = 1
    text = sample_text(table, n_sequences=20, length=10, seed=3).numpy()
    assert np.array_equal(text[:, 1:], permutation[text[:, :-1]])


def test_sample_text_empirical_transition_frequencies_match_the_table():
    table = markov_source(3, order=2, alpha=5.0, seed=0)
    assert table.min() > 0.02  # keeps the normal approximation of every binomial cell valid
    text = sample_text(table, n_sequences=300, length=40, seed=1).numpy()
    counts = np.zeros_like(table)
    for a, b, c in zip(text[:, :-2].ravel(), text[:, 1:-1].ravel(), text[:, 2:].ravel(), strict=True):
        counts[a, b, c] += 1
    n_context = counts.sum(axis=-1, keepdims=True)
    assert n_context.min() > 500
    # each cell is binomial(n_context, p): 5 standard errors sqrt(p(1-p)/n_context)
    tolerance = 5 * np.sqrt(table * (1 - table) / n_context)
    assert np.all(np.abs(counts / n_context - table) < tolerance)


def test_sample_text_starts_with_uniform_tokens():
    text = sample_text(markov_source(4, order=2, seed=0), n_sequences=2000, length=3, seed=2).numpy()
    counts = np.bincount(text[:, :2].ravel(), minlength=4)
    # 4000 uniform draws over 4 tokens: binomial(4000, 1/4) per token, 5 standard errors
    assert np.all(np.abs(counts - 1000) < 5 * math.sqrt(4000 * 0.25 * 0.75))


def test_sample_text_never_takes_a_zero_probability_transition():
    table = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.3, 0.0, 0.7]])
    text = sample_text(table, n_sequences=100, length=30, seed=0).numpy()
    assert np.all(table[text[:, :-1], text[:, 1:]] > 0)


def test_sample_text_deterministic_for_a_seed_and_different_across_seeds():
    table = markov_source(3, seed=0)
    assert torch.equal(sample_text(table, 4, 10, seed=1), sample_text(table, 4, 10, seed=1))
    assert not torch.equal(sample_text(table, 4, 10, seed=1), sample_text(table, 4, 10, seed=2))


@pytest.mark.parametrize("n_sequences, length", [(3, 2), (3, 1), (0, 5)])
def test_sample_text_rejects_short_length_or_no_sequences_with_value_error(n_sequences, length):
    with pytest.raises(ValueError):
        sample_text(markov_source(3, order=2), n_sequences, length)


# TinyTransformer / BigramLM ----------------------------------------------------------------------------------------


def test_tiny_transformer_output_and_hidden_shapes():
    model = tiny_transformer(vocab=5)
    tokens = torch.tensor([[0, 1, 2, 3], [4, 4, 0, 1]])
    assert model(tokens).shape == (2, 4, 5)
    assert model.hidden(tokens).shape == (2, 4, 8)
    torch.testing.assert_close(model(tokens), model.head(model.hidden(tokens)))


def test_tiny_transformer_is_causal_later_tokens_do_not_change_earlier_outputs():
    model = tiny_transformer(vocab=5)
    tokens = torch.tensor([[0, 1, 2, 3, 4, 0]])
    changed = tokens.clone()
    changed[0, 3:] = torch.tensor([1, 1, 1])
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_tiny_transformer_rejects_too_long_sequences_and_bad_head_count_with_value_error():
    model = tiny_transformer(max_len=4)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        TinyTransformer(5, width=10, heads=4)


def test_bigram_lm_logits_are_the_table_row_of_the_current_token():
    torch.manual_seed(0)
    model = BigramLM(4)
    tokens = torch.tensor([[3, 0, 2]])
    assert torch.equal(model(tokens)[0], model.table.weight[[3, 0, 2]])
    assert model.vocab == 4 and model.max_len >= 1 << 20


# train_lm -----------------------------------------------------------------------------------------------------------


def test_train_lm_first_loss_is_cross_entropy_of_the_initial_model_skipping_ignored_targets():
    torch.manual_seed(0)
    model = BigramLM(4)
    initial = copy.deepcopy(model)
    text = torch.tensor([[1, 2, 3, 0, 0]]).repeat(5, 1)  # identical rows: the random row choice does not matter
    losses = train_lm(model, text, steps=1, batch=3, lr=1e-3, ignore_index=0)
    log_p = torch.log_softmax(initial.table.weight.detach().double(), dim=-1)
    expected = -(log_p[1, 2] + log_p[2, 3]) / 2  # targets 0 (padding) are skipped
    assert losses[0] == pytest.approx(float(expected), rel=1e-5)


def test_train_lm_distillation_loss_is_mean_kl_per_position_and_zero_against_itself():
    torch.manual_seed(0)
    student, teacher = BigramLM(3), BigramLM(3)
    text = torch.tensor([[0, 1, 2, 2]]).repeat(4, 1)
    p = torch.softmax(teacher.table.weight.detach().double(), dim=-1)
    q = torch.softmax(student.table.weight.detach().double(), dim=-1)
    kl = (p * (p.log() - q.log())).sum(dim=-1)
    expected = float(kl[[0, 1, 2]].mean())
    losses = train_lm(student, text, steps=1, batch=2, teacher=teacher)
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert train_lm(copy.deepcopy(teacher), text, steps=1, batch=2, teacher=teacher)[0] == pytest.approx(0.0, abs=1e-7)


def test_train_lm_learns_a_deterministic_source_and_leaves_the_model_in_eval_mode():
    permutation = np.array([1, 2, 3, 0])
    text = sample_text(np.eye(4)[permutation], n_sequences=16, length=8, seed=0)
    torch.manual_seed(0)
    model = BigramLM(4)
    losses = train_lm(model, text, steps=60, batch=8, lr=0.1)
    assert len(losses) == 60 and all(isinstance(v, float) for v in losses)
    assert losses[-1] < 0.1 * losses[0]
    assert model.table.weight.argmax(dim=1).tolist() == permutation.tolist()
    assert not model.training


def test_train_lm_deterministic_for_a_seed_and_different_across_seeds():
    text = sample_text(markov_source(4, order=1, seed=0), n_sequences=20, length=6, seed=0)

    def run(seed):
        torch.manual_seed(0)
        return train_lm(BigramLM(4), text, steps=3, batch=2, seed=seed)

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize("steps, batch", [(0, 2), (2, 0)])
def test_train_lm_rejects_non_positive_steps_or_batch_with_value_error(steps, batch):
    with pytest.raises(ValueError):
        train_lm(BigramLM(3), torch.zeros(2, 4, dtype=torch.long), steps=steps, batch=batch)


# Scorer / Memoized ------------------------------------------------------------------------------------------------


def test_scorer_returns_float64_logits_of_every_position_equal_to_the_model():
    model = tiny_transformer(vocab=5)
    scorer = Scorer(model, name="target")
    logits = scorer([1, 2, 3])
    assert logits.shape == (3, 5) and logits.dtype == np.float64
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(torch.tensor([[1, 2, 3]]))[0].double().numpy(), rtol=1e-6)
    assert scorer.vocab == 5 and scorer.name == "target" and not scorer.model.training


def test_scorer_rejects_an_empty_sequence_with_value_error_naming_the_model():
    with pytest.raises(ValueError, match="drafter"):
        Scorer(BigramLM(3), name="drafter")([])


def test_memoized_returns_the_scorer_values_and_calls_it_once_per_context():
    stub = StubScorer(vocab=3)
    memo = Memoized(stub)
    assert memo.vocab == 3 and memo.name == "stub"
    contexts = [[0], [0, 1], [0], (0, 1), [2, 2, 2], [0, 1]]
    for context in contexts:
        np.testing.assert_array_equal(memo(context), StubScorer(3)(list(context)))
    assert sorted(stub.calls) == sorted({(0,), (0, 1), (2, 2, 2)})


# softmax ------------------------------------------------------------------------------------------------------------


def test_softmax_matches_closed_form_and_sums_to_one():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(softmax(logits), expected, rtol=1e-14)
    np.testing.assert_allclose(softmax(logits, temperature=2.0)[0], np.exp([0.5, 1, 1.5]) / np.exp([0.5, 1, 1.5]).sum())
    assert softmax(logits).dtype == np.float64


def test_softmax_is_stable_for_huge_logits_and_sharpens_at_low_temperature():
    probabilities = softmax(np.array([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(probabilities, [0.5, 0.5, 0.0], atol=1e-300)
    np.testing.assert_allclose(softmax(np.array([1.0, 2.0]), temperature=1e-3), [0.0, 1.0], atol=1e-300)
    np.testing.assert_allclose(softmax(np.array([1.0, 2.0]), temperature=1e6), [0.5, 0.5], atol=1e-6)


# continuation_distribution -------------------------------------------------------------------------------------------


def brute_force_law(scorer, prompt, length, temperature):
    law = np.zeros((scorer.vocab,) * length)
    for continuation in itertools.product(range(scorer.vocab), repeat=length):
        probability = 1.0
        for i, token in enumerate(continuation):
            context = [*prompt, *continuation[:i]]
            probability *= softmax(scorer(context)[-1], temperature)[token]
        law[continuation] = probability
    return law


@pytest.mark.parametrize("length, temperature", [(1, 1.0), (2, 1.0), (3, 0.7)])
def test_continuation_distribution_equals_brute_force_product_of_conditionals(length, temperature):
    scorer = StubScorer(vocab=3)
    law = continuation_distribution(scorer, [1, 0], length, temperature)
    assert law.shape == (3,) * length
    np.testing.assert_allclose(law, brute_force_law(StubScorer(3), [1, 0], length, temperature), rtol=1e-12)
    assert law.sum() == pytest.approx(1.0, abs=1e-12)


def test_continuation_distribution_of_a_tiny_transformer_sums_to_one():
    scorer = Scorer(tiny_transformer(vocab=3))
    law = continuation_distribution(scorer, [2], 2)
    np.testing.assert_allclose(law, brute_force_law(scorer, [2], 2, 1.0), rtol=1e-6)
    assert law.sum() == pytest.approx(1.0, abs=1e-12)


# padding helpers ------------------------------------------------------------------------------------------------------


def test_right_padded_hand_case():
    batch, lengths = right_padded([[5, 6, 7], [8], [9, 10]], pad=0)
    assert batch.dtype == torch.long
    assert batch.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert lengths.tolist() == [3, 1, 2]
    assert right_padded([[1], [2, 3]], pad=-1)[0].tolist() == [[1, -1], [2, 3]]


def test_sentence_rows_prepend_bos_and_right_pad():
    assert sentence_rows([[4, 5], [6]], bos=1, pad=0).tolist() == [[1, 4, 5], [1, 6, 0]]


def test_sentence_prefixes_hand_case():
    prefixes, targets = sentence_prefixes([[4, 5], [6]], bos=1)
    assert prefixes == [[1], [1, 4], [1]]
    assert targets.tolist() == [4, 5, 6]


# TransformerLM / final_states ----------------------------------------------------------------------------------------


def test_transformer_lm_padding_is_invisible_and_rows_are_distributions():
    model = tiny_transformer(vocab=6)
    lm = TransformerLM(model)
    prefixes = [[1, 2, 3, 4], [5], [2, 2]]
    probabilities = lm.next_token_probabilities(prefixes)
    assert probabilities.shape == (3, 6) and probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    with torch.no_grad():
        for row, prefix in zip(probabilities, prefixes, strict=True):
            alone = torch.softmax(model(torch.tensor([prefix]))[0, -1].double(), dim=-1).numpy()
            np.testing.assert_allclose(row, alone, rtol=1e-5, atol=1e-7)


def test_transformer_lm_vocabulary_size_drops_extra_tokens_and_renormalises():
    model = tiny_transformer(vocab=6)
    full = TransformerLM(model).next_token_probabilities([[1, 2]])
    cut = TransformerLM(model, vocabulary_size=4).next_token_probabilities([[1, 2]])
    assert cut.shape == (1, 4)
    np.testing.assert_allclose(cut, full[:, :4] / full[:, :4].sum(), rtol=1e-10)


def test_final_states_are_the_hidden_state_at_each_last_token_independent_of_batching():
    model = tiny_transformer(vocab=5)
    sequences = [[1, 2, 3], [4], [0, 1, 2, 3, 4], [2, 2]]
    states = final_states(model, sequences)
    assert states.shape == (4, 8)
    with torch.no_grad():
        for state, sequence in zip(states, sequences, strict=True):
            np.testing.assert_allclose(state, model.hidden(torch.tensor([sequence]))[0, -1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final_states(model, sequences, batch=1), states, rtol=1e-5, atol=1e-6)


# evaluate_lm / sample_sentences / agreement_rate ------------------------------------------------------------------------


def test_evaluate_lm_accuracy_and_perplexity_by_hand():
    # bos = 0; after 0 -> token 1 w.p. 0.75; after 1 -> 2 w.p. 0.5 and 1 w.p. 0.5 (argmax ties go to 1)
    table = np.array([[0.0, 0.75, 0.25], [0.0, 0.5, 0.5], [0.2, 0.6, 0.2]])
    sentences = [[1, 2], [2, 1]]
    # contexts/targets: (0->1) 0.75 right, (1->2) 0.5 wrong, (0->2) 0.25 wrong, (2->1) 0.6 right
    result = evaluate_lm(TableLM(table), sentences, bos=0)
    assert result["accuracy"] == 0.5
    assert result["perplexity"] == pytest.approx(math.exp(-(math.log(0.75) + math.log(0.5) + math.log(0.25) + math.log(0.6)) / 4))
    assert evaluate_lm(TableLM(table), sentences, bos=0, batch=1) == result


def test_evaluate_lm_of_a_uniform_model_has_perplexity_equal_to_the_vocabulary_size():
    result = evaluate_lm(TableLM(np.full((5, 5), 0.2)), [[1, 2, 3], [4, 4]], bos=0, batch=2)
    assert result["perplexity"] == pytest.approx(5.0)


def test_sample_sentences_of_a_deterministic_model_stop_at_stop_or_max_length():
    # 0 (bos) -> 1 -> 2 -> 3 (stop); a second model loops 1 -> 1 forever
    chain = np.eye(4)[[1, 2, 3, 3]]
    assert sample_sentences(TableLM(chain), 3, bos=0, stop=3) == [[1, 2, 3]] * 3
    loop = np.eye(4)[[1, 1, 1, 1]]
    assert sample_sentences(TableLM(loop), 2, bos=0, stop=3, max_length=5) == [[1, 1, 1, 1, 1]] * 2


def test_sample_sentences_first_token_frequencies_match_the_model():
    table = np.array([[0.0, 0.2, 0.8], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    n = 2000
    samples = sample_sentences(TableLM(table), n, bos=0, stop=2, seed=0)
    ones = sum(s[0] == 1 for s in samples)
    assert abs(ones - 0.2 * n) < 5 * math.sqrt(n * 0.2 * 0.8)  # binomial, 5 standard errors
    assert all(s[-1] == 2 and len(s) <= 2 for s in samples)
    assert sample_sentences(TableLM(table), 50, bos=0, stop=2, seed=1) == sample_sentences(TableLM(table), 50, 0, 2, seed=1)
    assert sample_sentences(TableLM(table), 50, bos=0, stop=2, seed=1) != sample_sentences(TableLM(table), 50, 0, 2, seed=2)


def test_agreement_rate_counts_items_where_agreeing_verbs_get_more_mass():
    # the stub reads the last prefix token: after 1 the mass is on token 3, after 2 on token 4
    table = np.zeros((5, 5))
    table[:, 0] = 1.0
    table[1] = [0.0, 0.0, 0.0, 0.7, 0.3]
    table[2] = [0.0, 0.0, 0.0, 0.1, 0.9]
    items = [([1], [3], [4]), ([2], [3], [4]), ([2], [4], [3]), ([1], [3, 4], [0])]
    assert agreement_rate(TableLM(table), items, bos=0) == pytest.approx(3 / 4)
