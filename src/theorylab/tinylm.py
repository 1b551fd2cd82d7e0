r"""Tiny language models trained in seconds on generated text (chapter ``speculative-inference``).

Text comes from a random Markov source of order :math:`k` over a small vocabulary: each context's next
token is drawn from a Dirichlet(:math:`\alpha`) row, peaked for small :math:`\alpha`. The target is a small
causal transformer; the drafter a bigram table (it sees one token of context), distilled from the target,
so it is smaller, faster, and agrees with the target on the likeliest continuations only.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def markov_source(vocab: int, order: int = 2, alpha: float = 0.15, context_weight: float = 1.0,
                  seed: int = 0) -> np.ndarray:
    r"""Transition table :math:`P(x_{k+1}\mid x_1..x_k)` of shape ``(vocab,)*order + (vocab,)``:
    :math:`w\,D_{x_1..x_k}+(1-w)\,B_{x_k}` with :math:`w` the ``context_weight`` and every row of
    :math:`D` (full context) and :math:`B` (last token only) drawn from Dirichlet(:math:`\alpha\mathbf 1`)."""
    if vocab < 2 or order < 1 or alpha <= 0 or not 0 <= context_weight <= 1:
        raise ValueError(f"vocab >= 2, order >= 1, alpha > 0 and context_weight in [0, 1] required; "
                         f"got {vocab}, {order}, {alpha}, {context_weight}")
    rng = np.random.default_rng(seed)
    full = rng.dirichlet(np.full(vocab, alpha), size=(vocab,) * order)
    last = rng.dirichlet(np.full(vocab, alpha), size=vocab)
    return context_weight * full + (1 - context_weight) * last[(np.newaxis,) * (order - 1)]


def sample_text(table: np.ndarray, n_sequences: int, length: int, seed: int = 0) -> torch.Tensor:
    """``n_sequences`` sequences of ``length`` tokens from the source, each started by uniform tokens."""
    order, vocab = table.ndim - 1, table.shape[-1]
    if length <= order or n_sequences < 1:
        raise ValueError(f"length must exceed the order {order} and n_sequences be positive")
    rng = np.random.default_rng(seed)
    text = np.zeros((n_sequences, length), dtype=np.int64)
    text[:, :order] = rng.integers(0, vocab, size=(n_sequences, order))
    cumulative = np.cumsum(table, axis=-1)
    for position in range(order, length):
        rows = cumulative[tuple(text[:, position - order + i] for i in range(order))]
        text[:, position] = np.minimum((rows < rng.random((n_sequences, 1))).sum(axis=1), vocab - 1)
    return torch.from_numpy(text)


class TinyTransformer(nn.Module):
    """Causal pre-norm transformer: token and position embeddings, ``layers`` blocks, a linear head."""

    def __init__(self, vocab: int, width: int = 48, layers: int = 2, heads: int = 4, max_len: int = 96):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        self.vocab, self.max_len = vocab, max_len
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(max_len, width)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last block's output at every position, before the head: the features trees can read."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence of {length} tokens exceeds the model's max_len {self.max_len}")
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        hidden = self.embed(tokens) + self.position(torch.arange(length, device=tokens.device))
        return self.blocks(hidden, mask=mask, is_causal=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(tokens))


class BigramLM(nn.Module):
    """Next-token logits from the current token alone: a ``vocab x vocab`` table."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.max_len = vocab, 1 << 30
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens)


def train_lm(model: nn.Module, text: torch.Tensor, *, steps: int, batch: int = 32, lr: float = 3e-3,
             seed: int = 0, teacher: nn.Module | None = None, ignore_index: int = -100) -> list[float]:
    r"""Adam on next-token cross-entropy over random rows of ``text`` (targets equal to ``ignore_index``,
    such as padding, are skipped), or, with a ``teacher``, on the distillation loss
    :math:`\mathrm{KL}(p_{\text{teacher}}\,\|\,p_{\text{model}})` at every position. Returns the loss of each step."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be positive, got {steps}, {batch}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        rows = text[torch.randint(0, text.shape[0], (batch,), generator=generator)]
        logits = model(rows[:, :-1])
        if teacher is None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1),
                                               ignore_index=ignore_index)
        else:
            with torch.no_grad():
                target = torch.log_softmax(teacher(rows[:, :-1]), dim=-1)
            loss = nn.functional.kl_div(torch.log_softmax(logits, dim=-1), target, log_target=True,
                                        reduction="batchmean") / logits.shape[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


class Scorer:
    """A language model as the engine sees it: ``scorer(tokens)`` is the ``(len(tokens), vocab)`` array of
    next-token logits at every position (float64), computed in one forward pass without gradients."""

    def __init__(self, model: nn.Module, name: str = "model"):
        self.model, self.name = model.eval(), name
        self.vocab = model.vocab

    @torch.no_grad()
    def __call__(self, tokens: Sequence[int]) -> np.ndarray:
        if len(tokens) == 0:
            raise ValueError(f"{self.name}: cannot score an empty sequence")
        device = next(self.model.parameters()).device
        return self.model(torch.as_tensor([list(tokens)], dtype=torch.long, device=device))[0].double().cpu().numpy()


class Memoized:
    """A scorer whose answers are cached by token sequence: the same model, each prefix computed once.

    For the sampling test, where ten thousand generations of two tokens revisit a handful of prefixes."""

    def __init__(self, scorer: Scorer):
        self.scorer, self.vocab, self.name = scorer, scorer.vocab, scorer.name
        self.cache: dict[tuple[int, ...], np.ndarray] = {}

    def __call__(self, tokens: Sequence[int]) -> np.ndarray:
        key = tuple(tokens)
        if key not in self.cache:
            self.cache[key] = self.scorer(key)
        return self.cache[key]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """:math:`\\mathrm{softmax}(z/T)` along the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def continuation_distribution(scorer: Scorer, prompt: Sequence[int], length: int, temperature: float = 1.0) -> np.ndarray:
    r"""The exact law of the next ``length`` tokens, enumerated: :math:`\prod_i p(x_i\mid\text{prompt},x_{<i})`,
    as an array of shape ``(vocab,)*length``."""
    vocab = scorer.vocab
    law = np.zeros((vocab,) * length)
    for continuation in itertools.product(range(vocab), repeat=length - 1):
        logits = scorer(list(prompt) + list(continuation))[len(prompt) - 1:]
        probabilities = softmax(logits, temperature)
        prefix = np.prod([probabilities[i, x] for i, x in enumerate(continuation)])
        law[continuation] = prefix * probabilities[length - 1]
    return law


# ----------------------------------------------------------------------------------------------
# Language models over sentences: one interface for transformers and trees


class TransformerLM:
    """A :class:`TinyTransformer` as a sentence model: ``next_token_probabilities(prefixes)`` gives, for each
    prefix (token ids, starting with the beginning-of-sentence token), the softmax of the last position's
    logits. Prefixes are right-padded into one batch (causal attention makes the padding invisible)."""

    def __init__(self, model: TinyTransformer, vocabulary_size: int | None = None):
        self.model = model.eval()
        self.vocab = vocabulary_size or model.vocab  # tokens beyond it (padding) are dropped and the rest renormalised

    @torch.no_grad()
    def next_token_probabilities(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        batch, lengths = right_padded(prefixes)
        logits = self.model(batch)[torch.arange(len(prefixes)), lengths - 1]
        return torch.softmax(logits.double()[:, :self.vocab], dim=-1).numpy()


def right_padded(sequences: Sequence[Sequence[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences as one ``(count, longest)`` batch right-padded with ``pad``, and their lengths. Under
    causal attention the padding is invisible to every real position."""
    lengths = torch.as_tensor([len(s) for s in sequences])
    batch = torch.full((len(sequences), int(lengths.max())), pad, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        batch[row, :len(sequence)] = torch.as_tensor(list(sequence))
    return batch, lengths


def sentence_rows(sentences: Sequence[Sequence[int]], bos: int, pad: int) -> torch.Tensor:
    """One row per sentence, ``[bos, *sentence]`` right-padded with ``pad`` (to train with ``ignore_index=pad``)."""
    return right_padded([[bos, *sentence] for sentence in sentences], pad)[0]


def sentence_prefixes(sentences: Sequence[Sequence[int]], bos: int) -> tuple[list[list[int]], np.ndarray]:
    """Every ``([bos, *sentence[:k]], sentence[k])`` pair: the contexts and next tokens a sentence model is
    trained and scored on."""
    prefixes, targets = [], []
    for sentence in sentences:
        for k, token in enumerate(sentence):
            prefixes.append([bos, *sentence[:k]])
            targets.append(token)
    return prefixes, np.asarray(targets)


def evaluate_lm(lm: Any, sentences: Sequence[Sequence[int]], bos: int, batch: int = 4096) -> dict[str, float]:
    r"""Next-token accuracy (argmax) and perplexity :math:`\exp(-\frac1n\sum\log p(x_i\mid x_{<i}))` over every
    token of ``sentences``, each read from ``bos`` (the same tokens and contexts for every model)."""
    prefixes, targets = sentence_prefixes(sentences, bos)
    correct, log_loss = 0, 0.0
    for start in range(0, len(prefixes), batch):
        probabilities = lm.next_token_probabilities(prefixes[start:start + batch])
        chunk = targets[start:start + batch]
        correct += int((probabilities.argmax(axis=1) == chunk).sum())
        log_loss -= float(np.log(probabilities[np.arange(chunk.size), chunk]).sum())
    return {"accuracy": correct / len(targets), "perplexity": math.exp(log_loss / len(targets))}


def sample_sentences(lm: Any, n_sentences: int, bos: int, stop: int, max_length: int = 30, seed: int = 0) -> list[list[int]]:
    """``n_sentences`` samples, all prefixes advanced together, each ending at ``stop`` (or cut at ``max_length``)."""
    rng = np.random.default_rng(seed)
    prefixes = [[bos] for _ in range(n_sentences)]
    open_rows = list(range(n_sentences))
    for _ in range(max_length):
        if not open_rows:
            break
        probabilities = lm.next_token_probabilities([prefixes[r] for r in open_rows])
        cumulative = probabilities.cumsum(axis=1)
        draws = (cumulative < rng.random((len(open_rows), 1)) * cumulative[:, -1:]).sum(axis=1)
        for row, token in zip(open_rows, draws, strict=True):
            prefixes[row].append(int(min(token, probabilities.shape[1] - 1)))
        open_rows = [r for r in open_rows if prefixes[r][-1] != stop]
    return [p[1:] for p in prefixes]


def agreement_rate(lm: Any, items: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]], bos: int) -> float:
    """Fraction of ``(prefix, agreeing verbs, other verbs)`` items where the model puts more probability on
    the verbs that agree with the head noun than on the others (the attractor's number)."""
    probabilities = lm.next_token_probabilities([[bos, *prefix] for prefix, _, _ in items])
    right = np.array([probabilities[k, list(good)].sum() for k, (_, good, _) in enumerate(items)])
    wrong = np.array([probabilities[k, list(bad)].sum() for k, (_, _, bad) in enumerate(items)])
    return float(np.mean(right > wrong))


@torch.no_grad()
def final_states(model: TinyTransformer, sequences: Sequence[Sequence[int]], batch: int = 512) -> np.ndarray:
    """``model.hidden`` at the last token of each sequence (right-padded batches; causal, so padding is unseen)."""
    states = []
    for start in range(0, len(sequences), batch):
        rows, lengths = right_padded(sequences[start:start + batch])
        states.append(model.hidden(rows)[torch.arange(len(rows)), lengths - 1].numpy())
    return np.concatenate(states)
