"""The fine-tuning regime: every weight trained, starting from ImageNet, with a new linear head.

    python -m tfbench.finetune --model=mobilenet_v2 --dataset=dtd          # the paper's protocol
    python -m tfbench.finetune --flagfile=flags/finetune_small.flags         # minutes on a laptop

The protocol: train every trial of the search (tfbench.tuning) on "train" and score it on "val",
choose the best validation score, retrain it on "trainval" and score "test" once. Training from
scratch (tfbench.scratch) is the same code from random initialisation; the flags below serve both.

A run decomposes into tasks that an executor may run anywhere (docs/DESIGN.md, "The regime
interface"): `run_trial` for each of `trials(experiment)`, then `conclude`. Tasks talk through
records only: each trial writes `<run dir>/trials/<trial id>.json` when it ends, so a rerun skips
finished trials and resumes the interrupted one from its checkpoint; a trial whose loss becomes NaN
or infinite is recorded as "diverged" and the search goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from absl import flags

from tfbench import flags_common, files, predictions, protocol, results, runs, tuning
from tfbench.experiment import Experiment
from tfbench.predictions import Predictions
from tfbench.settings import (BN_MOMENTUM_RULES, HALVING_ETA, SEARCHES, InvalidSettingError, Runtime,
                              TrainingSettings)

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "search", "paper", SEARCHES,
    "Hyperparameter search: 'paper' = the paper's grid (fine-tune 7 learning rates x 8 weight "
    "decays incl. none; scratch 7 x 8), 'small' = a 3 x 2 laptop preset, 'grid' = every pair of "
    "--learning_rates x --weight_decays, 'none' = one trial with --learning_rate and "
    "--weight_decay, 'halving' = successive halving over the paper's grid (--halving_eta, "
    "--halving_min_steps), 'hyperrule' = BiT-HyperRule's one configuration, its length by the "
    "training split's size (tfbench.hyperrule).")
flags.DEFINE_integer(
    "halving_eta", None,
    f"Only with --search=halving: each rung keeps the best 1/eta of the one before and trains it "
    f"eta times longer (default {HALVING_ETA}).", lower_bound=2)
flags.DEFINE_integer(
    "halving_min_steps", None,
    "Only with --search=halving: the first rung's training steps (default train_steps / eta^3, "
    "so four rungs); rungs train train_steps / eta^k steps for every k down to this.", lower_bound=1)
flags.DEFINE_float("learning_rate", None, "Peak learning rate; only with --search=none.",
                   lower_bound=0.0)
flags.DEFINE_float(
    "weight_decay", None,
    "Weight decay, only with --search=none; the paper's convention: an L2 penalty of "
    "weight_decay / learning_rate on kernels only (0 = none).", lower_bound=0.0)
flags.DEFINE_list("learning_rates", None,
                  "Peak learning rates, comma-separated; only with --search=grid (or halving, "
                  "to halve over them instead of the paper's grid).")
flags.DEFINE_list("weight_decays", None,
                  "Weight decays, comma-separated (0 = none); only with --search=grid (or halving).")
flags.DEFINE_integer(
    "train_steps", None,
    f"Training steps per trial and for the final retrain; default the paper's "
    f"({protocol.FINETUNE_STEPS:,} fine-tune, {protocol.SCRATCH_STEPS:,} scratch).", lower_bound=1)
flags.DEFINE_integer("warmup_steps", 0,
                     "Linear learning-rate warm-up steps before the cosine decay.", lower_bound=0)
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing in [0, 1).",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_float("dropout", 0.0, "Dropout rate before the new head, in [0, 1).",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_string(
    "bn_momentum", "paper",
    "Momentum of the batch-norm moving statistics (Keras convention: new = m * old + (1 - m) * "
    "batch): 'paper' = max(1 - 10 / steps per epoch, 0.9) from the training split's size and the "
    "batch size; 'backbone' = each network's own; or a number in [0, 1).")
flags.DEFINE_integer(
    "checkpoint_every", 1000,
    "Steps between checkpoints; a killed run given the same command again resumes from the last "
    "one. Changing it never conflicts with a finished run.", lower_bound=1)
flags.DEFINE_integer(
    "eval_every", None,
    "Score the validation split every N steps of a trial (TensorBoard curves and the trial "
    "record's validation_curve); default: at every checkpoint; 0: only at the end.", lower_bound=0)
flags.adopt_module_key_flags(flags_common)

# Written next to a trial's checkpoints: what they belong to, so that a rerun under other settings
# starts afresh instead of resuming someone else's training.
CHECKPOINT_IDENTITY = "training_run.json"
FINAL = "final"  # the work folder of the retrain on trainval


def settings_from_flags(regime: str) -> TrainingSettings:
    """The validated training settings the flags ask for (the paper's where a flag is not given)."""
    steps = FLAGS.train_steps or protocol.PAPER_STEPS[regime]
    return TrainingSettings(
        search=FLAGS.search, train_steps=steps, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay,
        learning_rates=_floats("learning_rates"), weight_decays=_floats("weight_decays"),
        warmup_steps=FLAGS.warmup_steps, label_smoothing=FLAGS.label_smoothing,
        dropout=FLAGS.dropout, bn_momentum=_bn_momentum(FLAGS.bn_momentum),
        halving_eta=FLAGS.halving_eta, halving_min_steps=FLAGS.halving_min_steps)


def _bn_momentum(text: str):
    if text in BN_MOMENTUM_RULES:
        return text
    try:
        return float(text)
    except ValueError:
        raise InvalidSettingError(f"--bn_momentum takes a number in [0, 1) or one of "
                                  f"{', '.join(BN_MOMENTUM_RULES)}, got {text!r}") from None


def runtime_from_flags() -> Runtime:
    return flags_common.runtime_from_flags(checkpoint_every=FLAGS.checkpoint_every,
                                           eval_every=FLAGS.eval_every)


def _floats(flag: str) -> tuple:
    try:
        return tuple(float(text) for text in FLAGS[flag].value or ())
    except ValueError:
        raise InvalidSettingError(f"--{flag} takes numbers, got {FLAGS[flag].value}") from None


# ---------------------------------------------------------------------------------------------
# Training one setting


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """What training one setting on one split and scoring it on another reports."""

    status: str  # "ok" or "diverged"
    score: Optional[float]  # metric on the scored split; None when diverged
    reason: Optional[str] = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # timings, throughput, curve
    predictions: Optional[Predictions] = None  # per-example answers, kept when the test split was scored


class Trainer(Protocol):
    """Trains one setting; `TrialTrainer` is the real one, tests use fakes."""

    chief: bool

    def train_and_score(self, hyperparameters: Mapping[str, float], fit_split: str,
                        score_split: str, name: str, train_steps: int) -> TrialOutcome:
        """Train on `fit_split` for `train_steps`, score `score_split`; `name` is the trial's work
        folder name."""

    def discard(self, name: str) -> None:
        """Free what a finished trial no longer needs (its checkpoints)."""


class TrialTrainer:
    """Trains and scores hyperparameter settings of one fine-tune or scratch experiment.

    Fine-tune starts from the backbone's pretrained weights, scratch from a random initialisation
    (both seeded by the experiment seed, identical for every trial). Training reads the split
    through the Inception-style crop-and-flip pipeline at the backbone's native size (or the
    experiment's image_size), deterministic so that a resumed trial sees the same batches;
    scoring reads every example of the other split, whole images resized. Checkpoints and
    TensorBoard logs live in <run dir>/trials/<name>/.
    """

    def __init__(self, experiment: Experiment, runtime: Runtime, strategy=None):
        from tfbench import backbones, devices

        self.experiment = experiment
        self.settings: TrainingSettings = experiment.settings
        self.runtime = runtime
        self.strategy = strategy if strategy is not None else devices.make_strategy(runtime.strategy)
        self.precision = devices.resolve_precision(experiment.precision)
        self.dataset_spec = experiment.dataset_spec()
        self.backbone_spec = backbones.spec(experiment.model)
        self.image_size = experiment.image_size or self.backbone_spec.image_size
        self.chief = devices.is_chief(self.strategy)

    def log_dir(self) -> str:
        return os.path.join(self.experiment.run_dir(), results.TRIALS_DIR)

    def work_dir(self, name: str) -> str:
        return os.path.join(self.log_dir(), name)

    def config(self, hyperparameters: Mapping[str, float], train_steps: int):
        """The training of one trial; a budget shorter than train_steps (a halving rung) warms up
        for the same fraction of its steps."""
        from tfbench import training

        settings = self.settings
        return training.TrainConfig(
            learning_rate=hyperparameters["learning_rate"], weight_decay=hyperparameters["weight_decay"],
            train_steps=train_steps, batch_size=self.experiment.batch_size,
            warmup_steps=settings.warmup_steps * train_steps // settings.train_steps,
            label_smoothing=settings.label_smoothing,
            multi_label=self.dataset_spec.multi_label)

    def build_model(self, bn_momentum: Optional[float]):
        import keras

        from tfbench import backbones, classifier

        keras.utils.set_random_seed(self.experiment.seed)
        backbone = backbones.build(self.experiment.model, pretrained=self.experiment.regime == "finetune",
                                   image_size=self.image_size)
        return classifier.build_classifier(backbone, self.dataset_spec.num_classes,
                                           self.settings.dropout, bn_momentum)

    def bn_momentum(self, fit_split: str) -> Optional[float]:
        """The batch-norm momentum for training on `fit_split` (None: each backbone's own)."""
        rule = self.settings.bn_momentum
        if rule == "backbone":
            return None
        if rule == "paper":
            return protocol.bn_momentum(split_examples(self.experiment, fit_split), self.experiment.batch_size)
        return rule

    def batches(self, split: str, training: bool):
        from tfbench import preprocessing

        examples = self.experiment.load(split)
        return preprocessing.pipeline(examples, self.image_size, self.experiment.batch_size,
                                      training=training, seed=self.experiment.seed,
                                      deterministic=training, repeat=training)

    def score(self, model, split: str):
        """(metric on every example of `split`, number of examples, the per-example predictions)."""
        from tfbench import metrics, training

        labels, scores = training.predict(model, self.batches(split, training=False))
        metric = self.dataset_spec.metric
        return (metrics.score(metric, labels, scores), int(len(labels)),
                Predictions.of(metric, labels, scores))

    def hparams(self, hyperparameters: Mapping[str, float], train_steps: int) -> Dict[str, Any]:
        """What TensorBoard's HParams dashboard groups trials by: enough to tell runs of a sweep apart."""
        experiment = self.experiment
        return {"regime": experiment.regime, "dataset": experiment.dataset, "model": experiment.model,
                "search": self.settings.search, "train_steps": train_steps,
                "batch_size": experiment.batch_size, **hyperparameters}

    def train_and_score(self, hyperparameters: Mapping[str, float], fit_split: str, score_split: str,
                        name: str, train_steps: int) -> TrialOutcome:
        """Train on `fit_split`, then score every example of `score_split` with the dataset's metric.

        While training on "train", the validation split is scored every
        `runtime.validation_interval` steps (the trial's curve); the test split never is.
        """
        from tfbench import training

        config = self.config(hyperparameters, train_steps)
        work_dir = self.work_dir(name)
        log_dir = os.path.join(work_dir, "tensorboard")
        checkpoint_dir = os.path.join(work_dir, "checkpoints")
        tag = f"{score_split}/{self.dataset_spec.metric}"
        if self.chief:
            forget_stale_checkpoints(checkpoint_dir, {
                "experiment": tuning.trial_identity(self.experiment.to_dict()),
                "hyperparameters": dict(hyperparameters), "fit_split": fit_split,
                "train_steps": train_steps})
        bn_momentum = self.bn_momentum(fit_split)
        evaluate = None
        if score_split == "val":
            evaluate = lambda model: (tag, self.score(model, "val")[0])  # noqa: E731
        model, result = training.train(
            lambda: self.build_model(bn_momentum), lambda start: self.batches(fit_split, training=True).skip(start), config,
            strategy=self.strategy, runtime=self.runtime, precision=self.precision,
            checkpoint_dir=checkpoint_dir, log_dir=log_dir, hparams=self.hparams(hyperparameters, train_steps),
            evaluate=evaluate)
        details = {
            "fit_split": fit_split, "score_split": score_split, "train_steps": config.train_steps,
            "steps": result.steps, "resumed_from_step": result.resumed_from_step,
            "final_loss": result.final_loss, "l2_coefficient": config.l2_coefficient,
            "bn_momentum": bn_momentum,
            "images_per_second": result.images_per_second, "precision": self.precision,
            "strategy": self.runtime.strategy, "strategy_class": type(self.strategy).__name__,
            "replicas": self.strategy.num_replicas_in_sync,
            "timings": {f"{phase}_seconds": value for phase, value in result.seconds.items()},
        }
        if result.status != "ok":
            if self.chief:
                training.write_hparams_end(log_dir, result.status)
            return TrialOutcome(result.status, None, result.reason, details)
        started = time.perf_counter()
        score, examples, answers = self.score(model, score_split)
        details["timings"]["evaluate_seconds"] = time.perf_counter() - started
        details["scored_examples"] = examples
        if score_split == "val":
            details["validation_curve"] = result.validation_curve + [[result.steps, score]]
        if self.chief:
            training.log_scalar(log_dir, tag, score, result.steps)
            training.write_hparams_end(log_dir, "ok")
        return TrialOutcome("ok", score, None, details, answers if score_split == "test" else None)

    def discard(self, name: str) -> None:
        if self.chief:
            shutil.rmtree(os.path.join(self.work_dir(name), "checkpoints"), ignore_errors=True)


def split_examples(experiment: Experiment, split: str) -> int:
    """How many examples the split holds (counted when the dataset does not say)."""
    data = experiment.load(split)
    count = int(data.cardinality())
    return count if count >= 0 else int(data.reduce(0, lambda total, _: total + 1))


def conventions(experiment: Experiment) -> Dict[str, str]:
    """The choices behind a run's numbers, written into its record."""
    from tfbench import backbones

    backbone_spec = backbones.spec(experiment.model)
    image_size = experiment.image_size or backbone_spec.image_size
    return {
        "weight_decay": protocol.WEIGHT_DECAY_CONVENTION,
        "optimizer": f"{protocol.OPTIMIZER} {protocol.MOMENTUM}, batch {experiment.batch_size}",
        "learning_rate": "linear warm-up over warmup_steps (if any), then "
                         + protocol.LEARNING_RATE_SCHEDULE,
        "augmentation": protocol.AUGMENTATION + f" (here {image_size} px)",
        "initialisation": initialisation(experiment.regime, backbone_spec),
        "selection": "best validation score on val (trained on train); retrained on trainval; test "
                     "scored once, after the choice",
    }


def initialisation(regime: str, backbone_spec) -> str:
    """What the network starts from, as the record says it: what was actually loaded."""
    if regime == "scratch":
        return "random initialisation (seeded by the experiment seed)"
    if backbone_spec.source == "tiny":
        return "fixed seeded initialisation: the tiny test network has no pretrained weights"
    if backbone_spec.imagenet_top1 is None:
        return f"the weights stored in {backbone_spec.handle or backbone_spec.name}"
    return f"ImageNet weights ({backbone_spec.top1_source})"


def forget_stale_checkpoints(checkpoint_dir: str, identity: Mapping[str, Any]) -> None:
    """Keep `checkpoint_dir` only if it belongs to the training run `identity`; else empty it.

    A rerun under other settings (say more train_steps) must start afresh, not resume a checkpoint
    of another schedule.
    """
    identity_file = os.path.join(checkpoint_dir, CHECKPOINT_IDENTITY)
    if os.path.exists(identity_file):
        with open(identity_file) as handle:
            if json.load(handle) == identity:
                return
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    files.write_json_atomic(identity_file, identity)


# ---------------------------------------------------------------------------------------------
# The regime's tasks


class TrialsUnfinishedError(RuntimeError):
    """`conclude` was asked for before every trial of the search had finished."""


def trials(experiment: Experiment) -> List[tuning.Trial]:
    """The trials of the experiment's search, in grid order; for halving, its first rung's (the
    others follow from records: `rungs`). Hyperrule reads the training split's size."""
    settings = experiment.settings
    examples = split_examples(experiment, "train") if settings.search == "hyperrule" else None
    return tuning.trials(settings, experiment.regime, tuning.DataSize(experiment.batch_size, examples))


def rung_count(experiment: Experiment) -> int:
    """How many rungs the search trains one after the other (1 but for halving)."""
    settings = experiment.settings
    return len(tuning.halving_budgets(settings)) if settings.search == "halving" else 1


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

    The chief writes the record (and frees the trial's checkpoints) as soon as the trial ends.
    `trainer` defaults to a TrialTrainer made for this call.
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
    outcome = trainer.train_and_score(trial.hyperparameters(), "train", "val", trial.trial_id, steps)
    record = results.new_record(experiment, metric=metric, started_at=started_at)
    details = dict(outcome.details)
    record.update(trial_id=trial.trial_id, hyperparameters=trial.hyperparameters(),
                  train_steps=steps, rung=trial.rung, validation_score=outcome.score,
                  validation_curve=details.pop("validation_curve", []), training=details)
    record["timings"] = {"wall_seconds": time.time() - started, **details.get("timings", {})}
    results.finish(record, outcome.status, outcome.reason)
    if trainer.chief:
        files.write_json_atomic(results.trial_path(experiment, trial.trial_id), record)
        trainer.discard(trial.trial_id)
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
    and its validation curve (results.CHOSEN_CURVE, for tfbench.convergence), the test score, the
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
    best = tuning.select(competing)
    if best is None:
        return results.finish(record, "diverged", f"all {len(competing)} trials diverged")
    record["hyperparameters"] = dict(best["hyperparameters"])
    record["validation_score"] = best["validation_score"]
    record[results.CHOSEN_CURVE] = best.get("validation_curve") or []
    tuning.mark_grid_edges(record, tuning.grid_edges(
        record["hyperparameters"], [trial["hyperparameters"] for trial in trial_records]), log)
    log(f"chosen on validation: {best['trial_id']} ({metric}={_format(best['validation_score'])}); "
        "retraining on trainval, scoring test")
    started = time.time()
    trainer = trainer or TrialTrainer(experiment, runtime)
    final = trainer.train_and_score(best["hyperparameters"], "trainval", "test", FINAL,
                                    best.get("train_steps") or experiment.settings.train_steps)
    record["training"] = dict(final.details)
    record["total_train_steps"] += final.details.get("steps", 0)
    record["timings"].update({f"final_{phase}": seconds
                              for phase, seconds in final.details.get("timings", {}).items()})
    record["timings"]["final_seconds"] = time.time() - started
    record["timings"]["images_per_second"] = final.details.get("images_per_second")
    if final.status != "ok":
        return results.finish(record, final.status, f"retrain on trainval: {final.reason}")
    record["test_score"] = final.score
    if final.predictions is not None and trainer.chief:
        record[predictions.RECORD_KEY] = predictions.write(experiment.run_dir(), final.predictions)
    return results.finish(record, "ok")


def rung_plan(experiment: Experiment, first: Sequence[tuning.Trial]) -> List[Tuple[int, int]]:
    """(at most how many trials, steps each) of every rung, given the first rung's trials."""
    settings = experiment.settings
    if settings.search == "halving":
        return list(zip(tuning.halving_rung_sizes(settings, experiment.regime),
                        tuning.halving_budgets(settings)))
    return [(len(first), (first[0].train_steps if first else None) or settings.train_steps)]


def run(experiment: Experiment, runtime: Runtime, strategy=None) -> Dict[str, Any]:
    """The whole protocol in this process: every trial, rung after rung, then `conclude`."""
    trainer = TrialTrainer(experiment, runtime, strategy=strategy)
    log = print if trainer.chief else (lambda message: None)
    planned = trials(experiment)
    shape = rung_plan(experiment, planned)
    steps = sum(count * each for count, each in shape) + shape[-1][1]
    if len(shape) == 1:
        trials_text = f"{shape[0][0]} trials + 1 retrain on trainval, {shape[0][1]:,} steps of {experiment.batch_size} each"
    else:
        trials_text = (f"rungs of {', '.join(f'{count} x {each:,}' for count, each in shape)} steps "
                       f"+ 1 retrain on trainval of {shape[-1][1]:,}, batches of {experiment.batch_size}")
    log(f"plan: {trials_text} = {'at most ' if len(shape) > 1 else ''}{steps:,} steps, "
        f"{steps * experiment.batch_size:,} images; precision {trainer.precision}, strategy "
        f"{runtime.strategy} ({trainer.strategy.num_replicas_in_sync} replicas)")
    log(f"TensorBoard: tensorboard --logdir {trainer.log_dir()}")
    trial_records: List[Dict[str, Any]] = []
    rung_records_before: List[Dict[str, Any]] = []
    for rung in range(len(shape)):
        rung_records = []
        if rung > 0:
            planned = tuning.halving_rung_trials(experiment.settings, rung, planned, rung_records_before)
            log(f"rung {rung}: {len(planned)} trials at {shape[rung][1]:,} steps")
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


def _steps(trial_records: Sequence[Mapping[str, Any]]) -> int:
    """Training steps the trials took (a diverged one up to where it stopped)."""
    return sum((record.get("training") or {}).get("steps") or 0 for record in trial_records)


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


def main():
    flags_common.main("finetune", lambda: settings_from_flags("finetune"), run, runtime_from_flags)


if __name__ == "__main__":
    main()
