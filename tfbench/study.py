"""A study's experiments as a plan of tasks (tfbench.plan) that any executor can run.

Tasks follow the regime interface (docs/DESIGN.md, "The regime interface"): a fine-tune or scratch
run is one task per trial (`finetune.run_trial`: train on train, score val, write
`<run dir>/trials/<trial id>.json`) and a conclude task that needs them all (`finetune.conclude`:
select on validation, retrain on train+val, score test once, write the run record); a probe run is
one task (`probe.run`). The records are the run's own files, so a study run by the local executor,
on Ray, or in shards leaves the same records and the same answer. Task arguments are plain data
(`Experiment.to_dict()`, the Runtime's fields, the trial's hyperparameters, the --models_file
that names user models) so that a task can run in another process or on another machine.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from tfbench import files, plan, results
from tfbench.experiment import Experiment
from tfbench.settings import Runtime

TASKS = "tfbench.study"


def _load(experiment: Mapping[str, Any], runtime: Mapping[str, Any],
          models_file: Optional[str]) -> Tuple[Experiment, Runtime]:
    """The task's experiment and runtime; a worker first registers the user models it may name."""
    if models_file:
        from tfbench import backbones

        backbones.load_models_file(models_file)
    return Experiment.from_dict(experiment), Runtime(**runtime)


def _user_errors() -> tuple:
    from tfbench import flags_common

    return flags_common.user_errors()


def run_probe(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str]) -> None:
    """The probe task: the whole probe run (features, the L2 search, refit, test), recorded."""
    from tfbench import probe, runs

    run, run_runtime = _load(experiment, runtime, models_file)
    runs.execute(run, probe.run, run_runtime, user_errors=_user_errors())


def run_trial(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str],
              trial: Mapping[str, float]) -> None:
    """A trial task. A trial that raises (bad data, out of memory) is recorded as failed, in its
    own record and in the run's, as a run that raises is, and is tried again only by a rerun."""
    from tfbench import finetune, runs, tuning

    run, run_runtime = _load(experiment, runtime, models_file)
    trial = tuning.Trial(**trial)
    try:
        finetune.run_trial(run, trial, run_runtime)
    except _user_errors():
        raise
    except Exception as error:
        record = runs.failed_record(run, error)
        files.write_json_atomic(results.trial_path(run, trial.trial_id),
                                {**record, "trial_id": trial.trial_id, "hyperparameters": trial.hyperparameters()})
        record["reason"] = f"trial {trial.trial_id}: {record['reason']}"
        files.write_json_atomic(results.record_path(run), record)
        raise


def conclude(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str]) -> None:
    """The conclude task: selection, retrain on train+val and test score, recorded as a run."""
    from tfbench import finetune, runs

    run, run_runtime = _load(experiment, runtime, models_file)
    runs.execute(run, finetune.conclude, run_runtime, user_errors=_user_errors())


def trial_finished(experiment: Mapping[str, Any], trial: Mapping[str, float]) -> bool:
    """Whether the trial's record is reusable by this experiment (not one made under other settings)."""
    from tfbench import finetune, tuning

    return finetune.finished_trial(Experiment.from_dict(experiment), tuning.Trial(**trial),
                                   log=lambda message: None) is not None


def run_key(experiment: Experiment) -> str:
    """The run's folder under the output folder, e.g. "probe/dtd/resnet50+random_init"."""
    return os.path.relpath(experiment.run_dir(), experiment.output_dir).replace(os.sep, "/")


def experiment_tasks(experiment: Experiment, runtime: Runtime, models_file: Optional[str] = None) -> List[plan.Task]:
    """The tasks of one run, each trial before the conclusion that needs it."""
    key = run_key(experiment)
    arguments = {"experiment": experiment.to_dict(), "runtime": dataclasses.asdict(runtime),
                 "models_file": models_file and os.path.abspath(models_file)}
    if experiment.regime == "probe":
        return [plan.Task(key=key, kind="probe", call=plan.Call(f"{TASKS}:run_probe", arguments),
                          record=results.record_path(experiment), run=key)]
    from tfbench import finetune

    steps = experiment.settings.train_steps
    cost = {"run": key, "steps": steps, "images": steps * experiment.batch_size}
    tasks = []
    for trial in finetune.trials(experiment):
        hyperparameters = trial.hyperparameters()
        tasks.append(plan.Task(
            key=f"{key}/{trial.trial_id}", kind="trial",
            call=plan.Call(f"{TASKS}:run_trial", {**arguments, "trial": hyperparameters}),
            record=results.trial_path(experiment, trial.trial_id),
            done=plan.Call(f"{TASKS}:trial_finished", {"experiment": arguments["experiment"],
                                                       "trial": hyperparameters}), **cost))
    tasks.append(plan.Task(key=key, kind="conclude", call=plan.Call(f"{TASKS}:conclude", arguments),
                           record=results.record_path(experiment), needs=tuple(t.key for t in tasks), **cost))
    return tasks


def study_plan(experiments: Sequence[Tuple[Experiment, Runtime]], overwrite: bool = False,
               models_file: Optional[str] = None) -> plan.Plan:
    """The plan of every experiment. Unless overwriting, a finished run made with other settings
    stops it here (results.RunConflictError), before anything runs, as a sequential sweep would."""
    if not overwrite:
        for experiment, _ in experiments:
            results.finished_run(experiment)
    return plan.Plan(task for experiment, runtime in experiments
                     for task in experiment_tasks(experiment, runtime, models_file))


def discard(tasks: Sequence[plan.Task]) -> None:
    """For --overwrite: forget the records, trials and checkpoints of the runs these tasks belong
    to, so that they run again from scratch."""
    for run_dir in sorted({Experiment.from_dict(task.call.arguments["experiment"]).run_dir() for task in tasks}):
        shutil.rmtree(os.path.join(run_dir, results.TRIALS_DIR), ignore_errors=True)
        if os.path.exists(os.path.join(run_dir, results.RECORD_FILE)):
            os.unlink(os.path.join(run_dir, results.RECORD_FILE))
