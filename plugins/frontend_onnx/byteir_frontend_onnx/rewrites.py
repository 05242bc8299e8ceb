"""ONNX-level rewrites that run before import, for patterns torch-mlir's ONNX lowerings get wrong.

Each rewrite keeps the graph's meaning exactly and works on a shape-inferred model with static shapes.

- **Mod with ``fmod=0``** (the result takes the divisor's sign, like Python's ``%``): torch-mlir computes C's
  ``fmod`` for it (and NaN for a finite dividend over an infinite divisor, where fmod is the dividend). It
  becomes ``r = Mod(a, b, fmod=1)`` (the dividend where a float divisor is infinite) then ``r + b`` where ``r``
  is non-zero and its sign differs from ``b``'s (ints and floats; an infinite divisor gives the infinity, as
  ONNX specifies).
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
- **Scan** is unrolled over its static number of iterations, and **Loop** over a constant trip count when its
  condition never turns false (:mod:`.scan`): torch-mlir lowers neither to StableHLO. An **If** with a constant
  condition is the branch it takes.
- **Pad** with a pad value computed at run time is a zero pad plus ``Where`` over a constant mask.
- **Slice** with constant operands becomes one single-axis Slice per axis it cuts (torch-mlir lowered multi-axis
  slices to dynamic shapes), negative steps a Gather; **CenterCropPad** with a constant shape is a ``Slice``
  and a ``Pad``; **Compress** with a constant condition is a ``Gather``; **ReverseSequence** is a
  ``GatherElements`` with positions computed from the lengths.
- **Pad** in edge/reflect/wrap mode is a Gather of source positions per axis; **Det** up to 4 x 4 the Leibniz
  formula; **LpNormalization** (p=2) gives 0 where the norm is 0; boolean **ReduceMax/Min** go through int32;
  **ReduceProd** over several axes is one single-axis ReduceProd per axis; **ConvInteger** and **QLinearConv** a
  float64 Conv of the shifted operands (then scaled, shifted, clipped and rounded); **ConvTranspose** with
  ``auto_pad`` SAME an unpadded one, then sliced.
- **MatMul** of a stacked activation by a 2-D weight folds the leading dimensions into the rows (torch-mlir's
  batched form copied the broadcast weight at every call).
- A one-operand **Einsum** (sums, diagonals, transposes) is Where/ReduceSum/Transpose.
- **SpaceToDepth** in CRD mode is reshape-transpose-reshape (torch-mlir ignored the mode).
- **Col2Im** is a grouped ``ConvTranspose`` with one-hot kernels; **MaxUnpool** a ``ScatterND`` into zeros.
- **DFT** (forward, inverse, one-sided, irfft) is products with constant cosine/sine tables (:mod:`.dft`).
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


def _loop_rule(ctx, n, inits):
    from .scan import rewrite_loop

    return rewrite_loop(n, ctx.consts, inits)


def _if_rule(ctx, n, inits):
    from .scan import rewrite_if

    return rewrite_if(n, ctx.consts, inits)


def _quantize_rule(ctx, n, inits):
    from .quantize import rewrite

    return rewrite(n, ctx.info, inits)


def _resize_rule(ctx, n, inits):
    from .resize import rewrite_resize

    shape, elem = _static_shape(ctx.proto, n.input[0])
    return rewrite_resize(ctx.proto, n, ctx.consts, shape, elem, _static_shape(ctx.proto, n.output[0])[0], inits)


def _mod_rule(ctx, n, inits):
    if _attrs(n).get("fmod", 0):
        return None
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    return _floored_mod(n, ctx.info(n.input[0])[1] in floats)


def _clip_rule(ctx, n, inits):
    if any(list(n.input)[1:]) or n.attribute:
        return None
    return [helper.make_node("Identity", [n.input[0]], list(n.output), name=n.name)]


def _dft_rule(ctx, n, inits):
    from .dft import rewrite

    opset = next((o.version for o in ctx.proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return rewrite(n, ctx.info, ctx.consts, opset, inits)


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


def _col2im_rule(ctx, n, inits):
    """``Col2Im`` (fold: each column of ``C * prod(block)`` values is one block, summed into the image) is a
    grouped ``ConvTranspose`` of the columns laid out on their block grid, with one-hot kernels: in-channel
    ``c * K + k`` writes block position ``k`` of out-channel ``c``. torch-mlir's lowering does not reach
    StableHLO."""
    from .quantize import GraphBuilder

    (shape, elem), image, block = ctx.info(n.input[0]), ctx.consts.get(n.input[1]), ctx.consts.get(n.input[2])
    if shape is None or image is None or block is None or len(shape) != 3:
        return None
    image = [int(v) for v in np.asarray(image).reshape(-1)]
    block = [int(v) for v in np.asarray(block).reshape(-1)]
    k = len(image)
    a = _attrs(n)
    dil, strides = list(a.get("dilations", [1] * k)), list(a.get("strides", [1] * k))
    pads = list(a.get("pads", [0] * (2 * k)))
    size = int(np.prod(block))
    if len(block) != k or shape[1] % size:
        return None
    channels = shape[1] // size
    grid = [(image[d] + pads[d] + pads[k + d] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1 for d in range(k)]
    if int(np.prod(grid)) != shape[2] or min(grid) < 1:
        return None
    dt = helper.tensor_dtype_to_np_dtype(elem)
    w = np.zeros([channels * size, 1, *block], dt)
    for c in range(channels):
        for j in range(size):
            w[(c * size + j, 0) + np.unravel_index(j, block)] = 1
    b = GraphBuilder(n.name or "Col2Im", inits)
    x = b.op("Reshape", [n.input[0], b.const(np.array([shape[0], shape[1], *grid], np.int64), "grid")])
    # no padding in the ConvTranspose (torch-mlir takes no asymmetric pads there): the padded image, then the
    # image's window of it, zero-extended where the blocks do not reach its end
    x = b.op("ConvTranspose", [x, b.const(w, "onehot")], strides=strides, dilations=dil, group=channels)
    full = [(grid[d] - 1) * strides[d] + dil[d] * (block[d] - 1) + 1 for d in range(k)]
    ends = [min(full[d], pads[d] + image[d]) for d in range(k)]
    x = _sliced(b, x, [(pads[d], ends[d], 2 + d, 1) for d in range(k) if (pads[d], ends[d]) != (0, full[d])])
    short = [pads[d] + image[d] - ends[d] for d in range(k)]
    if any(short):
        x = b.op("Pad", [x, b.const(np.array([0, 0] + [0] * k + [0, 0] + short, np.int64), "pads")])
    b.op("Identity", [x], n.output[0])
    return b.nodes


def _max_unpool_rule(ctx, n, inits):
    """``MaxUnpool``: the values scattered (``ScatterND``) into zeros of the inferred shape at their flat indices,
    then zero-padded to ``output_shape`` when one is given, as onnx's reference does."""
    from .quantize import GraphBuilder

    (shape, elem), (ishape, _) = ctx.info(n.input[0]), ctx.info(n.input[1])
    if shape is None or ishape is None or not elem:
        return None
    a = _attrs(n)
    kernel = list(a.get("kernel_shape", []))
    k = len(kernel)
    if k != len(shape) - 2:
        return None
    strides, pads = list(a.get("strides", [1] * k)), list(a.get("pads", [0] * (2 * k)))
    inferred = shape[:2] + [(shape[2 + d] - 1) * strides[d] - pads[d] - pads[k + d] + kernel[d] for d in range(k)]
    target = inferred
    if len(n.input) > 2 and n.input[2]:
        if n.input[2] not in ctx.consts:
            return None
        target = [int(v) for v in np.asarray(ctx.consts[n.input[2]]).reshape(-1)]
        if len(target) != len(inferred) or any(t < i for t, i in zip(target, inferred)):
            return None
    b = GraphBuilder(n.name or "MaxUnpool", inits)
    zeros = b.const(np.zeros(int(np.prod(inferred)), helper.tensor_dtype_to_np_dtype(elem)), "zeros")
    where = b.op("Reshape", [b.cast(n.input[1], onnx.TensorProto.INT64), b.const(np.array([-1, 1], np.int64))])
    values = b.op("Reshape", [n.input[0], b.const(np.array([-1], np.int64), "flat")])
    y = b.op("Reshape", [b.op("ScatterND", [zeros, where, values]), b.const(np.array(inferred, np.int64))])
    grow = [t - i for t, i in zip(target, inferred)]
    b.op("Pad", [y, b.const(np.array([0] * len(grow) + grow, np.int64), "pads")], n.output[0])
    return b.nodes


def _space_to_depth_rule(ctx, n, inits):
    """``SpaceToDepth`` in ``CRD`` mode (torch-mlir ignores the mode and computes DCR): reshape, transpose with the
    channel before the block offsets, reshape."""
    from .quantize import GraphBuilder

    a = _attrs(n)
    mode = a.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    shape, _ = ctx.info(n.input[0])
    if mode != "CRD" or shape is None or len(shape) != 4:
        return None
    k = a["blocksize"]
    batch, c, h, w = shape
    b = GraphBuilder(n.name or "SpaceToDepth", inits)
    x = b.op("Reshape", [n.input[0], b.const(np.array([batch, c, h // k, k, w // k, k], np.int64))])
    x = b.op("Transpose", [x], perm=[0, 1, 3, 5, 2, 4])
    b.op("Reshape", [x, b.const(np.array([batch, c * k * k, h // k, w // k], np.int64))], n.output[0])
    return b.nodes


def _einsum_rule(ctx, n, inits):
    """A one-operand ``Einsum`` (a sum over axes, a diagonal, a transpose; torch-mlir crashed on them): each
    repeated label keeps its diagonal (``Where`` with an identity mask, then a sum over the copy), labels missing
    from the output are summed, and the rest are transposed into the output's order."""
    from .quantize import GraphBuilder

    if len(n.input) != 1:
        return None
    shape, elem = ctx.info(n.input[0])
    if shape is None or not elem:
        return None
    eq = _attrs(n)["equation"]
    eq = (eq.decode() if isinstance(eq, bytes) else eq).replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    if "," in lhs:
        return None
    ell = len(shape) - len(lhs.replace("...", ""))
    if "..." in lhs:
        if ell < 0:
            return None
        ell_labels = [f"...{i}" for i in range(ell)]
        i = lhs.index("...")
        labels = list(lhs[:i]) + ell_labels + list(lhs[i + 3:])
    else:
        ell_labels, labels = [], list(lhs)
    if len(labels) != len(shape):
        return None
    if not arrow:  # implicit output: the labels seen once, sorted, after the ellipsis
        rhs_labels = ell_labels + sorted(c for c in labels if c not in ell_labels and labels.count(c) == 1)
    else:
        i = rhs.find("...")
        rhs_labels = (list(rhs[:i]) + ell_labels + list(rhs[i + 3:])) if i >= 0 else list(rhs)
    b = GraphBuilder(n.name or "Einsum", inits)
    x, cur, dims = n.input[0], list(labels), list(shape)
    dt = helper.tensor_dtype_to_np_dtype(elem)
    while True:  # a repeated label: keep its diagonal
        rep = next((c for c in cur if cur.count(c) > 1), None)
        if rep is None:
            break
        i = cur.index(rep)
        j = cur.index(rep, i + 1)
        if dims[i] != dims[j]:
            return None
        mask_shape = [1] * len(cur)
        mask_shape[i] = mask_shape[j] = dims[i]
        eye = np.eye(dims[i], dtype=bool).reshape(mask_shape)
        x = b.op("Where", [b.const(eye, "diagonal"), x, b.const(np.zeros((), dt), "zero")])
        x = b.op("ReduceSum", [x, b.const(np.array([j], np.int64), "axis")], keepdims=0)
        del cur[j], dims[j]
    gone = [i for i, c in enumerate(cur) if c not in rhs_labels]
    if gone:
        x = b.op("ReduceSum", [x, b.const(np.array(gone, np.int64), "axes")], keepdims=0)
        cur = [c for c in cur if c in rhs_labels]
    if sorted(cur) != sorted(rhs_labels):
        return None
    perm = [cur.index(c) for c in rhs_labels]
    if perm != list(range(len(perm))):
        x = b.op("Transpose", [x], perm=perm)
    b.op("Identity", [x], n.output[0])
    return b.nodes


def _sliced(b, x: str, cuts) -> str:
    """``x`` cut by one single-axis ``Slice`` per ``(start, end, axis, step)``: torch-mlir lowers a Slice over
    several axes to dynamic shapes that do not reach StableHLO's static form, one axis at a time it does not."""
    for start, end, axis, step in cuts:
        x = b.op("Slice", [x] + [b.const(np.array([v], np.int64), what) for v, what in (
            (start, "start"), (end, "end"), (axis, "axis"), (step, "step"))])
    return x


def _slice_rule(ctx, n, inits):
    """A ``Slice`` with constant operands over a static shape: one single-axis Slice per axis it really cuts
    (:func:`_sliced`; torch-mlir lowered multi-axis slices to dynamic shapes), an axis read backwards (a negative
    step, which torch-mlir refuses) a ``Gather`` of the positions it picks, a slice that cuts nothing an
    ``Identity``."""
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
    if len(cut) == len(axes) == 1 and len(n.input) >= 5 and n.input[3] and n.input[4] and min(steps) > 0:
        return None  # one axis cut forwards, all operands given: torch-mlir takes it as it is
    b = GraphBuilder(n.name or "Slice", inits)
    x = n.input[0]
    forward = [c for c in cut if c[3] > 0]
    x = _sliced(b, x, forward)
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
    x = _sliced(b, x, [(starts[d], ends[d], d, 1) for d in range(rank) if (starts[d], ends[d]) != (0, shape[d])])
    b.op("Pad", [x, b.const(np.array(begin + end, np.int64), "pads")], n.output[0])
    return b.nodes


def _pad_indices(mode: str, dim: int, begin: int, end: int) -> np.ndarray:
    """The source positions of a padded (or, for negative pads, cropped) axis, as NumPy's pad modes define them."""
    idx = np.arange(-begin, dim + end)
    if mode == "edge":
        return np.clip(idx, 0, dim - 1)
    if mode == "wrap":
        return np.mod(idx, dim)
    period = 2 * (dim - 1)  # reflect: mirrored about the edge elements, which are not repeated
    if period == 0:
        return np.zeros_like(idx)
    m = np.mod(idx, period)
    return np.where(m >= dim, period - m, m)


def _pad_modes(ctx, n, inits, mode: str):
    """``Pad`` in ``edge``/``reflect``/``wrap`` mode with constant pads: one ``Gather`` per padded axis of the source
    positions (torch-mlir's lowerings of these modes fail or do not finish)."""
    from .quantize import GraphBuilder

    shape, _ = ctx.info(n.input[0])
    pads = ctx.consts.get(n.input[1]) if len(n.input) > 1 else None
    if shape is None or pads is None:
        return None
    rank = len(shape)
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    axes = list(range(rank))
    if len(n.input) > 3 and n.input[3]:
        if n.input[3] not in ctx.consts:
            return None
        axes = [int(v) % rank for v in np.asarray(ctx.consts[n.input[3]]).reshape(-1)]
    if len(pads) != 2 * len(axes):
        return None
    b = GraphBuilder(n.name or "Pad", inits)
    x = n.input[0]
    for i, axis in enumerate(axes):
        begin, end = pads[i], pads[len(axes) + i]
        if begin or end:
            if shape[axis] + begin + end < 0 or shape[axis] == 0:
                return None
            picked = _pad_indices(mode, shape[axis], begin, end).astype(np.int64)
            x = b.op("Gather", [x, b.const(picked, "positions")], axis=axis)
    b.op("Identity", [x], n.output[0])
    return b.nodes


def _bool_reduce_rule(ctx, n, inits):
    """``ReduceMax``/``ReduceMin`` of booleans (any/all; torch-mlir's result was wrong): whether the int32 sum of
    the values (of their negations) is above (equal to) 0, which also gives an empty set's false (true)."""
    from .quantize import GraphBuilder

    if ctx.info(n.input[0])[1] != onnx.TensorProto.BOOL:
        return None
    a = _attrs(n)
    b = GraphBuilder(n.name or n.op_type, inits)
    axes = list(n.input[1:2])
    if "axes" in a:  # before opset 18 the axes were an attribute; ReduceSum takes them as an input
        axes = [b.const(np.array(a.pop("axes"), np.int64), "axes")]
    x = n.input[0] if n.op_type == "ReduceMax" else b.op("Not", [n.input[0]])
    total = b.op("ReduceSum", [b.cast(x, onnx.TensorProto.INT32)] + axes, **a)
    zero = b.const(np.array(0, np.int32), "zero")
    b.op("Greater" if n.op_type == "ReduceMax" else "Equal", [total, zero], n.output[0])
    return b.nodes


def _lp_normalization_rule(ctx, n, inits):
    """``LpNormalization`` with ``p=2``: ``x / ||x||`` along ``axis`` and 0 where the norm is 0 (onnx's reference;
    torch-mlir's lowering gives NaN there)."""
    from .quantize import GraphBuilder

    a = _attrs(n)
    shape, elem = ctx.info(n.input[0])
    if a.get("p", 2) != 2 or shape is None or not elem:
        return None
    dt = helper.tensor_dtype_to_np_dtype(elem)
    b = GraphBuilder(n.name or "LpNormalization", inits)
    axis = b.const(np.array([a.get("axis", -1)], np.int64), "axis")
    norm = b.op("Sqrt", [b.op("ReduceSum", [b.op("Mul", [n.input[0], n.input[0]]), axis], keepdims=1)])
    zero = b.const(np.zeros((), dt), "zero")
    b.op("Where", [b.op("Equal", [norm, zero]), zero, b.op("Div", [n.input[0], norm])], n.output[0])
    return b.nodes


def _det_rule(ctx, n, inits):
    """``Det`` of matrices up to 4 x 4 by the Leibniz formula: a ``Gather`` of each permutation's entries, their
    products, summed with the permutations' signs (torch-mlir's ``linalg_det`` does not reach StableHLO)."""
    import itertools

    from .quantize import GraphBuilder

    shape, elem = ctx.info(n.input[0])
    if shape is None or len(shape) < 2 or shape[-1] != shape[-2] or not 1 <= shape[-1] <= 4 or not elem:
        return None
    size = shape[-1]
    perms = list(itertools.permutations(range(size)))
    flat = np.array([[i * size + p[i] for i in range(size)] for p in perms], np.int64)
    signs = np.array([(-1) ** sum(p[i] > p[j] for i in range(size) for j in range(i + 1, size)) for p in perms])
    b = GraphBuilder(n.name or "Det", inits)
    x = b.op("Reshape", [n.input[0], b.const(np.array(list(shape[:-2]) + [size * size], np.int64), "flat")])
    terms = None  # the product of each permutation's entries, one factor (a Gather of a column of ``flat``) at a time
    for i in range(size):
        factor = b.op("Gather", [x, b.const(flat[:, i], "entries")], axis=len(shape) - 2)
        terms = factor if terms is None else b.op("Mul", [terms, factor])
    signed = b.op("Mul", [terms, b.const(signs.astype(helper.tensor_dtype_to_np_dtype(elem)), "signs")])
    b.op("ReduceSum", [signed, b.const(np.array([-1], np.int64), "last")], n.output[0], keepdims=0)
    return b.nodes


def _reduce_prod_rule(ctx, n, inits):
    """``ReduceProd`` over several axes (all of them by default): one single-axis ``ReduceProd`` per axis keeping
    it, then a ``Reshape`` without ``keepdims`` (torch-mlir's multi-axis lowering went through dynamic reshapes the
    core cannot take)."""
    from .quantize import GraphBuilder

    a = _attrs(n)
    shape, _ = ctx.info(n.input[0])
    if shape is None:
        return None
    rank = len(shape)
    if len(n.input) > 1 and n.input[1]:
        if n.input[1] not in ctx.consts:
            return None
        axes = [int(v) % rank for v in np.asarray(ctx.consts[n.input[1]]).reshape(-1)]
    else:
        axes = [x % rank for x in a.get("axes", [])]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    if len(set(axes)) < 2:
        return None
    b = GraphBuilder(n.name or "ReduceProd", inits)
    x = n.input[0]
    for axis in sorted(set(axes)):  # each keeps its axis (as 1): no step changes the rank
        x = b.op("ReduceProd", [x, b.const(np.array([axis], np.int64), "axis")], keepdims=1)
    if not a.get("keepdims", 1):
        x = b.op("Reshape", [x, b.const(np.array([shape[d] for d in range(rank) if d not in axes], np.int64),
                                        "shape")])
    b.op("Identity", [x], n.output[0])
    return b.nodes


def _shifted_conv(ctx, b, n, x, x_zp, w, w_zp, bias=""):
    """The zero-point-shifted operands convolved in float64 (exact: integer sums far below 2^53), plus an int32
    bias per output channel; a 1-D weight zero point is per output channel."""
    wshape, _ = ctx.info(w)
    dbl = onnx.TensorProto.DOUBLE
    xs, ws = b.cast(x, dbl), b.cast(w, dbl)
    per_channel = b.const(np.array([wshape[0]] + [1] * (len(wshape) - 1), np.int64), "per_channel")
    if x_zp:
        xs = b.op("Sub", [xs, b.cast(x_zp, dbl)])
    if w_zp:
        zp = b.cast(w_zp, dbl)
        zshape, _ = ctx.info(w_zp)
        if zshape and len(zshape) == 1 and zshape[0] == wshape[0] and zshape[0] > 1:
            zp = b.op("Reshape", [zp, per_channel])
        ws = b.op("Sub", [ws, zp])
    attrs = _attrs(n)
    y = b.op("Conv", [xs, ws], **attrs)
    if bias:
        y = b.op("Add", [y, b.op("Reshape", [b.cast(bias, dbl), b.const(np.array([1, wshape[0]] + [1] * (
            len(wshape) - 2), np.int64), "bias_shape")])])
    return y


def _conv_integer_rule(ctx, n, inits):
    """``ConvInteger``: :func:`_shifted_conv` cast to int32 (torch-mlir's quantized tensors do not reach
    StableHLO)."""
    from .quantize import GraphBuilder

    (xshape, _), (wshape, _) = ctx.info(n.input[0]), ctx.info(n.input[1])
    if xshape is None or wshape is None:
        return None
    b = GraphBuilder(n.name or "ConvInteger", inits)
    ins = list(n.input) + [""] * (4 - len(n.input))
    y = _shifted_conv(ctx, b, n, ins[0], ins[2], ins[1], ins[3])
    b.op("Cast", [y], n.output[0], to=onnx.TensorProto.INT32)
    return b.nodes


def _qlinear_conv_rule(ctx, n, inits):
    """``QLinearConv`` as onnx's reference computes it: :func:`_shifted_conv` (bias included), times
    ``x_scale * w_scale / y_scale`` (float32, per output channel for a 1-D ``w_scale``) in float64, plus the
    output zero point, clipped to the output type's range and rounded half to even."""
    from .quantize import GraphBuilder

    ins = list(n.input) + [""] * (9 - len(n.input))
    (xshape, xt), (wshape, _) = ctx.info(ins[0]), ctx.info(ins[3])
    out_t = ctx.info(ins[7])[1] if ins[7] else xt
    ranges = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127)}
    if xshape is None or wshape is None or out_t not in ranges:
        return None
    b = GraphBuilder(n.name or "QLinearConv", inits)
    y = _shifted_conv(ctx, b, n, ins[0], ins[2], ins[3], ins[5], ins[8])
    flt, dbl = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
    w_scale = b.cast(ins[4], flt)
    sshape, _ = ctx.info(ins[4])
    if sshape and len(sshape) == 1 and sshape[0] > 1:
        w_scale = b.op("Reshape", [w_scale, b.const(np.array([1, sshape[0]] + [1] * (len(wshape) - 2), np.int64))])
    mult = b.op("Div", [b.op("Mul", [b.cast(ins[1], flt), w_scale]), b.cast(ins[6], flt)])
    y = b.op("Mul", [y, b.cast(mult, dbl)])
    if ins[7]:
        y = b.op("Add", [y, b.cast(ins[7], dbl)])
    lo, hi = ranges[out_t]
    y = b.op("Clip", [y, b.const(np.float64(lo), "qmin"), b.const(np.float64(hi), "qmax")])
    b.op("Cast", [b.op("Round", [y])], n.output[0], to=out_t)
    return b.nodes


def _conv_transpose_rule(ctx, n, inits):
    """``ConvTranspose`` with ``auto_pad`` SAME_UPPER/SAME_LOWER (output = input * stride): the unpadded transpose,
    then the window the padding leaves (torch-mlir's lowering takes no auto_pad here)."""
    from .quantize import GraphBuilder

    a = _attrs(n)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    (xshape, _), (wshape, _) = ctx.info(n.input[0]), ctx.info(n.input[1])
    if auto not in ("SAME_UPPER", "SAME_LOWER") or xshape is None or wshape is None or "output_shape" in a:
        return None
    k = len(xshape) - 2
    strides, dil = list(a.get("strides", [1] * k)), list(a.get("dilations", [1] * k))
    extra = list(a.get("output_padding", [0] * k))
    kernel = list(a.get("kernel_shape", wshape[2:]))
    full = [(xshape[2 + d] - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1 + extra[d] for d in range(k)]
    want = [xshape[2 + d] * strides[d] for d in range(k)]
    cuts = []
    for d in range(k):
        total = full[d] - want[d]
        if total < 0:
            return None
        begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
        if total:
            cuts.append((begin, begin + want[d], 2 + d, 1))
    keep = {key: v for key, v in a.items() if key not in ("auto_pad", "pads")}
    b = GraphBuilder(n.name or "ConvTranspose", inits)
    y = b.op("ConvTranspose", list(n.input), **keep)
    b.op("Identity", [_sliced(b, y, cuts)], n.output[0])
    return b.nodes


def _matmul_rule(ctx, n, inits):
    """``MatMul`` of a stacked activation ``[..., M, K]`` by a 2-D weight ``[K, N]``: the activation's leading
    dimensions folded into ``M`` (``[B*M, K] @ [K, N]``, then reshaped back). torch-mlir lowers the 3-D form as a
    batched product against the weight broadcast to every batch entry, which copies the weight at every call
    (a quarter of BERT's time from ONNX); the sums are the same."""
    from .quantize import GraphBuilder

    (ashape, _), (wshape, _) = ctx.info(n.input[0]), ctx.info(n.input[1])
    if ashape is None or wshape is None or len(ashape) < 3 or len(wshape) != 2:
        return None
    b = GraphBuilder(n.name or "MatMul", inits)
    flat = b.op("Reshape", [n.input[0], b.const(np.array([-1, ashape[-1]], np.int64), "rows")])
    y = b.op("MatMul", [flat, n.input[1]])
    b.op("Reshape", [y, b.const(np.array(list(ashape[:-1]) + [wshape[1]], np.int64), "shape")], n.output[0])
    return b.nodes


def _pad_rule(ctx, n, inits):
    """A constant-mode ``Pad`` whose pad value is computed at run time: torch-mlir reads that value as a compile-time
    scalar (``aten.item``, which does not reach StableHLO). It becomes a zero-padded ``x`` and a constant mask of
    the padded positions: ``Where(mask, value, Pad(x))``, exact for every value (inf and NaN included)."""
    from .quantize import GraphBuilder

    a = _attrs(n)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode in ("edge", "reflect", "wrap"):
        return _pad_modes(ctx, n, inits, mode)
    if mode != "constant" or len(n.input) < 3 or not n.input[2]:
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


def _floored_mod(n, floats: bool = False):
    a, b = n.input[0], n.input[1]
    base = n.name
    r, zero_r, nz, rneg, bneg, differ, fix, sum_ = (f"{base}/{s}" for s in (
        "fmod", "r_is_zero", "r_nonzero", "r_neg", "b_neg", "signs_differ", "fix", "r_plus_b"))
    zero = f"{base}/zero"  # r - r: a zero of r's type and shape, whatever the type (NaN where r is NaN)
    first = [helper.make_node("Mod", [a, b], [r], name=f"{base}/fmod", fmod=1)]
    if floats:  # fmod(finite a, +-inf) is a; torch-mlir's a - trunc(a / b) * b makes it NaN (0 * inf)
        raw = f"{base}/fmod_raw"
        first = [helper.make_node("Mod", [a, b], [raw], name=f"{base}/fmod", fmod=1),
                 helper.make_node("IsInf", [b], [f"{base}/b_inf"], name=f"{base}/isinf_b"),
                 helper.make_node("IsInf", [a], [f"{base}/a_inf"], name=f"{base}/isinf_a"),
                 helper.make_node("IsNaN", [a], [f"{base}/a_nan"], name=f"{base}/isnan_a"),
                 helper.make_node("Or", [f"{base}/a_inf", f"{base}/a_nan"], [f"{base}/a_special"],
                                  name=f"{base}/a_special"),
                 helper.make_node("Not", [f"{base}/a_special"], [f"{base}/a_finite"], name=f"{base}/a_finite"),
                 helper.make_node("And", [f"{base}/b_inf", f"{base}/a_finite"], [f"{base}/keep_a"],
                                  name=f"{base}/keep_a"),
                 helper.make_node("Where", [f"{base}/keep_a", a, raw], [r], name=f"{base}/fmod_inf")]
    return first + [
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
         "CenterCropPad": _center_crop_pad_rule, "Slice": _slice_rule, "DFT": _dft_rule,
         "Loop": _loop_rule, "Col2Im": _col2im_rule, "MaxUnpool": _max_unpool_rule,
         "If": _if_rule, "SpaceToDepth": _space_to_depth_rule,
         "Einsum": _einsum_rule, "ReduceMax": _bool_reduce_rule, "ReduceMin": _bool_reduce_rule,
         "LpNormalization": _lp_normalization_rule, "Det": _det_rule, "ReduceProd": _reduce_prod_rule,
         "ConvInteger": _conv_integer_rule, "QLinearConv": _qlinear_conv_rule, "ConvTranspose": _conv_transpose_rule,
         "MatMul": _matmul_rule}
DOMAIN_RULES = {("ai.onnx.preview.training", "Adagrad"): _training_rule,
                ("ai.onnx.preview.training", "Momentum"): _training_rule,
                ("ai.onnx.preview.training", "Adam"): _training_rule,
                ("ai.onnx.ml", "Binarizer"): _ml_rule, ("ai.onnx.ml", "ArrayFeatureExtractor"): _ml_rule}
