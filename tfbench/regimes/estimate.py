"""The estimate regime: transferability estimators of the frozen training features, no training.

Reads (or extracts once) the ImageNet features of the training split, shared with the probe through
the feature cache, and records under `estimates` what tfbench.estimators computes from them:
LogME, NLEEP, the H-score and its shrunk form, leave-one-out k-NN accuracy on the training split,
and LEEP where the network has its own ImageNet classifier (its class probabilities are cached
likewise). An estimator that does not apply is recorded as None with the reason in `details`.
The report scores every estimator against the probe's and the fine-tune's test scores.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

SPLIT = "train"
ESTIMATES = ("logme", "leep", "nleep", "h_score", "shrunk_h_score", "knn_accuracy")


def settings_record() -> Dict[str, Any]:
    """The choices the estimators' papers leave open, as tfbench.estimators makes them."""
    from tfbench import estimators

    return {
        "split": SPLIT,
        "logme": {"targets": "one-vs-rest 0/1 per class present (multi-label: each label, difficult as "
                             "present)", "maximisation": "exact: profile over lambda = alpha / beta, "
                             "noise-free and no-signal limits included", "tolerance": estimators.LOGME_TOLERANCE},
        "nleep": {"pca_variance": estimators.NLEEP_PCA_VARIANCE,
                  "components_per_class": estimators.NLEEP_COMPONENTS_PER_CLASS, "seed": "the run's seed"},
        "h_score": {"rcond": estimators.RCOND},
        "shrunk_h_score": {"shrinkage": "Ledoit-Wolf"},
        "knn_accuracy": {"k": estimators.KNN_NEIGHBOURS, "distance": "euclidean",
                         "protocol": "leave-one-out on the training split", "metric": "top-1 accuracy"},
        "leep": {"source": "the network's own ImageNet classifier at its native size"},
    }


def run(experiment, runtime) -> Dict[str, Any]:
    """Compute every estimator for one (model, dataset) and return the finished record."""
    from tfbench import backbones, devices, estimators, results, runs
    from tfbench.regimes import frozen

    started = time.time()
    dataset_spec = experiment.dataset_spec()
    precision = devices.resolve_precision(experiment.precision)
    record = results.new_record(experiment, metric=dataset_spec.metric, started_at=results.now())
    train = frozen.outputs_of(experiment, runtime, [SPLIT], precision)[SPLIT]
    features, labels = train.features, train.labels
    targets = estimators.class_targets(labels)
    not_applicable: Dict[str, str] = {}
    seconds: Dict[str, float] = {}
    logme_result = None

    def timed(name: str, compute: Callable[[], Any]) -> Any:
        began = time.time()
        value = compute()
        seconds[name] = time.time() - began
        return value

    def logme():
        nonlocal logme_result
        logme_result = estimators.logme(features, targets)
        return logme_result.score

    def leep():
        probabilities = frozen.outputs_of(experiment, runtime, [SPLIT], precision,
                                          outputs=frozen.IMAGENET_PROBABILITIES)[SPLIT]
        return estimators.leep(probabilities.features, probabilities.labels)

    single_label = {
        "leep": leep,
        "nleep": lambda: estimators.nleep(features, labels, seed=experiment.seed),
        "h_score": lambda: estimators.h_score(features, labels),
        "shrunk_h_score": lambda: estimators.shrunk_h_score(features, labels),
        "knn_accuracy": lambda: estimators.knn_accuracy(features, labels),
    }
    estimates: Dict[str, Any] = {"logme": timed("logme", logme)}
    for name, compute in single_label.items():
        estimates[name] = None
        if dataset_spec.multi_label:
            not_applicable[name] = "defined for single-label classification; the dataset is multi-label"
            continue
        try:
            estimates[name] = float(timed(name, compute))
        except backbones.NoImageNetClassifierError:
            not_applicable[name] = ("the network has no ImageNet classifier, whose class probabilities "
                                    "LEEP needs")
    record.update(
        estimates=estimates,
        details={
            "precision": precision,
            "image_size": experiment.image_size or backbones.spec(experiment.model).image_size,
            "examples": int(len(features)), "feature_dim": int(features.shape[1]),
            "feature_cache_hit": train.from_cache,
            "logme": estimators.summary(logme_result),
            "not_applicable": not_applicable,
            "estimators": settings_record(),
        },
        timings={"wall_seconds": time.time() - started, "extraction_seconds": train.seconds,
                 "estimator_seconds": seconds},
    )
    record["imagenet_top1"] = runs.imagenet_top1(experiment)
    record["skipped_images"] = getattr(dataset_spec, "skipped_images", 0)
    return results.finish(record, "ok", None if logme_result.converged
                          else "LogME's maximisation hit its iteration limit for some class")
