"""The fine-tune and scratch regimes: every weight trained, with a new linear head.

Fine-tuning starts from ImageNet weights, training from scratch from a random initialisation; the
protocol is the same: train every trial of the search (tfbench.tuning) on "train" and score it on
"val", choose the best validation score, retrain it on "trainval" and score "test" once.

A run decomposes into tasks that an executor may run anywhere (docs/DESIGN.md, "Data flow"):
`run_trial` for each of `trials(experiment)`, then `conclude`. Tasks talk through records only:
each trial writes `<run dir>/trials/<trial id>.json` when it ends, so a rerun skips finished
trials and resumes the interrupted one from its checkpoint; a trial whose loss becomes NaN or
infinite is recorded as "diverged" and the search goes on.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tfbench import estimate_cost, files, grid_edges, hyperrule, predictions, protocol, results, runs, tuning
from tfbench.experiment import Experiment
from tfbench.regimes.trainer import FINAL, Trainer, TrialTrainer, discard_checkpoints, split_examples
from tfbench.settings import HALVING_SEARCHES, Runtime


def conventions(experiment: Experiment) -> Dict[str, str]:
    """The choices behind a run's numbers, written into its record."""
    from tfbench import backbones

    backbone_spec = backbones.spec(experiment.model)
    image_size = experiment.image_size or backbone_spec.image_size
    chosen = {
        "weight_decay": protocol.WEIGHT_DECAY_CONVENTION,
        "optimizer": f"{protocol.OPTIMIZER} {protocol.MOMENTUM}, batch {experiment.batch_size}",
        "learning_rate": "linear warm-up over warmup_steps (if any), then "
                         + protocol.LEARNING_RATE_SCHEDULE,
        "augmentation": protocol.AUGMENTATION + f" (here {image_size} px)",
        "data_order": "every epoch a permutation of the whole training split drawn from (seed, epoch); "
                      "crops and flips keyed by (seed, position in the stream), so a resumed trial sees "
                      "the batches of an uninterrupted one",
        "initialisation": initialisation(experiment.regime, backbone_spec),
        "selection": "best validation score on val (trained on train); retrained on trainval; test "
                     "scored once, after the choice",
    }
    if experiment.settings.search == "hyperrule":
        chosen["hyperrule"] = hyperrule.ADAPTATION
    return chosen


def initialisation(regime: str, backbone_spec) -> str:
    """What the network starts from, as the record says it: what was actually loaded."""
    if regime == "scratch":
        return "random initialisation (seeded by the experiment seed)"
    if backbone_spec.source == "tiny":
        return "fixed seeded initialisation: the tiny test network has no pretrained weights"
    if backbone_spec.imagenet_top1 is None:
        return f"the weights stored in {backbone_spec.handle or backbone_spec.name}"
    return f"ImageNet weights ({backbone_spec.top1_source})"



# ---------------------------------------------------------------------------------------------
# The regime's tasks


class TrialsUnfinishedError(RuntimeError):
    """`conclude` was asked for before every trial of the search had finished."""


def trials(experiment: Experiment) -> List[tuning.Trial]:
    """The trials of the experiment's search, in grid order; for halving, its first rung's (the
    others follow from records: `rungs`). Hyperrule reads the training split's size."""
    settings = experiment.settings
    examples = split_examples(experiment, "train") if settings.search == "hyperrule" else None
    return tuning.trials(settings, experiment.regime, tuning.SearchContext(experiment.batch_size, examples))


def rung_count(experiment: Experiment) -> int:
    """How many rungs the search trains one after the other (1 but for halving)."""
    settings = experiment.settings
    return len(tuning.halving_budgets(settings)) if settings.search in HALVING_SEARCHES else 1


def rung_trials(experiment: Experiment, rung: int,
                log: Callable[[str], None] = print) -> List[tuning.Trial]:
    """The trials of rung `rung`, chosen from the finished records of the rungs before it."""
    return rungs(experiment, log, upto=rung)[rung][0]


def rungs(experiment: Experiment, log: Callable[[str], None] = print,
          upto: Optional[int] = None) -> List[Tuple[List[tuning.Trial], Optional[List[Dict[str, Any]]]]]:
    """[(trials, finished records)] of every rung (or of rungs 0..`upto`, the last without
    records), read from disk. TrialsUnfinishedError when a rung needed to go on has unfinished
    trials."""
    last = rung_count(experiment) - 1 if upto is None else upto
    planned, out = trials(experiment), []
    for rung in range(last + 1):
        if rung > 0:
            previous, previous_records = out[-1]
            planned = tuning.halving_rung_trials(experiment.settings, rung, previous, previous_records)
        if upto is not None and rung == upto:
            return out + [(planned, None)]
        records = [finished_trial(experiment, trial, log) for trial in planned]
        missing = [trial.trial_id for trial, record in zip(planned, records) if record is None]
        if missing:
            raise TrialsUnfinishedError(
                f"{len(missing)} of {len(planned)} trials of {experiment.run_dir()} have not finished "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run them first")
        out.append((planned, records))
    return out


def free_unpromoted(experiment: Experiment, previous: Sequence[tuning.Trial], promoted: Sequence[tuning.Trial],
                    chief: bool = True) -> None:
    """Free the checkpoints the trials of the rung before keep for continuing (halving_continue)
    once a rung's trials are known: those not promoted will never be continued."""
    continued = {trial.continues for trial in promoted}
    for trial in previous:
        if chief and trial.schedule_steps is not None and trial.trial_id not in continued:
            discard_checkpoints(experiment, trial.trial_id)


def finished_trial(experiment: Experiment, trial: tuning.Trial,
                   log: Callable[[str], None] = print) -> Optional[Dict[str, Any]]:
    """The reusable finished record of `trial`; a record made under other settings is stale: None."""
    try:
        return results.finished_trial(experiment, trial.trial_id, trial.hyperparameters(),
                                      tuning.trial_identity)
    except results.RunConflictError:
        log(f"trial {trial.trial_id}: its record was made with other settings; training it again")
        return None


def run_trial(experiment: Experiment, trial: tuning.Trial, runtime: Runtime,
              trainer: Optional[Trainer] = None, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train `trial` on train and score val, unless its finished record exists; its record.

    The chief writes the record (and frees the trial's checkpoints) as soon as the trial ends; a
    trial on a longer schedule keeps them for the rung that may continue it, and a continuing trial
    frees those of the trial it continued. `trainer` defaults to a TrialTrainer made for this call.
    """
    done = finished_trial(experiment, trial, log)
    if done is not None:
        log(f"trial {trial.trial_id}: finished earlier ({done['status']}, validation "
            f"{done['metric']}={_format(done['validation_score'])})")
        return done
    log(f"trial {trial.trial_id}: training on train, scoring on val")
    trainer = trainer or TrialTrainer(experiment, runtime)
    metric = _metric(experiment)
    started_at, started = results.now(), time.time()
    steps = trial.train_steps or experiment.settings.train_steps
    outcome = trainer.train_and_score(trial.hyperparameters(), "train", "val", trial.trial_id, steps,
                                      schedule_steps=trial.schedule_steps, continues=trial.continues)
    record = results.new_record(experiment, metric=metric, started_at=started_at)
    details = dict(outcome.details)
    record.update(trial_id=trial.trial_id, hyperparameters=trial.hyperparameters(),
                  train_steps=steps, rung=trial.rung, validation_score=outcome.score,
                  validation_curve=details.pop("validation_curve", []), training=details)
    record["timings"] = {"wall_seconds": time.time() - started, **details.get("timings", {})}
    results.finish(record, outcome.status, outcome.reason)
    if trainer.chief:
        files.write_json_atomic(results.trial_path(experiment, trial.trial_id), record)
        if trial.schedule_steps is None:
            trainer.discard(trial.trial_id)
        if trial.continues is not None:
            trainer.discard(trial.continues)
    log(f"trial {trial.trial_id}: {outcome.status}, validation {metric}={_format(outcome.score)}"
        + (f" ({outcome.reason})" if outcome.reason else ""))
    return record


def conclude(experiment: Experiment, runtime: Runtime, trainer: Optional[Trainer] = None,
             trial_records: Optional[Sequence[Mapping]] = None,
             log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Select on validation, retrain the choice on trainval, score test once: the run record.

    `trial_records` default to the finished records on disk (of every rung, for halving); every
    trial must have one. Only the last rung's trials compete (a score after a short budget does not
    compete with one after the full budget), and the choice is retrained for its own budget. The
    record lists every trial (hyperparameters, budget, rung, status, validation score), the choice
    and its validation curve (results.CHOSEN_CURVE, for tfbench.report.convergence), the test score, the
    training steps spent and timings; its status is "diverged" when every trial of the last rung
    diverged (nothing to retrain) or the retrain diverged.
    """
    if trial_records is None:
        trial_records = [record for _, records in rungs(experiment, log) for record in records]
    last_rung = max((record.get("rung") or 0 for record in trial_records), default=0)
    competing = [record for record in trial_records if (record.get("rung") or 0) == last_rung]
    metric = _metric(experiment)
    record = results.new_record(experiment, metric=metric, started_at=results.now())
    record["conventions"] = conventions(experiment)
    record["imagenet_top1"] = runs.imagenet_top1(experiment)
    record["skipped_images"] = getattr(experiment.dataset_spec(), "skipped_images", 0)
    record["tensorboard_dir"] = os.path.join(experiment.run_dir(), results.TRIALS_DIR)
    record["trials"] = [_trial_summary(trial) for trial in trial_records]
    record["timings"]["search_seconds"] = sum(t["timings"].get("wall_seconds") or 0.0 for t in trial_records)
    record["total_train_steps"] = _steps(trial_records)
    best = tuning.best_trial(competing)
    if best is None:
        return results.finish(record, "diverged", f"all {len(competing)} trials diverged")
    record["hyperparameters"] = dict(best["hyperparameters"])
    record["validation_score"] = best["validation_score"]
    record[results.CHOSEN_CURVE] = best.get("validation_curve") or []
    grid_edges.mark(record, grid_edges.edges(
        record["hyperparameters"], [trial["hyperparameters"] for trial in trial_records]), log)
    log(f"chosen on validation: {best['trial_id']} ({metric}={_format(best['validation_score'])}); "
        "retraining on trainval, scoring test")
    return _retrain(experiment, trainer or TrialTrainer(experiment, runtime), record, FINAL,
                    best.get("train_steps") or experiment.settings.train_steps, keep_predictions=True)


def _retrain(experiment: Experiment, trainer: Trainer, record: Dict[str, Any], name: str, steps: int,
             keep_predictions: bool) -> Dict[str, Any]:
    """Retrain `record`'s hyperparameters on trainval for `steps` and score test once, into `record`
    (finished); `keep_predictions` stores the per-example answers beside the run's record."""
    started = time.time()
    final = trainer.train_and_score(record["hyperparameters"], "trainval", "test", name, steps)
    record["training"] = dict(final.details)
    record["total_train_steps"] = record.get("total_train_steps", 0) + final.details.get("steps", 0)
    record["timings"].update({f"final_{phase}": seconds
                              for phase, seconds in final.details.get("timings", {}).items()})
    record["timings"]["final_seconds"] = time.time() - started
    record["timings"]["images_per_second"] = final.details.get("images_per_second")
    if final.status != "ok":
        return results.finish(record, final.status, f"retrain on trainval: {final.reason}")
    record["test_score"] = final.score
    if experiment.train_examples_per_class is not None:  # the count the final model trained on
        record["train_examples"] = split_examples(experiment, "trainval")
    if keep_predictions and final.predictions is not None and trainer.chief:
        record[predictions.RECORD_KEY] = predictions.write(experiment.run_dir(), final.predictions)
    return results.finish(record, "ok")


def cheap_retrain_path(experiment: Experiment, hyperparameters: Mapping[str, float]) -> str:
    """Where the retrain of this setting of a grid run is recorded, named by the setting's trial id."""
    return results.cheap_retrain_path(experiment, cheap_retrain_name(hyperparameters))


def cheap_retrain_name(hyperparameters: Mapping[str, float]) -> str:
    """A setting's name among a run's cheap-choice retrains: its trial id, e.g. "lr0.01_wd1e-05"."""
    return tuning.Trial(hyperparameters["learning_rate"], hyperparameters["weight_decay"]).trial_id


def retrain_cheap_choice(experiment: Experiment, hyperparameters: Mapping[str, float], runtime: Runtime,
                         trainer: Optional[Trainer] = None) -> Dict[str, Any]:
    """The retrain a grid run's conclusion would do, on trainval for train_steps and scored on test
    once, of a setting that a cheaper search would have chosen instead (tfbench.report.
    cheap_alternatives): its record, written to `cheap_retrain_path` (not a run: reports read it
    only for that table)."""
    record = results.new_record(experiment, metric=_metric(experiment), started_at=results.now())
    record["hyperparameters"] = {"learning_rate": float(hyperparameters["learning_rate"]),
                                 "weight_decay": float(hyperparameters["weight_decay"])}
    trainer = trainer or TrialTrainer(experiment, runtime)
    name = f"{results.CHEAP_RETRAINS_DIR}/{cheap_retrain_name(hyperparameters)}"  # its work folder under trials/
    record = _retrain(experiment, trainer, record, name, experiment.settings.train_steps, keep_predictions=False)
    if trainer.chief:
        files.write_json_atomic(cheap_retrain_path(experiment, hyperparameters), record)
        trainer.discard(name)
    return record


def rung_plan(experiment: Experiment, first: Sequence[tuning.Trial]) -> List[Tuple[int, int]]:
    """(at most how many trials, steps each trains) of every rung, given the first rung's trials;
    continuing halving's rungs train the steps from the rung before's budget to their own."""
    settings = experiment.settings
    if settings.search in HALVING_SEARCHES:
        return list(zip(tuning.halving_rung_sizes(settings, experiment.regime),
                        tuning.halving_rung_steps(settings)))
    return [(len(first), (first[0].train_steps if first else None) or settings.train_steps)]


def run(experiment: Experiment, runtime: Runtime, strategy=None) -> Dict[str, Any]:
    """The whole protocol in this process: every trial, rung after rung, then `conclude`."""
    trainer = TrialTrainer(experiment, runtime, strategy=strategy)
    log = print if trainer.chief else (lambda message: None)
    planned = trials(experiment)
    shape = rung_plan(experiment, planned)
    speed = throughput(experiment, trainer, planned[0] if planned else None)
    log(f"{estimate_cost.plan_line(experiment, runtime, speed, trainer.strategy.num_replicas_in_sync, shape)}; "
        f"precision {trainer.precision}, strategy {runtime.strategy} "
        f"({trainer.strategy.num_replicas_in_sync} replica{'' if trainer.strategy.num_replicas_in_sync == 1 else 's'})")
    log(f"TensorBoard: tensorboard --logdir {trainer.log_dir()}")
    trial_records: List[Dict[str, Any]] = []
    rung_records_before: List[Dict[str, Any]] = []
    for rung in range(len(shape)):
        rung_records = []
        if rung > 0:
            previous = planned
            planned = tuning.halving_rung_trials(experiment.settings, rung, previous, rung_records_before)
            free_unpromoted(experiment, previous, planned, trainer.chief)
            log(f"rung {rung}: {len(planned)} trials of {shape[rung][1]:,} steps")
        for index, trial in enumerate(planned, 1):
            rung_records.append(run_trial(
                experiment, trial, runtime, trainer,
                log=lambda message, i=index, n=len(planned): log(f"[{i}/{n}] {message}")))
            if index < len(planned):
                log(f"ETA {_eta(rung_records, len(planned) - index)} for the "
                    f"{len(planned) - index} trials left in this rung")
        trial_records += rung_records
        rung_records_before = rung_records
    return conclude(experiment, runtime, trainer, trial_records, log=log)


WARMUP_STEPS = 5  # timed after a first, traced step, before the first trial when nothing measured it


def throughput(experiment: Experiment, trainer: TrialTrainer,
               first: Optional[tuning.Trial]) -> estimate_cost.Throughput:
    """The network's training throughput: measured in the output folder's records, else timed over
    WARMUP_STEPS steps of the first trial's setting (and stored for later estimates, see
    tfbench.estimate_cost), else the table's."""
    size = estimate_cost.image_size(experiment) or trainer.image_size
    rates = estimate_cost.rates_in_records([experiment.output_dir])
    speed = estimate_cost.measured(experiment.model, size, rates)
    if speed is not None or first is None:
        return speed or estimate_cost.throughput(experiment.model, size, rates + estimate_cost.stored_rates())
    measured = trainer.time_steps(first.hyperparameters(), WARMUP_STEPS)
    if measured is None:
        return estimate_cost.throughput(experiment.model, size, rates + estimate_cost.stored_rates())
    if trainer.chief:
        estimate_cost.store_measurement(experiment.model, size, estimate_cost.TRAIN, measured,
                                        by=f"tfbench.{experiment.regime} warm-up",
                                        batch_size=experiment.batch_size, precision=trainer.precision)
    return estimate_cost.from_warmup(measured, WARMUP_STEPS)


def _steps(trial_records: Sequence[Mapping[str, Any]]) -> int:
    """Training steps the trials took (a diverged one up to where it stopped; a continued one from
    where it continued)."""
    return sum(((record.get("training") or {}).get("steps") or 0)
               - ((record.get("training") or {}).get("continued_from_step") or 0) for record in trial_records)


def _eta(trial_records: Sequence[Mapping[str, Any]], runs_left: int) -> str:
    """Time left at the mean wall time of the trials so far (finished earlier ones included)."""
    seconds = [record["timings"].get("wall_seconds") or 0.0 for record in trial_records]
    return time.strftime("%H:%M:%S", time.gmtime(runs_left * sum(seconds) / len(seconds)))


def _trial_summary(record: Mapping[str, Any]) -> Dict[str, Any]:
    return {
        "trial_id": record["trial_id"],
        "hyperparameters": record["hyperparameters"],
        "train_steps": record.get("train_steps"),
        "rung": record.get("rung"),
        "status": record["status"],
        "reason": record["reason"],
        "validation_score": record["validation_score"],
        "wall_seconds": record["timings"].get("wall_seconds"),
        "images_per_second": record["training"].get("images_per_second"),
    }


def _metric(experiment: Experiment) -> str:
    return experiment.dataset_spec().metric


def _format(score: Optional[float]) -> str:
    return "-" if score is None else f"{score:.4f}"

