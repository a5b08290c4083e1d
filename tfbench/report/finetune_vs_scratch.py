"""Fine-tuning against training from scratch, dataset by dataset (the paper's Figure 7).

Kornblith, Shlens & Le (2019), Figure 7: per dataset, each network's test score fine-tuned from
ImageNet and trained from random initialisation, against its ImageNet top-1. Pretraining helps
most on small datasets, and on some (the paper: Stanford Cars, FGVC Aircraft)
the gap nearly closes; one number over all datasets hides that. This view splits each compatible
fine-tune vs scratch comparison (tfbench.report.comparisons: each regime's own protocol, as the
paper pairs them, then tfbench's equal-steps view; paired by model and dataset) by dataset: the networks' scores on both sides, the mean gap and how many networks
fine-tuning wins. When no comparison can be drawn it names the runs each side lacks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from tfbench.report.analysis import GroupAnalysis
from tfbench.report.cells import MISSING, markdown_table, percent
from tfbench.report.comparisons import FINETUNE_VS_SCRATCH, FINETUNE_VS_SCRATCH_KINDS, Comparison, ComparisonOutcome

FILE_STEM = "finetune_vs_scratch_per_dataset"


@dataclass(frozen=True)
class PerDataset:
    """One fine-tune vs scratch comparison split by dataset: `by_dataset` holds, per dataset with
    at least one pair, the comparison restricted to that dataset's pairs."""

    comparison: Comparison
    by_dataset: Mapping[str, Comparison]
    file_name: str

    def has_points(self) -> bool:
        """Whether the figure would show a network: one with a known ImageNet top-1."""
        return len(self.unplotted()) < len(self.models())

    def top1(self, model: str) -> Optional[float]:
        return next(m.imagenet_top1 for m in self.comparison.first.models if m.model == model)

    def label(self, model: str) -> str:
        return next(m.label for m in self.comparison.first.models if m.model == model)

    def models(self) -> List[str]:
        """The networks of the pairs, by ImageNet top-1 (unknown last)."""
        models = {p.model for p in self.comparison.pairs}
        return sorted(models, key=lambda m: (self.top1(m) is None, self.top1(m) or 0.0, m))

    def title(self) -> str:
        return (f"{self.comparison.kind.title}, per dataset ({self.comparison.first.group.slug} vs "
                f"{self.comparison.second.group.slug})")

    def rows(self) -> List[Dict[str, str]]:
        """One row per network (its scores on each dataset, fine-tuned / from scratch), then the mean
        gap and the count of networks fine-tuning wins, per dataset."""
        metrics = self.comparison.first.table.metrics
        columns = {d: f"{d} ({metrics[d]}): fine-tuned / scratch (%)" for d in self.by_dataset}
        rows = []
        for model in self.models():
            cells = {}
            for dataset, column in columns.items():
                pair = next((p for p in self.by_dataset[dataset].pairs if p.model == model), None)
                cells[column] = MISSING if pair is None else f"{percent(pair.first)} / {percent(pair.second)}"
            rows.append({"network": self.label(model), "ImageNet top-1 (%)": percent(self.top1(model)),
                         **cells})
        gaps = {columns[d]: f"{100.0 * c.mean_difference():+.1f}" for d, c in self.by_dataset.items()}
        wins = {columns[d]: f"{c.wins()} of {len(c.pairs)}" for d, c in self.by_dataset.items()}
        rows.append({"network": "mean gap (points)", "ImageNet top-1 (%)": "", **gaps})
        rows.append({"network": "fine-tuning better", "ImageNet top-1 (%)": "", **wins})
        return rows

    def unplotted(self) -> List[str]:
        return [self.label(m) for m in self.models() if self.top1(m) is None]

    def to_json(self) -> Dict[str, Any]:
        return {"drawn": True, "first": self.comparison.first.group.slug,
                "second": self.comparison.second.group.slug, "figure": self.file_name if self.has_points() else None,
                "datasets": {d: {"pairs": [{"model": p.model, "imagenet_top1": self.top1(p.model),
                                            "finetune": p.first, "scratch": p.second} for p in c.pairs],
                                 "mean_difference": c.mean_difference(), "finetune_better": c.wins(),
                                 "networks": len(c.pairs)}
                             for d, c in self.by_dataset.items()},
                "missing": list(self.comparison.missing)}


def split_by_dataset(comparison: Comparison, file_name: str) -> PerDataset:
    datasets = sorted({p.dataset for p in comparison.pairs})
    return PerDataset(comparison, {d: dataclasses.replace(comparison, pairs=tuple(
        p for p in comparison.pairs if p.dataset == d)) for d in datasets}, file_name)


@dataclass(frozen=True)
class FinetuneVsScratch:
    """Every drawn fine-tune vs scratch comparison split by dataset, or why none is drawn and
    which runs would draw it."""

    drawn: Tuple[PerDataset, ...]
    not_drawn: Optional[str]  # the comparisons' reason, when none is drawn
    missing_runs: Tuple[str, ...]  # when none is drawn: the runs each side lacks

    def markdown(self) -> List[str]:
        """The report's section."""
        parts = ["## Fine-tuning vs training from scratch, per dataset (Figure 7)\n",
                 FINETUNE_VS_SCRATCH.paper + "\n"]
        if not self.drawn:
            parts.append(f"Not drawn: {self.not_drawn}.\n")
            parts += [f"- missing: {runs}" for runs in self.missing_runs] + [""]
        for per_dataset in self.drawn:
            parts += [f"### {per_dataset.title()}\n", markdown_table(per_dataset.rows())]
            if per_dataset.comparison.missing:
                parts.append("Missing (not counted): " + "; ".join(per_dataset.comparison.missing) + ".\n")
            if per_dataset.unplotted():
                parts.append("Not in the figure (no known ImageNet top-1): "
                             f"{', '.join(per_dataset.unplotted())}.\n")
            if per_dataset.has_points():
                parts.append(f"![{per_dataset.title()}]({per_dataset.file_name})\n")
        return parts

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {p.file_name: figures.per_dataset_figure(p) for p in self.drawn if p.has_points()}

    def to_json(self) -> Dict[str, Any]:
        if not self.drawn:
            return {"drawn": False, "reason": self.not_drawn, "missing_runs": list(self.missing_runs)}
        return {"drawn": True, "comparisons": [p.to_json() for p in self.drawn]}


def _lacking(present: GroupAnalysis, other_regime: str) -> str:
    """The runs of `other_regime` that would pair with every (model, dataset) `present` ran."""
    group = present.group
    models = sorted({r["experiment"]["model"] for r in group.records})
    datasets = sorted({r["experiment"]["dataset"] for r in group.records})
    return (f"{other_regime} runs of {', '.join(models)} on {', '.join(datasets)} of protocol "
            f"{group.name} (to pair with {group.slug})")


def per_dataset(outcomes: Iterable[ComparisonOutcome], groups: Iterable[GroupAnalysis]) -> FinetuneVsScratch:
    """The per-dataset view of the fine-tune vs scratch outcomes of tfbench.report.comparisons.compare."""
    mine = [o for o in outcomes if o.kind in FINETUNE_VS_SCRATCH_KINDS]
    drawn = [o for o in mine if isinstance(o, Comparison)]
    if drawn:
        def name(c: Comparison) -> str:
            return (f"{FILE_STEM}.png" if len(drawn) == 1
                    else f"{FILE_STEM}_{c.first.group.slug}_{c.second.group.slug}.png")
        return FinetuneVsScratch(tuple(split_by_dataset(c, name(c)) for c in drawn), None, ())
    sides = {"finetune": "scratch", "scratch": "finetune"}
    missing = tuple(_lacking(g, sides[g.group.regime]) for g in groups if g.group.regime in sides)
    return FinetuneVsScratch((), "; ".join(f"{o.kind.title}: {o.reason}" for o in mine), missing)
