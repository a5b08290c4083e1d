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
of rank >= 2; biases and batch-norm parameters are not decayed (classifier.kernels).

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

import numpy as np

from tfbench import fencing, files, protocol
from tfbench.classifier import kernels
from tfbench.devices import is_chief, precision_policy
from tfbench.settings import Runtime

CURVE_FILE = "validation_curve.json"  # beside the checkpoints, so a resumed run keeps its curve


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

    @property
    def l2_coefficient(self) -> float:
        """The L2 coefficient on kernels: the paper's weight decay divided by the peak learning rate."""
        return self.weight_decay / self.learning_rate


@dataclasses.dataclass
class TrainResult:
    """What a training run reports; `status` is "ok" or "diverged" (a non-finite loss stopped it).

    `validation_curve` holds [step, score] pairs from `evaluate` during training (resumed runs
    keep the pairs scored before the interruption).
    """

    status: str
    steps: int
    final_loss: Optional[float]
    resumed_from_step: int
    images_per_second: Optional[float]
    seconds: Dict[str, float]
    validation_curve: List[List[float]]
    reason: Optional[str] = None


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


def learning_rate_schedule(config: TrainConfig):
    """Linear warm-up from 0 to the peak learning rate, then cosine decay to 0 at train_steps."""
    import keras

    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if config.warmup_steps else config.learning_rate,
        decay_steps=config.train_steps - config.warmup_steps,
        warmup_target=config.learning_rate if config.warmup_steps else None,
        warmup_steps=config.warmup_steps)


def make_optimizer(config: TrainConfig, precision: str):
    """SGD with Nesterov momentum 0.9 on the cosine schedule; dynamic loss scaling for float16."""
    import keras

    optimizer = keras.optimizers.SGD(learning_rate=learning_rate_schedule(config), momentum=protocol.MOMENTUM,
                                     nesterov=True)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer



def train(model_fn: Callable[[], Any], train_batches: Callable[[int], Any], config: TrainConfig, *,
          strategy, runtime: Runtime, precision: str = "float32",
          checkpoint_dir: Optional[str] = None, log_dir: Optional[str] = None,
          hparams: Optional[Mapping[str, Any]] = None,
          evaluate: Optional[Callable[[Any], Tuple[str, float]]] = None) -> Tuple[Any, TrainResult]:
    """Train a classifier for `config.train_steps` steps; resume from `checkpoint_dir` if it holds one.

    `model_fn()` builds the classifier (logits out); it is called under the strategy scope and the
    precision policy. `train_batches(start_step)` returns a tf.data.Dataset of global batches
    (images, labels), infinite, positioned at batch `start_step`, so a resumed run sees the same data
    as an uninterrupted one. Each replica takes its slice of every global batch, and the loss is
    averaged over the global batch, so any number of replicas computes the same update as one.
    `evaluate(model) -> (tag, score)`, if given, is called every `runtime.validation_interval`
    steps before the end (scores go to TensorBoard under `tag` and into `validation_curve`);
    scoring reads the model only, so it never changes training. `hparams` are written as the run's
    TensorBoard HParams session (with its status when it ends).
    Returns (model, TrainResult); status "diverged" when the loss (with its weight-decay term) or a
    model variable became NaN or infinite: training stops there and no checkpoint of it is saved.
    """
    import tensorflow as tf

    seconds: Dict[str, float] = {}
    started = time.perf_counter()
    with strategy.scope():
        with precision_policy(precision):
            model = model_fn()
        optimizer = make_optimizer(config, precision)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoints = _Checkpoints(checkpoint_dir, strategy, model=model, optimizer=optimizer, step=step)
    seconds["build"] = time.perf_counter() - started

    started = time.perf_counter()
    checkpoints.restore_latest()
    resumed_from = int(step.numpy())
    curve = checkpoints.curve() if resumed_from else []
    seconds["restore"] = time.perf_counter() - started

    chief = is_chief(strategy)
    writer = tf.summary.create_file_writer(log_dir) if (log_dir and chief) else None
    if writer is not None and hparams is not None and resumed_from == 0:
        _write_hparams_start(writer, hparams)

    run_steps = _compiled_steps(model, optimizer, config, strategy)
    dataset = train_batches(resumed_from).map(
        lambda *batch: _with_batch_size(batch, config.batch_size))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))

    progress = None
    if runtime.verbose and chief:
        import keras

        progress = keras.utils.Progbar(config.train_steps, stateful_metrics=["loss", "lr", "img/s"])
        progress.update(resumed_from)

    interval = runtime.validation_interval if evaluate is not None else 0
    stops = [runtime.checkpoint_every, runtime.steps_per_loop] + ([interval] if interval else [])
    seconds.update(first_loop=0.0, train=0.0, checkpoint=0.0, validation=0.0)
    status, reason, last_loss, steady_images = "ok", None, None, 0
    current = resumed_from
    while current < config.train_steps:
        next_stop = min([config.train_steps] + [(current // every + 1) * every for every in stops])
        tick = time.perf_counter()
        loss_sum, done, finite = run_steps(iterator, tf.constant(next_stop - current, tf.int64))
        done, finite = int(done), bool(finite)
        elapsed = time.perf_counter() - tick
        if current == resumed_from:
            seconds["first_loop"] = elapsed
        else:
            seconds["train"] += elapsed
            steady_images += done * config.batch_size
        current += done
        if not finite:
            status, reason = "diverged", f"non-finite training loss or weights by step {current}"
            break
        step.assign(current)
        last_loss = float(loss_sum) / done
        learning_rate = float(optimizer.learning_rate)
        images_per_second = done * config.batch_size / elapsed
        if writer is not None:
            with writer.as_default(step=current):
                tf.summary.scalar("train/loss", last_loss)
                tf.summary.scalar("train/learning_rate", learning_rate)
                tf.summary.scalar("train/images_per_second", images_per_second)
        if progress is not None:
            progress.update(current, [("loss", last_loss), ("lr", learning_rate),
                                      ("img/s", images_per_second)])
        if interval and current % interval == 0 and current < config.train_steps:
            tick = time.perf_counter()
            tag, score = evaluate(model)
            curve.append([current, score])
            if writer is not None:
                with writer.as_default(step=current):
                    tf.summary.scalar(tag, score)
            seconds["validation"] += time.perf_counter() - tick
        fencing.check()  # a lost lock stops the trial here, before it saves anything
        if current % runtime.checkpoint_every == 0 or current == config.train_steps:
            tick = time.perf_counter()
            checkpoints.save(current, curve)
            seconds["checkpoint"] += time.perf_counter() - tick
    if writer is not None:
        writer.flush()
    train_seconds = seconds["train"]
    return model, TrainResult(
        status=status, steps=current, final_loss=last_loss, resumed_from_step=resumed_from,
        images_per_second=(steady_images / train_seconds) if train_seconds > 0 else None,
        seconds=seconds, validation_curve=curve, reason=reason)


def _with_batch_size(batch, batch_size: int):
    """The batch with its leading dimension fixed to the global batch size in the graph.

    The loss is averaged over `batch_size` examples, so a partial batch must fail loudly rather
    than silently down-weight a step; the static shape also lets the graph specialise to it.
    """
    import tensorflow as tf

    return tuple(tf.ensure_shape(part, [batch_size] + part.shape[1:].as_list()) for part in batch)


def _compiled_steps(model, optimizer, config: TrainConfig, strategy):
    """A tf.function running up to `steps` training steps; stops early on a non-finite loss.

    Returns (sum of the global-batch data losses, steps run, all finite): "finite" covers the loss
    with its weight-decay term at every step and every model variable at the end. The loss of each
    replica is its share of the global-batch mean, so the SUM over replicas is the global mean.
    """
    import tensorflow as tf

    decayed = kernels(model)
    l2 = config.l2_coefficient
    replicas = strategy.num_replicas_in_sync

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            losses = per_example_loss(labels, logits, config.multi_label, config.label_smoothing)
            data_loss = tf.nn.compute_average_loss(losses, global_batch_size=config.batch_size)
            loss = data_loss
            if l2 and decayed:
                squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in decayed])
                loss = loss + (0.5 * l2 / replicas) * squares
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return data_loss, loss

    @tf.function
    def run_steps(iterator, steps):
        loss_sum = tf.constant(0.0, tf.float32)
        done = tf.constant(0, tf.int64)
        finite = tf.constant(True)
        while done < steps and finite:
            images, labels = next(iterator)
            data_loss, loss = strategy.run(replica_step, args=(images, labels))
            data_loss = strategy.reduce("SUM", data_loss, axis=None)
            loss_sum += data_loss
            done += 1
            finite = tf.math.is_finite(strategy.reduce("SUM", loss, axis=None))
        # Weights or batch-norm statistics can overflow while the loss still looks finite.
        for variable in model.variables:
            finite = finite and tf.reduce_all(tf.math.is_finite(tf.cast(variable, tf.float32)))
        return loss_sum, done, finite

    return run_steps


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

    def restore_latest(self) -> None:
        import tensorflow as tf

        if self.directory is None:
            return
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is not None:
            self.checkpoint.restore(latest).assert_existing_objects_matched()

    def save(self, step: int, curve: List[List[float]]) -> None:
        if self.manager is None:
            return
        self.manager.save(checkpoint_number=step)
        if self.chief:
            files.write_json_atomic(os.path.join(self.directory, CURVE_FILE), {"curve": curve})
        else:
            shutil.rmtree(self.manager.directory, ignore_errors=True)

    def curve(self) -> List[List[float]]:
        """The validation scores saved with the checkpoint a run resumes from."""
        path = os.path.join(self.directory, CURVE_FILE) if self.directory else None
        if path is None or not os.path.exists(path):
            return []
        with open(path) as handle:
            return list(json.load(handle)["curve"])


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


# ---------------------------------------------------------------------------------------------
# Evaluation


def predict(model, batches) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, float32 logits) for every example of a finite dataset of (images, labels) batches.

    Runs on each worker's own devices outside the replicas, so every example is scored exactly once
    (the last partial batch included) and every worker gets the same numbers.
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(images):
        return tf.cast(model(images, training=False), tf.float32)

    labels, scores = [], []
    for images, batch_labels in batches:
        scores.append(forward(images).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(labels), np.concatenate(scores)

