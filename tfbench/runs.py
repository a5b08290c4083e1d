"""Executing one experiment: skip it if finished, run it, and always leave a truthful record.

Shared by the regime binaries and the sweep so that "finished", "failed" and "resumed" mean the
same thing everywhere. A run that raises is recorded as failed with its error (the sweep then goes
on to the next run); an interrupt (Ctrl-C, kill) writes nothing, so the run is simply redone or
resumed next time.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from typing import Any, Callable, Dict, NamedTuple

from tfbench import files, results
from tfbench.experiment import Experiment
from tfbench.registry import UnknownNameError
from tfbench.settings import InvalidSettingError, Runtime

RunFunction = Callable[[Experiment, Runtime], Dict[str, Any]]


class RunOutcome(NamedTuple):
    record: Dict[str, Any]
    skipped: bool  # finished earlier; nothing ran
    error: BaseException | None  # the exception of a failed run, if any


def imagenet_top1(experiment: Experiment) -> Dict[str, Any]:
    """The ImageNet top-1 a run's model enters the analysis with, and where it comes from: a
    measurement by tfbench.imagenet_eval of these very weights when there is one, else the
    published (or user-given) figure."""
    from tfbench import backbones, imagenet_eval

    measured = imagenet_eval.measured_top1(experiment.model)
    if measured is not None:
        return {"value": measured["top1"], "measured": True,
                "source": imagenet_eval.describe(measured)}
    spec = backbones.spec(experiment.model)
    return {"value": spec.imagenet_top1, "source": spec.top1_source, "measured": False}


def run_experiment(experiment: Experiment, run: RunFunction, runtime: Runtime, *, overwrite: bool = False,
            metric: str | None = None, user_errors: tuple = ()) -> RunOutcome:
    """Run `experiment` unless a finished record exists; write the record atomically.

    `user_errors` are exceptions that mean the request itself is wrong (unknown name, missing
    data): they propagate without a record, because nothing about the run was learned.
    """
    if overwrite:  # a rerun from scratch: finished trials and checkpoints must not be reused
        shutil.rmtree(os.path.join(experiment.run_dir(), results.TRIALS_DIR), ignore_errors=True)
    else:
        done = results.finished_run(experiment)
        if done is not None:
            return RunOutcome(done, True, None)
    started = time.time()
    try:
        record = run(experiment, runtime)
        error = None
    except user_errors:
        raise
    except Exception as exception:  # recorded, so a sweep can continue past it
        error = exception
        record = failed_record(experiment, exception, metric)
    record["timings"].setdefault("wall_seconds", time.time() - started)
    files.write_json_atomic(results.record_path(experiment), record)
    return RunOutcome(record, False, error)


def failed_record(experiment: Experiment, exception: BaseException, metric: str | None = None) -> Dict[str, Any]:
    """The record of a run (or trial) that raised `exception`, with its traceback; call it while
    handling the exception."""
    record = results.new_record(experiment, metric=metric, started_at=results.now())
    record["traceback"] = traceback.format_exc(limit=20)
    return results.finish(record, "failed", f"{type(exception).__name__}: {exception}")


def user_errors() -> tuple:
    """Exceptions that mean "the input is wrong", reported as one line instead of a traceback."""
    from tfbench import backbones, datasets, preflight

    return (UnknownNameError, InvalidSettingError, results.RunConflictError, preflight.PreflightError,
            backbones.WeightsUnavailableError, backbones.ModelNotFoundError,
            backbones.ModelsFileError, datasets.DatasetNotPreparedError, datasets.FolderDatasetError,
            datasets.TrainSubsetError)
