"""Two ``ai.onnx.ml`` ops as default-domain ops, before import (torch-mlir lowers no ``ai.onnx.ml`` op):

- **Binarizer**: ``1`` where ``X > threshold``, else ``0``, in ``X``'s type;
- **ArrayFeatureExtractor**: ``X[..., indices]`` (the indices flattened), a 1-D ``X`` giving one row, as onnx's
  reference does.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .quantize import GraphBuilder

DOMAIN = "ai.onnx.ml"


def rewrite(n: onnx.NodeProto, info, inits: list) -> list[onnx.NodeProto] | None:
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    shape, elem = info(n.input[0])
    if shape is None or not elem:
        return None
    b = GraphBuilder(n.name or n.op_type, inits)
    if n.op_type == "Binarizer":
        dt = helper.tensor_dtype_to_np_dtype(elem)
        above = b.op("Greater", [n.input[0], b.const(np.array(a.get("threshold", 0.0), dt), "threshold")])
        b.op("Cast", [above], n.output[0], to=elem)
        return b.nodes
    if n.op_type == "ArrayFeatureExtractor":
        ishape, _ = info(n.input[1])
        if ishape is None:
            return None
        flat = b.op("Reshape", [n.input[1], b.const(np.array([-1], np.int64), "flat")])
        picked = b.op("Gather", [n.input[0], flat], axis=len(shape) - 1)
        width = int(np.prod(ishape)) if ishape else 1
        out = [1, width] if len(shape) == 1 else [*shape[:-1], width]
        b.op("Reshape", [picked, b.const(np.array(out, np.int64), "shape")], n.output[0])
        return b.nodes
    return None
