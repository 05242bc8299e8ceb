"""byteir's PyTorch frontend.

- ``byteir_core.compile(module, example_inputs)`` / ``byteir compile model.pt2``: whole-model compile through
  torch.export (registered as the ``torch`` frontend).
- ``torch.compile(model, backend="byteir")``: the TorchDynamo backend (entry point ``torch_dynamo_backends``),
  also importable as :func:`byteir_compile_fx`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["byteir_compile_fx", "export_to_stablehlo"]


def __getattr__(name):
    if name == "byteir_compile_fx":
        from .dynamo import byteir_compile_fx

        return byteir_compile_fx
    if name == "export_to_stablehlo":
        from .exporting import to_stablehlo as export_to_stablehlo

        return export_to_stablehlo
    raise AttributeError(name)
