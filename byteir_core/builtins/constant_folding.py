"""Constant folding of whole ops: an op whose operands are all ``stablehlo.constant`` and whose results are
small is evaluated once, at compile time, by the StableHLO reference interpreter and replaced by constants.

Only ops the interpreter supports are folded (it aborts the process on others), and only when every result
has at most :data:`MAX_FOLDED_ELEMENTS` elements, so weights are never duplicated into bigger constants.
"""

from __future__ import annotations

import math

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
            and all(_small(r.type) for r in op.results) and interpreter_supports(op))


def fold_constants(module: ir.Module) -> None:
    ctx = module.context
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        block = fn.regions[0].blocks[0]
        for op in list(block.operations):
            op = op.operation
            if not _foldable(op):
                continue
            consts = list(dict.fromkeys(v.owner.operation for v in op.operands))
            tmp = outline(consts + [op], [], list(op.results), ctx)
            with ctx, ir.Location.unknown():
                try:
                    values = stablehlo_api.eval_module(tmp, [])
                except Exception:  # noqa: BLE001 -- folding is an optimisation; leave the op as it is
                    continue
            with ctx, op.location, ir.InsertionPoint(op):
                for old, value in zip(op.results, values):
                    new = ir.Operation.create("stablehlo.constant", results=[old.type],
                                              attributes={"value": value})
                    old.replace_all_uses_with(new.result)
            op.erase()
        for op in reversed(list(block.operations)):  # constants nobody uses any more
            op = op.operation
            if op.name == "stablehlo.constant" and not any(True for r in op.results for _ in r.uses):
                op.erase()
