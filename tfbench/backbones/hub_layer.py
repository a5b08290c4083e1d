"""A Keras 3 layer around a TF2 SavedModel (TF-Hub's reusable SavedModel API).

Why not the stock routes: `hub.KerasLayer` is a tf_keras layer and fails inside Keras 3 models;
`keras.layers.TFSMLayer` keeps the ":0" suffix in its variable names (optimizer slot creation then
fails) and only calls the inference endpoint, so batch-norm statistics never update.

This layer loads the SavedModel with `hub.load` and re-exposes the SavedModel's own variables as
Keras variables that share their storage (a `keras.Variable` built from a `tf.Variable` wraps that
very variable), so the optimizer updates exactly the variables the SavedModel's functions read,
and `model.save()` stores them. It calls the loaded object with `training=` when its `__call__`
accepts it, so batch-norm statistics update while fine-tuning.

`build` wraps it into a backbone: [0, 255] images -> scaling -> SavedModel features; it serves the
registered TF-Hub entries and a user's `hub:<handle>` or SavedModel directory alike.
"""

from __future__ import annotations

import inspect
import os
from typing import Optional

import keras
import tensorflow_hub as hub

from tfbench.backbones.catalog import input_size, is_remote
from tfbench.backbones.conventions import InputConvention
from tfbench.backbones.errors import WeightsUnavailableError, one_line
from tfbench.backbones.scaling import InputScaling


def _keras_variable_name(tf_variable_name: str) -> str:
    """'block/conv/kernel:0' -> 'block_conv_kernel': Keras names may hold neither ':' nor '/'."""
    return tf_variable_name.split(":")[0].replace("/", "_")


def _accepts_training(loaded) -> bool:
    try:
        return "training" in inspect.signature(loaded.__call__).parameters
    except (TypeError, ValueError):
        return False


@keras.saving.register_keras_serializable(package="tfbench")
class SavedModelLayer(keras.layers.Layer):
    """Calls a reusable TF2 SavedModel (callable root with `variables`) as a Keras 3 layer.

    Args:
      handle: a TF-Hub handle/URL or a local SavedModel directory (anything `hub.load` accepts).
      trainable: whether the SavedModel's trainable variables are trained. A frozen layer also runs
        the SavedModel in inference mode (like a frozen `BatchNormalization`), whatever the
        surrounding model's `training` flag.

    The layer computes in float32 whatever the global dtype policy, because the SavedModel's
    functions were traced for float32 inputs. The SavedModel's own `regularization_losses` are not
    added: weight decay is the training loop's job, and adding both would count it twice.
    """

    def __init__(self, handle: str, trainable: bool = True, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self._loaded = hub.load(handle)
        if not callable(self._loaded) or not hasattr(self._loaded, "variables"):
            raise ValueError(
                f"SavedModel {handle!r} does not follow the reusable SavedModel API (a callable "
                "root object with a `variables` list); export a model whose root is callable"
            )
        self._passes_training = _accepts_training(self._loaded)

    def build(self, input_shape):
        """Wraps (never copies) the SavedModel's variables, mirroring which ones are trainable."""
        trainable_ids = {id(v) for v in getattr(self._loaded, "trainable_variables", [])}
        self._saved_model_variables = [
            keras.Variable(
                initializer=variable,
                trainable=id(variable) in trainable_ids,
                name=_keras_variable_name(variable.name),
            )
            for variable in self._loaded.variables
        ]
        if not self.trainable:  # what Layer.add_weight does for a layer built frozen
            for variable in self._saved_model_variables:
                variable.trainable = False

    @property
    def saved_model(self):
        """The loaded SavedModel; its functions read the very variables this layer exposes."""
        return self._loaded

    def static_image_size(self) -> Optional[int]:
        """The square input size every traced `__call__` signature fixes, or None if it varies."""
        sizes = set()
        for function in getattr(self._loaded.__call__, "concrete_functions", []):
            args, _ = function.structured_input_signature
            shape = getattr(args[0], "shape", None) if args else None
            if shape is None or shape.rank != 4:
                return None
            sizes.add((shape[1], shape[2]))
        if len(sizes) == 1:
            height, width = sizes.pop()
            if height is not None and height == width:
                return int(height)
        return None

    def call(self, images, training=None):
        if self._passes_training:
            return self._loaded(images, training=bool(training) and self.trainable)
        return self._loaded(images)

    def get_config(self):
        config = super().get_config()
        config["handle"] = self.handle
        return config


def build(handle: str, name: str, pretrained: bool, image_size: Optional[int],
          native_size: int, scaling: InputConvention) -> keras.Model:
    """A trainable feature extractor around the SavedModel at `handle` (remote ones downloaded).

    S is the SavedModel's static input size if it has one (another `image_size` is an error),
    else `image_size`, else `native_size`.
    """
    if not pretrained:
        raise ValueError(
            f"pretrained=False is not available for SavedModel {handle!r}: a SavedModel does not "
            "keep its initialisers; use a Keras Application or a .keras file to train from scratch"
        )
    if is_remote(handle):
        _download(handle)
    layer = SavedModelLayer(handle, trainable=True, name=f"{name}_saved_model")
    size = input_size(handle, layer.static_image_size(), image_size, native_size)
    images = keras.Input((size, size, 3), name="images")
    features = layer(InputScaling(scaling)(images))
    return keras.Model(images, features, name=name)


def _download(handle: str) -> None:
    """Downloads a remote handle into the TF-Hub cache, failing with a usable message offline."""
    try:
        hub.resolve(handle)
    except Exception as error:  # any download failure: DNS, HTTP, blocked socket, disk
        raise WeightsUnavailableError(
            f"cannot fetch TF-Hub model {handle} ({one_line(error)}); download the SavedModel "
            "and pass its directory instead (e.g. --model=/path/to/saved_model), or set "
            f"TFHUB_CACHE_DIR (now {os.environ.get('TFHUB_CACHE_DIR', 'unset')}) to a cache that "
            "already holds it"
        ) from error
