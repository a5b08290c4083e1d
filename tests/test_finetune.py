"""The fine-tune / scratch protocol around a fake trainer: trial records, resume by skipping,
selection on validation and test-split isolation.

The fake stands in for training: it returns scores from a table and logs which splits each call
fits and scores, so the protocol's order can be checked without training anything.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from tfbench import predictions, results, tuning
from tfbench.regimes import trained, trainer
from tfbench import protocol as protocol_numbers
from tfbench.experiment import Experiment
from tfbench.settings import Runtime, TrainingSettings

RUNTIME = Runtime()


def quiet(message):
    pass


class FakeTrainer:
    """Scores from a table keyed by learning rate; logs every (fit split, score split, name)."""

    def __init__(self, validation, test, diverge=(), chief=True):
        self.validation, self.test, self.diverge, self.chief = validation, test, diverge, chief
        self.calls, self.discarded = [], []

    def train_and_score(self, hyperparameters, fit_split, score_split, name, train_steps, schedule_steps=None,
                        continues=None):
        self.calls.append((fit_split, score_split, name))
        lr = hyperparameters["learning_rate"]
        if lr in self.diverge:
            return trainer.TrialOutcome("diverged", None, "non-finite training loss at step 3", {})
        table = self.test if score_split == "test" else self.validation
        details = {"images_per_second": 10.0, "steps": train_steps}
        if score_split == "val":  # halfway and at the end, as training logs it
            details["validation_curve"] = [[train_steps // 2, table[lr] / 2], [train_steps, table[lr]]]
        return trainer.TrialOutcome("ok", table[lr], None, details)

    def discard(self, name):
        self.discarded.append(name)


def _experiment(tmp_path, **settings):
    return Experiment(regime="finetune", model="tiny", dataset="digits", output_dir=str(tmp_path),
                      settings=TrainingSettings(**{"search": "small", "train_steps": 10, **settings}))


def search(experiment, trials, trainer, log=quiet):
    """Every trial through trained.run_trial, as trained.run does."""
    return [trained.run_trial(experiment, trial, RUNTIME, trainer, log=log) for trial in trials]


def protocol(experiment, trials, trainer):
    return trained.conclude(experiment, RUNTIME, trainer, search(experiment, trials, trainer), log=quiet)


TRIALS = [tuning.Trial(1e-3, 0.0), tuning.Trial(1e-2, 0.0), tuning.Trial(1e4, 0.0), tuning.Trial(1e-1, 0.0)]


@pytest.mark.slow
def test_protocol_selects_on_validation_and_reads_test_once_at_the_end(tmp_path):
    # The test split would prefer lr 1e-3; validation prefers 1e-2, which must be chosen.
    trainer = FakeTrainer(validation={1e-3: 0.6, 1e-2: 0.8, 1e-1: 0.7},
                          test={1e-3: 0.95, 1e-2: 0.5, 1e-1: 0.6}, diverge=(1e4,))
    record = protocol(_experiment(tmp_path), TRIALS, trainer)

    assert [call[:2] for call in trainer.calls] == [("train", "val")] * 4 + [("trainval", "test")]
    assert trainer.calls[-1][2] == "final"
    assert record["hyperparameters"] == {"learning_rate": 1e-2, "weight_decay": 0.0}
    assert record["validation_score"] == 0.8 and record["test_score"] == 0.5
    assert record[results.CHOSEN_CURVE] == [[5, 0.4], [10, 0.8]]  # the chosen trial's, for the report
    assert record["status"] == "ok"
    statuses = {t["trial_id"]: (t["status"], t["validation_score"]) for t in record["trials"]}
    assert statuses["lr1e+04_wd0"] == ("diverged", None)
    assert len(statuses) == 4
    assert trainer.discarded == [trial.trial_id for trial in TRIALS]
    assert record["total_train_steps"] == 3 * 10 + 10  # the ok trials and the retrain
    assert record["protocol"]["name"] == "custom" and not record["at_grid_edge"]
    assert record["imagenet_top1"] == {"value": None, "source": "none: a test network, no ImageNet weights exist",
                                       "measured": False}
    json.dumps(record, allow_nan=False)  # a valid JSON record


class AnsweringTrainer(FakeTrainer):
    """Its test scoring also returns per-example answers: 10 examples, the first 5 right."""

    def train_and_score(self, hyperparameters, fit_split, score_split, name, train_steps, schedule_steps=None,
                        continues=None):
        outcome = super().train_and_score(hyperparameters, fit_split, score_split, name, train_steps)
        if score_split != "test":
            return outcome
        labels = np.arange(10)
        answers = predictions.Predictions.of("top1", labels, np.eye(10)[np.where(labels < 5, labels, 0)])
        return dataclasses.replace(outcome, predictions=answers)


@pytest.mark.parametrize("chief", [True, False])
def test_the_chief_stores_the_final_test_predictions_beside_the_record(tmp_path, chief):
    experiment = _experiment(tmp_path)
    trainer = AnsweringTrainer({1e-3: 0.6}, {1e-3: 0.5}, chief=chief)
    record = trained.conclude(experiment, RUNTIME, trainer, search(experiment, TRIALS[:1], trainer), log=quiet)
    stored = os.path.join(experiment.run_dir(), predictions.PREDICTIONS_FILE)
    assert os.path.exists(stored) == chief and (predictions.RECORD_KEY in record) == chief
    if chief:
        assert record[predictions.RECORD_KEY]["sha256"] and json.dumps(record, allow_nan=False)
        assert predictions.read(experiment.run_dir(), record).score() == record["test_score"] == 0.5


def test_trial_records_are_written_and_skipped_on_rerun(tmp_path):
    experiment = _experiment(tmp_path)
    scores = {1e-3: 0.6, 1e-2: 0.8, 1e-1: 0.7}
    first = FakeTrainer(scores, scores, diverge=(1e4,))
    search(experiment, TRIALS[:2], first)
    for trial in TRIALS[:2]:
        written = results.read_json(results.trial_path(experiment, trial.trial_id))
        assert written["status"] == "ok" and written["hyperparameters"] == trial.hyperparameters()

    again = FakeTrainer(scores, scores, diverge=(1e4,))
    records = search(experiment, TRIALS, again)
    assert [call[2] for call in again.calls] == [TRIALS[2].trial_id, TRIALS[3].trial_id]
    assert [r["validation_score"] for r in records] == [0.6, 0.8, None, 0.7]
    diverged = results.read_json(results.trial_path(experiment, TRIALS[2].trial_id))
    assert diverged["status"] == "diverged" and "non-finite" in diverged["reason"]


def test_all_trials_diverged_gives_a_diverged_run_without_touching_test(tmp_path):
    trainer = FakeTrainer({}, {}, diverge=(1e-3, 1e-2, 1e4, 1e-1))
    record = protocol(_experiment(tmp_path), TRIALS, trainer)
    assert record["status"] == "diverged" and record["test_score"] is None
    assert all(call[1] == "val" for call in trainer.calls)


def test_non_chief_workers_write_no_trial_records(tmp_path):
    experiment = _experiment(tmp_path)
    scores = {1e-3: 0.6}
    search(experiment, TRIALS[:1], FakeTrainer(scores, scores, chief=False))
    assert not os.path.exists(results.trial_path(experiment, TRIALS[0].trial_id))


def test_trials_are_shared_between_grids_but_not_across_other_settings(tmp_path):
    scores = {1e-3: 0.6, 1e-2: 0.8}
    first = FakeTrainer(scores, scores)
    search(_experiment(tmp_path, search="small"), TRIALS[:1], first)
    paper = FakeTrainer(scores, scores)
    search(_experiment(tmp_path, search="paper"), TRIALS[:2], paper)
    assert [call[2] for call in paper.calls] == [TRIALS[1].trial_id]  # the small grid's trial reused

    longer = FakeTrainer(scores, scores)
    messages = []
    experiment = _experiment(tmp_path, search="paper", train_steps=20)
    search(experiment, TRIALS[:1], longer, log=messages.append)
    assert [call[2] for call in longer.calls] == [TRIALS[0].trial_id]  # stale: trained again
    assert any("other settings" in message for message in messages)
    replaced = results.read_json(results.trial_path(experiment, TRIALS[0].trial_id))
    assert replaced["experiment"]["settings"]["train_steps"] == 20


def test_checkpoints_of_another_training_run_are_not_resumed(tmp_path):
    from tfbench.regimes import trainer

    folder = tmp_path / "checkpoints"
    trainer.forget_stale_checkpoints(str(folder), {"train_steps": 10})
    (folder / "ckpt-5.index").write_text("x")
    trainer.forget_stale_checkpoints(str(folder), {"train_steps": 10})
    assert (folder / "ckpt-5.index").exists()  # same run: kept for resuming
    trainer.forget_stale_checkpoints(str(folder), {"train_steps": 20})
    assert not (folder / "ckpt-5.index").exists()
    assert json.loads((folder / trainer.CHECKPOINT_IDENTITY).read_text()) == {"train_steps": 20}


def test_a_choice_at_the_grids_edge_is_marked_and_warned(tmp_path):
    trainer = FakeTrainer(validation={1e-3: 0.6, 1e-2: 0.7, 1e-1: 0.9}, test={1e-1: 0.8}, diverge=(1e4,))
    messages = []
    experiment = _experiment(tmp_path)
    trials = [t for t in TRIALS if t.learning_rate != 1e4]
    record = trained.conclude(experiment, RUNTIME, trainer, search(experiment, trials, trainer),
                               log=messages.append)
    assert record["at_grid_edge"] and record["grid_edges"] == {"learning_rate": "largest"}
    assert sum("edge of its grid" in message for message in messages) == 1


def test_conclude_waits_for_every_trial(tmp_path):
    experiment = _experiment(tmp_path)
    trainer = FakeTrainer({1e-3: 0.6}, {1e-3: 0.5})
    trained.run_trial(experiment, tuning.trials(experiment.settings, "finetune")[0], RUNTIME, trainer,
                       log=quiet)
    with pytest.raises(trained.TrialsUnfinishedError, match="5 of 6 trials"):
        trained.conclude(experiment, RUNTIME, trainer, log=quiet)


# ---------------------------------------------------------------------------------------------
# Successive halving over the paper's grid

LRS, WDS = protocol_numbers.FINETUNE_LEARNING_RATES, protocol_numbers.FINETUNE_WEIGHT_DECAYS


class BudgetTrainer:
    """Validation scores that depend on the budget, so that each rung ranks differently: at 1 step
    larger learning rates lead, at 3 smaller ones, at 9 larger weight decays, at 27 larger learning
    rates again. Logs (name, budget) per call."""

    chief = True

    def __init__(self):
        self.calls = []

    def train_and_score(self, hyperparameters, fit_split, score_split, name, train_steps, schedule_steps=None,
                        continues=None):
        self.calls.append((name, train_steps))
        i, j = LRS.index(hyperparameters["learning_rate"]), WDS.index(hyperparameters["weight_decay"])
        score = {1: i * 10 + j, 3: -i * 10 + j, 9: j, 27: i}[train_steps] / 100
        return trainer.TrialOutcome("ok", 0.5 if score_split == "test" else score, None,
                                     {"steps": train_steps})

    def discard(self, name):
        pass


def _halving(tmp_path):
    return _experiment(tmp_path, search="halving", train_steps=27, halving_eta=3)


def _rungs(experiment, trainer, upto):
    """Rungs 0..upto, each from the records of the one before, as the tasks of a study run them."""
    for rung in range(upto + 1):
        for trial in trained.rung_trials(experiment, rung, log=quiet):
            trained.run_trial(experiment, trial, RUNTIME, trainer, log=quiet)


def test_halving_promotes_the_best_third_and_chooses_on_the_full_budget(tmp_path):
    experiment, trainer = _halving(tmp_path), BudgetTrainer()
    assert tuning.halving_budgets(experiment.settings) == [1, 3, 9, 27]
    _rungs(experiment, trainer, 3)
    record = trained.conclude(experiment, RUNTIME, trainer, log=quiet)

    by_budget = {}
    for name, steps in trainer.calls:
        by_budget.setdefault(steps, []).append(name)
    assert [len(by_budget[b]) for b in (1, 3, 9)] == [56, 18, 6] and len(by_budget[27]) == 2 + 1
    pair = lambda i, j: f"lr{LRS[i]:.4g}_wd{WDS[j]:.4g}"  # noqa: E731
    # Rung 1: lr index 6 and 5 (8 each), then lr index 4 with the two largest weight decays.
    assert {n.split("_rung")[0] for n in by_budget[3]} == (
        {pair(6, j) for j in range(8)} | {pair(5, j) for j in range(8)} | {pair(4, 6), pair(4, 7)})
    # Rung 2: smaller learning rates now lead: lr 4 (wd 6, 7), then lr 5 with wd 4..7.
    assert {n.split("_rung")[0] for n in by_budget[9]} == {pair(4, 6), pair(4, 7)} | {pair(5, j) for j in (4, 5, 6, 7)}
    # Rung 3: the largest weight decay of both learning rates; the full budget prefers lr index 5.
    assert by_budget[27] == [pair(4, 7) + "_rung3_steps27", pair(5, 7) + "_rung3_steps27", "final"]
    assert record["hyperparameters"] == {"learning_rate": LRS[5], "weight_decay": WDS[7]}
    assert record["validation_score"] == 0.05 and record["test_score"] == 0.5
    assert record["total_train_steps"] == 56 * 1 + 18 * 3 + 6 * 9 + 2 * 27 + 27 == 245
    assert results.table([record])[0]["total_train_steps"] == 245  # the report's rows carry the cost
    assert len(record["trials"]) == 56 + 18 + 6 + 2
    assert {t["rung"] for t in record["trials"]} == {0, 1, 2, 3}
    assert record["protocol"]["name"] == "halving"
    assert record["protocol"]["differences"]["settings.search"] == {"paper": "paper", "run": "halving"}
    written = results.read_json(results.trial_path(experiment, pair(5, 7) + "_rung3_steps27"))
    assert (written["rung"], written["train_steps"]) == (3, 27)


def test_halving_resumes_after_a_kill_between_rungs(tmp_path):
    experiment, before = _halving(tmp_path), BudgetTrainer()
    _rungs(experiment, before, 1)
    with pytest.raises(trained.TrialsUnfinishedError, match="6 of 6 trials"):
        trained.conclude(experiment, RUNTIME, before, log=quiet)
    after = BudgetTrainer()
    _rungs(experiment, after, 3)  # the same command again
    record = trained.conclude(experiment, RUNTIME, after, log=quiet)
    assert sorted({steps for _, steps in after.calls}) == [9, 27] and len(after.calls) == 6 + 2 + 1
    uninterrupted, trainer = _halving(tmp_path / "again"), BudgetTrainer()
    _rungs(uninterrupted, trainer, 3)
    expected = trained.conclude(uninterrupted, RUNTIME, trainer, log=quiet)
    assert sorted(before.calls + after.calls) == sorted(trainer.calls)  # every trial trained once
    for field in ("hyperparameters", "validation_score", "test_score", "total_train_steps"):
        assert record[field] == expected[field]


def test_a_halving_trial_is_not_the_grid_trial_of_another_budget(tmp_path):
    trial = tuning.halving_rung_trials(_halving(tmp_path).settings, 1, [tuning.Trial(0.01, 0.0, 1, 0)],
                                       [{"status": "ok", "validation_score": 0.5}])[0]
    assert trial == tuning.Trial(0.01, 0.0, train_steps=3, rung=1)
    assert trial.trial_id == "lr0.01_wd0_rung1_steps3" != tuning.Trial(0.01, 0.0).trial_id


def test_halving_skips_diverged_trials_and_concludes_diverged_when_none_is_left(tmp_path):
    settings = _halving(tmp_path).settings
    previous = [tuning.Trial(lr, 0.0, 1, 0) for lr in (0.1, 0.01, 0.001)]
    records = [{"status": "diverged", "validation_score": None}, {"status": "ok", "validation_score": 0.2},
               {"status": "ok", "validation_score": 0.3}]
    assert tuning.halving_rung_trials(settings, 1, previous, records) == [tuning.Trial(0.001, 0.0, 3, 1)]
    records[2]["status"] = records[1]["status"] = "diverged"
    assert tuning.halving_rung_trials(settings, 1, previous, records) == []


def test_a_hyperrule_record_states_how_bits_rule_was_adapted(tmp_path):
    from tfbench import hyperrule

    adapted = trained.conventions(_experiment(tmp_path, search="hyperrule"))
    assert adapted["hyperrule"] == hyperrule.ADAPTATION and "512" in adapted["hyperrule"]
    assert "hyperrule" not in trained.conventions(_experiment(tmp_path))
