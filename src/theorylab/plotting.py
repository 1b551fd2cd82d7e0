"""One figure style for the whole book: PNG output (nbval compares text, and SVG is text), a
colour-blind-safe cycle and light grids; ``theorylab run`` collects the PNGs from the executed notebook."""
from __future__ import annotations

import matplotlib

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 110,
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
        set_matplotlib_formats("png")
    except ImportError:  # outside IPython there is nothing to configure
        pass


def figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None):
    """A new figure and its axes in the book's style; size defaults scale with the grid."""
    import matplotlib.pyplot as plt

    use_book_style()
    size = (width or 3.4 * ncols + 0.6, height or 3.0 * nrows + 0.4)
    return plt.subplots(nrows, ncols, figsize=size)
