"""Registers the ``onnx`` frontend. Importing this module imports neither onnx nor torch-mlir's importer:
`byteir list-plugins` stays fast."""

from __future__ import annotations

import os
import sys

from byteir_core import hookimpl
from byteir_core.interfaces import Frontend

BYTEIR_PLUGIN_API = "1.0"


class OnnxFrontend(Frontend):
    """``.onnx`` file / bytes / ``onnx.ModelProto`` -> StableHLO (:mod:`byteir_frontend_onnx.importer`)."""

    name = "onnx"
    description = ("ONNX: a .onnx file (external data beside it), bytes or onnx.ModelProto, opset 7 to the "
                   "newest onnx knows, via torch-mlir's ONNX importer")
    options = {
        "input_shapes": "pin the graph's inputs to static shapes (--input-shape name=1x3x224x224 or one per "
                        "input in order); unpinned symbolic dimensions stay dynamic",
    }

    def accepts(self, model) -> bool:
        if isinstance(model, (str, os.PathLike)):
            return str(model).lower().endswith(".onnx")
        if isinstance(model, (bytes, bytearray)):
            return False  # bytes are ambiguous: compile(..., frontend="onnx")
        onnx = sys.modules.get("onnx")
        return onnx is not None and isinstance(model, onnx.ModelProto)

    def to_stablehlo(self, model, example_inputs, options, context):
        from .importer import to_stablehlo

        return to_stablehlo(model, options, context)


@hookimpl
def byteir_register_frontends(register):
    register(OnnxFrontend())
