"""Fine-tuning vs training from scratch per dataset (the paper's Figure 7), on hand-written run
records: pairs, gaps and wins checked against numbers computed here, the figure's panels and
points counted, and the runs named when a regime is absent."""

import json

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from test_report import TOP1, _report, _write
from tfbench.report import figures, finetune_vs_scratch

TRAINING = {"search": "grid", "train_steps": 60}
MODELS = ["mobilenet_v2", "resnet50", "efficientnet_lite0"]
FINETUNE = {("mobilenet_v2", "dtd"): 0.61, ("resnet50", "dtd"): 0.66, ("efficientnet_lite0", "dtd"): 0.70,
            ("mobilenet_v2", "cifar10"): 0.90, ("resnet50", "cifar10"): 0.92, ("efficientnet_lite0", "cifar10"): 0.93}
SCRATCH = {("mobilenet_v2", "dtd"): 0.30, ("resnet50", "dtd"): 0.34, ("efficientnet_lite0", "dtd"): 0.28,
           ("mobilenet_v2", "cifar10"): 0.91, ("resnet50", "cifar10"): 0.90, ("efficientnet_lite0", "cifar10"): 0.89}


def _write_runs(root, finetune=FINETUNE, scratch=SCRATCH, scratch_steps=60):
    for (model, dataset), score in finetune.items():
        _write(root, "finetune", model, dataset, score, settings=TRAINING)
    for (model, dataset), score in scratch.items():
        _write(root, "scratch", model, dataset, score, settings={**TRAINING, "train_steps": scratch_steps})


@pytest.mark.parametrize("scratch_steps", [60, 240])  # equal, or each regime's own schedule
def test_per_dataset_gaps_wins_figure_and_json(tmp_path, scratch_steps):
    _write_runs(str(tmp_path), scratch_steps=scratch_steps)
    analysis, paths, _ = _report(tmp_path)
    view = finetune_vs_scratch.per_dataset(analysis.comparisons, analysis.groups.values())
    (per_dataset,) = view.drawn
    assert list(per_dataset.by_dataset) == ["cifar10", "dtd"]
    for dataset, comparison in per_dataset.by_dataset.items():
        gaps = [FINETUNE[(m, dataset)] - SCRATCH[(m, dataset)] for m in MODELS]
        assert comparison.mean_difference() == pytest.approx(np.mean(gaps), abs=1e-12)
        assert comparison.wins() == sum(g > 0 for g in gaps)
    assert per_dataset.by_dataset["dtd"].wins() == 3 and per_dataset.by_dataset["cifar10"].wins() == 2

    figure = figures.per_dataset_figure(per_dataset)
    assert len(figure.axes) == 2  # one panel per dataset
    for axes, dataset in zip(figure.axes, ["cifar10", "dtd"]):
        fine_tuned, scratch = [c for c in axes.collections if isinstance(c, PathCollection)]
        by_top1 = sorted(MODELS, key=TOP1.get)
        expected_x = [100 * TOP1[m] for m in by_top1]
        np.testing.assert_allclose(fine_tuned.get_offsets(), [[x, 100 * FINETUNE[(m, dataset)]]
                                                              for x, m in zip(expected_x, by_top1)])
        np.testing.assert_allclose(scratch.get_offsets(), [[x, 100 * SCRATCH[(m, dataset)]]
                                                           for x, m in zip(expected_x, by_top1)])

    rows = {row["network"]: row for row in per_dataset.rows()}
    assert rows["resnet50"]["dtd (top1): fine-tuned / scratch (%)"] == "66.0 / 34.0"
    assert rows["mean gap (points)"]["dtd (top1): fine-tuned / scratch (%)"] == "+35.0"
    assert rows["fine-tuning better"]["cifar10 (top1): fine-tuned / scratch (%)"] == "2 of 3"
    assert "finetune_vs_scratch_per_dataset.png" in {p.split("/")[-1] for p in paths}
    with open(tmp_path / "report" / "report.json") as handle:
        entry = json.load(handle)["finetune_vs_scratch_per_dataset"]
    dtd = entry["comparisons"][0]["datasets"]["dtd"]
    assert dtd["finetune_better"] == 3 and dtd["networks"] == 3
    assert dtd["mean_difference"] == pytest.approx(np.mean([FINETUNE[(m, "dtd")] - SCRATCH[(m, "dtd")]
                                                            for m in MODELS]))
    with open(tmp_path / "report" / "report.md") as handle:
        markdown = handle.read()
    assert "per dataset (Figure 7)" in markdown and "![" in markdown.split("per dataset (Figure 7)")[1]


def test_a_missing_run_is_named_and_a_network_without_top1_is_kept_out_of_the_figure(tmp_path):
    scratch = {cell: score for cell, score in SCRATCH.items() if cell != ("resnet50", "cifar10")}
    _write_runs(str(tmp_path), finetune={**FINETUNE, ("tiny", "dtd"): 0.5},
                scratch={**scratch, ("tiny", "dtd"): 0.2})
    analysis, _, _ = _report(tmp_path)
    (per_dataset,) = finetune_vs_scratch.per_dataset(analysis.comparisons, analysis.groups.values()).drawn
    assert [p.model for p in per_dataset.by_dataset["cifar10"].pairs] == ["efficientnet_lite0", "mobilenet_v2"]
    assert per_dataset.unplotted() == ["tiny"]
    figure = figures.per_dataset_figure(per_dataset)
    counts = [[len(c.get_offsets()) for c in axes.collections if isinstance(c, PathCollection)]
              for axes in figure.axes]
    assert counts == [[2, 2], [3, 3]]  # cifar10 lacks resnet50's scratch run; tiny has no top-1
    rows = {row["network"]: row for row in per_dataset.rows()}
    assert rows["resnet50"]["cifar10 (top1): fine-tuned / scratch (%)"] == "-"
    assert rows["tiny"]["ImageNet top-1 (%)"] == "-"
    with open(tmp_path / "report" / "report.md") as handle:
        markdown = handle.read()
    assert "from scratch (scratch): resnet50 on cifar10 (no run)" in markdown
    assert "Not in the figure (no known ImageNet top-1): tiny." in markdown


def test_without_scratch_runs_the_table_names_the_runs_missing(tmp_path):
    _write_runs(str(tmp_path), scratch={})
    analysis, paths, _ = _report(tmp_path)
    view = finetune_vs_scratch.per_dataset(analysis.comparisons, analysis.groups.values())
    assert view.drawn == ()
    expected = ("scratch runs of efficientnet_lite0, mobilenet_v2, resnet50 on cifar10, dtd of protocol "
                "mini (to pair with finetune)")
    assert view.missing_runs == (expected,)
    with open(tmp_path / "report" / "report.md") as handle:
        section = handle.read().split("per dataset (Figure 7)")[1]
    assert ("Not drawn: Fine-tuning vs training from scratch, each with its own protocol: no scratch runs of "
            "the same protocol (paper, or the same preset) in this folder") in section
    assert f"- missing: {expected}" in section
    assert not any(p.endswith("_per_dataset.png") for p in paths)
    with open(tmp_path / "report" / "report.json") as handle:
        entry = json.load(handle)["finetune_vs_scratch_per_dataset"]
    assert entry["drawn"] is False and entry["missing_runs"] == [expected]


def test_at_unequal_steps_the_regimes_own_protocols_pair_and_the_equal_steps_view_says_why_not(tmp_path):
    _write_runs(str(tmp_path), scratch_steps=600)
    analysis, _, _ = _report(tmp_path)
    (per_dataset,) = finetune_vs_scratch.per_dataset(analysis.comparisons, analysis.groups.values()).drawn
    assert per_dataset.comparison.kind.key == "finetune_vs_scratch"
    assert "each with its own protocol" in per_dataset.title()
    (equal_steps,) = [o for o in analysis.comparisons if o.kind.key == "finetune_vs_scratch_equal_steps"]
    assert "finetune trains 60 steps of 32, scratch 600 steps of 32" in equal_steps.reason
