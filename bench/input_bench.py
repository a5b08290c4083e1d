"""The probe's input side against the machine's decode rate, on a folder of real-size JPEGs.

On a GPU the probe's cost is decoding, resizing and feeding the images, so this bench asks how
close tfbench comes to what the machine's cores can decode. On generated photo-like JPEGs
(500 x 375, JPEG quality 90: the size of a typical ImageNet-style photo), images per second of:

  (a) bound      read + decode + resize alone, every core, no order kept, nothing else
  (b) pipeline   tfbench's evaluation pipeline (datasets.load of "folder:PATH" +
                 preprocessing.pipeline), batches iterated, no model
  (c) trivial    features.extract with a model whose forward pass is a global average pool
  (d) backbone   features.extract with a real backbone (random weights: speed does not depend on them)
  predict        a warm model.predict of the same backbone on the same pipeline's images

All five run in every round, in an order that alternates from round to round, every path warmed
up first; the goals are judged on the medians of the per-round ratios (the machine is shared, so
only ratios measured side by side mean anything): (b) and (c) >= 0.9 x (a), (d) >= 1.0 x predict.
CPU milliseconds per image (this process, all threads) are printed beside each rate: they are
less disturbed by other jobs and show extra work that wall time may hide.

Left out on purpose: tf.image.decode_and_crop_jpeg (evaluation resizes the whole image, nothing is
cropped) and decode_jpeg's DCT-domain `ratio` (it changes the pixels, and a 500 x 375 photo taken
to 224 px has no ratio >= 2 that stays above 224 px on both sides).

    python bench/input_bench.py                      # a few minutes on 2 shared cores
    python bench/input_bench.py --rounds 3 --images 256 --backbone_images 64   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402

PHOTO_HEIGHT, PHOTO_WIDTH = 375, 500
JPEG_QUALITY = 90
CLASSES = 4
GOALS = {"pipeline / bound": 0.9, "trivial / bound": 0.9, "backbone / predict": 1.0}


def photo_like(rng: np.random.Generator, height: int = PHOTO_HEIGHT, width: int = PHOTO_WIDTH) -> np.ndarray:
    """uint8 [H, W, 3]: smooth shading, mid-scale texture and sensor grain, so that the JPEG has
    the size and decoding cost of a real photo (a flat or pure-noise image has neither)."""
    from PIL import Image

    image = np.full((height, width, 3), 128.0, np.float32)
    for cells, amplitude in ((4, 70.0), (24, 35.0), (96, 18.0)):
        coarse = rng.uniform(-amplitude, amplitude, (max(2, cells * height // width), cells, 3)).astype(np.float32)
        for channel in range(3):
            image[..., channel] += np.asarray(Image.fromarray(coarse[..., channel], mode="F").resize(
                (width, height), Image.BILINEAR))
    image += 6.0 * rng.standard_normal((height, width, 3), dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_folder(root: str, count: int, seed: int = 0, distinct: int = 32) -> str:
    """A folder dataset (train/ and test/ with CLASSES classes) whose test split has `count` JPEGs:
    `distinct` photo-like images, each file one of them shifted (wrapped around) and maybe
    mirrored, so that every file differs and costs what a photo costs to decode."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [photo_like(rng) for _ in range(distinct)]
    for split, images in (("test", count), ("train", CLASSES)):
        for index in range(images):
            folder = os.path.join(root, split, f"class{index % CLASSES}")
            os.makedirs(folder, exist_ok=True)
            image = np.roll(photos[index % distinct], rng.integers(0, (PHOTO_HEIGHT, PHOTO_WIDTH)), axis=(0, 1))
            image = image[:, ::-1] if rng.random() < 0.5 else image
            Image.fromarray(image).save(os.path.join(folder, f"{index:06d}.jpg"), quality=JPEG_QUALITY)
    return root


class Paths:
    """The five measured paths over one folder, each a function that processes its images once."""

    def __init__(self, root: str, image_size: int, batch_size: int, backbone: str, backbone_images: int):
        import keras
        import tensorflow as tf

        from tfbench import backbones, datasets

        self.name = f"folder:{root}"
        self.image_size, self.batch_size = image_size, batch_size
        self.files = [str(path) for path in datasets.load_table(self.name, "test").columns["path"]]
        self.backbone_images = min(backbone_images, len(self.files))
        self.trivial = keras.Sequential([keras.Input((image_size, image_size, 3)),
                                         keras.layers.GlobalAveragePooling2D()], name="trivial")
        self.backbone = backbones.build(backbone, pretrained=False, image_size=image_size)
        self._tf = tf

    def images(self, path: str) -> int:
        return self.backbone_images if path in ("backbone", "predict") else len(self.files)

    def bound(self) -> None:
        tf, size = self._tf, self.image_size

        def decode_and_resize(path):
            return tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), [size, size])

        batches = (tf.data.Dataset.from_tensor_slices(self.files)
                   .map(decode_and_resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
                   .batch(self.batch_size).prefetch(tf.data.AUTOTUNE))
        for _ in batches:
            pass

    def _examples(self, count: int):
        from tfbench import datasets

        examples = datasets.load(self.name, "test")
        # take() only where needed: it would stand between the decode and the resize, which then
        # could not be fused (see preprocessing.pipeline).
        return examples if count == len(self.files) else examples.take(count)

    def pipeline(self) -> None:
        from tfbench import preprocessing

        for _ in preprocessing.pipeline(self._examples(len(self.files)), self.image_size, self.batch_size):
            pass

    def _extract(self, model, count: int) -> None:
        from tfbench import features

        with contextlib.redirect_stdout(io.StringIO()):  # the progress line
            features.extract(model, self._examples(count), image_size=self.image_size, batch_size=self.batch_size)

    def trivial_model(self) -> None:
        self._extract(self.trivial, len(self.files))

    def backbone_model(self) -> None:
        self._extract(self.backbone, self.backbone_images)

    def predict(self) -> None:
        from tfbench import preprocessing

        batches = preprocessing.pipeline(self._examples(self.backbone_images), self.image_size, self.batch_size)
        self.backbone.predict(batches.map(lambda images, labels: images), verbose=0)

    def all(self) -> Dict[str, Callable[[], None]]:
        return {"bound": self.bound, "pipeline": self.pipeline, "trivial": self.trivial_model,
                "backbone": self.backbone_model, "predict": self.predict}


def measure(paths: Paths, rounds: int):
    """Per path, per round: (images per wall second, CPU milliseconds per image)."""
    runs = paths.all()
    for run in runs.values():  # warm-up: every trace and every pipeline built once
        run()
    rates: Dict[str, List[float]] = {name: [] for name in runs}
    cpu: Dict[str, List[float]] = {name: [] for name in runs}
    order = list(runs)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            wall, used = time.perf_counter(), time.process_time()
            runs[name]()
            wall, used = time.perf_counter() - wall, time.process_time() - used
            rates[name].append(paths.images(name) / wall)
            cpu[name].append(1000.0 * used / paths.images(name))
        yield f"round {round_index + 1}: " + ", ".join(f"{name} {rates[name][-1]:.0f}" for name in order) + " img/s"
    yield from summary(rates, cpu)


def summary(rates: Dict[str, List[float]], cpu: Dict[str, List[float]]):
    for name in rates:
        yield f"{name:>9}: median {np.median(rates[name]):7.1f} img/s, {np.median(cpu[name]):6.2f} CPU ms/img"
    all_met = True
    for ratio, goal in GOALS.items():
        top, bottom = ratio.split(" / ")
        paired = np.array(rates[top]) / np.array(rates[bottom])
        low, median, high = np.percentile(paired, [25, 50, 75])
        met = median >= goal
        all_met &= met
        yield (f"{ratio:>19}: median {median:.2f}x (interquartile {low:.2f}-{high:.2f}x), "
               f"goal >= {goal:.1f}x: {'met' if met else 'NOT met'}")
    yield f"goals: {'all met' if all_met else 'NOT all met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="JPEGs for (a)-(c)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--backbone_images", type=int, default=64, help="the first images, for (d) and predict")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--folder", help="an existing folder dataset with a test/ split (default: generated)")
    args = parser.parse_args()

    made = None
    if args.folder is None:
        made = tempfile.mkdtemp(prefix="input-bench-")
        started = time.perf_counter()
        make_folder(made, args.images)
        print(f"generated {args.images} photo-like {PHOTO_WIDTH}x{PHOTO_HEIGHT} JPEGs (quality {JPEG_QUALITY}) "
              f"in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        paths = Paths(args.folder or made, args.image_size, args.batch_size, args.backbone, args.backbone_images)
        print(f"{len(paths.files)} images ({paths.backbone_images} for the backbone {args.backbone}), "
              f"{args.image_size}px, batch {args.batch_size}, {args.rounds} rounds, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        for line in measure(paths, args.rounds):
            print(line, flush=True)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    main()
