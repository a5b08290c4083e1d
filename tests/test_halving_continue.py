"""Continuing successive halving (search "halving_continue"): who survives each rung, what a
continued trial trains, and what it costs.

The rungs run with a fake trainer whose validation scores are a hand-written table, so the
survivors can be checked by hand; one test trains the tiny network on digits to check that a
continued trial ends with the weights of one uninterrupted trial on the full budget's schedule.
"""

import os

import numpy as np
import pytest

from tfbench import estimate_cost, results, study, tuning
from tfbench.experiment import Experiment
from tfbench.regimes import trained, trainer
from tfbench.settings import Runtime, TrainingSettings

RUNTIME = Runtime(verbose=False)
LRS, WDS = (0.1, 0.01, 0.001), (0.0, 1e-4, 1e-3)
GRID = [(lr, wd) for lr in LRS for wd in WDS]  # grid order: k = 3 * lr index + wd index
# Validation score of grid point k after each budget. Budget 1: k = 4, 2, 6 lead (top third of 9);
# budget 3: of those, k = 6 leads, though k = 4 led at budget 1.
SCORES = {1: [0.50, 0.10, 0.80, 0.30, 0.90, 0.20, 0.70, 0.40, 0.60],
          3: {2: 0.20, 4: 0.30, 6: 0.50},
          9: {6: 0.55}}


def quiet(message):
    pass


class TableTrainer:
    """Scores from SCORES by (grid point, budget); writes a checkpoint folder as a real trial does,
    and logs every call (name, budget, schedule, trial continued)."""

    chief = True
    calls = []

    def __init__(self, experiment, runtime=None):
        self.experiment = experiment

    def train_and_score(self, hyperparameters, fit_split, score_split, name, train_steps, schedule_steps=None,
                        continues=None):
        TableTrainer.calls.append((name, train_steps, schedule_steps, continues))
        os.makedirs(trainer.checkpoint_dir(self.experiment, name), exist_ok=True)
        k = GRID.index((hyperparameters["learning_rate"], hyperparameters["weight_decay"]))
        score = 0.5 if score_split == "test" else SCORES[train_steps][k]
        before = int(continues.split("_steps")[1].split("_")[0]) if continues else 0
        return trainer.TrialOutcome("ok", score, None, {"steps": train_steps, "continued_from_step": before})

    def discard(self, name):
        trainer.discard_checkpoints(self.experiment, name)


@pytest.fixture
def table_trainer(monkeypatch):
    monkeypatch.setattr(TableTrainer, "calls", [])
    monkeypatch.setattr(trained, "TrialTrainer", TableTrainer)
    return TableTrainer


def _experiment(folder, search="halving_continue"):
    return Experiment(regime="finetune", model="tiny", dataset="digits", output_dir=str(folder), batch_size=8,
                      settings=TrainingSettings(search=search, train_steps=9, halving_eta=3, halving_min_steps=1,
                                                learning_rates=LRS, weight_decays=WDS))


def _name(k, rung, steps):
    lr, wd = GRID[k]
    return tuning.Trial(lr, wd, steps, rung, schedule_steps=None if steps == 9 else 9).trial_id


def _trials_on_disk(experiment):
    return [results.read_json(os.path.join(experiment.run_dir(), results.TRIALS_DIR, name))
            for name in sorted(os.listdir(os.path.join(experiment.run_dir(), results.TRIALS_DIR)))
            if name.endswith(".json")]


def _checkpoints_left(experiment):
    trials = os.path.join(experiment.run_dir(), results.TRIALS_DIR)
    return sorted(name for name in os.listdir(trials) if os.path.isdir(trainer.checkpoint_dir(experiment, name)))


def test_each_rung_continues_the_best_third_of_the_rung_before(tmp_path, table_trainer):
    experiment = _experiment(tmp_path)
    for rung in range(3):
        for trial in trained.rung_trials(experiment, rung, log=quiet):
            trained.run_trial(experiment, trial, RUNTIME, TableTrainer(experiment), log=quiet)
    record = trained.conclude(experiment, RUNTIME, TableTrainer(experiment), log=quiet)

    # By hand from SCORES: rung 1 continues k = 2, 4, 6 (in grid order), rung 2 continues k = 6.
    assert [call for call in table_trainer.calls if call[0] != "final"] == (
        [(_name(k, 0, 1), 1, 9, None) for k in range(9)]
        + [(_name(k, 1, 3), 3, 9, _name(k, 0, 1)) for k in (2, 4, 6)]
        + [(_name(6, 2, 9), 9, None, _name(6, 1, 3))])
    assert _name(6, 1, 3) == "lr0.001_wd0_rung1_steps3_of9" and _name(6, 2, 9) == "lr0.001_wd0_rung2_steps9"
    # The same survivors, read off the records: the top 1/eta of each rung by validation score.
    by_rung = {}
    for trial in _trials_on_disk(experiment):
        by_rung.setdefault(trial["rung"], []).append(trial)
    for rung in (1, 2):
        before = sorted(by_rung[rung - 1], key=lambda t: -t["validation_score"])[:len(by_rung[rung - 1]) // 3]
        assert sorted(t["trial_id"].split("_rung")[0] for t in before) == sorted(
            t["trial_id"].split("_rung")[0] for t in by_rung[rung])
    assert record["hyperparameters"] == {"learning_rate": 0.001, "weight_decay": 0.0}
    assert table_trainer.calls[-1] == ("final", 9, None, None)  # the retrain: the full budget, from scratch
    assert record["protocol"]["name"] == "halving_continue"


def test_a_continued_survivor_trains_its_budget_not_the_sum_and_the_plan_counts_that(tmp_path, table_trainer):
    experiment, restarting = _experiment(tmp_path), _experiment(tmp_path / "restart", search="halving")
    first = trained.trials(experiment)
    assert trained.rung_plan(experiment, first) == [(9, 1), (3, 3 - 1), (1, 9 - 3)]
    assert trained.rung_plan(restarting, trained.trials(restarting)) == [(9, 1), (3, 3), (1, 9)]
    continuing_steps = 9 * 1 + 3 * 2 + 1 * 6 + 9  # trials, then the retrain on trainval
    restarting_steps = 9 * 1 + 3 * 3 + 1 * 9 + 9
    for run, steps in ((experiment, continuing_steps), (restarting, restarting_steps)):
        tasks = study.study_plan([(run, RUNTIME)]).tasks
        assert sum(task.steps for task in tasks) == steps and tasks[-1].steps == 9
        shape = trained.rung_plan(run, trained.trials(run))
        assert estimate_cost.run_work(run, RUNTIME, shape).trained_images == steps * 8
        assert f"at most {steps:,} steps" in estimate_cost.estimated_plan_line(run, RUNTIME, shape)

    executed = study.study_plan([(experiment, RUNTIME)])
    from tfbench.tasks import executors

    with executors.LocalExecutor() as executor:
        assert executors.execute(executed, executed.tasks, executor, log=quiet).complete()
    record = results.read_json(results.record_path(experiment))
    assert record["status"] == "ok" and record["total_train_steps"] == continuing_steps
    assert {(t["rung"], t["train_steps"]) for t in record["trials"]} == {(0, 1), (1, 3), (2, 9)}


def test_planning_a_rung_frees_the_checkpoints_of_the_trials_it_does_not_continue(tmp_path, table_trainer):
    experiment = _experiment(tmp_path)
    for trial in trained.rung_trials(experiment, 0, log=quiet):
        trained.run_trial(experiment, trial, RUNTIME, TableTrainer(experiment), log=quiet)
    assert len(_checkpoints_left(experiment)) == 9  # kept: any of them may be continued
    study.rung_slot_task(experiment.to_dict(), vars(RUNTIME), None, rung=1, slot=0)
    # The 6 not promoted are gone; slot 0 continued k = 2 and freed its checkpoint.
    assert _checkpoints_left(experiment) == sorted([_name(4, 0, 1), _name(6, 0, 1), _name(2, 1, 3)])


# ---------------------------------------------------------------------------------------------
# Real training: the tiny network on digits


@pytest.fixture
def _fresh_process_state():
    trainer.release_kept_learner()
    yield
    trainer.release_kept_learner()


def _weights():
    (kept,) = trainer._KEPT_LEARNER.values()
    return kept.model.get_weights()


@pytest.mark.slow
def test_a_continued_trial_ends_as_one_uninterrupted_trial_on_the_full_schedule(tmp_path, _fresh_process_state):
    runtime = Runtime(verbose=False, steps_per_loop=2, eval_every=0, checkpoint_every=3)
    experiment = Experiment(
        regime="finetune", model="tiny", dataset="digits", output_dir=str(tmp_path), image_size=8, batch_size=8,
        settings=TrainingSettings(search="halving_continue", train_steps=8, halving_eta=2, halving_min_steps=2,
                                  learning_rates=(0.05,), weight_decays=(1e-4,), warmup_steps=2, dropout=0.3,
                                  bn_momentum=0.9))
    assert tuning.halving_budgets(experiment.settings) == [2, 4, 8]
    continued = []
    for rung in range(3):
        (trial,) = trained.rung_trials(experiment, rung, log=quiet)
        record = trained.run_trial(experiment, trial, runtime, log=quiet)
        continued.append((record, _weights()))

    direct = trainer.TrialTrainer(experiment, runtime)
    hyperparameters = {"learning_rate": 0.05, "weight_decay": 1e-4}
    for (record, weights), (steps, schedule) in zip(continued[1:], ((4, 8), (8, None))):
        outcome = direct.train_and_score(hyperparameters, "train", "val", f"direct{steps}", steps, schedule)
        assert outcome.details["continued_from_step"] == 0 and outcome.details["steps"] == steps
        assert record["training"]["continued_from_step"] == steps // 2 and record["training"]["steps"] == steps
        assert record["validation_score"] == outcome.score
        assert record["training"]["final_loss"] == outcome.details["final_loss"]
        for got, expected in zip(weights, _weights()):
            np.testing.assert_array_equal(got, expected)
    # The schedule matters: restarting for 4 steps on a 4-step schedule ends elsewhere.
    direct.train_and_score(hyperparameters, "train", "val", "restart4", 4)
    assert any(not np.array_equal(a, b) for a, b in zip(continued[1][1], _weights()))
