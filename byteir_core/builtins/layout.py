"""Channels-last convolutions, and transposes moved through the ops after them until they cancel.

PyTorch and ONNX models are NCHW; the CPU's convolution kernels (oneDNN's) want NHWC, so an NCHW convolution
pays a reorder of its input and of its output on every call. ``nhwc-convolutions`` makes every 2-D NCHW
convolution an NHWC one between two transposes; :func:`sink_transposes` then pushes each transpose through the
elementwise ops, broadcasts, pooling and reductions that follow (rewriting them for the other layout) until it
meets the transpose in front of the next convolution and both disappear. What is left is a transpose at the
model's input and one where channels-first values leave the convolution region (often none: a global average
pool reduces H and W in either layout).
"""

from __future__ import annotations

import numpy as np

from ..mlir import ir, stablehlo_api

ELEMENTWISE = frozenset(f"stablehlo.{n}" for n in (
    "add subtract multiply divide maximum minimum remainder power atan2 and or xor negate abs exponential "
    "exponential_minus_one log log_plus_one tanh logistic rsqrt sqrt cbrt convert sine cosine floor ceil "
    "round_nearest_even round_nearest_afz sign not is_finite compare select clamp".split()))


def _ints(attr) -> list[int]:
    return [int(x) for x in ir.DenseI64ArrayAttr(attr)]


def _producer(v):
    o = v.owner
    o = getattr(o, "operation", o)
    return o if isinstance(o, ir.Operation) else None


def _uses(v) -> list:
    return [(getattr(u.owner, "operation", u.owner), u.operand_number) for u in v.uses]


def _permuted(t, perm) -> ir.RankedTensorType:
    """The type of ``transpose(x : t, perm)``."""
    t = ir.RankedTensorType(t)
    return ir.RankedTensorType.get([t.shape[p] for p in perm], t.element_type)


def _inverse(perm) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _transpose(value, perm, before=None, after=None):
    loc = (before or after).location
    ip = ir.InsertionPoint(before) if before is not None else ir.InsertionPoint.after(after)
    with loc, ip:
        return ir.Operation.create("stablehlo.transpose", results=[_permuted(value.type, perm)],
                                   operands=[value],
                                   attributes={"permutation": ir.DenseI64ArrayAttr.get(perm)}).result


def _redirect(value, replacement, keep=None) -> None:
    for owner, idx in _uses(value):
        if keep is None or owner != keep:
            owner.operands[idx] = replacement


def nhwc_convolutions(module) -> None:
    """Every 2-D convolution NCHW -> NCHW becomes NHWC between transposes, which :func:`sink_transposes`
    then cancels across the network (functions with at least two such convolutions)."""
    for fn in module.body.operations:
        if fn.operation.name != "func.func" or not fn.regions[0].blocks:
            continue
        changed = False
        convs = [op.operation for op in fn.regions[0].blocks[0].operations if _nchw_conv(op.operation)]
        if len(convs) < 2:  # one convolution: its transposes would cost what its own reorders cost
            continue
        for op in convs:
            t = ir.RankedTensorType(op.results[0].type)
            d = stablehlo_api.ConvDimensionNumbers(op.attributes["dimension_numbers"])
            with op.context, op.location:
                op.operands[0] = _transpose(op.operands[0], [0, 2, 3, 1], before=op)
                op.attributes["dimension_numbers"] = stablehlo_api.ConvDimensionNumbers.get(
                    input_batch_dimension=0, input_feature_dimension=3, input_spatial_dimensions=[1, 2],
                    kernel_input_feature_dimension=d.kernel_input_feature_dimension,
                    kernel_output_feature_dimension=d.kernel_output_feature_dimension,
                    kernel_spatial_dimensions=list(d.kernel_spatial_dimensions),
                    output_batch_dimension=0, output_feature_dimension=3, output_spatial_dimensions=[1, 2],
                    ctx=op.context)
                r = op.results[0]
                uses = _uses(r)
                r.set_type(_permuted(t, [0, 2, 3, 1]))
                back = _transpose(r, [0, 3, 1, 2], after=op)
                for owner, idx in uses:
                    owner.operands[idx] = back
            changed = True
        if changed:
            sink_transposes(fn)


def _nchw_conv(op) -> bool:
    if op.name != "stablehlo.convolution":
        return False
    t = ir.RankedTensorType(op.results[0].type)
    if len(t.shape) != 4 or not t.has_static_shape:
        return False
    d = stablehlo_api.ConvDimensionNumbers(op.attributes["dimension_numbers"])
    return ((d.input_batch_dimension, d.input_feature_dimension, list(d.input_spatial_dimensions)) == (0, 1, [2, 3])
            and (d.output_batch_dimension, d.output_feature_dimension,
                 list(d.output_spatial_dimensions)) == (0, 1, [2, 3]))


def _pre_operand(v, t_result, a, perm):
    """``v`` (an operand of an op being moved before the transpose ``t_result = transpose(a, perm)``) in the
    un-transposed layout, or None. May rewrite a single-use broadcast or splat constant in place."""
    if v == t_result:
        return a
    p = _producer(v)
    if p is None:
        return None
    if p.name == "stablehlo.transpose" and _ints(p.attributes["permutation"]) == perm:
        return p.operands[0]
    if p.name == "stablehlo.broadcast_in_dim":
        if len(_uses(v)) != 1:  # shared: this user gets its own copy
            with p.context, p.location, ir.InsertionPoint(p):
                p = p.clone()
            v = p.results[0]
        dims = _ints(p.attributes["broadcast_dimensions"])
        with p.context, p.location:
            p.attributes["broadcast_dimensions"] = ir.DenseI64ArrayAttr.get([perm[d] for d in dims])
            v.set_type(_permuted(v.type, _inverse(perm)))
        return v
    if p.name == "stablehlo.constant":
        attr = p.attributes["value"]
        if isinstance(attr, ir.DenseElementsAttr) and attr.is_splat:
            with p.context, p.location, ir.InsertionPoint(p):
                new_t = _permuted(v.type, _inverse(perm))
                c = ir.Operation.create("stablehlo.constant", results=[new_t], attributes={
                    "value": ir.DenseElementsAttr.get_splat(new_t, attr.get_splat_value())}).result
            return c
    return None


def _sink_one(t_op, user, idx) -> bool:
    perm = _ints(t_op.attributes["permutation"])
    a, r = t_op.operands[0], t_op.results[0]
    inv = _inverse(perm)
    name = user.name
    with user.context, user.location:
        if name == "stablehlo.transpose":
            q = _ints(user.attributes["permutation"])
            composed = [perm[i] for i in q]
            if composed == sorted(composed):
                _redirect(user.results[0], a)
                user.erase()
            else:
                user.operands[0] = a
                user.attributes["permutation"] = ir.DenseI64ArrayAttr.get(composed)
            return True
        if name in ELEMENTWISE:
            if any(ir.RankedTensorType(v.type).rank != len(perm) for v in user.operands):
                return False
            pre = [_pre_operand(v, r, a, perm) for v in user.operands]
            if any(v is None for v in pre):
                return False
            for i, v in enumerate(pre):
                user.operands[i] = v
            _move_result_after(user, perm)
            return True
        if name == "stablehlo.reduce_window" and len(user.operands) == 2 and idx == 0:
            for key in ("window_dimensions", "window_strides", "base_dilations", "window_dilations"):
                if key in user.attributes:
                    vals = _ints(user.attributes[key])
                    user.attributes[key] = ir.DenseI64ArrayAttr.get([vals[inv[j]] for j in range(len(perm))])
            if "padding" in user.attributes:
                pad = np.asarray(user.attributes["padding"]).reshape(len(perm), 2)
                pad_t = ir.RankedTensorType.get([len(perm), 2], ir.IntegerType.get_signless(64))
                user.attributes["padding"] = ir.DenseElementsAttr.get(
                    np.ascontiguousarray(pad[inv].astype(np.int64)), type=pad_t)
            user.operands[0] = a
            _move_result_after(user, perm)
            return True
        if name == "stablehlo.reduce" and len(user.operands) == 2 and idx == 0:
            dims = _ints(user.attributes["dimensions"])
            kept = [i for i in range(len(perm)) if i not in dims]
            kept_pre = [perm[i] for i in kept]
            order = sorted(kept_pre)
            q = [order.index(k) for k in kept_pre]  # result (y layout) = transpose(result (pre layout), q)
            user.attributes["dimensions"] = ir.DenseI64ArrayAttr.get(sorted(perm[d] for d in dims))
            user.operands[0] = a
            res = user.results[0]
            rt = ir.RankedTensorType(res.type)
            if q == sorted(q):
                return True  # same result layout: nothing to put back
            uses = _uses(res)
            res.set_type(_permuted(rt, _inverse(q)))
            back = _transpose(res, q, after=user)
            for owner, i in uses:
                owner.operands[i] = back
            return True
    return False


def _move_result_after(user, perm) -> None:
    """``user`` now computes in the un-transposed layout: retype its result and transpose it back for its
    users."""
    res = user.results[0]
    uses = _uses(res)
    res.set_type(_permuted(res.type, _inverse(perm)))
    back = _transpose(res, perm, after=user)
    for owner, i in uses:
        owner.operands[i] = back


def sink_transposes(fn, max_rounds: int = 100000) -> None:
    """Move transposes toward the results, through the ops :func:`_sink_one` knows, until they cancel or stop.

    A round moves every transpose of the block one step; only a move that erases a later op (two transposes
    cancelling) ends the round early, as the round's list of ops then holds an erased one. Rounds are thus
    about the number of cancellations plus the longest path a transpose travels, not the number of moves
    (DenseNet-121: 43 s -> about 1 s)."""
    block = fn.regions[0].blocks[0]
    for _ in range(max_rounds):
        progress = restart = False
        for op in [op.operation for op in block.operations]:
            if op.name != "stablehlo.transpose":
                continue
            for user, idx in _uses(op.results[0]):
                if user.name == "func.return":
                    continue
                cancels = user.name == "stablehlo.transpose" and _cancels(op, user)
                if _sink_one(op, user, idx):
                    progress = True
                    restart = cancels
                    break
            if not _uses(op.results[0]):
                op.erase()
            if restart:
                break
        if not progress:
            return


def _cancels(t_op, user) -> bool:
    perm = _ints(t_op.attributes["permutation"])
    composed = [perm[i] for i in _ints(user.attributes["permutation"])]
    return composed == sorted(composed)
