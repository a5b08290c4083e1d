"""What a network costs: its parameters and its multiply-adds per image, as published.

Cost estimates (tfbench.estimate_cost) need a network's cost before anything has run on it, and
checkpoint sizes (tfbench.preflight) its parameter count. Throughput is measured whenever it can
be (run records, warm-up steps, `python -m tfbench.doctor`); this table only scales one measured or
stated rate to the other networks. Multiply-adds are a coarse proxy for time: depthwise networks
(MobileNets, NASNet, EfficientNets) run slower on GPUs than their multiply-adds say, so a rate
scaled from ResNet-50 flatters them; a measurement replaces the table as soon as there is one.

Multiply-adds are per image at the network's native size (catalog.BackboneSpec.image_size) and
scale with the image's area. Parameter counts include the ImageNet classifier where the source
counts it (a slight over-estimate of a checkpoint, never an under-estimate). Sources, per row:
  HE    He et al., "Deep Residual Learning", CVPR 2016, Table 1 (ResNet v2 has the same layers)
  KERAS Keras Applications documentation table (keras.io/api/applications), "Parameters"
  ZOPH  Zoph et al., "Learning Transferable Architectures", CVPR 2018, Tables 2 and 3
  HOW   Howard et al., "MobileNets", 2017, Table 8
  SAN   Sandler et al., "MobileNetV2", CVPR 2018, Table 4
  DENSE Huang et al., "Densely Connected Convolutional Networks", CVPR 2017, Fig. 3 (read off
        the plot: about 2.9, 3.4 and 4.3 G)
  EFF   Tan & Le, "EfficientNet", ICML 2019, Table 2;  EFF2: "EfficientNetV2", ICML 2021,
        Tables 7 and 10 (and the B0-B3 rows of the official repository's README)
  CONV  Liu et al., "A ConvNet for the 2020s", CVPR 2022, Table 1 (224 px)
  LITE  tensorflow/tpu models/official/efficientnet/lite/README.md
  V4    Inception v4: 42.7 M parameters and 12.3 G multiply-adds as listed beside NASNet by
        Liu et al., "Progressive Neural Architecture Search", ECCV 2018, Table 4
  TINY  counted by hand from tfbench.backbones.tiny (three 3x3 convolutions with batch norm)
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from tfbench.backbones import catalog

REFERENCE = "resnet50"  # every relative cost is relative to ResNet-50 at its native 224 px
# Below this relative cost a network's time per step is mostly fixed overhead (input pipeline,
# kernel launches), not arithmetic: its measured rate says nothing about other networks, and a rate
# scaled to it uses this cost instead of its own.
MIN_SCALABLE_COST = 0.01

# name: (parameters, multiply-adds per image at the native size, source)
COSTS: Dict[str, Tuple[float, float, str]] = {
    "resnet50": (25.6e6, 3.8e9, "HE, KERAS"),
    "resnet101": (44.7e6, 7.6e9, "HE, KERAS"),
    "resnet152": (60.4e6, 11.3e9, "HE, KERAS"),
    "resnet50_v2": (25.6e6, 3.8e9, "HE, KERAS"),
    "resnet101_v2": (44.7e6, 7.6e9, "HE, KERAS"),
    "resnet152_v2": (60.4e6, 11.3e9, "HE, KERAS"),
    "densenet121": (8.1e6, 2.9e9, "DENSE, KERAS"),
    "densenet169": (14.3e6, 3.4e9, "DENSE, KERAS"),
    "densenet201": (20.2e6, 4.3e9, "DENSE, KERAS"),
    "mobilenet_v1": (4.2e6, 569e6, "HOW"),
    "mobilenet_v2": (3.4e6, 300e6, "SAN"),
    "mobilenet_v2_140": (6.9e6, 585e6, "SAN"),
    "nasnet_mobile": (5.3e6, 564e6, "ZOPH"),
    "nasnet_large": (88.9e6, 23.8e9, "ZOPH"),
    "inception_v1": (6.6e6, 1.448e9, "ZOPH"),
    "inception_v2": (11.2e6, 1.94e9, "ZOPH"),
    "inception_v3": (23.8e6, 5.72e9, "ZOPH"),
    "inception_v4": (42.7e6, 12.3e9, "V4"),
    "inception_resnet_v2": (55.8e6, 13.2e9, "ZOPH"),
    "xception": (22.8e6, 8.38e9, "ZOPH"),
    "efficientnet_b0": (5.3e6, 0.39e9, "EFF"),
    "efficientnet_b1": (7.8e6, 0.70e9, "EFF"),
    "efficientnet_b2": (9.2e6, 1.0e9, "EFF"),
    "efficientnet_b3": (12e6, 1.8e9, "EFF"),
    "efficientnet_b4": (19e6, 4.2e9, "EFF"),
    "efficientnet_b5": (30e6, 9.9e9, "EFF"),
    "efficientnet_b6": (43e6, 19e9, "EFF"),
    "efficientnet_b7": (66e6, 37e9, "EFF"),
    "efficientnet_v2_b0": (7.1e6, 0.72e9, "EFF2"),
    "efficientnet_v2_b1": (8.1e6, 1.2e9, "EFF2"),
    "efficientnet_v2_b2": (10.1e6, 1.7e9, "EFF2"),
    "efficientnet_v2_b3": (14.4e6, 3.0e9, "EFF2"),
    "efficientnet_v2_s": (22e6, 8.8e9, "EFF2"),
    "efficientnet_v2_m": (54e6, 24e9, "EFF2"),
    "efficientnet_v2_l": (120e6, 53e9, "EFF2"),
    "convnext_tiny": (28e6, 4.5e9, "CONV"),
    "convnext_small": (50e6, 8.7e9, "CONV"),
    "convnext_base": (89e6, 15.4e9, "CONV"),
    "convnext_large": (198e6, 34.4e9, "CONV"),
    "convnext_xlarge": (350e6, 60.9e9, "CONV"),
    "efficientnet_lite0": (4.7e6, 0.41e9, "LITE"),
    "efficientnet_lite1": (5.4e6, 0.63e9, "LITE"),
    "efficientnet_lite2": (6.1e6, 0.90e9, "LITE"),
    # 3x3 convolutions 3->8 (32 px), 8->16 (16 px), 16->32 (8 px); batch norm 4 values per channel
    "tiny": (216 + 1152 + 4608 + 4 * (8 + 16 + 32), 32 * 32 * 216 + 16 * 16 * 1152 + 8 * 8 * 4608, "TINY"),
}


def parameters(name: str) -> Optional[float]:
    """The network's parameter count, or None for a network the table does not know."""
    return COSTS[name][0] if name in COSTS else None


def multiply_adds(name: str, image_size: Optional[int] = None) -> Optional[float]:
    """Multiply-adds of one forward pass of one image at `image_size` (default: native)."""
    if name not in COSTS:
        return None
    native = catalog.REGISTRY.get(name).image_size
    return COSTS[name][1] * ((image_size or native) / native) ** 2


def relative_cost(name: str, image_size: Optional[int] = None) -> Optional[float]:
    """Time per image relative to ResNet-50 at 224 px, by multiply-adds; None when unknown."""
    own = multiply_adds(name, image_size)
    return None if own is None else own / multiply_adds(REFERENCE)


def scalable(name: str, image_size: Optional[int] = None) -> bool:
    """Whether a rate measured on this network may be scaled to others by multiply-adds."""
    cost = relative_cost(name, image_size)
    return cost is not None and cost >= MIN_SCALABLE_COST
