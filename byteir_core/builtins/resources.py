"""``dense_resource`` constants (what torch-mlir's FX importer emits for weights) become plain dense constants.

The Python bindings can create a resource blob but cannot read one back, so the bytes are taken from the
module's printed ``dialect_resources`` section (each blob: 4 bytes of alignment, then the data, in hex). The
module is printed once, and only when it holds such constants.
"""

from __future__ import annotations

import re

import numpy as np

from ..dtypes import to_numpy
from ..errors import PassGroupError
from ..mlir import ir

_BLOB = re.compile(r'^\s*("?)([^":\s]+)\1:\s*"0x([0-9A-Fa-f]*)"', re.M)


def _resource_constants(module):
    found = []
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        for op in fn.regions[0].blocks[0].operations:
            op = op.operation
            if op.name == "stablehlo.constant" and str(op.attributes["value"]).startswith("dense_resource<"):
                found.append(op)
    return found


def materialize_resources(module) -> None:
    consts = _resource_constants(module)
    if not consts:
        return
    text = module.operation.get_asm()
    start = text.find("dialect_resources")
    blobs = {m.group(2): m.group(3) for m in _BLOB.finditer(text[start:])} if start >= 0 else {}
    ctx = module.context
    for op in consts:
        attr = op.attributes["value"]
        name = str(attr).split("<", 1)[1].split(">", 1)[0]
        t = op.results[0].type
        if name not in blobs:
            raise PassGroupError(f"stablehlo.constant at {op.location} uses dense_resource<{name}>, whose bytes are "
                                 f"not in the module (an elided or external resource)")
        data = bytes.fromhex(blobs[name])[4:]  # the first 4 bytes are the blob's alignment
        elem = str(t.element_type)
        np_dtype = to_numpy(elem)
        if len(data) != np_dtype.itemsize * int(np.prod(t.shape)):
            raise PassGroupError(f"dense_resource<{name}> holds {len(data)} bytes; {t} needs "
                                 f"{np_dtype.itemsize * int(np.prod(t.shape))}")
        with ctx, op.location:
            if elem == "bf16":
                arr = np.frombuffer(data, np.uint16).reshape(t.shape)
                value = ir.DenseElementsAttr.get(arr, type=t.element_type, shape=list(t.shape))
            else:
                arr = np.frombuffer(data, np_dtype).reshape(t.shape)
                if elem == "i1":
                    arr = arr.astype(bool)
                value = ir.DenseElementsAttr.get(np.require(arr, requirements="C"), shape=list(t.shape),
                                                 signless=not elem.startswith("ui"))
            if value.type != t:
                raise PassGroupError(f"cannot rebuild dense_resource<{name}> as {t} (got {value.type})")
            op.attributes["value"] = value
