r"""The paper's tree language model at its scale, on TinyStories (chapter
``decision-tree-language-models``, ``full`` profile; after Gan, Galanti, Poggio and Malach, NeurIPS 2024).

Stories are split into lower-cased words and punctuation marks, mapped to a capped vocabulary
(``<unk>`` for the rest) and framed by the end-of-text token :math:`\varepsilon`:
:math:`(\varepsilon, w_1, \dots, w_n, \varepsilon)`. Word2Vec (gensim) gives each token an embedding
:math:`e_w\in\mathbb R^d`; the context of position :math:`t` of a story is the window average

.. math:: c_t=\frac{\sum_{a<L,\ t-a\ge0}\lambda^a e_{x_{t-a}}}{\sum_{a<L,\ t-a\ge0}\lambda^a},

XGBoost regresses :math:`e_{x_{t+1}}` on :math:`c_t` (one tree per coordinate per round), and the
prediction is the token whose embedding is nearest by cosine; probabilities are
:math:`\mathrm{softmax}(\cos/\tau)` with :math:`\tau` fitted on held-out training positions. A causal
transformer (:class:`theorylab.tinylm.TinyTransformer`) with about as many parameters is trained
beside it on the same tokens.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEPARATOR = "<|endoftext|>"
"""What separates two stories in the TinyStories text files."""
UNK, EOT = "<unk>", "<|endoftext|>"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[^\sa-z0-9]")
_NO_SPACE_BEFORE = set(".,!?;:)'\"")


# ----------------------------------------------------------------------------------------------
# Reading the corpus


def iter_stories(path: Path | str, limit: int | None = None) -> Iterator[str]:
    """The stories of a TinyStories text file in order (blocks between :data:`SEPARATOR`, stripped,
    blank ones skipped), at most ``limit``; the file is streamed, never read whole."""
    if limit is not None and limit <= 0:
        return
    count, tail = 0, ""
    with Path(path).open(encoding="utf-8") as handle:
        for block in iter(lambda: handle.read(1 << 20), ""):
            pieces = (tail + block).split(SEPARATOR)
            tail = pieces.pop()
            for piece in pieces:
                if piece.strip():
                    yield piece.strip()
                    count += 1
                    if limit is not None and count >= limit:
                        return
    if tail.strip():
        yield tail.strip()


def read_stories(path: Path | str, limit: int | None = None) -> list[str]:
    """:func:`iter_stories` as a list."""
    return list(iter_stories(path, limit))


_NAMES = ("Lily", "Tom", "Ben", "Mia", "Sam", "Anna")
_THINGS = ("ball", "cat", "dog", "tree", "cake", "box", "bird", "boat")
_FEELINGS = ("happy", "sad", "scared", "proud")


def write_stand_in(path: Path | str, n_stories: int, seed: int = 0) -> Path:
    """A small file in TinyStories' format (stories separated by ``<|endoftext|>`` lines) of
    template stories, for ``--smoke`` runs and tests; never the real data."""
    rng = np.random.default_rng(seed)
    stories = []
    for _ in range(n_stories):
        name, friend = rng.choice(_NAMES, 2, replace=False)
        thing, other = rng.choice(_THINGS, 2, replace=False)
        feeling = rng.choice(_FEELINGS)
        opening = rng.choice(["Once upon a time, there was a little girl named", "One day, a kid named"])
        stories.append(
            f"{opening} {name}. {name} had a {thing}. "
            f"One day, {name} saw a {other} in the park. {name} was {feeling}. "
            f"{friend} said, \"Let's play with the {other}!\" They played all day. "
            f"The {thing} and the {other} were friends. {name} and {friend} were {feeling} too.")
    path = Path(path)
    path.write_text("".join(f"{story}\n{SEPARATOR}\n" for story in stories), encoding="utf-8")
    return path


def tinystories_paths(*, smoke: bool, scratch: Path | None = None, root: Path | None = None,
                      smoke_stories: tuple[int, int] = (60, 20), seed: int = 0) -> tuple[Path, Path]:
    """``(train, valid)`` text files: the real TinyStories files from the cache (downloaded on first
    use by :func:`theorylab.data.ensure_public_set`); with ``smoke`` and the real set absent, stand-ins
    of ``smoke_stories`` stories written under ``scratch`` (a temporary folder, never the cache)."""
    from . import data

    if smoke and not data.is_cached("tinystories", root):
        if scratch is None:
            raise ValueError("smoke: give a scratch folder for the stand-in files")
        return (write_stand_in(Path(scratch) / "TinyStories-train.txt", smoke_stories[0], seed),
                write_stand_in(Path(scratch) / "TinyStories-valid.txt", smoke_stories[1], seed + 1))
    folder = data.ensure_public_set("tinystories", root)
    train, valid = data.PUBLIC_TEXT_SETS["tinystories"].files
    return folder / train, folder / valid


# ----------------------------------------------------------------------------------------------
# Words and a vocabulary


_STRAIGHT = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters and digits, with inner apostrophes: ``didn't``) and single
    punctuation marks, in order, curly quotes read as straight ones; white space is dropped."""
    return _TOKEN.findall(text.lower().translate(_STRAIGHT))


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens joined by single spaces, except before closing punctuation (``. , ! ? ; : ) ' "``)."""
    out = ""
    for k, token in enumerate(tokens):
        out += token if k == 0 or token in _NO_SPACE_BEFORE else " " + token
    return out


@dataclass
class Vocabulary:
    """Tokens by id: ``<unk>`` is 0, the end-of-text token 1, then words by falling count (ties in
    alphabetical order), at most ``size`` in all."""

    words: list[str]

    @classmethod
    def build(cls, tokenized: Iterable[Sequence[str]], size: int) -> Vocabulary:
        if size < 3:
            raise ValueError(f"a vocabulary needs room for <unk>, the end token and a word: size {size}")
        counts = Counter(token for story in tokenized for token in story)
        counts.pop(UNK, None), counts.pop(EOT, None)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: size - 2]
        return cls([UNK, EOT] + [word for word, _ in ranked])

    def __post_init__(self) -> None:
        self.index = {word: k for k, word in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @property
    def eot(self) -> int:
        return 1

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(token, 0) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[int(k)] for k in ids]

    def frame(self, tokens: Sequence[str]) -> list[int]:
        """A story's ids between two end tokens: ``[eot, *ids, eot]``."""
        return [self.eot, *self.encode(tokens), self.eot]


@dataclass
class Stream:
    """Framed stories laid end to end: ``tokens`` (int64), and for each position the index of its
    story's first token (``starts``); ``positions`` are those with a next token in the same story
    (the contexts a model is trained or scored on), ``targets`` those next tokens."""

    tokens: np.ndarray
    starts: np.ndarray
    positions: np.ndarray

    @classmethod
    def of(cls, framed: Sequence[Sequence[int]]) -> Stream:
        lengths = np.array([len(s) for s in framed], dtype=np.int64)
        if len(framed) == 0 or lengths.min() < 2:
            raise ValueError("every framed story needs at least two tokens (the two end tokens)")
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        tokens = np.concatenate([np.asarray(s, dtype=np.int64) for s in framed])
        starts = np.repeat(offsets, lengths)
        last = np.zeros(tokens.size, dtype=bool)
        last[offsets + lengths - 1] = True
        return cls(tokens, starts, np.flatnonzero(~last))

    @property
    def targets(self) -> np.ndarray:
        return self.tokens[self.positions + 1]


def window_features(stream: Stream, positions: np.ndarray, embeddings: np.ndarray, context_length: int,
                    decay: float) -> np.ndarray:
    r""":math:`c_t` of the module docstring at each of ``positions`` of the stream: the
    :math:`\lambda^{a}`-weighted mean of the embeddings of the last ``context_length`` tokens up to
    and including position :math:`t`, never reaching before its story's start. Float32."""
    if context_length < 1 or not 0 < decay <= 1:
        raise ValueError(f"context_length >= 1 and decay in (0, 1] required, got {context_length}, {decay}")
    positions = np.asarray(positions, dtype=np.int64)
    out = np.zeros((positions.size, embeddings.shape[1]), dtype=np.float64)
    total = np.zeros(positions.size)
    for age in range(context_length):
        source = positions - age
        valid = source >= stream.starts[positions]
        weight = decay ** age
        out[valid] += weight * embeddings[stream.tokens[source[valid]]]
        total[valid] += weight
    return (out / total[:, None]).astype(np.float32)


def nearest_tokens(predicted: np.ndarray, embeddings: np.ndarray, exclude: Sequence[int] = (),
                   batch: int = 8192) -> np.ndarray:
    """For each predicted vector the id of the token whose embedding has the largest cosine with it
    (the lowest id on ties), never one of ``exclude``; in batches of ``batch`` rows."""
    from .ardt_pipeline import cosines

    out = np.empty(len(predicted), dtype=np.int64)
    for start in range(0, len(predicted), batch):
        scores = cosines(np.asarray(predicted[start:start + batch], dtype=np.float64), embeddings)
        scores[:, list(exclude)] = -np.inf
        out[start:start + batch] = scores.argmax(axis=1)
    return out


# ----------------------------------------------------------------------------------------------
# The two models


def xgboost_cuda_build() -> bool:
    """Whether the installed XGBoost was built with CUDA (the book pins ``xgboost-cpu``: it was not)."""
    import xgboost

    return bool(xgboost.build_info().get("USE_CUDA"))


def xgboost_device(device: Any) -> str:
    """``"cuda"`` when the installed XGBoost was built with CUDA and ``device`` is a CUDA device;
    else ``"cpu"``."""
    return "cuda" if xgboost_cuda_build() and str(device).startswith("cuda") else "cpu"


def train_word2vec(tokenized: Sequence[Sequence[str]], dimension: int, window: int, epochs: int, seed: int,
                   workers: int | None = 1):
    """gensim skip-gram Word2Vec on the tokenized stories, each framed by the end token; every
    token kept (``min_count=1``). One worker is deterministic; more (None: every core) are faster
    and are not."""
    from gensim.models import Word2Vec

    from .ardt_pipeline import stable_hash

    corpus = [[EOT, *story, EOT] for story in tokenized]
    return Word2Vec(corpus, vector_size=dimension, window=window, min_count=1, sg=1, workers=workers or os.cpu_count(),
                    seed=seed, epochs=epochs, hashfxn=stable_hash)


def embedding_table(word2vec: Any, vocabulary: Vocabulary, seed: int = 0) -> np.ndarray:
    """Row ``k`` is the Word2Vec vector of word ``k``; ``<unk>`` gets the count-weighted mean of the
    vectors of the words left out of the vocabulary (a small random vector if none was)."""
    wv = word2vec.wv
    table = np.zeros((len(vocabulary), wv.vector_size))
    for k, word in enumerate(vocabulary.words[1:], start=1):
        table[k] = wv[word]
    rare = [w for w in wv.index_to_key if w not in vocabulary.index]
    if rare:
        counts = np.array([wv.get_vecattr(w, "count") for w in rare], dtype=np.float64)
        table[0] = counts @ np.stack([wv[w] for w in rare]) / counts.sum()
    else:
        table[0] = np.random.default_rng(seed).normal(scale=1e-3, size=wv.vector_size)
    return table


@dataclass
class StoryTrees:
    """The fitted tree model: the embedding table, the regressor and the softmax temperature."""

    embeddings: np.ndarray
    regressor: Any
    temperature: float
    context_length: int
    decay: float

    def features(self, stream: Stream, positions: np.ndarray) -> np.ndarray:
        return window_features(stream, positions, self.embeddings, self.context_length, self.decay)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.regressor.predict(features)


def fit_story_trees(stream: Stream, embeddings: np.ndarray, *, rounds: int, max_depth: int = 6,
                    learning_rate: float = 0.1, context_length: int = 8, decay: float = 0.7,
                    rows: int | None = None, held_out: int = 4000, device: Any = "cpu", n_jobs: int | None = None,
                    seed: int = 0) -> StoryTrees:
    """XGBoost (``hist``, squared error, one tree per embedding coordinate per round) from
    :func:`window_features` to the next token's embedding, on at most ``rows`` positions drawn at
    random from the stream, and :math:`\\tau` fitted on ``held_out`` other positions. Trees run on
    :func:`xgboost_device`; ``n_jobs`` threads on the CPU (None: every core)."""
    from xgboost import XGBRegressor

    from .ardt_pipeline import cosines, fit_temperature

    rng = np.random.default_rng(seed)
    order = rng.permutation(stream.positions)
    held = order[:min(held_out, max(1, order.size // 10))]
    train = order[held.size:]
    if rows is not None:
        train = train[:rows]
    train = np.sort(train)
    regressor = XGBRegressor(n_estimators=rounds, max_depth=max_depth, learning_rate=learning_rate,
                             tree_method="hist", device=xgboost_device(device),
                             n_jobs=n_jobs or os.cpu_count(), random_state=seed)
    regressor.fit(window_features(stream, train, embeddings, context_length, decay),
                  embeddings[stream.tokens[train + 1]].astype(np.float32))
    held_scores = cosines(regressor.predict(window_features(stream, held, embeddings, context_length, decay)),
                          embeddings)
    temperature = fit_temperature(held_scores, stream.tokens[held + 1])
    return StoryTrees(embeddings, regressor, temperature, context_length, decay)


def score_trees(model: StoryTrees, stream: Stream, batch: int = 8192) -> dict[str, float]:
    """Next-token accuracy (nearest token by cosine) and loss (mean :math:`-\\log` of
    :math:`\\mathrm{softmax}(\\cos/\\tau)` at the target, nats) over every position of ``stream``."""
    from .ardt_pipeline import cosines, softmax_rows

    correct, loss = 0, 0.0
    for start in range(0, stream.positions.size, batch):
        positions = stream.positions[start:start + batch]
        targets = stream.tokens[positions + 1]
        scores = cosines(model.predict(model.features(stream, positions)), model.embeddings)
        correct += int((scores.argmax(axis=1) == targets).sum())
        probabilities = softmax_rows(scores, model.temperature)
        loss -= float(np.log(probabilities[np.arange(targets.size), targets]).sum())
    n = stream.positions.size
    return {"loss": loss / n, "accuracy": correct / n, "positions": n}


def transformer_parameters(vocab: int, width: int, layers: int, max_len: int) -> int:
    r"""Parameters of a :class:`theorylab.tinylm.TinyTransformer`: embeddings :math:`(V+M)w`, per block
    :math:`12w^2+13w` (attention :math:`4w^2+4w`, feed-forward :math:`8w^2+5w`, two layer norms
    :math:`4w`), a final head :math:`wV+V`."""
    return (vocab + max_len) * width + layers * (12 * width * width + 13 * width) + width * vocab + vocab


def comparable_width(target: int, vocab: int, layers: int, max_len: int, heads: int = 4) -> int:
    """The multiple of ``heads`` whose transformer has the parameter count nearest ``target``."""
    widths = np.arange(heads, 4097, heads)
    counts = np.array([transformer_parameters(vocab, int(w), layers, max_len) for w in widths])
    return int(widths[np.abs(counts - target).argmin()])


def transformer_rows(framed: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """The framed stories laid end to end and cut into rows of ``length + 1`` tokens (a row's last
    token is the next row's first target's context end); the remainder is dropped."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in framed])
    n = (flat.size - 1) // length
    if n < 1:
        raise ValueError(f"{flat.size} tokens do not fill one row of {length + 1}")
    index = np.arange(n)[:, None] * length + np.arange(length + 1)[None, :]
    return flat[index]


def train_story_transformer(framed: Sequence[Sequence[int]], vocab: int, width: int, *, layers: int, steps: int,
                            max_len: int, batch: int = 64, lr: float = 1e-3, device: Any = "cpu", seed: int = 0):
    """A :class:`theorylab.tinylm.TinyTransformer` (``heads=4``) trained by
    :func:`theorylab.tinylm.train_lm` (Adam, next-token cross-entropy) on rows of ``max_len + 1``
    tokens of the framed stories, on ``device``."""
    import torch

    from .tinylm import TinyTransformer, train_lm

    torch.manual_seed(seed)
    model = TinyTransformer(vocab, width=width, layers=layers, heads=4, max_len=max_len).to(device)
    rows = torch.as_tensor(transformer_rows(framed, max_len), device=device)
    train_lm(model, rows, steps=steps, batch=batch, lr=lr, seed=seed)
    return model


def score_transformer(model: Any, framed: Sequence[Sequence[int]], batch: int = 64) -> dict[str, float]:
    """Next-token accuracy (argmax) and loss (mean cross-entropy, nats) at every position of each
    framed story (each cut to the model's ``max_len + 1`` tokens), reading from the story's start."""
    import torch

    from .tinylm import right_padded

    device = next(model.parameters()).device
    correct, loss, n = 0, 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(framed), batch):
            chunk = [list(s[: model.max_len + 1]) for s in framed[start:start + batch]]
            rows, lengths = right_padded(chunk)
            rows, lengths = rows.to(device), lengths.to(device)
            logits = model(rows[:, :-1]).double()
            targets = rows[:, 1:]
            mask = torch.arange(targets.shape[1], device=device)[None, :] < (lengths[:, None] - 1)
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            loss += float(losses[mask].sum())
            correct += int((logits.argmax(-1) == targets)[mask].sum())
            n += int(mask.sum())
    return {"loss": loss / n, "accuracy": correct / n, "positions": n}


def cut_stories(framed: Sequence[Sequence[int]], max_len: int) -> list[list[int]]:
    """Each framed story cut to its first ``max_len + 1`` tokens: the positions both models are scored on."""
    return [list(s[: max_len + 1]) for s in framed]


# ----------------------------------------------------------------------------------------------
# Generation


def generate_trees(model: StoryTrees, prompts: Sequence[Sequence[int]], length: int, eot: int = 1,
                   exclude: Sequence[int] = (0,)) -> list[list[int]]:
    """Greedy continuations: append the nearest token (never one of ``exclude``) to every prompt
    (ids, starting with the end token) until it writes ``eot`` or ``length`` new tokens; all
    prompts advance together. Returns the new tokens of each."""
    sequences = [list(p) for p in prompts]
    open_rows = list(range(len(sequences)))
    for _ in range(length):
        if not open_rows:
            break
        current = [sequences[r] for r in open_rows]
        stream = Stream.of(current)
        last = np.cumsum([len(c) for c in current]) - 1  # each sequence's last token
        chosen = nearest_tokens(model.predict(model.features(stream, last)), model.embeddings, exclude)
        for r, token in zip(open_rows, chosen, strict=True):
            sequences[r].append(int(token))
        open_rows = [r for r in open_rows if sequences[r][-1] != eot]
    return [s[len(p):] for s, p in zip(sequences, prompts, strict=True)]


def generate_transformer(model: Any, prompts: Sequence[Sequence[int]], length: int, eot: int = 1,
                         exclude: Sequence[int] = (0,)) -> list[list[int]]:
    """Greedy continuations of the transformer (argmax of the last position's logits, never one of
    ``exclude``), like :func:`generate_trees`; the context is cut to the model's ``max_len``."""
    import torch

    device = next(model.parameters()).device
    out = []
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            sequence = list(prompt)
            for _ in range(length):
                context = torch.as_tensor([sequence[-model.max_len:]], device=device)
                logits = model(context)[0, -1].double()
                logits[list(exclude)] = -math.inf
                sequence.append(int(logits.argmax()))
                if sequence[-1] == eot:
                    break
            out.append(sequence[len(prompt):])
    return out


# ----------------------------------------------------------------------------------------------
# What the splits read


def split_usage(regressor: Any, n_features: int) -> dict[str, np.ndarray]:
    """Per input feature, how many splits of the ensemble test it (``splits``) and the loss
    reduction they bring in all (``gain``), from XGBoost's ``weight`` and ``total_gain``."""
    booster = regressor.get_booster()
    out = {}
    for key, kind in (("splits", "weight"), ("gain", "total_gain")):
        scores = booster.get_score(importance_type=kind)
        out[key] = np.array([float(scores.get(f"f{k}", 0.0)) for k in range(n_features)])
    return out


def extreme_words(embeddings: np.ndarray, vocabulary: Vocabulary, coordinate: int, count: int = 5,
                  skip: Sequence[int] = (0, 1)) -> dict[str, list[str]]:
    """The ``count`` words with the largest (``high``) and smallest (``low``) value of one embedding
    coordinate, leaving out the ids in ``skip``: what a split on that coordinate separates."""
    order = [k for k in np.argsort(embeddings[:, coordinate], kind="stable") if k not in set(skip)]
    return {"high": vocabulary.decode(order[::-1][:count]), "low": vocabulary.decode(order[:count])}


def cluster_directions(embeddings: np.ndarray, vocabulary: Vocabulary, k: int, seed: int = 0,
                       skip: Sequence[int] = (0, 1)) -> tuple[np.ndarray, list[str]]:
    """The paper's interpretable coordinates: k-means (scikit-learn, ``k`` clusters) on the unit
    word vectors; each centre is named by the word nearest it (largest cosine). Returns the unit
    centres ``(k, d)`` and their names."""
    from sklearn.cluster import KMeans

    from .ardt_pipeline import cosines

    keep = np.array([i for i in range(len(embeddings)) if i not in set(skip)])
    unit = embeddings[keep] / np.linalg.norm(embeddings[keep], axis=1, keepdims=True)
    centres = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(unit).cluster_centers_
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    nearest = cosines(centres, embeddings[keep]).argmax(axis=1)
    return centres, vocabulary.decode(keep[nearest])


def fit_cluster_trees(stream: Stream, model: StoryTrees, centres: np.ndarray, *, rounds: int, rows: int | None,
                      device: Any = "cpu", n_jobs: int | None = None, seed: int = 0, max_depth: int = 6):
    """The same regression on the paper's interpretable features: the cosine of the context
    vector :math:`c_t` with each cluster centre (one feature per cluster). Returns the regressor."""
    from xgboost import XGBRegressor

    from .ardt_pipeline import cosines

    rng = np.random.default_rng(seed + 1)
    train = np.sort(rng.permutation(stream.positions)[:rows])
    features = cosines(model.features(stream, train).astype(np.float64), centres).astype(np.float32)
    regressor = XGBRegressor(n_estimators=rounds, max_depth=max_depth, learning_rate=0.1, tree_method="hist",
                             device=xgboost_device(device), n_jobs=n_jobs or os.cpu_count(), random_state=seed)
    regressor.fit(features, model.embeddings[stream.tokens[train + 1]].astype(np.float32))
    return regressor
