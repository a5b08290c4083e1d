"""One protocol's analysis: its score table, each model's mean log odds and their r with ImageNet.

Following Kornblith, Shlens & Le (2019), section 3 and Figure 1, within one protocol group
(tfbench.report.protocol_groups):
  - each model's mean log odds over the datasets of the group's table. Only models with an ok run
    on every one of those datasets enter: means over different sets of datasets are not
    comparable. The others are listed with the datasets they lack. Several seeds of one (model,
    dataset) count as their mean score (r is computed on those means); their spread is shown as
    the sample standard deviation (ddof=1) of the scores and, per model, of the mean log odds of
    each seed that ran every dataset of the table;
  - Pearson r between ImageNet top-1 accuracy and that mean, over the models whose ImageNet top-1
    is known. As in the paper's Figure 1, x is the top-1 itself (not its log odds);
  - the same r per dataset: ImageNet top-1 against that dataset's log odds.
A model's ImageNet top-1 comes from its records (a measured value before a published one), else
from the backbone registry; the report says which it used.
The report's sections on these are here too: each group's tables (GroupTables), and every group's
r with Figure 1 (Correlations).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfbench import protocol
from tfbench.experiment import path_component
from tfbench.report.cells import fixed, markdown_table, percent
from tfbench.report.correlation import (BOOTSTRAP_RESAMPLES, CONFIDENCE, LOGIT_EPS, MIN_MODELS, Correlation, correlate,
                                        logit)
from tfbench.report.protocol_groups import TRAIN_SUBSET_FIELD, ProtocolGroup

REGISTRY_SOURCE = "published; tfbench's backbone registry"
REGIME_TITLES = {"probe": "Linear probe on fixed features", "finetune": "Fine-tuned",
                 "scratch": "Trained from scratch"}
RANDOM_INIT = "random"
EDGE_MARK = "\u2020"  # dagger
FIGURE_FILE = "figure1.png"


@dataclass(frozen=True)
class ImageNetTop1:
    """A model's ImageNet top-1 (a fraction, None if unknown) and where it comes from."""

    value: Optional[float]
    source: str
    measured: bool

    def kind(self) -> str:
        if self.value is None:
            return "unknown"
        return "measured" if self.measured else "published"


def imagenet_top1_of_models(records: Sequence[Mapping[str, Any]],
                            fallback: Callable[[str], Optional[float]],
                            measured: Callable[[str], Optional[ImageNetTop1]] = lambda model: None
                            ) -> Dict[str, ImageNetTop1]:
    """Each model's top-1: a measurement of its weights available now (`measured(model)`: one made
    after its runs finished counts too), else a value its records state (a measured one before a
    published one; among equals, the latest record's), else `fallback(model)` (records written
    before they stated it)."""
    models = sorted({r["experiment"]["model"] for r in records})
    found = {model: top1 for model, top1 in ((m, measured(m)) for m in models) if top1 is not None}
    measured_now = set(found)
    for record in sorted(records, key=lambda r: r.get("finished_at") or ""):
        stated = record.get("imagenet_top1") or {}
        model = record["experiment"]["model"]
        if stated.get("value") is None or model in measured_now:
            continue
        top1 = ImageNetTop1(float(stated["value"]), stated.get("source") or "not stated",
                            bool(stated.get("measured")))
        if model not in found or top1.measured or not found[model].measured:
            found[model] = top1
    for model in sorted(set(models) - found.keys()):
        value = fallback(model)
        found[model] = ImageNetTop1(value, REGISTRY_SOURCE if value is not None else "none known", False)
    return found


def display_names(records: Sequence[Mapping[str, Any]]) -> Dict[str, str]:
    """model -> the name figures and tables show: a display name a record gives, else the model."""
    names: Dict[str, str] = {}
    for record in records:
        model = record["experiment"]["model"]
        given = record["experiment"].get("display_name") or record.get("model_display_name")
        if given or model not in names:
            names[model] = given or names.get(model, model)
    return names


@dataclass(frozen=True)
class ScoreTable:
    """Test scores (fractions) of one protocol's ok runs: model x dataset.

    `seeds` lists the seeds averaged into each score, and `seed_scores` their scores in that
    order; `grid_edges` says, per score, which chosen hyperparameter sat at an end of its grid
    ({"learning_rate": "largest", ...}).
    """

    datasets: Tuple[str, ...]
    metrics: Mapping[str, str]  # dataset -> metric name
    models: Tuple[str, ...]
    scores: Mapping[Tuple[str, str], float]  # (model, dataset) -> test score
    seeds: Mapping[Tuple[str, str], Tuple[int, ...]]
    grid_edges: Mapping[Tuple[str, str], Mapping[str, str]]
    seed_scores: Mapping[Tuple[str, str], Tuple[float, ...]] = field(default_factory=dict)

    def score(self, model: str, dataset: str) -> Optional[float]:
        return self.scores.get((model, dataset))

    def sd(self, model: str, dataset: str) -> Optional[float]:
        """Sample standard deviation (ddof=1) of the cell's scores over seeds; None below two."""
        values = self.seed_scores.get((model, dataset), ())
        return float(np.std(values, ddof=1)) if len(values) >= 2 else None

    def seed_sd_of_mean_log_odds(self, model: str) -> Optional[float]:
        """Sample sd (ddof=1) over seeds of the model's mean log odds over the table's datasets,
        over the seeds that ran every dataset; None below two such seeds."""
        by_seed = [dict(zip(self.seeds.get((model, d), ()), self.seed_scores.get((model, d), ())))
                   for d in self.datasets]
        common = sorted(set.intersection(*(set(s) for s in by_seed))) if by_seed else []
        if len(common) < 2:
            return None
        means = [float(np.mean(logit([scores[seed] for scores in by_seed]))) for seed in common]
        return float(np.std(means, ddof=1))

    def missing(self, model: str) -> List[str]:
        return [d for d in self.datasets if (model, d) not in self.scores]


def score_table(records: Sequence[Mapping[str, Any]]) -> ScoreTable:
    """The table of a group's ok runs (empty when none is ok)."""
    ok = [r for r in records if r["status"] == "ok"]
    metrics = {r["experiment"]["dataset"]: r["metric"] for r in ok}
    runs: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    for record in ok:
        runs.setdefault((record["experiment"]["model"], record["experiment"]["dataset"]), []).append(record)
    edges = {}
    for cell, cell_runs in runs.items():
        at_edge = [r for r in cell_runs if r.get("at_grid_edge")]
        if at_edge:
            edges[cell] = {name: end for r in at_edge for name, end in (r.get("grid_edges") or {}).items()}
    by_seed = {cell: sorted((r["experiment"].get("seed", 0), float(r["test_score"])) for r in cell_runs)
               for cell, cell_runs in runs.items()}
    return ScoreTable(
        datasets=tuple(sorted(metrics)), metrics=metrics, models=tuple(sorted({m for m, _ in runs})),
        scores={cell: float(np.mean([score for _, score in pairs])) for cell, pairs in by_seed.items()},
        seeds={cell: tuple(seed for seed, _ in pairs) for cell, pairs in by_seed.items()},
        grid_edges=edges,
        seed_scores={cell: tuple(score for _, score in pairs) for cell, pairs in by_seed.items()})


@dataclass(frozen=True)
class ModelTransfer:
    """One model's place in a group's correlation; `excluded` says why it is not in r."""

    model: str
    label: str
    imagenet_top1: Optional[float]
    mean_log_odds: Optional[float]
    excluded: Optional[str]
    seed_sd: Optional[float] = None  # sd over seeds of the mean log odds (ScoreTable.seed_sd_of_mean_log_odds)


@dataclass(frozen=True)
class GroupAnalysis:
    group: ProtocolGroup
    table: ScoreTable
    models: Tuple[ModelTransfer, ...]  # by ImageNet top-1, unknown last
    correlation: Correlation
    per_dataset: Mapping[str, Correlation]
    paper_r: Optional[float]  # the paper's r for this regime; None for random-init features

    def included(self) -> List[ModelTransfer]:
        return [m for m in self.models if m.excluded is None]

    def title(self) -> str:
        """"Fine-tuned, protocol mini [3fa2b1c0]"; random-init features and a training subset say so."""
        regime = REGIME_TITLES.get(self.group.regime, self.group.regime)
        init = " (random-init network)" if self.group.settings.get("init") == RANDOM_INIT else ""
        size = self.group.key.get(TRAIN_SUBSET_FIELD)
        subset = f", {size} training examples per class" if size is not None else ""
        return f"{regime}{init}, protocol {self.group.name} [{self.group.id}]{subset}"

    def paper_note(self) -> str:
        return "paper: none for random features" if self.paper_r is None else f"paper: {self.paper_r:.2f}"


def paper_r(group: ProtocolGroup) -> Optional[float]:
    """The paper's r for the group's regime; none for features of a randomly initialised network
    (the paper correlates ImageNet-trained features only)."""
    return None if group.settings.get("init") == RANDOM_INIT else protocol.PAPER_R.get(group.regime)


def analyze_group(group: ProtocolGroup, top1: Mapping[str, ImageNetTop1], labels: Mapping[str, str],
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> GroupAnalysis:
    """Mean log odds per model and its correlation with ImageNet top-1 (overall and per dataset)."""
    table = score_table(group.records)
    models = []
    for model in table.models:
        value = top1[model].value
        missing = table.missing(model)
        mean = None if missing else float(np.mean(logit([table.score(model, d) for d in table.datasets])))
        if missing:
            excluded = f"no ok run on {', '.join(missing)}"
        elif value is None:
            excluded = "no known ImageNet top-1"
        else:
            excluded = None
        models.append(ModelTransfer(model, labels.get(model, model), value, mean, excluded,
                                    None if missing else table.seed_sd_of_mean_log_odds(model)))
    models.sort(key=lambda m: (m.imagenet_top1 is None, m.imagenet_top1 or 0.0, m.model))
    included = [m for m in models if m.excluded is None]
    correlation = correlate([m.imagenet_top1 for m in included], [m.mean_log_odds for m in included],
                            resamples=resamples, seed=seed)
    per_dataset = {}
    for dataset in table.datasets:
        pairs = [(m.imagenet_top1, table.score(m.model, dataset)) for m in models
                 if m.imagenet_top1 is not None and table.score(m.model, dataset) is not None]
        per_dataset[dataset] = correlate([x for x, _ in pairs], logit([s for _, s in pairs]),
                                         resamples=resamples, seed=seed)
    return GroupAnalysis(group, table, tuple(models), correlation, per_dataset, paper_r(group))


# ---------------------------------------------------------------------------------------------
# The report's sections: each group's tables, and r of every group (Figure 1)


def score_rows(table: ScoreTable, labels: Mapping[str, str]) -> List[Dict[str, str]]:
    """Rows of the score table in percent with one decimal; a missing run is MISSING, a score
    chosen at a grid edge carries EDGE_MARK, a mean over seeds its sd ("65.0 ± 7.1")."""
    def cell(model: str, dataset: str) -> str:
        mark = EDGE_MARK if (model, dataset) in table.grid_edges else ""
        sd = table.sd(model, dataset)
        return percent(table.score(model, dataset)) + ("" if sd is None else f" \u00b1 {100.0 * sd:.1f}") + mark

    return [{"model": labels.get(model, model),
             **{f"{d} ({table.metrics[d]}, %)": cell(model, d) for d in table.datasets}}
            for model in table.models]


def table_notes(table: ScoreTable, labels: Mapping[str, str]) -> List[str]:
    """Footnotes of a score table: grid edges, and scores that average several seeds."""
    notes = []
    if table.grid_edges:
        cells = "; ".join(
            f"{labels.get(m, m)} on {d}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(edges.items()))})"
                                           if edges else "")
            for (m, d), edges in sorted(table.grid_edges.items()))
        notes.append(f"{EDGE_MARK} the chosen hyperparameter is at an end of its grid, so the best value "
                     f"may lie beyond the values searched: {cells}.")
    averaged = [f"{labels.get(m, m)} on {d} (seeds {', '.join(map(str, seeds))})"
                for (m, d), seeds in sorted(table.seeds.items()) if len(seeds) > 1]
    if averaged:
        notes.append("Mean over seeds: " + "; ".join(averaged) + ". \u00b1 is the sample standard deviation "
                     "over seeds (ddof=1).")
    return notes


def transfer_rows(group: GroupAnalysis) -> List[Dict[str, str]]:
    return [{"model": m.label, "ImageNet top-1 (%)": percent(m.imagenet_top1),
             "mean log odds": fixed(m.mean_log_odds, 3) + (
                 "" if m.seed_sd is None else f" \u00b1 {m.seed_sd:.3f}"),
             "in r": "yes" if m.excluded is None else f"no: {m.excluded}"} for m in group.models]


def per_dataset_rows(group: GroupAnalysis) -> List[Dict[str, str]]:
    return [{"dataset": d, "metric": group.table.metrics[d], "n": str(c.n), "r": fixed(c.r, 2),
             "95% interval": c.interval()}
            for d, c in group.per_dataset.items()]


def scores_markdown(group: GroupAnalysis, labels: Mapping[str, str]) -> str:
    """The group's scores_<slug>.md: its test-score table and the table's notes."""
    return (f"# Test scores (%), {group.title()}\n\n" + markdown_table(score_rows(group.table, labels))
            + "".join(f"\n{note}\n" for note in table_notes(group.table, labels)))


def scores_csv(table: ScoreTable) -> str:
    """Full-precision fractions; a missing run is an empty cell (read as NaN by CSV readers)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model"] + [f"{d} ({table.metrics[d]})" for d in table.datasets])
    for model in table.models:
        writer.writerow([model] + [("" if table.score(model, d) is None else repr(table.score(model, d)))
                                   for d in table.datasets])
    return buffer.getvalue()


@dataclass(frozen=True)
class GroupTables:
    """The report's section of one group: its test scores, mean log odds and r per dataset."""

    group: GroupAnalysis
    labels: Mapping[str, str]

    def markdown(self) -> List[str]:
        group = self.group
        return [
            f"## {group.title()} (`{group.group.slug}`)\n",
            "### Test scores (%)\n", markdown_table(score_rows(group.table, self.labels)),
            *[note + "\n" for note in table_notes(group.table, self.labels)],
            f"### Mean log-odds transfer accuracy\n\nr = {group.correlation.describe()}; "
            f"{group.paper_note()}.\n",
            markdown_table(transfer_rows(group)),
            "### Per dataset: ImageNet top-1 against the dataset's log odds\n",
            markdown_table(per_dataset_rows(group)),
        ]

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {}  # Figure 1 is the correlations' section's


METHOD_NOTE = (
    "Each test score p (the dataset's metric, a fraction) becomes log odds ln(p / (1 - p)), with p "
    f"clipped to [{LOGIT_EPS:g}, 1 - {LOGIT_EPS:g}]. Runs are grouped by protocol (every setting but "
    "model, dataset, seed and locations); each group has its own table and r. A model's transfer "
    "score is the mean log odds over every dataset of its group's table; models without an ok run "
    "on each of them are left out of the mean. r is Pearson's correlation between ImageNet top-1 "
    "accuracy (x, as in the paper's Figure 1) and that mean (y), over the models whose ImageNet "
    f"top-1 is known (at least {MIN_MODELS}). The interval is a {100 * CONFIDENCE:.0f}% percentile "
    "bootstrap over models resampled with replacement ({resamples} resamples, seed {seed}). The "
    f"paper's r (Kornblith, Shlens & Le 2019: {protocol.PAPER_NETWORKS} networks, 12 datasets) is quoted for "
    "reference; it is not computed here.")


@dataclass(frozen=True)
class Correlations:
    """The report's section on every group's r with ImageNet top-1, and Figure 1."""

    groups: Tuple[GroupAnalysis, ...]
    resamples: int
    seed: int

    def figure1_files(self) -> Dict[str, List[GroupAnalysis]]:
        """Figure 1 per protocol name (its groups side by side), for the names with a model to show
        (one with a known ImageNet top-1 and a mean log odds): figure1.png when there is one."""
        names = list(dict.fromkeys(g.group.name for g in self.groups if g.included()))
        return {(FIGURE_FILE if len(names) == 1 else f"figure1_{path_component(name)}.png"):
                [g for g in self.groups if g.group.name == name] for name in names}

    def rows(self) -> List[Dict[str, str]]:
        return [{"group": g.group.slug, "regime": g.group.regime, "protocol": f"{g.group.name} [{g.group.id}]",
                 "n models": str(g.correlation.n), "r (this run)": fixed(g.correlation.r, 2),
                 "95% bootstrap interval": g.correlation.interval(), "paper's r": fixed(g.paper_r, 2)}
                for g in self.groups]

    def markdown(self) -> List[str]:
        parts = ["## Correlation of transfer accuracy with ImageNet top-1\n", markdown_table(self.rows()),
                 METHOD_NOTE.format(resamples=self.resamples, seed=self.seed) + "\n"]
        for file_name, groups in self.figure1_files().items():
            parts.append(f"![Figure 1: ImageNet top-1 against mean log-odds transfer accuracy, protocol "
                         f"{groups[0].group.name}]({file_name})\n")
        return parts

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {name: figures.figure1(groups) for name, groups in self.figure1_files().items()}
