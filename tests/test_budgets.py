"""The paper's Figure 8 as it measured it: the run's choice retrained for a complete schedule at each
convergence budget (tfbench.regimes.budgets), planned as tasks that need the run's conclusion, and
the report's test score against steps from those records (tfbench.report.budgets)."""

import json
import math
import os

import pytest

from tfbench import files, results, study
from tfbench.regimes import budgets, trained
from tfbench.report import budgets as report_budgets
from tfbench.settings import ProbeSettings, Runtime, TrainingSettings
from tfbench.experiment import Experiment, path_component
from tfbench.tasks import executors, plan
from test_convergence import A_FINETUNE, A_SCRATCH, _report, _write
from test_study import FakeTrainer


@pytest.fixture
def fake_training(monkeypatch):
    for module in (trained, budgets):
        monkeypatch.setattr(module, "TrialTrainer", FakeTrainer)
    monkeypatch.setattr(FakeTrainer, "broken", set())


def _finetune(folder, **settings):
    return Experiment(regime="finetune", model="tiny", dataset="digits", output_dir=str(folder), batch_size=8,
                      settings=TrainingSettings(**{"search": "small", "train_steps": 10, **settings}))


def _execute(study_plan):
    with executors.LocalExecutor() as executor:
        return executors.execute(study_plan, study_plan.tasks, executor, log=lambda line: None)


def test_each_budget_is_a_task_that_needs_the_conclusion_and_the_run_itself_is_not_planned_again(tmp_path):
    experiment = _finetune(tmp_path)
    probe = Experiment(regime="probe", model="tiny", dataset="digits", output_dir=str(tmp_path),
                       settings=ProbeSettings(l2_search="fast"))
    study_plan = study.study_plan([(probe, Runtime()), (experiment, Runtime())], budgets=[6, 10, 3, 25])
    by_kind = {}
    for task in study_plan.tasks:
        by_kind.setdefault(task.kind, []).append(task)
    assert "budget" not in {t.kind for t in study.experiment_tasks(probe, Runtime(), budgets=[6])}
    # 10 is the run's own train_steps: the run itself; a budget above it is a longer schedule
    assert [t.key for t in by_kind["budget"]] == [f"finetune/digits/tiny/budget{n}" for n in (3, 6, 25)]
    (conclude,) = by_kind["conclude"]
    for task, steps in zip(by_kind["budget"], (3, 6, 25)):
        assert task.needs == (conclude.key,) and (task.steps, task.images) == (steps, 8 * steps)
        assert task.record == os.path.join(experiment.run_dir(), "budgets", f"steps_{steps}.json")
        assert study_plan.tasks.index(task) > study_plan.tasks.index(conclude)
    cost = plan.cost(study_plan.tasks)
    assert cost.tasks_by_kind["budget"] == 3 and "3 budget" in cost.summary()
    assert cost.steps == 6 * 10 + 10 + 3 + 6 + 25  # six trials, the retrain, the budgets


def test_a_budget_retrains_the_run_choice_and_is_done_until_the_choice_changes(tmp_path, fake_training):
    experiment = _finetune(tmp_path)
    study_plan = study.study_plan([(experiment, Runtime())], budgets=[4])
    assert _execute(study_plan).count("ran") == 8
    run = results.read_record(results.record_path(experiment))
    record = results.read_record(results.budget_path(experiment, 4))
    # the fake's test score of learning rate 1e-2, the run's choice on validation
    assert run["hyperparameters"]["learning_rate"] == 1e-2 and record["hyperparameters"] == run["hyperparameters"]
    assert (record["status"], record["budget_steps"], record["test_score"]) == ("ok", 4, 0.75)
    assert record["hyperparameters_source"] == budgets.HYPERPARAMETERS
    assert record["training"]["steps"] == 4 and record["experiment"] == experiment.to_dict()
    assert len(results.collect(str(tmp_path))) == 1  # a budget record is not a run of its own

    rerun = _execute(study.study_plan([(experiment, Runtime())], budgets=[4]))
    assert rerun.count("skipped") == 8 and rerun.count("ran") == 0
    budget_task = study_plan[f"{study.run_key(experiment)}/budget4"]
    files.write_json_atomic(results.record_path(experiment),
                            {**run, "hyperparameters": {"learning_rate": 0.1, "weight_decay": 0.0}})
    assert not plan.finished(budget_task)  # made for another choice than the run's: trained again
    study.discard(study_plan.tasks)  # --overwrite forgets the budgets with the run
    assert not os.path.exists(os.path.dirname(results.budget_path(experiment, 4)))


def test_a_run_that_chose_nothing_leaves_its_budgets_nothing_to_train(tmp_path, fake_training):
    experiment = _finetune(tmp_path)
    files.write_json_atomic(results.record_path(experiment), {
        "experiment": experiment.to_dict(), "status": "diverged", "reason": "all 6 trials diverged",
        "metric": "top1", "hyperparameters": {}, "test_score": None})
    FakeTrainer.broken = {1e-2}  # any training would raise
    record = budgets.run(experiment, 4, Runtime(), log=lambda line: None)
    assert (record["status"], record["reason"]) == ("diverged", "the run chose nothing to retrain: all 6 trials diverged")
    (task,) = [t for t in study.experiment_tasks(experiment, Runtime(), budgets=[4]) if t.kind == "budget"]
    assert plan.finished(task)  # finished: a rerun does not try it again


def test_a_budget_is_a_complete_schedule_of_its_steps(tmp_path):
    """The budget task of a finished run, under its lock as every executor runs it, trains the tiny
    network for real: exactly the budget's steps, a warm-up of the run's fraction of them (2 of 8 ->
    1 of 5), and a learning rate that ends at the cosine's end value, 0.5 * peak * (1 + cos(pi)) = 0."""
    experiment = Experiment(regime="finetune", model="tiny", dataset="digits", output_dir=str(tmp_path), batch_size=8,
                            image_size=16, settings=TrainingSettings(search="none", learning_rate=0.05,
                                                                     weight_decay=0.0, train_steps=8,
                                                                     warmup_steps=2))
    chosen = {"learning_rate": 0.05, "weight_decay": 0.0}
    files.write_json_atomic(results.record_path(experiment), {  # the run, concluded
        "experiment": experiment.to_dict(), "status": "ok", "reason": None, "metric": "top1",
        "hyperparameters": chosen, "test_score": 0.5})
    (task,) = [t for t in study.study_plan([(experiment, Runtime(eval_every=0, verbose=False))], budgets=[5]).tasks
               if t.kind == "budget"]
    assert executors.run_task(task).status == "ran"
    record = results.read_record(results.budget_path(experiment, 5))
    training = record["training"]
    assert (record["status"], record["hyperparameters"], training["steps"], training["train_steps"],
            training["warmup_steps"], training["fit_split"], training["score_split"]) == \
        ("ok", chosen, 5, 5, 1, "trainval", "test")
    assert math.isclose(training["final_learning_rate"], 0.5 * 0.05 * (1 + math.cos(math.pi)), abs_tol=1e-9)
    assert 0 <= record["test_score"] <= 1
    assert not os.path.exists(os.path.join(experiment.run_dir(), "trials", "budget_5", "checkpoints"))
    assert executors.run_task(task).status == "skipped"


def _budget(root, regime, model, dataset, steps, score, hyperparameters=None):
    """A budget record beside a run written by test_convergence._write, as tfbench.regimes.budgets writes it."""
    with open(os.path.join(str(root), regime, path_component(dataset), path_component(model), "record.json")) as handle:
        run = json.load(handle)
    record = {**run, "budget_steps": steps, "test_score": score,
              "hyperparameters": run["hyperparameters"] if hyperparameters is None else hyperparameters}
    folder = os.path.join(str(root), regime, path_component(dataset), path_component(model), "budgets")
    files.write_json_atomic(os.path.join(folder, f"steps_{steps}.json"), record)


def test_the_report_draws_figure_8_from_the_budget_records_and_keeps_the_cheap_view(tmp_path):
    for regime, curve in (("finetune", A_FINETUNE), ("scratch", A_SCRATCH)):
        _write(tmp_path, regime, "a_net", "dtd", curve)  # the runs: 400 steps, test 0.80 and 0.60
    _, names, markdown = _report(tmp_path)
    assert "convergence_budgets.png" not in names and "convergence.png" in names
    assert "no (model, dataset) has a budget record on both sides" in markdown

    _budget(tmp_path, "finetune", "a_net", "dtd", 100, 0.70)
    _budget(tmp_path, "finetune", "a_net", "dtd", 200, 0.90, hyperparameters={"learning_rate": 0.1})  # stale
    _budget(tmp_path, "scratch", "a_net", "dtd", 100, 0.20)
    _budget(tmp_path, "scratch", "a_net", "dtd", 200, 0.40)
    analysis, names, markdown = _report(tmp_path)
    assert {"convergence_budgets.png", "convergence.png"} <= names
    paper, cheap = markdown.split("## Convergence: fine-tuned vs from scratch (the paper's Figure 8)\n")[1].split(
        "## Convergence, cheap approximation: points partway along one schedule (Figure 8)\n")
    assert ("| a_net | dtd | 100 | 70.0 | 20.0 |\n| a_net | dtd | 200 | - | 40.0 |\n"
            "| a_net | dtd | 400 | 80.0* | 60.0* |") in paper
    # at 100 and 400 steps both trained: fine-tuned higher at both, by (50 + 20) / 2 = 35 points
    assert "both sides trained, fine-tuned scored higher at 2 (mean +35.0 points)" in paper
    assert "![Convergence, each budget a complete schedule](convergence_budgets.png)" in paper
    assert "![Convergence, cheap approximation](convergence.png)" in cheap
    (outcome,) = analysis.budgets
    assert [(p.steps, p.score, p.is_run) for p in outcome.rows[0].scratch] == [
        (100, 0.2, False), (200, 0.4, False), (400, 0.6, True)]
    with open(tmp_path / "report" / "report.json") as handle:
        (drawn,) = json.load(handle)["convergence_budgets"]
    assert drawn["drawn"] and drawn["rows"][0]["finetune"] == [
        {"steps": 100, "test_score": 0.7, "is_run": False}, {"steps": 400, "test_score": 0.8, "is_run": True}]
    assert report_budgets.METHOD in paper and "paper optimised them again at each budget" in paper
