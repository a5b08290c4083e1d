""""tiny": a small CNN with a fixed seeded "pretrained" initialisation, so tests run in seconds."""

from __future__ import annotations

from typing import Optional

import keras

from tfbench.backbones.catalog import TINY_SEED, BackboneSpec
from tfbench.backbones.scaling import InputScaling


def build(backbone: BackboneSpec, pretrained: bool, image_size: Optional[int]) -> keras.Model:
    """Three conv-BN-ReLU blocks and global average pooling; seeded when `pretrained`."""
    layers = keras.layers
    size = image_size or backbone.image_size
    images = keras.Input((size, size, 3), name="images")
    x = InputScaling(backbone.scaling)(images)
    for block, (filters, stride) in enumerate(((8, 1), (16, 2), (32, 2))):
        kernel_init = keras.initializers.HeNormal(seed=TINY_SEED + block if pretrained else None)
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                          kernel_initializer=kernel_init)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    return keras.Model(images, layers.GlobalAveragePooling2D()(x), name=backbone.name)
