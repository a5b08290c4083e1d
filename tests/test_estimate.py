"""The estimate regime on digits with the tiny network: its record, the feature cache it shares with
the probe, LEEP through a stand-in ImageNet classifier, and the binary's answer to a bad name."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from tfbench import backbones, estimators, features
from tfbench.experiment import Experiment
from tfbench.regimes import estimate, frozen
from tfbench.settings import EstimateSettings, ProbeSettings, Runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _experiment(tmp_path, regime="estimate", settings=EstimateSettings()):
    return Experiment(regime=regime, model="tiny", dataset="digits", output_dir=str(tmp_path / "runs"),
                      cache_dir=str(tmp_path / "cache"), settings=settings)


def test_estimates_of_the_tiny_network_on_digits_from_features_the_probe_shares(tmp_path, monkeypatch):
    experiment = _experiment(tmp_path)
    record = estimate.run(experiment, Runtime())
    assert record["status"] == "ok" and record["test_score"] is None
    assert set(record["estimates"]) == set(estimate.ESTIMATES)
    assert record["estimates"]["leep"] is None and "ImageNet classifier" in record["details"]["not_applicable"]["leep"]
    assert record["details"]["logme"]["converged"] and record["details"]["examples"] == 1151
    assert record["details"]["estimators"]["knn_accuracy"]["protocol"] == "leave-one-out on the training split"

    probe_key = features.cache_key(frozen.cache_components(_experiment(tmp_path, "probe", ProbeSettings()),
                                                           "train", record["details"]["precision"]))
    cached = features.FeatureCache(experiment.cache_dir).load(probe_key)  # the probe finds them
    assert cached is not None and cached.features.shape == (1151, record["details"]["feature_dim"])
    knn = KNeighborsClassifier(n_neighbors=estimators.KNN_NEIGHBOURS).fit(cached.features, cached.labels)
    neighbours = knn.kneighbors(return_distance=False)  # each example's 5 nearest others
    votes = np.array([np.bincount(cached.labels[row], minlength=10).argmax() for row in neighbours])
    assert record["estimates"]["knn_accuracy"] == pytest.approx(np.mean(votes == cached.labels))

    def no_build(*args, **kwargs):
        raise AssertionError("the backbone was built although the training features are cached")

    monkeypatch.setattr(backbones, "build", no_build)
    again = estimate.run(experiment, Runtime())
    assert again["details"]["feature_cache_hit"] and again["estimates"] == record["estimates"]


def test_leep_from_the_network_s_imagenet_classifier_is_cached_too(tmp_path, monkeypatch):
    def classifier(name):  # a stand-in ImageNet classifier: tiny's input, five source classes
        inputs = keras.Input((32, 32, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(pooled / 255.0))

    monkeypatch.setattr(backbones, "build_imagenet_classifier", classifier)
    experiment = _experiment(tmp_path)
    record = estimate.run(experiment, Runtime())
    probabilities = frozen.outputs_of(experiment, Runtime(), ["train"], record["details"]["precision"],
                                      outputs=frozen.IMAGENET_PROBABILITIES)["train"]
    assert probabilities.from_cache and probabilities.features.shape == (1151, 5)
    assert record["estimates"]["leep"] == pytest.approx(estimators.leep(probabilities.features, probabilities.labels))
    assert np.log(0.1) - 0.05 < record["estimates"]["leep"] < 0  # 10 roughly balanced classes
    assert "leep" not in record["details"]["not_applicable"]


def test_binary_refuses_an_unknown_model_in_one_line():
    result = subprocess.run([sys.executable, "-m", "tfbench.estimate", "--model=nonet", "--dataset=digits"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "nonet" in errors[0]
