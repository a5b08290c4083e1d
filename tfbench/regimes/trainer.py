"""Training and scoring one hyperparameter setting of a fine-tune or scratch experiment.

`TrialTrainer` owns everything one trial needs (the model, the input pipelines, checkpoints and
TensorBoard folders); `tfbench.regimes.trained` decides which trials run and what they are for.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Dict, Mapping, Optional, Protocol

from tfbench import files, interruption, protocol, results, tuning
from tfbench.experiment import Experiment
from tfbench.predictions import Predictions
from tfbench.settings import Runtime, TrainingSettings

# Written next to a trial's checkpoints: what they belong to, so that a rerun under other settings
# starts afresh instead of resuming someone else's training.
CHECKPOINT_IDENTITY = "training_run.json"
FINAL = "final"  # the work folder of the retrain on trainval

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
                        score_split: str, name: str, train_steps: int,
                        schedule_steps: Optional[int] = None, continues: Optional[str] = None) -> TrialOutcome:
        """Train on `fit_split` for `train_steps`, score `score_split`; `name` is the trial's work
        folder name. `schedule_steps`: the cosine schedule's length when longer; `continues`: the
        work folder of an earlier training of the same setting and schedule to go on from."""

    def discard(self, name: str) -> None:
        """Free what a finished trial no longer needs (its checkpoints)."""


class TrialTrainer:
    """Trains and scores hyperparameter settings of one fine-tune or scratch experiment.

    Fine-tune starts from the backbone's pretrained weights, scratch from a random initialisation
    (both seeded by the experiment seed, identical for every trial). Training reads the split
    through the Inception-style crop-and-flip pipeline at the backbone's native size (or the
    experiment's image_size), a function of (seed, step), so that a resumed trial sees the same
    batches and reaches them without replaying the earlier ones; scoring reads every example of
    the other split, whole images resized. Checkpoints and
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
        self._tables: Dict[str, Any] = {}  # split -> its ExampleTable, read once

    def log_dir(self) -> str:
        return os.path.join(self.experiment.run_dir(), results.TRIALS_DIR)

    def work_dir(self, name: str) -> str:
        return os.path.join(self.log_dir(), name)

    def config(self, hyperparameters: Mapping[str, float], train_steps: int,
               schedule_steps: Optional[int] = None):
        """The training of one trial; a schedule shorter than train_steps (a halving rung) warms up
        for the same fraction of its steps."""
        from tfbench import training

        settings = self.settings
        schedule = schedule_steps or train_steps
        return training.TrainConfig(
            learning_rate=hyperparameters["learning_rate"], weight_decay=hyperparameters["weight_decay"],
            train_steps=train_steps, batch_size=self.experiment.batch_size,
            warmup_steps=settings.warmup_steps * schedule // settings.train_steps,
            label_smoothing=settings.label_smoothing,
            multi_label=self.dataset_spec.multi_label, schedule_steps=schedule_steps)

    def checkpoint_identity(self, hyperparameters: Mapping[str, float], fit_split: str,
                            schedule_steps: Optional[int]) -> Dict[str, Any]:
        """What a trial's checkpoints belong to, but its budget: trainings that share it differ only
        in where they stop, so one may continue another's checkpoint."""
        identity = {"experiment": tuning.trial_identity(self.experiment.to_dict()),
                    "hyperparameters": dict(hyperparameters), "fit_split": fit_split}
        return identity if schedule_steps is None else {**identity, "schedule_steps": schedule_steps}

    def build_model(self, bn_momentum: Optional[float]):
        import keras

        from tfbench import backbones, classifier

        keras.utils.set_random_seed(self.experiment.seed)
        backbone = backbones.build(self.experiment.model, pretrained=self.experiment.regime == "finetune",
                                   image_size=self.image_size)
        return classifier.build_classifier(backbone, self.dataset_spec.num_classes,
                                           self.settings.dropout, bn_momentum)

    def learner(self, bn_momentum: Optional[float]):
        """The learner of this experiment's network for `bn_momentum`: the one kept from the trial
        before when that was the same network, else a new one (the kept one is released)."""
        from tfbench import backbones, learner

        experiment = self.experiment
        pretrained = experiment.regime == "finetune"
        key = (experiment.model, self.backbone_spec, backbones.weights_fingerprint(experiment.model, pretrained),
               experiment.seed, self.image_size, self.dataset_spec.num_classes, self.dataset_spec.multi_label,
               self.settings.dropout, self.settings.label_smoothing, bn_momentum, experiment.batch_size,
               self.precision, self.strategy)
        kept = _KEPT_LEARNER.get(key)
        if kept is None:
            release_kept_learner()
            kept = _KEPT_LEARNER[key] = learner.Learner(
                lambda: self.build_model(bn_momentum), strategy=self.strategy, batch_size=experiment.batch_size,
                precision=self.precision, multi_label=self.dataset_spec.multi_label,
                label_smoothing=self.settings.label_smoothing)
        return kept

    def bn_momentum(self, fit_split: str) -> Optional[float]:
        """The batch-norm momentum for training on `fit_split` (None: each backbone's own)."""
        rule = self.settings.bn_momentum
        if rule == "backbone":
            return None
        if rule == "paper":
            return protocol.bn_momentum(split_examples(self.experiment, fit_split), self.experiment.batch_size)
        return rule

    def training_batches(self, split: str):
        """start_step -> the augmented batches of `split` from that step on; the split's table is
        read once per trainer (tfbench.preprocessing.training_batches)."""
        from tfbench import preprocessing

        if split not in self._tables:
            self._tables[split] = self.experiment.load_table(split)
        table = self._tables[split]
        return lambda start: preprocessing.training_batches(table, self.image_size, self.experiment.batch_size,
                                                           self.experiment.seed, start_step=start)

    def score(self, learner, split: str):
        """(metric on every example of `split`, number of examples, the per-example predictions)."""
        from tfbench import metrics, preprocessing

        batches = preprocessing.pipeline(self.experiment.load(split), self.image_size, self.experiment.batch_size)
        labels, scores = learner.predict(batches)
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
                        name: str, train_steps: int, schedule_steps: Optional[int] = None,
                        continues: Optional[str] = None) -> TrialOutcome:
        """Train on `fit_split`, then score every example of `score_split` with the dataset's metric.

        While training on "train", the validation split is scored every
        `runtime.validation_interval` steps (the trial's curve); the test split never is.
        `continues` names the work folder of a shorter training of the same setting and schedule
        whose final checkpoint this one goes on from; without that checkpoint it starts from the
        initial weights, to the same result (the data stream is a function of the step).
        """
        from tfbench import classifier, training

        config = self.config(hyperparameters, train_steps, schedule_steps)
        work_dir = self.work_dir(name)
        log_dir = os.path.join(work_dir, "tensorboard")
        checkpoint_dir = self.checkpoint_dir(name)
        tag = f"{score_split}/{self.dataset_spec.metric}"
        identity = self.checkpoint_identity(hyperparameters, fit_split, schedule_steps)
        if self.chief:
            forget_stale_checkpoints(checkpoint_dir, {**identity, "train_steps": train_steps})
        continue_from = None
        if continues is not None and _continuable(self.checkpoint_dir(continues), identity, train_steps,
                                                  config.schedule_length):
            continue_from = self.checkpoint_dir(continues)
        bn_momentum = self.bn_momentum(fit_split)
        learner = self.learner(bn_momentum)
        evaluate = None
        if score_split == "val":
            evaluate = lambda model: (tag, self.score(learner, "val")[0])  # noqa: E731
        trial = "the retrain on trainval" if name == FINAL else f"trial {name}"
        try:
            _, result = training.train(
                learner, self.training_batches(fit_split), config,
                runtime=self.runtime, checkpoint_dir=checkpoint_dir, log_dir=log_dir,
                hparams=self.hparams(hyperparameters, train_steps), evaluate=evaluate,
                continue_from=continue_from)
        except interruption.Interrupted as stopped:
            raise stopped.within(f"of {trial}") from None
        details = {
            "fit_split": fit_split, "score_split": score_split, "train_steps": config.train_steps,
            "steps": result.steps, "resumed_from_step": result.resumed_from_step,
            "schedule_steps": config.schedule_length, "continued_from_step": result.continued_from_step,
            "final_loss": result.final_loss, "final_learning_rate": result.final_learning_rate,
            "l2_coefficient": config.l2_coefficient, "warmup_steps": config.warmup_steps,
            "bn_momentum": bn_momentum,
            "bn_momentum_applied": classifier.bn_momentum_applied(learner.model, bn_momentum),
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
        try:
            score, examples, answers = self.score(learner, score_split)
        except interruption.Interrupted as stopped:  # training is done and saved: only scoring is redone
            raise interruption.Interrupted(stopped.request, f"at step {result.steps} of {trial}") from None
        details["timings"]["evaluate_seconds"] = time.perf_counter() - started
        details["scored_examples"] = examples
        if score_split == "val":
            details["validation_curve"] = result.validation_curve + [[result.steps, score]]
        if self.chief:
            training.log_scalar(log_dir, tag, score, result.steps)
            training.write_hparams_end(log_dir, "ok")
        return TrialOutcome("ok", score, None, details, answers if score_split == "test" else None)

    def time_steps(self, hyperparameters: Mapping[str, float], steps: int) -> Optional[float]:
        """Training images per second per device over `steps` steps after a first, traced one, on
        the training split: nothing is saved or logged, and the trials start afresh. None if the
        steps diverged."""
        from tfbench import training

        runtime = dataclasses.replace(self.runtime, steps_per_loop=1, eval_every=0, verbose=False)
        _, result = training.train(self.learner(self.bn_momentum("train")), self.training_batches("train"),
                                   self.config(hyperparameters, steps + 1), runtime=runtime)
        if result.images_per_second is None:
            return None
        return result.images_per_second / self.strategy.num_replicas_in_sync

    def checkpoint_dir(self, name: str) -> str:
        return checkpoint_dir(self.experiment, name)

    def discard(self, name: str) -> None:
        if self.chief:
            discard_checkpoints(self.experiment, name)


# The learner of the last trial this process trained, by what its graph depends on: the next trial
# of the same network reuses it instead of building and tracing again. One at most, so a process
# that trains trial after trial holds one network whatever the mix of experiments.
_KEPT_LEARNER: Dict[tuple, Any] = {}


def release_kept_learner() -> None:
    """Free the kept learner (its network, optimizer and traced functions)."""
    for kept in _KEPT_LEARNER.values():
        kept.release()
    _KEPT_LEARNER.clear()


def checkpoint_dir(experiment: Experiment, name: str) -> str:
    """Where the trial (or retrain) `name` of `experiment` keeps its checkpoints."""
    return os.path.join(experiment.run_dir(), results.TRIALS_DIR, name, "checkpoints")


def discard_checkpoints(experiment: Experiment, name: str) -> None:
    shutil.rmtree(checkpoint_dir(experiment, name), ignore_errors=True)


def split_examples(experiment: Experiment, split: str) -> int:
    """How many examples the split holds (counted when the dataset does not say)."""
    data = experiment.load(split)
    count = int(data.cardinality())
    return count if count >= 0 else int(data.reduce(0, lambda total, _: total + 1))


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


def _continuable(checkpoint_dir: str, identity: Mapping[str, Any], train_steps: int, schedule_length: int) -> bool:
    """Whether `checkpoint_dir` holds the checkpoints of a training of `identity` (schedule and
    budget aside) on a schedule of `schedule_length` steps that stopped before `train_steps`: one
    that this training may continue."""
    identity_file = os.path.join(checkpoint_dir, CHECKPOINT_IDENTITY)
    if not os.path.exists(identity_file):
        return False
    with open(identity_file) as handle:
        saved = json.load(handle)
    steps = saved.pop("train_steps", train_steps)
    schedule = saved.pop("schedule_steps", None) or steps
    mine = {name: value for name, value in identity.items() if name != "schedule_steps"}
    return steps < train_steps and schedule == schedule_length and saved == mine


