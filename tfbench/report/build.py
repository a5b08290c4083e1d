"""The analysis of a benchmark, one protocol at a time: score tables, comparisons, r, figures.

    python -m tfbench.report --output_dir=runs [--report_dir=runs/report] [--protocol=NAME|ID]

The run records under --output_dir (at any depth: `runs/mini` and `runs/paper` side by side are
read together) are grouped by protocol (tfbench.report.protocol_groups): runs of different protocols
never share a table, a mean or an r. Per group (tfbench.report.analysis): the test-score table, each
model's mean log odds and its Pearson r with ImageNet top-1 (tfbench.report.correlation), per-dataset r
and a Figure-1 panel (tfbench.report.figures). Across groups (tfbench.report.comparisons): ImageNet vs random-
init features, fine-tuning vs scratch at equal steps and batch size, fine-tuning vs the probe,
paired by (model, dataset). The summary leads with those comparisons while r rests on fewer than
HEADLINE_MIN_MODELS models, and with r otherwise. Only runs with status "ok" enter; failed and
diverged runs are listed with their reason. A score whose chosen hyperparameter sat at an end of
its grid is marked with EDGE_MARK. Per group and dataset (tfbench.report.significance): the best network
and those not significantly worse, from the test predictions the runs stored. The estimate regime's
records (no test score) form no table of their own: tfbench.report.estimator_agreement scores their
estimators against the probe's and the fine-tune's test scores.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

from tfbench import files, results
from tfbench.report.cells import MISSING, fixed, percent, plural, text
from tfbench.report import (cheap_alternatives, checkpoints, convergence, data_size, estimator_agreement, finetune_vs_scratch,
                            significance, size_split)
from tfbench.report.analysis import (GroupAnalysis, ImageNetTop1, ScoreTable, analyze_group, display_names,
                              imagenet_top1_of_models)
from tfbench.report.comparisons import Comparison, ComparisonOutcome, NotDrawn, compare
from tfbench.report.correlation import BOOTSTRAP_RESAMPLES, CONFIDENCE, LOGIT_EPS, MIN_MODELS
from tfbench.experiment import path_component
from tfbench.report.protocol_groups import UnknownProtocolError, differing_settings, group_records, select_protocol

ESTIMATE_REGIME = "estimate"  # tfbench.regimes.estimate: its records go to the estimators' section
HEADLINE_MIN_MODELS = 5  # below this, r says little and the paired comparisons lead the summary
PAPER_NETWORKS = 16
EDGE_MARK = "\u2020"  # dagger
FIGURE_FILE = "figure1.png"
REPORT_FILE = "report.md"


SETTING_LABELS = {"l2_search": "L2 search", "bn_momentum": "batch-norm momentum", "train_steps": "training steps",
                  "init": "initialisation", "halving_eta": "halving rate", "halving_min_steps": "halving's first budget"}


class ReportInputError(ValueError):
    """The output folder holds nothing to report on, or --protocol names nothing; the message says."""


# ---------------------------------------------------------------------------------------------
# Reading and analysing


@dataclass(frozen=True)
class Analysis:
    output_dir: str
    runs: Tuple[Mapping[str, Any], ...]  # one flat row per run record, any status
    groups: Mapping[str, GroupAnalysis]  # by group slug
    failures: Tuple[Mapping[str, Any], ...]  # rows of runs that are not ok
    top1: Mapping[str, ImageNetTop1]  # by model
    labels: Mapping[str, str]  # model -> display name
    differing: Mapping[str, Mapping[str, Mapping[str, str]]]  # regime -> setting -> slug -> value
    comparisons: Tuple[ComparisonOutcome, ...]
    resamples: int
    seed: int
    best_networks: Mapping[str, Tuple[significance.DatasetBest, ...]]  # by group slug
    estimators: estimator_agreement.EstimatorAgreement
    significance_test: significance.Test = significance.Test()


def analyze(records: Sequence[Mapping[str, Any]], imagenet_top1: Callable[[str], Optional[float]],
            output_dir: str = "", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
            protocol: Optional[str] = None, significance_test: significance.Test = significance.Test(),
            top1_kind: str = checkpoints.ANY) -> Analysis:
    """The whole analysis of run records. `imagenet_top1(model)` (a fraction or None) serves models
    whose records state no top-1; `protocol` keeps only the groups of that name or id; `top1_kind`
    keeps measured or published top-1 only (tfbench.report.checkpoints)."""
    groups = group_records(records)
    if protocol is not None:
        try:
            groups = select_protocol(groups, protocol)
        except UnknownProtocolError as error:
            raise ReportInputError(f"--protocol: {error}") from None
    kept = [r for g in groups for r in g.records]
    top1 = checkpoints.keep_kind(imagenet_top1_of_models(kept, imagenet_top1, measured_imagenet_top1),
                                 top1_kind, imagenet_top1)
    labels = display_names(kept)
    estimate_groups = [g for g in groups if g.regime == ESTIMATE_REGIME]  # scores, but no test score
    scored = [g for g in groups if g.regime != ESTIMATE_REGIME]
    analyses = {g.slug: analyze_group(g, top1, labels, resamples, seed) for g in scored}
    slug_of = {id(r): g.slug for g in groups for r in g.records}
    rows = tuple({**row, "protocol": slug_of[id(record)]} for record, row in zip(kept, results.table(kept)))
    failures = tuple({k: row[k] for k in ("protocol", "regime", "dataset", "model", "status", "reason")}
                     for row in rows if row["status"] != "ok")
    return Analysis(output_dir, rows, analyses, failures, top1, labels, differing_settings(groups),
                    tuple(compare(list(analyses.values()))), resamples, seed,
                    significance.analyze(scored, output_dir, significance_test, seed),
                    estimator_agreement.analyze(estimate_groups, list(analyses.values()), top1),
                    significance_test)


def measured_imagenet_top1(model: str) -> Optional[ImageNetTop1]:
    """A measurement by tfbench.imagenet_eval of the model's current weights, if one is stored."""
    from tfbench import imagenet_eval

    found = imagenet_eval.measured_top1(model)
    if found is None:
        return None
    return ImageNetTop1(found["top1"], imagenet_eval.describe(found), True)


def registered_imagenet_top1(model: str) -> Optional[float]:
    """ImageNet top-1 of a registered backbone; None for others (paths and handles are never loaded)."""
    from tfbench import backbones

    return backbones.spec(model).imagenet_top1 if model in backbones.names() else None


# ---------------------------------------------------------------------------------------------
# Tables


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


def correlation_rows(analysis: Analysis) -> List[Dict[str, str]]:
    return [{"group": slug, "regime": g.group.regime, "protocol": f"{g.group.name} [{g.group.id}]",
             "n models": str(g.correlation.n), "r (this run)": fixed(g.correlation.r, 2),
             "95% bootstrap interval": g.correlation.interval(), "paper's r": fixed(g.paper_r, 2)}
            for slug, g in analysis.groups.items()]


def setting_label(key: str) -> str:
    """A run setting as the report names it: "settings.learning_rate" -> "learning rate"."""
    name = key[len("settings."):] if key.startswith("settings.") else key
    return SETTING_LABELS.get(name, name.replace("_", " "))


def setting_value(value: Any) -> str:
    """A setting's value; None is a setting the protocol leaves to its search (or does not fix)."""
    return "not fixed" if value is None else str(value)


def protocol_rows(analysis: Analysis) -> List[Dict[str, str]]:
    def paper_differences(g: GroupAnalysis) -> str:
        differences = sorted(g.group.paper_differences.items())
        if not differences:
            return "none" if g.group.name == "paper" else "not stated"
        return "; ".join(f"{setting_label(k)}: {setting_value(v.get('run'))} (paper: {setting_value(v.get('paper'))})"
                         for k, v in differences)

    def training_steps(g: GroupAnalysis) -> str:
        """What the protocol spent: every trial and retrain of its runs (the probe trains no steps)."""
        steps = [r["total_train_steps"] for r in g.group.records if r.get("total_train_steps") is not None]
        return f"{sum(steps):,} ({plural(len(steps), 'run')})" if steps else MISSING

    return [{"group": slug, "protocol": g.group.name, "id": g.group.id, "regime": g.group.regime,
             "runs": str(len(g.group.records)), "training steps": training_steps(g),
             "batch size": str(g.group.key.get("batch_size")),
             "image size": str(g.group.key.get("image_size") or "native"),
             "differs from the paper in": paper_differences(g)}
            for slug, g in analysis.groups.items()]


def differing_lines(analysis: Analysis) -> List[str]:
    """One line per regime that holds several protocols: the settings that tell them apart."""
    return [f"{regime}: several protocols, differing in " + "; ".join(
                f"{setting} ({', '.join(f'{slug}: {value}' for slug, value in values.items())})"
                for setting, values in settings.items())
            for regime, settings in analysis.differing.items()]


def top1_rows(analysis: Analysis) -> List[Dict[str, str]]:
    return [{"model": model, "shown as": analysis.labels.get(model, model),
             "ImageNet top-1 (%)": percent(top1.value), "kind": top1.kind(), "source": top1.source}
            for model, top1 in sorted(analysis.top1.items())]


def comparison_rows(comparison: Comparison, labels: Mapping[str, str]) -> List[Dict[str, str]]:
    kind = comparison.kind
    return [{"model": labels.get(p.model, p.model), "dataset": p.dataset,
             f"{kind.first} (%)": percent(p.first), f"{kind.second} (%)": percent(p.second),
             "difference (points)": f"{100.0 * (p.first - p.second):+.1f}"} for p in comparison.pairs]


def failure_rows(analysis: Analysis) -> List[Dict[str, str]]:
    return [{k: text(v) for k, v in row.items()} for row in analysis.failures]


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


# ---------------------------------------------------------------------------------------------
# Summary


def drawn(analysis: Analysis) -> List[Comparison]:
    return [o for o in analysis.comparisons if isinstance(o, Comparison)]


def comparisons_lead(analysis: Analysis) -> bool:
    """Whether the paired comparisons come first: some are drawn, and no r rests on
    HEADLINE_MIN_MODELS models."""
    most = max((g.correlation.n for g in analysis.groups.values()), default=0)
    return bool(drawn(analysis)) and most < HEADLINE_MIN_MODELS


def summary_lines(analysis: Analysis) -> List[str]:
    """The report's findings, most telling first, then the comparisons the runs cannot draw (and
    what they lack): what report.md opens with and the terminal ends with."""
    compared = [f"{c.sentence()} {c.kind.paper}" for c in drawn(analysis)]
    not_drawn = [o.sentence() for o in analysis.comparisons if isinstance(o, NotDrawn)]
    correlations = []
    for slug, g in analysis.groups.items():
        caveat = (f" (r over {g.correlation.n} models says little; the paper's is over {PAPER_NETWORKS} networks)"
                  if g.correlation.r is not None and g.correlation.n < HEADLINE_MIN_MODELS else "")
        correlations.append(f"r {slug} (ImageNet top-1 vs mean log odds) = {g.correlation.describe()}; "
                            f"{g.paper_note()}{caveat}.")
    return (compared + correlations if comparisons_lead(analysis) else correlations + compared) + not_drawn


def report_summary_line(analysis: Analysis, report_path: str) -> str:
    """The last line the binary prints: run counts, the lead findings, where the report is."""
    correlations = "r " + (" ".join(f"{slug}={g.correlation.compact()}" for slug, g in analysis.groups.items())
                           or "n/a (no ok runs)")
    compared = ", ".join(c.compact() for c in drawn(analysis))
    findings = [compared, correlations] if comparisons_lead(analysis) else [correlations, compared]
    ok = len(analysis.runs) - len(analysis.failures)
    return f"report: {len(analysis.runs)} runs ({ok} ok), {'; '.join(f for f in findings if f)} -> {report_path}"


# ---------------------------------------------------------------------------------------------
# Figures and files


def figure1_files(analysis: Analysis) -> Dict[str, List[GroupAnalysis]]:
    """Figure 1 per protocol name (its groups side by side), for the names with a model to show
    (one with a known ImageNet top-1 and a mean log odds): figure1.png when there is one."""
    names = list(dict.fromkeys(g.group.name for g in analysis.groups.values() if g.included()))
    return {(FIGURE_FILE if len(names) == 1 else f"figure1_{path_component(name)}.png"):
            [g for g in analysis.groups.values() if g.group.name == name] for name in names}


def finetune_vs_scratch_of(analysis: Analysis) -> finetune_vs_scratch.FinetuneVsScratch:
    return finetune_vs_scratch.per_dataset(analysis.comparisons, analysis.groups.values())


def size_split_of(analysis: Analysis) -> size_split.SizeSplit:
    return size_split.split_by_size(analysis.groups.values(), analysis.top1, analysis.labels,
                                    analysis.resamples, analysis.seed)


def comparison_files(analysis: Analysis) -> Dict[str, Comparison]:
    """A figure per comparison with a pair to show (without one it would be a lone diagonal)."""
    comparisons = [c for c in drawn(analysis) if c.pairs]
    files_by_name = {}
    for comparison in comparisons:
        name = comparison.kind.key
        if sum(c.kind is comparison.kind for c in comparisons) > 1:
            name += f"_{comparison.first.group.slug}_{comparison.second.group.slug}"
        files_by_name[f"{name}.png"] = comparison
    return files_by_name


def convergence_files(outcomes: Sequence[convergence.ConvergenceOutcome]) -> Dict[str, convergence.Convergence]:
    """The convergence figure of each fine-tune vs scratch pair with curves to draw:
    convergence.png when there is one."""
    drawable = [o for o in outcomes if isinstance(o, convergence.Convergence) and o.drawn()]
    return {("convergence.png" if len(drawable) == 1 else
             f"convergence_{o.comparison.first.group.slug}_{o.comparison.second.group.slug}.png"): o
            for o in drawable}


def _convergence_markdown(analysis: Analysis) -> List[str]:
    """The paper's Figure 8 (tfbench.report.convergence): a table and a figure per pair, else one line."""
    outcomes = convergence.converge(analysis.comparisons)
    figure_names = {id(o): name for name, o in convergence_files(outcomes).items()}
    parts = ["## Convergence: fine-tuned vs from scratch (the paper's Figure 8)\n",
             "The paper (Figure 8): networks fine-tuned from ImageNet converge faster than the same "
             "networks trained from scratch; it trains separate models, each a complete schedule, at "
             "each budget. Below, a cheap approximation: points partway along each run's one cosine "
             "schedule, whose learning rate has not decayed there.\n"]
    for outcome in outcomes:
        if isinstance(outcome, NotDrawn):
            parts.append(outcome.sentence() + "\n")
            continue
        parts.append(outcome.sentence() + "\n")
        if id(outcome) in figure_names:
            parts += [markdown_table(convergence.table_rows(outcome, analysis.labels)), convergence.METHOD + "\n"]
            if outcome.missing:
                parts.append("Missing (not counted): " + "; ".join(outcome.missing) + ".\n")
            parts.append(f"![Convergence]({figure_names[id(outcome)]})\n")
    return parts


METHOD_NOTE = (
    "Each test score p (the dataset's metric, a fraction) becomes log odds ln(p / (1 - p)), with p "
    f"clipped to [{LOGIT_EPS:g}, 1 - {LOGIT_EPS:g}]. Runs are grouped by protocol (every setting but "
    "model, dataset, seed and locations); each group has its own table and r. A model's transfer "
    "score is the mean log odds over every dataset of its group's table; models without an ok run "
    "on each of them are left out of the mean. r is Pearson's correlation between ImageNet top-1 "
    "accuracy (x, as in the paper's Figure 1) and that mean (y), over the models whose ImageNet "
    f"top-1 is known (at least {MIN_MODELS}). The interval is a {100 * CONFIDENCE:.0f}% percentile "
    "bootstrap over models resampled with replacement ({resamples} resamples, seed {seed}). The "
    f"paper's r (Kornblith, Shlens & Le 2019: {PAPER_NETWORKS} networks, 12 datasets) is quoted for "
    "reference; it is not computed here.")


def _comparisons_markdown(analysis: Analysis, figure_names: Mapping[int, str]) -> List[str]:
    parts = ["## Comparisons of paired runs\n"]
    for outcome in analysis.comparisons:
        parts.append(f"### {outcome.kind.title}\n")
        parts.append(outcome.kind.paper + "\n")
        if isinstance(outcome, NotDrawn):
            parts.append(f"Not drawn: {outcome.reason}.\n")
            continue
        parts += [outcome.sentence() + "\n", markdown_table(comparison_rows(outcome, analysis.labels))]
        parts += [f"- {note}" for note in outcome.notes] + ([""] if outcome.notes else [])
        if outcome.missing:
            parts.append("Missing (not counted): " + "; ".join(outcome.missing) + ".\n")
        if id(outcome) in figure_names:
            parts.append(f"![{outcome.kind.title}]({figure_names[id(outcome)]})\n")
    return parts


def _correlations_markdown(analysis: Analysis) -> List[str]:
    parts = ["## Correlation of transfer accuracy with ImageNet top-1\n",
             markdown_table(correlation_rows(analysis)),
             METHOD_NOTE.format(resamples=analysis.resamples, seed=analysis.seed) + "\n"]
    for file_name, groups in figure1_files(analysis).items():
        parts.append(f"![Figure 1: ImageNet top-1 against mean log-odds transfer accuracy, protocol "
                     f"{groups[0].group.name}]({file_name})\n")
    return parts


def best_network_files(analysis: Analysis) -> Dict[str, str]:
    """Group slug -> the file of its best-network figure, for groups with a dataset compared."""
    return {slug: f"best_networks_{slug}.png" for slug, verdicts in analysis.best_networks.items()
            if any(v.best is not None for v in verdicts)}


def _best_networks_markdown(analysis: Analysis) -> List[str]:
    parts = ["## Best network per dataset, and those not significantly worse\n",
             significance.method_note(analysis.significance_test, analysis.seed) + "\n"]
    figures_by_slug = best_network_files(analysis)
    for slug, verdicts in analysis.best_networks.items():
        parts += [f"### {analysis.groups[slug].title()} (`{slug}`)\n",
                  markdown_table(significance.rows(verdicts, analysis.labels))]
        if slug in figures_by_slug:
            parts.append(f"![Best network per dataset, {slug}]({figures_by_slug[slug]})\n")
    return parts


def report_markdown(analysis: Analysis) -> str:
    ok = len(analysis.runs) - len(analysis.failures)
    figure_names = {id(c): name for name, c in comparison_files(analysis).items()}
    comparisons = _comparisons_markdown(analysis, figure_names)
    correlations = _correlations_markdown(analysis)
    parts = [
        "# tfbench report\n",
        "## Summary\n",
        "\n".join(f"- {line}" for line in summary_lines(analysis)) + "\n",
        f"Run records under `{analysis.output_dir}`: {len(analysis.runs)} "
        f"({ok} ok, {len(analysis.failures)} not counted).\n",
        "## Protocols\n",
        markdown_table(protocol_rows(analysis)),
        *[f"- {line}" for line in differing_lines(analysis)], "",
        *(comparisons + correlations if comparisons_lead(analysis) else correlations + comparisons),
        *_convergence_markdown(analysis),
        "## ImageNet top-1 used\n",
        checkpoints.NOTE + "\n",
        markdown_table(top1_rows(analysis)),
        *[line + "\n" for line in checkpoints.mixing_lines(analysis.top1)],
    ]
    for slug, group in analysis.groups.items():
        parts += [
            f"## {group.title()} (`{slug}`)\n",
            "### Test scores (%)\n", markdown_table(score_rows(group.table, analysis.labels)),
            *[note + "\n" for note in table_notes(group.table, analysis.labels)],
            f"### Mean log-odds transfer accuracy\n\nr = {group.correlation.describe()}; "
            f"{group.paper_note()}.\n",
            markdown_table(transfer_rows(group)),
            "### Per dataset: ImageNet top-1 against the dataset's log odds\n",
            markdown_table(per_dataset_rows(group)),
        ]
    parts += finetune_vs_scratch_of(analysis).markdown(markdown_table)
    parts += size_split_of(analysis).markdown(markdown_table)
    parts += _best_networks_markdown(analysis)
    parts += analysis.estimators.markdown(markdown_table)
    parts += cheap_alternatives_of(analysis).markdown(markdown_table)
    parts += data_size_of(analysis).markdown(markdown_table)
    parts += ["## Runs not counted (failed or diverged)\n", markdown_table(failure_rows(analysis))]
    return "\n".join(parts)


def cheap_alternatives_of(analysis: Analysis) -> cheap_alternatives.CheapAlternatives:
    """What cheaper searches would have chosen, per group (tfbench.report.cheap_alternatives)."""
    return cheap_alternatives.analyze([g.group for g in analysis.groups.values()],
                                      {slug: g.title() for slug, g in analysis.groups.items()},
                                      [r for g in analysis.groups.values() for r in g.group.records],
                                      results.cheap_retrain_records(analysis.output_dir) if analysis.output_dir else [])


def data_size_of(analysis: Analysis) -> data_size.DataSizeAnalysis:
    """Score against training-set size over every group's records (tfbench.report.data_size)."""
    return data_size.analyze([r for g in analysis.groups.values() for r in g.group.records])


def analysis_json(analysis: Analysis) -> Dict[str, Any]:
    """Every number of the report, as fractions (scores, top-1) and log odds."""
    groups = {}
    for slug, g in analysis.groups.items():
        table = g.table
        groups[slug] = {
            "regime": g.group.regime,
            "protocol": {"name": g.group.name, "id": g.group.id, "settings": dict(g.group.key),
                         "differences_from_paper": dict(g.group.paper_differences)},
            "datasets": list(table.datasets),
            "metrics": dict(table.metrics),
            "scores": {m: {d: table.score(m, d) for d in table.datasets if table.score(m, d) is not None}
                       for m in table.models},
            "seeds": {m: {d: list(s) for (mm, d), s in table.seeds.items() if mm == m} for m in table.models},
            "seed_sd": {m: {d: table.sd(m, d) for d in table.datasets if table.sd(m, d) is not None}
                        for m in table.models},
            "grid_edges": {m: {d: dict(e) for (mm, d), e in table.grid_edges.items() if mm == m}
                           for m in table.models if any(mm == m for mm, _ in table.grid_edges)},
            "models": [{"model": m.model, "label": m.label, "imagenet_top1": m.imagenet_top1,
                        "mean_log_odds": m.mean_log_odds, "mean_log_odds_seed_sd": m.seed_sd,
                        "excluded": m.excluded} for m in g.models],
            "correlation": g.correlation.to_json(),
            "per_dataset": {d: c.to_json() for d, c in g.per_dataset.items()},
            "paper_r": g.paper_r,
        }
    comparisons = []
    for outcome in analysis.comparisons:
        entry = {"kind": outcome.kind.key, "title": outcome.kind.title, "paper": outcome.kind.paper,
                 "drawn": isinstance(outcome, Comparison)}
        if isinstance(outcome, NotDrawn):
            entry["reason"] = outcome.reason
        else:
            entry.update(first=outcome.first.group.slug, second=outcome.second.group.slug,
                         pairs=[{"model": p.model, "dataset": p.dataset, "first": p.first, "second": p.second}
                                for p in outcome.pairs],
                         first_better=outcome.wins(), mean_difference=outcome.mean_difference(),
                         missing=list(outcome.missing), notes=list(outcome.notes))
        comparisons.append(entry)
    return {
        "output_dir": analysis.output_dir,
        "runs": len(analysis.runs),
        "ok_runs": len(analysis.runs) - len(analysis.failures),
        "failures": list(analysis.failures),
        "summary": summary_lines(analysis),
        "logit_eps": LOGIT_EPS,
        "x": "ImageNet top-1 accuracy (fraction)",
        "y": "mean over datasets of logit(test score)",
        "bootstrap": {"resamples": analysis.resamples, "seed": analysis.seed,
                      "confidence": CONFIDENCE, "unit": "models, with replacement",
                      "interval": "percentile"},
        "imagenet_top1": {model: {"value": t.value, "kind": t.kind(), "source": t.source,
                                  "label": analysis.labels.get(model, model)}
                          for model, t in analysis.top1.items()},
        "differing_settings": {regime: {setting: dict(values) for setting, values in settings.items()}
                               for regime, settings in analysis.differing.items()},
        "groups": groups,
        "comparisons": comparisons,
        "convergence": [convergence.to_json(o) for o in convergence.converge(analysis.comparisons)],
        "finetune_vs_scratch_per_dataset": finetune_vs_scratch_of(analysis).to_json(),
        "size_split": size_split_of(analysis).to_json(),
        "estimator_agreement": analysis.estimators.to_json(),
        "cheap_alternatives": cheap_alternatives_of(analysis).to_json(),
        "best_networks": {
            "method": significance.method_note(analysis.significance_test, analysis.seed),
            "test": analysis.significance_test.name, "alpha": significance.ALPHA,
            "samples": analysis.significance_test.samples,
            "map_samples": analysis.significance_test.map_samples,
            "resamples": analysis.significance_test.resamples, "seed": analysis.seed,
            "groups": {slug: {v.dataset: v.to_json() for v in verdicts}
                       for slug, verdicts in analysis.best_networks.items()}},
    }


def print_summary(analysis: Analysis, file: TextIO = sys.stdout) -> None:
    """For a terminal: which protocols differ (once), the tables, then the summary findings."""
    for line in differing_lines(analysis):
        print(line, file=file)
    for slug, group in analysis.groups.items():
        print(f"\n== {slug}: {group.title()}: test scores (%) ==", file=file)
        results.print_table(score_rows(group.table, analysis.labels), file=file)
        for note in table_notes(group.table, analysis.labels):
            print(note, file=file)
        print(f"\n== {slug}: mean log odds vs ImageNet top-1 ==", file=file)
        results.print_table(transfer_rows(group), file=file)
        print(f"r {slug} = {group.correlation.describe()}; {group.paper_note()}", file=file)
    print("\n== ImageNet top-1 used ==", file=file)
    results.print_table(top1_rows(analysis), file=file)
    for line in checkpoints.mixing_lines(analysis.top1):
        print(line, file=file)
    for comparison in drawn(analysis):
        print(f"\n== {comparison.kind.title}: {comparison.first.group.slug} vs "
              f"{comparison.second.group.slug} ==", file=file)
        results.print_table(comparison_rows(comparison, analysis.labels), file=file)
        for note in comparison.notes:
            print(note, file=file)
        if comparison.missing:
            print("missing: " + "; ".join(comparison.missing), file=file)
    if analysis.failures:
        print("\n== runs not counted ==", file=file)
        results.print_table(failure_rows(analysis), file=file)
    for outcome in convergence.converge(analysis.comparisons):
        if isinstance(outcome, convergence.Convergence):
            print(f"\n{outcome.sentence()}", file=file)
    for pairing in analysis.estimators.pairings:
        print(f"\n== {pairing.title()} ==", file=file)
        results.print_table(pairing.rows(), file=file)
    print("\n== summary ==", file=file)
    for line in summary_lines(analysis):
        print(f"- {line}", file=file)


def write_report(analysis: Analysis, report_dir: str) -> List[str]:
    """Writes every report file into report_dir; returns their paths, report.md last."""
    from tfbench.report import figures

    contents = {name: figures.png(figures.figure1(groups))
                for name, groups in figure1_files(analysis).items()}
    contents.update({name: figures.png(figures.comparison_figure(comparison))
                     for name, comparison in comparison_files(analysis).items()})
    contents.update({name: figures.png(figures.convergence_figure(outcome, analysis.labels))
                     for name, outcome in convergence_files(convergence.converge(analysis.comparisons)).items()})
    contents.update({p.file_name: figures.png(figures.per_dataset_figure(p))
                     for p in finetune_vs_scratch_of(analysis).drawn if p.has_points()})
    split = size_split_of(analysis)
    if split.has_points():
        contents[size_split.FIGURE_FILE] = figures.png(figures.size_split_figure(split))
    contents.update({name: figures.png(figures.best_networks_figure(
                         analysis.groups[slug].title(), analysis.best_networks[slug], analysis.labels))
                     for slug, name in best_network_files(analysis).items()})
    for slug, group in analysis.groups.items():
        contents[f"scores_{slug}.md"] = (
            f"# Test scores (%), {group.title()}\n\n" + markdown_table(score_rows(group.table, analysis.labels))
            + "".join(f"\n{note}\n" for note in table_notes(group.table, analysis.labels))).encode()
        contents[f"scores_{slug}.csv"] = scores_csv(group.table).encode()
    contents.update({name: figures.png(figures.cheap_alternatives_figure(group))
                     for name, group in cheap_alternatives_of(analysis).figure_files().items()})
    sizes = data_size_of(analysis)
    if sizes.curves:
        contents[data_size.FIGURE_FILE] = figures.png(figures.data_size_figure(sizes))
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
           resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, protocol: Optional[str] = None,
           file: TextIO = sys.stdout, significance_test: significance.Test = significance.Test(),
           top1_kind: str = checkpoints.ANY) -> Tuple[Analysis, List[str]]:
    """Reads the run records under output_dir, writes the report, prints tables and the summary,
    the one-line summary last.

    report_dir defaults to <output_dir>/report. A missing output_dir, one without run records, or a
    --protocol that names none of its protocols raises ReportInputError before anything is written.
    """
    if not os.path.isdir(output_dir):
        raise ReportInputError(f"--output_dir {output_dir!r} is not a folder; pass the folder the "
                               "regime binaries wrote their runs to")
    records = results.collect(output_dir)
    if not records:
        raise ReportInputError(f"no run records under --output_dir {output_dir!r} (expected "
                               f"<output_dir>/<regime>/<dataset>/<model>/{results.RECORD_FILE})")
    analysis = analyze(records, imagenet_top1, output_dir=output_dir, resamples=resamples, seed=seed,
                       protocol=protocol, significance_test=significance_test, top1_kind=top1_kind)
    paths = write_report(analysis, report_dir or os.path.join(output_dir, "report"))
    print_summary(analysis, file=file)
    print(report_summary_line(analysis, paths[-1]), file=file)
    return analysis, paths
