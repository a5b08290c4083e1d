"""Inception v1 / BN-Inception / v4 as Keras models, and the TF-Slim checkpoint import of v4.

The reference below is written from the slim definition (tensorflow/models research/slim/nets/
inception_v4.py) with raw tf.nn ops, independently of tfbench.backbones.inception: it names every
slim variable as slim does, creates it with random values as it goes, and computes the logits. The
variables it created are saved as a checkpoint with slim's names, imported into the Keras model,
and the Keras logits must equal the reference's.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import urllib.error

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfbench import backbones
from tfbench.backbones import catalog, inception, slim_checkpoint
from tfbench.backbones.errors import WeightMappingError, WeightsUnavailableError
from tfbench.datasets import fetch

SIZE = 75  # the smallest input Inception v4's valid paddings allow
EPSILON = 0.001


class RandomSlimVariables:
    """`param(name, shape)`: a new random tensor under slim's name, recorded for the checkpoint."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.values = {}

    def __call__(self, name, shape):
        assert name not in self.values, name
        if name.endswith("moving_variance"):
            value = self.rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "moving_mean", "biases")):
            value = self.rng.normal(0.0, 0.1, shape)
        else:  # a kernel: keeps activations of order one through the depth
            value = self.rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[:-1])), shape)
        self.values[name] = value.astype(np.float32)
        return tf.constant(self.values[name])


def reference_inception_v4(images, param):
    """slim inception_v4 (is_training=False) on [0, 255] images; returns the 1001 logits."""
    def conv(x, scope, depth, kernel, stride=1, padding="SAME"):
        kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
        w = param(f"InceptionV4/{scope}/weights", (*kernel, x.shape[-1], depth))
        y = tf.nn.conv2d(x, w, stride, padding)
        beta = param(f"InceptionV4/{scope}/BatchNorm/beta", (depth,))
        mean = param(f"InceptionV4/{scope}/BatchNorm/moving_mean", (depth,))
        variance = param(f"InceptionV4/{scope}/BatchNorm/moving_variance", (depth,))
        return tf.nn.relu((y - mean) * tf.math.rsqrt(variance + EPSILON) + beta)

    def max_pool(x, stride=1, padding="SAME"):
        return tf.nn.max_pool2d(x, 3, stride, padding)

    def avg_pool(x):
        return tf.nn.avg_pool2d(x, 3, 1, "SAME")

    def cat(*tensors):
        return tf.concat(tensors, axis=3)

    net = images / 127.5 - 1.0
    net = conv(net, "Conv2d_1a_3x3", 32, 3, 2, "VALID")
    net = conv(net, "Conv2d_2a_3x3", 32, 3, 1, "VALID")
    net = conv(net, "Conv2d_2b_3x3", 64, 3)
    net = cat(max_pool(net, 2, "VALID"), conv(net, "Mixed_3a/Branch_1/Conv2d_0a_3x3", 96, 3, 2, "VALID"))
    b0 = conv(net, "Mixed_4a/Branch_0/Conv2d_0a_1x1", 64, 1)
    b0 = conv(b0, "Mixed_4a/Branch_0/Conv2d_1a_3x3", 96, 3, 1, "VALID")
    b1 = conv(net, "Mixed_4a/Branch_1/Conv2d_0a_1x1", 64, 1)
    b1 = conv(b1, "Mixed_4a/Branch_1/Conv2d_0b_1x7", 64, (1, 7))
    b1 = conv(b1, "Mixed_4a/Branch_1/Conv2d_0c_7x1", 64, (7, 1))
    b1 = conv(b1, "Mixed_4a/Branch_1/Conv2d_1a_3x3", 96, 3, 1, "VALID")
    net = cat(b0, b1)
    net = cat(conv(net, "Mixed_5a/Branch_0/Conv2d_1a_3x3", 192, 3, 2, "VALID"), max_pool(net, 2, "VALID"))
    for block in "bcde":
        s = f"Mixed_5{block}"
        b0 = conv(net, f"{s}/Branch_0/Conv2d_0a_1x1", 96, 1)
        b1 = conv(conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 64, 1), f"{s}/Branch_1/Conv2d_0b_3x3", 96, 3)
        b2 = conv(net, f"{s}/Branch_2/Conv2d_0a_1x1", 64, 1)
        b2 = conv(conv(b2, f"{s}/Branch_2/Conv2d_0b_3x3", 96, 3), f"{s}/Branch_2/Conv2d_0c_3x3", 96, 3)
        b3 = conv(avg_pool(net), f"{s}/Branch_3/Conv2d_0b_1x1", 96, 1)
        net = cat(b0, b1, b2, b3)
    s = "Mixed_6a"
    b0 = conv(net, f"{s}/Branch_0/Conv2d_1a_3x3", 384, 3, 2, "VALID")
    b1 = conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 192, 1)
    b1 = conv(b1, f"{s}/Branch_1/Conv2d_0b_3x3", 224, 3)
    b1 = conv(b1, f"{s}/Branch_1/Conv2d_1a_3x3", 256, 3, 2, "VALID")
    net = cat(b0, b1, max_pool(net, 2, "VALID"))
    for block in "bcdefgh":
        s = f"Mixed_6{block}"
        b0 = conv(net, f"{s}/Branch_0/Conv2d_0a_1x1", 384, 1)
        b1 = conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 192, 1)
        b1 = conv(b1, f"{s}/Branch_1/Conv2d_0b_1x7", 224, (1, 7))
        b1 = conv(b1, f"{s}/Branch_1/Conv2d_0c_7x1", 256, (7, 1))
        b2 = conv(net, f"{s}/Branch_2/Conv2d_0a_1x1", 192, 1)
        b2 = conv(b2, f"{s}/Branch_2/Conv2d_0b_7x1", 192, (7, 1))
        b2 = conv(b2, f"{s}/Branch_2/Conv2d_0c_1x7", 224, (1, 7))
        b2 = conv(b2, f"{s}/Branch_2/Conv2d_0d_7x1", 224, (7, 1))
        b2 = conv(b2, f"{s}/Branch_2/Conv2d_0e_1x7", 256, (1, 7))
        b3 = conv(avg_pool(net), f"{s}/Branch_3/Conv2d_0b_1x1", 128, 1)
        net = cat(b0, b1, b2, b3)
    s = "Mixed_7a"
    b0 = conv(net, f"{s}/Branch_0/Conv2d_0a_1x1", 192, 1)
    b0 = conv(b0, f"{s}/Branch_0/Conv2d_1a_3x3", 192, 3, 2, "VALID")
    b1 = conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 256, 1)
    b1 = conv(b1, f"{s}/Branch_1/Conv2d_0b_1x7", 256, (1, 7))
    b1 = conv(b1, f"{s}/Branch_1/Conv2d_0c_7x1", 320, (7, 1))
    b1 = conv(b1, f"{s}/Branch_1/Conv2d_1a_3x3", 320, 3, 2, "VALID")
    net = cat(b0, b1, max_pool(net, 2, "VALID"))
    for block in "bcd":
        s = f"Mixed_7{block}"
        b0 = conv(net, f"{s}/Branch_0/Conv2d_0a_1x1", 256, 1)
        b1 = conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 384, 1)
        b1 = cat(conv(b1, f"{s}/Branch_1/Conv2d_0b_1x3", 256, (1, 3)),
                 conv(b1, f"{s}/Branch_1/Conv2d_0c_3x1", 256, (3, 1)))
        b2 = conv(net, f"{s}/Branch_2/Conv2d_0a_1x1", 384, 1)
        b2 = conv(b2, f"{s}/Branch_2/Conv2d_0b_3x1", 448, (3, 1))
        b2 = conv(b2, f"{s}/Branch_2/Conv2d_0c_1x3", 512, (1, 3))
        b2 = cat(conv(b2, f"{s}/Branch_2/Conv2d_0d_1x3", 256, (1, 3)),
                 conv(b2, f"{s}/Branch_2/Conv2d_0e_3x1", 256, (3, 1)))
        b3 = conv(avg_pool(net), f"{s}/Branch_3/Conv2d_0b_1x1", 256, 1)
        net = cat(b0, b1, b2, b3)
    # The auxiliary head (training only) is in the checkpoint at its 299 px shapes.
    for scope, shape in (("Conv2d_1b_1x1", (1, 1, 1024, 128)), ("Conv2d_2a", (5, 5, 128, 768))):
        param(f"InceptionV4/AuxLogits/{scope}/weights", shape)
        for variable in ("beta", "moving_mean", "moving_variance"):
            param(f"InceptionV4/AuxLogits/{scope}/BatchNorm/{variable}", shape[-1:])
    param("InceptionV4/AuxLogits/Aux_logits/weights", (768, 1001))
    param("InceptionV4/AuxLogits/Aux_logits/biases", (1001,))
    pooled = tf.reduce_mean(net, axis=[1, 2])
    return pooled @ param("InceptionV4/Logits/Logits/weights", (1536, 1001)) + \
        param("InceptionV4/Logits/Logits/biases", (1001,))


def save_checkpoint(path, values):
    """A TensorFlow checkpoint holding `values` under their names (what slim's Saver writes)."""
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=str(path), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[values[name] for name in names])
    return str(path)


@pytest.fixture(scope="module")
def slim_v4():
    """(images, reference logits, slim variables) of one random Inception v4."""
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    variables = RandomSlimVariables()
    logits = reference_inception_v4(tf.constant(images), variables).numpy()
    return images, logits, variables.values


@pytest.fixture(scope="module")
def keras_v4():
    return inception.build(backbones.spec("inception_v4"), False, SIZE, include_logits=True)


@pytest.mark.slow
def test_imported_v4_logits_equal_the_reference(slim_v4, keras_v4, tmp_path):
    images, reference, values = slim_v4
    slim_checkpoint.assign(keras_v4, save_checkpoint(tmp_path / "v4", values), "inception_v4")
    logits = keras_v4(images, training=False).numpy()
    assert logits.shape == (2, 1001)
    assert np.std(reference) > 1e-3  # not a degenerate network
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ("drop", r"has no tensor 'InceptionV4/Mixed_6c/Branch_2/Conv2d_0d_7x1/weights'"),
    ("reshape", r"tensor 'InceptionV4/Mixed_6c/Branch_2/Conv2d_0d_7x1/weights' has shape "
                r"\(1, 7, 224, 224\), .* needs \(7, 1, 224, 224\)"),
    ("extra", r"1 tensors fill no weight of inception_v4, e.g. \['InceptionV4/Extra/weights'\]"),
    ("aux", r"tensor 'InceptionV4/AuxLogits/Conv2d_2a/weights' has shape \(3, 3, 128, 768\)"),
])
def test_a_checkpoint_that_does_not_fit_fails_in_one_line(slim_v4, keras_v4, tmp_path, change,
                                                          message):
    values = dict(slim_v4[2])
    name = "InceptionV4/Mixed_6c/Branch_2/Conv2d_0d_7x1/weights"
    if change == "drop":
        del values[name]
    elif change == "reshape":
        values[name] = values[name].reshape(1, 7, 224, 224)
    elif change == "extra":
        values["InceptionV4/Extra/weights"] = np.zeros((3,), np.float32)
    else:
        values["InceptionV4/AuxLogits/Conv2d_2a/weights"] = np.zeros((3, 3, 128, 768), np.float32)
    before = [weight.numpy().copy() for weight in keras_v4.weights[:3]]
    with pytest.raises(WeightMappingError, match=message) as error:
        slim_checkpoint.assign(keras_v4, save_checkpoint(tmp_path / "v4", values), "inception_v4")
    assert "\n" not in str(error.value)
    for weight, old in zip(keras_v4.weights[:3], before):  # nothing half-assigned
        np.testing.assert_array_equal(weight.numpy(), old)


@pytest.mark.slow
def test_not_a_checkpoint_fails_in_one_line(keras_v4, tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightMappingError, match="is not a readable TensorFlow checkpoint") as error:
        slim_checkpoint.assign(keras_v4, str(junk), "inception_v4")
    assert "\n" not in str(error.value)


def _tarball(member: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("inception_v4.ckpt")
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    return buffer.getvalue()


OPTIONS = fetch.FetchOptions(retries=0, workers=1, progress=False)


def test_checkpoint_is_downloaded_extracted_fingerprinted_and_healed(tmp_path, capsys):
    calls = []

    def get(url, timeout):
        calls.append(url)
        return _tarball(b"checkpoint bytes")

    path = slim_checkpoint.checkpoint_path("inception_v4", str(tmp_path), OPTIONS, get)
    assert path == str(tmp_path / "weights" / "inception_v4_2016_09_09" / "inception_v4.ckpt")
    assert open(path, "rb").read() == b"checkpoint bytes"
    assert calls == [slim_checkpoint.CHECKPOINTS.get("inception_v4").url]
    assert sorted(os.listdir(os.path.dirname(path))) == ["inception_v4.ckpt",
                                                         "inception_v4.ckpt.fingerprint.json"]
    assert slim_checkpoint.checkpoint_path("inception_v4", str(tmp_path), OPTIONS, get) == path
    assert len(calls) == 1  # reused
    with open(path, "r+b") as stream:  # damaged since: same size, other bytes
        stream.write(b"C")
    capsys.readouterr()
    slim_checkpoint.checkpoint_path("inception_v4", str(tmp_path), OPTIONS, get)
    assert len(calls) == 2 and open(path, "rb").read() == b"checkpoint bytes"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and path in warnings[0]


def test_a_checkpoint_put_there_by_hand_is_adopted(tmp_path):
    path = slim_checkpoint.checkpoint_file("inception_v4", str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as stream:
        stream.write(b"by hand")

    def get(url, timeout):
        raise AssertionError("nothing to download")

    assert slim_checkpoint.checkpoint_path("inception_v4", str(tmp_path), OPTIONS, get) == path
    assert json.load(open(path + slim_checkpoint.FINGERPRINT_SUFFIX))["bytes"] == 7


def test_offline_names_the_file_and_where_to_put_it(tmp_path):
    def get(url, timeout):
        raise urllib.error.URLError("no network")

    with pytest.raises(WeightsUnavailableError) as error:
        slim_checkpoint.checkpoint_path("inception_v4", str(tmp_path), OPTIONS, get)
    message = str(error.value)
    assert "\n" not in message
    assert "inception_v4_2016_09_09.tar.gz" in message
    assert slim_checkpoint.checkpoint_file("inception_v4", str(tmp_path)) in message


def test_inception_v4_is_registered_as_slim_reports_it():
    spec = backbones.spec("inception_v4")
    assert (spec.image_size, spec.feature_dim, spec.imagenet_top1) == (299, 1536, 0.802)
    assert spec.scaling_mode == "tf"
    assert "inception_v4" in catalog.names()
    assert backbones.weights_fingerprint("inception_v4", True).endswith(
        "inception_v4_2016_09_09.tar.gz")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v1", "inception_v2"])
def test_scratch_inception_v1_v2_are_trainable_keras_networks(name):
    keras.utils.set_random_seed(3)
    model = backbones.build(name, pretrained=False, image_size=64)
    assert model.output.shape == (None, 1024)
    assert not any("saved_model" in layer.name for layer in model.layers)
    assert all(weight.trainable for weight in model.weights
               if "moving" not in weight.name)
    keras.utils.set_random_seed(3)
    again = backbones.build(name, pretrained=False, image_size=64)
    for first, second in zip(model.weights, again.weights):  # seeded by Keras's global seed
        np.testing.assert_array_equal(first.numpy(), second.numpy())

    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    head = keras.layers.Dense(2)
    optimizer = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, head(model(images, training=True)))
        variables = model.trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        losses.append(float(loss))
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_pretrained_v4_classifier_is_slims_softmax_without_background(slim_v4, tmp_path,
                                                                      monkeypatch):
    """The pretrained build imports the checkpoint; the ImageNet classifier drops class 0."""
    values = slim_v4[2]
    path = save_checkpoint(tmp_path / "v4", values)
    monkeypatch.setattr(slim_checkpoint, "checkpoint_path", lambda model: path)
    image = np.random.default_rng(2).uniform(0, 255, (1, 299, 299, 3)).astype(np.float32)
    logits = reference_inception_v4(tf.constant(image), lambda name, shape: tf.constant(values[name]))
    expected = tf.nn.softmax(logits[:, 1:]).numpy()
    probabilities = backbones.build_imagenet_classifier("inception_v4")(image, training=False)
    assert probabilities.shape == (1, 1000)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_a_wrong_checkpoint_in_the_cache_is_reported_as_unavailable_weights(tmp_path, monkeypatch):
    junk = tmp_path / "inception_v4.ckpt"
    junk.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(slim_checkpoint, "checkpoint_path", lambda model: str(junk))
    with pytest.raises(WeightsUnavailableError, match=r"is not a readable .*; replace .* with the "
                       r"inception_v4.ckpt of http://download.tensorflow.org/") as error:
        backbones.build("inception_v4", image_size=SIZE)
    assert "\n" not in str(error.value)
