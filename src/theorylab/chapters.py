"""The one chapter table: each chapter's knobs (their ``ci``, ``full`` and ``--smoke`` values and
allowed ranges), its helper module, the public data sets its ``full`` profile reads, and what a GPU
does for it. :mod:`theorylab.runtime` validates against it, ``theorylab list`` prints it, and each
chapter's box about its ``full`` profile quotes it.
"""
from __future__ import annotations

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

    def __post_init__(self) -> None:
        if bool(self.gpu) == bool(self.cpu_reason):
            raise ValueError(f"{self.name}: give exactly one of gpu (what the GPU does) and cpu_reason")


CHAPTERS: dict[str, ChapterSpec] = {
    "contract-design": ChapterSpec(
        name="contract-design",
        title="Contract design through implicit differentiation",
        notebook="chapters/contract-design.ipynb",
        params={
            "n_starts": Param(int, 20, 90, "random starts per recovery experiment", minimum=1),
            "scaling_sizes": Param(tuple, (1000, 10000), (1000, 10000, 100000, 1000000),
                                   "numbers of tasks n for the scaling run", minimum=2),
            "dense_max": Param(int, 4000, 20000, "largest n solved densely for comparison", minimum=2),
            "mc_replications": Param(int, 100, 400, "replications per sample size (Monte Carlo)",
                                     minimum=2),
            "mc_max_log2": Param(int, 11, 14, "largest Monte-Carlo sample size, as a power of 2",
                                 minimum=3),
            "cap_max": Param(float, 2.0, 5.0, "largest cap on the logistic bonus (see the chapter beyond 5)",
                             minimum=1.0),
            "logistic_starts": Param(int, 4, 90, "starts per cap for logistic pay", minimum=1),
        },
        module="contracts",
        gpu="every environment, solve and Monte-Carlo replication runs in float64 on the device; the "
            "scaling run's conjugate-gradient solves and their timings (synchronised) are the GPU's share",
        ci_seconds=55,
        full_minutes=15,
        full_note="n up to 10^6 tasks, 90 starts, caps up to 5, 400 replications",
    ),
    "rank-minimization": ChapterSpec(
        name="rank-minimization",
        title="SGD and weight decay secretly minimize the rank of your network",
        notebook="chapters/rank-minimization.ipynb",
        params={
            "steps": Param(int, 6_000, 40_000, "SGD steps of the fixed-step runs", minimum=1),
            "epochs": Param(float, 40.0, 40.0, "epochs of the fixed-epoch protocol", minimum=0.01),
            "certificate_steps": Param(int, 6_000, 20_000, "steps of the certificate run", minimum=400),
            "cnn_steps": Param(int, 3_000, 20_000, "steps of each convolutional run", minimum=1),
            "seeds": Param(int, 3, 5, "seeds retrained for every setting (spread shown)", minimum=2),
            "grid_size": Param(int, 0, 5, "points per axis of the (batch, learning rate) grid; 0 skips it",
                               minimum=0),
        },
        module="rank",
        datasets=("cifar10",),
        gpu="the paper's ResNet-18, VGG-16 and MLP with batch and weight normalisation train on CIFAR-10 "
            "on the device; ranks are computed in float64 on the host",
        ci_seconds=80,
        full_minutes=240,
        full_note="6.7x longer runs, 5 seeds per setting, a 5x5 (batch, rate) grid per weight decay under both "
                  "protocols (estimated, not run)",
    ),
    "speculative-inference": ChapterSpec(
        name="speculative-inference",
        title="Distributed speculative inference, proved and measured",
        notebook="chapters/speculative-inference.ipynb",
        params={
            "heatmap_step": Param(float, 0.05, 0.01, "grid step of the (c, a) heatmaps", minimum=0.001),
            "heatmap_runs": Param(int, 50, 200, "simulated runs per cell of the N = 1000 heatmap", minimum=30),
            "mc_runs": Param(int, 4000, 100_000, "Monte-Carlo runs held against the exact expectation", minimum=100),
            "paths": Param(int, 10_000, 1_000_000, "sampled paths of the pathwise check of Theorem 1", minimum=100),
            "emulation_runs": Param(int, 300, 3000, "runs per configuration of the Table 1 emulation", minimum=300),
            "prompts": Param(int, 8, 50, "prompts of the greedy losslessness check", minimum=1),
            "sampling_draws": Param(int, 10_000, 100_000, "generations of the sampling test", minimum=1000),
            "target_ms": Param(float, 40.0, 40.0, "padded target latency t of the wall-clock runs, in ms",
                               minimum=1.0),
            "train_steps": Param(int, 300, 3000, "training steps of the target model", minimum=10),
            "model_width": Param(int, 32, 128, "width of the target transformer", choices=(16, 32, 64, 128, 256)),
        },
        module="speculative",
        gpu="one copy of the target model per CUDA device in the wall-clock runs; the latency model, the "
            "emulation and the sampling test are NumPy on the host",
        ci_seconds=70,
        full_minutes=10,
        full_note="heatmaps at step 0.01, 1e5 Monte-Carlo runs, 1e6 paths, 3000-run emulations, 50 prompts, "
                  "1e5 sampling draws, a wider target trained 10x longer (one target copy per CUDA device)",
    ),
    "decision-tree-language-models": ChapterSpec(
        name="decision-tree-language-models",
        title="The power of autoregressive decision trees",
        notebook="chapters/decision-tree-language-models.ipynb",
        params={
            "max_length": Param(int, 14, 20, "longest input length of the exhaustive automaton checks", minimum=1),
            "tm_bits": Param(int, 10, 14, "binary-increment inputs checked: every number of this many bits",
                             minimum=1),
            "circuit_inputs": Param(int, 12, 16, "inputs of the random circuits (every input is checked)", minimum=2),
            "circuit_gates": Param(int, 60, 300, "gates of the largest random circuit", minimum=1),
            "traces": Param(int, 300, 1000, "machine traces CART learns from", minimum=10),
            "train_sentences": Param(int, 6000, 60_000, "training sentences of the language models", minimum=100),
            "test_sentences": Param(int, 1000, 10_000, "held-out sentences", minimum=100),
            "lm_rounds": Param(int, 40, 200, "boosting rounds of the tree language model", minimum=1),
            "gpt_steps": Param(int, 600, 6000, "training steps of the tiny transformers", minimum=10),
            "samples": Param(int, 400, 2000, "sentences sampled from each model for the parser", minimum=10),
            "expressions": Param(int, 6000, 60_000, "Boolean expressions of the reasoning task", minimum=200),
            "reasoning_steps": Param(int, 200, 6000, "training steps of each transformer of the reasoning task",
                                     minimum=10),
        },
        module="ardt",
        cpu_reason="its trees, automata and circuits are NumPy and scikit-learn code and its transformers are "
                   "too small for a GPU to pay; the language-model chapters' issue moves the paper's "
                   "pipeline to the GPU",
        ci_seconds=75,
        full_minutes=30,
        full_note="exhaustive checks to length 20, circuits with 300 gates on 16 inputs, 10x the text, "
                  "200 boosting rounds (both tree models), 10x longer transformer training, 30x longer "
                  "for the two reasoning transformers (estimated on CPU; not run)",
    ),
    "collapse-and-transfer": ChapterSpec(
        name="collapse-and-transfer",
        title="Neural collapse and few-shot transfer",
        notebook="chapters/collapse-and-transfer.ipynb",
        params={
            "source_classes": Param(tuple, (5, 20, 100), (5, 20, 100, 400), "numbers of source classes", minimum=2),
            "train_steps": Param(int, 4000, 20_000, "SGD steps of each supervised encoder", minimum=1),
            "episodes": Param(int, 100, 1000, "5-way 5-shot episodes per encoder", minimum=2),
            "mc_episodes": Param(int, 200, 2000, "episodes per shot count on the Gaussian classes", minimum=2),
            "contrastive_steps": Param(int, 300, 3000, "steps of each contrastive run", minimum=1),
            "kernel_points": Param(int, 256, 1024, "points of the kernel NC1 data sets", minimum=8),
        },
        module="collapse",
        datasets=("cifar100",),
        gpu="a ResNet-18 encoder trained on CIFAR-100 source classes on the device; class-distance "
            "variances and few-shot errors computed on the device, bounds on the host",
        ci_seconds=70,
        full_minutes=30,
        full_note="400 source classes, 5x longer training, 1000 episodes, 10x longer contrastive runs, 1024-point "
                  "kernels (estimated on CPU; not run)",
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
        full_minutes=380,
        full_note="ResNet-18 (width 64, head 512-512-10) on CIFAR-10 for 100 epochs at nine weight-decay, rate "
                  "and batch settings over 3 seeds (about 6 h, an estimate from typical ResNet-18 epoch times, "
                  "not measured), plus five times longer digits training, the tanh sweep, convolutional networks "
                  "on 32x32 class images, a 4-block width-256 transformer, 100 null draws, 1,000 bootstraps "
                  "(about 25 min, estimated from ci timings)",
    ),
    "sparse-network-bounds": ChapterSpec(
        name="sparse-network-bounds",
        title="Norm-based generalization bounds for compositionally sparse networks",
        notebook="chapters/sparse-network-bounds.ipynb",
        params={
            "sample_sizes": Param(tuple, (250, 1000, 4000), (250, 500, 1000, 2000, 4000, 16000),
                                  "training-set sizes of the teacher experiment", minimum=10),
            "student_steps": Param(int, 1500, 10_000, "SGD steps of each sparse student", minimum=1),
            "digits_steps": Param(int, 1000, 10_000, "SGD steps of the digits students", minimum=1),
            "depth_steps": Param(int, 6000, 20_000, "SGD steps of the effective-depth MLPs", minimum=1),
            "noise_percents": Param(tuple, (10, 25), (10, 25, 50),
                                    "percentages of training labels replaced by uniform ones", minimum=1),
            "seeds": Param(int, 3, 5, "retrained seeds of the multi-seed experiments", minimum=2),
            "depth_width": Param(int, 48, 128, "width of the effective-depth MLPs", minimum=1),
        },
        module="bounds",
        datasets=("mnist", "cifar10"),
        gpu="the paper's CONV-L-H networks train on MNIST and CIFAR-10 on the device; the bounds' norms "
            "are computed in float64 on the host",
        ci_seconds=75,
        full_minutes=180,
        full_note="six sample sizes up to 16,000, about seven times longer training, five seeds, width-128 "
                  "effective-depth MLPs (estimated on CPU, not measured; the paper's 28x28 scale is described, not run)",
    ),
}


def chapter(name: str) -> ChapterSpec:
    """The chapter called ``name``; ``ValueError`` listing the known chapters otherwise."""
    if name not in CHAPTERS:
        raise ValueError(f"unknown chapter {name!r}; known chapters: {', '.join(sorted(CHAPTERS))}")
    return CHAPTERS[name]


