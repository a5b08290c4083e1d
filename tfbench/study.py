"""A study's experiments as a plan of tasks (tfbench.plan) that any executor can run.

Each experiment becomes tasks whose records are the run's own files, so that a study run by the
local executor, on Ray, or in shards leaves the same records and the same answer. A task runs
one experiment through `runs.execute` (skip if finished, a failure recorded), in whichever
process or machine the executor chose.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, List, Mapping, Sequence

from tfbench import plan, results
from tfbench.experiment import Experiment, path_component

RUN_TASK = "tfbench.study:run_experiment"


def run_function(regime: str):
    if regime == "probe":
        from tfbench import probe

        return probe.run
    from tfbench import training

    return training.run_regime


def run_experiment(experiment: Mapping[str, Any]) -> None:
    """The task: one experiment, given as `Experiment.to_dict()` so it travels as plain data."""
    from tfbench import flags_common, runs

    run = Experiment.from_dict(experiment)
    runs.execute(run, run_function(run.regime), user_errors=flags_common.user_errors())


def run_key(experiment: Experiment) -> str:
    return "/".join([experiment.regime, path_component(experiment.dataset), path_component(experiment.model)])


def training_steps(experiment: Experiment) -> int:
    """Optimizer steps of a run: every trial of its search plus the retrain (0 for the probe)."""
    if experiment.regime == "probe":
        return 0
    from tfbench import search, training

    settings = {**training.DEFAULT_SETTINGS, **experiment.settings}
    trials = search.grid(settings["search"], experiment.regime, settings["learning_rate"],
                         settings["weight_decay"], settings["learning_rates"], settings["weight_decays"])
    return (len(trials) + 1) * settings["train_steps"]


def experiment_tasks(experiment: Experiment) -> List[plan.Task]:
    key = run_key(experiment)
    steps = training_steps(experiment)
    return [plan.Task(key=key, kind="probe" if experiment.regime == "probe" else "run",
                      call=plan.Call(RUN_TASK, {"experiment": experiment.to_dict()}),
                      record=results.record_path(experiment), run=key, steps=steps,
                      images=steps * experiment.batch_size)]


def study_plan(experiments: Sequence[Experiment], overwrite: bool = False) -> plan.Plan:
    """The plan of every experiment. Unless overwriting, a finished run made with other settings
    stops it here (results.RunConflictError), before anything runs: a task's done check looks only
    at the record's status, so a conflict must never reach it."""
    if not overwrite:
        for experiment in experiments:
            results.finished_run(experiment)
    return plan.Plan(task for experiment in experiments for task in experiment_tasks(experiment))


def discard(experiments: Sequence[Experiment]) -> None:
    """For --overwrite: forget the runs' records and trials, so their tasks run again from scratch."""
    for experiment in experiments:
        for path in (results.record_path(experiment), os.path.join(experiment.run_dir(), results.TRIALS_DIR)):
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
