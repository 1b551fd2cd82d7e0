"""Every chapter's ``full`` code path at toy sizes on the CPU, through the GPU check script a researcher
runs before booking a GPU (``DEVICE=cpu`` runs its steps here: ``theorylab run all --profile full
--smoke --device cpu``, the device each chapter ran on, seconds per epoch of the papers' networks)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from theorylab import chapters, runtime

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_on_the_cpu_runs_every_chapter_full_smoke(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(tmp_path / "runs"),
           "THEORYLAB_DATA": str(tmp_path / "no-data")}  # stand-ins written on the spot, never a download
    result = subprocess.run([str(ROOT / "scripts" / "gpu-check")], capture_output=True, text=True,
                            env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ResNet-18 (CIFAR)" in result.stdout and "gpu-check: done" in result.stdout
    assert "t(P)/t(1)" in result.stdout and "flat NumPy" in result.stdout  # steps 3 and 5
    ran = {name: set(json.loads((tmp_path / "runs" / f"{name}-full-smoke" / "metrics.json").read_text())["checks"])
           for name in ("speculative-inference", "decision-tree-language-models")}
    # the language-model chapters' real-model, TinyStories and large-construction paths ran
    assert {"real_latency", "real_greedy", "real_wall_clock", "real_sampling"} <= ran["speculative-inference"]
    assert {"stories", "palindromes"} <= ran["decision-tree-language-models"]
    for spec in chapters.CHAPTERS.values():
        folder = tmp_path / "runs" / f"{spec.name}-full-smoke"
        status = json.loads((folder / "status.json").read_text())
        assert status["status"] == "ok", (spec.name, status["failure"])
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["smoke"] is True and metrics["device"] == "cpu" and metrics["torch_threads"] == 1
        resolved = runtime.resolve(spec.name, "full", "cpu", 0, smoke=True)
        assert metrics["params"] == runtime.jsonable({name: resolved[name] for name in spec.params})
    assert not (tmp_path / "no-data").exists()
