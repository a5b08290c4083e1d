"""A folder of images as a dataset, named "folder:PATH": how users' own data arrives.

Two layouts, one sub-folder per class (class ids are the sorted class-folder names):
  PATH/train/<class>/, PATH/test/<class>/ and optionally PATH/val/<class>/ — the given splits;
      without val, validation is held out from train (val_fraction of every class, seeded).
  PATH/<class>/ — no given splits: a class-balanced, seeded test_fraction of every class is held
      out for test, then val_fraction of the rest for validation (0.2 / 0.2: 64% / 16% / 20%).
A folder whose sub-folders are all named train / val / test uses the first layout. Images are
JPEG, PNG, BMP, GIF or WebP files anywhere below a class folder, in any mode (grayscale, CMYK,
with alpha, palette, 16 bits): each loads as uint8 RGB. Ids are their paths relative to PATH.
Hidden files and folders (.DS_Store, ._* copies, .ipynb_checkpoints), __MACOSX and files of other
types (README.txt, Thumbs.db) are ignored.

`folder_spec` checks the whole folder before any model is built and raises one
FolderDatasetError naming every problem (the first few, and how many more): a missing folder, a
layout that is neither of the two, a class folder without images, a file that does not decode
(tfbench.datasets.image_check). With skip_bad_images, files that do not decode are left out
instead, with a one-line warning, and counted in the spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from tfbench import cli
from tfbench.datasets import image_check, splits
from tfbench.datasets.catalog import HELD_OUT_FRACTION, DatasetSpec
from tfbench.datasets.errors import FolderDatasetError, FolderNotFoundError

if TYPE_CHECKING:
    import tensorflow as tf

_SPLIT_FOLDERS = ("train", "val", "test")
_WHOLE_FOLDER = "all"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_IGNORED_FOLDERS = ("__MACOSX",)  # what macOS's zip adds beside the real folders
_LAYOUTS = "expected PATH/<class>/<images> or PATH/{train,test[,val]}/<class>/<images>"
_SHOWN = 5  # problems named in the message; the rest are counted


@dataclasses.dataclass(frozen=True)
class FolderSpec(DatasetSpec):
    """A folder dataset's spec. Its fields are part of every feature-cache key, so images that
    were added, changed or left out (files_digest, skipped_images) never reuse stale features."""

    skipped_images: int = 0  # unreadable images left out (skip_bad_images)
    files_digest: str = ""  # of every image's path, size and modification time


class _Contents(NamedTuple):
    """What a scan found: the images used, their classes and official splits."""

    images: List[image_check.ImageFile]
    labels: np.ndarray
    official: np.ndarray  # "train" / "val" / "test", or "all" in the class layout
    class_names: List[str]
    layout: Dict[str, str]  # official split -> folder
    skipped: List[str]  # relative paths of unreadable images left out
    digest: str


def folder_spec(path: str, skip_bad_images: bool = False) -> FolderSpec:
    """The spec of the image folder at `path`, after checking all of it (see the module doc)."""
    contents = _scan(path, skip_bad_images)
    has_val = "val" in contents.layout
    has_test = "test" in contents.layout
    return FolderSpec(
        name=f"folder:{path}",
        num_classes=len(contents.class_names),
        metric="top1",
        multi_label=False,
        source="folder",
        train_split="train" if has_test else _WHOLE_FOLDER,
        val_split="val" if has_val else None,
        val_fraction=0.0 if has_val else HELD_OUT_FRACTION,
        test_split="test" if has_test else None,
        test_fraction=0.0 if has_test else HELD_OUT_FRACTION,
        path=path,
        skipped_images=len(contents.skipped),
        files_digest=contents.digest,
    )


def load(spec: FolderSpec, split: str, data_dir: Optional[str]) -> "tf.data.Dataset":
    """The dict dataset of one split of the folder (see tfbench.datasets.load)."""
    import tensorflow as tf

    from tfbench.datasets.images import decode_image

    del data_dir  # the folder is the data
    splits.check_split(split)
    contents = _scan(spec.path, skip_bad_images=spec.skipped_images > 0)
    if contents.digest != spec.files_digest:
        raise FolderDatasetError(f"folder dataset {spec.path!r} changed since it was checked; run again")
    paths = np.array([image.path for image in contents.images])
    ids = np.array([image.relative for image in contents.images])
    labels = contents.labels
    assignment = contents.official.astype(object)
    if spec.val_split is None:
        pool = contents.official == spec.train_split
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


# Scans of this process by (folder, skip_bad_images, every image's path, size and mtime): a run
# asks for its folder's spec several times; images are listed each time, decoded at most once.
_SCANNED: Dict[Tuple, _Contents] = {}
# Left-out images already warned about, so a run warns once however often it asks.
_WARNED: set = set()


def _scan(path: str, skip_bad_images: bool) -> _Contents:
    """Every image under the folder with its class and official split, after the whole check."""
    layout = _layout(path)
    problems: List[str] = []
    class_names = _class_names(path, layout, problems)
    images, labels, official = [], [], []
    for split, folder in layout.items():
        for label, name in enumerate(class_names):
            class_folder = os.path.join(folder, name)
            if not os.path.isdir(class_folder):
                continue  # a validation or test folder may lack some classes
            found = _image_files(path, class_folder, problems)
            if not found:
                problems.append(f"class folder {_shown(path, class_folder)!r} has no images "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
            images += found
            labels += [label] * len(found)
            official += [split] * len(found)
    signature = (os.path.abspath(path), skip_bad_images, tuple(images))
    if not problems and signature in _SCANNED:
        return _SCANNED[signature]
    unreadable = image_check.problems(path, images)
    skipped = []
    if unreadable and skip_bad_images:
        skipped = sorted(unreadable)
        had_images = set(zip(official, labels))
        keep = [image.relative not in unreadable for image in images]
        images, labels, official = ([item for item, kept in zip(column, keep) if kept]
                                    for column in (images, labels, official))
        problems += [f"class folder {_shown(path, os.path.join(layout[split], class_names[label]))!r} "
                     "has no readable images" for split, label in sorted(had_images - set(zip(official, labels)))]
    elif unreadable:
        problems += [f"{name!r} {why}" for name, why in sorted(unreadable.items())]
    if problems:
        raise FolderDatasetError(_message(path, problems, bool(unreadable) and not skip_bad_images))
    if skipped and (path, tuple(skipped)) not in _WARNED:
        _WARNED.add((path, tuple(skipped)))
        cli.warn(f"folder dataset {path!r}: leaving out {len(skipped)} unreadable image(s): "
                 + _listed([f"{name!r} {unreadable[name]}" for name in skipped]))
    digest = hashlib.sha256("".join(f"{image.relative}\0{image.size}\0{image.mtime_ns}\n"
                                    for image in images).encode()).hexdigest()
    contents = _Contents(images, np.array(labels, dtype=np.int64), np.array(official), class_names, layout,
                         skipped, digest)
    _SCANNED[signature] = contents
    return contents


def _layout(path: str) -> Dict[str, str]:
    """{"train"/"val"/"test": folder} for the split layout, {"all": path} for the class layout;
    a folder that is neither cannot be checked further, so this raises at once."""
    if not os.path.exists(path):
        raise FolderNotFoundError(f"dataset folder {path!r} does not exist; {_LAYOUTS}")
    if not os.path.isdir(path):
        raise FolderDatasetError(f"dataset folder {path!r} is not a folder; {_LAYOUTS}")
    subfolders = _subfolders(path)
    if not subfolders:
        raise FolderDatasetError(f"dataset folder {path!r} has no class sub-folders; {_LAYOUTS}")
    split_folders = [name for name in subfolders if name in _SPLIT_FOLDERS]
    if not split_folders:
        return {_WHOLE_FOLDER: path}
    others = [name for name in subfolders if name not in _SPLIT_FOLDERS]
    if others:
        raise FolderDatasetError(
            f"dataset folder {path!r} mixes split folders ({', '.join(split_folders)}) and class "
            f"folders ({_listed(others)}); {_LAYOUTS}")
    missing = [name for name in ("train", "test") if name not in split_folders]
    if missing:
        raise FolderDatasetError(
            f"dataset folder {path!r} has split folders {', '.join(split_folders)} but no "
            f"{' or '.join(name + '/' for name in missing)}; {_LAYOUTS}")
    return {name: os.path.join(path, name) for name in split_folders}


def _class_names(path: str, layout: Dict[str, str], problems: List[str]) -> List[str]:
    """Sorted class names of the training folder; other splits may use only those classes."""
    training = layout.get("train", layout.get(_WHOLE_FOLDER))
    names = _subfolders(training)
    if len(names) == 1:  # every score would be a "perfect" 1.0
        where = path if training == path else _shown(path, training)
        problems.append(f"{where!r} has one class folder ({names[0]}); a classifier needs at least 2")
    for folder in layout.values():
        classes = _subfolders(folder)
        if not classes:
            problems.append(f"split folder {_shown(path, folder)!r} has no class sub-folders")
        unknown = sorted(set(classes) - set(names))
        if unknown and names:
            problems.append(f"{_shown(path, folder)!r} has class folders {_listed(unknown)} that "
                            f"{_shown(path, training)!r} lacks")
    return names


def _subfolders(path: str) -> List[str]:
    return sorted(name for name in os.listdir(path)
                  if os.path.isdir(os.path.join(path, name)) and _visible(name))


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in _IGNORED_FOLDERS


def _image_files(root: str, folder: str, problems: List[str]) -> List[image_check.ImageFile]:
    found = []
    for parent, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if _visible(name))
        for name in sorted(names):
            if not _visible(name) or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            full = os.path.join(parent, name)
            try:
                status = os.stat(full)
            except OSError as error:  # a dangling link, a file removed while listing
                problems.append(f"{_shown(root, full)!r} cannot be opened ({error.strerror or error})")
                continue
            found.append(image_check.ImageFile(full, os.path.relpath(full, root), status.st_size,
                                               status.st_mtime_ns))
    return found


def _shown(root: str, path: str) -> str:
    """How messages name a file or folder: relative to the dataset folder."""
    return os.path.relpath(path, root)


def _listed(items: List[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _message(path: str, problems: List[str], unreadable_images: bool) -> str:
    message = f"folder dataset {path!r} cannot be used: {len(problems)} problem(s): " + _listed(problems)
    if unreadable_images:
        message += " (fix or remove the unreadable images, or leave them out with --skip_bad_images)"
    return message
