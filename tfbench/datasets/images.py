"""Image decoding shared by every source, so all of them yield the same uint8 [H, W, 3]."""

from __future__ import annotations

import tensorflow as tf


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """JPEG / PNG / BMP / GIF bytes -> uint8 [H, W, 3]; grayscale is replicated to three
    channels, and an animated GIF gives its first frame."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
