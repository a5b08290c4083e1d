"""Fail before the work: check, before the first step, what would otherwise fail hours later.

A run checks that its output folder can be written, that the network builds at the requested
image size, that the disk holds its checkpoints (or a probe's features), and that its dataset is
prepared and readable. Each failure is one PreflightError line naming the value and what to do;
the binaries print it and exit 2 with nothing written (the write test's file is removed at once).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Optional

from tfbench.experiment import Experiment

BYTES_PER_VALUE = 4  # float32 weights and optimizer slots (mixed precision keeps float32 variables)
OPTIMIZER_SLOTS = 1  # SGD with Nesterov momentum keeps one momentum value per weight
# A trial keeps one checkpoint (tfbench.training, max_to_keep=1) but writes the next before it
# deletes the last; trials run one after another and free theirs when they finish.
CHECKPOINTS_AT_ONCE = 2
DISK_MARGIN = 64 * 2**20  # records, TensorBoard logs, the feature cache's metadata
DiskUsage = Callable[[str], Any]  # shutil.disk_usage, or a fake in tests


class PreflightError(ValueError):
    """The run cannot succeed as asked; the message says why in one line."""


def existing_ancestor(path: str) -> str:
    """The deepest part of `path` that exists (the folder a new subfolder would be made in)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_output_dir(output_dir: str, run_dir: Optional[str] = None) -> None:
    """The output folder (and the run's folder under it) can be made and written: no file in the
    way, no read-only folder. A file is created and removed to be sure (permission bits do not say
    it for root, read-only mounts or network storage)."""
    where = existing_ancestor(run_dir or output_dir)
    if not os.path.isdir(where):
        raise PreflightError(f"output folder {output_dir!r} cannot be made: {where} is a file, not a folder; "
                             "choose another --output_dir")
    try:
        handle, probe = tempfile.mkstemp(dir=where, prefix=".tfbench-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise PreflightError(f"output folder {output_dir!r} is not writable: cannot write in {where} "
                             f"({error.strerror}); choose another --output_dir") from None


def check_image_size(experiment: Experiment) -> None:
    """A registered network builds at the requested size (user models were built to read their spec)."""
    from tfbench.backbones import catalog

    if experiment.image_size is None or experiment.model not in catalog.REGISTRY:
        return
    backbone = catalog.REGISTRY.get(experiment.model)
    smallest = catalog.min_image_size(backbone)
    if experiment.image_size < smallest:
        raise PreflightError(f"--image_size={experiment.image_size} is too small for {experiment.model}: it "
                             f"builds at {smallest} px or more (native {backbone.image_size})")


def needed_bytes(experiment: Experiment) -> Optional[int]:
    """Disk a run needs at once: a trained run's checkpoints (weights and optimizer slots of the
    backbone and its head), a probe's cached features; None when the network's size is unknown."""
    from tfbench import estimate_cost
    from tfbench.backbones import catalog, compute

    if experiment.model not in catalog.REGISTRY:
        return None
    backbone = catalog.REGISTRY.get(experiment.model)
    classes = experiment.dataset_spec().num_classes
    if experiment.regime == "probe":
        sizes = estimate_cost.split_sizes(experiment)
        if sizes is None:
            return None
        examples = sizes["train"] + sizes["val"] + sizes["test"]
        return examples * (backbone.feature_dim + classes) * BYTES_PER_VALUE + DISK_MARGIN
    weights = compute.parameters(experiment.model) + (backbone.feature_dim + 1) * classes
    return int(weights * BYTES_PER_VALUE * (1 + OPTIMIZER_SLOTS) * CHECKPOINTS_AT_ONCE) + DISK_MARGIN


def check_free_disk(experiment: Experiment, disk_usage: DiskUsage = shutil.disk_usage) -> None:
    """The disk the run writes to has room for `needed_bytes`."""
    need = needed_bytes(experiment)
    if need is None:
        return
    if experiment.regime == "probe":
        from tfbench import features

        folder, what = experiment.cache_dir or features.default_cache_dir(), "the probe's features"
    else:
        folder, what = experiment.run_dir(), f"the checkpoints of {experiment.model}"
    where = existing_ancestor(folder)
    free = disk_usage(where).free
    if free < need:
        raise PreflightError(f"not enough free disk for {what}: {_size(need)} needed in {where}, "
                             f"{_size(free)} free")


def check_dataset(experiment: Experiment) -> None:
    """The dataset is prepared (else DatasetNotPreparedError, naming the command that prepares it)
    and its first test example can be read and decoded."""
    from tfbench.datasets import DatasetNotPreparedError

    try:
        next(iter(experiment.load("test").take(1)))
    except DatasetNotPreparedError:
        raise
    except Exception as error:  # a damaged file, a permission: whatever the reader says
        first = (str(error).strip().splitlines() or [""])[0]
        raise PreflightError(f"dataset {experiment.dataset!r} cannot be read: {type(error).__name__}: "
                             f"{first}") from None


def check(experiment: Experiment, disk_usage: DiskUsage = shutil.disk_usage) -> None:
    """Every check, cheapest first (the dataset's loads TensorFlow)."""
    check_output_dir(experiment.output_dir, experiment.run_dir())
    check_image_size(experiment)
    check_free_disk(experiment, disk_usage)
    check_dataset(experiment)


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if count < 1024:
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} GiB"
