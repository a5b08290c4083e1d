"""What a frozen network outputs on a run's splits, from the feature cache or extracted on a miss.

Shared by the probe and the estimate regime, so that either reuses the other's features: the
penultimate features of the run's network (ImageNet weights, or the random initialisation of the
probe's --init=random), and, for LEEP, the class probabilities of the network's own ImageNet
classifier at its native size. Each split is one content-addressed cache entry
(tfbench.features); the network is built only when some split misses the cache.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Sequence

FEATURES = "features"
IMAGENET_PROBABILITIES = "imagenet_probabilities"


def default_cache_dir() -> str:
    from tfbench import files

    return os.path.join(files.cache_root(), "features")


def pretrained(experiment) -> bool:
    """ImageNet weights, unless the run's settings ask for a random initialisation."""
    return getattr(experiment.settings, "init", "imagenet") == "imagenet"


def cache_components(experiment, split: str, precision: str, outputs: str = FEATURES) -> Dict[str, Any]:
    """The cache-key inputs of one split's `outputs`. Features keep the key they always had; the
    ImageNet probabilities say so and are taken at the network's native size."""
    from tfbench import backbones, features

    backbone_spec = backbones.spec(experiment.model)
    weights = backbones.weights_fingerprint(experiment.model, pretrained=pretrained(experiment))
    native = outputs == IMAGENET_PROBABILITIES
    components = features.key_components(
        model=experiment.model,
        weights_fingerprint=weights if pretrained(experiment) else f"{weights}:seed{experiment.seed}",
        image_size=backbone_spec.image_size if native else experiment.image_size or backbone_spec.image_size,
        input_scaling=backbone_spec.input_scaling, precision=precision,
        dataset=experiment.dataset, split=split,
        split_definition=features.split_definition(experiment.dataset_spec(), experiment.train_subset(split)))
    if native:
        components["outputs"] = outputs
    return components


def outputs_of(experiment, runtime, splits: Sequence[str], precision: str,
               outputs: str = FEATURES) -> Dict[str, Any]:
    """split -> tfbench.features.Features of `outputs` (penultimate features, or ImageNet class
    probabilities; the latter raise backbones.NoImageNetClassifierError for a network without
    a classifier before anything is built)."""
    from tfbench import backbones, devices, features

    cache = features.FeatureCache(experiment.cache_dir or default_cache_dir())
    strategy = model = None
    found: Dict[str, features.Features] = {}
    for split in splits:
        components = cache_components(experiment, split, precision, outputs)
        key = features.cache_key(components)
        cached = cache.load(key)
        if cached is not None:
            print(f"{outputs}: {split} from cache ({len(cached.features)} examples) {cache.entry_dir(key)}")
            found[split] = cached
            continue
        if model is None:  # built only when some split misses the cache
            import keras

            strategy = devices.make_strategy(runtime.strategy)
            keras.utils.set_random_seed(experiment.seed)  # the random init of --init=random
            with devices.precision_policy(precision), strategy.scope():
                model = (backbones.build_imagenet_classifier(experiment.model) if outputs == IMAGENET_PROBABILITIES
                         else backbones.build(experiment.model, image_size=components["image_size"],
                                              pretrained=pretrained(experiment)))
        found[split] = features.extract(
            model, experiment.load(split), image_size=components["image_size"],
            batch_size=experiment.batch_size, strategy=strategy, description=f"{outputs} {split}")
        cache.store(key, components, found[split])
    return found
