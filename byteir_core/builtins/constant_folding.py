"""Constant folding of whole ops, at compile time.

- Layout ops on a constant (``transpose``, ``reshape``, float-to-float ``convert``) whose operand has no other
  use are folded with NumPy whatever their size: a transposed weight (``x @ W.T`` from PyTorch) becomes a
  weight in the layout the kernel wants, instead of a transpose run on every call.
- Any other op whose operands are all constants and whose results are small is evaluated by the StableHLO
  reference interpreter. Only ops the interpreter supports are folded (it aborts the process on others), and
  only when every result has at most :data:`MAX_FOLDED_ELEMENTS` elements, so constants never grow (and
  broadcasts of non-splat constants are left to their consumers).
"""

from __future__ import annotations

import math

import numpy as np

from ..compiler.outline import outline
from ..mlir import ir, stablehlo_api

MAX_FOLDED_ELEMENTS = 4096


def _small(t) -> bool:
    if not isinstance(t, ir.RankedTensorType):
        return False
    rt = t
    # bf16 results cannot come back through NumPy's buffer protocol
    return rt.has_static_shape and math.prod(rt.shape) <= MAX_FOLDED_ELEMENTS \
        and str(rt.element_type) != "bf16"


def _is_constant(v) -> bool:
    owner = v.owner
    return isinstance(owner, (ir.Operation, ir.OpView)) and owner.operation.name == "stablehlo.constant"


def _foldable(op) -> bool:
    from .reference import interpreter_supports

    return (op.name != "stablehlo.constant" and len(op.regions) == 0
            and all(_is_constant(v) for v in op.operands)
            and all(_small(r.type) for r in op.results) and not _expands(op) and interpreter_supports(op))


def _expands(op) -> bool:
    """A broadcast of a non-splat constant: folding it would store every copy (a per-channel bias as a whole
    activation-sized tensor); consumers read the broadcast for free instead."""
    if op.name != "stablehlo.broadcast_in_dim":
        return False
    attr = op.operands[0].owner.operation.attributes["value"]
    return not (isinstance(attr, ir.DenseElementsAttr) and attr.is_splat)


_LAYOUT_OPS = ("stablehlo.transpose", "stablehlo.reshape", "stablehlo.convert")


def _fold_layout_with_numpy(op):
    """The folded value of a layout op on a single-use constant, or None."""
    if op.name not in _LAYOUT_OPS or len(op.operands) != 1 or not _is_constant(op.operands[0]):
        return None
    src = op.operands[0]
    if sum(1 for _ in src.uses) != 1:
        return None
    in_t, out_t = src.type, op.results[0].type
    if not (isinstance(out_t, ir.RankedTensorType) and out_t.has_static_shape):
        return None
    kinds = {str(in_t.element_type), str(out_t.element_type)}
    if "bf16" in kinds:
        return None
    if op.name == "stablehlo.convert" and not kinds <= {"f16", "f32", "f64"}:
        return None
    attr = src.owner.attributes["value"]
    if not isinstance(attr, ir.DenseElementsAttr):
        return None
    arr = np.asarray(attr)
    if op.name == "stablehlo.transpose":
        arr = arr.transpose(list(op.attributes["permutation"]))
    elif op.name == "stablehlo.reshape":
        arr = arr.reshape(out_t.shape)
    else:
        from ..dtypes import to_numpy

        arr = arr.astype(to_numpy(str(out_t.element_type)))
    arr = np.require(arr, requirements="C")  # keeps rank 0, unlike ascontiguousarray
    folded = ir.DenseElementsAttr.get(arr, shape=list(arr.shape))
    return folded if folded.type == out_t else None  # e.g. unsigned types: leave them to the interpreter


def _replace_with_constants(op, values) -> None:
    with op.context, op.location, ir.InsertionPoint(op):
        for old, value in zip(op.results, values):
            new = ir.Operation.create("stablehlo.constant", results=[old.type], attributes={"value": value})
            old.replace_all_uses_with(new.result)
    op.erase()


def fold_constants(module: ir.Module) -> None:
    ctx = module.context
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        block = fn.regions[0].blocks[0]
        for op in list(block.operations):
            op = op.operation
            with ctx, ir.Location.unknown():
                folded = _fold_layout_with_numpy(op)
            if folded is not None:
                _replace_with_constants(op, [folded])
                continue
            if not _foldable(op):
                continue
            consts = list(dict.fromkeys(v.owner.operation for v in op.operands))
            tmp = outline(consts + [op], [], list(op.results), ctx)
            with ctx, ir.Location.unknown():
                try:
                    values = stablehlo_api.eval_module(tmp, [])
                except Exception:  # noqa: BLE001 -- folding is an optimisation; leave the op as it is
                    continue
            _replace_with_constants(op, values)
        for op in reversed(list(block.operations)):  # constants nobody uses any more
            op = op.operation
            if op.name == "stablehlo.constant" and not any(True for r in op.results for _ in r.uses):
                op.erase()


def arith_constants_to_stablehlo(module: ir.Module) -> None:
    """Tensor ``arith.constant`` ops (some frontends leave a few) become ``stablehlo.constant``."""
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        for op in list(fn.regions[0].blocks[0].operations):
            op = op.operation
            if op.name == "arith.constant" and isinstance(op.results[0].type, ir.RankedTensorType):
                _replace_with_constants(op, [op.attributes["value"]])
