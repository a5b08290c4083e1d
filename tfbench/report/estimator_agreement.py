"""How well each transferability estimator ranks networks as the probe and the fine-tune do.

The estimate regime records, per (network, dataset), scores computed from the frozen training
features alone (tfbench.estimators). They are worth something if they order networks as training
does. For every estimate protocol group and every target group on the same training-set size (the
probe on ImageNet features, the fine-tune), per dataset and across the networks that have both:
the weighted Kendall tau (scipy.stats.weightedtau: hyperbolic weights that count agreement among
the best networks most, as LogME's paper reports it) and Pearson r between the estimate and the
test score's log odds. Beside them:
- ImageNet top-1 as the predictor, the paper's own question and the baseline an estimator must beat;
- the target against itself from one seed to another (mean over pairs of seeds), where it has
  several seeds: the agreement its noise leaves room for.
"Overall" is the mean of a predictor's per-dataset values over the datasets where they are
defined (estimates are on each dataset's own scale, so they are never pooled across datasets).
An estimate averages the run's seeds; a target score is the table's mean over seeds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfbench.regimes.estimate import ESTIMATES
from tfbench.report.analysis import RANDOM_INIT, GroupAnalysis, ImageNetTop1
from tfbench.report.cells import markdown_table
from tfbench.report.correlation import MIN_MODELS, logit, pearson_r
from tfbench.report.protocol_groups import TRAIN_SUBSET_FIELD, ProtocolGroup

TARGET_REGIMES = ("probe", "finetune")
BASELINE = "imagenet_top1"
SEED_TO_SEED = "seed_to_seed"
LABELS = {"logme": "LogME", "leep": "LEEP", "nleep": "NLEEP", "h_score": "H-score",
          "shrunk_h_score": "H-score, shrunk", "knn_accuracy": "k-NN accuracy (leave-one-out)",
          BASELINE: "ImageNet top-1 (baseline)", SEED_TO_SEED: "target, seed against seed (noise)"}
METHOD = (
    "Per dataset, across networks: weighted Kendall tau (scipy.stats.weightedtau, hyperbolic "
    "weights on rank, the best networks counting most) and Pearson r between each predictor and the "
    "target's test score as log odds; n/a below {min_models} networks or when either side is "
    "constant. ImageNet top-1 is the baseline; 'seed against seed' correlates the target's scores "
    "of two seeds (mean over pairs of seeds), the agreement its noise allows. Overall is the mean "
    "over the datasets where a value is defined. k-NN accuracy is leave-one-out on the training "
    "split; LEEP needs the network's own ImageNet classifier.")


@dataclass(frozen=True)
class Agreement:
    """Weighted Kendall tau and Pearson r of a predictor with a target over n networks, or why not."""

    n: int
    tau: Optional[float] = None
    r: Optional[float] = None
    reason: Optional[str] = None

    def cell(self, value: Optional[float]) -> str:
        return f"n/a ({self.reason})" if value is None else f"{value:.2f}"

    def to_json(self) -> Dict[str, Any]:
        return {"n": self.n, "weighted_tau": self.tau, "pearson_r": self.r, "reason": self.reason}


def agreement(x: Sequence[float], y: Sequence[float]) -> Agreement:
    """Weighted tau and r of two sequences over the same networks."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < MIN_MODELS:
        return Agreement(len(x), reason=f"{len(x)} network{'s' * (len(x) != 1)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return Agreement(len(x), reason="constant")
    return Agreement(len(x), float(stats.weightedtau(x, y).statistic), float(pearson_r(x, y)))


def mean_agreement(agreements: Sequence[Agreement]) -> Agreement:
    """The mean tau and r over the defined agreements (over datasets, or over pairs of seeds)."""
    defined = [a for a in agreements if a.tau is not None]
    if not defined:
        reasons = sorted({a.reason for a in agreements if a.reason})
        return Agreement(0, reason="; ".join(reasons) or "nothing to compare")
    return Agreement(len(defined), float(np.mean([a.tau for a in defined])),
                     float(np.mean([a.r for a in defined])))


@dataclass(frozen=True)
class TargetAgreement:
    """Every predictor's agreement with one target group, per dataset and overall."""

    estimates: ProtocolGroup
    target: GroupAnalysis
    datasets: Tuple[str, ...]
    cells: Mapping[Tuple[str, str], Agreement]  # (predictor, dataset) -> agreement

    def predictors(self) -> List[str]:
        return [p for p in (*ESTIMATES, BASELINE, SEED_TO_SEED) if any((p, d) in self.cells for d in self.datasets)]

    def overall(self, predictor: str) -> Agreement:
        return mean_agreement([self.cells[(predictor, d)] for d in self.datasets if (predictor, d) in self.cells])

    def title(self) -> str:
        return f"Estimates `{self.estimates.slug}` against {self.target.title()} (`{self.target.group.slug}`)"

    def rows(self) -> List[Dict[str, str]]:
        rows = []
        for predictor in self.predictors():
            row = {"predictor": LABELS.get(predictor, predictor)}
            for dataset in self.datasets:
                cell = self.cells.get((predictor, dataset), Agreement(0, reason="none"))
                row[f"{dataset} tau_w"], row[f"{dataset} r"] = cell.cell(cell.tau), cell.cell(cell.r)
            overall = self.overall(predictor)
            row["overall tau_w"], row["overall r"] = overall.cell(overall.tau), overall.cell(overall.r)
            rows.append(row)
        return rows

    def to_json(self) -> Dict[str, Any]:
        return {"estimates": self.estimates.slug, "target": self.target.group.slug,
                "target_regime": self.target.group.regime, "datasets": list(self.datasets),
                "per_dataset": {p: {d: self.cells[(p, d)].to_json() for d in self.datasets if (p, d) in self.cells}
                                for p in self.predictors()},
                "overall": {p: self.overall(p).to_json() for p in self.predictors()}}


def estimates_table(group: ProtocolGroup) -> Dict[Tuple[str, str, str], float]:
    """(estimator, model, dataset) -> the estimate, averaged over the ok runs' seeds."""
    values: Dict[Tuple[str, str, str], List[float]] = {}
    for record in group.records:
        if record["status"] != "ok":
            continue
        experiment = record["experiment"]
        for name, value in (record.get("estimates") or {}).items():
            if value is not None:
                values.setdefault((name, experiment["model"], experiment["dataset"]), []).append(float(value))
    return {key: float(np.mean(found)) for key, found in values.items()}


def not_applicable(group: ProtocolGroup) -> Dict[str, Dict[str, List[str]]]:
    """estimator -> reason -> the "model on dataset" runs that recorded it as not applicable."""
    found: Dict[str, Dict[str, List[str]]] = {}
    for record in group.records:
        experiment = record["experiment"]
        for name, reason in ((record.get("details") or {}).get("not_applicable") or {}).items():
            found.setdefault(name, {}).setdefault(reason, []).append(
                f"{experiment['model']} on {experiment['dataset']}")
    return found


def seed_to_seed(target: GroupAnalysis, dataset: str) -> Agreement:
    """The target's agreement with itself between two seeds, averaged over pairs of seeds."""
    table = target.table
    by_seed: Dict[int, Dict[str, float]] = {}
    for model in table.models:
        for seed, score in zip(table.seeds.get((model, dataset), ()), table.seed_scores.get((model, dataset), ())):
            by_seed.setdefault(seed, {})[model] = score
    if len(by_seed) < 2:
        return Agreement(0, reason="one seed")
    pairs = []
    for first, second in itertools.combinations(sorted(by_seed), 2):
        models = sorted(by_seed[first].keys() & by_seed[second].keys())
        pairs.append(agreement(logit([by_seed[first][m] for m in models]),
                               logit([by_seed[second][m] for m in models])))
    return mean_agreement(pairs)


def _targets_of(estimates: ProtocolGroup, targets: Sequence[GroupAnalysis]) -> List[GroupAnalysis]:
    """Probe (ImageNet features) and fine-tune groups on the estimates' training-set size."""
    return [t for t in targets if t.group.regime in TARGET_REGIMES and t.group.settings.get("init") != RANDOM_INIT
            and t.group.key.get(TRAIN_SUBSET_FIELD) == estimates.key.get(TRAIN_SUBSET_FIELD)]


def analyze(estimate_groups: Sequence[ProtocolGroup], targets: Sequence[GroupAnalysis],
            top1: Mapping[str, ImageNetTop1]) -> "EstimatorAgreement":
    """Every (estimate group, target group) pairing, per dataset both have."""
    pairings = []
    for estimates in estimate_groups:
        values = estimates_table(estimates)
        estimated = {dataset for _, _, dataset in values}
        for target in _targets_of(estimates, targets):
            table = target.table
            datasets = tuple(d for d in table.datasets if d in estimated)
            cells = {}
            for dataset in datasets:
                scored = [m for m in table.models if table.score(m, dataset) is not None]
                for predictor in (*ESTIMATES, BASELINE):
                    x_of: Callable[[str], Optional[float]] = (
                        (lambda m: top1[m].value if m in top1 else None) if predictor == BASELINE
                        else (lambda m, p=predictor: values.get((p, m, dataset))))
                    models = [m for m in scored if x_of(m) is not None]
                    if predictor != BASELINE and not models:
                        continue  # an estimator that applies to none of the networks here
                    cells[(predictor, dataset)] = agreement([x_of(m) for m in models],
                                                            logit([table.score(m, dataset) for m in models]))
                cells[(SEED_TO_SEED, dataset)] = seed_to_seed(target, dataset)
            pairings.append(TargetAgreement(estimates, target, datasets, cells))
    return EstimatorAgreement(tuple(estimate_groups), tuple(pairings))


@dataclass(frozen=True)
class EstimatorAgreement:
    """The report's section on the estimate regime."""

    estimate_groups: Tuple[ProtocolGroup, ...]
    pairings: Tuple[TargetAgreement, ...]

    def markdown(self) -> List[str]:
        parts = ["## Transferability estimators against the probe and the fine-tune\n"]
        if not self.estimate_groups:
            return parts + ["No estimate runs (python -m tfbench.estimate, or the sweep's "
                            "--regimes=...,estimate).\n"]
        if not self.pairings:
            return parts + ["Not drawn: no probe (ImageNet features) or fine-tune runs on the estimates' "
                            "training-set size.\n"]
        parts.append(METHOD.format(min_models=MIN_MODELS) + "\n")
        for pairing in self.pairings:
            parts += [f"### {pairing.title()}\n", markdown_table(pairing.rows())]
        for group in self.estimate_groups:
            parts += [f"- Not applicable in `{group.slug}`: {LABELS.get(name, name)} for {', '.join(runs)} ({reason})."
                      for name, reasons in not_applicable(group).items() for reason, runs in reasons.items()]
        return parts + [""]

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {}

    def to_json(self) -> Dict[str, Any]:
        return {"method": METHOD.format(min_models=MIN_MODELS),
                "estimate_groups": [g.slug for g in self.estimate_groups],
                "not_applicable": {g.slug: not_applicable(g) for g in self.estimate_groups},
                "pairings": [p.to_json() for p in self.pairings]}
