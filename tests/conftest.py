"""Session-wide setting: every check cell compares its recorded numbers with the committed baseline.

pytest-xdist runs with ``--dist loadfile`` (pyproject.toml): all cells of a notebook go to one worker,
where nbval runs them in order in one kernel."""
import os

from theorylab import baselines


def pytest_configure(config):
    # Inherited by every kernel nbval starts and by every `theorylab run` a test spawns.
    os.environ[baselines.COMPARE_ENV] = "1"
