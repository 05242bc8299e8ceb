"""ONNX-level rewrites that run before import, for patterns torch-mlir's ONNX lowerings get wrong.

Each rewrite keeps the graph's meaning exactly and works on a shape-inferred model with static shapes.

- **Mod with ``fmod=0``** (the result takes the divisor's sign, like Python's ``%``): torch-mlir computes C's
  ``fmod`` for it. It becomes ``r = Mod(a, b, fmod=1)`` then ``r + b`` where ``r`` is non-zero and its sign
  differs from ``b``'s (ints and floats; an infinite divisor gives the infinity, as ONNX specifies).
- **Pooling with asymmetric pads** (e.g. Inception v1's final ``AveragePool`` with ``pads=[0,0,1,1]``), and
  **MaxPool with ``ceil_mode=1``** (torch-mlir's result is wrong): torch-mlir pads both sides by the begin pads.
  A ceil-mode MaxPool gets the end padding that makes floor mode give ceil mode's windows (a last window that
  would start in the padding is dropped, as ONNX Runtime does). The pads become an explicit ``Pad`` (``-inf`` for MaxPool, zeros for
  AveragePool) and the pool itself gets none; for an AveragePool that excludes padding from its divisor
  (``count_include_pad=0``, the default), the result is rescaled by a constant: window size over the number of
  real elements in each window.
- **LpPool**, and **AveragePool** over three spatial dimensions or with dilations, are depthwise ``Conv``s with a
  kernel of ones (then a root, or a division by the window size or by each window's real elements).
- **Pools with ``auto_pad``** (SAME_UPPER, SAME_LOWER, VALID) get explicit pads from the static shape (torch-mlir
  computed wrong output shapes for SAME); asymmetric ones then go through the rewrite above.
- **Clip** with neither bound is an ``Identity``; **Hardmax** is ``ArgMax`` compared with the positions along the
  axis (torch-mlir's lowerings of both do not reach StableHLO); **OneHot** (constant depth) compares indices
  with positions; **CumProd** is a running product along its axis.
- **Resize** becomes per-axis Gather / MatMul with constant weights (:mod:`.resize`): torch-mlir lowers none.
- **QuantizeLinear, DequantizeLinear, QLinearMatMul** become integer/float arithmetic (:mod:`.quantize`):
  torch-mlir's quantized tensors do not reach StableHLO.
- **RNN, GRU, LSTM** are unrolled over their static sequence length (:mod:`.rnn`): torch-mlir's loop does not
  reach StableHLO.
- **Scan** is unrolled over its static number of iterations (:mod:`.scan`): torch-mlir has no lowering for it.
- **Pad** with a pad value computed at run time is a zero pad plus ``Where`` over a constant mask.
- **Slice** with constant operands keeps only the axes it cuts (torch-mlir lowered a whole-axis slice among cut
  ones to dynamic shapes); **CenterCropPad** with a constant shape is a ``Slice`` and a ``Pad``; **Compress** with a constant condition
  is a ``Gather``; **ReverseSequence** is a ``GatherElements`` with
  positions computed from the lengths.
- The training optimizers **Adagrad, Momentum, Adam** (:mod:`.training`) and the ML ops **Binarizer,
  ArrayFeatureExtractor** (:mod:`.ml`) become default-domain arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _static_shape(proto: onnx.ModelProto, name: str):
    for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        if v.name == name:
            dims = v.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims) and len(dims):
                return [d.dim_value for d in dims], v.type.tensor_type.elem_type
    return None, None


def _types(proto: onnx.ModelProto) -> dict:
    """name -> (static shape or None, element type) for every typed value and initializer."""
    out = {}
    for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        tt = v.type.tensor_type
        dims = tt.shape.dim
        static = tt.HasField("shape") and all(d.HasField("dim_value") for d in dims)
        out[v.name] = ([d.dim_value for d in dims] if static else None, tt.elem_type or None)
    for t in proto.graph.initializer:
        out[t.name] = (list(t.dims), t.data_type)
    return out


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def legalize(proto: onnx.ModelProto) -> int:
    """Rewrite in place; the number of nodes rewritten. A rule that cannot handle a node (a form it does not
    know, an operand it cannot read) leaves it as it is, for the lowering to take or to report."""
    g = proto.graph
    new_nodes, inits, changed = [], [], 0
    ctx = _Context(proto)
    for n in g.node:
        rule = RULES.get(n.op_type) if n.domain in ("", "ai.onnx") else DOMAIN_RULES.get((n.domain, n.op_type))
        out = None
        if rule is not None:
            mark = len(inits)
            try:
                out = rule(ctx, n, inits)
            except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError, AttributeError):
                out = None
            if out is None:
                del inits[mark:]
        if out is None:
            new_nodes.append(n)
        else:
            new_nodes.extend(out)
            changed += 1
    if changed:
        del g.node[:]
        g.node.extend(new_nodes)
        g.initializer.extend(inits)
        if not any(o.domain in ("", "ai.onnx") for o in proto.opset_import):
            # a model of only ML/training-domain ops had no default domain; its replacements are in it (opset 13,
            # IR version 7 at least: initializers need not be graph inputs)
            proto.opset_import.append(helper.make_opsetid("", 13))
            proto.ir_version = max(proto.ir_version, 7)
    return changed


class _Context:
    """What rules read of the model, computed once and only if asked for."""

    def __init__(self, proto):
        self.proto = proto
        self._types = self._consts = None

    def info(self, name):
        if self._types is None:
            self._types = _types(self.proto)
        return self._types.get(name, (None, None))

    @property
    def consts(self) -> dict:
        if self._consts is None:
            from .resize import constant_values

            self._consts = constant_values(self.proto)
        return self._consts


def _rnn_rule(ctx, n, inits):
    from .rnn import rewrite

    return rewrite(n, ctx.info, ctx.consts, inits)


def _scan_rule(ctx, n, inits):
    from .scan import rewrite

    return rewrite(n, ctx.info, inits)


def _quantize_rule(ctx, n, inits):
    from .quantize import rewrite

    return rewrite(n, ctx.info, inits)


def _resize_rule(ctx, n, inits):
    from .resize import rewrite_resize

    shape, elem = _static_shape(ctx.proto, n.input[0])
    return rewrite_resize(ctx.proto, n, ctx.consts, shape, elem, _static_shape(ctx.proto, n.output[0])[0], inits)


def _mod_rule(ctx, n, inits):
    return None if _attrs(n).get("fmod", 0) else _floored_mod(n)


def _clip_rule(ctx, n, inits):
    if any(list(n.input)[1:]) or n.attribute:
        return None
    return [helper.make_node("Identity", [n.input[0]], list(n.output), name=n.name)]


def _training_rule(ctx, n, inits):
    from .training import rewrite

    return rewrite(n, ctx.info, inits)


def _ml_rule(ctx, n, inits):
    from .ml import rewrite

    return rewrite(n, ctx.info, inits)


def _compress_rule(ctx, n, inits):
    """``Compress`` with a constant condition is a ``Gather`` of the selected positions (torch-mlir's lowering
    does not reach StableHLO); without ``axis``, of the flattened input."""
    from .quantize import GraphBuilder

    cond = ctx.consts.get(n.input[1])
    shape, _ = ctx.info(n.input[0])
    if cond is None or shape is None:
        return None
    a = _attrs(n)
    b = GraphBuilder(n.name or "Compress", inits)
    x, axis = n.input[0], a.get("axis")
    if axis is None:
        x, axis, length = b.op("Reshape", [x, b.const(np.array([-1], np.int64), "flat")]), 0, int(np.prod(shape))
    else:
        axis = axis + len(shape) if axis < 0 else axis
        length = shape[axis]
    picked = np.nonzero(np.asarray(cond).reshape(-1)[:length])[0].astype(np.int64)
    b.op("Gather", [x, b.const(picked, "picked")], n.output[0], axis=axis)
    return b.nodes


def _reverse_sequence_rule(ctx, n, inits):
    """``ReverseSequence``: a ``GatherElements`` along the time axis with, for each batch entry ``b``, positions
    ``len[b] - 1 - t`` for ``t < len[b]`` and ``t`` beyond (torch-mlir needs the lengths at compile time)."""
    from .quantize import GraphBuilder

    shape, _ = ctx.info(n.input[0])
    if shape is None:
        return None
    a = _attrs(n)
    rank = len(shape)
    t_axis, b_axis = a.get("time_axis", 0) % rank, a.get("batch_axis", 1) % rank
    b = GraphBuilder(n.name or "ReverseSequence", inits)
    t_shape = [1] * rank
    t_shape[t_axis] = shape[t_axis]
    b_shape = [1] * rank
    b_shape[b_axis] = shape[b_axis]
    t = b.const(np.arange(shape[t_axis], dtype=np.int64).reshape(t_shape), "t")
    lens = b.op("Reshape", [b.cast(n.input[1], onnx.TensorProto.INT64), b.const(np.array(b_shape, np.int64))])
    back = b.op("Sub", [b.op("Sub", [lens, b.const(np.array(1, np.int64), "one")]), t])
    index = b.op("Where", [b.op("Less", [t, lens]), back, t])
    index = b.op("Expand", [index, b.const(np.array(shape, np.int64), "shape")])
    b.op("GatherElements", [n.input[0], index], n.output[0], axis=t_axis)
    return b.nodes


def _slice_rule(ctx, n, inits):
    """A ``Slice`` with constant operands over a static shape, reduced to the axes it really cuts, with explicit
    axes and steps. torch-mlir lowers a whole-axis slice among cut ones to dynamic shapes that do not reach
    StableHLO's static form; a slice that cuts nothing is an ``Identity``."""
    from .quantize import GraphBuilder

    shape, _ = ctx.info(n.input[0])
    if shape is None or len(n.input) < 3:
        return None
    ops = [ctx.consts.get(x) if x else None for x in list(n.input[1:5]) + [""] * (5 - len(n.input))]
    starts, ends, axes, steps = ops
    if starts is None or ends is None or (len(n.input) > 3 and n.input[3] and axes is None) or (
            len(n.input) > 4 and n.input[4] and steps is None):
        return None
    rank = len(shape)
    starts, ends = [int(v) for v in np.asarray(starts).reshape(-1)], [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = [int(v) % rank for v in np.asarray(axes).reshape(-1)] if axes is not None else list(range(len(starts)))
    steps = [int(v) for v in np.asarray(steps).reshape(-1)] if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        return None
    cut = []
    for s_, e, ax, st in zip(starts, ends, axes, steps):
        dim = shape[ax]
        s_, e = (s_ + dim if s_ < 0 else s_), (e + dim if e < 0 else e)
        if st > 0:
            s_, e = min(max(s_, 0), dim), min(max(e, 0), dim)
            if s_ == 0 and e == dim and st == 1:
                continue  # the whole axis
        else:
            s_, e = min(max(s_, 0), dim - 1), min(max(e, -1), dim - 1)
            if e == -1:
                e = -dim - 1  # to the first element inclusive (a plain -1 would mean the last)
        cut.append((s_, e, ax, st))
    if len(cut) == len(axes) and len(n.input) >= 5 and n.input[3] and n.input[4] and min(steps) > 0:
        return None  # every axis is cut forwards and all operands are given: torch-mlir takes it as it is
    b = GraphBuilder(n.name or "Slice", inits)
    x = n.input[0]
    forward = [c for c in cut if c[3] > 0]
    if forward:
        cols = list(zip(*forward))
        x = b.op("Slice", [x] + [b.const(np.array(c, np.int64), w)
                                 for c, w in zip(cols, ("starts", "ends", "axes", "steps"))])
    for s_, e, ax, st in cut:  # negative steps (which torch-mlir refuses): the positions they pick, gathered
        if st < 0:
            x = b.op("Gather", [x, b.const(np.arange(s_, max(e, -1), st, dtype=np.int64), "picked")], axis=ax)
    b.op("Identity", [x], n.output[0])
    return b.nodes


def _center_crop_pad_rule(ctx, n, inits):
    """``CenterCropPad`` with a constant target shape: a ``Slice`` of the centred window on each axis that shrinks
    and a zero ``Pad`` on each that grows, the odd element going to the end as onnx's reference puts it."""
    from .quantize import GraphBuilder

    target, (shape, _) = ctx.consts.get(n.input[1]), ctx.info(n.input[0])
    if target is None or shape is None:
        return None
    rank = len(shape)
    axes = [x % rank for x in _attrs(n).get("axes", range(rank))]
    target = [int(v) for v in np.asarray(target).reshape(-1)]
    if len(target) != len(axes):
        return None
    starts, ends, begin, end = [0] * rank, list(shape), [0] * rank, [0] * rank
    for axis, want in zip(axes, target):
        have = shape[axis]
        if want < have:
            starts[axis] = (have - want) // 2
            ends[axis] = starts[axis] + want
        elif want > have:
            begin[axis] = (want - have) // 2
            end[axis] = want - have - begin[axis]
    b = GraphBuilder(n.name or "CenterCropPad", inits)
    x = n.input[0]
    cut = [d for d in range(rank) if (starts[d], ends[d]) != (0, shape[d])]
    if cut:  # only the axes it cuts (see _slice_rule)
        x = b.op("Slice", [x] + [b.const(np.array(v, np.int64), w) for v, w in (
            ([starts[d] for d in cut], "starts"), ([ends[d] for d in cut], "ends"), (cut, "axes"),
            ([1] * len(cut), "steps"))])
    b.op("Pad", [x, b.const(np.array(begin + end, np.int64), "pads")], n.output[0])
    return b.nodes


def _pad_rule(ctx, n, inits):
    """A constant-mode ``Pad`` whose pad value is computed at run time: torch-mlir reads that value as a compile-time
    scalar (``aten.item``, which does not reach StableHLO). It becomes a zero-padded ``x`` and a constant mask of
    the padded positions: ``Where(mask, value, Pad(x))``, exact for every value (inf and NaN included)."""
    from .quantize import GraphBuilder

    a = _attrs(n)
    mode = a.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant" or len(n.input) < 3 or not n.input[2]:
        return None
    if n.input[2] in ctx.consts:
        return None  # torch-mlir takes a constant pad value
    shape, elem = ctx.info(n.input[0])
    if shape is None or not elem:
        return None
    b = GraphBuilder(n.name or "Pad", inits)
    rest = list(n.input[3:4])  # axes, if given
    padded = b.op("Pad", [n.input[0], n.input[1], ""] + rest)
    mask = b.op("Pad", [b.const(np.zeros(shape, np.bool_), "real"), n.input[1], b.const(np.bool_(True), "pad")]
                + rest)
    b.op("Where", [mask, n.input[2], padded], n.output[0])
    return b.nodes


def _pool_rule(ctx, n, inits):
    if n.op_type == "LpPool":
        return _pool_as_conv(ctx, n, inits)
    if n.op_type == "AveragePool":
        shape, _ = ctx.info(n.input[0])
        dilated = any(d != 1 for d in _attrs(n).get("dilations", []))
        if shape is not None and (len(shape) == 5 or dilated):
            return _pool_as_conv(ctx, n, inits)
    return _split_pool_pads(ctx.proto, n, inits)


def _explicit_pads(a: dict, spatial: list[int]) -> list[int] | None:
    """A pool's pads (begin..., end...) with ``auto_pad`` resolved against the static spatial shape."""
    k = len(spatial)
    kernel, strides = a["kernel_shape"], a.get("strides", [1] * k)
    dil = a.get("dilations", [1] * k)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "NOTSET":
        pads = list(a.get("pads", [0] * (2 * k)))
        return pads if len(pads) == 2 * k else None
    pads = [0] * (2 * k)
    if auto == "VALID":
        return pads
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    for d in range(k):
        reach = (kernel[d] - 1) * dil[d] + 1
        total = max((-(-spatial[d] // strides[d]) - 1) * strides[d] + reach - spatial[d], 0)
        small, big = total // 2, total - total // 2
        pads[d], pads[k + d] = (small, big) if auto == "SAME_UPPER" else (big, small)
    return pads


def _pool_as_conv(ctx, n, inits):
    """``LpPool``, and an ``AveragePool`` over three spatial dimensions or with dilations (torch-mlir crashes on the
    first and miscomputes the second), as a depthwise ``Conv`` with a kernel of ones: the window sums. An
    AveragePool divides them by the window size (``count_include_pad=1``) or by the real elements in each window
    (the same convolution of ones over the unpadded shape, a constant); an LpPool sums ``|x|^p`` and takes the
    ``p``-th root. ``ceil_mode`` is left to the lowering."""
    from .quantize import GraphBuilder

    shape, elem = ctx.info(n.input[0])
    if shape is None or len(n.output) != 1 or elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                                             onnx.TensorProto.FLOAT16):
        return None
    a = _attrs(n)
    k = len(shape) - 2
    if a.get("ceil_mode", 0) or "kernel_shape" not in a or k < 1:
        return None
    pads = _explicit_pads(a, shape[2:])
    if pads is None:
        return None
    dt = helper.tensor_dtype_to_np_dtype(elem)
    kernel = list(a["kernel_shape"])
    conv = {"kernel_shape": kernel, "strides": list(a.get("strides", [1] * k)), "pads": pads,
            "dilations": list(a.get("dilations", [1] * k))}
    b = GraphBuilder(n.name or n.op_type, inits)
    channels = shape[1]
    ones = b.const(np.ones([channels, 1, *kernel], dt), "ones")
    if n.op_type == "LpPool":
        p = float(a.get("p", 2))
        powered = b.op("Pow", [b.op("Abs", [n.input[0]]), b.const(np.array(p, dt), "p")])
        sums = b.op("Conv", [powered, ones], group=channels, **conv)
        b.op("Pow", [sums, b.const(np.array(1.0 / p, dt), "root")], n.output[0])
        return b.nodes
    sums = b.op("Conv", [n.input[0], ones], group=channels, **conv)
    if a.get("count_include_pad", 0):
        b.op("Div", [sums, b.const(np.array(np.prod(kernel), dt), "size")], n.output[0])
    else:
        real = b.const(np.ones([1, 1, *shape[2:]], dt), "real")
        counts = b.op("Conv", [real, b.const(np.ones([1, 1, *kernel], dt), "ones")], **conv)
        b.op("Div", [sums, counts], n.output[0])
    return b.nodes


def _hardmax_rule(ctx, n, inits):
    return _hardmax(ctx.proto, n, inits)


def _onehot_rule(ctx, n, inits):
    return _onehot(n, ctx.consts, ctx.info, inits)


def _cumprod_rule(ctx, n, inits):
    return _cumprod(n, ctx.consts, ctx.info, inits)


def _onehot(n, consts, info, inits):
    """``OneHot`` with a constant depth: the (negative-wrapped) index compared with the positions along ``axis``,
    then ``values[1]`` where equal and ``values[0]`` elsewhere (an index out of range gives a row of off values);
    torch-mlir's lowering reads ``values`` as compile-time scalars."""
    from .quantize import GraphBuilder

    depth, ishape = consts.get(n.input[1]), info(n.input[0])[0]
    if depth is None or ishape is None:
        return None
    depth = int(np.asarray(depth).reshape(-1)[0])
    rank = len(ishape) + 1
    axis = _attrs(n).get("axis", -1) % rank
    b = GraphBuilder(n.name or "onehot", inits)
    idx = b.cast(n.input[0], onnx.TensorProto.INT64)
    idx = b.op("Where", [b.op("Less", [idx, b.const(np.int64(0), "zero")]),
                         b.op("Add", [idx, b.const(np.int64(depth), "depth")]), idx])
    pos = b.const(np.arange(depth, dtype=np.int64).reshape([-1 if d == axis else 1 for d in range(rank)]), "pos")
    hit = b.op("Equal", [b.op("Unsqueeze", [idx, b.const(np.array([axis], np.int64), "axis")]), pos])
    on = b.op("Gather", [n.input[2], b.const(np.int64(1), "one")], axis=0)
    off = b.op("Gather", [n.input[2], b.const(np.int64(0), "zero")], axis=0)
    b.op("Where", [hit, on, off], n.output[0])
    return b.nodes


#: CumProd is unrolled (one Mul per position) up to this length along its axis
MAX_CUMPROD = 256


def _cumprod(n, consts, info, inits):
    """``CumProd`` along a constant axis of static length: the running product, one Mul per position
    (``exclusive`` shifts it by one, starting from 1; ``reverse`` runs from the end); torch-mlir's lowering does
    not reach StableHLO."""
    from .quantize import GraphBuilder

    axis, (shape, elem) = consts.get(n.input[1]), info(n.input[0])
    if axis is None or shape is None or elem is None:
        return None
    axis = int(np.asarray(axis).reshape(-1)[0]) % len(shape)
    length = shape[axis]
    if not 0 < length <= MAX_CUMPROD:
        return None
    a = _attrs(n)
    b = GraphBuilder(n.name or "cumprod", inits)

    def at(k):
        return b.op("Slice", [n.input[0], b.const(np.array([k], np.int64), "s"),
                              b.const(np.array([k + 1], np.int64), "e"), b.const(np.array([axis], np.int64), "a")])

    order = list(range(length))[::-1] if a.get("reverse", 0) else list(range(length))
    one_shape = [1 if d == axis else s for d, s in enumerate(shape)]
    outs, running = {}, None
    for k in order:
        if a.get("exclusive", 0):
            outs[k] = running or b.const(np.ones(one_shape, helper.tensor_dtype_to_np_dtype(elem)), "ones")
        running = at(k) if running is None else b.op("Mul", [running, at(k)])
        if not a.get("exclusive", 0):
            outs[k] = running
    b.op("Concat", [outs[k] for k in range(length)], n.output[0], axis=axis)
    return b.nodes


def _hardmax(proto, n, inits):
    """``Hardmax``: 1 at the first maximum along ``axis``, else 0: ``ArgMax`` (which picks the first) compared with
    the positions along the axis."""
    shape, elem = _static_shape(proto, n.input[0])
    if shape is None:
        return None
    axis = _attrs(n).get("axis", -1) % len(shape)
    base = n.name or "hardmax"
    pos = np.arange(shape[axis], dtype=np.int64).reshape([-1 if d == axis else 1 for d in range(len(shape))])
    inits.append(numpy_helper.from_array(pos, f"{base}/positions"))
    return [helper.make_node("ArgMax", [n.input[0]], [f"{base}/argmax"], name=f"{base}/argmax", axis=axis,
                             keepdims=1),
            helper.make_node("Equal", [f"{base}/positions", f"{base}/argmax"], [f"{base}/is_max"],
                             name=f"{base}/equal"),
            helper.make_node("Cast", [f"{base}/is_max"], list(n.output), name=base, to=elem)]


def _floored_mod(n):
    a, b = n.input[0], n.input[1]
    base = n.name
    r, zero_r, nz, rneg, bneg, differ, fix, sum_ = (f"{base}/{s}" for s in (
        "fmod", "r_is_zero", "r_nonzero", "r_neg", "b_neg", "signs_differ", "fix", "r_plus_b"))
    zero = f"{base}/zero"  # r - r: a zero of r's type and shape, whatever the type (NaN where r is NaN)
    return [
        helper.make_node("Mod", [a, b], [r], name=f"{base}/fmod", fmod=1),
        helper.make_node("Sub", [r, r], [zero], name=f"{base}/zero_like"),
        helper.make_node("Equal", [r, zero], [zero_r], name=f"{base}/eq0"),
        helper.make_node("Not", [zero_r], [nz], name=f"{base}/not0"),
        helper.make_node("Less", [r, zero], [rneg], name=f"{base}/rlt0"),
        helper.make_node("Less", [b, zero], [bneg], name=f"{base}/blt0"),
        helper.make_node("Xor", [rneg, bneg], [differ], name=f"{base}/xor"),
        helper.make_node("And", [nz, differ], [fix], name=f"{base}/and"),
        helper.make_node("Add", [r, b], [sum_], name=f"{base}/add"),
        helper.make_node("Where", [fix, sum_, r], list(n.output), name=n.name),
    ]


def _split_pool_pads(proto, n, inits):
    a = _attrs(n)
    if len(n.output) != 1:
        return None
    shape, elem = _static_shape(proto, n.input[0])
    if shape is None or elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        return None
    k = len(shape) - 2
    auto = a.pop("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):  # explicit pads from the static shape, as ONNX defines them
        if any(d != 1 for d in a.get("dilations", [1] * k)) or a.get("ceil_mode", 0):
            return None
        kernel, strides = a["kernel_shape"], a.get("strides", [1] * k)
        pads = [0] * (2 * k)
        if auto != "VALID":
            for d in range(k):
                total = max((-(-shape[2 + d] // strides[d]) - 1) * strides[d] + kernel[d] - shape[2 + d], 0)
                small, big = total // 2, total - total // 2
                pads[d], pads[k + d] = (small, big) if auto == "SAME_UPPER" else (big, small)
        a["pads"] = pads
        if pads[:k] == pads[k:]:  # symmetric: the pool itself takes them
            keep = {key: v for key, v in a.items()}
            return [helper.make_node(n.op_type, list(n.input), list(n.output), name=n.name, **keep)]
    elif auto != "NOTSET":
        return None
    pads = list(a.get("pads", [0] * (2 * k)))
    if len(pads) != 2 * k:
        return None
    begin, end = pads[:k], list(pads[k:])
    if any(d != 1 for d in a.get("dilations", [1] * k)):
        return None
    if a.get("ceil_mode", 0):
        if n.op_type != "MaxPool":
            return None
        kernel, strides = a["kernel_shape"], a.get("strides", [1] * k)
        for d in range(k):
            span = shape[2 + d] + begin[d] + end[d] - kernel[d]
            out = -(-span // strides[d]) + 1  # ceil
            if (out - 1) * strides[d] >= shape[2 + d] + begin[d]:
                out -= 1  # the last window would start in the end padding
            end[d] += max(0, (out - 1) * strides[d] + kernel[d] - (shape[2 + d] + begin[d] + end[d]))
        a = {**a, "ceil_mode": 0}
    elif begin == end:
        return None
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    base = n.name
    pad_name, padded = f"{base}/pads", f"{base}/padded"
    full_pads = [0, 0] + begin + [0, 0] + end
    inits.append(numpy_helper.from_array(np.array(full_pads, np.int64), pad_name))
    pad_inputs = [n.input[0], pad_name]
    if n.op_type == "MaxPool":
        val_name = f"{base}/pad_value"
        inits.append(numpy_helper.from_array(np.array(-np.inf, dtype), val_name))
        pad_inputs.append(val_name)
    pad = helper.make_node("Pad", pad_inputs, [padded], name=f"{base}/pad", mode="constant")
    keep = {key: v for key, v in a.items() if key not in ("pads", "count_include_pad", "ceil_mode")}
    if n.op_type == "MaxPool":
        pool = helper.make_node("MaxPool", [padded], list(n.output), name=n.name, **keep)
        return [pad, pool]
    if a.get("count_include_pad", 0):
        pool = helper.make_node("AveragePool", [padded], list(n.output), name=n.name, **keep)
        return [pad, pool]
    # count_include_pad=0: divide by the real elements in each window, not the window size
    kernel, strides = a["kernel_shape"], a.get("strides", [1] * k)
    per_dim = []
    for d in range(k):
        size = shape[2 + d] + begin[d] + end[d]
        n_out = (size - kernel[d]) // strides[d] + 1
        real = np.zeros(size)
        real[begin[d]:begin[d] + shape[2 + d]] = 1
        per_dim.append(np.array([real[o * strides[d]:o * strides[d] + kernel[d]].sum() for o in range(n_out)]))
    counts = per_dim[0]
    for c in per_dim[1:]:
        counts = np.multiply.outer(counts, c)
    scale = (np.prod(kernel) / np.maximum(counts, 1)).astype(dtype)
    scale_name, pooled = f"{base}/count_scale", f"{base}/pooled"
    inits.append(numpy_helper.from_array(scale.reshape([1, 1] + list(scale.shape)), scale_name))
    pool = helper.make_node("AveragePool", [padded], [pooled], name=n.name, **keep)
    mul = helper.make_node("Mul", [pooled, scale_name], list(n.output), name=f"{base}/exclude_pad")
    return [pad, pool, mul]


RULES = {"RNN": _rnn_rule, "GRU": _rnn_rule, "LSTM": _rnn_rule, "QuantizeLinear": _quantize_rule,
         "DequantizeLinear": _quantize_rule, "QLinearMatMul": _quantize_rule, "Resize": _resize_rule,
         "Mod": _mod_rule, "Clip": _clip_rule, "OneHot": _onehot_rule, "CumProd": _cumprod_rule,
         "Hardmax": _hardmax_rule, "MaxPool": _pool_rule, "AveragePool": _pool_rule, "LpPool": _pool_rule,
         "Scan": _scan_rule, "Pad": _pad_rule, "Compress": _compress_rule, "ReverseSequence": _reverse_sequence_rule,
         "CenterCropPad": _center_crop_pad_rule, "Slice": _slice_rule}
DOMAIN_RULES = {("ai.onnx.preview.training", "Adagrad"): _training_rule,
                ("ai.onnx.preview.training", "Momentum"): _training_rule,
                ("ai.onnx.preview.training", "Adam"): _training_rule,
                ("ai.onnx.ml", "Binarizer"): _ml_rule, ("ai.onnx.ml", "ArrayFeatureExtractor"): _ml_rule}
