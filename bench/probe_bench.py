"""The probe regime's two hot paths against the baselines users run today.

1. Feature extraction: tfbench.features.extract (tf.data pipeline, one compiled forward) against
   ``model.predict`` on the same images already in memory, same model and batch size.
2. The regularisation search: tfbench's L-BFGS search against scikit-learn's.

The baseline is what users run today: the paper's 45 l2 values, each a cold
``LogisticRegression(solver="lbfgs")`` with default settings (l2 converted to C by
``linear.sklearn_c``). Every search sees the same features and picks l2 by the same validation
metric; the chosen models (trained on the training split) are compared on the test split.

The features are synthetic stand-ins for pooled penultimate activations: non-negative (ReLU),
a decaying covariance spectrum, and class structure under enough noise that the best l2 lies
inside the grid. ``search_figures`` takes any ``ProbeData``, so cached real features can be
compared the same way. Run:

    python bench/probe_bench.py                                        # 5,000 x 2,048, 100 classes
    python bench/probe_bench.py --train 1000 --dim 256 --classes 20    # a quick run
    python bench/probe_bench.py --skip_search --extract_model=mobilenet_v2 --extract_images=512

Prints one figure per line; ratios are against baselines measured in the same run. Wall time is
what a user waits; CPU time (all threads) is less disturbed by other jobs on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
import warnings
from typing import Callable, Dict, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from tfbench import linear, metrics, protocol  # noqa: E402


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
    test_score: float


def synthetic_features(num_train: int, num_val: int, num_test: int, dim: int, num_classes: int,
                       seed: int = 0, latent_dim: int = 512) -> ProbeData:
    """Class-balanced ReLU features: a class code plus noise in a latent space whose i-th direction
    has scale 1/i (a decaying spectrum, as in real networks), mixed up to ``dim`` units."""
    rng = np.random.default_rng(seed)
    latent_scales = 1.0 / np.arange(1, latent_dim + 1)
    class_codes = rng.normal(size=(num_classes, latent_dim)) * latent_scales
    mixing = rng.normal(size=(latent_dim, dim)) * 3.0 / np.sqrt(latent_dim)
    offsets = rng.normal(size=dim) * 0.5 - 0.3

    def draw(count):
        labels = rng.permutation(np.arange(count) % num_classes)
        latent = (class_codes[labels] + rng.normal(size=(count, latent_dim)) * latent_scales) @ mixing
        features = np.maximum(latent + offsets + 0.3 * rng.normal(size=(count, dim)), 0.0)
        return features.astype(np.float32), labels

    return ProbeData(*draw(num_train), *draw(num_val), *draw(num_test))


def _timed(name: str, metric: str, data: ProbeData, run: Callable[[], tuple]) -> SearchOutcome:
    """Time ``run() -> (chosen l2, scores function)`` and score its chosen model on the test split."""
    wall, cpu = time.perf_counter(), time.process_time()
    l2, decision_function = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test_score = metrics.score(metric, data.test_y, decision_function(data.test_x))
    return SearchOutcome(name, l2, wall, cpu, test_score)


def sklearn_search(data: ProbeData, metric: str, warm_start: bool) -> SearchOutcome:
    """The paper grid with scikit-learn's defaults; warm starts walk from strong to weak penalties."""

    def run():
        model = LogisticRegression(warm_start=warm_start)
        models: Dict[float, LogisticRegression] = {}
        scores: Dict[float, float] = {}
        for l2 in sorted(protocol.PROBE_L2_GRID, reverse=True):
            if not warm_start:
                model = LogisticRegression()
            model.set_params(C=linear.sklearn_c(l2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(data.train_x, data.train_y)
            scores[l2] = metrics.score(metric, data.val_y, model.decision_function(data.val_x))
            models[l2] = copy.deepcopy(model)
        best = max(scores, key=lambda l2: (scores[l2], l2))
        return best, models[best].decision_function

    name = f"sklearn 45 {'warm' if warm_start else 'cold'} fits"
    return _timed(name, metric, data, run)


def tfbench_search(data: ProbeData, metric: str, grid: str) -> SearchOutcome:
    def run():
        result = linear.select_l2(data.train_x, data.train_y, data.val_x, data.val_y, metric=metric, search=grid)
        return result.l2, lambda features: linear.decision_scores(result.fit, features)

    return _timed(f"tfbench {grid} search", metric, data, run)


def search_figures(data: ProbeData, metric: str) -> Iterator[str]:
    """Every comparison, one printable line each, as soon as it is measured. The fast search runs
    first, so its time includes building the TensorFlow graphs."""
    fast = tfbench_search(data, metric, "fast")
    yield _describe(fast)
    paper = tfbench_search(data, metric, "paper")
    yield _describe(paper)
    cold = sklearn_search(data, metric, warm_start=False)
    yield _describe(cold)
    # Separates the search from the solver: scikit-learn's defaults (tol=1e-4, max_iter=100) stop
    # small-l2 fits early, and an early-stopped model is a different model from the optimum.
    converged = linear.fit(data.train_x, data.train_y, cold.l2)
    yield (f"tfbench converged fit at sklearn cold's chosen l2 {cold.l2:.3g}: test score "
           f"{metrics.score(metric, data.test_y, linear.decision_scores(converged, data.test_x)):.4f}")
    warm = sklearn_search(data, metric, warm_start=True)
    yield _describe(warm)
    for faster, baseline in ((fast, cold), (fast, warm), (paper, cold)):
        yield (f"speed-up of {faster.name} over {baseline.name}: "
               f"{baseline.wall_seconds / faster.wall_seconds:.1f}x wall, "
               f"{baseline.cpu_seconds / faster.cpu_seconds:.1f}x cpu")
    for other in (cold, paper):
        difference = 100 * (fast.test_score - other.test_score)
        yield f"test score difference, fast search - {other.name}: {difference:+.2f} points"
    yield (f"sklearn warm starts chose {'the same' if warm.l2 == cold.l2 else 'a different'} l2 as cold fits "
           f"({warm.l2:.3g} vs {cold.l2:.3g}); test score difference warm - cold: "
           f"{100 * (warm.test_score - cold.test_score):+.2f} points")


def _describe(outcome: SearchOutcome) -> str:
    return (f"{outcome.name}: wall {outcome.wall_seconds:.1f} s, cpu {outcome.cpu_seconds:.1f} s, "
            f"chosen l2 {outcome.l2:.3g}, test score {outcome.test_score:.4f}")


def extraction_figures(model_name: str, image_size: int, num_images: int, batch_size: int,
                       rounds: int = 3) -> Iterator[str]:
    """features.extract vs model.predict on the same images; median of per-round ratios."""
    import tensorflow as tf

    from tfbench import backbones, features

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(num_images, image_size, image_size, 3), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.zeros(num_images, np.int64)})
    model = backbones.build(model_name, pretrained=False, image_size=image_size)
    as_float = images.astype(np.float32)
    features.extract(model, dataset.take(batch_size), image_size=image_size, batch_size=batch_size)
    model.predict(as_float[:batch_size], batch_size=batch_size, verbose=0)  # both warmed up
    ratios = []
    for _ in range(rounds):
        started = time.perf_counter()
        model.predict(as_float, batch_size=batch_size, verbose=0)
        predict_rate = num_images / (time.perf_counter() - started)
        extracted = features.extract(model, dataset, image_size=image_size, batch_size=batch_size)
        tfbench_rate = num_images / extracted.seconds
        ratios.append(tfbench_rate / predict_rate)
        yield (f"extraction {model_name} {image_size}px batch {batch_size}: tfbench {tfbench_rate:.1f} img/s, "
               f"model.predict {predict_rate:.1f} img/s, ratio {ratios[-1]:.2f}x")
    yield f"extraction ratio (median of {rounds} rounds): {float(np.median(ratios)):.2f}x (goal >= 1.0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=5000, help="training examples")
    parser.add_argument("--val", type=int, default=1000, help="validation examples")
    parser.add_argument("--test", type=int, default=5000, help="test examples")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--metric", default="top1", choices=["top1", "mean_per_class"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extract_model", default="mobilenet_v2", help="backbone for the extraction figure")
    parser.add_argument("--extract_size", type=int, default=224)
    parser.add_argument("--extract_images", type=int, default=512)
    parser.add_argument("--extract_batch", type=int, default=64)
    parser.add_argument("--skip_extraction", action="store_true")
    parser.add_argument("--skip_search", action="store_true")
    args = parser.parse_args()

    if not args.skip_extraction:
        for line in extraction_figures(args.extract_model, args.extract_size, args.extract_images,
                                       args.extract_batch):
            print(line, flush=True)
    if args.skip_search:
        return

    data = synthetic_features(args.train, args.val, args.test, args.dim, args.classes, args.seed)
    print(f"problem: {args.train} x {args.dim} synthetic features, {args.classes} classes, "
          f"val {args.val}, test {args.test}, metric {args.metric}", flush=True)
    for line in search_figures(data, args.metric):
        print(line, flush=True)


if __name__ == "__main__":
    main()
