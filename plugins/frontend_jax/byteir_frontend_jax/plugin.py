"""Registers the ``jax`` frontend. Importing this module does not import jax: `byteir list-plugins` stays fast."""

from __future__ import annotations

import sys

from byteir_core import hookimpl
from byteir_core.interfaces import Frontend

from .detect import is_exported, is_jitted, is_serialized_export

BYTEIR_PLUGIN_API = "1.0"


class JaxFrontend(Frontend):
    """``jax.jit`` function + example arguments / ``jax.export.Exported`` / serialized export -> StableHLO, via
    ``jax.export``'s portable artifact (:mod:`byteir_frontend_jax.exporting`)."""

    name = "jax"
    description = ("JAX: a jax.jit function with example arguments, a jax.export.Exported, or a serialized export "
                   "(.jaxexport / .bin, exported.serialize()); a plain function with frontend='jax'")
    options = {
        "weights": "positional arguments (argnums, e.g. [0]) whose example values are frozen into the program as "
                   "weights; the artifact then takes the remaining arguments' leaves only",
        "input_shapes": "static shapes for a shape-polymorphic export (jax.export.symbolic_shape), one per input "
                        "or by name (--input-shape 2x3,2x3); jax's shape assertions are checked against them",
    }

    def accepts(self, model) -> bool:
        try:
            if is_serialized_export(model):
                return True
            if sys.modules.get("jax") is None:  # a jax object cannot exist without jax imported
                return False
            # a plain callable is not claimed: torch modules and other frontends' inputs are callable too
            return is_exported(model) or is_jitted(model)
        except Exception:  # noqa: BLE001 -- accepts() must never raise
            return False

    def to_stablehlo(self, model, example_inputs, options, context):
        from .exporting import to_stablehlo

        return to_stablehlo(model, example_inputs, options, context)


@hookimpl
def byteir_register_frontends(register):
    register(JaxFrontend())
