"""Dataset registry and splits, checked on the materialised examples (ids and image contents).

References are independent of tfbench: scikit-learn's arrays, the Fashion-MNIST IDX files read
with a fixed header offset, PNGs this file writes, the paper's dataset table typed in by hand, and
the VOC devkit rule applied with numpy.
"""

import collections
import contextlib
import dataclasses
import gzip
import hashlib
import os
import shutil
import time
from unittest import mock

import keras
import numpy as np
import pytest
import sklearn.datasets
import tensorflow_datasets as tfds
from PIL import Image

from tfbench import datasets
from tfbench.datasets import offline, splits, tfds_source
from tfbench.registry import UnknownNameError

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
HELD_OUT = 0.2

# The paper's datasets (docs/DESIGN.md, The protocol and its sources): classes, metric, and whether
# the official validation split is used.
PAPER_TABLE = {
    "food101": (101, "top1", False),
    "cifar10": (10, "top1", False),
    "cifar100": (100, "top1", False),
    "birdsnap": (500, "top1", False),
    "sun397": (397, "top1", False),
    "stanford_cars": (196, "top1", False),
    "fgvc_aircraft": (100, "mean_per_class", True),
    "voc2007": (20, "map11", True),
    "dtd": (47, "top1", True),
    "oxford_pets": (37, "mean_per_class", False),
    "caltech101": (102, "mean_per_class", False),
    "oxford_flowers102": (102, "mean_per_class", True),
}
TFDS_BACKED = [name for name in PAPER_TABLE]


@dataclasses.dataclass
class Materialised:
    ids: list
    labels: np.ndarray
    hashes: list
    images: list


def content_hash(image: np.ndarray) -> str:
    return hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()


def materialise(dataset, batch_size=None, keep_images=True) -> Materialised:
    """Every example of a dict dataset as numpy (batched reading for big, fixed-size images)."""
    ids, labels, hashes, images = [], [], [], []
    batches = dataset.batch(batch_size) if batch_size else dataset.map(
        lambda example: {key: value[None] for key, value in example.items()}
    )
    for batch in batches.as_numpy_iterator():
        ids += [value.decode() for value in batch["id"]]
        labels += list(batch["label"])
        hashes += [content_hash(image) for image in batch["image"]]
        if keep_images:
            images += list(batch["image"])
    return Materialised(ids, np.array(labels), hashes, images)


def load_all(name, batch_size=None, keep_images=True):
    """Every split, materialised; each split's declared cardinality must be its true size."""
    parts = {}
    for split in datasets.SPLITS:
        dataset = datasets.load(name, split)
        parts[split] = materialise(dataset, batch_size, keep_images)
        assert dataset.cardinality().numpy() == len(parts[split].ids), split
    return parts


def assert_partition(parts, source_hashes):
    """train / val / test are disjoint by id and together hold each source image exactly once;
    trainval is exactly train ∪ val."""
    train, val, trainval, test = (parts[split] for split in ("train", "val", "trainval", "test"))
    for split, part in parts.items():
        assert len(set(part.ids)) == len(part.ids), f"duplicate ids within {split}"
    assert not set(train.ids) & set(val.ids)
    assert not set(train.ids) & set(test.ids)
    assert not set(val.ids) & set(test.ids)
    assert set(trainval.ids) == set(train.ids) | set(val.ids)
    assert len(trainval.ids) == len(train.ids) + len(val.ids)
    assert collections.Counter(trainval.hashes) == collections.Counter(train.hashes + val.hashes)
    assert collections.Counter(train.hashes + val.hashes + test.hashes) == collections.Counter(source_hashes)


def assert_class_balanced(held, pool_labels, num_classes, fraction=HELD_OUT):
    """Every class contributes `fraction` of its pool examples, to within one example."""
    held_counts = np.bincount(held, minlength=num_classes)
    pool_counts = np.bincount(pool_labels, minlength=num_classes)
    for label in range(num_classes):
        if pool_counts[label] >= 2:
            assert 1 <= held_counts[label] <= pool_counts[label] - 1
        assert abs(held_counts[label] - fraction * pool_counts[label]) <= 1.0, label


# ---------------------------------------------------------------- registry


def test_paper_datasets_match_the_design_table():
    for name, (num_classes, metric, official_val) in PAPER_TABLE.items():
        spec = datasets.spec(name)
        assert (spec.num_classes, spec.metric, spec.multi_label) == (num_classes, metric, name == "voc2007")
        assert (spec.val_split is not None) == official_val, name
        if not official_val:
            assert spec.val_fraction == HELD_OUT
    assert set(PAPER_TABLE) | {"digits", "fashion_mnist", "fashion_mnist_mini"} == set(datasets.names())


def test_unknown_name_and_bad_split_fail_in_one_line_with_choices():
    with pytest.raises(UnknownNameError) as unknown:
        datasets.load("cifar11", "train")
    assert "cifar11" in str(unknown.value) and "cifar10" in str(unknown.value)
    assert "\n" not in str(unknown.value)
    with pytest.raises(ValueError) as bad_split:
        datasets.load("digits", "validation")
    message = str(bad_split.value)
    assert "'validation'" in message and "\n" not in message
    assert all(split in message for split in ("train", "val", "trainval", "test"))


def test_spec_rejects_an_unknown_metric():
    with pytest.raises(ValueError, match="top5"):
        datasets.DatasetSpec(name="x", num_classes=2, metric="top5", multi_label=False, source="tfds")


def test_spec_needs_exactly_one_test_rule():
    with pytest.raises(ValueError, match="exactly one"):
        datasets.DatasetSpec(name="x", num_classes=2, metric="top1", multi_label=False, source="tfds",
                             trainval_per_class=30)  # and the official test split
    with pytest.raises(ValueError, match="exactly one"):
        datasets.DatasetSpec(name="x", num_classes=2, metric="top1", multi_label=False, source="tfds",
                             test_split=None)


def test_caltech_style_draw_takes_exactly_k_per_class_whatever_the_order():
    class_sizes = {0: 31, 1: 45, 2: 30, 3: 12}
    ids = np.array([f"c{label}/image_{n:04d}.jpg" for label, size in class_sizes.items() for n in range(size)])
    labels = np.array([label for label, size in class_sizes.items() for _ in range(size)])
    assignment = splits.assign(ids, labels, val_fraction=0.2, seed=0, trainval_per_class=30)
    for label, size in class_sizes.items():
        mine = assignment[labels == label]
        trainval = min(30, size)
        assert np.sum(mine == "test") == size - trainval
        assert np.sum(mine == "val") == round(0.2 * trainval)
        assert np.sum(mine == "train") == trainval - round(0.2 * trainval)
    order = np.random.default_rng(7).permutation(len(ids))
    shuffled = splits.assign(ids[order], labels[order], val_fraction=0.2, seed=0, trainval_per_class=30)
    assert dict(zip(ids[order], shuffled)) == dict(zip(ids, assignment))
    other_seed = splits.assign(ids, labels, val_fraction=0.2, seed=1, trainval_per_class=30)
    assert (other_seed != assignment).any()


# ---------------------------------------------------------------- digits


def test_digits_splits_partition_the_sklearn_images():
    reference = sklearn.datasets.load_digits()
    reference_images = np.round(reference.images * 255 / 16).astype(np.uint8)
    reference_images = np.repeat(reference_images[..., None], 3, axis=-1)
    parts = load_all("digits")
    assert_partition(parts, [content_hash(image) for image in reference_images])
    # Each example keeps its own label, image and 3 identical channels.
    for part in parts.values():
        for example_id, label, image in zip(part.ids, part.labels, part.images):
            index = int(example_id.split("/")[1])
            assert label == reference.target[index]
            np.testing.assert_array_equal(image, reference_images[index])
            assert image.dtype == np.uint8 and image.shape == (8, 8, 3)
    assert parts["train"].labels.dtype == np.int64
    assert set(parts["trainval"].labels) | set(parts["test"].labels) == set(range(10))
    # Test is a balanced 20% of everything, val a balanced 20% of the rest.
    assert_class_balanced(parts["test"].labels, reference.target, 10)
    assert_class_balanced(parts["val"].labels, parts["trainval"].labels, 10)


def test_digits_split_is_stable_across_calls_and_global_seeds():
    first = materialise(datasets.load("digits", "val"))
    keras.utils.set_random_seed(12345)
    second = materialise(datasets.load("digits", "val"))
    assert first.ids == second.ids and first.hashes == second.hashes


# ---------------------------------------------------------------- fashion_mnist


def _raw_idx(name, header_bytes):
    with gzip.open(os.path.join(FASHION_DIR, name), "rb") as stream:
        return np.frombuffer(stream.read(), dtype=np.uint8, offset=header_bytes)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_official_splits_held_out_val_and_rgb():
    train_images = _raw_idx("train-images-idx3-ubyte.gz", 16).reshape(60000, 28, 28)
    train_labels = _raw_idx("train-labels-idx1-ubyte.gz", 8)
    test_images = _raw_idx("t10k-images-idx3-ubyte.gz", 16).reshape(10000, 28, 28)
    rgb = lambda images: np.repeat(images[..., None], 3, axis=-1)  # noqa: E731
    parts = load_all("fashion_mnist", batch_size=8192, keep_images=False)
    source = rgb(np.concatenate([train_images, test_images]))
    assert_partition(parts, [content_hash(image) for image in source])
    assert len(parts["trainval"].ids) == 60000 and len(parts["test"].ids) == 10000
    assert_class_balanced(parts["val"].labels, train_labels, 10)
    # Grayscale became three identical channels of the original pixels, with the right label.
    val = materialise(datasets.load("fashion_mnist", "val").take(500), batch_size=500)
    assert val.ids == parts["val"].ids[:500]
    for example_id, label, image in zip(val.ids, val.labels, val.images):
        index = int(example_id.split("/")[1])
        np.testing.assert_array_equal(image, rgb(train_images[index]))
        assert label == train_labels[index]


def test_idx_reader_checks_the_magic_number(tmp_path):
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(bytes([0, 0, 0x0D, 1, 0, 0, 0, 2, 7, 9]))  # type 0x0D (float), not ubyte
    with pytest.raises(ValueError, match="magic number"):
        offline.read_idx(str(path), ndim=1)


def test_fashion_mnist_without_files_or_tfds_says_how_to_install(tmp_path):
    spec = dataclasses.replace(datasets.spec("fashion_mnist"), path=str(tmp_path / "absent"))
    start = time.monotonic()
    with pytest.raises(datasets.DatasetNotPreparedError) as error:
        offline.load_fashion_mnist(spec, "train", str(tmp_path / "tfds"))
    assert time.monotonic() - start < 5
    assert "apt-get install dataset-fashion-mnist" in str(error.value)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- folder:PATH

CLASSES = ("zebra", "ant", "moth")  # sorted: ant=0, moth=1, zebra=2


def _write_images(folder, class_name, count, start, extension=".png"):
    os.makedirs(folder, exist_ok=True)
    for index in range(start, start + count):
        pixels = np.full((6 + index % 3, 5, 3), index, dtype=np.uint8)  # unique content per image
        pixels[0, 0] = (CLASSES.index(class_name), 0, 0)
        Image.fromarray(pixels).save(os.path.join(folder, f"{index:03d}{extension}"))


def _check_folder_labels(parts):
    for part in parts.values():
        for example_id, label, image in zip(part.ids, part.labels, part.images):
            class_name = example_id.split(os.sep)[-2]
            assert label == sorted(CLASSES).index(class_name)
            assert image.dtype == np.uint8 and image.shape[-1] == 3


def test_folder_without_split_folders_is_split_by_class(tmp_path):
    hashes = []
    for offset, name in enumerate(CLASSES):
        _write_images(tmp_path / name, name, 10, start=offset * 10)
    for image_file in sorted(tmp_path.rglob("*.png")):
        hashes.append(content_hash(np.asarray(Image.open(image_file).convert("RGB"))))
    name = f"folder:{tmp_path}"
    assert datasets.spec(name).num_classes == 3
    parts = load_all(name)
    assert_partition(parts, hashes)
    _check_folder_labels(parts)
    assert_class_balanced(parts["test"].labels, np.repeat([0, 1, 2], 10), 3)
    assert_class_balanced(parts["val"].labels, parts["trainval"].labels, 3)
    assert materialise(datasets.load(name, "val")).ids == parts["val"].ids


@pytest.mark.parametrize("with_val", [True, False])
def test_folder_with_split_folders(tmp_path, with_val):
    counts = {"train": 10, "val": 3, "test": 4} if with_val else {"train": 10, "test": 4}
    start = 0
    for split, count in counts.items():
        for name in CLASSES:
            _write_images(tmp_path / split / name, name, count, start)
            start += count
    sources = {split: [str(p.relative_to(tmp_path)) for p in sorted((tmp_path / split).rglob("*.png"))]
               for split in counts}
    all_hashes = [content_hash(np.asarray(Image.open(path).convert("RGB")))
                  for path in tmp_path.rglob("*.png")]
    parts = load_all(f"folder:{tmp_path}")
    assert_partition(parts, all_hashes)
    _check_folder_labels(parts)
    assert sorted(parts["test"].ids) == sorted(sources["test"])
    if with_val:
        assert sorted(parts["val"].ids) == sorted(sources["val"])
    else:
        assert set(parts["val"].ids) <= set(sources["train"])
        assert_class_balanced(parts["val"].labels, parts["trainval"].labels, 3)


def test_folder_decodes_grayscale_jpeg_bmp_and_gif_to_rgb(tmp_path):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    Image.fromarray(gray, mode="L").save(tmp_path / "a.png")
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "b.bmp")
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "c.jpg")
    Image.fromarray(gray, mode="L").save(tmp_path / "d.gif")
    for name in ("one", "two"):
        os.makedirs(tmp_path / "data" / name)
        for image_file in ("a.png", "b.bmp", "c.jpg", "d.gif"):
            shutil.copy(tmp_path / image_file, tmp_path / "data" / name / image_file)
    examples = materialise(datasets.load(f"folder:{tmp_path / 'data'}", "trainval"))
    examples_test = materialise(datasets.load(f"folder:{tmp_path / 'data'}", "test"))
    assert len(examples.ids) + len(examples_test.ids) == 8
    for example_id, image in zip(examples.ids + examples_test.ids, examples.images + examples_test.images):
        assert image.shape == (5, 6, 3)
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        tolerance = 12 if example_id.endswith(".jpg") else 0  # JPEG is lossy
        assert np.abs(image[..., 0].astype(int) - gray).max() <= tolerance


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.spec(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="no class sub-folders"):
        datasets.spec(f"folder:{tmp_path}")
    _write_images(tmp_path / "cats", "ant", 2, 0)
    os.makedirs(tmp_path / "dogs")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="dogs.*has no images"):
        datasets.load(f"folder:{tmp_path}", "train")


def _png(path, pixels, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels, **kwargs).save(path)


def _good_images(folder, count, start=0):
    for index in range(start, start + count):
        _png(os.path.join(folder, f"{index:03d}.png"), np.full((4, 5, 3), index * 7 % 256, np.uint8))


def _bad_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _half_a_jpeg(path):
    _png(path, np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    os.truncate(path, os.path.getsize(path) // 2)


def _folder_error(name, **kwargs):
    with pytest.raises(datasets.FolderDatasetError) as error:
        datasets.spec(name, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_every_folder_problem_is_named_in_one_error_before_loading(tmp_path):
    """An empty class folder and three unreadable images, found by one check."""
    _good_images(tmp_path / "cats", 3)
    _half_a_jpeg(str(tmp_path / "cats" / "half.jpg"))
    _bad_file(tmp_path / "cats" / "empty.png", b"")
    _bad_file(tmp_path / "birds" / "deep" / "text.jpg", b"not an image at all")
    _good_images(tmp_path / "birds", 2)
    os.makedirs(tmp_path / "dogs")
    (tmp_path / "dogs" / "README.txt").write_text("no images here")
    message = _folder_error(f"folder:{tmp_path}")
    assert "4 problem(s)" in message
    for named in ("'dogs' has no images", "'cats/half.jpg' does not decode", "'cats/empty.png' is empty",
                  f"'{os.path.join('birds', 'deep', 'text.jpg')}' does not decode", "--skip_bad_images"):
        assert named in message, message
    for index in range(4):  # more problems than are listed: the rest are counted
        _bad_file(tmp_path / "birds" / f"x{index}.gif", b"GIF89a")
    message = _folder_error(f"folder:{tmp_path}")
    assert "8 problem(s)" in message and message.endswith("and 3 more (fix or remove the unreadable "
                                                          "images, or leave them out with --skip_bad_images)")


@pytest.mark.parametrize("layout, expected", [
    ({"train/a": 2, "val/a": 2}, "has split folders train, val but no test/"),
    ({"train/a": 2, "test/a": 1, "test/b": 1}, "'test' has class folders b that 'train' lacks"),
    ({"train/a": 2, "test": 0}, "split folder 'test' has no class sub-folders"),
    ({"train/a": 2, "cats": 1}, "mixes split folders (train) and class folders (cats)"),
    ({"train/a": 2, "test/a": 1}, "'train' has one class folder (a); a classifier needs at least 2"),
    ({"cats": 3}, "has one class folder (cats); a classifier needs at least 2"),
])
def test_folder_layout_problems(tmp_path, layout, expected):
    for folder, count in layout.items():
        os.makedirs(tmp_path / folder, exist_ok=True)
        _good_images(tmp_path / folder, count)
    assert expected in _folder_error(f"folder:{tmp_path}")


def test_missing_folder_is_a_folder_error_that_is_also_file_not_found(tmp_path):
    message = _folder_error(f"folder:{tmp_path / 'absent'}")
    assert "does not exist" in message
    assert issubclass(datasets.FolderDatasetError, ValueError)


def test_images_are_decoded_once_and_the_verdict_kept_by_size_and_mtime(tmp_path, monkeypatch):
    from tfbench.datasets import folder, image_check

    _good_images(tmp_path / "data" / "a", 3)
    _good_images(tmp_path / "data" / "b", 3, start=3)
    monkeypatch.setenv("TFBENCH_CACHE", str(tmp_path / "cache"))
    decoded = []
    real = image_check.decode_problem
    monkeypatch.setattr(image_check, "decode_problem", lambda data: decoded.append(data) or real(data))

    def fresh_process_spec():
        monkeypatch.setattr(folder, "_SCANNED", {})
        monkeypatch.setattr(image_check, "_LOADED", {})
        return datasets.spec(f"folder:{tmp_path / 'data'}")

    first = fresh_process_spec()
    assert len(decoded) == 6 and os.listdir(tmp_path / "cache" / "image_checks")
    second = fresh_process_spec()
    assert len(decoded) == 6 and second == first  # a rerun decodes nothing
    assert datasets.spec(f"folder:{tmp_path / 'data'}", skip_bad_images=True) == first  # nothing to skip
    time.sleep(0.01)
    _half_a_jpeg(str(tmp_path / "data" / "a" / "000.png"))  # the same name, now damaged
    assert "'a/000.png' does not decode" in _folder_error(f"folder:{tmp_path / 'data'}")
    assert len(decoded) == 7  # only the changed file was decoded again
    monkeypatch.setattr(image_check, "_LOADED", {})
    _folder_error(f"folder:{tmp_path / 'data'}")  # the bad verdict is kept as well
    assert len(decoded) == 7


def test_skip_bad_images_leaves_them_out_with_one_warning(tmp_path, capsys):
    for name in ("a", "b"):
        _good_images(tmp_path / name, 5, start=10 * (name == "b"))
    _half_a_jpeg(str(tmp_path / "a" / "bad.jpg"))
    _bad_file(tmp_path / "b" / "bad.png", b"\x89PNG\r\n\x1a\n broken")
    name = f"folder:{tmp_path}"
    spec = datasets.spec(name, skip_bad_images=True)
    assert spec.skipped_images == 2 and spec.num_classes == 2
    assert datasets.spec(name, skip_bad_images=True) == spec
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "leaving out 2 unreadable image(s)" in warned[0] and "a/bad.jpg" in warned[0]
    ids = [example["id"].decode() for split in ("trainval", "test")
           for example in datasets.load(name, split, skip_bad_images=True).as_numpy_iterator()]
    assert sorted(ids) == sorted(f"{c}/{i:03d}.png" for c, start in (("a", 0), ("b", 10))
                                 for i in range(start, start + 5))
    clean = datasets.spec(name, skip_bad_images=True)
    os.remove(tmp_path / "a" / "bad.jpg")  # fixed by the user: the spec, and so every cache key, changes
    assert datasets.spec(name, skip_bad_images=True) != clean
    for index in range(5):
        os.remove(tmp_path / "b" / f"{10 + index:03d}.png")
    assert "class folder 'b' has no readable images" in _folder_error(name, skip_bad_images=True)


def _cmyk_jpeg(path, rgb):
    Image.fromarray(rgb).convert("CMYK").save(path, quality=100, subsampling=0)


def _png16_gray(path, gray):
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)  # 16 bits per pixel, full range


def test_images_in_any_mode_load_as_rgb_and_stray_files_are_ignored(tmp_path):
    rgb = np.stack([*np.meshgrid(np.arange(6) * 40, np.arange(5) * 50, indexing="xy"), np.full((5, 6), 90)],
                   axis=-1).astype(np.uint8)
    gray = rgb[..., 0]
    alpha = np.full((5, 6), 30, np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    cls = tmp_path / "data" / "only"
    os.makedirs(cls)
    writers = {  # file -> (writer, expected RGB, tolerance)
        "gray.png": (lambda p: Image.fromarray(gray, mode="L").save(p), np.stack([gray] * 3, -1), 0),
        "gray.jpg": (lambda p: Image.fromarray(gray, mode="L").save(p, quality=100), np.stack([gray] * 3, -1), 8),
        "cmyk.jpg": (lambda p: _cmyk_jpeg(p, rgb), rgb, 12),
        "rgba.png": (lambda p: Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(p), rgb, 0),
        "palette.png": (lambda p: palette.save(p), np.asarray(palette.convert("RGB")), 0),
        "gray16.png": (lambda p: _png16_gray(p, gray), np.stack([gray] * 3, -1), 0),
        "rgb.webp": (lambda p: Image.fromarray(rgb).save(p, lossless=True), rgb, 0),
    }
    for file_name, (write, _, _) in writers.items():
        write(str(cls / file_name))
    for stray in (".DS_Store", "README.txt", "Thumbs.db", "._gray.jpg", "notes.md"):
        _bad_file(cls / stray, b"\x00\x05\x16\x07 not an image")
    _bad_file(tmp_path / "data" / "__MACOSX" / "only" / "._rgb.png", b"resource fork")
    _bad_file(tmp_path / "data" / ".ipynb_checkpoints" / "x.png", b"checkpoint")
    _good_images(tmp_path / "data" / "other", 2)
    name = f"folder:{tmp_path / 'data'}"
    spec = datasets.spec(name)
    assert spec.num_classes == 2 and spec.skipped_images == 0
    examples = {example["id"].decode(): example for split in ("trainval", "test")
                for example in datasets.load(name, split).as_numpy_iterator()}
    assert set(examples) == {f"only/{f}" for f in writers} | {"other/000.png", "other/001.png"}
    for file_name, (_, expected, tolerance) in writers.items():
        image = examples[f"only/{file_name}"]["image"]
        assert image.dtype == np.uint8 and image.shape == (5, 6, 3), file_name
        assert np.abs(image.astype(int) - expected).max() <= tolerance, file_name


def test_a_palette_bmp_is_refused_unless_its_palette_is_gray(tmp_path):
    rgb = (np.arange(5 * 6 * 3).reshape(5, 6, 3) * 3).astype(np.uint8)
    for name in ("a", "b"):
        _good_images(tmp_path / name, 2)
    Image.fromarray(rgb[..., 0], mode="L").save(tmp_path / "a" / "gray.bmp")  # decodes right
    Image.fromarray(rgb).convert("P").save(tmp_path / "b" / "colour.bmp")  # would decode as gray
    message = _folder_error(f"folder:{tmp_path}")
    assert "1 problem(s): 'b/colour.bmp' is a palette BMP (8 bits per pixel)" in message


def test_dataset_names_answer_without_tensorflow(tmp_path):
    import subprocess
    import sys

    script = ("import sys\n"
              "from tfbench import datasets\n"
              "assert datasets.spec('digits').num_classes == 10 and 'voc2007' in datasets.names()\n"
              "try:\n"
              "    datasets.spec('cifar11')\n"
              "except ValueError as error:\n"
              "    assert 'did you mean: cifar10' in str(error)\n"
              "else:\n"
              "    raise AssertionError('no error')\n"
              "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    completed = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]


# ---------------------------------------------------------------- TFDS-backed entries


@contextlib.contextmanager
def mocked_tfds(num_examples):
    """TFDS's random mock data, with builders reporting themselves prepared."""
    with tfds.testing.mock_data(num_examples=num_examples), mock.patch.object(
        tfds.core.DatasetBuilder, "is_prepared", return_value=True
    ):
        yield


def _assert_example_format(parts, spec):
    for part in parts.values():
        for label, image in zip(part.labels, part.images):
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
            if spec.multi_label:
                assert label.dtype == np.int32 and label.shape == (spec.num_classes,)
                assert set(np.unique(label)) <= {-1, 0, 1}
            else:
                assert label.dtype == np.int64 and 0 <= label < spec.num_classes


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in PAPER_TABLE if name != "voc2007"])
def test_tfds_entries_load_through_mock_data(name):
    spec = datasets.spec(name)
    # Mock data repeats the same examples in every official split, so only splits tfbench draws
    # (held-out validation, Caltech-101's test) can be checked for disjointness here.
    with mocked_tfds(num_examples=60):
        if spec.val_split is not None:
            _assert_example_format({split: materialise(datasets.load(name, split)) for split in ("train", "test")},
                                   spec)
            return
        parts = load_all(name)
        again = materialise(datasets.load(name, "val"))
    _assert_example_format(parts, spec)
    train, val, trainval = parts["train"], parts["val"], parts["trainval"]
    assert not set(train.ids) & set(val.ids)
    assert set(trainval.ids) == set(train.ids) | set(val.ids)
    assert len(trainval.ids) == 60 and len(val.ids) > 0
    assert collections.Counter(trainval.hashes) == collections.Counter(train.hashes + val.hashes)
    assert_class_balanced(val.labels, trainval.labels, spec.num_classes)
    assert again.ids == val.ids


def test_caltech101_ids_name_the_class_folder():
    class_names = tfds.builder("caltech101").info.features["label"].names
    with mocked_tfds(num_examples=10):
        part = materialise(datasets.load("caltech101", "trainval"))
    assert len(part.ids) == 10
    for example_id, label in zip(part.ids, part.labels):
        assert example_id.split("/")[0] == class_names[label]


def test_voc2007_multi_hot_marks_difficult_only_classes_minus_one():
    spec = datasets.spec("voc2007")
    with mocked_tfds(num_examples=40):
        loaded = materialise(datasets.load("voc2007", "train"))
        # The raw TFDS features of the same (mock) examples: mock values depend on which features
        # are read, so read the ones tfbench reads.
        raw = tfds.builder("voc/2007").as_dataset(
            split="train",
            decoders=tfds.decode.PartialDecoding(
                {"image": True, "image/filename": True, "labels": True, "labels_no_difficult": True},
                decoders={"image": tfds.decode.SkipDecoding()},
            ),
        )
        raw = list(raw.as_numpy_iterator())
    _assert_example_format({"train": loaded}, spec)
    assert [example["image/filename"].decode() for example in raw] == loaded.ids
    for example, label in zip(raw, loaded.labels):
        expected = np.zeros(20, dtype=np.int32)
        expected[example["labels"]] = -1  # an object of the class, all of them difficult so far
        expected[example["labels_no_difficult"]] = 1  # a clearly visible object
        np.testing.assert_array_equal(label, expected)
    assert (loaded.labels == -1).any() and (loaded.labels == 1).any()


def test_fashion_mnist_falls_back_to_prepared_tfds(tmp_path):
    spec = dataclasses.replace(datasets.spec("fashion_mnist"), path=str(tmp_path / "absent"))
    with mocked_tfds(num_examples=50):
        parts = {split: materialise(offline.load_fashion_mnist(spec, split, None)) 
                 for split in ("train", "val")}
    assert not set(parts["train"].ids) & set(parts["val"].ids)
    assert len(parts["train"].ids) + len(parts["val"].ids) == 50
    for image in parts["train"].images:
        assert image.shape == (28, 28, 3)
        np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_unprepared_tfds_datasets_fail_fast_with_the_prepare_command(tmp_path):
    for name in TFDS_BACKED:
        start = time.monotonic()
        with pytest.raises(datasets.DatasetNotPreparedError) as error:
            datasets.load(name, "train", data_dir=str(tmp_path))
        assert time.monotonic() - start < 5, name
        message = str(error.value)
        assert f"python -m tfbench.prepare --datasets={name} --data_dir={tmp_path}" in message
        assert "\n" not in message
    assert not any(tmp_path.iterdir())  # nothing was written either


def test_held_out_assignment_skips_image_decoding():
    spec = datasets.spec("cifar10")
    never_decode = AssertionError("decoded an image")
    with mocked_tfds(num_examples=30), mock.patch.object(
        tfds.features.Image, "decode_example", side_effect=never_decode
    ), mock.patch.object(tfds_source, "decode_image", side_effect=never_decode):
        ids, assignment = tfds_source.pool_assignment(tfds_source.prepared_builder(spec, None), spec)
    assert len(ids) == 30
    assert 0 < np.sum(assignment == "val") < 30 and not np.any(assignment == "test")


@pytest.mark.slow
def test_fashion_mnist_mini_is_a_fixed_class_balanced_subset():
    import collections

    def materialise(split):
        return list(datasets.load("fashion_mnist_mini", split).as_numpy_iterator())

    sizes = {}
    for split in ("train", "val", "test"):
        examples = materialise(split)
        counts = collections.Counter(int(e["label"]) for e in examples)
        assert sorted(counts) == list(range(10)) and len(set(counts.values())) == 1, split
        sizes[split] = len(examples)
    assert sizes == {"train": 2400, "val": 600, "test": 1000}
    train_ids = {e["id"] for e in materialise("train")}
    assert train_ids == {e["id"] for e in materialise("train")}  # seeded: the same every time
    assert not train_ids & {e["id"] for e in materialise("val")}
    assert all(i.startswith(b"train/") for i in train_ids)
    assert all(e["id"].startswith(b"test/") for e in materialise("test"))


# ---------------------------------------------------------------------------------------------
# Tables: the rows training reads by example number are the examples `load` gives, in its order


def as_dataset(table):
    """The rows of an ExampleTable, in row order, decoded with its own decode."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(dict(table.columns)).map(
        lambda row: {"image": table.decode(row), "label": row["label"], "id": row["id"]})


def assert_table_matches_load(name, splits_to_check=datasets.SPLITS, batch_size=None, **options):
    for split in splits_to_check:
        loaded = materialise(datasets.load(name, split, **options), batch_size)
        table = materialise(as_dataset(datasets.load_table(name, split, **options)), batch_size)
        assert table.ids == loaded.ids, split
        np.testing.assert_array_equal(table.labels, loaded.labels)
        assert table.hashes == loaded.hashes, split


def test_table_rows_are_the_loaded_examples_digits_with_a_training_subset():
    assert_table_matches_load("digits", ("train", "test"), batch_size=512)
    subset = splits.TrainSubset(examples_per_class=5, seed=3)
    assert_table_matches_load("digits", ("train", "trainval"), batch_size=512, train_subset=subset)
    assert len(datasets.load_table("digits", "train", train_subset=subset)) == 50


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_table_rows_are_the_loaded_examples_fashion_mnist_mini():
    assert_table_matches_load("fashion_mnist_mini", ("val", "test"), batch_size=512)


def test_table_rows_are_the_loaded_examples_of_a_folder(tmp_path):
    for name in CLASSES:
        _write_images(tmp_path / name, name, 6, start=CLASSES.index(name) * 6, extension=".jpg")
    assert_table_matches_load(f"folder:{tmp_path}")


def test_table_rows_are_the_loaded_examples_of_tfds_pool_and_multi_label_splits():
    with mocked_tfds(num_examples=30):
        assert_table_matches_load("caltech101", ("train", "val"))
        assert_table_matches_load("voc2007", ("train",))
