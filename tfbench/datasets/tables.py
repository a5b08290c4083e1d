"""A split as a table indexed by example number: what training reads, so it can start at any step.

    tfbench.datasets.load_table(name, split, ...) -> ExampleTable(
        columns={"label", "id", <the source's image column>}, decode=row -> uint8 [H, W, 3])

Training reaches the examples of step s by their numbers (tfbench.preprocessing.training_batches),
without reading, decoding or augmenting those of the steps before it (docs/DESIGN.md, "Training
data order and resuming"). A table holds what its source keeps before decoding: a folder's file
paths, the offline datasets' pixel arrays, a TFDS split's encoded image bytes (read once, in
memory: as large as the split's image files); `decode` makes one row an image, the same image
`tfbench.datasets.load` gives for it. Evaluation keeps reading `load`'s stream, in order.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Dict, Mapping

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

Decode = Callable[[Dict[str, "tf.Tensor"]], "tf.Tensor"]


@dataclasses.dataclass(frozen=True)
class ExampleTable:
    """Equal-length columns, one row per example in the split's order, and how a row (a dict of
    tensors, one per column) becomes a uint8 [H, W, 3] image."""

    columns: Mapping[str, np.ndarray]
    decode: Decode

    def __post_init__(self):
        lengths = {name: len(column) for name, column in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"table columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.columns["label"])

    def rows(self, chosen: np.ndarray) -> "ExampleTable":
        """The rows `chosen` (a boolean mask or indices), in that order."""
        return ExampleTable({name: column[chosen] for name, column in self.columns.items()}, self.decode)

    def followed_by(self, other: "ExampleTable") -> "ExampleTable":
        """This table's rows, then `other`'s (same source, so the same columns and decoding)."""
        return ExampleTable({name: np.concatenate([column, other.columns[name]])
                             for name, column in self.columns.items()}, self.decode)
