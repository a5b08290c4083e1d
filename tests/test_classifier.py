"""The classifier a trained regime builds: batch-norm momentum reaches every layer, and the fused
batch-norm kernel computes what Keras's own layer computes."""

import numpy as np
import pytest


def _small_model():
    import keras

    from tfbench import classifier

    keras.utils.set_random_seed(3)
    images = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=True)(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    backbone = keras.Model(images, keras.layers.GlobalAveragePooling2D()(x))
    return classifier.build_classifier(backbone, 3)


def test_batch_norm_momentum_reaches_nested_layers():
    import keras

    from tfbench import classifier

    inner = _small_model()
    outer_input = keras.Input((6, 6, 3))
    wrapped = keras.Model(outer_input, inner(outer_input))
    classifier.build_classifier(wrapped, 2, bn_momentum=0.9)
    layers = classifier.batch_norm_layers(wrapped)
    assert len(layers) == 1 and layers[0].momentum == 0.9


@pytest.mark.parametrize("training_mode", [True, False])
def test_fused_batch_norm_matches_keras_batch_norm(training_mode):
    """The fused kernel gives Keras's outputs and moving statistics (Keras's own layer is the reference)."""
    import keras

    from tfbench import classifier

    rng = np.random.RandomState(0)
    inputs = rng.normal(2.0, 3.0, (4, 5, 5, 6)).astype("float32")
    gamma = rng.uniform(0.5, 1.5, 6).astype("float32")
    layers = []
    for fused in (False, True):
        layer = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-3)
        layer.build(inputs.shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(np.linspace(-1, 1, 6).astype("float32"))
        layer.moving_mean.assign(np.full(6, 0.5, "float32"))
        layer.moving_variance.assign(np.full(6, 2.0, "float32"))
        if fused:
            classifier.use_fused_kernel(layer)
        layers.append(layer)
    reference, fused_layer = layers
    np.testing.assert_allclose(fused_layer(inputs, training=training_mode).numpy(),
                               reference(inputs, training=training_mode).numpy(), rtol=1e-4, atol=1e-4)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(fused_layer, name).numpy(), getattr(reference, name).numpy(),
                                   rtol=1e-5)
    if training_mode:  # the statistics moved towards the batch's
        assert not np.allclose(reference.moving_mean.numpy(), 0.5)
