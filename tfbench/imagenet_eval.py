"""A backbone's ImageNet top-1, measured with tfbench's own evaluation preprocessing, and kept.

    python -m tfbench.imagenet_eval --model=NAME [--split=imagenet2012|imagenet_v2]
        [--data_dir=DIR] [--max_examples=N] [--batch_size=B] [--cache_dir=DIR]
    python -m tfbench.imagenet_eval --split=imagenet2012 --prepare [--data_dir=DIR]

Why: the paper's x axis is ImageNet top-1, and the figures model cards publish come from
different evaluation pipelines (crop fraction, resize filter); those differences alone move top-1
by up to a point, a visible share of the ~15 points over which r is computed. Measured here,
every network sees the same images the probe sees: the whole image resized to its native size by
tfbench.preprocessing's evaluation transform, then the network's own input scaling and its own
ImageNet classifier (tfbench.backbones.build_imagenet_classifier). Backbones without a classifier
(TF-Hub feature vectors, .keras feature models) cannot be measured; their top-1 is given instead.

The store: one JSON file per (evaluation set, model, weights fingerprint) under
<cache>/imagenet_top1/ (<cache> = --cache_dir, $TFBENCH_CACHE or ~/.cache/tfbench), holding top-1,
the example count, the evaluation set, the preprocessing, the date, the library versions and the
weights fingerprint. `measured_top1(model)` returns the entry of the weights the model has now,
so a value measured on other weights is never used. Only measurements of a whole evaluation set
are stored: --max_examples measures a part, printed but not stored, so that the report never
takes a subsample for ImageNet top-1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any, Callable, Dict, Optional

from tfbench import files

DEFAULT_SPLIT = "imagenet2012"
DEFAULT_BATCH_SIZE = 32
STORE_DIR = "imagenet_top1"
PROGRESS_SECONDS = 30.0


def store_path(model: str, weights_fingerprint: str, split: str = DEFAULT_SPLIT,
               cache_dir: Optional[str] = None) -> str:
    """The store file of one model's weights on one evaluation set."""
    key = hashlib.sha256(json.dumps([model, weights_fingerprint]).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(model.rstrip("/")))[:64]
    return os.path.join(cache_dir or files.cache_root(), STORE_DIR, split, f"{readable}-{key}.json")


def measured_top1(model: str, split: str = DEFAULT_SPLIT,
                  cache_dir: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The stored measurement of `model`'s current weights on `split` (a dict with "top1", a
    fraction, "examples", "preprocessing", "date", ...), or None when there is none.

    None also when the model's weights are not on this machine (their fingerprint, and so which
    measurement applies, cannot be known) or when the stored file is unreadable.
    """
    from tfbench import backbones
    from tfbench.registry import UnknownNameError

    try:
        fingerprint = backbones.weights_fingerprint(model, pretrained=True)
    except (backbones.WeightsUnavailableError, backbones.ModelNotFoundError, UnknownNameError):
        return None  # not on this machine (a report read elsewhere, a models file not loaded)
    path = store_path(model, fingerprint, split, cache_dir)
    try:
        with open(path, encoding="utf-8") as handle:
            entry = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # damaged: as if absent; measuring again rewrites it
        return None
    wanted = {"model": model, "split": split, "weights_fingerprint": fingerprint}
    if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in wanted.items()):
        return None
    return entry


def measure(model: str, split: str = DEFAULT_SPLIT, data_dir: Optional[str] = None,
            max_examples: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE,
            progress: Callable[[str], None] = print) -> Dict[str, Any]:
    """Top-1 of `model`'s own ImageNet classifier on evaluation set `split` (its first
    max_examples examples in file order, if given), as the dict the store keeps.

    Raises DatasetNotPreparedError, UnknownNameError, NoImageNetClassifierError or
    WeightsUnavailableError before any image is read.
    """
    import tensorflow as tf

    from tfbench import backbones, preprocessing, results
    from tfbench.datasets import imagenet

    evaluation = imagenet.spec(split)
    builder = imagenet.prepared_builder(split, data_dir)
    split_examples = builder.info.splits[evaluation.test_split].num_examples
    classifier = backbones.build_imagenet_classifier(model)
    fingerprint = backbones.weights_fingerprint(model, pretrained=True)
    image_size = int(classifier.input_shape[1])
    examples = imagenet.load(split, data_dir)
    wanted = split_examples if max_examples is None else min(max_examples, split_examples)
    batches = preprocessing.pipeline(examples.take(wanted), image_size, batch_size)
    predict = tf.function(lambda images: tf.argmax(classifier(images, training=False), axis=-1),
                          reduce_retracing=True)
    correct = seen = 0
    started = last_report = time.monotonic()
    for images, labels in batches:
        correct += int(tf.reduce_sum(tf.cast(predict(images) == labels, tf.int64)))
        seen += int(labels.shape[0])
        if time.monotonic() - last_report > PROGRESS_SECONDS:
            last_report = time.monotonic()
            rate = seen / (last_report - started)
            progress(f"{model} on {split}: {seen:,} / {wanted:,} images, top-1 so far "
                     f"{correct / seen:.4f}, {rate:.1f} images/s, "
                     f"{(wanted - seen) / rate / 60:.0f} min left")
    return {
        "model": model,
        "split": split,
        "tfds": {"dataset": evaluation.tfds_name, "version": str(builder.info.version),
                 "split": evaluation.test_split},
        "top1": correct / seen if seen else None,
        "correct": correct,
        "examples": seen,
        "split_examples": split_examples,
        "complete": seen == split_examples,
        "image_size": image_size,
        "preprocessing": (f"tfbench evaluation transform: {preprocessing.eval_description(image_size)}; "
                          "then the network's own input scaling and ImageNet classifier"),
        "weights_fingerprint": fingerprint,
        "date": results.now(),
        "versions": results.versions(),
    }


def describe(measurement: Dict[str, Any]) -> str:
    """Where a stored top-1 comes from, as records and reports say it."""
    return (f"measured by tfbench.imagenet_eval on {measurement['split']} "
            f"({measurement['examples']:,} images, {measurement['date'][:10]}): "
            f"{measurement['preprocessing']}")


def store(measurement: Dict[str, Any], cache_dir: Optional[str] = None) -> str:
    """Write a whole-set measurement to the store; returns its path."""
    if not measurement["complete"]:
        raise ValueError(f"only whole-set measurements are stored; this one read "
                         f"{measurement['examples']} of {measurement['split_examples']} examples")
    path = store_path(measurement["model"], measurement["weights_fingerprint"],
                      measurement["split"], cache_dir)
    files.write_json_atomic(path, measurement)
    return path


def main() -> None:
    from absl import flags

    from tfbench import cli

    flags.DEFINE_string("model", None, "The backbone: a registered name with an ImageNet classifier "
                        "(Keras Applications, EfficientNet-Lite).")
    flags.DEFINE_string("split", DEFAULT_SPLIT, "Evaluation set: imagenet2012 (TFDS imagenet2012 "
                        "validation, 50,000 images) or imagenet_v2 (matched-frequency, 10,000).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS_DATA_DIR or "
                        "~/tensorflow_datasets).")
    flags.DEFINE_integer("max_examples", None, "Measure only the first N images (printed, not "
                         "stored).", lower_bound=1)
    flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Images per batch.", lower_bound=1)
    flags.DEFINE_string("cache_dir", None, "Root of the store (default: $TFBENCH_CACHE or "
                        "~/.cache/tfbench).")
    flags.DEFINE_bool("prepare", False, "Prepare --split's TFDS files (imagenet2012: from "
                      "ILSVRC2012_img_val.tar in <data_dir>/downloads/manual) and exit.")
    FLAGS = flags.FLAGS

    def run():
        from tfbench import backbones
        from tfbench.datasets import imagenet
        from tfbench.registry import UnknownNameError

        if FLAGS.prepare:
            try:
                print(f"prepared: {imagenet.prepare(FLAGS.split, FLAGS.data_dir)}")
            except (UnknownNameError, imagenet.DatasetNotPreparedError) as error:
                cli.fail(str(error))
            return
        if not FLAGS.model:
            cli.fail("--model is required: a registered name (python -m tfbench.probe --model=list "
                     "lists them)")
        try:
            measurement = measure(FLAGS.model, FLAGS.split, FLAGS.data_dir, FLAGS.max_examples,
                                  FLAGS.batch_size)
        except (UnknownNameError, FileNotFoundError, backbones.NoImageNetClassifierError,
                backbones.WeightsUnavailableError, imagenet.DatasetNotPreparedError) as error:
            cli.fail(str(error))
        print(f"{FLAGS.model} on {FLAGS.split}: top-1 {measurement['top1']:.4f} "
              f"({measurement['correct']:,} of {measurement['examples']:,} images; "
              f"{measurement['preprocessing']})")
        if measurement["complete"]:
            print(f"stored: {store(measurement, FLAGS.cache_dir)}")
        else:
            print(f"not stored: {measurement['examples']:,} of {measurement['split_examples']:,} "
                  "images (only whole-set measurements are stored)")

    cli.run_app(run)


if __name__ == "__main__":
    main()
