"""Frozen penultimate features: streamed extraction and a content-addressed on-disk cache.

Extraction resizes each whole image to the backbone's input size (no augmentation), runs the
frozen backbone batch by batch inside one compiled function, and keeps only the float32 feature
rows: memory grows with the features, never with the images.

The cache key hashes everything that can change a feature value: backbone name and weights
fingerprint, image size and resize mode, input scaling, precision, dataset, split and the split's
definition (including its seed), and `FEATURE_CODE_VERSION`. An entry is built in a staging
folder and renamed into place only after its arrays and manifest are complete, so an interrupted
extraction never leaves an entry that a later run would trust; an entry damaged later is found by
its fingerprints when read and rebuilt (docs/DESIGN.md, Pitfalls guarded against).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import weakref
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from tfbench import cli, files, interruption

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

    from tfbench import preprocessing
    from tfbench.progress import Progress

    batches = preprocessing.pipeline(dataset, image_size, batch_size)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1

    forward = _forward_pass(model, image_size)
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
    with Progress(description, total if total > 0 else None, "img") as progress:
        for images, labels in batches:
            interruption.check(f"while extracting {description} (finished splits are cached)")
            rows, labels = step(images, labels)
            feature_rows.append(rows.numpy())
            label_rows.append(labels.numpy())
            progress.advance(len(feature_rows[-1]))
    if not feature_rows:
        raise ValueError("the dataset split is empty: nothing to extract")
    return Features(
        features=np.concatenate(feature_rows).astype(np.float32, copy=False),
        labels=np.concatenate(label_rows),
        seconds=time.perf_counter() - started,
        from_cache=False,
    )


# model -> {image size: its compiled forward pass}, kept while the model lives.
_FORWARD_PASSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward_pass(model, image_size: int):
    """The model's frozen forward pass, compiled once per model and image size for the life of the
    model: a network is traced once for all the splits it extracts (a trace of mobilenet_v2 costs
    as much CPU as a batch of 64 images), and once for every batch size, the partial last included."""
    import tensorflow as tf

    passes = _FORWARD_PASSES.setdefault(model, {})
    if image_size not in passes:
        traced = weakref.ref(model)  # a strong reference here would keep the model, and its entry, alive

        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
        def forward(images):
            return tf.cast(traced()(images, training=False), tf.float32)

        passes[image_size] = forward
    return passes[image_size]


def default_cache_dir() -> str:
    """Where features are cached unless --cache_dir says otherwise."""
    return os.path.join(files.cache_root(), "features")


class FeatureCache:
    """Folder of entries `<root>/<key[:2]>/<key>/{features,labels}.npy + manifest.json`.

    The manifest records each array's shape and fingerprint (size and digest). An entry that no
    longer matches it (a truncated or altered array, a missing file, a manifest that does not
    parse: a full disk, a bad copy, failing storage) is discarded with a one-line warning, so the
    caller extracts and stores it again instead of failing, or trusting it, on every later run.
    """

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))

    def entry_dir(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key)

    def load(self, key: str) -> Optional[Features]:
        """The entry for `key`, or None when it is absent or damaged (then it is also removed)."""
        folder = self.entry_dir(key)
        if not os.path.isdir(folder):
            return None
        arrays, problem = _read_entry(folder, key)
        if problem is not None:
            cli.warn(f"feature cache entry {folder} is damaged ({problem}); discarding it, "
                     "the features are extracted again")
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return Features(arrays["features"], arrays["labels"], 0.0, True)

    def store(self, key: str, components: Mapping[str, Any], features: Features) -> None:
        """Write into a staging folder, then rename: readers see a complete entry or none."""
        final = self.entry_dir(key)
        staging = files.make_staging_dir(os.path.dirname(final), prefix=f".{key[:12]}-")
        try:
            shapes, fingerprints = {}, {}
            for name in ARRAYS:
                array = getattr(features, name)
                path = os.path.join(staging, name + ".npy")
                files.write_atomic(path, lambda handle, array=array: np.save(handle, array, allow_pickle=False))
                shapes[name] = list(array.shape)
                fingerprints[name + ".npy"] = files.fingerprint(path)
            manifest = {"key": key, "components": json.loads(json.dumps(dict(components), default=str)),
                        "shapes": shapes, "files": fingerprints,
                        "extraction_seconds": features.seconds,
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            files.write_json_atomic(os.path.join(staging, MANIFEST), manifest)
            if os.path.exists(final):  # a stale or damaged entry: replace it
                shutil.rmtree(final)
            try:
                os.rename(staging, final)
            except OSError:
                if not os.path.isdir(final):
                    raise
                shutil.rmtree(staging)  # another process stored this entry meanwhile: keep theirs
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _read_entry(folder: str, key: str) -> Tuple[Dict[str, np.ndarray], Optional[str]]:
    """The arrays of the entry in `folder`, or what is wrong with it."""
    try:
        with open(os.path.join(folder, MANIFEST)) as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return {}, f"{MANIFEST} is missing"
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        return {}, f"{MANIFEST} is not valid JSON ({type(error).__name__})"
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return {}, f"{MANIFEST} does not describe this entry"
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("shapes"), dict):
        return {}, f"{MANIFEST} records no file fingerprints (written by an older tfbench)"
    arrays = {}
    for name in ARRAYS:
        path = os.path.join(folder, name + ".npy")
        problem = files.fingerprint_mismatch(path, manifest["files"].get(name + ".npy"))
        if problem is not None:
            return {}, problem
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            return {}, f"{name}.npy does not load ({error})"
        if list(arrays[name].shape) != manifest["shapes"].get(name):
            return {}, f"{name}.npy has shape {list(arrays[name].shape)}, {manifest['shapes'].get(name)} was written"
    return arrays, None


def split_definition(dataset_spec, train_subset=None) -> Dict[str, Any]:
    """The dataset spec as plain data (its fields define the split, seed included), and the
    training subset the split is drawn from (tfbench.datasets.TrainSubset) when there is one."""
    definition = json.loads(json.dumps(dataclasses.asdict(dataset_spec), default=str))
    if train_subset is not None:
        definition["train_subset"] = train_subset.to_dict()
    return definition
