"""Fuzz the ONNX frontend: bytes -> ``byteir_core.compile(data, frontend="onnx", target="reference")``.

Seeds are small real ONNX models (a CNN, a model with two named outputs, an opset-7 model that goes through the
version converter), serialized. A mutated protobuf exercises the loader, the graph checks (names, order, cycles),
shape inference, the version converter and the lowering (in byteir's worker process, whose crashes must come back
as errors naming the node, never end this process).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["byteir_core", "byteir_frontend_onnx"]):
    import byteir_core
    import byteir_core.compiler.driver  # noqa: F401
    import byteir_frontend_onnx.importer  # noqa: F401
    import byteir_frontend_onnx.rewrites  # noqa: F401

NAME = "onnx"


def seeds(d: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "frontend_onnx" / "tests"))
    from onnx_models import asymmetric_avgpool, cnn, old_opset_bn, two_outputs

    for name, m in (("cnn", cnn(batch=1)), ("two", two_outputs()), ("old", old_opset_bn()),
                    ("pool", asymmetric_avgpool())):
        d.joinpath(f"{name}.onnx").write_bytes(m.SerializeToString())


def one_input(data: bytes) -> None:
    from harness import accept

    accept(lambda m: byteir_core.compile(m, frontend="onnx", target="reference", progress=False), data)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from harness import main

    main(sys.modules[__name__])
