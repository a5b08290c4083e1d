"""A fine-tune or scratch run's choice retrained at other step budgets: the paper's Figure 8.

Kornblith, Shlens & Le (2019, Figure 8) plot test accuracy against training steps, each point an
independent model trained for that many steps. A budget here is the same: the run's chosen
hyperparameters trained on trainval for a complete schedule of N steps (warm-up for the same
fraction of its steps as the run's, then the cosine decay to zero at step N), and the test split
scored once. Its record is `<run dir>/budgets/steps_<N>.json` (results.budget_path); a rerun skips
a finished one and resumes an interrupted one from its checkpoints (`<run dir>/trials/budget_<N>/`).

The hyperparameters at every budget are the run's own choice at its full budget (HYPERPARAMETERS),
tfbench's choice: the paper optimised them again at each budget, which costs a whole search per
budget. A short budget may favour another learning rate than the full one, so these points are, if
anything, below the paper's.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional

from tfbench import files, results
from tfbench.experiment import Experiment
from tfbench.regimes.trainer import Trainer, TrialTrainer
from tfbench.settings import Runtime

HYPERPARAMETERS = ("the run's choice at its full budget (train_steps), retrained unchanged at this budget; "
                   "not optimised again per budget as the paper's Figure 8 was")
WORK_PREFIX = "budget_"  # the budget's checkpoints and TensorBoard logs: <run dir>/trials/budget_<N>/


def finished(experiment: Experiment, steps: int, run_record: Optional[Mapping[str, Any]] = None) -> Optional[Dict]:
    """The finished budget record of this run's current choice; None when it is absent, failed,
    made under other settings or for another choice (the run was redone since): train it again."""
    run_record = run_record or results.read_record(results.record_path(experiment))
    if run_record is None:
        return None
    try:
        record = results.finished_budget(experiment, steps)
    except results.RunConflictError:
        return None
    if record is None or record.get("hyperparameters") != run_record.get("hyperparameters"):
        return None
    return record


def run(experiment: Experiment, steps: int, runtime: Runtime, trainer: Optional[Trainer] = None,
        log=print) -> Dict[str, Any]:
    """Retrain the run's choice for a complete schedule of `steps` steps, score test; the record,
    written unless a finished one exists. The run record must be finished."""
    run_record = results.finished_run(experiment)
    if run_record is None:
        raise RuntimeError(f"budget {steps:,}: the run {experiment.run_dir()} has not finished; run it first")
    done = finished(experiment, steps, run_record)
    if done is not None:
        log(f"budget {steps:,} steps: finished earlier ({done['status']})")
        return done
    record = results.new_record(experiment, metric=run_record["metric"], started_at=results.now())
    record.update(budget_steps=steps, run_train_steps=(run_record.get("training") or {}).get("train_steps"),
                  hyperparameters=dict(run_record.get("hyperparameters") or {}),
                  hyperparameters_source=HYPERPARAMETERS)
    path = results.budget_path(experiment, steps)
    if run_record["status"] != "ok":
        files.write_json_atomic(path, results.finish(record, run_record["status"],
                                                     f"the run chose nothing to retrain: {run_record['reason']}"))
        return record
    log(f"budget {steps:,} steps: retraining the run's choice on trainval, scoring test")
    started = time.time()
    trainer = trainer or TrialTrainer(experiment, runtime)
    outcome = trainer.train_and_score(record["hyperparameters"], "trainval", "test", f"{WORK_PREFIX}{steps}", steps)
    record["training"] = dict(outcome.details)
    record["timings"] = {"wall_seconds": time.time() - started, **outcome.details.get("timings", {})}
    record["test_score"] = outcome.score
    results.finish(record, outcome.status, outcome.reason)
    if trainer.chief:
        files.write_json_atomic(path, record)
        trainer.discard(f"{WORK_PREFIX}{steps}")
    log(f"budget {steps:,} steps: {outcome.status}, test {record['metric']}="
        + ("-" if outcome.score is None else f"{outcome.score:.4f}"))
    return record
