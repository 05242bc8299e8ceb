"""Registers the ``torch`` frontend. Importing this module does not import torch: `byteir list-plugins` and
StableHLO-only compiles stay fast; torch loads when a torch model is compiled."""

from __future__ import annotations

import os
import sys

from byteir_core import hookimpl
from byteir_core.interfaces import Frontend

BYTEIR_PLUGIN_API = "1.0"


class TorchFrontend(Frontend):
    """nn.Module / ExportedProgram / ``.pt2`` -> StableHLO (:mod:`byteir_frontend_torch.exporting`).

    A module in training mode is compiled in eval mode (running statistics, no dropout) with a warning naming
    it, and its mode is restored; ``options={"train": True}`` compiles training behaviour, whose buffer updates
    are extra outputs named ``update:<buffer>`` (``Session.run``), never part of the model's result. The result
    keeps the model's structure (tensor, tuple, dict, dataclass/ModelOutput) and names (forward's parameters,
    dict keys)."""

    name = "torch"
    description = ("PyTorch: nn.Module (+ example inputs), torch.export ExportedProgram or a saved .pt2, via "
                   "torch.export -> FX passes -> torch-mlir's FX importer")
    options = {
        "example_kwargs": "keyword inputs to trace with (a dict of tensors)",
        "dynamic_shapes": "torch.export's dynamic_shapes (which input dims stay symbolic)",
        "strict_export": "torch.export in strict mode (default False)",
        "fx_passes": "the FX passes to run (default: rewrite-attention, simplify-views, fold-constants)",
        "train": "compile a module's training behaviour (BatchNorm batch statistics); its buffer updates become "
                 "extra outputs named 'update:<buffer>'. Default False: a module in training mode is compiled "
                 "in eval mode, with a warning",
        "input_shapes": "static shapes for the program's tensor inputs (--input-shape): a program with dynamic "
                        "dimensions is specialized to them before lowering",
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
