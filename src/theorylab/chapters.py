"""The one chapter table: each chapter's knobs (their ``ci``, ``full`` and ``--smoke`` values and
allowed ranges), its helper module, the public data sets its ``full`` profile reads, and what a GPU
does for it. :mod:`theorylab.runtime` validates against it, ``theorylab list`` prints it, and each
chapter's box about its ``full`` profile quotes it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

@dataclass(frozen=True)
class Param:
    """One chapter knob: its type, its value in each profile, and what values are allowed."""

    kind: type
    ci: Any
    full: Any
    help: str
    minimum: float | None = None
    choices: tuple | None = None
    smoke: Any = None
    """The value under ``--smoke`` (the ``full`` code path, every size shrunk); ``None``: the ci value."""

    def value(self, profile: str, smoke: bool = False) -> Any:
        """This knob's value in ``profile`` (``smoke`` shrinks the ``full`` profile)."""
        if smoke:
            return self.ci if self.smoke is None else self.smoke
        return getattr(self, profile)

    def validate(self, name: str, value: Any) -> Any:
        """Return ``value`` converted to :attr:`kind`, or raise ``ValueError`` naming the problem."""
        allowed = self.describe()
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                    value = int(value)
                else:
                    raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}")
            value = int(value)
        elif self.kind is float:
            if isinstance(value, bool):
                raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}") from None
            if not np.isfinite(value):
                raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}")
        elif self.kind is str:
            if not isinstance(value, str):
                raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}")
        elif self.kind is tuple:
            items = value.split(",") if isinstance(value, str) else value
            try:
                value = tuple(int(str(item).strip()) for item in items)
            except (TypeError, ValueError):
                raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}") from None
            if not value or (self.minimum is not None and min(value) < self.minimum):
                raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}")
            return value
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"parameter {name!r}: got {value!r}, expected {allowed}")
        return value

    def describe(self) -> str:
        text = {int: "an integer", float: "a finite number", str: "a string",
                tuple: "comma-separated integers"}[self.kind]
        if self.minimum is not None:
            text += f" >= {self.minimum:g}"
        if self.choices is not None:
            text += f" in {list(self.choices)}"
        return text


@dataclass(frozen=True)
class ChapterSpec:
    """A chapter of the book: its notebook, its knobs, and how long each profile takes."""

    name: str
    title: str
    notebook: str
    params: dict[str, Param]
    ci_seconds: float
    full_minutes: float
    full_note: str = ""
    module: str = ""
    """The package module holding the chapter's mathematics."""
    datasets: tuple[str, ...] = ()
    """Public data sets (keys of :data:`theorylab.data.PUBLIC_IMAGE_SETS`) the ``full`` profile reads."""
    gpu: str = ""
    """What a GPU does for the chapter; empty: it runs on the CPU whatever ``device`` says (see
    :attr:`cpu_reason`)."""
    cpu_reason: str = ""
    full_measured: bool = False
    """Whether :attr:`full_minutes` was measured on a GPU (otherwise it is an estimate)."""
    tf32: bool = False
    """Whether the chapter's numerics allow TF32 matrix products on CUDA (set by ``configure``)."""
    precision: str = "float32 on the device; float64 where the chapter says so"
    """What precision the chapter computes in on a GPU, and where it needs float64."""
    headline: tuple[str, ...] = ()
    """Recorded numbers (``check.key`` leaves of ``metrics.json``) the box shows for ``ci`` and ``full``."""
    data_note: str = ""
    """What the ``full`` profile downloads besides :attr:`datasets` (text, model weights), for the box."""
    downloads: str = ""
    """``module.function`` of ``theorylab`` that a ``full`` run calls with its parameters before any work,
    to fetch what :attr:`data_note` names (raising :class:`theorylab.data.DatasetUnavailable` offline)."""

    def __post_init__(self) -> None:
        if bool(self.gpu) == bool(self.cpu_reason):
            raise ValueError(f"{self.name}: give exactly one of gpu (what the GPU does) and cpu_reason")


CHAPTERS: dict[str, ChapterSpec] = {
    "contract-design": ChapterSpec(
        name="contract-design",
        title="Contract design through implicit differentiation",
        notebook="chapters/contract-design.ipynb",
        params={
            "n_starts": Param(int, 20, 90, "random starts per recovery experiment", minimum=1, smoke=2),
            "scaling_sizes": Param(tuple, (1000, 10000), (1000, 10000, 100000, 1000000),
                                   "numbers of tasks n for the scaling run", minimum=2, smoke=(200, 1000)),
            "dense_max": Param(int, 4000, 20000, "largest n solved densely for comparison", minimum=2, smoke=300),
            "mc_replications": Param(int, 100, 400, "replications per sample size (Monte Carlo)",
                                     minimum=2, smoke=10),
            "mc_max_log2": Param(int, 11, 14, "largest Monte-Carlo sample size, as a power of 2",
                                 minimum=3, smoke=5),
            "cap_max": Param(float, 2.0, 5.0, "largest cap on the logistic bonus (see the chapter beyond 5)",
                             minimum=1.0, smoke=2.0),
            "logistic_starts": Param(int, 4, 90, "starts per cap for logistic pay", minimum=1, smoke=1),
        },
        module="contracts",
        gpu="every environment, solve and Monte-Carlo replication runs in float64 on the device; the "
            "scaling run's conjugate-gradient solves and their timings (synchronised) are the GPU's share",
        precision="float64 throughout (the implicit solves and the 1e-8 recovery checks need it); no TF32",
        headline=("hm_recovery.worst_multitask", "scaling.dense_vs_matrix_free", "logistic.oracle_gap",
                  "monte_carlo.pooled_sd_ratio"),
        ci_seconds=55,
        full_minutes=15,
        full_note="n up to 10^6 tasks, 90 starts, caps up to 5, 400 replications",
    ),
    "rank-minimization": ChapterSpec(
        name="rank-minimization",
        title="SGD and weight decay secretly minimize the rank of your network",
        notebook="chapters/rank-minimization.ipynb",
        params={
            "steps": Param(int, 6_000, 40_000, "SGD steps of the fixed-step runs", minimum=1, smoke=200),
            "epochs": Param(float, 40.0, 40.0, "epochs of the fixed-epoch protocol", minimum=0.01, smoke=1.0),
            "certificate_steps": Param(int, 6_000, 20_000, "steps of the certificate run", minimum=400, smoke=650),
            "cnn_steps": Param(int, 3_000, 20_000, "steps of each convolutional run", minimum=1, smoke=150),
            "seeds": Param(int, 3, 5, "seeds retrained for every setting (spread shown)", minimum=2, smoke=2),
            "grid_size": Param(int, 0, 5, "points per axis of the (batch, learning rate) grid; 0 skips it",
                               minimum=0, smoke=2),
            "paper_epochs": Param(int, 0, 200, "epochs of the paper's networks on CIFAR-10; 0 skips them",
                                  minimum=0, smoke=1),
            "paper_width": Param(int, 0, 64, "first-stage width of ResNet-18 and VGG-16 (the MLP's is "
                                 "100 * width / 64)", minimum=0, smoke=2),
            "paper_batch": Param(int, 0, 128, "batch size of the paper's networks", minimum=0, smoke=32),
            "paper_grid": Param(int, 0, 3, "points per axis of the CIFAR-10 (batch, rate) grid of the MLP; 0 skips it",
                                choices=(0, 2, 3, 4, 5), smoke=2),
            "paper_grid_epochs": Param(int, 0, 30, "epochs of each fixed-epoch run of the CIFAR-10 grid",
                                       minimum=0, smoke=1),
        },
        module="rank",
        datasets=("cifar10",),
        gpu="the paper's ResNet-18, VGG-16 and MLP with batch and weight normalisation train on CIFAR-10 "
            "on the device, as do the digit sweeps; ranks are computed in float64 on the host",
        ci_seconds=80,
        full_minutes=240,
        full_note="the digit sweeps 6.7x longer with 5 seeds and a 5x5 (batch, rate) grid; ResNet-18, VGG-16 and "
                  "the BN-WN MLP on CIFAR-10 for 200 epochs (B=128, lr 0.1, wd 0/1e-3/5e-3, the paper's "
                  "step schedule); a 3x3 CIFAR-10 (batch, rate) grid of the MLP per weight decay under both "
                  "protocols",
        headline=("trends.ranks_by_wd[0]", "trends.ranks_by_wd[3]", "batch_protocols.fixed_epochs[0]",
                  "batch_protocols.fixed_epochs[3]", "certificate.tail_rank"),
        precision="float32 training, no TF32 (its 10-bit products would add noise near the smallest singular "
                  "values the rank counts); every SVD in float64 on the host",
    ),
    "speculative-inference": ChapterSpec(
        name="speculative-inference",
        title="Distributed speculative inference, proved and measured",
        notebook="chapters/speculative-inference.ipynb",
        params={
            "heatmap_step": Param(float, 0.05, 0.01, "grid step of the (c, a) heatmaps", minimum=0.001, smoke=0.25),
            "heatmap_runs": Param(int, 50, 200, "simulated runs per cell of the N = 1000 heatmap", minimum=30, smoke=30),
            "mc_runs": Param(int, 4000, 100_000, "Monte-Carlo runs held against the exact expectation", minimum=100, smoke=200),
            "paths": Param(int, 10_000, 1_000_000, "sampled paths of the pathwise check of Theorem 1", minimum=100, smoke=200),
            "emulation_runs": Param(int, 300, 3000, "runs per configuration of the Table 1 emulation", minimum=300, smoke=300),
            "prompts": Param(int, 8, 50, "prompts of the greedy losslessness check", minimum=1, smoke=2),
            "sampling_draws": Param(int, 10_000, 100_000, "generations of the sampling test", minimum=1000, smoke=1000),
            "target_ms": Param(float, 40.0, 40.0, "padded target latency t of the wall-clock runs, in ms",
                               minimum=1.0, smoke=5.0),
            "train_steps": Param(int, 300, 3000, "training steps of the target model", minimum=10, smoke=20),
            "model_width": Param(int, 32, 128, "width of the target transformer", choices=(16, 32, 64, 128, 256), smoke=16),
            "model_pair": Param(str, "none", "vicuna-7b", "real drafter/target pair ('none' skips those runs, "
                                "'tiny' is a random local pair)", choices=("none", "tiny", "vicuna-7b", "vicuna-13b"),
                                smoke="tiny"),
            "model_dtype": Param(str, "float32", "bfloat16", "precision of the real pair's passes",
                                 choices=("float32", "bfloat16"), smoke="float32"),
            "real_prompts": Param(int, 0, 20, "Alpaca prompts the real pair generates from", minimum=0, smoke=2),
            "real_tokens": Param(int, 50, 50, "tokens the real pair generates per prompt", minimum=2, smoke=8),
            "max_servers": Param(int, 8, 8, "most concurrent target passes P measured and used by DSI", minimum=1,
                                 smoke=2),
            "real_draws": Param(int, 10_000, 10_000, "generations of the real pair's sampling test", minimum=10,
                                smoke=400),
        },
        module="speculative",
        gpu="the real drafter and target run their passes there, up to 8 target passes at once on their own "
            "CUDA streams (the measured t(P)); the tiny models' timed runs use one copy per CUDA device; the "
            "latency model, the emulation and the tiny models' sampling test are NumPy on the host",
        precision="the real pair in bf16 (argmax flips reported with their logit margins), the tiny models in "
                  "float32; no TF32; NumPy float64 for the latency model",
        data_note="Alpaca instructions (tatsu-lab/stanford_alpaca, 52,002 records) and the weights of the "
                  "chosen pair from the Hugging Face hub (Vicuna-7B v1.3 and Vicuna-68M: about 14 GB)",
        downloads="speculative_models.prefetch",
        headline=("table_1.mean_gap.idealised", "table_1.mean_gap.lifo", "greedy.mismatches",
                  "sampling.p_values.residual", "heatmaps.baseline_over_dsi_peak"),
        ci_seconds=70,
        full_minutes=20,
        full_note="heatmaps at step 0.01, 1e5 Monte-Carlo runs, 1e6 paths, 3000-run emulations, 50 prompts, "
                  "1e5 sampling draws and a wider target trained 10x longer, on the tiny models with passes "
                  "padded to 40 ms as in ci; then the engine on a real Table 1 pair (Vicuna-68M drafting "
                  "for Vicuna-7B through transformers, unpadded): measured d, t(1) and t(P) for P = 1..8, "
                  "non-SI, SI and DSI on 20 Alpaca prompts of 50 tokens against the latency model's "
                  "predictions, greedy identity, and the first-token law over 1e4 sampled generations",
    ),
    "decision-tree-language-models": ChapterSpec(
        name="decision-tree-language-models",
        title="The power of autoregressive decision trees",
        notebook="chapters/decision-tree-language-models.ipynb",
        params={
            "max_length": Param(int, 14, 24, "longest input length of the exhaustive automaton checks", minimum=1, smoke=6),
            "tm_bits": Param(int, 10, 14, "binary-increment inputs checked: every number of this many bits",
                             minimum=1, smoke=4),
            "circuit_inputs": Param(int, 12, 16, "inputs of the random circuits (every input is checked)", minimum=2, smoke=4),
            "circuit_gates": Param(int, 60, 10_000, "gates of the largest random circuit (a quarter as many in the "
                                   "other)", minimum=1, smoke=8),
            "large_dfa_states": Param(int, 0, 128, "states of a random automaton added to the exhaustive checks "
                                      "(every state reachable by construction); 0 adds none", minimum=0, smoke=12),
            "palindrome_length": Param(int, 0, 18, "the palindrome machine runs on every binary string up to this "
                                       "length; 0 skips it", minimum=0, smoke=4),
            "traces": Param(int, 300, 1000, "machine traces CART learns from", minimum=10, smoke=20),
            "train_sentences": Param(int, 6000, 60_000, "training sentences of the language models", minimum=100, smoke=200),
            "test_sentences": Param(int, 1000, 10_000, "held-out sentences", minimum=100, smoke=100),
            "lm_rounds": Param(int, 40, 200, "boosting rounds of the tree language model", minimum=1, smoke=3),
            "gpt_steps": Param(int, 600, 6000, "training steps of the tiny transformers", minimum=10, smoke=20),
            "samples": Param(int, 400, 2000, "sentences sampled from each model for the parser", minimum=10, smoke=20),
            "expressions": Param(int, 6000, 60_000, "Boolean expressions of the reasoning task", minimum=200, smoke=300),
            "reasoning_steps": Param(int, 200, 6000, "training steps of each transformer of the reasoning task",
                                     minimum=10, smoke=20),
            "story_count": Param(int, 0, 147_273, "TinyStories training stories of the paper's pipeline and its "
                                 "transformer (the paper's count); 0 skips the TinyStories section", minimum=0, smoke=40),
            "story_test": Param(int, 2000, 2000, "held-out TinyStories validation stories both models are scored on",
                                minimum=4, smoke=8),
            "story_vocab": Param(int, 8192, 8192, "word types kept on TinyStories (the rest become <unk>)", minimum=3,
                                 smoke=60),
            "story_dim": Param(int, 100, 100, "Word2Vec dimension on TinyStories", minimum=1, smoke=8),
            "story_rounds": Param(int, 200, 200, "XGBoost rounds on TinyStories (one tree per embedding coordinate "
                                  "per round)", minimum=1, smoke=2),
            "story_rows": Param(int, 1_000_000, 1_000_000, "TinyStories positions the trees are fitted on (drawn at "
                                "random)", minimum=100, smoke=1000),
            "story_gpt_steps": Param(int, 6000, 6000, "training steps (64 rows of 256 tokens) of the TinyStories "
                                     "transformer", minimum=1, smoke=10),
        },
        module="ardt",
        datasets=("tinystories",),
        gpu="the compiled trees of the exhaustive checks are walked there (torch gathers; the direct "
            "simulations they are checked against stay in NumPy); the transformer set beside the paper's "
            "pipeline on TinyStories trains and is scored there; XGBoost too when the installed XGBoost is "
            "a CUDA build (the pinned xgboost-cpu is not: its trees then use every core); Word2Vec, the "
            "grammar models and the small transformers of the other sections stay on the CPU",
        headline=("language_models.scores.ARDT (boosted trees).perplexity",
                  "language_models.scores.TinyGPT.perplexity", "language_models.ratio", "agreement.trees, L=8",
                  "agreement.TinyGPT"),
        ci_seconds=75,
        full_minutes=65,
        full_note="exhaustive automaton checks to length 24 with a 128-state random automaton, the "
                  "palindrome Turing machine on every string up to length 18, circuits of 2,500 and 10,000 "
                  "gates on all 2^16 inputs; on the generated languages 10x the text, 200 boosting rounds, "
                  "10x longer transformer training (30x for the two reasoning transformers); then the "
                  "paper's Word2Vec + XGBoost pipeline on 147,273 TinyStories stories (8,192 words, "
                  "dimension 100, 200 rounds of depth-6 trees on a million positions) beside a 2-layer "
                  "transformer of as many parameters, scored on 2,000 validation stories",
    ),
    "collapse-and-transfer": ChapterSpec(
        name="collapse-and-transfer",
        title="Neural collapse and few-shot transfer",
        notebook="chapters/collapse-and-transfer.ipynb",
        params={
            "source_classes": Param(tuple, (5, 20, 100), (5, 20, 100, 400), "numbers of source classes", minimum=2,
                                    smoke=(5, 20)),
            "train_steps": Param(int, 4000, 20_000, "SGD steps of each supervised encoder", minimum=1, smoke=30),
            "episodes": Param(int, 100, 1000, "5-way 5-shot episodes per encoder", minimum=2, smoke=3),
            "mc_episodes": Param(int, 200, 2000, "episodes per shot count on the Gaussian classes", minimum=2,
                                 smoke=3),
            "contrastive_steps": Param(int, 300, 3000, "steps of each contrastive run", minimum=1, smoke=3),
            "kernel_points": Param(int, 256, 1024, "points of the kernel NC1 data sets", minimum=8, smoke=32),
            "cifar_epochs": Param(int, 0, 100, "epochs of the ResNet-18 on the CIFAR-100 source classes; 0 skips "
                                  "the CIFAR-100 experiment", minimum=0, smoke=1),
            "cifar_width": Param(int, 64, 64, "first-stage channels of that ResNet-18 (64: the standard one)",
                                 minimum=1, smoke=4),
            "cifar_episodes": Param(int, 0, 1000, "5-way episodes per shot count on the CIFAR-100 target classes",
                                    minimum=0, smoke=3),
        },
        module="collapse",
        datasets=("cifar100",),
        gpu="every network trains on the device (in full a ResNet-18 on 80 CIFAR-100 source classes); features "
            "and the CIFAR-100 few-shot episodes are computed there, and moments and bounds leave for NumPy "
            "once per feature map; the kernel NC1 and the Gaussian studies stay on the host",
        ci_seconds=70,
        full_minutes=20,
        full_note="a ResNet-18 trained 100 epochs on 80 CIFAR-100 classes (about 5 of the minutes), few-shot "
                  "transfer to the 20 held-out classes at m = 1 to 500; 400 source classes, 5x longer training, "
                  "1000 episodes, 10x longer contrastive runs, 1024-point kernels",
        headline=("transfer.results.100.error", "transfer.results.100.T1", "transfer.results.100.target CDNV",
                  "contrastive.cka.64"),
        tf32=True,
        precision="float32 training with bf16 autocast for the ResNet-18 and TF32 products on CUDA; CDNVs and "
                  "bounds in float64 NumPy on the host",
    ),
    "canonical-representations": ChapterSpec(
        name="canonical-representations",
        title="The canonical representation hypothesis",
        notebook="chapters/canonical-representations.ipynb",
        params={
            "steps": Param(int, 8000, 40_000, "SGD steps of every weight-decay, batch and rate run", minimum=1,
                           smoke=100),
            "gd_steps": Param(int, 1500, 20_000, "steps of the full-batch gradient-descent run", minimum=1,
                              smoke=50),
            "log_every": Param(int, 500, 500, "steps between alignment measurements during training", minimum=1,
                               smoke=25),
            "null_draws": Param(int, 10, 100, "draws of each null baseline", minimum=1, smoke=2),
            "boots": Param(int, 100, 1000, "bootstrap resamples of each power-law fit", minimum=2, smoke=5),
            "activations": Param(str, "relu", "relu,tanh", "activations of the weight-decay sweep",
                                 choices=("relu", "tanh", "relu,tanh"), smoke="relu,tanh"),
            "synthetic_steps": Param(int, 4000, 40_000, "SGD steps of the Gaussian-mixture runs", minimum=1,
                                     smoke=50),
            "transformer_steps": Param(int, 300, 3000, "Adam steps of the small transformer", minimum=1, smoke=10),
            "transformer_width": Param(int, 32, 256, "width of the small transformer", choices=(16, 32, 64, 128, 256),
                                       smoke=16),
            "transformer_layers": Param(int, 2, 4, "blocks of the small transformer", minimum=1, smoke=1),
            "vision_steps": Param(int, 0, 20_000, "SGD steps of each convolutional run; 0 skips them", minimum=0,
                                  smoke=20),
            "vision_images": Param(int, 5000, 5000, "synthetic 32x32 training images of the convolutional runs",
                                   minimum=10, smoke=200),
            "cifar_epochs": Param(int, 0, 100, "epochs of each ResNet-18 run on CIFAR-10; 0 skips them", minimum=0,
                                  smoke=1),
            "cifar_width": Param(int, 0, 64, "first-stage channels of the ResNet-18 (head 8x wider); 0 in ci, "
                                 "where it is not built", minimum=0, smoke=4),
            "cifar_seeds": Param(int, 0, 3, "seeds of each ResNet-18 setting", minimum=0, smoke=1),
            "cifar_measure": Param(int, 0, 10_000, "training images on which the ResNet-18 alignments are measured",
                                   minimum=0, smoke=100),
        },
        module="alignment",
        datasets=("cifar10",),
        gpu="every network trains on the device, ResNet-18 on CIFAR-10 in full; alignments are measured on "
            "the device and leave for NumPy once per measurement",
        ci_seconds=85,
        full_minutes=240,
        full_note="ResNet-18 (width 64, head 512-512-10) on CIFAR-10 for 100 epochs at nine weight-decay, rate "
                  "and batch settings over 3 seeds (about 3.5 of the hours), plus five times longer digits training, "
                  "the tanh sweep, convolutional networks on 32x32 class images, a 4-block width-256 transformer, "
                  "100 null draws, 1,000 bootstraps",
        headline=("weight_decay_sharpens.mean_top", "weight_decay_sharpens.mean_zero",
                  "weight_decay_sharpens.largest_null", "gd_against_sgd.difference", "t2_transformer.worst"),
        precision="float32, bf16 autocast for the ResNet-18's training forward passes on CUDA, no TF32 in the "
                  "alignment measurements; power-law fits in float64 NumPy",
    ),
    "sparse-network-bounds": ChapterSpec(
        name="sparse-network-bounds",
        title="Norm-based generalization bounds for compositionally sparse networks",
        notebook="chapters/sparse-network-bounds.ipynb",
        params={
            "sample_sizes": Param(tuple, (250, 1000, 4000), (250, 500, 1000, 2000, 4000, 16000),
                                  "training-set sizes of the teacher experiment", minimum=10, smoke=(250, 500)),
            "student_steps": Param(int, 1500, 10_000, "SGD steps of each sparse student", minimum=1, smoke=5),
            "digits_steps": Param(int, 1000, 10_000, "SGD steps of the digits students", minimum=1, smoke=5),
            "depth_steps": Param(int, 6000, 20_000, "SGD steps of the effective-depth MLPs", minimum=1, smoke=5),
            "noise_percents": Param(tuple, (10, 25), (10, 25, 50),
                                    "percentages of training labels replaced by uniform ones", minimum=1,
                                    smoke=(10, 25)),
            "seeds": Param(int, 3, 5, "retrained seeds of the multi-seed experiments", minimum=2, smoke=2),
            "depth_width": Param(int, 48, 128, "width of the effective-depth MLPs", minimum=1, smoke=8),
            "paper_epochs": Param(int, 0, 100, "epochs of each CONV-L-H network on MNIST and CIFAR-10; 0 skips "
                                  "that experiment", minimum=0, smoke=1),
            "paper_depths": Param(tuple, (3, 4, 5, 6, 7, 8), (3, 4, 5, 6, 7, 8),
                                  "numbers L of 2x2 convolutions of the CONV-L-H networks", minimum=1,
                                  smoke=(3, 4)),
            "paper_sizes": Param(tuple, (1000, 10_000, 60_000), (1000, 10_000, 60_000),
                                 "training-set sizes of the CONV-L-H networks (capped at the whole training set)",
                                 minimum=1, smoke=(32, 96)),
            "paper_width": Param(int, 128, 128, "channels H of the CONV-L-H networks", minimum=1, smoke=4),
        },
        module="bounds",
        datasets=("mnist", "cifar10"),
        gpu="the paper's CONV-L-H networks train on MNIST and CIFAR-10 on the device, and so do the teacher, "
            "digits and effective-depth students; the bounds' norms and pixel energies are computed in float64 "
            "and leave for NumPy once",
        ci_seconds=75,
        full_minutes=150,
        full_note="CONV-L-128 networks (L = 3..8) trained 100 epochs on MNIST and CIFAR-10 with n = 1,000, "
                  "10,000 and the whole training set (about 2 hours of the 2.5); six teacher sample sizes up to "
                  "16,000, about seven times longer training, five seeds, width-128 effective-depth MLPs",
        headline=("digits.O.sparse", "digits.O.grs", "digits.O.test error", "digits.O.train error",
                  "subsample.slope"),
        tf32=True,
        precision="float32 training with TF32 products on CUDA (the bounds read trained weights, not a "
                  "training trajectory); norms and pixel energies in float64",
    ),
}


def chapter(name: str) -> ChapterSpec:
    """The chapter called ``name``; ``ValueError`` listing the known chapters otherwise."""
    if name not in CHAPTERS:
        raise ValueError(f"unknown chapter {name!r}; known chapters: {', '.join(sorted(CHAPTERS))}")
    return CHAPTERS[name]




def full_profile_text(name: str, root: Any = None) -> str:
    """The box a chapter shows about its ``full`` profile, as MyST Markdown, written from the table:
    what it runs, its data, what the GPU does, the expected time (measured or an estimate, said which),
    the commands, and its headline numbers in ``ci`` beside the published ``full`` result (see
    :mod:`theorylab.results`), with that result's provenance and whether it is stale."""
    from .data import DATA_ENV, public_set

    spec = chapter(name)
    if spec.datasets:
        sets = ", ".join(public_set(key).title for key in spec.datasets)
        data = (f"{sets}, downloaded on first use into the cache folder (`${DATA_ENV}`, by default "
                "`~/.cache/theorylab/data`); offline, the run stops before any work and says where to "
                "place the files.")
    elif spec.data_note:
        data = (f"{spec.data_note}, downloaded on first use into the cache folder (`${DATA_ENV}`, by default "
                "`~/.cache/theorylab/data`); offline, the run stops before any work and says what to fetch.")
    else:
        data = "Generated on the spot, as in `ci`; nothing is downloaded."
    gpu = spec.gpu if spec.gpu else f"none; it runs on the CPU because {spec.cpu_reason}"
    device = "cuda" if spec.gpu else "cpu"
    where = "one GPU" if spec.gpu else "the CPU, every core"
    kind = ("measured" if spec.full_measured else
            "an estimate scaled from its networks' seconds per epoch, measured on an NVIDIA H200 by "
            "`scripts/gpu-check`; the whole run not yet timed" if spec.datasets else "an estimate, not yet measured")
    return "\n".join([
        ":::{admonition} The `full` profile", ":class: tip",
        f"**What it runs.** {spec.full_note[:1].upper()}{spec.full_note[1:]}.", "",
        f"**Data.** {data}", "",
        f"**The GPU.** {gpu[:1].upper()}{gpu[1:]}." + (f" Precision: {spec.precision}." if spec.gpu else ""),
        "",
        f"**Time.** About {_duration(spec.full_minutes)} on {where} ({kind}).", "",
        f"**Commands.** `theorylab run {name} --profile full --device {device}`; before a long run, "
        f"`theorylab run {name} --profile full --smoke --device cpu` runs the same code path at toy sizes in "
        "seconds on a CPU.", "", *results_lines(name, root), ":::"])


def _duration(minutes: float) -> str:
    """``45 minutes``, ``2.5 hours``: hours from two hours up."""
    return f"{minutes:g} minutes" if minutes < 120 else f"{minutes / 60:.2g} hours"


def _number(entry: dict | None, center: str, spread: str) -> str:
    if not entry or entry.get(center) is None:
        return "—"
    text = f"{entry[center]:.3g}"
    return text + (f" ± {entry[spread]:.2g}" if entry.get(spread) else "")


def results_lines(name: str, root: Any = None) -> list[str]:
    """The box's lines about full-scale results: a table of the headline numbers, ``ci`` (the committed
    calibration runs: centre ± spread over seeds and CPU kernels) beside ``full`` (the published result:
    mean ± standard deviation over its seeds), with that run's hardware, date, commit and seeds."""
    from pathlib import Path

    from . import baselines, results

    if root is None:
        from .cli import book_root

        root = book_root()
    spec = chapter(name)
    document = results.load(Path(root), name)
    if document is None:
        return ["**At full scale.** Not yet run at full scale: no published result."]
    where = document["provenance"]
    seeds = document["seeds"]
    state = []
    if results.is_stale(Path(root), document):
        state.append("**stale**: the chapter has changed since this run")
    if document["smoke"]:
        state.append("a `--smoke` run at toy sizes, whose numbers mean nothing")
    if document["status"] != "ok":
        state.append("**a check failed**: " + "; ".join(document["failures"])[:300])
    commit = (where.get("commit") or "unknown")[:10] + (" with uncommitted changes" if where.get("dirty") else "")
    lines = [f"**At full scale.** {len(seeds)} seed(s) on {where['device_name']} ({where['device']}), "
             f"{where['started_utc'][:10]}, commit {commit}, {where['wall_seconds']:.0f} s"
             + (f"; {'; '.join(state)}." if state else ".")]
    ci = {}
    baseline_file = baselines.baseline_path(Path(root), name)
    if baseline_file.exists():
        ci = json.loads(baseline_file.read_text())["metrics"]
    leaves = spec.headline or tuple(sorted(document["metrics"]))[:6]
    lines += ["", "| number | ci (this page) | full |", "| --- | --- | --- |"]
    for leaf in leaves:
        lines.append(f"| `{leaf}` | {_number(ci.get(leaf), 'value', 'spread')} "
                     f"| {_number(document['metrics'].get(leaf), 'mean', 'std')} |")
    return lines


def full_profile_box(name: str):
    """:func:`full_profile_text` as a Markdown display object, for a chapter cell."""
    from IPython.display import Markdown

    return Markdown(full_profile_text(name))
