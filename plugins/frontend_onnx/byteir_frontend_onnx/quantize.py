"""Quantization ops as plain arithmetic, before import.

torch-mlir lowers ``QuantizeLinear``/``DequantizeLinear``/``QLinearMatMul`` to torch's quantized tensors, which
its StableHLO conversion refuses, so none of them compiled. Each becomes the arithmetic ONNX specifies (the
order of operations and the precision of ``onnx.reference``, so results agree bit for bit on integers):

- ``DequantizeLinear``: ``y = (float32(x) - float32(zero_point)) * scale``, cast to the scale's type (or
  ``output_dtype``);
- ``QuantizeLinear``: ``q = clip(round_half_even(x / scale) + zero_point, qmin, qmax)`` as the zero point's type
  (or ``output_dtype``, uint8 by default), the division in ``x``'s type (or ``precision``);
- ``QLinearMatMul``: ``int32`` matmul of the zero-point-shifted operands, then scaled by
  ``a_scale * b_scale / y_scale`` in float64, rounded, shifted, clipped.

Scales and zero points are per tensor, per axis (``axis``) or blocked (``block_size``: repeated along ``axis``).
Quantizing writes 8-, 16-, 4- and 2-bit integers, float8 (``saturate``) and float4; dequantizing reads those
and int32 (the narrow types' casts are :mod:`.native`'s, and their converts run on the reference backend).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_RANGES = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127), TensorProto.UINT16: (0, 65535),
           TensorProto.INT16: (-32768, 32767), TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7),
           TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1)}
_FLOAT8 = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2FNUZ}
_DEQUANT_IN = set(_RANGES) | _FLOAT8 | {TensorProto.INT32, TensorProto.FLOAT4E2M1}
#: QLinearMatMul's operand types (8-bit)
_QLINEAR = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127)}
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


class GraphBuilder:
    """Nodes and constants for a rewrite, named under the node being replaced (shared by the rewrite modules)."""

    def __init__(self, base: str, inits: list):
        self.base, self.inits, self.nodes, self.k = base, inits, [], 0

    def name(self, what: str) -> str:
        self.k += 1
        return f"{self.base}/{what}{self.k}"

    def const(self, value: np.ndarray, what: str = "c") -> str:
        n = self.name(what)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", [x], to=to)


def _broadcastable(b: GraphBuilder, value: str, vshape, xshape, axis: int, block: int) -> str | None:
    """``value`` (a scale or zero point) shaped to broadcast against ``x``, as onnx.reference's reshape_input."""
    if vshape is None or xshape is None:
        return None
    rank = len(xshape)
    if len(vshape) == 0 or int(np.prod(vshape)) == 1:
        return b.op("Reshape", [value, b.const(np.array([], np.int64), "scalar")]) if len(vshape) else value
    axis = axis % rank
    if not block:
        if len(vshape) != 1:
            return None
        dims = [1] * rank
        dims[axis] = vshape[0]
        return b.op("Reshape", [value, b.const(np.array(dims, np.int64), "shape")])
    if len(vshape) != rank:
        return None
    grown = list(vshape[:axis + 1]) + [block] + list(vshape[axis + 1:])
    merged = list(vshape[:axis]) + [vshape[axis] * block] + list(vshape[axis + 1:])
    v = b.op("Unsqueeze", [value, b.const(np.array([axis + 1], np.int64), "axes")])
    v = b.op("Expand", [v, b.const(np.array(grown, np.int64), "shape")])
    v = b.op("Reshape", [v, b.const(np.array(merged, np.int64), "shape")])
    if merged[axis] != xshape[axis]:
        v = b.op("Slice", [v, b.const(np.array([0], np.int64)), b.const(np.array([xshape[axis]], np.int64)),
                           b.const(np.array([axis], np.int64))])
    return v


def rewrite(n: onnx.NodeProto, info, inits: list):
    """The nodes replacing quantization node ``n`` (constants appended to ``inits``), or None to leave it.
    ``info(name)`` gives ``(shape or None, elem_type or None)``."""
    if n.domain not in ("", "ai.onnx"):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    ins = list(n.input) + [""] * 8
    if n.op_type == "DequantizeLinear":
        return _dequantize(n, attrs, ins, info, inits)
    if n.op_type == "QuantizeLinear":
        return _quantize(n, attrs, ins, info, inits)
    if n.op_type == "QLinearMatMul":
        return _qlinear_matmul(n, ins, info, inits)
    return None


def _dequantize(n, attrs, ins, info, inits):
    (xshape, xt), (sshape, st) = info(ins[0]), info(ins[1])
    if xt not in _DEQUANT_IN or st not in _FLOATS:
        return None
    out_t = attrs.get("output_dtype", 0) or st
    b = GraphBuilder(n.name or "dequantize", inits)
    axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
    scale = _broadcastable(b, ins[1], sshape, xshape, axis, block)
    if scale is None:
        return None
    x = b.cast(ins[0], TensorProto.FLOAT)
    if ins[2]:
        zp = _broadcastable(b, ins[2], info(ins[2])[0], xshape, axis, block)
        if zp is None:
            return None
        x = b.op("Sub", [x, b.cast(zp, TensorProto.FLOAT)])
    if st != TensorProto.FLOAT:
        scale = b.cast(scale, TensorProto.FLOAT)
    if out_t == TensorProto.FLOAT:
        b.op("Mul", [x, scale], n.output[0])
    else:
        b.op("Cast", [b.op("Mul", [x, scale])], n.output[0], to=out_t)
    return b.nodes


def _quantize(n, attrs, ins, info, inits):
    (xshape, xt), (sshape, st) = info(ins[0]), info(ins[1])
    out_t = info(ins[2])[1] if ins[2] else (attrs.get("output_dtype", 0) or TensorProto.UINT8)
    if xt not in _FLOATS or st not in _FLOATS or out_t not in set(_RANGES) | _FLOAT8 | {TensorProto.FLOAT4E2M1}:
        return None
    b = GraphBuilder(n.name or "quantize", inits)
    axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
    scale = _broadcastable(b, ins[1], sshape, xshape, axis, block)
    if scale is None:
        return None
    x, qt = ins[0], xt  # qt: the type x / scale is computed in
    precision = attrs.get("precision", 0)
    if precision:
        x, scale, qt = b.cast(x, precision), b.cast(scale, precision), precision
    elif st != xt:  # NumPy's promotion, as the reference divides: the wider of the two
        qt = TensorProto.DOUBLE if TensorProto.DOUBLE in (st, xt) else TensorProto.FLOAT
        x, scale = b.cast(x, qt), b.cast(scale, qt)
    q = b.op("Div", [x, scale])
    if out_t in _FLOAT8:  # the zero point is 0 by definition; rounding and saturation are the Cast's
        b.op("Cast", [q], n.output[0], to=out_t, saturate=attrs.get("saturate", 1))
        return b.nodes
    if out_t == TensorProto.FLOAT4E2M1:  # no rounding step: the Cast rounds (and saturates) after the shift
        if ins[2]:
            zp = _broadcastable(b, ins[2], info(ins[2])[0], xshape, axis, block)
            if zp is None:
                return None
            q = b.op("Add", [q, b.cast(zp, qt)])
        b.op("Cast", [q], n.output[0], to=out_t)
        return b.nodes
    q = b.op("Round", [b.cast(q, TensorProto.FLOAT)])
    if ins[2]:
        zp = _broadcastable(b, ins[2], info(ins[2])[0], xshape, axis, block)
        if zp is None:
            return None
        q = b.op("Add", [q, b.cast(zp, TensorProto.FLOAT)])
    lo, hi = _RANGES[out_t]
    q = b.op("Clip", [q, b.const(np.float32(lo), "qmin"), b.const(np.float32(hi), "qmax")])
    b.op("Cast", [q], n.output[0], to=out_t)
    return b.nodes


def _qlinear_matmul(n, ins, info, inits):
    a, a_scale, a_zp, bb, b_scale, b_zp, y_scale, y_zp = ins[:8]
    ta, tb = info(a)[1], info(bb)[1]
    out_t = info(y_zp)[1] if y_zp else ta
    if ta not in _QLINEAR or tb not in _QLINEAR or out_t not in _QLINEAR:
        return None
    if any(info(s)[1] not in _FLOATS for s in (a_scale, b_scale, y_scale)):
        return None
    b = GraphBuilder(n.name or "qlinear_matmul", inits)

    def shifted(x, zp):
        v = b.cast(x, TensorProto.INT32)
        return b.op("Sub", [v, b.cast(zp, TensorProto.INT32)]) if zp else v

    c = b.op("MatMul", [shifted(a, a_zp), shifted(bb, b_zp)])
    mult = b.op("Div", [b.op("Mul", [a_scale, b_scale]), y_scale])
    d = b.op("Mul", [b.cast(c, TensorProto.DOUBLE), b.cast(mult, TensorProto.DOUBLE)])
    if y_zp:
        d = b.op("Add", [d, b.cast(y_zp, TensorProto.DOUBLE)])
    lo, hi = _QLINEAR[out_t]
    d = b.op("Clip", [b.op("Round", [d]), b.const(np.float64(lo), "qmin"), b.const(np.float64(hi), "qmax")])
    b.op("Cast", [d], n.output[0], to=out_t)
    return b.nodes
