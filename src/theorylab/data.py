"""Data the chapters use: generated in code or shipped inside an installed package, never downloaded."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels of a train and a test set, as float32/int64 tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1


def digits(n_train: int = 1400, seed: int = 0, standardize: bool = True, images: bool = False,
           unit_interval: bool = False) -> Split:
    r"""scikit-learn's 1,797 8x8 digits (shipped with the package), shuffled with ``seed`` and split
    ``n_train`` / rest (``n_train=1797`` leaves the test set empty). With ``standardize`` each pixel becomes
    :math:`(x-\bar x)/(s+10^{-3})`, with the training set's mean and standard deviation; with
    ``unit_interval`` (and ``standardize=False``) it becomes :math:`x/16\in[0,1]`; otherwise it stays in
    0..16. ``images`` returns shape ``(N, 1, 8, 8)`` for convolutions, else ``(N, 64)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    if not 0 < n_train <= len(x):
        raise ValueError(f"n_train: got {n_train!r}, expected an integer in [1, {len(x)}]")
    if standardize and unit_interval:
        raise ValueError("standardize and unit_interval exclude each other: pass standardize=False")
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:n_train], order[n_train:]
    if standardize:
        mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
        x = (x - mean) / (sd + 1e-3)
    elif unit_interval:
        x = x / 16.0
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return Split(torch.as_tensor(x[train]), torch.as_tensor(y[train]),
                 torch.as_tensor(x[test]), torch.as_tensor(y[test]))


def class_images(n_classes: int = 10, n_train: int = 5000, n_test: int = 1000, size: int = 32,
                 noise: float = 1.0, seed: int = 0) -> Split:
    r"""Synthetic class images: class :math:`k` is a smooth random prototype :math:`P_k` (white noise
    blurred by a Gaussian of width ``size``/8, unit variance), and an example is
    :math:`P_k + \text{noise}\cdot Z` with white noise :math:`Z`; shape ``(N, 1, size, size)``."""
    if min(n_classes, n_train, n_test, size) < 1 or noise < 0:
        raise ValueError("n_classes, n_train, n_test and size must be positive and noise non-negative")
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(size)
    blur = np.exp(-(freq[:, None] ** 2 + freq[None, :] ** 2) * (2 * np.pi * size / 8) ** 2 / 2)
    prototypes = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n_classes, size, size))) * blur))
    prototypes /= prototypes.std(axis=(1, 2), keepdims=True)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rng.integers(0, n_classes, size=n)
        x = prototypes[labels] + noise * rng.normal(size=(n, size, size))
        return torch.as_tensor(x[:, None].astype(np.float32)), torch.as_tensor(labels.astype(np.int64))

    return Split(*sample(n_train), *sample(n_test))


def _log(p: float) -> float:
    """:math:`\\log p`, with :math:`\\log 0=-\\infty` (a construction the grammar never produces)."""
    return math.log(p) if p > 0 else -math.inf


class Grammar:
    r"""A probabilistic grammar with number agreement and relative clauses (chapter
    ``decision-tree-language-models``), unambiguous, so sentence probabilities are exact:

    * :math:`S\to NP_\nu\,VP_\nu\ \text{"."}`, :math:`\nu` uniform over singular/plural;
    * :math:`NP_\nu\to Det_\nu\,[Adj]\,N_\nu\,[RC]`, the adjective with probability ``p_adjective`` and the
      relative clause (outside relative clauses only) with probability ``p_clause``;
    * :math:`RC\to\textit{that}\ NP_{\nu'}\,Vt_{\nu'}`, :math:`\nu'` uniform;
    * :math:`VP_\nu\to Vi_\nu` (probability 1/2) or :math:`Vt_\nu\,NP_{\nu''}`, :math:`\nu''` uniform;

    every word uniform within its class (33 word types).
    """

    DETERMINERS = {"sg": ("the", "a"), "pl": ("the", "some")}
    NOUNS = {"sg": ("dog", "cat", "bird", "fox", "girl", "boy"), "pl": ("dogs", "cats", "birds", "foxes", "girls", "boys")}
    TRANSITIVE = {"sg": ("chases", "sees", "likes"), "pl": ("chase", "see", "like")}
    INTRANSITIVE = {"sg": ("sleeps", "runs", "sings"), "pl": ("sleep", "run", "sing")}
    ADJECTIVES = ("big", "small", "red", "old")
    STOP = "."

    def __init__(self, p_adjective: float = 0.3, p_clause: float = 0.3):
        if not (0 <= p_adjective <= 1 and 0 <= p_clause <= 1):
            raise ValueError(f"probabilities must lie in [0, 1], got {p_adjective}, {p_clause}")
        self.p_adjective, self.p_clause = p_adjective, p_clause
        words = ["the", "a", "some", *self.ADJECTIVES, "that", self.STOP]
        for table in (self.NOUNS, self.TRANSITIVE, self.INTRANSITIVE):
            words += list(table["sg"]) + list(table["pl"])
        self.vocabulary = tuple(dict.fromkeys(words))
        self.index = {word: k for k, word in enumerate(self.vocabulary)}

    # sampling -----------------------------------------------------------------------------------
    def _noun_phrase(self, rng, number, clause_allowed):
        words = [self.DETERMINERS[number][rng.integers(2)]]
        if rng.random() < self.p_adjective:
            words.append(self.ADJECTIVES[rng.integers(4)])
        words.append(self.NOUNS[number][rng.integers(6)])
        if clause_allowed and rng.random() < self.p_clause:
            inner = ("sg", "pl")[rng.integers(2)]
            words += ["that", *self._noun_phrase(rng, inner, False), self.TRANSITIVE[inner][rng.integers(3)]]
        return words

    def sample(self, n_sentences: int, seed: int = 0) -> list[list[str]]:
        """``n_sentences`` sentences, each ending with the stop token."""
        rng = np.random.default_rng(seed)
        sentences = []
        for _ in range(n_sentences):
            number = ("sg", "pl")[rng.integers(2)]
            words = self._noun_phrase(rng, number, True)
            if rng.random() < 0.5:
                words.append(self.INTRANSITIVE[number][rng.integers(3)])
            else:
                words.append(self.TRANSITIVE[number][rng.integers(3)])
                words += self._noun_phrase(rng, ("sg", "pl")[rng.integers(2)], True)
            sentences.append(words + [self.STOP])
        return sentences

    # exact probability by a recursive-descent parse -------------------------------------------------
    def _parse_noun_phrase(self, words, at, clause_allowed):
        """(log-probability, next index, number) of the NP starting at ``at``, or None."""
        if at >= len(words):
            return None
        log_p, determiner = 0.0, words[at]
        at += 1
        if at < len(words) and words[at] in self.ADJECTIVES:
            log_p += _log(self.p_adjective / 4)
            at += 1
        else:
            log_p += _log(1 - self.p_adjective)
        if at >= len(words):
            return None
        number = next((nu for nu in ("sg", "pl") if words[at] in self.NOUNS[nu]), None)
        if number is None or determiner not in self.DETERMINERS[number]:
            return None
        log_p += math.log(1 / 2) + math.log(1 / 6)
        at += 1
        if clause_allowed:
            if at < len(words) and words[at] == "that":
                inner = self._parse_noun_phrase(words, at + 1, False)
                if inner is None or inner[1] >= len(words) or words[inner[1]] not in self.TRANSITIVE[inner[2]]:
                    return None
                log_p += _log(self.p_clause) + math.log(1 / 2) + inner[0] + math.log(1 / 3)
                at = inner[1] + 1
            else:
                log_p += _log(1 - self.p_clause)
        return log_p, at, number

    def log_prob(self, sentence: Sequence[str]) -> float:
        """:math:`\\log P(\\text{sentence})` under the grammar; ``-inf`` if it is not grammatical."""
        words = list(sentence)
        subject = self._parse_noun_phrase(words, 0, True)
        if subject is None:
            return -math.inf
        log_p, at, number = subject
        log_p += math.log(1 / 2)
        if at < len(words) and words[at] in self.INTRANSITIVE[number]:
            log_p += math.log(1 / 2 / 3)
            at += 1
        elif at < len(words) and words[at] in self.TRANSITIVE[number]:
            obj = self._parse_noun_phrase(words, at + 1, True)
            if obj is None:
                return -math.inf
            log_p += math.log(1 / 2 / 3) + math.log(1 / 2) + obj[0]
            at = obj[1]
        else:
            return -math.inf
        return log_p if words[at:] == [self.STOP] else -math.inf

    def is_grammatical(self, sentence: Sequence[str]) -> bool:
        return self.log_prob(sentence) > -math.inf

    def entropy_rate(self, n_sentences: int = 200_000, seed: int = 0) -> float:
        r"""Monte-Carlo per-token entropy (nats) of a stream of independent sentences,
        :math:`\mathbb E[-\log P(S)]/\mathbb E|S|`: the log-loss floor of any next-token model."""
        sentences = self.sample(n_sentences, seed)
        return -sum(self.log_prob(s) for s in sentences) / sum(len(s) for s in sentences)

    def encode(self, sentences: Iterable[Sequence[str]]) -> list[list[int]]:
        return [[self.index[w] for w in s] for s in sentences]

    def agreement_items(self, n_items: int, seed: int = 0) -> list[tuple[list[int], list[int], list[int]]]:
        """Prefixes that end just before the main verb, whose subject carries a relative clause with a noun of
        the other number (an *attractor*), with the verb ids that agree with the head and those that do not."""
        rng = np.random.default_rng(seed)
        items = []
        for _ in range(n_items):
            number, other = ("sg", "pl") if rng.integers(2) == 0 else ("pl", "sg")
            words = self._noun_phrase(rng, number, False)
            words += ["that", *self._noun_phrase(rng, other, False), self.TRANSITIVE[other][rng.integers(3)]]
            verbs = {nu: [self.index[v] for v in self.INTRANSITIVE[nu] + self.TRANSITIVE[nu]] for nu in ("sg", "pl")}
            items.append((self.encode([words])[0], verbs[number], verbs[other]))
        return items


BOOLEAN_TOKENS = ("T", "F", "!", "&", "|", "(", ")", "=", "<pad>")
"""The tokens of :func:`boolean_expressions` plus the query ``=`` and a padding token."""


def boolean_expressions(n_expressions: int, max_depth: int = 3, seed: int = 0) -> tuple[list[list[str]], list[bool]]:
    """Random Boolean expressions over ``T``/``F`` with ``!``, ``&``, ``|`` and parentheses, nested at most
    ``max_depth`` deep (a stand-in for BIG-Bench-Hard's boolean expressions), and their values."""
    rng = np.random.default_rng(seed)

    def expression(depth):
        if depth == 0 or rng.random() < 0.25:
            value = bool(rng.integers(2))
            return ["T" if value else "F"], value
        kind = rng.integers(3)
        if kind == 0:
            tokens, value = expression(depth - 1)
            return ["!", *tokens], not value
        (left, a), (right, b) = expression(depth - 1), expression(depth - 1)
        operator = "&" if kind == 1 else "|"
        return ["(", *left, operator, *right, ")"], (a and b) if kind == 1 else (a or b)

    pairs = [expression(max_depth) for _ in range(n_expressions)]
    return [tokens for tokens, _ in pairs], [value for _, value in pairs]


class ClassPopulation:
    r"""A population of classes for transfer (chapter ``collapse-and-transfer``). A class is a latent
    :math:`c\sim N(0,I_{k})`; a sample is :math:`z=[c+0.3\xi,\ 1.5\eta]` with :math:`\xi\sim N(0,I_k)`,
    :math:`\eta\sim N(0,I_{m})`, rendered as :math:`x=\tanh(1.5\tanh(1.5\,zA_1)A_2)+0.05\zeta` with fixed
    Gaussian :math:`A_1,A_2` of variance 1/fan-in. Two views of a sample share :math:`c+0.3\xi` and
    resample the nuisance :math:`\eta` and the noise :math:`\zeta`."""

    def __init__(self, latent_dim: int = 8, nuisance_dim: int = 8, input_dim: int = 64, seed: int = 0):
        if min(latent_dim, nuisance_dim, input_dim) < 1:
            raise ValueError("latent_dim, nuisance_dim and input_dim must be positive")
        rng = np.random.default_rng(seed)
        width = latent_dim + nuisance_dim
        self.latent_dim, self.nuisance_dim, self.input_dim = latent_dim, nuisance_dim, input_dim
        self.A1 = rng.normal(0, 1 / np.sqrt(width), size=(width, input_dim))
        self.A2 = rng.normal(0, 1 / np.sqrt(input_dim), size=(input_dim, input_dim))

    def draw_classes(self, n_classes: int, seed: int = 0) -> np.ndarray:
        if n_classes < 1:
            raise ValueError(f"n_classes: got {n_classes}, expected a positive integer")
        return np.random.default_rng(seed).normal(size=(n_classes, self.latent_dim))

    def _render(self, content: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        nuisance = 1.5 * rng.normal(size=(len(content), self.nuisance_dim))
        z = np.concatenate([content, nuisance], axis=1)
        x = np.tanh(1.5 * np.tanh(1.5 * z @ self.A1) @ self.A2)
        return (x + 0.05 * rng.normal(size=x.shape)).astype(np.float32)

    def sample(self, classes: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``per_class`` samples of each class latent; returns inputs and labels (row index of the class)."""
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(len(classes)), per_class)
        content = classes[labels] + 0.3 * rng.normal(size=(len(labels), self.latent_dim))
        return self._render(content, rng), labels

    def augment(self, classes: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Two views of ``per_class`` samples of each class, and the labels."""
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(len(classes)), per_class)
        content = classes[labels] + 0.3 * rng.normal(size=(len(labels), self.latent_dim))
        return self._render(content, rng), self._render(content, rng), labels


def gaussian_two_class(n_per_class: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""Two Gaussian classes :math:`N(\mp2\cdot\mathbf 1,0.25I)` in ``dim`` dimensions, ``n_per_class`` each."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    x = np.where(labels[:, None] == 0, -2.0, 2.0) + 0.5 * rng.normal(size=(2 * n_per_class, dim))
    return x, labels


def gaussian_mixture(n_samples: int, dim: int, n_classes: int, separation: float = 3.0, seed: int = 0) -> Split:
    r"""A balanced Gaussian mixture: class means :math:`\mu_k\sim N(0,\frac{s^2}{d}I)` with :math:`s` =
    ``separation`` (so :math:`\|\mu_k-\mu_l\|\approx s\sqrt2`), samples :math:`\mu_{y}+N(0,I)/\sqrt d` with labels
    cycling through the classes; every sample is in the training set (the test set is empty)."""
    if min(n_samples, dim) < 1 or n_classes < 2 or separation < 0:
        raise ValueError(f"need n_samples, dim >= 1, n_classes >= 2 and separation >= 0; got "
                         f"{n_samples}, {dim}, {n_classes}, {separation}")
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=separation / np.sqrt(dim), size=(n_classes, dim))
    labels = np.arange(n_samples) % n_classes
    x = (means[labels] + rng.normal(scale=1 / np.sqrt(dim), size=(n_samples, dim))).astype(np.float32)
    return Split(torch.as_tensor(x), torch.as_tensor(labels.astype(np.int64)),
                 torch.zeros(0, dim), torch.zeros(0, dtype=torch.int64))
