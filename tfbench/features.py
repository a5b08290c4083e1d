"""Frozen penultimate features: streamed extraction and a content-addressed on-disk cache.

Extraction resizes each whole image to the backbone's input size (no augmentation), runs the
frozen backbone batch by batch inside one compiled function, and keeps only the float32 feature
rows: memory grows with the features, never with the images.

The cache key hashes everything that can change a feature value: backbone name and weights
fingerprint, image size and resize mode, input scaling, precision, dataset, split and the split's
definition (including its seed), and `FEATURE_CODE_VERSION`. An entry is built in a temporary
folder and renamed into place only after its arrays and manifest are complete, so an interrupted
extraction never leaves an entry that a later run would trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Mapping, NamedTuple, Optional

import numpy as np

# Bump when extraction code changes its output (resize method, pooling, dtype handling...).
FEATURE_CODE_VERSION = 1
RESIZE_MODE = "whole-image bilinear resize, no crop"
MANIFEST = "manifest.json"
ARRAYS = ("features", "labels")


class Features(NamedTuple):
    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N] or int32 [N, C] (multi-label; -1 = difficult)
    seconds: float  # extraction wall time (0 when read from the cache)
    from_cache: bool


def cache_key(components: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the key components."""
    canonical = json.dumps(components, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_components(*, model: str, weights_fingerprint: str, image_size: int, input_scaling: str,
                   precision: str, dataset: str, split: str, split_definition: Mapping[str, Any]
                   ) -> Dict[str, Any]:
    """Every input that changes the features, in one place so none is forgotten."""
    return {
        "model": model,
        "weights": weights_fingerprint,
        "image_size": image_size,
        "resize": RESIZE_MODE,
        "input_scaling": input_scaling,
        "precision": precision,
        "dataset": dataset,
        "split": split,
        "split_definition": dict(split_definition),
        "feature_code_version": FEATURE_CODE_VERSION,
    }


def extract(model, dataset, *, image_size: int, batch_size: int, strategy=None,
            description: str = "features") -> Features:
    """Run `model` over every example of a `datasets.load` dataset, in order, keeping features only.

    With a multi-replica strategy each batch is split across replicas and the per-replica outputs
    are concatenated in replica order, which is the batch's own order.
    """
    import tensorflow as tf
    from tqdm import tqdm

    from tfbench import preprocessing

    batches = preprocessing.pipeline(dataset, image_size, batch_size, training=False)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
    def forward(images):  # one trace for every batch size, the partial last batch included
        return tf.cast(model(images, training=False), tf.float32)

    if replicas > 1:
        batches = strategy.experimental_distribute_dataset(batches)

        def step(images, labels):
            outputs = strategy.experimental_local_results(strategy.run(forward, args=(images,)))
            return tf.concat(outputs, 0), tf.concat(strategy.experimental_local_results(labels), 0)
    else:
        def step(images, labels):
            return forward(images), labels

    total = int(dataset.cardinality())
    started = time.perf_counter()
    feature_rows, label_rows = [], []
    with tqdm(total=total if total > 0 else None, desc=description, unit="img", leave=False) as bar:
        for images, labels in batches:
            rows, labels = step(images, labels)
            feature_rows.append(rows.numpy())
            label_rows.append(labels.numpy())
            bar.update(len(feature_rows[-1]))
    if not feature_rows:
        raise ValueError("the dataset split is empty: nothing to extract")
    return Features(
        features=np.concatenate(feature_rows).astype(np.float32, copy=False),
        labels=np.concatenate(label_rows),
        seconds=time.perf_counter() - started,
        from_cache=False,
    )


class FeatureCache:
    """Folder of entries `<root>/<key[:2]>/<key>/{features,labels}.npy + manifest.json`."""

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))

    def entry_dir(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key)

    def load(self, key: str) -> Optional[Features]:
        """The entry for `key`, or None when it is absent or does not verify against its manifest."""
        folder = self.entry_dir(key)
        manifest_path = os.path.join(folder, MANIFEST)
        if not os.path.exists(manifest_path):
            return None
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        if manifest.get("key") != key:
            return None
        arrays = {}
        for name in ARRAYS:
            path = os.path.join(folder, name + ".npy")
            if not os.path.exists(path):
                return None
            arrays[name] = np.load(path, allow_pickle=False)
            if list(arrays[name].shape) != manifest["shapes"][name]:
                return None
        return Features(arrays["features"], arrays["labels"], 0.0, True)

    def store(self, key: str, components: Mapping[str, Any], features: Features) -> None:
        """Write into a temporary folder, then rename: readers see a complete entry or none."""
        final = self.entry_dir(key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        staging = tempfile.mkdtemp(dir=os.path.dirname(final), prefix=f".{key[:12]}-", suffix=".tmp")
        try:
            shapes = {}
            for name in ARRAYS:
                array = getattr(features, name)
                np.save(os.path.join(staging, name + ".npy"), array, allow_pickle=False)
                shapes[name] = list(array.shape)
            manifest = {"key": key, "components": dict(components), "shapes": shapes,
                        "extraction_seconds": features.seconds,
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(os.path.join(staging, MANIFEST), "w") as handle:
                json.dump(manifest, handle, indent=2, sort_keys=True, default=str)
                handle.flush()
                os.fsync(handle.fileno())
            if os.path.exists(final):  # a stale or unverifiable entry: replace it
                shutil.rmtree(final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def split_definition(dataset_spec) -> Dict[str, Any]:
    """The dataset spec as plain data (its fields define the split, seed included)."""
    return json.loads(json.dumps(dataclasses.asdict(dataset_spec), default=str))
