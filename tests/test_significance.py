"""Best network per dataset with a paired bootstrap, and the stored test predictions it reads.

The bootstrap is checked on cases whose answer is known by hand; the stored predictions are
checked to give the record's score back, and to be ignored with a warning when they do not match.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tfbench import files, metrics, predictions, results
from tfbench.report import build as report, significance
from tfbench.experiment import Experiment
from tfbench.predictions import Predictions
from tfbench.settings import ProbeSettings

N = 200


def _single(labels, predicted, metric="top1", classes=10):
    return Predictions.of(metric, labels, np.eye(classes)[predicted])


def test_identical_networks_are_not_significantly_different():
    labels = np.arange(N) % 10
    guess = np.where(np.arange(N) % 3 == 0, (labels + 1) % 10, labels)
    verdict = significance.compare("d", "top1", {"a": [_single(labels, guess)], "b": [_single(labels, guess)]},
                                   resamples=200)
    (rival,) = verdict.rivals
    assert rival.difference == 0.0 and rival.p_value == 1.0 and not rival.significantly_worse


def test_a_network_wrong_on_half_the_examples_is_significantly_worse():
    labels = np.arange(N) % 10
    half_wrong = np.where(np.arange(N) < N // 2, labels, (labels + 1) % 10)
    verdict = significance.compare("d", "top1", {"right": [_single(labels, labels)],
                                                 "half": [_single(labels, half_wrong)]}, resamples=200)
    assert verdict.best == "right" and verdict.score == 1.0 and verdict.interval == (1.0, 1.0)
    (rival,) = verdict.rivals
    assert rival.difference == pytest.approx(0.5)
    assert rival.p_value == pytest.approx(1 / 201)  # the best is ahead on every resample
    assert rival.significantly_worse and rival.lower_bound > 0.3
    assert verdict.significantly_worse() == [rival] and verdict.not_significantly_worse() == []


def test_one_differing_example_gives_the_hand_computed_p_value():
    # The best is right on example 0 only: it is not ahead exactly when a resample misses that
    # example, with probability (1 - 1/N)^N = 0.367 (so not significantly worse).
    labels = np.zeros(N, dtype=int)
    other = np.where(np.arange(N) == 0, 1, 0)
    verdict = significance.compare("d", "top1", {"best": [_single(labels, labels, classes=2)],
                                                 "other": [_single(labels, other, classes=2)]},
                                   resamples=2000, seed=3)
    (rival,) = verdict.rivals
    assert rival.p_value == pytest.approx((1 - 1 / N) ** N, abs=0.04)
    assert not rival.significantly_worse


def test_each_metric_is_recomputed_on_every_resample_and_seeds_are_averaged():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, N)
    runs = {"a": [Predictions.of("mean_per_class", labels, rng.normal(size=(N, 5))) for _ in range(2)],
            "b": [Predictions.of("mean_per_class", labels, rng.normal(size=(N, 5)))]}
    resampled = significance.bootstrap_scores(runs, resamples=3, seed=5)
    index = np.random.default_rng(5).integers(0, N, N)  # the first resample, drawn the same way
    expected = np.mean([metrics.mean_per_class(labels[index], np.eye(5)[run.classes[index]]) for run in runs["a"]])
    assert resampled["a"][0] == pytest.approx(expected)
    voc_labels = rng.choice([-1, 0, 1], size=(N, 4), p=[0.1, 0.6, 0.3])
    voc_scores = rng.normal(size=(N, 4))
    voc = Predictions.of("map11", voc_labels, voc_scores)
    assert voc.score() == metrics.map11(voc_labels, voc_scores)
    assert voc.score(index) == metrics.map11(voc_labels[index], voc_scores[index])


def test_predicted_classes_give_the_scores_metric():
    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 7, 300), rng.normal(size=(300, 7))
    for metric in ("top1", "mean_per_class"):
        assert metrics.score_classes(metric, labels, scores.argmax(1)) == metrics.score(metric, labels, scores)
    with pytest.raises(ValueError, match="map11"):
        metrics.score_classes("map11", labels, scores.argmax(1))


def test_runs_on_other_test_examples_are_not_compared():
    labels = np.arange(N) % 10
    verdict = significance.compare("d", "top1", {"a": [_single(labels, labels)],
                                                 "b": [_single(labels[::-1], labels)]}, resamples=50)
    assert verdict.rivals == () and "differ" in verdict.missing["b"]


def _probe_record(root, model, dataset, metric, labels, scores, store=True):
    experiment = Experiment(regime="probe", model=model, dataset=dataset, output_dir=root,
                            settings=ProbeSettings(l2_search="fast"))
    record = results.new_record(experiment, metric=metric, started_at=results.now())
    answers = Predictions.of(metric, labels, scores)
    record["test_score"] = answers.score()
    if store:
        record[predictions.RECORD_KEY] = predictions.write(experiment.run_dir(), answers)
    files.write_json_atomic(results.record_path(experiment), results.finish(record, "ok"))
    return experiment, record


def test_a_damaged_or_mismatched_file_is_ignored_with_a_warning(tmp_path, capsys):
    labels = np.arange(N) % 10
    experiment, record = _probe_record(str(tmp_path), "tiny", "digits", "top1", labels, np.eye(10)[labels])
    folder = experiment.run_dir()
    assert predictions.read(folder, record).score() == record["test_score"] == 1.0
    assert os.path.getsize(os.path.join(folder, predictions.PREDICTIONS_FILE)) < 2000
    assert capsys.readouterr().err == ""

    assert predictions.read(folder, {**record, "test_score": 0.5}) is None  # another run's file
    assert "gives top1=1.000000, the record 0.5" in capsys.readouterr().err

    path = os.path.join(folder, predictions.PREDICTIONS_FILE)
    with open(path, "r+b") as handle:  # same size, other bytes
        handle.seek(40)
        handle.write(b"\0" * 8)
    assert predictions.read(folder, record) is None
    assert "does not match its recorded sha256" in capsys.readouterr().err

    files.write_bytes_atomic(path, b"not an npz")
    damaged = {**record, predictions.RECORD_KEY: {"file": predictions.PREDICTIONS_FILE, **files.fingerprint(path)}}
    assert predictions.read(folder, damaged) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ignoring the test predictions")
    assert "cannot be read" in err


def test_report_names_the_best_and_lists_runs_without_predictions(tmp_path):
    root = str(tmp_path / "runs")
    labels = np.arange(N) % 10
    half_wrong = np.where(np.arange(N) < N // 2, labels, (labels + 1) % 10)
    one_wrong = np.where(np.arange(N) == 0, (labels + 1) % 10, labels)
    _probe_record(root, "resnet50", "digits", "top1", labels, np.eye(10)[labels])
    _probe_record(root, "mobilenet_v2", "digits", "top1", labels, np.eye(10)[one_wrong])
    _probe_record(root, "resnet101", "digits", "top1", labels, np.eye(10)[half_wrong])
    _probe_record(root, "vgg16", "digits", "top1", labels, np.eye(10)[labels], store=False)
    out = io.StringIO()
    analysis, paths = report.report(root, str(tmp_path / "report"), imagenet_top1=lambda m: None, file=out)

    (verdict,) = analysis.best_networks["probe"]
    assert verdict.best == "resnet50"
    assert [r.model for r in verdict.not_significantly_worse()] == ["mobilenet_v2"]
    assert [r.model for r in verdict.significantly_worse()] == ["resnet101"]
    assert verdict.missing == {"vgg16": significance.NO_PREDICTIONS}
    markdown = open(os.path.join(tmp_path, "report", "report.md")).read()
    row = next(line for line in markdown.splitlines() if line.startswith("| digits | top1 | resnet50"))
    assert "resnet50 (100.0)" in row and "mobilenet_v2 (99.5, p=" in row and "| resnet101 |" in row
    assert "vgg16: no verified test predictions stored" in row
    saved = json.load(open(os.path.join(tmp_path, "report", "report.json")))["best_networks"]
    assert saved["groups"]["probe"]["digits"]["best"] == "resnet50"
    with Image.open(os.path.join(tmp_path, "report", "best_networks_probe.png")) as image:
        assert image.size[0] <= 2000 and image.size[1] <= 2000


def test_moved_runs_are_found_and_a_damaged_file_leaves_its_network_out(tmp_path, capsys):
    from tfbench.report.protocol_groups import group_records

    labels = np.arange(N) % 10
    wrong = (labels + 1) % 10
    for model, guess in (("resnet50", labels), ("mobilenet_v2", wrong), ("resnet101", labels[::-1])):
        experiment, _ = _probe_record(str(tmp_path / "runs"), model, "digits", "top1", labels, np.eye(10)[guess])
    files.write_bytes_atomic(os.path.join(experiment.run_dir(), predictions.PREDICTIONS_FILE), b"damaged")
    os.rename(tmp_path / "runs", tmp_path / "moved")  # records still name the old output_dir
    moved = str(tmp_path / "moved")
    (verdict,) = significance.analyze(group_records(results.collect(moved)), moved, resamples=100)["probe"]
    assert verdict.best == "resnet50" and [r.model for r in verdict.significantly_worse()] == ["mobilenet_v2"]
    assert verdict.missing == {"resnet101": significance.NO_PREDICTIONS}
    err = capsys.readouterr().err
    assert err.count("warning: ignoring the test predictions") == 1 and "resnet101" in err
