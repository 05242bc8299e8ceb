"""ONNX ops lowered straight to StableHLO inside the imported torch-dialect module, before torch-mlir's pipelines.

torch-mlir's ONNX lowerings map element types to torch dtypes, and torch has none for 4-bit integers or 4-bit
floats and no conversion rules for float8 targets, so ``Cast`` to or from those types, and ``BitCast``, stay
``torch.operator`` ops it cannot lower. Here each such op becomes the StableHLO op that means exactly that,
between ``torch_c`` boundary casts (which torch-mlir's backend pipeline folds away):

- ``Cast``/``CastLike`` with a float8, float4 or 4-bit integer source or target -> ``stablehlo.convert``
  (round to nearest even, as onnx's reference and ml_dtypes do); for a float8 target with ``saturate=1`` (the
  default) the input is first clamped to the target's finite range, so out-of-range values and infinities become
  the largest finite value instead of NaN or inf (ONNX's saturation table); without it, what overflows is spelled
  out as inf or NaN; float4 saturates and maps NaN to -0.0, and a float out of a 4-bit integer's range gives 0,
  as ml_dtypes (onnx's reference) does;
- ``BitCast`` -> ``stablehlo.bitcast_convert`` (same element width; the op's own type check guarantees it); a
  bool is one byte holding 0 or 1, so a BitCast to or from bool is a convert.

The ops then run wherever the partitioner finds a backend for them (the reference backend runs converts to and
from the narrow types).
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import onnx
from byteir_core.mlir import ir

#: torch element types torch-mlir's Cast lowering has no dtype for (with the builtin type StableHLO uses)
NARROW = {"f8E4M3FN": "f8E4M3FN", "f8E5M2": "f8E5M2", "f8E4M3FNUZ": "f8E4M3FNUZ", "f8E5M2FNUZ": "f8E5M2FNUZ",
          "f4E2M1FN": "f4E2M1FN", "si4": "i4", "ui4": "ui4"}

_F8 = {"f8E4M3FN": ml_dtypes.float8_e4m3fn, "f8E5M2": ml_dtypes.float8_e5m2,
       "f8E4M3FNUZ": ml_dtypes.float8_e4m3fnuz, "f8E5M2FNUZ": ml_dtypes.float8_e5m2fnuz}
_INT4 = {"si4": (-8, 7), "ui4": (0, 15)}
#: ONNX's 2-bit integers have no torch dtype; inside torch-mlir they are carried as si4/ui4 (every 2-bit value is
#: exact there), and :func:`narrow_boundary` gives the lowered function's arguments and results their own type
CARRIED = {onnx.TensorProto.INT2: ("si4", "i2", (-2, 1)), onnx.TensorProto.UINT2: ("ui4", "ui2", (0, 3))}
_FLOATS = ("f64", "f32", "f16", "bf16")
#: Cast targets torch-mlir's ONNX Cast lowering has no torch dtype for, though they are not narrow
_WIDE_UNSUPPORTED = ("si16", "ui16", "ui32", "ui64")


def _overflow(elem: str) -> tuple[float, float, bool]:
    """(largest finite value, the magnitude from which rounding to nearest even overflows, whether that bound
    itself overflows) of a float8 type, from ml_dtypes (whose conversions onnx's reference uses)."""
    d = _F8[elem]
    top = np.array(float(ml_dtypes.finfo(d).max), dtype=d)
    below = float(np.nextafter(top, np.array(0, dtype=d)).astype(np.float64))
    big = float(top.astype(np.float64))
    half = big + (big - below) / 2
    return big, half, not np.isfinite(float(np.array(half, dtype=np.float32).astype(d).astype(np.float32)))


_VTENSOR = re.compile(r"^!torch\.vtensor<\[([^\]]*)\],(\w+)>$")


def _builtin(vtensor_type: ir.Type) -> tuple[ir.Type, str] | None:
    """``!torch.vtensor<[3,?],si4>`` -> (``tensor<3x?xi4>``, ``"si4"``); None for an unranked or odd type."""
    m = _VTENSOR.match(str(vtensor_type))
    if not m:
        return None
    dims, elem = m.group(1), m.group(2)
    shape = "x".join("?" if d.strip() in ("?", "-1") else d.strip() for d in dims.split(",")) if dims else ""
    builtin_elem = NARROW.get(elem) or (("i" + elem[2:]) if elem.startswith("si") else elem)
    return ir.Type.parse(f"tensor<{shape + 'x' if shape else ''}{builtin_elem}>"), elem


def _int_attr(op: ir.Operation, name: str, default: int) -> int:
    if name in op.attributes:
        return ir.IntegerAttr(op.attributes[name]).value
    return default


def _operator_name(op: ir.Operation) -> str | None:
    if op.name != "torch.operator":
        return None
    return ir.StringAttr(op.attributes["name"]).value


class _Builder:
    """StableHLO ops created before one op (the one being replaced)."""

    def op(self, name: str, result: ir.Type, *operands, **attributes) -> ir.Value:
        attrs = {k: (ir.Attribute.parse(v) if isinstance(v, str) else v) for k, v in attributes.items()}
        return ir.Operation.create(name, results=[result], operands=list(operands), attributes=attrs).result

    def splat(self, t: ir.Type, value: float) -> ir.Value:
        """A constant of tensor type ``t`` (static shape) filled with ``value``."""
        elem = ir.RankedTensorType(t).element_type
        attr = ir.FloatAttr.get(elem, value) if not isinstance(elem, ir.IntegerType) else ir.IntegerAttr.get(
            elem, int(value))
        return self.op("stablehlo.constant", t, value=ir.DenseElementsAttr.get_splat(t, attr))

    def compare(self, direction: str, a: ir.Value, b: ir.Value) -> ir.Value:
        shape = ir.RankedTensorType(a.type).shape
        pred = ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(1))
        return self.op("stablehlo.compare", pred, a, b,
                       comparison_direction=f"#stablehlo<comparison_direction {direction}>")

    def select(self, p: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.op("stablehlo.select", a.type, p, a, b)

    def both(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.op("stablehlo.and", a.type, a, b)


def _cast(b: _Builder, x: ir.Value, src_t, src_e: str, dst_t, dst_e: str, saturate: bool,
          to: int) -> ir.Value | None:
    """ONNX Cast semantics (onnx's reference: ``saturate_cast`` for float8 with saturate, else ml_dtypes'
    ``astype``) in StableHLO; None where a constant would need a dynamic shape."""
    static = ir.RankedTensorType(src_t).has_static_shape
    if dst_e in _F8 and src_e in _FLOATS:
        big, half, tie_overflows = _overflow(dst_e)
        if saturate:  # clip to the finite range (inf -> largest finite, NaN stays NaN), then round
            scalar = ir.RankedTensorType.get([], ir.RankedTensorType(src_t).element_type)
            x = b.op("stablehlo.clamp", src_t, b.splat(scalar, -big), x, b.splat(scalar, big))
            return b.op("stablehlo.convert", dst_t, x)
        if not static:
            return None
        # without saturation, what rounds past the largest finite value (and inf) is inf where the type has
        # one (e5m2), else NaN; a backend's convert may saturate instead, so this is spelled out
        y = b.op("stablehlo.convert", dst_t, x)
        over = b.compare("GE" if tie_overflows else "GT", b.op("stablehlo.abs", src_t, x), b.splat(src_t, half))
        if dst_e == "f8E5M2":
            neg = b.compare("LT", x, b.splat(src_t, 0.0))
            special = b.select(neg, b.splat(dst_t, float("-inf")), b.splat(dst_t, float("inf")))
        else:
            special = b.splat(dst_t, float("nan"))
        return b.select(over, special, y)
    if dst_e == "f4E2M1FN" and src_e in _FLOATS:
        if not static:
            return None
        # ml_dtypes saturates to +-6 (inf included) and gives -0.0 for NaN (float4 has neither)
        scalar = ir.RankedTensorType.get([], ir.RankedTensorType(src_t).element_type)
        nan = b.compare("NE", x, x)
        x = b.op("stablehlo.clamp", src_t, b.splat(scalar, -6.0), x, b.splat(scalar, 6.0))
        x = b.select(nan, b.splat(src_t, -0.0), x)
    if dst_e in _INT4 and src_e in _FLOATS:
        if not static:
            return None
        # ml_dtypes truncates toward zero and gives 0 for what does not fit (and for NaN)
        lo, hi = CARRIED[to][2] if to in CARRIED else _INT4[dst_e]
        fits = b.both(b.compare("GT", x, b.splat(src_t, lo - 1.0)), b.compare("LT", x, b.splat(src_t, hi + 1.0)))
        x = b.select(fits, x, b.splat(src_t, 0.0))
    return b.op("stablehlo.convert", dst_t, x)


def _lower_one(op: ir.Operation, which: str) -> bool:
    if len(op.results) != 1 or len(op.operands) < 1:
        return False
    src = _builtin(op.operands[0].type)
    dst = _builtin(op.results[0].type)
    if src is None or dst is None:
        return False
    (src_t, src_e), (dst_t, dst_e) = src, dst
    if which == "cast" and src_e not in NARROW and dst_e not in NARROW and dst_e not in _WIDE_UNSUPPORTED:
        return False  # torch-mlir's own lowering takes it
    b = _Builder()
    with ir.InsertionPoint(op), op.location:
        x = b.op("torch_c.to_builtin_tensor", src_t, op.operands[0])
        if which == "bitcast":  # an ONNX bool is one byte holding 0 or 1, so to or from bool it is a convert
            y = b.op("stablehlo.convert" if "i1" in (src_e, dst_e) else "stablehlo.bitcast_convert", dst_t, x)
        else:
            y = _cast(b, x, src_t, src_e, dst_t, dst_e, bool(_int_attr(op, "torch.onnx.saturate", 1)),
                      _int_attr(op, "torch.onnx.to", 0))
            if y is None:
                x.owner.erase()
                return False
        back = b.op("torch_c.from_builtin_tensor", op.results[0].type, y)
    op.results[0].replace_all_uses_with(back)
    op.erase()
    return True


def lower_native_ops(module: ir.Module) -> int:
    """Rewrite, in place, every op this module lowers itself (see the module doc); returns how many."""
    todo = []

    def visit(op):
        name = _operator_name(op)
        if name in ("onnx.Cast", "onnx.CastLike"):
            todo.append((op, "cast"))
        elif name == "onnx.BitCast":
            todo.append((op, "bitcast"))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    done = 0
    with module.context:
        for op, which in todo:
            done += _lower_one(op, which)
    return done


def narrow_boundary(module: ir.Module, proto: onnx.ModelProto) -> None:
    """Give ``@main``'s arguments and results whose ONNX type is a 2-bit integer that type (``i2``/``ui2``),
    converting from and to the 4-bit carrier they had inside (see :data:`CARRIED`); in place."""
    from byteir_core.compiler.driver import entry_function

    from .importer import graph_inputs

    def elem(v):
        return v.type.tensor_type.elem_type if v.type.HasField("tensor_type") else 0

    ins = [CARRIED.get(elem(v)) for v in graph_inputs(proto)]
    outs = [CARRIED.get(elem(v)) for v in proto.graph.output]
    if not any(ins) and not any(outs):
        return
    main = entry_function(module)
    block = main.regions[0].blocks[0]
    ftype = ir.FunctionType(ir.TypeAttr(main.attributes["function_type"]).value)
    if len(ins) != len(ftype.inputs) or len(outs) != len(ftype.results):
        return
    with module.context, ir.Location.unknown():
        def retyped(t, carried):
            rt = ir.RankedTensorType(t)
            return ir.RankedTensorType.get(rt.shape, ir.Type.parse(carried[1]))

        new_in = list(ftype.inputs)
        first = block.operations[0]
        for i, carried in enumerate(ins):
            if not carried:
                continue
            arg = block.arguments[i]
            old = arg.type
            new_in[i] = retyped(old, carried)
            arg.set_type(new_in[i])
            with ir.InsertionPoint(first):
                conv = ir.Operation.create("stablehlo.convert", results=[old], operands=[arg])
            arg.replace_all_uses_except(conv.result, conv)
        ret = block.operations[len(block.operations) - 1]
        new_out = list(ftype.results)
        for i, carried in enumerate(outs):
            if not carried:
                continue
            new_out[i] = retyped(ftype.results[i], carried)
            with ir.InsertionPoint(ret):
                conv = ir.Operation.create("stablehlo.convert", results=[new_out[i]], operands=[ret.operands[i]])
            ret.operands[i] = conv.result
        main.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(new_in, new_out))


__all__ = ["lower_native_ops", "narrow_boundary", "NARROW", "CARRIED"]
