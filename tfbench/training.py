"""The training loop: one custom loop that runs under every tf.distribute strategy.

Why a custom loop and not `model.fit`: Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy
(tensorflow/tensorflow#72388), and a run must be able to span hosts. A loop of `strategy.run` steps,
`steps_per_loop` of them inside one `tf.function` call, works under the default, one-device, mirrored
and multi-worker strategies alike, so there is one code path; bench/train_bench.py measures it
against plain `model.fit`.

The recipe (tfbench.protocol): SGD with Nesterov momentum, cosine learning-rate decay to zero with
an optional linear warm-up, logits and loss in float32 whatever the precision, and the paper's
weight-decay convention (protocol.WEIGHT_DECAY_CONVENTION): an L2 penalty of
(weight_decay / learning_rate) / 2 * sum ||k||^2 on kernels only, i.e. a per-step shrink of
`weight_decay` at the peak learning rate whatever that rate is. Kernels are the trainable variables
of rank >= 2; biases and batch-norm parameters are not decayed (classifier.kernels). The network,
optimizer, schedule and compiled step are a tfbench.learner.Learner, which outlives one training.

This module knows nothing of experiments, searches, records or datasets: it trains what it is
given, checkpoints, resumes, logs to TensorBoard and scores on request.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from tfbench import fencing, files, interruption
from tfbench.devices import is_chief
from tfbench.progress import Progress
from tfbench.settings import Runtime

# Beside the checkpoints, so a resumed run keeps its validation curve and its last step's loss.
PROGRESS_FILE = "validation_curve.json"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation of one training run (a trial of a search, or the final retrain).

    Built from validated settings (tfbench.settings.TrainingSettings) and the experiment's batch
    size; `weight_decay` follows protocol.WEIGHT_DECAY_CONVENTION.
    """

    learning_rate: float
    weight_decay: float
    train_steps: int
    batch_size: int
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    multi_label: bool = False
    schedule_steps: Optional[int] = None  # the cosine schedule's length when longer than train_steps

    @property
    def schedule_length(self) -> int:
        """The step at which the learning rate reaches zero: train_steps unless a longer schedule
        is stopped early (continuing halving's rungs)."""
        return self.schedule_steps or self.train_steps

    @property
    def l2_coefficient(self) -> float:
        """The L2 coefficient on kernels: the paper's weight decay divided by the peak learning rate."""
        return self.weight_decay / self.learning_rate


@dataclasses.dataclass
class TrainResult:
    """What a training run reports; `status` is "ok" or "diverged" (a non-finite loss stopped it).

    `final_loss` is the data loss of the last step (the same however the run was split into
    compiled calls, interrupted or resumed).

    `validation_curve` holds [step, score] pairs from `evaluate` during training (resumed runs
    keep the pairs scored before the interruption).

    `continued_from_step` is the step of another training's checkpoint this one started from
    (`continue_from`), 0 when it started from the initial weights: steps - continued_from_step were
    trained here.
    """

    status: str
    steps: int
    final_loss: Optional[float]
    resumed_from_step: int
    images_per_second: Optional[float]
    seconds: Dict[str, float]
    validation_curve: List[List[float]]
    reason: Optional[str] = None
    continued_from_step: int = 0
    final_learning_rate: Optional[float] = None  # the schedule's value at the last step reached


def per_example_loss(labels, logits, multi_label: bool, label_smoothing: float):
    """Float32 loss per example: softmax cross-entropy, or, for multi-label datasets, the mean over
    classes of sigmoid cross-entropy where "difficult" labels (-1) count for nothing."""
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    if multi_label:
        labels = tf.cast(labels, tf.float32)
        known = tf.cast(labels >= 0, tf.float32)
        targets = tf.maximum(labels, 0.0) * (1 - label_smoothing) + 0.5 * label_smoothing
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
        return tf.reduce_sum(losses * known, axis=-1) / tf.cast(tf.shape(logits)[-1], tf.float32)
    num_classes = tf.shape(logits)[-1]
    targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
    targets = targets * (1 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32)
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def train(learner, train_batches: Callable[[int], Any], config: TrainConfig, *, runtime: Runtime,
          checkpoint_dir: Optional[str] = None, log_dir: Optional[str] = None,
          hparams: Optional[Mapping[str, Any]] = None,
          evaluate: Optional[Callable[[Any], Tuple[str, float]]] = None,
          continue_from: Optional[str] = None) -> Tuple[Any, TrainResult]:
    """Train a classifier for `config.train_steps` steps; resume from `checkpoint_dir` if it holds one,
    else continue from the checkpoint in `continue_from` if given and there is one (another training
    of the same setting that stopped earlier on the same schedule), else start from step 0.

    `learner` (tfbench.learner.Learner) holds the classifier, its optimizer and compiled step; it is
    reset to its initial state first, so a learner kept from an earlier training gives the same result
    as a new one. `train_batches(start_step)` returns a tf.data.Dataset of global batches
    (images, labels), infinite, positioned at batch `start_step`, so a resumed run sees the same data
    as an uninterrupted one. Each replica takes its slice of every global batch, and the loss is
    averaged over the global batch, so any number of replicas computes the same update as one.
    `evaluate(model) -> (tag, score)`, if given, is called every `runtime.validation_interval`
    steps before the end (scores go to TensorBoard under `tag` and into `validation_curve`);
    scoring reads the model only, so it never changes training. `hparams` are written as the run's
    TensorBoard HParams session (with its status when it ends).
    Returns (model, TrainResult); status "diverged" when the loss (with its weight-decay term) or a
    model variable became NaN or infinite: training stops there and no checkpoint of it is saved.
    A stop request (tfbench.interruption) ends training after the step in progress: the checkpoint
    of that step is saved (when there is a `checkpoint_dir`), then Interrupted is raised.
    """
    import tensorflow as tf

    strategy, model, optimizer, step = learner.strategy, learner.model, learner.optimizer, learner.step
    seconds: Dict[str, float] = {"build": learner.build_seconds()}
    learner.reset(config)
    checkpoints = _Checkpoints(checkpoint_dir, strategy, model=model, optimizer=optimizer, step=step,
                               random_state=_random_state(model))

    started = time.perf_counter()
    source = checkpoints.restore_latest(continue_from)
    resumed_from = int(step.numpy())
    curve, last_loss, continued_from = _progress(source) if resumed_from else ([], None, 0)
    if source is not None and source == continue_from:
        continued_from = resumed_from
    seconds["restore"] = time.perf_counter() - started

    chief = is_chief(strategy)
    writer = tf.summary.create_file_writer(log_dir) if (log_dir and chief) else None
    if writer is not None and hparams is not None and resumed_from == 0:
        _write_hparams_start(writer, hparams)

    dataset = train_batches(resumed_from).map(
        lambda *batch: _with_batch_size(batch, config.batch_size))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
    started = time.perf_counter()
    learner.trace(iterator)
    seconds["trace"] = time.perf_counter() - started

    progress = Progress("training", config.train_steps, "steps", enabled=runtime.verbose and chief,
                        start=resumed_from)

    interval = runtime.validation_interval if evaluate is not None else 0
    stops = [runtime.checkpoint_every, runtime.steps_per_loop] + ([interval] if interval else [])
    seconds.update(first_step=0.0, train=0.0, checkpoint=0.0, validation=0.0)
    status, reason, steady_steps = "ok", None, 0
    current = resumed_from

    def stopped_at(request: interruption.Request) -> interruption.Interrupted:
        fencing.check()  # a lost owner saves nothing, not even its stop's checkpoint
        checkpoints.save(current, curve, last_loss, continued_from)
        if writer is not None:
            writer.flush()
        return interruption.Interrupted(request, f"at step {current}")

    def validate_when_due() -> None:
        """Score validation at `current` if it is due and not scored yet (a run stopped while
        scoring resumes with that scoring)."""
        if not (interval and current % interval == 0 and 0 < current < config.train_steps) or (
                curve and curve[-1][0] >= current):
            return
        tick = time.perf_counter()
        try:
            tag, score = evaluate(model)  # stops between batches when asked to
        except interruption.Interrupted as stopped:
            raise stopped_at(stopped.request) from None
        curve.append([current, score])
        if writer is not None:
            with writer.as_default(step=current):
                tf.summary.scalar(tag, score)
        seconds["validation"] += time.perf_counter() - tick

    with interruption.on_request(lambda: learner.stop.assign(True)):
        validate_when_due()
        while current < config.train_steps:
            if interruption.requested() is not None:
                raise stopped_at(interruption.requested())
            # The first step alone: its time is the one-time cost of running a new trace.
            next_stop = current + 1 if current == resumed_from else min(
                [config.train_steps] + [(current // every + 1) * every for every in stops])
            tick = time.perf_counter()
            loss_sum, step_loss, done, finite = learner.run_steps(iterator, next_stop - current)
            done, finite = int(done), bool(finite)
            if not done:  # the stop came before the first step of this call
                continue
            elapsed = time.perf_counter() - tick
            if current == resumed_from:
                seconds["first_step"] = elapsed
            else:
                seconds["train"] += elapsed
                steady_steps += done
            current += done
            if not finite:
                status, reason = "diverged", f"non-finite training loss or weights by step {current}"
                break
            step.assign(current)
            mean_loss, last_loss = float(loss_sum) / done, float(step_loss)
            learning_rate = float(optimizer.learning_rate)
            images_per_second = done * config.batch_size / elapsed
            if writer is not None:
                with writer.as_default(step=current):
                    tf.summary.scalar("train/loss", mean_loss)
                    tf.summary.scalar("train/learning_rate", learning_rate)
                    tf.summary.scalar("train/images_per_second", images_per_second)
            progress.update(current, loss=mean_loss, lr=learning_rate, images_per_second=images_per_second)
            if interruption.requested() is not None:
                raise stopped_at(interruption.requested())
            validate_when_due()
            fencing.check()  # a lost lock stops the trial here, before it saves anything
            if current % runtime.checkpoint_every == 0 or current == config.train_steps:
                tick = time.perf_counter()
                checkpoints.save(current, curve, last_loss, continued_from)
                seconds["checkpoint"] += time.perf_counter() - tick
    progress.close()
    if writer is not None:
        writer.flush()
    train_seconds = seconds["train"]
    if steady_steps:
        seconds["steady_step"] = train_seconds / steady_steps
    return model, TrainResult(
        status=status, steps=current, final_loss=last_loss, resumed_from_step=resumed_from,
        images_per_second=(steady_steps * config.batch_size / train_seconds) if train_seconds > 0 else None,
        seconds=seconds, validation_curve=curve, reason=reason, continued_from_step=continued_from,
        final_learning_rate=float(optimizer.learning_rate))


def _random_state(model) -> List[Any]:
    """The model's variables that are not weights: the random generators' states (dropout's), which
    a resumed training needs to draw what an uninterrupted one draws."""
    weights = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def _with_batch_size(batch, batch_size: int):
    """The batch with its leading dimension fixed to the global batch size in the graph.

    The loss is averaged over `batch_size` examples, so a partial batch must fail loudly rather
    than silently down-weight a step; the static shape also lets the graph specialise to it.
    """
    import tensorflow as tf

    return tuple(tf.ensure_shape(part, [batch_size] + part.shape[1:].as_list()) for part in batch)


class _Checkpoints:
    """Model, optimizer and step counter, saved every few steps and restored on a rerun.

    Under MultiWorkerMirroredStrategy every worker must save; only the chief's copy (in
    `directory`) is kept, the others write to a scratch folder and delete it. Workers resume from
    the chief's checkpoint, so `directory` must be on storage they share.
    """

    def __init__(self, directory: Optional[str], strategy, **objects):
        import tensorflow as tf

        self.directory = directory
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = None
        if directory is None:
            return
        self.chief = is_chief(strategy)
        resolver = getattr(strategy, "cluster_resolver", None)
        write_dir = directory if self.chief else os.path.join(
            directory, f".worker-{resolver.task_type}-{resolver.task_id}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_dir, max_to_keep=1)

    def restore_latest(self, fallback: Optional[str] = None) -> Optional[str]:
        """Restore the latest checkpoint of `directory`, else of `fallback`; the folder restored
        from (None: nothing to restore, the state stays the initial one)."""
        import tensorflow as tf

        for directory in (self.directory, fallback):
            latest = directory and tf.train.latest_checkpoint(directory)
            if latest:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
                return directory
        return None

    def save(self, step: int, curve: List[List[float]], last_loss: Optional[float],
             continued_from: int) -> None:
        if self.manager is None:
            return
        # Progress first: killed between the two writes, a run resumes from the previous checkpoint
        # and retrains steps whose (identical) scores it already holds, instead of losing them.
        if self.chief:
            files.write_json_atomic(os.path.join(self.directory, PROGRESS_FILE),
                                    {"curve": curve, "last_loss": last_loss, "continued_from": continued_from})
        self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)



def _progress(directory: Optional[str]) -> Tuple[List[List[float]], Optional[float], int]:
    """The validation scores, the last step's loss and the step continued from, saved with the
    checkpoint in `directory` that a run resumes from."""
    path = os.path.join(directory, PROGRESS_FILE) if directory else None
    if path is None or not os.path.exists(path):
        return [], None, 0
    with open(path) as handle:
        saved = json.load(handle)
    return list(saved["curve"]), saved.get("last_loss"), saved.get("continued_from", 0)


def _write_hparams_start(writer, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams import api as hp

    with writer.as_default():
        hp.hparams(dict(hparams))


def write_hparams_end(log_dir: str, status: str) -> None:
    """Close a run's HParams session with its status, so TensorBoard tells finished, diverged and
    interrupted runs apart."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api_pb2, summary

    code = api_pb2.STATUS_SUCCESS if status == "ok" else api_pb2.STATUS_FAILURE
    with tf.summary.create_file_writer(log_dir).as_default():
        tf.summary.experimental.write_raw_pb(summary.session_end_pb(code).SerializeToString(), step=0)


def log_scalar(log_dir: str, name: str, value: float, step: int) -> None:
    """One scalar into a run's TensorBoard folder (e.g. the validation metric after training)."""
    import tensorflow as tf

    with tf.summary.create_file_writer(log_dir).as_default(step=step):
        tf.summary.scalar(name, value)
