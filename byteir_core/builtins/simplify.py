"""Algebraic simplification the canonicalizer of this MLIR build does not do, as pattern -> replacement rules.

``dot_general`` absorbs transposes of its operands when the result is unchanged (``x @ w.T``).
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


def _fold_transposes_into_dot(op) -> bool:
    """``dot_general(transpose(y), b)`` -> ``dot_general(y, b)`` with the dimension numbers remapped, when the
    free dimensions keep their order (so the result is unchanged). Weight transposes (``x @ w.T`` in PyTorch)
    then cost nothing: the GEMM reads ``w`` transposed instead of a copy being made every call."""
    from ..mlir import stablehlo_api

    dn = stablehlo_api.DotDimensionNumbers(op.attributes["dot_dimension_numbers"])
    dims = {"lhs": [list(dn.lhs_batching_dimensions), list(dn.lhs_contracting_dimensions)],
            "rhs": [list(dn.rhs_batching_dimensions), list(dn.rhs_contracting_dimensions)]}
    operands = list(op.operands)
    changed = False
    for side, idx in (("lhs", 0), ("rhs", 1)):
        producer = operands[idx].owner
        producer = getattr(producer, "operation", producer)
        if not isinstance(producer, ir.Operation) or producer.name != "stablehlo.transpose":
            continue
        source = producer.operands[0].owner  # a Block for a function argument
        source = getattr(source, "operation", source)
        if isinstance(source, ir.Operation) and source.name == "stablehlo.constant":
            continue  # a constant weight is transposed once at compile time instead (fold-constants)
        perm = [int(p) for p in ir.DenseI64ArrayAttr(producer.attributes["permutation"])]
        batch, contract = dims[side]
        free = [i for i in range(len(perm)) if i not in batch and i not in contract]
        mapped_free = [perm[i] for i in free]
        if mapped_free != sorted(mapped_free):
            continue
        dims[side] = [[perm[d] for d in batch], [perm[d] for d in contract]]
        operands[idx] = producer.operands[0]
        changed = True
    if not changed:
        return False
    new_dn = stablehlo_api.DotDimensionNumbers.get(
        context=op.context, lhs_batching_dimensions=dims["lhs"][0], rhs_batching_dimensions=dims["rhs"][0],
        lhs_contracting_dimensions=dims["lhs"][1], rhs_contracting_dimensions=dims["rhs"][1])
    attrs = {na.name: na.attr for na in (op.attributes[i] for i in range(len(op.attributes)))}
    attrs["dot_dimension_numbers"] = new_dn
    with op.context, op.location, ir.InsertionPoint(op):
        new = ir.Operation.create("stablehlo.dot_general", results=[op.results[0].type], operands=operands,
                                  attributes=attrs)
    op.results[0].replace_all_uses_with(new.results[0])
    op.erase()
    return True


RULES = {"stablehlo.power": _rewrite_power, "stablehlo.dot_general": _fold_transposes_into_dot}


def simplify(module) -> None:
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        for op in list(fn.regions[0].blocks[0].operations):
            rule = RULES.get(op.operation.name)
            if rule is not None:
                rule(op.operation)
