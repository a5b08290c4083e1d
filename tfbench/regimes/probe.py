"""The linear-probe regime: frozen penultimate features + L2-regularised logistic regression.

Extracts features of train, val and test once (cached, see tfbench.features), chooses the L2 penalty
on validation (`--l2_search`), refits on train+val with it and reports the dataset's test metric.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from tfbench import protocol

SPLITS = ("train", "val", "test")
TENSORBOARD_DIR = "tensorboard"


def run(experiment, runtime) -> Dict[str, Any]:
    """Run the probe protocol for one experiment and return its finished record."""

    from tfbench import (backbones, devices, estimate_cost, grid_edges, linear, metrics, predictions, results,
                         runs)
    from tfbench.regimes import frozen

    started = time.time()
    print(estimate_cost.estimated_plan_line(experiment, runtime))
    backbone_spec = backbones.spec(experiment.model)
    dataset_spec = experiment.dataset_spec()
    image_size = experiment.image_size or backbone_spec.image_size
    precision = devices.resolve_precision(experiment.precision)
    record = results.new_record(experiment, metric=dataset_spec.metric, started_at=results.now())
    extracted = frozen.outputs_of(experiment, runtime, SPLITS, precision)

    train, val, test = (extracted[s] for s in SPLITS)
    search_started = time.time()
    print(f"probe: choosing L2 on validation ({experiment.settings.l2_search} search, "
          f"{len(train.features)} train x {train.features.shape[1]} features)")
    selection = linear.select_l2(train.features, train.labels, val.features, val.labels,
                                 metric=dataset_spec.metric, multi_label=dataset_spec.multi_label,
                                 search=experiment.settings.l2_search)
    search_seconds = time.time() - search_started
    refit_started = time.time()
    # On a training subset the final fit keeps to it (exactly N per class, as the trained regimes'
    # trainval); otherwise it refits on train + val.
    refit_val = val if experiment.train_examples_per_class is None else _no_examples(val)
    final = linear.refit(train.features, train.labels, refit_val.features, refit_val.labels, selection)
    refit_seconds = time.time() - refit_started
    test_scores = linear.decision_scores(final, test.features)
    test_score = metrics.score(dataset_spec.metric, test.labels, test_scores)

    extraction_seconds = sum(f.seconds for f in extracted.values())
    extracted_images = sum(len(f.features) for f in extracted.values() if not f.from_cache)
    record.update(
        hyperparameters={"l2": selection.l2},
        trials=[{"hyperparameters": {"l2": t.l2}, "validation_score": t.validation_score,
                 "iterations": t.iterations, "converged": t.converged,
                 "status": "ok" if t.converged else "not_converged"} for t in selection.trials],
        test_score=test_score,
        details={
            "image_size": image_size, "precision": precision,
            "feature_dim": int(train.features.shape[1]),
            "examples": {s: int(len(extracted[s].features)) for s in SPLITS},
            "feature_cache_hits": [s for s in SPLITS if extracted[s].from_cache],
            "final_fit": {"iterations": final.iterations, "converged": final.converged,
                          "objective": final.objective},
            "l2_convention": protocol.PROBE_PENALTY_CONVENTION,
        },
        timings={
            "wall_seconds": time.time() - started,
            "extraction_seconds": extraction_seconds,
            "search_seconds": search_seconds,
            "refit_seconds": refit_seconds,
            "images_per_second": (extracted_images / extraction_seconds) if extracted_images else None,
        },
    )
    record[predictions.RECORD_KEY] = predictions.write(
        experiment.run_dir(), predictions.Predictions.of(dataset_spec.metric, test.labels, test_scores))
    grid_edges.mark(record, {"l2": selection.at_grid_edge} if selection.at_grid_edge else {})
    record["tensorboard_dir"] = write_l2_path(os.path.join(experiment.run_dir(), TENSORBOARD_DIR),
                                              selection.trials, dataset_spec.metric)
    print(f"TensorBoard: tensorboard --logdir {record['tensorboard_dir']}")
    record["imagenet_top1"] = runs.imagenet_top1(experiment)
    record["skipped_images"] = getattr(dataset_spec, "skipped_images", 0)
    record["train_examples"] = int(len(train.features) + len(refit_val.features))  # the final fit's
    return results.finish(record, "ok",
                          None if final.converged else "final fit hit its iteration limit")


def _no_examples(split):
    """A split's features with no rows (the shape kept): nothing of it enters the final fit."""
    return split._replace(features=split.features[:0], labels=split.labels[:0])
def write_l2_path(log_dir: str, trials, metric: str) -> str:
    """The L2 search as TensorBoard scalars under `log_dir`: the validation score of each value
    tried and log10 of the value, both at step = the value's position in protocol.PROBE_L2_GRID
    (TensorBoard's steps are integers; the grid is log-spaced, so the axis reads as log10 l2)."""
    import numpy as np
    import tensorflow as tf

    grid = np.log10(np.asarray(protocol.PROBE_L2_GRID, dtype=np.float64))
    with tf.summary.create_file_writer(log_dir).as_default() as writer:
        for trial in trials:
            step = int(np.argmin(np.abs(grid - np.log10(trial.l2))))
            tf.summary.scalar(f"l2_search/validation_{metric}", trial.validation_score, step=step)
            tf.summary.scalar("l2_search/log10_l2", float(np.log10(trial.l2)), step=step)
        writer.flush()
    return log_dir
