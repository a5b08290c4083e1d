"""Registered Keras Applications as feature extractors, with their ImageNet weights fetched first.

Keras downloads weights lazily inside the constructor, where an offline failure is a long retry
and an opaque traceback; fetching the file first makes it fail at once with a message that says
where to put the file by hand.
"""

from __future__ import annotations

import os
from typing import Optional

import keras

from tfbench.backbones.catalog import BackboneSpec
from tfbench.backbones.errors import WeightsUnavailableError, one_line
from tfbench.backbones.scaling import InputScaling


def keras_weights_path(file_name: str) -> str:
    """Where Keras looks for a weights file: $KERAS_HOME/models, else ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", file_name)


def fetch_weights(backbone: BackboneSpec) -> None:
    """Puts the weights file in the Keras cache first, so that offline runs fail here, at once."""
    try:
        keras.utils.get_file(backbone.weights_file, backbone.weights_url, cache_subdir="models")
    except Exception as error:  # any download failure: DNS, HTTP, blocked socket, disk
        raise WeightsUnavailableError(
            f"cannot fetch ImageNet weights of {backbone.name!r} from {backbone.weights_url} "
            f"({one_line(error)}); download that file to "
            f"{keras_weights_path(backbone.weights_file)} (the directory follows KERAS_HOME), "
            "or build with pretrained=False"
        ) from error


def build(backbone: BackboneSpec, pretrained: bool, image_size: Optional[int]) -> keras.Model:
    """[0, 255] images -> pooled features, the network's input scaling as its first layer."""
    size = image_size or backbone.image_size
    if pretrained:
        fetch_weights(backbone)
    application = getattr(keras.applications, backbone.keras_application)
    network = application(include_top=False, weights="imagenet" if pretrained else None,
                          input_shape=(size, size, 3), pooling="avg", **dict(backbone.keras_kwargs))
    return _on_raw_pixels(backbone, size, network)


def build_classifier(backbone: BackboneSpec) -> keras.Model:
    """[0, 255] images at the native size -> [batch, 1000] ImageNet class probabilities: the
    application with its own top. Keras fetches those weights itself (another file than the
    feature extractor's), so a failed download is reported here with where the file goes."""
    size = backbone.image_size
    application = getattr(keras.applications, backbone.keras_application)
    try:
        network = application(include_top=True, weights="imagenet", input_shape=(size, size, 3),
                              **dict(backbone.keras_kwargs))
    except (ValueError, TypeError):  # a wrong argument, not a download
        raise
    except Exception as error:  # any download failure: DNS, HTTP, blocked socket, disk
        raise WeightsUnavailableError(
            f"cannot fetch the ImageNet classifier weights of {backbone.name!r} ({one_line(error)}); "
            f"put the file it names in {os.path.dirname(keras_weights_path(backbone.weights_file))} "
            "(the directory follows KERAS_HOME)"
        ) from error
    return _on_raw_pixels(backbone, size, network)


def _on_raw_pixels(backbone: BackboneSpec, size: int, network: keras.Model) -> keras.Model:
    """`network` behind the backbone's input scaling, so that it takes [0, 255] images."""
    images = keras.Input((size, size, 3), name="images")
    scaled = images if backbone.scaling is None else InputScaling(backbone.scaling)(images)
    return keras.Model(images, network(scaled), name=backbone.name)
