"""Benchmark datasets: a registry of DatasetSpec and `load(name, split)`.

    load(name, split, data_dir=None) -> tf.data.Dataset of
        {"image": uint8 [H, W, 3],
         "label": int64 class id, or int32 [C] multi-hot (1 / 0 / -1 = difficult only),
         "id": string, unique and stable (for disjointness audits)}

split is "train", "val", "trainval" (= train ∪ val) or "test". name is a registered dataset
(`names()`) or "folder:PATH" for a folder of images (see tfbench.datasets.folder).

Preparing the data (`python -m tfbench.prepare`) lives in tfbench.datasets.preparation, the split
audit in tfbench.datasets.audit; TFDS builders of tfbench's own in fgvc_aircraft and birdsnap.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import tensorflow as tf

from tfbench.datasets import folder, offline, tfds_source
# Importing the builders registers "fgvc_aircraft" and "birdsnap" with TFDS.
from tfbench.datasets import birdsnap, fgvc_aircraft  # noqa: F401  pylint: disable=unused-import
from tfbench.datasets.catalog import DatasetSpec, names, registered_spec
from tfbench.datasets.errors import DatasetNotPreparedError
from tfbench.datasets.splits import SPLITS, check_split

__all__ = ["DatasetNotPreparedError", "DatasetSpec", "SPLITS", "load", "names", "spec"]

_FOLDER_PREFIX = "folder:"
_LOADERS: Dict[str, Callable[[DatasetSpec, str, Optional[str]], tf.data.Dataset]] = {
    "tfds": tfds_source.load,
    "tfbench_tfds": tfds_source.load,
    "sklearn_digits": offline.load_digits,
    "fashion_mnist": offline.load_fashion_mnist,
    "folder": folder.load,
}


def spec(name: str) -> DatasetSpec:
    """The DatasetSpec of a registered name, or of "folder:PATH" (read from the folder)."""
    if name.startswith(_FOLDER_PREFIX):
        return folder.folder_spec(name[len(_FOLDER_PREFIX):])
    return registered_spec(name)


def load(name: str, split: str, data_dir: Optional[str] = None) -> tf.data.Dataset:
    """One split of a dataset as dicts {"image", "label", "id"}; never downloads anything.

    data_dir is the TFDS data directory (None: TFDS's default). A TFDS dataset that is not
    prepared there raises DatasetNotPreparedError at once, naming the command that prepares it.
    """
    check_split(split)
    dataset_spec = spec(name)
    return _LOADERS[dataset_spec.source](dataset_spec, split, data_dir)
