"""Registers the ``torch`` frontend. Importing this module does not import torch: `byteir list-plugins` and
StableHLO-only compiles stay fast; torch loads when a torch model is compiled."""

from __future__ import annotations

import os
import sys

from byteir_core import hookimpl
from byteir_core.interfaces import Frontend

BYTEIR_PLUGIN_API = "1.0"


class TorchFrontend(Frontend):
    name = "torch"
    description = ("PyTorch: nn.Module (+ example inputs), torch.export ExportedProgram or a saved .pt2, via "
                   "torch.export -> FX passes -> torch-mlir's FX importer")
    options = {
        "example_kwargs": "keyword inputs to trace with (a dict of tensors)",
        "dynamic_shapes": "torch.export's dynamic_shapes (which input dims stay symbolic)",
        "strict_export": "torch.export in strict mode (default False)",
        "fx_passes": "the FX passes to run (default: rewrite-attention, simplify-views, fold-constants)",
    }

    def accepts(self, model) -> bool:
        if isinstance(model, (str, os.PathLike)):
            return str(model).endswith(".pt2")
        if type(model).__name__ == "FxGraph" and type(model).__module__.startswith("byteir_frontend_torch"):
            return True
        torch = sys.modules.get("torch")
        if torch is None:  # a torch object cannot exist without torch imported
            return False
        return isinstance(model, (torch.nn.Module, torch.export.ExportedProgram))

    def to_stablehlo(self, model, example_inputs, options, context):
        from .exporting import to_stablehlo

        return to_stablehlo(model, example_inputs, options, context)


@hookimpl
def byteir_register_frontends(register):
    register(TorchFrontend())
