"""Errors a backbone lookup or build raises when the user's input, not tfbench, is at fault.

Each message is one complete line that says what to do; the binaries print it as it is (exit 2).
"""

from __future__ import annotations

MODEL_FORMS = ("a registered name (--model=list lists them), hub:<handle or URL>, "
               "a SavedModel directory or a .keras file")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched; the message says how to supply them locally."""


class WeightMappingError(ValueError):
    """Imported weights do not fit the Keras model: a source tensor with no Keras weight, a Keras
    weight with no tensor, or shapes that differ."""


class NoImageNetClassifierError(ValueError):
    """The model is a feature extractor without its ImageNet classifier: its top-1 cannot be
    measured, only given."""


class ModelNotFoundError(FileNotFoundError):
    """A model given by path is not there (or is not a model); the message names the valid forms."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{problem}: {path!r}; a model is {MODEL_FORMS}")


class ModelsFileError(ValueError):
    """A models file that cannot be read or has an invalid entry; the message names the entry."""


def one_line(error: BaseException) -> str:
    """An exception as one short line, for quoting inside another error's message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"
