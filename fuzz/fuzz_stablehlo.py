"""Fuzz the StableHLO frontend and the pass groups: bytes -> ``byteir_core.compile(..., target="reference")``.

The first byte picks the form: MLIR text, MLIR bytecode or a versioned portable artifact (the three the frontend
takes); seeds are small programs in each form. A program that parses goes through every default pass group and
the partitioner, so the corpus reaches past the parser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["byteir_core"]):
    import byteir_core
    import byteir_core.builtins.stablehlo_frontend  # noqa: F401  (instrumented: imported before first use)
    import byteir_core.compiler.driver  # noqa: F401
    import byteir_core.compiler.partition  # noqa: F401

NAME = "stablehlo"

PROGRAMS = [
    """func.func @main(%x: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %c = stablehlo.constant dense<2.0> : tensor<4x16xf32>
  %y = stablehlo.multiply %x, %c : tensor<4x16xf32>
  %z = stablehlo.exponential %y : tensor<4x16xf32>
  return %z : tensor<4x16xf32>
}
""",
    """func.func @main(%x: tensor<2x8xf32>) -> tensor<2xf32> {
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = [1] : (tensor<2x8xf32>, tensor<f32>) -> tensor<2xf32>
  return %s : tensor<2xf32>
}
""",
    """func.func @main(%x: tensor<?x4xf32>, %i: tensor<3xi64>) -> tensor<?x4xf32> {
  %t = stablehlo.transpose %x, dims = [0, 1] : (tensor<?x4xf32>) -> tensor<?x4xf32>
  return %t : tensor<?x4xf32>
}
""",
]


def seeds(d: Path) -> None:
    from byteir_core.mlir import module_to_bytecode, new_context, ir, stablehlo_api

    d.joinpath("mlp.mlir").write_bytes(b"t" + (Path(__file__).parents[1] / "examples" / "mlp.mlir").read_bytes())
    for k, text in enumerate(PROGRAMS):
        d.joinpath(f"p{k}.mlir").write_bytes(b"t" + text.encode())
        ctx = new_context()
        with ctx:
            m = ir.Module.parse(text)
            d.joinpath(f"p{k}.mlirbc").write_bytes(b"b" + module_to_bytecode(m))
        try:
            art = stablehlo_api.serialize_portable_artifact_str(text, stablehlo_api.get_current_version())
            d.joinpath(f"p{k}.vhlo").write_bytes(b"p" + bytes(art))
        except Exception:  # noqa: BLE001 -- a dynamic program may not serialize; the others seed this form
            pass


def one_input(data: bytes) -> None:
    from harness import accept

    if not data:
        return
    form, body = data[:1], data[1:]
    if form == b"t":
        try:
            model = body.decode("utf-8")
        except UnicodeDecodeError:
            return
    else:
        model = body  # bytecode or a portable artifact: the frontend tells them apart
    accept(lambda m: byteir_core.compile(m, target="reference", progress=False), model)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from harness import main

    main(sys.modules[__name__])
