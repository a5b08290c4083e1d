"""Subsets of a loaded split, kept by example id: the `--train_examples_per_class` training sets.

The subset is drawn from ids and labels alone (tfbench.datasets.splits.train_subset), so every
source gets the same rule, and every network of a study the same examples.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfbench.cli import warn
from tfbench.datasets import splits
from tfbench.datasets.catalog import DatasetSpec

_SCAN_BATCH = 1024


def keep_ids(examples: tf.data.Dataset, chosen_ids: np.ndarray) -> tf.data.Dataset:
    """The examples whose id is among chosen_ids, in their order."""
    if len(chosen_ids) == 0:  # a lookup table cannot be empty
        return examples.take(0)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(chosen_ids, dtype=tf.string), tf.ones([len(chosen_ids)], dtype=tf.int32)
        ),
        default_value=0,
    )
    return examples.filter(lambda example: table.lookup(example["id"]) == 1)


def per_class(train: tf.data.Dataset, subset: splits.TrainSubset, spec: DatasetSpec) -> tf.data.Dataset:
    """The subset of a training split: subset.examples_per_class examples of every class.

    Reads the split once for its ids and labels (images are decoded in that pass too: the sources
    decode before they hand out examples).
    """
    ids, labels = [], []
    scan = train.map(lambda example: {"id": example["id"], "label": example["label"]}).batch(_SCAN_BATCH)
    for batch in scan.as_numpy_iterator():
        ids.append(batch["id"])
        labels.append(batch["label"])
    ids = np.concatenate(ids) if ids else np.zeros([0], dtype=object)
    labels = np.concatenate(labels) if labels else np.zeros([0], dtype=np.int64)
    chosen = ids[chosen_rows(ids, labels, subset, spec)]
    return keep_ids(train, chosen).apply(tf.data.experimental.assert_cardinality(len(chosen)))


def chosen_rows(ids: np.ndarray, labels: np.ndarray, subset: splits.TrainSubset, spec: DatasetSpec) -> np.ndarray:
    """Boolean mask of the subset's examples among a training split's ids and labels. A class with
    fewer examples keeps all of them, with a warning naming it."""
    mask, short = splits.train_subset(ids, labels, subset)
    if short:
        listed = ", ".join(f"{label} ({count})" for label, count in sorted(short.items())[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        warn(f"{spec.name}: --train_examples_per_class={subset.examples_per_class} but {len(short)} "
             f"class(es) of its training split hold fewer, kept whole: {listed}{more}")
    return mask
