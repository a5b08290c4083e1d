"""`InputScaling`: the layer that maps [0, 255] RGB pixels to what a network was trained on.

It is the first layer of every backbone whose network does not scale its own input, so data
pipelines never need to know which network they feed, and a model saved with `model.save()`
still takes raw pixels. What it computes is an `InputConvention` (tfbench.backbones.conventions).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Union

import keras

from tfbench.backbones import conventions
from tfbench.backbones.conventions import InputConvention


def _convention(mode: Union[str, InputConvention, Mapping[str, Any]]) -> InputConvention:
    if isinstance(mode, InputConvention):
        return mode
    if isinstance(mode, Mapping):  # a generic convention read back from a saved model's config
        fields = dict(mode)
        return InputConvention(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    return conventions.named(mode)


@keras.saving.register_keras_serializable(package="tfbench")
class InputScaling(keras.layers.Layer):
    """y = x * scale + offset per channel on [0, 255] pixels, channels reversed first for BGR.

    `mode`: a named convention ("tf" x / 127.5 - 1, "caffe" BGR minus the ImageNet BGR mean,
    "torch" (x / 255 - ImageNet mean) / ImageNet std, "unit" x / 255, TF-Hub's image convention),
    or any `InputConvention` (a range or a mean/std of a user's model).
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.convention = _convention(mode)

    @property
    def mode(self):
        """The named convention's name, or None for a generic one."""
        return self.convention.name

    def call(self, images):
        ops = keras.ops
        if self.convention.bgr:
            images = ops.flip(images, axis=-1)
        scale = ops.convert_to_tensor(self.convention.scale, images.dtype)
        offset = ops.convert_to_tensor(self.convention.offset, images.dtype)
        return images * scale + offset

    def get_config(self):
        config = super().get_config()
        named = self.convention.name
        config["mode"] = named if named else dataclasses.asdict(self.convention)
        return config
