"""Preparing a dataset in a TFDS data directory, or saying exactly what a user must do first.

prepare(name, data_dir) never waits on a network that is not there: it works out which files
the dataset's builder would download, skips those already in the manual folder, and checks that
the remaining hosts accept a connection before anything starts. An unreachable host turns into
the manual step (which URL to save under which name) and nothing is written. TFDS writes
every dataset in a temporary folder renamed into place at the end, and tfbench's own downloads
are verified and renamed into place file by file, so an interrupted preparation never leaves a
dataset that later looks complete, and rerunning the command picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Optional

import tensorflow_datasets as tfds

from tfbench import datasets
from tfbench.datasets import birdsnap, catalog, downloads, fetch, tfds_source
from tfbench.datasets.catalog import DatasetSpec
from tfbench.datasets.errors import prepare_command

PREPARED = "prepared"
ALREADY_PREPARED = "already prepared"
NOTHING_TO_DO = "nothing to prepare"
MANUAL_STEP = "manual step needed"
FAILED = "failed"
READY_STATUSES = (PREPARED, ALREADY_PREPARED, NOTHING_TO_DO)


@dataclasses.dataclass
class PreparationOutcome:
    """What preparing one dataset did: a status, what happened or the manual step, split sizes."""

    dataset: str
    status: str
    message: str
    sizes: Optional[Dict[str, int]] = None

    @property
    def ready(self) -> bool:
        return self.status in READY_STATUSES


class ManualStepNeeded(Exception):
    """The source files cannot be fetched from here; the message says what a user must do."""


@dataclasses.dataclass(frozen=True)
class _Context:
    spec: DatasetSpec
    data_dir: str
    manual_dir: str
    options: fetch.FetchOptions

    def rerun(self) -> str:
        return f"then rerun: {prepare_command(self.spec.name, self.data_dir)}"


def prepare(name: str, data_dir: str, manual_dir: Optional[str] = None,
            options: fetch.FetchOptions = fetch.FetchOptions()) -> PreparationOutcome:
    """Prepare dataset `name` in data_dir (manual downloads in manual_dir, default
    <data_dir>/downloads/manual; options: how tfbench's own downloader fetches Birdsnap's
    images). Failures become an PreparationOutcome, so a caller can go on."""
    spec = datasets.spec(name)
    if spec.tfds_name is None:
        return PreparationOutcome(name, NOTHING_TO_DO, f"needs no download ({spec.source})")
    if spec.source == "fashion_mnist" and catalog.fashion_mnist_files_present(spec):
        return PreparationOutcome(name, NOTHING_TO_DO, f"read from the Debian package files in {spec.path}")
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        return PreparationOutcome(name, ALREADY_PREPARED, f"found in {builder.data_path}",
                       tfds_source.split_sizes(spec, data_dir))
    context = _Context(spec, data_dir, manual_dir or downloads.default_manual_dir(data_dir), options)
    try:
        note = _GATHER.get(spec.tfds_name, _check_downloads)(context, builder)
        builder.download_and_prepare(
            download_dir=downloads.download_dir(data_dir),
            download_config=tfds.download.DownloadConfig(manual_dir=context.manual_dir, try_download_gcs=False),
        )
    except ManualStepNeeded as step:
        return PreparationOutcome(name, MANUAL_STEP, "\n".join([str(step), context.rerun()]))
    except Exception as error:  # pylint: disable=broad-except
        # One dataset's failure (a corrupt archive, a full disk) must not stop the others.
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return PreparationOutcome(name, FAILED, f"{type(error).__name__}: {message}\nfix that, {context.rerun()}")
    done = f"prepared in {builder.data_path}" + (f"; {note}" if note else "")
    return PreparationOutcome(name, PREPARED, done, tfds_source.split_sizes(spec, data_dir))


def _check_downloads(context: _Context, builder: tfds.core.DatasetBuilder) -> str:
    """Raise ManualStepNeeded, naming each file to fetch by hand, unless every file the builder
    downloads is in the manual folder or its host answers."""
    missing = downloads.missing_from(downloads.needed_downloads(builder, context.manual_dir), context.manual_dir)
    unreachable = downloads.unreachable_hosts([item.url for item in missing])
    if unreachable:
        raise ManualStepNeeded("\n".join(
            [f"cannot reach {', '.join(unreachable)}; download on a machine that can:"]
            + [f"  {item.url}\n    -> save as {os.path.join(context.manual_dir, item.file_name)}"
               for item in missing]))
    return ""


def _gather_birdsnap(context: _Context, builder: tfds.core.DatasetBuilder) -> str:
    """Birdsnap's image list (birdsnap.tgz) and then its images, into the manual folder (what
    the builder reads); returns what the downloader obtained."""
    del builder
    folder = os.path.join(context.manual_dir, birdsnap.FOLDER)
    if not birdsnap.has_metadata(folder):
        archive = os.path.join(context.manual_dir, birdsnap.METADATA_ARCHIVE)
        if not os.path.exists(archive):
            if downloads.unreachable_hosts([birdsnap.METADATA_URL]):
                raise ManualStepNeeded("\n".join([
                    f"cannot reach {birdsnap.METADATA_URL}; download it on a machine that can and either",
                    f"  save it as {archive} (tfbench then fetches the images it lists), or",
                    f"  extract it in {context.manual_dir} and run `python get_birdsnap.py` inside {folder}"]))
            archive = fetch.fetch_file(
                birdsnap.METADATA_URL,
                os.path.join(downloads.download_dir(context.data_dir), birdsnap.METADATA_ARCHIVE),
                context.options)
        birdsnap.extract_metadata(archive, context.manual_dir)
    image_urls = [item.url for item in birdsnap.read_image_list(folder)]
    report = birdsnap.fill_manual_dir(context.manual_dir, context.options,
                                      skip_hosts=downloads.unreachable_hosts(image_urls))
    report_file = os.path.join(folder, birdsnap.IMAGES, fetch.REPORT_FILE)
    if report.obtained() == 0:
        raise ManualStepNeeded("\n".join([
            f"no Birdsnap image could be obtained: {report.summary()} (details in {report_file})",
            f"  put the images in {os.path.join(folder, birdsnap.IMAGES)} (get_birdsnap.py does)"]))
    return f"images: {report.summary()} (details in {report_file})"


# Steps that fetch a dataset's sources before its builder runs; the default only checks that
# the builder's own downloads can start.
_GATHER: Dict[str, Callable[[_Context, tfds.core.DatasetBuilder], str]] = {"birdsnap": _gather_birdsnap}
