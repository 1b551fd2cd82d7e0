r"""The paper's tree language model, model sizes, and trees on a transformer's features (chapter
``decision-tree-language-models``, after Gan, Galanti, Poggio and Malach, NeurIPS 2024).

The pipeline of the paper: word embeddings :math:`e_w\in\mathbb R^d` from Word2Vec
(Mikolov et al., 2013; gensim), the context summarised by a weighted window average

.. math:: c(x_{\le t})=\frac{\sum_{a<L}\lambda^a e_{x_{t-a}}}{\sum_{a<L}\lambda^a},

gradient-boosted regression trees (XGBoost) from :math:`c` to the next token's embedding, and
decoding to the token whose embedding is nearest by cosine. For a likelihood the cosines go through
a softmax with a temperature fitted on held-out sentences.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def stable_hash(text: str) -> int:
    """CRC-32 of the text: gensim seeds each word's initial vector with a hash of the word, and
    Python's own ``hash`` of a string changes from process to process."""
    return zlib.crc32(text.encode())


def window_average(prefixes: Sequence[Sequence[int]], embeddings: np.ndarray, context_length: int,
                   decay: float) -> np.ndarray:
    r""":math:`c=\sum_{a<L}\lambda^a e_{x_{t-a}}/\sum_{a<L}\lambda^a` over the last
    :math:`L=` ``context_length`` tokens of each prefix (fewer if the prefix is shorter),
    :math:`\lambda=` ``decay``; one row per prefix."""
    if context_length < 1 or not 0 < decay <= 1:
        raise ValueError(f"context_length >= 1 and decay in (0, 1] required, got {context_length}, {decay}")
    weights = decay ** np.arange(context_length)
    out = np.zeros((len(prefixes), embeddings.shape[1]))
    for row, prefix in enumerate(prefixes):
        if len(prefix) == 0:
            raise ValueError(f"prefix {row} is empty: every prefix starts with the start token")
        recent = list(prefix[-context_length:])[::-1]  # the most recent token first
        w = weights[:len(recent)]
        out[row] = w @ embeddings[recent] / w.sum()
    return out


def cosines(predicted: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    r""":math:`\cos(\hat e, e_w)` of each predicted vector with every token's embedding."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    norms = np.linalg.norm(predicted, axis=1, keepdims=True)
    return predicted / np.where(norms > 0, norms, 1.0) @ unit.T


def softmax_rows(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, targets: np.ndarray, low: float = 1e-3, high: float = 10.0) -> float:
    r"""The temperature :math:`\tau` minimising the held-out log-loss
    :math:`-\frac1n\sum_i\log\mathrm{softmax}(s_i/\tau)_{y_i}` (bounded 1-d search over
    :math:`\log\tau`; the loss is smooth in :math:`\log\tau`)."""
    from scipy.optimize import minimize_scalar

    targets = np.asarray(targets)
    rows = np.arange(targets.size)

    def loss(log_tau):
        return -float(np.mean(np.log(softmax_rows(scores, math.exp(log_tau))[rows, targets])))

    result = minimize_scalar(loss, bounds=(math.log(low), math.log(high)), method="bounded",
                             options={"xatol": 1e-6})
    return math.exp(result.x)


class Word2VecTreeLM:
    r"""The paper's ARDT language model: gensim Word2Vec (dimension ``dimension``, one worker, a
    stable hash), a window average of the last ``context_length`` embeddings weighted
    :math:`\lambda^{\text{age}}`, XGBoost regressing the next token's embedding (squared error, one
    tree per embedding dimension per round, ``n_jobs=1``), the nearest token by cosine as the greedy
    prediction, and :math:`\mathrm{softmax}(\cos/\tau)` with :math:`\tau` fitted on the last
    ``held_out`` fraction of the training sentences for probabilities."""

    def __init__(self, vocabulary_size: int, dimension: int = 16, context_length: int = 4, decay: float = 0.7,
                 rounds: int = 40, max_depth: int = 4, learning_rate: float = 0.3, word2vec_epochs: int = 5,
                 held_out: float = 0.1, seed: int = 0):
        if vocabulary_size < 2 or dimension < 1 or rounds < 1 or not 0 < held_out < 1:
            raise ValueError("vocabulary_size >= 2, dimension >= 1, rounds >= 1 and held_out in (0, 1) required")
        self.vocab, self.dimension, self.context_length, self.decay = vocabulary_size, dimension, context_length, decay
        self.rounds, self.max_depth, self.learning_rate = rounds, max_depth, learning_rate
        self.epochs, self.held_out, self.seed = word2vec_epochs, held_out, seed
        self.embeddings: np.ndarray | None = None
        self.regressor: Any = None
        self.temperature: float | None = None

    def _features(self, prefixes):
        return window_average(prefixes, self.embeddings, self.context_length, self.decay)

    def fit(self, sentences: Sequence[Sequence[int]], bos: int) -> Word2VecTreeLM:
        from gensim.models import Word2Vec
        from xgboost import XGBRegressor

        from .tinylm import sentence_prefixes

        corpus = [[str(bos)] + [str(token) for token in sentence] for sentence in sentences]
        word2vec = Word2Vec(corpus, vector_size=self.dimension, window=self.context_length, min_count=1, sg=1,
                            workers=1, seed=self.seed, epochs=self.epochs, hashfxn=stable_hash)
        missing = [k for k in range(self.vocab) if str(k) not in word2vec.wv]
        if missing:
            raise ValueError(f"tokens {missing[:10]} never occur in the training sentences: no embedding")
        self.embeddings = np.stack([word2vec.wv[str(k)] for k in range(self.vocab)]).astype(np.float64)
        cut = int(len(sentences) * (1 - self.held_out))
        prefixes, targets = sentence_prefixes(sentences[:cut], bos)
        self.regressor = XGBRegressor(n_estimators=self.rounds, max_depth=self.max_depth,
                                      learning_rate=self.learning_rate, tree_method="hist", n_jobs=1,
                                      random_state=self.seed)
        self.regressor.fit(self._features(prefixes), self.embeddings[targets])
        held_prefixes, held_targets = sentence_prefixes(sentences[cut:], bos)
        self.temperature = fit_temperature(self._cosines(held_prefixes), held_targets)
        return self

    def _cosines(self, prefixes):
        if self.regressor is None:
            raise ValueError("Word2VecTreeLM: call fit before asking for predictions")
        return cosines(self.regressor.predict(self._features(prefixes)), self.embeddings)

    def next_token_probabilities(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        return softmax_rows(self._cosines(prefixes), self.temperature)


# ----------------------------------------------------------------------------------------------
# Model sizes


def model_size(model: Any) -> dict[str, int]:
    r"""Leaves and parameters of a model. A tree ensemble stores, per split, a feature index and a
    threshold (or category set) and, per leaf, one value: parameters :math:`=2\,(\text{splits})+
    \text{leaves}`. Handles scikit-learn's histogram gradient boosting, an XGBoost model, a
    :class:`theorylab.ardt.TreeLM`, a :class:`Word2VecTreeLM` (its trees plus the
    :math:`|V|\times d` embedding table) and a torch module (its tensors' entries; no leaves)."""
    from .ardt import TreeLM

    if isinstance(model, TreeLM):
        return model_size(model.model)
    if isinstance(model, Word2VecTreeLM):
        trees = model_size(model.regressor)
        return {"leaves": trees["leaves"], "parameters": trees["parameters"] + model.embeddings.size}
    if hasattr(model, "_predictors"):  # scikit-learn HistGradientBoosting*
        leaves = splits = 0
        for round_ in model._predictors:
            for predictor in round_:
                is_leaf = predictor.nodes["is_leaf"].astype(bool)
                leaves += int(is_leaf.sum())
                splits += int((~is_leaf).sum())
        return {"leaves": leaves, "parameters": 2 * splits + leaves}
    if hasattr(model, "get_booster"):  # XGBoost
        dump = model.get_booster().get_dump()
        leaves = sum(tree.count("leaf=") for tree in dump)
        splits = sum(tree.count("yes=") for tree in dump)
        return {"leaves": leaves, "parameters": 2 * splits + leaves}
    if hasattr(model, "parameters"):  # torch
        return {"leaves": 0, "parameters": int(sum(p.numel() for p in model.parameters()))}
    raise TypeError(f"model_size: no rule for {type(model).__name__}")


def log_perplexity_sd(log_probs: Sequence[float], lengths: Sequence[int]) -> float:
    r"""Standard deviation of :math:`\log\mathrm{ppl}=R=\sum_i a_i/\sum_i b_i`, with
    :math:`a_i=-\log P(s_i)` and :math:`b_i=|s_i|`, over draws of the :math:`m` independent sentences
    :math:`s_i` (the delta method for a ratio estimator):
    :math:`\mathrm{sd}(R)\approx\sqrt{\mathrm{Var}(a-Rb)/m}\,/\,\bar b`. It is also the relative
    standard deviation of :math:`\mathrm{ppl}=e^R` (to first order)."""
    a = -np.asarray(log_probs, dtype=np.float64)
    b = np.asarray(lengths, dtype=np.float64)
    if a.size != b.size or a.size < 2:
        raise ValueError(f"need as many lengths as log-probabilities, at least 2: {a.size}, {b.size}")
    ratio = a.sum() / b.sum()
    return float(np.std(a - ratio * b, ddof=1) / math.sqrt(a.size) / b.mean())


def grammar_log_perplexity_sd(grammar: Any, sentences: Sequence[Sequence[str]]) -> float:
    """:func:`log_perplexity_sd` of a test set of ``sentences`` (words) under the grammar's exact
    probabilities :math:`P(s_i)` (``grammar.log_prob``): how much the perplexity of a perfect model
    on such a test set moves, relatively, from one draw of the set to another."""
    return log_perplexity_sd([grammar.log_prob(s) for s in sentences], [len(s) for s in sentences])


def language_model_verdicts(tree: dict[str, float], transformer: dict[str, float], floor: float, *,
                            max_ratio: float, min_excess_gap: float, floor_sd: float,
                            pipeline: dict[str, float], floor_k: float = 4.0,
                            min_grammatical: float = 0.90, grammatical_gap: float = 0.05,
                            accuracy_gap: float = 0.02, pipeline_gap: float = 0.5
                            ) -> dict[str, bool]:
    r"""The claims the language-model section makes, each a verdict: trees at least
    ``min_grammatical`` grammatical and within ``grammatical_gap`` of the transformer; next-token
    accuracies within ``accuracy_gap``; tree perplexity above the transformer's but at most
    ``max_ratio`` times it; the trees' excess over the floor larger than the transformer's by at
    least ``min_excess_gap``; the trees smaller than the transformer (``parameters``); the
    ``pipeline`` model (Word2Vec + XGBoost) worse than the trees in perplexity and at least
    ``pipeline_gap`` less grammatical; no perplexity of the three below
    :math:`\text{floor}\cdot e^{-k\sigma}`, :math:`k=` ``floor_k``, :math:`\sigma=` ``floor_sd`` (the
    relative sd of a test-set perplexity, :func:`log_perplexity_sd`): that would be a scoring bug."""
    ratio = tree["perplexity"] / transformer["perplexity"]
    lowest = min(m["perplexity"] for m in (tree, transformer, pipeline))
    return {
        "trees grammatical": tree["grammatical"] >= min_grammatical,
        "grammaticality matches": abs(tree["grammatical"] - transformer["grammatical"]) <= grammatical_gap,
        "accuracy matches": abs(tree["accuracy"] - transformer["accuracy"]) <= accuracy_gap,
        "tree perplexity within ratio": 1.0 < ratio <= max_ratio,
        "trees further above the floor": (tree["perplexity"] - floor) - (transformer["perplexity"] - floor)
        >= min_excess_gap,
        "trees smaller": tree["parameters"] < transformer["parameters"],
        "pipeline worst": pipeline["perplexity"] > tree["perplexity"]
        and pipeline["grammatical"] <= tree["grammatical"] - pipeline_gap,
        "no model below the floor": lowest >= floor * math.exp(-floor_k * floor_sd),
    }


def reasoning_verdicts(r: dict[str, float], *, over_majority: float = 0.2, order_gain: float = 0.03,
                       tree_gain: float = 0.02, slack: float = 0.02, pretext_slack: float = 0.03
                       ) -> dict[str, bool]:
    """The claims of the reasoning section on held-out accuracies ``r`` (keys as in the chapter):
    label-free trees beat the majority class by ``over_majority``; on raw tokens the window beats
    the bag by ``order_gain``; on the labelled state trees beat the probe and the read-out by
    ``tree_gain``; the probe is within ``slack`` of the read-out or better; trees on the labelled
    state are no better than trees on raw tokens by more than ``slack``; trees on the pretext
    states no better than on raw tokens by more than ``pretext_slack``."""
    label_free = [k for k in r if k.startswith(("tokens", "pretext"))]
    probe, readout = r["labelled: linear probe"], r["labelled: own read-out"]
    pretext = max(r["pretext states, window"], r["pretext states, bag"])
    return {
        "label-free trees beat the majority": min(r[k] for k in label_free)
        >= r["majority class"] + over_majority,
        "order matters on tokens": r["tokens, window"] >= r["tokens, bag"] + order_gain,
        "trees beat probe and read-out": r["labelled states, window"] >= max(probe, readout) + tree_gain,
        "probe at least the read-out": probe >= readout - slack,
        "labelled states no better than tokens": r["labelled states, window"]
        <= r["tokens, window"] + slack,
        "pretext states no better than tokens": pretext <= r["tokens, window"] + pretext_slack,
    }


SEED_SPREAD = {
    "perplexity, boosted trees": "language_models.scores.ARDT (boosted trees).perplexity",
    "  TinyGPT": "language_models.scores.TinyGPT.perplexity",
    "  Word2Vec + XGBoost": "language_models.scores.ARDT (Word2Vec + XGBoost).perplexity",
    "perplexity ratio, trees / TinyGPT": "language_models.ratio",
    "  difference": "language_models.excess_gap",
    "agreement, window 2": "agreement.trees, L=2", "  window 4": "agreement.trees, L=4",
    "  window 8": "agreement.trees, L=8",
    "trees on tokens, window": "reasoning.tokens, window",
    "  pretext states, window": "reasoning.pretext states, window",
    "  pretext states, bag": "reasoning.pretext states, bag",
    "  labelled states, window": "reasoning.labelled states, window",
    "labelled model's own read-out": "reasoning.labelled: own read-out",
}
"""The recorded numbers whose spread over the calibration runs the chapter prints (label: key)."""


# ----------------------------------------------------------------------------------------------
# Trees on a transformer's features (the reasoning task)


def encode_expressions(expressions: Sequence[Sequence[str]]) -> list[list[int]]:
    """Token ids of each expression followed by the query token ``=`` (:data:`BOOLEAN_TOKENS`)."""
    from .data import BOOLEAN_TOKENS

    index = {t: k for k, t in enumerate(BOOLEAN_TOKENS)}
    return [[index[t] for t in e] + [index["="]] for e in expressions]


def train_expression_transformer(encoded: Sequence[Sequence[int]], values: Sequence[bool] | None, *, steps: int,
                                 seed: int, width: int = 64):
    """A 2-layer :class:`theorylab.tinylm.TinyTransformer` trained as a language model on the
    expressions: on ``expression =`` alone when ``values`` is None (a pretext task the labels never
    shape), or on ``expression = value`` (the labels are the last token)."""
    import torch

    from .data import BOOLEAN_TOKENS
    from .tinylm import TinyTransformer, right_padded, train_lm

    pad, truth = BOOLEAN_TOKENS.index("<pad>"), {True: BOOLEAN_TOKENS.index("T"), False: BOOLEAN_TOKENS.index("F")}
    texts = [list(e) for e in encoded] if values is None else [
        [*e, truth[bool(v)]] for e, v in zip(encoded, values, strict=True)]
    torch.manual_seed(seed)
    model = TinyTransformer(len(BOOLEAN_TOKENS), width=width, layers=2, heads=4, max_len=64)
    train_lm(model, right_padded(texts, pad)[0], steps=steps, batch=64, lr=3e-3, seed=seed, ignore_index=pad)
    return model


def state_features(model, encoded: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    r"""The frozen model's last-block states of each sequence: ``window``, the state at the last
    token (``=``), and ``bag``, the mean of the states over all positions (order-free)."""
    import torch

    from .tinylm import right_padded

    with torch.no_grad():
        rows, lengths = right_padded(encoded)
        hidden = model.hidden(rows)
        mask = (torch.arange(rows.shape[1])[None, :] < lengths[:, None]).to(hidden.dtype)
        bag = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        window = hidden[torch.arange(len(encoded)), lengths - 1]
    return {"window": window.numpy(), "bag": bag.numpy()}


def token_features(encoded: Sequence[Sequence[int]], vocabulary_size: int) -> dict[str, np.ndarray]:
    """Raw-token features: ``window``, the token at every position (categorical, the whole
    expression as one window), and ``bag``, the count of each token type (order-free)."""
    from .ardt import position_features

    window = position_features(encoded, max(len(e) for e in encoded))
    bag = np.stack([np.bincount(e, minlength=vocabulary_size) for e in encoded]).astype(np.float64)
    return {"window": window, "bag": bag}


def readout_accuracy(model, encoded: Sequence[Sequence[int]], labels: np.ndarray) -> float:
    """How often the model's own next-token read-out after ``=`` puts more weight on ``T`` than on
    ``F`` exactly when the label is true."""
    import torch

    from .data import BOOLEAN_TOKENS
    from .tinylm import right_padded

    with torch.no_grad():
        rows, lengths = right_padded(encoded)
        logits = model(rows)[torch.arange(len(encoded)), lengths - 1]
    says_true = (logits[:, BOOLEAN_TOKENS.index("T")] > logits[:, BOOLEAN_TOKENS.index("F")]).numpy()
    return float(np.mean(says_true == np.asarray(labels, dtype=bool)))


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Held-out accuracy of an L2-regularised logistic regression (scikit-learn's default
    :math:`C=1`, on standardised features) fitted to the labels alone on frozen features: a linear
    read-out trained for the value only, not the best linear one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return float(probe.fit(train_x, train_y).score(test_x, test_y))
