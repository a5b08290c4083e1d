"""The correlation with ImageNet split by training-set size: small datasets against large ones.

Kornblith, Shlens & Le (2019), section 4.3: trained from scratch, ImageNet top-1 predicts transfer
far less on the datasets with fewer than 10,000 training images (r = 0.29) than on the larger ones
(r = 0.86): a small dataset does not let a from-scratch network use its architecture's advantage.
Per protocol group, tfbench repeats the group's own analysis (tfbench.report.analysis.analyze_group: mean
log odds over the datasets, models complete on them, r with its bootstrap interval) on the records
of the datasets under protocol.SMALL_DATASET_TRAIN_EXAMPLES and again on those at or above it, so
that the split r is computed exactly as the whole one.

A dataset's training-set size is the train+val count of the paper's dataset table (the catalog's
`paper_sizes[0]`): the images the paper's final models trained on, the count its 10k split is drawn
on (7 datasets under, 5 over), and what tfbench retrains on too. A dataset the paper did not use
falls back to its fixed subset's train+val pool, else to the train and val counts a probe record
states; one without any of these stays out of both size groups, and the report says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from tfbench import protocol
from tfbench.report.analysis import GroupAnalysis, ImageNetTop1, analyze_group
from tfbench.report.cells import markdown_table
from tfbench.report.correlation import BOOTSTRAP_RESAMPLES, CONFIDENCE
from tfbench.datasets import catalog

UNDER, OVER = "under_10k", "over_10k"  # the keys of protocol.PAPER_SCRATCH_R_BY_SIZE
SIZE_GROUPS = (UNDER, OVER)
THRESHOLD = protocol.SMALL_DATASET_TRAIN_EXAMPLES
SIZE_TITLES = {UNDER: f"under {THRESHOLD:,} training images", OVER: f"{THRESHOLD:,} or more training images"}
FIGURE_FILE = "size_split.png"
PAPER_FINDING = (
    "The paper: trained from scratch, r = {under:.2f} over the datasets under {threshold:,} training images "
    "and {over:.2f} over the larger ones; each group's r here is its whole r (mean log odds against "
    "ImageNet top-1) over only the datasets of that size.").format(
        under=protocol.PAPER_SCRATCH_R_BY_SIZE[UNDER], over=protocol.PAPER_SCRATCH_R_BY_SIZE[OVER],
        threshold=THRESHOLD)


@dataclass(frozen=True)
class DatasetSize:
    dataset: str
    train_examples: Optional[int]  # train+val images; None when unknown
    source: str

    def size_group(self) -> Optional[str]:
        if self.train_examples is None:
            return None
        return UNDER if self.train_examples < THRESHOLD else OVER


def dataset_size(dataset: str, records: Sequence[Mapping[str, Any]]) -> DatasetSize:
    """The dataset's training-set size and where it comes from (see the module docstring)."""
    if dataset in catalog.names():
        spec = catalog.registered_spec(dataset)
        if spec.paper_sizes:
            return DatasetSize(dataset, spec.paper_sizes[0], "the paper's train+val size")
        if spec.subset_per_class[0]:
            return DatasetSize(dataset, spec.subset_per_class[0] * spec.num_classes,
                               "the fixed subset's train+val pool")
    for record in records:
        examples = (record.get("details") or {}).get("examples") or {}
        if record["experiment"]["dataset"] == dataset and "train" in examples and "val" in examples:
            return DatasetSize(dataset, int(examples["train"]) + int(examples["val"]),
                               "train+val examples a probe record counted")
    return DatasetSize(dataset, None, "unknown (the catalog gives no count and no probe record states one)")


@dataclass(frozen=True)
class SizeGroupCorrelation:
    """One protocol group's r over the datasets of one size group (`within`: the group's analysis
    restricted to their records; no datasets leaves it empty, with r undefined)."""

    whole: GroupAnalysis
    size_group: str
    datasets: Tuple[str, ...]
    within: GroupAnalysis

    @property
    def paper_r(self) -> Optional[float]:
        """The paper's split r: it gives one for training from scratch only."""
        scratch = self.whole.group.regime == "scratch"
        return protocol.PAPER_SCRATCH_R_BY_SIZE[self.size_group] if scratch else None

    def why_no_r(self) -> Optional[str]:
        if not self.datasets:
            return f"no ok run on a dataset with {SIZE_TITLES[self.size_group]}"
        return self.within.correlation.reason


@dataclass(frozen=True)
class SizeSplit:
    sizes: Mapping[str, DatasetSize]  # every dataset of the groups
    splits: Tuple[SizeGroupCorrelation, ...]  # per group, UNDER then OVER

    def unplaced(self) -> List[str]:
        return [d for d, size in self.sizes.items() if size.size_group() is None]

    def rows(self) -> List[Dict[str, str]]:
        rows = []
        for split in self.splits:
            c = split.within.correlation
            why = split.why_no_r()
            datasets = [f"{d} ({self.sizes[d].train_examples:,})" for d in split.datasets]
            rows.append({
                "group": split.whole.group.slug, "regime": split.whole.group.regime,
                "size group": SIZE_TITLES[split.size_group], "datasets": ", ".join(datasets) or "none",
                "n models": str(c.n), "r": "n/a" if why else f"{c.r:.2f}",
                f"{100 * CONFIDENCE:.0f}% bootstrap interval": f"n/a: {why}" if why else c.interval(),
                "paper's r": "-" if split.paper_r is None else f"{split.paper_r:.2f}"})
        return rows

    def notes(self) -> List[str]:
        """Which datasets have no size, and which models each split leaves out (the records missing)."""
        notes = [f"{d}: training-set size {self.sizes[d].source}; in neither size group"
                 for d in self.unplaced()]
        for split in self.splits:
            for m in split.within.models:
                if m.excluded:
                    notes.append(f"{split.whole.group.slug}, {SIZE_TITLES[split.size_group]}: "
                                 f"{m.label} left out ({m.excluded})")
        return notes

    def markdown(self) -> List[str]:
        """The report's section."""
        parts = [f"## Correlation with ImageNet top-1 by training-set size ({THRESHOLD:,} images)\n",
                 PAPER_FINDING + "\n", markdown_table(self.rows())]
        parts += [f"- {note}" for note in self.notes()] + ([""] if self.notes() else [])
        if self.has_points():
            parts.append(f"![r by training-set size]({FIGURE_FILE})\n")
        return parts

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {FIGURE_FILE: figures.size_split_figure(self)} if self.has_points() else {}

    def has_points(self) -> bool:
        """Whether the figure would show a model: some split has a dataset and a model in r."""
        return any(s.datasets and s.within.included() for s in self.splits)

    def figure_titles(self) -> List[str]:
        return [f"{s.whole.title()}\n{SIZE_TITLES[s.size_group]}: r = "
                + (s.within.correlation.describe() if s.datasets else "n/a")
                + ("" if s.paper_r is None else f"; paper: {s.paper_r:.2f}") for s in self.splits]

    def to_json(self) -> Dict[str, Any]:
        return {
            "threshold_train_examples": THRESHOLD,
            "dataset_sizes": {d: {"train_examples": s.train_examples, "source": s.source,
                                  "size_group": s.size_group()} for d, s in self.sizes.items()},
            "splits": [{"group": s.whole.group.slug, "regime": s.whole.group.regime,
                        "size_group": s.size_group, "datasets": list(s.datasets),
                        "correlation": s.within.correlation.to_json(), "reason": s.why_no_r(),
                        "paper_r": s.paper_r,
                        "models": [{"model": m.model, "imagenet_top1": m.imagenet_top1,
                                    "mean_log_odds": m.mean_log_odds, "excluded": m.excluded}
                                   for m in s.within.models]}
                       for s in self.splits],
        }


def split_by_size(groups: Iterable[GroupAnalysis], top1: Mapping[str, ImageNetTop1],
                  labels: Mapping[str, str], resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = 0) -> SizeSplit:
    """Each group's analysis over its small datasets and over its large ones."""
    groups = list(groups)
    records = [r for g in groups for r in g.group.records]
    sizes = {d: dataset_size(d, records) for d in sorted({d for g in groups for d in g.table.datasets})}
    splits = []
    for whole in groups:
        for size_group in SIZE_GROUPS:
            datasets = tuple(d for d in whole.table.datasets if sizes[d].size_group() == size_group)
            kept = tuple(r for r in whole.group.records if r["experiment"]["dataset"] in datasets)
            within = analyze_group(dataclasses.replace(whole.group, records=kept), top1, labels,
                                   resamples, seed)
            splits.append(SizeGroupCorrelation(whole, size_group, datasets, within))
    return SizeSplit(sizes, tuple(splits))
