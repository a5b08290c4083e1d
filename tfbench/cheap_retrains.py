"""The retrains of what cheaper searches would have chosen: `tfbench.sweep --retrain_cheap_choices`.

The report's cheap-alternatives table (tfbench.report.cheap_alternatives) reads off a grid run's
trials what VTAB's 2 x 2 subset, transfer from other networks and the most frequent choice would
have picked, but can show a test score only where the retrain of that setting exists. These tasks
retrain each such setting that no run has retrained, on trainval and scored on test once, as the
grid run's conclusion retrains its own choice (`trained.retrain_cheap_choice`), and record it in
`<run dir>/cheap_retrains/<setting>.json`. The tasks are planned from the run records alone (a
retrain already recorded is a finished task), so every shard of a sweep plans the same tasks.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from tfbench import results, study
from tfbench.experiment import Experiment, identity
from tfbench.settings import Runtime
from tfbench.tasks import plan


def tasks(experiments: Sequence[Tuple[Experiment, Runtime]], output_dir: str,
          models_file: Optional[str] = None) -> List[plan.Task]:
    """The retrain of every single choice of the cheaper searches on the finished grid runs among
    `experiments` that no run under `output_dir` has retrained
    (tfbench.report.cheap_alternatives.missing_retrains)."""
    from tfbench.report import cheap_alternatives, protocol_groups

    records = results.collect(output_dir) if os.path.isdir(output_dir) else []
    ours = {json.dumps(experiment.identity(), sort_keys=True): (experiment, runtime)
            for experiment, runtime in experiments}
    found = []
    for record, settings in cheap_alternatives.missing_retrains(protocol_groups.group_records(records), records):
        run = ours.get(json.dumps(identity(record["experiment"]), sort_keys=True))
        if run is not None:
            found += retrain_tasks(*run, settings, models_file)
    return found


def retrain_tasks(experiment: Experiment, runtime: Runtime, settings: Sequence[Tuple[float, float]],
                  models_file: Optional[str] = None) -> List[plan.Task]:
    """The tasks that retrain each (learning rate, weight decay) of `settings` of the grid run
    `experiment` on trainval and score test (kind "retrain", costed as a conclusion)."""
    from tfbench.regimes import trained

    key, arguments = study.run_key(experiment), study.task_arguments(experiment, runtime, models_file)
    steps = experiment.settings.train_steps
    out = []
    for learning_rate, weight_decay in settings:
        hyperparameters = {"learning_rate": learning_rate, "weight_decay": weight_decay}
        out.append(plan.Task(
            key=f"{key}/{results.CHEAP_RETRAINS_DIR}/{trained.cheap_retrain_name(hyperparameters)}",
            kind="retrain", record=trained.cheap_retrain_path(experiment, hyperparameters),
            call=plan.Call(f"{__name__}:retrain_task", {**arguments, "hyperparameters": hyperparameters}),
            done=plan.Call(f"{__name__}:retrain_finished", {"experiment": arguments["experiment"],
                                                            "hyperparameters": hyperparameters}),
            run=key, steps=steps, images=steps * experiment.batch_size))
    return out


def retrain_task(experiment: Mapping[str, Any], runtime: Mapping[str, Any], models_file: Optional[str],
                 hyperparameters: Mapping[str, float]) -> None:
    """One retrain task: trained.retrain_cheap_choice, recorded under the run's cheap_retrains/."""
    from tfbench.regimes import trained

    run, run_runtime = study.load_task(experiment, runtime, models_file)
    trained.retrain_cheap_choice(run, hyperparameters, run_runtime)


def retrain_finished(experiment: Mapping[str, Any], hyperparameters: Mapping[str, float]) -> bool:
    """Whether the retrain's record belongs to this run (not one made under other settings)."""
    from tfbench import tuning
    from tfbench.regimes import trained

    run = Experiment.from_dict(experiment)
    record = results.read_record(trained.cheap_retrain_path(run, hyperparameters), fields=("experiment",))
    return record is not None and tuning.trial_identity(record["experiment"]) == tuning.trial_identity(run.to_dict())
