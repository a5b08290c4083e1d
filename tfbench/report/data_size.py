"""Score against training-set size, per dataset and regime: the paper's Figure 9.

Runs made with `--train_examples_per_class=N` train on N examples of every class; records without
the setting trained on the whole training set ("all", the curve's last point). Per dataset that has
any subset run: a table of examples per class x line (a regime, or a regime and protocol when a
regime has several) holding the mean test score over networks, the same per network, the gap
fine-tune minus scratch at each size over the networks that ran both, and a figure with one panel
per dataset. Several seeds of one (line, size, network) count as their mean; each seed draws its
own subset, so the spread over seeds is the paper's error bar (it trains on three random subsets):
the standard error over seeds of the mean over networks, shown when two or more seeds ran. Only
ok runs enter;
the probe of randomly initialised networks is left out (the figure is about ImageNet training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfbench.report.cells import MISSING, markdown_table, percent
from tfbench.report.protocol_groups import TRAIN_SUBSET_FIELD, protocol_id, protocol_key, protocol_name
from tfbench.settings import REGIMES

ALL = "all"
FIGURE_FILE = "data_size.png"
FULL_POSITION = 2.0  # "all" is drawn at this multiple of the largest subset size on the log axis
Size = Optional[int]  # None: the whole training set


@dataclass(frozen=True)
class DatasetCurves:
    """One dataset's scores by (line, size, model), each the mean over that cell's seeds."""

    dataset: str
    metric: str
    sizes: Tuple[Size, ...]  # ascending, the whole training set last
    lines: Tuple[str, ...]
    regimes: Mapping[str, str]  # line -> regime
    scores: Mapping[Tuple[str, Size, str], float]
    by_seed: Mapping[Tuple[str, Size, str], Mapping[int, float]]  # each seed's score of a cell

    def standard_error(self, line: str, size: Size) -> Optional[float]:
        """Standard error over seeds of the mean over networks (seeds every network ran); None
        below two seeds."""
        models = self.models(line, size)
        seeds = set.intersection(*(set(self.by_seed[(line, size, m)]) for m in models)) if models else set()
        if len(seeds) < 2:
            return None
        means = [np.mean([self.by_seed[(line, size, m)][seed] for m in models]) for seed in sorted(seeds)]
        return float(np.std(means, ddof=1) / np.sqrt(len(means)))

    def models(self, line: str, size: Size) -> List[str]:
        return sorted(m for (l, s, m) in self.scores if l == line and s == size)

    def mean(self, line: str, size: Size) -> Optional[float]:
        values = [self.scores[(line, size, m)] for m in self.models(line, size)]
        return float(np.mean(values)) if values else None

    def gap(self, first: str, second: str, size: Size) -> Tuple[Optional[float], int]:
        """Mean of first minus second over the networks with both at this size, and their count."""
        both = sorted(set(self.models(first, size)) & set(self.models(second, size)))
        if not both:
            return None, 0
        return float(np.mean([self.scores[(first, size, m)] - self.scores[(second, size, m)]
                              for m in both])), len(both)


@dataclass(frozen=True)
class DataSizeAnalysis:
    curves: Tuple[DatasetCurves, ...]
    missing: Optional[str]  # why nothing is drawn, or None

    def markdown(self) -> List[str]:
        """The report's section."""
        parts = ["## Score against training-set size (the paper's Figure 9)\n"]
        if self.missing:
            return parts + [f"Not drawn: {self.missing}.\n"]
        for curves in self.curves:
            parts += [f"### {curves.dataset} ({curves.metric})\n",
                      "Mean test score over networks (n = networks; ± the standard error over seeds, each "
                      "seed a different random subset):\n", markdown_table(mean_rows(curves)),
                      "Per network (%):\n", markdown_table(model_rows(curves))]
            gaps = gap_rows(curves)
            parts += (["Fine-tuning minus training from scratch, paired by network:\n", markdown_table(gaps)] if gaps else
                      ["Fine-tune minus scratch: not drawn (needs exactly one fine-tune and one scratch "
                       "protocol on this dataset).\n"])
        return parts + [f"![Score against examples per class]({FIGURE_FILE})\n"]

    def figures(self, figures: Any) -> Dict[str, Any]:
        return {FIGURE_FILE: figures.data_size_figure(self)} if self.curves else {}


def size_label(size: Size) -> str:
    return ALL if size is None else str(size)


def _lines(records: Sequence[Mapping[str, Any]]) -> Dict[int, Tuple[str, str]]:
    """id(record) -> (line, regime): the regime, or "regime name [id]" when the regime has
    several protocols (the protocol without the training-set size)."""
    protocols: Dict[str, Dict[str, str]] = {}
    keys = {}
    for record in records:
        experiment = record["experiment"]
        key = {k: v for k, v in protocol_key(experiment).items() if k != TRAIN_SUBSET_FIELD}
        keys[id(record)] = (experiment["regime"], protocol_id(key))
        protocols.setdefault(experiment["regime"], {})[protocol_id(key)] = protocol_name(record)
    return {rid: (regime if len(protocols[regime]) == 1 else f"{regime} {protocols[regime][pid]} [{pid}]", regime)
            for rid, (regime, pid) in keys.items()}


def analyze(records: Sequence[Mapping[str, Any]]) -> DataSizeAnalysis:
    """The curves of every dataset that has at least one ok run on a training subset."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("test_score") is not None
          and r["experiment"].get("settings", {}).get("init") != "random"]
    subset_datasets = sorted({r["experiment"]["dataset"] for r in ok
                              if r["experiment"].get(TRAIN_SUBSET_FIELD) is not None})
    if not subset_datasets:
        return DataSizeAnalysis((), "no ok run on a training subset (--train_examples_per_class=N; "
                            "flags/data_size.flags runs the paper's sizes)")
    lines = _lines(ok)
    curves = []
    for dataset in subset_datasets:
        cells: Dict[Tuple[str, Size, str], Dict[int, float]] = {}
        regimes, metric = {}, None
        for record in (r for r in ok if r["experiment"]["dataset"] == dataset):
            line, regime = lines[id(record)]
            regimes[line] = regime
            metric = record.get("metric")
            cell = (line, record["experiment"].get(TRAIN_SUBSET_FIELD), record["experiment"]["model"])
            cells.setdefault(cell, {})[int(record["experiment"].get("seed", 0))] = float(record["test_score"])
        sizes = sorted({s for _, s, _ in cells}, key=lambda s: (s is None, s or 0))
        order = sorted(regimes, key=lambda l: (REGIMES.index(regimes[l]) if regimes[l] in REGIMES else len(REGIMES), l))
        curves.append(DatasetCurves(dataset, metric or "", tuple(sizes), tuple(order), regimes,
                                    {cell: float(np.mean(list(seeds.values()))) for cell, seeds in cells.items()},
                                    cells))
    return DataSizeAnalysis(tuple(curves), None)


def mean_rows(curves: DatasetCurves) -> List[Dict[str, str]]:
    """Examples per class x line: mean test score (%) over networks, with how many, and its
    standard error over seeds (subsets) when there are several."""
    def cell(line: str, size: Size) -> str:
        if not curves.models(line, size):
            return MISSING
        error = curves.standard_error(line, size)
        spread = "" if error is None else f" ± {percent(error)}"
        return f"{percent(curves.mean(line, size))}{spread} (n={len(curves.models(line, size))})"

    return [{"examples per class": size_label(size), **{f"{line} (%)": cell(line, size) for line in curves.lines}}
            for size in curves.sizes]


def model_rows(curves: DatasetCurves) -> List[Dict[str, str]]:
    """Per network: its score (%) for every line and size."""
    models = sorted({m for _, _, m in curves.scores})
    return [{"model": model,
             **{f"{line} @ {size_label(size)}": percent(curves.scores.get((line, size, model)))
                for line in curves.lines for size in curves.sizes}}
            for model in models]


def regime_pair(curves: DatasetCurves, first: str = "finetune", second: str = "scratch"
                ) -> Optional[Tuple[str, str]]:
    """The one line of each regime, or None when a regime has none or several."""
    found = [[l for l in curves.lines if curves.regimes[l] == regime] for regime in (first, second)]
    return (found[0][0], found[1][0]) if all(len(f) == 1 for f in found) else None


def gap_rows(curves: DatasetCurves) -> List[Dict[str, str]]:
    """Fine-tune minus scratch (points) at each size, over the networks that ran both."""
    pair = regime_pair(curves)
    if pair is None:
        return []
    rows = []
    for size in curves.sizes:
        gap, count = curves.gap(*pair, size)
        rows.append({"examples per class": size_label(size),
                     "fine-tune minus scratch (points)": "-" if gap is None else f"{100.0 * gap:+.1f}",
                     "networks": str(count)})
    return rows
