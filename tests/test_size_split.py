"""The correlation with ImageNet split by training-set size, on hand-written run records: r over
each size group checked against numpy computed here, the datasets' sizes and their sources, the
table's n/a reasons and the figure's panels."""

import json

import numpy as np
import pytest

from test_report import TOP1, _report, _write
from tfbench import protocol
from tfbench.report import figures, size_split

FOUR = ["mobilenet_v2", "resnet50", "efficientnet_lite0", "resnet101"]
# dtd (3,760) and oxford_flowers102 (2,040) have under 10,000 training images, cifar10 (50,000)
# and food101 (75,750) more.
SCRATCH = {"mobilenet_v2": {"dtd": 0.31, "oxford_flowers102": 0.52, "cifar10": 0.80, "food101": 0.55},
           "resnet50": {"dtd": 0.40, "oxford_flowers102": 0.45, "cifar10": 0.86, "food101": 0.66},
           "efficientnet_lite0": {"dtd": 0.29, "oxford_flowers102": 0.50, "cifar10": 0.85, "food101": 0.63},
           "resnet101": {"dtd": 0.36, "oxford_flowers102": 0.48, "cifar10": 0.88}}  # food101 never ran
FINETUNE = {"mobilenet_v2": {"dtd": 0.62}, "resnet50": {"dtd": 0.70}, "efficientnet_lite0": {"dtd": 0.69}}
PROBE = {"mobilenet_v2": {"cifar10": 0.85}, "resnet50": {"cifar10": 0.88}}


def _numpy_r(scores, datasets):
    """r between top-1 and the mean of log odds over `datasets`, over the models that ran them all."""
    models = [m for m in scores if all(d in scores[m] for d in datasets)]
    means = [np.mean([np.log(scores[m][d] / (1 - scores[m][d])) for d in datasets]) for m in models]
    return np.corrcoef([TOP1[m] for m in models], means)[0, 1], models


@pytest.fixture()
def split_report(tmp_path):
    for regime, scores in (("scratch", SCRATCH), ("finetune", FINETUNE), ("probe", PROBE)):
        for model, by_dataset in scores.items():
            for dataset, score in by_dataset.items():
                _write(str(tmp_path), regime, model, dataset, score)
    analysis, paths, _ = _report(tmp_path)
    return analysis, paths, tmp_path / "report"


def test_dataset_sizes_come_from_the_paper_then_the_subset_then_a_probe_record():
    probe = {"experiment": {"dataset": "digits"}, "details": {"examples": {"train": 1150, "val": 287, "test": 360}}}
    sizes = {d: size_split.dataset_size(d, [probe]) for d in
             ("dtd", "cifar10", "fashion_mnist_mini", "digits", "fashion_mnist", "folder:/data/mine")}
    assert {d: s.train_examples for d, s in sizes.items()} == {
        "dtd": 3760, "cifar10": 50000, "fashion_mnist_mini": 3000, "digits": 1437, "fashion_mnist": None,
        "folder:/data/mine": None}
    assert [sizes[d].size_group() for d in ("dtd", "cifar10", "digits", "fashion_mnist")] == [
        size_split.UNDER, size_split.OVER, size_split.UNDER, None]
    assert sizes["dtd"].source == "the paper's train+val size"
    assert size_split.DatasetSize("x", 9999, "").size_group() == size_split.UNDER
    assert size_split.DatasetSize("x", 10000, "").size_group() == size_split.OVER
    assert size_split.THRESHOLD == protocol.SMALL_DATASET_TRAIN_EXAMPLES == 10_000


def test_r_per_size_group_matches_numpy(split_report):
    analysis, _, report_dir = split_report
    split = {(s.whole.group.slug, s.size_group): s for s in size_split.split_by_size(
        analysis.groups.values(), analysis.top1, analysis.labels, resamples=200).splits}
    under_r, under_models = _numpy_r(SCRATCH, ["dtd", "oxford_flowers102"])
    over_r, over_models = _numpy_r(SCRATCH, ["cifar10", "food101"])
    assert len(under_models) == 4 and len(over_models) == 3
    under, over = split[("scratch", size_split.UNDER)], split[("scratch", size_split.OVER)]
    assert under.datasets == ("dtd", "oxford_flowers102") and over.datasets == ("cifar10", "food101")
    assert under.within.correlation.r == pytest.approx(under_r, abs=1e-12) and under.within.correlation.n == 4
    assert over.within.correlation.r == pytest.approx(over_r, abs=1e-12) and over.within.correlation.n == 3
    assert {m.model: m.excluded for m in over.within.models}["resnet101"] == "no ok run on food101"
    assert (under.paper_r, over.paper_r) == (0.29, 0.86)
    assert split[("finetune", size_split.OVER)].why_no_r() == (
        "no ok run on a dataset with 10,000 or more training images")
    assert split[("probe", size_split.OVER)].why_no_r() == "needs at least 3 models, has 2"
    assert split[("finetune", size_split.UNDER)].paper_r is None

    with open(report_dir / "report.json") as handle:
        entry = json.load(handle)["size_split"]
    assert entry["threshold_train_examples"] == 10_000
    assert entry["dataset_sizes"]["food101"] == {"train_examples": 75750, "size_group": "over_10k",
                                                 "source": "the paper's train+val size"}
    scratch_over = next(s for s in entry["splits"] if (s["group"], s["size_group"]) == ("scratch", "over_10k"))
    assert scratch_over["correlation"]["r"] == pytest.approx(over_r, abs=1e-12)


def test_table_says_why_there_is_no_r_and_figure_has_two_panels_per_group(split_report):
    analysis, paths, report_dir = split_report
    with open(report_dir / "report.md") as handle:
        section = handle.read().split("## Correlation with ImageNet top-1 by training-set size")[1]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| group")]
    by_key = {(row[0], row[2]): row for row in rows}
    assert by_key[("scratch", "under 10,000 training images")][3] == "dtd (3,760), oxford_flowers102 (2,040)"
    assert by_key[("scratch", "under 10,000 training images")][7] == "0.29"
    assert by_key[("scratch", "10,000 or more training images")][7] == "0.86"
    probe_over = by_key[("probe", "10,000 or more training images")]
    assert probe_over[5] == "n/a" and probe_over[6] == "n/a: needs at least 3 models, has 2"
    finetune_over = by_key[("finetune", "10,000 or more training images")]
    assert finetune_over[3] == "none" and "no ok run on a dataset with 10,000 or more" in finetune_over[6]
    assert "scratch, 10,000 or more training images: resnet101 left out (no ok run on food101)" in section
    assert "![r by training-set size](size_split.png)" in section

    split = size_split.split_by_size(analysis.groups.values(), analysis.top1, analysis.labels, resamples=200)
    figure = figures.size_split_figure(split)
    assert len(figure.axes) == 2 * len(analysis.groups)
    panels = dict(zip([(s.whole.group.slug, s.size_group) for s in split.splits], figure.axes))
    scratch_under = panels[("scratch", size_split.UNDER)].collections[0].get_offsets()
    means = {m: np.mean([np.log(SCRATCH[m][d] / (1 - SCRATCH[m][d])) for d in ("dtd", "oxford_flowers102")])
             for m in FOUR}
    np.testing.assert_allclose(sorted(map(tuple, scratch_under)), sorted((100 * TOP1[m], means[m]) for m in FOUR))
    assert "size_split.png" in {p.split("/")[-1] for p in paths}
