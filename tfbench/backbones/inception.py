"""Inception v1, BN-Inception (Inception v2) and Inception v4 as Keras 3 models, laid out as the
TF-Slim definitions (tensorflow/models research/slim/nets/inception_v{1,2,4}.py) lay them out.

Every convolution is slim's `conv2d` under `inception_utils.inception_arg_scope`: no bias, batch
norm without gamma (scale=False, epsilon 0.001, decay 0.9997), ReLU, He-style truncated-normal
initialisation; "same" padding is TensorFlow's, as slim's. Each Keras layer is named by its slim
variable scope with "/" written "." (Keras forbids "/" in names): the convolution
"Mixed_5b.Branch_1.Conv2d_0a_1x1" holds slim's `Mixed_5b/Branch_1/Conv2d_0a_1x1/weights`, the
layer "<scope>.BatchNorm" its `beta`, `moving_mean` and `moving_variance`. That naming is what
lets tfbench.backbones.slim_checkpoint import a slim checkpoint tensor by tensor.

Inception v4 gets its ImageNet weights from the slim checkpoint (no TF2 SavedModel of it is
published). Inception v1 and BN-Inception keep their TF-Hub SavedModels for the pretrained
regimes: those are exports of the same slim checkpoints (inception_v{1,2}_2016_08_28), already
registered, fingerprinted and measured, so importing the checkpoints again would add two
downloads and change no number. Their Keras architectures here serve training from scratch,
which a SavedModel cannot do (it keeps no initialisers).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import keras

from tfbench.backbones.catalog import MIN_IMAGE_SIZE, BackboneSpec
from tfbench.backbones.scaling import InputScaling

BATCH_NORM_EPSILON = 0.001  # inception_utils.inception_arg_scope
BATCH_NORM_MOMENTUM = 0.9997  # its batch_norm_decay
V4_CLASSES = 1001  # slim's ImageNet label set: class 0 is "background"
V4_DROPOUT = 0.2  # slim's dropout_keep_prob 0.8 before the logits
FEATURES_LAYER = "global_pool"
LOGITS_LAYER = "Logits.Logits"

Kernel = Union[int, Tuple[int, int]]


def conv(x, filters: int, kernel: Kernel, scope: str, strides: int = 1, padding: str = "same"):
    """slim.conv2d under the Inception arg scope: conv without bias, batch norm without gamma, ReLU."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                            kernel_initializer="he_normal", name=scope)(x)
    x = keras.layers.BatchNormalization(scale=False, epsilon=BATCH_NORM_EPSILON,
                                        momentum=BATCH_NORM_MOMENTUM, name=f"{scope}.BatchNorm")(x)
    return keras.layers.ReLU(name=f"{scope}.Relu")(x)


def max_pool(x, size: int, scope: str, strides: int = 1, padding: str = "same"):
    return keras.layers.MaxPooling2D(size, strides, padding=padding, name=scope)(x)


def avg_pool(x, size: int, scope: str, strides: int = 1, padding: str = "same"):
    return keras.layers.AveragePooling2D(size, strides, padding=padding, name=scope)(x)


def concat(branches: Sequence, scope: str):
    return keras.layers.Concatenate(axis=-1, name=f"{scope}.concat")(list(branches))


def _mixed(x, scope: str, branches: Sequence[Sequence[Tuple]]):
    """An Inception module: branch i applies its layers in order, the outputs are concatenated.

    A layer is (name, filters, kernel) for a convolution, optionally with stride and padding, or
    ("MaxPool_..."/"AvgPool_...", None, size[, stride, padding]) for a pool.
    """
    outputs = []
    for index, layers in enumerate(branches):
        y = x
        for name, filters, kernel, *rest in layers:
            path = f"{scope}.Branch_{index}.{name}"
            if filters is not None:
                y = conv(y, filters, kernel, path, *rest)
            elif name.startswith("MaxPool"):
                y = max_pool(y, kernel, path, *rest)
            else:
                y = avg_pool(y, kernel, path, *rest)
        outputs.append(y)
    return concat(outputs, scope)


# ---------------------------------------------------------------------------------------------
# Inception v1 (GoogLeNet with batch norm), slim inception_v1_base.

def _v1_module(x, scope: str, b0: int, b1: Tuple[int, int], b2: Tuple[int, int], b3: int):
    return _mixed(x, scope, (
        (("Conv2d_0a_1x1", b0, 1),),
        (("Conv2d_0a_1x1", b1[0], 1), ("Conv2d_0b_3x3", b1[1], 3)),
        (("Conv2d_0a_1x1", b2[0], 1), ("Conv2d_0b_3x3", b2[1], 3)),
        (("MaxPool_0a_3x3", None, 3), ("Conv2d_0b_1x1", b3, 1)),
    ))


_V1_MODULES = {
    "Mixed_3b": (64, (96, 128), (16, 32), 32), "Mixed_3c": (128, (128, 192), (32, 96), 64),
    "Mixed_4b": (192, (96, 208), (16, 48), 64), "Mixed_4c": (160, (112, 224), (24, 64), 64),
    "Mixed_4d": (128, (128, 256), (24, 64), 64), "Mixed_4e": (112, (144, 288), (32, 64), 64),
    "Mixed_4f": (256, (160, 320), (32, 128), 128), "Mixed_5b": (256, (160, 320), (32, 128), 128),
    "Mixed_5c": (384, (192, 384), (48, 128), 128),
}
_V1_POOLS_BEFORE = {"Mixed_4b": ("MaxPool_4a_3x3", 3), "Mixed_5b": ("MaxPool_5a_2x2", 2)}


def inception_v1_base(x):
    """[S, S, 3] -> [S/32, S/32, 1024]."""
    x = conv(x, 64, 7, "Conv2d_1a_7x7", strides=2)
    x = max_pool(x, 3, "MaxPool_2a_3x3", strides=2)
    x = conv(x, 64, 1, "Conv2d_2b_1x1")
    x = conv(x, 192, 3, "Conv2d_2c_3x3")
    x = max_pool(x, 3, "MaxPool_3a_3x3", strides=2)
    for scope, widths in _V1_MODULES.items():
        if scope in _V1_POOLS_BEFORE:
            name, size = _V1_POOLS_BEFORE[scope]
            x = max_pool(x, size, name, strides=2)
        x = _v1_module(x, scope, *widths)
    return x


# ---------------------------------------------------------------------------------------------
# BN-Inception (Inception v2), slim inception_v2_base (use_separable_conv=True, depth_multiplier 1).

def _v2_module(x, scope: str, b0: int, b1: Tuple[int, int], b2: Tuple[int, int], b3: int,
               pool: str = "AvgPool_0a_3x3"):
    return _mixed(x, scope, (
        (("Conv2d_0a_1x1", b0, 1),),
        (("Conv2d_0a_1x1", b1[0], 1), ("Conv2d_0b_3x3", b1[1], 3)),
        (("Conv2d_0a_1x1", b2[0], 1), ("Conv2d_0b_3x3", b2[1], 3), ("Conv2d_0c_3x3", b2[1], 3)),
        ((pool, None, 3), ("Conv2d_0b_1x1", b3, 1)),
    ))


def _v2_reduction(x, scope: str, b0: Tuple[int, int], b1: Tuple[int, int]):
    return _mixed(x, scope, (
        (("Conv2d_0a_1x1", b0[0], 1), ("Conv2d_1a_3x3", b0[1], 3, 2)),
        (("Conv2d_0a_1x1", b1[0], 1), ("Conv2d_0b_3x3", b1[1], 3), ("Conv2d_1a_3x3", b1[1], 3, 2)),
        (("MaxPool_1a_3x3", None, 3, 2),),
    ))


def inception_v2_base(x):
    """[S, S, 3] -> [S/32, S/32, 1024]. The 7x7 stem is slim's separable convolution (depthwise
    multiplier 8, then 64 pointwise filters)."""
    x = keras.layers.SeparableConv2D(64, 7, strides=2, padding="same", depth_multiplier=8,
                                     use_bias=False, depthwise_initializer="he_normal",
                                     pointwise_initializer="he_normal", name="Conv2d_1a_7x7")(x)
    x = keras.layers.BatchNormalization(scale=False, epsilon=BATCH_NORM_EPSILON,
                                        momentum=BATCH_NORM_MOMENTUM,
                                        name="Conv2d_1a_7x7.BatchNorm")(x)
    x = keras.layers.ReLU(name="Conv2d_1a_7x7.Relu")(x)
    x = max_pool(x, 3, "MaxPool_2a_3x3", strides=2)
    x = conv(x, 64, 1, "Conv2d_2b_1x1")
    x = conv(x, 192, 3, "Conv2d_2c_3x3")
    x = max_pool(x, 3, "MaxPool_3a_3x3", strides=2)
    x = _v2_module(x, "Mixed_3b", 64, (64, 64), (64, 96), 32)
    x = _v2_module(x, "Mixed_3c", 64, (64, 96), (64, 96), 64)
    x = _v2_reduction(x, "Mixed_4a", (128, 160), (64, 96))
    x = _v2_module(x, "Mixed_4b", 224, (64, 96), (96, 128), 128)
    x = _v2_module(x, "Mixed_4c", 192, (96, 128), (96, 128), 128)
    x = _v2_module(x, "Mixed_4d", 160, (128, 160), (128, 160), 96)
    x = _v2_module(x, "Mixed_4e", 96, (128, 192), (160, 192), 96)
    x = _v2_reduction(x, "Mixed_5a", (128, 192), (192, 256))
    x = _v2_module(x, "Mixed_5b", 352, (192, 320), (160, 224), 128)
    return _v2_module(x, "Mixed_5c", 352, (192, 320), (192, 224), 128, pool="MaxPool_0a_3x3")


# ---------------------------------------------------------------------------------------------
# Inception v4, slim inception_v4_base.

def _v4_inception_a(x, scope: str):
    return _mixed(x, scope, (
        (("Conv2d_0a_1x1", 96, 1),),
        (("Conv2d_0a_1x1", 64, 1), ("Conv2d_0b_3x3", 96, 3)),
        (("Conv2d_0a_1x1", 64, 1), ("Conv2d_0b_3x3", 96, 3), ("Conv2d_0c_3x3", 96, 3)),
        (("AvgPool_0a_3x3", None, 3), ("Conv2d_0b_1x1", 96, 1)),
    ))


def _v4_inception_b(x, scope: str):
    return _mixed(x, scope, (
        (("Conv2d_0a_1x1", 384, 1),),
        (("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_1x7", 224, (1, 7)), ("Conv2d_0c_7x1", 256, (7, 1))),
        (("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_7x1", 192, (7, 1)), ("Conv2d_0c_1x7", 224, (1, 7)),
         ("Conv2d_0d_7x1", 224, (7, 1)), ("Conv2d_0e_1x7", 256, (1, 7))),
        (("AvgPool_0a_3x3", None, 3), ("Conv2d_0b_1x1", 128, 1)),
    ))


def _v4_inception_c(x, scope: str):
    """Branches 1 and 2 end in a 1x3 and a 3x1 convolution side by side, concatenated."""
    def split(y, path: str, first: str, second: str):
        return concat([conv(y, 256, (1, 3), f"{path}.{first}"),
                       conv(y, 256, (3, 1), f"{path}.{second}")], path)

    branch_0 = conv(x, 256, 1, f"{scope}.Branch_0.Conv2d_0a_1x1")
    branch_1 = conv(x, 384, 1, f"{scope}.Branch_1.Conv2d_0a_1x1")
    branch_1 = split(branch_1, f"{scope}.Branch_1", "Conv2d_0b_1x3", "Conv2d_0c_3x1")
    branch_2 = conv(x, 384, 1, f"{scope}.Branch_2.Conv2d_0a_1x1")
    branch_2 = conv(branch_2, 448, (3, 1), f"{scope}.Branch_2.Conv2d_0b_3x1")
    branch_2 = conv(branch_2, 512, (1, 3), f"{scope}.Branch_2.Conv2d_0c_1x3")
    branch_2 = split(branch_2, f"{scope}.Branch_2", "Conv2d_0d_1x3", "Conv2d_0e_3x1")
    branch_3 = avg_pool(x, 3, f"{scope}.Branch_3.AvgPool_0a_3x3")
    branch_3 = conv(branch_3, 256, 1, f"{scope}.Branch_3.Conv2d_0b_1x1")
    return concat([branch_0, branch_1, branch_2, branch_3], scope)


def inception_v4_base(x):
    """[299, 299, 3] -> [8, 8, 1536]; the smallest input the valid paddings allow is 75 px."""
    x = conv(x, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = conv(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = conv(x, 64, 3, "Conv2d_2b_3x3")
    x = _mixed(x, "Mixed_3a", (
        (("MaxPool_0a_3x3", None, 3, 2, "valid"),),
        (("Conv2d_0a_3x3", 96, 3, 2, "valid"),),
    ))
    x = _mixed(x, "Mixed_4a", (
        (("Conv2d_0a_1x1", 64, 1), ("Conv2d_1a_3x3", 96, 3, 1, "valid")),
        (("Conv2d_0a_1x1", 64, 1), ("Conv2d_0b_1x7", 64, (1, 7)), ("Conv2d_0c_7x1", 64, (7, 1)),
         ("Conv2d_1a_3x3", 96, 3, 1, "valid")),
    ))
    x = _mixed(x, "Mixed_5a", (
        (("Conv2d_1a_3x3", 192, 3, 2, "valid"),),
        (("MaxPool_1a_3x3", None, 3, 2, "valid"),),
    ))
    for block in "bcde":
        x = _v4_inception_a(x, f"Mixed_5{block}")
    x = _mixed(x, "Mixed_6a", (
        (("Conv2d_1a_3x3", 384, 3, 2, "valid"),),
        (("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_3x3", 224, 3), ("Conv2d_1a_3x3", 256, 3, 2, "valid")),
        (("MaxPool_1a_3x3", None, 3, 2, "valid"),),
    ))
    for block in "bcdefgh":
        x = _v4_inception_b(x, f"Mixed_6{block}")
    x = _mixed(x, "Mixed_7a", (
        (("Conv2d_0a_1x1", 192, 1), ("Conv2d_1a_3x3", 192, 3, 2, "valid")),
        (("Conv2d_0a_1x1", 256, 1), ("Conv2d_0b_1x7", 256, (1, 7)), ("Conv2d_0c_7x1", 320, (7, 1)),
         ("Conv2d_1a_3x3", 320, 3, 2, "valid")),
        (("MaxPool_1a_3x3", None, 3, 2, "valid"),),
    ))
    for block in "bcd":
        x = _v4_inception_c(x, f"Mixed_7{block}")
    return x


ARCHITECTURES: Dict[str, Callable] = {
    "inception_v1": inception_v1_base,
    "inception_v2": inception_v2_base,
    "inception_v4": inception_v4_base,
}
def graph(architecture: str, image_size: int, backbone: BackboneSpec):
    """The [0, 255] image input, the pooled features and slim's ImageNet logits (1001 classes)."""
    if image_size < MIN_IMAGE_SIZE[architecture]:
        raise ValueError(f"image_size {image_size} is too small for {architecture}: at least "
                         f"{MIN_IMAGE_SIZE[architecture]} (native {backbone.image_size})")
    images = keras.Input((image_size, image_size, 3), name="images")
    x = ARCHITECTURES[architecture](InputScaling(backbone.scaling)(images))
    features = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    x = keras.layers.Dropout(V4_DROPOUT, name="Logits.Dropout_1b")(features)
    logits = keras.layers.Dense(V4_CLASSES, name=LOGITS_LAYER)(x)
    return images, features, logits


def build(backbone: BackboneSpec, pretrained: bool, image_size: Optional[int],
          include_logits: bool = False) -> keras.Model:
    """[0, 255] images -> pooled features ([batch, 1536] for v4, 1024 for v1 and v2), or slim's
    1001 ImageNet logits with `include_logits`. `pretrained` imports the slim checkpoint (Inception
    v4; see tfbench.backbones.slim_checkpoint); otherwise the initialisation is random, from Keras's
    global seed."""
    images, features, logits = graph(backbone.architecture, image_size or backbone.image_size,
                                     backbone)
    classifier = keras.Model(images, logits, name=f"{backbone.name}_logits")
    if pretrained:
        from tfbench.backbones import slim_checkpoint

        slim_checkpoint.load(classifier, backbone.name)
    if include_logits:
        return classifier
    return keras.Model(images, features, name=backbone.name)


def build_classifier(backbone: BackboneSpec) -> keras.Model:
    """[0, 255] images at the native size -> [batch, 1000] ImageNet class probabilities: the
    softmax of slim's logits without class 0 ("background"); slim's classes 1..1000 are the
    sorted WordNet ids, the order TFDS imagenet2012 labels use."""
    classifier = build(backbone, True, None, include_logits=True)
    probabilities = keras.layers.Softmax(name="probabilities")(classifier.output[:, 1:])
    return keras.Model(classifier.input, probabilities, name=backbone.name)
