"""The paper's Figure 8 as the paper measured it: test score against training steps, each point a
complete schedule of its own.

Kornblith, Shlens & Le (2019, Figure 8) train an independent model at each budget, fine-tuned and
from scratch, and plot test accuracy against steps. A sweep run with --convergence_budgets leaves
those models' records beside each fine-tune and scratch run (tfbench.regimes.budgets:
`<run dir>/budgets/steps_<N>.json`, the run's chosen hyperparameters retrained on trainval for N
steps, test scored once); the run itself is the point at its own train_steps. Runs pair as the
fine-tune vs scratch comparisons pair them (tfbench.report.comparisons), per (model, dataset, seed).

tfbench's choice, recorded in every budget record (`hyperparameters_source`): each budget retrains
the run's choice at its full budget; the paper optimised the hyperparameters again at each budget.
A budget record made for another choice than the run's current one (the run was redone since) does
not enter. The partial-curve view (tfbench.report.convergence) remains as a cheap approximation.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from tfbench import results
from tfbench.experiment import identity
from tfbench.report.cells import MISSING, percent
from tfbench.report.comparisons import (FINETUNE_VS_SCRATCH_KINDS, Comparison, ComparisonOutcome, NotDrawn,
                                       pair_figure_files, pair_lines)
from tfbench.report.convergence import SIDE_NAMES

RUN_MARK = "*"  # a score that is the run's own retrain at its train_steps, not a budget record
SIDES = ("finetune", "scratch")
METHOD = (
    "Each point is a network trained on train+val for a complete schedule of that many steps (warm-up "
    "for the run's fraction of its steps, cosine decay to zero at the last step), test scored once. "
    "The hyperparameters at every budget are the run's choice at its full budget (tfbench's choice; the "
    "paper optimised them again at each budget, so a short budget here may score below the paper's). "
    f"{RUN_MARK} marks the run itself, at its own train_steps.")


@dataclass(frozen=True)
class Point:
    steps: int
    score: float
    is_run: bool  # the run's own retrain, not a budget record


@dataclass(frozen=True)
class Row:
    model: str
    dataset: str
    seed: int
    finetune: Tuple[Point, ...]  # by steps
    scratch: Tuple[Point, ...]

    def side(self, side: str) -> Tuple[Point, ...]:
        return getattr(self, side)

    def shared(self) -> List[Tuple[int, float, float]]:
        """(steps, fine-tuned, from scratch) at every budget both sides trained."""
        scratch = {p.steps: p.score for p in self.scratch}
        return [(p.steps, p.score, scratch[p.steps]) for p in self.finetune if p.steps in scratch]


@dataclass(frozen=True)
class Budgets:
    """The budget points of one compatible pair of fine-tune and scratch groups."""

    comparison: Comparison
    rows: Tuple[Row, ...]  # cells with a budget record on both sides
    missing: Tuple[str, ...]

    def drawn(self) -> bool:
        return bool(self.rows)

    def title(self) -> str:
        return (f"{self.comparison.kind.title}: {self.comparison.first.group.slug} vs "
                f"{self.comparison.second.group.slug}")

    def sentence(self) -> str:
        if not self.drawn():
            return (f"Convergence budgets ({self.title()}): not drawn: no (model, dataset) has a budget record "
                    "on both sides (run the sweep with --convergence_budgets=STEPS,...); missing: "
                    + ("; ".join(self.missing) or "an ok run on either side") + ".")
        shared = [point for row in self.rows for point in row.shared()]
        if not shared:
            return (f"Convergence budgets ({self.title()}): {len(self.rows)} (model, dataset) pair(s), "
                    "no budget trained on both sides: compare the curves.")
        wins = sum(finetuned > scratch for _, finetuned, scratch in shared)
        gap = 100.0 * float(np.mean([finetuned - scratch for _, finetuned, scratch in shared]))
        return (f"Convergence budgets ({self.title()}): at the {len(shared)} (model, dataset, budget) points "
                f"both sides trained, fine-tuned scored higher at {wins} (mean {gap:+.1f} points).")


BudgetsOutcome = Union[Budgets, NotDrawn]


def records_by_run(output_dir: str) -> Dict[str, List[Mapping[str, Any]]]:
    """The readable budget records under output_dir, by their run's identity (`_key`)."""
    found: Dict[str, List[Mapping[str, Any]]] = {}
    for folder in results.run_folders(output_dir) if output_dir else ():
        for path in sorted(glob.glob(os.path.join(folder, results.BUDGETS_DIR, "steps_*.json"))):
            record = results.read_record(path, warn_if_damaged=True, fields=results.RUN_FIELDS)
            if record is not None:
                found.setdefault(_key(record), []).append(record)
    return found


def _key(record: Mapping[str, Any]) -> str:
    return json.dumps(identity(record["experiment"]), sort_keys=True)


def analyze(outcomes: Sequence[ComparisonOutcome], output_dir: str) -> List[BudgetsOutcome]:
    """The budgets of every fine-tune vs scratch comparison among `outcomes`; one that could not be
    drawn stays a NotDrawn with its reason."""
    relevant = [o for o in outcomes if o.kind in FINETUNE_VS_SCRATCH_KINDS]
    budget_records = records_by_run(output_dir) if any(isinstance(o, Comparison) for o in relevant) else {}
    return [_pair(o, budget_records) if isinstance(o, Comparison) else o for o in relevant]


def _points(run: Mapping[str, Any], budget_records: Sequence[Mapping[str, Any]]) -> Tuple[Point, ...]:
    """The run's own point and those of its ok budget records made for its current choice."""
    run_steps = int((run.get("training") or {}).get("train_steps") or run["experiment"]["settings"]["train_steps"])
    points = {run_steps: Point(run_steps, float(run["test_score"]), True)}
    for record in budget_records:
        if (record["status"] == "ok" and record.get("test_score") is not None
                and record.get("hyperparameters") == run.get("hyperparameters")):
            points.setdefault(int(record["budget_steps"]), Point(int(record["budget_steps"]),
                                                                float(record["test_score"]), False))
    return tuple(points[steps] for steps in sorted(points))


def _pair(comparison: Comparison, budget_records: Mapping[str, List[Mapping[str, Any]]]) -> Budgets:
    groups = {"finetune": comparison.first.group, "scratch": comparison.second.group}
    runs = {side: {(r["experiment"]["model"], r["experiment"]["dataset"], r["experiment"].get("seed", 0)): r
                   for r in group.records if r["status"] == "ok"} for side, group in groups.items()}
    rows, missing = [], []
    for cell in sorted(set(runs["finetune"]) | set(runs["scratch"])):
        model, dataset, seed = cell
        where = f"{model} on {dataset}" + (f" (seed {seed})" if seed else "")
        points: Dict[str, Optional[Tuple[Point, ...]]] = {}
        for side, group in groups.items():
            run = runs[side].get(cell)
            records = budget_records.get(_key(run), ()) if run is not None else ()
            points[side] = _points(run, records) if records else None
            if run is None:
                missing.append(f"{SIDE_NAMES[side]} ({group.slug}): {where}: no ok run")
            elif points[side] is None or len(points[side]) < 2:
                missing.append(f"{SIDE_NAMES[side]} ({group.slug}): {where}: no ok budget record for the "
                               "run's choice")
        if all(p is not None and len(p) >= 2 for p in points.values()):
            rows.append(Row(model, dataset, seed, points["finetune"], points["scratch"]))
    return Budgets(comparison, tuple(rows), tuple(missing))


def table_rows(outcome: Budgets, labels: Mapping[str, str]) -> List[Dict[str, str]]:
    """One line per (model, dataset, steps): each side's test score (%), RUN_MARK on the run's own;
    a seed column only when some row is not seed 0."""
    lines = []
    for row in outcome.rows:
        by_side = {side: {p.steps: p for p in row.side(side)} for side in SIDES}
        for steps in sorted(set(by_side["finetune"]) | set(by_side["scratch"])):
            line = {"model": labels.get(row.model, row.model), "dataset": row.dataset, "seed": str(row.seed),
                    "steps": f"{steps:,}"}
            for side in SIDES:
                point = by_side[side].get(steps)
                line[f"{SIDE_NAMES[side]} (%)"] = (MISSING if point is None else
                                                  percent(point.score) + (RUN_MARK if point.is_run else ""))
            lines.append(line)
    if all(row.seed == 0 for row in outcome.rows):
        for line in lines:
            del line["seed"]
    return lines


def to_json(outcome: BudgetsOutcome) -> Dict[str, Any]:
    if isinstance(outcome, NotDrawn):
        return {"drawn": False, "reason": outcome.reason}

    def side(points: Sequence[Point]) -> List[Dict[str, Any]]:
        return [{"steps": p.steps, "test_score": p.score, "is_run": p.is_run} for p in points]

    return {"drawn": outcome.drawn(), "finetune": outcome.comparison.first.group.slug,
            "scratch": outcome.comparison.second.group.slug, "method": METHOD,
            "rows": [{"model": r.model, "dataset": r.dataset, "seed": r.seed, "finetune": side(r.finetune),
                      "scratch": side(r.scratch)} for r in outcome.rows],
            "missing": list(outcome.missing)}


@dataclass(frozen=True)
class ConvergenceBudgets:
    """The report's section on the paper's Figure 8 as the paper measured it: a table and a figure
    per fine-tune vs scratch pair with budget records, else one line saying what is missing (the
    cheap approximation follows in tfbench.report.convergence's section)."""

    outcomes: Tuple[BudgetsOutcome, ...]
    labels: Mapping[str, str]

    def figure_files(self) -> Dict[str, Budgets]:
        """The figure of each pair with budgets to draw: convergence_budgets.png when there is one."""
        return pair_figure_files("convergence_budgets", [o for o in self.outcomes if isinstance(o, Budgets) and o.drawn()])

    def markdown(self) -> List[str]:
        figure_names = {id(o): name for name, o in self.figure_files().items()}
        parts = ["## Convergence: fine-tuned vs from scratch (the paper's Figure 8)\n",
                 "The paper (Figure 8): networks fine-tuned from ImageNet converge faster than the same "
                 "networks trained from scratch; it trains separate models, each a complete schedule, at "
                 "each budget. Below, the same design: the sweep's --convergence_budgets.\n"]
        return parts + pair_lines(self.outcomes, figure_names, lambda o: table_rows(o, self.labels), METHOD,
                                  "Convergence, each budget a complete schedule")

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {name: figures.budgets_figure(o, self.labels) for name, o in self.figure_files().items()}
