"""Transferability estimators: scores of frozen features that should rank networks as training does.

Each takes the training split's features (and, for LEEP, the source network's ImageNet class
probabilities) and returns one number, higher meaning "expected to transfer better":

- `logme`: the maximum log evidence of a Bayesian linear model per class (You, Liu, Wang & Long,
  "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021), exact.
- `leep`: log expected empirical prediction of the source classifier (Nguyen, Hassner, Seeger &
  Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned Representations", ICML 2020).
- `nleep`: LEEP with a Gaussian mixture on PCA-reduced features in place of the source classifier
  (Li, Jia, Zhou, Gong, Chen & Zhang, "Ranking Neural Checkpoints", CVPR 2021).
- `h_score`: tr(cov(f)^+ cov(E[f|y])) (Bao, Li, Huang, Wang & Zheng, "An Information-Theoretic
  Approach to Transferability in Task Transfer Learning", ICIP 2019); `shrunk_h_score`, its
  Ledoit-Wolf-shrunk form (Ibrahim, Ponomareva & Mazumder, "Newer is not always better: Rethinking
  transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022), since
  the plain score is exactly C - 1 for every network once N <= D + 1.
- `knn_accuracy`: leave-one-out k-nearest-neighbour accuracy on the training features.

The choices the papers leave open are the module's constants; the estimate regime records them.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import numpy as np

# LogME's maximisation: the profile evidence is scanned on this many log-spaced lambda = alpha / beta
# between the squared singular values' range widened by LOGME_GRID_MARGIN decades each way, and the
# best cell polished by bounded Brent to LOGME_TOLERANCE in log lambda within LOGME_MAX_ITERATIONS.
LOGME_GRID_POINTS = 241
LOGME_GRID_MARGIN = 12
LOGME_TOLERANCE = 1e-10
LOGME_MAX_ITERATIONS = 500
# Singular values below this fraction of the largest count as zero (rank of F, the H-score's
# pseudo-inverse): float64 round-off of a rank-deficient matrix sits near 1e-16.
RCOND = 1e-10
# NLEEP (Li et al. 2021, section 3): PCA keeping this fraction of the variance, then a mixture of
# this many Gaussian components per target class.
NLEEP_PCA_VARIANCE = 0.8
NLEEP_COMPONENTS_PER_CLASS = 5
# k of the leave-one-out k-NN: Euclidean distance, majority vote, ties to the smallest class.
KNN_NEIGHBOURS = 5


@dataclasses.dataclass(frozen=True)
class LogME:
    """LogME's score (the mean over targets of the maximum log evidence per example) and, per
    target, the maximising alpha (prior precision) and beta (noise precision). beta is infinite
    where the supremum is the noise-free limit (F of rank N fits any target exactly), alpha where
    it is the no-signal one."""

    score: float
    evidence: np.ndarray  # [K] maximum log evidence / N per target
    alpha: np.ndarray  # [K]
    beta: np.ndarray  # [K]
    converged: bool  # every target's polish reached LOGME_TOLERANCE within LOGME_MAX_ITERATIONS


def class_targets(labels: np.ndarray) -> np.ndarray:
    """Regression targets of LogME: one-vs-rest 0/1 columns of the classes present (single label),
    or each label's column of a multi-label matrix, with VOC's difficult (-1) counted as present."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return (labels != 0).astype(np.float64)
    return (labels[:, None] == np.unique(labels)[None, :]).astype(np.float64)


def logme(features: np.ndarray, targets: np.ndarray, *, tolerance: float = LOGME_TOLERANCE,
          max_iterations: int = LOGME_MAX_ITERATIONS) -> LogME:
    """The exact maximum over (alpha, beta) of the log evidence of y = F w + noise,
    w ~ N(0, I / alpha), noise ~ N(0, I / beta), for each target column of `targets` [N, K].

    The log evidence is Bishop's (PRML eq. 3.86), its log |alpha I + beta F^T F| over all D
    dimensions, the D - rank(F) zero eigenvalues of F^T F included (LogME's reference sums only
    min(N, D) terms when N < D). From the SVD of F it is maximised in beta in closed form for each
    lambda = alpha / beta, leaving one dimension, scanned and polished; the two limits (lambda -> 0,
    noise-free, finite when rank(F) = N; lambda -> infinity, no signal) are candidates too. MacKay's
    fixed point that LogME's reference iterates creeps towards the noise-free limit by well under
    1% per step, which is where the maximum lies for most classes when N < D: it stops short of it.
    """
    from scipy import optimize

    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    n = len(f)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    rank = int((s > RCOND * s[0]).sum())
    sigma2 = (s[:rank] ** 2)[:, None]
    z2 = (u[:, :rank].T @ y) ** 2  # the targets' energy along each singular direction [r, K]
    norm2 = (y * y).sum(axis=0)
    interpolates = rank == n  # then y = F w exactly for some w: the noise-free limit is finite
    outside = np.zeros_like(norm2) if interpolates else np.maximum(norm2 - z2.sum(axis=0), 0.0)

    def profile(log_lambda, z2, outside):
        """Log evidence / N at lambda, beta at its best N / |y|^2_(I + F F^T / lambda)^-1."""
        lam = np.exp(log_lambda)
        residual = (z2 * (lam / (lam + sigma2))).sum(axis=0) + outside
        log_det = np.log1p(sigma2 / lam).sum(axis=0)
        return (np.log(n / residual) - 1.0 - np.log(2 * np.pi)) / 2 - log_det / (2 * n)

    grid = np.linspace(np.log(sigma2.min()) - LOGME_GRID_MARGIN * np.log(10),
                       np.log(sigma2.max()) + LOGME_GRID_MARGIN * np.log(10), LOGME_GRID_POINTS)
    scan = np.stack([profile(np.full(y.shape[1], point), z2, outside) for point in grid])
    best = scan.argmax(axis=0)
    log_lambda = grid[best]
    evidence = scan[best, np.arange(y.shape[1])]
    converged = True
    for k, cell in enumerate(best):
        found = optimize.minimize_scalar(
            lambda v: -profile(np.array([v]), z2[:, k:k + 1], outside[k:k + 1])[0],
            bounds=(grid[max(cell - 1, 0)], grid[min(cell + 1, len(grid) - 1)]), method="bounded",
            options={"xatol": tolerance, "maxiter": max_iterations})
        converged &= bool(found.success)
        if -found.fun > evidence[k]:
            log_lambda[k], evidence[k] = found.x, -found.fun
    lam = np.exp(log_lambda)
    beta = n / ((z2 * (lam / (lam + sigma2))).sum(axis=0) + outside)
    alpha = lam * beta

    no_signal = (np.log(n / norm2) - 1.0 - np.log(2 * np.pi)) / 2
    wins = no_signal > evidence
    evidence, alpha, beta = (np.where(wins, no_signal, evidence), np.where(wins, np.inf, alpha),
                             np.where(wins, n / norm2, beta))
    if interpolates:
        q = (z2 / sigma2).sum(axis=0)  # |y|^2 in the metric (F F^T)^-1
        noise_free = (np.log(n / q) - 1.0 - np.log(2 * np.pi)) / 2 - np.log(sigma2).sum() / (2 * n)
        wins = noise_free > evidence
        evidence, alpha, beta = (np.where(wins, noise_free, evidence), np.where(wins, n / q, alpha),
                                 np.where(wins, np.inf, beta))
    return LogME(score=float(evidence.mean()), evidence=evidence, alpha=alpha, beta=beta,
                 converged=converged)


def leep(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: mean log of sum_z P(y_i | z) theta_z(x_i), where theta(x) [N, Z] are source-class
    probabilities and P(y | z) the empirical conditional of the target label given the source class
    (Nguyen et al. 2020, equations 1-2)."""
    theta = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    classes, index = np.unique(labels, return_inverse=True)
    joint = np.zeros((len(classes), theta.shape[1]))
    np.add.at(joint, index, theta)
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.einsum("nz,nz->n", theta, conditional[index])
    return float(np.mean(np.log(expected)))


def nleep(features: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> float:
    """NLEEP: LEEP with the posteriors of a Gaussian mixture (NLEEP_COMPONENTS_PER_CLASS components
    per class, fewer if the examples are too few) fitted to the features reduced by PCA to
    NLEEP_PCA_VARIANCE of their variance, in place of the source classifier (Li et al. 2021)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    labels = np.asarray(labels)
    reduced = PCA(n_components=NLEEP_PCA_VARIANCE, random_state=seed).fit_transform(
        np.asarray(features, dtype=np.float64))
    components = min(NLEEP_COMPONENTS_PER_CLASS * len(np.unique(labels)), len(labels) // 2)
    mixture = GaussianMixture(n_components=components, random_state=seed).fit(reduced)
    return leep(mixture.predict_proba(reduced), labels)


def _centred_class_means(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each example's class mean minus the overall mean: the centred E[f | y] of the H-score."""
    _, index = np.unique(labels, return_inverse=True)
    sums = np.zeros((index.max() + 1, f.shape[1]))
    np.add.at(sums, index, f)
    return (sums / np.bincount(index)[:, None])[index] - f.mean(axis=0)


def h_score(features: np.ndarray, labels: np.ndarray, *, rcond: float = RCOND) -> float:
    """H-score tr(cov(f)^+ cov(E[f|y])) (Bao et al. 2019), from the SVD of the centred features:
    with F_c = U S V^T, it is |G_c V S^-1|_F^2 for the centred class means G_c."""
    f = np.asarray(features, dtype=np.float64)
    _, s, vt = np.linalg.svd(f - f.mean(axis=0), full_matrices=False)
    keep = s > rcond * s[0]
    projected = _centred_class_means(f, np.asarray(labels)) @ vt[keep].T / s[keep]
    return float((projected ** 2).sum())


def shrunk_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score with cov(f) replaced by its Ledoit-Wolf shrinkage (1 - a) cov(f) + a mu I and
    cov(E[f|y]) scaled by (1 - a) (Ibrahim et al. 2022): finite and informative when N <= D."""
    from sklearn.covariance import ledoit_wolf

    f = np.asarray(features, dtype=np.float64)
    covariance, shrinkage = ledoit_wolf(f)
    g = _centred_class_means(f, np.asarray(labels))
    between = (1.0 - shrinkage) * (g.T @ g) / len(f)
    return float(np.trace(np.linalg.solve(covariance, between)))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = KNN_NEIGHBOURS,
                 chunk: int = 1024) -> float:
    """Leave-one-out accuracy of k-NN (Euclidean, majority vote, ties to the smallest class) on the
    given features: each example is classified by its k nearest others."""
    f = np.asarray(features, dtype=np.float64)
    classes, index = np.unique(np.asarray(labels), return_inverse=True)
    norms = (f * f).sum(axis=1)
    correct = 0
    for start in range(0, len(f), chunk):
        rows = slice(start, min(start + chunk, len(f)))
        distances = norms[rows, None] + norms[None, :] - 2.0 * f[rows] @ f.T
        distances[np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop)] = np.inf
        nearest = np.argpartition(distances, k, axis=1)[:, :k]
        votes = np.zeros((len(nearest), len(classes)), dtype=np.int64)
        np.add.at(votes, (np.arange(len(nearest))[:, None], index[nearest]), 1)
        correct += int((votes.argmax(axis=1) == index[rows]).sum())
    return correct / len(f)


def summary(result: LogME) -> Dict[str, Optional[float]]:
    """LogME's record entry: the score, whether every maximisation converged, and how many targets
    reached a limit (noise-free, no signal) rather than an interior maximum."""
    return {"score": result.score, "converged": result.converged, "targets": len(result.evidence),
            "noise_free_targets": int(np.isinf(result.beta).sum()),
            "no_signal_targets": int(np.isinf(result.alpha).sum())}
