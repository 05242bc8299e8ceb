"""Registers the ``tf`` frontend. Importing this module does not import TensorFlow: `byteir list-plugins` stays
fast, and a model object is recognised only when the user's process has already imported TensorFlow or Keras."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from byteir_core import hookimpl
from byteir_core.interfaces import Frontend

BYTEIR_PLUGIN_API = "1.0"


def is_saved_model(path) -> bool:
    """A SavedModel directory (it holds ``saved_model.pb`` or ``.pbtxt``), or that ``saved_model.pb`` itself."""
    p = Path(path)
    if p.name in ("saved_model.pb", "saved_model.pbtxt") and p.is_file():
        return True
    return p.is_dir() and ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file())


def is_tf_callable(model) -> bool:
    """A ``tf.function``, one of its concrete functions, or a Keras model (whatever its backend: the importer
    says so when it is not TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            if isinstance(model, (tf.types.experimental.PolymorphicFunction,
                                  tf.types.experimental.ConcreteFunction)):
                return True
        except AttributeError:  # an older TensorFlow without these types
            pass
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, getattr(keras, "Model", ()))


class TensorFlowFrontend(Frontend):
    """TensorFlow/Keras -> StableHLO (:mod:`byteir_frontend_tf.importer`)."""

    name = "tf"
    description = ("TensorFlow: a tf.function or Keras 3 model with example inputs, or a SavedModel directory "
                   "(its serving signature), via TensorFlow's XLA bridge")
    options = {
        "input_shapes": "static shapes for the inputs (--input-shape name=1x224x224x3 or one per input in "
                        "order): what a dynamic batch is pinned to",
        "signature": "the SavedModel signature to compile (default serving_default)",
        "tags": "the SavedModel tag set, comma-separated (default serve)",
    }

    def accepts(self, model) -> bool:
        try:
            if isinstance(model, (str, os.PathLike)):
                text = str(model)
                return "\n" not in text and is_saved_model(text)
            return is_tf_callable(model)
        except Exception:  # noqa: BLE001 -- accepts() must never raise (a path it cannot stat, a proxy object)
            return False

    def to_stablehlo(self, model, example_inputs, options, context):
        if isinstance(model, (str, os.PathLike)):
            from .savedmodel import to_stablehlo as saved_model_to_stablehlo

            return saved_model_to_stablehlo(str(model), options, context)
        from .importer import to_stablehlo

        return to_stablehlo(model, example_inputs, options, context)


@hookimpl
def byteir_register_frontends(register):
    register(TensorFlowFrontend())
