"""Image transforms and the tf.data input pipeline.

Training (fine-tune, scratch): an Inception-style random-resized crop — a box covering 8% to 100%
of the image area with aspect ratio in [3/4, 4/3] — resized to S x S, then a random left-right
flip, as in the paper. Evaluation and probe features: the whole image resized to S x S, no crop.
Both give float32 values in [0, 255]; every backbone scales its own input inside the model.
Resizing is bilinear without antialiasing (tf.image.resize's default).

Crops and flips are stateless random ops keyed by (seed, a per-element key drawn from a seeded
tf.data random stream), so they never depend on thread timing: with deterministic=True, two
pipelines built with the same seed give identical batches. Like the shuffle, the key stream
changes with every new iteration of a pipeline, so an epoch-by-epoch loop sees a new order and
new augmentations each epoch (and the same sequence of them on every run). Both also depend on
TF's global seed, which tf.data folds into every seeded op.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

import tensorflow as tf

AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# Each buffered element is a decoded, full-size image: 1,000 of 500x400 px is ~600 MB.
DEFAULT_SHUFFLE_BUFFER = 1000
_CROP_ATTEMPTS = 10  # after these the sampler falls back to the whole image
_WHOLE_IMAGE_BOX = (((0.0, 0.0, 1.0, 1.0),),)  # [1, 1, 4]: one box, the whole image
_SEED_RANGE = 2**31 - 1

Transform = Callable[..., tf.Tensor]


def random_crop_window(image_shape: tf.Tensor, seed: tf.Tensor):
    """(begin [y, x, 0], size [h, w, -1]) of an Inception-style crop of an image of image_shape.

    The box lies inside the image, covers AREA_RANGE of its area and has an aspect ratio in
    ASPECT_RATIO_RANGE (min_object_covered=0, so only the area range bounds its size).
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant(_WHOLE_IMAGE_BOX),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE,
        max_attempts=_CROP_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def train_transform(image_size: int, seed: Optional[int] = None) -> Transform:
    """uint8 image [H, W, 3] -> float32 [S, S, 3]: random-resized crop, then random flip.

    The returned transform(image, key=None) draws its crop and flip from (seed, key), key an
    integer scalar: the same pair always gives the same augmentation (pipeline passes a seeded
    per-element key). Without a key each call draws a fresh one, so a plain
    dataset.map(transform) still augments every image differently. seed None: a random seed.
    """
    base_seed = _seed_or_random(seed)

    def transform(image: tf.Tensor, key: Optional[tf.Tensor] = None) -> tf.Tensor:
        if key is None:
            key = tf.random.uniform([], maxval=_SEED_RANGE, dtype=tf.int64)
        seed_pair = tf.stack([tf.constant(base_seed, tf.int64), tf.cast(key, tf.int64)])
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, num=2))
        begin, size = random_crop_window(tf.shape(image), crop_seed)
        crop = tf.image.resize(tf.slice(image, begin, size), [image_size, image_size])
        return tf.image.stateless_random_flip_left_right(crop, flip_seed)

    return transform


def eval_description(image_size: int) -> str:
    """What eval_transform does, in words, for records that must say how their images were made."""
    return (f"whole image resized to {image_size}x{image_size} (bilinear, no antialiasing, aspect "
            "ratio not kept, no crop), float32 in [0, 255]")


def eval_transform(image_size: int) -> Transform:
    """uint8 image [H, W, 3] -> float32 [S, S, 3]: the whole image resized, nothing cropped."""

    def transform(image: tf.Tensor) -> tf.Tensor:
        return tf.image.resize(image, [image_size, image_size])

    return transform


def pipeline(
    dataset: tf.data.Dataset,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: Optional[int] = None,
    deterministic: bool = False,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches (images float32 [B, S, S, 3], labels) from a dataset of {"image", "label", ...}.

    training: shuffled through a shuffle_buffer (a new order every epoch), augmented by
    train_transform. repeat=True repeats forever, for step-based training loops (take the steps
    you need); without it each iteration is one epoch, whose last batch may be partial.
    evaluation: in order, whole images resized, the last partial batch kept (no example dropped).
    deterministic=True (needs a seed): pipelines built with the same seed give identical batches;
    False lets tf.data emit elements out of order for speed (each keeps its own augmentation).
    """
    if deterministic and seed is None:
        raise ValueError("deterministic=True needs a seed (got seed=None)")
    if training:
        base_seed = _seed_or_random(seed)
        transform = train_transform(image_size, base_seed)
        shuffled = dataset.shuffle(shuffle_buffer, seed=base_seed, reshuffle_each_iteration=True)
        if repeat:
            shuffled = shuffled.repeat()
        keys = tf.data.Dataset.random(seed=base_seed, rerandomize_each_iteration=True)
        batches = tf.data.Dataset.zip(shuffled, keys).map(
            lambda example, key: (transform(example["image"], key), example["label"]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        if repeat:
            raise ValueError("repeat=True is for training pipelines; evaluation reads one epoch")
        transform = eval_transform(image_size)
        batches = dataset.map(
            lambda example: (transform(example["image"]), example["label"]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    return batches.batch(batch_size).with_options(options).prefetch(tf.data.AUTOTUNE)


def _seed_or_random(seed: Optional[int]) -> int:
    return random.SystemRandom().randrange(_SEED_RANGE) if seed is None else int(seed)
