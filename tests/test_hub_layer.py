"""SavedModelLayer: a TF2 SavedModel inside Keras 3, frozen or fine-tuned.

The tests write their own tiny reusable SavedModel (a conv layer and a batch norm whose moving
statistics update in training mode) and compare against calling that SavedModel directly.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
from tfbench import backbones
from tfbench.backbones.hub_layer import SavedModelLayer

# A SavedModel built and fine-tuned in TensorFlow: every test here takes seconds.
pytestmark = pytest.mark.slow

CHANNELS = 4


class _TinyConvBatchNorm(tf.Module):
    """conv 3x3 -> batch norm (batch statistics if training, else moving ones) -> ReLU -> mean."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, CHANNELS)).astype("float32"),
                                  name="conv/kernel")
        self.gamma = tf.Variable(tf.ones([CHANNELS]), name="bn/gamma")
        self.beta = tf.Variable(tf.fill([CHANNELS], 0.1), name="bn/beta")
        self.moving_mean = tf.Variable(tf.zeros([CHANNELS]), trainable=False, name="bn/moving_mean")
        self.moving_variance = tf.Variable(tf.ones([CHANNELS]), trainable=False,
                                           name="bn/moving_variance")

    @tf.function
    def __call__(self, images, training=False):
        x = tf.nn.conv2d(images, self.kernel, 1, "SAME")
        if training:
            mean, variance = tf.nn.moments(x, [0, 1, 2])
            self.moving_mean.assign(0.9 * self.moving_mean + 0.1 * mean)
            self.moving_variance.assign(0.9 * self.moving_variance + 0.1 * variance)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        x = tf.nn.batch_normalization(x, mean, variance, self.beta, self.gamma, 1e-3)
        return tf.reduce_mean(tf.nn.relu(x), axis=[1, 2])


def write_saved_model(directory, image_size=None):
    """A reusable SavedModel: callable root with `variables` and `trainable_variables`."""
    net = _TinyConvBatchNorm()
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
    for training in (True, False):
        net.__call__.get_concrete_function(spec, training=training)
    root = tf.train.Checkpoint()
    root.net = net
    root.variables = list(net.variables)
    root.trainable_variables = list(net.trainable_variables)
    root.__call__ = net.__call__
    tf.saved_model.save(root, str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    return write_saved_model(tmp_path_factory.mktemp("tiny_saved_model"))


def images(n=8, size=12, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


def model_with_head(layer, size=12, classes=3):
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.Dense(classes)(layer(inputs)))


def values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_keras_variables_share_storage_with_the_saved_model(saved_model_dir):
    layer = SavedModelLayer(saved_model_dir)
    layer(images())
    loaded = layer.saved_model.variables
    assert len(layer.weights) == len(loaded) == 5
    for keras_variable, tf_variable in zip(layer.weights, loaded):
        assert ":" not in keras_variable.name and "/" not in keras_variable.name
        keras_variable.assign(np.full(tf_variable.shape, 3.0, "float32"))
        np.testing.assert_array_equal(tf_variable.numpy(), 3.0)
        tf_variable.assign(np.full(tf_variable.shape, -2.0, "float32"))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras_variable), -2.0)


def test_frozen_layer_trains_nothing_and_matches_the_saved_model(saved_model_dir):
    reference = tf.saved_model.load(saved_model_dir)
    layer = SavedModelLayer(saved_model_dir, trainable=False)
    model = model_with_head(layer)
    head = model.layers[-1]
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in head.trainable_weights}
    x = images()
    np.testing.assert_allclose(layer(x).numpy(), reference(x, training=False).numpy(), rtol=1e-5)

    before = values(layer.weights)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(len(x)) % 3, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, values(layer.weights)):  # moving statistics too: inference mode
        np.testing.assert_array_equal(old, new)


def test_fine_tuning_reaches_every_variable_and_updates_batch_norm(saved_model_dir):
    layer = SavedModelLayer(saved_model_dir, trainable=True)
    model = model_with_head(layer)
    x, y = images(), np.arange(8) % 3
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainable = layer.trainable_weights
    assert len(trainable) == 3 and len(layer.non_trainable_weights) == 2
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    for gradient in tape.gradient(loss, trainable):
        assert gradient is not None and np.abs(gradient.numpy()).max() > 0

    before = values(layer.weights)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), loss_fn)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, values(layer.weights)):
        assert np.abs(old - new).max() > 1e-6

    statistics = values(layer.non_trainable_weights)
    model.predict(x, verbose=0)
    for old, new in zip(statistics, values(layer.non_trainable_weights)):
        np.testing.assert_array_equal(old, new)


def test_fine_tuned_layer_round_trips_through_a_keras_file(saved_model_dir, tmp_path):
    model = model_with_head(SavedModelLayer(saved_model_dir))
    x = images()
    model.compile(keras.optimizers.SGD(0.1), keras.losses.MeanSquaredError())
    model.fit(x, np.ones((8, 3), "float32"), epochs=1, verbose=0)
    path = str(tmp_path / "fine_tuned.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5)


@pytest.mark.parametrize("prefix, source", [("hub:", "hub"), ("", "saved_model")])
def test_backbones_build_a_saved_model_from_hub_prefix_or_directory(saved_model_dir, prefix,
                                                                   source):
    name = prefix + saved_model_dir
    model = backbones.build(name)
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, CHANNELS)
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    reference = tf.saved_model.load(saved_model_dir)(pixels / 255.0, training=False).numpy()
    np.testing.assert_allclose(model(pixels).numpy(), reference, rtol=1e-5, atol=1e-6)
    assert len(model.trainable_weights) == 3

    described = backbones.spec(name)
    assert (described.source, described.image_size) == (source, 224)
    assert described.feature_dim == CHANNELS
    assert backbones.build(name, image_size=64).input_shape == (None, 64, 64, 3)
    with pytest.raises(ValueError, match="pretrained=False"):
        backbones.build(name, pretrained=False)


def test_a_fixed_input_size_is_used_and_enforced(tmp_path):
    directory = write_saved_model(tmp_path / "fixed", image_size=16)
    assert SavedModelLayer(directory).static_image_size() == 16
    assert backbones.build(directory).input_shape == (None, 16, 16, 3)
    with pytest.raises(ValueError, match="fixed input size of 16"):
        backbones.build(directory, image_size=20)


def test_saved_model_fingerprint_follows_content_not_location(saved_model_dir, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(saved_model_dir, copy)
    fingerprint = backbones.weights_fingerprint(saved_model_dir, True)
    assert backbones.weights_fingerprint(copy, True) == fingerprint
    assert backbones.weights_fingerprint("hub:" + copy, True) == fingerprint
    assert backbones.weights_fingerprint(saved_model_dir, False) != fingerprint
    with open(f"{copy}/variables/variables.data-00000-of-00001", "r+b") as data:
        first = data.read(1)
        data.seek(0)
        data.write(bytes([first[0] ^ 0xFF]))
    assert backbones.weights_fingerprint(copy, True) != fingerprint


def test_the_record_says_a_saved_models_batch_norm_keeps_its_own_momentum(saved_model_dir):
    """The paper's momentum rule cannot reach batch norm compiled into a SavedModel: what was
    applied is stated per kind of layer, never the rule's value for layers it did not reach."""
    import keras

    from tfbench import classifier

    images = keras.Input((12, 12, 3))
    features = SavedModelLayer(saved_model_dir, trainable=True)(images)
    features = keras.layers.Reshape((1, 1, -1))(features)
    features = keras.layers.BatchNormalization(momentum=0.99)(features)
    backbone = keras.Model(images, keras.layers.Flatten()(features))
    model = classifier.build_classifier(backbone, 3, bn_momentum=0.9)
    applied = classifier.bn_momentum_applied(model, 0.9)
    assert applied["keras_batch_norm"] == {"layers": 1, "momentum": 0.9}
    assert "not changeable" in applied["savedmodel_batch_norm"]["momentum"]
    assert len(applied["savedmodel_batch_norm"]["layers"]) == 1
    assert classifier.bn_momentum_applied(model, None)["keras_batch_norm"]["momentum"] == [0.9]
