"""Profiles, parameter validation, seeding, device choice and run outputs.

Every chapter's second code cell calls :func:`configure`, which resolves the chapter's knobs from
its profile (``ci`` or ``full``), applies overrides, validates every value before any work starts,
seeds ``random``, ``numpy`` and ``torch``, picks the device and pins torch to one CPU thread.
The CLI calls the same :func:`resolve` before it starts papermill, so a bad value fails in the
same words whether it comes from ``theorylab run -p`` or from an edited notebook.
"""
from __future__ import annotations

import json
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from . import baselines
from .validation import nonnegative_int

PROFILES = ("ci", "full")
RUN_DIR_ENV = "THEORYLAB_RUN_DIR"
"""Environment variable naming the folder where a run writes ``metrics.json`` (set by the CLI)."""


@dataclass(frozen=True)
class Param:
    """One chapter knob: its type, its value in each profile, and what values are allowed."""

    kind: type
    ci: Any
    full: Any
    help: str
    minimum: float | None = None
    choices: tuple | None = None

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
            "steps": Param(int, 8000, 40_000, "SGD steps of every weight-decay, batch and rate run", minimum=1),
            "gd_steps": Param(int, 1500, 20_000, "steps of the full-batch gradient-descent run", minimum=1),
            "log_every": Param(int, 500, 500, "steps between alignment measurements during training", minimum=1),
            "null_draws": Param(int, 10, 100, "draws of each null baseline", minimum=1),
            "boots": Param(int, 100, 1000, "bootstrap resamples of each power-law fit", minimum=2),
            "activations": Param(str, "relu", "relu,tanh", "activations of the weight-decay sweep",
                                 choices=("relu", "tanh", "relu,tanh")),
            "synthetic_steps": Param(int, 4000, 40_000, "SGD steps of the Gaussian-mixture runs", minimum=1),
            "transformer_steps": Param(int, 300, 3000, "Adam steps of the small transformer", minimum=1),
            "transformer_width": Param(int, 32, 128, "width of the small transformer", choices=(16, 32, 64, 128, 256)),
            "transformer_layers": Param(int, 2, 4, "blocks of the small transformer", minimum=1),
            "vision_steps": Param(int, 0, 20_000, "SGD steps of each convolutional run; 0 skips them", minimum=0),
        },
        ci_seconds=85,
        full_minutes=25,
        full_note="five times longer training, the tanh sweep, convolutional networks on 32x32 class images, a "
                  "4-block transformer, 100 null draws, 1,000 bootstraps; estimated from ci timings, never run on "
                  "a GPU (about an hour on 2 CPU cores, two thirds of it the convolutional runs)",
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


def check_profile(profile: Any) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {list(PROFILES)}")
    return profile


def check_device(device: Any) -> str:
    """Validate a device string ``auto|cpu|cuda|cuda:N`` against the hardware present.

    ``auto`` resolves to ``cuda`` when a GPU is visible and to ``cpu`` otherwise (but :func:`resolve`
    keeps the ``ci`` profile on the CPU); asking for CUDA on a machine without it is an error, not a
    silent fall-back.
    """
    import torch

    if not isinstance(device, str):
        raise ValueError(f"device: got {device!r}, expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise ValueError(f"device: got {device!r}, expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def check_seed(seed: Any) -> int:
    return nonnegative_int("seed", seed)


def resolve(chapter_name: str, profile: str = "ci", device: str = "auto", seed: int = 0,
            **overrides: Any) -> dict[str, Any]:
    """Resolve and validate every parameter of a chapter; no side effects.

    A knob given as ``None`` takes its profile value. Unknown knobs, bad types and out-of-range
    values raise ``ValueError`` with the parameter's name, the value given and what is allowed.
    """
    spec = chapter(chapter_name)
    profile = check_profile(profile)
    if profile == "ci" and device == "auto":
        device = "cpu"  # the committed ci outputs are CPU outputs: a GPU must not change them
    resolved: dict[str, Any] = {"profile": profile, "device": check_device(device), "seed": check_seed(seed)}
    unknown = sorted(set(overrides) - set(spec.params))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for chapter {chapter_name!r}; "
                         f"known: {sorted(spec.params)}")
    for name, param in spec.params.items():
        value = overrides.get(name)
        resolved[name] = param.validate(name, getattr(param, profile) if value is None else value)
    return resolved


@dataclass
class Config:
    """What a chapter runs with: resolved knobs, the torch device and a metrics recorder."""

    chapter: str
    profile: str
    device: Any
    seed: int
    params: dict[str, Any]
    run_dir: Path | None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def record(self, check: str, **values: Any) -> None:
        """Store the numbers a check cell asserted on; written to ``metrics.json`` in a CLI run.

        With ``THEORYLAB_COMPARE_BASELINES=1`` (set by the test suite) a ``ci`` run on the CPU with the
        ci parameters also compares them with the chapter's committed baseline and raises
        :class:`theorylab.baselines.BaselineError` naming every number out of its measured tolerance.
        """
        self.metrics[check] = {k: jsonable(v) for k, v in values.items()}
        if baselines.comparing() and self.is_ci_reference():
            from .cli import book_root

            entries = baselines.load(book_root(), self.chapter)["metrics"]
            problems = baselines.compare(entries, check, self.metrics[check])
            if problems:
                raise baselines.BaselineError(f"check {check!r} of {self.chapter} left its baseline:\n  "
                                              + "\n  ".join(problems))
        if self.run_dir is not None:
            path = self.run_dir / "metrics.json"
            path.write_text(json.dumps({"chapter": self.chapter, "profile": self.profile,
                                        "seed": self.seed, "cpu_capability": cpu_capability(),
                                        "params": self.params, "checks": self.metrics}, indent=2))


    def seed_spread(self, leaves: dict[str, str], spec: str = ".3g") -> str:
        """The spread over the committed calibration runs of recorded numbers (``{label: "check.key"}``),
        as text; see :func:`theorylab.baselines.seed_spread`."""
        from .cli import book_root

        if not baselines.baseline_path(book_root(), self.chapter).exists():
            return "no calibration runs yet: write them with `theorylab baselines`"
        return baselines.seed_spread(book_root(), self.chapter, leaves, spec)

    def is_ci_reference(self) -> bool:
        """Whether this run is comparable with the committed ci outputs: ci profile, ci knobs, CPU."""
        reference = resolve(self.chapter, "ci", "cpu", 0)
        return (self.profile == "ci" and self.device.type == "cpu"
                and jsonable(self.params) == jsonable({k: reference[k] for k in self.params}))

    def checkpoint(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, saved under ``checkpoints/NAME.pkl`` of a CLI run and reused on resume.

        A saved value is reused only if it was made with the same chapter, profile, seed and
        parameters; outside a CLI run (``THEORYLAB_RUN_DIR`` unset) this just calls ``compute``.
        """
        if self.run_dir is None:
            return compute()
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"checkpoint name: got {name!r}, expected letters, digits, '_' or '-'")
        key = json.dumps([self.chapter, self.profile, self.seed, jsonable(self.params)])
        path = self.run_dir / "checkpoints" / f"{name}.pkl"
        if path.exists():
            with path.open("rb") as handle:
                saved_key, value = pickle.load(handle)
            if saved_key == key:
                return value
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with partial.open("wb") as handle:
            pickle.dump((key, value), handle)
        partial.replace(path)  # atomic: an interrupted run never leaves a truncated checkpoint
        return value


def jsonable(value: Any) -> Any:
    """``value`` with arrays, tuples and non-string keys made JSON-serialisable."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels use (``ATEN_CPU_CAPABILITY`` or what torch picked)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (CPU and CUDA) with ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure(profile: str = "ci", device: str = "auto", seed: int = 0, *, chapter: str,
              threads: int | None = 1, **overrides: Any) -> Config:
    """Validate a chapter's parameters, then seed, pick the device and set torch's threads.

    ``threads=1`` (the default) pins torch's intra-op pool and NumPy's BLAS to one thread: on a 2-core
    machine a small training step or a level-1 BLAS call is many times slower with two, and two
    chapters run side by side (the test suite's two workers) oversubscribe the cores several times
    over when each BLAS spins up its own pool. ``threads=None`` leaves both libraries' defaults.
    """
    import torch
    from threadpoolctl import threadpool_limits

    values = resolve(chapter, profile, device, seed, **overrides)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads: got {threads!r}, expected a positive integer or None")
        torch.set_num_threads(threads)
        threadpool_limits(threads)
    seed_everything(values["seed"])
    run_dir = os.environ.get(RUN_DIR_ENV)
    params = {k: v for k, v in values.items() if k not in ("profile", "device", "seed")}
    return Config(chapter=chapter, profile=values["profile"], device=torch.device(values["device"]),
                  seed=values["seed"], params=params, run_dir=Path(run_dir) if run_dir else None)


def median_seconds(function: Callable[[], Any], repeats: int = 5) -> float:
    """Median wall time of ``repeats`` calls of ``function`` (after one warm-up call)."""
    import time

    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measured(value: Any, spec: str = ".2f") -> str:
    """A measured number (or list of them) as text marked ``≈``: ``≈0.35``, ``≈[0.15, 0.18]``.

    Training and sampling make such numbers move with the seed and the CPU. The nbval sanitizer
    (``tests/nbval_sanitize.cfg``) masks whatever follows ``≈``, so the regression test compares the
    text around it, while :meth:`Config.record` compares the number with its baseline and tolerance.
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        return "≈[" + ", ".join(format(float(v), spec) for v in value) + "]"
    return "≈" + format(float(value), spec)


def order_of(value: float) -> str:
    """The smallest power of ten at or above ``|value|``, as text (``'1e-11'``; ``'0'`` for zero).

    Check cells print errors this way: the order of magnitude is the claim, and the last digits of
    an error at rounding level are noise that would make a regression test flaky.
    """
    import math

    magnitude = abs(float(value))
    if magnitude == 0:
        return "0"
    return f"1e{math.ceil(math.log10(magnitude) - 1e-12)}"
