"""Which examples form train, val, trainval and test.

Every source keeps one invariant: train and val are disjoint, trainval = train ∪ val, and test is
disjoint from both. A held-out subset takes the same fraction of every class (class-balanced) and
is drawn with the DatasetSpec's split_seed. It depends only on the examples' ids and labels, never
on reading order or the run seed, so the same data gives the same split on every machine and run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from tfbench.datasets.errors import TrainSubsetError
from tfbench.registry import UnknownNameError

SPLITS = ("train", "val", "trainval", "test")

# Stream numbers keep the test and the validation draws independent of each other.
_TEST_STREAM = 0
_VAL_STREAM = 1
SUBSET_STREAM = 2
TRAIN_SUBSET_STREAM = 3
SUBSET_SPLITS = ("train", "trainval")  # the splits --train_examples_per_class changes
TRAINVAL = "the train subset alone"  # what trainval is under a subset


@dataclasses.dataclass(frozen=True)
class TrainSubset:
    """Keep `examples_per_class` examples of every class of train (trainval = that subset alone,
    so the final model trains on exactly that many; val and test untouched), drawn with `seed`
    (the run's seed: every network of a study sees the same subset, and another seed draws
    another one)."""

    examples_per_class: int
    seed: int

    def to_dict(self) -> Dict[str, object]:
        # TRAINVAL tells cached features of this subset from those of the older trainval
        # (the subset plus val), which carried the same size and seed.
        return {**dataclasses.asdict(self), "trainval": TRAINVAL}


def check_split(split: str) -> str:
    """Return `split` if it is one of SPLITS, else raise a one-line error listing them."""
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    return split


def held_out_count(class_size: int, fraction: float) -> int:
    """How many of a class's `class_size` examples a `fraction` hold-out takes.

    round(fraction * n), but at least one when the class has two or more examples (so every class
    is represented on both sides) and never the whole class (train keeps at least one example).
    """
    if fraction <= 0.0 or class_size < 2:
        return 0
    count = math.floor(fraction * class_size + 0.5)
    return min(max(count, 1), class_size - 1)


def held_out(ids: Sequence, labels: Sequence[int], fraction: float, seed: int,
             stream: int = _VAL_STREAM, per_class: Optional[int] = None) -> np.ndarray:
    """Boolean mask of a class-balanced, seeded hold-out of `fraction` of every class, or of
    exactly `per_class` examples of every class (all of a class that has no more).

    Within each class the examples are ordered by id and permuted by a generator seeded with
    (seed, stream, class), so the selection of one class does not depend on the others, and
    reading the same examples in another order selects the same ones.
    """
    ids = np.asarray(ids)
    labels = np.asarray(labels)
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise ValueError(
            f"example ids are not unique (e.g. {values[counts > 1][0]!r}); "
            "a held-out split needs one id per example"
        )
    mask = np.zeros(len(ids), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.argsort(ids[members], kind="stable")]
        rng = np.random.default_rng([seed, stream, int(label)])
        size = held_out_count(len(members), fraction) if per_class is None else per_class
        chosen = rng.permutation(members)[:size]
        mask[chosen] = True
    return mask


def assign(ids: Sequence, labels: Sequence[int], val_fraction: float, seed: int,
           test_fraction: float = 0.0, trainval_per_class: int = 0) -> np.ndarray:
    """Assign every example of a pool to "train", "val" or "test".

    For sources with no official test split, test is taken first: test_fraction of every class,
    or, with trainval_per_class > 0, everything but trainval_per_class examples drawn from every
    class (Caltech-101's "30 random images per class"). Validation is then held out from what
    remains, so it is a fraction of the training pool.
    """
    ids = np.asarray(ids)
    labels = np.asarray(labels)
    assignment = np.full(len(ids), "train", dtype=object)
    if trainval_per_class > 0:
        is_test = ~held_out(ids, labels, 0.0, seed, stream=_TEST_STREAM, per_class=trainval_per_class)
    else:
        is_test = held_out(ids, labels, test_fraction, seed, stream=_TEST_STREAM)
    assignment[is_test] = "test"
    rest = np.flatnonzero(~is_test)
    is_val = held_out(ids[rest], labels[rest], val_fraction, seed, stream=_VAL_STREAM)
    assignment[rest[is_val]] = "val"
    return assignment


def members(assignment: np.ndarray, split: str) -> np.ndarray:
    """Boolean mask of the examples of `split` given a per-example assignment."""
    check_split(split)
    if split == "trainval":
        return (assignment == "train") | (assignment == "val")
    return assignment == split


def check_subset_allowed(spec) -> None:
    """Examples per class is defined for single-label datasets only (a DatasetSpec)."""
    if spec.multi_label:
        raise TrainSubsetError(
            f"--train_examples_per_class needs a single-label dataset; {spec.name!r} is multi-label "
            "(an image counts towards several classes)")


def train_subset(ids: Sequence, labels: Sequence[int], subset: TrainSubset) -> Tuple[np.ndarray, Dict[int, int]]:
    """Boolean mask of the subset's examples of a training split, and the classes that hold fewer
    than subset.examples_per_class examples (label -> count; they keep all they have)."""
    labels = np.asarray(labels)
    mask = held_out(ids, labels, 0.0, subset.seed, stream=TRAIN_SUBSET_STREAM,
                    per_class=subset.examples_per_class)
    values, counts = np.unique(labels, return_counts=True)
    short = {int(v): int(c) for v, c in zip(values, counts) if c < subset.examples_per_class}
    return mask, short
