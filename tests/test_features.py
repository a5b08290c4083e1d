"""Feature extraction and its cache: keyed on every input, never trusting an interrupted entry."""

import dataclasses
import os

import numpy as np
import pytest

from tfbench import backbones, datasets, features
from tfbench.regimes import frozen
from tfbench.experiment import Experiment
from tfbench.settings import ProbeSettings


def _experiment(**overrides):
    fields = dict(regime="probe", model="tiny", dataset="digits", output_dir="/unused",
                  settings=ProbeSettings(l2_search="fast"))
    fields.update(overrides)
    return Experiment(**fields)


def _key(experiment=None, split="train", precision="float32"):
    return features.cache_key(frozen.cache_components(experiment or _experiment(), split, precision))


def test_same_inputs_same_key_and_locations_do_not_matter():
    assert _key() == _key(_experiment(output_dir="/elsewhere", data_dir="/data", cache_dir="/c"))


@pytest.mark.parametrize("change", [
    "model", "image_size", "precision", "dataset", "split", "weights", "input_scaling",
    "split_seed", "val_fraction", "feature_code_version",
])
def test_every_key_component_changes_the_key(change, monkeypatch):
    baseline = _key()
    experiment, split, precision = _experiment(), "train", "float32"
    if change == "model":
        experiment = _experiment(model="mobilenet_v2")
    elif change == "image_size":
        experiment = _experiment(image_size=48)
    elif change == "precision":
        precision = "mixed_bfloat16"
    elif change == "dataset":
        experiment = _experiment(dataset="fashion_mnist")
    elif change == "split":
        split = "val"
    elif change == "weights":
        monkeypatch.setattr(backbones, "weights_fingerprint", lambda name, pretrained: "other-weights")
    elif change == "input_scaling":
        original = backbones.spec
        monkeypatch.setattr(backbones, "spec", lambda name: dataclasses.replace(original(name), input_scaling="[-1, 1]"))
    elif change in ("split_seed", "val_fraction"):
        original = datasets.spec
        value = {"split_seed": 7, "val_fraction": 0.3}[change]
        monkeypatch.setattr(datasets, "spec", lambda name, **options: dataclasses.replace(
            original(name, **options), **{change: value}))
    elif change == "feature_code_version":
        monkeypatch.setattr(features, "FEATURE_CODE_VERSION", features.FEATURE_CODE_VERSION + 1)
    assert _key(experiment, split, precision) != baseline


def _sample(n=5, d=3):
    rng = np.random.default_rng(0)
    return features.Features(rng.normal(size=(n, d)).astype(np.float32), np.arange(n), 1.0, False)


def test_store_then_load_round_trips(tmp_path):
    cache = features.FeatureCache(str(tmp_path))
    sample = _sample()
    cache.store("ab" * 32, {"x": 1}, sample)
    loaded = cache.load("ab" * 32)
    assert loaded.from_cache and np.array_equal(loaded.features, sample.features)
    assert np.array_equal(loaded.labels, sample.labels)


def test_interrupted_store_leaves_nothing_trusted(tmp_path, monkeypatch):
    cache = features.FeatureCache(str(tmp_path))
    real_save = np.save
    calls = []

    def dying_save(path, array, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is interrupted half-way through the arrays
        return real_save(path, array, **kwargs)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cache.store("cd" * 32, {}, _sample())
    assert cache.load("cd" * 32) is None
    assert os.listdir(os.path.join(str(tmp_path), "cd")) == []


def test_entry_without_manifest_or_with_wrong_shapes_is_not_trusted(tmp_path):
    cache = features.FeatureCache(str(tmp_path))
    key = "ef" * 32
    cache.store(key, {}, _sample())
    np.save(os.path.join(cache.entry_dir(key), "features.npy"), np.zeros((4, 3), np.float32))
    assert cache.load(key) is None  # shapes disagree with the manifest
    cache.store(key, {}, _sample())  # a fresh extraction replaces the bad entry
    assert cache.load(key) is not None
    os.remove(os.path.join(cache.entry_dir(key), features.MANIFEST))
    assert cache.load(key) is None


@pytest.mark.slow
def test_extraction_matches_the_model_on_each_whole_image_in_order():
    import tensorflow as tf

    from tfbench import preprocessing

    model = backbones.build("tiny", pretrained=True)
    data = datasets.load("digits", "val")
    got = features.extract(model, data, image_size=32, batch_size=50)
    images = np.stack([preprocessing.eval_transform(32)(e["image"]).numpy() for e in data])
    expected = model(tf.constant(images), training=False).numpy()
    labels = np.array([int(e["label"]) for e in data])
    assert got.features.shape == expected.shape  # 287 examples: the last batch is partial
    np.testing.assert_allclose(got.features, expected, rtol=1e-4, atol=1e-5)
    assert np.array_equal(got.labels, labels)



def test_a_model_is_traced_once_for_every_split_and_batch_size():
    """Each extraction traced the network anew (a trace of mobilenet_v2 costs about the CPU of a
    batch of 64 images, per split); now one trace serves every extraction with that model and
    image size, partial last batches included, and the features are each image's own, in order."""
    import keras
    import tensorflow as tf

    traces = []

    class Record(keras.layers.Layer):
        def call(self, images):
            traces.append(images.shape[0])
            return tf.reduce_mean(images, axis=[1, 2])

    model = keras.Sequential([keras.Input((4, 4, 3)), Record()])
    traces.clear()  # the symbolic call that built the model
    images = np.random.default_rng(0).integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    for count, batch_size in ((7, 3), (5, 2)):
        data = tf.data.Dataset.from_tensor_slices({"image": images[:count], "label": np.arange(count)})
        got = features.extract(model, data, image_size=4, batch_size=batch_size)
        np.testing.assert_allclose(got.features, images[:count].mean(axis=(1, 2)), rtol=1e-6)
        np.testing.assert_array_equal(got.labels, np.arange(count))
    assert len(traces) == 1

# --------------------------------------------------------------------------- damaged entries


def _flip_last_byte(path):
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))


def _truncate_to_half(path):
    os.truncate(path, os.path.getsize(path) // 2)


DAMAGES = {
    "truncated features": lambda folder: _truncate_to_half(os.path.join(folder, "features.npy")),
    "flipped byte": lambda folder: _flip_last_byte(os.path.join(folder, "features.npy")),
    "empty labels": lambda folder: open(os.path.join(folder, "labels.npy"), "wb").close(),
    "half the files deleted": lambda folder: [os.remove(os.path.join(folder, name))
                                              for name in ("labels.npy", features.MANIFEST)],
    "an array deleted": lambda folder: os.remove(os.path.join(folder, "features.npy")),
    "manifest not JSON": lambda folder: _truncate_to_half(os.path.join(folder, features.MANIFEST)),
    "manifest empty": lambda folder: open(os.path.join(folder, features.MANIFEST), "w").close(),
}


def _warnings(stderr):
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_entry_warns_once_is_discarded_and_rebuilt(tmp_path, capsys, damage):
    cache = features.FeatureCache(str(tmp_path))
    key = "d0" * 32
    sample = _sample(n=40, d=8)
    cache.store(key, {"x": 1}, sample)
    DAMAGES[damage](cache.entry_dir(key))
    capsys.readouterr()
    assert cache.load(key) is None
    warned = _warnings(capsys.readouterr().err)
    assert len(warned) == 1 and cache.entry_dir(key) in warned[0], warned
    assert not os.path.exists(cache.entry_dir(key))  # discarded: the next load is a plain miss
    assert cache.load(key) is None and _warnings(capsys.readouterr().err) == []
    cache.store(key, {"x": 1}, sample)
    again = cache.load(key)
    assert np.array_equal(again.features, sample.features) and np.array_equal(again.labels, sample.labels)
    assert _warnings(capsys.readouterr().err) == []


def test_entries_are_digested_once_per_process_and_respect_the_umask(tmp_path, monkeypatch):
    from tfbench import files

    old_umask = os.umask(0o022)
    try:
        cache = features.FeatureCache(str(tmp_path))
        key = "e1" * 32
        cache.store(key, {}, _sample())
    finally:
        os.umask(old_umask)
    folder = cache.entry_dir(key)
    assert os.stat(folder).st_mode & 0o777 == 0o755
    assert {os.stat(os.path.join(folder, name)).st_mode & 0o777 for name in os.listdir(folder)} == {0o644}
    digested = []
    real_digest = files.file_digest
    monkeypatch.setattr(files, "file_digest", lambda path, *args: digested.append(path) or real_digest(path, *args))
    assert cache.load(key) is not None and cache.load(key) is not None
    assert sorted(os.path.basename(path) for path in digested) == ["features.npy", "labels.npy"]


def test_an_entry_stored_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch):
    cache = features.FeatureCache(str(tmp_path))
    key = "f2" * 32
    theirs, mine = _sample(n=6), _sample(n=7)
    real_rename = os.rename

    def other_process_first(source, target):
        monkeypatch.setattr(os, "rename", real_rename)
        cache.store(key, {}, theirs)  # lands between our check for the entry and our rename
        return real_rename(source, target)

    monkeypatch.setattr(os, "rename", other_process_first)
    cache.store(key, {}, mine)
    assert len(cache.load(key).features) == 6
    assert os.listdir(os.path.dirname(cache.entry_dir(key))) == [key]  # no staging folder left
