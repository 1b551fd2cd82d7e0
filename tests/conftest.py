"""Session-wide settings: check cells compare their recorded numbers with the committed baselines, and
pytest-xdist keeps every notebook's cells together on one worker (nbval runs them in one kernel)."""
import os

import pytest

from theorylab import baselines


def pytest_configure(config):
    # Inherited by every kernel nbval starts and by every `theorylab run` a test spawns.
    os.environ[baselines.COMPARE_ENV] = "1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
