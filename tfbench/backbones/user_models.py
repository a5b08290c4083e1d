"""Models a user brings: `hub:<handle>`, a SavedModel directory, a `.keras` file, and a models file
that gives them a name, a display name, an ImageNet top-1 and their input convention.

Forms of `--model` besides a registered name:
  - "hub:<handle>" or a local SavedModel directory: a reusable TF2 SavedModel (callable root, image
    feature vector output) fed [0, 1] images, TF-Hub's image convention, unless a models file says
    otherwise. It cannot be re-initialised, so `pretrained=False` is an error.
  - "<path>.keras": a Keras *feature* model; by default it takes [0, 255] images and scales them
    itself. An output of rank > 2 is globally average-pooled. A file whose last layer is a softmax
    or sigmoid classifier is refused (save the model without its classification head).
    `pretrained=False` clones the architecture with fresh weights.
  For both, S is the model's static input size if it has one (another `image_size` is an error),
  else `image_size`, else 224.

A Keras model object (the Python API, `tfbench.probe(model, ...)`) is saved once as a `.keras`
file and registered under `<its name>-<digest>`, the digest being of its architecture and weights
(`model_digest`), so the same network asks for the same run again in any session.

A models file (TOML) names such models so that runs, the sweep and the report treat them like
registered ones:

    [[model]]
    name = "my_net"                       # what --model takes; letters, digits, _ . -
    source = "models/my_net.keras"         # a path (relative to this file) or "hub:<handle>"
    display_name = "My Net (ours)"        # optional: how reports and figures name it
    imagenet_top1 = 0.771                  # optional, a fraction; needs top1_source
    top1_source = "measured with ..."
    input_range = [-1, 1]                  # or input_mean = [r, g, b] and input_std = [r, g, b]
                                           # (on pixels in [0, 1]); default: the source's own

This module imports neither TensorFlow nor Keras until a model is built, so a wrong path or a
wrong models-file entry is reported before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from tfbench import files
from tfbench.backbones import catalog, conventions
from tfbench.backbones.catalog import DEFAULT_IMAGE_SIZE, SAVED_MODEL_SCALING, BackboneSpec
from tfbench.backbones.conventions import InputConvention
from tfbench.backbones.errors import ModelNotFoundError, ModelsFileError
from tfbench.registry import Registry

HUB_PREFIX = "hub:"
KERAS_SUFFIX = ".keras"
KERAS_FILE_SCALING = "inside model (a .keras file must scale [0, 255] input itself)"
UNKNOWN_TOP1 = "unknown: a model supplied by path or handle"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ENTRY_KEYS = ("name", "source", "display_name", "imagenet_top1", "top1_source", "input_range",
              "input_mean", "input_std")


@dataclass(frozen=True)
class UserModel:
    """A model named in a models file. `scaling` None: the source's default convention."""

    name: str
    source: str  # "hub:<handle>", a SavedModel directory or a .keras path (absolute)
    display_name: Optional[str] = None
    imagenet_top1: Optional[float] = None
    top1_source: str = UNKNOWN_TOP1
    scaling: Optional[InputConvention] = None


MODELS: Registry[UserModel] = Registry("model", "python -m tfbench.probe --model=list lists them")


# ---------------------------------------------------------------------------------------------
# Sources


def locate(source: str) -> Optional[Tuple[str, str]]:
    """("hub" | "saved_model" | "keras_file", location), or None if `source` is not a path form.

    Raises ModelNotFoundError for a path that is not there or is not a model.
    """
    if source.startswith(HUB_PREFIX):
        location = source[len(HUB_PREFIX):]
        if not catalog.is_remote(location):
            _check_saved_model_dir(location)
        return "hub", location
    if source.endswith(KERAS_SUFFIX):
        if not os.path.isfile(source):
            raise ModelNotFoundError(source, "no Keras model file")
        return "keras_file", source
    if os.path.isdir(source):
        _check_saved_model_dir(source)
        return "saved_model", source
    if os.sep in source:
        raise ModelNotFoundError(source, "neither a SavedModel directory nor a .keras file")
    return None


def _check_saved_model_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise ModelNotFoundError(path, "no SavedModel directory")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ModelNotFoundError(path, "not a SavedModel directory (no saved_model.pb)")


def _convention_of(kind: str, user: Optional[UserModel]) -> Optional[InputConvention]:
    """The models file's convention, else the source's: a .keras file scales its own input."""
    if user and user.scaling:
        return user.scaling
    return None if kind == "keras_file" else SAVED_MODEL_SCALING


def _model_name(location: str) -> str:
    """A Keras-safe model name from a path or URL ('/a/b/model.keras' -> 'model')."""
    base = os.path.basename(location.rstrip("/")).removesuffix(KERAS_SUFFIX)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "backbone"


def build(source: str, pretrained: bool, image_size: Optional[int],
          user: Optional[UserModel] = None):
    """The backbone of a path form (see the module docstring), scaled as `user` says if given."""
    kind, location = locate(source)
    scaling = _convention_of(kind, user)
    name = user.name if user and NAME_PATTERN.fullmatch(user.name) else _model_name(location)
    if kind == "keras_file":
        return _build_keras_file(location, name, pretrained, image_size, scaling)
    from tfbench.backbones import hub_layer

    return hub_layer.build(location, name, pretrained, image_size, DEFAULT_IMAGE_SIZE, scaling)


def spec(source: str, user: Optional[UserModel] = None) -> BackboneSpec:
    """The spec of a path form; the model is built (a remote handle downloaded) to read its input
    size and feature dimension."""
    kind, location = locate(source)
    model = build(source, True, None, user)
    scaling = _convention_of(kind, user)
    description = KERAS_FILE_SCALING if scaling is None else conventions.describe(scaling)
    return BackboneSpec(
        name=user.name if user else source, source=kind, image_size=int(model.input_shape[1]),
        feature_dim=int(model.output_shape[-1]),
        imagenet_top1=user.imagenet_top1 if user else None,
        top1_source=user.top1_source if user else UNKNOWN_TOP1,
        input_scaling=description, scaling=scaling, handle=location,
        display_name=user.display_name if user else None,
    )


def weights_fingerprint(source: str) -> str:
    """The pretrained weights' identity: a remote handle's URL, else the files' content digest."""
    kind, location = locate(source)
    if kind == "hub" and catalog.is_remote(location):
        return f"hub:{location}"
    content = "keras_file" if kind == "keras_file" else "saved_model"
    return f"{content}:sha256:{files.tree_digest(location)}"


def _build_keras_file(path: str, name: str, pretrained: bool, image_size: Optional[int],
                      scaling: Optional[InputConvention]):
    import keras

    from tfbench.backbones.hub_layer import SavedModelLayer
    from tfbench.backbones.scaling import InputScaling

    # A backbone that tfbench fine-tuned and saved holds tfbench's own layers.
    tfbench_layers = {"tfbench>InputScaling": InputScaling, "tfbench>SavedModelLayer": SavedModelLayer}
    network = keras.saving.load_model(path, custom_objects=tfbench_layers, compile=False)
    if len(network.inputs) != 1 or len(network.outputs) != 1:
        raise ValueError(f"{path} must have one image input and one feature output")
    last = network.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if isinstance(last, keras.layers.Softmax) or activation in ("softmax", "sigmoid"):
        raise ValueError(
            f"{path} ends in a {last.name!r} classifier layer; tfbench needs a "
            "feature model: save the network without its classification head (e.g. "
            "include_top=False, pooling='avg')"
        )
    if not pretrained:
        network = keras.models.clone_model(network)
    _, height, width, _ = network.inputs[0].shape
    if height != width:
        raise ValueError(f"{path} takes {height}x{width} images; tfbench feeds square images")
    size = catalog.input_size(path, height, image_size, DEFAULT_IMAGE_SIZE)
    images = keras.Input((size, size, 3), name="images")
    features = network(images if scaling is None else InputScaling(scaling)(images))
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D()(features)
    elif len(features.shape) == 3:
        features = keras.layers.GlobalAveragePooling1D()(features)
    elif len(features.shape) != 2:
        raise ValueError(f"{path} outputs rank-{len(features.shape)} tensors; expected rank 2 to 4")
    return keras.Model(images, features, name=name)


# ---------------------------------------------------------------------------------------------
# Models files


def load_models_file(path: str) -> List[UserModel]:
    """Reads a models file, checks every entry and registers it; returns the entries in order.

    Loading the same entries again is harmless; a name that is registered already (in the catalog
    or, differently, by another models file) is an error. Raises ModelsFileError, one line naming
    the file, the entry and the problem.
    """
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ModelsFileError(f"no models file {path!r}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ModelsFileError(f"cannot read models file {path!r}: {' '.join(str(error).split())}") from None
    unknown = sorted(set(document) - {"model"})
    if unknown or not isinstance(document.get("model"), list) or not document["model"]:
        raise ModelsFileError(
            f"models file {path!r} must hold one [[model]] table per model"
            + (f"; unknown top-level keys: {', '.join(unknown)}" if unknown else "")
        )
    folder = os.path.dirname(os.path.abspath(path))
    entries: List[UserModel] = []
    for index, table in enumerate(document["model"], start=1):
        label = f"{path!r}, model {table.get('name', f'#{index}')!r}"
        try:
            entry = _entry(table, folder)
        except (ValueError, TypeError, ModelNotFoundError) as error:
            raise ModelsFileError(f"models file {label}: {error}") from None
        if entry.name in {e.name for e in entries}:
            raise ModelsFileError(f"models file {label}: the name is given twice")
        entries.append(entry)
    for entry in entries:
        _register(entry, path)
    return entries


def describe_source(source: str, fields: Mapping[str, Any]) -> None:
    """Give a path-form model, under the very name --model gives it, what a models-file entry would
    (display_name, imagenet_top1 with top1_source, input_range or input_mean/input_std): the
    command-line way for a single model. Raises ModelsFileError naming the bad value."""
    table = {"name": "command_line", "source": source,
             **{key: value for key, value in fields.items() if value is not None}}
    try:
        entry = _entry(table, os.getcwd())
    except (ValueError, TypeError) as error:
        raise ModelsFileError(f"--model={source}: {error}") from None
    _register(dataclasses.replace(entry, name=source), "the command line")


MODEL_OBJECTS_DIR = "models"  # under an output root: the .keras files of model objects


def register_model_object(model, output_dir: str, description: Mapping[str, Any]) -> str:
    """Save a Keras feature model as `<output_dir>/models/<name>.keras` (unless there already) and
    register it, described as a models-file entry would be; returns the name runs know it by.

    The name is the model's own (a Keras default such as "functional_3" without its counter) and
    the first 12 hex digits of `model_digest`, so rebuilding the same network, in this session or
    another, finds its finished runs. The model object itself is never trained: runs load the file.
    Registering the name again (another output root, another description) replaces the entry:
    the name stands for the same architecture and weights.
    """
    base = _stable_name(model)
    name = f"{base}-{model_digest(model)[:12]}"
    path = os.path.abspath(os.path.join(output_dir, MODEL_OBJECTS_DIR, name + KERAS_SUFFIX))
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = os.path.join(os.path.dirname(path), f".{name}.{os.getpid()}{KERAS_SUFFIX}")
        model.save(partial)
        os.replace(partial, path)
    try:
        entry = _entry({"name": name, "source": path, "display_name": base, **description},
                       os.getcwd())
    except (ValueError, TypeError) as error:
        raise ModelsFileError(f"model {name!r}: {error}") from None
    MODELS.replace(name, entry)
    return name


def model_digest(model) -> str:
    """sha256 of a Keras model's architecture (its config) and weights, blind to the names Keras
    makes up ("dense_3" on a second build): every layer name is replaced by its position."""
    import numpy as np

    positions = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        positions.setdefault(layer.name, f"layer{len(positions)}")

    def renamed(value):
        if isinstance(value, Mapping):
            return {key: renamed(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [renamed(item) for item in value]
        return positions.get(value, value) if isinstance(value, str) else value

    try:
        config = model.get_config()
    except NotImplementedError:  # a subclassed model without get_config: its class stands for it
        config = type(model).__qualname__
    digest = hashlib.sha256(json.dumps(renamed(config), sort_keys=True, default=str).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _stable_name(model) -> str:
    """The model's name, without the counter Keras appends to a default one ("functional_3")."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name).lstrip(".-") or "model"
    default = re.sub(r"(?<!^)(?=[A-Z])", "_", type(model).__name__).lower()
    return re.sub(r"_\d+$", "", name) if name.startswith(default) else name


def _register(entry: UserModel, path: str) -> None:
    if entry.name in catalog.REGISTRY:
        raise ModelsFileError(f"models file {path!r}: {entry.name!r} is a registered model; "
                              "choose another name")
    if entry.name in MODELS:
        if MODELS.get(entry.name) != entry:
            raise ModelsFileError(f"models file {path!r}: model {entry.name!r} is already "
                                  "defined differently by another models file")
        return
    MODELS.register(entry.name, entry)


def _entry(table: Mapping[str, Any], folder: str) -> UserModel:
    if not isinstance(table, Mapping):
        raise ValueError("each [[model]] must be a table")
    unknown = sorted(set(table) - set(ENTRY_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {', '.join(unknown)}; valid keys: {', '.join(ENTRY_KEYS)}")
    name = _text(table, "name", required=True)
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name {name!r} may hold only letters, digits, '_', '.' and '-'")
    source = _resolve_source(_text(table, "source", required=True), folder)
    if locate(source) is None:
        raise ValueError(f"source {source!r} is not a path or hub:<handle>")
    top1 = table.get("imagenet_top1")
    if top1 is not None:
        if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not 0 < top1 <= 1:
            raise ValueError(f"imagenet_top1 must be a fraction in (0, 1] (e.g. 0.771), got {top1!r}")
        if not _text(table, "top1_source"):
            raise ValueError("imagenet_top1 needs a top1_source saying where the figure comes from")
    return UserModel(
        name=name, source=source, display_name=_text(table, "display_name") or None,
        imagenet_top1=None if top1 is None else float(top1),
        top1_source=_text(table, "top1_source") or UNKNOWN_TOP1,
        scaling=_scaling(table),
    )


def _text(table: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = table.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string" + ("" if value is None else f", got {value!r}"))
    return value


def _resolve_source(source: str, folder: str) -> str:
    """Relative paths are relative to the models file, so the file works from any directory."""
    if source.startswith(HUB_PREFIX):
        location = source[len(HUB_PREFIX):]
        if catalog.is_remote(location):
            return source
        return HUB_PREFIX + os.path.join(folder, os.path.expanduser(location))
    return os.path.join(folder, os.path.expanduser(source))


def _scaling(table: Mapping[str, Any]) -> Optional[InputConvention]:
    given = {key for key in ("input_range", "input_mean", "input_std") if key in table}
    if not given:
        return None
    if given == {"input_range"}:
        bounds = table["input_range"]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ValueError(f"input_range must be [lo, hi], got {bounds!r}")
        return conventions.from_range(*_numbers(bounds, "input_range"))
    if given == {"input_mean", "input_std"}:
        return conventions.from_mean_std(_numbers(table["input_mean"], "input_mean"),
                                         _numbers(table["input_std"], "input_std"))
    raise ValueError("give either input_range = [lo, hi] or both input_mean and input_std")


def _numbers(values: Any, key: str) -> List[float]:
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"{key} must be a list of numbers, got {values!r}")
    return [float(v) for v in values]

