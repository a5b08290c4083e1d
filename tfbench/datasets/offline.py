"""Datasets that need no download: scikit-learn's bundled digits and Debian's Fashion-MNIST.

They let the whole benchmark run (and be tested) on a machine without internet access.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from typing import Optional

import numpy as np
import sklearn.datasets
import tensorflow as tf

from tfbench.datasets import splits, tfds_source
from tfbench.datasets.catalog import FASHION_MNIST_FILES, DatasetSpec, fashion_mnist_files_present
from tfbench.datasets.errors import DatasetNotPreparedError

# IDX header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_IDX_UNSIGNED_BYTE = 0x08
_DIGITS_MAX_VALUE = 16  # scikit-learn's digits count set pixels in 4x4 blocks: 0..16
_RGB_BLOCK = 1024


def load_digits(spec: DatasetSpec, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    """scikit-learn's 1,797 8x8 digits as uint8 0..255 RGB, split by spec (no official split).

    Test is a class-balanced, seeded test_fraction of all images; validation the same
    val_fraction of the rest (with 0.2 / 0.2: 64% train, 16% val, 20% test).
    """
    del data_dir  # bundled with scikit-learn
    digits = sklearn.datasets.load_digits()
    images = np.round(digits.images * (255.0 / _DIGITS_MAX_VALUE)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    ids = np.array([f"digits/{index:04d}" for index in range(len(labels))])
    assignment = splits.assign(ids, labels, spec.val_fraction, spec.split_seed, spec.test_fraction)
    chosen = splits.members(assignment, split)
    return from_arrays(images[chosen], labels[chosen], ids[chosen])


def load_fashion_mnist(spec: DatasetSpec, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    """Fashion-MNIST: the official 60,000 train / 10,000 test; val held out from train.

    Reads Debian's gzipped IDX files in spec.path when they are installed, else TFDS
    fashion_mnist when it is prepared in data_dir. Ids are "train/00042" (position in the
    official file) for the Debian files but TFDS record ids for TFDS, so the held-out
    validation set depends on which of the two is read; the Debian files come first.
    """
    splits.check_split(split)
    if fashion_mnist_files_present(spec):
        return _fashion_mnist_from_idx(spec, split)
    if any(spec.subset_per_class):
        raise DatasetNotPreparedError(
            f"dataset {spec.name!r} is drawn from Debian's Fashion-MNIST IDX files, not found in "
            f"{spec.path}; install them with: apt-get install dataset-fashion-mnist")
    try:
        tfds_source.prepared_builder(spec, data_dir)
    except DatasetNotPreparedError:
        raise DatasetNotPreparedError(
            f"dataset 'fashion_mnist' is not available: no IDX files in {spec.path} and no prepared "
            f"TFDS fashion_mnist in {tfds_source.resolve_data_dir(data_dir)}; "
            "install the files with: apt-get install dataset-fashion-mnist"
        ) from None
    return tfds_source.load(spec, split, data_dir)


def _fashion_mnist_from_idx(spec: DatasetSpec, split: str) -> tf.data.Dataset:
    official = "test" if split == "test" else "train"
    image_file, label_file = (os.path.join(spec.path, name) for name in FASHION_MNIST_FILES[official])
    images, labels = read_idx(image_file, ndim=3), read_idx(label_file, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels")
    ids = np.array([f"{official}/{index:05d}" for index in range(len(labels))])
    keep = spec.subset_per_class[official == "test"]
    if keep:
        chosen = splits.held_out(ids, labels, 0.0, spec.split_seed, stream=splits.SUBSET_STREAM,
                                 per_class=keep)
        images, labels, ids = images[chosen], labels[chosen], ids[chosen]
    if official == "train":
        chosen = splits.members(splits.assign(ids, labels, spec.val_fraction, spec.split_seed), split)
        images, labels, ids = images[chosen], labels[chosen], ids[chosen]
    return from_arrays(images, labels, ids)


@functools.lru_cache(maxsize=4)
def read_idx(path: str, ndim: int) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes with `ndim` dimensions, as a read-only uint8 array.

    Cached: train, val and trainval all read the same official training file.
    """
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    zeros, type_code, dims = struct.unpack(">HBB", data[:4])
    if zeros != 0 or type_code != _IDX_UNSIGNED_BYTE or dims != ndim:
        raise ValueError(
            f"{path}: magic number 0x{data[:4].hex()} is not an IDX file of unsigned bytes with "
            f"{ndim} dimensions (expected 0x0000080{ndim})"
        )
    header_size = 4 + 4 * dims
    shape = struct.unpack(f">{dims}I", data[4:header_size])
    values = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header promises shape {shape} but holds {values.size} values")
    return values.reshape(shape)


def from_arrays(images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> tf.data.Dataset:
    """A dict dataset of in-memory grayscale uint8 images [N, H, W], replicated to RGB.

    The channel copy runs on blocks of examples: per-example it costs four times as long.
    """
    examples = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "id": ids})

    def to_rgb(block):
        return {**block, "image": tf.repeat(block["image"][..., tf.newaxis], 3, axis=-1)}

    rgb = examples.batch(_RGB_BLOCK).map(to_rgb).unbatch()
    return rgb.apply(tf.data.experimental.assert_cardinality(len(labels)))
