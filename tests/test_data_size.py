"""Training-set size (--train_examples_per_class): the subset, its identity, its place in the plan."""

import collections
import os
import subprocess
import sys

import numpy as np
import pytest

from tfbench import datasets, features
from tfbench.experiment import Experiment
from tfbench.settings import InvalidSettingError, ProbeSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _experiment(model="tiny", per_class=7, seed=0, dataset="digits"):
    return Experiment(regime="probe", model=model, dataset=dataset, output_dir="runs",
                      settings=ProbeSettings(), seed=seed, train_examples_per_class=per_class)


def _ids_labels(dataset):
    rows = [(example["id"].decode(), int(example["label"])) for example in dataset.as_numpy_iterator()]
    return [i for i, _ in rows], [label for _, label in rows]


def test_subset_keeps_exactly_n_per_class_of_train_the_same_for_every_model_and_load():
    full_ids, _ = _ids_labels(datasets.load("digits", "train"))
    ids, labels = _ids_labels(_experiment().load("train"))
    assert collections.Counter(labels) == {label: 7 for label in range(10)}
    assert len(set(ids)) == len(ids) and set(ids) <= set(full_ids)
    assert _ids_labels(_experiment().load("train"))[0] == ids  # a second load
    assert _ids_labels(_experiment(model="other").load("train"))[0] == ids  # another network
    assert set(_ids_labels(_experiment(seed=1).load("train"))[0]) != set(ids)  # the seed draws anew


def test_trainval_is_the_subset_alone_and_val_and_test_are_whole():
    # The final model of a run on N per class trains on exactly N per class (the paper's axis),
    # not on the subset plus the whole validation split.
    experiment = _experiment(per_class=5)
    val = _ids_labels(datasets.load("digits", "val"))[0]
    assert _ids_labels(experiment.load("val"))[0] == val
    assert _ids_labels(experiment.load("test"))[0] == _ids_labels(datasets.load("digits", "test"))[0]
    trainval, labels = _ids_labels(experiment.load("trainval"))
    assert sorted(trainval) == sorted(_ids_labels(experiment.load("train"))[0])
    assert collections.Counter(labels) == {label: 5 for label in range(10)}


def test_the_final_probe_fits_exactly_n_per_class_and_records_the_count(tmp_path):
    from tfbench.regimes import probe
    from tfbench.settings import Runtime

    experiment = Experiment(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path),
                            settings=ProbeSettings(l2_search="fast"), train_examples_per_class=3,
                            cache_dir=str(tmp_path / "cache"))
    record = probe.run(experiment, Runtime())
    assert record["status"] == "ok" and record["train_examples"] == 3 * 10
    assert record["details"]["examples"]["train"] == 30


def test_more_than_a_class_holds_keeps_the_class_whole_with_a_warning(capsys):
    full_ids, full_labels = _ids_labels(datasets.load("digits", "train"))
    ids, _ = _ids_labels(_experiment(per_class=10_000).load("train"))
    assert sorted(ids) == sorted(full_ids)
    warning = capsys.readouterr().err
    assert warning.startswith("warning: digits: --train_examples_per_class=10000") and len(warning.splitlines()) == 1


def test_the_setting_is_identity_and_names_the_run_folder_while_full_runs_look_as_before():
    subset, full = _experiment(per_class=7), _experiment(per_class=None)
    assert subset.identity()["train_examples_per_class"] == 7
    assert "train_examples_per_class" not in full.to_dict()  # records written before it still match
    assert Experiment.from_dict(subset.to_dict()) == subset
    assert subset.identity() != _experiment(per_class=8).identity()
    assert subset.run_dir() == os.path.join("runs", "probe", "digits+7_per_class", "tiny")
    assert full.run_dir() == os.path.join("runs", "probe", "digits", "tiny")
    assert _experiment(per_class=None, seed=2).run_dir() == os.path.join("runs", "probe", "digits", "tiny+seed2")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(InvalidSettingError, match="train_examples_per_class"):
        _experiment(per_class=bad)


def test_feature_cache_keys_train_and_trainval_on_the_subset_and_val_test_not():
    spec = datasets.spec("digits")
    experiment = _experiment(per_class=7)
    for split in ("val", "test"):
        assert features.split_definition(spec, experiment.train_subset(split)) == features.split_definition(spec)
    for split in ("train", "trainval"):
        keyed = features.split_definition(spec, experiment.train_subset(split))
        assert keyed != features.split_definition(spec)
        assert keyed != features.split_definition(spec, _experiment(per_class=7, seed=1).train_subset(split))


def _dry_run(*flags, flagfile="flags/smoke.flags"):
    command = [sys.executable, "-m", "tfbench.sweep", f"--flagfile={flagfile}", "--dry_run",
               "--output_dir=/nonexistent/runs", *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _planned_runs(output):
    return int(output.stdout.split("plan: ", 1)[1].split(" runs", 1)[0])


@pytest.mark.slow
def test_sweep_plans_one_run_per_seed_and_per_size():
    single = _dry_run()
    assert single.returncode == 0, single.stderr
    assert _planned_runs(_dry_run("--seeds=0,1,2")) == 3 * _planned_runs(single)
    assert _planned_runs(_dry_run("--seeds=0,1,2", "--train_examples_per_class=10,25,all")) == 9 * _planned_runs(single)


@pytest.mark.parametrize("flag, expected", [
    ("--train_examples_per_class=0", "error: --train_examples_per_class takes whole numbers of at least 1"),
    ("--seeds=a", "error: --seeds takes whole numbers, got a"),
])
def test_bad_sweep_sizes_and_seeds_are_one_line(flag, expected):
    result = _dry_run(flag)
    assert result.returncode == 2 and result.stderr.strip().startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# The analysis (the paper's Figure 9), on hand-built records with known means

def _record(regime, model, dataset, score, size=None, seed=0, status="ok", init=None):
    experiment = {"regime": regime, "model": model, "dataset": dataset, "output_dir": "runs",
                  "settings": {"init": init} if init else {}, "seed": seed, "image_size": 64,
                  "batch_size": 32, "precision": "auto", "preset": "study"}
    if size is not None:
        experiment["train_examples_per_class"] = size
    return {"experiment": experiment, "status": status, "metric": "top1", "test_score": score,
            "protocol": {"name": "study", "differences": {}}}


# (regime, size) -> {model: score}; "all" is the whole training set
SCORES = {("finetune", 10): {"a": 0.50, "b": 0.60}, ("finetune", 25): {"a": 0.70, "b": 0.80},
          ("finetune", None): {"a": 0.90, "b": 0.92},
          ("scratch", 10): {"a": 0.20, "b": 0.30}, ("scratch", 25): {"a": 0.40, "b": 0.50},
          ("scratch", None): {"a": 0.85, "b": 0.87},
          ("probe", 10): {"a": 0.45}, ("probe", None): {"a": 0.80, "b": 0.82}}


def _records():
    records = [_record(regime, model, "dtd", score, size)
               for (regime, size), by_model in SCORES.items() for model, score in by_model.items()]
    records.append(_record("probe", "a", "dtd", 0.10, 10, init="random"))  # not ImageNet features
    records.append(_record("scratch", "b", "dtd", None, 25, status="failed"))
    records.append(_record("finetune", "a", "digits", 0.99))  # no subset run on digits: no panel
    return records


def test_data_size_table_holds_the_mean_over_networks_per_regime_and_size():
    from tfbench.report import data_size

    found = data_size.analyze(_records())
    assert found.missing is None and [c.dataset for c in found.curves] == ["dtd"]
    curves = found.curves[0]
    assert curves.sizes == (10, 25, None) and curves.lines == ("probe", "finetune", "scratch")
    for (regime, size), by_model in SCORES.items():
        assert curves.mean(regime, size) == pytest.approx(np.mean(list(by_model.values())))
    assert curves.mean("probe", 25) is None
    rows = {row["examples per class"]: row for row in data_size.mean_rows(curves)}
    assert rows["25"]["finetune (%)"] == "75.0 (n=2)" and rows["all"]["probe (%)"] == "81.0 (n=2)"
    assert rows["25"]["probe (%)"] == "-"
    per_model = {row["model"]: row for row in data_size.model_rows(curves)}
    assert per_model["b"]["scratch @ 10"] == "30.0" and per_model["b"]["probe @ 10"] == "-"
    gaps = {row["examples per class"]: row for row in data_size.gap_rows(curves)}
    assert gaps["10"]["fine-tune minus scratch (points)"] == "+30.0" and gaps["10"]["networks"] == "2"
    assert gaps["all"]["fine-tune minus scratch (points)"] == "+5.0"


def test_data_size_seeds_count_as_their_mean():
    from tfbench.report import data_size

    records = [_record("finetune", "a", "dtd", score, 10, seed=seed) for seed, score in ((0, 0.4), (1, 0.6))]
    assert data_size.analyze(records).curves[0].mean("finetune", 10) == pytest.approx(0.5)


def test_data_size_standard_error_is_over_the_seeds_subsets_of_the_mean_over_networks():
    from tfbench.report import data_size

    scores = {("a", 0): 0.40, ("b", 0): 0.50, ("a", 1): 0.60, ("b", 1): 0.70, ("a", 2): 0.50, ("b", 2): 0.66}
    records = [_record("finetune", model, "dtd", score, 4, seed=seed) for (model, seed), score in scores.items()]
    curves = data_size.analyze(records).curves[0]
    per_seed = [0.45, 0.65, 0.58]  # the mean over the two networks, per seed
    assert curves.standard_error("finetune", 4) == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(3))
    assert "± " in data_size.mean_rows(curves)[0]["finetune (%)"]
    single = data_size.analyze([r for r in records if r["experiment"]["seed"] == 0]).curves[0]
    assert single.standard_error("finetune", 4) is None


def test_data_size_figure_has_a_line_per_regime_with_a_point_per_size():
    from tfbench.report import data_size, figures

    figure = figures.data_size_figure(data_size.analyze(_records()))
    (axes,) = figure.axes
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert set(lines) == {"probe", "finetune", "scratch"}
    assert axes.get_xscale() == "log"
    assert list(lines["finetune"].get_xdata()) == [10, 25, 50]  # "all" at 2 x the largest subset
    assert list(lines["finetune"].get_ydata()) == pytest.approx([55.0, 75.0, 91.0])
    assert len(lines["probe"].get_xdata()) == 2  # no probe at 25
    assert [label.get_text() for label in axes.get_xticklabels()] == ["10", "25", "all"]


def test_data_size_without_subset_runs_says_what_is_missing_in_one_line():
    from tfbench.report import data_size

    found = data_size.analyze([_record("finetune", "a", "dtd", 0.9)])
    section = "\n".join(found.markdown())
    assert found.curves == () and "Not drawn: no ok run on a training subset" in section
    assert "data_size.png" not in section


@pytest.mark.slow
def test_report_writes_the_data_size_section_and_figure(tmp_path):
    from tfbench import files, results
    from tfbench.report import build as report

    for record in _records():
        experiment = Experiment.from_dict({**record["experiment"], "output_dir": str(tmp_path)})
        files.write_json_atomic(results.record_path(experiment), {**record, "experiment": experiment.to_dict()})
    _, paths = report.report(str(tmp_path), str(tmp_path / "report"), imagenet_top1=lambda m: None,
                             resamples=100, file=open(os.devnull, "w"))
    text = open(tmp_path / "report" / "report.md").read()
    assert "## Score against training-set size" in text and "![Score against examples per class](data_size.png)" in text
    assert os.path.exists(tmp_path / "report" / "data_size.png")
    assert "Fine-tuned, protocol study" in text and "10 training examples per class (`finetune_study_" in text


def test_a_multi_label_dataset_refuses_a_per_class_subset():
    from tfbench.datasets import splits

    with pytest.raises(datasets.TrainSubsetError, match="'voc2007' is multi-label"):
        splits.check_subset_allowed(datasets.spec("voc2007"))


@pytest.mark.parametrize("value, expected", [
    ("5,6", "error: --train_examples_per_class takes one value here, got 5,6"),
    ("-1", "error: --train_examples_per_class takes whole numbers of at least 1"),
])
def test_a_regime_binary_takes_one_size_and_refuses_bad_ones_in_one_line(value, expected, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tfbench.probe", "--model=tiny", "--dataset=digits",
                             f"--train_examples_per_class={value}", f"--output_dir={tmp_path}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1 and not os.listdir(tmp_path)


def test_the_paper_study_doubles_from_1_to_each_datasets_largest_on_11_datasets_3_subsets():
    from tfbench import protocol

    assert protocol.data_size_examples_per_class("food101")[-1] == 512
    assert protocol.data_size_examples_per_class("cifar10") == tuple(2 ** k for k in range(13))  # to 4,096
    assert protocol.data_size_examples_per_class("oxford_flowers102") == (1, 2, 4, 8)
    assert len(protocol.DATA_SIZE_LARGEST) == 11 and "voc2007" not in protocol.DATA_SIZE_LARGEST
    output = _dry_run(flagfile="flags/data_size.flags")
    assert output.returncode == 0, output.stderr[-2000:]
    sizes = sum(len(protocol.data_size_examples_per_class(d)) for d in protocol.DATA_SIZE_LARGEST)
    assert _planned_runs(output) == sizes * 3 * protocol.DATA_SIZE_SUBSETS  # 3 regimes, Inception v4 alone

