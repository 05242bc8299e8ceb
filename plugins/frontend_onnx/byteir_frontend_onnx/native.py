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
  as ml_dtypes (onnx's reference) does; float8e8m0 (a power of two) rounds up, down or to nearest as the
  ``round_mode`` attribute says, and its 0xFF is NaN;
- ``ScatterND``/``ScatterElements`` with a ``reduction`` (add, mul, max, min) -> one ``stablehlo.scatter`` whose
  body combines; ``TensorScatter`` (a KV-cache write, linear or circular) -> one ``stablehlo.scatter``;
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
          "f4E2M1FN": "f4E2M1FN", "f8E8M0FNU": "f8E8M0FNU", "si4": "i4", "ui4": "ui4"}

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

    def splat_int(self, t: ir.Type, value: int) -> ir.Value:
        elem = ir.RankedTensorType(t).element_type
        return self.op("stablehlo.constant", t, value=ir.DenseElementsAttr.get_splat(t, ir.IntegerAttr.get(elem,
                                                                                                         value)))

    def compare(self, direction: str, a: ir.Value, b: ir.Value) -> ir.Value:
        shape = ir.RankedTensorType(a.type).shape
        pred = ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(1))
        return self.op("stablehlo.compare", pred, a, b,
                       comparison_direction=f"#stablehlo<comparison_direction {direction}>")

    def select(self, p: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.op("stablehlo.select", a.type, p, a, b)

    def both(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.op("stablehlo.and", a.type, a, b)


def _to_e8m0(b: _Builder, x: ir.Value, src_t, src_e: str, dst_t, saturate: bool, mode: str) -> ir.Value | None:
    """A float as float8e8m0 (a power of two: the float32 exponent byte), rounded ``up`` (any fraction bumps the
    exponent), ``down`` or to ``nearest`` (guard/round/sticky bits), saturating at 2^127 or overflowing to NaN;
    NaN and inf give NaN (onnx.numpy_helper.to_float8e8m0)."""
    if mode not in ("up", "down", "nearest"):
        return None
    shape = ir.RankedTensorType(src_t).shape
    if src_e != "f32":
        x = b.op("stablehlo.convert", ir.RankedTensorType.get(shape, ir.F32Type.get()), x)
    u32 = ir.RankedTensorType.get(shape, ir.IntegerType.get_unsigned(32))
    bits = b.op("stablehlo.bitcast_convert", u32, x)

    def k(v):
        return b.splat_int(u32, v)

    def bit_set(mask):
        return b.compare("NE", b.op("stablehlo.and", u32, bits, k(mask)), k(0))

    exponent = b.op("stablehlo.and", u32, b.op("stablehlo.shift_right_logical", u32, bits, k(23)), k(0xFF))
    special = b.compare("EQ", exponent, k(0xFF))
    if mode == "up":
        bump = bit_set(0x7FFFFF)
    elif mode == "nearest":
        pred = ir.RankedTensorType.get(shape, ir.IntegerType.get_signless(1))
        odd_or_rest = b.op("stablehlo.or", pred, b.op("stablehlo.or", pred, bit_set(0x200000), bit_set(0x1FFFFF)),
                           b.compare("GT", exponent, k(0)))
        bump = b.both(bit_set(0x400000), odd_or_rest)
    if mode != "down":
        if saturate:
            bump = b.both(bump, b.compare("NE", exponent, k(0xFE)))
        exponent = b.select(bump, b.op("stablehlo.add", u32, exponent, k(1)), exponent)
    exponent = b.select(special, k(0xFF), exponent)
    u8 = ir.RankedTensorType.get(shape, ir.IntegerType.get_unsigned(8))
    return b.op("stablehlo.bitcast_convert", dst_t, b.op("stablehlo.convert", u8, exponent))


def _cast(b: _Builder, x: ir.Value, src_t, src_e: str, dst_t, dst_e: str, saturate: bool,
          to: int, round_mode: str = "up") -> ir.Value | None:
    """ONNX Cast semantics (onnx's reference: ``saturate_cast`` for float8 with saturate, else ml_dtypes'
    ``astype``) in StableHLO; None where a constant would need a dynamic shape."""
    static = ir.RankedTensorType(src_t).has_static_shape
    if dst_e == "f8E8M0FNU":
        return _to_e8m0(b, x, src_t, src_e, dst_t, saturate, round_mode) if static and src_e in _FLOATS else None
    if src_e == "f8E8M0FNU" and dst_e in _FLOATS:
        if not static:
            return None
        # 0xFF is NaN (a backend's convert may make it inf)
        shape = ir.RankedTensorType(src_t).shape
        u8 = ir.RankedTensorType.get(shape, ir.IntegerType.get_unsigned(8))
        nan = b.compare("EQ", b.op("stablehlo.bitcast_convert", u8, x), b.splat_int(u8, 0xFF))
        return b.select(nan, b.splat(dst_t, float("nan")), b.op("stablehlo.convert", dst_t, x))
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
                      _int_attr(op, "torch.onnx.to", 0), _str_attr(op, "torch.onnx.round_mode", "up"))
            if y is None:
                x.owner.erase()
                return False
        back = b.op("torch_c.from_builtin_tensor", op.results[0].type, y)
    op.results[0].replace_all_uses_with(back)
    op.erase()
    return True


_COMBINE = {"add": "stablehlo.add", "mul": "stablehlo.multiply", "max": "stablehlo.maximum",
            "min": "stablehlo.minimum"}


def _str_attr(op: ir.Operation, name: str, default: str) -> str:
    return ir.StringAttr(op.attributes[name]).value if name in op.attributes else default


def _lower_scatter(op: ir.Operation, which: str) -> bool:
    """``ScatterND`` / ``ScatterElements`` with a ``reduction`` as one ``stablehlo.scatter`` whose body combines
    (torch-mlir's lowering of reductions does not reach StableHLO). Negative indices count from the end.
    ScatterElements' indices become full index tuples (an iota on every other axis)."""
    combine = _COMBINE.get(_str_attr(op, "torch.onnx.reduction", "none"))
    if combine is None or len(op.operands) != 3 or len(op.results) != 1:
        return False
    types = [_builtin(v.type) for v in op.operands]
    if any(t is None for t in types):
        return False
    (data_t, _), (idx_t, idx_e), (upd_t, _) = types
    shapes = [ir.RankedTensorType(t) for t in (data_t, idx_t, upd_t)]
    if not all(t.has_static_shape for t in shapes) or idx_e not in ("si64", "si32"):
        return False
    dshape, ishape = list(shapes[0].shape), list(shapes[1].shape)
    rank = len(dshape)
    b = _Builder()
    i64 = ir.IntegerType.get_signless(64)
    with ir.InsertionPoint(op), op.location:
        data = b.op("torch_c.to_builtin_tensor", data_t, op.operands[0])
        idx = b.op("torch_c.to_builtin_tensor", idx_t, op.operands[1])
        upd = b.op("torch_c.to_builtin_tensor", upd_t, op.operands[2])
        if idx_e != "si64":
            idx = b.op("stablehlo.convert", ir.RankedTensorType.get(ishape, i64), idx)
        itype = ir.RankedTensorType.get(ishape, i64)
        if which == "scatter_nd":
            depth = ishape[-1]
            bound = np.broadcast_to(np.array(dshape[:depth], np.int64), ishape)
            dims = ("update_window_dims = [" + ", ".join(str(len(ishape) - 1 + j) for j in range(rank - depth))
                    + "], inserted_window_dims = [" + ", ".join(map(str, range(depth)))
                    + "], scatter_dims_to_operand_dims = [" + ", ".join(map(str, range(depth)))
                    + f"], index_vector_dim = {len(ishape) - 1}")
        else:
            axis = _int_attr(op, "torch.onnx.axis", 0) % rank
            bound = np.full(ishape, dshape[axis], np.int64)
        bound_v = b.op("stablehlo.constant", itype, value=ir.DenseElementsAttr.get(np.ascontiguousarray(bound),
                                                                                  type=i64))
        negative = b.compare("LT", idx, b.splat_int(itype, 0))
        idx = b.select(negative, b.op("stablehlo.add", itype, idx, bound_v), idx)
        if which == "scatter_elements":
            idx, dims = _element_indices(b, idx, axis, ishape)
        back = b.op("torch_c.from_builtin_tensor", op.results[0].type, _scatter(data, idx, upd, dims, combine))
    op.results[0].replace_all_uses_with(back)
    op.erase()
    return True


def _element_indices(b: _Builder, pos: ir.Value, axis: int, shape: list[int]) -> tuple[ir.Value, str]:
    """One full index tuple per element of an update of ``shape``: ``pos`` (i64, that shape) on ``axis``, the
    element's own position on every other axis; with the scatter dimension numbers that write element-wise."""
    rank = len(shape)
    i64 = ir.IntegerType.get_signless(64)
    itype, one = ir.RankedTensorType.get(shape, i64), ir.RankedTensorType.get(shape + [1], i64)
    parts = [b.op("stablehlo.reshape", one, pos if d == axis else b.op(
        "stablehlo.iota", itype, iota_dimension=ir.IntegerAttr.get(i64, d))) for d in range(rank)]
    idx = b.op("stablehlo.concatenate", ir.RankedTensorType.get(shape + [rank], i64), *parts,
               dimension=ir.IntegerAttr.get(i64, rank))
    every = ", ".join(map(str, range(rank)))
    return idx, (f"update_window_dims = [], inserted_window_dims = [{every}], "
                 f"scatter_dims_to_operand_dims = [{every}], index_vector_dim = {rank}")


def _scatter(data: ir.Value, idx: ir.Value, upd: ir.Value, dims: str, combine: str | None) -> ir.Value:
    """``stablehlo.scatter`` with dimension numbers ``dims``; its body applies ``combine`` (an op name) to the old
    and the new value, or takes the new value (None)."""
    scatter = ir.Operation.create("stablehlo.scatter", results=[data.type], operands=[data, idx, upd], attributes={
        "scatter_dimension_numbers": ir.Attribute.parse(f"#stablehlo.scatter<{dims}>")}, regions=1)
    scalar = ir.RankedTensorType.get([], ir.RankedTensorType(data.type).element_type)
    block = scatter.regions[0].blocks.append(scalar, scalar)
    with ir.InsertionPoint(block):
        r = block.arguments[1] if combine is None else ir.Operation.create(
            combine, results=[scalar], operands=list(block.arguments)).result
        ir.Operation.create("stablehlo.return", operands=[r])
    return scatter.result


def _lower_tensor_scatter(op: ir.Operation) -> bool:
    """``TensorScatter`` (a KV-cache write): each batch entry's update written into the cache along ``axis`` from
    that entry's write index (0 without indices), wrapping around the cache in ``circular`` mode; one
    ``stablehlo.scatter`` over full index tuples."""
    mode = _str_attr(op, "torch.onnx.mode", "linear")
    if mode not in ("linear", "circular") or len(op.operands) not in (2, 3) or len(op.results) != 1:
        return False
    types = [_builtin(v.type) for v in op.operands]
    if any(t is None for t in types):
        return False
    shapes = [ir.RankedTensorType(t[0]) for t in types]
    if not all(t.has_static_shape for t in shapes):
        return False
    cshape, ushape = list(shapes[0].shape), list(shapes[1].shape)
    rank = len(cshape)
    axis = _int_attr(op, "torch.onnx.axis", -2) % rank
    b = _Builder()
    with ir.InsertionPoint(op), op.location:
        i64 = ir.IntegerType.get_signless(64)
        itype = ir.RankedTensorType.get(ushape, i64)
        cache = b.op("torch_c.to_builtin_tensor", types[0][0], op.operands[0])
        upd = b.op("torch_c.to_builtin_tensor", types[1][0], op.operands[1])
        pos = b.op("stablehlo.iota", itype, iota_dimension=ir.IntegerAttr.get(i64, axis))
        if len(op.operands) == 3:
            start = b.op("torch_c.to_builtin_tensor", types[2][0], op.operands[2])
            if types[2][1] != "si64":
                start = b.op("stablehlo.convert", ir.RankedTensorType.get(list(shapes[2].shape), i64), start)
            start = b.op("stablehlo.broadcast_in_dim", itype, start,
                         broadcast_dimensions=ir.DenseI64ArrayAttr.get([0]))
            pos = b.op("stablehlo.add", itype, pos, start)
        if mode == "circular":
            pos = b.op("stablehlo.remainder", itype, pos, b.splat_int(itype, cshape[axis]))
        idx, dims = _element_indices(b, pos, axis, ushape)
        back = b.op("torch_c.from_builtin_tensor", op.results[0].type, _scatter(cache, idx, upd, dims, None))
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
        elif name == "onnx.ScatterND":
            todo.append((op, "scatter_nd"))
        elif name == "onnx.ScatterElements":
            todo.append((op, "scatter_elements"))
        elif name == "onnx.TensorScatter":
            todo.append((op, "tensor_scatter"))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    done = 0
    with module.context:
        for op, which in todo:
            if which == "tensor_scatter":
                done += _lower_tensor_scatter(op)
            else:
                done += _lower_scatter(op, which) if which.startswith("scatter") else _lower_one(op, which)
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
