"""The report's figures, as matplotlib Figures (Agg, no display) and PNG bytes.

Figure 1 follows the paper's: per protocol group, ImageNet top-1 (%) against mean log-odds
transfer accuracy, one point per model, labelled with its display name, and a least-squares line.
A comparison figure puts each (model, dataset) pair's two scores against each other, with the
diagonal: points above it are pairs where the side the paper found better won. Figure 7 puts
fine-tuned and from-scratch scores against ImageNet top-1, a panel per dataset; the size split
repeats Figure 1 over the small and over the large datasets. The budgets figure is the
paper's Figure 8: test score against training steps, each point a complete schedule, fine-tuned
(solid) and from scratch (dashed), one panel per dataset, one colour per network; the convergence
figure, its cheap approximation, draws validation scores partway along one schedule alike.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tfbench.report import figure_style as style
from tfbench.report.analysis import GroupAnalysis
from tfbench.report.budgets import Budgets
from tfbench.report.cells import plural
from tfbench.report.cheap_alternatives import GroupAlternatives
from tfbench.report.comparisons import Comparison
from tfbench.report.convergence import SIDE_NAMES, Convergence
from tfbench.report.data_size import FULL_POSITION, DataSizeAnalysis, size_label
from tfbench.report.finetune_vs_scratch import PerDataset
from tfbench.report.size_split import SIZE_GROUPS, SizeSplit
from tfbench.report.significance import ALPHA, CONFIDENCE, DatasetBest

MAX_LABELLED_PAIRS = 12  # beyond this, labels would hide the points; the tables name every pair
REGIME_COLORS = {"probe": "tab:green", "finetune": "tab:blue", "scratch": "tab:orange"}
BEST_PANEL_INCHES = (3.6, 0.22)  # width, height per network
BEST_COLUMNS = 3
MAX_BEST_NETWORKS = 20  # per panel: the best-scoring ones; the table names every network


png = style.png


def figure1(groups: Sequence[GroupAnalysis], titles: Optional[Sequence[str]] = None,
            columns: Optional[int] = None) -> Figure:
    """One panel per group: ImageNet top-1 (%) against mean log-odds transfer accuracy of the
    models in its r (scatter), with the least-squares line when the top-1 values spread. A model
    run with several seeds is its mean over them, with an error bar of ± their sd. `titles` replace
    the panels' own (group, r, the paper's r); `columns` wraps the panels into rows (default: one
    row)."""
    figure, rows, columns = style.grid(len(groups), style.PANEL_INCHES, columns or max(len(groups), 1))
    points = []
    for index, group in enumerate(groups):
        axes = figure.add_subplot(rows, columns, index + 1)
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
        style.title(axes, titles[index] if titles else
                    f"{group.title()}\nr = {group.correlation.describe()}; {group.paper_note()}")
        axes.set_xlabel("ImageNet top-1 accuracy (%), public checkpoints\n(not the paper's retrained networks)")
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
    figure = style.new(*style.COMPARISON_INCHES)
    axes = figure.add_subplot(1, 1, 1)
    x = np.array([100.0 * p.second for p in comparison.pairs])
    y = np.array([100.0 * p.first for p in comparison.pairs])
    axes.scatter(x, y, s=30, color="tab:blue", zorder=3)
    ends = np.array([min(x.min(), y.min()), max(x.max(), y.max())]) if len(x) else np.array([0.0, 100.0])
    axes.plot(ends, ends, color="tab:gray", linewidth=1.0, linestyle="--", zorder=2)
    axes.margins(0.1)
    kind = comparison.kind
    style.title(axes, f"{kind.title}\n{comparison.compact()}", size=8)
    axes.set_xlabel(f"{kind.second}: test score (%)")
    axes.set_ylabel(f"{kind.first}: test score (%)")
    axes.grid(True, alpha=0.3)
    figure.draw_without_rendering()
    if len(comparison.pairs) <= MAX_LABELLED_PAIRS:
        labels = {m.model: m.label for side in (comparison.first, comparison.second) for m in side.models}
        _label_points(axes, [f"{labels.get(p.model, p.model)} / {p.dataset}" for p in comparison.pairs], x, y)
    return figure


def convergence_figure(outcome: Convergence, labels: Mapping[str, str]) -> Figure:
    """The cheap approximation of Figure 8: one panel per dataset, each row's two validation curves
    (%) against steps partway along one schedule."""
    series = [(r.dataset, r.model, side, curve.points)
              for r in outcome.rows for side, curve in (("finetune", r.finetune), ("scratch", r.scratch))]
    return _regime_curves(series, labels, "validation score (%)", False,
                          f"Figure 8, cheap approximation: points partway along one schedule, "
                          f"{outcome.comparison.first.group.slug} vs {outcome.comparison.second.group.slug}")


def budgets_figure(outcome: Budgets, labels: Mapping[str, str]) -> Figure:
    """The paper's Figure 8: one panel per dataset, test score (%) against training steps (log
    scale), each point a complete schedule of that many steps."""
    series = [(r.dataset, r.model, side, [(p.steps, p.score) for p in r.side(side)])
              for r in outcome.rows for side in ("finetune", "scratch")]
    return _regime_curves(series, labels, "test score (%)", True,
                          f"Figure 8: each budget a complete schedule, {outcome.comparison.first.group.slug} "
                          f"vs {outcome.comparison.second.group.slug}")


def _regime_curves(series: Sequence[Tuple[str, str, str, Sequence[Tuple[int, float]]]], labels: Mapping[str, str],
                   ylabel: str, log_steps: bool, title: str) -> Figure:
    """A panel per dataset of (dataset, model, side, [(steps, score)]) series: fine-tuned solid with
    circles, from scratch dashed with squares, one colour per network (seeds share it)."""
    datasets = sorted({dataset for dataset, *_ in series})
    models = sorted({model for _, model, *_ in series})
    figure, panel_rows, columns = style.grid(len(datasets))
    colours = {model: f"C{index % 10}" for index, model in enumerate(models)}
    styles = {"finetune": ("-", "o"), "scratch": ("--", "s")}
    for index, dataset in enumerate(datasets):
        axes = figure.add_subplot(panel_rows, columns, index + 1)
        for _, model, side, points in (s for s in series if s[0] == dataset):
            steps, scores = zip(*points)
            axes.plot(steps, [100.0 * s for s in scores], linestyle=styles[side][0], marker=styles[side][1],
                      markersize=3, color=colours[model])
        if log_steps:  # budgets double or so: a log axis, ticked at the budgets trained
            axes.set_xscale("log")
            ticks = sorted({step for s in series if s[0] == dataset for step, _ in s[3]})
            axes.set_xticks(ticks, [f"{step:,}" for step in ticks], fontsize=style.SMALL_SIZE)
            axes.minorticks_off()
        axes.set_title(dataset, fontsize=9)
        axes.set_xlabel("training steps")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
    # One legend for every panel: a colour per network, a line style per regime.
    handles = [Line2D([], [], color=colour, label=labels.get(model, model)) for model, colour in colours.items()]
    handles += [Line2D([], [], color="black", linestyle=styles[side][0], marker=styles[side][1], markersize=3,
                       label=SIDE_NAMES[side]) for side in styles]
    style.legend_below(figure, handles)
    figure.suptitle(style.wrap(title, figure.get_figwidth()), fontsize=style.TITLE_SIZE)
    return figure


def per_dataset_figure(per_dataset: PerDataset) -> Figure:
    """The paper's Figure 7: a panel per dataset, ImageNet top-1 (%) against the test score (%),
    one series per side (fine-tuned, from scratch) over the same networks. Networks without a
    known top-1 have no x and are left out (the report's table names them)."""
    datasets = list(per_dataset.by_dataset)
    figure, rows, columns = style.grid(len(datasets))
    kind = per_dataset.comparison.kind
    for index, dataset in enumerate(datasets):
        comparison = per_dataset.by_dataset[dataset]
        axes = figure.add_subplot(rows, columns, index + 1)
        plotted = sorted((p for p in comparison.pairs if per_dataset.top1(p.model) is not None),
                         key=lambda p: per_dataset.top1(p.model))
        x = [100.0 * per_dataset.top1(p.model) for p in plotted]
        first, second = [100.0 * p.first for p in plotted], [100.0 * p.second for p in plotted]
        axes.vlines(x, first, second, color="tab:gray", linewidth=0.8, zorder=2)  # each network's gap
        axes.scatter(x, first, s=24, color="tab:blue", label=kind.first, zorder=3)
        axes.scatter(x, second, s=24, color="tab:orange", label=kind.second, zorder=3)
        if not plotted:
            axes.text(0.5, 0.5, "no network with a known ImageNet top-1", transform=axes.transAxes,
                      ha="center", va="center", fontsize=8, color="dimgray")
        axes.margins(0.12)
        axes.set_title(f"{dataset} ({per_dataset.comparison.first.table.metrics[dataset]})\n"
                       f"{kind.first} better {comparison.wins()}/{len(comparison.pairs)}, "
                       f"{100 * comparison.mean_difference():+.1f} pts", fontsize=8)
        axes.set_xlabel("ImageNet top-1 accuracy (%)", fontsize=8)
        axes.set_ylabel("Test score (%)", fontsize=8)
        axes.grid(True, alpha=0.3)
        if index == 0:
            axes.legend(fontsize=7, loc="best")
    return figure


def size_split_figure(split: SizeSplit) -> Figure:
    """Figure 1 per protocol group, once over its small and once over its large datasets: a row
    of two panels per group; a size group without datasets is an empty panel that says so."""
    figure = figure1([s.within for s in split.splits], split.figure_titles(), columns=len(SIZE_GROUPS))
    for axes, part in zip(figure.axes, split.splits):
        if not part.datasets:
            axes.set_xticks([])
            axes.set_yticks([])
            axes.text(0.5, 0.5, "no dataset of this size ran", transform=axes.transAxes, ha="center",
                      va="center", fontsize=9, color="dimgray")
    return figure


def best_networks_figure(title: str, verdicts: Sequence[DatasetBest], labels: Mapping[str, str]) -> Figure:
    """One panel per compared dataset: each network's test score (%) with its bootstrap interval,
    best on top; the best red, those not significantly worse orange, the others gray."""
    shown = [v for v in verdicts if v.best is not None]
    columns = min(BEST_COLUMNS, max(len(shown), 1))
    rows = -(-max(len(shown), 1) // columns)
    networks = min(MAX_BEST_NETWORKS, 1 + max((len(v.rivals) for v in shown), default=0))
    height = max(1.6, BEST_PANEL_INCHES[1] * networks + 1.0)
    figure = style.new(max(BEST_PANEL_INCHES[0] * columns, 5.0), height * rows + 0.6)
    figure.suptitle(f"{title}\nred: best; orange: not significantly worse;\ngray: significantly worse "
                    f"(p < {ALPHA:g}); bars: {100 * CONFIDENCE:.0f}% bootstrap intervals", fontsize=8)
    for index, verdict in enumerate(shown):
        axes = figure.add_subplot(rows, columns, index + 1)
        entries = [(verdict.best, verdict.score, verdict.interval, "tab:red")] + [
            (r.model, r.score, r.interval, "tab:gray" if r.significantly_worse else "tab:orange")
            for r in verdict.rivals][:MAX_BEST_NETWORKS - 1]
        y = np.arange(len(entries))[::-1]
        for position, (_, score, (low, high), color) in zip(y, entries):
            axes.errorbar(100.0 * score, position, xerr=[[100.0 * (score - low)], [100.0 * (high - score)]],
                          fmt="o", color=color, markersize=4, capsize=2, linewidth=1.0)
        axes.set_yticks(y, [labels.get(model, model) for model, *_ in entries], fontsize=7)
        axes.set_title(f"{verdict.dataset} ({verdict.metric}, n={verdict.examples})", fontsize=8)
        axes.set_xlabel("test score (%)", fontsize=7)
        axes.tick_params(axis="x", labelsize=7)
        axes.grid(True, axis="x", alpha=0.3)
    return figure


def data_size_figure(data_size: DataSizeAnalysis) -> Figure:
    """The paper's Figure 9: one panel per dataset, mean score (%) against examples per class (log
    x), a line per regime; the whole training set is drawn at FULL_POSITION x the largest subset,
    ticked "all"."""
    figure, rows, columns = style.grid(len(data_size.curves))
    for index, curves in enumerate(data_size.curves):
        axes = figure.add_subplot(rows, columns, index + 1)
        largest = max((s for s in curves.sizes if s is not None), default=1)
        position = {s: (FULL_POSITION * largest if s is None else s) for s in curves.sizes}
        for line in curves.lines:
            shown = [s for s in curves.sizes if curves.mean(line, s) is not None]
            x, y = [position[s] for s in shown], [100.0 * curves.mean(line, s) for s in shown]
            drawn, = axes.plot(x, y, marker="o", label=line,
                               color=REGIME_COLORS.get(line))  # several protocols of a regime: their own
            errors = [100.0 * (curves.standard_error(line, s) or 0.0) for s in shown]
            if any(errors):  # standard errors over seeds (subsets)
                axes.errorbar(x, y, yerr=errors, fmt="none", capsize=2, color=drawn.get_color())
        axes.set_xscale("log")
        axes.set_xticks([position[s] for s in curves.sizes], [size_label(s) for s in curves.sizes])
        axes.minorticks_off()
        style.title(axes, curves.dataset)
        axes.set_xlabel("Training examples per class")
        axes.set_ylabel(f"Test {curves.metric} (%), mean over networks")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=style.SMALL_SIZE)
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


def cheap_alternatives_figure(group: GroupAlternatives) -> Figure:
    """Mean validation regret (points) against the mean share of the grid's training steps, one
    labelled point per alternative (alternatives at the same point share a label)."""
    figure = style.new(*style.PANEL_INCHES)
    axes = figure.add_subplot(1, 1, 1)
    points: dict = {}
    for alternative in group.alternatives():
        share, regret = group.mean(alternative, "share")[0], group.mean(alternative, "regret")[0]
        if share is not None and regret is not None:
            points.setdefault((round(share, 6), round(regret, 6)), []).append(alternative)
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    axes.scatter(x, y, s=30, color="tab:blue", zorder=3)
    axes.set_xlim(0.0, 1.45 * max([1.0, *x]))  # room for the labels right of the grid's point
    axes.margins(y=0.15)
    axes.set_xlabel("Share of the grid's training steps (trials + one retrain)")
    axes.set_ylabel("Validation regret against the grid (points)")
    axes.grid(True, alpha=0.3)
    style.title(axes, f"{group.title}\nmean over {plural(len(group.runs), 'grid run')}")
    _label_points(axes, ["\n".join(names) for names in points.values()], x, y)
    return figure
