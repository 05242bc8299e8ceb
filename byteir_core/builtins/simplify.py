"""Algebraic simplification the canonicalizer of this MLIR build does not do, as pattern -> replacement rules.

``x ** c`` with a splat constant ``c`` in {1, 2, 3, 0.5, -0.5} becomes multiplies, ``sqrt`` or ``rsqrt``: RMSNorm's ``x.pow(2)`` otherwise calls ``powf`` for every element.
"""

from __future__ import annotations

import numpy as np

from ..mlir import ir


def _splat_value(v):
    owner = v.owner
    if not isinstance(owner, (ir.Operation, ir.OpView)) or owner.operation.name != "stablehlo.constant":
        return None
    attr = owner.operation.attributes["value"]
    if not isinstance(attr, ir.DenseElementsAttr) or not attr.is_splat:
        return None
    try:
        return float(np.asarray(attr).reshape(-1)[0])
    except (TypeError, ValueError):
        return None


def _create(name, operands, result_type, ip_op):
    with ip_op.context, ip_op.location, ir.InsertionPoint(ip_op):
        return ir.Operation.create(name, results=[result_type], operands=operands).result


def _rewrite_power(op) -> bool:
    x, c = op.operands
    t = op.results[0].type
    if not isinstance(t, ir.RankedTensorType) or not str(t.element_type).startswith(("f", "bf")):
        return False
    e = _splat_value(c)
    if e is None:
        return False
    if e == 1.0:
        new = x
    elif e == 2.0:
        new = _create("stablehlo.multiply", [x, x], t, op)
    elif e == 3.0:
        new = _create("stablehlo.multiply", [_create("stablehlo.multiply", [x, x], t, op), x], t, op)
    elif e == 0.5:
        new = _create("stablehlo.sqrt", [x], t, op)
    elif e == -0.5:
        new = _create("stablehlo.rsqrt", [x], t, op)
    else:
        return False
    op.results[0].replace_all_uses_with(new)
    op.erase()
    return True


RULES = {"stablehlo.power": _rewrite_power}


def simplify(module) -> None:
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        for op in list(fn.regions[0].blocks[0].operations):
            rule = RULES.get(op.operation.name)
            if rule is not None:
                rule(op.operation)
