"""Algebraic simplification the canonicalizer of this MLIR build does not do, as pattern -> replacement rules.

``dot_general`` absorbs transposes of its operands when the result is unchanged (``x @ w.T``); a transpose of a
transpose becomes one transpose, or none.
A convolution with constant weights absorbs the per-channel scale and shift that follow it (inference
BatchNorm): one bias add is left.
``x ** c`` with a splat constant ``c`` in {1, 2, 3, 0.5, -0.5} becomes multiplies, ``sqrt`` or ``rsqrt``: RMSNorm's ``x.pow(2)`` otherwise calls ``powf`` for every element.
A zero ``pad`` of a convolution's input spatial dimensions (Keras' ``ZeroPadding2D`` before a strided
convolution) becomes the convolution's own padding.
A ``reduce`` over a dimension of size 0 becomes its init value, broadcast; a ``slice`` with no elements becomes an
empty constant.
"""

from __future__ import annotations

import numpy as np

from ..mlir import ir


def _splat_value(v):
    owner = v.owner
    if isinstance(owner, (ir.Operation, ir.OpView)) and owner.operation.name in (
            "stablehlo.broadcast_in_dim", "stablehlo.reshape", "stablehlo.convert"):
        # a converted, reshaped, broadcast scalar: torch-mlir's x.pow(2) is pow(x, bcast(reshape(convert(2))))
        return _splat_value(owner.operation.operands[0])
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
    _replace_with_dot(op, op, operands, dims["lhs"], dims["rhs"])
    return True


def _replace_with_dot(op, dot, operands, lhs_dims, rhs_dims, swap_precision: bool = False) -> None:
    """``op`` replaced by a ``dot_general`` with ``dot``'s attributes, these operands and (batching,
    contracting) dimensions per side; ``op`` is erased."""
    from ..mlir import stablehlo_api

    attrs = {na.name: na.attr for na in (dot.attributes[i] for i in range(len(dot.attributes)))}
    attrs["dot_dimension_numbers"] = stablehlo_api.DotDimensionNumbers.get(
        context=op.context, lhs_batching_dimensions=lhs_dims[0], rhs_batching_dimensions=rhs_dims[0],
        lhs_contracting_dimensions=lhs_dims[1], rhs_contracting_dimensions=rhs_dims[1])
    if swap_precision and "precision_config" in attrs and len(ir.ArrayAttr(attrs["precision_config"])) == 2:
        pc = ir.ArrayAttr(attrs["precision_config"])
        attrs["precision_config"] = ir.ArrayAttr.get([pc[1], pc[0]], context=op.context)
    with op.context, op.location, ir.InsertionPoint(op):
        new = ir.Operation.create("stablehlo.dot_general", results=[op.results[0].type], operands=operands,
                                  attributes=attrs)
    op.results[0].replace_all_uses_with(new.results[0])
    op.erase()


def _perm(op) -> list[int]:
    return [int(p) for p in ir.DenseI64ArrayAttr(op.attributes["permutation"])]


def _fold_transpose(op) -> bool:
    """``transpose(transpose(x, p), q)`` -> ``transpose(x, p[q])``, nothing at all when that is the identity; an
    identity transpose -> its operand. PyTorch's autograd writes a weight gradient as ``(a.T @ b).T`` and the
    backward of ``x @ w.T`` as ``x @ w.T.T``: without this each pair costs two copies of a weight-sized tensor
    per training step."""
    if _swap_dot_for_transpose(op):
        return True
    x, perm = op.operands[0], _perm(op)
    inner = _owner(x)
    composed = inner is not None and inner.name == "stablehlo.transpose"
    if composed:
        p = _perm(inner)
        perm, x = [p[i] for i in perm], inner.operands[0]
    identity = perm == list(range(len(perm)))
    if not (composed or identity):
        return False
    if identity:
        new = x
    else:
        with op.context, op.location, ir.InsertionPoint(op):
            new = ir.Operation.create("stablehlo.transpose", results=[op.results[0].type], operands=[x],
                                      attributes={"permutation": ir.DenseI64ArrayAttr.get(perm)}).result
    op.results[0].replace_all_uses_with(new)
    op.erase()
    if composed and not list(inner.results[0].uses):
        inner.erase()
    return True


def _swap_dot_for_transpose(op) -> bool:
    """``transpose(dot_general(a, b))`` that swaps the two free-dimension blocks -> ``dot_general(b, a)``
    (``(a @ b).T == b.T @ a.T``): the product is written in the layout wanted instead of being copied."""
    from ..mlir import stablehlo_api

    dot = _owner(op.operands[0])
    if dot is None or dot.name != "stablehlo.dot_general" or len(list(dot.results[0].uses)) != 1:
        return False
    a, b = dot.operands
    dn = stablehlo_api.DotDimensionNumbers(dot.attributes["dot_dimension_numbers"])
    lb, lc = list(dn.lhs_batching_dimensions), list(dn.lhs_contracting_dimensions)
    rb, rc = list(dn.rhs_batching_dimensions), list(dn.rhs_contracting_dimensions)
    nb = len(lb)
    nl = a.type.rank - nb - len(lc)
    nr = b.type.rank - nb - len(rc)
    if nl == 0 or nr == 0 or _perm(op) != list(range(nb)) + list(range(nb + nl, nb + nl + nr)) + \
            list(range(nb, nb + nl)):
        return False
    _replace_with_dot(op, dot, [b, a], [rb, rc], [lb, lc], swap_precision=True)
    dot.erase()
    return True


def _owner(v):
    o = v.owner
    o = getattr(o, "operation", o)
    return o if isinstance(o, ir.Operation) else None


def _dense(v):
    """The value of a constant ``v`` as a NumPy array, or None."""
    o = _owner(v)
    if o is None or o.name != "stablehlo.constant" or not isinstance(o.attributes["value"], ir.DenseElementsAttr):
        return None
    attr = o.attributes["value"]
    t = ir.RankedTensorType(v.type)
    if attr.is_splat:
        return np.full(t.shape, np.asarray(attr).reshape(-1)[0])
    return np.asarray(attr)


def _per_channel(v, dim: int, n: int):
    """``v`` as a length-``n`` vector when it varies only along ``dim`` and is a compile-time constant: a splat,
    or a ``broadcast_in_dim`` of a constant (BatchNorm's mean, scale and shift), else None."""
    val = _splat_value(v)
    if val is not None:
        return np.full(n, val)
    o = _owner(v)
    if o is not None and o.name == "stablehlo.constant":  # a broadcast constant-folded into a full tensor
        full = _dense(v)
        if full is None or full.ndim <= dim or full.shape[dim] != n:
            return None
        rows = np.moveaxis(full, dim, 0).reshape(n, -1)
        return rows[:, 0].copy() if (rows == rows[:, :1]).all() else None
    if o is None or o.name != "stablehlo.broadcast_in_dim":
        return None
    src = _dense(o.operands[0])
    if src is None:
        return None
    bdims = [int(d) for d in ir.DenseI64ArrayAttr(o.attributes["broadcast_dimensions"])]
    if any(src.shape[k] != 1 for k, d in enumerate(bdims) if d != dim):
        return None
    if dim in bdims:
        return src.reshape(-1) if src.size == n else None
    return np.full(n, src.reshape(-1)[0]) if src.size == 1 else None


def _fold_channel_affine_into_conv(op) -> bool:
    """``(conv(x, W) - m) * s * g + b`` (an inference BatchNorm after a convolution, per output channel, all
    constants) -> ``conv(x, W * s * g) + b'``: the scale goes into the weights at compile time and one bias add
    is left, which a library convolution or the next fused kernel absorbs."""
    from ..mlir import stablehlo_api

    w = _dense(op.operands[1])
    t = ir.RankedTensorType(op.results[0].type)
    if w is None or w.dtype not in (np.float32, np.float64) or len(list(op.results[0].uses)) != 1:
        return False
    dn = stablehlo_api.ConvDimensionNumbers(op.attributes["dimension_numbers"])
    ofd, kofd = dn.output_feature_dimension, dn.kernel_output_feature_dimension
    n = t.shape[ofd]
    scale, shift = np.ones(n, np.float64), np.zeros(n, np.float64)
    cur, chain = op.results[0], []
    while True:
        uses = list(cur.uses)
        if len(uses) != 1:
            break
        user = uses[0].owner
        user = getattr(user, "operation", user)
        if user.name not in ("stablehlo.add", "stablehlo.subtract", "stablehlo.multiply") or user.results[0].type != t:
            break
        a, b = user.operands
        if user.name == "stablehlo.subtract" and a != cur:
            break
        other = b if a == cur else a
        vec = _per_channel(other, ofd, n)
        if vec is None:
            break
        if user.name == "stablehlo.add":
            shift = shift + vec
        elif user.name == "stablehlo.subtract":
            shift = shift - vec
        else:
            scale, shift = scale * vec, shift * vec
        chain.append(user)
        cur = user.results[0]
    if not chain or not any(c.name == "stablehlo.multiply" for c in chain):
        return False  # nothing to fold into the weights (a lone bias add stays as it is)
    shape = [1] * w.ndim
    shape[kofd] = n
    new_w = (w * scale.reshape(shape)).astype(w.dtype)
    el = ir.RankedTensorType(op.operands[1].type).element_type
    with op.context, op.location:
        vec_t = ir.RankedTensorType.get([n], el)
    last = chain[-1]
    with op.context, op.location, ir.InsertionPoint(op):
        w_const = ir.Operation.create("stablehlo.constant", results=[op.operands[1].type], attributes={
            "value": ir.DenseElementsAttr.get(np.ascontiguousarray(new_w), type=op.operands[1].type)}).result
        attrs = {na.name: na.attr for na in (op.attributes[i] for i in range(len(op.attributes)))}
        conv = ir.Operation.create("stablehlo.convolution", results=[t], operands=[op.operands[0], w_const],
                                   attributes=attrs).result
    with op.context, last.location, ir.InsertionPoint(last):
        b_const = ir.Operation.create("stablehlo.constant", results=[vec_t], attributes={
            "value": ir.DenseElementsAttr.get(shift.astype(w.dtype), type=vec_t)}).result
        bias = ir.Operation.create("stablehlo.broadcast_in_dim", results=[t], operands=[b_const], attributes={
            "broadcast_dimensions": ir.DenseI64ArrayAttr.get([ofd])}).result
        new = ir.Operation.create("stablehlo.add", results=[t], operands=[conv, bias]).result
    last.results[0].replace_all_uses_with(new)
    for c in reversed(chain):
        c.erase()
    op.erase()
    return True


def _fold_pad_into_conv(op) -> bool:
    """``convolution(pad(x, 0, low, high), w)`` -> ``convolution(x, w)`` with ``low``/``high`` added to its
    padding, when the pad has no interior padding, pads only the input's spatial dimensions by amounts >= 0,
    and the convolution does not dilate its input (a dilated input's padding is counted after dilation)."""
    x = op.operands[0]
    pad = _owner(x)
    if pad is None or pad.name != "stablehlo.pad" or _splat_value(pad.operands[1]) != 0.0:
        return False
    low = [int(v) for v in ir.DenseI64ArrayAttr(pad.attributes["edge_padding_low"])]
    high = [int(v) for v in ir.DenseI64ArrayAttr(pad.attributes["edge_padding_high"])]
    interior = [int(v) for v in ir.DenseI64ArrayAttr(pad.attributes["interior_padding"])]
    from ..mlir import stablehlo_api

    dn = stablehlo_api.ConvDimensionNumbers(op.attributes["dimension_numbers"])
    spatial = list(dn.input_spatial_dimensions)
    if any(interior) or min(low + high) < 0 or any(low[d] or high[d] for d in range(len(low)) if d not in spatial):
        return False
    if "lhs_dilation" in op.attributes and any(int(v) != 1 for v in ir.DenseI64ArrayAttr(op.attributes["lhs_dilation"])):
        return False
    n = len(spatial)
    old = (np.asarray(ir.DenseElementsAttr(op.attributes["padding"])).reshape(n, 2).astype(np.int64)
           if "padding" in op.attributes else np.zeros((n, 2), np.int64))
    new = old + np.array([[low[d], high[d]] for d in spatial], np.int64)
    with op.context, op.location:
        t = ir.RankedTensorType.get([n, 2], ir.IntegerType.get_signless(64))
        op.attributes["padding"] = ir.DenseElementsAttr.get(np.ascontiguousarray(new), type=t)
    op.operands[0] = pad.operands[0]
    if not list(pad.results[0].uses):
        pad.erase()
    return False  # the convolution itself stays


def _fold_empty_reduce(op) -> bool:
    """A ``reduce`` of an input with no elements combines none: each result is its init value, broadcast.
    (ONNX's ``Reduce*`` of an empty set; the CPU code generator cannot bufferize a loop over nothing.)"""
    n = len(op.results)
    inputs, inits = list(op.operands)[:n], list(op.operands)[n:]
    t = inputs[0].type
    if not isinstance(t, ir.RankedTensorType) or not t.has_static_shape or 0 not in t.shape:
        return False  # (a 0 in a kept dimension: the result is empty, so the broadcast is right too)
    if not all(isinstance(r.type, ir.RankedTensorType) and r.type.has_static_shape for r in op.results):
        return False
    news = []
    with op.context, op.location, ir.InsertionPoint(op):
        for init, r in zip(inits, op.results):
            news.append(ir.Operation.create("stablehlo.broadcast_in_dim", results=[r.type], operands=[init],
                                            attributes={"broadcast_dimensions": ir.DenseI64ArrayAttr.get([])}
                                            ).result)
    for r, new in zip(op.results, news):
        r.replace_all_uses_with(new)
    op.erase()
    return True


def _fold_empty_slice(op) -> bool:
    """A ``slice`` that selects nothing (ONNX's Split with a zero-size part, a kernel of size one's empty state
    slice) is an empty constant; the CPU code generator cannot compile a copy of nothing."""
    t = op.results[0].type
    if not isinstance(t, ir.RankedTensorType) or not t.has_static_shape or 0 not in t.shape:
        return False
    with op.context, op.location, ir.InsertionPoint(op):
        empty = ir.Attribute.parse(f"dense<> : {t}")
        new = ir.Operation.create("stablehlo.constant", results=[t], attributes={"value": empty}).result
    op.results[0].replace_all_uses_with(new)
    op.erase()
    return True


RULES = {"stablehlo.power": _rewrite_power, "stablehlo.transpose": _fold_transpose,
         "stablehlo.dot_general": _fold_transposes_into_dot,
         "stablehlo.reduce": _fold_empty_reduce, "stablehlo.slice": _fold_empty_slice,
         "stablehlo.convolution": _fold_pad_into_conv}


def _apply(module, rules, erases_later_ops: bool = False) -> None:
    """Each rule on each op of each function's body. A rule may erase the op it is given; one that also erases
    ops after it (``erases_later_ops``) ends the walk over the list taken before it ran, which then holds erased
    ops (touching one aborts the process), and the walk starts again on a fresh list."""
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        again = True
        while again:
            again = False
            for op in list(fn.regions[0].blocks[0].operations):
                rule = rules.get(op.operation.name)
                if rule is not None and rule(op.operation) and erases_later_ops:
                    again = True
                    break


def simplify(module) -> None:
    _apply(module, RULES)


def fold_conv_affine(module) -> None:
    """Runs after constant folding, when BatchNorm's ``rsqrt(var + eps) * gamma`` has become a constant."""
    _apply(module, {"stablehlo.convolution": _fold_channel_affine_into_conv}, erases_later_ops=True)


#: Ops cheap enough to recompute in every consumer: a copy of each goes next to each user, so no cluster has to
#: write out a broadcast tensor for other clusters to read back (a 4-D attention mask, a scalar made a tensor).
_REMATERIALIZE = frozenset({"stablehlo.broadcast_in_dim", "stablehlo.iota"})


def rematerialize_broadcasts(module) -> None:
    """Identity broadcasts disappear; a broadcast (or iota) with several users gets one copy per user, placed
    right before it, and one with a single user moves right before that user."""
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        for op in list(fn.regions[0].blocks[0].operations):
            op = op.operation
            if op.name not in _REMATERIALIZE:
                continue
            result = op.results[0]
            if op.name == "stablehlo.broadcast_in_dim" and op.operands[0].type == result.type:
                dims = [int(d) for d in ir.DenseI64ArrayAttr(op.attributes["broadcast_dimensions"])]
                if dims == sorted(dims):
                    result.replace_all_uses_with(op.operands[0])
                    op.erase()
                    continue
            uses = [(getattr(u.owner, "operation", u.owner), u.operand_number) for u in result.uses]
            if len(uses) == 1:  # moved next to its one user, so both land in the same cluster
                owner = uses[0][0]
                if owner.name != "func.return" and owner.block == op.block:
                    op.move_before(owner)
                continue
            for owner, idx in uses:
                if owner.name == "func.return":
                    continue
                with ir.InsertionPoint(owner):
                    clone = op.clone()
                owner.operands[idx] = clone.results[0]
            if not list(result.uses):
                op.erase()
