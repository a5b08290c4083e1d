"""The analysis of a benchmark: score tables, log-odds correlation with ImageNet, Figure 1.

    python -m tfbench.report --output_dir=runs [--report_dir=runs/report]

What is computed, following Kornblith, Shlens & Le (2019), section 3 and Figure 1:
  - every test score p (a fraction, in the dataset's own metric) becomes log odds
    logit(p) = ln(p / (1 - p)); p is first clipped to [LOGIT_EPS, 1 - LOGIT_EPS] so that a perfect
    (or zero) score gives a large finite value (about +-9.2) instead of infinity;
  - per regime, each model's mean log odds over the datasets of that regime's table. Only models
    with an ok run on every one of those datasets enter: means over different sets of datasets are
    not comparable. The others are listed with the datasets they lack;
  - Pearson r between ImageNet top-1 accuracy and that mean over the models whose ImageNet top-1 is
    known. As in the paper's Figure 1, x is the ImageNet top-1 accuracy itself (not its log odds)
    and y the mean log-odds transfer accuracy; the interval is a percentile bootstrap over models;
  - the same r per dataset: ImageNet top-1 against that dataset's log odds.
Only runs with status "ok" enter the analysis; failed and diverged runs are listed with their reason.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np

from tfbench import files, protocol, results
from tfbench.settings import REGIMES

LOGIT_EPS = 1e-4
MIN_MODELS = 3  # Pearson r of two points is always +-1: it says nothing
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
REGIME_TITLES = {"probe": "Linear probe on fixed features", "finetune": "Fine-tuned",
                 "scratch": "Trained from scratch"}
MISSING = "-"
FIGURE_FILE = "figure1.png"
REPORT_FILE = "report.md"


class ReportInputError(ValueError):
    """The output folder holds nothing to report on; the message names it."""


# ---------------------------------------------------------------------------------------------
# Statistics


def logit(p, eps: float = LOGIT_EPS) -> np.ndarray:
    """Log odds ln(p / (1 - p)) of fractions, clipped to [eps, 1 - eps] to stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def pearson_r(x, y) -> np.ndarray:
    """Pearson r along the last axis; NaN where x or y is constant (r is undefined there)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    dx = x - x.mean(axis=-1, keepdims=True)
    dy = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dx * dy).sum(axis=-1) / np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


@dataclass(frozen=True)
class Correlation:
    """Pearson r over n models with its bootstrap interval; r is None when undefined (`reason`)."""

    n: int
    r: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None
    resamples: int = 0
    reason: Optional[str] = None

    def interval(self) -> str:
        """The bootstrap interval for a table column, or why there is none."""
        if self.r is None:
            return f"n/a: {self.reason}"
        return f"none with {self.n} models" if self.low is None else f"[{self.low:.2f}, {self.high:.2f}]"

    def compact(self) -> str:
        """"0.91 [0.68, 0.99]", "0.99" (too few models for an interval) or "n/a"."""
        if self.r is None:
            return "n/a"
        return f"{self.r:.2f}" if self.low is None else f"{self.r:.2f} {self.interval()}"

    def describe(self) -> str:
        return f"n/a ({self.reason})" if self.r is None else f"{self.compact()} (n={self.n})"

    def to_json(self) -> Dict[str, Any]:
        return {"n": self.n, "r": self.r, "low": self.low, "high": self.high,
                "valid_resamples": self.resamples, "reason": self.reason}


def correlate(x, y, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
              confidence: float = CONFIDENCE) -> Correlation:
    """Pearson r of paired values (one pair per model) with a percentile bootstrap interval.

    The bootstrap resamples the models (the (x, y) pairs) with replacement, `resamples` times from
    a generator seeded with `seed`. A resample with fewer than MIN_MODELS distinct models is
    dropped, for the reason r itself needs them: two models give r = +-1 whatever the data, and
    with few models such resamples would pull the interval to -1 or 1. So are resamples where
    every chosen x or every chosen y is equal (no r). `Correlation.resamples` counts those kept;
    the interval is the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of their r.
    With exactly MIN_MODELS models every kept resample is a permutation, so there is no interval.
    It measures how much r depends on which models were run, not the noise of each test score.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < MIN_MODELS:
        return Correlation(n=n, reason=f"needs at least {MIN_MODELS} models, has {n}")
    r = float(pearson_r(x, y))
    if np.isnan(r):
        return Correlation(n=n, reason="ImageNet top-1 or transfer score is equal for every model")
    if n == MIN_MODELS:
        return Correlation(n=n, r=r)
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    ordered = np.sort(picks, axis=1)
    distinct = 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)
    bootstrap = pearson_r(x[picks], y[picks])[distinct >= MIN_MODELS]
    bootstrap = bootstrap[~np.isnan(bootstrap)]
    if not len(bootstrap):
        return Correlation(n=n, r=r)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(bootstrap, [tail, 100.0 - tail])
    return Correlation(n=n, r=r, low=float(low), high=float(high), resamples=len(bootstrap))


# ---------------------------------------------------------------------------------------------
# Tables and analysis


@dataclass(frozen=True)
class ScoreTable:
    """Test scores (fractions) of one regime's ok runs: model x dataset."""

    regime: str
    datasets: Tuple[str, ...]
    metrics: Mapping[str, str]  # dataset -> metric name
    models: Tuple[str, ...]
    scores: Mapping[Tuple[str, str], float]  # (model, dataset) -> test score

    def score(self, model: str, dataset: str) -> Optional[float]:
        return self.scores.get((model, dataset))

    def missing(self, model: str) -> List[str]:
        return [d for d in self.datasets if (model, d) not in self.scores]


def score_tables(records: Sequence[Mapping[str, Any]]) -> Dict[str, ScoreTable]:
    """One table per regime that has ok runs, in the order probe, finetune, scratch."""
    tables = {}
    for regime in REGIMES:
        ok = [r for r in records if r["status"] == "ok" and r["experiment"]["regime"] == regime]
        if not ok:
            continue
        metrics = {r["experiment"]["dataset"]: r["metric"] for r in ok}
        scores = {(r["experiment"]["model"], r["experiment"]["dataset"]): float(r["test_score"])
                  for r in ok}
        tables[regime] = ScoreTable(
            regime=regime, datasets=tuple(sorted(metrics)), metrics=metrics,
            models=tuple(sorted({model for model, _ in scores})), scores=scores)
    return tables


@dataclass(frozen=True)
class ModelTransfer:
    """One model's place in a regime's correlation; `excluded` says why it is not in r."""

    model: str
    imagenet_top1: Optional[float]
    mean_log_odds: Optional[float]
    excluded: Optional[str]


@dataclass(frozen=True)
class RegimeAnalysis:
    table: ScoreTable
    models: Tuple[ModelTransfer, ...]  # by ImageNet top-1, unknown last
    correlation: Correlation
    per_dataset: Mapping[str, Correlation]

    def included(self) -> List[ModelTransfer]:
        return [m for m in self.models if m.excluded is None]


@dataclass(frozen=True)
class Analysis:
    output_dir: str
    runs: Tuple[Mapping[str, Any], ...]  # one flat row per run record, any status
    regimes: Mapping[str, RegimeAnalysis]
    failures: Tuple[Mapping[str, Any], ...]  # rows of runs that are not ok
    resamples: int
    seed: int


def analyze_regime(table: ScoreTable, imagenet_top1: Callable[[str], Optional[float]],
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> RegimeAnalysis:
    """Mean log odds per model and its correlation with ImageNet top-1 (overall and per dataset)."""
    models = []
    for model in table.models:
        top1 = imagenet_top1(model)
        missing = table.missing(model)
        mean = None if missing else float(np.mean(logit([table.score(model, d) for d in table.datasets])))
        if missing:
            excluded = f"no ok run on {', '.join(missing)}"
        elif top1 is None:
            excluded = "no known ImageNet top-1"
        else:
            excluded = None
        models.append(ModelTransfer(model, top1, mean, excluded))
    models.sort(key=lambda m: (m.imagenet_top1 is None, m.imagenet_top1 or 0.0, m.model))
    included = [m for m in models if m.excluded is None]
    correlation = correlate([m.imagenet_top1 for m in included], [m.mean_log_odds for m in included],
                            resamples=resamples, seed=seed)
    per_dataset = {}
    for dataset in table.datasets:
        pairs = [(m.imagenet_top1, table.score(m.model, dataset)) for m in models
                 if m.imagenet_top1 is not None and table.score(m.model, dataset) is not None]
        per_dataset[dataset] = correlate([top1 for top1, _ in pairs], logit([s for _, s in pairs]),
                                         resamples=resamples, seed=seed)
    return RegimeAnalysis(table, tuple(models), correlation, per_dataset)


def analyze(records: Sequence[Mapping[str, Any]], imagenet_top1: Callable[[str], Optional[float]],
            output_dir: str = "", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Analysis:
    """The whole analysis of a list of run records; `imagenet_top1(model)` gives a fraction or None."""
    rows = results.table(records)
    failures = tuple({k: row[k] for k in ("regime", "dataset", "model", "status", "reason")}
                     for row in rows if row["status"] != "ok")
    regimes = {regime: analyze_regime(table, imagenet_top1, resamples, seed)
               for regime, table in score_tables(records).items()}
    return Analysis(output_dir, tuple(rows), regimes, failures, resamples, seed)


def registered_imagenet_top1(model: str) -> Optional[float]:
    """ImageNet top-1 of a registered backbone; None for others (paths and handles are never loaded)."""
    from tfbench import backbones

    return backbones.spec(model).imagenet_top1 if model in backbones.names() else None


# ---------------------------------------------------------------------------------------------
# Rendering


def _percent(value: Optional[float]) -> str:
    return MISSING if value is None else f"{100.0 * value:.1f}"


def _log_odds(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.3f}"


def score_rows(table: ScoreTable) -> List[Dict[str, str]]:
    """Rows of the score table in percent with one decimal; a missing run is MISSING."""
    return [{"model": model, **{f"{d} ({table.metrics[d]}, %)": _percent(table.score(model, d))
                                for d in table.datasets}}
            for model in table.models]


def transfer_rows(regime: RegimeAnalysis) -> List[Dict[str, str]]:
    return [{"model": m.model, "ImageNet top-1 (%)": _percent(m.imagenet_top1),
             "mean log odds": _log_odds(m.mean_log_odds),
             "in r": "yes" if m.excluded is None else f"no: {m.excluded}"} for m in regime.models]


def per_dataset_rows(regime: RegimeAnalysis) -> List[Dict[str, str]]:
    return [{"dataset": d, "metric": regime.table.metrics[d], "n": str(c.n),
             "r": MISSING if c.r is None else f"{c.r:.2f}", "95% interval": c.interval()}
            for d, c in regime.per_dataset.items()]


def correlation_rows(analysis: Analysis) -> List[Dict[str, str]]:
    rows = []
    for name, regime in analysis.regimes.items():
        c = regime.correlation
        rows.append({"regime": name, "n models": str(c.n),
                     "r (this run)": MISSING if c.r is None else f"{c.r:.2f}",
                     "95% bootstrap interval": c.interval(),
                     "paper's r": f"{protocol.PAPER_R[name]:.2f}"})
    return rows


def failure_rows(analysis: Analysis) -> List[Dict[str, str]]:
    return [{k: MISSING if v is None else str(v) for k, v in row.items()} for row in analysis.failures]


def markdown_table(rows: Sequence[Mapping[str, str]]) -> str:
    if not rows:
        return "(none)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def scores_csv(table: ScoreTable) -> str:
    """Full-precision fractions; a missing run is an empty cell (read as NaN by CSV readers)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model"] + [f"{d} ({table.metrics[d]})" for d in table.datasets])
    for model in table.models:
        writer.writerow([model] + [("" if table.score(model, d) is None else repr(table.score(model, d)))
                                   for d in table.datasets])
    return buffer.getvalue()


def runs_csv(analysis: Analysis) -> str:
    buffer = io.StringIO()
    if analysis.runs:
        writer = csv.DictWriter(buffer, fieldnames=list(analysis.runs[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(analysis.runs)
    return buffer.getvalue()


def analysis_json(analysis: Analysis) -> Dict[str, Any]:
    """Every number of the report, as fractions (scores, top-1) and log odds."""
    regimes = {}
    for name, regime in analysis.regimes.items():
        table = regime.table
        regimes[name] = {
            "datasets": list(table.datasets),
            "metrics": dict(table.metrics),
            "scores": {m: {d: table.score(m, d) for d in table.datasets if table.score(m, d) is not None}
                       for m in table.models},
            "models": [{"model": m.model, "imagenet_top1": m.imagenet_top1,
                        "mean_log_odds": m.mean_log_odds, "excluded": m.excluded}
                       for m in regime.models],
            "correlation": regime.correlation.to_json(),
            "per_dataset": {d: c.to_json() for d, c in regime.per_dataset.items()},
            "paper_r": protocol.PAPER_R[name],
        }
    return {
        "output_dir": analysis.output_dir,
        "runs": len(analysis.runs),
        "ok_runs": len(analysis.runs) - len(analysis.failures),
        "failures": list(analysis.failures),
        "logit_eps": LOGIT_EPS,
        "x": "ImageNet top-1 accuracy (fraction)",
        "y": "mean over datasets of logit(test score)",
        "bootstrap": {"resamples": analysis.resamples, "seed": analysis.seed,
                      "confidence": CONFIDENCE, "unit": "models, with replacement",
                      "interval": "percentile"},
        "regimes": regimes,
    }


METHOD_NOTE = (
    "Each test score p (the dataset's metric, a fraction) becomes log odds ln(p / (1 - p)), with p "
    f"clipped to [{LOGIT_EPS:g}, 1 - {LOGIT_EPS:g}]. A model's transfer score is the mean log odds "
    "over every dataset of the regime's table; models without an ok run on each of them are left "
    "out of the mean. r is Pearson's correlation between ImageNet top-1 accuracy (x, as in the "
    "paper's Figure 1) and that mean (y), over the models whose ImageNet top-1 is known. The "
    "interval is a 95% percentile bootstrap over models resampled with replacement "
    "({resamples} resamples, seed {seed}). The paper's r (Kornblith, Shlens & Le 2019: 16 "
    "networks, 12 datasets) is quoted for reference; it is not computed here.")


def report_markdown(analysis: Analysis) -> str:
    ok = len(analysis.runs) - len(analysis.failures)
    parts = [
        "# tfbench report\n",
        f"Run records under `{analysis.output_dir}`: {len(analysis.runs)} "
        f"({ok} ok, {len(analysis.failures)} not counted).\n",
        "## Correlation of transfer accuracy with ImageNet top-1\n",
        markdown_table(correlation_rows(analysis)),
        METHOD_NOTE.format(resamples=analysis.resamples, seed=analysis.seed) + "\n",
        f"![Figure 1: ImageNet top-1 against mean log-odds transfer accuracy]({FIGURE_FILE})\n",
    ]
    for name, regime in analysis.regimes.items():
        parts += [
            f"## {REGIME_TITLES[name]} (`{name}`)\n",
            "### Test scores (%)\n", markdown_table(score_rows(regime.table)),
            f"### Mean log-odds transfer accuracy\n\nr = {regime.correlation.describe()}; "
            f"paper: {protocol.PAPER_R[name]:.2f}.\n",
            markdown_table(transfer_rows(regime)),
            "### Per dataset: ImageNet top-1 against the dataset's log odds\n",
            markdown_table(per_dataset_rows(regime)),
        ]
    parts += ["## Runs not counted (failed or diverged)\n", markdown_table(failure_rows(analysis))]
    return "\n".join(parts)


def plot_figure(analysis: Analysis) -> bytes:
    """Figure 1 as PNG bytes: per regime, ImageNet top-1 (%) against mean log-odds transfer accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    regimes = list(analysis.regimes.items())
    figure = Figure(figsize=(5.6 * max(len(regimes), 1), 5.0), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    points = []
    for index, (name, regime) in enumerate(regimes):
        axes = figure.add_subplot(1, len(regimes), index + 1)
        included = regime.included()
        x = np.array([100.0 * m.imagenet_top1 for m in included])
        y = np.array([m.mean_log_odds for m in included])
        axes.scatter(x, y, s=36, color="tab:blue", zorder=3)
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            line_x = np.array([x.min(), x.max()])
            axes.plot(line_x, slope * line_x + intercept, color="tab:gray", linewidth=1.2, zorder=2)
        axes.margins(x=0.12, y=0.12)
        axes.set_title(f"{REGIME_TITLES[name]}\nr = {regime.correlation.describe()}; "
                       f"paper: {protocol.PAPER_R[name]:.2f}", fontsize=10)
        axes.set_xlabel("ImageNet top-1 accuracy (%)")
        axes.set_ylabel("Mean transfer accuracy (log odds)")
        axes.grid(True, alpha=0.3)
        left_out = len(regime.models) - len(included)
        if left_out:
            axes.text(0.02, 0.02, f"{left_out} model(s) not shown: see report.md",
                      transform=axes.transAxes, fontsize=7, color="dimgray")
        points.append((axes, [m.model for m in included], x, y))
    figure.draw_without_rendering()  # final axes positions, so label boxes can be compared
    for axes, names, x, y in points:
        _label_points(axes, names, x, y)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


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


def print_summary(analysis: Analysis, file: TextIO = sys.stdout) -> None:
    """Score tables, r values and uncounted runs for a terminal."""
    for name, regime in analysis.regimes.items():
        print(f"\n== {name}: test scores (%) ==", file=file)
        results.print_table(score_rows(regime.table), file=file)
        print(f"\n== {name}: mean log odds vs ImageNet top-1 ==", file=file)
        results.print_table(transfer_rows(regime), file=file)
        print(f"r {name} = {regime.correlation.describe()}; paper: {protocol.PAPER_R[name]:.2f}", file=file)
    if analysis.failures:
        print("\n== runs not counted ==", file=file)
        results.print_table(failure_rows(analysis), file=file)


def summary_line(analysis: Analysis, report_path: str) -> str:
    correlations = " ".join(f"{name}={regime.correlation.compact()}"
                            for name, regime in analysis.regimes.items())
    ok = len(analysis.runs) - len(analysis.failures)
    return (f"report: {len(analysis.runs)} runs ({ok} ok), r {correlations or 'n/a (no ok runs)'} "
            f"-> {report_path}")


# ---------------------------------------------------------------------------------------------
# Files


def write_report(analysis: Analysis, report_dir: str) -> List[str]:
    """Writes every report file into report_dir; returns their paths, report.md last."""
    contents = {FIGURE_FILE: plot_figure(analysis)}
    for name, regime in analysis.regimes.items():
        contents[f"scores_{name}.md"] = (f"# Test scores (%), {REGIME_TITLES[name]}\n\n"
                                         + markdown_table(score_rows(regime.table))).encode()
        contents[f"scores_{name}.csv"] = scores_csv(regime.table).encode()
    contents["runs.csv"] = runs_csv(analysis).encode()
    paths = [os.path.join(report_dir, "report.json")]
    files.write_json_atomic(paths[0], analysis_json(analysis))
    contents[REPORT_FILE] = report_markdown(analysis).encode()  # last: it refers to the others
    for file_name, data in contents.items():
        paths.append(os.path.join(report_dir, file_name))
        files.write_bytes_atomic(paths[-1], data)
    return paths


def report(output_dir: str, report_dir: Optional[str] = None,
           imagenet_top1: Callable[[str], Optional[float]] = registered_imagenet_top1,
           resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
           file: TextIO = sys.stdout) -> Tuple[Analysis, List[str]]:
    """Reads the run records under output_dir, writes the report, prints tables and one summary line.

    report_dir defaults to <output_dir>/report. A missing output_dir or one without run records
    raises ReportInputError before anything is written.
    """
    if not os.path.isdir(output_dir):
        raise ReportInputError(f"--output_dir {output_dir!r} is not a folder; pass the folder the "
                               "regime binaries wrote their runs to")
    records = results.collect(output_dir)
    if not records:
        raise ReportInputError(f"no run records under --output_dir {output_dir!r} (expected "
                               f"<output_dir>/<regime>/<dataset>/<model>/{results.RECORD_FILE})")
    analysis = analyze(records, imagenet_top1, output_dir=output_dir, resamples=resamples, seed=seed)
    paths = write_report(analysis, report_dir or os.path.join(output_dir, "report"))
    print_summary(analysis, file=file)
    print(summary_line(analysis, paths[-1]), file=file)
    return analysis, paths


# ---------------------------------------------------------------------------------------------
# Binary


def main() -> None:
    from absl import flags

    from tfbench import cli

    flags.DEFINE_string("output_dir", None, "Root folder of the run records (the regime binaries' "
                        "--output_dir).")
    flags.DEFINE_string("report_dir", None, "Where the report goes (default: <output_dir>/report).")
    flags.DEFINE_integer("bootstrap_resamples", BOOTSTRAP_RESAMPLES,
                         "Bootstrap resamples of the models for the r intervals.", lower_bound=100)
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resampling.")
    FLAGS = flags.FLAGS

    def run():
        if not FLAGS.output_dir:
            cli.fail("--output_dir is required: the root folder of the run records")
        try:
            report(FLAGS.output_dir, FLAGS.report_dir, resamples=FLAGS.bootstrap_resamples,
                   seed=FLAGS.seed)
        except ReportInputError as error:
            cli.fail(str(error))

    cli.run_app(run)


if __name__ == "__main__":
    main()
