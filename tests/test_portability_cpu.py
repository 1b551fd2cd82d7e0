"""Every chapter again under torch's unvectorised kernels (``ATEN_CPU_CAPABILITY=default``), in a
subprocess running nbval: the text that nbval compares must be the same on any correct CPU, and the
numbers each check cell records must stay within the baseline's tolerance. (The main nbval run covers
this machine's own kernels; tests/test_portability_seed.py covers another seed.)
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from theorylab import baselines, chapters

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(chapters.CHAPTERS)


def environment(capability: str) -> dict:
    return {**os.environ, "ATEN_CPU_CAPABILITY": capability, baselines.COMPARE_ENV: "1"}


@pytest.mark.parametrize("name", CHAPTERS)
def test_committed_outputs_hold_under_unvectorised_kernels(name):
    notebook = chapters.chapter(name).notebook
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "-x", notebook],
                            cwd=ROOT, env=environment("default"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
