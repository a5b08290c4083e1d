"""A folder of images as a dataset, named "folder:PATH".

Two layouts, one sub-folder per class (class ids are the sorted class-folder names):
  PATH/train/<class>/, PATH/test/<class>/ and optionally PATH/val/<class>/ — the given splits;
      without val, validation is held out from train (val_fraction of every class, seeded).
  PATH/<class>/ — no given splits: a class-balanced, seeded test_fraction of every class is held
      out for test, then val_fraction of the rest for validation (0.2 / 0.2: 64% / 16% / 20%).
A folder whose sub-folders are all named train / val / test uses the first layout. Images are
JPEG, PNG, BMP or GIF files anywhere below a class folder; ids are their paths relative to PATH.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfbench.datasets import splits
from tfbench.datasets.catalog import HELD_OUT_FRACTION, DatasetSpec
from tfbench.datasets.images import decode_image

_SPLIT_FOLDERS = ("train", "val", "test")
_WHOLE_FOLDER = "all"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_LAYOUTS = "expected PATH/<class>/<images> or PATH/{train,test[,val]}/<class>/<images>"


def folder_spec(path: str) -> DatasetSpec:
    """The DatasetSpec of the image folder at `path` (its classes and which layout it uses)."""
    official = _official_folders(path)
    has_val = "val" in official
    has_test = "test" in official
    return DatasetSpec(
        name=f"folder:{path}",
        num_classes=len(_class_names(official)),
        metric="top1",
        multi_label=False,
        source="folder",
        train_split="train" if has_test else _WHOLE_FOLDER,
        val_split="val" if has_val else None,
        val_fraction=0.0 if has_val else HELD_OUT_FRACTION,
        test_split="test" if has_test else None,
        test_fraction=0.0 if has_test else HELD_OUT_FRACTION,
        path=path,
    )


def load(spec: DatasetSpec, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    """The dict dataset of one split of the folder (see tfbench.datasets.load)."""
    del data_dir  # the folder is the data
    splits.check_split(split)
    paths, labels, official = _scan(spec.path)
    ids = np.array([os.path.relpath(path, spec.path) for path in paths])
    assignment = official.astype(object)
    if spec.val_split is None:
        pool = official == spec.train_split
        assignment[pool] = splits.assign(
            ids[pool], labels[pool], spec.val_fraction, spec.split_seed, spec.test_fraction
        )
    chosen = splits.members(assignment, split)
    examples = tf.data.Dataset.from_tensor_slices(
        {"path": paths[chosen], "label": labels[chosen], "id": ids[chosen]}
    )

    def read(example):
        image = decode_image(tf.io.read_file(example["path"]))
        return {"image": image, "label": example["label"], "id": example["id"]}

    return examples.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def _official_folders(path: str) -> Dict[str, str]:
    """{"train"/"val"/"test": folder} for the split layout, {"all": path} for the class layout."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"dataset folder {path!r} does not exist; {_LAYOUTS}")
    subfolders = _subfolders(path)
    if not subfolders:
        raise ValueError(f"dataset folder {path!r} has no class sub-folders; {_LAYOUTS}")
    split_folders = [name for name in subfolders if name in _SPLIT_FOLDERS]
    if not split_folders:
        return {_WHOLE_FOLDER: path}
    if len(split_folders) != len(subfolders) or "train" not in split_folders or "test" not in split_folders:
        raise ValueError(
            f"dataset folder {path!r} mixes split and class folders ({', '.join(subfolders)}); {_LAYOUTS}"
        )
    return {name: os.path.join(path, name) for name in split_folders}


def _subfolders(path: str) -> List[str]:
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


def _class_names(official: Dict[str, str]) -> List[str]:
    """Sorted class names of the training folder; other splits may use only those classes."""
    training = official.get("train", official.get(_WHOLE_FOLDER))
    names = _subfolders(training)
    if not names:
        raise ValueError(f"dataset folder {training!r} has no class sub-folders; {_LAYOUTS}")
    for folder in official.values():
        unknown = sorted(set(_subfolders(folder)) - set(names))
        if unknown:
            raise ValueError(f"{folder!r} has class folders {unknown} that {training!r} lacks")
    return names


def _scan(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image file under the folder: (paths, class ids, official split of each)."""
    official = _official_folders(path)
    class_names = _class_names(official)
    paths, labels, split_names = [], [], []
    for split, folder in official.items():
        for label, name in enumerate(class_names):
            class_folder = os.path.join(folder, name)
            if not os.path.isdir(class_folder):
                continue  # a validation or test folder may lack some classes
            images = _image_files(class_folder)
            if not images:
                raise ValueError(
                    f"class folder {class_folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            paths += images
            labels += [label] * len(images)
            split_names += [split] * len(images)
    return np.array(paths), np.array(labels, dtype=np.int64), np.array(split_names)


def _image_files(folder: str) -> List[str]:
    found = []
    for root, subfolders, files in os.walk(folder):
        subfolders.sort()
        found += [os.path.join(root, name) for name in sorted(files)
                  if name.lower().endswith(IMAGE_EXTENSIONS)]
    return found
