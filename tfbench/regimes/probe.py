"""The linear-probe regime: frozen penultimate features + L2-regularised logistic regression.

Extracts features of train, val and test once (cached, see tfbench.features), chooses the L2 penalty
on validation (`--l2_search`), refits on train+val with it and reports the dataset's test metric.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from tfbench import interruption, protocol

SPLITS = ("train", "val", "test")


def default_cache_dir() -> str:
    from tfbench import files

    return os.path.join(files.cache_root(), "features")


def feature_components(experiment, split: str, precision: str) -> Dict[str, Any]:
    """The feature-cache key inputs of one split of this experiment."""
    from tfbench import backbones, features

    backbone_spec = backbones.spec(experiment.model)
    pretrained = experiment.settings.init == "imagenet"
    weights = backbones.weights_fingerprint(experiment.model, pretrained=pretrained)
    return features.key_components(
        model=experiment.model,
        weights_fingerprint=weights if pretrained else f"{weights}:seed{experiment.seed}",
        image_size=experiment.image_size or backbone_spec.image_size,
        input_scaling=backbone_spec.input_scaling, precision=precision,
        dataset=experiment.dataset, split=split,
        split_definition=features.split_definition(experiment.dataset_spec(), experiment.train_subset(split)))


def run(experiment, runtime) -> Dict[str, Any]:
    """Run the probe protocol for one experiment and return its finished record."""

    from tfbench import backbones, devices, features, linear, metrics, predictions, results, runs, tuning

    started = time.time()
    backbone_spec = backbones.spec(experiment.model)
    dataset_spec = experiment.dataset_spec()
    image_size = experiment.image_size or backbone_spec.image_size
    precision = devices.resolve_precision(experiment.precision)
    record = results.new_record(experiment, metric=dataset_spec.metric, started_at=results.now())
    cache = features.FeatureCache(experiment.cache_dir or default_cache_dir())
    strategy = None
    model = None
    extracted: Dict[str, features.Features] = {}
    for split in SPLITS:
        components = feature_components(experiment, split, precision)
        key = features.cache_key(components)
        cached = cache.load(key)
        if cached is not None:
            print(f"features: {split} from cache ({len(cached.features)} examples) {cache.entry_dir(key)}")
            extracted[split] = cached
            continue
        if model is None:  # built only when some split misses the cache
            import keras

            strategy = devices.make_strategy(runtime.strategy)
            keras.utils.set_random_seed(experiment.seed)  # the random init of --init=random
            with devices.precision_policy(precision), strategy.scope():
                model = backbones.build(experiment.model, image_size=image_size,
                                        pretrained=experiment.settings.init == "imagenet")
        data = experiment.load(split)
        extracted[split] = features.extract(
            model, data, image_size=image_size, batch_size=experiment.batch_size,
            strategy=strategy, description=f"features {split}")
        cache.store(key, components, extracted[split])

    interruption.check("after extracting features (they are cached)")
    train, val, test = (extracted[s] for s in SPLITS)
    search_started = time.time()
    print(f"probe: choosing L2 on validation ({experiment.settings.l2_search} search, "
          f"{len(train.features)} train x {train.features.shape[1]} features)")
    selection = linear.select_l2(train.features, train.labels, val.features, val.labels,
                                 metric=dataset_spec.metric, multi_label=dataset_spec.multi_label,
                                 search=experiment.settings.l2_search)
    search_seconds = time.time() - search_started
    refit_started = time.time()
    final = linear.refit(train.features, train.labels, val.features, val.labels, selection)
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
    tuning.mark_grid_edges(record, {"l2": selection.at_grid_edge} if selection.at_grid_edge else {})
    record["imagenet_top1"] = runs.imagenet_top1(experiment)
    record["skipped_images"] = getattr(dataset_spec, "skipped_images", 0)
    return results.finish(record, "ok",
                          None if final.converged else "final fit hit its iteration limit")
