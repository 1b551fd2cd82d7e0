"""Published ``full`` results: ``results/full/CHAPTER.json``, small JSON committed with the book, shown
in each chapter's box beside the ``ci`` numbers, with where they came from.

A result is made by ``theorylab publish RUN_DIR`` from a ``theorylab run`` folder (one seed) or a
``theorylab sweep`` folder (several seeds, aggregated). It is **stale** when the chapter's source hash
(its code cells, the package, the pins, its baseline: :func:`theorylab.cli.source_hash`) has changed
since the run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REQUIRED = {"schema": int, "chapter": str, "profile": str, "smoke": bool, "seeds": list, "status": str,
            "failures": list, "metrics": dict, "provenance": dict}
PROVENANCE_REQUIRED = ("commit", "dirty", "source_hash", "python", "packages", "device", "device_name", "cpu",
                       "command", "started_utc", "wall_seconds")


def path(root: Path, chapter: str) -> Path:
    return Path(root) / "results" / "full" / f"{chapter}.json"


def validate(document: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that is missing or of the wrong type."""
    for key, kind in REQUIRED.items():
        if key not in document:
            raise ValueError(f"result file: missing {key!r}")
        if not isinstance(document[key], kind):
            raise ValueError(f"result file: {key!r} is {type(document[key]).__name__}, expected {kind.__name__}")
    if document["schema"] != SCHEMA_VERSION:
        raise ValueError(f"result file: schema {document['schema']}, expected {SCHEMA_VERSION}")
    if document["status"] not in ("ok", "FAILED"):
        raise ValueError(f"result file: status {document['status']!r}, expected 'ok' or 'FAILED'")
    missing = [key for key in PROVENANCE_REQUIRED if key not in document["provenance"]]
    if missing:
        raise ValueError(f"result file: provenance lacks {missing}")
    for leaf, entry in document["metrics"].items():
        if not isinstance(entry, dict) or not {"mean", "std", "n"} <= set(entry):
            raise ValueError(f"result file: metric {leaf!r} needs mean, std and n")


def _runs_in(run_dir: Path) -> list[Path]:
    """The ``theorylab run`` folders (with ``status.json``) at or below ``run_dir``."""
    if (run_dir / "status.json").exists():
        return [run_dir]
    return sorted(p.parent for p in run_dir.glob("**/status.json"))


def chapters_in(run_dir: str | Path) -> list[str]:
    """The chapters of the runs under ``run_dir`` (a run folder, or a sweep's folder)."""
    folders = _runs_in(Path(run_dir))
    if not folders:
        raise ValueError(f"{run_dir}: no theorylab run found (no status.json)")
    return sorted({json.loads((folder / "status.json").read_text())["chapter"] for folder in folders})


def collect(run_dir: str | Path, chapter: str | None = None) -> dict[str, Any]:
    """A result document from the runs under ``run_dir`` (profile ``full``; only ``chapter``'s when given)."""
    from .baselines import numeric_leaves

    folders = _runs_in(Path(run_dir))
    if chapter is not None:
        folders = [f for f in folders if json.loads((f / "status.json").read_text())["chapter"] == chapter]
    if not folders:
        raise ValueError(f"{run_dir}: no theorylab run found (no status.json)")
    runs = []
    for folder in folders:
        status = json.loads((folder / "status.json").read_text())
        metrics_file = folder / "metrics.json"
        if not metrics_file.exists():
            raise ValueError(f"{folder}: no metrics.json (the run recorded no check)")
        runs.append((status, json.loads(metrics_file.read_text())))
    chapters = {metrics["chapter"] for _, metrics in runs}
    if len(chapters) != 1:
        raise ValueError(f"{run_dir}: runs of several chapters {sorted(chapters)}; publish one chapter at a time")
    if any(metrics["profile"] != "full" for _, metrics in runs):
        raise ValueError(f"{run_dir}: only full-profile runs are published (the ci numbers are the page's own)")
    points = {json.dumps(metrics["params"], sort_keys=True) for _, metrics in runs}
    if len(points) > 1:
        raise ValueError(f"{run_dir}: runs at {len(points)} parameter points; a result averages seeds of one "
                         "point: publish the folder of one point")
    values: dict[str, list[float]] = {}
    for status, metrics in runs:
        if status["status"] != "ok":
            continue  # a failed run's numbers stay out of the means; its failure is listed
        for leaf, value in numeric_leaves(metrics["checks"]).items():
            values.setdefault(leaf, []).append(value)
    summary = {}
    for leaf, numbers in sorted(values.items()):
        n = len(numbers)
        mean = sum(numbers) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in numbers) / (n - 1)) if n > 1 else None
        summary[leaf] = {"mean": mean, "std": std, "n": n}
    first = runs[0][1]
    failures = [status["failure"] for status, _ in runs if status["status"] != "ok"]
    provenance = {**first.get("provenance", {}), "device": first.get("device"),
                  "device_name": first.get("device_name"), "torch_threads": first.get("torch_threads"),
                  "wall_seconds": sum(m.get("provenance", {}).get("wall_seconds", 0.0) for _, m in runs)}
    document = {"schema": SCHEMA_VERSION, "chapter": chapters.pop(), "profile": "full",
                "smoke": any(metrics.get("smoke", False) for _, metrics in runs),
                "seeds": sorted(metrics["seed"] for _, metrics in runs), "params": first["params"],
                "status": "FAILED" if failures else "ok", "failures": failures, "metrics": summary,
                "provenance": provenance}
    validate(document)
    return document


def publish(run_dir: str | Path, root: Path, force: bool = False) -> list[Path]:
    """Write :func:`collect`'s document of each chapter under ``run_dir`` to ``results/full/CHAPTER.json``;
    nothing is written, and nothing overwritten without ``force``, before every chapter's runs check out."""
    documents = [collect(run_dir, name) for name in chapters_in(run_dir)]
    targets = [path(root, document["chapter"]) for document in documents]
    existing = [str(target) for target in targets if target.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --force to replace")
    for document, target in zip(documents, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=2) + "\n")
    return targets


def load(root: Path, chapter: str) -> dict[str, Any] | None:
    """The published result of ``chapter``, validated, or ``None``."""
    file = path(root, chapter)
    if not file.exists():
        return None
    document = json.loads(file.read_text())
    validate(document)
    return document


def is_stale(root: Path, document: dict[str, Any]) -> bool:
    """Whether the chapter's source changed since the published run (its source hash differs)."""
    from .cli import source_hash

    markdown = Path(root) / "chapters" / f"{document['chapter']}.md"
    return document["provenance"].get("source_hash") != source_hash(Path(root), markdown)


def unknown_checks(root: Path, document: dict[str, Any]) -> list[str]:
    """The check names of a result's metrics that no ``cfg.record("NAME", ...)`` of its chapter makes."""
    import re

    markdown = (Path(root) / "chapters" / f"{document['chapter']}.md").read_text()
    recorded = set(re.findall(r"cfg\.record\(\s*[\"']([A-Za-z0-9_]+)[\"']", markdown))
    return sorted({re.split(r"[.\[]", leaf)[0] for leaf in document["metrics"]} - recorded)
