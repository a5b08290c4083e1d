"""Which network is best on each dataset, and which others are not significantly worse than it.

The paper (Kornblith, Shlens & Le 2019) marks, per dataset, the best network and those "not
significantly different from the best (p > 0.05)"; its test, as SimCLR (appendix B.8) restates it,
is a two-sided paired permutation test on per-example outcomes (tfbench.report.permutation), the
default here (PERMUTATION):

- per protocol group (tfbench.report.protocol_groups) and dataset, the networks whose ok runs stored
  verified test predictions (tfbench.predictions) on the same test examples take part;
- the best network has the highest test score (the mean over seeds when it has several);
- each other network against the best: the permutation test's two-sided p (exact McNemar for
  top-1 of single runs), significantly worse when p < ALPHA.

Each network's CONFIDENCE interval, and the older test, come from a paired bootstrap (BOOTSTRAP,
tfbench's own, kept available and labelled; one-sided, it flags more differences than the paper's):
- RESAMPLES resamples of the test examples with replacement, the same resample for every network
  (paired: the examples' difficulty, shared by all networks, cancels out of each difference), and
  on each one every network's metric recomputed by tfbench.metrics (top-1, mean per-class
  accuracy or 11-point mAP; the mean over seeds);
- for each other network, d = best - other on each resample; its one-sided p-value is
  (1 + #{d <= 0}) / (1 + RESAMPLES), and it is significantly worse when p < ALPHA. The report also
  gives the (100 * ALPHA)th percentile of d (the one-sided lower bound: above 0 when significantly
  worse, up to ties) and each network's CONFIDENCE percentile interval of its score.

Runs without predictions (records written before runs stored them, or a file that failed
verification) and runs on other test examples are listed as not compared, never guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from tfbench import predictions, results
from tfbench.predictions import Predictions
from tfbench.report import permutation
from tfbench.report.cells import MISSING, markdown_table, percent
from tfbench.report.protocol_groups import ProtocolGroup

RESAMPLES = 1000
ALPHA = 0.05
PERMUTATION = "permutation"
BOOTSTRAP = "bootstrap"
TESTS = (PERMUTATION, BOOTSTRAP)
CONFIDENCE = 0.95
NO_PREDICTIONS = "no verified test predictions stored"


@dataclass(frozen=True)
class Rival:
    """A network compared with the best: fractions; `difference` is best - this on the whole
    test set, `lower_bound` the one-sided bootstrap bound of that difference, `p_value` the
    test's and `method` how it was computed."""

    model: str
    score: float
    interval: Tuple[float, float]
    difference: float
    lower_bound: float
    p_value: float
    method: str

    @property
    def significantly_worse(self) -> bool:
        return self.p_value < ALPHA


@dataclass(frozen=True)
class DatasetBest:
    """One dataset of one group: the best network (None when no run could be compared), the
    others against it, and the networks not compared with the reason."""

    dataset: str
    metric: str
    examples: int
    best: Optional[str]
    score: Optional[float]
    interval: Optional[Tuple[float, float]]
    rivals: Tuple[Rival, ...]  # by score, best first
    missing: Mapping[str, str]  # model -> why it was not compared

    def not_significantly_worse(self) -> List[Rival]:
        return [r for r in self.rivals if not r.significantly_worse]

    def significantly_worse(self) -> List[Rival]:
        return [r for r in self.rivals if r.significantly_worse]

    def to_json(self) -> Dict[str, Any]:
        return {"metric": self.metric, "examples": self.examples, "best": self.best, "score": self.score,
                "interval": list(self.interval) if self.interval else None,
                "others": [{"model": r.model, "score": r.score, "interval": list(r.interval),
                            "difference": r.difference, "lower_bound": r.lower_bound,
                            "p_value": r.p_value, "test": r.method,
                            "significantly_worse": r.significantly_worse}
                           for r in self.rivals],
                "not_compared": dict(self.missing)}


def percentile_interval(values: np.ndarray) -> Tuple[float, float]:
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_scores(runs: Mapping[str, Sequence[Predictions]], resamples: int = RESAMPLES,
                     seed: int = 0) -> Dict[str, np.ndarray]:
    """Each network's score (the mean over its runs) on `resamples` paired resamples of the test
    examples, drawn by scipy.stats.bootstrap: the same resample for every network. All runs must
    hold the same examples."""
    examples = {len(run) for seeds in runs.values() for run in seeds}
    if len(examples) != 1:
        raise ValueError(f"paired resampling needs runs on the same examples, got sizes {sorted(examples)}")
    (count,) = examples
    models = list(runs)

    def scores(index: np.ndarray) -> np.ndarray:
        return np.array([np.mean([run.score(index) for run in runs[model]]) for model in models])

    distribution = stats.bootstrap((np.arange(count),), scores, n_resamples=resamples, batch=100,
                                   vectorized=False, method="percentile", rng=seed).bootstrap_distribution
    return {model: distribution[i] for i, model in enumerate(models)}


@dataclass(frozen=True)
class Test:
    """Which test compares each network with the best, and its sample counts."""

    name: str = PERMUTATION
    samples: int = permutation.SAMPLES  # permutations (linear metrics)
    map_samples: int = permutation.MAP_SAMPLES  # permutations for 11-point mAP
    resamples: int = RESAMPLES  # bootstrap: intervals, and the bootstrap test


def compare(dataset: str, metric: str, runs: Mapping[str, Sequence[Predictions]],
            missing: Optional[Mapping[str, str]] = None, test: Test = Test(),
            seed: int = 0) -> DatasetBest:
    """The best of `runs` (model -> its runs' predictions) and every other network against it."""
    resamples = test.resamples
    missing = dict(missing or {})
    full = {model: float(np.mean([run.score() for run in seeds])) for model, seeds in runs.items()}
    ranked = sorted(full, key=lambda model: (-full[model], model))
    if not ranked:
        return DatasetBest(dataset, metric, 0, None, None, None, (), missing)
    best = ranked[0]
    reference = runs[best][0].labels
    paired = {}
    for model in ranked:
        if all(run.labels.shape == reference.shape and np.array_equal(run.labels, reference)
               for run in runs[model]):
            paired[model] = runs[model]
        else:
            missing[model] = f"its test examples differ from those of {best}"
    resampled = bootstrap_scores(paired, resamples, seed)
    rivals = []
    for model in [m for m in ranked if m in paired and m != best]:
        if test.name == PERMUTATION and metric == "map11" and len(paired[model]) != len(paired[best]):
            missing[model] = (f"the mAP permutation test pairs runs seed by seed: {len(paired[model])} "
                              f"run(s) against {len(paired[best])} of {best}")
            continue
        difference = resampled[best] - resampled[model]
        if test.name == BOOTSTRAP:
            p_value, method = float((1 + np.sum(difference <= 0)) / (1 + resamples)), BOOTSTRAP
        else:
            samples = test.map_samples if metric == "map11" else test.samples
            p_value = permutation.p_value(metric, paired[best], paired[model], samples, seed)
            method = permutation.method(metric, paired[best], paired[model], samples)
        rivals.append(Rival(model, full[model], percentile_interval(resampled[model]),
                            full[best] - full[model],
                            float(np.percentile(difference, 100.0 * ALPHA)), p_value, method))
    return DatasetBest(dataset, metric, len(reference), best, full[best],
                       percentile_interval(resampled[best]), tuple(rivals), missing)


def prediction_folders(output_dir: str) -> Dict[str, str]:
    """The run folder of each stored predictions file under output_dir, by the digest its record
    names: how a record read elsewhere finds its file, wherever the runs moved. Runs with
    byte-identical predictions share a digest, and either file serves both."""
    folders = {}
    for folder in results.run_folders(output_dir) if output_dir else ():
        record = results.read_record(os.path.join(folder, results.RECORD_FILE))
        if record is not None and os.path.exists(os.path.join(folder, predictions.PREDICTIONS_FILE)):
            digest = (record.get(predictions.RECORD_KEY) or {}).get("sha256")
            if digest:
                folders.setdefault(digest, folder)
    return folders


def group_best_networks(group: ProtocolGroup, folders: Mapping[str, str], test: Test = Test(),
                  seed: int = 0) -> Tuple[DatasetBest, ...]:
    """Per dataset of the group's ok runs: the best network and the others against it."""
    by_dataset: Dict[str, Dict[str, List[Mapping[str, Any]]]] = {}
    metrics = {}
    for record in group.records:
        if record["status"] == "ok":
            experiment = record["experiment"]
            by_dataset.setdefault(experiment["dataset"], {}).setdefault(experiment["model"], []).append(record)
            metrics[experiment["dataset"]] = record["metric"]
    verdicts = []
    for dataset in sorted(by_dataset):
        runs, missing = {}, {}
        for model, records in sorted(by_dataset[dataset].items()):
            loaded = [_read(record, folders) for record in records]
            if all(p is not None for p in loaded):
                runs[model] = loaded
            else:
                missing[model] = NO_PREDICTIONS
        verdicts.append(compare(dataset, metrics[dataset], runs, missing, test, seed))
    return tuple(verdicts)


def _read(record: Mapping[str, Any], folders: Mapping[str, str]) -> Optional[Predictions]:
    digest = (record.get(predictions.RECORD_KEY) or {}).get("sha256")
    if digest not in folders:
        return None
    return predictions.read(folders[digest], record)


def analyze(groups: Sequence[ProtocolGroup], output_dir: str, test: Test = Test(),
            seed: int = 0) -> Dict[str, Tuple[DatasetBest, ...]]:
    """Every group's best networks, by group slug, from the predictions stored under output_dir."""
    folders = prediction_folders(output_dir)
    return {group.slug: group_best_networks(group, folders, test, seed) for group in groups}


def method_note(test: Test, seed: int) -> str:
    intervals = (f"Intervals are {100 * CONFIDENCE:.0f}% percentile intervals of a paired bootstrap over "
                 f"test examples ({test.resamples} resamples, seed {seed}).")
    if test.name == BOOTSTRAP:
        return (f"Best network per dataset, by test score; the others are compared with it by a paired "
                f"bootstrap over test examples ({test.resamples} resamples with replacement, the same for "
                f"every network, seed {seed}; the metric recomputed on each). A network is significantly "
                f"worse when the one-sided p-value, (1 + #resamples where it is not behind the best) / "
                f"(1 + resamples), is below {ALPHA:g}. This test is tfbench's, not the paper's (which is "
                f"the permutation test, --significance_test=permutation); being one-sided it flags more "
                f"differences. " + intervals)
    return (f"Best network per dataset, by test score; the others are compared with it by the paper's "
            f"test: a two-sided paired permutation test on per-example outcomes (each example's two "
            f"outputs swapped at random, the metric recomputed; {test.samples:,} samples, "
            f"{test.map_samples:,} for 11-point mAP (tfbench's choice, for time), seed {seed}; for "
            f"top-1 of single runs the exact McNemar test, to which it is equivalent). A network is "
            f"not significantly different from the best when p >= {ALPHA:g}. " + intervals)


def rows(verdicts: Sequence[DatasetBest], labels: Mapping[str, str]) -> List[Dict[str, str]]:
    """One row per dataset: the best network, those not significantly worse (with p), the others
    and the networks not compared."""
    def named(model: str) -> str:
        return labels.get(model, model)

    out = []
    for verdict in verdicts:
        best = MISSING if verdict.best is None else f"{named(verdict.best)} ({percent(verdict.score)})"
        out.append({
            "dataset": verdict.dataset, "metric": verdict.metric, "best (%)": best,
            f"not significantly worse (p >= {ALPHA:g})": ", ".join(
                f"{named(r.model)} ({percent(r.score)}, p={r.p_value:.2f})"
                for r in verdict.not_significantly_worse()) or "none",
            "significantly worse": ", ".join(named(r.model) for r in verdict.significantly_worse()) or "none",
            "not compared": "; ".join(
                f"{', '.join(named(m) for m in models)}: {why}"
                for why, models in _by_reason(verdict.missing).items()) or "none"})
    return out


def _by_reason(missing: Mapping[str, str]) -> Dict[str, List[str]]:
    grouped: Dict[str, List[str]] = {}
    for model, why in sorted(missing.items()):
        grouped.setdefault(why, []).append(model)
    return grouped


@dataclass(frozen=True)
class BestNetworks:
    """The report's section: per group, the best network per dataset and those not significantly
    worse, with a figure for each group that compared a dataset."""

    verdicts: Mapping[str, Tuple[DatasetBest, ...]]  # by group slug
    titles: Mapping[str, str]  # by group slug
    labels: Mapping[str, str]
    test: Test
    seed: int

    def figure_files(self) -> Dict[str, str]:
        """Group slug -> the file of its figure, for groups with a dataset compared."""
        return {slug: f"best_networks_{slug}.png" for slug, verdicts in self.verdicts.items()
                if any(v.best is not None for v in verdicts)}

    def markdown(self) -> List[str]:
        parts = ["## Best network per dataset, and those not significantly worse\n",
                 method_note(self.test, self.seed) + "\n"]
        figures_by_slug = self.figure_files()
        for slug, verdicts in self.verdicts.items():
            parts += [f"### {self.titles[slug]} (`{slug}`)\n", markdown_table(rows(verdicts, self.labels))]
            if slug in figures_by_slug:
                parts.append(f"![Best network per dataset, {slug}]({figures_by_slug[slug]})\n")
        return parts

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {name: figures.best_networks_figure(self.titles[slug], self.verdicts[slug], self.labels)
                for slug, name in self.figure_files().items()}
