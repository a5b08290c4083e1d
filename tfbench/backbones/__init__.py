"""ImageNet backbones as Keras 3 feature extractors: `names()`, `spec(name)`, `build(name)`.

Every backbone is built the same way for every regime: a `keras.Model` taking float32 images
[batch, S, S, 3] with values in [0, 255] and returning pooled penultimate features
[batch, feature_dim]. The network's own input scaling is a layer inside the model, so data
pipelines never need to know which network they feed, and a fine-tuned model saved with
`model.save()` still takes raw pixels.

A name is a registered backbone (tfbench.backbones.catalog), a model from a loaded models file,
or a path form: "hub:<handle>", a SavedModel directory or a ".keras" file
(tfbench.backbones.user_models). Looking up a registered name imports neither TensorFlow nor
Keras; the builders are imported when a model is built.
"""

from __future__ import annotations

import importlib
from typing import Optional

from tfbench.backbones import catalog, user_models
from tfbench.backbones.catalog import BackboneSpec
from tfbench.backbones.errors import (ModelNotFoundError, ModelsFileError, NoImageNetClassifierError,
                                      WeightsUnavailableError)
from tfbench.backbones.user_models import describe_source, load_models_file
from tfbench.registry import UnknownNameError, unknown_name_message

__all__ = ["BackboneSpec", "InputScaling", "ModelNotFoundError", "ModelsFileError",
           "NoImageNetClassifierError", "WeightsUnavailableError", "build",
           "build_imagenet_classifier", "describe_source", "keras_weights_path",
           "load_models_file", "names", "spec", "weights_fingerprint"]

# Imported on first use: they import Keras (and TensorFlow).
_LAZY = {"InputScaling": "tfbench.backbones.scaling",
         "keras_weights_path": "tfbench.backbones.keras_applications"}


def __getattr__(attribute: str):
    if attribute in _LAZY:
        return getattr(importlib.import_module(_LAZY[attribute]), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


def names():
    """Registered backbone names in registration order, then those of loaded models files."""
    return catalog.names() + user_models.MODELS.names()


def spec(name_or_path: str) -> BackboneSpec:
    """The spec of a registered name; of a models-file model or a path form, read by building it.

    Raises UnknownNameError (with close matches) for an unknown name and ModelNotFoundError for a
    path that is not a model, before TensorFlow is imported.
    """
    if name_or_path in catalog.REGISTRY:
        return catalog.REGISTRY.get(name_or_path)
    source, user = _user_source(name_or_path)
    return user_models.spec(source, user)


def build(name_or_path: str, pretrained: bool = True, image_size: Optional[int] = None):
    """A trainable feature extractor: float32 [batch, S, S, 3] in [0, 255] -> [batch, feature_dim].

    S is `image_size` if given, else the backbone's native size; registered Keras Applications,
    EfficientNet-Lite and "tiny" accept any reasonable S. `pretrained=True` loads the ImageNet
    weights ("tiny" has none and gets a fixed seeded initialisation instead); `pretrained=False`
    initialises randomly from Keras's global seed; Inception v1 and BN-Inception, TF-Hub
    SavedModels when pretrained, are then their Keras architecture (tfbench.backbones.inception),
    since a SavedModel cannot be re-initialised. Two Keras behaviours carry through:
    MobileNet v1/v2 at 96-192 px load the weights Keras trained at that resolution (Keras
    downloads that file itself), and a randomly initialised EfficientNet (B0-B7) keeps its input
    Normalization at identity, since its ImageNet mean/variance ship with the weights file, so it
    sees [0, 1] inputs. Path forms: see tfbench.backbones.user_models.

    Raises UnknownNameError (with close matches) for an unknown name, ModelNotFoundError for a
    missing path, and WeightsUnavailableError when pretrained weights cannot be fetched.
    """
    if name_or_path in catalog.REGISTRY:
        return _build_registered(catalog.REGISTRY.get(name_or_path), pretrained, image_size)
    source, user = _user_source(name_or_path)
    return user_models.build(source, pretrained, image_size, user)


def _build_registered(backbone: BackboneSpec, pretrained: bool, image_size: Optional[int]):
    if backbone.source == "slim" or (backbone.architecture and not pretrained):
        from tfbench.backbones import inception

        return inception.build(backbone, pretrained, image_size)
    if backbone.source == "keras":
        from tfbench.backbones import keras_applications

        return keras_applications.build(backbone, pretrained, image_size)
    if backbone.source == "hub":
        from tfbench.backbones import hub_layer

        return hub_layer.build(backbone.handle, backbone.name, pretrained, image_size,
                               backbone.image_size, backbone.scaling)
    if backbone.source == "efficientnet_lite":
        from tfbench.backbones import efficientnet_lite

        return efficientnet_lite.build(backbone.name, pretrained=pretrained, image_size=image_size)
    from tfbench.backbones import tiny

    return tiny.build(backbone, pretrained, image_size)


_HEADLESS = {"hub": "TF-Hub feature vector", "saved_model": "SavedModel feature extractor",
             "keras_file": ".keras feature model", "tiny": "test network without ImageNet weights"}


def build_imagenet_classifier(name_or_path: str):
    """The network with its own ImageNet classifier, at its native size S: float32
    [batch, S, S, 3] in [0, 255] -> [batch, 1000] class probabilities, the classes in the standard
    order (sorted WordNet ids) that TFDS imagenet2012 labels use, behind the same input scaling
    as `build`.

    Registered Keras Applications, EfficientNet-Lite and Inception v4 have one; anything else raises
    NoImageNetClassifierError, UnknownNameError or ModelNotFoundError before Keras is imported.
    """
    backbone = catalog.REGISTRY.get(name_or_path) if name_or_path in catalog.REGISTRY else None
    if backbone is not None and backbone.source == "keras":
        from tfbench.backbones import keras_applications

        return keras_applications.build_classifier(backbone)
    if backbone is not None and backbone.source == "efficientnet_lite":
        from tfbench.backbones import efficientnet_lite

        return efficientnet_lite.build(backbone.name, include_top=True)
    if backbone is not None and backbone.source == "slim":
        from tfbench.backbones import inception

        return inception.build_classifier(backbone)
    kind = backbone.source if backbone is not None else user_models.locate(_user_source(name_or_path)[0])[0]
    raise NoImageNetClassifierError(
        f"ImageNet top-1 cannot be measured for {name_or_path!r}: it is a {_HEADLESS[kind]} "
        "without an ImageNet classifier; its top-1 is given instead (the catalog's figure for a "
        "registered model; imagenet_top1 with top1_source in a models-file entry for your own)")


def weights_fingerprint(name_or_path: str, pretrained: bool) -> str:
    """A stable identity of the weights a `build` call starts from, for feature-cache keys."""
    if not pretrained:
        return f"{name_or_path}:random-init"
    if name_or_path in catalog.REGISTRY:
        backbone = catalog.REGISTRY.get(name_or_path)
        if backbone.source == "keras":
            return f"{backbone.name}:keras:{backbone.weights_file}"
        if backbone.source == "hub":
            return f"{backbone.name}:hub:{backbone.handle}"
        if backbone.source == "efficientnet_lite":
            from tfbench.backbones import efficientnet_lite

            return f"{backbone.name}:{efficientnet_lite.weights_fingerprint(backbone.name)}"
        if backbone.source == "slim":
            from tfbench.backbones import slim_checkpoint

            return f"{backbone.name}:slim:{slim_checkpoint.CHECKPOINTS.get(backbone.name).url}"
        return f"{backbone.name}:seeded-init:{catalog.TINY_SEED}"
    source, _ = _user_source(name_or_path)
    return user_models.weights_fingerprint(source)


def _user_source(name_or_path: str):
    """(source, UserModel or None) of a models-file name or a path form; else UnknownNameError."""
    if name_or_path in user_models.MODELS:
        user = user_models.MODELS.get(name_or_path)
        return user.source, user
    if user_models.locate(name_or_path) is None:
        raise UnknownNameError(
            unknown_name_message(catalog.REGISTRY.kind, name_or_path, names(),
                                 catalog.REGISTRY.list_hint))
    return name_or_path, None
