"""Pearson r between ImageNet top-1 and transfer scores, with a bootstrap interval over models.

Kornblith, Shlens & Le (2019), section 3: test scores p become log odds logit(p) = ln(p / (1 - p))
before they are averaged or correlated. p is first clipped to [LOGIT_EPS, 1 - LOGIT_EPS] so that a
perfect (or zero) score gives a large finite value (about +-9.2) instead of infinity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
from scipy import special, stats

LOGIT_EPS = 1e-4
MIN_MODELS = 3  # Pearson r of two points is always +-1: it says nothing
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


def logit(p, eps: float = LOGIT_EPS) -> np.ndarray:
    """Log odds ln(p / (1 - p)) of fractions, clipped to [eps, 1 - eps] to stay finite."""
    return special.logit(np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps))


def pearson_r(x, y) -> np.ndarray:
    """scipy's Pearson r along the last axis; NaN where x or y is constant (r is undefined there)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return np.asarray(stats.pearsonr(x, y, axis=-1).statistic)


@dataclass(frozen=True)
class Correlation:
    """Pearson r over n models with its bootstrap interval; r is None when undefined (`reason`)."""

    n: int
    r: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None
    resamples: int = 0
    reason: Optional[str] = None

    def interval(self) -> str:
        """The bootstrap interval for a table column, or why there is none."""
        if self.r is None:
            return f"n/a: {self.reason}"
        return f"none with {self.n} models" if self.low is None else f"[{self.low:.2f}, {self.high:.2f}]"

    def compact(self) -> str:
        """"0.91 [0.68, 0.99]", "0.99" (too few models for an interval) or "n/a"."""
        if self.r is None:
            return "n/a"
        return f"{self.r:.2f}" if self.low is None else f"{self.r:.2f} {self.interval()}"

    def describe(self) -> str:
        return f"n/a ({self.reason})" if self.r is None else f"{self.compact()} (n={self.n})"

    def to_json(self) -> Dict[str, Any]:
        return {"n": self.n, "r": self.r, "low": self.low, "high": self.high,
                "valid_resamples": self.resamples, "reason": self.reason}


def correlate(x, y, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
              confidence: float = CONFIDENCE) -> Correlation:
    """Pearson r of paired values (one pair per model) with a percentile bootstrap interval.

    scipy.stats.bootstrap resamples the models (the (x, y) pairs) with replacement, `resamples`
    times from a generator seeded with `seed`. A resample with fewer than MIN_MODELS distinct models is
    dropped, for the reason r itself needs them: two models give r = +-1 whatever the data, and
    with few models such resamples would pull the interval to -1 or 1. So are resamples where
    every chosen x or every chosen y is equal (no r). `Correlation.resamples` counts those kept;
    the interval is the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of their r.
    With exactly MIN_MODELS models every kept resample is a permutation, so there is no interval.
    It measures how much r depends on which models were run, not the noise of each test score.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < MIN_MODELS:
        return Correlation(n=n, reason=f"needs at least {MIN_MODELS} models, has {n}")
    r = float(pearson_r(x, y))
    if np.isnan(r):
        return Correlation(n=n, reason="ImageNet top-1 or transfer score is equal for every model")
    if n == MIN_MODELS:
        return Correlation(n=n, r=r)

    def resampled_r(picks: np.ndarray, axis: int = -1) -> np.ndarray:
        distinct = 1 + (np.diff(np.sort(picks, axis=axis), axis=axis) != 0).sum(axis=axis)
        return np.where(distinct >= MIN_MODELS, pearson_r(x[picks], y[picks]), np.nan)

    # scipy resamples the models' indices, so each resample's distinct models can be counted; its
    # own interval would be NaN with any dropped resample, so the percentiles are taken of the rest.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        bootstrap = stats.bootstrap((np.arange(n),), resampled_r, n_resamples=resamples, vectorized=True,
                                    method="percentile", rng=seed).bootstrap_distribution
    bootstrap = bootstrap[~np.isnan(bootstrap)]
    if not len(bootstrap):
        return Correlation(n=n, r=r)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(bootstrap, [tail, 100.0 - tail])
    return Correlation(n=n, r=r, low=float(low), high=float(high), resamples=len(bootstrap))
