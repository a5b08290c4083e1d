"""ImageNet backbones as Keras 3 feature extractors: the registry and `build()`.

Every backbone is built the same way for every regime: a `keras.Model` taking float32 images
[batch, S, S, 3] with values in [0, 255] and returning pooled penultimate features
[batch, feature_dim]. The network's own input scaling is a layer inside the model, so data
pipelines never need to know which network they feed, and a fine-tuned model saved with
`model.save()` still takes raw pixels.

Sources:
  - Keras Applications (`include_top=False, pooling="avg"`); EfficientNet, EfficientNetV2 and
    ConvNeXt already scale their input inside the Keras model, the others get an `InputScaling`
    layer in front (modes "tf" [-1, 1], "caffe" BGR minus the ImageNet mean, "torch" ImageNet
    mean/std), matching `keras.applications.<module>.preprocess_input`.
  - TF-Hub TF2 SavedModels for the paper's networks Keras lacks (Inception v1, BN-Inception
    "Inception v2"), through `tfbench.hub_layer.SavedModelLayer`, fed [0, 1] images as TF-Hub's
    image convention asks. No TF2 SavedModel of Inception v4 is published on TF-Hub (its docs list
    none, not even a TF1 module), so it is not registered.
  - EfficientNet-Lite0/1/2 from `tfbench.efficientnet_lite` (imported only when used).
  - "tiny", a small CNN for tests.
  - Sources named on the command line: "hub:<handle, URL or path>", a local SavedModel directory,
    or a path ending in ".keras" (see `build`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import keras
import tensorflow_hub as hub

from tfbench.hub_layer import SavedModelLayer  # also registers it for loading .keras files
from tfbench.registry import Registry, UnknownNameError, unknown_name_message

DEFAULT_IMAGE_SIZE = 224
_TINY_SEED = 1234
_SAVED_MODEL_SCALING = "unit"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched; the message says how to supply them locally."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is, and where its ImageNet accuracy figure comes from.

    Source-specific fields: `keras_application`/`keras_kwargs` (the `keras.applications`
    constructor), `weights_file`/`weights_url` (the Keras weights file, fetched into
    $KERAS_HOME/models), `handle` (TF-Hub handle, SavedModel directory or .keras path), and
    `scaling_mode` (the `InputScaling` mode put in front of the network; None when the network
    scales its own input).
    """

    name: str
    source: str
    image_size: int
    feature_dim: int
    imagenet_top1: Optional[float]
    top1_source: str
    input_scaling: str
    scaling_mode: Optional[str] = None
    keras_application: Optional[str] = None
    keras_kwargs: Tuple[Tuple[str, Any], ...] = ()
    weights_file: Optional[str] = None
    weights_url: Optional[str] = None
    handle: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Input scaling


_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
SCALING_DESCRIPTIONS = {
    "tf": "[-1, 1]",
    "caffe": "caffe BGR mean",
    "torch": "torch mean/std",
    "unit": "[0, 1]",
    None: "inside model",
}


@keras.saving.register_keras_serializable(package="tfbench")
class InputScaling(keras.layers.Layer):
    """Maps [0, 255] RGB pixels to what a network was trained on.

    Modes: "tf" (x / 127.5 - 1), "caffe" (RGB -> BGR, minus the ImageNet BGR mean), "torch"
    ((x / 255 - ImageNet mean) / ImageNet std), "unit" (x / 255, TF-Hub's image convention).
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in SCALING_DESCRIPTIONS or mode is None:
            choices = ", ".join(m for m in SCALING_DESCRIPTIONS if m)
            raise ValueError(f"unknown input scaling mode {mode!r}; valid choices: {choices}")
        self.mode = mode

    def call(self, images):
        ops = keras.ops
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "unit":
            return images / 255.0
        if self.mode == "caffe":
            return ops.flip(images, axis=-1) - ops.convert_to_tensor(_CAFFE_BGR_MEAN, images.dtype)
        mean = ops.convert_to_tensor(_TORCH_MEAN, images.dtype)
        std = ops.convert_to_tensor(_TORCH_STD, images.dtype)
        return (images / 255.0 - mean) / std

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


# ---------------------------------------------------------------------------------------------
# The registry

REGISTRY: Registry[BackboneSpec] = Registry(
    "model", "python -m tfbench.probe --model=list lists them"
)

KERAS_TABLE = "Keras Applications documentation table (keras.io/api/applications)"
_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _register(name: str, source: str, image_size: int, feature_dim: int,
              top1: Optional[float], top1_source: str, scaling_mode: Optional[str],
              **fields) -> None:
    REGISTRY.register(name, BackboneSpec(
        name=name, source=source, image_size=image_size, feature_dim=feature_dim,
        imagenet_top1=top1, top1_source=top1_source,
        input_scaling=SCALING_DESCRIPTIONS[scaling_mode], scaling_mode=scaling_mode, **fields,
    ))


def _register_keras(name: str, application: str, image_size: int, feature_dim: int, top1: float,
                    scaling_mode: Optional[str], weights_file: str, weights_url: str,
                    top1_source: str = KERAS_TABLE, **keras_kwargs) -> None:
    _register(name, "keras", image_size, feature_dim, top1, top1_source, scaling_mode,
              keras_application=application, keras_kwargs=tuple(sorted(keras_kwargs.items())),
              weights_file=weights_file, weights_url=weights_url)


def _keras_notop(name: str, application: str, image_size: int, feature_dim: int, top1: float,
                 scaling_mode: Optional[str], folder: str, weights_name: str) -> None:
    """Keras's `<folder>/<weights_name>_weights_tf_dim_ordering_tf_kernels_notop.h5` files."""
    weights_file = f"{weights_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    _register_keras(name, application, image_size, feature_dim, top1, scaling_mode,
                    weights_file, f"{_KERAS_WEIGHTS}{folder}/{weights_file}")


for _depth, _top1 in ((50, 0.749), (101, 0.764), (152, 0.766)):
    _keras_notop(f"resnet{_depth}", f"ResNet{_depth}", 224, 2048, _top1, "caffe", "resnet",
                 f"resnet{_depth}")
for _depth, _top1 in ((50, 0.760), (101, 0.772), (152, 0.780)):
    _keras_notop(f"resnet{_depth}_v2", f"ResNet{_depth}V2", 224, 2048, _top1, "tf", "resnet",
                 f"resnet{_depth}v2")
for _depth, _dim, _top1 in ((121, 1024, 0.750), (169, 1664, 0.762), (201, 1920, 0.773)):
    _keras_notop(f"densenet{_depth}", f"DenseNet{_depth}", 224, _dim, _top1, "torch", "densenet",
                 f"densenet{_depth}")

_register_keras("mobilenet_v1", "MobileNet", 224, 1024, 0.704, "tf",
                "mobilenet_1_0_224_tf_no_top.h5",
                f"{_KERAS_WEIGHTS}mobilenet/mobilenet_1_0_224_tf_no_top.h5", alpha=1.0)
for _name, _alpha, _dim, _top1, _source in (
    ("mobilenet_v2", 1.0, 1280, 0.713, KERAS_TABLE),
    ("mobilenet_v2_140", 1.4, 1792, 0.750,
     "tensorflow/models research/slim/nets/mobilenet/README.md (mobilenet_v2_1.4_224 checkpoint, "
     "from which the Keras weights were converted)"),
):
    _file = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{_alpha}_224_no_top.h5"
    _register_keras(_name, "MobileNetV2", 224, _dim, _top1, "tf", _file,
                    f"{_KERAS_WEIGHTS}mobilenet_v2/{_file}", top1_source=_source, alpha=_alpha)

for _size, _dim, _top1, _variant in ((224, 1056, 0.744, "mobile"), (331, 4032, 0.825, "large")):
    _register_keras(f"nasnet_{_variant}", f"NASNet{_variant.capitalize()}", _size, _dim, _top1,
                    "tf", f"nasnet_{_variant}_no_top.h5",
                    f"{_KERAS_WEIGHTS}nasnet/NASNet-{_variant}-no-top.h5")

_keras_notop("inception_v3", "InceptionV3", 299, 2048, 0.779, "tf", "inception_v3", "inception_v3")
_keras_notop("inception_resnet_v2", "InceptionResNetV2", 299, 1536, 0.803, "tf",
             "inception_resnet_v2", "inception_resnet_v2")
_keras_notop("xception", "Xception", 299, 2048, 0.790, "tf", "xception", "xception")

for _index, (_size, _dim, _top1) in enumerate((
    (224, 1280, 0.771), (240, 1280, 0.791), (260, 1408, 0.801), (300, 1536, 0.816),
    (380, 1792, 0.829), (456, 2048, 0.836), (528, 2304, 0.840), (600, 2560, 0.843),
)):
    _file = f"efficientnetb{_index}_notop.h5"
    _register_keras(f"efficientnet_b{_index}", f"EfficientNetB{_index}", _size, _dim, _top1, None,
                    _file, f"https://storage.googleapis.com/keras-applications/{_file}")
for _variant, _size, _dim, _top1 in (
    ("b0", 224, 1280, 0.787), ("b1", 240, 1280, 0.798), ("b2", 260, 1408, 0.805),
    ("b3", 300, 1536, 0.820), ("s", 384, 1280, 0.839), ("m", 480, 1280, 0.853),
    ("l", 480, 1280, 0.857),
):
    _file = f"efficientnetv2-{_variant}_notop.h5"
    _register_keras(f"efficientnet_v2_{_variant}", f"EfficientNetV2{_variant.upper()}", _size,
                    _dim, _top1, None, _file, f"{_KERAS_WEIGHTS}efficientnet_v2/{_file}")
_IMAGENET_21K = (KERAS_TABLE + "; these weights were pre-trained on ImageNet-21k, then fine-tuned "
                 "on ImageNet-1k (Keras ConvNeXt docstring)")
for _variant, _application, _dim, _top1, _source in (
    ("tiny", "ConvNeXtTiny", 768, 0.813, KERAS_TABLE),
    ("small", "ConvNeXtSmall", 768, 0.823, KERAS_TABLE),
    ("base", "ConvNeXtBase", 1024, 0.853, _IMAGENET_21K),
    ("large", "ConvNeXtLarge", 1536, 0.863, _IMAGENET_21K),
    ("xlarge", "ConvNeXtXLarge", 2048, 0.867, _IMAGENET_21K),
):
    _file = f"convnext_{_variant}_notop.h5"
    _register_keras(f"convnext_{_variant}", _application, 224, _dim, _top1, None, _file,
                    f"{_KERAS_WEIGHTS}convnext/{_file}", top1_source=_source)

_SLIM_TABLE = ("TF-Slim pre-trained models table (tensorflow/models research/slim/README.md), "
               "checkpoint {} exported into this TF-Hub model")
for _version, _top1 in ((1, 0.698), (2, 0.739)):
    _register(f"inception_v{_version}", "hub", 224, 1024, _top1,
              _SLIM_TABLE.format(f"inception_v{_version}_2016_08_28"), _SAVED_MODEL_SCALING,
              handle=f"https://tfhub.dev/google/imagenet/inception_v{_version}/feature_vector/5")

_LITE_TABLE = "tensorflow/tpu models/official/efficientnet/lite/README.md (FP32 accuracy)"
for _index, (_size, _top1) in enumerate(((224, 0.751), (240, 0.767), (260, 0.776))):
    _register(f"efficientnet_lite{_index}", "efficientnet_lite", _size, 1280, _top1, _LITE_TABLE,
              None)

_register("tiny", "tiny", 32, 32, None, "none: a test network, no ImageNet weights exist", "unit")


# ---------------------------------------------------------------------------------------------
# Public API


def names():
    """Registered backbone names, in registration order."""
    return REGISTRY.names()


def spec(name_or_path: str) -> BackboneSpec:
    """The spec of a registered name, or of a generic source.

    A generic source is built (a remote handle downloaded) to read its input size and feature
    dimension; its ImageNet accuracy is unknown (None).
    """
    if name_or_path in REGISTRY:
        return REGISTRY.get(name_or_path)
    source, location = _generic_source(name_or_path)
    model = build(name_or_path)
    top1_note = "unknown: a model supplied by path or handle"
    return BackboneSpec(
        name=name_or_path, source=source, image_size=int(model.input_shape[1]),
        feature_dim=int(model.output_shape[-1]), imagenet_top1=None, top1_source=top1_note,
        input_scaling=_generic_input_scaling(source), handle=location,
        scaling_mode=None if source == "keras_file" else _SAVED_MODEL_SCALING,
    )


def build(name_or_path: str, pretrained: bool = True,
          image_size: Optional[int] = None) -> keras.Model:
    """A trainable feature extractor: float32 [batch, S, S, 3] in [0, 255] -> [batch, feature_dim].

    S is `image_size` if given, else the backbone's native size; registered Keras Applications,
    EfficientNet-Lite and "tiny" accept any reasonable S. `pretrained=True` loads the ImageNet
    weights ("tiny" has none and gets a fixed seeded initialisation instead); `pretrained=False`
    initialises randomly from Keras's global seed. Two Keras behaviours carry through:
    MobileNet v1/v2 at 96-192 px load the weights Keras trained at that resolution (Keras
    downloads that file itself), and a randomly initialised EfficientNet (B0-B7) keeps its input
    Normalization at identity, since its ImageNet mean/variance ship with the weights file, so it
    sees [0, 1] inputs.

    Generic sources:
      - "hub:<handle>" and a local SavedModel directory: a reusable TF2 SavedModel (callable root,
        image feature vector output) fed [0, 1] images, TF-Hub's image convention. They cannot be
        re-initialised, so `pretrained=False` is an error.
      - "<path>.keras": a Keras *feature* model taking [0, 255] images and scaling them itself;
        an output of rank > 2 is globally average-pooled. A file whose last layer is a softmax or
        sigmoid classifier is refused (save the model without its classification head).
        `pretrained=False` clones the architecture with fresh weights.
      For both, S is the model's static input size if it has one (another `image_size` is an
      error), else `image_size`, else 224.

    Raises UnknownNameError (with close matches) for an unknown name, and
    WeightsUnavailableError when pretrained weights cannot be fetched.
    """
    if name_or_path in REGISTRY:
        backbone = REGISTRY.get(name_or_path)
        return _BUILDERS[backbone.source](backbone, pretrained, image_size)
    source, location = _generic_source(name_or_path)
    if source == "keras_file":
        return _build_keras_file(location, pretrained, image_size)
    return _build_saved_model(location, _model_name(location), pretrained, image_size, None)


def weights_fingerprint(name_or_path: str, pretrained: bool) -> str:
    """A stable identity of the weights a `build` call starts from, for feature-cache keys."""
    if not pretrained:
        return f"{name_or_path}:random-init"
    if name_or_path in REGISTRY:
        backbone = REGISTRY.get(name_or_path)
        if backbone.source == "keras":
            return f"{backbone.name}:keras:{backbone.weights_file}"
        if backbone.source == "hub":
            return f"{backbone.name}:hub:{backbone.handle}"
        if backbone.source == "efficientnet_lite":
            from tfbench import efficientnet_lite

            with _lite_weights_errors(efficientnet_lite):
                return f"{backbone.name}:{efficientnet_lite.weights_fingerprint(backbone.name)}"
        return f"{backbone.name}:seeded-init:{_TINY_SEED}"
    source, location = _generic_source(name_or_path)
    if source == "hub" and _is_remote(location):
        return f"hub:{location}"
    content = "keras_file" if source == "keras_file" else "saved_model"
    return f"{content}:sha256:{_sha256_of_path(location)}"


def keras_weights_path(file_name: str) -> str:
    """Where Keras looks for a weights file: $KERAS_HOME/models, else ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", file_name)


# ---------------------------------------------------------------------------------------------
# Builders


def _feature_model(name: str, image_size: int, network, scaling_mode: Optional[str]) -> keras.Model:
    images = keras.Input((image_size, image_size, 3), name="images")
    scaled = images if scaling_mode is None else InputScaling(scaling_mode)(images)
    return keras.Model(images, network(scaled), name=name)


def _fetch_keras_weights(backbone: BackboneSpec) -> None:
    """Puts the weights file in the Keras cache first, so that offline runs fail here, at once."""
    try:
        keras.utils.get_file(backbone.weights_file, backbone.weights_url, cache_subdir="models")
    except Exception as error:  # any download failure: DNS, HTTP, blocked socket, disk
        raise WeightsUnavailableError(
            f"cannot fetch ImageNet weights of {backbone.name!r} from {backbone.weights_url} "
            f"({_one_line(error)}); download that file to "
            f"{keras_weights_path(backbone.weights_file)} (the directory follows KERAS_HOME), "
            "or build with pretrained=False"
        ) from error


def _build_keras_application(backbone: BackboneSpec, pretrained: bool,
                             image_size: Optional[int]) -> keras.Model:
    size = image_size or backbone.image_size
    if pretrained:
        _fetch_keras_weights(backbone)
    application = getattr(keras.applications, backbone.keras_application)
    network = application(include_top=False, weights="imagenet" if pretrained else None,
                          input_shape=(size, size, 3), pooling="avg", **dict(backbone.keras_kwargs))
    return _feature_model(backbone.name, size, network, backbone.scaling_mode)


def _build_registered_hub(backbone: BackboneSpec, pretrained: bool,
                          image_size: Optional[int]) -> keras.Model:
    return _build_saved_model(backbone.handle, backbone.name, pretrained, image_size,
                              backbone.image_size)


def _build_efficientnet_lite(backbone: BackboneSpec, pretrained: bool,
                             image_size: Optional[int]) -> keras.Model:
    from tfbench import efficientnet_lite

    with _lite_weights_errors(efficientnet_lite):
        return efficientnet_lite.build(backbone.name, pretrained=pretrained, image_size=image_size)


@contextlib.contextmanager
def _lite_weights_errors(efficientnet_lite):
    """Reports efficientnet_lite's missing-weights error as this module's, like every source."""
    try:
        yield
    except efficientnet_lite.WeightsUnavailableError as error:
        raise WeightsUnavailableError(str(error)) from error


def _build_tiny(backbone: BackboneSpec, pretrained: bool, image_size: Optional[int]) -> keras.Model:
    """Three conv-BN-ReLU blocks and global average pooling; seeded when `pretrained`."""
    layers = keras.layers
    size = image_size or backbone.image_size
    images = keras.Input((size, size, 3), name="images")
    x = InputScaling("unit")(images)
    for block, (filters, stride) in enumerate(((8, 1), (16, 2), (32, 2))):
        kernel_init = keras.initializers.HeNormal(seed=_TINY_SEED + block if pretrained else None)
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                          kernel_initializer=kernel_init)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    return keras.Model(images, layers.GlobalAveragePooling2D()(x), name="tiny")


_BUILDERS = {
    "keras": _build_keras_application,
    "hub": _build_registered_hub,
    "efficientnet_lite": _build_efficientnet_lite,
    "tiny": _build_tiny,
}


def _input_size(source: str, static_size: Optional[int], image_size: Optional[int],
                default_size: int) -> int:
    if static_size is not None and image_size is not None and image_size != static_size:
        raise ValueError(
            f"{source} has a fixed input size of {static_size}; "
            f"image_size={image_size} cannot be used"
        )
    return static_size or image_size or default_size


def _build_saved_model(handle: str, name: str, pretrained: bool, image_size: Optional[int],
                       native_size: Optional[int]) -> keras.Model:
    if not pretrained:
        raise ValueError(
            f"pretrained=False is not available for SavedModel {handle!r}: a SavedModel does not "
            "keep its initialisers; use a Keras Application or a .keras file to train from scratch"
        )
    _resolve_hub_handle(handle)
    layer = SavedModelLayer(handle, trainable=True, name=f"{name}_saved_model")
    size = _input_size(handle, layer.static_image_size(), image_size,
                       native_size or DEFAULT_IMAGE_SIZE)
    images = keras.Input((size, size, 3), name="images")
    features = layer(InputScaling(_SAVED_MODEL_SCALING)(images))
    return keras.Model(images, features, name=name)


def _resolve_hub_handle(handle: str) -> None:
    """Downloads a remote handle into the TF-Hub cache, failing with a usable message offline."""
    if not _is_remote(handle):
        if not os.path.isfile(os.path.join(handle, "saved_model.pb")):
            raise FileNotFoundError(f"{handle!r} is not a SavedModel directory (no saved_model.pb)")
        return
    try:
        hub.resolve(handle)
    except Exception as error:  # any download failure: DNS, HTTP, blocked socket, disk
        raise WeightsUnavailableError(
            f"cannot fetch TF-Hub model {handle} ({_one_line(error)}); download the SavedModel "
            "and pass its directory instead (e.g. --model=/path/to/saved_model), or set "
            f"TFHUB_CACHE_DIR (now {os.environ.get('TFHUB_CACHE_DIR', 'unset')}) to a cache that "
            "already holds it"
        ) from error


def _build_keras_file(path: str, pretrained: bool, image_size: Optional[int]) -> keras.Model:
    network = keras.saving.load_model(path, compile=False)
    if len(network.inputs) != 1 or len(network.outputs) != 1:
        raise ValueError(f"{path} must have one image input and one feature output")
    if _ends_in_classifier(network):
        raise ValueError(
            f"{path} ends in a {network.layers[-1].name!r} classifier layer; tfbench needs a "
            "feature model: save the network without its classification head (e.g. "
            "include_top=False, pooling='avg')"
        )
    if not pretrained:
        network = keras.models.clone_model(network)
    _, height, width, _ = network.inputs[0].shape
    if height != width:
        raise ValueError(f"{path} takes {height}x{width} images; tfbench feeds square images")
    size = _input_size(path, height, image_size, DEFAULT_IMAGE_SIZE)
    images = keras.Input((size, size, 3), name="images")
    features = network(images)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D()(features)
    elif len(features.shape) == 3:
        features = keras.layers.GlobalAveragePooling1D()(features)
    elif len(features.shape) != 2:
        raise ValueError(f"{path} outputs rank-{len(features.shape)} tensors; expected rank 2 to 4")
    return keras.Model(images, features, name=_model_name(path))


def _ends_in_classifier(network) -> bool:
    last = network.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    return isinstance(last, keras.layers.Softmax) or activation in ("softmax", "sigmoid")


# ---------------------------------------------------------------------------------------------
# Generic sources


def _generic_source(name_or_path: str) -> Tuple[str, str]:
    """("hub" | "saved_model" | "keras_file", location), or the registry's unknown-name error."""
    if name_or_path.startswith("hub:"):
        return "hub", name_or_path[len("hub:"):]
    if name_or_path.endswith(".keras"):
        if not os.path.isfile(name_or_path):
            raise FileNotFoundError(f"no Keras model file {name_or_path!r}")
        return "keras_file", name_or_path
    if os.path.isdir(name_or_path):
        return "saved_model", name_or_path
    if os.sep in name_or_path:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a SavedModel directory nor a .keras file "
            "(other forms: a registered name or hub:<handle>)"
        )
    raise UnknownNameError(
        unknown_name_message(REGISTRY.kind, name_or_path, REGISTRY.names(), REGISTRY.list_hint)
    )


def _generic_input_scaling(source: str) -> str:
    if source == "keras_file":
        return "inside model (a .keras file must scale [0, 255] input itself)"
    return SCALING_DESCRIPTIONS[_SAVED_MODEL_SCALING]


def _is_remote(handle: str) -> bool:
    return "://" in handle


def _model_name(location: str) -> str:
    """A Keras-safe model name from a path or URL ('/a/b/model.keras' -> 'model')."""
    base = os.path.basename(location.rstrip("/")).removesuffix(".keras")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "backbone"


def _sha256_of_path(path: str) -> str:
    """sha256 of a file's bytes; for a directory, of every file's relative name and sha256."""
    if os.path.isfile(path):
        return _sha256_of_file(path)
    digest = hashlib.sha256()
    for root, _, filenames in sorted(os.walk(path)):
        for filename in sorted(filenames):
            full = os.path.join(root, filename)
            entry = f"{os.path.relpath(full, path)}\0{_sha256_of_file(full)}\n"
            digest.update(entry.encode())
    return digest.hexdigest()


def _sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"
