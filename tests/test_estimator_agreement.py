"""The report's estimators section on hand-made records: each estimator's weighted Kendall tau and
Pearson r with the probe's and the fine-tune's test scores, checked against scipy and numpy
computed here, beside ImageNet top-1 and the probe's seed-to-seed agreement."""

import json

import numpy as np
import pytest
from scipy import special, stats

from tfbench import files, results
from tfbench.experiment import Experiment
from tfbench.report import build as report
from tfbench.settings import EstimateSettings, ProbeSettings, TrainingSettings

TOP1 = {"mobilenet_v2": 0.713, "resnet50": 0.749, "efficientnet_lite0": 0.751, "resnet101": 0.764,
        "efficientnet_lite2": 0.776}
MODELS = list(TOP1)
DATASETS = {"digits": "top1", "fgvc_aircraft": "mean_per_class"}
SETTINGS = {"probe": ProbeSettings(), "finetune": TrainingSettings(search="small", train_steps=1000),
            "estimate": EstimateSettings()}


def _scores(seed):
    rng = np.random.default_rng(seed)
    return {(m, d): float(special.expit(rng.normal(0.5, 1.0))) for m in MODELS for d in DATASETS}


PROBE = {0: _scores(0), 1: _scores(1)}  # two seeds
FINETUNE = _scores(2)
PROBE_MEAN = {cell: (PROBE[0][cell] + PROBE[1][cell]) / 2 for cell in PROBE[0]}
KNN = {cell: float(v) for cell, v in zip(PROBE_MEAN, np.random.default_rng(3).uniform(size=len(PROBE_MEAN)))}


def _write(root, regime, model, dataset, seed=0, **fields):
    experiment = Experiment(regime=regime, model=model, dataset=dataset, output_dir=root, seed=seed,
                            settings=SETTINGS[regime])
    record = results.new_record(experiment, metric=DATASETS[dataset], started_at=results.now())
    record.update(fields, timings={"wall_seconds": 1.0})
    files.write_json_atomic(results.record_path(experiment), results.finish(record, "ok"))


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    for (model, dataset), score in PROBE_MEAN.items():
        for seed in PROBE:
            _write(root, "probe", model, dataset, seed, test_score=PROBE[seed][(model, dataset)])
        _write(root, "finetune", model, dataset, test_score=FINETUNE[(model, dataset)])
        _write(root, "estimate", model, dataset, estimates={
            "logme": 3.0 * score - 1.0,  # orders networks exactly as the probe does
            "knn_accuracy": KNN[(model, dataset)],
            "leep": -1.0 if model in ("resnet50", "resnet101") else None},  # two networks have a classifier
            details={} if model in ("resnet50", "resnet101") else {"not_applicable": {"leep": "no classifier"}})
    return report.analyze(results.collect(root), TOP1.get, output_dir=root, resamples=200)


def _pairing(analysis, target):
    (found,) = [p for p in analysis.estimators.pairings if p.target.group.regime == target]
    return found


def _logit(scores):
    return special.logit(np.asarray(scores))


def test_estimates_form_no_score_table_of_their_own(analysis):
    assert sorted(g.group.regime for g in analysis.groups.values()) == ["finetune", "probe"]
    assert [p.target.group.regime for p in analysis.estimators.pairings] == ["probe", "finetune"]


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_agreement_with_the_probe_against_scipy(analysis, dataset):
    pairing = _pairing(analysis, "probe")
    truth = _logit([PROBE_MEAN[(m, dataset)] for m in MODELS])
    logme = pairing.cells[("logme", dataset)]
    assert logme.n == 5 and logme.tau == pytest.approx(1.0) and logme.r == pytest.approx(
        np.corrcoef([3.0 * PROBE_MEAN[(m, dataset)] - 1.0 for m in MODELS], truth)[0, 1])
    knn = pairing.cells[("knn_accuracy", dataset)]
    knn_values = [KNN[(m, dataset)] for m in MODELS]
    assert knn.tau == pytest.approx(stats.weightedtau(knn_values, truth).statistic)
    assert knn.r == pytest.approx(stats.pearsonr(knn_values, truth).statistic)
    baseline = pairing.cells[("imagenet_top1", dataset)]
    assert baseline.tau == pytest.approx(stats.weightedtau([TOP1[m] for m in MODELS], truth).statistic)
    noise = pairing.cells[("seed_to_seed", dataset)]
    seeds = [_logit([PROBE[s][(m, dataset)] for m in MODELS]) for s in (0, 1)]
    assert noise.tau == pytest.approx(stats.weightedtau(*seeds).statistic)
    assert noise.r == pytest.approx(stats.pearsonr(*seeds).statistic)
    leep = pairing.cells[("leep", dataset)]
    assert leep.tau is None and leep.reason == "2 networks"


def test_overall_is_the_mean_over_datasets_and_the_fine_tune_has_one_seed(analysis):
    pairing = _pairing(analysis, "finetune")
    expected = np.mean([stats.weightedtau([KNN[(m, d)] for m in MODELS],
                                          _logit([FINETUNE[(m, d)] for m in MODELS])).statistic
                        for d in DATASETS])
    assert pairing.overall("knn_accuracy").tau == pytest.approx(expected)
    assert pairing.cells[("seed_to_seed", "digits")].reason == "one seed"
    assert pairing.overall("leep").tau is None and "2 networks" in pairing.overall("leep").reason


def test_report_shows_the_table(analysis):
    markdown = report.report_markdown(analysis)
    section = markdown[markdown.index("## Transferability estimators"):]
    assert "| LogME | 1.00 |" in section and "ImageNet top-1 (baseline)" in section
    assert "n/a (2 networks)" in section and "n/a (one seed)" in section
    (line,) = [line for line in section.splitlines() if line.startswith("- Not applicable")]
    assert line.startswith("- Not applicable in `estimate`: LEEP for ") and line.endswith(" (no classifier).")
    assert line.count(" on ") == 3 * len(DATASETS) and "mobilenet_v2 on fgvc_aircraft" in line
    saved = json.loads(json.dumps(report.analysis_json(analysis)))["estimator_agreement"]
    assert saved["pairings"][0]["per_dataset"]["logme"]["digits"]["weighted_tau"] == pytest.approx(1.0)
