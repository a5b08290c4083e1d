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
    batches = as_numpy(preprocessing.pipeline(examples(10), SIZE, batch_size=4, training=False))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]), np.arange(10))
    assert all(images.shape[1:] == (SIZE, SIZE, 3) and images.dtype == np.float32 for images, _ in batches)


def test_training_epoch_is_shuffled_and_covers_every_example_once():
    batches = as_numpy(preprocessing.pipeline(examples(50), SIZE, batch_size=8, training=True, seed=1))
    labels = np.concatenate([labels for _, labels in batches])
    assert sorted(labels) == list(range(50))
    assert not np.array_equal(labels, np.arange(50))
    assert len(batches[-1][1]) == 50 % 8


def test_repeat_reshuffles_every_epoch():
    stream = preprocessing.pipeline(examples(20), SIZE, batch_size=20, training=True, seed=4, repeat=True)
    first, second = (labels for _, labels in as_numpy(stream.take(2)))
    assert sorted(first) == sorted(second) == list(range(20))
    assert not np.array_equal(first, second)


def test_deterministic_mode_repeats_batches_exactly():
    def build(seed):
        return preprocessing.pipeline(
            examples(30), SIZE, batch_size=7, training=True, seed=seed, deterministic=True, shuffle_buffer=16
        )

    first, second = build(seed=5), build(seed=5)
    first_epochs = [as_numpy(first), as_numpy(first)]
    second_epochs = [as_numpy(second), as_numpy(second)]
    for epoch_a, epoch_b in zip(first_epochs, second_epochs):
        for (images_a, labels_a), (images_b, labels_b) in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(labels_a, labels_b)
            np.testing.assert_array_equal(images_a, images_b)
    # Iterating again is the next epoch: a new order, not a replay.
    labels_by_epoch = [np.concatenate([labels for _, labels in epoch]) for epoch in first_epochs]
    assert not np.array_equal(*labels_by_epoch)
    other = as_numpy(build(seed=6))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first_epochs[0], other))


def test_pipeline_rejects_contradictory_arguments():
    with pytest.raises(ValueError, match="seed"):
        preprocessing.pipeline(examples(4), SIZE, 2, training=True, deterministic=True)
    with pytest.raises(ValueError, match="repeat"):
        preprocessing.pipeline(examples(4), SIZE, 2, training=False, repeat=True)
