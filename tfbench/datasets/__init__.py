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

from typing import TYPE_CHECKING, Optional

from tfbench.datasets.catalog import DatasetSpec, default_data_dir, is_prepared, names, registered_spec
from tfbench.datasets.errors import DatasetNotPreparedError, FolderDatasetError, TrainSubsetError
from tfbench.datasets.splits import SPLITS, SUBSET_SPLITS, TrainSubset, check_split

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["DatasetNotPreparedError", "DatasetSpec", "FolderDatasetError", "SPLITS", "TrainSubset",
           "TrainSubsetError", "default_data_dir", "is_prepared", "load", "names", "spec"]

_FOLDER_PREFIX = "folder:"


def spec(name: str, skip_bad_images: bool = False) -> DatasetSpec:
    """The DatasetSpec of a registered name, or of "folder:PATH" (read from the folder).

    Neither imports TensorFlow, so a misspelt name is answered at once. A folder is checked
    whole here (see tfbench.datasets.folder): FolderDatasetError names every problem found;
    with skip_bad_images, unreadable images are left out instead (counted in the spec).
    """
    if name.startswith(_FOLDER_PREFIX):
        from tfbench.datasets import folder

        return folder.folder_spec(name[len(_FOLDER_PREFIX):], skip_bad_images=skip_bad_images)
    return registered_spec(name)


def load(name: str, split: str, data_dir: Optional[str] = None,
         skip_bad_images: bool = False, train_subset: Optional[TrainSubset] = None) -> "tf.data.Dataset":
    """One split of a dataset as dicts {"image", "label", "id"}; never downloads anything.

    data_dir is the TFDS data directory (None: TFDS's default). A TFDS dataset that is not
    prepared there raises DatasetNotPreparedError at once, naming the command that prepares it.
    skip_bad_images: see `spec` (folder datasets only). train_subset: train and trainval are both
    that subset of the training split, so the final model of a run on N examples per class trains
    on exactly N per class (the paper's Figure 9 axis). val and test are never subsampled: the
    choice on validation uses the whole val split, never trained on (tfbench's choice: the paper
    does not say how it validated at small sizes), and scores at every size are measured on the
    same test examples.
    """
    check_split(split)
    dataset_spec = spec(name, skip_bad_images=skip_bad_images)
    loader = _loader(dataset_spec.source)
    if train_subset is None or split not in SUBSET_SPLITS:
        return loader(dataset_spec, split, data_dir)
    from tfbench.datasets import subsets

    return subsets.per_class(loader(dataset_spec, "train", data_dir), train_subset, dataset_spec)


def _loader(source: str):
    """The load function of a source, imported only when data is read (it needs TensorFlow)."""
    if source == "folder":
        from tfbench.datasets import folder

        return folder.load
    if source in ("tfds", "tfbench_tfds"):
        from tfbench.datasets import tfds_source

        return tfds_source.load
    from tfbench.datasets import offline

    return {"sklearn_digits": offline.load_digits, "fashion_mnist": offline.load_fashion_mnist}[source]
