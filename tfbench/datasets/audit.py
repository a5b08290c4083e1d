"""The split audit: materialise every split of a dataset and check it is the paper's data.

Declared counts prove nothing (a slicing typo once made a validation split overlap training
unnoticed), so every check runs on the examples `tfbench.datasets.load` actually yields:
  sizes        trainval and test sizes equal the paper's table (DatasetSpec.paper_sizes, or the
               sizes a caller passes);
  trainval     trainval is exactly train + val (ids and image contents);
  ids          ids are unique within each split, and train / val / test share none;
  images       no image content (a hash of the decoded pixels) is in two of train / val / test;
  labels       labels are in range (multi-label: C entries in {1, 0, -1}, none all-zero) and every
               class has training examples;
  held-out     a held-out validation set takes val_fraction of every class (to within one
               example), and a drawn test set follows its rule (test_fraction of every class, or
               all but trainval_per_class examples of every class).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfbench import datasets
from tfbench.progress import track
from tfbench.datasets.catalog import DatasetSpec
from tfbench.datasets.splits import SPLITS

_PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
_EXAMPLES_SHOWN = 3


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclasses.dataclass
class Split:
    """A materialised split: ids, labels and a content hash of each image."""

    ids: List[str]
    labels: np.ndarray
    hashes: List[str]


@dataclasses.dataclass
class AuditReport:
    dataset: str
    sizes: Dict[str, int]
    checks: List[Check]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def failures(self) -> List[Check]:
        return [check for check in self.checks if not check.passed]


def image_hash(image: np.ndarray) -> str:
    """Content hash of a decoded image (its shape and pixels)."""
    return hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()


def materialise(dataset, description: str = "", progress: bool = False) -> Split:
    ids, labels, hashes = [], [], []
    for example in track(dataset.as_numpy_iterator(), description, unit="img", enabled=progress):
        ids.append(example["id"].decode())
        labels.append(example["label"])
        hashes.append(image_hash(example["image"]))
    return Split(ids, np.array(labels), hashes)


def audit(name: str, data_dir: Optional[str] = None, expected_sizes: Optional[Tuple[int, int]] = None,
          progress: bool = False) -> AuditReport:
    """Audit every split of a prepared dataset; expected_sizes (trainval, test) replaces the
    paper's sizes (tests audit small fake data this way)."""
    spec = datasets.spec(name)
    parts = {split: materialise(datasets.load(name, split, data_dir), f"{name} {split}", progress)
             for split in SPLITS}
    checks = [
        check_sizes(parts, expected_sizes or spec.paper_sizes),
        check_trainval(parts),
        check_disjoint(parts, "ids", lambda part: part.ids),
        check_disjoint(parts, "images", lambda part: part.hashes),
        check_labels(spec, parts),
        check_drawn_splits(spec, parts),
    ]
    return AuditReport(name, {split: len(part.ids) for split, part in parts.items()}, checks)


def check_sizes(parts: Dict[str, Split], expected: Optional[Tuple[int, int]]) -> Check:
    actual = (len(parts["trainval"].ids), len(parts["test"].ids))
    if expected is None:
        return Check("sizes", True, f"trainval {actual[0]}, test {actual[1]} (no reference sizes)")
    if tuple(expected) == actual:
        return Check("sizes", True, f"trainval {actual[0]}, test {actual[1]} as in the paper")
    return Check("sizes", False, f"trainval {actual[0]}, test {actual[1]}; expected {expected[0]}, {expected[1]}")


def check_trainval(parts: Dict[str, Split]) -> Check:
    train, val, trainval = parts["train"], parts["val"], parts["trainval"]
    same_ids = collections.Counter(trainval.ids) == collections.Counter(train.ids + val.ids)
    same_images = collections.Counter(trainval.hashes) == collections.Counter(train.hashes + val.hashes)
    if same_ids and same_images:
        return Check("trainval", True, f"= train ({len(train.ids)}) + val ({len(val.ids)})")
    differs = " and ".join(kind for kind, same in (("ids", same_ids), ("images", same_images)) if not same)
    return Check("trainval", False, f"{differs} of trainval differ from train + val")


def check_disjoint(parts: Dict[str, Split], kind: str, keys) -> Check:
    """No key (id or image hash) twice within a split (ids only) or in two of train / val / test."""
    problems = []
    if kind == "ids":
        for split in ("train", "val", "test"):
            repeated = [key for key, count in collections.Counter(keys(parts[split])).items() if count > 1]
            if repeated:
                problems.append(f"{len(repeated)} repeated in {split} (e.g. {_examples(repeated)})")
    for first, second in _PAIRS:
        shared = sorted(set(keys(parts[first])) & set(keys(parts[second])))
        if shared:
            shown = shared if kind == "ids" else _ids_with(parts[first], shared)
            problems.append(f"{len(shared)} in both {first} and {second} (e.g. {_examples(shown)})")
    if problems:
        return Check(kind, False, "; ".join(problems))
    return Check(kind, True, "train, val and test are disjoint")


def _ids_with(part: Split, hashes: Sequence[str]) -> List[str]:
    wanted = set(hashes)
    return [example_id for example_id, digest in zip(part.ids, part.hashes) if digest in wanted]


def _examples(values: Sequence[str]) -> str:
    return ", ".join(repr(value) for value in list(values)[:_EXAMPLES_SHOWN])


def check_labels(spec: DatasetSpec, parts: Dict[str, Split]) -> Check:
    problems = []
    for split in ("train", "val", "test"):
        labels = parts[split].labels
        if labels.size == 0:
            continue
        if spec.multi_label:
            if labels.ndim != 2 or labels.shape[1] != spec.num_classes:
                problems.append(f"{split} labels have shape {list(labels.shape)}, not [N, {spec.num_classes}]")
                continue
            if not np.isin(labels, (-1, 0, 1)).all():
                problems.append(f"{split} labels hold values other than 1, 0, -1")
            if (labels == 0).all(axis=1).any():
                problems.append(f"{int((labels == 0).all(axis=1).sum())} {split} examples have no class")
        elif labels.min() < 0 or labels.max() >= spec.num_classes:
            problems.append(f"{split} labels span [{labels.min()}, {labels.max()}], "
                            f"outside [0, {spec.num_classes})")
    if not problems:
        trainval = parts["trainval"].labels
        present = (trainval == 1).any(axis=0) if spec.multi_label else np.bincount(
            trainval.astype(np.int64), minlength=spec.num_classes) > 0
        if not present.all():
            problems.append(f"classes {np.flatnonzero(~present).tolist()[:10]} have no trainval example")
    if problems:
        return Check("labels", False, "; ".join(problems))
    return Check("labels", True, f"{spec.num_classes} classes, all in range and in trainval")


def check_drawn_splits(spec: DatasetSpec, parts: Dict[str, Split]) -> Check:
    """The per-class sizes of the splits tfbench draws (not the ones the source gives)."""
    if spec.multi_label or (spec.val_split is not None and spec.test_split is not None):
        return Check("held-out", True, "every split is official")
    problems = []

    def counts(split: str) -> np.ndarray:
        labels = parts[split].labels.astype(np.int64)
        in_range = labels[(labels >= 0) & (labels < spec.num_classes)]  # the labels check reports the rest
        return np.bincount(in_range, minlength=spec.num_classes)

    trainval, test = counts("trainval"), counts("test")
    if spec.val_split is None:
        problems += _fraction_problems("val", counts("val"), trainval, spec.val_fraction)
    if spec.trainval_per_class:
        expected = np.minimum(spec.trainval_per_class, trainval + test)
        wrong = np.flatnonzero(trainval != expected)
        if wrong.size:
            problems.append(f"trainval does not hold {spec.trainval_per_class} examples of classes "
                            f"{wrong.tolist()[:10]}")
    elif spec.test_split is None:
        problems += _fraction_problems("test", test, trainval + test, spec.test_fraction)
    if problems:
        return Check("held-out", False, "; ".join(problems))
    return Check("held-out", True, "drawn splits take the right share of every class")


def _fraction_problems(split: str, held: np.ndarray, pool: np.ndarray, fraction: float) -> List[str]:
    """Classes whose held-out count is not fraction * pool to within one example, or which the
    hold-out takes entirely or misses although they have two examples or more."""
    off = np.abs(held - fraction * pool) > 1.0
    empty_or_whole = (pool >= 2) & ((held < 1) | (held > pool - 1))
    wrong = np.flatnonzero(off | empty_or_whole)
    if not wrong.size:
        return []
    shown = ", ".join(f"class {c}: {held[c]} of {pool[c]}" for c in wrong[:5])
    return [f"{split} is not {fraction:g} of every class ({shown})"]
