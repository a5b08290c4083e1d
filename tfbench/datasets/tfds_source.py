"""Datasets read from prepared TFDS builders, never downloading.

The builder must already be prepared in data_dir; otherwise DatasetNotPreparedError is raised
before TFDS is asked for any data (an offline `tfds.load` would retry its download for minutes).

Ids are the dataset's own file names (spec.id_feature), which stay the same however the files
are sharded, so a held-out validation set drawn from them is stable across re-preparations; the
TFDS record id is the fallback when a builder has no such feature. Drawing the held-out set
looks only at ids and labels (image bytes pass by undecoded) and keeps only the ids in memory.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfbench.datasets import splits, subsets
# Importing the builders registers "fgvc_aircraft" and "birdsnap" with TFDS.
from tfbench.datasets import birdsnap, fgvc_aircraft  # noqa: F401  pylint: disable=unused-import
from tfbench.datasets.catalog import DatasetSpec
from tfbench.datasets.errors import DatasetNotPreparedError, prepare_command
from tfbench.datasets.images import decode_image
from tfbench.datasets.tables import ExampleTable

_SCAN_BATCH = 4096
_AUTOTUNE = tf.data.AUTOTUNE
# Multi-label builders follow TFDS voc's layout: every class with an object, and every class
# with an object not marked "difficult" (TFDS derives both from objects/is_difficult).
_MULTI_LABEL_FEATURES = ("labels", "labels_no_difficult")


def resolve_data_dir(data_dir: Optional[str]) -> str:
    """The directory TFDS reads for `data_dir` (None: TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    return data_dir or tfds.core.constants.DATA_DIR


def prepared_builder(spec: DatasetSpec, data_dir: Optional[str]) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `spec`; DatasetNotPreparedError at once if its files are absent."""
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetNotPreparedError(
            f"dataset {spec.name!r} is not prepared: TFDS has no builder {spec.tfds_name!r}; "
            f"prepare it with: {prepare_command(spec.name, resolve_data_dir(data_dir))}"
        ) from None
    if not builder.is_prepared():
        raise DatasetNotPreparedError(
            f"dataset {spec.name!r} is not prepared: no TFDS {spec.tfds_name} files at "
            f"{builder.data_path}; prepare it with: "
            f"{prepare_command(spec.name, str(builder.data_dir_root))}"
        )
    return builder


def load(spec: DatasetSpec, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    """The dict dataset {"image", "label", "id"} of one split (see tfbench.datasets.load)."""
    examples = _encoded(spec, split, data_dir)
    decode = _decoder(spec)
    return examples.map(lambda example: {"image": decode(example), "label": example["label"], "id": example["id"]},
                        num_parallel_calls=_AUTOTUNE)


def table(spec: DatasetSpec, split: str, data_dir: Optional[str]) -> ExampleTable:
    """One split as a table of encoded images, read once into memory (tfbench.datasets.load_table)."""
    columns: Dict[str, list] = {"image": [], "label": [], "id": []}
    for block in _encoded(spec, split, data_dir).batch(_SCAN_BATCH).as_numpy_iterator():
        for name, values in columns.items():
            values.append(block[name])
    return ExampleTable({name: np.concatenate(values) for name, values in columns.items()}, _decoder(spec))


def _encoded(spec: DatasetSpec, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    """One split's examples {"id", "label", "image"}, the image still encoded."""
    splits.check_split(split)
    builder = prepared_builder(spec, data_dir)
    official = official_split(spec, split)
    if official is not None:
        return _read(builder, spec, official)
    ids, assignment = pool_assignment(builder, spec)
    chosen = ids[splits.members(assignment, split)]
    examples = subsets.keep_ids(_read(builder, spec, spec.train_split), chosen)
    return examples.apply(tf.data.experimental.assert_cardinality(len(chosen)))


def official_split(spec: DatasetSpec, split: str) -> Optional[str]:
    """The source split(s) that form `split` as they are, or None when `split` is drawn from the
    pool spec.train_split (held-out validation, or a test set the source does not give)."""
    if split == "test":
        return spec.test_split
    if spec.val_split is not None:
        return {
            "train": spec.train_split,
            "val": spec.val_split,
            "trainval": f"{spec.train_split}+{spec.val_split}",
        }[split]
    if split == "trainval" and spec.test_split is not None:
        return spec.train_split
    return None


def pool_assignment(builder: tfds.core.DatasetBuilder, spec: DatasetSpec) -> Tuple[np.ndarray, np.ndarray]:
    """Ids of every example of the pool spec.train_split and the split ("train", "val" or
    "test") each one belongs to, drawn from ids and labels alone (see tfbench.datasets.splits)."""
    ids, labels = [], []
    scan = _read(builder, spec, spec.train_split).map(
        lambda example: {"id": example["id"], "label": example["label"]}, num_parallel_calls=_AUTOTUNE
    ).batch(_SCAN_BATCH)
    for batch in scan.as_numpy_iterator():
        ids.append(batch["id"])
        labels.append(batch["label"])
    ids = np.concatenate(ids) if ids else np.zeros([0], dtype=object)
    labels = np.concatenate(labels) if labels else np.zeros([0], dtype=np.int64)
    assignment = splits.assign(ids, labels, spec.val_fraction, spec.split_seed, spec.test_fraction,
                               spec.trainval_per_class)
    return ids, assignment


def split_sizes(spec: DatasetSpec, data_dir: Optional[str]) -> Dict[str, int]:
    """Examples in each of train / val / trainval / test of a prepared dataset (no image is read)."""
    builder = prepared_builder(spec, data_dir)
    sizes = {}
    assignment = None
    for split in splits.SPLITS:
        official = official_split(spec, split)
        if official is not None:
            sizes[split] = sum(builder.info.splits[part].num_examples for part in official.split("+"))
            continue
        if assignment is None:
            assignment = pool_assignment(builder, spec)[1]
        sizes[split] = int(np.sum(splits.members(assignment, split)))
    return sizes


def _read(builder, spec: DatasetSpec, official_split: str) -> tf.data.Dataset:
    """Examples as {"id", "label", "image"} in file order, the image still encoded.

    Only these features are parsed (Pets' segmentation masks, for instance, are not), and the
    image is decoded only after filtering, so skipped examples cost no decoding.
    """
    label_features = _MULTI_LABEL_FEATURES if spec.multi_label else ("label",)
    wanted = {name: True for name in (*label_features, "image")}
    if spec.id_feature is not None:
        wanted[spec.id_feature] = True
    decoders = tfds.decode.PartialDecoding(wanted, decoders={"image": tfds.decode.SkipDecoding()})
    dataset = builder.as_dataset(
        split=official_split,
        shuffle_files=False,
        decoders=decoders,
        read_config=tfds.ReadConfig(add_tfds_id=spec.id_feature is None),
    )
    class_names = tf.constant(builder.info.features["label"].names) if spec.id_with_class else None

    def standardise(example):
        output = {"id": _example_id(example, spec, class_names)}
        if spec.multi_label:
            output["label"] = _multi_hot(*(example[name] for name in label_features), spec.num_classes)
        else:
            output["label"] = tf.cast(example["label"], tf.int64)
        output["image"] = example["image"]
        return output

    return dataset.map(standardise, num_parallel_calls=_AUTOTUNE)


def _example_id(example, spec: DatasetSpec, class_names: Optional[tf.Tensor]) -> tf.Tensor:
    if spec.id_feature is None:
        return example["tfds_id"]
    if spec.id_with_class:
        return tf.strings.join([tf.gather(class_names, example["label"]), example[spec.id_feature]], "/")
    return example[spec.id_feature]


def _multi_hot(all_labels: tf.Tensor, clear_labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """int32 [C]: 1 where the class has an object not marked difficult, -1 where it has only
    difficult objects (the VOC devkit ignores those when scoring), 0 where it has none."""
    present = tf.reduce_sum(tf.one_hot(all_labels, num_classes, dtype=tf.int32), axis=0) > 0
    clear = tf.reduce_sum(tf.one_hot(clear_labels, num_classes, dtype=tf.int32), axis=0) > 0
    return tf.where(clear, 1, tf.where(present, -1, 0))


def _decoder(spec: DatasetSpec):
    """Encoded image of an example -> uint8 [H, W, 3]; grayscale becomes RGB, and
    spec.crop_bottom rows are cut off the bottom."""

    def decode(example):
        image = decode_image(example["image"])
        if spec.crop_bottom:
            image = image[: tf.shape(image)[0] - spec.crop_bottom]
        return image

    return decode
