"""Sphinx directive ``execution-table``: one row per chapter notebook with its last execution.

Reads the ``theorylab`` metadata that ``theorylab refresh`` writes into each ``chapters/*.ipynb``
(profile, seconds, success, time of execution), so the page cannot drift from the notebooks.
"""
from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

COLUMNS = ("chapter", "profile", "run time", "success", "executed")


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
            body += _row([link, meta.get("profile", "never executed"),
                          f"{meta['seconds']:.1f} s" if "seconds" in meta else "",
                          {True: "yes", False: "no"}.get(meta.get("success"), ""),
                          meta.get("executed_at", "")])
        group += body
        return [table]


def setup(app):
    app.add_directive("execution-table", ExecutionTable)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
