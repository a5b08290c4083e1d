"""The paper's significance test: a two-sided paired permutation test on per-example outcomes.

The paper marks the networks "not significantly different from the best (p > 0.05)"; SimCLR
(Chen et al. 2020, appendix B.8), following its protocol, names the test: a permutation test with
100,000 samples, which for top-1 accuracy is equivalent to an exact McNemar test. Under the null
hypothesis the two networks' outputs on each test example are exchangeable, so each permutation
swaps them example by example with probability 1/2 and recomputes both scores.

- top-1 with one run per network: only the discordant examples (one network right, the other
  wrong) change the difference when swapped, and the count of those the best gets right is
  binomial(discordant, 1/2): the exact McNemar test, scipy.stats.binomtest. Exact, no sampling.
- top-1 over several seeds and mean per-class accuracy: the score difference is linear in the
  per-example outcomes (each example weighs 1 / (classes x its class's examples) for the per-class
  mean; a network's outcome is its mean correctness over its seeds), so a permutation flips the
  signs of the per-example differences; all 2^k sign patterns when that is at most `samples`
  (exact, as scipy.stats.permutation_test enumerates them), else `samples` random ones, drawn as
  binomial counts per magnitude of difference (the same distribution, without a draw per example).
- 11-point mAP: not linear; each permutation swaps whole score rows and recomputes both networks'
  mAP. Per class, the two networks' 2N (score, example) entries are ranked once; a permuted network
  keeps one entry per example, so its ranking is that fixed order filtered, and its AP is a
  cumulative count over it, vectorized across a batch of permutations.

The Monte Carlo p-value is scipy's: 2 x min(one-sided p), each (1 + exceedances) / (1 + samples),
at most 1, so it is never 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from tfbench import metrics
from tfbench.predictions import Predictions

SAMPLES = 100_000
# CHOICE: mAP recomputes both networks' 11-point AP on every permutation: 10,000 permutations of
# VOC 2007's 4,952 x 20 took 148 s for one pair of networks on a shared 2-core machine under a
# load of about 10 (random scores, seed 0), so the default is 2,000: 20 s a pair there, under a
# load of 15; the Monte Carlo standard error of a p near 0.05 is then 0.005.
# --map_permutation_samples raises it.
MAP_SAMPLES = 2_000
BATCH = 2_000  # permutations drawn together (linear metrics: a few numbers per class each)
MAP_BATCH = 200  # mAP: memory and cache bound BATCH x 2 x examples per class
# Differences closer than this count as equal: summing in another order must not break a tie.
TOLERANCE = 1e-12


def method(metric: str, runs_a: Sequence[Predictions], runs_b: Sequence[Predictions], samples: int) -> str:
    """How p_value compares these runs: 'exact McNemar', 'exact permutation' or 'permutation'."""
    if metric == "top1" and len(runs_a) == len(runs_b) == 1:
        return "exact McNemar"
    if metric != "map11" and 2 ** len(_discordant(metric, runs_a, runs_b)) <= samples:
        return "exact permutation"
    return "permutation"


def p_value(metric: str, runs_a: Sequence[Predictions], runs_b: Sequence[Predictions],
            samples: int = SAMPLES, seed: int = 0) -> float:
    """Two-sided p of 'a and b score the same' from paired per-example outputs (each side: a
    network's runs, its score the mean over them); all runs must hold the same test examples."""
    if {len(run) for run in (*runs_a, *runs_b)} != {len(runs_a[0])}:
        raise ValueError("a paired test needs runs on the same test examples")
    if metric == "map11":
        return _map11(runs_a, runs_b, samples, seed)
    if method(metric, runs_a, runs_b, samples) == "exact McNemar":
        (a,), (b,) = runs_a, runs_b
        right_a, right_b = a.classes == a.labels, b.classes == b.labels
        only_a = int(np.sum(right_a & ~right_b))
        discordant = only_a + int(np.sum(right_b & ~right_a))
        return 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return _sign_flip(_discordant(metric, runs_a, runs_b), samples, seed)


def _discordant(metric: str, runs_a: Sequence[Predictions], runs_b: Sequence[Predictions]) -> np.ndarray:
    """The nonzero per-example terms of score(a) - score(b), for a metric linear in the outcomes."""
    labels = runs_a[0].labels
    correct_a = np.mean([run.classes == labels for run in runs_a], axis=0)
    correct_b = np.mean([run.classes == labels for run in runs_b], axis=0)
    if metric == "top1":
        weight = np.full(len(labels), 1.0 / len(labels))
    elif metric == "mean_per_class":
        _, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weight = 1.0 / (len(counts) * counts[index])
    else:
        raise ValueError(f"no paired permutation test for metric {metric!r}")
    terms = weight * (correct_a - correct_b)
    return terms[terms != 0]


def _sign_flip(terms: np.ndarray, samples: int, seed: int) -> float:
    """p of sum(terms) under random sign flips: every pattern when 2^k <= samples, else sampled."""
    observed = terms.sum()
    if not len(terms) or abs(observed) <= TOLERANCE:
        return 1.0
    if 2 ** len(terms) <= samples:
        patterns = ((np.arange(2 ** len(terms))[:, None] >> np.arange(len(terms))) & 1) * 2 - 1
        null = patterns @ terms
        greater = np.mean(null >= observed - TOLERANCE)
        less = np.mean(null <= observed + TOLERANCE)
        return float(min(1.0, 2 * min(greater, less)))
    # Random signs on the terms of one magnitude w (n of them) add up to w (2 B - n), B binomial(n,
    # 1/2): the same null distribution as flipping each sign, drawn per magnitude, not per example.
    magnitudes, counts = np.unique(np.abs(terms), return_counts=True)
    rng = np.random.default_rng(seed)
    greater = less = 0
    for size in _batches(samples):
        null = (2 * rng.binomial(counts, 0.5, size=(size, len(counts))) - counts) @ magnitudes
        greater += int(np.sum(null >= observed - TOLERANCE))
        less += int(np.sum(null <= observed + TOLERANCE))
    return _monte_carlo(greater, less, samples)


def _monte_carlo(greater: int, less: int, samples: int) -> float:
    return float(min(1.0, 2 * min((1 + greater) / (1 + samples), (1 + less) / (1 + samples))))


def _batches(samples: int, batch: int = BATCH):
    for start in range(0, samples, batch):
        yield min(batch, samples - start)


def _map11(runs_a: Sequence[Predictions], runs_b: Sequence[Predictions], samples: int, seed: int) -> float:
    """Monte Carlo permutation p for 11-point mAP: each permutation swaps the two sides' score rows
    example by example (all seeds of a side together) and recomputes every run's mAP."""
    if len(runs_a) != len(runs_b):
        raise ValueError("the mAP permutation test pairs the two networks' runs seed by seed")
    labels = runs_a[0].labels
    observed = np.mean([run.score() for run in runs_a]) - np.mean([run.score() for run in runs_b])
    rankings = [_MergedRanking(labels, a.scores, b.scores) for a, b in zip(runs_a, runs_b)]
    rng = np.random.default_rng(seed)
    greater = less = 0
    for size in _batches(samples, MAP_BATCH):
        swapped = rng.integers(0, 2, size=(size, len(labels))).astype(bool)
        null = np.mean([ranking.difference(swapped) for ranking in rankings], axis=0)
        greater += int(np.sum(null >= observed - TOLERANCE))
        less += int(np.sum(null <= observed + TOLERANCE))
    return _monte_carlo(greater, less, samples)


class _MergedRanking:
    """Per class, both networks' entries (score, example) in one ranking, difficult ones dropped:
    a permuted network's ranking is this order restricted to the entries it keeps."""

    def __init__(self, labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray):
        count = len(labels)
        self.classes = []
        for c in range(labels.shape[1]):
            scores = np.concatenate([scores_a[:, c], scores_b[:, c]]).astype(np.float64)
            example = np.concatenate([np.arange(count), np.arange(count)])
            # The metric ranks by score, ties in example order; an example keeps one entry per side.
            order = np.lexsort((example, -scores))
            label = np.concatenate([labels[:, c], labels[:, c]])[order]
            order = order[label != -1]
            positive = np.flatnonzero(label[label != -1] == 1)  # entry positions of the positives
            self.classes.append((example[order], order < count, positive))

    def difference(self, swapped: np.ndarray) -> np.ndarray:
        """mAP(a') - mAP(b') for each row of `swapped` [R, N] (True: that example's rows swap)."""
        total = np.zeros(len(swapped))
        for example, from_a, positive in self.classes:
            if not len(positive):
                continue  # AP 0 on both sides, as the metric counts a class without positives
            kept = swapped[:, example] != from_a  # [R, entries]: the entry is in a' 's ranking
            retrieved = np.cumsum(kept, axis=1, dtype=np.int16)[:, positive]  # entries < 2^15
            kept = kept[:, positive]
            total += _average_precision(kept, retrieved)
            total -= _average_precision(~kept, positive[None, :] + 1 - retrieved)
        return total / len(self.classes)


def _average_precision(kept: np.ndarray, retrieved: np.ndarray) -> np.ndarray:
    """metrics.ranked_average_precision of each row's ranking, from its positive entries alone:
    `kept` [R, 2P] whether each positive entry is in the row's ranking, `retrieved` how many
    entries of the ranking are at or above it. The interpolated precision at a recall is highest
    at a positive, so the negatives matter only through `retrieved`."""
    positives = kept.shape[1] // 2
    true_positives = np.cumsum(kept, axis=1, dtype=np.int32)
    precision = np.where(kept, true_positives / np.maximum(retrieved, 1), 0.0)
    best_from = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    recall = true_positives / positives
    rows = np.arange(len(kept))
    total = np.zeros(len(kept))
    for threshold in metrics.VOC07_RECALL_THRESHOLDS:
        reaches = recall >= threshold  # as the metric compares, exactly
        total += np.where(reaches[:, -1], best_from[rows, np.argmax(reaches, axis=1)], 0.0) / 11
    return total
