"""Fine-tune and from-scratch training: one custom loop that runs under every tf.distribute strategy.

Why a custom loop and not `model.fit`: Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy
(tensorflow/tensorflow#72388), and a run must be able to span hosts. A loop of `strategy.run` steps,
`steps_per_loop` of them inside one `tf.function` call, works under the default, one-device, mirrored
and multi-worker strategies alike, so there is one code path; bench/train_bench.py measures it
against plain `model.fit`.

The recipe (Kornblith, Shlens & Le 2019): SGD with Nesterov momentum 0.9, cosine learning-rate decay
to zero with an optional linear warm-up, a new linear head on the pooled backbone features, optional
dropout before the head and label smoothing, logits and loss in float32 whatever the precision.

Weight decay convention (`weight_decay` = the paper's grid value `wd`): an L2 penalty on kernels only,
    loss += (wd / lr_0) / 2 * sum(||k||^2 for every kernel k),
where lr_0 is the peak learning rate of the trial. Its gradient (wd / lr_0) * k enters the Nesterov
momentum update like any loss gradient, so the per-step shrink it causes (before momentum) is
lr_t * (wd / lr_0) * k = wd * (lr_t / lr_0) * k: `wd` itself at the peak of the schedule, whatever
the learning rate. That is the paper's "weight decay divided by the learning rate", which keeps the
weight-decay grid meaningful at every learning rate of the grid. Kernels are the trainable variables
of rank >= 2 (convolution, depthwise and dense kernels); biases and batch-norm scales and offsets
(rank 1) are not decayed, and batch-norm moving statistics are not trainable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from tfbench.experiment import InvalidSettingError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
MOMENTUM = 0.9
WEIGHT_DECAY_CONVENTION = (
    "L2 penalty (weight_decay / learning_rate) / 2 * sum ||kernel||^2 on trainable variables of "
    "rank >= 2 only (no biases, no batch-norm parameters); its gradient goes through the Nesterov "
    "momentum, so the per-step shrink before momentum is lr_t * (weight_decay / learning_rate) * "
    "kernel, i.e. weight_decay at the peak learning rate"
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation settings of one training run (one trial of a search, or the final retrain)."""

    learning_rate: float
    weight_decay: float
    train_steps: int
    batch_size: int
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    multi_label: bool = False
    steps_per_loop: int = 50
    checkpoint_every: int = 500

    def __post_init__(self):
        checks = (
            (self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0 (0 = none), got {self.weight_decay}"),
            (self.train_steps >= 1, f"train_steps must be at least 1, got {self.train_steps}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (0 <= self.warmup_steps < self.train_steps,
             f"warmup_steps must be in [0, train_steps={self.train_steps}), got {self.warmup_steps}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.steps_per_loop >= 1, f"steps_per_loop must be at least 1, got {self.steps_per_loop}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be at least 1, got {self.checkpoint_every}"),
        )
        for ok, message in checks:
            if not ok:
                raise InvalidSettingError(message)

    @property
    def l2_coefficient(self) -> float:
        """The L2 coefficient on kernels: the paper's weight decay divided by the peak learning rate."""
        return self.weight_decay / self.learning_rate


@dataclasses.dataclass
class TrainResult:
    """What a training run reports; `status` is "ok" or "diverged" (a non-finite loss stopped it)."""

    status: str
    steps: int
    final_loss: Optional[float]
    resumed_from_step: int
    images_per_second: Optional[float]
    seconds: Dict[str, float]
    reason: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Devices: strategy and precision


def make_strategy(name: str):
    """The tf.distribute strategy called `name`.

    auto: MirroredStrategy over every local GPU when there are two or more, otherwise one device
    (the GPU if there is one, else the CPU). mirrored: MirroredStrategy over every local GPU, or over
    every logical CPU device when there is no GPU (a correctness check; slow on CPU).
    multi_worker: MultiWorkerMirroredStrategy configured from TF_CONFIG, so a run can span hosts;
    create it before any other TensorFlow work in the process.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise InvalidSettingError(f"unknown strategy {name!r}; valid choices: {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise InvalidSettingError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable (cluster and task); "
                "valid choices without it: auto, one_device, mirrored")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "mirrored" or (name == "auto" and len(gpus) >= 2):
        devices = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")


def resolve_precision(precision: str) -> str:
    """"auto" -> mixed_float16 on GPU, float32 on CPU (float16 is ~2x slower there); others unchanged."""
    import tensorflow as tf

    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    if precision not in PRECISIONS:
        raise InvalidSettingError(
            f"unknown precision {precision!r}; valid choices: auto, {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build layers under a Keras dtype policy, then restore the previous global policy."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def is_chief(strategy) -> bool:
    """True on the one worker that writes records, logs and the kept checkpoint."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


# ---------------------------------------------------------------------------------------------
# Model, loss, optimizer


def build_classifier(backbone, num_classes: int, dropout: float = 0.0, bn_momentum: Optional[float] = None):
    """The backbone with a new linear head: images [0, 255] -> float32 logits [batch, num_classes].

    The head (and its dropout) runs in float32 so logits and loss keep full precision under mixed
    precision. `bn_momentum`, when given, replaces the momentum of every Keras BatchNormalization
    layer (a SavedModel backbone keeps its own, since its batch norm is compiled into the graph).
    """
    import keras

    if not 0 <= dropout < 1:
        raise InvalidSettingError(f"dropout must be in [0, 1), got {dropout}")
    if bn_momentum is not None and not 0 <= bn_momentum < 1:
        raise InvalidSettingError(f"bn_momentum must be in [0, 1), got {bn_momentum}")
    for layer in batch_norm_layers(backbone):
        if bn_momentum is not None:
            layer.momentum = bn_momentum
        use_fused_kernel(layer)
    images = keras.Input(shape=backbone.input_shape[1:], dtype="float32", name="images")
    features = keras.layers.Activation("linear", dtype="float32", name="features_float32")(backbone(images))
    if dropout:
        features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(features)
    return keras.Model(images, logits, name="classifier")


def batch_norm_layers(model) -> List[Any]:
    """Every Keras BatchNormalization layer in `model`, nested models included."""
    import keras

    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        found.extend(batch_norm_layers(layer))
    return found


def use_fused_kernel(layer) -> None:
    """Make a Keras BatchNormalization layer compute with TensorFlow's fused batch-norm kernel.

    Keras 3 normalises with separate moment, normalisation and update ops; the single fused
    kernel (and its fused gradient) makes a MobileNetV2 training step ~1.8x faster on CPU
    (bench/train_bench.py). Results are the same: the moving statistics follow Keras's update
    rule (new = momentum * old + (1 - momentum) * batch, with the biased batch variance). Inputs the
    fused kernel cannot take (not 4-D channels-last, a mask, a symbolic `training`, renorm,
    synchronized) go through the layer's own implementation.
    """
    if layer.renorm or layer.synchronized or getattr(layer, "_keras_call", None) is not None:
        return
    layer._keras_call = layer.call
    layer.call = functools.partial(_fused_batch_norm_call, layer)


def _fused_batch_norm_call(layer, inputs, training=None, mask=None):
    import tensorflow as tf

    if (mask is not None or inputs.shape.rank != 4 or layer.axis not in (3, -1)
            or not isinstance(training, (bool, type(None)))):
        return layer._keras_call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels], tf.float32)
    offset = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels], tf.float32)
    if inputs.dtype not in (tf.float16, tf.bfloat16, tf.float32):
        inputs = tf.cast(inputs, tf.float32)
    if training and layer.trainable:
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=layer.epsilon, is_training=True)[:3]
        # The kernel returns the unbiased (Bessel-corrected) variance; Keras tracks the biased one.
        count = tf.cast(tf.size(inputs) // channels, tf.float32)
        variance = variance * (count - 1) / tf.maximum(count, 2.0)
        momentum = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1 - momentum))
        layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1 - momentum))
    else:
        outputs = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, mean=tf.cast(layer.moving_mean, tf.float32),
            variance=tf.cast(layer.moving_variance, tf.float32), epsilon=layer.epsilon,
            is_training=False)[0]
    return tf.cast(outputs, layer.compute_dtype)


def kernels(model) -> List[Any]:
    """The variables weight decay applies to: trainable and of rank >= 2 (see the module docstring)."""
    return [variable for variable in model.trainable_variables if len(variable.shape) >= 2]


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

    optimizer = keras.optimizers.SGD(learning_rate=learning_rate_schedule(config), momentum=MOMENTUM,
                                     nesterov=True)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


# ---------------------------------------------------------------------------------------------
# The training loop


def train(model_fn: Callable[[], Any], train_batches: Callable[[int], Any], config: TrainConfig, *,
          strategy, precision: str = "float32", checkpoint_dir: Optional[str] = None,
          log_dir: Optional[str] = None, hparams: Optional[Mapping[str, Any]] = None,
          verbose: bool = True) -> Tuple[Any, TrainResult]:
    """Train a classifier for `config.train_steps` steps; resume from `checkpoint_dir` if it holds one.

    `model_fn()` builds the classifier (logits out); it is called under the strategy scope and the
    precision policy. `train_batches(start_step)` returns a tf.data.Dataset of global batches
    (images, labels), infinite, positioned at batch `start_step`, so a resumed run sees the same data
    as an uninterrupted one. Each replica takes its slice of every global batch, and the loss is
    averaged over the global batch, so any number of replicas computes the same update as one.
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
    seconds["restore"] = time.perf_counter() - started

    chief = is_chief(strategy)
    writer = tf.summary.create_file_writer(log_dir) if (log_dir and chief) else None
    if writer is not None and hparams is not None and resumed_from == 0:
        _write_hparams(writer, hparams)

    run_steps = _compiled_steps(model, optimizer, config, strategy)
    dataset = train_batches(resumed_from).map(
        lambda *batch: _with_batch_size(batch, config.batch_size))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))

    progress = None
    if verbose and chief:
        import keras

        progress = keras.utils.Progbar(config.train_steps, stateful_metrics=["loss", "lr", "img/s"])
        progress.update(resumed_from)

    seconds.update(first_loop=0.0, train=0.0, checkpoint=0.0)
    status, reason, last_loss, steady_images = "ok", None, None, 0
    current = resumed_from
    while current < config.train_steps:
        next_stop = min(config.train_steps, current + config.steps_per_loop,
                        (current // config.checkpoint_every + 1) * config.checkpoint_every)
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
        if current % config.checkpoint_every == 0 or current == config.train_steps:
            tick = time.perf_counter()
            checkpoints.save(current)
            seconds["checkpoint"] += time.perf_counter() - tick
    if writer is not None:
        writer.flush()
    train_seconds = seconds["train"]
    return model, TrainResult(
        status=status, steps=current, final_loss=last_loss, resumed_from_step=resumed_from,
        images_per_second=(steady_images / train_seconds) if train_seconds > 0 else None,
        seconds=seconds, reason=reason)


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

    def save(self, step: int) -> None:
        if self.manager is None:
            return
        self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)


def _write_hparams(writer, hparams: Mapping[str, Any]) -> None:
    from tensorboard.plugins.hparams import api as hp

    with writer.as_default():
        hp.hparams(dict(hparams))


def write_hparams_config(log_dir: str, hparam_values: Mapping[str, List[Any]], metrics: List[str]) -> None:
    """The HParams dashboard's experiment: which hyperparameters vary and which metrics to compare."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    with tf.summary.create_file_writer(log_dir).as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name, hp.Discrete(sorted(set(values))))
                     for name, values in hparam_values.items()],
            metrics=[hp.Metric(name) for name in metrics])


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


# ---------------------------------------------------------------------------------------------
# The fine-tune / scratch regimes: one experiment's trials and final retrain

# Written next to a trial's checkpoints: what they belong to, so that a rerun under other settings
# starts afresh instead of resuming someone else's training.
CHECKPOINT_IDENTITY = "training_run.json"

# Settings of a fine-tune or scratch experiment (Experiment.settings) and their defaults.
DEFAULT_SETTINGS = {
    "search": "small",
    "learning_rate": None,
    "weight_decay": None,
    "learning_rates": None,
    "weight_decays": None,
    "train_steps": 1000,
    "warmup_steps": 0,
    "label_smoothing": 0.0,
    "dropout": 0.0,
    "bn_momentum": None,
    "strategy": "auto",
    "checkpoint_every": 500,
}


class RegimeTrainer:
    """Trains and scores hyperparameter settings of one fine-tune or scratch experiment.

    Fine-tune starts from the backbone's ImageNet weights, scratch from a random initialisation
    (both seeded by the experiment seed, identical for every trial). Training reads the split
    through the Inception-style crop-and-flip pipeline at the backbone's native size (or the
    experiment's image_size), deterministic so that a resumed trial sees the same batches;
    scoring reads every example of the other split, whole images resized. Checkpoints and
    TensorBoard logs live in <run dir>/trials/<name>/.
    """

    def __init__(self, experiment, strategy=None, verbose: bool = True):
        from tfbench import backbones, datasets

        unknown = sorted(set(experiment.settings) - set(DEFAULT_SETTINGS))
        if unknown:
            raise InvalidSettingError(f"unknown training settings {unknown}; valid: {', '.join(DEFAULT_SETTINGS)}")
        self.experiment = experiment
        self.settings = {**DEFAULT_SETTINGS, **experiment.settings}
        self.strategy = strategy if strategy is not None else make_strategy(self.settings["strategy"])
        self.precision = resolve_precision(experiment.precision)
        self.dataset_spec = datasets.spec(experiment.dataset)
        self.image_size = experiment.image_size or backbones.spec(experiment.model).image_size
        self.chief = is_chief(self.strategy)
        self.verbose = verbose

    def log_dir(self) -> str:
        return os.path.join(self.experiment.run_dir(), "trials")

    def work_dir(self, name: str) -> str:
        return os.path.join(self.log_dir(), name)

    def config(self, hyperparameters: Mapping[str, float]) -> TrainConfig:
        settings = self.settings
        return TrainConfig(
            learning_rate=hyperparameters["learning_rate"], weight_decay=hyperparameters["weight_decay"],
            train_steps=settings["train_steps"], batch_size=self.experiment.batch_size,
            warmup_steps=settings["warmup_steps"], label_smoothing=settings["label_smoothing"],
            multi_label=self.dataset_spec.multi_label,
            checkpoint_every=settings["checkpoint_every"])

    def build_model(self):
        import keras

        from tfbench import backbones

        keras.utils.set_random_seed(self.experiment.seed)
        backbone = backbones.build(self.experiment.model, pretrained=self.experiment.regime == "finetune",
                                   image_size=self.image_size)
        return build_classifier(backbone, self.dataset_spec.num_classes, self.settings["dropout"],
                                self.settings["bn_momentum"])

    def batches(self, split: str, training: bool):
        from tfbench import datasets, preprocessing

        examples = datasets.load(self.experiment.dataset, split, self.experiment.data_dir)
        return preprocessing.pipeline(examples, self.image_size, self.experiment.batch_size,
                                      training=training, seed=self.experiment.seed,
                                      deterministic=training, repeat=training)

    def train_and_score(self, hyperparameters: Mapping[str, float], fit_split: str, score_split: str,
                        name: str):
        """Train on `fit_split`, then score every example of `score_split` with the dataset's metric."""
        from tfbench import metrics, search

        config = self.config(hyperparameters)
        work_dir = self.work_dir(name)
        log_dir = os.path.join(work_dir, "tensorboard")
        checkpoint_dir = os.path.join(work_dir, "checkpoints")
        if self.chief:
            forget_stale_checkpoints(checkpoint_dir, {
                "experiment": search.trial_experiment(self.experiment).identity(),
                "hyperparameters": dict(hyperparameters), "fit_split": fit_split})
        model, result = train(
            self.build_model, lambda start: self.batches(fit_split, training=True).skip(start), config,
            strategy=self.strategy, precision=self.precision, checkpoint_dir=checkpoint_dir, log_dir=log_dir,
            hparams=None if name == "final" else dict(hyperparameters), verbose=self.verbose)
        details = {
            "fit_split": fit_split, "score_split": score_split, "train_steps": config.train_steps,
            "steps": result.steps, "resumed_from_step": result.resumed_from_step,
            "final_loss": result.final_loss, "l2_coefficient": config.l2_coefficient,
            "images_per_second": result.images_per_second, "precision": self.precision,
            "strategy": self.settings["strategy"], "strategy_class": type(self.strategy).__name__,
            "replicas": self.strategy.num_replicas_in_sync,
            "timings": {f"{phase}_seconds": value for phase, value in result.seconds.items()},
        }
        if result.status != "ok":
            return search.TrialOutcome(result.status, None, result.reason, details)
        started = time.perf_counter()
        labels, scores = predict(model, self.batches(score_split, training=False))
        score = metrics.score(self.dataset_spec.metric, labels, scores)
        details["timings"]["evaluate_seconds"] = time.perf_counter() - started
        details["scored_examples"] = int(len(labels))
        if self.chief:
            log_scalar(log_dir, f"{score_split}/{self.dataset_spec.metric}", score, result.steps)
        return search.TrialOutcome("ok", score, None, details)

    def discard(self, name: str) -> None:
        if self.chief:
            shutil.rmtree(os.path.join(self.work_dir(name), "checkpoints"), ignore_errors=True)

    def conventions(self) -> Dict[str, str]:
        return {
            "weight_decay": WEIGHT_DECAY_CONVENTION,
            "optimizer": f"SGD, Nesterov momentum {MOMENTUM}, batch {self.experiment.batch_size}",
            "learning_rate": "linear warm-up over warmup_steps (if any), then cosine decay to 0 at train_steps",
            "augmentation": "Inception-style random-resized crop (8-100% area, 3/4-4/3 aspect) and random "
                            f"left-right flip at {self.image_size} px; evaluation: whole image resized",
            "initialisation": "ImageNet weights" if self.experiment.regime == "finetune" else "random",
            "selection": "best validation score on val (trained on train); retrained on trainval; test "
                         "scored once, after the choice",
        }


def forget_stale_checkpoints(checkpoint_dir: str, identity: Mapping[str, Any]) -> None:
    """Keep `checkpoint_dir` only if it belongs to the training run `identity`; else empty it.

    A rerun under other settings (say more train_steps) must start afresh, not resume a checkpoint
    of another schedule.
    """
    from tfbench import results

    identity_file = os.path.join(checkpoint_dir, CHECKPOINT_IDENTITY)
    if os.path.exists(identity_file):
        with open(identity_file) as handle:
            if json.load(handle) == identity:
                return
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    results.write_json_atomic(identity_file, identity)


def run_regime(experiment, strategy=None, verbose: bool = True) -> Dict[str, Any]:
    """The fine-tune or scratch protocol for one experiment (see tfbench.search.run_protocol)."""
    from tfbench import search

    trainer = RegimeTrainer(experiment, strategy=strategy, verbose=verbose)
    settings = trainer.settings
    trials = search.grid(settings["search"], experiment.regime, settings["learning_rate"],
                         settings["weight_decay"], settings["learning_rates"], settings["weight_decays"])
    log = print if trainer.chief else (lambda message: None)
    log(f"TensorBoard logs: {trainer.log_dir()}  (tensorboard --logdir {trainer.log_dir()})")
    log(f"{len(trials)} trials, {settings['train_steps']} steps each; precision {trainer.precision}, "
        f"strategy {settings['strategy']} ({trainer.strategy.num_replicas_in_sync} replicas)")
    if trainer.chief:
        write_hparams_config(trainer.log_dir(), {
            "learning_rate": [trial.learning_rate for trial in trials],
            "weight_decay": [trial.weight_decay for trial in trials]},
            metrics=[f"val/{trainer.dataset_spec.metric}"])
    record = search.run_protocol(experiment, trials, trainer, log=log, write=trainer.chief)
    record["conventions"] = trainer.conventions()
    record["tensorboard_dir"] = trainer.log_dir()
    return record
