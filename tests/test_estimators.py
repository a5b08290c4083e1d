"""tfbench.estimators against independent computations: LogME against a generic maximisation of the
closed-form evidence (log-determinant of the D x D matrix by slogdet), LEEP against a hand
computation, the H-score against its definition with numpy's pinv, k-NN against scikit-learn."""

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.neighbors import KNeighborsClassifier

from tfbench import estimators


def _problem(seed, n, d, classes=3, separation=1.0):
    """Post-ReLU-like features with class structure, labels not numbered 0..C-1."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.arange(classes) * 3 + 2, size=n)
    centres = rng.normal(size=(labels.max() + 1, d)) * separation
    return np.maximum(centres[labels] + rng.normal(size=(n, d)) + 0.5, 0.0), labels


def _log_evidence(log_alpha, log_beta, f, y):
    """Bishop (2006) eq. 3.86, written out on the D x D matrix A = alpha I + beta F^T F."""
    alpha, beta = np.exp(log_alpha), np.exp(log_beta)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    error = beta / 2 * np.sum((y - f @ m) ** 2) + alpha / 2 * m @ m
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - error - np.linalg.slogdet(a)[1] / 2
            - n / 2 * np.log(2 * np.pi))


def _maximise(f, y):
    """The best of a few Nelder-Mead runs over (log alpha, log beta), polished by L-BFGS-B, with
    beta <= 1e8: beyond it round-off in the D x D log-determinant (about 1e-6) swamps the evidence's
    approach to its noise-free limit, which _noise_free_maximum gives instead."""
    bounds = [(-20.0, 20.0), (-20.0, 8 * np.log(10))]
    best = None
    for start in [(0.0, 0.0), (-4.0, 2.0), (4.0, -2.0), (0.0, 12.0)]:
        found = optimize.minimize(lambda p: -_log_evidence(p[0], p[1], f, y), start, bounds=bounds,
                                  method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12,
                                                                 "maxiter": 4000})
        found = optimize.minimize(lambda p: -_log_evidence(p[0], p[1], f, y), found.x,
                                  bounds=bounds, method="L-BFGS-B")
        if best is None or found.fun < best.fun:
            best = found
    return -best.fun, np.exp(best.x)


def _noise_free_maximum(f, y):
    """sup over alpha of log N(y | 0, F F^T / alpha): the evidence as beta -> infinity."""
    gram = f @ f.T
    found = optimize.minimize_scalar(
        lambda a: -stats.multivariate_normal(np.zeros(len(y)), gram / np.exp(a)).logpdf(y),
        bracket=(-5.0, 5.0), tol=1e-12)
    return -found.fun, np.exp(found.x)


@pytest.mark.parametrize("n, d", [(60, 8), (20, 40)], ids=["N>D", "N<D"])
def test_logme_is_the_maximum_evidence(n, d):
    f, labels = _problem(seed=n, n=n, d=d, classes=4)
    targets = estimators.class_targets(labels)
    result = estimators.logme(f, targets)
    assert result.converged and targets.shape[1] == 4
    for k in range(targets.shape[1]):
        y = targets[:, k]
        maximum, (alpha, beta) = _maximise(f, y)
        ours = result.evidence[k] * n
        if n < d:  # the supremum may be the noise-free limit, which no finite beta reaches
            noise_free, noise_free_alpha = _noise_free_maximum(f, y)
            if noise_free > maximum:
                maximum, alpha, beta = noise_free, noise_free_alpha, np.inf
        if np.isfinite(result.beta[k]):
            assert ours == pytest.approx(
                _log_evidence(np.log(result.alpha[k]), np.log(result.beta[k]), f, y), rel=1e-10)
        assert ours == pytest.approx(maximum, rel=1e-8)
        assert ours >= maximum - 1e-8
        np.testing.assert_allclose([result.alpha[k], result.beta[k]], [alpha, beta], rtol=1e-3)
    if n < d:  # both kinds of maximum were checked
        assert 0 < np.isinf(result.beta).sum() < len(result.beta)
    assert result.score == pytest.approx(result.evidence.mean())


def test_logme_says_when_its_maximisation_did_not_converge():
    f, labels = _problem(seed=1, n=30, d=5)
    assert not estimators.logme(f, estimators.class_targets(labels), max_iterations=2).converged


def test_class_targets_one_vs_rest_and_multi_label_with_difficult_present():
    np.testing.assert_array_equal(estimators.class_targets(np.array([5, 2, 5])),
                                  [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(estimators.class_targets(np.array([[1, -1, 0], [0, 0, 1]])),
                                  [[1, 1, 0], [0, 0, 1]])


def test_leep_by_hand():
    theta = np.array([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    labels = np.array([7, 7, 3])
    # P(y, z) = sum of theta over y's examples / 3: P(7 | z0) = 1.2 / 1.3, P(7 | z1) = 0.8 / 1.7,
    # P(3 | z0) = 0.1 / 1.3, P(3 | z1) = 0.9 / 1.7.
    expected = [0.8 * 12 / 13 + 0.2 * 8 / 17, 0.4 * 12 / 13 + 0.6 * 8 / 17, 0.1 * 1 / 13 + 0.9 * 9 / 17]
    assert estimators.leep(theta, labels) == pytest.approx(np.mean(np.log(expected)), rel=1e-12)


def test_leep_ignores_a_source_class_that_no_example_has():
    theta = np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    assert estimators.leep(theta, np.array([0, 1])) == pytest.approx(
        estimators.leep(theta[:, :2], np.array([0, 1])))


def _h_score_definition(f, labels, rcond):
    g = np.zeros_like(f)
    for label in np.unique(labels):
        g[labels == label] = f[labels == label].mean(axis=0)
    return np.trace(np.linalg.pinv(np.cov(f, rowvar=False), rcond=rcond) @ np.cov(g, rowvar=False))


@pytest.mark.parametrize("n, d", [(200, 10), (30, 50)], ids=["N>D", "N<D"])
def test_h_score_matches_its_definition(n, d):
    f, labels = _problem(seed=3, n=n, d=d)
    assert estimators.h_score(f, labels) == pytest.approx(_h_score_definition(f, labels, 1e-10), rel=1e-8)


def test_h_score_saturates_at_classes_minus_one_when_n_is_at_most_d_plus_one_and_shrinkage_does_not():
    separated, labels = _problem(seed=4, n=30, d=50, separation=3.0)
    mixed, _ = _problem(seed=5, n=30, d=50, separation=0.0)
    for f in (separated, mixed):
        assert estimators.h_score(f, labels) == pytest.approx(2.0, rel=1e-8)
    assert 0 < estimators.shrunk_h_score(mixed, labels) < estimators.shrunk_h_score(separated, labels) < 2.0


def test_shrunk_h_score_without_shrinkage_need_is_close_to_the_plain_one():
    f, labels = _problem(seed=6, n=4000, d=5, separation=2.0)
    assert estimators.shrunk_h_score(f, labels) == pytest.approx(estimators.h_score(f, labels), rel=0.01)


def test_knn_accuracy_is_leave_one_out_knn_of_scikit_learn():
    f, labels = _problem(seed=7, n=90, d=6, classes=4, separation=0.6)
    expected = np.mean([
        KNeighborsClassifier(n_neighbors=5).fit(np.delete(f, i, 0), np.delete(labels, i))
        .predict(f[i:i + 1])[0] == labels[i] for i in range(len(f))])
    assert 0.3 < expected < 0.95  # neither trivial nor hopeless, so the comparison says something
    assert estimators.knn_accuracy(f, labels, k=5, chunk=16) == expected


def test_nleep_ranks_separated_classes_above_mixed_ones():
    separated, labels = _problem(seed=8, n=150, d=6, separation=4.0)
    mixed, _ = _problem(seed=9, n=150, d=6, separation=0.0)
    high = estimators.nleep(separated, labels)
    assert high > -0.2  # log(1) = 0 is perfect; uniform over 3 classes is log(1/3) = -1.1
    assert estimators.nleep(mixed, labels) < high - 0.5
