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

from tfbench import files, results
from tfbench.report import comparisons, correlation, figures, build as report
from tfbench.experiment import Experiment, path_component
from tfbench.settings import ProbeSettings, TrainingSettings

# ImageNet top-1 as the backbone registry states it (with its sources); "tiny" has none.
TOP1 = {"mobilenet_v2": 0.713, "resnet50": 0.749, "efficientnet_lite0": 0.751, "resnet101": 0.764,
        "efficientnet_lite1": 0.767, "efficientnet_lite2": 0.776, "tiny": None}
METRICS = {"digits": "top1", "fgvc_aircraft": "mean_per_class", "voc2007": "map11"}
EPS = 1e-4
# Every run of the fixture follows one preset: one group per regime, fine-tune and scratch at
# equal steps and batch size (so that they compare).
STUDY_PROTOCOL = {"probe": {"settings": ProbeSettings(l2_search="fast"), "preset": "study"},
                  "finetune": {"settings": TrainingSettings(search="small", train_steps=1000), "preset": "study"},
                  "scratch": {"settings": TrainingSettings(search="small", train_steps=1000), "preset": "study"}}


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
                                **STUDY_PROTOCOL[regime])
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
                            "finetune_vs_scratch.png", "finetune_vs_probe.png",
                            "finetune_vs_scratch_per_dataset.png", "size_split.png"]
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
    assert stdout.strip().splitlines()[-1] == report.report_summary_line(analysis, os.path.join(report_dir, "report.md"))


def test_missing_or_empty_output_dir_is_an_input_error_and_writes_nothing(tmp_path):
    with pytest.raises(report.ReportInputError, match="is not a folder"):
        report.report(str(tmp_path / "absent"), imagenet_top1=TOP1.get)
    with pytest.raises(report.ReportInputError, match="no run records"):
        report.report(str(tmp_path), imagenet_top1=TOP1.get)
    assert os.listdir(tmp_path) == []


def _binary(*args):
    return subprocess.run([sys.executable, "-m", "tfbench.report", *args], capture_output=True,
                          text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------
# Protocols, grid edges, user backbones and paired comparisons, on records written by hand (the
# fields the regimes write: protocol, at_grid_edge / grid_edges, imagenet_top1, settings.init).

FINISHED = "2026-01-01T00:00:00+00:00"


def _write(root, regime, model, dataset, score, *, status="ok", reason=None, protocol="mini",
           settings=None, batch_size=32, image_size=64, seed=0, top1=None, display_name=None,
           edges=None, metric="top1", finished_at=FINISHED, total_train_steps=None):
    """A run record as the regimes write it, at <root>/<regime>/<dataset>/<model>/record.json."""
    experiment = {"regime": regime, "model": model, "dataset": dataset, "output_dir": root,
                  "settings": settings or {}, "seed": seed, "data_dir": None, "image_size": image_size,
                  "batch_size": batch_size, "precision": "auto", "cache_dir": None, "preset": protocol}
    if display_name:
        experiment["display_name"] = display_name
    record = {"schema_version": 1, "experiment": experiment, "status": status, "reason": reason,
              "metric": metric, "hyperparameters": {}, "trials": [], "test_score": score, "timings": {},
              "protocol": {"name": protocol, "differences": {}}, "at_grid_edge": bool(edges),
              "grid_edges": edges or {}, "started_at": FINISHED, "finished_at": finished_at}
    if top1 is not None:
        record["imagenet_top1"] = top1
    if total_train_steps is not None:
        record["total_train_steps"] = total_train_steps
    folder = os.path.join(root, regime, path_component(dataset), path_component(model))
    files.write_json_atomic(os.path.join(folder, results.RECORD_FILE), record)
    return record


def _report(root, **kwargs):
    out = io.StringIO()
    analysis, paths = report.report(str(root), str(root / "report"), imagenet_top1=TOP1.get,
                                    resamples=200, file=out, **kwargs)
    return analysis, paths, out.getvalue()


def _r_of(scores, datasets):
    """scipy's r between registry top-1 and the mean of scipy logits, over the given models."""
    models = sorted(scores)
    means = [np.mean([special.logit(scores[m][d]) for d in datasets]) for m in models]
    return stats.pearsonr([TOP1[m] for m in models], means)[0]


FOUR = ["mobilenet_v2", "resnet50", "efficientnet_lite0", "resnet101"]
MINI_STEPS = {"search": "grid", "train_steps": 60}
PAPER_STEPS = {"search": "paper", "train_steps": 20000}
MINI_SCORES = {"mobilenet_v2": {"dtd": 0.40, "pets": 0.62}, "resnet50": {"dtd": 0.47, "pets": 0.60},
               "efficientnet_lite0": {"dtd": 0.45, "pets": 0.71}, "resnet101": {"dtd": 0.52, "pets": 0.69}}
PAPER_SCORES = {"mobilenet_v2": {"dtd": 0.70, "pets": 0.88}, "resnet50": {"dtd": 0.74, "pets": 0.90},
                "efficientnet_lite0": {"dtd": 0.72, "pets": 0.93}, "resnet101": {"dtd": 0.76, "pets": 0.92}}


@pytest.fixture()
def two_protocols(tmp_path):
    """The same four models and two datasets fine-tuned under two protocols, in two output roots
    below one folder; one paper run is missing."""
    for name, settings, batch, scores in (("mini", MINI_STEPS, 32, MINI_SCORES),
                                          ("paper", PAPER_STEPS, 256, PAPER_SCORES)):
        for model, by_dataset in scores.items():
            for dataset, score in by_dataset.items():
                if (name, model, dataset) != ("paper", "resnet101", "pets"):
                    _write(str(tmp_path / name), "finetune", model, dataset, score, protocol=name,
                           settings=settings, batch_size=batch)
    return tmp_path


def test_two_protocols_yield_two_tables_and_two_correlations(two_protocols):
    analysis, paths, stdout = _report(two_protocols)
    assert list(analysis.groups) == ["finetune_mini", "finetune_paper"]
    mini, paper = analysis.groups["finetune_mini"], analysis.groups["finetune_paper"]
    assert mini.table.scores == {(m, d): s for m, ds in MINI_SCORES.items() for d, s in ds.items()}
    assert mini.correlation.r == pytest.approx(_r_of(MINI_SCORES, ["dtd", "pets"]), abs=1e-12)
    assert mini.correlation.n == 4
    complete = {m: s for m, s in PAPER_SCORES.items() if m != "resnet101"}
    assert paper.correlation.r == pytest.approx(_r_of(complete, ["dtd", "pets"]), abs=1e-12)
    assert paper.correlation.n == 3  # resnet101 lacks pets there: missing, not 0
    assert paper.table.score("resnet101", "pets") is None
    assert {m.model: m.excluded for m in paper.models}["resnet101"] == "no ok run on pets"
    with open(two_protocols / "report" / "scores_finetune_paper.csv") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert rows["resnet101"]["pets (top1)"] == "" and float(rows["resnet101"]["dtd (top1)"]) == 0.76
    with open(two_protocols / "report" / "report.json") as handle:
        numbers = json.load(handle)
    assert numbers["groups"]["finetune_mini"]["protocol"]["name"] == "mini"
    assert numbers["groups"]["finetune_paper"]["correlation"]["r"] == pytest.approx(paper.correlation.r)
    assert {"figure1_mini.png", "figure1_paper.png"} <= {os.path.basename(p) for p in paths}
    # the differing settings are printed once, each group's value named
    assert stdout.count("several protocols") == 1
    line = next(line for line in stdout.splitlines() if "several protocols" in line)
    assert "settings.train_steps (finetune_mini: 60, finetune_paper: 20000)" in line
    assert "batch_size (finetune_mini: 32, finetune_paper: 256)" in line


def test_the_protocol_table_states_each_protocols_training_steps(tmp_path):
    for protocol, steps in (("grid", (6840, 7000)), ("halving", (1348, 1400))):
        for model, total in zip(("resnet50", "mobilenet_v2"), steps):
            _write(str(tmp_path / protocol), "finetune", model, "dtd", 0.5, protocol=protocol,
                   settings={"search": protocol, "train_steps": 120}, total_train_steps=total)
    analysis, _, _ = _report(tmp_path)
    spent = {row["protocol"]: row["training steps"] for row in report.protocols_of(analysis).rows()}
    assert spent == {"grid": "13,840 (2 runs)", "halving": "2,748 (2 runs)"}


@pytest.mark.slow
def test_protocol_flag_selects_by_name_or_id_and_rejects_others(two_protocols):
    analysis, _, stdout = _report(two_protocols, protocol="paper")
    assert list(analysis.groups) == ["finetune_paper"]  # names stay those of the whole folder
    assert "several protocols" not in stdout
    assert len(analysis.runs) == 7
    mini_id = _report(two_protocols)[0].groups["finetune_mini"].group.id
    assert list(_report(two_protocols, protocol=mini_id)[0].groups) == ["finetune_mini"]
    with pytest.raises(report.ReportInputError, match=r"unknown protocol 'full'; valid choices: mini, paper"):
        _report(two_protocols, protocol="full")


def test_colliding_protocol_names_are_told_apart_by_id(tmp_path):
    for steps, root in ((100, "a"), (200, "b")):
        for model in FOUR[:3]:
            _write(str(tmp_path / root), "finetune", model, "dtd", 0.5, protocol="custom",
                   settings={"search": "none", "train_steps": steps})
    analysis = _report(tmp_path)[0]
    ids = [g.group.id for g in analysis.groups.values()]
    assert len(set(ids)) == 2 and list(analysis.groups) == [f"finetune_custom_{i}" for i in ids]
    assert list(_report(tmp_path, protocol=ids[1])[0].groups) == [f"finetune_custom_{ids[1]}"]


def test_a_score_chosen_at_a_grid_edge_is_marked_with_a_footnote(tmp_path):
    _write(str(tmp_path), "finetune", "resnet50", "dtd", 0.61, edges={"learning_rate": "largest"})
    _write(str(tmp_path), "finetune", "resnet50", "pets", 0.83)
    _report(tmp_path)
    with open(tmp_path / "report" / "scores_finetune.md") as handle:
        text = handle.read()
    row = next(line for line in text.splitlines() if line.startswith("| resnet50"))
    assert [c.strip() for c in row.split("|")[2:-1]] == ["61.0\u2020", "83.0"]
    assert "\u2020 the chosen hyperparameter is at an end of its grid" in text
    assert "resnet50 on dtd (learning_rate: largest)" in text


def test_a_keras_model_with_a_given_top1_enters_r_and_figure1(tmp_path):
    user = "/home/me/models/my_net.keras"
    given = {"value": 0.758, "source": "given with --imagenet_top1", "measured": False}
    scores = {"mobilenet_v2": 0.55, "resnet50": 0.61, "efficientnet_lite0": 0.60, user: 0.66}
    for model, score in scores.items():
        _write(str(tmp_path), "probe", model, "dtd", score, settings={"l2_search": "paper"},
               top1=given if model == user else None, display_name="My net" if model == user else None)
    # a measured top-1 in a record wins over the registry's published one
    _write(str(tmp_path), "probe", "efficientnet_lite0", "dtd", 0.60, settings={"l2_search": "paper"},
           top1={"value": 0.745, "source": "tfbench.imagenet_eval on imagenet2012 validation", "measured": True})
    analysis, _, stdout = _report(tmp_path)
    probe = analysis.groups["probe"]
    top1 = {"mobilenet_v2": 0.713, "resnet50": 0.749, "efficientnet_lite0": 0.745, user: 0.758}
    assert [m.model for m in probe.included()] == sorted(top1, key=top1.get)
    expected = stats.pearsonr([top1[m] for m in scores], special.logit([scores[m] for m in scores]))[0]
    assert probe.correlation.r == pytest.approx(expected, abs=1e-12)
    figure = figures.figure1([probe])
    (axes,) = figure.axes
    np.testing.assert_allclose(sorted(axes.collections[0].get_offsets()[:, 0]),
                               sorted(100 * v for v in top1.values()))
    assert "My net" in [text.get_text() for text in axes.texts]
    with open(tmp_path / "report" / "report.json") as handle:
        used = json.load(handle)["imagenet_top1"]
    assert used[user] == {"value": 0.758, "kind": "published", "source": "given with --imagenet_top1",
                          "label": "My net"}
    assert used["efficientnet_lite0"]["kind"] == "measured"
    assert used["resnet50"] == {"value": 0.749, "kind": "published", "label": "resnet50",
                                "source": "published; tfbench's backbone registry"}
    assert "tfbench.imagenet_eval on imagenet2012 validation" in stdout
    # the report says the networks are public checkpoints, and that this r mixes two kinds of top-1
    markdown = open(tmp_path / "report" / "report.md").read()
    assert "public checkpoints, not the paper's" in markdown and "Appendix B" in markdown
    assert "These top-1 values mix kinds: 1 measured, 3 published" in markdown
    assert "public checkpoints" in axes.get_xlabel()

    published, _, _ = _report(tmp_path, top1_kind="published")  # the registry's value replaces the measured one
    assert published.top1["efficientnet_lite0"].value == TOP1["efficientnet_lite0"]
    assert {t.kind() for t in published.top1.values()} == {"published"}
    measured, _, _ = _report(tmp_path, top1_kind="measured")
    assert {m: t.value for m, t in measured.top1.items() if t.value is not None} == {"efficientnet_lite0": 0.745}
    assert measured.groups["probe"].correlation.r is None  # one model with a measured top-1
    assert "mix kinds" not in open(tmp_path / "report" / "report.md").read()


MODELS3 = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
PROBE = {("efficientnet_lite0", "fmnist"): 0.80, ("efficientnet_lite1", "fmnist"): 0.82,
         ("efficientnet_lite2", "fmnist"): 0.81, ("efficientnet_lite0", "digits"): 0.93,
         ("efficientnet_lite1", "digits"): 0.95, ("efficientnet_lite2", "digits"): 0.94}
RANDOM = {("efficientnet_lite0", "fmnist"): 0.55, ("efficientnet_lite1", "fmnist"): 0.60,
          ("efficientnet_lite2", "fmnist"): 0.52, ("efficientnet_lite0", "digits"): 0.71,
          ("efficientnet_lite1", "digits"): 0.83}  # lite2 on digits never ran
FINETUNE = {("efficientnet_lite0", "fmnist"): 0.84, ("efficientnet_lite1", "fmnist"): 0.79,
            ("efficientnet_lite2", "fmnist"): 0.86}
SCRATCH = {("efficientnet_lite0", "fmnist"): 0.70, ("efficientnet_lite1", "fmnist"): 0.74}


def _mini(root, scratch_steps=60, with_random=True):
    for (model, dataset), score in PROBE.items():
        _write(root, "probe", model, dataset, score, settings={"l2_search": "fast", "init": "imagenet"},
               batch_size=64, image_size=128)
    if with_random:  # kept apart in records: another output root, as a sweep would
        for (model, dataset), score in RANDOM.items():
            _write(os.path.join(root, "random"), "probe", model, dataset, score, protocol="custom",
                   settings={"l2_search": "fast", "init": "random"}, batch_size=64, image_size=128)
    for (model, dataset), score in FINETUNE.items():
        _write(root, "finetune", model, dataset, score, settings=MINI_STEPS)
    for (model, dataset), score in SCRATCH.items():
        _write(root, "scratch", model, dataset, score,
               settings={"search": "grid", "train_steps": scratch_steps})
    _write(root, "scratch", "efficientnet_lite2", "fmnist", None, status="diverged",
           reason="loss became NaN", settings={"search": "grid", "train_steps": scratch_steps})


def _expected(first, second):
    cells = sorted(set(first) & set(second))
    return sum(first[c] > second[c] for c in cells), len(cells), np.mean([first[c] - second[c] for c in cells])


@pytest.mark.slow
def test_the_three_comparisons_pair_runs_by_model_and_dataset(tmp_path):
    _mini(str(tmp_path))
    analysis, paths, stdout = _report(tmp_path)
    drawn = {o.kind.key: o for o in analysis.comparisons}
    assert set(drawn) == {"imagenet_vs_random", "finetune_vs_scratch", "finetune_vs_probe"}
    for key, first, second in (("imagenet_vs_random", PROBE, RANDOM), ("finetune_vs_scratch", FINETUNE, SCRATCH),
                               ("finetune_vs_probe", FINETUNE, PROBE)):
        comparison = drawn[key]
        wins, n, mean = _expected(first, second)
        assert {(p.model, p.dataset): (p.first, p.second) for p in comparison.pairs} == {
            c: (first[c], second[c]) for c in set(first) & set(second)}
        assert (comparison.wins(), len(comparison.pairs)) == (wins, n)
        assert comparison.mean_difference() == pytest.approx(mean, abs=1e-12)
        figure = figures.comparison_figure(comparison)
        assert len(figure.axes[0].collections[0].get_offsets()) == n  # one point per pair
        assert len(figure.axes[0].lines) == 1  # the diagonal
    assert drawn["imagenet_vs_random"].missing == (
        "random-init features (probe_custom): efficientnet_lite2 on digits (no run)",)
    assert drawn["finetune_vs_scratch"].missing == (
        "from scratch (scratch): efficientnet_lite2 on fmnist (diverged)",)
    assert "only probe_mini ran dataset digits: not compared" in drawn["finetune_vs_probe"].notes
    assert "image_size differs: 64 (finetune) vs 128 (probe_mini)" in drawn["finetune_vs_probe"].notes
    names = {os.path.basename(p) for p in paths}
    assert {"imagenet_vs_random.png", "finetune_vs_scratch.png", "finetune_vs_probe.png"} <= names
    with open(tmp_path / "report" / "report.md") as handle:
        markdown = handle.read()
    shown = {o.kind for o in analysis.comparisons}  # equal steps: drawn above as the preset's own pair
    assert shown == set(comparisons.KINDS) - {comparisons.FINETUNE_VS_SCRATCH_EQUAL_STEPS}
    for kind in shown:
        assert kind.paper in markdown
    # three models: r says little, so the summary leads with the comparisons
    summary = markdown.split("## Summary\n")[1].split("\n## ")[0]
    first_line = summary.strip().splitlines()[0]
    assert first_line.startswith("- ImageNet vs random-init features") and "better on 5 of 5" in first_line
    assert markdown.index("## Comparisons") < markdown.index("## Correlation")
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("report: 17 runs (16 ok), ImageNet>random features 5/5")
    assert last.index("fine-tune>scratch 2/2") < last.index("; r probe_custom=n/a probe_mini=")


def test_comparisons_that_cannot_be_drawn_say_which_runs_are_missing(tmp_path):
    _mini(str(tmp_path), scratch_steps=600, with_random=False)
    analysis, _, stdout = _report(tmp_path)
    outcomes = {o.kind.key: o for o in analysis.comparisons}
    assert isinstance(outcomes["imagenet_vs_random"], comparisons.NotDrawn)
    reason = outcomes["imagenet_vs_random"].reason
    assert "no probe runs on random-init features" in reason and "--init=random" in reason
    assert isinstance(outcomes["finetune_vs_scratch"], comparisons.Comparison)  # the preset's own schedules
    equal_steps = outcomes["finetune_vs_scratch_equal_steps"]
    assert isinstance(equal_steps, comparisons.NotDrawn)
    assert "finetune trains 60 steps of 32, scratch 600 steps of 32" in equal_steps.reason
    assert isinstance(outcomes["finetune_vs_probe"], comparisons.Comparison)
    # the summary leads with what can be drawn and ends with what cannot, naming the runs lacking
    lines = report.summary_lines(analysis)
    assert lines[0].startswith("Fine-tuning vs training from scratch, each with its own protocol")
    assert lines[-2:] == [outcomes["imagenet_vs_random"].sentence(), equal_steps.sentence()]
    last = stdout.strip().splitlines()[-1]
    assert "not drawn" not in last and "fine-tune>probe 2/3" in last


def test_with_five_models_in_r_the_summary_leads_with_r(tmp_path):
    for model in list(TOP1)[:5]:
        for dataset, offset in (("dtd", 0.0), ("pets", 0.1)):
            _write(str(tmp_path), "finetune", model, dataset, 0.3 + TOP1[model] / 2 + offset)
            _write(str(tmp_path), "scratch", model, dataset, 0.2 + offset)
    analysis, _, stdout = _report(tmp_path)
    assert analysis.groups["finetune"].correlation.n == 5
    assert report.summary_lines(analysis)[0].startswith("r finetune (ImageNet top-1 vs mean log odds) = ")
    assert stdout.strip().splitlines()[-1].startswith("report: 20 runs (20 ok), r finetune=")


def test_seeds_of_one_protocol_share_its_table_as_their_mean(tmp_path):
    for seed, score in ((0, 0.60), (1, 0.70)):
        _write(str(tmp_path / f"seed{seed}"), "finetune", "resnet50", "dtd", score, seed=seed,
               display_name="ResNet-50")
    analysis, _, stdout = _report(tmp_path)
    assert list(analysis.groups) == ["finetune"]  # the seed is not part of the protocol
    table = analysis.groups["finetune"].table
    assert table.score("resnet50", "dtd") == pytest.approx(0.65) and table.seeds[("resnet50", "dtd")] == (0, 1)
    assert "Mean over seeds: ResNet-50 on dtd (seeds 0, 1)." in stdout


def test_binary_rejects_an_unknown_protocol_with_one_line_and_writes_nothing(two_protocols):
    finished = _binary(f"--output_dir={two_protocols}", "--protocol=full")
    assert finished.returncode == 2
    assert finished.stderr == ("error: --protocol: unknown protocol 'full'; valid choices: mini, paper "
                               f"(names) or {', '.join(_ids(two_protocols))} (ids)\n")
    assert not (two_protocols / "report").exists()


def _ids(root):
    return [g.group.id for g in report.analyze(results.collect(str(root)), TOP1.get, resamples=100).groups.values()]


def test_the_readme_claims_only_what_the_repository_stands_behind():
    import glob

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as handle:
        front = " ".join(handle.read().split())
    assert "The networks are public checkpoints, not the paper's" in front  # said on the front door
    pages = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    readme = " ".join(" ".join(open(page).read().split()) for page in pages)  # README and its docs pages
    assert "full fidelity" not in readme
    assert "The networks are public checkpoints, not the paper's" in readme and "(Appendix B)" in readme
    assert "its Table 1 prints 3,369, the official split holds 3,669" in readme  # Pets' test size
    assert "selects the same optimum when the validation score rises then falls along the grid" in readme
    assert "two-sided paired permutation test" in readme and "paper's exact subsets are not confirmed" not in readme


def test_figures_with_nothing_to_show_are_not_drawn_and_settings_read_as_words(tmp_path):
    """The smoke study's shape: one network without an ImageNet top-1, fine-tune and scratch on one
    dataset, the probe on another: no Figure 1 or size split (no point to show), no fine-tune vs
    probe figure (no pair), and the protocol table in words."""
    steps = {"train_steps": 150, "learning_rate": 0.05, "weight_decay": None}
    _write(str(tmp_path), "finetune", "tiny", "digits", 0.35, settings=steps, total_train_steps=300)
    _write(str(tmp_path), "scratch", "tiny", "digits", 0.38, settings=steps, total_train_steps=300)
    _write(str(tmp_path), "probe", "tiny", "fashion_mnist", 0.88, settings={"l2_search": "fast"})
    for record in ("finetune", "scratch"):
        path = tmp_path / record / "digits" / "tiny" / results.RECORD_FILE
        written = json.loads(path.read_text())
        written["protocol"]["differences"] = {"settings.learning_rate": {"run": 0.05, "paper": None},
                                              "settings.train_steps": {"run": 150, "paper": 20000}}
        path.write_text(json.dumps(written))
    analysis, paths, _ = _report(tmp_path)
    names = {os.path.basename(p) for p in paths}
    assert "finetune_vs_scratch.png" in names
    unseen = ("figure1.png", "size_split.png", "finetune_vs_probe.png", "finetune_vs_scratch_per_dataset.png")
    assert not names & set(unseen)
    markdown = (tmp_path / "report" / "report.md").read_text()
    for figure in unseen:
        assert figure not in markdown
    rows = {row["regime"]: row for row in report.protocols_of(analysis).rows()}
    assert rows["finetune"]["training steps"] == "300 (1 run)"
    assert rows["finetune"]["differs from the paper in"] == (
        "learning rate: 0.05 (paper: not fixed); training steps: 150 (paper: 20000)")
    assert "None" not in markdown and "settings." not in markdown
