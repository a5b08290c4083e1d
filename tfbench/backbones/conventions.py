"""Input conventions: which pixel values a network was trained on, as data.

tfbench feeds every backbone float32 RGB pixels in [0, 255]; a convention says how the network's
first layer (`scaling.InputScaling`) maps them to what the network expects:
y = x * scale + offset per channel (after RGB -> BGR when `bgr`). The named conventions match
`keras.applications.<module>.preprocess_input`; user models give a range [lo, hi] or a
per-channel mean/std applied to pixels in [0, 1] (torchvision's and timm's convention).

This module imports neither TensorFlow nor Keras: the catalog and a models file are checked with it
before TensorFlow loads. `description` is part of the feature-cache key, so it names the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

Triple = Tuple[float, float, float]

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
INSIDE_MODEL = "inside model"


@dataclass(frozen=True)
class InputConvention:
    """y = x * scale + offset per channel on [0, 255] pixels (channels reversed first if `bgr`)."""

    description: str
    scale: Triple
    offset: Triple
    bgr: bool = False
    name: Optional[str] = None  # set for the named conventions


def _mean_std(description: str, mean: Sequence[float], std: Sequence[float],
              name: Optional[str] = None, bgr: bool = False, pixel_max: float = 255.0):
    return InputConvention(description, tuple(1.0 / (pixel_max * s) for s in std),
                           tuple(-m / s for m, s in zip(mean, std)), bgr, name)


NAMED: Dict[str, InputConvention] = {
    "tf": InputConvention("[-1, 1]", (1 / 127.5,) * 3, (-1.0,) * 3, name="tf"),
    "caffe": InputConvention("caffe BGR mean", (1.0,) * 3, tuple(-m for m in CAFFE_BGR_MEAN),
                             bgr=True, name="caffe"),
    "torch": _mean_std("torch mean/std", TORCH_MEAN, TORCH_STD, name="torch"),
    "unit": InputConvention("[0, 1]", (1 / 255.0,) * 3, (0.0,) * 3, name="unit"),
}


def named(mode: str) -> InputConvention:
    """The named convention `mode`; ValueError naming the choices otherwise."""
    if mode not in NAMED:
        raise ValueError(f"unknown input scaling mode {mode!r}; valid choices: {', '.join(NAMED)}")
    return NAMED[mode]


def describe(convention: Optional[InputConvention]) -> str:
    """What a spec records as its input scaling; None means the network scales its own input."""
    return INSIDE_MODEL if convention is None else convention.description


def _finite(values: Sequence[float], what: str) -> Tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {list(values)!r}") from None
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{what} must be finite numbers, got {list(values)!r}")
    return numbers


def from_range(low: float, high: float) -> InputConvention:
    """The network expects pixels mapped linearly onto [low, high] (e.g. [0, 1], [-1, 1], [0, 255])."""
    low, high = _finite((low, high), "an input range [lo, hi]")
    if not low < high:
        raise ValueError(f"an input range [lo, hi] needs lo < hi, got [{low:g}, {high:g}]")
    description = f"[{low:g}, {high:g}]"
    return InputConvention(description, ((high - low) / 255.0,) * 3, (low,) * 3)


def from_mean_std(mean: Sequence[float], std: Sequence[float]) -> InputConvention:
    """The network expects (x / 255 - mean) / std per channel (RGB), torchvision's convention."""
    mean = _finite(mean, "input_mean")
    std = _finite(std, "input_std")
    for what, values in (("input_mean", mean), ("input_std", std)):
        if len(values) != 3:
            raise ValueError(f"{what} needs 3 values (R, G, B), got {len(values)}")
    if min(std) <= 0:
        raise ValueError(f"input_std must be positive, got {list(std)}")
    text = ", ".join
    description = f"mean ({text(f'{m:g}' for m in mean)}) std ({text(f'{s:g}' for s in std)}) on [0, 1]"
    return _mean_std(description, mean, std)
