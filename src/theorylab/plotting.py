"""One figure style for the whole book: PNG output (nbval compares text, and SVG is text), a
colour-blind-safe cycle and light grids; ``theorylab run`` collects the PNGs from the executed notebook."""
from __future__ import annotations

import matplotlib

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE)),
    "legend.frameon": False,
    "font.size": 10,
    "lines.linewidth": 1.6,
}


def use_book_style() -> None:
    """Apply the book's style and make notebooks emit PNG figures."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("retina")  # PNG at twice the pixels, shown at the figure's size
    except ImportError:  # outside IPython there is nothing to configure
        pass


def figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None):
    """A new figure and its axes in the book's style; size defaults scale with the grid."""
    import matplotlib.pyplot as plt

    use_book_style()
    size = (width or 3.4 * ncols + 0.6, height or 3.0 * nrows + 0.4)
    return plt.subplots(nrows, ncols, figsize=size)


def gantt(ax, intervals, title: str = "", lanes: list[str] | None = None) -> None:
    """Draw ``intervals`` (objects with ``lane``, ``start``, ``end``, ``kind``) as a Gantt chart: one row
    per lane, drafts, verifications and plain decoding in the book's colours, preempted work hatched."""
    from matplotlib.patches import Patch

    colours = {"draft": PALETTE[2], "verify": PALETTE[0], "decode": PALETTE[4], "preempted": "white"}
    lanes = lanes or sorted({bar.lane for bar in intervals}, key=lambda lane: (lane != "drafter", lane))
    for row, lane in enumerate(lanes):
        for bar in (b for b in intervals if b.lane == lane):
            ax.barh(row, bar.end - bar.start, left=bar.start, height=0.7, color=colours[bar.kind],
                    edgecolor=PALETTE[0] if bar.kind == "preempted" else "white",
                    hatch="///" if bar.kind == "preempted" else None, linewidth=0.6)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_title(title)
    kinds = sorted({bar.kind for bar in intervals})
    ax.legend(handles=[Patch(facecolor=colours[k], edgecolor=PALETTE[0] if k == "preempted" else "white",
                             hatch="///" if k == "preempted" else None, label=k) for k in kinds],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)


def markdown_table(headers: list[str], rows: list[list], missing: str = "–"):
    """A results table as a Markdown output, which the book renders as an HTML table: ``headers`` and
    ``rows`` of cells already formatted as text (``None`` or a NaN float is shown as ``missing``)."""
    import math

    from IPython.display import Markdown

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return missing
        return str(value).replace("|", "\\|")

    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"markdown_table: every row needs {len(headers)} cells")
    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return Markdown("\n".join(lines))
