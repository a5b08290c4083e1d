"""The report: tables, log odds, r with bootstrap intervals, and the binary, on hand-made run records.

Every number is checked against scipy/numpy computed here from the scores the test wrote, not
against the report's own helpers.
"""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import special, stats

from tfbench import correlation, files, report, results
from tfbench.experiment import Experiment
from tfbench.settings import SETTINGS_TYPES

# ImageNet top-1 as the backbone registry states it (with its sources); "tiny" has none.
TOP1 = {"mobilenet_v2": 0.713, "resnet50": 0.749, "efficientnet_lite0": 0.751, "resnet101": 0.764,
        "efficientnet_lite1": 0.767, "efficientnet_lite2": 0.776, "tiny": None}
METRICS = {"digits": "top1", "fgvc_aircraft": "mean_per_class", "voc2007": "map11"}
EPS = 1e-4


def _scores():
    """{(regime, dataset, model): (status, score, reason)}: realistic, with the awkward cases."""
    rng = np.random.default_rng(7)
    runs = {}
    for regime, models, datasets, noise in (
        ("probe", list(TOP1), list(METRICS), 0.3),
        ("finetune", ["mobilenet_v2", "resnet50", "efficientnet_lite0", "resnet101",
                      "efficientnet_lite1", "efficientnet_lite2"], list(METRICS), 0.6),
        ("scratch", ["mobilenet_v2", "resnet50"], ["digits", "voc2007"], 0.3),
    ):
        for model in models:
            for offset, dataset in enumerate(datasets):
                quality = (TOP1[model] or 0.6) - 0.7
                score = float(special.expit(offset - 0.5 + 12 * quality + rng.normal(0, noise)))
                runs[(regime, dataset, model)] = ("ok", round(score, 6), None)
    runs[("probe", "digits", "tiny")] = ("ok", 1.0, None)  # a perfect score: logit is clipped
    del runs[("finetune", "fgvc_aircraft", "resnet50")]  # never run
    runs[("finetune", "voc2007", "efficientnet_lite2")] = ("failed", None, "ResourceExhaustedError: OOM")
    runs[("scratch", "digits", "resnet50")] = ("diverged", None, "loss became NaN at step 812")
    runs[("scratch", "voc2007", "efficientnet_lite0")] = ("ok", 0.41, None)
    return runs


RUNS = _scores()


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    for (regime, dataset, model), (status, score, reason) in RUNS.items():
        experiment = Experiment(regime=regime, model=model, dataset=dataset, output_dir=root,
                                settings=SETTINGS_TYPES[regime]())
        record = results.new_record(experiment, metric=METRICS[dataset], started_at=results.now())
        record["test_score"] = score
        record["timings"] = {"wall_seconds": 12.5, "images_per_second": 80.0}
        files.write_json_atomic(results.record_path(experiment), results.finish(record, status, reason))
    return root


@pytest.fixture(scope="module")
def written(output_dir, tmp_path_factory):
    report_dir = str(tmp_path_factory.mktemp("report"))
    out = io.StringIO()
    analysis, paths = report.report(output_dir, report_dir, imagenet_top1=TOP1.get, file=out)
    return analysis, paths, report_dir, out.getvalue()


def _ok(regime):
    return {(d, m): s for (r, d, m), (status, s, _) in RUNS.items() if r == regime and status == "ok"}


def _reference(regime):
    """Independent: complete models only, scipy logit of clipped scores, scipy pearsonr."""
    ok = _ok(regime)
    datasets = sorted({d for d, _ in ok})
    means = {}
    for model in sorted({m for _, m in ok}):
        if all((d, model) in ok for d in datasets):
            means[model] = np.mean([special.logit(np.clip(ok[(d, model)], EPS, 1 - EPS)) for d in datasets])
    known = [m for m in means if TOP1[m] is not None]
    r = stats.pearsonr([TOP1[m] for m in known], [means[m] for m in known])[0] if len(known) >= 3 else None
    return datasets, means, known, r


def test_logit_matches_scipy_and_stays_finite():
    p = np.array([0.0, 1e-6, 0.3, 0.5, 0.97, 1.0])
    expected = special.logit(np.clip(p, EPS, 1 - EPS))
    np.testing.assert_allclose(correlation.logit(p), expected, rtol=1e-12)
    assert correlation.logit(1.0) == pytest.approx(np.log(9999.0))


def test_pearson_matches_scipy_and_is_nan_when_a_variable_is_constant():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    assert correlation.pearson_r(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert np.isnan(correlation.pearson_r([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))


def test_bootstrap_interval_is_seeded_and_matches_an_independent_resampling():
    x = np.array([0.713, 0.749, 0.751, 0.767, 0.776, 0.79])
    y = np.array([1.1, 1.5, 1.3, 1.9, 1.8, 2.4])
    result = correlation.correlate(x, y, resamples=2000, seed=3)
    assert result.r == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert result.low <= result.r <= result.high
    assert correlation.correlate(x, y, resamples=2000, seed=3) == result
    assert correlation.correlate(x, y, resamples=2000, seed=4) != result
    picks = np.random.default_rng(3).integers(0, len(x), size=(2000, len(x)))
    rs = [np.corrcoef(x[i], y[i])[0, 1] for i in picks if len(set(i)) >= 3]  # two models: r = +-1
    np.testing.assert_allclose([result.low, result.high], np.percentile(rs, [2.5, 97.5]), atol=1e-9)
    assert result.resamples == len(rs)


def test_r_is_not_available_below_three_models_or_without_spread():
    two = correlation.correlate([0.7, 0.8], [1.0, 2.0])
    assert two.r is None and two.n == 2 and "at least 3" in two.reason
    assert two.describe().startswith("n/a (")
    flat = correlation.correlate([0.7, 0.7, 0.7], [1.0, 2.0, 3.0])
    assert flat.r is None and "equal" in flat.reason
    three = correlation.correlate([0.7, 0.75, 0.8], [1.0, 2.5, 3.0])
    assert three.r == pytest.approx(stats.pearsonr([0.7, 0.75, 0.8], [1.0, 2.5, 3.0])[0])
    assert three.low is None  # every resample of 3 distinct models is a permutation: no spread


@pytest.mark.parametrize("regime", ["probe", "finetune"])
def test_mean_log_odds_and_r_match_scipy(written, regime):
    analysis = written[0]
    datasets, means, known, r = _reference(regime)
    result = analysis.groups[regime]
    assert result.table.datasets == tuple(datasets)
    got = {m.model: m.mean_log_odds for m in result.models if m.mean_log_odds is not None}
    assert got.keys() == means.keys()
    for model, mean in means.items():
        assert got[model] == pytest.approx(mean, abs=1e-12)
    assert [m.model for m in result.included()] == sorted(known, key=TOP1.get)
    assert result.correlation.r == pytest.approx(r, abs=1e-12)
    assert result.correlation.n == len(known)
    assert result.correlation.low <= result.correlation.r <= result.correlation.high


def test_per_dataset_r_matches_scipy(written):
    analysis = written[0]
    ok = _ok("finetune")
    for dataset in METRICS:
        models = [m for (d, m) in ok if d == dataset and TOP1[m] is not None]
        x = [TOP1[m] for m in models]
        y = special.logit([ok[(dataset, m)] for m in models])
        got = analysis.groups["finetune"].per_dataset[dataset]
        assert got.n == len(models)
        assert got.r == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)


def test_exclusions_are_explained(written):
    analysis = written[0]
    probe = {m.model: m for m in analysis.groups["probe"].models}
    assert probe["tiny"].excluded == "no known ImageNet top-1"
    assert probe["tiny"].mean_log_odds == pytest.approx(
        np.mean([np.log(9999.0)] + [special.logit(_ok("probe")[(d, "tiny")]) for d in ("fgvc_aircraft", "voc2007")]))
    finetune = {m.model: m for m in analysis.groups["finetune"].models}
    assert finetune["resnet50"].excluded == "no ok run on fgvc_aircraft"
    assert finetune["efficientnet_lite2"].excluded == "no ok run on voc2007"
    assert finetune["resnet50"].mean_log_odds is None


def test_failed_and_diverged_runs_are_listed_not_counted(written):
    analysis, _, report_dir, stdout = written
    expected = sorted((r, d, m, status, reason) for (r, d, m), (status, _, reason) in RUNS.items()
                      if status != "ok")
    got = sorted((f["regime"], f["dataset"], f["model"], f["status"], f["reason"]) for f in analysis.failures)
    assert got == expected
    scratch = analysis.groups["scratch"]
    assert scratch.table.score("resnet50", "digits") is None
    with open(os.path.join(report_dir, "report.md")) as handle:
        markdown = handle.read()
    assert "loss became NaN at step 812" in markdown and "ResourceExhaustedError: OOM" in markdown
    assert "loss became NaN at step 812" in stdout


def test_scratch_with_two_models_has_no_r_and_does_not_crash(written):
    analysis, _, report_dir, stdout = written
    scratch = analysis.groups["scratch"].correlation
    assert scratch.r is None and scratch.n == len(_reference("scratch")[2]) == 1
    with open(os.path.join(report_dir, "report.json")) as handle:
        numbers = json.load(handle)
    assert numbers["groups"]["scratch"]["correlation"]["r"] is None
    assert "needs at least 3 models" in numbers["groups"]["scratch"]["correlation"]["reason"]
    assert "r scratch = n/a (needs at least 3 models, has 1)" in stdout


def test_csv_tables_hold_every_score_at_full_precision(written):
    report_dir = written[2]
    for regime in ("probe", "finetune", "scratch"):
        ok = _ok(regime)
        with open(os.path.join(report_dir, f"scores_{regime}.csv")) as handle:
            rows = list(csv.DictReader(handle))
        datasets = sorted({d for d, _ in ok})
        assert list(rows[0]) == ["model"] + [f"{d} ({METRICS[d]})" for d in datasets]
        assert [row["model"] for row in rows] == sorted({m for _, m in ok})
        for row in rows:
            for d in datasets:
                cell = row[f"{d} ({METRICS[d]})"]
                if (d, row["model"]) in ok:
                    assert float(cell) == ok[(d, row["model"])]
                else:
                    assert cell == ""
    with open(os.path.join(report_dir, "runs.csv")) as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == len(RUNS)
    assert {(r["regime"], r["dataset"], r["model"]): r["status"] for r in runs} == {
        key: status for key, (status, _, _) in RUNS.items()}


def test_markdown_tables_show_percent_with_one_decimal_and_dashes(written):
    report_dir = written[2]
    with open(os.path.join(report_dir, "scores_finetune.md")) as handle:
        lines = handle.read().splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert "fgvc_aircraft (mean_per_class, %)" in header and "voc2007 (map11, %)" in header
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in lines if line.startswith("| ") and not line.startswith("| model")}
    ok = _ok("finetune")
    assert rows["resnet50"][0] == f"{100 * ok[('digits', 'resnet50')]:.1f}"
    assert rows["resnet50"][1] == "-"
    assert rows["efficientnet_lite2"][2] == "-"


def test_report_files_json_and_figure(written):
    analysis, paths, report_dir, stdout = written
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(["figure1.png", "report.json", "report.md", "runs.csv",
                            "finetune_vs_scratch.png", "finetune_vs_probe.png"]
                           + [f"scores_{r}.{ext}" for r in ("probe", "finetune", "scratch") for ext in ("md", "csv")])
    assert sorted(os.listdir(report_dir)) == names  # no temporary files left behind
    with open(os.path.join(report_dir, "report.json")) as handle:
        numbers = json.load(handle)
    assert numbers["groups"]["probe"]["correlation"]["r"] == pytest.approx(_reference("probe")[3], abs=1e-12)
    assert numbers["groups"]["finetune"]["paper_r"] == 0.96
    assert numbers["ok_runs"] == sum(s == "ok" for s, _, _ in RUNS.values())
    with open(os.path.join(report_dir, "report.md")) as handle:
        markdown = handle.read()
    for paper_r in ("0.99", "0.96", "0.55"):
        assert paper_r in markdown
    assert "![Figure 1" in markdown
    with Image.open(os.path.join(report_dir, "figure1.png")) as image:
        width, height = image.size
    assert width > 2.5 * height  # three regime panels side by side
    assert stdout.strip().splitlines()[-1] == report.summary_line(analysis, os.path.join(report_dir, "report.md"))


def test_missing_or_empty_output_dir_is_an_input_error_and_writes_nothing(tmp_path):
    with pytest.raises(report.ReportInputError, match="is not a folder"):
        report.report(str(tmp_path / "absent"), imagenet_top1=TOP1.get)
    with pytest.raises(report.ReportInputError, match="no run records"):
        report.report(str(tmp_path), imagenet_top1=TOP1.get)
    assert os.listdir(tmp_path) == []


def _binary(*args):
    return subprocess.run([sys.executable, "-m", "tfbench.report", *args], capture_output=True,
                          text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_binary_writes_the_report_with_registry_top1(output_dir, tmp_path):
    report_dir = tmp_path / "out"
    finished = _binary(f"--output_dir={output_dir}", f"--report_dir={report_dir}", "--bootstrap_resamples=500")
    assert finished.returncode == 0, finished.stderr
    last = finished.stdout.strip().splitlines()[-1]
    assert last.startswith(f"report: {len(RUNS)} runs") and last.endswith(f"-> {report_dir}/report.md")
    assert "scratch=n/a" in last
    assert os.path.isfile(report_dir / "figure1.png")
    with open(report_dir / "report.json") as handle:
        numbers = json.load(handle)
    top1 = {m["model"]: m["imagenet_top1"] for m in numbers["groups"]["probe"]["models"]}
    assert top1 == TOP1  # the registry's figures are the published ones
    assert numbers["groups"]["probe"]["correlation"]["r"] == pytest.approx(_reference("probe")[3], abs=1e-12)


def test_binary_rejects_a_missing_output_dir_with_one_line(tmp_path):
    absent = tmp_path / "absent"
    finished = _binary(f"--output_dir={absent}")
    assert finished.returncode == 2
    assert finished.stderr.count("\n") == 1 and finished.stderr.startswith("error: ")
    assert str(absent) in finished.stderr
    assert not absent.exists() and os.listdir(tmp_path) == []
