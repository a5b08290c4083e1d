"""Training throughput of tfbench against plain Keras, the forward-pass bound, and the input pipeline;
with --trials, what trial after trial in one process costs.

    python bench/train_bench.py --model=mobilenet_v2 --image_size=128 --batch_size=32 --steps=20
    python bench/train_bench.py --trials=10 --model=efficientnet_lite0 --image_size=32 --batch_size=16

Three ratios, each against a baseline measured in the same run and round (median over --rounds):
  1. tfbench training step / plain keras.applications model trained with model.fit, both on the
     same in-memory batches (goal >= 1.0);
  2. tfbench training / forward-pass bound = training img/s / (inference img/s / 3): a training
     step costs about three forward passes, so 1.0 is the bound (goal >= 0.8); the breakdown says
     where the rest goes (batch-norm statistics in training mode, the backward pass, the update);
  3. end-to-end with the real input pipeline (JPEG decode, Inception crop, flip) / the same step on
     in-memory tensors (goal >= 0.9: the input pipeline must not be the bottleneck).

--trials=N instead trains N fine-tune trials of --trial_steps steps on fashion_mnist_mini in this
process, each through its own TrialTrainer as a study's tasks run them, and prints per trial the
resident memory and the seconds its record gives for build, trace, first step, steady step and
evaluation. Two figures sum it up: memory growth per trial after the second (goal <= 10 MB) and
the fixed cost (build + trace + first step) of trials 2..N as a share of trial 1's (goal <= 25%).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from tfbench import backbones, classifier, devices, learner, preprocessing, training, tuning  # noqa: E402
from tfbench.experiment import Experiment  # noqa: E402
from tfbench.regimes import trained  # noqa: E402
from tfbench.settings import Runtime, TrainingSettings  # noqa: E402

NUM_CLASSES = 10
JPEG_SIZE = 256  # stored images are larger than the training size, as in real datasets


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2", help="a registered backbone name")
    parser.add_argument("--keras_application", default="MobileNetV2",
                        help="the keras.applications class of the same network, for the model.fit baseline")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of measurements (median ratio reported)")
    parser.add_argument("--trials", type=int, default=0, help="measure N trials in one process instead")
    parser.add_argument("--trial_steps", type=int, default=2, help="training steps of each trial")
    return parser.parse_args()


def in_memory_batches(args):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (args.batch_size * 4, args.image_size, args.image_size, 3)).astype("float32")
    labels = rng.randint(0, NUM_CLASSES, len(images)).astype("int64")
    return images, labels


def synthetic_stream(images, labels, batch_size):
    return lambda start: (tf.data.Dataset.from_tensor_slices((images, labels)).cache().repeat()
                          .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def jpeg_stream(args):
    """The real input path: JPEG bytes -> decode -> Inception crop + flip -> batches."""
    from tfbench.datasets.tables import ExampleTable

    rng = np.random.RandomState(1)
    smooth = tf.image.resize(rng.uniform(0, 255, (64, 16, 16, 3)).astype("float32"), [JPEG_SIZE, JPEG_SIZE])
    encoded = np.array([tf.io.encode_jpeg(tf.cast(image, tf.uint8)).numpy() for image in smooth], dtype=object)
    labels = rng.randint(0, NUM_CLASSES, len(encoded)).astype("int64")
    table = ExampleTable({"image": encoded, "label": labels, "id": np.arange(len(labels)).astype(str)},
                         lambda row: tf.io.decode_jpeg(row["image"], channels=3))
    return lambda start: preprocessing.training_batches(table, args.image_size, args.batch_size, seed=0,
                                                        start_step=start)


def tfbench_training(args, stream) -> float:
    """Steady-state img/s of tfbench's training loop (the first loop, with tracing, excluded)."""
    config = training.TrainConfig(learning_rate=0.01, weight_decay=1e-5, train_steps=args.steps + 5,
                                  batch_size=args.batch_size)
    model_fn = lambda: classifier.build_classifier(  # noqa: E731
        backbones.build(args.model, pretrained=False, image_size=args.image_size), NUM_CLASSES)
    trainable = learner.Learner(model_fn, strategy=devices.make_strategy("auto"), batch_size=args.batch_size,
                                precision=devices.resolve_precision("auto"))
    _, result = training.train(trainable, stream, config, runtime=Runtime(steps_per_loop=5, verbose=False))
    return result.images_per_second


def keras_fit(args, images, labels) -> float:
    """img/s of keras.applications.<network> trained with plain model.fit on the same batches."""
    application = getattr(keras.applications, args.keras_application)
    model = application(weights=None, input_shape=(args.image_size, args.image_size, 3),
                        classes=NUM_CLASSES, classifier_activation=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = synthetic_stream(images, labels, args.batch_size)(0)
    model.fit(data, steps_per_epoch=5, epochs=1, verbose=0, shuffle=False)  # trace and warm up
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0, shuffle=False)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def step_breakdown(args, images, labels) -> dict:
    """img/s of the pieces of a training step, on the tfbench classifier: where time goes."""
    model = classifier.build_classifier(backbones.build(args.model, pretrained=False, image_size=args.image_size),
                                        NUM_CLASSES)
    optimizer = learner.make_optimizer(learner.learning_rate_schedule(
        training.TrainConfig(0.01, 0.0, 10, args.batch_size)), "float32")
    optimizer.build(model.trainable_variables)
    batch = tf.constant(images[:args.batch_size])
    batch_labels = tf.constant(labels[:args.batch_size])

    def loss_of(training_mode):
        logits = model(batch, training=training_mode)
        return tf.reduce_mean(training.per_example_loss(batch_labels, logits, False, 0.0))

    @tf.function
    def inference():
        return model(batch, training=False)

    @tf.function
    def forward_training_mode():
        return model(batch, training=True)

    @tf.function
    def gradients_inference_mode():
        with tf.GradientTape() as tape:
            loss = loss_of(False)
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def gradients_training_mode():
        with tf.GradientTape() as tape:
            loss = loss_of(True)
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def full_step():
        with tf.GradientTape() as tape:
            loss = loss_of(True)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    pieces = {"inference": inference, "forward, batch-norm training mode": forward_training_mode,
              "forward+backward, batch norm frozen": gradients_inference_mode,
              "forward+backward, batch-norm training mode": gradients_training_mode,
              "full step (+ SGD update)": full_step}
    speeds = {}
    for name, function in pieces.items():
        tf.nest.map_structure(lambda t: t.numpy(), function())
        started = time.perf_counter()
        for _ in range(args.steps):
            out = function()
        tf.nest.map_structure(lambda t: t.numpy(), out)
        speeds[name] = args.steps * args.batch_size / (time.perf_counter() - started)
    return speeds


FIXED_PHASES = ("build", "trace", "first_step", "first_loop")  # first_loop: the records before first_step


def trial_costs(args) -> None:
    """Trial after trial in this process: resident memory and the fixed and steady costs of each."""
    experiment = Experiment(
        regime="finetune", model=args.model, dataset="fashion_mnist_mini", image_size=args.image_size,
        batch_size=args.batch_size, output_dir=tempfile.mkdtemp(prefix="trial_costs-"),
        settings=TrainingSettings(search="grid", learning_rates=(0.01,), weight_decays=(0.0,),
                                  train_steps=args.trial_steps, bn_momentum=0.9))
    runtime = Runtime(eval_every=0, verbose=False)
    print(f"{args.trials} fine-tune trials of {args.trial_steps} steps: {args.model} at {args.image_size} px, "
          f"batch {args.batch_size}, fashion_mnist_mini; {os.cpu_count()} CPUs")
    print(f"{'trial':>5} {'RSS MB':>7} {'build':>7} {'trace':>7} {'first':>7} {'steady':>7} {'eval':>7} "
          f"{'fixed':>7} {'wall':>7}   (seconds; fixed = build + trace + first step)")
    memory, fixed = [], []
    for index in range(args.trials):
        trial = tuning.Trial(0.001 * (index + 1), 1e-5 * index)
        record = trained.run_trial(experiment, trial, runtime, log=lambda message: None)
        timings = record["timings"]
        memory.append(_resident_mb())
        fixed.append(sum(timings.get(f"{phase}_seconds", 0.0) for phase in FIXED_PHASES))
        cells = [timings.get(f"{phase}_seconds") for phase in ("build", "trace", "first_step", "steady_step",
                                                                 "evaluate")]
        if cells[2] is None:
            cells[2] = timings.get("first_loop_seconds")
        print(f"{index + 1:>5} {memory[-1]:>7.0f} " + " ".join("      -" if v is None else f"{v:>7.2f}" for v in cells)
              + f" {fixed[-1]:>7.2f} {timings['wall_seconds']:>7.2f}", flush=True)
    if args.trials >= 3:
        growth = (memory[-1] - memory[1]) / (args.trials - 2)
        share = np.mean(fixed[1:]) / fixed[0]
        print(f"memory growth per trial after the second: {growth:.1f} MB (goal <= 10)")
        print(f"fixed cost of trials 2..{args.trials}: {np.mean(fixed[1:]):.2f} s on average, "
              f"{100 * share:.0f}% of trial 1's {fixed[0]:.2f} s (goal <= 25%)")


def _resident_mb() -> float:
    """This process's resident memory now (Linux /proc), in MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2 ** 20


def main():
    args = parse_args()
    if args.trials:
        trial_costs(args)
        return
    images, labels = in_memory_batches(args)
    print(f"{args.model} at {args.image_size} px, batch {args.batch_size}, {args.steps} timed steps, "
          f"{args.rounds} rounds; precision {devices.resolve_precision('auto')}; "
          f"{os.cpu_count()} CPUs, GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    ratios = {"tfbench training / keras model.fit (goal >= 1.0)": [],
              "tfbench training / forward-pass bound (goal >= 0.8)": [],
              "keras model.fit / forward-pass bound": [],
              "end-to-end (JPEG decode, crop, flip) / in-memory (goal >= 0.9)": []}
    for round_index in range(args.rounds):
        fit = keras_fit(args, images, labels)
        tfbench = tfbench_training(args, synthetic_stream(images, labels, args.batch_size))
        end_to_end = tfbench_training(args, jpeg_stream(args))
        pieces = step_breakdown(args, images, labels)
        bound = pieces["inference"] / 3
        for name, value in zip(ratios, (tfbench / fit, tfbench / bound, fit / bound, end_to_end / tfbench)):
            ratios[name].append(value)
        print(f"\nround {round_index + 1}: keras fit {fit:.1f}, tfbench {tfbench:.1f}, end-to-end "
              f"{end_to_end:.1f} img/s; where a step's time goes:")
        for name, speed in pieces.items():
            print(f"  {name:45s} {speed:8.1f} img/s  {1000 / speed:7.2f} ms/img")
    print("\nratios, median over rounds (each round's ratio compares neighbouring measurements, which "
          "damps the drift of a shared machine):")
    for name, values in ratios.items():
        print(f"  {name:66s} {np.median(values):5.2f}   rounds: " + " ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
