r"""Real causal language models for the speculative engine (chapter ``speculative-inference``, ``full``).

A drafter/target pair of ``transformers`` causal language models (:data:`PAIRS`: the paper's Vicuna
pairs by default) is loaded with ``AutoModelForCausalLM``, weights downloaded on first use into
``$THEORYLAB_DATA/huggingface``, and wrapped as engine scorers (:class:`CausalLMScorer`). Prompts are
Alpaca instructions (one of the paper's data sets) in the Vicuna chat template. Under ``--smoke`` and in
the tests, :func:`write_tiny_pair` saves a randomly initialised Llama pair and a word-level tokenizer to
a folder, and the same ``from_pretrained`` code loads them, so the real-model path runs without network.

What the latency model assumes is measured, not assumed: the target's and drafter's pass times, the
target's pass time :math:`t(P)` when :math:`P` passes run at once on the device
(:func:`concurrent_pass_seconds`), and acceptance rates on the prompts; :func:`predictions` feeds them to
:func:`theorylab.speculative.expected_latency` and :func:`theorylab.speculative.replay`, set beside the
wall clock of the same generations (:func:`timed_generations`).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import speculative as spec
from .data import DATA_ENV, DatasetUnavailable, data_cache
from .speculative_engine import (GenerationResult, Workers, acceptance_trace, fresh_target_law, generate,
                                 goodness_of_fit)
from .tinylm import softmax
from .validation import positive_int


@dataclass(frozen=True)
class ModelPair:
    """A target and a drafter: Hugging Face model names or local folders, and the names to print."""

    target: str
    drafter: str
    target_title: str
    drafter_title: str


PAIRS = {
    "vicuna-7b": ModelPair("lmsys/vicuna-7b-v1.3", "double7/vicuna-68m", "Vicuna-7B", "Vicuna-68M"),
    "vicuna-13b": ModelPair("lmsys/vicuna-13b-v1.3", "double7/vicuna-68m", "Vicuna-13B", "Vicuna-68M"),
}
"""Table 1 pairs of Timor et al. that fit one GPU (v1.3 weights: our choice; the paper names no version)."""

VICUNA_TEMPLATE = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
                   "gives helpful, detailed, and polite answers to the user's questions. USER: {instruction} "
                   "ASSISTANT:")
ALPACA_URL = "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"
ALPACA_RECORDS = 52_002  # the published file's record count: checked on download (no checksum is published)


def model_cache() -> Path:
    """Where downloaded weights go: ``$THEORYLAB_DATA/huggingface`` (see :func:`theorylab.data.data_cache`)."""
    return data_cache() / "huggingface"


# ----------------------------------------------------------------------------------------------
# Prompts


def ensure_alpaca(root: Path | None = None, download: bool = True) -> Path:
    """The Alpaca instruction file (``alpaca_data.json``, a JSON list of ``{instruction, input, output}``),
    downloaded on first use through a scratch file and checked to hold the published 52,002 records."""
    import shutil
    import tempfile
    import urllib.request

    folder = (root or data_cache()) / "alpaca"
    path = folder / "alpaca_data.json"
    if path.exists():
        return path
    how = (f"  On a machine with network, fetch {ALPACA_URL}\n  into {folder}/ (or point ${DATA_ENV} at a "
           "folder holding alpaca/alpaca_data.json).\n  To try the code path without it, run with --smoke.")
    if not download:
        raise DatasetUnavailable(f"Alpaca is not in {folder} and downloads are off.\n{how}")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".alpaca-", dir=folder) as scratch:
        fetched = Path(scratch) / path.name
        try:
            with urllib.request.urlopen(ALPACA_URL, timeout=60) as response, fetched.open("wb") as out:
                shutil.copyfileobj(response, out)
            count = len(json.loads(fetched.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise DatasetUnavailable(f"Alpaca could not be downloaded ({error}).\n{how}") from None
        if count != ALPACA_RECORDS:
            raise DatasetUnavailable(f"Alpaca: {count} records downloaded, {ALPACA_RECORDS} expected.\n{how}")
        fetched.replace(path)
    return path


def alpaca_prompts(path: Path, n_prompts: int, seed: int = 0, template: str = VICUNA_TEMPLATE) -> list[str]:
    """``n_prompts`` instructions drawn without replacement (seeded) from the Alpaca file at ``path``,
    each with its input (if any) on a new line, in ``template``."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    n_prompts = positive_int("n_prompts", n_prompts)
    if n_prompts > len(records):
        raise ValueError(f"n_prompts: {n_prompts} asked, the file at {path} holds {len(records)}")
    chosen = np.random.default_rng(seed).choice(len(records), size=n_prompts, replace=False)
    texts = []
    for k in chosen:
        record = records[int(k)]
        instruction = record["instruction"] + (f"\n{record['input']}" if record.get("input") else "")
        texts.append(template.format(instruction=instruction))
    return texts


def _records(path: Path) -> int:
    return len(json.loads(Path(path).read_text(encoding="utf-8")))


def write_fake_alpaca(folder: Path, n_records: int = 40, seed: int = 0) -> Path:
    """A small file in Alpaca's format, of made-up instructions (for ``--smoke`` and the tests)."""
    rng = np.random.default_rng(seed)
    verbs = ("Describe", "Explain", "List", "Summarize", "Compare", "Name")
    nouns = ("a river", "the moon", "three colours", "a good breakfast", "two planets", "a quiet town")
    records = [{"instruction": f"{rng.choice(verbs)} {rng.choice(nouns)}.",
                "input": "" if k % 3 else f"Use {rng.integers(2, 9)} sentences.", "output": "..."}
               for k in range(n_records)]
    path = Path(folder) / "alpaca" / "alpaca_data.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# Models


class Logits:
    """A pass's logits, ``(len(tokens), vocab)``, kept on the device: indexing copies only the rows asked
    for to the host, as float64 NumPy (the engine reads one row per draft and the verified rows)."""

    def __init__(self, values: Any):
        self.values = values

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __getitem__(self, index) -> np.ndarray:
        return self.values[index].double().cpu().numpy()

    def __iter__(self):
        return (self[k] for k in range(len(self)))


class CausalLMScorer:
    """A ``transformers`` causal LM as the engine sees it: ``scorer(tokens)`` is one forward pass over the
    whole sequence, without a KV cache, returning :class:`Logits`. On CUDA each calling thread issues its
    passes on its own stream (so that concurrent passes can overlap) and waits for them to finish (so that
    the engine's clock stops when the pass is done)."""

    def __init__(self, model: Any, name: str, vocab: int | None = None):
        import torch

        self.model, self.name = model.eval(), name
        self.device = next(model.parameters()).device
        self.vocab = int(vocab or model.config.vocab_size)
        self._local = threading.local()
        self._torch = torch

    def _stream(self):
        if not hasattr(self._local, "stream"):
            self._local.stream = self._torch.cuda.Stream(self.device)
        return self._local.stream

    def __call__(self, tokens: Sequence[int]) -> Logits:
        torch = self._torch
        if len(tokens) == 0:
            raise ValueError(f"{self.name}: cannot score an empty sequence")
        with torch.inference_mode():
            if self.device.type != "cuda":
                ids = torch.as_tensor([list(tokens)], dtype=torch.long, device=self.device)
                return Logits(self.model(ids).logits[0, :, :self.vocab])
            stream = self._stream()
            with torch.cuda.stream(stream):
                ids = torch.as_tensor([list(tokens)], dtype=torch.long, device=self.device)
                values = self.model(ids).logits[0, :, :self.vocab]
            stream.synchronize()
            return Logits(values)


def load_pair(pair: ModelPair, *, device: Any = "cpu", dtype: str = "float32", download: bool = True
              ) -> tuple[CausalLMScorer, CausalLMScorer, Any]:
    """``(target, drafter, tokenizer)`` of ``pair`` on ``device`` in ``dtype`` (``float32``/``bfloat16``),
    weights from :func:`model_cache` (downloaded on first use unless ``download`` is off). The two must
    share a tokenizer; their logits are cut to the smaller vocabulary (padding rows of the larger)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype: got {dtype!r}, expected one of {list(dtypes)}")
    options = dict(cache_dir=str(model_cache()), local_files_only=not download)
    try:
        tokenizer = AutoTokenizer.from_pretrained(pair.target, **options)
        models = [AutoModelForCausalLM.from_pretrained(name, dtype=dtypes[dtype], **options).to(device)
                  for name in (pair.target, pair.drafter)]
    except OSError as error:
        raise DatasetUnavailable(
            f"the weights of {pair.target} and {pair.drafter} are not in {model_cache()} and could not be "
            f"downloaded ({str(error).splitlines()[0]}).\n  On a machine with network, run once:\n"
            f"    hf download {pair.target} --cache-dir {model_cache()}\n"
            f"    hf download {pair.drafter} --cache-dir {model_cache()}\n"
            "  or pass model folders. To try the code path without them, run with --smoke.") from None
    vocab = min(m.config.vocab_size for m in models)
    target, drafter = (CausalLMScorer(m, title, vocab)
                       for m, title in zip(models, (pair.target_title, pair.drafter_title), strict=True))
    return target, drafter, tokenizer


def write_tiny_pair(folder: Path, texts: Sequence[str], seed: int = 0) -> ModelPair:
    """Save to ``folder`` a randomly initialised Llama target (2 layers, width 64), a drafter made of the
    target's first layer (same embeddings and head, so the two often agree) and a word-level tokenizer
    over ``texts``, in the ``from_pretrained`` format: the real-model code path without a download."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in pre_tokenizers.Whitespace().pre_tokenize_str(text)
                    for w in [w[0]]})
    vocabulary = {w: k for k, w in enumerate(["<unk>", "<s>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>")
    shape = dict(vocab_size=len(vocabulary), hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    target = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **shape))
    drafter = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, **shape))
    drafter.load_state_dict(target.state_dict(), strict=False)  # layer 0, embeddings, norm and head
    pair = ModelPair(str(Path(folder) / "target"), str(Path(folder) / "drafter"), "tiny target",
                     "tiny drafter")
    for model, path in ((target, pair.target), (drafter, pair.drafter)):
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return pair


def prefetch(values: dict[str, Any]) -> None:
    """Before a ``full`` run's work: fetch Alpaca and the chosen pair's weights into the cache (for a
    repository with safetensors weights, not its duplicate ``.bin`` ones), or raise
    :class:`theorylab.data.DatasetUnavailable` saying what to fetch by hand."""
    if values.get("model_pair") in (None, "none") or not values.get("real_prompts"):
        return
    ensure_alpaca()
    if values["model_pair"] not in PAIRS:
        return
    quiet_transformers()
    from huggingface_hub import HfApi, snapshot_download

    pair = PAIRS[values["model_pair"]]
    for repo in (pair.target, pair.drafter):
        try:
            files = HfApi().list_repo_files(repo)
            skip = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.pth"]
            skip += ["*.bin"] if any(f.endswith(".safetensors") for f in files) else []
            snapshot_download(repo, cache_dir=str(model_cache()), ignore_patterns=skip)
        except Exception as error:  # the hub raises many kinds; all mean the weights are not here
            try:
                snapshot_download(repo, cache_dir=str(model_cache()), local_files_only=True)
            except Exception:
                raise DatasetUnavailable(
                    f"the weights of {repo} are not in {model_cache()} and could not be downloaded "
                    f"({type(error).__name__}).\n  On a machine with network, run once:\n"
                    f"    hf download {repo} --cache-dir {model_cache()}\n"
                    "  To try the code path without them, run with --smoke.") from None


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from ``transformers`` and the hub in chapter outputs."""
    import warnings

    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by the hub
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


@dataclass
class OpenPair:
    """What :func:`open_pair` returns: the scorers, the tokenizer, the prompts (text and ids), the pair."""

    target: CausalLMScorer
    drafter: CausalLMScorer
    tokenizer: Any
    texts: list[str]
    prompts: list[list[int]]
    pair: ModelPair


def open_pair(name: str, *, n_prompts: int, smoke: bool = False, device: Any = "cpu", dtype: str = "float32",
              seed: int = 0) -> OpenPair:
    """The pair ``name`` of :data:`PAIRS` (``"tiny"``: a :func:`write_tiny_pair` in a temporary folder) and
    ``n_prompts`` Alpaca prompts (when ``smoke``, from a stand-in file in Alpaca's format)."""
    import atexit
    import shutil
    import tempfile

    if name != "tiny" and name not in PAIRS:
        raise ValueError(f"model pair: got {name!r}, expected 'tiny' or one of {sorted(PAIRS)}")
    quiet_transformers()
    scratch = Path(tempfile.mkdtemp(prefix="theorylab-pair-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    path = write_fake_alpaca(scratch, seed=seed) if smoke else ensure_alpaca()
    if name == "tiny":
        pair = write_tiny_pair(scratch / "pair", alpaca_prompts(path, min(40, _records(path)), seed=seed + 1),
                               seed=seed)
    else:
        pair = PAIRS[name]
    texts = alpaca_prompts(path, n_prompts, seed=seed)
    target, drafter, tokenizer = load_pair(pair, device=device, dtype=dtype)
    return OpenPair(target, drafter, tokenizer, texts, encode(tokenizer, texts), pair)


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, with the tokenizer's start token where it adds one."""
    return [list(tokenizer(text)["input_ids"]) for text in texts]


# ----------------------------------------------------------------------------------------------
# Measurements


def concurrent_pass_seconds(scorers: Sequence[CausalLMScorer], tokens: Sequence[int], copies: int,
                            workers: Workers, repeats: int = 5) -> float:
    r""":math:`t(P)`: the mean seconds of one pass over ``tokens`` when ``copies`` threads each run
    ``repeats`` passes at once (copy :math:`k` on ``scorers[k % len]``, after one untimed pass each,
    started together at a barrier). :math:`t(1)` is the plain pass time."""
    copies, repeats = positive_int("copies", copies), positive_int("repeats", repeats)
    if workers.size < copies:
        raise ValueError(f"workers: {copies} copies need {copies} threads, the pool has {workers.size}")
    barrier = threading.Barrier(copies)

    def one(k: int) -> float:
        scorer = scorers[k % len(scorers)]
        scorer(tokens)
        barrier.wait()
        start = time.perf_counter()
        for _ in range(repeats):
            scorer(tokens)
        return (time.perf_counter() - start) / repeats

    futures = [workers.submit(one, k) for k in range(copies)]
    return float(np.mean([f.result() for f in futures]))


@dataclass
class PromptRun:
    """One prompt's generations: the target's greedy output (non-SI), its acceptance trace, and SI and DSI."""

    prompt: list[int]
    runs: dict[str, GenerationResult]
    trace: np.ndarray
    flips: list[dict] = field(default_factory=list)


def plan_runs(t_of_servers: dict[int, float], drafter_seconds: float, acceptance_rate: float, n_tokens: int,
              lookaheads: Sequence[int] = (1, 5, 10)) -> dict[str, dict]:
    r"""The configurations to time: non-SI; SI at the lookahead the i.i.d. model finds best (1..10); DSI
    at the lookahead :math:`L` and the servers :math:`P=\min(\lceil t(1)/(Ld)\rceil, P_{\max})` whose
    expected latency, with the measured :math:`t(P)`, is least (:math:`P_{\max}` the largest measured)."""
    t1, d, most = t_of_servers[1], drafter_seconds, max(t_of_servers)

    def si_latency(L):
        return spec.expected_latency("si", target_latency=t1, drafter_latency=d, acceptance_rate=acceptance_rate,
                                     lookahead=L, n_tokens=n_tokens)

    def dsi(L):
        P = min(spec.servers_needed(t1, d, L), most)
        return P, spec.expected_latency("dsi", target_latency=t_of_servers[P], drafter_latency=d,
                                        acceptance_rate=acceptance_rate, lookahead=L, n_tokens=n_tokens,
                                        sp_degree=P)

    L_dsi = min(lookaheads, key=lambda L: dsi(L)[1])
    return {"nonsi": dict(lookahead=1), "si": dict(lookahead=min(range(1, 11), key=si_latency)),
            "dsi": dict(lookahead=L_dsi, sp_degree=dsi(L_dsi)[0])}


def first_flip(target: CausalLMScorer, prompt: Sequence[int], reference: Sequence[int], output: Sequence[int]
               ) -> dict | None:
    r"""Where ``output`` first leaves the target's greedy ``reference``: the position, the target's logit
    margin there (best minus second best, in the reference's own pass), and whether the flip is
    numerical: the target, scoring the same prefix inside the longer pass over ``prompt + output``,
    itself puts ``output``'s token first. ``None`` when the two agree."""
    if list(output) == list(reference):
        return None
    p = next(k for k, (a, b) in enumerate(zip(reference, output, strict=True)) if a != b)
    short = target(list(prompt) + list(reference[:p]))[-1]
    long = target(list(prompt) + list(output))[len(prompt) + p - 1]
    top = np.sort(short)[-2:]
    return dict(position=p, margin=float(top[1] - top[0]), explained=int(np.argmax(long)) == output[p],
                logit_change=float(np.abs(long - short).max()))


def timed_generations(targets: Sequence[CausalLMScorer], drafter: CausalLMScorer, prompts: Sequence[Sequence[int]],
                      n_tokens: int, plans: dict[str, dict], workers: Workers) -> list[PromptRun]:
    """Per prompt, greedy non-SI (the reference), SI and DSI with ``plans``, timed on the clock, after
    one untimed round on the first prompt (warm-up); each SI/DSI output is compared with the reference
    (:func:`first_flip`)."""
    def run(algorithm, prompt):
        return generate(algorithm, list(targets), drafter, prompt, n_tokens, workers=workers, **plans[algorithm])

    for algorithm in plans:
        run(algorithm, prompts[0])
    results = []
    for prompt in prompts:
        runs = {algorithm: run(algorithm, prompt) for algorithm in plans}
        reference = runs["nonsi"].tokens
        item = PromptRun(list(prompt), runs, acceptance_trace(drafter, prompt, reference))
        for algorithm in ("si", "dsi"):
            flip = first_flip(targets[0], prompt, reference, runs[algorithm].tokens)
            if flip is not None:
                item.flips.append(dict(algorithm=algorithm, **flip))
        results.append(item)
    return results


def predictions(item: PromptRun, t_of_servers: dict[int, float], drafter_seconds: float,
                plans: dict[str, dict], n_tokens: int) -> dict[str, dict[str, float]]:
    r"""Per algorithm: the measured seconds, and three predictions of them from measurements made before
    the run: the i.i.d. model at the prompt's :math:`\hat a` with a constant :math:`t=t(1)` (the paper's
    assumption), the same with DSI's :math:`t=t(P)`, and the replay of the prompt's own acceptance trace
    with :math:`t(P)`."""
    a_hat = spec.estimate_acceptance_rate(item.trace)
    out = {}
    for algorithm, plan in plans.items():
        P = plan.get("sp_degree", 1)
        base = dict(drafter_latency=drafter_seconds, **plan)
        constant = dict(target_latency=t_of_servers[1], **base)
        contended = dict(target_latency=t_of_servers[P], **base)
        out[algorithm] = dict(
            measured=item.runs[algorithm].seconds,
            iid_constant_t=spec.expected_latency(algorithm, acceptance_rate=a_hat, n_tokens=n_tokens, **constant),
            iid_measured_t=spec.expected_latency(algorithm, acceptance_rate=a_hat, n_tokens=n_tokens, **contended),
            replay_measured_t=spec.replay(algorithm, item.trace, **contended))
    return out


def first_token_counts(target, drafter, prompt: Sequence[int], draws: int, *, lookahead: int, sp_degree: int,
                       rule: str = "residual", seed: int = 0, workers: Workers | None = None) -> np.ndarray:
    """Counts over the vocabulary of the first token of ``draws`` two-token DSI generations at temperature 1
    (generation ``i`` seeded ``seed + i``). The first token is drafted and accepted or corrected by
    ``rule``, so its law is the rule's; the second, the generation's last, is a plain target sample."""
    counts = np.zeros(target.vocab)
    for draw in range(positive_int("draws", draws)):
        out = generate("dsi", target, drafter, prompt, 2, lookahead=lookahead, sp_degree=sp_degree,
                       temperature=1.0, seed=seed + draw, rule=rule, workers=workers).tokens
        counts[out[0]] += 1
    return counts


def control_power(p: np.ndarray, q: np.ndarray, draws: int, level: float = 1e-6, min_expected: float = 5.0
                  ) -> float:
    r"""Power of :func:`theorylab.speculative_engine.goodness_of_fit` at ``level`` against the biased rule's
    first-token law :math:`b` (:func:`fresh_target_law`) with ``draws`` draws: the noncentral chi-square
    tail :math:`\Pr[\chi'^2_{k-1}(\lambda)>\chi^2_{k-1,1-\alpha}]`, :math:`\lambda=n\sum(b-p)^2/p` over
    the test's cells (those expected fewer than ``min_expected`` times pooled, as the test pools them)."""
    from scipy import stats

    b = fresh_target_law(p, q)
    small = p * draws < min_expected
    cells_p = np.append(p[~small], p[small].sum()) if small.any() else p
    cells_b = np.append(b[~small], b[small].sum()) if small.any() else b
    keep = cells_p > 0
    df = int(keep.sum()) - 1
    if df < 1:
        return 0.0
    noncentrality = draws * float(((cells_b[keep] - cells_p[keep]) ** 2 / cells_p[keep]).sum())
    return float(stats.ncx2.sf(stats.chi2.isf(level, df), df, noncentrality))


def sampling_test(target, drafter, prompt: Sequence[int], draws: int, *, lookahead: int, sp_degree: int,
                  seed: int = 0, workers: Workers | None = None) -> dict[str, float]:
    """The first-token law of DSI against the target's, by Pearson's chi-square: the ``residual`` rule on
    ``draws`` generations, the biased ``fresh_target`` control on half as many, with the control's power."""
    from .tinylm import Memoized

    target, drafter = Memoized(target), Memoized(drafter)
    p = softmax(target(list(prompt))[-1])
    q = softmax(drafter(list(prompt))[-1])
    out = {}
    for rule, n in (("residual", draws), ("fresh_target", max(1, draws // 2))):
        counts = first_token_counts(target, drafter, prompt, n, lookahead=lookahead, sp_degree=sp_degree,
                                    rule=rule, seed=seed, workers=workers)
        out[rule] = goodness_of_fit(counts, p)
    out["control_power"] = control_power(p, q, max(1, draws // 2))
    return out


def summary(results: Sequence[PromptRun], t_of_servers: dict[int, float], drafter_seconds: float,
            plans: dict[str, dict], n_tokens: int) -> dict[str, dict[str, float]]:
    """Per algorithm, over the prompts: the mean measured seconds, the mean of each prediction of
    :func:`predictions`, and the speedup over non-SI (ratio of the means) measured and predicted."""
    per_prompt = [predictions(item, t_of_servers, drafter_seconds, plans, n_tokens) for item in results]
    means = {a: {k: float(np.mean([row[a][k] for row in per_prompt])) for k in per_prompt[0][a]}
             for a in plans}
    for a in plans:
        means[a].update({f"speedup_{k}": means["nonsi"][k] / means[a][k] for k in list(means[a])})
    return means


_SYMBOLS = {"lookahead": "L", "sp_degree": "P"}


def summary_text(means: dict[str, dict[str, float]], plans: dict[str, dict]) -> str:
    """The :func:`summary` as aligned lines: seconds, then speedups over non-SI, measured and predicted."""
    lines = [f"{'':22s}{'measured':>10s}{'i.i.d., t(1)':>14s}{'i.i.d., t(P)':>14s}{'replay, t(P)':>14s}"]
    keys = ("measured", "iid_constant_t", "iid_measured_t", "replay_measured_t")
    for a, plan in plans.items():
        label = a + " (" + ", ".join(f"{_SYMBOLS[k]}={v}" for k, v in plan.items()) + ")"
        lines.append(f"{label:22s}" + "".join(f"{means[a][k]:>9.3f} s" + " " * (4 if k != keys[0] else 0)
                                                for k in keys))
    for a in plans:
        if a != "nonsi":
            lines.append(f"speedup of {a:11s}" + "".join(
                f"{means[a]['speedup_' + k]:>9.2f}x" + " " * (4 if k != keys[0] else 0) for k in keys))
    return "\n".join(lines)
