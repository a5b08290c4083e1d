"""The benchmark's three test metrics: top-1, mean per-class accuracy and VOC 2007 11-point mAP.

Every metric takes ``labels`` and ``scores`` (NumPy arrays or TensorFlow tensors) and returns a
fraction in [0, 1]:

- single-label: ``labels`` int [N] with class ids in [0, C), ``scores`` [N, C];
- multi-label (VOC): ``labels`` int [N, C] with 1 = present, 0 = absent, -1 = "difficult",
  ``scores`` [N, C].

Each dataset names its metric (``DatasetSpec.metric``); ``score(name, labels, scores)`` looks it up.
"""

from __future__ import annotations

from typing import Callable, List

import numpy as np

from tfbench.registry import Registry

# MATLAB's `0:0.1:1`, the recall thresholds of the devkit, element for element. MATLAB builds a
# colon range from both ends (a + k*d for the first half, b - k*d for the second), so its fourth
# element is 3 * 0.1 = 0.30000000000000004 while its seventh is 1 - 4 * 0.1 = 0.6 exactly;
# np.arange(0, 1.1, 0.1) differs at 0.6 and 0.7. It matters only when a recall equals a threshold.
VOC07_RECALL_THRESHOLDS = np.array([k * 0.1 for k in range(6)] + [1 - k * 0.1 for k in range(4, -1, -1)])


def _scores_array(scores, num_rows: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != num_rows:
        raise ValueError(f"scores must have shape [{num_rows}, num_classes], got {list(scores.shape)}")
    if num_rows == 0:
        raise ValueError("cannot score an empty set of examples (0 rows)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN (a diverged model?); metrics need finite or +-inf scores")
    return scores


def _class_ids(labels, scores) -> tuple:
    """Single-label inputs as (labels [N], scores [N, C]), checked so that errors name the problem."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"single-label metrics take labels of shape [N], got {list(labels.shape)} "
            "(multi-label [N, C] labels are scored with 'map11')"
        )
    scores = _scores_array(scores, labels.shape[0])
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(
            f"labels must be class ids in [0, {scores.shape[1]}), got values in "
            f"[{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64), scores


def top1(labels, scores) -> float:
    """Fraction of examples whose highest score is their class (ties go to the lowest class id)."""
    labels, scores = _class_ids(labels, scores)
    return _top1_of_classes(labels, np.argmax(scores, axis=1))


def mean_per_class(labels, scores) -> float:
    """Accuracy of each class present in ``labels``, averaged with equal weight per class.

    Classes with no example in ``labels`` are left out (their accuracy is undefined), which is what
    a per-class accuracy over a test set means for Aircraft, Pets, Caltech-101 and Flowers.
    """
    labels, scores = _class_ids(labels, scores)
    return _mean_per_class_of_classes(labels, np.argmax(scores, axis=1))


def _top1_of_classes(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(predicted == labels))


def _mean_per_class_of_classes(labels: np.ndarray, predicted: np.ndarray) -> float:
    # Per class: correct / examples, by bincount over the classes present (one pass, not one per class).
    present, index = np.unique(labels, return_inverse=True)
    correct = np.bincount(index, weights=predicted == labels, minlength=len(present))
    return float(np.mean(correct / np.bincount(index, minlength=len(present))))


def voc07_average_precision(labels, scores) -> float:
    """One class's AP exactly as the PASCAL VOC 2007 devkit's VOCevalcls.m computes it.

    labels [N] in {1, 0, -1}, scores [N]. The devkit ranks by descending score with MATLAB's stable
    sort (ties keep the input order), counts positives (1) as true and negatives (0) as false
    positives, and skips "difficult" entries (-1), which are neither. The precision at each of the
    11 recall thresholds is the maximum precision at any rank whose recall reaches the threshold
    (0 if none). A class with no positive example has undefined recall everywhere, so every
    threshold contributes 0 and its AP is 0 (the devkit's answer, kept in the mean).
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return ranked_average_precision(np.asarray(labels)[order])


def ranked_average_precision(ranked) -> float:
    """`voc07_average_precision` of labels already in ranking order (highest score first, ties
    broken): what a bootstrap over a fixed ranking needs without sorting each resample again."""
    ranked = np.asarray(ranked)
    true_positives = np.cumsum(ranked == 1)
    false_positives = np.cumsum(ranked == 0)
    num_positives = int(true_positives[-1]) if len(ranked) else 0
    if num_positives == 0:
        return 0.0
    recall = true_positives / num_positives
    retrieved = true_positives + false_positives
    # Leading difficult entries give 0/0; MATLAB's max skips those NaNs, so they never count.
    precision = np.divide(
        true_positives, retrieved, out=np.full(len(ranked), np.nan), where=retrieved > 0
    )
    # Recall never decreases down the ranking, so the ranks reaching a threshold are a suffix:
    # the best precision of each suffix (NaNs skipped, as by nanmax) serves all 11 thresholds.
    best_from = np.fmax.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, VOC07_RECALL_THRESHOLDS, side="left")
    total = 0.0
    for start in first:
        total += best_from[start] / 11 if start < len(ranked) else 0.0
    return float(total)


def map11(labels, scores) -> float:
    """VOC 2007 classification mAP: the mean over classes of the devkit's 11-point AP."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"map11 takes multi-label labels of shape [N, C], got {list(labels.shape)}")
    scores = _scores_array(scores, labels.shape[0])
    if scores.shape != labels.shape:
        raise ValueError(f"labels {list(labels.shape)} and scores {list(scores.shape)} differ in shape")
    unexpected = np.setdiff1d(np.unique(labels), [-1, 0, 1])
    if unexpected.size:
        raise ValueError(
            f"multi-label labels must be 1 (present), 0 (absent) or -1 (difficult), got {unexpected.tolist()}"
        )
    return float(
        np.mean([voc07_average_precision(labels[:, c], scores[:, c]) for c in range(labels.shape[1])])
    )


METRICS: Registry[Callable[..., float]] = Registry("metric", list_hint="tfbench.metrics.names() lists them")
METRICS.register("top1", top1)
METRICS.register("mean_per_class", mean_per_class)
METRICS.register("map11", map11)

# The metrics that only need each example's predicted class (the argmax of its scores).
_OF_CLASSES = {"top1": _top1_of_classes, "mean_per_class": _mean_per_class_of_classes}


def names() -> List[str]:
    """The metric names a DatasetSpec may use."""
    return METRICS.names()


def score(metric: str, labels, scores) -> float:
    """The named metric of (labels, scores); an unknown name raises UnknownNameError."""
    return METRICS.get(metric)(labels, scores)


def needs_scores(metric: str) -> bool:
    """Whether the metric ranks examples by score (mAP), rather than needing each one's class only."""
    METRICS.get(metric)
    return metric not in _OF_CLASSES


def score_classes(metric: str, labels, predicted) -> float:
    """A single-label metric from each example's predicted class: equal to `score` of any scores
    whose argmax is `predicted` (a stored run's answers are enough to score a resample of them)."""
    if needs_scores(metric):
        raise ValueError(f"{metric} ranks examples by score; predicted classes cannot give it")
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.ndim != 1 or predicted.shape != labels.shape or not labels.size:
        raise ValueError(f"labels and predicted classes must be non-empty [N] arrays of one shape, got "
                         f"{list(labels.shape)} and {list(predicted.shape)}")
    return _OF_CLASSES[metric](labels.astype(np.int64), predicted.astype(np.int64))
