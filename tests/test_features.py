"""Feature extraction and its cache: keyed on every input, never trusting an interrupted entry."""

import dataclasses
import os

import numpy as np
import pytest

from tfbench import backbones, datasets, features, probe
from tfbench.experiment import Experiment
from tfbench.settings import ProbeSettings, Runtime


def _experiment(**overrides):
    fields = dict(regime="probe", model="tiny", dataset="digits", output_dir="/unused",
                  settings=ProbeSettings(l2_search="fast"))
    fields.update(overrides)
    return Experiment(**fields)


def _key(experiment=None, split="train", precision="float32"):
    return features.cache_key(probe.feature_components(experiment or _experiment(), split, precision))


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
        monkeypatch.setattr(datasets, "spec", lambda name: dataclasses.replace(original(name), **{change: value}))
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
