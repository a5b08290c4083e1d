"""The probe's two hot paths against the anchors' own methods, on the same problems.

1. The regularisation search, every method on the paper's penalty scale (summed cross-entropy +
   l2 ||W||^2, bias unpenalised; scikit-learn C = 1 / (2 l2)), each choosing by the same
   validation metric, its chosen model (trained on the training split) scored on the test split:
   - tfbench's fast and paper searches (``linear.select_l2``);
   - the paper's first author's linear-evaluation procedure: TensorFlow Probability's
     ``lbfgs_minimize`` (x_tolerance=1e-5) on the summed loss, 7 values 10^-6 ... 10^6, then 4
     halvings of the log step around the best (10^+-1, 10^+-0.5, 10^+-0.25, 10^+-0.125), each fit
     warm-started from the previous best, the minimiser inside one ``tf.function``;
   - scikit-learn's ``LogisticRegression`` over the paper's 45 values, warm-started from strong to
     weak penalties and cold, both run to convergence (tol 1e-4, --sklearn_max_iter).
   Reported per method: wall and CPU time, fits, solver iterations, chosen l2 and test score;
   then tfbench's speed-ups over each anchor, measured in this run.
2. Feature extraction: ``features.extract`` against a warm ``model.predict`` on the same images
   (``extraction_figures``).

The features are synthetic stand-ins for pooled penultimate activations (``synthetic_features``):
non-negative (ReLU), a decaying covariance spectrum, and class structure under enough noise that
the best l2 lies inside the grid. Run:

    python bench/probe_bench.py                                        # 5,000 x 2,048, 100 classes
    python bench/probe_bench.py --train 1000 --dim 256 --classes 20    # a quick run
    python bench/probe_bench.py --skip_search --extract_model=mobilenet_v2 --extract_images=256

tensorflow-probability (the author's procedure) is a bench-only dependency:
``pip install tensorflow-probability==0.25.0`` (it needs tf-keras, already installed with TF-Hub).
Wall time is what a user waits; CPU time (all threads) is less disturbed by other jobs on a
shared machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
import warnings
from typing import Callable, Dict, Iterator, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from tfbench import linear, metrics, protocol  # noqa: E402

AUTHOR_X_TOLERANCE = 1e-5
AUTHOR_MAX_ITERATIONS = 1000
AUTHOR_COARSE_EXPONENTS = (-6, -4, -2, 0, 2, 4, 6)
AUTHOR_HALVINGS = 4
SKLEARN_TOLERANCE = 1e-4  # scikit-learn's default


@dataclasses.dataclass(frozen=True)
class ProbeData:
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    name: str
    l2: float
    wall_seconds: float
    cpu_seconds: float
    fits: int
    iterations: int
    unconverged_fits: int
    test_score: float


@dataclasses.dataclass(frozen=True)
class _Chosen:
    """What a search hands back for timing: its choice, its model and its cost."""

    l2: float
    decision_function: Callable[[np.ndarray], np.ndarray]
    fits: int
    iterations: int
    unconverged_fits: int


def synthetic_features(num_train: int, num_val: int, num_test: int, dim: int, num_classes: int,
                       seed: int = 0, latent_dim: int = 512, chunk: int = 8192) -> ProbeData:
    """Class-balanced ReLU features: a class code plus noise in a latent space whose i-th direction
    has scale 1/i (a decaying spectrum, as in real networks), mixed up to ``dim`` units. Drawn in
    chunks of rows, so that the only large arrays are the float32 results."""
    rng = np.random.default_rng(seed)
    latent_scales = 1.0 / np.arange(1, latent_dim + 1)
    class_codes = rng.normal(size=(num_classes, latent_dim)) * latent_scales
    mixing = rng.normal(size=(latent_dim, dim)) * 3.0 / np.sqrt(latent_dim)
    offsets = rng.normal(size=dim) * 0.5 - 0.3

    def draw(count):
        labels = rng.permutation(np.arange(count) % num_classes)
        features = np.empty((count, dim), np.float32)
        for start in range(0, count, chunk):
            rows = labels[start:start + chunk]
            latent = (class_codes[rows] + rng.normal(size=(len(rows), latent_dim)) * latent_scales) @ mixing
            features[start:start + chunk] = np.maximum(latent + offsets + 0.3 * rng.normal(size=(len(rows), dim)), 0.0)
        return features, labels

    return ProbeData(*draw(num_train), *draw(num_val), *draw(num_test))


def _timed(name: str, metric: str, data: ProbeData, run: Callable[[], _Chosen]) -> SearchOutcome:
    """Time ``run()`` and score its chosen model on the test split."""
    wall, cpu = time.perf_counter(), time.process_time()
    chosen = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test_score = metrics.score(metric, data.test_y, chosen.decision_function(data.test_x))
    return SearchOutcome(name, chosen.l2, wall, cpu, chosen.fits, chosen.iterations, chosen.unconverged_fits,
                         test_score)


def tfbench_search(data: ProbeData, metric: str, search: str) -> SearchOutcome:
    def run():
        result = linear.select_l2(data.train_x, data.train_y, data.val_x, data.val_y, metric=metric, search=search)
        polished = linear.L2_SCHEDULES.get(search).screening_tolerance is not None
        return _Chosen(
            result.l2, lambda features: linear.decision_scores(result.fit, features),
            fits=len(result.trials) + polished,
            iterations=sum(t.iterations for t in result.trials) + (result.fit.iterations if polished else 0),
            unconverged_fits=sum(not t.converged for t in result.trials))

    return _timed(f"tfbench {search}", metric, data, run)


def sklearn_search(data: ProbeData, metric: str, warm_start: bool, max_iter: int) -> SearchOutcome:
    """The paper grid with scikit-learn's lbfgs to tol 1e-4; warm starts walk from strong to weak."""

    def run():
        model = LogisticRegression(warm_start=warm_start, tol=SKLEARN_TOLERANCE, max_iter=max_iter)
        models: Dict[float, LogisticRegression] = {}
        scores: Dict[float, float] = {}
        iterations = unconverged = 0
        for l2 in sorted(protocol.PROBE_L2_GRID, reverse=True):
            if not warm_start:
                model = LogisticRegression(tol=SKLEARN_TOLERANCE, max_iter=max_iter)
            model.set_params(C=linear.sklearn_c(l2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(data.train_x, data.train_y)
            used = int(np.max(model.n_iter_))
            iterations += used
            unconverged += used >= max_iter
            scores[l2] = metrics.score(metric, data.val_y, model.decision_function(data.val_x))
            models[l2] = copy.deepcopy(model)
        best = max(scores, key=lambda l2: (scores[l2], l2))
        return _Chosen(best, models[best].decision_function, len(scores), iterations, unconverged)

    return _timed(f"sklearn {'warm' if warm_start else 'cold'}", metric, data, run)


def author_search(data: ProbeData, metric: str) -> SearchOutcome:
    """The paper's first author's procedure, ported to TensorFlow Probability (see the module doc)."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    def run():
        features = tf.constant(data.train_x, tf.float32)
        labels = tf.constant(data.train_y, tf.int32)
        dim, num_classes = data.train_x.shape[1], int(max(data.train_y.max(), data.val_y.max())) + 1

        def unpack(position, reshape=tf.reshape):
            return reshape(position[:dim * num_classes], [dim, num_classes]), position[dim * num_classes:]

        @tf.function(reduce_retracing=True)
        def minimise(l2, start):
            def value_and_gradients(position):
                with tf.GradientTape() as tape:
                    tape.watch(position)
                    weights, bias = unpack(position)
                    logits = tf.matmul(features, weights) + bias
                    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
                    loss += l2 * tf.reduce_sum(tf.square(weights))
                return loss, tape.gradient(loss, position)

            result = tfp.optimizer.lbfgs_minimize(value_and_gradients, initial_position=start,
                                                  x_tolerance=AUTHOR_X_TOLERANCE,
                                                  max_iterations=AUTHOR_MAX_ITERATIONS)
            return result.position, result.num_iterations, result.converged

        solutions: Dict[float, np.ndarray] = {}
        scores: Dict[float, float] = {}
        counts = {"iterations": 0, "unconverged": 0}

        def evaluate(exponent: float, start: np.ndarray) -> None:
            l2 = 10.0 ** exponent
            position, iterations, converged = minimise(tf.constant(l2, tf.float32), tf.constant(start))
            solutions[exponent] = position.numpy()
            counts["iterations"] += int(iterations)
            counts["unconverged"] += not bool(converged)
            weights, bias = unpack(solutions[exponent], np.reshape)
            scores[exponent] = metrics.score(metric, data.val_y, data.val_x @ weights + bias)

        start = np.zeros(dim * num_classes + num_classes, np.float32)
        for exponent in sorted(AUTHOR_COARSE_EXPONENTS, reverse=True):  # strong to weak, as a path
            evaluate(exponent, start)
            start = solutions[exponent]
        step = float(AUTHOR_COARSE_EXPONENTS[1] - AUTHOR_COARSE_EXPONENTS[0]) / 2
        for _ in range(AUTHOR_HALVINGS):
            best = max(scores, key=lambda e: (scores[e], e))
            for exponent in (best - step, best + step):
                if exponent not in scores:
                    evaluate(exponent, solutions[best])
            step /= 2
        best = max(scores, key=lambda e: (scores[e], e))
        weights, bias = unpack(solutions[best], np.reshape)
        return _Chosen(10.0 ** best, lambda x: x @ weights + bias, len(scores), counts["iterations"],
                       counts["unconverged"])

    return _timed("author (TFP L-BFGS)", metric, data, run)


def search_figures(data: ProbeData, metric: str, sklearn_max_iter: int,
                   skip: Tuple[str, ...] = (), rounds: int = 1) -> Iterator[str]:
    """Every method, one printable line each as soon as it is measured, then the ratios. tfbench's
    fast search runs first, so its time includes building its TensorFlow graphs (as does the
    author's procedure's). With rounds > 1 the methods run that many times, in alternating order,
    and the ratios are of the median times: one run's ratio moves by 10-20% on a shared machine."""
    methods = [
        ("fast", lambda: tfbench_search(data, metric, "fast")),
        ("paper", lambda: tfbench_search(data, metric, "paper")),
        ("author", lambda: author_search(data, metric)),
        ("sklearn_warm", lambda: sklearn_search(data, metric, True, sklearn_max_iter)),
        ("sklearn_cold", lambda: sklearn_search(data, metric, False, sklearn_max_iter)),
    ]
    methods = [method for key, method in methods if key not in skip]
    runs: Dict[str, List[SearchOutcome]] = {}
    for round_ in range(rounds):
        for method in methods if round_ % 2 == 0 else methods[::-1]:
            outcome = method()
            runs.setdefault(outcome.name, []).append(outcome)
            yield _describe(outcome) + (f" (round {round_ + 1})" if rounds > 1 else "")
    outcomes = [_median(name, measured) for name, measured in runs.items()]
    paper = next((o for o in outcomes if o.name == "tfbench paper"), None)
    of = f"median of {rounds} rounds, " if rounds > 1 else ""
    for ours in (o for o in outcomes if o.name.startswith("tfbench")):
        for anchor in (o for o in outcomes if not o.name.startswith("tfbench")):
            yield (f"speed-up of {ours.name} over {anchor.name} ({of}one run): "
                   f"{anchor.wall_seconds / ours.wall_seconds:.1f}x wall, "
                   f"{anchor.cpu_seconds / ours.cpu_seconds:.1f}x cpu")
    if paper is not None:
        for other in outcomes:
            if other is not paper:
                yield (f"test score {other.name} - tfbench paper: "
                       f"{100 * (other.test_score - paper.test_score):+.2f} points")


def _median(name: str, measured: List[SearchOutcome]) -> SearchOutcome:
    """One method's rounds as one outcome: median times (its choice is the same every round)."""
    return dataclasses.replace(measured[0], wall_seconds=float(np.median([o.wall_seconds for o in measured])),
                               cpu_seconds=float(np.median([o.cpu_seconds for o in measured])))


def _describe(outcome: SearchOutcome) -> str:
    return (f"{outcome.name}: wall {outcome.wall_seconds:.1f} s, cpu {outcome.cpu_seconds:.1f} s, "
            f"{outcome.fits} fits, {outcome.iterations} iterations ({outcome.unconverged_fits} fits unconverged), "
            f"chosen l2 {outcome.l2:.3g}, test score {100 * outcome.test_score:.2f}")


def extraction_figures(model_name: str, image_size: int, num_images: int, batch_size: int,
                       rounds: int) -> Iterator[str]:
    """features.extract vs model.predict on the same images, both warmed up on the full set first
    (every trace, and the last partial batch's, built), their order alternating from round to
    round; the median and spread of the per-round ratios."""
    import tensorflow as tf

    from tfbench import backbones, features

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(num_images, image_size, image_size, 3), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.zeros(num_images, np.int64)})
    model = backbones.build(model_name, pretrained=False, image_size=image_size)
    as_float = images.astype(np.float32)

    def rate(run):  # images per second of wall time around the whole call, for both paths
        started = time.perf_counter()
        run()
        return num_images / (time.perf_counter() - started)

    def predict_rate():
        return rate(lambda: model.predict(as_float, batch_size=batch_size, verbose=0))

    def tfbench_rate():
        return rate(lambda: features.extract(model, dataset, image_size=image_size, batch_size=batch_size))

    predict_rate(), tfbench_rate()  # warm-up on the same shapes as the timed rounds
    rates: Dict[str, List[float]] = {"tfbench": [], "predict": []}
    for round_index in range(rounds):
        order = (("tfbench", tfbench_rate), ("predict", predict_rate))
        for name, measure in order if round_index % 2 == 0 else order[::-1]:
            rates[name].append(measure())
        yield (f"round {round_index + 1}: tfbench {rates['tfbench'][-1]:.1f} img/s, "
               f"model.predict {rates['predict'][-1]:.1f} img/s")
    ratios = np.array(rates["tfbench"]) / np.array(rates["predict"])
    low, median, high = np.percentile(ratios, [25, 50, 75])
    yield (f"extraction {model_name} {image_size}px batch {batch_size}, {num_images} images, {rounds} rounds: "
           f"tfbench median {np.median(rates['tfbench']):.1f} img/s, model.predict median "
           f"{np.median(rates['predict']):.1f} img/s; ratio median {median:.2f}x (interquartile {low:.2f}-{high:.2f}x)"
           + ("" if median > 1.0 else ": tfbench is NOT faster than a warm model.predict"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=5000, help="training examples")
    parser.add_argument("--val", type=int, default=1000, help="validation examples")
    parser.add_argument("--test", type=int, default=5000, help="test examples")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--metric", default="top1", choices=["top1", "mean_per_class"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sklearn_max_iter", type=int, default=10000,
                        help="scikit-learn's iteration cap per fit (its default, 100, stops weak-penalty fits early)")
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out: "
                        "fast, paper, author, sklearn_warm, sklearn_cold")
    parser.add_argument("--extract_model", default="mobilenet_v2", help="backbone for the extraction figure")
    parser.add_argument("--extract_size", type=int, default=224)
    parser.add_argument("--extract_images", type=int, default=256)
    parser.add_argument("--extract_batch", type=int, default=64)
    parser.add_argument("--extract_rounds", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each search method, in alternating "
                        "order; the speed-ups are of the median times")
    parser.add_argument("--skip_extraction", action="store_true")
    parser.add_argument("--skip_search", action="store_true")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    if not args.skip_extraction:
        for line in extraction_figures(args.extract_model, args.extract_size, args.extract_images,
                                       args.extract_batch, args.extract_rounds):
            print(line, flush=True)
    if args.skip_search:
        return

    data = synthetic_features(args.train, args.val, args.test, args.dim, args.classes, args.seed)
    print(f"problem: {args.train} x {args.dim} synthetic features, {args.classes} classes, "
          f"val {args.val}, test {args.test}, metric {args.metric}; penalty: {protocol.PROBE_PENALTY_CONVENTION}",
          flush=True)
    skip = tuple(name for name in args.skip.split(",") if name)
    for line in search_figures(data, args.metric, args.sklearn_max_iter, skip, args.rounds):
        print(line, flush=True)


if __name__ == "__main__":
    main()
