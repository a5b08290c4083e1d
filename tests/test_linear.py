"""tfbench.linear against scikit-learn fitted to convergence, with objectives evaluated by
independent NumPy code, and the l2 selection against scikit-learn sweeps of the paper grid.

The penalty is the paper's: summed cross-entropy + l2 ||W||^2, bias unpenalised, which is
scikit-learn's C = 1 / (2 * l2) (written out here, not taken from tfbench). The l2 values below are
the ones these tests used on a mean-loss scale (lam), converted as l2 = lam * n / 2 for the same
optimum."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from threadpoolctl import threadpool_info, threadpool_limits

from tfbench import linear, metrics, protocol
from tfbench.registry import UnknownNameError


def _features(rng, labels, centres, noise=1.5):
    """Non-negative, post-ReLU-like features with class structure."""
    return np.maximum(centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1])) + 0.5, 0.0)


def _single_label_problem(seed=0, num_train=300, dim=20, num_classes=5, imbalanced=False, noise=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    priors = np.linspace(1, 4, num_classes) if imbalanced else np.ones(num_classes)
    priors = priors / priors.sum()

    def split(count):
        labels = rng.choice(num_classes, size=count, p=priors)
        return _features(rng, labels, centres, noise), labels

    return split(num_train), split(200), split(200)


def _multi_label_problem(seed=0, num_train=300, dim=20, num_classes=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))

    def split(count):
        main = rng.integers(0, num_classes, count)
        features = _features(rng, main, centres)
        labels = (rng.random((count, num_classes)) < 0.15).astype(np.int64)
        labels[np.arange(count), main] = 1
        labels[rng.random((count, num_classes)) < 0.1] = -1  # difficult: ignored by the loss
        return features, labels

    return split(num_train), split(200)


def multinomial_objective(weights, bias, features, labels, l2):
    logits = features @ weights + bias
    logits = logits - logits.max(axis=1, keepdims=True)
    cross_entropy = np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(labels)), labels]
    return cross_entropy.sum() + l2 * np.sum(weights**2)


def binary_objective(weights, bias, features, targets, l2):
    logits = features @ weights + bias
    return np.sum(np.logaddexp(0.0, logits) - targets * logits) + l2 * np.sum(weights**2)


def _paper_scale(lam, num_examples=300):
    """The paper's l2 with the optimum of mean CE + (lam / 2) ||W||^2 on num_examples examples."""
    return lam * num_examples / 2


GRID = np.asarray(protocol.PROBE_L2_GRID)


def _sklearn(features, labels, l2, tol=1e-8):
    """scikit-learn fitted to convergence: C = 1 / (2 * l2) is sum CE + l2 ||W||^2.
    One BLAS thread: these matrices are tiny, and threads only contend."""
    model = LogisticRegression(C=1.0 / (2.0 * l2), tol=tol, max_iter=100000)
    with threadpool_limits(1):
        return model.fit(features, labels)


@pytest.mark.parametrize("l2", [_paper_scale(1e-3), _paper_scale(3e-2), _paper_scale(1.0)])
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-7), ("float32", linear.DEFAULT_TOLERANCE)])
def test_multinomial_matches_sklearn(l2, dtype, tolerance):
    (train_x, train_y), (test_x, _), _ = _single_label_problem()
    result = linear.fit(train_x, train_y, l2, dtype=dtype, tolerance=tolerance)
    reference = _sklearn(train_x, train_y, l2)
    ours = multinomial_objective(result.weights.astype(np.float64), result.bias, train_x, train_y, l2)
    theirs = multinomial_objective(reference.coef_.T, reference.intercept_, train_x, train_y, l2)
    assert result.converged and result.iterations > 0
    assert result.weights.dtype == np.dtype(dtype)
    assert abs(ours - theirs) <= 1e-4 * theirs
    assert result.objective == pytest.approx(ours, rel=1e-5)
    for features in (train_x, test_x):
        assert np.mean(linear.predicted_labels(result, features) == reference.predict(features)) >= 0.995


@pytest.mark.parametrize("num_train, l2", [(150, 10.0), (1500, 300.0)])
def test_penalty_is_on_the_summed_loss_at_any_training_size(num_train, l2):
    # Training sets 10x apart: a penalty applied to the mean loss (or any fixed rescaling of it)
    # matches scikit-learn's C = 1 / (2 * l2) at one size at most. Each l2 is near that size's
    # validation optimum, inside the grid, where the protocol makes its choice.
    (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=10, num_train=num_train, dim=100, noise=3.0)
    val_scores = {
        value: metrics.top1(val_y, _sklearn(train_x, train_y, value, tol=1e-6).decision_function(val_x))
        for value in (l2 / 1000, l2, l2 * 1000)
    }
    assert val_scores[l2] > max(val_scores[l2 / 1000], val_scores[l2 * 1000])
    result = linear.fit(train_x, train_y, l2, dtype="float64", tolerance=1e-7)
    reference = _sklearn(train_x, train_y, l2)
    np.testing.assert_allclose(result.weights, reference.coef_.T, atol=1e-4 * np.abs(reference.coef_).max())
    np.testing.assert_allclose(result.bias - result.bias.mean(), reference.intercept_ - reference.intercept_.mean(),
                               atol=1e-3)
    assert result.objective == pytest.approx(
        multinomial_objective(reference.coef_.T, reference.intercept_, train_x, train_y, l2), rel=1e-6)


def test_many_features_use_the_randomized_principal_axes():
    # 64 features exceed the exactly decomposed size: the remainder block is in play.
    (train_x, train_y), (test_x, _), _ = _single_label_problem(seed=1, num_train=250, dim=64)
    assert 64 > linear.PRECONDITIONER_RANK + linear.SUBSPACE_OVERSAMPLING
    l2 = _paper_scale(1e-2, 250)
    result = linear.fit(train_x, train_y, l2, dtype="float64", tolerance=1e-7)
    reference = _sklearn(train_x, train_y, l2)
    ours = multinomial_objective(result.weights, result.bias, train_x, train_y, l2)
    theirs = multinomial_objective(reference.coef_.T, reference.intercept_, train_x, train_y, l2)
    assert abs(ours - theirs) <= 1e-4 * theirs
    assert np.mean(linear.predicted_labels(result, test_x) == reference.predict(test_x)) >= 0.995


def test_design_written_a_row_at_a_time_gives_the_same_fit(monkeypatch):
    # The design matrix is written in chunks of rows (bounded temporaries) into a buffer that
    # TensorFlow takes over; the fit must not depend on the chunk size.
    (train_x, train_y), _, _ = _single_label_problem(seed=12, num_train=700, dim=64)
    whole = linear.fit(train_x, train_y, 10.0, dtype="float64", tolerance=1e-8)
    monkeypatch.setattr(linear, "PREPARE_CHUNK_ELEMENTS", 1)  # one row per chunk
    blocked = linear.fit(train_x, train_y, 10.0, dtype="float64", tolerance=1e-8)
    np.testing.assert_allclose(blocked.weights, whole.weights, atol=1e-6 * np.abs(whole.weights).max())
    np.testing.assert_allclose(blocked.bias, whole.bias, atol=1e-6)


def test_fewer_examples_than_features_solve_in_the_row_space():
    (train_x, train_y), (test_x, _), _ = _single_label_problem(seed=2, num_train=80, dim=120)
    l2 = _paper_scale(1e-2, 80)
    result = linear.fit(train_x, train_y, l2, dtype="float64", tolerance=1e-7)
    reference = _sklearn(train_x, train_y, l2)
    ours = multinomial_objective(result.weights, result.bias, train_x, train_y, l2)
    theirs = multinomial_objective(reference.coef_.T, reference.intercept_, train_x, train_y, l2)
    assert result.weights.shape == (120, 5)
    assert abs(ours - theirs) <= 1e-4 * theirs
    assert np.mean(linear.predicted_labels(result, test_x) == reference.predict(test_x)) >= 0.995


def test_bias_is_not_penalised():
    # At a huge l2 the weights vanish and the unpenalised bias alone must fit the class priors:
    # softmax(b) = class frequencies, so b_k - b_0 = log(n_k / n_0).
    (train_x, train_y), _, _ = _single_label_problem(imbalanced=True)
    result = linear.fit(train_x, train_y, _paper_scale(1e5), dtype="float64", tolerance=1e-8)
    counts = np.bincount(train_y)
    assert np.abs(result.weights).max() < 1e-4
    np.testing.assert_allclose(result.bias - result.bias[0], np.log(counts / counts[0]), atol=1e-3)


@pytest.mark.parametrize("l2", [_paper_scale(1e-3), _paper_scale(1e-1)])
def test_multi_label_matches_sklearn_binary_problems_per_class(l2):
    (train_x, train_y), (test_x, _) = _multi_label_problem()
    result = linear.fit(train_x, train_y, l2, multi_label=True, dtype="float64", tolerance=1e-7)
    assert result.converged
    agreements = []
    for c in range(train_y.shape[1]):
        counted = train_y[:, c] != -1  # difficult entries are not examples of class c's problem
        x, t = train_x[counted], train_y[counted, c]
        reference = _sklearn(x, t, l2)
        ours = binary_objective(result.weights[:, c], result.bias[c], x, t, l2)
        theirs = binary_objective(reference.coef_[0], reference.intercept_[0], x, t, l2)
        assert abs(ours - theirs) <= 1e-4 * theirs
        agreements.append(linear.predicted_labels(result, test_x)[:, c] == reference.predict(test_x))
    assert np.mean(agreements) >= 0.995


def test_warm_start_still_converges_to_the_optimum():
    # Started from the solution at a neighbouring l2, the fit must still move to this l2's
    # optimum (scikit-learn's warm start stops after 0 iterations here).
    (train_x, train_y), _, _ = _single_label_problem(seed=3)
    l2 = _paper_scale(1e-3)
    neighbour = linear.fit(train_x, train_y, 1.78 * l2)
    warm = linear.fit(train_x, train_y, l2, init=neighbour)
    reference = _sklearn(train_x, train_y, l2)
    theirs = multinomial_objective(reference.coef_.T, reference.intercept_, train_x, train_y, l2)
    ours = multinomial_objective(warm.weights.astype(np.float64), warm.bias, train_x, train_y, l2)
    assert warm.converged and warm.iterations > 0
    assert abs(ours - theirs) <= 1e-4 * theirs


def _path_setting():
    """(problem, its design in float64, labels, l2, natural solutions, _Solutions) with the fits at
    the two grid values above l2 (3.16 and 1.78 times it), from zero."""
    (train_x, train_y), _, _ = _single_label_problem(seed=3)
    problem = linear._prepare(train_x, train_y, False, tf.float32)
    l2 = _paper_scale(1e-3)
    solutions, fits = {}, {}
    for index, value in enumerate((3.16 * l2, 1.78 * l2)):
        fits[index] = linear._solve(problem, value, linear._zero_start(problem), 1e-3, 1000)
        solutions[index] = fits[index].natural
    return problem, problem.design.numpy().astype(np.float64), train_y, l2, solutions, fits


def test_a_start_given_its_logits_fits_as_one_that_computes_them():
    # A fit handed the logits of its start instead of multiplying the design again must end where
    # it would have, and the logits it hands on must be the design's product.
    problem, design, _, l2, solutions, _ = _path_setting()
    start = linear._combine(linear._path_weights(solutions, 2), solutions)
    given = linear._solve(problem, l2, linear._Start(start, tf.constant(design @ start, tf.float32)), 1e-3, 1000)
    computed = linear._solve(problem, l2, linear._Start(start), 1e-3, 1000).result
    np.testing.assert_allclose(given.logits, design @ given.natural, atol=1e-4)
    assert given.result.converged and given.result.iterations > 0
    assert abs(given.result.iterations - computed.iterations) <= 1
    np.testing.assert_allclose(given.result.weights, computed.weights, rtol=1e-3, atol=1e-4)


def _reference_loss_gradient(design, natural, labels):
    """design^T @ d(mean cross-entropy)/d(logits), in float64: the loss part of the solver's gradient."""
    logits = design @ natural
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    probabilities[np.arange(len(labels)), labels] -= 1.0
    return design.T @ probabilities / len(labels)


def test_a_path_tangent_start_ends_where_a_cold_fit_does():
    # The paper search starts each fit at the latest solution, whose loss gradient it kept, and
    # first searches along the line through the two latest solutions: the fit must still converge
    # to the cold fit's solution, and the loss gradient it hands on must be the design's product.
    problem, design, labels, l2, solutions, fits = _path_setting()
    for fit in fits.values():
        np.testing.assert_allclose(fit.loss_gradient, _reference_loss_gradient(design, fit.natural, labels), rtol=1e-3, atol=1e-6)
    recent = {index: linear._Start(fit.natural, fit.logits, fit.loss_gradient) for index, fit in fits.items()}
    start = linear._path_start(problem, linear._path_weights(solutions, 2), solutions, recent, tangent=True)
    assert start.tangent is not None and start.loss_gradient is fits[1].loss_gradient
    tangent = linear._solve(problem, l2, start, 1e-3, 1000)
    cold = linear._solve(problem, l2, linear._zero_start(problem), 1e-3, 1000).result
    assert tangent.result.converged and 0 < tangent.result.iterations < cold.iterations
    np.testing.assert_allclose(tangent.result.weights, cold.weights, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(tangent.logits, design @ tangent.natural, atol=1e-4)


def test_the_solver_is_traced_once_for_every_start_and_size():
    # Known logits, a kept loss gradient, a tangent, or a new problem size would each trace the
    # solver's graph again (about a second each, paid in every process's first searches).
    for seed, num_train in ((5, 120), (6, 90)):
        (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=seed, num_train=num_train)
        for search in ("paper", "fast"):
            linear.select_l2(train_x, train_y, val_x, val_y, metric="top1", search=search)
    assert linear._minimiser(tf.float32, False).experimental_get_tracing_count() == 1


def test_fits_and_searches_run_numpys_blas_on_one_thread(monkeypatch):
    # NumPy's idle BLAS threads spin after each product, taking a core from TensorFlow's next
    # products (the paper search took 1.18x the time): its work between fits runs on one thread.
    threads_during_fits = []
    solve = linear._solve

    def recording(*args, **kwargs):
        threads_during_fits.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        return solve(*args, **kwargs)

    monkeypatch.setattr(linear, "_solve", recording)
    (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=5)
    with threadpool_limits(2, user_api="blas"):
        searched = linear.select_l2(train_x, train_y, val_x, val_y, metric="top1")
        linear.refit(train_x, train_y, val_x, val_y, searched)
        after = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    assert len(threads_during_fits) > len(searched.trials) and all(t == {1} for t in threads_during_fits)
    assert after == {2}  # the caller's setting is back


def test_paper_search_chooses_alike_with_and_without_kept_logits(monkeypatch):
    (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=4)
    results = {}
    for share in (0.0, float("inf")):  # never / always keep the latest fits' logits
        monkeypatch.setattr(linear, "LOGITS_MEMORY_SHARE", share)
        results[share] = linear.select_l2(train_x, train_y, val_x, val_y, metric="top1", search="paper")
    never, always = results.values()
    assert always.l2 == never.l2
    one_example = 1 / len(val_y) + 1e-9  # the scores are counts of examples over len(val_y)
    assert [t.validation_score for t in always.trials] == pytest.approx([t.validation_score for t in never.trials],
                                                                         abs=one_example)
    np.testing.assert_allclose(always.fit.weights, never.fit.weights, rtol=1e-2, atol=1e-3)


def test_paper_grid_scores_match_sklearn_sweep():
    (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=4)
    result = linear.select_l2(train_x, train_y, val_x, val_y, metric="top1", search="paper")
    assert [trial.l2 for trial in result.trials] == list(protocol.PROBE_L2_GRID)
    assert all(trial.converged for trial in result.trials)
    # Around the peak (where scikit-learn converges quickly), every validation score is
    # scikit-learn's up to one example, and so is the choice.
    reference = {
        trial.l2: metrics.top1(val_y, _sklearn(train_x, train_y, trial.l2, tol=1e-6).decision_function(val_x))
        for trial in result.trials
        if _paper_scale(1e-3) <= trial.l2 <= _paper_scale(1.0)
    }
    for trial in result.trials:
        if trial.l2 in reference:
            assert trial.validation_score == pytest.approx(reference[trial.l2], abs=1 / len(val_y))
    assert reference[result.l2] >= max(reference.values()) - 1 / len(val_y)
    assert result.at_grid_edge is None


@pytest.mark.parametrize("search", ["paper", "fast"])
@pytest.mark.parametrize("exponents, edge", [((3, 6), "smallest"), ((-4, 1), "largest")])
def test_a_choice_at_either_end_of_the_grid_is_flagged(monkeypatch, search, exponents, edge):
    # A grid of values all stronger than the validation optimum (or all weaker, up to it): the
    # best is at one end, as scikit-learn's sweep of the same grid confirms, and the result says so.
    (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=11, num_train=150)
    grid = protocol.log_spaced(*exponents, 7)
    monkeypatch.setattr(protocol, "PROBE_L2_GRID", grid)
    reference = [metrics.top1(val_y, _sklearn(train_x, train_y, l2, tol=1e-6).decision_function(val_x))
                 for l2 in grid]
    expected = 0 if edge == "smallest" else len(grid) - 1
    assert max(range(len(grid)), key=lambda i: (reference[i], i)) == expected
    result = linear.select_l2(train_x, train_y, val_x, val_y, metric="top1", search=search)
    assert (result.l2, result.at_grid_edge) == (grid[expected], edge)


@pytest.mark.parametrize(
    "problem, metric, multi_label",
    [
        (lambda: _single_label_problem(seed=5)[:2], "top1", False),
        (lambda: _single_label_problem(seed=6, imbalanced=True)[:2], "mean_per_class", False),
        (lambda: _multi_label_problem(seed=7), "map11", True),
    ],
)
def test_fast_search_finds_the_paper_grids_best(problem, metric, multi_label):
    (train_x, train_y), (val_x, val_y) = problem()
    paper = linear.select_l2(train_x, train_y, val_x, val_y, metric=metric, multi_label=multi_label,
                             search="paper")
    fast = linear.select_l2(train_x, train_y, val_x, val_y, metric=metric, multi_label=multi_label)
    paper_scores = {trial.l2: trial.validation_score for trial in paper.trials}
    assert len(fast.trials) < len(paper.trials)
    assert all(trial.converged for trial in fast.trials)
    assert paper_scores[fast.l2] >= max(paper_scores.values()) - 0.001
    # Values are scored at the screening tolerance; the chosen fit is polished to the solver's.
    assert fast.fit.converged and fast.fit.gradient_norm <= linear.DEFAULT_TOLERANCE


def test_mean_per_class_search_matches_sklearn_balanced_accuracy():
    (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=8, imbalanced=True)
    result = linear.select_l2(train_x, train_y, val_x, val_y, metric="mean_per_class")
    chosen = _sklearn(train_x, train_y, result.l2)
    sweep = {
        l2: balanced_accuracy_score(val_y, _sklearn(train_x, train_y, l2, tol=1e-6).predict(val_x))
        for l2 in GRID[(GRID >= _paper_scale(1e-3)) & (GRID <= _paper_scale(1.0))]
    }
    assert balanced_accuracy_score(val_y, chosen.predict(val_x)) >= max(sweep.values()) - 0.001
    trial = next(trial for trial in result.trials if trial.l2 == result.l2)
    one_example_of_the_smallest_class = 1 / (len(np.bincount(val_y)) * np.bincount(val_y).min())
    expected = balanced_accuracy_score(val_y, chosen.predict(val_x))
    assert trial.validation_score == pytest.approx(expected, abs=one_example_of_the_smallest_class)


def test_refit_on_train_and_val_matches_sklearn():
    (train_x, train_y), (val_x, val_y), _ = _single_label_problem(seed=9)
    searched = linear.select_l2(train_x, train_y, val_x, val_y, metric="top1")
    final = linear.refit(train_x, train_y, val_x, val_y, searched, dtype="float64", tolerance=1e-7)
    all_x, all_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    reference = _sklearn(all_x, all_y, searched.l2)
    ours = multinomial_objective(final.weights, final.bias, all_x, all_y, searched.l2)
    theirs = multinomial_objective(reference.coef_.T, reference.intercept_, all_x, all_y, searched.l2)
    assert final.l2 == searched.l2
    assert abs(ours - theirs) <= 1e-4 * theirs


def test_accepts_tensors():
    (train_x, train_y), _, _ = _single_label_problem()
    from_numpy = linear.fit(train_x, train_y, _paper_scale(1e-2))
    from_tensors = linear.fit(tf.constant(train_x, tf.float32), tf.constant(train_y), _paper_scale(1e-2))
    np.testing.assert_allclose(from_tensors.weights, from_numpy.weights, atol=1e-4)


def test_sklearn_c_conversion():
    assert linear.sklearn_c(1e-3) == pytest.approx(500.0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x, y: linear.select_l2(x, y, x, y, metric="top1", search="dense"), UnknownNameError, "'dense'"),
        (lambda x, y: linear.select_l2(x, y, x, y, metric="top5"), UnknownNameError, "'top5'"),
        (lambda x, y: linear.fit(x, y, 1e-2, dtype="float16"), ValueError, "float32, float64"),
        (lambda x, y: linear.fit(x, y, 0.0), ValueError, "l2 must be positive"),
        (lambda x, y: linear.fit(x, y[:-1], 1e-2), ValueError, "expected 300 rows"),
        (lambda x, y: linear.fit(x, y + 0.5, 1e-2), ValueError, "integer class ids"),
        (lambda x, y: linear.fit(x, np.stack([y, y], 1), 1e-2, multi_label=True), ValueError, "1, 0 or -1"),
    ],
)
def test_bad_input_names_the_problem(call, error, match):
    (train_x, train_y), _, _ = _single_label_problem()
    with pytest.raises(error, match=match):
        call(train_x, train_y)


def _bench_problem(*shape, seed):
    """bench/probe_bench.py's synthetic features (ReLU, decaying spectrum), at a test's size."""
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).parents[1] / "bench" / "probe_bench.py"
    spec = importlib.util.spec_from_file_location("probe_bench", path)
    module = sys.modules.setdefault("probe_bench", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module.synthetic_features(*shape, seed=seed)


@pytest.mark.parametrize(
    "shape, seed, metric, search, l2, val_score, test_score",
    [  # as chosen by the solver with one-hot targets and kept line-search gradients (commit 656fb8b)
        ((300, 150, 150, 32, 5), 6, "top1", "paper", 0.056234132519, 0.5666666666666667, 0.5466666666666666),
        ((600, 200, 200, 128, 10), 3, "top1", "fast", 10.0, 0.5, 0.48),
        ((300, 200, 200, 512, 10), 4, "mean_per_class", "fast", 1.0, 0.69, 0.675),  # fewer examples than features
    ],
)
def test_memory_savings_keep_the_choice_and_scores_on_bench_problems(shape, seed, metric, search, l2, val_score,
                                                                     test_score):
    # Integer targets, a line search that recomputes the gradient at its step instead of keeping
    # one per trial, design blocks written in place: the same arithmetic, so the same choice and
    # scores as before.
    data = _bench_problem(*shape, seed=seed)
    result = linear.select_l2(data.train_x, data.train_y, data.val_x, data.val_y, metric=metric, search=search)
    chosen = next(trial for trial in result.trials if trial.l2 == result.l2)
    assert (result.l2, chosen.validation_score) == (pytest.approx(l2), pytest.approx(val_score))
    test_scores = linear.decision_scores(result.fit, data.test_x)
    assert metrics.score(metric, data.test_y, test_scores) == pytest.approx(test_score)
