"""The whole book as one HTML page (``jupyter-book build . --builder singlehtml``), which
``scripts/book-pdf`` prints to a PDF with headless Chromium.

sphinx-proof and sphinx-exercise register how to write their nodes for the ``html`` builder only;
``singlehtml`` writes HTML with the same translator, so the handlers are copied over.
"""


def _copy_html_handlers(app) -> None:
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visitors in handlers.get("html", {}).items():
        single.setdefault(node, visitors)


def setup(app):
    app.connect("builder-inited", _copy_html_handlers)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
