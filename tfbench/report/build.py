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
its grid is marked with tfbench.report.analysis.EDGE_MARK. Per group and dataset (tfbench.report.significance): the best network
and those not significantly worse, from the test predictions the runs stored. The estimate regime's
records (no test score) form no table of their own: tfbench.report.estimator_agreement scores their
estimators against the probe's and the fine-tune's test scores.

Each analysis renders its own section of report.md and draws its own figures (the Section
interface below); this module orders the sections and writes the files, report.json and the summary.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, TextIO, Tuple

from tfbench import files, results
from tfbench.protocol import PAPER_NETWORKS
from tfbench.report import (budgets, cheap_alternatives, checkpoints, convergence, data_size, estimator_agreement, finetune_vs_scratch,
                            significance, size_split)
from tfbench.report.analysis import (Correlations, GroupAnalysis, GroupTables, ImageNetTop1, analyze_group,
                                     display_names, imagenet_top1_of_models, scores_csv, scores_markdown, score_rows,
                                     table_notes, transfer_rows)
from tfbench.report.checkpoints import Top1Used
from tfbench.report.comparisons import Comparison, ComparisonOutcome, Comparisons, NotDrawn, compare, comparison_rows
from tfbench.report.convergence import Convergences
from tfbench.report.correlation import BOOTSTRAP_RESAMPLES, CONFIDENCE, LOGIT_EPS
from tfbench.report.protocol_groups import (NotCounted, Protocols, UnknownProtocolError, differing_settings,
                                            group_records, select_protocol)

ESTIMATE_REGIME = "estimate"  # tfbench.regimes.estimate: its records go to the estimators' section
HEADLINE_MIN_MODELS = 5  # below this, r says little and the paired comparisons lead the summary
REPORT_FILE = "report.md"


class Section(Protocol):
    """One section of report.md after its summary: the result object of the analysis module that
    owns it (docs/DESIGN.md, "The report")."""

    def markdown(self) -> List[str]:
        """Its lines of report.md, tables by tfbench.report.cells.markdown_table."""

    def figures(self, figures: Any) -> Dict[str, Any]:
        """Each figure file its lines name -> the matplotlib Figure that `figures` (the module
        tfbench.report.figures, passed in because it imports the analysis modules) draws."""


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
    budgets: Tuple[budgets.BudgetsOutcome, ...] = ()  # Figure 8 from the runs' budget records


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
    comparisons = tuple(compare(list(analyses.values())))
    return Analysis(output_dir, rows, analyses, failures, top1, labels, differing_settings(groups),
                    comparisons, resamples, seed,
                    significance.analyze(scored, output_dir, significance_test, seed),
                    estimator_agreement.analyze(estimate_groups, list(analyses.values()), top1),
                    significance_test, tuple(budgets.analyze(comparisons, output_dir)))


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
# Files


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
# Sections: each analysis renders its own (docs/DESIGN.md, "The report"); here they are ordered


def finetune_vs_scratch_of(analysis: Analysis) -> finetune_vs_scratch.FinetuneVsScratch:
    return finetune_vs_scratch.per_dataset(analysis.comparisons, analysis.groups.values())


def size_split_of(analysis: Analysis) -> size_split.SizeSplit:
    return size_split.split_by_size(analysis.groups.values(), analysis.top1, analysis.labels,
                                    analysis.resamples, analysis.seed)


def cheap_alternatives_of(analysis: Analysis) -> cheap_alternatives.CheapAlternatives:
    """What cheaper searches would have chosen, per group (tfbench.report.cheap_alternatives)."""
    return cheap_alternatives.analyze([g.group for g in analysis.groups.values()],
                                      {slug: g.title() for slug, g in analysis.groups.items()},
                                      [r for g in analysis.groups.values() for r in g.group.records],
                                      results.cheap_retrain_records(analysis.output_dir) if analysis.output_dir else [])


def data_size_of(analysis: Analysis) -> data_size.DataSizeAnalysis:
    """Score against training-set size over every group's records (tfbench.report.data_size)."""
    return data_size.analyze([r for g in analysis.groups.values() for r in g.group.records])


def protocols_of(analysis: Analysis) -> Protocols:
    return Protocols(tuple(g.group for g in analysis.groups.values()), analysis.differing)


def sections(analysis: Analysis) -> List[Section]:
    """report.md's sections after its summary, in order."""
    compared = Comparisons(analysis.comparisons, analysis.labels)
    correlations = Correlations(tuple(analysis.groups.values()), analysis.resamples, analysis.seed)
    return [
        protocols_of(analysis),
        *((compared, correlations) if comparisons_lead(analysis) else (correlations, compared)),
        budgets.ConvergenceBudgets(analysis.budgets, analysis.labels),
        Convergences(tuple(convergence.converge(analysis.comparisons)), analysis.labels),
        Top1Used(analysis.top1, analysis.labels),
        *(GroupTables(group, analysis.labels) for group in analysis.groups.values()),
        finetune_vs_scratch_of(analysis),
        size_split_of(analysis),
        significance.BestNetworks(analysis.best_networks, {slug: g.title() for slug, g in analysis.groups.items()},
                                  analysis.labels, analysis.significance_test, analysis.seed),
        analysis.estimators,
        cheap_alternatives_of(analysis),
        data_size_of(analysis),
        NotCounted(analysis.failures),
    ]


def report_markdown(analysis: Analysis) -> str:
    ok = len(analysis.runs) - len(analysis.failures)
    parts = [
        "# tfbench report\n",
        "## Summary\n",
        "\n".join(f"- {line}" for line in summary_lines(analysis)) + "\n",
        f"Run records under `{analysis.output_dir}`: {len(analysis.runs)} "
        f"({ok} ok, {len(analysis.failures)} not counted).\n",
    ]
    for section in sections(analysis):
        parts += section.markdown()
    return "\n".join(parts)


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
        "convergence_budgets": [budgets.to_json(o) for o in analysis.budgets],
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
    for line in protocols_of(analysis).differing_lines():
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
    results.print_table(Top1Used(analysis.top1, analysis.labels).rows(), file=file)
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
        results.print_table(NotCounted(analysis.failures).rows(), file=file)
    for outcome in [*analysis.budgets, *convergence.converge(analysis.comparisons)]:
        if not isinstance(outcome, NotDrawn):
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

    contents = {}
    for section in sections(analysis):
        contents.update({name: figures.png(figure) for name, figure in section.figures(figures).items()})
    for slug, group in analysis.groups.items():
        contents[f"scores_{slug}.md"] = scores_markdown(group, analysis.labels).encode()
        contents[f"scores_{slug}.csv"] = scores_csv(group.table).encode()
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
