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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from . import baselines
from .chapters import chapter
from .validation import nonnegative_int

PROFILES = ("ci", "full")
RUN_DIR_ENV = "THEORYLAB_RUN_DIR"
"""Environment variable naming the folder where a run writes ``metrics.json`` (set by the CLI)."""


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
            smoke: bool = False, **overrides: Any) -> dict[str, Any]:
    """Resolve and validate every parameter of a chapter; no side effects.

    A knob given as ``None`` takes its profile value (its ``--smoke`` value when ``smoke``, which needs
    the ``full`` profile). Unknown knobs, bad types and out-of-range values raise ``ValueError`` with
    the parameter's name, the value given and what is allowed. A chapter that runs on the CPU (empty
    ``gpu`` in the chapter table) resolves every device to ``cpu``.
    """
    spec = chapter(chapter_name)
    profile = check_profile(profile)
    if not isinstance(smoke, bool):
        raise ValueError(f"smoke: got {smoke!r}, expected True or False")
    if smoke and profile != "full":
        raise ValueError("smoke shrinks the full profile: use it with profile 'full'")
    if profile == "ci" and device == "auto":
        device = "cpu"  # the committed ci outputs are CPU outputs: a GPU must not change them
    device = check_device(device)
    if not spec.gpu:
        device = "cpu"
    resolved: dict[str, Any] = {"profile": profile, "device": device, "seed": check_seed(seed),
                                "smoke": smoke}
    unknown = sorted(set(overrides) - set(spec.params))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for chapter {chapter_name!r}; "
                         f"known: {sorted(spec.params)}")
    for name, param in spec.params.items():
        value = overrides.get(name)
        resolved[name] = param.validate(name, param.value(profile, smoke) if value is None else value)
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
    smoke: bool = False
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    started_utc: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    provenance: dict[str, Any] | None = None

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
            if self.provenance is None:
                self.provenance = {**provenance(self.chapter), "started_utc": self.started_utc}
            provenance_now = {**self.provenance, "wall_seconds": round(time.monotonic() - self.started, 1)}
            path.write_text(json.dumps({"chapter": self.chapter, "profile": self.profile,
                                        "smoke": self.smoke, "seed": self.seed, **self.hardware(),
                                        "params": self.params, "checks": self.metrics,
                                        "provenance": provenance_now}, indent=2))

    def hardware(self) -> dict[str, Any]:
        """Where this run computes: the device and its name, torch's threads, the CPU's vector kernels."""
        import torch

        name = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                else platform_processor())
        return {"device": str(self.device), "device_name": name, "torch_threads": torch.get_num_threads(),
                "cpu_capability": cpu_capability()}


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
        return (self.profile == "ci" and not self.smoke and self.device.type == "cpu"
                and jsonable(self.params) == jsonable({k: reference[k] for k in self.params}))

    def has_checkpoint(self, name: str) -> bool:
        """Whether :meth:`checkpoint` would return a saved value for ``name`` without computing."""
        if self.run_dir is None:
            return False
        path = self.run_dir / "checkpoints" / f"{name}.pkl"
        if not path.exists():
            return False
        with path.open("rb") as handle:
            saved_key, _ = pickle.load(handle)
        return saved_key == self._checkpoint_key()

    def _checkpoint_key(self) -> str:
        return json.dumps([self.chapter, self.profile, self.smoke, self.seed, jsonable(self.params)])

    def background(self, name: str, function: Callable, *args: Any, **kwargs: Any) -> Background:
        """Start ``function(*args, **kwargs)`` in a separate process now and return a handle whose
        ``result()`` waits for it and saves it as checkpoint ``name`` (a saved one is reused and no
        process starts). ``function`` must be importable (defined in a module, not in the notebook).
        A ``ci`` run is given two cores and one torch thread: independent experiments of a chapter can
        run side by side, each single-threaded, with the numbers they would have in sequence."""
        return Background(self, name, function, args, kwargs)

    def checkpoint(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, saved under ``checkpoints/NAME.pkl`` of a CLI run and reused on resume.

        A saved value is reused only if it was made with the same chapter, profile, seed and
        parameters; outside a CLI run (``THEORYLAB_RUN_DIR`` unset) this just calls ``compute``.
        """
        if self.run_dir is None:
            return compute()
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"checkpoint name: got {name!r}, expected letters, digits, '_' or '-'")
        key = self._checkpoint_key()
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


class Background:
    """A computation running in a separate process (see :meth:`Config.background`); :meth:`result`
    waits for it, or returns the saved checkpoint without having started anything."""

    def __init__(self, config: Any, name: str, function: Callable, args: tuple, kwargs: dict):
        self._config, self._name = config, name
        self._future = self._executor = None
        if not config.has_checkpoint(name):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            import torch

            # a fresh interpreter with the parent's thread count: the same single-threaded kernels,
            # so the numbers are those the parent would compute, on the second core the budget grants
            self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_background_init, initargs=(torch.get_num_threads(),))
            self._future = self._executor.submit(function, *args, **kwargs)

    @property
    def started(self) -> bool:
        """Whether a process was started (``False`` when a checkpoint held the result)."""
        return self._future is not None

    def result(self) -> Any:
        try:
            return self._config.checkpoint(self._name, lambda: self._future.result())
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)


def _background_init(threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def jsonable(value: Any) -> Any:
    """``value`` with arrays, tuples and non-string keys made JSON-serialisable."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


COMMAND_ENV = "THEORYLAB_COMMAND"
"""Environment variable holding the command line of a CLI run (recorded in ``metrics.json``)."""


def provenance(chapter_name: str) -> dict[str, Any]:
    """Where a run's numbers come from: the book's commit (and whether the tree had uncommitted
    changes), the chapter's source hash, Python and package versions, the CPU and its core count, the
    command and the time of this call (UTC; a run's ``metrics.json`` gives the time its configuration
    was made). Wall time is added when metrics are written."""
    import importlib.metadata
    import platform
    import subprocess
    from datetime import UTC, datetime

    from .cli import book_root, source_hash

    root = book_root()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for package in ("theorylab", "torch", "numpy", "scipy", "scikit-learn", "sympy", "papermill", "xgboost-cpu"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    markdown = root / "chapters" / f"{chapter_name}.md"
    return {"commit": commit, "dirty": bool(status) if status is not None else None,
            "source_hash": source_hash(root, markdown) if markdown.exists() else None,
            "python": platform.python_version(), "packages": versions, "cpu": platform_processor(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "command": os.environ.get(COMMAND_ENV, "a notebook run outside the CLI"),
            "started_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def platform_processor() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
              smoke: bool = False, threads: int | None | str = "auto", **overrides: Any) -> Config:
    """Validate a chapter's parameters, then seed, pick the device and set torch's threads. A ``full``
    run (not ``--smoke``) fetches the chapter's public data sets here, so that a machine without them
    and without network stops before any work, with :class:`theorylab.data.DatasetUnavailable`.

    ``threads="auto"`` (the default) pins torch's intra-op pool and NumPy's BLAS to one thread in the
    ``ci`` profile and under ``--smoke``, and leaves both libraries their defaults (every core) in a
    ``full`` run. One thread in ``ci`` because on a 2-core machine a small training step or a level-1
    BLAS call is many times slower with two, and two chapters run side by side (the test suite's two
    workers) oversubscribe the cores several times over when each BLAS spins up its own pool.
    An integer pins that many threads; ``None`` leaves the defaults.
    """
    import torch
    from threadpoolctl import threadpool_limits

    values = resolve(chapter, profile, device, seed, smoke, **overrides)
    if threads == "auto":
        threads = 1 if values["profile"] == "ci" or values["smoke"] else None
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: got {threads!r}, expected 'auto', a positive integer or None")
        torch.set_num_threads(threads)
        threadpool_limits(threads)
    from . import chapters as table
    from .data import ensure_public_set

    if values["profile"] == "full" and not values["smoke"]:
        for name in table.chapter(chapter).datasets:  # download now, or stop before any work
            ensure_public_set(name)
        if table.chapter(chapter).downloads:
            import importlib

            module, function = table.chapter(chapter).downloads.rsplit(".", 1)
            getattr(importlib.import_module(f"theorylab.{module}"), function)(values)
    seed_everything(values["seed"])
    if values["device"].startswith("cuda"):
        # TF32 products (10-bit mantissa) only where the chapter table says the numerics allow them
        allow = table.chapter(chapter).tf32
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
    run_dir = os.environ.get(RUN_DIR_ENV)
    params = {k: v for k, v in values.items() if k not in ("profile", "device", "seed", "smoke")}
    return Config(chapter=chapter, profile=values["profile"], device=torch.device(values["device"]),
                  seed=values["seed"], params=params, run_dir=Path(run_dir) if run_dir else None,
                  smoke=values["smoke"])


def from_notebook(namespace: dict[str, Any], chapter: str) -> Config:
    """:func:`configure` with the values of a chapter's ``parameters`` cell, read from ``namespace``
    (the notebook's ``globals()``): ``profile``, ``device``, ``seed``, ``smoke`` (absent: ``False``)
    and every knob of the chapter table, so the cell names each knob once. A knob missing from the
    namespace is an error: the parameters cell and the table must agree."""
    import sys

    from . import chapters as table

    spec = table.chapter(chapter)
    missing = [name for name in ("profile", "device", "seed", *spec.params) if name not in namespace]
    if missing:
        raise ValueError(f"the parameters cell of {chapter!r} does not define {missing}")
    knobs = {name: namespace[name] for name in spec.params}
    config = configure(namespace["profile"], namespace["device"], namespace["seed"], chapter=chapter,
                       smoke=namespace.get("smoke", False), **knobs)
    if config.smoke:
        checks = "assertions off" if sys.flags.optimize else "assertions on (run it with theorylab --smoke)"
        print(f"smoke run: the full code path at toy sizes, {checks}; its numbers mean nothing")
    return config


def median_seconds(function: Callable[[], Any], repeats: int = 5, device: Any = "cpu") -> float:
    """Median wall time of ``repeats`` calls of ``function`` (after one warm-up call). On a CUDA
    ``device`` each call is bracketed by ``torch.cuda.synchronize``: kernels run asynchronously, so
    without it the clock would stop when the work is queued, not when it is done."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    device = torch.device(device)

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    times = []
    for _ in range(repeats):
        wait()
        start = time.perf_counter()
        function()
        wait()
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
