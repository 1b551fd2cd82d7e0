"""Every chapter with another seed on other CPU kernels (seed 1, ``ATEN_CPU_CAPABILITY=avx2`` where
the CPU has it), through ``theorylab run --compare-baselines`` in a subprocess: every check cell must
pass, and the numbers it records must stay within the baseline's tolerance.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from theorylab import baselines, chapters

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(chapters.CHAPTERS)
EXTRA_SEED = 1


def capability_or_default(wanted: str) -> str:
    """``wanted`` if this CPU supports it (torch falls back silently otherwise), else ``default``."""
    found = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env={**os.environ, "ATEN_CPU_CAPABILITY": wanted},
                           capture_output=True, text=True, check=True).stdout.strip()
    return wanted if found.lower() == wanted else "default"


def environment(capability: str) -> dict:
    return {**os.environ, "ATEN_CPU_CAPABILITY": capability, baselines.COMPARE_ENV: "1"}


@pytest.mark.parametrize("name", CHAPTERS)
def test_claims_and_baselines_hold_on_another_seed_and_cpu(name, tmp_path):
    capability = capability_or_default("avx2")
    result = subprocess.run([sys.executable, "-m", "theorylab.cli", "run", name, "--seed", str(EXTRA_SEED),
                             "--compare-baselines", "--out", str(tmp_path)],
                            cwd=ROOT, env=environment(capability), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"seed {EXTRA_SEED}, {capability}:\n" + result.stdout[-3000:] + result.stderr[-3000:]
