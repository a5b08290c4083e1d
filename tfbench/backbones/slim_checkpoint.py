"""TF-Slim ImageNet checkpoints: fetched once, verified, and imported tensor by tensor into the
Keras models of tfbench.backbones.inception.

Where the checkpoint lives: ``<cache>/weights/<checkpoint>/<file>`` (``<cache>`` =
``$TFBENCH_CACHE`` or ``~/.cache/tfbench``), e.g.
``~/.cache/tfbench/weights/inception_v4_2016_09_09/inception_v4.ckpt``. With network, the slim
tarball is downloaded by tfbench.datasets.fetch (retries, atomic write), the checkpoint file
extracted from it atomically and the tarball removed. No checksum of the tarball is published, so
the extracted file gets a fingerprint (size and sha256, ``<file>.fingerprint.json``) when it is
written, and is checked against it before every use: one damaged since is reported in one warning,
discarded and fetched again. A file a user put there by hand has no fingerprint yet; it is
fingerprinted on first use. Either way the import itself is the content check: every tensor of
the checkpoint must map onto a Keras weight of the same shape, and every Keras weight must get
one, or the import fails in one line.

Offline, a missing checkpoint raises WeightsUnavailableError naming the file and where to put it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
from typing import Dict, Optional, Tuple

import keras

from tfbench import cli, files
from tfbench.backbones.errors import WeightMappingError, WeightsUnavailableError
from tfbench.registry import Registry

FINGERPRINT_SUFFIX = ".fingerprint.json"
# Bookkeeping a slim training run saves beside the model's variables; never a model weight.
BOOKKEEPING = {"global_step": ()}
# Keras weight name -> the last component of slim's variable name.
_SLIM_VARIABLE = {"kernel": "weights", "bias": "biases", "beta": "beta",
                  "moving_mean": "moving_mean", "moving_variance": "moving_variance"}



@dataclasses.dataclass(frozen=True)
class SlimCheckpoint:
    """A slim checkpoint: its tarball, the checkpoint file inside it, the variable scope its
    network was built under, and the tensors it holds that tfbench does not use (name -> shape;
    the auxiliary classifier, only used in training), which must still have their slim shapes."""

    name: str
    url: str
    member: str
    scope: str
    unused: Tuple[Tuple[str, Tuple[int, ...]], ...] = ()


def _batch_norm(scope: str, channels: int):
    return tuple((f"{scope}/BatchNorm/{variable}", (channels,))
                 for variable in ("beta", "moving_mean", "moving_variance"))


_V4_AUX = "InceptionV4/AuxLogits"
CHECKPOINTS: Registry[SlimCheckpoint] = Registry("slim checkpoint")
CHECKPOINTS.register("inception_v4", SlimCheckpoint(
    name="inception_v4_2016_09_09",
    url="http://download.tensorflow.org/models/inception_v4_2016_09_09.tar.gz",
    member="inception_v4.ckpt",
    scope="InceptionV4",
    # slim inception_v4's AuxLogits head at 299 px: 17x17 Mixed_6h, 5x5/3 average pool -> 5x5.
    unused=((f"{_V4_AUX}/Conv2d_1b_1x1/weights", (1, 1, 1024, 128)),
            *_batch_norm(f"{_V4_AUX}/Conv2d_1b_1x1", 128),
            (f"{_V4_AUX}/Conv2d_2a/weights", (5, 5, 128, 768)),
            *_batch_norm(f"{_V4_AUX}/Conv2d_2a", 768),
            (f"{_V4_AUX}/Aux_logits/weights", (768, 1001)),
            (f"{_V4_AUX}/Aux_logits/biases", (1001,))),
))


def checkpoint_file(model: str, cache_dir: Optional[str] = None) -> str:
    """Where the checkpoint of ``model`` is (or will be) kept."""
    checkpoint = CHECKPOINTS.get(model)
    return os.path.join(cache_dir or files.cache_root(), "weights", checkpoint.name,
                        checkpoint.member)


def checkpoint_path(model: str, cache_dir: Optional[str] = None, fetch_options=None,
                    get=None) -> str:
    """The verified checkpoint of ``model``, downloaded and extracted first if it is not there.

    ``fetch_options`` and ``get`` are tfbench.datasets.fetch's (attempts, timeout; the HTTP GET).
    Raises WeightsUnavailableError when it is absent and cannot be downloaded.
    """
    path = checkpoint_file(model, cache_dir)
    if _trusted(path):
        return path
    _download(CHECKPOINTS.get(model), path, fetch_options, get)
    return path


def _fingerprint_file(path: str) -> str:
    return path + FINGERPRINT_SUFFIX


def _trusted(path: str) -> bool:
    """Whether the checkpoint is there and sound; one put there by hand is fingerprinted now, one
    that no longer matches its fingerprint is discarded with a warning."""
    if not os.path.exists(path):
        return False
    try:
        with open(_fingerprint_file(path)) as stream:
            expected = json.load(stream)
    except FileNotFoundError:
        files.write_json_atomic(_fingerprint_file(path), files.fingerprint(path))
        return True
    except (OSError, ValueError) as error:
        problem: Optional[str] = f"its fingerprint file cannot be read ({type(error).__name__})"
    else:
        problem = files.fingerprint_mismatch(path, expected)
    if problem is None:
        return True
    cli.warn(f"checkpoint {path} is damaged ({problem}); discarding it and fetching it again")
    for stale in (path, _fingerprint_file(path)):
        if os.path.exists(stale):
            os.remove(stale)
    return False


def _download(checkpoint: SlimCheckpoint, path: str, fetch_options, get) -> None:
    """Fetch the tarball beside ``path``, extract the checkpoint file atomically, fingerprint it,
    and remove the tarball."""
    from tfbench.datasets import fetch

    archive = os.path.join(os.path.dirname(path), os.path.basename(checkpoint.url))
    options = fetch_options or fetch.FetchOptions(workers=1, timeout=120.0, progress=False)
    try:
        fetch.fetch_file(checkpoint.url, archive, options, **({"get": get} if get else {}))
        with tarfile.open(archive) as tar:
            member = tar.extractfile(checkpoint.member)
            files.write_atomic(path, lambda handle: shutil.copyfileobj(member, handle))
    except (OSError, tarfile.TarError, KeyError, AttributeError) as error:
        raise WeightsUnavailableError(
            f"cannot obtain {checkpoint.member} ({' '.join(str(error).split())[:200]}); download "
            f"{checkpoint.url} yourself and put the {checkpoint.member} it contains at {path}"
        ) from error
    files.write_json_atomic(_fingerprint_file(path), files.fingerprint(path))
    for done in (archive, archive + fetch.FINGERPRINT_SUFFIX):
        if os.path.exists(done):
            os.remove(done)


def load(model: keras.Model, model_name: str) -> None:
    """Import the checkpoint of ``model_name`` into ``model``, fetching it first if needed.

    A checkpoint that does not fit is a wrong or damaged file in the user's cache, so it is
    reported as WeightsUnavailableError (one line, what to replace it with), which the binaries
    print as it is.
    """
    path = checkpoint_path(model_name)
    try:
        assign(model, path, model_name)
    except WeightMappingError as error:
        checkpoint = CHECKPOINTS.get(model_name)
        raise WeightsUnavailableError(
            f"{error}; replace {path} with the {checkpoint.member} of {checkpoint.url}") from error


def slim_name(scope: str, weight: keras.Variable, layer: keras.layers.Layer) -> str:
    """The slim variable that fills ``weight`` of ``layer`` (named by its slim scope, "." for "/")."""
    if weight.name not in _SLIM_VARIABLE:
        raise WeightMappingError(f"Keras weight {weight.path!r} has no slim counterpart")
    return f"{scope}/{layer.name.replace('.', '/')}/{_SLIM_VARIABLE[weight.name]}"


def assign(model: keras.Model, path: str, model_name: str) -> None:
    """Copy the slim checkpoint at ``path`` into ``model``, one tensor per Keras weight.

    Raises WeightMappingError in one line on a Keras weight without its tensor, a tensor of another
    shape, or a checkpoint tensor that fills no weight (other than the checkpoint's declared
    unused tensors, whose shapes are checked too, and slim's global_step).
    """
    import tensorflow as tf

    checkpoint = CHECKPOINTS.get(model_name)
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as error:
        raise WeightMappingError(f"{path} is not a readable TensorFlow checkpoint "
                                 f"({' '.join(str(error).split())[:200]})") from error
    shapes: Dict[str, Tuple[int, ...]] = {name: tuple(shape) for name, shape
                                          in reader.get_variable_to_shape_map().items()}
    expected_unused = {**BOOKKEEPING, **dict(checkpoint.unused)}
    assignments = []
    for layer in model.layers:
        for weight in layer.weights:
            name = slim_name(checkpoint.scope, weight, layer)
            _check_shape(path, name, shapes.get(name), tuple(weight.shape), weight.path)
            assignments.append((weight, name))
    for name, shape in expected_unused.items():
        if name in shapes:
            _check_shape(path, name, shapes[name], shape, "slim's definition")
    unmapped = sorted(set(shapes) - {name for _, name in assignments} - set(expected_unused))
    if unmapped:
        raise WeightMappingError(f"{path}: {len(unmapped)} tensors fill no weight of "
                                 f"{model_name}, e.g. {unmapped[:3]}")
    for weight, name in assignments:
        weight.assign(reader.get_tensor(name))


def _check_shape(path: str, name: str, found, wanted: Tuple[int, ...], owner: str) -> None:
    if found is None:
        raise WeightMappingError(f"{path} has no tensor {name!r} (for {owner})")
    if tuple(found) != tuple(wanted):
        raise WeightMappingError(f"{path}: tensor {name!r} has shape {tuple(found)}, "
                                 f"{owner} needs {tuple(wanted)}")
