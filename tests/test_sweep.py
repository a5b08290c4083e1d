"""The sweep: every (regime x dataset x model), skipping finished runs, continuing past failures."""

import json
import os
import subprocess
import sys

import pytest

from tfbench import files, results, study
from tfbench.regimes import probe
from tfbench.tasks import executors
from tfbench.experiment import Experiment
from tfbench.settings import ProbeSettings, Runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _experiments(tmp_path):
    return [(Experiment(regime="probe", model=model, dataset="digits", output_dir=str(tmp_path),
                        settings=ProbeSettings(l2_search="fast")), Runtime())
            for model in ("tiny", "broken", "other")]


def _fake_run(calls):
    def run(experiment, runtime):
        calls.append(experiment.model)
        if experiment.model == "broken":
            raise RuntimeError("out of memory in layer 3")
        record = results.new_record(experiment, metric="top1", started_at=results.now())
        record["test_score"] = 0.5
        return results.finish(record, "ok")
    return run


def _sweep(experiments):
    study_plan = study.study_plan(experiments)
    with executors.LocalExecutor() as executor:
        summary = executors.execute(study_plan, study_plan.tasks, executor)
    return {status: summary.count(status) for status in executors.OUTCOMES}


def test_sweep_records_a_failure_continues_and_skips_finished_runs(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(probe, "run", _fake_run(calls))
    experiments = _experiments(tmp_path)
    assert _sweep(experiments) == {"ran": 2, "skipped": 0, "failed": 1}
    assert calls == ["tiny", "broken", "other"]
    failed = json.loads(open(results.record_path(experiments[1][0])).read())
    assert failed["status"] == "failed" and "out of memory in layer 3" in failed["reason"]
    assert "Traceback" in failed["traceback"]

    calls.clear()
    assert _sweep(experiments) == {"ran": 0, "skipped": 2, "failed": 1}
    assert calls == ["broken"]  # finished runs skipped, the failed one tried again


def test_eta_uses_the_mean_time_of_each_kind_over_the_parallel_slots():
    remaining = {"probe": 1, "trial": 2}
    assert executors.eta({}, remaining, slots=1) == "ETA unknown"
    assert executors.eta({"probe": [10.0, 20.0], "trial": [100.0]}, remaining, slots=1) == "ETA 00:03:35"
    assert executors.eta({"probe": [10.0, 20.0], "trial": [100.0]}, remaining, slots=5) == "ETA 00:00:43"
    assert executors.eta({"probe": [10.0]}, {"probe": 0}, slots=1) == "ETA 00:00:00"


@pytest.mark.slow
def test_smoke_preset_runs_end_to_end_then_is_skipped(tmp_path):
    """CI runs flags/smoke.flags end to end, so the main path cannot silently break."""
    command = [sys.executable, "-m", "tfbench.sweep", "--flagfile=flags/smoke.flags",
               f"--output_dir={tmp_path}/runs", f"--cache_dir={tmp_path}/cache"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    # probe; a trial, a conclusion and two convergence budgets each for finetune and scratch;
    # estimates on both datasets
    assert "11 ran, 0 skipped" in first.stdout.splitlines()[-1]
    everything = results.collect(f"{tmp_path}/runs")
    records = [r for r in everything if r["experiment"]["regime"] != "estimate"]
    assert sorted(r["experiment"]["regime"] for r in records) == ["finetune", "probe", "scratch"]
    for record in records:
        assert record["status"] == "ok" and record["test_score"] > 0.25, record["experiment"]["regime"]
        assert record["trials"], "every regime records its hyperparameter trials"
    estimates = [r for r in everything if r["experiment"]["regime"] == "estimate"]
    assert sorted(r["experiment"]["dataset"] for r in estimates) == ["digits", "fashion_mnist_mini"]
    assert all(r["status"] == "ok" and r["estimates"]["logme"] is not None for r in estimates)
    report_text = open(f"{tmp_path}/runs/report/report.md").read()
    assert "## Transferability estimators against the probe and the fine-tune" in report_text
    assert "| LogME | n/a (1 network) |" in report_text  # one network: no rank to agree on
    assert "Not drawn: its search is 'none'" in report_text.split("## Cheap alternatives to the grid search\n")[1]
    trained = [r for r in records if r["experiment"]["regime"] != "probe"]
    # --eval_every=30 of 150 fine-tune and 180 scratch steps: the presets differ in steps, as the
    # paper's do, and each regime's own schedule pairs for Figures 7 and 8
    assert {r["experiment"]["regime"]: len(r[results.CHOSEN_CURVE]) for r in trained} == {"finetune": 5, "scratch": 6}
    assert os.path.exists(f"{tmp_path}/runs/report/convergence.png")  # the cheap approximation of Fig. 8
    analyses = json.loads(open(f"{tmp_path}/runs/report/report.json").read())
    # Figure 8 as the paper measured it: a complete schedule at each budget, and the run at its own
    (figure8,) = [outcome for outcome in analyses["convergence_budgets"] if outcome["drawn"]]
    assert {side: [p["steps"] for p in figure8["rows"][0][side]] for side in ("finetune", "scratch")} == \
        {"finetune": [30, 60, 150], "scratch": [30, 60, 180]}
    assert os.path.exists(f"{tmp_path}/runs/report/convergence_budgets.png")
    assert analyses["finetune_vs_scratch_per_dataset"]["drawn"]
    counted = next(r["details"]["examples"] for r in records if r["experiment"]["regime"] == "probe")
    sizes = analyses["size_split"]["dataset_sizes"]  # digits sized by its probe record, the subset by the catalog
    assert sizes["digits"]["train_examples"] == counted["train"] + counted["val"]
    assert sizes["fashion_mnist_mini"] == {"train_examples": 3000, "size_group": "under_10k",
                                           "source": "the fixed subset's train+val pool"}
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "0 ran, 11 skipped" in second.stdout.splitlines()[-1]


@pytest.mark.parametrize("args, expected", [
    (["--models=tiny", "--datasets=digits", "--regimes=probe,linear"], "unknown regime 'linear'"),
    (["--models=tinyy", "--datasets=digits"], "did you mean: tiny"),
    (["--datasets=digits"], "--models is required"),
    (["--models=tiny", "--datasets=digits", "--shard=4/4"], "must be an integer in [0, 3]"),
    (["--models=tiny", "--datasets=digits", "--shard=0/2", "--overwrite"], "cannot be combined with --shard"),
    (["--models=tiny", "--datasets=digits", "--convergence_budgets=2500,5k"],
     "--convergence_budgets takes whole numbers of steps of at least 1 (e.g. 2500,5000,10000), got 2500,5k"),
    (["--models=tiny", "--datasets=digits", "--convergence_budgets=0"], "got 0"),
    (["--models=tiny", "--datasets=digits", "--lock_heartbeat_seconds=60", "--lock_stale_seconds=90"],
     "heartbeat every 60s with stale after 90s; the heartbeat must be > 0 and at most half"),
])
def test_bad_sweep_input_is_one_line(tmp_path, args, expected):
    completed = subprocess.run([sys.executable, "-m", "tfbench.sweep", *args, f"--output_dir={tmp_path}"],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert completed.returncode == 2 and len(errors) == 1 and expected in errors[0], completed.stderr[-1500:]
    assert not os.listdir(tmp_path)


def test_dry_run_counts_the_convergence_budgets(tmp_path):
    """The smoke preset: two budgets for each of its two trained runs; steps by hand: a trial and a
    retrain of 150 (fine-tune) and of 180 (scratch), and 30 + 60 for each budget pair."""
    completed = subprocess.run([sys.executable, "-m", "tfbench.sweep", "--flagfile=flags/smoke.flags", "--dry_run",
                                f"--output_dir={tmp_path}/runs"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-1500:]
    assert "plan: 5 runs, 11 tasks (4 budget, 2 conclude, 2 estimate, 1 probe, 2 trial)" in completed.stdout
    assert f"to train (tasks not finished): {2 * 150 + 2 * 180 + 2 * (30 + 60)} steps" in completed.stdout


def test_overwrite_discards_finished_trials(tmp_path):
    from tfbench import runs

    experiment = _experiments(tmp_path)[0][0]
    trial = results.trial_path(experiment, "lr0.1_wd0")
    files.write_json_atomic(trial, {"status": "ok", "experiment": experiment.to_dict()})
    calls = []
    runs.run_experiment(experiment, _fake_run(calls), Runtime(), overwrite=False)
    assert os.path.exists(trial)  # a normal run keeps them (resume)
    runs.run_experiment(experiment, _fake_run(calls), Runtime(), overwrite=True)
    assert not os.path.exists(trial) and calls == ["tiny", "tiny"]


def _feature_model(path):
    """A small .keras feature model (pixels in [0, 1], pooled features out), as a user saves one."""
    import keras

    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(images)
    keras.Model(images, keras.layers.GlobalAveragePooling2D()(x)).save(path)


@pytest.mark.slow
def test_your_own_keras_model_enters_the_analysis_with_its_top1(tmp_path):
    """A .keras model named in a models file goes through a sweep with its display name, its
    ImageNet top-1 and input range, and reaches the report's correlation."""
    _feature_model(tmp_path / "my_net.keras")
    (tmp_path / "models.toml").write_text(
        '[[model]]\nname = "my_net"\nsource = "my_net.keras"\ndisplay_name = "My Net"\n'
        'imagenet_top1 = 0.701\ntop1_source = "our paper, table 2"\ninput_range = [0, 1]\n')
    completed = subprocess.run(
        [sys.executable, "-m", "tfbench.sweep", "--models=my_net,tiny", "--datasets=digits",
         "--regimes=probe", "--probe_flags=flags/smoke_probe.flags", f"--models_file={tmp_path}/models.toml",
         f"--output_dir={tmp_path}/runs", f"--cache_dir={tmp_path}/cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "probe" / "digits" / "my_net" / "record.json").read_text())
    assert record["status"] == "ok"
    assert record["experiment"]["display_name"] == "My Net"
    assert record["imagenet_top1"] == {"value": 0.701, "source": "our paper, table 2", "measured": False}
    report = json.loads((tmp_path / "runs" / "report" / "report.json").read_text())
    used = report["imagenet_top1"]["my_net"]
    assert (used["value"], used["kind"], used["label"]) == (0.701, "published", "My Net")


def test_exit_code_says_incomplete_only_while_other_shards_may_still_finish_the_needs(tmp_path):
    """A shard whose conclusion waits for a trial another shard is still running exits
    INCOMPLETE (schedulers rerun it uncounted); one waiting for a trial that failed, or with a
    failed task of its own, exits RUN_FAILED (rerunning it alone would loop)."""
    import cluster_fakes

    from tfbench import cli, sweep

    plan = cluster_fakes.study(tmp_path, runs=1, trials=2)
    cluster_fakes.write_record(plan["run0-trial0"].record)
    conclude = plan["run0-conclude"]

    def code(own_failure=False):
        with executors.LocalExecutor() as executor:
            summary = executors.execute(plan, [conclude], executor, log=lambda line: None)
        if own_failure:
            summary.outcomes["another-task"] = executors.TaskOutcome("another-task", "failed")
        return sweep.exit_code(summary, plan)

    assert code() == cli.INCOMPLETE  # trial1 has no record yet: another shard runs it
    assert code(own_failure=True) == cli.RUN_FAILED
    cluster_fakes.write_record(plan["run0-trial1"].record, status="failed")
    assert code() == cli.RUN_FAILED
    cluster_fakes.write_record(plan["run0-trial1"].record)
    assert code() == 0 and os.path.exists(conclude.record)
    assert len({0, cli.RUN_FAILED, cli.INCOMPLETE, cli.USAGE_ERROR}) == 4
