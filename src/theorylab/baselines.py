"""Committed baselines of the ``ci`` profile's recorded metrics, compared with a measured tolerance.

Training amplifies last-bit differences between CPUs (vector width, BLAS kernels) exactly as it
amplifies a change of seed, so a number a trained network produces is only as reproducible as its
run-to-run spread. The regression test therefore compares such numbers with a tolerance, not as
text. For every leaf of every ``cfg.record(...)`` call (``check.key``, ``check.key[2]``,
``check.key.sub``) a chapter's baseline file ``chapters/baselines/NAME.json`` stores

* ``value``: the mean :math:`\\bar v` of the leaf over the calibration runs (several seeds and CPU
  capabilities of the ``ci`` profile), and
* ``tolerance``: :math:`\\tau = \\max\\bigl(K s,\\ 1.5 \\max_i |v_i - \\bar v|,\\ \\tau_0(1 + |\\bar v|)\\bigr)`
  with :math:`s` the sample standard deviation of the runs, :math:`K =` :data:`SPREAD_MULTIPLE` and
  :math:`\\tau_0 =` :data:`ROUNDING_FLOOR` (quantities that are exact up to rounding),

and a later run passes when :math:`|v - \\bar v| \\le \\tau`. Text, booleans and ``None`` must match
exactly. Leaves that measure wall-clock time (:func:`is_timing`) depend on the machine's speed and are
not compared. Baselines are written by ``theorylab baselines`` from runs of ``theorylab run``, and
compared when ``THEORYLAB_COMPARE_BASELINES=1`` (the test suite sets it; ``theorylab run
--compare-baselines`` too) by :meth:`theorylab.runtime.Config.record` itself, so the check cell that
recorded a number out of tolerance is the cell that fails.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

COMPARE_ENV = "THEORYLAB_COMPARE_BASELINES"
SPREAD_MULTIPLE = 6.0
"""K: six standard deviations, so that a seed or CPU outside the calibration runs passes unless its
value is a far outlier (for a normal spread estimated from seven runs, about 1 run in 700 per leaf)."""
ROUNDING_FLOOR = 1e-9
"""Relative floor of every tolerance: exact computations differ across CPUs only by rounding."""
TIMING = re.compile(r"(^|[._ ])(seconds|ms|wall|time|times|speed|per_second|measured_over_replay)([._ \[]|$)")
"""Leaf names of wall-clock measurements (and ratios of them): they depend on the machine's speed and load."""


class BaselineError(AssertionError):
    """A recorded metric left its baseline's tolerance, or the baseline does not match the record."""


def baseline_path(root: Path, chapter: str) -> Path:
    return root / "chapters" / "baselines" / f"{chapter}.json"


def is_timing(leaf: str) -> bool:
    """Whether a leaf measures wall-clock time (``check.seconds``, ``check.target_ms[1]``, ...)."""
    return bool(TIMING.search(leaf))


def flatten(values: Any, prefix: str) -> dict[str, Any]:
    """Leaves of nested dicts and lists, keyed ``prefix.key[index].sub``."""
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(flatten(value, f"{prefix}.{key}"))
        return out
    if isinstance(values, (list, tuple)):
        out = {}
        for index, value in enumerate(values):
            out.update(flatten(value, f"{prefix}[{index}]"))
        return out
    return {prefix: values}


def numeric_leaves(checks: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a run's recorded checks, keyed as :func:`flatten` keys them."""
    leaves = {}
    for check, values in checks.items():
        for leaf, value in flatten(values, check).items():
            if _is_number(value) and math.isfinite(value):
                leaves[leaf] = float(value)
    return leaves


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """Equality that takes NaN to equal NaN (a quantity undefined in every run, e.g. a bound below its range)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def derive(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Baseline entries from the ``checks`` of several runs (see the module docstring for the rule).

    Every run must record the same leaves; a leaf that is a number in every run gets ``value``,
    ``tolerance`` and ``spread``; any other leaf must be equal in every run and gets ``exact``.
    """
    if len(runs) < 2:
        raise ValueError(f"baselines need at least 2 calibration runs, got {len(runs)}")
    leaves = [flatten(run, "") for run in runs]
    names = set(leaves[0])
    for index, other in enumerate(leaves[1:], start=1):
        if set(other) != names:
            diff = sorted(names.symmetric_difference(other))[:5]
            raise ValueError(f"run {index} records other metrics than run 0 (e.g. {diff})")
    entries: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        key = name.lstrip(".")
        values = [leaf[name] for leaf in leaves]
        if is_timing(key):
            continue
        if all(_is_number(v) for v in values) and all(math.isfinite(v) for v in values):
            n = len(values)
            mean = sum(values) / n
            spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
            widest = max(abs(v - mean) for v in values)
            tolerance = max(SPREAD_MULTIPLE * spread, 1.5 * widest, ROUNDING_FLOOR * (1 + abs(mean)))
            entries[key] = {"value": mean, "tolerance": tolerance, "spread": spread, "runs": values}
        elif all(_same(v, values[0]) for v in values):
            entries[key] = {"exact": values[0]}
        else:
            raise ValueError(f"metric {key!r} is not a finite number in every run and differs between runs: "
                             f"{values!r}; record it as a number or make it exact")
    return entries


def compare(entries: dict[str, dict[str, Any]], check: str, values: dict[str, Any]) -> list[str]:
    """The leaves of one recorded check that leave their baseline, one message each (empty: all pass)."""
    recorded = {k.lstrip("."): v for k, v in flatten(values, "").items()}
    recorded = {f"{check}.{k}": v for k, v in recorded.items() if not is_timing(f"{check}.{k}")}
    expected = {k: v for k, v in entries.items() if k.startswith(f"{check}.")}
    problems = []
    for name in sorted(set(expected) - set(recorded)):
        problems.append(f"{name}: in the baseline but not recorded (refresh the baseline: theorylab baselines)")
    for name in sorted(set(recorded) - set(expected)):
        problems.append(f"{name}: recorded but not in the baseline (refresh the baseline: theorylab baselines)")
    for name in sorted(set(recorded) & set(expected)):
        entry, value = expected[name], recorded[name]
        if "exact" in entry:
            if not _same(value, entry["exact"]):
                problems.append(f"{name}: {value!r}, expected exactly {entry['exact']!r}")
        elif not _is_number(value) or not math.isfinite(value):
            problems.append(f"{name}: {value!r} is not a finite number (baseline {entry['value']:.6g})")
        elif abs(value - entry["value"]) > entry["tolerance"]:
            problems.append(f"{name}: {value:.6g}, baseline {entry['value']:.6g} +- {entry['tolerance']:.3g} "
                            f"(spread of the calibration runs {entry['spread']:.3g})")
    return problems


def load(root: Path, chapter: str) -> dict[str, Any]:
    """A chapter's baseline file; ``BaselineError`` naming the command that writes it when missing."""
    path = baseline_path(root, chapter)
    if not path.exists():
        raise BaselineError(f"no baseline {path}: write it with `theorylab baselines {chapter} --from RUN ...`")
    return json.loads(path.read_text())


def comparing() -> bool:
    return os.environ.get(COMPARE_ENV, "") not in ("", "0")


def write(root: Path, chapter: str, runs: list[dict[str, Any]], force: bool = False) -> Path:
    """Write ``chapters/baselines/CHAPTER.json`` from the ``metrics.json`` of calibration runs.

    Every run must be of ``chapter`` in the ``ci`` profile with its ci parameters, and the runs must
    cover at least two seeds. An existing file is replaced only with ``force``.
    """
    from . import chapters, runtime

    spec = chapters.chapter(chapter)
    ci_params = runtime.jsonable(runtime.resolve(chapter, "ci", "cpu", 0))
    for run in runs:
        if run.get("chapter") != chapter or run.get("profile") != "ci":
            raise ValueError(f"a calibration run must be of {chapter!r} in the ci profile; got "
                             f"{run.get('chapter')!r} in {run.get('profile')!r}")
        if {k: v for k, v in run.get("params", {}).items()} != {k: ci_params[k] for k in spec.params}:
            raise ValueError(f"a calibration run of {chapter!r} used other parameters than the ci profile's")
    if len({run.get("seed") for run in runs}) < 2:
        raise ValueError("calibration runs must cover at least two seeds")
    path = baseline_path(root, chapter)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    entries = derive([run["checks"] for run in runs])
    document = {
        "chapter": chapter,
        "rule": f"|v - value| <= tolerance = max({SPREAD_MULTIPLE:g} sd, 1.5 max deviation, "
                f"{ROUNDING_FLOOR:g} (1 + |value|)) over the calibration runs; timings not compared",
        "calibration_runs": [{"seed": run.get("seed"), "cpu_capability": run.get("cpu_capability")}
                             for run in runs],
        "metrics": entries,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def seed_spread(root: Path, chapter: str, leaves: dict[str, str], spec: str = ".3g") -> str:
    """Lines ``label: mean ± sd [min, max] over N runs`` for chosen recorded numbers, read from the
    chapter's committed baseline: the spread of the headline numbers over the calibration runs (each a
    full retraining with another seed or CPU), which one ``ci`` run cannot show."""
    document = load(root, chapter)
    runs = document["calibration_runs"]
    seeds = sorted({run["seed"] for run in runs})
    lines = [f"over {len(runs)} calibration runs (seeds {', '.join(map(str, seeds))}; "
             f"CPU kernels {', '.join(sorted({str(run['cpu_capability']).lower() for run in runs}))}):"]
    for label, leaf in leaves.items():
        entry = document["metrics"].get(leaf)
        if entry is None:
            raise KeyError(f"{chapter}: no recorded number {leaf!r} in the baseline")
        if "exact" in entry:
            lines.append(f"  {label}: {entry['exact']} in every run")
            continue
        low, high = min(entry["runs"]), max(entry["runs"])
        lines.append(f"  {label}: {format(entry['value'], spec)} ± {format(entry['spread'], '.2g')} "
                     f"[{format(low, spec)}, {format(high, spec)}]")
    return "\n".join(lines)
