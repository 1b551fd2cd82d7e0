"""Sweeps on submitit: planning and validation, the local executor really running jobs with bounded
concurrency and hidden GPUs, the SLURM array script, and the aggregate over seeds."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from theorylab import cli, sweep

ROOT = Path(__file__).resolve().parents[1]


def test_plan_is_the_product_of_chapters_seeds_and_parameter_values(tmp_path):
    jobs = sweep.plan(["contract-design", "rank-minimization"], seeds=[0, 1],
                      grid=[("n_starts", "2"), ("n_starts", "3"), ("steps", "100")], out=tmp_path)
    contract = [j for j in jobs if j.chapter == "contract-design"]
    rank = [j for j in jobs if j.chapter == "rank-minimization"]
    assert len(contract) == 4 and {j.params for j in contract} == {(("n_starts", "2"),), (("n_starts", "3"),)}
    assert len(rank) == 2 and {j.params for j in rank} == {(("steps", "100"),)}
    assert len({j.name for j in jobs}) == len(jobs)
    command = contract[0].command()
    assert command[command.index("run") + 1] == "contract-design" and "--resume" in command
    assert command[-3:] == ["-p", "n_starts", contract[0].params[0][1]]


@pytest.mark.parametrize("kwargs,message", [
    (dict(grid=[("n_starts", "-1")]), "contract-design: parameter 'n_starts': got -1"),
    (dict(grid=[("no_such", "1")]), "unknown parameter(s) ['no_such']"),
    (dict(grid=[("seed", "1")]), "use --seeds instead"),
    (dict(seeds=[0, 0]), "each at most once"),
    (dict(seeds=[-1]), "seed"),
    (dict(profile="ci", smoke=True), "smoke shrinks the full profile"),
])
def test_bad_sweeps_are_refused_before_anything_runs(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as error:
        sweep.plan(["contract-design"], out=tmp_path, **kwargs)
    assert message in str(error.value)
    assert not any(tmp_path.iterdir())


class SleepJob(sweep.Job):
    """A job whose command records when it ran and which GPUs it saw, then sleeps."""

    def command(self):
        code = ("import json, os, sys, time; start = time.time(); time.sleep(1.0); "
                "json.dump({'start': start, 'end': time.time(), "
                "'gpus': os.environ.get('CUDA_VISIBLE_DEVICES')}, open(sys.argv[1], 'w'))")
        return [sys.executable, "-c", code, str(self.folder / "times.json")]


# the jobs are unpickled in submitit's child processes, which cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _sleep_jobs(tmp_path, n):
    return [SleepJob("contract-design", seed, (), "ci", "cpu", False, str(tmp_path)) for seed in range(n)]


def test_local_executor_runs_at_most_max_parallel_jobs_at_once_with_every_gpu_hidden(tmp_path):
    jobs = _sleep_jobs(tmp_path, 5)
    results = sweep.run_local(jobs, max_parallel=2, timeout_min=5, poll_seconds=0.1)
    assert [r["status"] for r in results] == ["ERROR"] * 5  # no status.json: the command is not a run
    times = [json.loads((job.folder / "times.json").read_text()) for job in jobs]
    events = sorted([(t["start"], 1) for t in times] + [(t["end"], -1) for t in times])
    running = np.cumsum([step for _, step in events])
    assert running.max() == 2  # two at a time, and never three
    assert all(t["gpus"] == "" for t in times)  # submitit hides every GPU unless one is given


def test_local_executor_gives_each_job_one_gpu_of_the_list(tmp_path):
    jobs = _sleep_jobs(tmp_path, 4)
    sweep.run_local(jobs, max_parallel=2, gpus=[3, 5], timeout_min=5, poll_seconds=0.1)
    times = [json.loads((job.folder / "times.json").read_text()) for job in jobs]
    assert {t["gpus"] for t in times} == {"3", "5"}
    for first in times:  # two jobs that overlap never share a GPU
        for second in times:
            if first is not second and first["start"] < second["end"] and second["start"] < first["end"]:
                assert first["gpus"] != second["gpus"]
    with pytest.raises(ValueError, match="one GPU per job"):
        sweep.run_local(jobs, max_parallel=3, gpus=[0, 1])


def test_sweep_of_two_real_ci_chapters_two_at_a_time(tmp_path, capsys):
    out = tmp_path / "sweep"
    status = cli.main(["sweep", "contract-design", "decision-tree-language-models", "--profile", "ci",
                       "--seeds", "0", "--executor", "local", "--jobs", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "contract-design-seed0" in printed and "2 of 2 jobs ok" in printed
    summary = json.loads((out / "sweep.json").read_text())
    assert {job["status"] for job in summary["jobs"]} == {"ok"}
    assert {point["chapter"] for point in summary["points"]} == {"contract-design", "decision-tree-language-models"}
    for job in summary["jobs"]:
        run = out / job["job"] / f"{job['chapter']}-ci"
        assert json.loads((run / "status.json").read_text())["status"] == "ok"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["provenance"]["command"].startswith(f"theorylab run {job['chapter']} --profile ci")


def test_a_failing_job_makes_the_sweep_exit_1_naming_it_and_its_log(tmp_path, capsys, monkeypatch):
    def broken(self, job):
        return {"job": job.name, "chapter": job.chapter, "seed": job.seed, "params": {}, "status": "FAILED",
                "seconds": 0.0, "failure": "cell In [3]: AssertionError", "log": str(job.log)}

    monkeypatch.setattr(sweep, "run_local", lambda jobs, **kw: [broken(None, j) for j in jobs])
    status = cli.main(["sweep", "contract-design", "--seeds", "0", "1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 1 and "contract-design-seed1" in captured.err
    assert "job.log" in captured.out and "0 of 2 jobs ok" in captured.out


def test_existing_job_folders_need_resume_or_force(tmp_path, capsys):
    (tmp_path / "contract-design-seed0").mkdir(parents=True)
    (tmp_path / "contract-design-seed0" / "job.log").write_text("earlier")
    status = cli.main(["sweep", "contract-design", "--out", str(tmp_path)])
    assert status == 2 and "--resume" in capsys.readouterr().err


def test_slurm_array_script_has_the_array_time_gpu_and_requeue_signal(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "srun"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = sweep.slurm_executor(tmp_path / "submitit", partition="gpu", time_min=90, gpus_per_job=1,
                                    max_parallel=3, cpus_per_job=8)
    script = sweep.slurm_script(executor, n_jobs=12)
    for directive in ("#SBATCH --array=0-11%3", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                      "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=8", "#SBATCH --signal=USR2@120",
                      "#SBATCH --ntasks-per-node=1"):
        assert directive in script, directive
    assert "srun" in script


def test_slurm_without_srun_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    status = cli.main(["sweep", "contract-design", "--executor", "slurm", "--out", str(tmp_path / "s")])
    assert status == 2 and "no 'srun' on PATH" in capsys.readouterr().err


def test_aggregate_gives_mean_and_sample_spread_over_seeds(tmp_path):
    jobs = [sweep.Job("contract-design", seed, (), "ci", "cpu", False, str(tmp_path)) for seed in range(3)]
    values = [1.0, 2.0, 4.0]
    for job, value in zip(jobs, values, strict=True):
        job.run_folder.mkdir(parents=True)
        (job.run_folder / "metrics.json").write_text(json.dumps({"checks": {"a": {"x": value, "v": [value, 0]}}}))
    results = [{"status": "ok"}] * 3
    point = sweep.aggregate(jobs, results)["points"][0]
    assert point["metrics"]["a.x"]["mean"] == pytest.approx(np.mean(values))
    assert point["metrics"]["a.x"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert point["metrics"]["a.v[0]"]["n"] == 3 and point["metrics"]["a.v[1]"]["max"] == 0


def test_sweep_help_lists_the_executor_options():
    done = subprocess.run([sys.executable, "-m", "theorylab.cli", "sweep", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0 and "--executor" in done.stdout and "--gpus" in done.stdout


def test_a_local_sweep_on_a_gpu_machine_must_say_which_gpus(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    status = cli.main(["sweep", "contract-design", "--profile", "full", "--out", str(tmp_path)])
    assert status == 2 and "pass --gpus" in capsys.readouterr().err
