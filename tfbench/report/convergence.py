"""How much sooner pretrained networks converge: the paper's Figure 8, from the run records.

Kornblith, Shlens & Le (2019, Figure 8) show that networks fine-tuned from ImageNet converge faster
than the same networks trained from scratch, even where both end up close. A test score
alone cannot show that; the validation curve of the trial each run chose can. Every fine-tune and
scratch run record carries it (results.CHOSEN_CURVE): [step, validation score] every
--eval_every steps of training on "train" (the default: every checkpoint), the last point at the
end of training.

Runs are paired as the fine-tune vs scratch comparisons pair them (tfbench.report.comparisons:
first each regime's own protocol, the paper's 20,000-step fine-tune with its 78,125-step scratch or
one preset's two; then, as tfbench's second view, groups of equal steps and batch size), here per
(model, dataset, seed). Steps count from each run's own start, so runs of different lengths compare
on one axis. These are points partway along one cosine schedule, whose learning rate has not
decayed there: a cheap approximation of the paper's Figure 8, which trains separate models at
each budget. Per curve:
  - the final score is the curve's last point: the chosen trial's validation score at the end of
    training (not the best point: a curve that peaks and falls back has not converged there);
  - the steps to 90% / 95% are the first logged step whose score is at least that fraction of the
    curve's own final score (each regime against its own end, so a scratch run that ends lower is
    not also counted as slower; the table shows both finals). The last point always qualifies, so
    a curve that gets there only at the end reports its last step;
  - a step is known only to the logging interval: a curve already there at its first point
    reached it by then, at most (`reached_at_first_point`, shown with "<=");
  - a curve of fewer than MIN_POINTS points (logged only at the end: --eval_every=0, or a
    checkpoint interval as long as the run) gives no steps: with nothing between its first point
    and its end it cannot tell when the score was reached.
The ratio scratch / fine-tune of those steps says how many times longer from scratch took (> 1:
the pretrained network got there sooner). Records written before run records carried the curve,
and cells with an ok run on one side only, are listed as missing, never counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from tfbench import results
from tfbench.report.cells import MISSING, fixed, percent
from tfbench.report.comparisons import (FINETUNE_VS_SCRATCH_KINDS, Comparison, ComparisonOutcome, NotDrawn,
                                       pair_figure_files, pair_lines)

FRACTIONS = (0.90, 0.95)
MIN_POINTS = 3
ROUNDING = 1e-9  # scores are fractions of examples; far finer than any example's share
SIDE_NAMES = {"finetune": "fine-tuned", "scratch": "from scratch"}
FIRST_POINT_MARK = "<="  # the step is an upper bound: the curve was there at its first logged point
METHOD = (
    "Each run's curve is the validation score of the trial it chose, logged every --eval_every steps "
    "of training on train, the last point at the end. Final: that last point. Steps to 90% / 95%: the "
    f"first logged step whose score is at least that fraction of the curve's own final score; "
    f"{FIRST_POINT_MARK} marks a curve already there at its first logged point (it got there by then). "
    "Ratio: scratch steps / fine-tuned steps (> 1: the pretrained network got there sooner). Curves of "
    f"fewer than {MIN_POINTS} points give no steps.")


@dataclass(frozen=True)
class Curve:
    """One run's chosen validation curve: (step, score) points by step, the last at the end."""

    points: Tuple[Tuple[int, float], ...]

    @property
    def final(self) -> float:
        return self.points[-1][1]

    def usable(self) -> bool:
        return len(self.points) >= MIN_POINTS

    def steps_to(self, fraction: float) -> Optional[int]:
        """The first logged step at or above `fraction` of the final score; None for too short a curve."""
        if not self.usable():
            return None
        target = fraction * self.final - ROUNDING  # 0.9 * 0.8 is 0.7200000000000001: 0.72 reaches it
        return next(step for step, score in self.points if score >= target)

    def reached_at_first_point(self, fraction: float) -> bool:
        return self.usable() and self.steps_to(fraction) == self.points[0][0]


@dataclass(frozen=True)
class Row:
    model: str
    dataset: str
    seed: int
    finetune: Curve
    scratch: Curve

    def ratio(self, fraction: float) -> Optional[float]:
        """Steps to `fraction` from scratch over those of fine-tuning; None when either is unknown."""
        finetuned, scratch = self.finetune.steps_to(fraction), self.scratch.steps_to(fraction)
        return None if finetuned is None or scratch is None else scratch / finetuned


@dataclass(frozen=True)
class Convergence:
    """The curves of one compatible pair of fine-tune and scratch groups."""

    comparison: Comparison
    rows: Tuple[Row, ...]  # cells with a curve on both sides
    missing: Tuple[str, ...]  # cells or curves that cannot enter, with the reason

    def median_ratio(self, fraction: float) -> Optional[float]:
        ratios = [r.ratio(fraction) for r in self.rows if r.ratio(fraction) is not None]
        return float(np.median(ratios)) if ratios else None

    def drawn(self) -> bool:
        """Whether any row has steps on both sides (otherwise only `missing` says something)."""
        return any(r.ratio(FRACTIONS[0]) is not None for r in self.rows)

    def sentence(self) -> str:
        sides = f"{self.comparison.kind.title}: {self.comparison.first.group.slug} vs {self.comparison.second.group.slug}"
        if not self.drawn():
            return (f"Convergence ({sides}): not drawn: no (model, dataset) has a validation curve of at "
                    f"least {MIN_POINTS} points on both sides; missing: "
                    + ("; ".join(self.missing) or "an ok run on either side") + ".")
        counted = sum(r.ratio(FRACTIONS[0]) is not None for r in self.rows)
        medians = ", ".join(f"{self.median_ratio(f):.2f} to {100 * f:.0f}%" for f in FRACTIONS)
        return (f"Convergence ({sides}): steps from scratch / steps fine-tuned to reach a fraction of the "
                f"final validation score, median over {counted} (model, dataset) pair{'s' if counted > 1 else ''}: "
                f"{medians}.")


ConvergenceOutcome = Union[Convergence, NotDrawn]


def curve_of(record: Mapping[str, Any]) -> Optional[Curve]:
    """The run record's chosen validation curve; None for a record written before records carried it."""
    points = record.get(results.CHOSEN_CURVE)
    if not points:
        return None
    return Curve(tuple(sorted((int(step), float(score)) for step, score in points)))


def converge(outcomes: Sequence[ComparisonOutcome]) -> List[ConvergenceOutcome]:
    """The convergence of every fine-tune vs scratch comparison among `outcomes` (those the report
    drew, tfbench.report.comparisons.compare); one that could not be drawn stays a NotDrawn with its reason."""
    return [_pair(o) if isinstance(o, Comparison) else o for o in outcomes if o.kind in FINETUNE_VS_SCRATCH_KINDS]


def _pair(comparison: Comparison) -> Convergence:
    sides = {"finetune": comparison.first.group, "scratch": comparison.second.group}
    runs: Dict[str, Dict[Tuple[str, str, int], Mapping[str, Any]]] = {}
    for side, group in sides.items():
        runs[side] = {(r["experiment"]["model"], r["experiment"]["dataset"], r["experiment"].get("seed", 0)): r
                      for r in group.records if r["status"] == "ok"}
    rows, missing = [], []
    for cell in sorted(set(runs["finetune"]) | set(runs["scratch"])):
        model, dataset, seed = cell
        where = f"{model} on {dataset}" + (f" (seed {seed})" if seed else "")
        curves = {}
        for side, group in sides.items():
            record = runs[side].get(cell)
            curve = curve_of(record) if record is not None else None
            if record is None:
                missing.append(f"{SIDE_NAMES[side]} ({group.slug}): {where}: no ok run")
            elif curve is None:
                missing.append(f"{SIDE_NAMES[side]} ({group.slug}): {where}: its record has no validation "
                               "curve (written before run records carried one)")
            elif not curve.usable():
                missing.append(f"{SIDE_NAMES[side]} ({group.slug}): {where}: a curve of {len(curve.points)} "
                               f"point(s), fewer than {MIN_POINTS} (run with --eval_every below the steps)")
            curves[side] = curve
        if curves["finetune"] is not None and curves["scratch"] is not None:
            rows.append(Row(model, dataset, seed, curves["finetune"], curves["scratch"]))
    return Convergence(comparison, tuple(rows), tuple(missing))


def table_rows(outcome: Convergence, labels: Mapping[str, str]) -> List[Dict[str, str]]:
    """The report's table: finals in percent, steps (FIRST_POINT_MARK for an upper bound), ratios;
    a seed column only when some row is not seed 0."""
    def steps(curve: Curve, fraction: float) -> str:
        found = curve.steps_to(fraction)
        if found is None:
            return MISSING
        return (FIRST_POINT_MARK if curve.reached_at_first_point(fraction) else "") + f"{found:,}"

    rows = []
    for r in outcome.rows:
        row = {"model": labels.get(r.model, r.model), "dataset": r.dataset, "seed": str(r.seed),
               "final, fine-tuned (%)": percent(r.finetune.final),
               "final, from scratch (%)": percent(r.scratch.final)}
        for fraction in FRACTIONS:
            ratio = r.ratio(fraction)
            share = f"{100 * fraction:.0f}%"
            row.update({f"steps to {share}, fine-tuned": steps(r.finetune, fraction),
                        f"steps to {share}, from scratch": steps(r.scratch, fraction),
                        f"ratio at {share}": fixed(ratio, 2)})
        rows.append(row)
    if all(r.seed == 0 for r in outcome.rows):
        for row in rows:
            del row["seed"]
    return rows


def to_json(outcome: ConvergenceOutcome) -> Dict[str, Any]:
    """Every number of one outcome: curves, finals (fractions), steps and ratios per fraction."""
    if isinstance(outcome, NotDrawn):
        return {"drawn": False, "reason": outcome.reason}

    def side(curve: Curve) -> Dict[str, Any]:
        return {"curve": [list(p) for p in curve.points], "final": curve.final,
                "steps_to": {f"{f:g}": curve.steps_to(f) for f in FRACTIONS},
                "reached_at_first_point": {f"{f:g}": curve.reached_at_first_point(f) for f in FRACTIONS}}

    return {"drawn": outcome.drawn(), "finetune": outcome.comparison.first.group.slug,
            "scratch": outcome.comparison.second.group.slug, "min_points": MIN_POINTS,
            "fractions": list(FRACTIONS),
            "rows": [{"model": r.model, "dataset": r.dataset, "seed": r.seed, "finetune": side(r.finetune),
                      "scratch": side(r.scratch), "ratio": {f"{f:g}": r.ratio(f) for f in FRACTIONS}}
                     for r in outcome.rows],
            "median_ratio": {f"{f:g}": outcome.median_ratio(f) for f in FRACTIONS},
            "missing": list(outcome.missing)}


@dataclass(frozen=True)
class Convergences:
    """The report's section on the cheap approximation of the paper's Figure 8 (after
    tfbench.report.budgets' section on Figure 8 as the paper measured it): a table and a figure per
    fine-tune vs scratch pair with curves, else one line saying what is missing."""

    outcomes: Tuple[ConvergenceOutcome, ...]
    labels: Mapping[str, str]

    def figure_files(self) -> Dict[str, Convergence]:
        """The figure of each pair with curves to draw: convergence.png when there is one."""
        return pair_figure_files("convergence", [o for o in self.outcomes if isinstance(o, Convergence) and o.drawn()])

    def markdown(self) -> List[str]:
        figure_names = {id(o): name for name, o in self.figure_files().items()}
        parts = ["## Convergence, cheap approximation: points partway along one schedule (Figure 8)\n",
                 "The section above measures Figure 8 as the paper did, a complete schedule per budget. "
                 "Here, free with every run: points partway along each run's one cosine schedule, whose "
                 "learning rate has not decayed there, which is not the paper's quantity.\n"]
        return parts + pair_lines(self.outcomes, figure_names, lambda o: table_rows(o, self.labels), METHOD,
                                  "Convergence, cheap approximation")

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {name: figures.convergence_figure(o, self.labels) for name, o in self.figure_files().items()}
