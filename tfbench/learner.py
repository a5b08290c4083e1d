"""A classifier kept across trainings: built and traced once, reset to its initial state for each.

Why: building a network and tracing its training step cost more than the steps of a short trial
(13-100 s for EfficientNet-Lite0 on two cores), and each build and trace left memory behind for
the life of the process, about 100 MB per trial of Lite0 at 32 px: the traced step's graph stays
alive though no Python object refers to it (the model and its variables are freed), its loop and
cond bodies stay registered in the eager context, and neither `keras.backend.clear_session()` nor
unregistering the functions gives the memory back. A `Learner` pays both once: the learning rate,
its schedule and the weight decay are variables that the compiled step reads, and `reset` assigns
the initial weights (pretrained or seeded random, captured right after the build), the optimizer
state as built and the new training's numbers. What shapes the graph (network, image size, head,
dropout, batch-norm momentum, batch size, loss) is fixed per learner: another combination needs
another learner, and `release` drops the old one (docs/DESIGN.md, "Model lifetime").
"""

from __future__ import annotations

import contextlib
import gc
import time
import weakref
from typing import Any, Callable, Iterator, List, Set, Tuple

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context as eager_context

from tfbench import interruption, protocol
from tfbench.classifier import kernels
from tfbench.devices import precision_policy
from tfbench.training import TrainConfig, per_example_loss


SHARED_FUNCTIONS = "__wrapped__"  # the prefix of TensorFlow's eager single-op wrappers


class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to the peak learning rate, then cosine decay to 0 at the schedule's
    length (TrainConfig.schedule_length).

    Keras's CosineDecay with warm-up, reading its numbers from variables so that one trace of the
    step serves every training (`assign` sets them).
    """

    def __init__(self):
        self.peak = tf.Variable(0.0, trainable=False, name="peak_learning_rate")
        self.warmup_steps = tf.Variable(0.0, trainable=False, name="warmup_steps")
        self.train_steps = tf.Variable(1.0, trainable=False, name="train_steps")

    def assign(self, config: TrainConfig) -> None:
        self.peak.assign(config.learning_rate)
        self.warmup_steps.assign(config.warmup_steps)
        self.train_steps.assign(config.schedule_length)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup, total = self.warmup_steps, self.train_steps
        warming = self.peak * step / tf.maximum(warmup, 1.0)
        progress = tf.minimum(step - warmup, total - warmup) / tf.maximum(total - warmup, 1.0)
        decaying = self.peak * 0.5 * (1.0 + tf.cos(np.pi * progress))
        return tf.where(step < warmup, warming, decaying)

    def get_config(self):
        return {}


def learning_rate_schedule(config: TrainConfig) -> WarmupCosineDecay:
    schedule = WarmupCosineDecay()
    schedule.assign(config)
    return schedule


def make_optimizer(schedule, precision: str):
    """SGD with Nesterov momentum 0.9 on `schedule`; dynamic loss scaling for float16."""
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=protocol.MOMENTUM, nesterov=True)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class Learner:
    """A classifier, its optimizer and its compiled training step, under one strategy and precision.

    `model_fn()` builds the classifier (logits out); it is called once, under the strategy scope and
    the precision policy. `batch_size` (global), `multi_label` and `label_smoothing` are traced into
    the step; a TrainConfig that differs in them is refused by `reset`.
    """

    def __init__(self, model_fn: Callable[[], Any], *, strategy, batch_size: int, precision: str = "float32",
                 multi_label: bool = False, label_smoothing: float = 0.0):
        started = time.perf_counter()
        self.strategy, self.precision = strategy, precision
        self.batch_size, self.multi_label, self.label_smoothing = batch_size, multi_label, label_smoothing
        self._registered: Set[str] = set()  # names this learner's traces added to the eager context
        with strategy.scope():
            with precision_policy(precision):
                self.model = model_fn()
            self.schedule = WarmupCosineDecay()
            self.optimizer = make_optimizer(self.schedule, precision)
            self.optimizer.build(self.model.trainable_variables)
            self.l2_coefficient = tf.Variable(0.0, trainable=False, name="l2_coefficient")
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        # Read by the compiled loop before every step: a stop request (tfbench.interruption) ends
        # a long compiled call after the step in progress.
        self.stop = tf.Variable(False, trainable=False, name="stop_requested")
        # The state every training starts from: the built weights, and the optimizer as built.
        self._state = self.model.variables + self.optimizer.variables
        self._initial = [variable.numpy() for variable in self._state]
        self._run_steps = None
        self._forward = None
        self._unpaid_build_seconds = time.perf_counter() - started

    def build_seconds(self) -> float:
        """The build's time to the first training that asks (0 afterwards): trials that reuse the
        learner did not pay it."""
        seconds, self._unpaid_build_seconds = self._unpaid_build_seconds, 0.0
        return seconds

    def reset(self, config: TrainConfig) -> None:
        """Back to the state after the build, set up for training `config`: initial weights and
        batch-norm statistics, zeroed optimizer slots and iterations, the config's learning rate,
        schedule and weight decay, step 0."""
        traced = (config.batch_size, config.multi_label, config.label_smoothing)
        if traced != (self.batch_size, self.multi_label, self.label_smoothing):
            raise ValueError(f"this learner's step is traced for (batch size, multi-label, label smoothing) = "
                             f"{(self.batch_size, self.multi_label, self.label_smoothing)}, not {traced}")
        for variable, value in zip(self._state, self._initial):
            variable.assign(value)
        self.schedule.assign(config)
        self.l2_coefficient.assign(config.l2_coefficient)
        self.step.assign(0)
        self.stop.assign(False)

    def run_steps(self, iterator, steps: int) -> Tuple[Any, Any, Any, Any]:
        """Up to `steps` training steps from `iterator`, fewer once `stop` is set (sum of the data
        losses, the last step's, steps run, all finite)."""
        return self._compiled_steps()(iterator, tf.constant(steps, tf.int64))

    def trace(self, iterator) -> None:
        """Trace the training step for `iterator`'s element spec (a no-op once traced)."""
        with self._registering():
            self._compiled_steps().get_concrete_function(iterator, tf.TensorSpec([], tf.int64))

    def predict(self, batches) -> Tuple[np.ndarray, np.ndarray]:
        """(labels, float32 logits) for every example of a finite dataset of (images, labels) batches.

        Runs on each worker's own devices outside the replicas, so every example is scored exactly
        once (the last partial batch included) and every worker gets the same numbers.
        """
        if self._forward is None:
            model = weakref.ref(self.model)  # the function must not keep the model alive

            @tf.function(reduce_retracing=True)
            def forward(images):
                return tf.cast(model()(images, training=False), tf.float32)

            self._forward = forward
        labels, scores = [], []
        with self._registering():
            for images, batch_labels in batches:
                interruption.check()  # a stop request ends scoring between batches
                scores.append(self._forward(images).numpy())
                labels.append(batch_labels.numpy())
        return np.concatenate(labels), np.concatenate(scores)

    def release(self) -> None:
        """Drop the model, optimizer and traces, and unregister the functions the traces left in the
        eager context (TensorFlow removes a traced function when it is freed, but not the while-loop
        and cond bodies nested in it). The learner cannot train afterwards."""
        registered = self._registered
        for name in ("model", "optimizer", "schedule", "l2_coefficient", "step", "stop", "_state", "_initial",
                     "_run_steps", "_forward"):
            setattr(self, name, None)
        gc.collect()
        context = eager_context.context()
        for name in registered & set(context.list_function_names()):
            context.remove_function(name)
        registered.clear()

    @contextlib.contextmanager
    def _registering(self) -> Iterator[None]:
        """Note the functions that the code inside adds to the eager context, as this learner's (not
        TensorFlow's wrappers of single ops, made once per process and shared)."""
        context = eager_context.context()
        before = set(context.list_function_names())
        try:
            yield
        finally:
            self._registered |= {name for name in set(context.list_function_names()) - before
                                 if not name.startswith(SHARED_FUNCTIONS)}

    def _compiled_steps(self):
        if self._run_steps is None:
            self._run_steps = _compiled_steps(self)
        return self._run_steps


def _compiled_steps(learner: Learner):
    """A tf.function running up to `steps` training steps; stops early on a non-finite loss, or
    when the learner's `stop` variable becomes true (checked before every step).

    Returns (sum of the global-batch data losses, the last step's, steps run, all finite): "finite" covers the loss
    with its weight-decay term at every step and every model variable at the end. The loss of each
    replica is its share of the global-batch mean, so the SUM over replicas is the global mean.
    """
    model, optimizer, strategy = learner.model, learner.optimizer, learner.strategy
    decayed: List[Any] = kernels(model)
    replicas = strategy.num_replicas_in_sync
    l2, stop = learner.l2_coefficient, learner.stop

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            losses = per_example_loss(labels, logits, learner.multi_label, learner.label_smoothing)
            data_loss = tf.nn.compute_average_loss(losses, global_batch_size=learner.batch_size)
            loss = data_loss
            if decayed:
                squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in decayed])
                loss = loss + (0.5 * l2 / replicas) * squares
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return data_loss, loss

    @tf.function
    def run_steps(iterator, steps):
        loss_sum = step_loss = tf.constant(0.0, tf.float32)
        done = tf.constant(0, tf.int64)
        finite = tf.constant(True)
        while done < steps and finite and not stop:
            images, labels = next(iterator)
            data_loss, loss = strategy.run(replica_step, args=(images, labels))
            data_loss = strategy.reduce("SUM", data_loss, axis=None)
            step_loss = data_loss
            loss_sum += data_loss
            done += 1
            finite = tf.math.is_finite(strategy.reduce("SUM", loss, axis=None))
        # Weights or batch-norm statistics can overflow while the loss still looks finite. One
        # reduction, not a Python `and` per variable (autograph would make each a cond).
        weights_finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32)))
                                                 for v in model.variables]))
        return loss_sum, step_loss, done, tf.logical_and(finite, weights_finite)

    return run_steps
