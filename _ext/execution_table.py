"""Sphinx directive ``execution-table``: what built this copy of the book, then one row per chapter
notebook with its last ``ci`` execution and its latest published ``full`` run.

Reads the ``theorylab`` metadata that ``theorylab refresh`` writes into each ``chapters/*.ipynb``
(profile, seconds, success, time and machine of execution) and ``results/full/CHAPTER.json`` (see
``theorylab.results``), so the page cannot drift from the notebooks.
"""
from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

COLUMNS = ("chapter", "ci run time", "checks", "executed", "executed on", "latest full run")


def _build_environment(srcdir: Path) -> str:
    """One sentence: the commit, Python and package versions and CPU of this build."""
    import importlib.metadata
    import platform
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(srcdir), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown (not a git checkout)"
    dirty = " with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    versions = []
    for package in ("theorylab", "torch", "numpy", "jupyter-book", "myst-nb"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        from theorylab.runtime import platform_processor

        cpu = platform_processor()
    except ImportError:
        cpu = platform.processor() or platform.machine()
    return (f"This copy of the book was built from commit {commit}{dirty} with Python "
            f"{platform.python_version()} ({', '.join(versions)}) on {cpu}.")


def _full_run(srcdir: Path, chapter: str) -> str:
    path = srcdir / "results" / "full" / f"{chapter}.json"
    if not path.exists():
        return "not yet run at full scale"
    document = json.loads(path.read_text())
    where = document["provenance"]
    text = (f"{where['started_utc'][:10]}, {len(document['seeds'])} seed(s) on {where['device_name']}, "
            f"{document['status']}")
    try:
        from theorylab import results

        if results.is_stale(srcdir, document):
            text += ", stale"
    except ImportError:
        pass
    return text + (", smoke" if document.get("smoke") else "")


def _row(cells: list[nodes.Node | str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += cell if isinstance(cell, nodes.Node) else nodes.paragraph(text=cell)
        row += entry
    return row


class ExecutionTable(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        srcdir = Path(self.env.srcdir)
        table = nodes.table()
        group = nodes.tgroup(cols=len(COLUMNS))
        table += group
        group.extend(nodes.colspec(colwidth=1) for _ in COLUMNS)
        head = nodes.thead()
        head += _row(list(COLUMNS))
        group += head
        body = nodes.tbody()
        for path in sorted((srcdir / "chapters").glob("*.ipynb")):
            self.env.note_dependency(str(path))
            meta = json.loads(path.read_text()).get("metadata", {}).get("theorylab", {})
            docname = f"chapters/{path.stem}"
            link = nodes.paragraph()
            ref = nodes.reference("", path.stem, internal=True,
                                  refuri=self.env.app.builder.get_relative_uri(self.env.docname, docname))
            link += ref
            machine = meta.get("executed_on", {})
            on = (f"{machine['cpu']} ({machine['cpu_count']} cores), Python {machine['python']}, "
                  f"torch {machine['torch']}") if machine else ""
            body += _row([link, f"{meta['seconds']:.1f} s" if "seconds" in meta else "never executed",
                          {True: "all passed", False: "FAILED"}.get(meta.get("success"), ""),
                          meta.get("executed_at", ""), on, _full_run(srcdir, path.stem)])
            results_file = srcdir / "results" / "full" / f"{path.stem}.json"
            if results_file.exists():
                self.env.note_dependency(str(results_file))
        group += body
        return [nodes.paragraph(text=_build_environment(srcdir)), table]


def setup(app):
    app.add_directive("execution-table", ExecutionTable)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
