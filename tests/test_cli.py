"""The command line: clear errors before any work, dry runs, and real papermill runs."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from theorylab import cli, chapters

CHAPTER = "contract-design"
SMALL_FULL = ["-p", "n_starts", "2", "-p", "scaling_sizes", "1000,2000", "-p", "dense_max", "500",
              "-p", "mc_replications", "60", "-p", "mc_max_log2", "7", "-p", "cap_max", "1",
              "-p", "logistic_starts", "1"]


def run_cli(capsys, *args):
    status = cli.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_shows_every_chapter_with_ci_full_and_smoke_values_and_what_the_gpu_does(capsys):
    status, out, _ = run_cli(capsys, "list")
    assert status == 0
    for spec in chapters.CHAPTERS.values():
        assert spec.name in out and (spec.gpu or spec.cpu_reason) in out
        for name, param in spec.params.items():
            assert name in out and repr(param.ci) in out and repr(param.full) in out
            assert repr(param.value("full", smoke=True)) in out
    assert "on one GPU" not in out  # no chapter's full time has been measured on one


def test_smoke_dry_run_resolves_the_smoke_values_into_their_own_folder(capsys, tmp_path):
    status, out, _ = run_cli(capsys, "run", CHAPTER, "--profile", "full", "--smoke", "--dry-run",
                             "--out", str(tmp_path))
    plan = json.loads(out)
    assert status == 0 and plan["output"] == str(tmp_path / f"{CHAPTER}-full-smoke")
    assert plan["parameters"]["smoke"] is True
    assert plan["parameters"]["n_starts"] == chapters.chapter(CHAPTER).params["n_starts"].smoke


@pytest.mark.parametrize("args,message", [
    (["run", "no-such-chapter"], "unknown chapter 'no-such-chapter'"),
    (["run", CHAPTER, "--profile", "huge"], "unknown profile 'huge'"),
    (["run", CHAPTER, "-p", "n_starts", "-4"], "parameter 'n_starts': got -4, expected an integer >= 1"),
    (["run", CHAPTER, "-p", "n_starts", "four"], "parameter 'n_starts': got 'four'"),
    (["run", CHAPTER, "-p", "scaling_sizes", "100,-1"], "parameter 'scaling_sizes'"),
    (["run", CHAPTER, "-p", "n_tasks", "3"], "unknown parameter(s) ['n_tasks']"),
    (["run", CHAPTER, "-p", "steps", "3"], "unknown parameter(s) ['steps'] for chapter(s) contract-design"),
    (["run", "all", "-p", "n_tasks", "3"], "unknown parameter(s) ['n_tasks']"),
    (["run", "all", "-p", "steps", "-3"], "rank-minimization: parameter 'steps': got -3"),
    (["run", CHAPTER, "-p", "seed", "3"], "use --seed instead"),
    (["run", CHAPTER, "--device", "tpu"], "device: got 'tpu'"),
    (["run", CHAPTER, "--smoke"], "smoke shrinks the full profile"),
])
def test_bad_command_lines_exit_2_naming_the_problem(capsys, tmp_path, args, message):
    status, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "runs"))
    assert status == 2 and message in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_exits_2_before_running(capsys, tmp_path):
    status, _, err = run_cli(capsys, "run", CHAPTER, "--device", "cuda", "--out", str(tmp_path))
    assert status == 2 and "CUDA is not available" in err


def test_negative_seed_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", CHAPTER, "--seed", "-2"])
    assert exit_info.value.code == 2 and "expected a non-negative integer" in capsys.readouterr().err


def test_run_all_dry_run_gives_each_chapter_only_its_own_overrides(capsys, tmp_path):
    status, out, _ = run_cli(capsys, "run", "all", "--dry-run", "--device", "cpu", "-p", "steps", "7",
                             "-p", "n_starts", "2", "--out", str(tmp_path / "runs"))
    decoder, plans, position = json.JSONDecoder(), {}, 0
    while out[position:].strip():
        plan, position = decoder.raw_decode(out, position + len(out[position:]) - len(out[position:].lstrip()))
        plans[plan["chapter"]] = plan["parameters"]
    assert status == 0 and set(plans) == set(chapters.CHAPTERS)
    assert plans["rank-minimization"]["steps"] == 7 and "n_starts" not in plans["rank-minimization"]
    assert plans["contract-design"]["n_starts"] == 2 and "steps" not in plans["contract-design"]
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_resolved_parameters_and_writes_nothing(capsys, tmp_path):
    status, out, _ = run_cli(capsys, "run", CHAPTER, "--profile", "full", "--device", "cpu", "--dry-run",
                             "-p", "n_starts", "3", "--out", str(tmp_path / "runs"))
    plan = json.loads(out)
    assert status == 0 and plan["parameters"]["n_starts"] == 3 and plan["parameters"]["profile"] == "full"
    assert plan["parameters"]["dense_max"] == chapters.chapter(CHAPTER).params["dense_max"].full
    assert not (tmp_path / "runs").exists()


def test_existing_run_is_not_overwritten_without_force(capsys, tmp_path):
    (tmp_path / f"{CHAPTER}-ci").mkdir()
    (tmp_path / f"{CHAPTER}-ci" / "old.ipynb").write_text("{}")
    status, _, err = run_cli(capsys, "run", CHAPTER, "--out", str(tmp_path))
    assert status == 2 and "--force" in err and "--resume" in err


def fake_book(tmp_path, monkeypatch, claim):
    """A one-notebook book standing in for the chapter, whose last cell asserts ``claim``."""
    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    (book / "_toc.yml").write_text("root: intro\n")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "ci"\ndevice = "auto"\nseed = 0', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell(f"assert {claim}, 'the claim no longer holds'"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, book / "chapters" / "contract-design.ipynb")
    monkeypatch.setenv("THEORYLAB_BOOK_ROOT", str(book))


def test_resume_keeps_a_completed_run_and_force_starts_afresh(tmp_path, monkeypatch, capsys):
    fake_book(tmp_path, monkeypatch, "x == 1")
    out = str(tmp_path / "runs")
    assert run_cli(capsys, "run", CHAPTER, "--device", "cpu", "--out", out)[0] == 0
    folder = tmp_path / "runs" / f"{CHAPTER}-ci"
    assert json.loads((folder / "status.json").read_text())["status"] == "ok"
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "block.pkl").write_bytes(b"saved")
    status, stdout, _ = run_cli(capsys, "run", CHAPTER, "--device", "cpu", "--out", out, "--resume")
    assert status == 0 and "skipped (--resume)" in stdout and "kept" in stdout
    status, stdout, _ = run_cli(capsys, "run", CHAPTER, "--device", "cpu", "--out", out, "--resume", "-p", "n_starts", "2")
    assert status == 0 and "skipped" not in stdout and (folder / "checkpoints" / "block.pkl").exists()
    assert run_cli(capsys, "run", CHAPTER, "--device", "cpu", "--out", out, "--force")[0] == 0
    assert not (folder / "checkpoints").exists()
    with pytest.raises(SystemExit):
        cli.main(["run", CHAPTER, "--force", "--resume"])


def test_failing_chapter_exits_nonzero_names_the_cell_and_keeps_the_notebook(tmp_path, monkeypatch, capsys):
    fake_book(tmp_path, monkeypatch, "x == 2")
    status, out, err = run_cli(capsys, "run", CHAPTER, "--device", "cpu", "--out", str(tmp_path / "runs"))
    assert status == 1
    assert "cell In [4] (`assert x == 2" in err and "AssertionError: the claim no longer holds" in err
    assert "FAILED" in out
    assert (tmp_path / "runs" / f"{CHAPTER}-ci" / "contract-design.ipynb").exists()


def _run(tmp_path, *args):
    command = [sys.executable, "-m", "theorylab.cli", "run", CHAPTER, "--device", "cpu", "--out", str(tmp_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _check_run_folder(folder: Path, profile: str):
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["profile"] == profile
    assert {"hm_recovery", "hypergradient", "cg", "poisson", "logistic", "tournament", "monte_carlo",
            "scaling"} <= set(metrics["checks"])
    assert len(list((folder / "figures").glob("*.png"))) >= 7
    executed = nbformat.read(folder / "contract-design.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    return metrics


def test_real_ci_run_writes_notebook_figures_and_metrics(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "contract-design  ci       ok" in result.stdout
    metrics = _check_run_folder(tmp_path / f"{CHAPTER}-ci", "ci")
    assert metrics["checks"]["hm_recovery"]["worst_single_task"] <= 1e-8


def test_real_full_profile_run_with_small_overrides(tmp_path):
    result = _run(tmp_path, "--profile", "full", *SMALL_FULL)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _check_run_folder(tmp_path / f"{CHAPTER}-full", "full")
    assert metrics["params"]["n_starts"] == 2 and metrics["params"]["scaling_sizes"] == [1000, 2000]


def test_notebooks_run_on_a_kernel_over_unix_sockets_without_the_tcp_warning(tmp_path, capfd):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nbformat.write(notebook, tmp_path / "in.ipynb")
    cli.execute(tmp_path / "in.ipynb", tmp_path / "out.ipynb", progress_bar=False, log_output=False)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "42\n"
    assert "without encryption" not in capfd.readouterr().err  # ipykernel's warning over TCP
