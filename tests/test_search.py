"""Grids, selection on validation, trial records, resume-by-skipping, and test-split isolation.

A fake trainer stands in for training: it returns scores from a table and logs which splits each
call fits and scores, so the protocol's order can be checked without training anything.
"""

import json
import os

import pytest

from tfbench import results, search
from tfbench.experiment import Experiment, InvalidSettingError
from tfbench.registry import UnknownNameError


def test_paper_grids_are_the_papers():
    finetune = search.grid("paper", "finetune")
    assert len(finetune) == 56
    assert sorted({t.learning_rate for t in finetune}) == pytest.approx(
        [1e-4, 3.1623e-4, 1e-3, 3.1623e-3, 1e-2, 3.1623e-2, 1e-1], rel=1e-4)
    assert sorted({t.weight_decay for t in finetune}) == pytest.approx(
        [0.0, 1e-6, 3.1623e-6, 1e-5, 3.1623e-5, 1e-4, 3.1623e-4, 1e-3], rel=1e-4)
    scratch = search.grid("paper", "scratch")
    assert len(scratch) == 56
    assert sorted({t.learning_rate for t in scratch}) == pytest.approx(
        [1e-3, 3.1623e-3, 1e-2, 3.1623e-2, 0.1, 0.31623, 1.0], rel=1e-4)
    assert sorted({t.weight_decay for t in scratch}) == pytest.approx(
        [1e-5, 3.1623e-5, 1e-4, 3.1623e-4, 1e-3, 3.1623e-3, 1e-2, 0.031623], rel=1e-4)
    assert len({t.trial_id for t in finetune}) == 56  # ids are unique folder names


def test_single_configuration_and_bad_names():
    assert search.grid("none", "scratch", 0.5, 1e-4) == [search.Trial(0.5, 1e-4)]
    with pytest.raises(InvalidSettingError, match="learning_rate and weight_decay"):
        search.grid("none", "finetune", 0.1, None)
    with pytest.raises(UnknownNameError, match="did you mean: paper"):
        search.grid("papr", "finetune")
    with pytest.raises(InvalidSettingError, match="finetune, scratch"):
        search.grid("paper", "probe")


def test_select_uses_validation_only_and_skips_diverged():
    records = [
        {"status": "ok", "validation_score": 0.5, "test_score": 0.99, "trial_id": "a"},
        {"status": "diverged", "validation_score": None, "trial_id": "b"},
        {"status": "ok", "validation_score": 0.7, "test_score": 0.1, "trial_id": "c"},
        {"status": "ok", "validation_score": 0.7, "test_score": 0.2, "trial_id": "d"},  # tie: earlier wins
    ]
    assert search.select(records)["trial_id"] == "c"
    assert search.select([records[1]]) is None


class FakeTrainer:
    """Scores from a table keyed by learning rate; logs every (fit split, score split, name)."""

    def __init__(self, validation, test, diverge=()):
        self.validation, self.test, self.diverge = validation, test, diverge
        self.calls, self.discarded = [], []

    def train_and_score(self, hyperparameters, fit_split, score_split, name):
        self.calls.append((fit_split, score_split, name))
        lr = hyperparameters["learning_rate"]
        if lr in self.diverge:
            return search.TrialOutcome("diverged", None, "non-finite training loss at step 3", {})
        table = self.test if score_split == "test" else self.validation
        return search.TrialOutcome("ok", table[lr], None, {"images_per_second": 10.0})

    def discard(self, name):
        self.discarded.append(name)


def _experiment(tmp_path, **settings):
    return Experiment(regime="finetune", model="tiny", dataset="digits", output_dir=str(tmp_path),
                      settings={"search": "small", "train_steps": 10, **settings})


TRIALS = [search.Trial(1e-3, 0.0), search.Trial(1e-2, 0.0), search.Trial(1e4, 0.0), search.Trial(1e-1, 0.0)]


def test_protocol_selects_on_validation_and_reads_test_once_at_the_end(tmp_path):
    # The test split would prefer lr 1e-3; validation prefers 1e-2, which must be chosen.
    trainer = FakeTrainer(validation={1e-3: 0.6, 1e-2: 0.8, 1e-1: 0.7},
                          test={1e-3: 0.95, 1e-2: 0.5, 1e-1: 0.6}, diverge=(1e4,))
    record = search.run_protocol(_experiment(tmp_path), TRIALS, trainer, log=lambda message: None)

    assert [call[:2] for call in trainer.calls] == [("train", "val")] * 4 + [("trainval", "test")]
    assert trainer.calls[-1][2] == "final"
    assert record["hyperparameters"] == {"learning_rate": 1e-2, "weight_decay": 0.0}
    assert record["validation_score"] == 0.8 and record["test_score"] == 0.5
    assert record["status"] == "ok"
    statuses = {t["trial_id"]: (t["status"], t["validation_score"]) for t in record["trials"]}
    assert statuses["lr1e+04_wd0"] == ("diverged", None)
    assert len(statuses) == 4
    assert trainer.discarded == [trial.trial_id for trial in TRIALS]
    json.dumps(record, allow_nan=False)  # a valid JSON record


def test_trial_records_are_written_and_skipped_on_rerun(tmp_path):
    experiment = _experiment(tmp_path)
    scores = {1e-3: 0.6, 1e-2: 0.8, 1e-1: 0.7}
    first = FakeTrainer(scores, scores, diverge=(1e4,))
    search.run_search(experiment, TRIALS[:2], first, log=lambda message: None)
    for trial in TRIALS[:2]:
        written = results.read_json(results.trial_path(experiment, trial.trial_id))
        assert written["status"] == "ok" and written["hyperparameters"] == trial.hyperparameters()
        assert written["experiment"]["settings"] == {"train_steps": 10}  # not the grid's choice

    again = FakeTrainer(scores, scores, diverge=(1e4,))
    records = search.run_search(experiment, TRIALS, again, log=lambda message: None)
    assert [call[2] for call in again.calls] == [TRIALS[2].trial_id, TRIALS[3].trial_id]
    assert [r["validation_score"] for r in records] == [0.6, 0.8, None, 0.7]
    diverged = results.read_json(results.trial_path(experiment, TRIALS[2].trial_id))
    assert diverged["status"] == "diverged" and "non-finite" in diverged["reason"]


def test_all_trials_diverged_gives_a_diverged_run_without_touching_test(tmp_path):
    trainer = FakeTrainer({}, {}, diverge=(1e-3, 1e-2, 1e4, 1e-1))
    record = search.run_protocol(_experiment(tmp_path), TRIALS, trainer, log=lambda message: None)
    assert record["status"] == "diverged" and record["test_score"] is None
    assert all(call[1] == "val" for call in trainer.calls)


def test_non_chief_workers_write_no_trial_records(tmp_path):
    experiment = _experiment(tmp_path)
    scores = {1e-3: 0.6}
    search.run_search(experiment, TRIALS[:1], FakeTrainer(scores, scores), log=lambda m: None, write=False)
    assert not os.path.exists(results.trial_path(experiment, TRIALS[0].trial_id))


def test_trials_are_shared_between_grids_but_not_across_other_settings(tmp_path):
    scores = {1e-3: 0.6, 1e-2: 0.8}
    first = FakeTrainer(scores, scores)
    search.run_search(_experiment(tmp_path, search="small"), TRIALS[:1], first, log=lambda m: None)
    paper = FakeTrainer(scores, scores)
    search.run_search(_experiment(tmp_path, search="paper"), TRIALS[:2], paper, log=lambda m: None)
    assert [call[2] for call in paper.calls] == [TRIALS[1].trial_id]  # the small grid's trial reused

    longer = FakeTrainer(scores, scores)
    messages = []
    experiment = _experiment(tmp_path, search="paper", train_steps=20)
    search.run_search(experiment, TRIALS[:1], longer, log=messages.append)
    assert [call[2] for call in longer.calls] == [TRIALS[0].trial_id]  # stale: trained again
    assert any("other settings" in message for message in messages)
    replaced = results.read_json(results.trial_path(experiment, TRIALS[0].trial_id))
    assert replaced["experiment"]["settings"] == {"train_steps": 20}


def test_given_grid_is_the_cross_product_and_needs_both_lists():
    trials = search.grid("grid", "finetune", learning_rates=[0.01, 0.1], weight_decays=[0.0, 1e-4])
    assert trials == [search.Trial(0.01, 0.0), search.Trial(0.01, 1e-4), search.Trial(0.1, 0.0),
                      search.Trial(0.1, 1e-4)]
    with pytest.raises(InvalidSettingError, match="weight_decays"):
        search.grid("grid", "scratch", learning_rates=[0.1])
