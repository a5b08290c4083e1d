"""One look for every figure of the report: sizes, resolution, titles that fit, legends that
cover nothing. Figures are matplotlib Figures on the Agg canvas (no display), written as PNG."""

from __future__ import annotations

import io
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 150
PANEL_INCHES = (5.6, 5.0)  # Figure 1 and the size split
COMPARISON_INCHES = (4.2, 4.0)
PER_DATASET_INCHES = (3.6, 3.2)  # Figure 7, the convergence and the data-size panels
PER_DATASET_COLUMNS = 4  # the paper's 12 datasets in 3 rows
TITLE_SIZE = 9
SMALL_SIZE = 7
CHARACTER_INCHES = 0.075  # a title character's width at TITLE_SIZE, to wrap titles to their panel


def new(width: float, height: float) -> Figure:
    """An empty figure of that size in inches, laid out so that nothing is cut."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def grid(panels: int, panel_inches=PER_DATASET_INCHES, columns: int = PER_DATASET_COLUMNS):
    """A figure for `panels` panels in rows of at most `columns`, and its (rows, columns)."""
    columns = max(min(panels, columns), 1)
    rows = max(-(-panels // columns), 1)
    return new(panel_inches[0] * columns, panel_inches[1] * rows), rows, columns


def wrap(text: str, inches: float, size: float = TITLE_SIZE) -> str:
    """`text` broken into lines that fit `inches` at font size `size` (each line wrapped alone)."""
    width = max(int(inches / (CHARACTER_INCHES * size / TITLE_SIZE)), 10)
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def title(axes, text: str, size: float = TITLE_SIZE) -> None:
    """A panel title wrapped to the panel's width."""
    inches = axes.get_position().width * axes.figure.get_figwidth()
    axes.set_title(wrap(text, inches, size), fontsize=size)


def legend_below(figure: Figure, handles) -> None:
    """One legend for every panel, under them, where it covers neither a panel nor the title."""
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
                  fontsize=SMALL_SIZE, frameon=False)


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
