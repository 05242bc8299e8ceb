"""StableHLO ops the cpu code generator cannot lower, expanded into StableHLO ops it can.

- ``cbrt``: ``math.cbrt`` has no LLVM lowering in this MLIR build. ``cbrt(x) = sign(x) * r`` with
  ``r = |x| ** (1/3)`` refined by one Newton step ``r -= (r - |x| / r**2) / 3`` (skipped for 0, inf and NaN,
  where ``r`` is already exact), computed in f64 for f32/f64 and in f32 for f16/bf16 (a direct f64 -> f16
  truncation needs a compiler-rt routine the kernels are not linked with), then rounded to the operand's type.
- ``batch_norm_inference``: the spec's own definition, op for op: ``scale * ((x - mean) / sqrt(var + eps)) +
  offset`` with the per-feature vectors broadcast along ``feature_index``.
- ``batch_norm_training``: the spec's definition: per-feature ``mean`` and biased ``variance = mean((x -
  mean)**2)`` over every other dimension, then the inference formula. For f16/bf16 the statistics are
  accumulated and the normalization computed in f32, then rounded to the operand's type.
- ``optimization_barrier``: an identity for values; scheduling inside one native kernel is LLVM's business.
"""

from __future__ import annotations

import numpy as np

from byteir_core.mlir import ir

EXPANDED = ("stablehlo.cbrt", "stablehlo.batch_norm_inference", "stablehlo.batch_norm_training",
            "stablehlo.optimization_barrier")


class _Builder:
    """Creates StableHLO ops right before ``anchor``."""

    def __init__(self, anchor):
        self.anchor = anchor

    def op(self, name, operands, result_type, attrs=None):
        with self.anchor.location, ir.InsertionPoint(self.anchor):
            return ir.Operation.create(name, results=[result_type], operands=list(operands),
                                       attributes=attrs or {}).result

    def splat(self, value, t):
        elem = t.element_type
        attr = ir.DenseElementsAttr.get_splat(t, ir.FloatAttr.get(elem, value))
        return self.op("stablehlo.constant", [], t, {"value": attr})

    def unary(self, name, x):
        return self.op(f"stablehlo.{name}", [x], x.type)

    def binary(self, name, a, b):
        return self.op(f"stablehlo.{name}", [a, b], a.type)

    def convert(self, x, t):
        return x if x.type == t else self.op("stablehlo.convert", [x], t)

    def compare(self, direction, a, b):
        t = ir.RankedTensorType(a.type)
        i1 = ir.RankedTensorType.get(t.shape, ir.IntegerType.get_signless(1))
        attrs = {"comparison_direction": ir.Attribute.parse(f"#stablehlo<comparison_direction {direction}>")}
        return self.op("stablehlo.compare", [a, b], i1, attrs)

    def reduce_sum(self, x, dims):
        if not dims:  # a sum over no dimension (the Linalg lowering refuses such a reduce)
            return x
        t = ir.RankedTensorType(x.type)
        scalar = ir.RankedTensorType.get([], t.element_type)
        shape = [n for d, n in enumerate(t.shape) if d not in dims]
        with self.anchor.location, ir.InsertionPoint(self.anchor):
            red = ir.Operation.create("stablehlo.reduce", results=[ir.RankedTensorType.get(shape, t.element_type)],
                                      operands=[x, self.splat(0.0, scalar)],
                                      attributes={"dimensions": ir.DenseI64ArrayAttr.get(list(dims))}, regions=1)
            block = red.regions[0].blocks.append(scalar, scalar)
            with ir.InsertionPoint(block):
                add = ir.Operation.create("stablehlo.add", results=[scalar], operands=list(block.arguments))
                ir.Operation.create("stablehlo.return", operands=[add.result])
        return red.result

    def broadcast(self, v, shape, dims):
        t = ir.RankedTensorType.get(shape, ir.RankedTensorType(v.type).element_type)
        return self.op("stablehlo.broadcast_in_dim", [v], t,
                       {"broadcast_dimensions": ir.DenseI64ArrayAttr.get(list(dims))})


def _expand_cbrt(op) -> None:
    b = _Builder(op)
    x = op.operands[0]
    t = ir.RankedTensorType(x.type)
    wide = ir.F64Type.get() if str(t.element_type) in ("f32", "f64") else ir.F32Type.get()
    t64 = ir.RankedTensorType.get(t.shape, wide)
    xd = b.convert(x, t64)
    a = b.unary("abs", xd)
    r0 = b.binary("power", a, b.splat(1.0 / 3.0, t64))
    step = b.binary("divide", b.binary("subtract", r0, b.binary("divide", a, b.binary("multiply", r0, r0))),
                    b.splat(3.0, t64))
    r1 = b.binary("subtract", r0, step)
    finite = b.op("stablehlo.is_finite", [a], ir.RankedTensorType.get(t.shape, ir.IntegerType.get_signless(1)))
    usable = b.binary("and", finite, b.compare("NE", a, b.splat(0.0, t64)))
    r = b.op("stablehlo.select", [usable, r1, r0], t64)
    y = b.convert(b.binary("multiply", b.unary("sign", xd), r), t)
    op.results[0].replace_all_uses_with(y)
    op.erase()


def _expand_batch_norm_inference(op) -> None:
    b = _Builder(op)
    x, scale, offset, mean, var = op.operands
    t = ir.RankedTensorType(x.type)
    fi = ir.IntegerAttr(op.attributes["feature_index"]).value
    eps = ir.FloatAttr(op.attributes["epsilon"]).value
    shape = list(t.shape)
    mean_b, var_b = b.broadcast(mean, shape, [fi]), b.broadcast(var, shape, [fi])
    scale_b, offset_b = b.broadcast(scale, shape, [fi]), b.broadcast(offset, shape, [fi])
    centered = b.binary("subtract", x, mean_b)
    stddev = b.unary("sqrt", b.binary("add", var_b, b.splat(eps, t)))
    y = b.binary("add", b.binary("multiply", scale_b, b.binary("divide", centered, stddev)), offset_b)
    op.results[0].replace_all_uses_with(y)
    op.erase()


def _drop_barrier(op) -> None:
    for r, v in zip(op.results, op.operands):
        r.replace_all_uses_with(v)
    op.erase()


def _expand_batch_norm_training(op) -> None:
    b = _Builder(op)
    x, scale, offset = op.operands
    t = ir.RankedTensorType(x.type)
    fi = ir.IntegerAttr(op.attributes["feature_index"]).value
    eps = ir.FloatAttr(op.attributes["epsilon"]).value
    shape = list(t.shape)
    wide = ir.F32Type.get() if str(t.element_type) in ("f16", "bf16") else t.element_type
    tw = ir.RankedTensorType.get(shape, wide)
    vw = ir.RankedTensorType.get([shape[fi]], wide)
    xw, scale_w, offset_w = b.convert(x, tw), b.convert(scale, vw), b.convert(offset, vw)
    others = [d for d in range(len(shape)) if d != fi]
    count = b.splat(float(np.prod([shape[d] for d in others])), vw)
    mean = b.binary("divide", b.reduce_sum(xw, others), count)
    centered = b.binary("subtract", xw, b.broadcast(mean, shape, [fi]))
    var = b.binary("divide", b.reduce_sum(b.binary("multiply", centered, centered), others), count)
    stddev = b.unary("sqrt", b.binary("add", b.broadcast(var, shape, [fi]), b.splat(eps, tw)))
    y = b.binary("add", b.binary("multiply", b.broadcast(scale_w, shape, [fi]), b.binary("divide", centered, stddev)),
                 b.broadcast(offset_w, shape, [fi]))
    v = ir.RankedTensorType(scale.type)
    for r, new in zip(op.results, (b.convert(y, t), b.convert(mean, v), b.convert(var, v))):
        r.replace_all_uses_with(new)
    op.erase()


_RULES = {"stablehlo.cbrt": _expand_cbrt, "stablehlo.batch_norm_inference": _expand_batch_norm_inference,
          "stablehlo.batch_norm_training": _expand_batch_norm_training,
          "stablehlo.optimization_barrier": _drop_barrier}


def _collect(op, out: list) -> None:
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                inner = inner.operation
                if inner.name in _RULES:
                    out.append(inner)
                _collect(inner, out)


def expand_ops(module) -> int:
    """Expand every op of :data:`EXPANDED` in ``module`` (in place); returns how many."""
    found: list = []
    _collect(module.operation, found)
    with module.context:
        for op in found:
            _RULES[op.name](op)
    return len(found)
