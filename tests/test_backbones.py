"""Backbone catalog and build(): shapes, input scaling, generic sources and models files, offline
behaviour, and name checks that never wait for TensorFlow."""

import hashlib
import importlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import keras
from tfbench import backbones
from tfbench.backbones import InputScaling, WeightsUnavailableError, conventions, user_models
from tfbench.registry import Registry, UnknownNameError

LITE_AVAILABLE = importlib.util.find_spec("tfbench.backbones.efficientnet_lite") is not None
BUILDABLE_OFFLINE = [n for n in backbones.names() if backbones.spec(n).source != "hub"]
KERAS_ENTRIES = [n for n in backbones.names() if backbones.spec(n).source == "keras"]
HUB_ENTRIES = [n for n in backbones.names() if backbones.spec(n).source == "hub"]
# One entry per Keras Applications module: each module names its weights files its own way.
ONE_PER_KERAS_MODULE = [
    "resnet50", "resnet50_v2", "densenet121", "mobilenet_v1", "mobilenet_v2_140", "nasnet_mobile",
    "inception_v3", "xception", "efficientnet_b0", "efficientnet_v2_b0",
    "convnext_tiny",
]


def pixels(n=4, size=9, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILDABLE_OFFLINE)
def test_every_entry_builds_with_its_recorded_size_and_feature_dim(name):
    described = backbones.spec(name)
    if described.source == "efficientnet_lite" and not LITE_AVAILABLE:
        pytest.skip("tfbench.backbones.efficientnet_lite is not in the tree yet")
    model = backbones.build(name, pretrained=False)
    size = described.image_size
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, described.feature_dim)
    scaling = [layer.mode for layer in model.layers if isinstance(layer, InputScaling)]
    assert scaling == ([described.scaling_mode] if described.scaling_mode else [])
    if described.source == "keras" and described.scaling_mode is None:  # Keras scales inside
        network = model.layers[-1]
        first_layers = network.layers[:4]
        assert any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
                   for layer in first_layers), [layer.name for layer in first_layers]


@pytest.mark.parametrize("mode, keras_module", [
    ("tf", "mobilenet_v2"), ("caffe", "resnet50"), ("torch", "densenet")])
def test_input_scaling_matches_keras_preprocess_input(mode, keras_module):
    x = pixels()
    expected = getattr(keras.applications, keras_module).preprocess_input(x.copy())
    np.testing.assert_allclose(numpy(InputScaling(mode)(x)), expected, rtol=1e-5, atol=1e-4)


def test_unit_scaling_maps_pixels_to_zero_one():
    x = pixels()
    np.testing.assert_allclose(numpy(InputScaling("unit")(x)), x / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="'bgr'.*tf, caffe, torch, unit"):
        InputScaling("bgr")


@pytest.mark.parametrize("name", KERAS_ENTRIES)
def test_keras_entry_scaling_is_its_own_modules_preprocess_input(name):
    """The registry's scaling mode must equal what Keras documents for that network."""
    described = backbones.spec(name)
    application = getattr(keras.applications, described.keras_application)
    module = importlib.import_module(application.__module__)
    x = pixels(seed=3)
    expected = module.preprocess_input(x.copy())  # identity where Keras scales inside the model
    ours = x if described.scaling_mode is None else numpy(InputScaling(described.scaling_mode)(x))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


@pytest.fixture
def placeholder_weights_file():
    """An empty file where Keras caches weights, so that fetching finds it and skips the network."""
    created = []

    def place(file_name):
        path = backbones.keras_weights_path(file_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
        created.append(path)

    yield place
    for path in created:
        os.remove(path)


class _Requested(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("name", ONE_PER_KERAS_MODULE)
def test_recorded_weights_file_is_the_one_keras_loads(name, placeholder_weights_file, monkeypatch):
    from keras.src.utils import file_utils

    described = backbones.spec(name)
    placeholder_weights_file(described.weights_file)
    requested = []

    def record(fname=None, origin=None, **kwargs):
        requested.append((fname, origin, kwargs.get("cache_subdir")))
        raise _Requested()

    monkeypatch.setattr(file_utils, "get_file", record)
    with pytest.raises(_Requested):
        backbones.build(name, pretrained=True)
    assert requested == [(described.weights_file, described.weights_url, "models")]


def test_offline_pretrained_keras_build_fails_fast_naming_the_file():
    described = backbones.spec("mobilenet_v2")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as raised:
        backbones.build("mobilenet_v2", pretrained=True)
    assert time.monotonic() - start < 3.0
    message = str(raised.value)
    assert "\n" not in message
    assert described.weights_url in message
    expected_path = os.path.join(os.environ["KERAS_HOME"], "models", described.weights_file)
    assert expected_path in message


@pytest.mark.parametrize("name", HUB_ENTRIES)
def test_offline_hub_entry_fails_fast_naming_the_handle(name):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as raised:
        backbones.build(name)
    assert time.monotonic() - start < 5.0
    message = str(raised.value)
    assert backbones.spec(name).handle in message and "TFHUB_CACHE_DIR" in message
    assert "\n" not in message


def test_hub_entries_use_the_tf2_feature_vector_handles():
    assert backbones.spec("inception_v1").handle == (
        "https://tfhub.dev/google/imagenet/inception_v1/feature_vector/5")
    assert backbones.spec("inception_v2").handle == (
        "https://tfhub.dev/google/imagenet/inception_v2/feature_vector/5")


@pytest.mark.skipif(not LITE_AVAILABLE, reason="tfbench.backbones.efficientnet_lite is not in the tree yet")
def test_lite_entries_agree_with_efficientnet_lite():
    from tfbench.backbones import efficientnet_lite

    assert sorted(efficientnet_lite.VARIANTS) == [
        n for n in backbones.names() if backbones.spec(n).source == "efficientnet_lite"]
    for name, lite in efficientnet_lite.VARIANTS.items():
        described = backbones.spec(name)
        assert (described.image_size, described.feature_dim, described.imagenet_top1) == (
            lite.image_size, lite.feature_dim, lite.imagenet_top1)


def test_tiny_runs_on_data_and_its_pretrained_init_is_fixed(tmp_path):
    x = pixels(n=5, size=32)
    keras.utils.set_random_seed(1)
    first = backbones.build("tiny")
    keras.utils.set_random_seed(2)
    second = backbones.build("tiny")
    features = numpy(first(x))
    assert features.shape == (5, 32) and np.all(np.isfinite(features)) and np.all(features >= 0)
    np.testing.assert_array_equal(features, numpy(second(x)))

    keras.utils.set_random_seed(1)
    random_a = backbones.build("tiny", pretrained=False)
    keras.utils.set_random_seed(2)
    random_b = backbones.build("tiny", pretrained=False)
    assert not np.allclose(numpy(random_a(x)), numpy(random_b(x)))

    path = str(tmp_path / "tiny.keras")
    first.save(path)
    np.testing.assert_allclose(numpy(keras.saving.load_model(path)(x)), features, rtol=1e-6)
    # A backbone tfbench saved (its InputScaling inside) serves again as a .keras backbone.
    np.testing.assert_allclose(numpy(backbones.build(path)(x)), features, rtol=1e-6)


def test_image_size_overrides_the_native_size():
    model = backbones.build("mobilenet_v2", pretrained=False, image_size=96)
    assert model.input_shape == (None, 96, 96, 3) and model.output_shape == (None, 1280)


def conv_features(input_size=None, softmax_head=False):
    """A small Keras feature model with a rank-4 output (or a softmax classifier)."""
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    if softmax_head:
        x = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, x)


def test_keras_file_loads_pools_and_fine_tunes(tmp_path):
    path = str(tmp_path / "features.keras")
    network = conv_features()
    network.save(path)
    model = backbones.build(path, image_size=20)
    assert model.input_shape == (None, 20, 20, 3) and model.output_shape == (None, 6)
    x = pixels(n=8, size=20)
    expected = numpy(network(x)).mean(axis=(1, 2))
    np.testing.assert_allclose(numpy(model(x)), expected, rtol=1e-5, atol=1e-6)

    classifier = keras.Model(model.input, keras.layers.Dense(2)(model.output))
    classifier.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [numpy(w).copy() for w in model.weights]
    classifier.fit(x, np.arange(8) % 2, batch_size=8, epochs=1, verbose=0)
    for old, new in zip(before, [numpy(w) for w in model.weights]):
        assert np.abs(old - new).max() > 0

    described = backbones.spec(path)
    assert (described.source, described.image_size, described.feature_dim) == ("keras_file", 224, 6)
    with open(path, "rb") as saved:
        sha256 = hashlib.sha256(saved.read()).hexdigest()
    assert backbones.weights_fingerprint(path, True) == f"keras_file:sha256:{sha256}"

    scratch = backbones.build(path, pretrained=False, image_size=20)
    assert scratch.output_shape == (None, 6)
    assert not np.allclose(numpy(scratch(x)), numpy(model(x)))


def test_keras_file_with_fixed_input_size_keeps_it(tmp_path):
    path = str(tmp_path / "fixed.keras")
    conv_features(input_size=24).save(path)
    assert backbones.build(path).input_shape == (None, 24, 24, 3)
    with pytest.raises(ValueError, match="fixed input size of 24"):
        backbones.build(path, image_size=32)


def test_keras_classifier_file_is_refused_with_advice(tmp_path):
    path = str(tmp_path / "classifier.keras")
    conv_features(softmax_head=True).save(path)
    with pytest.raises(ValueError, match="feature model.*without its classification head"):
        backbones.build(path)


def test_unknown_names_and_paths_fail_with_choices(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean: resnet50"):
        backbones.build("resnet5")
    with pytest.raises(UnknownNameError, match="mobilenet_v2"):
        backbones.spec("mobilenetv2")
    with pytest.raises(UnknownNameError):
        backbones.weights_fingerprint("efficientnet_b9", True)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        backbones.build(str(tmp_path / "missing.keras"))
    with pytest.raises(FileNotFoundError, match="SavedModel directory"):
        backbones.build(str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        backbones.build(str(tmp_path))


def test_weights_fingerprints_separate_names_and_initialisations():
    names = ["resnet50", "resnet101", "mobilenet_v2", "inception_v1", "tiny"]
    fingerprints = [backbones.weights_fingerprint(n, p) for n in names for p in (True, False)]
    assert len(set(fingerprints)) == len(fingerprints)
    assert backbones.weights_fingerprint("resnet50", True) == backbones.weights_fingerprint(
        "resnet50", True)
    for name, identity in (("resnet50", "weights_file"), ("inception_v1", "handle")):
        assert getattr(backbones.spec(name), identity) in backbones.weights_fingerprint(name, True)


def test_every_entry_states_its_accuracy_source():
    for name in backbones.names():
        described = backbones.spec(name)
        assert described.top1_source
        if described.imagenet_top1 is not None:
            assert 0.5 < described.imagenet_top1 < 0.95, name


def test_names_are_checked_without_importing_tensorflow(tmp_path):
    """A --model typo or a missing path must be answered before TensorFlow (seconds) is loaded."""
    (tmp_path / "mine.keras").write_bytes(b"")  # only looked at, never loaded, by the checks
    models_file = write_models_file(tmp_path, '[[model]]\nname = "mine"\nsource = "mine.keras"\n')
    script = f"""
import sys, time
start = time.perf_counter()
from tfbench import backbones
from tfbench.registry import UnknownNameError
assert backbones.spec("resnet50").image_size == 224 and "tiny" in backbones.names()
backbones.load_models_file({models_file!r})
assert "mine" in backbones.names()
for bad, error in (("resnet5O", UnknownNameError),
                   ({str(tmp_path / "missing.keras")!r}, backbones.ModelNotFoundError)):
    try:
        backbones.spec(bad)
    except error:
        pass
    else:
        raise AssertionError(bad)
elapsed = time.perf_counter() - start
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tensorflow_hub"))
print(elapsed, heavy)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    elapsed, heavy = result.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(elapsed) < 1.0


@pytest.mark.parametrize("given, problem", [
    ("missing.keras", "no Keras model file"),
    ("no/such/dir", "neither a SavedModel directory nor a .keras file"),
    (".", "no saved_model.pb"),
    ("hub:no/such/dir", "no SavedModel directory"),
])
def test_a_missing_model_path_is_one_line_naming_it_and_the_valid_forms(tmp_path, given, problem):
    from tfbench import runs

    path = given.replace("hub:", "hub:" + str(tmp_path) + os.sep) if given.startswith("hub:") \
        else str(tmp_path / given)
    for call in (backbones.spec, backbones.build, lambda p: backbones.weights_fingerprint(p, True)):
        with pytest.raises(backbones.ModelNotFoundError) as raised:
            call(path)
        message = str(raised.value)
        assert "\n" not in message and problem in message
        assert path.removeprefix("hub:").rstrip(os.sep + ".") in message
        for form in ("registered name", "hub:<handle", "SavedModel directory", ".keras file"):
            assert form in message
    assert issubclass(backbones.ModelNotFoundError, runs.user_errors())


# ---------------------------------------------------------------- generic input conventions

def test_range_and_mean_std_conventions_match_their_formulas():
    x = pixels(seed=4)
    for (low, high) in ((0, 1), (-1, 1), (0, 255), (-0.5, 2)):
        layer = InputScaling(conventions.from_range(low, high))
        np.testing.assert_allclose(numpy(layer(x)), low + x / 255.0 * (high - low), rtol=1e-5, atol=1e-4)
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    layer = InputScaling(conventions.from_mean_std(mean, std))
    np.testing.assert_allclose(numpy(layer(x)), (x / 255.0 - mean) / std, rtol=1e-5, atol=1e-4)
    assert layer.mode is None
    # A range that is a named convention gets its name's description, hence the same cache key.
    assert conventions.from_range(0, 1).description == conventions.named("unit").description
    assert conventions.from_range(-1, 1).description == conventions.named("tf").description
    for bad, message in (((1, 0), "lo < hi"), ((0, float("inf")), "finite")):
        with pytest.raises(ValueError, match=message):
            conventions.from_range(*bad)
    with pytest.raises(ValueError, match="3 values"):
        conventions.from_mean_std([0.5, 0.5], [0.2, 0.2])
    with pytest.raises(ValueError, match="positive"):
        conventions.from_mean_std([0.5] * 3, [0.2, 0.0, 0.2])


def test_generic_and_named_scaling_survive_saving(tmp_path):
    x = pixels(seed=6)
    for mode in ("caffe", conventions.from_mean_std([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])):
        inputs = keras.Input((9, 9, 3))
        model = keras.Model(inputs, InputScaling(mode)(inputs))
        path = str(tmp_path / "scaling.keras")
        model.save(path)
        np.testing.assert_allclose(numpy(keras.saving.load_model(path)(x)), numpy(model(x)), rtol=1e-6)
    # the config written by earlier versions: {"mode": "<name>"}
    restored = InputScaling.from_config({"name": "input_scaling", "mode": "torch"})
    assert restored.mode == "torch"


# ---------------------------------------------------------------- models files

@pytest.fixture
def models_registry(monkeypatch):
    """A fresh registry of models-file models for each test."""
    monkeypatch.setattr(user_models, "MODELS", Registry("model"))


def write_models_file(folder, text):
    path = folder / "models.toml"
    path.write_text(text)
    return str(path)


def test_models_file_names_a_keras_model_with_top1_and_input_range(tmp_path, models_registry):
    (tmp_path / "nets").mkdir()
    network = conv_features()
    network.save(str(tmp_path / "nets" / "mine.keras"))
    path = write_models_file(tmp_path, """
[[model]]
name = "my_net"
source = "nets/mine.keras"
display_name = "My Net (ours)"
imagenet_top1 = 0.771
top1_source = "measured on ImageNet val by its authors"
input_range = [-1, 1]

[[model]]
name = "my_net_torch"
source = "nets/mine.keras"
input_mean = [0.485, 0.456, 0.406]
input_std = [0.229, 0.224, 0.225]
""")
    entries = backbones.load_models_file(path)
    assert [e.name for e in entries] == ["my_net", "my_net_torch"]
    assert backbones.load_models_file(path) == entries  # loading again is harmless
    assert backbones.names()[-2:] == ["my_net", "my_net_torch"]

    described = backbones.spec("my_net")
    assert (described.name, described.display_name, described.imagenet_top1) == (
        "my_net", "My Net (ours)", 0.771)
    assert described.top1_source == "measured on ImageNet val by its authors"
    assert (described.image_size, described.feature_dim, described.input_scaling) == (224, 6, "[-1, 1]")

    x = pixels(n=3, size=20)
    model = backbones.build("my_net", image_size=20)
    expected = numpy(network(x / 127.5 - 1)).mean(axis=(1, 2))
    np.testing.assert_allclose(numpy(model(x)), expected, rtol=1e-5, atol=1e-5)
    torch_scaled = (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(numpy(backbones.build("my_net_torch", image_size=20)(x)),
                               numpy(network(torch_scaled)).mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    assert backbones.spec("my_net_torch").input_scaling != described.input_scaling
    assert backbones.spec("my_net_torch").imagenet_top1 is None

    with open(tmp_path / "nets" / "mine.keras", "rb") as saved:
        sha256 = hashlib.sha256(saved.read()).hexdigest()
    assert backbones.weights_fingerprint("my_net", True) == f"keras_file:sha256:{sha256}"


@pytest.mark.parametrize("entry, message", [
    ('source = "a.keras"', "name must be a non-empty string"),
    ('name = "a b"\nsource = "a.keras"', "may hold only letters"),
    ('name = "resnet50"\nsource = "a.keras"', "'resnet50' is a registered model"),
    ('name = "x"\nsource = "a.keras"\ncolour = "red"', "unknown keys colour; valid keys: name"),
    ('name = "x"\nsource = "missing.keras"', "no Keras model file"),
    ('name = "x"\nsource = "a.keras"\nimagenet_top1 = 77.1\ntop1_source = "paper"', "fraction in"),
    ('name = "x"\nsource = "a.keras"\nimagenet_top1 = 0.7', "needs a top1_source"),
    ('name = "x"\nsource = "a.keras"\ninput_range = [1, 0]', "lo < hi"),
    ('name = "x"\nsource = "a.keras"\ninput_range = [0, 1]\ninput_mean = [0.5, 0.5, 0.5]',
     "either input_range"),
    ('name = "x"\nsource = "a.keras"\ninput_mean = [0.5, 0.5]\ninput_std = [0.2, 0.2]', "3 values"),
    ('name = "x"\nsource = "a.keras"\n[[model]]\nname = "x"\nsource = "a.keras"', "given twice"),
])
def test_models_file_errors_are_one_line_naming_file_and_entry(tmp_path, models_registry, entry,
                                                               message):
    conv_features().save(str(tmp_path / "a.keras"))
    path = write_models_file(tmp_path, "[[model]]\n" + entry + "\n")
    with pytest.raises(backbones.ModelsFileError) as raised:
        backbones.load_models_file(path)
    text = str(raised.value)
    assert message in text and path in text and "\n" not in text, text
    assert user_models.MODELS.names() == []  # nothing registered from a file with an error


def test_unreadable_models_files_are_one_line(tmp_path, models_registry):
    from tfbench import runs

    for text, message in (("[[model]\n", "cannot read models file"),
                          ('name = "x"\n', r"one \[\[model\]\] table per model")):
        with pytest.raises(backbones.ModelsFileError, match=message):
            backbones.load_models_file(write_models_file(tmp_path, text))
    with pytest.raises(backbones.ModelsFileError, match="no models file"):
        backbones.load_models_file(str(tmp_path / "absent.toml"))
    assert issubclass(backbones.ModelsFileError, runs.user_errors())
