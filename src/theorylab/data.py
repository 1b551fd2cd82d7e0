"""Data the chapters use: generated in code or shipped inside an installed package (the ``ci``
profile, never downloaded), and loaders of the papers' public image sets (``full``), downloaded on
first use into a cache folder."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .validation import positive_int


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


# --- The papers' public image sets (``full`` profile) -------------------------------------------
#
# The loaders read the on-disk formats the sets' authors publish (and torchvision writes): the
# CIFAR "python version" pickles and MNIST's IDX files. torchvision itself is not a dependency: the
# release built for torch 2.13.0 on PyPI is a CUDA build that does not import beside the CPU build
# the book pins. A folder torchvision filled (``root=...`` of its data sets) works as the cache.

DATA_ENV = "THEORYLAB_DATA"
"""Environment variable naming the cache folder of downloaded data sets."""


@dataclass(frozen=True)
class PublicImageSet:
    """A public image set: where it comes from, which files make it, and their shape."""

    name: str
    title: str
    urls: tuple[tuple[str, str], ...]  # (url, md5) of each archive or file to fetch
    folder: str
    files: tuple[str, ...]  # relative to ``folder``: what must exist before loading
    shape: tuple[int, int, int]
    n_classes: int
    n_train: int
    n_test: int


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
PUBLIC_IMAGE_SETS: dict[str, PublicImageSet] = {
    "cifar10": PublicImageSet(
        "cifar10", "CIFAR-10",
        (("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        "cifar-10-batches-py",
        tuple(f"data_batch_{k}" for k in range(1, 6)) + ("test_batch", "batches.meta"),
        (3, 32, 32), 10, 50_000, 10_000),
    "cifar100": PublicImageSet(
        "cifar100", "CIFAR-100",
        (("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        "cifar-100-python", ("train", "test", "meta"), (3, 32, 32), 100, 50_000, 10_000),
    "mnist": PublicImageSet(
        "mnist", "MNIST",
        tuple((_MNIST_URL + name, md5) for name, md5 in (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"))),
        "MNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"),
        (1, 28, 28), 10, 60_000, 10_000),
}


@dataclass(frozen=True)
class PublicTextSet:
    """A public text corpus: plain-text files of documents separated by :attr:`separator`."""

    name: str
    title: str
    base_url: str
    folder: str
    files: tuple[str, ...]  # file names, fetched from ``base_url + name``, kept under ``folder``
    separator: str
    min_documents: tuple[int, ...]  # a complete file holds at least this many documents (a check against truncation)


PUBLIC_TEXT_SETS: dict[str, PublicTextSet] = {
    # Eldan and Li's TinyStories, the original files (stories by GPT-3.5 and GPT-4): the validation
    # file holds the 21,990 stories Gan et al. list as their validation set; the training file some
    # two million stories, of which they list 147,273. No MD5 or SHA-256 is published beside the
    # files that we know of; the Hugging Face hub names the SHA-256 of each large (LFS) file in the
    # ``X-Linked-Etag`` header of its redirect, and the download is checked against it when the hub
    # gives it (and always against ``Content-Length`` and a least number of stories). The chapter
    # records the SHA-256 of the files it read.
    "tinystories": PublicTextSet(
        "tinystories", "TinyStories",
        "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/", "tinystories",
        ("TinyStories-train.txt", "TinyStories-valid.txt"), "<|endoftext|>", (1_000_000, 20_000)),
}


class DatasetUnavailable(RuntimeError):
    """A public data set is neither in the cache nor downloadable: the message says what to do."""


def data_cache() -> Path:
    """``$THEORYLAB_DATA``, else ``$XDG_CACHE_HOME/theorylab/data``, else ``~/.cache/theorylab/data``."""
    import os

    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "theorylab" / "data"


def public_set(name: str) -> PublicImageSet | PublicTextSet:
    if name in PUBLIC_TEXT_SETS:
        return PUBLIC_TEXT_SETS[name]
    if name not in PUBLIC_IMAGE_SETS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(PUBLIC_IMAGE_SETS) + sorted(PUBLIC_TEXT_SETS)}")
    return PUBLIC_IMAGE_SETS[name]


def is_cached(name: str, root: Path | None = None) -> bool:
    """Whether every file of data set ``name`` is present under ``root`` (default :func:`data_cache`)."""
    spec = public_set(name)
    folder = (root or data_cache()) / spec.folder
    return all((folder / file).exists() for file in spec.files)


def _md5(path: Path) -> str:
    import hashlib

    digest = hashlib.md5()  # the publishers' checksums are MD5: integrity, not security
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unavailable(spec: PublicImageSet, root: Path, reason: str) -> DatasetUnavailable:
    files = "\n".join(f"    {url}  (md5 {md5})" for url, md5 in spec.urls)
    return DatasetUnavailable(
        f"{spec.title} is not in {root / spec.folder} and could not be downloaded ({reason}).\n"
        f"  On a machine with network, fetch:\n{files}\n"
        + (f"  then gunzip the four files into {root / spec.folder}" if spec.name == "mnist" else
           f"  then extract the archive under {root} (it makes {spec.folder}/)")
        + f"; or point ${DATA_ENV} at a folder that holds them (a torchvision root works).\n"
        "  To try the code path without the data, run with --smoke.")


def ensure_public_set(name: str, root: Path | None = None, download: bool = True) -> Path:
    """The folder of data set ``name``, downloading it on first use (checksums verified).

    Raises :class:`DatasetUnavailable`, naming the set, the folder and how to place the files by
    hand, when the files are absent and ``download`` is off or the network is unreachable."""
    import gzip
    import http.client
    import shutil
    import tarfile
    import tempfile
    import urllib.request

    if name in PUBLIC_TEXT_SETS:
        return ensure_text_set(name, root, download)
    spec = public_set(name)
    root = root or data_cache()
    if is_cached(name, root):
        return root / spec.folder
    if not download:
        raise _unavailable(spec, root, "downloads are off")
    root.mkdir(parents=True, exist_ok=True)
    # Everything is written under a private scratch folder and moved into place at the end, so that an
    # interrupted download or extraction never leaves files that look complete, and two runs that
    # start on an empty cache at once (a sweep's seeds) do not write into each other's files.
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as scratch_name:
        scratch = Path(scratch_name)
        for url, md5 in spec.urls:
            archive = root / url.rsplit("/", 1)[1]
            if not (archive.exists() and _md5(archive) == md5):
                fetched = scratch / archive.name
                try:
                    with urllib.request.urlopen(url, timeout=60) as response, fetched.open("wb") as out:
                        shutil.copyfileobj(response, out)
                except (OSError, http.client.HTTPException) as error:
                    raise _unavailable(spec, root, f"{url}: {error}") from None
                if _md5(fetched) != md5:
                    raise _unavailable(spec, root, f"{url}: checksum mismatch")
                fetched.replace(archive)  # verified: kept, so a failed extraction need not download again
            if archive.name.endswith(".tar.gz"):
                with tarfile.open(archive) as packed:
                    packed.extractall(scratch / "extracted", filter="data")
            else:  # MNIST: one gzip per file
                target = scratch / "extracted" / spec.folder / archive.name[:-3]
                target.parent.mkdir(parents=True, exist_ok=True)
                with gzip.open(archive) as packed, target.open("wb") as out:
                    shutil.copyfileobj(packed, out)
        final = root / spec.folder
        if not is_cached(name, root):  # another run may have finished first
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(final, ignore_errors=True)
            (scratch / "extracted" / spec.folder).replace(final)
    return root / spec.folder


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): magic ``0x0000 08 D``, D big-endian sizes, then unsigned bytes."""
    raw = path.read_bytes()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _read_cifar(folder: Path, files: Sequence[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    import pickle

    images, labels = [], []
    for file in files:
        with (folder / file).open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_public_set(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` of data set ``name`` read from ``folder``: uint8 images
    ``(N, C, H, W)`` and int64 labels, in the files' order."""
    spec = public_set(name)
    if name == "mnist":
        parts = [_read_idx(folder / file) for file in spec.files]
        return (parts[0][:, None], parts[1].astype(np.int64), parts[2][:, None], parts[3].astype(np.int64))
    if name == "cifar10":
        x_train, y_train = _read_cifar(folder, spec.files[:5], b"labels")
        x_test, y_test = _read_cifar(folder, ["test_batch"], b"labels")
    else:
        x_train, y_train = _read_cifar(folder, ["train"], b"fine_labels")
        x_test, y_test = _read_cifar(folder, ["test"], b"fine_labels")
    return x_train, y_train, x_test, y_test


def write_fake_public_set(name: str, root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write a small stand-in for data set ``name`` under ``root`` in the set's real on-disk format
    (CIFAR pickles, MNIST IDX files): class-dependent random images, for ``--smoke`` runs and tests."""
    import pickle

    spec = public_set(name)
    n_train, n_test = positive_int("n_train", n_train), positive_int("n_test", n_test)
    rng = np.random.default_rng(seed)
    folder = root / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    means = rng.uniform(40, 215, size=(spec.n_classes, *spec.shape))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, spec.n_classes, n)
        images = np.clip(means[labels] + rng.normal(0, 40, (n, *spec.shape)), 0, 255).astype(np.uint8)
        return images, labels

    (x_train, y_train), (x_test, y_test) = draw(n_train), draw(n_test)
    if name == "mnist":
        for file, array in zip(spec.files, (x_train[:, 0], y_train, x_test[:, 0], y_test), strict=True):
            array = np.asarray(array, dtype=np.uint8)
            header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            (folder / file).write_bytes(header + array.tobytes())
        return folder
    key = b"labels" if name == "cifar10" else b"fine_labels"
    pieces = ({f"data_batch_{k + 1}": k for k in range(5)} if name == "cifar10" else {"train": None})
    for file, k in pieces.items():
        part = slice(None) if k is None else slice(k * n_train // 5, (k + 1) * n_train // 5)
        batch = {b"data": x_train[part].reshape(len(x_train[part]), -1), key: y_train[part].tolist()}
        (folder / file).write_bytes(pickle.dumps(batch))
    test_name = "test_batch" if name == "cifar10" else "test"
    (folder / test_name).write_bytes(pickle.dumps({b"data": x_test.reshape(n_test, -1), key: y_test.tolist()}))
    meta_name, meta_key = ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    (folder / meta_name).write_bytes(pickle.dumps({meta_key: [f"class {c}".encode() for c in range(spec.n_classes)]}))
    return folder


def public_images(name: str, *, smoke: bool = False, root: Path | None = None, download: bool = True,
                  device: torch.device | str = "cpu", smoke_sizes: tuple[int, int] = (200, 100),
                  seed: int = 0) -> Split:
    r"""Data set ``name`` as a :class:`Split` on ``device``: float32 images standardised per channel
    with the training set's mean and standard deviation, :math:`(x - \mu_c)/\sigma_c`, int64 labels.

    With ``smoke=True`` and the real set absent from the cache, a stand-in of ``smoke_sizes`` images is
    written in the real format to a temporary folder (never into the cache) and read back through the
    same code path; otherwise the set is read from the cache, downloaded on first use."""
    import tempfile

    root = Path(root) if root is not None else data_cache()
    if smoke and not is_cached(name, root):
        with tempfile.TemporaryDirectory(prefix=f"theorylab-smoke-{name}-") as scratch:
            folder = write_fake_public_set(name, Path(scratch), *smoke_sizes, seed=seed)
            x_train, y_train, x_test, y_test = read_public_set(name, folder)
    else:
        x_train, y_train, x_test, y_test = read_public_set(name, ensure_public_set(name, root, download))
    if smoke:
        x_train, y_train = x_train[: smoke_sizes[0]], y_train[: smoke_sizes[0]]
        x_test, y_test = x_test[: smoke_sizes[1]], y_test[: smoke_sizes[1]]
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = x_train.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)

    def tensor(images: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(((images - mean) / std).astype(np.float32), device=device)

    return Split(tensor(x_train), torch.as_tensor(y_train, device=device), tensor(x_test),
                 torch.as_tensor(y_test, device=device))


# --- Public text corpora (``full`` profile) ---------------------------------------------------------


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _text_unavailable(spec: PublicTextSet, root: Path, reason: str) -> DatasetUnavailable:
    files = "\n".join(f"    {spec.base_url}{file}" for file in spec.files)
    return DatasetUnavailable(
        f"{spec.title} is not in {root / spec.folder} and could not be downloaded ({reason}).\n"
        f"  On a machine with network, fetch:\n{files}\n  and put them in {root / spec.folder}; or point "
        f"${DATA_ENV} at a folder whose {spec.folder}/ holds them.\n"
        "  To try the code path without the data, run with --smoke.")


def count_documents(path: Path, separator: str) -> int:
    """How many ``separator``-delimited documents with any non-blank text a file holds (streamed)."""
    count, tail = 0, ""
    with Path(path).open(encoding="utf-8") as handle:
        for block in iter(lambda: handle.read(1 << 22), ""):
            pieces = (tail + block).split(separator)
            tail = pieces.pop()
            count += sum(1 for piece in pieces if piece.strip())
    return count + (1 if tail.strip() else 0)


def hub_sha256(url: str) -> str | None:
    """The SHA-256 the Hugging Face hub names for a large file: the ``X-Linked-Etag`` header of the
    redirect its ``resolve`` URL answers with (a HEAD request, the redirect not followed); None when
    there is no such header or the request fails (the download then reports the failure)."""
    import http.client
    import re
    import urllib.error
    import urllib.request

    if not url.startswith("https://huggingface.co/"):
        return None

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(Stay).open(urllib.request.Request(url, method="HEAD"), timeout=60) as r:
            headers = r.headers
    except urllib.error.HTTPError as answer:  # the redirect itself, or a refusal
        headers = answer.headers
    except (OSError, http.client.HTTPException):
        return None
    tag = (headers.get("X-Linked-Etag") or "").strip('"') if headers is not None else ""
    return tag if re.fullmatch(r"[0-9a-f]{64}", tag) else None


def ensure_text_set(name: str, root: Path | None = None, download: bool = True) -> Path:
    """The folder of text corpus ``name`` (:data:`PUBLIC_TEXT_SETS`), downloading each missing file on
    first use through a scratch file that is moved into place only once complete and checked:
    its length equals ``Content-Length``, its SHA-256 equals the one the hub names
    (:func:`hub_sha256`) when it names one, and it holds at least the expected number of documents. Raises
    :class:`DatasetUnavailable` (before any work) when a file is absent and cannot be fetched."""
    import http.client
    import re
    import shutil
    import tempfile
    import urllib.request

    spec = PUBLIC_TEXT_SETS[name]
    root = Path(root) if root is not None else data_cache()
    folder = root / spec.folder
    if is_cached(name, root):
        return folder
    if not download:
        raise _text_unavailable(spec, root, "downloads are off")
    folder.mkdir(parents=True, exist_ok=True)
    for file, minimum in zip(spec.files, spec.min_documents, strict=True):
        if (folder / file).exists():
            continue
        url = spec.base_url + file
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=folder) as scratch:
            fetched = Path(scratch) / file
            try:
                expected = hub_sha256(url)
                with urllib.request.urlopen(url, timeout=60) as response, fetched.open("wb") as out:
                    length = response.headers.get("Content-Length")
                    expected = expected or (response.headers.get("X-Linked-Etag") or "").strip('"')
                    shutil.copyfileobj(response, out, 1 << 22)
            except (OSError, http.client.HTTPException) as error:
                raise _text_unavailable(spec, root, f"{url}: {error}") from None
            if length is not None and fetched.stat().st_size != int(length):
                raise _text_unavailable(spec, root, f"{url}: {fetched.stat().st_size} bytes of {length}")
            if re.fullmatch(r"[0-9a-f]{64}", expected or "") and sha256_file(fetched) != expected:
                raise _text_unavailable(spec, root, f"{url}: SHA-256 differs from the hub's {expected}")
            if count_documents(fetched, spec.separator) < minimum:
                raise _text_unavailable(spec, root, f"{url}: fewer than {minimum:,} documents")
            if not (folder / file).exists():  # another run may have finished first
                fetched.replace(folder / file)
    return folder
