"""A run's per-example test predictions: stored beside its record, read back only when verified.

Whether one network is significantly better than another on a dataset (tfbench.report.significance) is
a question about test examples, not about the one number a record keeps: it needs what each run
answered on every test example, in the split's order (the same for every network of a dataset).
The regimes store it when they score the test split: `test_predictions.npz` in the run folder,
written atomically, and named with its fingerprint (size and SHA-256) in the record under
RECORD_KEY. Only what the metric needs is kept: the labels and each example's predicted class for
top-1 and mean per-class accuracy; the labels and float32 scores for VOC mAP (float16 would round
distinct scores into ties and change the ranking, so the stored file would not give the
record's score back). Examples carry no id through the pipelines; they come in the split's fixed
order, and runs are paired only when their labels agree example for example.

A file that is missing, damaged, does not match its fingerprint, or does not reproduce the
record's test score is ignored with a one-line warning: the run then counts as having none.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np

from tfbench import files, metrics
from tfbench.cli import warn

PREDICTIONS_FILE = "test_predictions.npz"
RECORD_KEY = "test_predictions"
# How far the stored predictions' score may be from the record's and still be the same run's.
SCORE_TOLERANCE = 1e-9


class PredictionsFileError(ValueError):
    """A predictions file that cannot be read as one; the message says what is wrong."""


@dataclass(frozen=True)
class Predictions:
    """One run's answers on the test split: `classes` [N] for single-label metrics, `scores`
    [N, C] for mAP (the other None)."""

    metric: str
    labels: np.ndarray
    classes: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None

    @classmethod
    def of(cls, metric: str, labels, scores) -> "Predictions":
        """The compact predictions of (labels, scores) as the regimes score them."""
        labels, scores = np.asarray(labels), np.asarray(scores)
        if metrics.needs_scores(metric):
            return cls(metric, labels.astype(np.int8), scores=scores.astype(np.float32))
        compact = np.min_scalar_type(max(scores.shape[1] - 1, 0))
        return cls(metric, labels.astype(compact), classes=np.argmax(scores, axis=1).astype(compact))

    def __len__(self) -> int:
        return int(len(self.labels))

    def score(self, index: Optional[np.ndarray] = None) -> float:
        """The metric on every example, or on the examples `index` picks (repeats allowed).

        mAP of a resample ranks its examples by the full set's ranking (each picked as often as
        `index` names it) instead of sorting every resample again: the same number as
        metrics.map11 of the picked rows, but for the order of distinct examples with equal scores.
        """
        if index is None:
            if self.scores is not None:
                return metrics.score(self.metric, self.labels, self.scores)
            return metrics.score_classes(self.metric, self.labels, self.classes)
        if self.scores is None:
            return metrics.score_classes(self.metric, self.labels[index], self.classes[index])
        counts = np.bincount(index, minlength=len(self))
        orders, ranked_labels = self._rankings
        return float(np.mean([metrics.ranked_average_precision(np.repeat(labels, counts[order]))
                              for order, labels in zip(orders, ranked_labels)]))

    @functools.cached_property
    def _rankings(self):
        """([C, N] each class's examples by descending score, ties in example order as the metric
        breaks them; [C, N] their labels in that order)."""
        orders = np.argsort(-self.scores.astype(np.float64), axis=0, kind="stable").T
        return orders, np.take_along_axis(self.labels.T, orders, axis=1)

    def npz_bytes(self) -> bytes:
        arrays = {"metric": np.array(self.metric), "labels": self.labels}
        arrays.update({"classes": self.classes} if self.scores is None else {"scores": self.scores})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()


def write(run_dir: str, predictions: Predictions) -> Dict[str, Any]:
    """Store `predictions` in `run_dir` atomically; the reference the record keeps under RECORD_KEY."""
    path = os.path.join(run_dir, PREDICTIONS_FILE)
    files.write_bytes_atomic(path, predictions.npz_bytes())
    return {"file": PREDICTIONS_FILE, **files.fingerprint(path)}


def _load(path: str) -> Predictions:
    try:
        with np.load(path, allow_pickle=False) as stored:
            metric = str(stored["metric"])
            labels = stored["labels"]
            classes = stored["classes"] if "classes" in stored.files else None
            scores = stored["scores"] if "scores" in stored.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise PredictionsFileError(f"cannot be read ({error.__class__.__name__}: {error})") from None
    if (classes is None) == (scores is None):
        raise PredictionsFileError("holds neither predicted classes nor scores (or both)")
    answers = classes if classes is not None else scores
    if len(answers) != len(labels) or not len(labels):
        raise PredictionsFileError(f"holds {len(labels)} labels and {len(answers)} predictions")
    return Predictions(metric, labels, classes, scores)


def read(run_dir: str, record: Mapping[str, Any]) -> Optional[Predictions]:
    """The verified predictions of the run whose record is `record` and folder `run_dir`; None if
    the record names none, and None with a one-line warning if the file is not the one it names."""
    reference = record.get(RECORD_KEY)
    if not reference:
        return None
    path = os.path.join(run_dir, PREDICTIONS_FILE)
    mismatch = files.fingerprint_mismatch(path, reference)
    problem = None
    if mismatch is not None:
        problem = mismatch
    else:
        try:
            predictions = _load(path)
        except PredictionsFileError as error:
            problem = f"{PREDICTIONS_FILE} {error}"
        else:
            if predictions.metric != record.get("metric"):
                problem = f"{PREDICTIONS_FILE} is scored by {predictions.metric}, the record by {record.get('metric')}"
            elif abs(predictions.score() - float(record.get("test_score") or 0.0)) > SCORE_TOLERANCE:
                problem = (f"{PREDICTIONS_FILE} gives {record.get('metric')}={predictions.score():.6f}, "
                           f"the record {record.get('test_score')}")
    if problem is not None:
        warn(f"ignoring the test predictions in {run_dir}: {problem}; the run counts as having none")
        return None
    return predictions
