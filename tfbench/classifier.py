"""The network a fine-tune or scratch run trains: a backbone with a new linear head.

Also where batch norm is made fast and set up for the protocol: every Keras BatchNormalization
layer of the backbone gets the requested moving-statistics momentum and computes with
TensorFlow's fused kernel.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional

from tfbench.settings import InvalidSettingError


def build_classifier(backbone, num_classes: int, dropout: float = 0.0, bn_momentum: Optional[float] = None):
    """The backbone with a new linear head: images [0, 255] -> float32 logits [batch, num_classes].

    The head (and its dropout) runs in float32 so logits and loss keep full precision under mixed
    precision. `bn_momentum`, when given, replaces the momentum of every Keras BatchNormalization
    layer (a SavedModel backbone keeps its own, since its batch norm is compiled into the graph:
    `bn_momentum_applied` says which for the record).
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


def bn_momentum_applied(model, requested: Optional[float]) -> Dict[str, Any]:
    """What batch-norm momentum the model's layers actually train with, per kind of layer, for the
    record: a TF-Hub SavedModel's batch norm is compiled into its graph and keeps its own momentum
    whatever the rule asks (so a record never claims the rule for layers it could not reach)."""
    from tfbench.backbones.hub_layer import SavedModelLayer

    applied: Dict[str, Any] = {}
    layers = batch_norm_layers(model)
    if layers:
        own = sorted({float(layer.momentum) for layer in layers})
        applied["keras_batch_norm"] = {"layers": len(layers),
                                       "momentum": requested if requested is not None else own}
    saved_models = [layer.name for layer in _all_layers(model) if isinstance(layer, SavedModelLayer)]
    if saved_models:
        applied["savedmodel_batch_norm"] = {
            "layers": saved_models,
            "momentum": "the SavedModel's own, compiled into its graph (not changeable by tfbench)"}
    return applied


def _all_layers(model) -> List[Any]:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
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
