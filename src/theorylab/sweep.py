"""Sweeps: ``theorylab run`` over chapters x seeds x parameter points, one job each, on submitit.

Each job is ``theorylab run CHAPTER --seed S [-p NAME VALUE ...] --resume`` in its own process and its
own folder, so a job that is requeued (a preempted SLURM job) or re-submitted continues from its
checkpoints. Jobs return a status instead of raising: submitit's in-process executors would open a
debugger on an exception, and one failed job must not hide the others.

Known behaviour of submitit 1.5.4 this module works around: the local executor starts every job it
is given at once, so :func:`run_local` submits at most ``max_parallel`` at a time; it hides every GPU
unless ``gpus_per_node`` and ``visible_gpus`` are set per job, so each job gets exactly one GPU of
``gpus`` or none; ``AutoExecutor`` rejects ``visible_gpus``, so :class:`submitit.LocalExecutor` is built
directly; the local time limit defaults to 2 minutes, so it is always set; a SLURM executor cannot be
built without ``srun`` on ``PATH``.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import baselines, chapters, runtime

JOB_STATUS = ("ok", "FAILED", "ERROR")
"""A job's outcome: the chapter ran and its checks held; a check or cell failed; the job itself broke."""


@dataclass(frozen=True)
class Job:
    """One ``theorylab run`` of a sweep."""

    chapter: str
    seed: int
    params: tuple[tuple[str, str], ...]
    profile: str
    device: str
    smoke: bool
    out: str

    @property
    def name(self) -> str:
        point = "".join(f"-{name}={value}" for name, value in self.params)
        return f"{self.chapter}-seed{self.seed}{point}".replace("/", "_").replace(",", "_")

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.name

    @property
    def run_folder(self) -> Path:
        """Where ``theorylab run`` writes the notebook, ``metrics.json`` and ``status.json``."""
        return self.folder / f"{self.chapter}-{self.profile}{'-smoke' if self.smoke else ''}"

    @property
    def log(self) -> Path:
        return self.folder / "job.log"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "theorylab.cli", "run", self.chapter, "--profile", self.profile,
                   "--device", self.device, "--seed", str(self.seed), "--out", str(self.folder), "--resume"]
        for name, value in self.params:
            command += ["-p", name, value]
        return command + (["--smoke"] if self.smoke else [])


def plan(names: Sequence[str], *, profile: str = "ci", seeds: Sequence[int] = (0,),
         grid: Sequence[tuple[str, str]] = (), device: str = "auto", smoke: bool = False,
         out: str | Path = "runs/sweep") -> list[Job]:
    """The jobs of a sweep, every one validated before any runs.

    ``grid`` holds ``(NAME, VALUE)`` pairs as given by repeated ``-p``: the values of one name are
    alternatives, and the points are the product over names. A chapter takes only the names it knows;
    a name that no chapter knows is an error, as is a bad value for any chapter (the message names it).
    """
    specs = list(chapters.CHAPTERS.values()) if list(names) == ["all"] else [chapters.chapter(n) for n in names]
    if not seeds:
        raise ValueError("seeds: give at least one")
    seeds = [runtime.check_seed(seed) for seed in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: got {list(seeds)}, each at most once")
    values: dict[str, list[str]] = {}
    for name, value in grid:
        if name in ("profile", "device", "seed", "smoke"):
            raise ValueError(f"-p {name}: use --{name}{'s' if name == 'seed' else ''} instead")
        values.setdefault(name, []).append(str(value))
    orphans = sorted(set(values) - {name for spec in specs for name in spec.params})
    if orphans:
        raise ValueError(f"unknown parameter(s) {orphans} for chapter(s) {', '.join(s.name for s in specs)}")
    jobs = []
    for spec in specs:
        own = {name: options for name, options in values.items() if name in spec.params}
        for point in itertools.product(*own.values()):
            params = tuple(zip(own, point, strict=True))
            try:
                runtime.resolve(spec.name, profile, device, 0, smoke, **dict(params))
            except ValueError as error:
                raise ValueError(f"{spec.name}: {error}") from None
            jobs += [Job(spec.name, seed, params, profile, device, smoke, str(out)) for seed in seeds]
    return jobs


class JobRunner:
    """Runs one :class:`Job` in a child process and returns its status; never raises.

    Checkpointable for submitit: on preemption or timeout the job is resubmitted with the same
    arguments, and ``--resume`` makes the restart continue where the run stopped."""

    def __call__(self, job: Job) -> dict[str, Any]:
        job.folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            with job.log.open("a") as log:
                done = subprocess.run(job.command(), stdout=log, stderr=subprocess.STDOUT, check=False)
            status_file = job.run_folder / "status.json"
            run_status = json.loads(status_file.read_text()) if status_file.exists() else {}
            if done.returncode == 0 and run_status.get("status") == "ok":
                status = "ok"
            else:  # a check or a cell failed (the run says so), or the run never got going
                status = "FAILED" if run_status.get("status") == "FAILED" else "ERROR"
            failure = run_status.get("failure", "") if status != "ok" else ""
            if status == "ERROR":
                failure = f"exit status {done.returncode}; see the log"
        except Exception as error:  # noqa: BLE001 - a job reports, it never raises (see module docstring)
            status, failure = "ERROR", f"{type(error).__name__}: {error}"
        return {"job": job.name, "chapter": job.chapter, "seed": job.seed, "params": dict(job.params),
                "status": status, "seconds": round(time.perf_counter() - start, 1), "failure": failure,
                "log": str(job.log), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def checkpoint(self, job: Job) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)


def run_local(jobs: Sequence[Job], *, max_parallel: int = 1, gpus: Sequence[int] = (),
              timeout_min: float = 24 * 60, poll_seconds: float = 0.5) -> list[dict[str, Any]]:
    """Run ``jobs`` on this machine through :class:`submitit.LocalExecutor`, at most ``max_parallel``
    at once, each with one GPU of ``gpus`` to itself (``CUDA_VISIBLE_DEVICES``), or with every GPU
    hidden when ``gpus`` is empty. Returns the jobs' statuses in the order given."""
    import submitit

    max_parallel = max(1, int(max_parallel))
    if gpus and len(gpus) < max_parallel:
        raise ValueError(f"--jobs {max_parallel} with --gpus {list(gpus)}: one GPU per job, so at most "
                         f"{len(gpus)} jobs at once")
    if not jobs:
        return []
    executor = submitit.LocalExecutor(folder=Path(jobs[0].out) / "submitit")
    pending = list(enumerate(jobs))
    running: list[tuple[int, Any, int | None]] = []
    results: dict[int, dict[str, Any]] = {}
    free = list(gpus)
    while pending or running:
        while pending and len(running) < max_parallel:
            index, job = pending.pop(0)
            gpu = free.pop(0) if gpus else None
            executor.update_parameters(timeout_min=timeout_min, gpus_per_node=1 if gpu is not None else 0,
                                       visible_gpus=(gpu,) if gpu is not None else ())
            running.append((index, executor.submit(JobRunner(), job), gpu))
        time.sleep(poll_seconds)
        for entry in [entry for entry in running if entry[1].done()]:
            index, handle, gpu = entry
            running.remove(entry)
            if gpu is not None:
                free.append(gpu)
            try:
                results[index] = handle.result()
            except Exception as error:  # noqa: BLE001 - the job process itself died
                job = jobs[index]
                results[index] = {"job": job.name, "chapter": job.chapter, "seed": job.seed,
                                  "params": dict(job.params), "status": "ERROR", "seconds": math.nan,
                                  "failure": f"{type(error).__name__}: {str(error)[:300]}",
                                  "log": str(handle.paths.stderr)}
    return [results[index] for index in range(len(jobs))]


def slurm_executor(folder: str | Path, *, partition: str | None, time_min: int, gpus_per_job: int,
                   max_parallel: int, cpus_per_job: int | None = None) -> Any:
    """A :class:`submitit.SlurmExecutor` for a job array: ``time_min`` minutes per job, ``gpus_per_job``
    GPUs, at most ``max_parallel`` array tasks at once, requeued on preemption (submitit sends
    ``USR2`` ``signal_delay_s`` before the kill; :meth:`JobRunner.checkpoint` resubmits the job)."""
    import shutil

    import submitit

    if shutil.which("srun") is None:
        raise ValueError("--executor slurm needs a SLURM cluster: no 'srun' on PATH")
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
    options: dict[str, Any] = {"time": time_min, "gpus_per_node": gpus_per_job, "ntasks_per_node": 1,
                               "array_parallelism": max_parallel, "signal_delay_s": 120,
                               "job_name": "theorylab"}
    if partition:
        options["partition"] = partition
    if cpus_per_job:
        options["cpus_per_task"] = cpus_per_job
    executor.update_parameters(**options)
    return executor


def slurm_script(executor: Any, n_jobs: int) -> str:
    """The sbatch file ``executor`` would submit for an array of ``n_jobs`` jobs (for review and tests)."""
    executor.parameters["map_count"] = n_jobs
    try:
        return executor._make_submission_file_text("python -m submitit.core._submit DIR", "%A_%a")
    finally:
        executor.parameters.pop("map_count", None)


def run_slurm(jobs: Sequence[Job], executor: Any) -> list[dict[str, Any]]:
    """Submit ``jobs`` as one array with ``executor`` (:func:`slurm_executor`) and wait for them."""
    handles = executor.map_array(JobRunner(), list(jobs))
    print(f"submitted job array {handles[0].job_id.split('_')[0]} ({len(handles)} jobs)", flush=True)
    results = []
    for job, handle in zip(jobs, handles, strict=True):
        try:
            results.append(handle.result())
        except Exception as error:  # noqa: BLE001 - a job killed by SLURM, or a node failure
            results.append({"job": job.name, "chapter": job.chapter, "seed": job.seed, "params": dict(job.params),
                            "status": "ERROR", "seconds": math.nan,
                            "failure": f"{type(error).__name__}: {str(error)[:300]}",
                            "log": str(handle.paths.stdout)})
    return results


def aggregate(jobs: Sequence[Job], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of every recorded number, per chapter and parameter point.

    For each numeric leaf ``check.key[index]`` (:func:`theorylab.baselines.flatten`) of the completed
    runs' ``metrics.json``: ``n`` (seeds), ``mean``, ``std`` (sample standard deviation, ``n - 1``;
    ``None`` for one seed), ``min``, ``max``."""
    groups: dict[tuple[str, tuple], dict[str, list[float]]] = {}
    runs: dict[tuple[str, tuple], list[dict]] = {}
    for job, result in zip(jobs, results, strict=True):
        key = (job.chapter, job.params)
        runs.setdefault(key, []).append({"seed": job.seed, "status": result["status"]})
        metrics_file = job.run_folder / "metrics.json"
        if result["status"] != "ok" or not metrics_file.exists():
            continue
        metrics = json.loads(metrics_file.read_text())
        for leaf, value in baselines.numeric_leaves(metrics.get("checks", {})).items():
            groups.setdefault(key, {}).setdefault(leaf, []).append(value)
    points = []
    for key, seeds in runs.items():
        summary = {}
        for leaf, values in sorted(groups.get(key, {}).items()):
            n = len(values)
            mean = sum(values) / n
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
            summary[leaf] = {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values)}
        points.append({"chapter": key[0], "params": dict(key[1]), "runs": seeds, "metrics": summary})
    return {"points": points}


def write_summary(out: str | Path, jobs: Sequence[Job], results: Sequence[dict[str, Any]]) -> Path:
    """``OUT/sweep.json``: every job with its status and the aggregate over seeds."""
    path = Path(out) / "sweep.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"jobs": [{**asdict(job), **result} for job, result in zip(jobs, results, strict=True)],
                                **aggregate(jobs, results)}, indent=2, default=str))
    return path
