"""tfbench.metrics against scikit-learn, a literal re-reading of the VOC 2007 devkit, and cases
worked out by hand."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

from tfbench import metrics
from tfbench.registry import UnknownNameError


def _single_label_case(seed, num_examples=200, num_classes=7):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_examples)
    scores = rng.normal(size=(num_examples, num_classes))
    scores[np.arange(num_examples), labels] += rng.uniform(0, 2, num_examples)  # better than chance
    return labels, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top1_matches_sklearn_accuracy(seed):
    labels, scores = _single_label_case(seed)
    assert metrics.top1(labels, scores) == pytest.approx(accuracy_score(labels, scores.argmax(1)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_per_class_matches_sklearn_balanced_accuracy(seed):
    labels, scores = _single_label_case(seed)
    expected = balanced_accuracy_score(labels, scores.argmax(1))
    assert metrics.mean_per_class(labels, scores) == pytest.approx(expected)


def test_mean_per_class_averages_only_classes_present_in_labels():
    labels, scores = _single_label_case(3, num_classes=6)
    labels[labels == 4] = 0  # class 4 never appears, but may still be predicted
    matrix = confusion_matrix(labels, scores.argmax(1), labels=range(6))
    present = matrix.sum(axis=1) > 0
    expected = np.mean(np.diag(matrix)[present] / matrix.sum(axis=1)[present])
    assert metrics.mean_per_class(labels, scores) == pytest.approx(expected)
    # Imbalance matters: the plain accuracy of the same predictions differs.
    assert metrics.top1(labels, scores) != pytest.approx(expected)


def test_top1_ties_go_to_lowest_class_id():
    scores = np.array([[1.0, 1.0, 0.0]])
    assert metrics.top1([0], scores) == 1.0
    assert metrics.top1([1], scores) == 0.0


def test_accepts_tensors():
    labels, scores = _single_label_case(4)
    assert metrics.top1(tf.constant(labels), tf.constant(scores)) == metrics.top1(labels, scores)
    multi, multi_scores = _multi_label_case(4)
    assert metrics.map11(tf.constant(multi), tf.constant(multi_scores, tf.float32)) == pytest.approx(
        metrics.map11(multi, multi_scores.astype(np.float32))
    )


# --- VOC 2007 11-point mAP -------------------------------------------------------------------


def _matlab_colon(first, step, last):
    """MATLAB's first:step:last, built from both ends as MathWorks documents (colonop.m)."""
    count = int(round((last - first) / step))
    values = [0.0] * (count + 1)
    for k in range(count // 2 + 1):
        values[k] = first + k * step
        values[count - k] = last - k * step
    if count % 2 == 0:
        values[count // 2] = (first + last) / 2
    return values


def _devkit_ap(gt, out):
    """VOCevalcls.m line by line. gt uses the devkit's coding: 1 positive, -1 negative, 0 difficult."""
    si = sorted(range(len(out)), key=lambda i: -out[i])  # MATLAB sort is stable
    tp = np.cumsum([gt[i] > 0 for i in si]).astype(float)
    fp = np.cumsum([gt[i] < 0 for i in si]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = tp / sum(g > 0 for g in gt)
        prec = tp / (fp + tp)
    ap = 0.0
    for t in _matlab_colon(0, 0.1, 1):
        selected = [p for p, r in zip(prec, rec) if r >= t]
        selected = [p for p in selected if not np.isnan(p)]  # MATLAB's max ignores NaN
        p = max(selected) if selected else 0.0
        ap = ap + p / 11
    return ap


def _to_devkit_coding(labels):
    return np.select([labels == 1, labels == 0], [1, -1], 0)


def _multi_label_case(seed, num_examples=60, num_classes=5):
    rng = np.random.default_rng(seed)
    labels = rng.choice([1, 0, 0, -1], size=(num_examples, num_classes))
    scores = np.round(rng.normal(size=(num_examples, num_classes)) + labels, 1)  # rounding makes ties
    return labels, scores


@pytest.mark.parametrize("seed", range(5))
def test_map11_matches_devkit_loop(seed):
    labels, scores = _multi_label_case(seed)
    devkit = _to_devkit_coding(labels)
    expected = np.mean([_devkit_ap(list(devkit[:, c]), list(scores[:, c])) for c in range(labels.shape[1])])
    assert metrics.map11(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_matlab_recall_thresholds():
    assert metrics.VOC07_RECALL_THRESHOLDS.tolist() == _matlab_colon(0, 0.1, 1)


def _ap(labels, scores):
    return metrics.map11(np.array(labels)[:, None], np.array(scores, dtype=float)[:, None])


def test_difficult_entries_are_neither_true_nor_false_positives():
    # Ranked: positive, negative, difficult, positive. Recall 0.5 at precision 1 (ranks 1-2),
    # recall 1 at precision 2/3 (the difficult entry is skipped): 6 thresholds at 1, 5 at 2/3.
    scores = [0.9, 0.8, 0.7, 0.6]
    assert _ap([1, 0, -1, 1], scores) == pytest.approx((6 + 5 * 2 / 3) / 11)
    # Counting it as a negative would give precision 2/4 at full recall instead.
    assert _ap([1, 0, 0, 1], scores) == pytest.approx((6 + 5 * 2 / 4) / 11)


def test_leading_difficult_entries_do_not_count():
    assert _ap([-1, -1, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(1.0)


def test_ties_keep_input_order_like_matlab_stable_sort():
    assert _ap([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # the negative is ranked first
    assert _ap([1, 0], [0.5, 0.5]) == pytest.approx(1.0)


def test_class_without_positives_scores_zero_and_counts_in_the_mean():
    labels = np.array([[1, 0], [0, 0], [0, -1]])
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.3, 0.5]])
    assert metrics.map11(labels, scores) == pytest.approx((1.0 + 0.0) / 2)


def test_recall_equal_to_threshold_point_three_does_not_reach_it():
    # 10 positives: 3 on top, then 7 negatives, then 7 positives. Recall 3/10 is the double just
    # below 0.3, and MATLAB's 0:0.1:1 has 3*0.1 = 0.30000000000000004 there, so the threshold 0.3
    # already takes the later precision 10/17: 3 thresholds at 1, 8 at 10/17.
    labels = [1] * 3 + [0] * 7 + [1] * 7
    scores = np.arange(len(labels), 0, -1)
    assert _ap(labels, scores) == pytest.approx((3 + 8 * 10 / 17) / 11)


def test_recall_equal_to_threshold_point_six_reaches_it():
    # 6 positives on top, 5 negatives, 4 positives: MATLAB's 0.6 is 1 - 4*0.1, the same double as
    # 6/10, so 7 thresholds see precision 1 (np.arange's 0.6000000000000001 would give 6).
    labels = [1] * 6 + [0] * 5 + [1] * 4
    scores = np.arange(len(labels), 0, -1)
    assert _ap(labels, scores) == pytest.approx((7 + 4 * 10 / 15) / 11)


# --- dispatch and errors ---------------------------------------------------------------------


def test_score_dispatches_by_name():
    assert metrics.names() == ["top1", "mean_per_class", "map11"]
    labels, scores = _single_label_case(5)
    assert metrics.score("top1", labels, scores) == metrics.top1(labels, scores)
    assert metrics.score("mean_per_class", labels, scores) == metrics.mean_per_class(labels, scores)
    multi, multi_scores = _multi_label_case(5)
    assert metrics.score("map11", multi, multi_scores) == metrics.map11(multi, multi_scores)


def test_unknown_metric_is_one_line_with_choices():
    with pytest.raises(UnknownNameError) as error:
        metrics.score("top5", [0], [[1.0]])
    message = str(error.value)
    assert "'top5'" in message and "top1" in message and "\n" not in message
    with pytest.raises(UnknownNameError, match="top1, mean_per_class, map11"):
        metrics.score("accuracy", [0], [[1.0]])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.map11([[2, 0]], [[0.1, 0.2]]), r"1 \(present\), 0 \(absent\) or -1"),
        (lambda: metrics.map11([1, 0], [[0.1], [0.2]]), r"shape \[N, C\]"),
        (lambda: metrics.top1([[1, 0]], [[0.1, 0.2]]), r"labels of shape \[N\]"),
        (lambda: metrics.top1([3], [[0.1, 0.2]]), r"class ids in \[0, 2\)"),
        (lambda: metrics.top1([0, 1], [[0.1, 0.2]]), r"scores must have shape \[2, num_classes\]"),
        (lambda: metrics.top1([0], [[np.nan, 0.2]]), "NaN"),
        (lambda: metrics.top1([], np.zeros((0, 2))), "empty"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()
