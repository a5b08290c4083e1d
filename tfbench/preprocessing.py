"""Image transforms and the tf.data input pipelines.

Training (fine-tune, scratch): an Inception-style random-resized crop — a box covering 8% to 100%
of the image area with aspect ratio in [3/4, 4/3] — resized to S x S, then a random left-right
flip, as in the paper. Evaluation and probe features: the whole image resized to S x S, no crop.
Both give float32 values in [0, 255]; every backbone scales its own input inside the model.
Resizing is bilinear without antialiasing (tf.image.resize's default).

The training stream is a function of (seed, step) that any step can be reached in without
producing the examples before it (docs/DESIGN.md, "Training data order and resuming"): position p
of the stream (step p // batch) reads example EpochOrder(n, seed).examples(p) of the split's
table — epoch p // n is a permutation of all n examples drawn from (seed, epoch) — and augments it
with stateless crops and flips keyed by (seed, p). A run resumed at step s therefore reads only
the examples of steps s and later, and sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from tfbench.datasets.tables import ExampleTable

AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# The epoch permutations' own random stream, apart from every other use of the seed.
_ORDER_STREAM = 4
_ENDLESS = 2**62  # positions of a training stream: it never runs out
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
    integer scalar: the same pair always gives the same augmentation (training_batches passes
    the stream position). Without a key each call draws a fresh one, so a plain
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
        # tf.image.resize hands back an image whose static shape is already S x S unchanged: uint8.
        return tf.cast(tf.image.resize(image, [image_size, image_size]), tf.float32)

    return transform


class EpochOrder:
    """Which example of an n-example split each position of a training stream reads.

    Epoch e = position // n reads all n examples once, in a permutation drawn from (seed, e)
    alone (numpy's Generator.permutation: every order equally likely), so a position's example
    is known without the positions before it, and every epoch has an order of its own.
    """

    def __init__(self, size: int, seed: int):
        if size < 1:
            raise ValueError("the training split is empty: nothing to train on")
        self.size, self.seed = size, int(seed)
        self._lock = threading.Lock()
        self._last: Tuple[int, Optional[np.ndarray]] = (-1, None)  # consecutive blocks share an epoch

    def permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            cached_epoch, cached = self._last
            if cached_epoch != epoch:
                sequence = np.random.SeedSequence([self.seed, _ORDER_STREAM, int(epoch)])
                cached = np.random.Generator(np.random.PCG64(sequence)).permutation(self.size)
                self._last = (epoch, cached)
            return cached

    def examples(self, positions: np.ndarray) -> np.ndarray:
        """Example numbers (rows of the table) read at stream `positions` (int64 array)."""
        epochs, offsets = np.divmod(np.asarray(positions, np.int64), self.size)
        rows = np.empty(len(epochs), np.int64)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            rows[chosen] = self.permutation(int(epoch))[offsets[chosen]]
        return rows


def training_batches(table: "ExampleTable", image_size: int, batch_size: int, seed: int,
                     start_step: int = 0) -> tf.data.Dataset:
    """Endless (images float32 [B, S, S, 3], labels) batches of `table` from step `start_step` on.

    Batch s holds stream positions s * B .. s * B + B - 1 (see the module doc): the same batches
    whatever step the stream starts at and however many threads decode. Rows are looked up a batch
    at a time in numpy (the table may hold gigabytes of encoded images, more than a graph
    constant can), then decoded and augmented in parallel.
    """
    order = EpochOrder(len(table), seed)
    names = sorted(table.columns)
    columns = [_tensor_ready(table.columns[name]) for name in names]
    dtypes = [tf.string if column.dtype == object else tf.as_dtype(column.dtype) for column in columns]

    def fetch(positions):
        rows = order.examples(positions)
        return [column[rows] for column in columns]

    def lookup(positions):
        values = tf.numpy_function(fetch, [positions], dtypes, stateful=False)
        for value, column in zip(values, columns):
            value.set_shape([None, *column.shape[1:]])
        return positions, dict(zip(names, values))

    transform = train_transform(image_size, seed)

    def augment(position, row):
        return transform(table.decode(row), position), row["label"]

    positions = tf.data.Dataset.range(start_step * batch_size, _ENDLESS)
    examples = positions.batch(batch_size).map(lookup).unbatch()
    batches = examples.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE)


def _tensor_ready(column: np.ndarray) -> np.ndarray:
    """Text columns as bytes objects (what a tf.string tensor takes from numpy)."""
    if column.dtype.kind == "U":
        return np.char.encode(column, "utf-8").astype(object)
    if column.dtype.kind == "S":
        return column.astype(object)
    return column


def pipeline(dataset: tf.data.Dataset, image_size: int, batch_size: int) -> tf.data.Dataset:
    """Evaluation batches (images float32 [B, S, S, 3], labels) of a dataset of {"image", "label", ...}:
    in order, whole images resized, the last partial batch kept (no example dropped).

    The source's decoding and this resize are fused into one parallel step that writes each image
    straight into its batch (tf.data's map fusion, then its map-and-batch fusion): decoded images
    wait in no in-order buffer of their own, where one slow decode would idle every other core,
    and make no extra hop between steps (bench/input_bench.py). The pixels are those of decoding,
    then eval_transform.
    """
    transform = eval_transform(image_size)
    batches = dataset.map(
        lambda example: (transform(example["image"]), example["label"]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    options = tf.data.Options()
    options.experimental_optimization.map_fusion = True
    return batches.batch(batch_size).with_options(options).prefetch(tf.data.AUTOTUNE)


def _seed_or_random(seed: Optional[int]) -> int:
    return random.SystemRandom().randrange(_SEED_RANGE) if seed is None else int(seed)
