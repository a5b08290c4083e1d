"""The comparisons a small study can show: the same (model, dataset) under two protocols.

An r over three models says nothing, but three models already show the paper's robust effects,
one (model, dataset) pair at a time: ImageNet features against features of the same network at
random initialisation (linear probe), fine-tuning against training from scratch, and fine-tuning
against the linear probe. Each comparison pairs the scores of two protocol groups that are
compatible for it; when none can be drawn, it says which runs are missing.

Fine-tuning against scratch has two views. The paper's (Figures 7 and 8) pairs each regime's own
protocol: its 20,000-step fine-tune with its 78,125-step scratch, and within one preset that
preset's fine-tune with its scratch (the same protocol name). The second view, tfbench's, pairs
runs of equal steps and batch size only; a pair of groups the first view already draws is not
drawn again (nor said to be missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from tfbench.report.analysis import RANDOM_INIT, GroupAnalysis
from tfbench.report.cells import markdown_table, percent
from tfbench.experiment import identity_diff
from tfbench.report.protocol_groups import TRAIN_SUBSET_FIELD, ProtocolGroup


@dataclass(frozen=True)
class Kind:
    """One comparison: its two sides (the paper found the first better) and the paper's finding."""

    key: str
    title: str
    short: str  # for the one-line summary
    first: str  # how a score of each side is called
    second: str
    first_runs: str  # what a folder must hold for each side
    second_runs: str
    paper: str
    first_side: Callable[[GroupAnalysis], bool]
    second_side: Callable[[GroupAnalysis], bool]
    noted: Callable[[str], bool]  # which differing settings are worth a note (others are expected)
    # why two groups (first side, second side) cannot be compared, or None; the flag says whether
    # they are the only groups of their sides
    incompatibility: Callable[[ProtocolGroup, ProtocolGroup, bool], Optional[str]]


def _imagenet_probe(g: GroupAnalysis) -> bool:
    return g.group.regime == "probe" and g.group.settings.get("init") != RANDOM_INIT


def _random_probe(g: GroupAnalysis) -> bool:
    return g.group.regime == "probe" and g.group.settings.get("init") == RANDOM_INIT


def _only_init_differs(a: ProtocolGroup, b: ProtocolGroup, only_pair: bool) -> Optional[str]:
    differing = [s for s in identity_diff(a.key, b.key) if s != "settings.init"]
    return f"{a.slug} and {b.slug} differ in {', '.join(differing)}" if differing else None


def _equal_steps_and_batch(a: ProtocolGroup, b: ProtocolGroup, only_pair: bool) -> Optional[str]:
    shape_a = (a.settings.get("train_steps"), a.key.get("batch_size"))
    shape_b = (b.settings.get("train_steps"), b.key.get("batch_size"))
    return None if shape_a == shape_b else (
        f"{a.slug} trains {shape_a[0]} steps of {shape_a[1]}, {b.slug} {shape_b[0]} steps of {shape_b[1]}")


def _same_protocol_name(a: ProtocolGroup, b: ProtocolGroup, only_pair: bool) -> Optional[str]:
    """Probe and fine-tune share no setting to match: runs of one study (one protocol name) pair
    up, and so do the only probe and the only fine-tune protocol of a folder."""
    if a.name == b.name or only_pair:
        return None
    return f"{a.slug} and {b.slug} belong to different protocols ({a.name}, {b.name})"


_SEARCH_SETTINGS = {"regime"} | {f"settings.{name}" for name in
                                 ("search", "learning_rate", "learning_rates", "weight_decay", "weight_decays")}

IMAGENET_VS_RANDOM = Kind(
    key="imagenet_vs_random", title="ImageNet vs random-init features (linear probe)",
    short="ImageNet>random features", first="ImageNet features", second="random-init features",
    first_runs="probe runs on ImageNet features",
    second_runs="probe runs on random-init features (python -m tfbench.probe --init=random)",
    paper="The paper: features of ImageNet-trained networks are far better than those of the same "
          "networks at random initialisation.",
    first_side=_imagenet_probe, second_side=_random_probe, noted=lambda setting: False,
    incompatibility=_only_init_differs)
_FINETUNE_VS_SCRATCH_PAPER = ("The paper: fine-tuning beats training from scratch, by a large margin on small "
                              "datasets, and the two converge to similar accuracy on large datasets at long "
                              "schedules.")
FINETUNE_VS_SCRATCH = Kind(
    key="finetune_vs_scratch", title="Fine-tuning vs training from scratch, each with its own protocol",
    short="fine-tune>scratch", first="fine-tuned", second="from scratch",
    first_runs="fine-tune runs", second_runs="scratch runs of the same protocol (paper, or the same preset)",
    paper=_FINETUNE_VS_SCRATCH_PAPER,
    first_side=lambda g: g.group.regime == "finetune", second_side=lambda g: g.group.regime == "scratch",
    noted=lambda setting: setting not in _SEARCH_SETTINGS | {"settings.train_steps"},
    incompatibility=_same_protocol_name)
FINETUNE_VS_SCRATCH_EQUAL_STEPS = Kind(
    key="finetune_vs_scratch_equal_steps",
    title="Fine-tuning vs training from scratch, at equal steps and batch size (tfbench's view)",
    short="fine-tune>scratch (equal steps)", first="fine-tuned", second="from scratch",
    first_runs="fine-tune runs", second_runs="scratch runs with the fine-tune runs' steps and batch size",
    paper=_FINETUNE_VS_SCRATCH_PAPER + " This view is not the paper's: it holds the schedule equal.",
    first_side=FINETUNE_VS_SCRATCH.first_side, second_side=FINETUNE_VS_SCRATCH.second_side,
    noted=lambda setting: setting not in _SEARCH_SETTINGS, incompatibility=_equal_steps_and_batch)
FINETUNE_VS_SCRATCH_KINDS = (FINETUNE_VS_SCRATCH, FINETUNE_VS_SCRATCH_EQUAL_STEPS)
FINETUNE_VS_PROBE = Kind(
    key="finetune_vs_probe", title="Fine-tuning vs the linear probe",
    short="fine-tune>probe", first="fine-tuned", second="linear probe",
    first_runs="fine-tune runs", second_runs="probe runs on ImageNet features",
    paper="The paper: fine-tuning beats the linear probe on most datasets.",
    first_side=lambda g: g.group.regime == "finetune", second_side=_imagenet_probe,
    noted=lambda setting: setting in ("image_size", "precision"), incompatibility=_same_protocol_name)
KINDS = (IMAGENET_VS_RANDOM, FINETUNE_VS_SCRATCH, FINETUNE_VS_SCRATCH_EQUAL_STEPS, FINETUNE_VS_PROBE)


@dataclass(frozen=True)
class Pair:
    model: str
    dataset: str
    first: float  # test scores, fractions
    second: float


@dataclass(frozen=True)
class Comparison:
    """Paired scores of two compatible protocol groups, over the models and datasets both ran."""

    kind: Kind
    first: GroupAnalysis
    second: GroupAnalysis
    pairs: Tuple[Pair, ...]
    missing: Tuple[str, ...]  # pairs lacking a score on one side, with the reason
    notes: Tuple[str, ...]  # settings that differ beyond what the comparison is about

    def wins(self) -> int:
        return sum(p.first > p.second for p in self.pairs)

    def mean_difference(self) -> Optional[float]:
        """Mean of first - second over the pairs, in fractions; None without pairs."""
        return float(np.mean([p.first - p.second for p in self.pairs])) if self.pairs else None

    def sentence(self) -> str:
        sides = f"{self.first.group.slug} vs {self.second.group.slug}"
        if not self.pairs:
            return f"{self.kind.title} ({sides}): no (model, dataset) has an ok run on both sides."
        return (f"{self.kind.title} ({sides}): {self.kind.first} better on {self.wins()} of "
                f"{len(self.pairs)} (model, dataset) pairs, by {100 * self.mean_difference():+.1f} "
                "points on average.")

    def compact(self) -> str:
        if not self.pairs:
            return f"{self.kind.short} n/a"
        return f"{self.kind.short} {self.wins()}/{len(self.pairs)} ({100 * self.mean_difference():+.1f} pts)"


@dataclass(frozen=True)
class NotDrawn:
    """A comparison the folder cannot show, and which runs it lacks."""

    kind: Kind
    reason: str

    def sentence(self) -> str:
        return f"{self.kind.title}: not drawn: {self.reason}."


ComparisonOutcome = Union[Comparison, NotDrawn]


def pair_lines(outcomes: Sequence[Any], figure_names: Mapping[int, str], table: Callable[[Any], List[Dict[str, str]]],
               method: str, alt: str) -> List[str]:
    """Report lines per pair of groups: each outcome's sentence and, for one with a figure (by id in
    `figure_names`), its `table`, the `method`, the runs missing and the figure."""
    parts = []
    for outcome in outcomes:
        parts.append(outcome.sentence() + "\n")
        if id(outcome) in figure_names:
            parts += [markdown_table(table(outcome)), method + "\n"]
            if outcome.missing:
                parts.append("Missing (not counted): " + "; ".join(outcome.missing) + ".\n")
            parts.append(f"![{alt}]({figure_names[id(outcome)]})\n")
    return parts


def pair_figure_files(stem: str, drawable: Sequence[Any]) -> Dict[str, Any]:
    """File names of figures drawn per pair of groups (objects with a `comparison`): `<stem>.png`
    for one pair, `<stem>_<first slug>_<second slug>.png` for each of several."""
    return {(f"{stem}.png" if len(drawable) == 1 else
             f"{stem}_{o.comparison.first.group.slug}_{o.comparison.second.group.slug}.png"): o for o in drawable}


def _side_state(g: GroupAnalysis, model: str, dataset: str) -> str:
    statuses = [r["status"] for r in g.group.records
                if (r["experiment"]["model"], r["experiment"]["dataset"]) == (model, dataset)]
    return ", ".join(sorted(set(statuses))) or "no run"


def pair_up(kind: Kind, first: GroupAnalysis, second: GroupAnalysis) -> Comparison:
    """The pairs over the models and the datasets both groups ran; a cell without an ok score on
    one side is listed as missing, never counted as 0."""
    def ran(g: GroupAnalysis, field: str) -> List[str]:
        return sorted({r["experiment"][field] for r in g.group.records})

    models = [m for m in ran(first, "model") if m in ran(second, "model")]
    datasets = [d for d in ran(first, "dataset") if d in ran(second, "dataset")]
    pairs, missing = [], []
    for dataset in datasets:
        for model in models:
            a, b = first.table.score(model, dataset), second.table.score(model, dataset)
            if a is not None and b is not None:
                pairs.append(Pair(model, dataset, a, b))
            for side, label, score in ((first, kind.first, a), (second, kind.second, b)):
                if score is None:
                    missing.append(f"{label} ({side.group.slug}): {model} on {dataset} "
                                   f"({_side_state(side, model, dataset)})")
    notes = [f"{setting} differs: {value_a} ({first.group.slug}) vs {value_b} ({second.group.slug})"
             for setting, (value_a, value_b) in identity_diff(first.group.key, second.group.key).items()
             if kind.noted(setting)]
    for g, other in ((first, second), (second, first)):
        alone = ([f"model {m}" for m in ran(g, "model") if m not in models]
                 + [f"dataset {d}" for d in ran(g, "dataset") if d not in datasets])
        if alone:
            notes.append(f"only {g.group.slug} ran {', '.join(alone)}: not compared")
    return Comparison(kind, first, second, tuple(pairs), tuple(missing), tuple(notes))


def _different_training_sets(a: ProtocolGroup, b: ProtocolGroup) -> Optional[str]:
    """Runs on different training subsets never pair: the data-size curves compare those."""
    sizes = [g.key.get(TRAIN_SUBSET_FIELD) or "all" for g in (a, b)]
    return None if sizes[0] == sizes[1] else (
        f"{a.slug} trains on {sizes[0]} and {b.slug} on {sizes[1]} examples per class")


def compare(groups: Sequence[GroupAnalysis]) -> List[ComparisonOutcome]:
    """Every comparison of KINDS the groups allow, each compatible pair of groups once; a kind
    that none allows becomes a NotDrawn naming the runs it lacks."""
    outcomes: List[ComparisonOutcome] = []
    already = set()  # (first, second) group slugs a fine-tune vs scratch view has drawn
    for kind in KINDS:
        firsts = [g for g in groups if kind.first_side(g)]
        seconds = [g for g in groups if kind.second_side(g)]
        if not firsts or not seconds:
            lacking = [runs for runs, side in ((kind.first_runs, firsts), (kind.second_runs, seconds)) if not side]
            outcomes.append(NotDrawn(kind, f"no {' and no '.join(lacking)} in this folder"))
            continue
        only_pair = len(firsts) == len(seconds) == 1
        drawn, refused, repeated = [], [], False
        for first in firsts:
            for second in seconds:
                slugs = (first.group.slug, second.group.slug)
                why_not = (_different_training_sets(first.group, second.group)
                           or kind.incompatibility(first.group, second.group, only_pair))
                if why_not is None and kind in FINETUNE_VS_SCRATCH_KINDS and slugs in already:
                    repeated = True  # drawn above: the second view has nothing to add for this pair
                elif why_not is None:
                    drawn.append(pair_up(kind, first, second))
                    already.add(slugs)
                else:
                    refused.append(why_not)
        if drawn or refused or not repeated:
            outcomes += drawn or [NotDrawn(kind, "no compatible pair of protocols: " + "; ".join(refused))]
    return outcomes


def comparison_rows(comparison: Comparison, labels: Mapping[str, str]) -> List[Dict[str, str]]:
    kind = comparison.kind
    return [{"model": labels.get(p.model, p.model), "dataset": p.dataset,
             f"{kind.first} (%)": percent(p.first), f"{kind.second} (%)": percent(p.second),
             "difference (points)": f"{100.0 * (p.first - p.second):+.1f}"} for p in comparison.pairs]


@dataclass(frozen=True)
class Comparisons:
    """The report's section on every comparison: drawn, with its pairs and figure, or why not."""

    outcomes: Tuple[ComparisonOutcome, ...]
    labels: Mapping[str, str]

    def figure_files(self) -> Dict[str, Comparison]:
        """A figure per comparison with a pair to show (without one it would be a lone diagonal)."""
        comparisons = [c for c in self.outcomes if isinstance(c, Comparison) and c.pairs]
        files_by_name = {}
        for comparison in comparisons:
            name = comparison.kind.key
            if sum(c.kind is comparison.kind for c in comparisons) > 1:
                name += f"_{comparison.first.group.slug}_{comparison.second.group.slug}"
            files_by_name[f"{name}.png"] = comparison
        return files_by_name

    def markdown(self) -> List[str]:
        figure_names = {id(c): name for name, c in self.figure_files().items()}
        parts = ["## Comparisons of paired runs\n"]
        for outcome in self.outcomes:
            parts.append(f"### {outcome.kind.title}\n")
            parts.append(outcome.kind.paper + "\n")
            if isinstance(outcome, NotDrawn):
                parts.append(f"Not drawn: {outcome.reason}.\n")
                continue
            parts += [outcome.sentence() + "\n", markdown_table(comparison_rows(outcome, self.labels))]
            parts += [f"- {note}" for note in outcome.notes] + ([""] if outcome.notes else [])
            if outcome.missing:
                parts.append("Missing (not counted): " + "; ".join(outcome.missing) + ".\n")
            if id(outcome) in figure_names:
                parts.append(f"![{outcome.kind.title}]({figure_names[id(outcome)]})\n")
        return parts

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {name: figures.comparison_figure(c) for name, c in self.figure_files().items()}
