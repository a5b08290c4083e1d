"""Transforms and the input pipeline, checked against hand-built images with known structure."""

import numpy as np
import pytest
import tensorflow as tf

from tfbench import preprocessing

SIZE = 16


def horizontal_ramp(height=30, width=40):
    """Values grow left to right: any crop keeps that direction unless it is flipped."""
    ramp = np.linspace(0, 255, width).astype(np.uint8)
    return tf.constant(np.repeat(np.tile(ramp, (height, 1))[..., None], 3, axis=-1))


def examples(count, height=12, width=9):
    """A dict dataset whose label is the example's position (to track order and coverage)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(count, dtype=np.int64)})


def as_numpy(batches):
    return [(images.numpy(), labels.numpy()) for images, labels in batches]


def test_transforms_give_float32_images_of_the_target_size_in_0_255():
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8))
    outputs = (preprocessing.train_transform(SIZE, seed=0)(image, 5),
               preprocessing.eval_transform(SIZE)(image))
    for output in outputs:
        assert output.shape == (SIZE, SIZE, 3) and output.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(output)) and float(tf.reduce_max(output)) <= 255.0
    white = tf.fill([21, 17, 3], tf.constant(255, tf.uint8))
    np.testing.assert_allclose(preprocessing.eval_transform(SIZE)(white).numpy(), 255.0)


def test_flip_is_random_not_always():
    transform = preprocessing.train_transform(SIZE, seed=7)
    image = horizontal_ramp()
    flipped = 0
    for key in range(200):
        output = transform(image, key).numpy()
        slope = output[:, -1].mean() - output[:, 0].mean()
        assert slope != 0
        flipped += slope < 0
    assert 60 <= flipped <= 140  # Binomial(200, 0.5): far outside this is no coin flip


def test_crop_window_lies_inside_the_image_with_inception_area_and_aspect():
    shape = tf.constant([300, 400, 3])
    areas = []
    for index in range(200):
        begin, size = preprocessing.random_crop_window(shape, tf.constant([3, index]))
        (top, left, _), (height, width, _) = begin.numpy(), size.numpy()
        assert top >= 0 and left >= 0 and top + height <= 300 and left + width <= 400
        area = height * width / (300 * 400)
        assert 0.08 - 0.01 <= area <= 1.0
        if area < 1.0:  # the whole image is the fallback when no box fits
            assert 3 / 4 - 0.02 <= width / height <= 4 / 3 + 0.02
        areas.append(area)
    assert min(areas) < 0.3 and max(areas) > 0.7  # the range is really sampled


def test_training_crop_never_pads_outside_the_image():
    transform = preprocessing.train_transform(SIZE, seed=3)
    grey = tf.fill([25, 40, 3], tf.constant(200, tf.uint8))
    for key in range(50):
        np.testing.assert_allclose(transform(grey, key).numpy(), 200.0, atol=1e-3)


def test_eval_resizes_the_whole_image_without_cropping():
    transform = preprocessing.eval_transform(SIZE)
    same_size = tf.constant(np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    assert transform(same_size).dtype == tf.float32  # a float32 image whatever the input's static shape
    np.testing.assert_array_equal(transform(same_size).numpy(), same_size.numpy().astype(np.float32))
    small = tf.constant(np.random.default_rng(3).integers(0, 256, (8, 11, 3), dtype=np.uint8))
    np.testing.assert_allclose(transform(small).numpy(), tf.image.resize(small, [SIZE, SIZE]).numpy())
    # A wide image whose outer quarters are red and blue: both survive (no centre crop).
    wide = np.zeros((20, 80, 3), dtype=np.uint8)
    wide[:, :20, 0] = 255
    wide[:, 60:, 2] = 255
    output = transform(tf.constant(wide)).numpy()
    assert output[:, 0, 0].min() == 255 and output[:, -1, 2].min() == 255


def test_evaluation_keeps_order_and_the_last_partial_batch():
    batches = as_numpy(preprocessing.pipeline(examples(10), SIZE, batch_size=4))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]), np.arange(10))
    assert all(images.shape[1:] == (SIZE, SIZE, 3) and images.dtype == np.float32 for images, _ in batches)


# ------------------------------------------------------------- evaluation images from image files


def image_folder(root, extension, sizes=((23, 31), (40, 17), (16, 16), (9, 50), (30, 30))):
    """A folder dataset whose test split holds one photo-like image per size (alternating two
    classes), in the order datasets.load gives them; returns (dataset name, their pixels)."""
    from PIL import Image

    rng = np.random.default_rng(5)
    pixels = []
    for index, (height, width) in enumerate(sizes):
        rows, columns = np.mgrid[0:height, 0:width]
        image = (rows[..., None] * 5 + columns[..., None] * 3 + rng.integers(0, 60, (height, width, 3))) % 256
        pixels.append(image.astype(np.uint8))
        for split in ("test", "train"):
            folder = root / split / f"class{index % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[-1]).save(folder / f"{index:02d}{extension}", quality=90)
    order = sorted(range(len(sizes)), key=lambda index: (index % 2, index))  # class folders, then names
    return f"folder:{root}", [pixels[index] for index in order], order


def bilinear(image, size):
    """numpy reference of tf.image.resize's bilinear resize without antialiasing (half-pixel
    centres, edge pixels repeated) of a uint8 [H, W, 3] image to [size, size, 3]."""
    def axis(length):
        source = (np.arange(size) + 0.5) * length / size - 0.5
        low = np.floor(source)
        return (np.clip(low, 0, length - 1).astype(int), np.clip(np.ceil(source), 0, length - 1).astype(int),
                source - low)

    (top, bottom, down), (left, right, across) = axis(image.shape[0]), axis(image.shape[1])
    image = image.astype(np.float64)
    across = across[None, :, None]
    upper = image[top][:, left] * (1 - across) + image[top][:, right] * across
    lower = image[bottom][:, left] * (1 - across) + image[bottom][:, right] * across
    return upper * (1 - down[:, None, None]) + lower * down[:, None, None]


def test_evaluation_images_are_the_whole_files_resized_bilinearly(tmp_path):
    """Pins what the probe's features are computed from: each image file, decoded, resized whole
    to S x S (bilinear, no antialiasing), in the dataset's order, the last partial batch kept."""
    from tfbench import datasets

    name, pixels, order = image_folder(tmp_path, ".png")
    batches = as_numpy(preprocessing.pipeline(datasets.load(name, "test"), SIZE, batch_size=2))
    assert [len(labels) for _, labels in batches] == [2, 2, 1]
    images = np.concatenate([images for images, _ in batches])
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]), [i % 2 for i in order])
    for image, source in zip(images, pixels):
        np.testing.assert_allclose(image, bilinear(source, SIZE), atol=1e-3)


def test_evaluation_jpegs_give_the_pixels_of_decoding_then_resizing_each_file(tmp_path):
    """The fused pipeline's images equal, bit for bit, the per-file path it replaced:
    read, decode_image, eval_transform."""
    from tfbench import datasets

    name, _, _ = image_folder(tmp_path, ".jpg")
    paths = datasets.load_table(name, "test").columns["path"]
    batches = as_numpy(preprocessing.pipeline(datasets.load(name, "test"), SIZE, batch_size=2))
    transform = preprocessing.eval_transform(SIZE)
    expected = [transform(tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)).numpy()
                for path in paths]
    np.testing.assert_array_equal(np.concatenate([images for images, _ in batches]), np.stack(expected))


def test_decoding_and_resizing_run_as_one_step_that_fills_each_batch():
    """The source's decode map and the resize are fused with the batching (bench/input_bench.py):
    no separate in-order decode stage whose one slow image idles the other cores."""
    from tensorflow.python.data.experimental.ops import testing

    rng = np.random.default_rng(0)
    encoded = [tf.io.encode_png(rng.integers(0, 256, (10, 7, 3), dtype=np.uint8)).numpy() for _ in range(5)]
    source = (tf.data.Dataset.from_tensor_slices({"png": encoded, "label": np.arange(5)})
              .apply(testing.assert_next(["MapAndBatch"]))
              .map(lambda row: {"image": tf.io.decode_png(row["png"], channels=3), "label": row["label"]},
                   num_parallel_calls=tf.data.AUTOTUNE))
    labels = np.concatenate([labels for _, labels in as_numpy(preprocessing.pipeline(source, SIZE, 2))])
    np.testing.assert_array_equal(labels, np.arange(5))


def table(count, height=12, width=9, decoded=None):
    """An ExampleTable of `count` random images whose label is the example's number; `decoded`, if
    given, collects the number of every example that gets decoded."""
    from tfbench.datasets.tables import ExampleTable

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)

    def decode(row):
        if decoded is not None:
            tf.numpy_function(lambda label: decoded.append(int(label)) or label, [row["label"]], tf.int64)
        return tf.ensure_shape(row["image"], [height, width, 3])

    return ExampleTable({"image": images, "label": np.arange(count, dtype=np.int64),
                         "id": np.array([f"x{i}" for i in range(count)])}, decode)


def stream_labels(batches, steps):
    return [labels.numpy() for _, labels in batches.take(steps)]


def test_every_epoch_is_a_permutation_of_its_own():
    order = preprocessing.EpochOrder(50, seed=1)
    epochs = [order.examples(np.arange(50 * e, 50 * (e + 1))) for e in range(3)]
    for rows in epochs:
        assert sorted(rows) == list(range(50))
    assert not np.array_equal(epochs[0], np.arange(50))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    # Positions across an epoch boundary read the same examples as the epochs read one by one.
    np.testing.assert_array_equal(order.examples(np.arange(40, 60)),
                                  np.concatenate([epochs[0][40:], epochs[1][:10]]))


def test_epoch_order_is_uniform_over_seeds():
    """A proper shuffle: over many seeds, each example lands in each position about equally often."""
    size, seeds = 8, 4000
    counts = np.zeros((size, size))
    for seed in range(seeds):
        counts[np.arange(size), preprocessing.EpochOrder(size, seed).examples(np.arange(size))] += 1
    expected = seeds / size
    chi_square = ((counts - expected) ** 2 / expected).sum()
    # 49 degrees of freedom ((8-1)^2): p = 1e-6 at ~110; a biased shuffle lands far above.
    assert chi_square < 110


def test_batches_follow_the_epoch_order_and_augmentation_depends_on_position_only():
    batches = preprocessing.training_batches(table(20), SIZE, batch_size=8, seed=4)
    labels = np.concatenate(stream_labels(batches, 5))  # 40 positions: two epochs
    np.testing.assert_array_equal(labels, preprocessing.EpochOrder(20, 4).examples(np.arange(40)))
    images, _ = next(iter(batches))
    source = table(20).columns["image"]
    transform = preprocessing.train_transform(SIZE, 4)
    for position in range(8):
        np.testing.assert_array_equal(images[position].numpy(),
                                      transform(tf.constant(source[labels[position]]), position).numpy())


def test_resumed_stream_equals_the_uninterrupted_one_past_the_first_epoch():
    """Step 7 of batch 6 over 25 examples is in the second epoch; resuming there gives the same
    images (crop, flip), labels and order as running through."""
    full = [(images.numpy(), labels.numpy())
            for images, labels in preprocessing.training_batches(table(25), SIZE, 6, seed=9).take(11)]
    resumed = [(images.numpy(), labels.numpy())
               for images, labels in preprocessing.training_batches(table(25), SIZE, 6, seed=9, start_step=7).take(4)]
    for (images_a, labels_a), (images_b, labels_b) in zip(full[7:], resumed):
        np.testing.assert_array_equal(labels_a, labels_b)
        np.testing.assert_array_equal(images_a, images_b)
    other_seed = next(iter(preprocessing.training_batches(table(25), SIZE, 6, seed=10, start_step=7)))
    assert not np.array_equal(other_seed[0].numpy(), resumed[0][0])


def test_resuming_late_decodes_no_example_of_the_steps_before():
    """The old stream skipped batches after decoding and augmenting them: a resume at step 400 of
    batch 4 decoded 1,600 examples before its first batch. Now it decodes (about) that batch."""
    decoded = []
    batches = preprocessing.training_batches(table(30, decoded=decoded), SIZE, 4, seed=2, start_step=400)
    first = next(iter(batches))[1].numpy()
    np.testing.assert_array_equal(first, preprocessing.EpochOrder(30, 2).examples(np.arange(1600, 1604)))
    assert 4 <= len(decoded) <= 64  # that batch and what prefetching reads ahead, never 1,600


def test_an_empty_training_split_is_refused():
    with pytest.raises(ValueError, match="empty"):
        preprocessing.training_batches(table(0), SIZE, 4, seed=0)
