"""The ImageNet evaluation sets a backbone's top-1 is measured on, read from prepared TFDS data.

  - "imagenet2012": TFDS imagenet2012 "validation", the 50,000 ILSVRC 2012 validation images
    that model cards report top-1 on. A manual download: the user saves ILSVRC2012_img_val.tar
    (registration at image-net.org) in the manual folder, and `prepare` builds the TFDS files
    from it (the training archive is not needed).
  - "imagenet_v2": TFDS imagenet_v2/matched-frequency "test", 10,000 new images collected like
    the validation set (Recht et al., 2019); `prepare` downloads them through TFDS.

Labels are TFDS's ImageNet class ids (sorted WordNet ids, the order every ImageNet classifier
head uses) and ids the files' names. Loading never downloads: an unprepared set raises
DatasetNotPreparedError at once with the command that prepares it. These sets are not benchmark
datasets (they are not in the catalog): a backbone is never trained or probed on them.
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from tfbench.datasets import downloads, tfds_source
from tfbench.datasets.catalog import DatasetSpec
from tfbench.datasets.errors import DatasetNotPreparedError
from tfbench.registry import Registry

VALIDATION_ARCHIVE = "ILSVRC2012_img_val.tar"
ARCHIVE_SOURCE = "https://image-net.org/download-images (free registration)"
NUM_CLASSES = 1000

# The split tfbench reads is each spec's test split: the whole evaluation set.
_SPLITS: Registry[DatasetSpec] = Registry("ImageNet evaluation set")
for _spec in (
    DatasetSpec(name="imagenet2012", num_classes=NUM_CLASSES, metric="top1", multi_label=False,
                source="tfds", tfds_name="imagenet2012", test_split="validation",
                id_feature="file_name"),
    DatasetSpec(name="imagenet_v2", num_classes=NUM_CLASSES, metric="top1", multi_label=False,
                source="tfds", tfds_name="imagenet_v2/matched-frequency", test_split="test",
                id_feature="file_name"),
):
    _SPLITS.register(_spec.name, _spec)


class ManualDownloadMissingError(DatasetNotPreparedError):
    """Preparing needs a file in the manual folder that is not there (imagenet2012's validation
    archive; imagenet_v2's archive when its host cannot be reached)."""


def names():
    """The evaluation sets, imagenet2012 first."""
    return _SPLITS.names()


def spec(name: str) -> DatasetSpec:
    """The evaluation set `name`; UnknownNameError with the choices otherwise."""
    return _SPLITS.get(name)


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares evaluation set `name` in `data_dir`."""
    return f"python -m tfbench.imagenet_eval --split={name} --prepare --data_dir={data_dir}"


def manual_dir(data_dir: str) -> str:
    """Where TFDS (and `prepare`) look for manual downloads: <data_dir>/downloads/manual."""
    return downloads.default_manual_dir(data_dir)


def _not_prepared(name: str, builder: tfds.core.DatasetBuilder, problem: str) -> DatasetNotPreparedError:
    data_dir = str(builder.data_dir_root)
    step = ""
    if name == "imagenet2012":
        step = (f"save {VALIDATION_ARCHIVE} from {ARCHIVE_SOURCE} in {manual_dir(data_dir)}, then ")
    return DatasetNotPreparedError(
        f"ImageNet evaluation set {name!r} is not prepared: {problem}; {step}prepare it with: "
        f"{prepare_command(name, data_dir)}")


def prepared_builder(name: str, data_dir: Optional[str]) -> tfds.core.DatasetBuilder:
    """The TFDS builder of evaluation set `name`, prepared with its split; else
    DatasetNotPreparedError before any data is asked for."""
    evaluation = spec(name)
    builder = tfds.builder(evaluation.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        raise _not_prepared(name, builder, f"no TFDS {evaluation.tfds_name} files at {builder.data_path}")
    if evaluation.test_split not in builder.info.splits:
        raise _not_prepared(name, builder, f"the TFDS files at {builder.data_path} lack the "
                                           f"{evaluation.test_split!r} split")
    return builder


def load(name: str, data_dir: Optional[str] = None) -> tf.data.Dataset:
    """The whole evaluation set as {"image": uint8 [H, W, 3], "label": int64, "id"}, in file order."""
    prepared_builder(name, data_dir)
    return tfds_source.load(spec(name), "test", data_dir)


def prepare(name: str, data_dir: Optional[str] = None) -> str:
    """Build the TFDS files of evaluation set `name` in data_dir; returns where they are.

    imagenet2012 reads VALIDATION_ARCHIVE from the manual folder; imagenet_v2 downloads its
    archive, or takes it from the manual folder. ManualDownloadMissingError, naming each file and
    where to save it, when a file is neither there nor downloadable.
    """
    evaluation = spec(name)
    root = tfds_source.resolve_data_dir(data_dir)
    builder = tfds.builder(evaluation.tfds_name, data_dir=root)
    if builder.is_prepared() and evaluation.test_split in builder.info.splits:
        return str(builder.data_path)
    manual = manual_dir(root)
    if name == "imagenet2012":
        if not os.path.isfile(os.path.join(manual, VALIDATION_ARCHIVE)):
            raise ManualDownloadMissingError(
                f"no {VALIDATION_ARCHIVE} in {manual}: save it there from {ARCHIVE_SOURCE}, then "
                f"rerun: {prepare_command(name, root)}")
    else:  # TFDS would retry an unreachable host for minutes
        missing = downloads.missing_from(downloads.needed_downloads(builder, manual), manual)
        if downloads.unreachable_hosts([item.url for item in missing]):
            raise ManualDownloadMissingError(
                "cannot download from here: " + "; ".join(
                    f"save {item.url} as {os.path.join(manual, item.file_name)}" for item in missing)
                + f" on a machine that can, then rerun: {prepare_command(name, root)}")
    builder.download_and_prepare(
        download_dir=downloads.download_dir(root),
        download_config=tfds.download.DownloadConfig(manual_dir=manual, try_download_gcs=False),
    )
    return str(builder.data_path)

