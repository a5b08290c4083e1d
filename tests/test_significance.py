"""Best network per dataset: the paper's paired permutation test, tfbench's paired bootstrap, and
the stored test predictions they read.

Both tests are checked on cases whose answer is known by hand (and the permutation test against
scipy.stats.permutation_test); the stored predictions are checked to give the record's score back,
and to be ignored with a warning when they do not match.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tfbench import files, metrics, predictions, results
from scipy import stats

from tfbench.report import build as report, permutation, significance
from tfbench.experiment import Experiment
from tfbench.predictions import Predictions
from tfbench.settings import ProbeSettings

N = 200
BOOTSTRAP = significance.Test(significance.BOOTSTRAP, resamples=200)


def _single(labels, predicted, metric="top1", classes=10):
    return Predictions.of(metric, labels, np.eye(classes)[predicted])


def test_identical_networks_are_not_significantly_different():
    labels = np.arange(N) % 10
    guess = np.where(np.arange(N) % 3 == 0, (labels + 1) % 10, labels)
    for test in (BOOTSTRAP, significance.Test()):
        verdict = significance.compare("d", "top1", {"a": [_single(labels, guess)], "b": [_single(labels, guess)]},
                                       test=test)
        (rival,) = verdict.rivals
        assert rival.difference == 0.0 and rival.p_value == 1.0 and not rival.significantly_worse


def test_a_network_wrong_on_half_the_examples_is_significantly_worse():
    labels = np.arange(N) % 10
    half_wrong = np.where(np.arange(N) < N // 2, labels, (labels + 1) % 10)
    verdict = significance.compare("d", "top1", {"right": [_single(labels, labels)],
                                                 "half": [_single(labels, half_wrong)]}, test=BOOTSTRAP)
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
                                   test=significance.Test(significance.BOOTSTRAP, resamples=2000), seed=3)
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
                                                 "b": [_single(labels[::-1], labels)]})
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
    (verdict,) = significance.analyze(group_records(results.collect(moved)), moved)["probe"]
    assert verdict.best == "resnet50" and [r.model for r in verdict.significantly_worse()] == ["mobilenet_v2"]
    assert verdict.missing == {"resnet101": significance.NO_PREDICTIONS}
    err = capsys.readouterr().err
    assert err.count("warning: ignoring the test predictions") == 1 and "resnet101" in err


def _discordant_top1(only_best, only_other, agree=N):
    """Top-1 runs on agree + only_best + only_other examples (class 0): both right on `agree`, only
    the best right on `only_best`, only the other right on `only_other`."""
    labels = np.zeros(agree + only_best + only_other, dtype=int)
    best = np.r_[np.zeros(agree + only_best, int), np.ones(only_other, int)]
    other = np.r_[np.zeros(agree, int), np.ones(only_best, int), np.zeros(only_other, int)]
    return _single(labels, best, classes=2), _single(labels, other, classes=2)


def test_top1_of_single_runs_is_the_exact_two_sided_mcnemar_test():
    # 10 discordant examples for the best, 2 for the other: P(X <= 2 or X >= 10), X ~ B(12, 1/2).
    best, other = _discordant_top1(10, 2)
    verdict = significance.compare("d", "top1", {"best": [best], "other": [other]})
    (rival,) = verdict.rivals
    assert rival.method == "exact McNemar"
    assert rival.p_value == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12, rel=1e-12)
    assert rival.significantly_worse


def test_the_paper_test_is_two_sided_where_the_bootstrap_flags_a_difference():
    # 8 against 2 discordant: two-sided exact p = 2 (1 + 10 + 45) / 2^10 = 0.109, not significant;
    # tfbench's one-sided bootstrap calls the same pair significantly worse.
    best, other = _discordant_top1(8, 2)
    runs = {"best": [best], "other": [other]}
    (paper,) = significance.compare("d", "top1", runs).rivals
    assert paper.p_value == pytest.approx(112 / 1024, rel=1e-12) and not paper.significantly_worse
    (bootstrap,) = significance.compare("d", "top1", runs, test=BOOTSTRAP).rivals
    assert bootstrap.method == significance.BOOTSTRAP and bootstrap.significantly_worse


def test_mean_per_class_enumerates_every_sign_pattern_when_they_are_few():
    # Class 0 has 2 examples (weight 1/4 each), class 1 has 4 (1/8 each). The best alone is right
    # on one class-0 and two class-1 examples, the other alone on one class-1 example: observed
    # difference 1/4 + 1/8 + 1/8 - 1/8 = 3/8; of the 16 sign patterns 4 reach >= 3/8 and 15 <= 3/8,
    # so p = 2 min(4, 15) / 16 = 0.5.
    labels = np.array([0, 0, 1, 1, 1, 1])
    best = np.array([0, 1, 1, 1, 1, 0])
    other = np.array([1, 1, 0, 0, 1, 1])
    a, b = (Predictions.of("mean_per_class", labels, np.eye(2)[guess]) for guess in (best, other))
    assert permutation.method("mean_per_class", [a], [b], permutation.SAMPLES) == "exact permutation"
    assert permutation.p_value("mean_per_class", [a], [b]) == pytest.approx(0.5, rel=1e-12)

    def difference(x, y, axis=-1):  # scipy's statistic: the per-class means of correctness
        return (np.mean(x[..., :2], axis) + np.mean(x[..., 2:], axis)) / 2 - (
            np.mean(y[..., :2], axis) + np.mean(y[..., 2:], axis)) / 2
    scipy_p = stats.permutation_test(((best == labels) * 1.0, (other == labels) * 1.0), difference,
                                     permutation_type="samples", vectorized=True, n_resamples=np.inf).pvalue
    assert scipy_p == pytest.approx(0.5, rel=1e-12)


def test_sampled_permutations_agree_with_scipy_for_seeds_averaged_per_class():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 120)
    runs_a = [Predictions.of("mean_per_class", labels, np.eye(3)[np.where(rng.random(120) < p, labels, (labels + 1) % 3)])
              for p in (0.85, 0.8)]
    runs_b = [Predictions.of("mean_per_class", labels, np.eye(3)[np.where(rng.random(120) < p, labels, (labels + 2) % 3)])
              for p in (0.7, 0.72)]
    assert permutation.method("mean_per_class", runs_a, runs_b, 20_000) == "permutation"
    ours = permutation.p_value("mean_per_class", runs_a, runs_b, samples=20_000, seed=1)
    correct_a = np.mean([run.classes == labels for run in runs_a], axis=0)
    correct_b = np.mean([run.classes == labels for run in runs_b], axis=0)

    def difference(x, y, axis=-1):
        return sum(np.mean(x[..., labels == c], axis) - np.mean(y[..., labels == c], axis) for c in range(3)) / 3
    scipy_p = stats.permutation_test((correct_a, correct_b), difference, permutation_type="samples",
                                     vectorized=True, n_resamples=20_000, rng=2).pvalue
    assert 0.001 < scipy_p < 0.5, scipy_p
    assert ours == pytest.approx(scipy_p, abs=0.01)


def test_map_permutations_recompute_both_networks_map_on_swapped_rows():
    rng = np.random.default_rng(5)
    count = 40
    labels = rng.choice([-1, 0, 1], size=(count, 3), p=[0.1, 0.6, 0.3])
    scores_a = np.round(labels + rng.normal(size=(count, 3)), 1)  # rounded: ties across examples
    scores_b = np.round(rng.normal(size=(count, 3)), 1)
    ranking = permutation._MergedRanking(labels, scores_a, scores_b)
    swapped = rng.integers(0, 2, size=(30, count)).astype(bool)
    expected = [metrics.map11(labels, np.where(s[:, None], scores_b, scores_a))
                - metrics.map11(labels, np.where(s[:, None], scores_a, scores_b)) for s in swapped]
    np.testing.assert_allclose(ranking.difference(swapped), expected, rtol=0, atol=1e-12)

    a, b = Predictions.of("map11", labels, scores_a), Predictions.of("map11", labels, scores_b)
    ours = permutation.p_value("map11", [a], [b], samples=2000, seed=1)

    rows = np.arange(count, dtype=float)
    both = np.concatenate([scores_a, scores_b])

    def map_difference(x, y):  # x, y: which rows (example, or example + count for b) each side has
        return metrics.map11(labels, both[x.astype(int)]) - metrics.map11(labels, both[y.astype(int)])
    scipy_p = stats.permutation_test((rows, rows + count), map_difference, permutation_type="samples",
                                     n_resamples=2000, rng=2).pvalue
    assert ours == pytest.approx(scipy_p, abs=0.04)


def test_map_networks_with_unequal_seed_counts_are_listed_not_guessed():
    rng = np.random.default_rng(6)
    labels = rng.choice([0, 1], size=(30, 2))
    runs = {"best": [Predictions.of("map11", labels, labels + rng.normal(size=(30, 2)) * 0.1)],
            "two": [Predictions.of("map11", labels, rng.normal(size=(30, 2))) for _ in range(2)]}
    verdict = significance.compare("voc", "map11", runs, test=significance.Test(map_samples=200))
    assert verdict.best == "best" and verdict.rivals == ()
    assert "pairs runs seed by seed: 2 run(s) against 1" in verdict.missing["two"]
