"""Tests of ``theorylab.data``: the generated and shipped data sets the chapters use.

Oracles: the documented shapes, dtypes and ranges; standardisation statistics recomputed from the raw
scikit-learn digits; exact grammar probabilities computed by hand and by enumerating the whole finite
language (which must sum to one); an independent recursive evaluator for Boolean expressions; the
closed-form per-token entropy of a grammar with two sentence probabilities; and binomial / Gaussian
tolerances (stated where used) for every statistical check, with fixed seeds."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import math
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from theorylab import data as data_module
from theorylab.data import (
    BOOLEAN_TOKENS,
    ClassPopulation,
    Grammar,
    Split,
    boolean_expressions,
    class_images,
    digits,
    gaussian_mixture,
    gaussian_two_class,
)

# Split / digits ------------------------------------------------------------------------------------


def test_split_n_classes_is_largest_training_label_plus_one():
    split = Split(torch.zeros(3, 2), torch.tensor([0, 4, 2]), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert split.n_classes == 5


def test_split_is_frozen():
    split = Split(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1))
    with pytest.raises(AttributeError):
        split.x_train = torch.ones(1)


@pytest.fixture(scope="module")
def raw_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def test_digits_default_split_shapes_dtypes_and_partition_of_all_samples(raw_digits):
    x_raw, y_raw = raw_digits
    split = digits(n_train=1000, seed=0, standardize=False)
    assert split.x_train.shape == (1000, 64) and split.x_test.shape == (797, 64)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.n_classes == 10
    # train and test together are a permutation of the shipped samples (compare sorted rows with labels)
    ours = np.concatenate([np.c_[split.x_train.numpy(), split.y_train.numpy()],
                           np.c_[split.x_test.numpy(), split.y_test.numpy()]])
    theirs = np.c_[x_raw, y_raw]
    assert np.array_equal(ours[np.lexsort(ours.T[::-1])], theirs[np.lexsort(theirs.T[::-1])])
    assert float(split.x_train.min()) >= 0 and float(split.x_train.max()) <= 16


def test_digits_standardize_uses_training_mean_and_std_with_epsilon(raw_digits):
    raw = digits(n_train=500, seed=3, standardize=False)
    standard = digits(n_train=500, seed=3)
    mean, sd = raw.x_train.mean(dim=0), raw.x_train.std(dim=0, unbiased=False)
    torch.testing.assert_close(standard.x_train, (raw.x_train - mean) / (sd + 1e-3), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(standard.x_test, (raw.x_test - mean) / (sd + 1e-3), rtol=1e-4, atol=1e-4)
    assert float(standard.x_train.mean(dim=0).abs().max()) < 1e-4


def test_digits_unit_interval_divides_by_sixteen_and_images_reshape():
    raw = digits(n_train=100, seed=1, standardize=False)
    unit = digits(n_train=100, seed=1, standardize=False, unit_interval=True, images=True)
    assert unit.x_train.shape == (100, 1, 8, 8)
    torch.testing.assert_close(unit.x_train.reshape(100, 64), raw.x_train / 16.0)
    assert 0 <= float(unit.x_test.min()) and float(unit.x_test.max()) <= 1


def test_digits_all_samples_for_training_leaves_empty_test_set():
    split = digits(n_train=1797, standardize=False)
    assert split.x_test.shape == (0, 64) and split.y_test.shape == (0,)


def test_digits_seed_controls_the_shuffle():
    a, b, c = (digits(n_train=50, seed=s, standardize=False) for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("kwargs", [dict(n_train=0), dict(n_train=1798), dict(standardize=True, unit_interval=True)])
def test_digits_rejects_bad_arguments_with_value_error(kwargs):
    with pytest.raises(ValueError):
        digits(**kwargs)


# class_images ------------------------------------------------------------------------------------------


def test_class_images_shapes_dtypes_and_label_range():
    split = class_images(n_classes=3, n_train=20, n_test=7, size=8, seed=0)
    assert split.x_train.shape == (20, 1, 8, 8) and split.x_test.shape == (7, 1, 8, 8)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert set(split.y_train.tolist()) <= {0, 1, 2}


def test_class_images_without_noise_are_the_unit_variance_prototype_of_their_class():
    split = class_images(n_classes=3, n_train=30, n_test=5, size=16, noise=0.0, seed=2)
    x, y = torch.cat([split.x_train, split.x_test]), torch.cat([split.y_train, split.y_test])
    for k in range(3):
        members = x[y == k]
        assert len(members) > 0
        assert torch.equal(members, members[:1].expand_as(members))
        assert float(members[0].double().std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert not torch.equal(x[y == 0][0], x[y == 1][0])


def test_class_images_prototypes_are_smooth_neighbouring_pixels_are_correlated():
    split = class_images(n_classes=4, n_train=8, n_test=1, size=32, noise=0.0, seed=0)
    image = split.x_train[:, 0].double()
    # a Gaussian blur of width size/8 = 4 pixels makes neighbours nearly equal; white noise would give correlation ~0
    correlation = float((image[:, :, 1:] * image[:, :, :-1]).mean() / (image ** 2).mean())
    assert correlation > 0.9


def test_class_images_noise_adds_white_noise_of_the_given_standard_deviation():
    clean = class_images(n_classes=2, n_train=200, n_test=1, size=8, noise=0.0, seed=5)
    noisy = class_images(n_classes=2, n_train=200, n_test=1, size=8, noise=0.5, seed=5)
    prototypes = {k: clean.x_train[clean.y_train == k][0] for k in (0, 1)}
    residual = torch.stack([noisy.x_train[i] - prototypes[int(noisy.y_train[i])] for i in range(200)]).double()
    # same prototypes (drawn first from the seed); sample std of n=12800 Gaussians: SE = 0.5/sqrt(2n), allow 5
    assert abs(float(residual.std()) - 0.5) < 5 * 0.5 / math.sqrt(2 * residual.numel())


def test_class_images_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = (class_images(2, 5, 2, 8, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("kwargs", [dict(n_classes=0), dict(n_train=0), dict(n_test=0), dict(size=0), dict(noise=-1.0)])
def test_class_images_rejects_bad_arguments_with_value_error(kwargs):
    with pytest.raises(ValueError):
        class_images(**kwargs)


# Grammar ---------------------------------------------------------------------------------------------------


def test_grammar_vocabulary_has_33_distinct_word_types_and_an_inverse_index():
    grammar = Grammar()
    assert len(grammar.vocabulary) == 33 == len(set(grammar.vocabulary))
    assert all(grammar.vocabulary[grammar.index[w]] == w for w in grammar.vocabulary)
    assert grammar.STOP in grammar.vocabulary


def test_grammar_log_prob_of_hand_computed_sentences():
    pa, pc = 0.3, 0.2
    grammar = Grammar(p_adjective=pa, p_clause=pc)
    # number 1/2, det 1/2, no adjective, noun 1/6, no clause, intransitive 1/2, verb 1/3
    simple = 0.5 * 0.5 * (1 - pa) * (1 / 6) * (1 - pc) * 0.5 * (1 / 3)
    assert grammar.log_prob(["the", "dog", "sleeps", "."]) == pytest.approx(math.log(simple))
    adjective = 0.5 * 0.5 * (pa / 4) * (1 / 6) * (1 - pc) * 0.5 * (1 / 3)
    assert grammar.log_prob(["a", "red", "fox", "runs", "."]) == pytest.approx(math.log(adjective))
    # relative clause: "that" (pc), inner number 1/2, inner NP (det, no adj, noun; no clause inside), inner verb 1/3
    inner = 0.5 * (1 - pa) * (1 / 6)
    clause = 0.5 * 0.5 * (1 - pa) * (1 / 6) * pc * 0.5 * inner * (1 / 3) * 0.5 * (1 / 3)
    assert grammar.log_prob(["the", "dog", "that", "the", "cats", "chase", "sleeps", "."]) == pytest.approx(math.log(clause))
    # transitive: verb 1/2 * 1/3, object number 1/2, object NP with its own no-clause factor
    transitive = 0.5 * 0.5 * (1 - pa) * (1 / 6) * (1 - pc) * 0.5 * (1 / 3) * 0.5 * 0.5 * (1 - pa) * (1 / 6) * (1 - pc)
    assert grammar.log_prob(["some", "birds", "see", "the", "boy", "."]) == pytest.approx(math.log(transitive))


@pytest.mark.parametrize("sentence", [
    ["the", "dogs", "sleeps", "."],         # agreement of the main verb
    ["a", "dogs", "sleep", "."],            # determiner of the wrong number
    ["the", "dog", "sleeps"],               # no stop token
    ["the", "dog", "sleeps", ".", "."],     # trailing tokens
    ["the", "dog", "that", "the", "cats", "chases", "sleeps", "."],  # agreement inside the clause
    ["the", "dog", "that", "the", "cat", "that", "a", "fox", "sees", "sees", "runs", "."],  # nested clause
    ["the", "dog", "chases", "."],          # transitive verb without object
    [],
])
def test_grammar_ungrammatical_sentences_have_log_prob_minus_infinity(sentence):
    grammar = Grammar()
    assert grammar.log_prob(sentence) == -math.inf
    assert not grammar.is_grammatical(sentence)


def enumerate_language(grammar: Grammar):
    """Every sentence of a grammar without relative clauses (p_clause = 0)."""

    def noun_phrases(number):
        for det in grammar.DETERMINERS[number]:
            for adjective in (None, *grammar.ADJECTIVES):
                for noun in grammar.NOUNS[number]:
                    yield [det, noun] if adjective is None else [det, adjective, noun]

    for number in ("sg", "pl"):
        for subject in noun_phrases(number):
            for verb in grammar.INTRANSITIVE[number]:
                yield [*subject, verb, "."]
            for verb in grammar.TRANSITIVE[number]:
                for other in ("sg", "pl"):
                    for obj in noun_phrases(other):
                        yield [*subject, verb, *obj, "."]


def test_grammar_probabilities_of_the_whole_language_without_clauses_sum_to_one():
    grammar = Grammar(p_adjective=0.3, p_clause=0.0)
    sentences = list(enumerate_language(grammar))
    assert len(sentences) == 2 * 60 * (3 + 3 * 120)
    total = math.fsum(math.exp(grammar.log_prob(s)) for s in sentences)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_grammar_samples_are_grammatical_and_end_with_the_stop_token():
    grammar = Grammar(p_adjective=0.5, p_clause=0.5)
    sentences = grammar.sample(300, seed=0)
    assert len(sentences) == 300
    assert all(s[-1] == "." and "." not in s[:-1] for s in sentences)
    assert all(grammar.is_grammatical(s) for s in sentences)
    assert any("that" in s for s in sentences) and any(w in grammar.ADJECTIVES for s in sentences for w in s)


def test_grammar_sample_is_deterministic_for_a_seed_and_differs_across_seeds():
    grammar = Grammar()
    assert grammar.sample(20, seed=4) == grammar.sample(20, seed=4)
    assert grammar.sample(20, seed=4) != grammar.sample(20, seed=5)


def test_grammar_sample_frequencies_match_exact_probabilities():
    grammar = Grammar(p_adjective=0.0, p_clause=0.0)
    n = 3000
    sentences = grammar.sample(n, seed=0)
    # without adjectives or clauses, P(intransitive) = 1/2 and P("the dog sleeps .") = 1/2*1/2*1/6*1/2*1/3 = 1/144
    for count, p in ((sum(len(s) == 4 for s in sentences), 0.5),
                     (sum(s == ["the", "dog", "sleeps", "."] for s in sentences), 1 / 144)):
        # binomial count: 5 standard errors sqrt(n p (1-p))
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p))


def test_grammar_clause_and_adjective_rates_match_their_probabilities():
    grammar = Grammar(p_adjective=0.3, p_clause=0.2)
    n = 2000
    sentences = grammar.sample(n, seed=1)
    # subject has a clause iff "that" appears before the main verb; only the subject NP can start at position 0
    subject_adjective = sum(s[1] in grammar.ADJECTIVES for s in sentences)
    assert abs(subject_adjective - 0.3 * n) < 5 * math.sqrt(n * 0.3 * 0.7)  # binomial, 5 standard errors
    with_clause = sum("that" in s for s in sentences)
    # P(some clause) = 1 - (1-pc)(1 - P(transitive) pc) = 1 - 0.8 * 0.9 = 0.28
    assert abs(with_clause - 0.28 * n) < 5 * math.sqrt(n * 0.28 * 0.72)


def test_grammar_entropy_rate_equals_closed_form_from_sample_counts():
    grammar = Grammar(p_adjective=0.0, p_clause=0.0)
    n = 2000
    # two kinds of sentences: intransitive, probability 1/144, 4 tokens; transitive, 1/3456, 6 tokens
    intransitive = sum(len(s) == 4 for s in grammar.sample(n, seed=2))
    transitive = n - intransitive
    exact_for_sample = (intransitive * math.log(144) + transitive * math.log(3456)) / (4 * intransitive + 6 * transitive)
    assert grammar.entropy_rate(n, seed=2) == pytest.approx(exact_for_sample, rel=1e-12)

    def rate(q):  # q = fraction intransitive
        return (q * math.log(144) + (1 - q) * math.log(3456)) / (4 * q + 6 * (1 - q))

    # the fraction is binomial(n, 1/2): within 5 standard errors, the rate lies between these bounds
    spread = 5 * math.sqrt(0.25 / n)
    low, high = sorted((rate(0.5 - spread), rate(0.5 + spread)))
    assert low <= grammar.entropy_rate(n, seed=2) <= high
    assert low <= rate(0.5) <= high


def test_grammar_encode_maps_words_to_their_indices():
    grammar = Grammar()
    encoded = grammar.encode([["the", "dog", "sleeps", "."], ["a", "cat", "runs", "."]])
    assert encoded == [[grammar.index[w] for w in s] for s in (["the", "dog", "sleeps", "."], ["a", "cat", "runs", "."])]
    assert [[grammar.vocabulary[i] for i in s] for s in encoded][1] == ["a", "cat", "runs", "."]


def test_grammar_agreement_items_are_prefixes_with_an_attractor_and_the_right_verb_sets():
    grammar = Grammar()
    items = grammar.agreement_items(40, seed=0)
    assert len(items) == 40
    verbs = {nu: {grammar.index[v] for v in grammar.INTRANSITIVE[nu] + grammar.TRANSITIVE[nu]} for nu in ("sg", "pl")}
    stop, that = grammar.index["."], grammar.index["that"]
    for prefix, good, bad in items:
        words = [grammar.vocabulary[i] for i in prefix]
        assert words.count("that") == 1
        head = next(w for w in words if any(w in grammar.NOUNS[nu] for nu in ("sg", "pl")))
        head_number = "sg" if head in grammar.NOUNS["sg"] else "pl"
        clause = words[words.index("that") + 1:]
        attractor_number = "sg" if any(w in grammar.NOUNS["sg"] for w in clause) else "pl"
        assert attractor_number != head_number
        assert set(good) == verbs[head_number] and set(bad) == verbs[attractor_number] and len(good) == 6
        assert that in prefix
        for verb in good:
            if grammar.vocabulary[verb] in grammar.INTRANSITIVE[head_number]:
                assert grammar.is_grammatical(words + [grammar.vocabulary[verb], "."])
        for verb in bad:
            assert not grammar.is_grammatical([grammar.vocabulary[i] for i in [*prefix, verb, stop]])


def test_grammar_rejects_probabilities_outside_unit_interval_with_value_error():
    for kwargs in (dict(p_adjective=-0.1), dict(p_adjective=1.1), dict(p_clause=2.0)):
        with pytest.raises(ValueError):
            Grammar(**kwargs)


@pytest.mark.parametrize("kwargs, sentence", [
    (dict(p_adjective=0.0), ["the", "big", "dog", "sleeps", "."]),
    (dict(p_clause=0.0), ["the", "dog", "that", "the", "cats", "chase", "sleeps", "."]),
])
def test_grammar_log_prob_is_minus_infinity_for_a_construction_of_probability_zero(kwargs, sentence):
    assert Grammar(**kwargs).log_prob(sentence) == -math.inf


def test_grammar_with_probability_one_constructions_gives_minus_infinity_to_sentences_without_them():
    grammar = Grammar(p_adjective=1.0, p_clause=1.0)
    assert grammar.log_prob(["the", "dog", "sleeps", "."]) == -math.inf


# boolean_expressions ------------------------------------------------------------------------------------------


def evaluate(tokens):
    """Independent recursive-descent evaluator: (value, nesting depth); raises on malformed input."""

    def parse(at):
        token = tokens[at]
        if token in ("T", "F"):
            return token == "T", 0, at + 1
        if token == "!":
            value, depth, at = parse(at + 1)
            return not value, depth + 1, at
        if token == "(":
            left, d1, at = parse(at + 1)
            operator = tokens[at]
            right, d2, at = parse(at + 1)
            if tokens[at] != ")" or operator not in ("&", "|"):
                raise ValueError(tokens)
            return (left and right) if operator == "&" else (left or right), max(d1, d2) + 1, at + 1
        raise ValueError(tokens)

    value, depth, end = parse(0)
    if end != len(tokens):
        raise ValueError(tokens)
    return value, depth


def test_boolean_expressions_values_match_an_independent_evaluator_and_depth_is_bounded():
    expressions, values = boolean_expressions(300, max_depth=3, seed=0)
    assert len(expressions) == len(values) == 300
    depths = []
    for tokens, value in zip(expressions, values, strict=True):
        assert set(tokens) <= set(BOOLEAN_TOKENS) - {"=", "<pad>"}
        got, depth = evaluate(tokens)
        assert got == value and isinstance(value, bool)
        depths.append(depth)
    assert max(depths) == 3 and min(depths) == 0


def test_boolean_expressions_depth_zero_are_single_literals():
    expressions, values = boolean_expressions(50, max_depth=0, seed=1)
    assert all(len(t) == 1 for t in expressions)
    assert [t[0] == "T" for t in expressions] == values


def test_boolean_expressions_values_are_roughly_balanced():
    _, values = boolean_expressions(2000, max_depth=3, seed=2)
    # by the symmetry T<->F, &<->| the value is a fair coin: binomial, 5 standard errors
    assert abs(sum(values) - 1000) < 5 * math.sqrt(2000 * 0.25)


def test_boolean_expressions_deterministic_for_a_seed_and_different_across_seeds():
    assert boolean_expressions(30, seed=3) == boolean_expressions(30, seed=3)
    assert boolean_expressions(30, seed=3) != boolean_expressions(30, seed=4)


def test_boolean_tokens_are_distinct_and_include_query_and_padding():
    assert len(set(BOOLEAN_TOKENS)) == len(BOOLEAN_TOKENS) and {"=", "<pad>"} <= set(BOOLEAN_TOKENS)


# ClassPopulation ------------------------------------------------------------------------------------------------


def test_class_population_mixing_matrices_have_variance_one_over_fan_in():
    population = ClassPopulation(latent_dim=8, nuisance_dim=8, input_dim=64, seed=0)
    assert population.A1.shape == (16, 64) and population.A2.shape == (64, 64)
    for matrix, fan_in in ((population.A1, 16), (population.A2, 64)):
        variance = 1 / fan_in
        # sample variance of n Gaussians: standard error variance * sqrt(2/n); allow 5
        assert abs(matrix.var() - variance) < 5 * variance * math.sqrt(2 / matrix.size)


def test_class_population_draw_classes_shape_and_seed():
    population = ClassPopulation(latent_dim=3)
    classes = population.draw_classes(5, seed=1)
    assert classes.shape == (5, 3)
    assert np.array_equal(classes, population.draw_classes(5, seed=1))
    assert not np.array_equal(classes, population.draw_classes(5, seed=2))


def render_by_hand(population, content, rng):
    nuisance = 1.5 * rng.normal(size=(len(content), population.nuisance_dim))
    z = np.concatenate([content, nuisance], axis=1)
    x = np.tanh(1.5 * np.tanh(1.5 * z @ population.A1) @ population.A2)
    return x + 0.05 * rng.normal(size=x.shape)


def test_class_population_sample_matches_the_documented_formula():
    population = ClassPopulation(latent_dim=4, nuisance_dim=3, input_dim=10, seed=1)
    classes = population.draw_classes(3, seed=0)
    x, labels = population.sample(classes, per_class=4, seed=7)
    assert x.shape == (12, 10) and x.dtype == np.float32
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    rng = np.random.default_rng(7)
    content = classes[labels] + 0.3 * rng.normal(size=(12, 4))
    np.testing.assert_allclose(x, render_by_hand(population, content, rng), rtol=1e-5, atol=1e-6)


def test_class_population_augment_views_share_content_and_differ_in_nuisance():
    population = ClassPopulation(latent_dim=4, nuisance_dim=3, input_dim=10, seed=1)
    classes = population.draw_classes(2, seed=0)
    first, second, labels = population.augment(classes, per_class=5, seed=3)
    sampled, sampled_labels = population.sample(classes, per_class=5, seed=3)
    assert first.shape == second.shape == (10, 10) and first.dtype == second.dtype == np.float32
    assert np.array_equal(labels, sampled_labels)
    # the first view consumes the random stream exactly as sample() does
    assert np.array_equal(first, sampled)
    assert not np.allclose(first, second)
    rng = np.random.default_rng(3)
    content = classes[labels] + 0.3 * rng.normal(size=(10, 4))
    render_by_hand(population, content, rng)
    np.testing.assert_allclose(second, render_by_hand(population, content, rng), rtol=1e-5, atol=1e-6)


def test_class_population_rejects_non_positive_sizes_with_value_error():
    for kwargs in (dict(latent_dim=0), dict(nuisance_dim=0), dict(input_dim=0)):
        with pytest.raises(ValueError):
            ClassPopulation(**kwargs)
    with pytest.raises(ValueError):
        ClassPopulation().draw_classes(0)


# gaussian_two_class / gaussian_mixture ---------------------------------------------------------------------------


def test_gaussian_two_class_shapes_labels_means_and_spread():
    n, dim = 400, 5
    x, labels = gaussian_two_class(n, dim, seed=0)
    assert x.shape == (2 * n, dim) and labels.tolist() == [0] * n + [1] * n
    # class means -2 and +2 per coordinate, std 0.5: the mean of n*dim samples has SE 0.5/sqrt(n*dim), allow 5
    tolerance = 5 * 0.5 / math.sqrt(n * dim)
    assert abs(x[labels == 0].mean() + 2) < tolerance and abs(x[labels == 1].mean() - 2) < tolerance
    assert abs(x[labels == 0].std() - 0.5) < 5 * 0.5 / math.sqrt(2 * n * dim)
    assert np.array_equal(x, gaussian_two_class(n, dim, seed=0)[0])
    assert not np.array_equal(x, gaussian_two_class(n, dim, seed=1)[0])


def test_gaussian_mixture_labels_cycle_and_test_set_is_empty():
    split = gaussian_mixture(10, 4, 3, seed=0)
    assert split.x_train.shape == (10, 4) and split.x_train.dtype == torch.float32
    assert split.y_train.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0] and split.y_train.dtype == torch.int64
    assert split.x_test.shape == (0, 4) and split.y_test.shape == (0,) and split.y_test.dtype == torch.int64


def test_gaussian_mixture_within_class_noise_has_variance_one_over_dim():
    n, dim, k = 3000, 10, 3
    split = gaussian_mixture(n, dim, k, separation=3.0, seed=1)
    x, y = split.x_train.double(), split.y_train
    residual = torch.cat([x[y == c] - x[y == c].mean(dim=0) for c in range(k)])
    # sample variance of ~n*dim Gaussians of variance 1/dim: SE (1/dim)*sqrt(2/(n*dim)), allow 5 (plus the d.o.f. loss)
    variance = 1 / dim
    assert abs(float(residual.var()) - variance) < 5 * variance * math.sqrt(2 / (n * dim)) + variance * k / n


def test_gaussian_mixture_zero_separation_puts_all_class_means_at_the_origin():
    split = gaussian_mixture(3000, 4, 2, separation=0.0, seed=2)
    # mean of 1500 samples of N(0, I/4) per coordinate: SE 0.5/sqrt(1500), allow 5
    for c in range(2):
        assert float(split.x_train[split.y_train == c].mean(dim=0).abs().max()) < 5 * 0.5 / math.sqrt(1500)


@pytest.mark.parametrize("args", [(0, 2, 2), (5, 0, 2), (5, 2, 1), (5, 2, 2, -1.0)])
def test_gaussian_mixture_rejects_bad_arguments_with_value_error(args):
    with pytest.raises(ValueError):
        gaussian_mixture(*args)


def test_enumerated_language_has_no_duplicates():
    sentences = [tuple(s) for s in itertools.islice(enumerate_language(Grammar(p_clause=0.0)), 5000)]
    assert len(sentences) == len(set(sentences))


# --- the papers' public image sets ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist"])
def test_stand_ins_are_written_in_the_real_format_and_read_back(tmp_path, name):
    folder = data_module.write_fake_public_set(name, tmp_path, n_train=25, n_test=10, seed=3)
    spec = data_module.public_set(name)
    assert data_module.is_cached(name, tmp_path) and folder == tmp_path / spec.folder
    x_train, y_train, x_test, y_test = data_module.read_public_set(name, folder)
    assert x_train.shape == (25, *spec.shape) and x_test.shape == (10, *spec.shape)
    assert x_train.dtype == np.uint8 and y_train.max() < spec.n_classes and len(y_test) == 10


def test_cifar_pickles_are_read_with_the_publishers_layout(tmp_path):
    # written here by hand: rows of 3072 bytes, red plane then green then blue, labels under b"labels"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 251
    for k in range(1, 6):
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps({b"data": rows.astype(np.uint8), b"labels": [k, 0]}))
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": rows.astype(np.uint8), b"labels": [9, 8]}))
    x_train, y_train, _, y_test = data_module.read_public_set("cifar10", folder)
    assert x_train.shape == (10, 3, 32, 32) and list(y_train[:4]) == [1, 0, 2, 0] and list(y_test) == [9, 8]
    assert x_train[0, 1, 0, 0] == rows[0, 1024] and x_train[1, 2, 31, 31] == rows[1, 3071]


def test_mnist_idx_files_are_read_from_their_headers(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    for prefix, n in (("train", 3), ("t10k", 3)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">I3I", 0x0803, n, 28, 28) + images.astype(np.uint8).tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + bytes([7, 1, 4]))
    x_train, y_train, x_test, _ = data_module.read_public_set("mnist", folder)
    assert x_train.shape == (3, 1, 28, 28) and np.array_equal(x_train[:, 0], images) and list(y_train) == [7, 1, 4]


def _local_set(tmp_path, name="cifar10", tamper=False):
    """A stand-in archive served from a file:// URL with its real MD5 (or a wrong one)."""
    source = tmp_path / "source"
    data_module.write_fake_public_set(name, source, 10, 5)
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = "0" * 32 if tamper else hashlib.md5(archive.read_bytes()).hexdigest()
    spec = dataclasses.replace(data_module.public_set(name), urls=((archive.as_uri(), md5),))
    return spec


def test_first_use_downloads_verifies_and_extracts(tmp_path, monkeypatch):
    spec = _local_set(tmp_path)
    monkeypatch.setitem(data_module.PUBLIC_IMAGE_SETS, "cifar10", spec)
    cache = tmp_path / "cache"
    folder = data_module.ensure_public_set("cifar10", cache)
    assert folder == cache / "cifar-10-batches-py" and data_module.is_cached("cifar10", cache)
    assert data_module.read_public_set("cifar10", folder)[0].shape == (10, 3, 32, 32)


def test_a_checksum_mismatch_keeps_nothing_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(data_module.PUBLIC_IMAGE_SETS, "cifar10", _local_set(tmp_path, tamper=True))
    with pytest.raises(data_module.DatasetUnavailable, match="checksum mismatch"):
        data_module.ensure_public_set("cifar10", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.tar.gz*"))


def test_offline_the_message_names_the_set_the_folder_and_the_files(tmp_path):
    with pytest.raises(data_module.DatasetUnavailable) as error:
        data_module.ensure_public_set("mnist", tmp_path, download=False)
    text = str(error.value)
    assert "MNIST" in text and str(tmp_path / "MNIST" / "raw") in text and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in text
    assert "THEORYLAB_DATA" in text and "--smoke" in text


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("THEORYLAB_DATA", str(tmp_path / "here"))
    assert data_module.data_cache() == tmp_path / "here"
    monkeypatch.delenv("THEORYLAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_module.data_cache() == tmp_path / "xdg" / "theorylab" / "data"


def test_public_images_standardises_per_channel_with_training_statistics(tmp_path):
    data_module.write_fake_public_set("cifar100", tmp_path, 60, 20, seed=1)
    split = data_module.public_images("cifar100", root=tmp_path, download=False)
    channel_mean = split.x_train.mean(dim=(0, 2, 3))
    channel_std = split.x_train.double().std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(channel_mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(channel_std, torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    # the test images are standardised with the training statistics, not their own
    raw_train, _, raw_test, _ = data_module.read_public_set("cifar100", tmp_path / "cifar-100-python")
    mean = raw_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = raw_train.std(axis=(0, 2, 3), dtype=np.float64)
    expected = (raw_test[:, 1] - mean[1]) / std[1]
    assert np.allclose(split.x_test[:, 1].numpy(), expected, atol=1e-5)


def test_smoke_writes_stand_ins_outside_the_cache_and_cleans_up(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    split = data_module.public_images("mnist", smoke=True, root=tmp_path / "cache", smoke_sizes=(30, 12))
    assert split.x_train.shape == (30, 1, 28, 28) and split.x_test.shape == (12, 1, 28, 28)
    assert not (tmp_path / "cache").exists() and not any((tmp_path / "scratch").iterdir())


def test_gzip_members_of_mnist_are_unpacked_on_download(tmp_path, monkeypatch):
    source = tmp_path / "source"
    folder = data_module.write_fake_public_set("mnist", source, 8, 4)
    urls = []
    for file in data_module.public_set("mnist").files:
        packed = tmp_path / "served" / f"{file}.gz"
        packed.parent.mkdir(exist_ok=True)
        packed.write_bytes(gzip.compress((folder / file).read_bytes()))
        urls.append((packed.as_uri(), hashlib.md5(packed.read_bytes()).hexdigest()))
    spec = dataclasses.replace(data_module.public_set("mnist"), urls=tuple(urls))
    monkeypatch.setitem(data_module.PUBLIC_IMAGE_SETS, "mnist", spec)
    target = data_module.ensure_public_set("mnist", tmp_path / "cache")
    assert np.array_equal(data_module.read_public_set("mnist", target)[0],
                          data_module.read_public_set("mnist", folder)[0])
