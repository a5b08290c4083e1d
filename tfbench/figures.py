"""The report's figures, as matplotlib Figures (Agg, no display) and PNG bytes.

Figure 1 follows the paper's: per protocol group, ImageNet top-1 (%) against mean log-odds
transfer accuracy, one point per model, labelled with its display name, and a least-squares line.
A comparison figure puts each (model, dataset) pair's two scores against each other, with the
diagonal: points above it are pairs where the side the paper found better won.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfbench.analysis import GroupAnalysis
from tfbench.comparisons import Comparison

PANEL_INCHES = (5.6, 5.0)
COMPARISON_INCHES = (4.2, 4.0)
MAX_LABELLED_PAIRS = 12  # beyond this, labels would hide the points; the tables name every pair
DPI = 150


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def figure1(groups: Sequence[GroupAnalysis]) -> Figure:
    """One panel per group: ImageNet top-1 (%) against mean log-odds transfer accuracy of the
    models in its r (scatter), with the least-squares line when the top-1 values spread. A model
    run with several seeds is its mean over them, with an error bar of ± their sd."""
    figure = Figure(figsize=(PANEL_INCHES[0] * max(len(groups), 1), PANEL_INCHES[1]), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    points = []
    for index, group in enumerate(groups):
        axes = figure.add_subplot(1, len(groups), index + 1)
        included = group.included()
        x = np.array([100.0 * m.imagenet_top1 for m in included])
        y = np.array([m.mean_log_odds for m in included])
        axes.scatter(x, y, s=36, color="tab:blue", zorder=3)
        spread = [(xi, yi, m.seed_sd) for xi, yi, m in zip(x, y, included) if m.seed_sd is not None]
        if spread:
            axes.errorbar([p[0] for p in spread], [p[1] for p in spread], yerr=[p[2] for p in spread],
                          fmt="none", ecolor="tab:blue", elinewidth=1.0, capsize=3, zorder=3,
                          label="\u00b1 sd over seeds")
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            line_x = np.array([x.min(), x.max()])
            axes.plot(line_x, slope * line_x + intercept, color="tab:gray", linewidth=1.2, zorder=2)
        axes.margins(x=0.12, y=0.12)
        axes.set_title(f"{group.title()}\nr = {group.correlation.describe()}; {group.paper_note()}",
                       fontsize=9)
        axes.set_xlabel("ImageNet top-1 accuracy (%)")
        axes.set_ylabel("Mean transfer accuracy (log odds)")
        axes.grid(True, alpha=0.3)
        left_out = len(group.models) - len(included)
        if left_out:
            axes.text(0.02, 0.02, f"{left_out} model(s) not shown: see report.md",
                      transform=axes.transAxes, fontsize=7, color="dimgray")
        points.append((axes, [m.label for m in included], x, y))
    figure.draw_without_rendering()  # final axes positions, so label boxes can be compared
    for axes, names, x, y in points:
        _label_points(axes, names, x, y)
    return figure


def comparison_figure(comparison: Comparison) -> Figure:
    """The comparison's pairs: x the second side's score (%), y the first's, and the diagonal."""
    figure = Figure(figsize=COMPARISON_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    x = np.array([100.0 * p.second for p in comparison.pairs])
    y = np.array([100.0 * p.first for p in comparison.pairs])
    axes.scatter(x, y, s=30, color="tab:blue", zorder=3)
    ends = np.array([min(x.min(), y.min()), max(x.max(), y.max())]) if len(x) else np.array([0.0, 100.0])
    axes.plot(ends, ends, color="tab:gray", linewidth=1.0, linestyle="--", zorder=2)
    axes.margins(0.1)
    kind = comparison.kind
    axes.set_title(f"{kind.title}\n{comparison.compact()}", fontsize=8)
    axes.set_xlabel(f"{kind.second}: test score (%)")
    axes.set_ylabel(f"{kind.first}: test score (%)")
    axes.grid(True, alpha=0.3)
    figure.draw_without_rendering()
    if len(comparison.pairs) <= MAX_LABELLED_PAIRS:
        labels = {m.model: m.label for side in (comparison.first, comparison.second) for m in side.models}
        _label_points(axes, [f"{labels.get(p.model, p.model)} / {p.dataset}" for p in comparison.pairs], x, y)
    return figure


# Label positions around a point, in offset points (dx, dy, horizontal, vertical alignment), in
# order of preference; the far ones get a leader line so the label still points at its point.
_LABEL_SPOTS = ((6, 3, "left", "bottom"), (-6, 3, "right", "bottom"), (6, -3, "left", "top"),
                (-6, -3, "right", "top"), (20, 16, "left", "bottom"), (-20, 16, "right", "bottom"),
                (20, -16, "left", "top"), (-20, -16, "right", "top"), (0, 30, "center", "bottom"),
                (0, -30, "center", "top"))
_NEAR = 4
_MARKER_POINTS = 4.0


def _label_points(axes, names: Sequence[str], x: np.ndarray, y: np.ndarray) -> None:
    """Names next to points, each at the first spot that stays inside the axes and overlaps no
    other point and no label placed before (the first spot when none is free)."""
    from matplotlib.transforms import Bbox

    renderer = axes.figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    radius = _MARKER_POINTS * axes.figure.dpi / 72.0
    centers = axes.transData.transform(np.column_stack([x, y])) if len(x) else []
    taken = [Bbox.from_extents(cx - radius, cy - radius, cx + radius, cy + radius) for cx, cy in centers]

    def annotate(name, point, spot, leader=False):
        dx, dy, horizontal, vertical = spot
        return axes.annotate(name, point, xytext=(dx, dy), textcoords="offset points", fontsize=8,
                             ha=horizontal, va=vertical, in_layout=False,
                             arrowprops=dict(arrowstyle="-", color="gray", linewidth=0.6) if leader else None)

    for name, xi, yi in sorted(zip(names, x, y), key=lambda point: (point[1], point[2])):  # by x
        chosen = 0
        for index, spot in enumerate(_LABEL_SPOTS):
            label = annotate(name, (xi, yi), spot)
            box = label.get_window_extent(renderer)
            label.remove()
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(t) for t in taken):
                chosen = index
                break
        label = annotate(name, (xi, yi), _LABEL_SPOTS[chosen], leader=chosen >= _NEAR)
        taken.append(label.get_window_extent(renderer))
