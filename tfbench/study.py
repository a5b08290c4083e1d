"""A study's experiments as a plan of tasks (tfbench.tasks.plan) that any executor can run.

Tasks follow the study's path (docs/DESIGN.md, "Package tree"): a fine-tune or scratch
run is one task per trial (`trained.run_trial`: train on train, score val, write
`<run dir>/trials/<trial id>.json`) and a conclude task that needs them all (`trained.conclude`:
select on validation, retrain on train+val, score test once, write the run record); a probe or
estimate run is one task (`probe.run`, `estimate.run`). Successive halving's later rungs are known only from the records of the
rung before, so rung k > 0 is planned as slots: slot i of rung k needs every task of rung k-1,
computes the rung's trials from their records and trains the i-th (a slot without a trial, when
trials of the rung before diverged, has nothing to do); its own small record under
`trials/rungs/` says which trial it trained. The records are the run's own files, so a study run by the local executor,
on Ray, or in shards leaves the same records and the same answer. Task arguments are plain data
(`Experiment.to_dict()`, the Runtime's fields, the trial's hyperparameters, the --models_file
that names user models) so that a task can run in another process or on another machine.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tfbench import estimate_cost, fencing, files, results
from tfbench.tasks import locks, plan
from tfbench.experiment import Experiment
from tfbench.settings import Runtime

TASKS = "tfbench.study"
RUNG_SLOTS = "rungs"  # the folder, among a run's trials, of halving's slot records
REPORT_SOURCES = "sources.json"  # in the report folder: the run records it was built from


def load_task(experiment: Mapping[str, Any], runtime: Mapping[str, Any],
          models_file: Optional[str]) -> Tuple[Experiment, Runtime]:
    """The task's experiment and runtime; a worker first registers the user models it may name."""
    if models_file:
        from tfbench import backbones

        backbones.load_models_file(models_file)
    return Experiment.from_dict(experiment), Runtime(**runtime)


WHOLE_RUN_REGIMES = ("probe", "estimate")  # a run of these is one task, without trials


def whole_run_task(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str]) -> None:
    """The task of a regime that runs in one piece (the probe: features, the L2 search, refit, test;
    the estimate regime: features and estimators), recorded."""
    from tfbench import runs
    from tfbench.regimes import estimate, probe

    run, run_runtime = load_task(experiment, runtime, models_file)
    regime = {"probe": probe, "estimate": estimate}[run.regime]
    runs.run_experiment(run, regime.run, run_runtime, user_errors=runs.user_errors())


def trial_task(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str],
              trial: Mapping[str, Any]) -> None:
    """A trial task (`trial`: tuning.Trial's fields)."""
    from tfbench import tuning

    run, run_runtime = load_task(experiment, runtime, models_file)
    _train_trial(run, run_runtime, tuning.Trial(**trial))


def _train_trial(run: Experiment, run_runtime: Runtime, trial) -> Dict[str, Any]:
    """Train one trial. A trial that raises (bad data, out of memory) is recorded as failed, in its
    own record and in the run's, as a run that raises is, and is tried again only by a rerun."""
    from tfbench import runs
    from tfbench.regimes import trained

    try:
        return trained.run_trial(run, trial, run_runtime)
    except runs.user_errors():
        raise
    except Exception as error:
        record = runs.failed_record(run, error)
        files.write_json_atomic(results.trial_path(run, trial.trial_id),
                                {**record, "trial_id": trial.trial_id, "hyperparameters": trial.hyperparameters()})
        record["reason"] = f"trial {trial.trial_id}: {record['reason']}"
        files.write_json_atomic(results.record_path(run), record)
        raise


def rung_slot_task(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str],
                  rung: int, slot: int) -> None:
    """Slot `slot` of halving rung `rung`: train the slot's trial of the rung (chosen from the
    records of the rung before), then write the slot's record."""
    from tfbench.regimes import trained

    run, run_runtime = load_task(experiment, runtime, models_file)
    (previous, _), (planned, _) = trained.rungs(run, _quiet, upto=rung)[-2:]
    trained.free_unpromoted(run, previous, planned)
    slot_record = {"rung": rung, "slot": slot, "trial_id": None, "status": "ok",
                   "reason": f"rung {rung} has {len(planned)} trials: nothing for this slot"}
    if slot < len(planned):
        trial_record = _train_trial(run, run_runtime, planned[slot])
        slot_record.update(trial_id=planned[slot].trial_id, status=trial_record["status"],
                           reason=trial_record["reason"])
    files.write_json_atomic(slot_path(run, rung, slot), slot_record)


def slot_finished(experiment: Mapping[str, Any], rung: int, slot: int) -> bool:
    """Whether the slot's trial, chosen from the records of the rung before as they are now, has a
    reusable record (or the slot has no trial)."""
    from tfbench.regimes import trained

    run = Experiment.from_dict(experiment)
    try:
        planned = trained.rung_trials(run, rung, log=_quiet)
    except trained.TrialsUnfinishedError:
        return False
    return slot >= len(planned) or trained.finished_trial(run, planned[slot], log=_quiet) is not None


def slot_path(experiment: Experiment, rung: int, slot: int) -> str:
    return os.path.join(experiment.run_dir(), results.TRIALS_DIR, RUNG_SLOTS, f"rung{rung}_slot{slot}.json")


def _quiet(message: str) -> None:
    pass


def budget_task(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str],
                steps: int) -> None:
    """The run's choice retrained for a complete schedule of `steps` steps, recorded beside the run.
    A budget that raises is recorded as failed, as a trial is, and tried again by a rerun."""
    from tfbench import runs
    from tfbench.regimes import budgets

    run, run_runtime = load_task(experiment, runtime, models_file)
    try:
        budgets.run(run, steps, run_runtime)
    except runs.user_errors():
        raise
    except Exception as error:
        files.write_json_atomic(results.budget_path(run, steps), {**runs.failed_record(run, error), "budget_steps": steps})
        raise


def budget_finished(experiment: Mapping[str, Any], steps: int) -> bool:
    """Whether the budget's record is reusable: made under these settings for the run's current choice."""
    from tfbench.regimes import budgets

    return budgets.finished(Experiment.from_dict(experiment), steps) is not None


def conclusion_task(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str]) -> None:
    """The conclude task: selection, retrain on train+val and test score, recorded as a run."""
    from tfbench import runs
    from tfbench.regimes import trained

    run, run_runtime = load_task(experiment, runtime, models_file)
    runs.run_experiment(run, trained.conclude, run_runtime, user_errors=runs.user_errors())


def trial_finished(experiment: Mapping[str, Any], trial: Mapping[str, Any]) -> bool:
    """Whether the trial's record is reusable by this experiment (not one made under other settings)."""
    from tfbench import tuning
    from tfbench.regimes import trained

    return trained.finished_trial(Experiment.from_dict(experiment), tuning.Trial(**trial),
                                   log=lambda message: None) is not None


def run_key(experiment: Experiment) -> str:
    """The run's folder under the output folder, e.g. "probe/dtd/resnet50+random_init"."""
    return os.path.relpath(experiment.run_dir(), experiment.output_dir).replace(os.sep, "/")


def task_arguments(experiment: Experiment, runtime: Runtime, models_file: Optional[str]) -> Dict[str, Any]:
    """What every task of a run is called with: plain data."""
    return {"experiment": experiment.to_dict(), "runtime": dataclasses.asdict(runtime),
            "models_file": models_file and os.path.abspath(models_file)}


def experiment_tasks(experiment: Experiment, runtime: Runtime, models_file: Optional[str] = None,
                     budgets: Sequence[int] = ()) -> List[plan.Task]:
    """The tasks of one run, each trial before the conclusion that needs it, then the retrain of
    its choice at each of `budgets` (steps) but the steps of its own retrain, each needing the conclusion."""
    key, arguments = run_key(experiment), task_arguments(experiment, runtime, models_file)
    if experiment.regime in WHOLE_RUN_REGIMES:
        return [plan.Task(key=key, kind=experiment.regime, call=plan.Call(f"{TASKS}:whole_run_task", arguments),
                          record=results.record_path(experiment), run=key)]
    from tfbench.regimes import trained

    def cost(steps: int) -> Dict[str, Any]:
        return {"run": key, "steps": steps, "images": steps * experiment.batch_size}

    first = trained.trials(experiment)
    shape = trained.rung_plan(experiment, first)
    rung = []
    for trial in first:
        fields = trial.to_dict()
        rung.append(plan.Task(
            key=f"{key}/{trial.trial_id}", kind="trial",
            call=plan.Call(f"{TASKS}:trial_task", {**arguments, "trial": fields}),
            record=results.trial_path(experiment, trial.trial_id),
            done=plan.Call(f"{TASKS}:trial_finished", {"experiment": arguments["experiment"], "trial": fields}),
            **cost(trial.train_steps or experiment.settings.train_steps)))
    tasks = list(rung)
    for index, (count, steps) in enumerate(shape[1:], 1):
        needs = tuple(task.key for task in rung)
        rung = [plan.Task(
            key=f"{key}/rung{index}/slot{slot}", kind="trial",
            call=plan.Call(f"{TASKS}:rung_slot_task", {**arguments, "rung": index, "slot": slot}),
            record=slot_path(experiment, index, slot), needs=needs,
            done=plan.Call(f"{TASKS}:slot_finished", {"experiment": arguments["experiment"], "rung": index,
                                                      "slot": slot}), **cost(steps)) for slot in range(count)]
        tasks += rung
    tasks.append(plan.Task(key=key, kind="conclude", call=plan.Call(f"{TASKS}:conclusion_task", arguments),
                           record=results.record_path(experiment), needs=tuple(t.key for t in tasks),
                           **cost(estimate_cost.retrain_steps(experiment, shape))))
    tasks += [plan.Task(key=f"{key}/budget{steps}", kind="budget",
                        call=plan.Call(f"{TASKS}:budget_task", {**arguments, "steps": steps}),
                        record=results.budget_path(experiment, steps), needs=(key,),
                        done=plan.Call(f"{TASKS}:budget_finished", {"experiment": arguments["experiment"],
                                                                   "steps": steps}), **cost(steps))
              for steps in sorted(set(budgets))
              if steps != estimate_cost.retrain_steps(experiment, shape)]  # the run's retrain is that one
    return tasks


def study_plan(experiments: Sequence[Tuple[Experiment, Runtime]], overwrite: bool = False,
               models_file: Optional[str] = None, budgets: Sequence[int] = ()) -> plan.Plan:
    """The plan of every experiment, with the convergence `budgets` (steps) of each fine-tune and
    scratch run. Unless overwriting, a finished run made with other settings stops it here
    (results.RunConflictError), before anything runs, as a sequential sweep would."""
    if not overwrite:
        for experiment, _ in experiments:
            results.finished_run(experiment)
    return plan.Plan(task for experiment, runtime in experiments
                     for task in experiment_tasks(experiment, runtime, models_file, budgets))


def discard(tasks: Sequence[plan.Task]) -> None:
    """For --overwrite: forget the records, trials, budgets, cheap-choice retrains and checkpoints of
    the runs these tasks belong to, so that they run again from scratch."""
    for run_dir in sorted({Experiment.from_dict(task.call.arguments["experiment"]).run_dir() for task in tasks}):
        for folder in (results.TRIALS_DIR, results.BUDGETS_DIR, results.CHEAP_RETRAINS_DIR):
            shutil.rmtree(os.path.join(run_dir, folder), ignore_errors=True)
        if os.path.exists(os.path.join(run_dir, results.RECORD_FILE)):
            os.unlink(os.path.join(run_dir, results.RECORD_FILE))


def report_once(study_plan: plan.Plan, output_dir: str, build: Callable[[str], Any],
                timing: locks.Timing = locks.Timing()) -> str:
    """Build the report of a complete study unless it is already built from these very records;
    what happened, as a line to print.

    Every driver that finishes its part checks this (the shards of a batch job, two sweeps on one
    folder), and only the first to find the study complete builds: the report folder keeps the
    digests of the run records it was built from, and a driver that finds them equal, or finds
    another driver building it (the report's lock), leaves it. Rerunning a finished study therefore
    rebuilds nothing; a rerun that changed a run record rebuilds once."""
    report_dir = os.path.join(output_dir, "report")
    sources_path = os.path.join(report_dir, REPORT_SOURCES)
    sources = {"records": {os.path.relpath(task.record, output_dir): files.file_digest(task.record)
                           for task in study_plan.tasks if task.kind != "trial"}}
    if results.read_record(sources_path, fields=("records",)) == sources:
        return f"report: up to date ({len(sources['records'])} runs) in {report_dir}"
    lock = locks.acquire(locks.lock_path(sources_path), timing)
    if lock is None:
        return "report: another driver is building it"
    with lock, fencing.holding(lock):
        if results.read_record(sources_path, fields=("records",)) == sources:  # built while we took the lock
            return f"report: up to date ({len(sources['records'])} runs) in {report_dir}"
        build(output_dir)
        files.write_json_atomic(sources_path, sources)
    return f"report: built from {len(sources['records'])} runs in {report_dir}"
