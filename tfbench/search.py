"""Hyperparameter grids, selection on validation, and the fine-tune / scratch protocol around them.

The protocol (Kornblith, Shlens & Le 2019): train every grid point on "train", score it on "val"
with the dataset's metric, pick the best validation score, retrain on "trainval" with it and score
"test" once. The test split is read only by that last step, after the choice is made.

Every trial is its own record (`results.trial_path`), written as soon as it ends, so a rerun of the
same command skips finished trials and resumes the interrupted one from its checkpoint. A trial whose
loss becomes NaN or infinite is recorded as "diverged" and the search goes on.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol

import numpy as np

from tfbench import results
from tfbench.experiment import Experiment, InvalidSettingError
from tfbench.registry import Registry

SEARCHES = ("paper", "small", "grid", "none")


@dataclasses.dataclass(frozen=True)
class Trial:
    """One grid point; `weight_decay` uses the paper's convention (see tfbench.training), 0 = none."""

    learning_rate: float
    weight_decay: float

    @property
    def trial_id(self) -> str:
        """A stable, file-safe name, e.g. "lr0.01_wd1e-05"."""
        return f"lr{self.learning_rate:.4g}_wd{self.weight_decay:.4g}"

    def hyperparameters(self) -> Dict[str, float]:
        return {"learning_rate": self.learning_rate, "weight_decay": self.weight_decay}


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """What training one setting on one split and scoring it on another reports."""

    status: str  # "ok" or "diverged"
    score: Optional[float]  # metric on the scored split; None when diverged
    reason: Optional[str] = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # timings, throughput


class Trainer(Protocol):
    """Trains one setting; tfbench.training.RegimeTrainer is the real one, tests use fakes."""

    def train_and_score(self, hyperparameters: Mapping[str, float], fit_split: str,
                        score_split: str, name: str) -> TrialOutcome:
        """Train on `fit_split`, score `score_split`; `name` is the trial's work folder name."""

    def discard(self, name: str) -> None:
        """Free what a finished trial no longer needs (its checkpoints)."""


def log_spaced(low_exponent: float, high_exponent: float, count: int) -> List[float]:
    """`count` values 10^e, e evenly spaced from low to high inclusive, rounded to 12 digits."""
    return [float(f"{10.0 ** e:.12g}") for e in np.linspace(low_exponent, high_exponent, count)]


def _grid(learning_rates: List[float], weight_decays: List[float]) -> List[Trial]:
    return [Trial(lr, wd) for lr in learning_rates for wd in weight_decays]


# The paper's grids. Fine-tune: 7 learning rates in [1e-4, 1e-1] x (7 weight decays in
# [1e-6, 1e-3] and none) = 56 trials. Scratch: 7 learning rates in [1e-3, 1] x 8 weight decays in
# [1e-5, 10^-1.5] = 56 trials.
PAPER_GRIDS = {
    "finetune": (log_spaced(-4, -1, 7), log_spaced(-6, -3, 7) + [0.0]),
    "scratch": (log_spaced(-3, 0, 7), log_spaced(-5, -1.5, 8)),
}
# Laptop presets: every other paper learning rate around the usual optimum, two weight decays.
SMALL_GRIDS = {
    "finetune": ([1e-3, 1e-2, 1e-1], [1e-5, 0.0]),
    "scratch": ([1e-2, 1e-1, 1.0], [1e-4, 1e-3]),
}

GRIDS: Registry[Callable[..., List[Trial]]] = Registry("search", "valid: " + ", ".join(SEARCHES))
GRIDS.register("paper", lambda regime, lr, wd, lrs, wds: _grid(*PAPER_GRIDS[regime]))
GRIDS.register("small", lambda regime, lr, wd, lrs, wds: _grid(*SMALL_GRIDS[regime]))
GRIDS.register("grid", lambda regime, lr, wd, lrs, wds: _given_grid(lrs, wds))
GRIDS.register("none", lambda regime, lr, wd, lrs, wds: [_single_trial(lr, wd)])


def _given_grid(learning_rates: Optional[List[float]], weight_decays: Optional[List[float]]) -> List[Trial]:
    if not learning_rates or not weight_decays:
        raise InvalidSettingError(
            "search 'grid' trains every pair of the given values: give both learning_rates and "
            f"weight_decays (got learning_rates={learning_rates}, weight_decays={weight_decays})")
    return _grid([float(v) for v in learning_rates], [float(v) for v in weight_decays])


def _single_trial(learning_rate: Optional[float], weight_decay: Optional[float]) -> Trial:
    if learning_rate is None or weight_decay is None:
        raise InvalidSettingError(
            "search 'none' trains one configuration: give both learning_rate and weight_decay "
            f"(got learning_rate={learning_rate}, weight_decay={weight_decay})")
    return Trial(float(learning_rate), float(weight_decay))


def grid(search: str, regime: str, learning_rate: Optional[float] = None,
         weight_decay: Optional[float] = None, learning_rates: Optional[List[float]] = None,
         weight_decays: Optional[List[float]] = None) -> List[Trial]:
    """The trials of search `search` for regime finetune or scratch: "paper" and "small" are fixed
    grids, "grid" the cross product of the given learning_rates and weight_decays, "none" the one
    given learning_rate and weight_decay."""
    if regime not in PAPER_GRIDS:
        raise InvalidSettingError(f"unknown regime {regime!r} for a training search; valid choices: "
                                  + ", ".join(PAPER_GRIDS))
    return GRIDS.get(search)(regime, learning_rate, weight_decay, learning_rates, weight_decays)


def select(trial_records: List[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The trial with the best validation score among those that finished "ok".

    Reads only each record's "status" and "validation_score"; ties go to the earlier trial in grid
    order. None when no trial finished.
    """
    best = None
    for record in trial_records:
        if record["status"] != "ok":
            continue
        if best is None or record["validation_score"] > best["validation_score"]:
            best = record
    return best


# Settings that choose the grid rather than define a trial: a trial trained under --search=small is
# the same trial under --search=paper, and is reused there.
GRID_SETTINGS = ("search", "learning_rate", "weight_decay", "learning_rates", "weight_decays")


def trial_experiment(experiment: Experiment) -> Experiment:
    """The experiment as trial records store it: without the settings that only choose the grid."""
    settings = {name: value for name, value in experiment.settings.items() if name not in GRID_SETTINGS}
    return dataclasses.replace(experiment, settings=settings)


def _finished_trial(experiment: Experiment, trial: Trial, log: Callable[[str], None]):
    """A reusable finished record of `trial`; a record made under other settings is stale: None."""
    try:
        return results.finished_trial(experiment, trial.trial_id, trial.hyperparameters())
    except results.RunConflictError:
        log(f"trial {trial.trial_id}: its record was made with other settings; training it again")
        return None


def run_search(experiment: Experiment, trials: List[Trial], trainer: Trainer,
               log: Callable[[str], None] = print, write: bool = True) -> List[Dict[str, Any]]:
    """Train and validate every trial (skipping those finished earlier); one record per trial.

    A trial record made under other settings (say another train_steps) is replaced, not reused.
    `write` is False on the workers of a multi-worker run other than the chief: they train but
    leave the records to the chief.
    """
    metric = _metric(experiment)
    experiment = trial_experiment(experiment)
    records = []
    for index, trial in enumerate(trials, 1):
        done = _finished_trial(experiment, trial, log)
        if done is not None:
            log(f"trial {index}/{len(trials)} {trial.trial_id}: finished earlier "
                f"({done['status']}, validation {metric}={_format(done['validation_score'])})")
            records.append(done)
            continue
        log(f"trial {index}/{len(trials)} {trial.trial_id}: training on train, scoring on val")
        started_at, started = results.now(), time.time()
        outcome = trainer.train_and_score(trial.hyperparameters(), "train", "val", trial.trial_id)
        record = results.new_record(experiment, metric=metric, started_at=started_at)
        record.update(trial_id=trial.trial_id, hyperparameters=trial.hyperparameters(),
                      validation_score=outcome.score, training=dict(outcome.details))
        record["timings"] = {"wall_seconds": time.time() - started,
                             **outcome.details.get("timings", {})}
        results.finish(record, outcome.status, outcome.reason)
        if write:
            results.write_json_atomic(results.trial_path(experiment, trial.trial_id), record)
            trainer.discard(trial.trial_id)
        log(f"trial {index}/{len(trials)} {trial.trial_id}: {outcome.status}, validation "
            f"{metric}={_format(outcome.score)}" + (f" ({outcome.reason})" if outcome.reason else ""))
        records.append(record)
    return records


def run_protocol(experiment: Experiment, trials: List[Trial], trainer: Trainer,
                 log: Callable[[str], None] = print, write: bool = True) -> Dict[str, Any]:
    """Search on validation, retrain the best on trainval, score test once; the run record.

    The record lists every trial (hyperparameters, status, validation score), the chosen
    hyperparameters, the test score and timings; its status is "diverged" when every trial
    diverged (nothing to retrain) or the retrain diverged.
    """
    metric = _metric(experiment)
    record = results.new_record(experiment, metric=metric, started_at=results.now())
    started = time.time()
    trial_records = run_search(experiment, trials, trainer, log=log, write=write)
    record["trials"] = [_trial_summary(trial) for trial in trial_records]
    record["timings"]["search_seconds"] = time.time() - started
    best = select(trial_records)
    if best is None:
        return results.finish(record, "diverged", f"all {len(trials)} trials diverged")
    record["hyperparameters"] = dict(best["hyperparameters"])
    record["validation_score"] = best["validation_score"]
    log(f"chosen on validation: {best['trial_id']} ({metric}={_format(best['validation_score'])}); "
        "retraining on trainval, scoring test")
    started = time.time()
    final = trainer.train_and_score(best["hyperparameters"], "trainval", "test", "final")
    record["training"] = dict(final.details)
    record["timings"].update({f"final_{phase}": seconds
                              for phase, seconds in final.details.get("timings", {}).items()})
    record["timings"]["final_seconds"] = time.time() - started
    record["timings"]["images_per_second"] = final.details.get("images_per_second")
    if final.status != "ok":
        return results.finish(record, final.status, f"retrain on trainval: {final.reason}")
    record["test_score"] = final.score
    return results.finish(record, "ok")


def _trial_summary(record: Mapping[str, Any]) -> Dict[str, Any]:
    return {
        "trial_id": record["trial_id"],
        "hyperparameters": record["hyperparameters"],
        "status": record["status"],
        "reason": record["reason"],
        "validation_score": record["validation_score"],
        "wall_seconds": record["timings"].get("wall_seconds"),
        "images_per_second": record["training"].get("images_per_second"),
    }


def _metric(experiment: Experiment) -> str:
    from tfbench import datasets

    return datasets.spec(experiment.dataset).metric


def _format(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.4f}"
