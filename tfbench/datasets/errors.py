"""The errors a user sees when a dataset's files are not on this machine yet or cannot be used."""

from __future__ import annotations


class DatasetNotPreparedError(RuntimeError):
    """The dataset's files are absent; the message says how to get them.

    Raised before any download could start: an offline `tfds.load` of an absent dataset retries
    for minutes, so loading never asks TFDS to fetch anything.
    """


class FolderDatasetError(ValueError):
    """A folder:PATH dataset that cannot be used as it is; the one-line message names every
    problem found (the first few bad files or folders and a count of the rest)."""


class FolderNotFoundError(FolderDatasetError, FileNotFoundError):
    """The folder of a folder:PATH dataset does not exist."""


class TrainSubsetError(ValueError):
    """--train_examples_per_class asked of a dataset it cannot apply to (a multi-label one)."""


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares dataset `name` in `data_dir`."""
    return f"python -m tfbench.prepare --datasets={name} --data_dir={data_dir}"
