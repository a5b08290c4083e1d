"""A Keras 3 layer around a TF2 SavedModel (TF-Hub's reusable SavedModel API).

Why not the stock routes: `hub.KerasLayer` is a tf_keras layer and fails inside Keras 3 models;
`keras.layers.TFSMLayer` keeps the ":0" suffix in its variable names (optimizer slot creation then
fails) and only calls the inference endpoint, so batch-norm statistics never update.

This layer loads the SavedModel with `hub.load` and re-exposes the SavedModel's own variables as
Keras variables that share their storage (a `keras.Variable` built from a `tf.Variable` wraps that
very variable), so the optimizer updates exactly the variables the SavedModel's functions read,
and `model.save()` stores them. It calls the loaded object with `training=` when its `__call__`
accepts it, so batch-norm statistics update while fine-tuning.
"""

from __future__ import annotations

import inspect
from typing import Optional

import keras
import tensorflow_hub as hub


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
