"""Training loop: weight decay, schedule, loss, divergence, precision, and the distributed paths.

The distributed checks run in subprocesses (logical CPU devices and TF_CONFIG must be set before
TensorFlow starts): MirroredStrategy over two logical CPUs, and MultiWorkerMirroredStrategy with
two worker processes on loopback ports, each compared with a one-device run of the same case.
"""

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small case every distributed check runs: conv (with bias) -> ReLU -> pooling -> linear head,
# no batch norm, so that any number of replicas must reproduce the one-device update exactly.
DISTRIBUTED_CASE = textwrap.dedent('''
    import json, os, sys
    import numpy as np

    STEPS, BATCH = 12, 16

    def data():
        rng = np.random.RandomState(0)
        images = rng.uniform(0, 255, (64, 8, 8, 3)).astype("float32")
        labels = images.mean(axis=(1, 2)).argmax(axis=1).astype("int64")  # brightest channel
        return images, labels

    def model_fn():
        import keras
        from tfbench import classifier
        keras.utils.set_random_seed(0)
        images = keras.Input((8, 8, 3))
        x = keras.layers.Rescaling(1 / 255.0)(images)
        x = keras.layers.Conv2D(6, 3, activation="relu")(x)
        backbone = keras.Model(images, keras.layers.GlobalAveragePooling2D()(x))
        return classifier.build_classifier(backbone, 3)

    def run(strategy, checkpoint_dir=None):
        import tensorflow as tf
        from tfbench import learner, training
        from tfbench.settings import Runtime
        images, labels = data()
        batches = lambda start: (tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
                                 .batch(BATCH, drop_remainder=True).skip(start))
        config = training.TrainConfig(learning_rate=0.2, weight_decay=0.01, train_steps=STEPS,
                                      batch_size=BATCH)
        runtime = Runtime(steps_per_loop=4, checkpoint_every=6, verbose=False)
        model, result = training.train(learner.Learner(model_fn, strategy=strategy, batch_size=BATCH),
                                       batches, config, runtime=runtime, checkpoint_dir=checkpoint_dir)
        assert result.status == "ok", result
        weights = np.concatenate([np.ravel(w) for w in model.get_weights()])
        return {"weights": weights.tolist(), "loss": result.final_loss,
                "replicas": strategy.num_replicas_in_sync}

    if __name__ == "__main__":
        mode, out = sys.argv[1], sys.argv[2]
        import tensorflow as tf
        from tfbench import devices
        if mode == "mirrored":
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            result = run(devices.make_strategy("mirrored"))
        else:
            result = run(devices.make_strategy("multi_worker"), checkpoint_dir=sys.argv[3])
        with open(out, "w") as handle:
            json.dump(result, handle)
''')


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")
    path = folder / "distributed_case.py"
    path.write_text(DISTRIBUTED_CASE)
    spec = importlib.util.spec_from_file_location("distributed_case", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_device_reference(case):
    from tfbench import devices

    return case.run(devices.make_strategy("one_device"))


def _subprocess_env(extra=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device(case, one_device_reference, tmp_path):
    out = tmp_path / "mirrored.json"
    subprocess.run([sys.executable, case.__file__, "mirrored", str(out)], env=_subprocess_env(),
                   check=True, timeout=240, cwd=tmp_path)
    mirrored = json.loads(out.read_text())
    assert mirrored["replicas"] == 2
    np.testing.assert_allclose(mirrored["weights"], one_device_reference["weights"], rtol=1e-4, atol=1e-5)
    assert mirrored["loss"] == pytest.approx(one_device_reference["loss"], rel=1e-4)


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_processes_match_one_device(case, one_device_reference, tmp_path):
    workers = [f"127.0.0.1:{_free_loopback_port()}" for _ in range(2)]
    checkpoints = tmp_path / "checkpoints"
    processes, outputs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        outputs.append(tmp_path / f"worker{index}.json")
        processes.append(subprocess.Popen(
            [sys.executable, case.__file__, "worker", str(outputs[-1]), str(checkpoints)],
            env=_subprocess_env({"TF_CONFIG": json.dumps(tf_config)}), cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        logs = [process.communicate(timeout=240)[0].decode(errors="replace") for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
    results = [json.loads(out.read_text()) for out in outputs]
    for result in results:
        assert result["replicas"] == 2
        np.testing.assert_allclose(result["weights"], one_device_reference["weights"], rtol=1e-4, atol=1e-5)
    # The chief keeps the final checkpoint; the other worker's scratch copy is gone.
    assert any(name.startswith("ckpt-12") for name in os.listdir(checkpoints))
    assert not [name for name in os.listdir(checkpoints) if name.startswith(".worker")]


def _small_model(with_batch_norm=True):
    import keras

    from tfbench import classifier

    keras.utils.set_random_seed(3)
    images = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=True)(images)
    if with_batch_norm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    backbone = keras.Model(images, keras.layers.GlobalAveragePooling2D()(x))
    return classifier.build_classifier(backbone, 3)


def _batches(start, batch=8):
    import tensorflow as tf

    rng = np.random.RandomState(1)
    images = rng.uniform(0, 255, (32, 6, 6, 3)).astype("float32")
    labels = rng.randint(0, 3, 32).astype("int64")
    return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch).skip(start)


def _runtime(**knobs):
    from tfbench.settings import Runtime

    return Runtime(verbose=False, **knobs)


def _learner(precision="float32"):
    from tfbench import learner

    return learner.Learner(_small_model, strategy=_strategy(), batch_size=8, precision=precision)


def _strategy():
    from tfbench import devices

    return devices.make_strategy("one_device")


def _one_step(weight_decay):
    from tfbench import training

    config = training.TrainConfig(learning_rate=0.05, weight_decay=weight_decay, train_steps=1, batch_size=8)
    model, result = training.train(_learner(), _batches, config,
                                    runtime=_runtime())
    assert result.status == "ok"
    return [variable.numpy() for variable in model.variables]


@pytest.mark.slow
def test_weight_decay_touches_only_kernels():
    """One Nesterov step from zero momentum moves w by -(1 + 0.9) * lr * grad; the decay adds
    lr * (wd / lr) * w to the step of kernels only (hand-derived reference)."""
    model = _small_model()
    names = [variable.name for variable in model.variables]
    initial = [variable.numpy() for variable in model.variables]
    weight_decay = 0.02
    decayed, plain = _one_step(weight_decay), _one_step(0.0)
    # conv and head kernels; conv and head biases, BN gamma, beta and moving statistics
    assert sorted(names) == sorted(["kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance",
                                    "kernel", "bias"])
    for name, start, with_decay, without in zip(names, initial, decayed, plain):
        if name == "kernel":
            np.testing.assert_allclose(with_decay - without, -1.9 * weight_decay * start, rtol=1e-3, atol=1e-7)
        else:
            np.testing.assert_array_equal(with_decay, without)


def test_cosine_schedule_with_warmup_matches_formula():
    from tfbench import learner, training

    config = training.TrainConfig(learning_rate=0.4, weight_decay=0.0, train_steps=100, batch_size=1,
                                  warmup_steps=10)
    schedule = learner.learning_rate_schedule(config)
    for step in (0, 5, 10, 40, 99, 100):
        if step < 10:
            expected = 0.4 * step / 10
        else:
            expected = 0.4 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)
    plain = learner.learning_rate_schedule(training.TrainConfig(0.4, 0.0, 100, 1))
    assert float(plain(0)) == pytest.approx(0.4) and float(plain(50)) == pytest.approx(0.2)


def test_losses_match_numpy():
    from tfbench import training

    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], np.float32)
    labels = np.array([0, 2])
    smoothing = 0.1
    targets = np.eye(3)[labels] * (1 - smoothing) + smoothing / 3
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(targets * log_softmax).sum(axis=1)
    got = training.per_example_loss(labels, logits, multi_label=False, label_smoothing=smoothing)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)

    multi = np.array([[1, 0, -1], [0, -1, 1]], np.int32)  # -1 = difficult: ignored
    probabilities = 1 / (1 + np.exp(-logits))
    bce = -(multi.clip(0) * np.log(probabilities) + (1 - multi.clip(0)) * np.log(1 - probabilities))
    expected = (bce * (multi >= 0)).sum(axis=1) / 3
    got = training.per_example_loss(multi, logits, multi_label=True, label_smoothing=0.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


@pytest.mark.slow
def test_huge_learning_rate_is_reported_as_diverged(tmp_path):
    from tfbench import training

    config = training.TrainConfig(learning_rate=1e30, weight_decay=1e-4, train_steps=40, batch_size=8)
    _, result = training.train(_learner(), _batches, config,
                               runtime=_runtime(steps_per_loop=5, checkpoint_every=5),
                               checkpoint_dir=str(tmp_path))
    assert result.status == "diverged"
    assert result.steps < 40 and "non-finite" in result.reason


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_logits(precision):
    import keras

    from tfbench import training

    config = training.TrainConfig(learning_rate=0.01, weight_decay=1e-4, train_steps=3, batch_size=8)
    trainable = _learner(precision)
    loss_scaling = isinstance(trainable.optimizer, keras.optimizers.LossScaleOptimizer)
    assert loss_scaling == (precision == "mixed_float16")  # bfloat16 has float32's range
    model, result = training.train(trainable, _batches, config, runtime=_runtime())
    assert result.status == "ok"
    assert model.layers[1].compute_dtype == precision.split("_")[1]  # the backbone ran in half precision
    assert model(np.zeros((2, 6, 6, 3), np.float32)).dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building


@pytest.mark.slow
def test_validation_curve_is_scored_on_schedule_and_survives_resume(tmp_path):
    """evaluate() runs every eval_every steps (never at the end: the caller scores that), its
    scores reach TensorBoard, and a resumed run keeps the scores from before the interruption."""
    from tfbench import training

    config = training.TrainConfig(learning_rate=0.05, weight_decay=0.0, train_steps=12, batch_size=8)
    calls = []

    def evaluate(model):
        calls.append(len(calls))
        return "val/top1", 0.1 * len(calls)

    runtime = _runtime(steps_per_loop=5, checkpoint_every=6, eval_every=4)
    _, result = training.train(_learner(), _batches, config, runtime=runtime,
                               checkpoint_dir=str(tmp_path / "ckpt"), log_dir=str(tmp_path / "tb"),
                               evaluate=evaluate)
    assert [step for step, _ in result.validation_curve] == [4, 8]
    assert [score for _, score in result.validation_curve] == pytest.approx([0.1, 0.2])

    longer = training.TrainConfig(learning_rate=0.05, weight_decay=0.0, train_steps=16, batch_size=8)
    _, resumed = training.train(_learner(), _batches, longer, runtime=runtime,
                                checkpoint_dir=str(tmp_path / "ckpt"), evaluate=evaluate)
    assert resumed.resumed_from_step == 12
    # 12 ended the first run (its caller scored it), but is due in the longer one: scored on resume,
    # as a 16-step run that never stopped scores it.
    assert [step for step, _ in resumed.validation_curve] == [4, 8, 12]
    assert len(calls) == 3


@pytest.mark.slow
def test_validation_every_zero_scores_nothing_during_training():
    from tfbench import training

    config = training.TrainConfig(learning_rate=0.05, weight_decay=0.0, train_steps=6, batch_size=8)
    _, result = training.train(_learner(), _batches, config,
                               runtime=_runtime(eval_every=0, checkpoint_every=2),
                               evaluate=lambda model: pytest.fail("scored with eval_every=0"))
    assert result.validation_curve == []


@pytest.mark.slow
def test_a_lost_lock_stops_training_at_the_next_step_boundary_before_any_checkpoint(tmp_path):
    """A task's lock taken over mid-trial (tfbench.fencing): the old owner trains no further and
    saves nothing, where without the fence it would train to the end and checkpoint twice."""
    import tensorflow as tf

    from tfbench import fencing, training

    class Lease:
        lost = False

        def check(self):
            if self.lost:
                raise fencing.LeaseLost("taken over")

    lease, scored = Lease(), []

    def evaluate(model):  # at step 2: the lock is taken over while validation runs
        scored.append(len(scored))
        lease.lost = True
        return "val/top1", 0.5

    config = training.TrainConfig(learning_rate=0.05, weight_decay=0.0, train_steps=8, batch_size=8)
    with fencing.holding(lease), pytest.raises(fencing.LeaseLost):
        training.train(_learner(), _batches, config, evaluate=evaluate,
                       runtime=_runtime(steps_per_loop=2, checkpoint_every=4, eval_every=2),
                       checkpoint_dir=str(tmp_path / "ckpt"))
    assert scored == [0] and tf.train.latest_checkpoint(str(tmp_path / "ckpt")) is None


def _stopping_batches(stop_at_position):
    """_batches whose reader requests a stop (from tf.data's thread, as a lock's heartbeat thread
    would) when it produces batch number `stop_at_position`: in the middle of a compiled loop."""
    import tensorflow as tf

    from tfbench import interruption

    def note(position):
        if position == stop_at_position:
            interruption.request_stop("test")
        return position

    def batches(start):
        positions = tf.data.Dataset.range(start, 2**62)
        return tf.data.Dataset.zip(_batches(start), positions).map(
            lambda batch, position: (batch, tf.numpy_function(note, [position], tf.int64)))\
            .map(lambda batch, _: batch)

    return batches


def test_a_stop_request_ends_training_after_the_step_in_progress_with_its_checkpoint(tmp_path):
    """Within one compiled call of 100 steps a stop requested at step 15 ends training within a
    few steps (what prefetching read ahead), saves that step's checkpoint though periodic ones are
    off, raises Interrupted naming the step; the rerun resumes there and ends as an uninterrupted
    run does."""
    from tfbench import interruption, training

    config = training.TrainConfig(learning_rate=0.05, weight_decay=1e-3, train_steps=40, batch_size=8)
    runtime = _runtime(steps_per_loop=100, checkpoint_every=10_000)
    reference, _ = training.train(_learner(), _batches, config, runtime=runtime)

    checkpoints = str(tmp_path / "ckpt")
    try:
        with pytest.raises(interruption.Interrupted) as stopped:
            training.train(_learner(), _stopping_batches(15), config, runtime=runtime,
                           checkpoint_dir=checkpoints)
    finally:
        interruption.clear()
    step = int(stopped.value.where.split()[-1])
    assert stopped.value.where == f"at step {step}" and 5 <= step <= 16
    assert stopped.value.line() == f"interrupted at step {step}; the same command resumes from there"
    assert os.path.exists(os.path.join(checkpoints, f"ckpt-{step}.index"))

    model, result = training.train(_learner(), _batches, config, runtime=runtime,
                                   checkpoint_dir=checkpoints)
    assert result.resumed_from_step == step and result.steps == 40
    for got, expected in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_stop_requested_during_validation_keeps_the_steps_trained(tmp_path):
    from tfbench import interruption, training

    config = training.TrainConfig(learning_rate=0.05, weight_decay=0.0, train_steps=12, batch_size=8)

    def evaluate(model):
        interruption.request_stop("test")
        interruption.check()

    try:
        with pytest.raises(interruption.Interrupted) as stopped:
            training.train(_learner(), _batches, config, runtime=_runtime(steps_per_loop=4, checkpoint_every=100, eval_every=4),
                           checkpoint_dir=str(tmp_path), evaluate=evaluate)
    finally:
        interruption.clear()
    assert stopped.value.where == "at step 4"
    _, resumed = training.train(_learner(), _batches, config, runtime=_runtime(),
                                checkpoint_dir=str(tmp_path))
    assert resumed.resumed_from_step == 4
