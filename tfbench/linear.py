"""The linear probe: L2-regularised logistic regression on fixed features, solved by L-BFGS in
TensorFlow, and the selection of the regularisation strength on a validation split.

The regularisation strength ``l2`` is on the paper's scale (``protocol.PROBE_PENALTY_CONVENTION``)::

    objective(W, b) = sum_i CE_i(x_i W + b) + l2 * ||W||_F^2        (bias unpenalised)

which is scikit-learn's ``LogisticRegression(C=1 / (2 * l2))`` (``sklearn_c``). The sum runs over the
training examples, so the same l2 on more examples (the refit on train + val) weighs the data more,
as in the paper. Single-label problems use the multinomial (softmax) cross-entropy over K classes;
multi-label problems (VOC) are K independent binary (sigmoid) problems, class c's sum taken over the
examples not labelled -1 ("difficult") for it: each class is scikit-learn's ``C = 1 / (2 * l2)`` on
those examples. They are solved jointly as one separable sum.

The solver works on the same objective divided by n (a mean loss with penalty (lam / 2) ||W||^2,
lam = 2 * l2 / n): values and curvatures then stay of order one whatever n is. Objectives it reports
are on the paper's (summed) scale.

Why the solver is fast:
- It works on centred features (the bias absorbs the mean exactly) in coordinates where the top
  PRECONDITIONER_RANK principal axes are separated from the rest, each scaled by
  1 / sqrt(a * variance + lam) (a = the loss's curvature per unit logit) and the rest by the
  smallest such scale: the few steep directions of non-negative features no longer dominate
  L-BFGS. (Whitening every axis was slower at small l2, where the data are separable and the
  loss's real curvature is far below a * variance.) An orthogonal change of variables, exact for
  an L2 penalty that ignores the bias. With fewer examples than features it first moves to the
  features' row space, which shrinks every matmul to N x N.
- Line searches run in logit space: one matmul gives the logits along the whole search direction,
  so a strong-Wolfe search costs elementwise work only (a trial needs the loss and its slope, not
  the [N, K] gradient); an iteration is two matmuls, and nothing runs beside them (small ops on
  the executor's own threads compete for the cores the product uses).
- The whole loop is one ``tf.function`` (``tf.while_loop``): no Python per iteration, and it runs on
  a GPU when there is one. It is traced once per process, for inputs of any size (_minimiser).
- NumPy's BLAS runs on one thread in a fit or a search (_on_one_blas_thread): the threads it
  leaves spinning after each product would take a core from TensorFlow's next matmuls.
- The search follows the regularisation path: each fit starts on the line through its two nearest
  solved neighbours (in log l2). When those are the latest two fits (every fit of the paper
  search), the fit starts at the nearer one, whose logits and loss gradient were kept, and searches
  first along that line, whose logits are known: no product with the design before its first
  step, one for that step. The fast search fits
  a decade at a time down to the first decline of the validation score, then bisects around the
  best (about 12 fits instead of 45), scoring values at a looser tolerance and polishing only the
  chosen fit.
- Memory (bench/results/probe_memory.txt): the design matrix is written a chunk of rows at a time
  into one buffer that TensorFlow takes over without a copy; with fewer examples than features the
  row-space basis stays as the Householder reflectors of an in-place QR. Single-label targets are
  class ids, not one-hot; a line search keeps no per-trial gradient; the L-BFGS history is a tuple
  of tensors whose shift moves references; a search keeps only the warm starts its schedule can
  still use and the latest two fits' logits and loss gradients. The principal axes come from
  products of the features with thin bases, never a D x D covariance.

Convergence: ``||grad objective||_2 <= tolerance * ||lam W||_F`` (in the solver's scale). At the
optimum the loss's pull on the weights balances the penalty's, lam W; since the objective is
lam-strongly convex in W this bounds the relative error of W by ``tolerance``, whatever the
starting point, so a warm-started fit is held to the same standard as a cold one (it cannot stop
after 0 iterations just because it started close). Below the rounding noise of the dtype
(GRADIENT_NOISE_EPS epsilons of the gradient norm at zero) a float32 fit also counts as converged;
use float64 for tighter fits at tiny l2. At l2 so large that the weights barely move the logits,
which class wins is decided by rounding either way.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import scipy.linalg
import tensorflow as tf
import threadpoolctl

from tfbench import grid_edges, metrics, protocol
from tfbench.registry import Registry

DEFAULT_TOLERANCE = 1e-3
DEFAULT_MAX_ITERATIONS = 1000
HISTORY_SIZE = 10
LINE_SEARCH_TRIALS = 20
ARMIJO_C1 = 1e-4
CURVATURE_C2 = 0.9
APPROXIMATE_ARMIJO_DELTA = 0.1
VALUE_NOISE_EPS = 100  # rounding noise of an objective value, in units of the dtype's epsilon
GRADIENT_NOISE_EPS = 10  # rounding noise of a gradient norm, in epsilons of its norm at W = 0
PRECONDITIONER_RANK = 16  # top principal axes scaled individually; the rest share one scale
SUBSPACE_OVERSAMPLING = 16
SUBSPACE_ITERATIONS = 3
PREPARE_CHUNK_ELEMENTS = 2**20  # the design matrix is written this many entries at a time
TENSOR_ALIGNMENT = 64  # bytes: TensorFlow takes over a NumPy buffer without a copy only at this alignment
# The search keeps its latest two fits' logits (to start the next fit without a product with the
# design) when those two [N, K] take at most this share of the features [N, D]: 45 of the 600
# matmuls of a paper search at 5,000 x 2,048 x 100 (0.1 x the features), but at K = D / 5 they
# would take 0.4 x and bring the peak near the 3 x the features the search is held to
# (bench/results/probe_memory.txt).
LOGITS_MEMORY_SHARE = 0.25
COARSE_STEP = 4  # grid values between the fast search's first fits: a decade of the paper grid
SCREENING_TOLERANCE = 1e-2  # the fast search's tolerance for fits that only score a value
DTYPES = {"float32": tf.float32, "float64": tf.float64}


def sklearn_c(l2: float) -> float:
    """scikit-learn's inverse regularisation C for the same problem: C = 1 / (2 * l2)."""
    return 1.0 / (2.0 * l2)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """A fitted probe: scores are ``features @ weights + bias``."""

    weights: np.ndarray  # [D, K]
    bias: np.ndarray  # [K]
    l2: float
    multi_label: bool
    objective: float  # on the paper's scale: summed cross-entropy + l2 ||W||^2
    gradient_norm: float  # ||grad objective|| / ||l2 W||, the ratio the tolerance bounds
    iterations: int
    converged: bool


@dataclasses.dataclass(frozen=True)
class L2Trial:
    """One regularisation value tried by the search, as a run record keeps it."""

    l2: float
    validation_score: float
    iterations: int
    converged: bool


@dataclasses.dataclass(frozen=True)
class SearchResult:
    l2: float  # the chosen value
    trials: Tuple[L2Trial, ...]  # every value tried, in increasing l2
    fit: FitResult  # the chosen value's model, trained on the training split only
    # None, or which end of the grid the chosen value is ("smallest" / "largest" l2): the
    # validation optimum may lie beyond it.
    at_grid_edge: Optional[str]


def decision_scores(result: FitResult, features) -> np.ndarray:
    """Logits [N, K]: rank these for mAP, argmax them for top-1."""
    features = np.asarray(features, dtype=result.weights.dtype)
    return features @ result.weights + result.bias


def predicted_labels(result: FitResult, features) -> np.ndarray:
    """Class ids [N] (single-label) or 0/1 presence [N, K] (multi-label, score > 0)."""
    scores = decision_scores(result, features)
    if result.multi_label:
        return (scores > 0).astype(np.int32)
    return np.argmax(scores, axis=1)


# ---------------------------------------------------------------------------------------------
# The problem in principal axes.


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Training data prepared once and shared by every l2 of a search.

    With fewer examples than features, the features are first expressed in an orthonormal basis
    of their row space (the optimal W lies in it, since the gradient of the loss does), which
    shrinks every matmul to N x N. In that space (or the feature space), parameters live in
    "natural" coordinates [P, K]: weights A on the top principal axes, then (when those axes do not
    span it) weights B on the remainder after projecting the axes out, then the bias of the centred
    features. W = row_space @ (axes @ A + B), and ||W||^2 = ||A||^2 + ||B||^2 because B stays
    orthogonal to the axes.
    """

    design: tf.Tensor  # [N, P]: [centred @ axes, centred remainder (optional), ones]
    targets: tf.Tensor  # int32 class ids [N] (single-label) or 0/1 [N, K] (multi-label)
    entry_weights: tf.Tensor  # [N, 1] = 1/n, or [N, K] = (label != -1) / n for multi-label
    column_variances: np.ndarray  # [P - 1]: variance along each weight row, for preconditioning
    mean: np.ndarray  # [D]
    # Q [D, N] with orthonormal columns as (Householder reflectors [D, N], scalars [N]) (see
    # _row_space), or None when N >= D
    row_space: Optional[Tuple[np.ndarray, np.ndarray]]
    axes: np.ndarray  # [M, r], orthonormal columns (M = N with a row space, else D)
    has_remainder: bool
    curvature: float  # typical curvature of the loss per unit logit, for preconditioning
    gradient_floor: float  # rounding noise of a gradient norm in this dtype
    multi_label: bool
    num_classes: int
    num_examples: int  # n: the solver's objective is the paper's divided by n


def _dtype(dtype) -> tf.DType:
    name = tf.as_dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
    return DTYPES[name]


def _targets(labels, num_examples: int, multi_label: bool, num_classes: Optional[int], numpy_dtype):
    """(targets, entry weights, K): the weighted loss sum is the summed cross-entropy / n.

    Targets are the class ids [N] of single-label data (not one-hot: K times less memory), the
    0/1 matrix [N, K] of multi-label data."""
    labels = np.asarray(labels)
    if labels.shape[:1] != (num_examples,):
        raise ValueError(f"labels have shape {list(labels.shape)}, expected {num_examples} rows")
    if multi_label:
        if labels.ndim != 2 or not np.isin(labels, (-1, 0, 1)).all():
            raise ValueError("multi-label labels must be [N, K] with values 1, 0 or -1 (difficult)")
        counted = (labels != -1).astype(numpy_dtype)
        return (labels == 1).astype(numpy_dtype), counted / numpy_dtype(num_examples), labels.shape[1]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(
            f"single-label labels must be non-negative integer class ids of shape [N], got "
            f"{labels.dtype} {list(labels.shape)} (multi-label data needs multi_label=True)"
        )
    num_classes = num_classes or int(labels.max()) + 1
    return labels.astype(np.int32), np.full((num_examples, 1), 1.0 / num_examples, numpy_dtype), num_classes


def _top_principal_axes(times_covariance: Callable[[np.ndarray], np.ndarray], dim: int,
                        rank: int) -> Tuple[np.ndarray, np.ndarray]:
    """(axes [D, r], variances [r]), largest first, of the covariance that ``times_covariance``
    multiplies by: exact for small D, else by randomized subspace iteration, which needs the
    covariance only times D x (r + SUBSPACE_OVERSAMPLING) bases: 4 such products of the features
    cost about 2 (r + oversampling) N D operations each, where forming the D x D covariance costs
    D^2 N (seven times more at D = 2,048, and a second matrix of the features' width)."""
    if rank + SUBSPACE_OVERSAMPLING >= dim:
        basis = np.eye(dim)
    else:
        basis = np.random.default_rng(0).standard_normal((dim, rank + SUBSPACE_OVERSAMPLING))
        for _ in range(SUBSPACE_ITERATIONS):
            basis, _ = np.linalg.qr(times_covariance(basis))
    ritz_values, ritz_vectors = np.linalg.eigh(basis.T @ times_covariance(basis))
    return basis @ ritz_vectors[:, ::-1][:, :rank], ritz_values[::-1][:rank]


def _covariance_times(features, shift, numpy_dtype):
    """basis -> (centred^T centred / N) @ basis, a chunk of rows at a time, in float64."""
    def times(basis: np.ndarray) -> np.ndarray:
        cast = basis.astype(numpy_dtype)
        product = np.zeros(basis.shape)
        for _, centred in _centred_rows(features, shift, numpy_dtype):
            product += centred.T @ (centred @ cast)
        return product / len(features)
    return times


def _aligned_empty(shape, numpy_dtype) -> np.ndarray:
    """An uninitialised array whose data start on a TENSOR_ALIGNMENT boundary (see _to_tensor)."""
    size = int(np.prod(shape)) * np.dtype(numpy_dtype).itemsize
    raw = np.empty(size + TENSOR_ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[offset:offset + size].view(numpy_dtype).reshape(shape)


def _to_tensor(array: np.ndarray) -> tf.Tensor:
    """A tensor that takes over an _aligned_empty array's buffer: tf.constant or tf.identity would
    copy it (tf.constant twice), and for a design matrix that copy is the size of the features."""
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _centred_rows(features, shift, numpy_dtype):
    """(row slice, centred rows) in chunks of about PREPARE_CHUNK_ELEMENTS entries: the only
    temporaries of preparing a problem are chunks, never a copy of the features."""
    rows = max(1, PREPARE_CHUNK_ELEMENTS // features.shape[1])
    for start in range(0, features.shape[0], rows):
        chunk = slice(start, start + rows)
        yield chunk, np.subtract(features[chunk], shift, dtype=numpy_dtype)


def _on_one_blas_thread(function):
    """``function`` with NumPy's and SciPy's BLAS (and LAPACK) on one thread. Their idle threads
    spin for a while after each call, and a spinning thread takes a core from TensorFlow: each
    fit's first products with the design ran at half speed after the NumPy work between fits
    (25 against 13 ms at 5,000 x 2,065 x 100), and the paper search took 1.18x the time
    (bench/results/probe_speed_idle.txt); the row-space QR and its reflectors' products took 10 to
    50 times longer beside TensorFlow's threads (bench/results/probe_memory.txt). The NumPy work of
    a fit or a search is small next to its TensorFlow products. A new limit on every call, not
    threadpool_limits.wrap: threadpoolctl 3.0's fixes the libraries it limits at import and shares
    one limiter between concurrent or nested calls."""

    @functools.wraps(function)
    def on_one_thread(*args, **kwargs):
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return on_one_thread


def _row_space(features, mean, numpy_dtype) -> Tuple[Tuple[np.ndarray, np.ndarray], np.ndarray]:
    """((Householder reflectors [D, N], their scalars [N]), coordinates [N, N]) of the centred
    features in an orthonormal basis Q of their row space: centred = coordinates @ Q^T.

    One QR factorisation of the centred features' transpose, done in place (LAPACK geqrf on the
    centred copy, whose C order is its transpose's Fortran order): Q stays as its reflectors, the
    size of the centred features in the working dtype, never formed; the coordinates are R^T."""
    centred = np.empty(features.shape, numpy_dtype)
    for chunk, rows in _centred_rows(features, mean, numpy_dtype):
        centred[chunk] = rows
    (reflectors, scalars), upper = scipy.linalg.qr(centred.T, overwrite_a=True, mode="raw", check_finite=False)
    return (reflectors, scalars), np.ascontiguousarray(upper.T)


def _prepare(features, labels, multi_label: bool, dtype: tf.DType, num_classes=None) -> _Problem:
    """Centre the features (the bias absorbs the mean exactly), and rotate the top principal axes
    into coordinates of their own so that each can be scaled by its curvature.

    Memory: the design matrix is written chunk of rows by chunk of rows into one buffer that
    TensorFlow then takes over, so the search holds one design matrix beside the caller's features
    and no float64 or intermediate copy of them."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(features.shape)}")
    num_examples, dim = features.shape
    numpy_dtype = dtype.as_numpy_dtype
    targets, entry_weights, num_classes = _targets(labels, num_examples, multi_label, num_classes, numpy_dtype)
    mean = features.mean(axis=0, dtype=np.float64)
    shift = mean.astype(numpy_dtype)
    row_space = None
    if num_examples < dim:  # small: N x N after the projection
        row_space, features = _row_space(features, shift, numpy_dtype)
        shift = np.zeros(num_examples, numpy_dtype)
    width = features.shape[1]
    rank = min(PRECONDITIONER_RANK, width)
    has_remainder = rank < width
    axes, variances = _top_principal_axes(_covariance_times(features, shift, numpy_dtype), width, rank)
    axes = axes.astype(numpy_dtype)
    design = _aligned_empty((num_examples, rank + has_remainder * width + 1), numpy_dtype)
    for chunk, centred in _centred_rows(features, shift, numpy_dtype):  # [rotated, remainder, ones]
        rotated = np.matmul(centred, axes, out=design[chunk, :rank])
        if has_remainder:
            remainder = np.matmul(rotated, axes.T, out=design[chunk, rank:-1])
            np.subtract(centred, remainder, out=remainder)
    design[:, -1] = 1.0
    del features
    design = _to_tensor(design)
    column_variances = [variances]
    if has_remainder:  # its directions all get the smallest top variance, an upper bound for them
        column_variances.append(np.full(width, variances[-1]))
    targets = tf.identity(targets)  # tf.identity copies a NumPy array once; tf.constant, twice
    entry_weights = tf.identity(entry_weights)
    _, logit_gradient = _loss(tf.zeros([num_examples, num_classes], dtype), targets, entry_weights, multi_label)
    gradient_at_zero = float(tf.norm(_loss_gradient(design, logit_gradient)))
    return _Problem(
        design=design,
        targets=targets,
        entry_weights=entry_weights,
        column_variances=np.maximum(np.concatenate(column_variances), 0.0),
        mean=mean,
        row_space=row_space,
        axes=axes.astype(np.float64),
        has_remainder=has_remainder,
        curvature=0.25 if multi_label else 1.0 / num_classes,
        gradient_floor=GRADIENT_NOISE_EPS * np.finfo(numpy_dtype).eps * gradient_at_zero,
        multi_label=multi_label,
        num_classes=num_classes,
        num_examples=num_examples,
    )


def _row_space_times(problem: _Problem, values: np.ndarray, transpose: bool) -> np.ndarray:
    """Q @ values ([N, K] -> [D, K]) or Q^T @ values ([D, K] -> [N, K]), Q the row-space basis of
    _row_space applied from its reflectors (LAPACK ormqr)."""
    reflectors, scalars = problem.row_space
    dim, count = reflectors.shape
    (multiply,) = scipy.linalg.get_lapack_funcs(("ormqr",), (reflectors,))
    operand = np.zeros((dim, values.shape[1]), reflectors.dtype, order="F")
    operand[:len(values)] = values
    product, _, info = multiply("L", "T" if transpose else "N", reflectors, scalars, operand,
                                lwork=64 * max(1, values.shape[1]), overwrite_c=1)
    assert info == 0, f"LAPACK ormqr failed: info {info}"
    return product[:count] if transpose else product


def _to_problem_coordinates(problem: _Problem, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(W, b) -> natural coordinates [P, K] (see _Problem); W's part outside the row space, which
    the optimum does not have, is dropped."""
    reduced = weights if problem.row_space is None else _row_space_times(problem, weights, transpose=True)
    on_axes = problem.axes.T @ reduced
    blocks = [on_axes, reduced - problem.axes @ on_axes] if problem.has_remainder else [on_axes]
    return np.concatenate(blocks + [(bias + problem.mean @ weights)[None]], axis=0)


def _from_problem_coordinates(problem: _Problem, natural: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    rank = problem.axes.shape[1]
    weights = problem.axes @ natural[:rank]
    if problem.has_remainder:
        weights = weights + natural[rank:-1]
    if problem.row_space is not None:
        weights = _row_space_times(problem, weights, transpose=False).astype(np.float64)
    return weights, natural[-1] - problem.mean @ weights


# ---------------------------------------------------------------------------------------------
# L-BFGS in TensorFlow.


def _loss(logits, targets, entry_weights, multi_label: bool):
    """(weighted loss sum, its gradient with respect to the logits); targets as _Problem keeps them.
    The single-label gradient subtracts the weight at each example's class in place of a one-hot
    matrix. Each [N, K] pass counts (elementwise work was about 40% of the search's time before
    this form, bench/results/probe_speed_idle.txt): the exponentials are formed once, from the
    row maxima, not through a log-sum-exp and a second exp."""
    if multi_label:
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
        return tf.reduce_sum(entry_weights * losses), entry_weights * (tf.sigmoid(logits) - targets)
    exponentials, sums, losses = _softmax_parts(logits, targets)
    at_class = tf.stack([tf.range(tf.shape(targets)[0]), targets], axis=1)
    gradient = tf.tensor_scatter_nd_sub(exponentials * (entry_weights / sums[:, None]), at_class, entry_weights[:, 0])
    return tf.reduce_sum(entry_weights[:, 0] * losses), gradient


def _softmax_parts(logits, targets):
    """(exp(logits - row max) [N, K], their row sums [N], cross-entropy per example [N])."""
    shifted = logits - tf.reduce_max(logits, axis=1, keepdims=True)
    exponentials = tf.exp(shifted)
    sums = tf.reduce_sum(exponentials, axis=1)
    return exponentials, sums, tf.math.log(sums) - tf.gather(shifted, targets[:, None], batch_dims=1)[:, 0]


def _loss_and_slope(logits, logit_direction, targets, entry_weights, multi_label: bool):
    """(weighted loss sum at ``logits``, its derivative along ``logit_direction``): what a line-search
    trial needs, without forming the [N, K] gradient (the slope is a softmax-weighted row sum)."""
    if multi_label:
        loss, gradient = _loss(logits, targets, entry_weights, multi_label)
        return loss, _dot(gradient, logit_direction)
    exponentials, sums, losses = _softmax_parts(logits, targets)
    expected = tf.reduce_sum(exponentials * logit_direction, axis=1) / sums
    at_class = tf.gather(logit_direction, targets[:, None], batch_dims=1)[:, 0]
    weights = entry_weights[:, 0]
    return tf.reduce_sum(weights * losses), tf.reduce_sum(weights * (expected - at_class))


def _dot(a, b):
    return tf.reduce_sum(a * b)


def _two_loop_direction(gradient, steps, changes, inverse_curvatures):
    """-H g by the L-BFGS two-loop recursion over the history: tuples of HISTORY_SIZE [P, K] steps
    and gradient changes, oldest first, and rho per pair (0 marks an unused pair). An unused pair
    is skipped, not multiplied through: a paper-search fit takes about 6 iterations, so most of
    the 10 slots are empty, and each pair's work is four passes over [P, K] arrays."""
    zero = tf.zeros([], gradient.dtype)
    alphas = []
    q = gradient
    for index in reversed(range(HISTORY_SIZE)):
        step, change, rho = steps[index], changes[index], inverse_curvatures[index]

        def project(q=q, step=step, change=change, rho=rho):
            alpha = rho * _dot(step, q)
            return q - alpha * change, alpha

        q, alpha = tf.cond(rho > 0, project, lambda q=q: (q, zero))
        alphas.append(alpha)
    r = tf.cond(inverse_curvatures[-1] > 0,
                lambda: tf.math.divide_no_nan(_dot(steps[-1], changes[-1]), _dot(changes[-1], changes[-1])) * q,
                lambda: q)
    for index, alpha in zip(range(HISTORY_SIZE), reversed(alphas)):
        step, change, rho = steps[index], changes[index], inverse_curvatures[index]

        def correct(r=r, step=step, change=change, rho=rho, alpha=alpha):
            return r + (alpha - rho * _dot(change, r)) * step

        r = tf.cond(rho > 0, correct, lambda r=r: r)
    return -r


def _remember(keep, history, step, change, curvature):
    """The history with (step, change) appended and its oldest pair dropped when ``keep``, else as
    it was: tuples of tensors, so that the shift moves references, never the [P, K] values."""
    steps, changes, rhos = history

    def appended():
        return steps[1:] + (step,), changes[1:] + (change,), tf.concat([rhos[1:], [1.0 / curvature]], axis=0)

    return tf.cond(keep, appended, lambda: history)


def _line_search(loss_along, penalty_coefficients, value0, slope0):
    """A step t meeting the strong Wolfe conditions on the convex phi(t), found by bracketing the
    root of phi' (secant steps, safeguarded). Every trial is elementwise work on logits only.

    Near the optimum, float32 cannot resolve the decrease phi(t) - phi(0); there the sufficient
    decrease test switches to Hager and Zhang's approximate Wolfe condition, which reads the slope
    (accurate) instead of the values (phi(t) need only not rise beyond rounding noise).

    Returns (found, t, phi(t)): the trial meeting both conditions, else the lowest trial meeting
    the sufficient-decrease condition, if any. The logit gradient at t is not kept: the caller
    recomputes it once (elementwise work) rather than hold another [N, K] tensor per trial.
    """
    p1, p2 = penalty_coefficients
    dtype = value0.dtype
    inf = tf.constant(np.inf, dtype)
    value_noise = VALUE_NOISE_EPS * np.finfo(dtype.as_numpy_dtype).eps * tf.abs(value0)

    def evaluate(t):
        loss, slope_loss = loss_along(t)
        return loss + (p1 + p2 * t) * t, slope_loss + p1 + 2.0 * p2 * t

    def condition(trial, done, *_):
        return tf.logical_and(trial < LINE_SEARCH_TRIALS, tf.logical_not(done))

    def body(trial, done, t, low, low_slope, high, high_slope, best_t, best_value):
        value, slope = evaluate(t)
        not_higher = value <= value0 + value_noise
        sufficient = tf.logical_or(
            value <= value0 + ARMIJO_C1 * t * slope0,
            tf.logical_and(not_higher, slope <= (1.0 - 2.0 * APPROXIMATE_ARMIJO_DELTA) * -slope0),
        )
        flat = tf.abs(slope) <= CURVATURE_C2 * tf.abs(slope0)
        done = tf.logical_and(sufficient, flat)
        improves = tf.logical_or(done, tf.logical_and(sufficient, tf.logical_or(best_t == 0, value < best_value)))
        best_t = tf.where(improves, t, best_t)
        best_value = tf.where(improves, value, best_value)
        beyond = tf.logical_or(tf.logical_not(not_higher), slope > 0)
        high, high_slope = tf.where(beyond, t, high), tf.where(beyond, slope, high_slope)
        low, low_slope = tf.where(beyond, low, t), tf.where(beyond, low_slope, slope)
        bracketed = tf.math.is_finite(high)
        secant = low - low_slope * (high - low) / (high_slope - low_slope)
        width = high - low
        inside = tf.where(
            high_slope > 0,
            tf.clip_by_value(secant, low + 0.1 * width, high - 0.1 * width),
            low + 0.5 * width,
        )
        extrapolated = t - slope * (t - low) / (slope - low_slope)
        outside = tf.where(slope > low_slope, tf.clip_by_value(extrapolated, 2.0 * t, 16.0 * t), 4.0 * t)
        next_t = tf.where(done, t, tf.where(bracketed, inside, outside))
        return trial + 1, done, next_t, low, low_slope, high, high_slope, best_t, best_value

    zero = tf.constant(0.0, dtype)
    state = (0, False, tf.constant(1.0, dtype), zero, slope0, inf, inf, zero, value0)
    *_, best_t, best_value = tf.while_loop(condition, body, state)
    return best_t > 0, best_t, best_value


def _matmul_after(work, a, b, **options):
    """tf.matmul(a, b), started only once ``work`` is done. The design's products take most of an
    iteration and use every core: small ops the executor ran beside them (on its own threads)
    took 5-10 times longer there in a profile (bench/results/probe_speed_idle.txt)."""
    with tf.control_dependencies(work):
        return tf.matmul(a, b, **options)


def _loss_gradient(design, logit_gradient, after=()):
    """design^T @ logit_gradient [P, K] as (logit_gradient^T @ design)^T, started once ``after`` is
    done: oneDNN's product with the [N, P] design untransposed took 0.92 of the time of the
    transposed one at 5,000 x 2,065 x 100 (bench/results/probe_speed_idle.txt); the transpose of
    the [K, P] result is small."""
    return tf.transpose(_matmul_after(after, logit_gradient, design, transpose_a=True))


def _known(tensor) -> tf.Tensor:
    """Whether an optional input of _minimise was given: [0, K] stands for "not known"."""
    return tf.shape(tensor)[0] > 0


def _minimise(design, targets, entry_weights, scale, penalty, start, start_logits, start_loss_gradient,
              first_direction, first_logit_direction, tolerance, gradient_floor, max_iterations, multi_label: bool):
    """L-BFGS on u, where the natural parameters are scale[:, None] * u.

    design [N, P]; start [P, K] natural parameters; scale [P] preconditioner, penalty [P] (l2, ...,
    l2, 0). Optional inputs, [0, K] when not known: start_logits = design @ start and
    start_loss_gradient = design^T @ (the loss's logit gradient there), which the fit otherwise
    multiplies out; first_direction [P, K] (natural coordinates) with its logits
    first_logit_direction = design @ first_direction [N, K], searched along before any quasi-Newton
    step (a path's tangent: one product, the new gradient's, for a step and a curvature pair).
    Returns (natural parameters, their logits, their loss gradient design^T @ dloss/dlogits,
    objective, ||gradient|| / ||l2 W||, iterations, converged). The loop carries the natural
    parameters, their logits and their penalty gradient (penalty * natural), so that each [P, K]
    or [N, K] product is formed once per iteration.
    """
    scale = scale[:, None]
    penalty = penalty[:, None]
    dtype = design.dtype

    start_logits = tf.cond(_known(start_logits), lambda: start_logits, lambda: tf.matmul(design, start))
    pull0 = penalty * start
    penalty_value0 = 0.5 * _dot(pull0, start)
    pull_norm0 = tf.norm(pull0)
    loss0, logit_gradient0 = _loss(start_logits, targets, entry_weights, multi_label)
    value0 = loss0 + penalty_value0
    loss_gradient0 = tf.cond(
        _known(start_loss_gradient), lambda: start_loss_gradient,
        lambda: _loss_gradient(design, logit_gradient0, after=[penalty_value0, pull_norm0]))
    natural_gradient0 = loss_gradient0 + pull0
    given_first = _known(first_logit_direction)
    zeros = tf.zeros_like(start)  # one zero buffer, shared by every unused pair
    empty_history = ((zeros,) * HISTORY_SIZE, (zeros,) * HISTORY_SIZE, tf.zeros([HISTORY_SIZE], dtype))

    def stationarity(pull_norm, natural_gradient):
        """(||grad|| / ||l2 W||, converged): at the optimum the loss's pull -grad CE equals l2 W."""
        gradient_norm = tf.norm(natural_gradient)
        converged = gradient_norm <= tf.maximum(tolerance * pull_norm, gradient_floor)
        return tf.math.divide_no_nan(gradient_norm, pull_norm), converged

    relative0, converged0 = stationarity(pull_norm0, natural_gradient0)

    def condition(iteration, converged, stalled, *_):
        return tf.logical_and(iteration < max_iterations, tf.logical_not(tf.logical_or(converged, stalled)))

    def body(iteration, converged, stalled, natural, logits, pull, value, gradient, relative, history):
        tangent = tf.logical_and(given_first, iteration == 0)
        direction = tf.cond(tangent, lambda: first_direction / scale, lambda: _two_loop_direction(gradient, *history))
        slope0 = _dot(direction, gradient)
        had_history = tf.reduce_any(history[2] > 0)
        natural_direction = scale * direction
        penalty_value = 0.5 * _dot(pull, natural)
        penalty_coefficients = (_dot(pull, natural_direction),
                                0.5 * _dot(penalty * natural_direction, natural_direction))
        logit_direction = tf.cond(tangent, lambda: first_logit_direction, lambda: _matmul_after(
            [slope0, had_history, penalty_value, *penalty_coefficients], design, natural_direction))

        def loss_along(t):
            loss, slope = _loss_and_slope(logits + t * logit_direction, logit_direction, targets, entry_weights,
                                          multi_label)
            return loss + penalty_value, slope

        found, t, new_value = _line_search(loss_along, penalty_coefficients, value, slope0)
        found = tf.logical_and(found, slope0 < 0)
        t = tf.where(found, t, tf.zeros_like(t))  # a failed search leaves the parameters and value as they were
        new_natural = natural + t * natural_direction
        new_logits = logits + t * logit_direction
        _, logit_gradient = _loss(new_logits, targets, entry_weights, multi_label)
        new_pull = penalty * new_natural
        pull_norm = tf.norm(new_pull)
        natural_gradient = _loss_gradient(design, logit_gradient, after=[pull_norm]) + new_pull
        new_gradient = scale * natural_gradient
        step, change = t * direction, new_gradient - gradient
        curvature = _dot(step, change)
        keep = tf.logical_and(found, curvature > 0)
        steps, changes, rhos = _remember(keep, history, step, change, curvature)
        # Rounding can spoil the quasi-Newton direction near the optimum: after a failed search,
        # drop the history (rho = 0 marks a slot unused) and try the (preconditioned) gradient
        # before giving up.
        rhos = tf.where(found, rhos, tf.zeros_like(rhos))
        new_relative, new_converged = stationarity(pull_norm, natural_gradient)
        return (
            iteration + 1,
            tf.logical_and(found, new_converged),
            tf.logical_not(tf.reduce_any([found, had_history, tangent])),  # a failed tangent leaves the gradient
            new_natural,
            new_logits,
            new_pull,
            new_value,
            tf.where(found, new_gradient, gradient),
            tf.where(found, new_relative, relative),
            (steps, changes, rhos),
        )

    state = (tf.constant(0), converged0, tf.constant(False), start, start_logits, pull0, value0,
             scale * natural_gradient0, relative0, empty_history)
    iteration, converged, _, natural, logits, pull, value, gradient, relative, *_ = tf.while_loop(
        condition, body, state)
    return natural, logits, gradient / scale - pull, value, relative, iteration, converged


@functools.lru_cache(maxsize=None)
def _minimiser(dtype: tf.DType, multi_label: bool):
    """_minimise as one graph per dtype and kind of labels, for inputs of any size: traced once per
    process (each optional input given or not, or a new problem size, would otherwise trace it
    again, about a second each)."""
    matrix, vector, scalar = (tf.TensorSpec(shape, dtype) for shape in ([None, None], [None], []))
    targets = matrix if multi_label else tf.TensorSpec([None], tf.int32)
    signature = [matrix, targets, matrix, vector, vector] + [matrix] * 5 + [scalar, scalar, tf.TensorSpec([], tf.int32)]
    return tf.function(functools.partial(_minimise, multi_label=multi_label), input_signature=signature)


def _solver_penalty(problem: _Problem, l2: float) -> float:
    """The solver's lam for the paper's l2: sum CE + l2 ||W||^2 = n (mean CE + (lam / 2) ||W||^2)."""
    return 2.0 * l2 / problem.num_examples


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where a fit starts, and what is known there without a product with the design."""

    natural: np.ndarray  # [P, K] natural parameters (see _Problem)
    logits: Optional[tf.Tensor] = None  # design @ natural [N, K]
    loss_gradient: Optional[tf.Tensor] = None  # design^T @ (the loss's logit gradient there) [P, K]
    # (direction [P, K], design @ direction [N, K]): searched along before the first L-BFGS step
    tangent: Optional[Tuple[np.ndarray, tf.Tensor]] = None


@dataclasses.dataclass(frozen=True)
class _Solution:
    natural: np.ndarray  # [P, K]
    logits: tf.Tensor  # design @ natural [N, K]
    loss_gradient: tf.Tensor  # [P, K], as _Start keeps it: a later fit starting here needs no product
    result: FitResult


def _solve(problem: _Problem, l2: float, start: _Start, tolerance: float, max_iterations: int) -> _Solution:
    """Minimise at one l2 from ``start``."""
    if not l2 > 0:
        raise ValueError(f"l2 must be positive, got {l2!r}")
    dtype = problem.design.dtype
    # [0, K] marks what _minimise computes itself: a product made here would live through the whole fit
    unknown = tf.zeros([0, problem.num_classes], dtype)
    direction, logit_direction = start.tangent or (np.zeros_like(start.natural), unknown)
    lam = _solver_penalty(problem, l2)
    precision = np.concatenate([problem.curvature * problem.column_variances + lam, [problem.curvature]])
    penalty = np.concatenate([np.full(problem.column_variances.shape, lam), [0.0]])
    natural, logits, loss_gradient, value, relative, iterations, converged = _minimiser(dtype, problem.multi_label)(
        problem.design, problem.targets, problem.entry_weights,
        tf.constant(1.0 / np.sqrt(precision), dtype), tf.constant(penalty, dtype),
        tf.constant(start.natural, dtype), _or(start.logits, unknown), _or(start.loss_gradient, unknown),
        tf.constant(direction, dtype), logit_direction, tf.constant(tolerance, dtype),
        tf.constant(problem.gradient_floor, dtype), tf.constant(max_iterations),
    )
    natural = natural.numpy()
    weights, bias = _from_problem_coordinates(problem, natural)
    result = FitResult(
        weights=weights.astype(dtype.as_numpy_dtype),
        bias=bias.astype(dtype.as_numpy_dtype),
        l2=float(l2),
        multi_label=problem.multi_label,
        objective=float(value) * problem.num_examples,
        gradient_norm=float(relative),
        iterations=int(iterations),
        converged=bool(converged),
    )
    return _Solution(natural, logits, loss_gradient, result)


def _or(tensor: Optional[tf.Tensor], default: tf.Tensor) -> tf.Tensor:
    return default if tensor is None else tensor


def _zero_start(problem: _Problem) -> _Start:
    return _Start(np.zeros((problem.design.shape[1], problem.num_classes)))


@_on_one_blas_thread
def fit(features, labels, l2: float, *, multi_label: bool = False, init: Optional[FitResult] = None,
        dtype="float32", tolerance: float = DEFAULT_TOLERANCE,
        max_iterations: int = DEFAULT_MAX_ITERATIONS) -> FitResult:
    """Minimise summed cross-entropy + l2 ||W||^2 on (features [N, D], labels).

    labels: int class ids [N] (multinomial over K = max id + 1 classes, or init's K), or with
    multi_label=True an int [N, K] matrix of 1 / 0 / -1 (difficult, left out of that class's loss).
    init: a previous FitResult to start from (warm start); convergence is judged the same way.
    """
    num_classes = init.weights.shape[1] if init is not None and not multi_label else None
    problem = _prepare(features, labels, multi_label, _dtype(dtype), num_classes)
    start = _zero_start(problem) if init is None else _Start(
        _to_problem_coordinates(problem, init.weights, init.bias))
    return _solve(problem, l2, start, tolerance, max_iterations).result


def refit(train_features, train_labels, val_features, val_labels, search_result: SearchResult,
          **fit_options) -> FitResult:
    """The final probe: the chosen l2 fitted on train + val, warm-started from the search's model.

    The same l2 on the summed loss of more examples: the protocol's "retrain on train+val with the
    chosen hyperparameter" (scikit-learn's C stays 1 / (2 * l2)).
    """
    features = np.concatenate([np.asarray(train_features), np.asarray(val_features)])
    labels = np.concatenate([np.asarray(train_labels), np.asarray(val_labels)])
    return fit(features, labels, search_result.l2, multi_label=search_result.fit.multi_label,
               init=search_result.fit, **fit_options)


# ---------------------------------------------------------------------------------------------
# The regularisation search.


def _paper_schedule(evaluate: Callable[[int], float], grid: np.ndarray, data_curvature: float) -> None:
    """Every one of the paper's 45 values, strongest regularisation first (cheap warm starts)."""
    for index in reversed(range(len(grid))):
        evaluate(index)


def _fast_schedule(evaluate: Callable[[int], float], grid: np.ndarray, data_curvature: float) -> None:
    """Coarse to fine on the paper grid: the validation curve is smooth in log l2.

    A decade at a time (COARSE_STEP grid values) from the strongest penalty down to the weakest,
    until a value scores below the best so far: past the peak the fits are the slowest ones and only overfit
    more. Then around the best, half that step either side, then half again, down to neighbouring
    grid values: a bisection of the bracket the scan found, which lands on the paper grid's best
    value whenever the curve rises and falls once within a decade of its peak. Values above
    ``data_curvature`` (the loss's largest curvature, in l2 units) do not count as a decline: there
    the penalty outweighs the data in every direction, and which logit wins is rounding noise.
    """
    scores: Dict[int, float] = {}
    index = len(grid) - 1
    while True:
        scores[index] = evaluate(index)
        if index == 0 or grid[index] < data_curvature and scores[index] < max(scores.values()):
            break
        index = max(index - COARSE_STEP, 0)
    step = COARSE_STEP // 2
    while step >= 1:
        best = _best_index(scores)
        for neighbour in (best + step, best - step):
            if 0 <= neighbour < len(grid) and neighbour not in scores:
                scores[neighbour] = evaluate(neighbour)
        step //= 2


def _best_index(scores: Dict[int, float]) -> int:
    """Highest validation score; ties go to the stronger regularisation (larger l2)."""
    return max(scores, key=lambda index: (scores[index], index))


@dataclasses.dataclass(frozen=True)
class L2Search:
    """Which grid values to fit (``schedule(evaluate, grid, data curvature)``), and how tightly.

    ``screening_tolerance``: when set, the fits that only score a value stop at this looser
    tolerance (the validation ranking needs W to a percent, not to the solver's tolerance) and the
    chosen value's fit is then polished, from where it stopped, to the search's tolerance.
    ``warm_start_reach``: how many grid values from the latest or the best fit the schedule's next
    fits can be; solutions farther away are dropped (see _keep_near).
    """

    schedule: Callable[[Callable[[int], float], np.ndarray, float], None]
    warm_start_reach: int
    screening_tolerance: Optional[float] = None


# The searches settings.L2_SEARCHES names, each as the schedule that walks the grid.
L2_SCHEDULES: Registry[L2Search] = Registry("l2 search")
L2_SCHEDULES.register("fast", L2Search(_fast_schedule, COARSE_STEP, screening_tolerance=SCREENING_TOLERANCE))
L2_SCHEDULES.register("paper", L2Search(_paper_schedule, 1))  # each fit starts from the two before it


def _path_weights(solved, index: int) -> Tuple[Tuple[int, float], ...]:
    """Where to start the fit at grid[index], as weights on solved grid values: on the line through
    the two nearest solved points in log(l2) (the regularisation path is smooth), else at the nearest
    one, else nowhere (zero)."""
    nearest = sorted(solved, key=lambda solved_index: abs(solved_index - index))[:2]
    if len(nearest) < 2:
        return tuple((solved_index, 1.0) for solved_index in nearest)
    slope = (index - nearest[0]) / (nearest[0] - nearest[1])
    return (nearest[0], 1.0 + slope), (nearest[1], -slope)


def _combine(weights: Tuple[Tuple[int, float], ...], values: Mapping):
    """sum of weight * values[index]: the path start's parameters, or its logits."""
    (first, first_weight), *rest = weights
    total = first_weight * values[first]
    for index, weight in rest:
        total += weight * values[index]
    return total


def _path_start(problem: _Problem, weights: Tuple[Tuple[int, float], ...], solutions: Mapping[int, np.ndarray],
                recent: Mapping[int, _Start], tangent: bool) -> _Start:
    """The start _path_weights places, with its logits when the fits it combines are ``recent``
    ones (kept as starts: their logits and loss gradients known). With ``tangent``, the fit instead
    starts at the nearer of them and first searches along the line to the placed start: its first
    step then needs one product with the design (the gradient where it lands), not two, that
    step's curvature pair seeds L-BFGS's history, and the search may go past the placed start.
    Only for fits held to the full tolerance: a screening fit stops where its loose tolerance lets
    it, so its start decides its score."""
    if not weights:
        return _zero_start(problem)
    if not all(index in recent for index, _ in weights):
        return _Start(_combine(weights, solutions))
    if not tangent:
        logits = {index: recent[index].logits for index, _ in weights}
        return _Start(_combine(weights, solutions), _combine(weights, logits))
    (near_index, near_weight), *farther = weights
    near = recent[near_index]
    if not farther:
        return near
    far = recent[farther[0][0]]
    reach = near_weight - 1.0  # the placed start is near + reach * (near - far)
    tangent_step = (reach * (near.natural - far.natural), reach * (near.logits - far.logits))
    return dataclasses.replace(near, tangent=tangent_step)


def _keep_near(solutions: Dict[int, np.ndarray], best: int, latest: int, reach: int) -> None:
    """Drop the solutions no later fit starts from: a schedule moves on from the latest value or
    refines around the best, so keep those within ``reach`` grid values of either (each is P x K:
    all 45 of a large problem, or the 9 to 18 within a decade, would take a sizeable fraction of
    its feature matrix)."""
    for index in [i for i in solutions if min(abs(i - best), abs(i - latest)) > reach]:
        del solutions[index]


@_on_one_blas_thread
def select_l2(train_features, train_labels, val_features, val_labels, *, metric: str,
              multi_label: bool = False, search: str = "fast", dtype="float32",
              tolerance: float = DEFAULT_TOLERANCE,
              max_iterations: int = DEFAULT_MAX_ITERATIONS) -> SearchResult:
    """Choose l2 from ``protocol.PROBE_L2_GRID`` on the validation split, scoring each fit with
    ``metrics.score(metric, ...)``.

    search="paper" fits all 45 values; search="fast" (see _fast_schedule) fits a decade at a time
    down to a decline, then bisects around the best, scoring at SCREENING_TOLERANCE and polishing
    the chosen fit to ``tolerance``. It selects the paper search's optimum when the validation score
    along the grid rises to one peak and then falls (unimodal); a higher second peak beyond the first
    decline is missed. Each fit starts from the solved path nearby and is held to the
    same gradient tolerance as a cold fit: warm starts change the cost, not the answer.
    Refit the chosen value on train + val with ``refit``.
    """
    l2_search = L2_SCHEDULES.get(search)
    metrics.METRICS.get(metric)
    fit_tolerance = max(tolerance, l2_search.screening_tolerance or tolerance)
    grid = np.asarray(protocol.PROBE_L2_GRID, dtype=np.float64)
    val_labels = np.asarray(val_labels)
    num_classes = None if multi_label else int(max(np.max(train_labels), np.max(val_labels))) + 1
    problem = _prepare(train_features, train_labels, multi_label, _dtype(dtype), num_classes)
    solutions: Dict[int, np.ndarray] = {}  # warm starts, in the working dtype; see _keep_near
    # The latest two fits (their logits [N, K] and loss gradients [P, K]): a start on the line
    # through them needs no product with the design (the paper search's every start), where memory
    # allows.
    keep_recent = 2 * problem.num_classes <= LOGITS_MEMORY_SHARE * problem.mean.shape[0]
    recent: Dict[int, _Start] = {}
    trials: Dict[int, L2Trial] = {}
    chosen: Optional[FitResult] = None

    def evaluate(index: int) -> float:
        nonlocal chosen
        start = _path_start(problem, _path_weights(solutions, index), solutions, recent, fit_tolerance == tolerance)
        for older in list(recent)[:-1]:  # during the fit, hold one [N, K] beside its own
            del recent[older]
        solution = _solve(problem, grid[index], start, fit_tolerance, max_iterations)
        result = solution.result
        solutions[index] = solution.natural.astype(problem.design.dtype.as_numpy_dtype)
        if keep_recent:
            recent[index] = _Start(solutions[index], solution.logits, solution.loss_gradient)
        score = metrics.score(metric, val_labels, decision_scores(result, val_features))
        trials[index] = L2Trial(float(grid[index]), score, result.iterations, result.converged)
        best = _best_index({i: trial.validation_score for i, trial in trials.items()})
        if best == index:
            chosen = result  # only the best model so far is kept
        _keep_near(solutions, best, index, l2_search.warm_start_reach)
        return score

    largest_data_curvature = problem.curvature * problem.column_variances[0]
    l2_search.schedule(evaluate, grid, largest_data_curvature * problem.num_examples / 2.0)
    best = _best_index({i: trial.validation_score for i, trial in trials.items()})
    if fit_tolerance > tolerance:
        chosen = _solve(problem, grid[best], _Start(solutions[best]), tolerance, max_iterations).result
    return SearchResult(l2=chosen.l2, trials=tuple(trials[i] for i in sorted(trials)), fit=chosen,
                        at_grid_edge=grid_edges.edge(grid[best], grid))
