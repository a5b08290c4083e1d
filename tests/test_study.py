"""A study as tasks: each fine-tune/scratch trial a task, then the conclusion; the probe one task.
Run through the executor with a fake trainer, the tasks leave the records `trained.run` leaves."""

import json
import os

import pytest

from tfbench import results, study
from tfbench.regimes import trained, trainer
from tfbench.tasks import executors, plan
from tfbench.experiment import Experiment
from tfbench.settings import ProbeSettings, Runtime, TrainingSettings

VALIDATION = {1e-3: 0.6, 1e-2: 0.8, 1e-1: 0.7}
TEST = {1e-3: 0.9, 1e-2: 0.75, 1e-1: 0.5}


class FakeTrainer:
    """Scores from tables keyed by learning rate, in place of training; raises for `broken`."""

    chief = True
    broken = set()

    def __init__(self, experiment, runtime):
        pass

    def train_and_score(self, hyperparameters, fit_split, score_split, name, train_steps, schedule_steps=None,
                        continues=None):
        if hyperparameters["learning_rate"] in self.broken:
            raise OSError("bad data in shard 3")
        table = TEST if score_split == "test" else VALIDATION
        return trainer.TrialOutcome("ok", table.get(hyperparameters["learning_rate"], 0.0), None,
                                     {"images_per_second": 10.0, "replicas": 1, "steps": train_steps})

    def discard(self, name):
        pass


@pytest.fixture
def fake_training(monkeypatch):
    monkeypatch.setattr(trained, "TrialTrainer", FakeTrainer)
    monkeypatch.setattr(FakeTrainer, "broken", set())
    return FakeTrainer


def _experiment(folder, **settings):
    return Experiment(regime="finetune", model="tiny", dataset="digits", output_dir=str(folder), batch_size=8,
                      settings=TrainingSettings(**{"search": "small", "train_steps": 10, **settings}))


def _run(experiments):
    study_plan = study.study_plan([(experiment, Runtime()) for experiment in experiments])
    with executors.LocalExecutor() as executor:
        return executors.execute(study_plan, study_plan.tasks, executor, log=lambda line: None)


def _comparable(path):
    with open(path) as handle:
        record = json.load(handle)
    for volatile in ("timings", "started_at", "finished_at", "host", "trials"):
        record.pop(volatile, None)
    return record


def test_a_run_is_its_trials_then_the_conclusion_that_needs_them(tmp_path):
    experiment = _experiment(tmp_path)
    probe = Experiment(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path),
                       settings=ProbeSettings(l2_search="fast"))
    tasks = study.study_plan([(probe, Runtime()), (experiment, Runtime())]).tasks
    assert [(t.kind, t.key) for t in tasks[:2]] == [("probe", "probe/digits/tiny"),
                                                    ("trial", "finetune/digits/tiny/lr0.001_wd1e-05")]
    *trials, conclude = tasks[1:]
    assert len(trials) == 6 and conclude.needs == tuple(t.key for t in trials)
    assert conclude.record == results.record_path(experiment) == conclude.record
    assert trials[0].record == results.trial_path(experiment, "lr0.001_wd1e-05")
    assert {(t.steps, t.images) for t in tasks[1:]} == {(10, 80)} and (tasks[0].steps, tasks[0].images) == (0, 0)


def test_the_tasks_leave_the_records_of_a_sequential_run(tmp_path, fake_training):
    summary = _run([_experiment(tmp_path / "tasks")])
    assert summary.complete() and summary.count("ran") == 7
    sequential, trainer = _experiment(tmp_path / "sequential"), FakeTrainer(None, None)
    trial_records = [trained.run_trial(sequential, trial, Runtime(), trainer, log=lambda line: None)
                     for trial in trained.trials(sequential)]
    expected = trained.conclude(sequential, Runtime(), trainer, trial_records, log=lambda line: None)
    assert expected["hyperparameters"]["learning_rate"] == 1e-2 and expected["test_score"] == 0.75
    for trial in trained.trials(sequential):
        ours = _comparable(results.trial_path(_experiment(tmp_path / "tasks"), trial.trial_id))
        theirs = _comparable(results.trial_path(sequential, trial.trial_id))
        ours["experiment"].pop("output_dir"), theirs["experiment"].pop("output_dir")
        assert ours == theirs
    record = _comparable(results.record_path(_experiment(tmp_path / "tasks")))
    assert (record["status"], record["hyperparameters"], record["test_score"], record["validation_score"]) == \
        ("ok", expected["hyperparameters"], 0.75, expected["validation_score"])


def test_a_trial_that_raises_is_recorded_failed_and_its_run_waits(tmp_path, fake_training):
    fake_training.broken = {1e-1}
    experiment = _experiment(tmp_path)
    summary = _run([experiment])
    failed = sorted(key for key, outcome in summary.outcomes.items() if outcome.status == "failed")
    assert failed == ["finetune/digits/tiny/lr0.1_wd0", "finetune/digits/tiny/lr0.1_wd1e-05"]
    assert summary.outcomes[failed[0]].reason == "OSError: bad data in shard 3"
    assert list(summary.waiting) == ["finetune/digits/tiny"] and summary.count("ran") == 4
    trial = results.read_json(results.trial_path(experiment, "lr0.1_wd0"))
    run = results.read_json(results.record_path(experiment))
    assert trial["status"] == run["status"] == "failed" and "Traceback" in trial["traceback"]
    assert run["reason"] == "trial lr0.1_wd0: OSError: bad data in shard 3"  # the last to fail

    fake_training.broken = set()  # the data fixed: a rerun trains those trials alone, then concludes
    again = _run([experiment])
    assert again.complete() and again.count("ran") == 3 and again.count("skipped") == 4
    assert results.read_json(results.record_path(experiment))["status"] == "ok"


def test_a_trial_record_made_under_other_settings_is_not_done(tmp_path, fake_training):
    _run([_experiment(tmp_path, train_steps=10)])
    longer = [t for t in study.study_plan([(_experiment(tmp_path, train_steps=20), Runtime())], overwrite=True).tasks
              if t.kind == "trial"]
    assert os.path.exists(longer[0].record) and not any(plan.finished(t) for t in longer)


def test_halving_rungs_are_slot_tasks_that_need_the_rung_before(tmp_path):
    experiment = _experiment(tmp_path, search="halving", train_steps=27)
    tasks = study.study_plan([(experiment, Runtime())]).tasks
    *trials, conclude = tasks
    rungs = [trials[:56], trials[56:74], trials[74:80], trials[80:]]
    assert [len(rung) for rung in rungs] == [56, 18, 6, 2]
    assert all(task.needs == () for task in rungs[0])
    for before, rung in zip(rungs, rungs[1:]):
        assert all(task.needs == tuple(t.key for t in before) for task in rung)
    assert rungs[1][0].key == "finetune/digits/tiny/rung1/slot0"
    assert [{task.steps for task in rung} for rung in rungs] == [{1}, {3}, {9}, {27}]
    assert conclude.needs == tuple(t.key for t in trials) and conclude.steps == 27
    assert rungs[0][0].record == results.trial_path(experiment, "lr0.0001_wd1e-06_rung0_steps1")


@pytest.mark.slow
def test_halving_through_the_executor_leaves_the_records_of_a_sequential_run(tmp_path, fake_training):
    experiment = _experiment(tmp_path / "tasks", search="halving", train_steps=27)
    summary = _run([experiment])
    assert summary.complete() and summary.count("ran") == 56 + 18 + 6 + 2 + 1
    sequential, trainer = _experiment(tmp_path / "sequential", search="halving", train_steps=27), FakeTrainer(None, None)
    for rung in range(4):
        for trial in trained.rung_trials(sequential, rung, log=lambda line: None):
            trained.run_trial(sequential, trial, Runtime(), trainer, log=lambda line: None)
    expected = trained.conclude(sequential, Runtime(), trainer, log=lambda line: None)
    record = results.read_json(results.record_path(experiment))
    for field in ("status", "hyperparameters", "validation_score", "test_score", "total_train_steps"):
        assert record[field] == expected[field]
    assert record["total_train_steps"] == 56 * 1 + 18 * 3 + 6 * 9 + 2 * 27 + 27
    assert _run([experiment]).count("skipped") == 56 + 18 + 6 + 2 + 1  # nothing left to do


def test_the_report_of_a_complete_study_is_built_once_by_whichever_driver_gets_there(tmp_path):
    import threading
    import time

    import cluster_fakes

    study_plan = cluster_fakes.study(tmp_path, runs=2, trials=2)
    for task in study_plan.tasks:
        cluster_fakes.write_record(task.record)
    built = []

    def build(output_dir):
        built.append(output_dir)
        time.sleep(0.3)  # long enough for the other drivers to arrive while it builds

    lines = []
    drivers = [threading.Thread(target=lambda: lines.append(study.report_once(study_plan, str(tmp_path), build)))
               for _ in range(3)]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join()
    assert built == [str(tmp_path)] and sum(line.startswith("report: built from 2 runs") for line in lines) == 1
    assert study.report_once(study_plan, str(tmp_path), build).startswith("report: up to date (2 runs)")
    cluster_fakes.write_record(study_plan["run1-conclude"].record, value="rerun")  # a run record changed
    assert study.report_once(study_plan, str(tmp_path), build).startswith("report: built") and len(built) == 2
