"""GEMM, batched GEMM and convolution as library calls: the ``cpu_blas`` backend joins the ``cpu`` target with a
higher priority than generated code for ``dot_general`` and ``convolution``, and its provider runs each one
through NumPy's BLAS (OpenBLAS in the NumPy wheel, multithreaded): a (batched) matmul, or for a convolution
an im2col copy and one GEMM per group. Loop nests cannot compete with a tuned BLAS here; elementwise
epilogues stay in generated code. (Measured against MKL's cblas_sgemm on the benchmark's shapes: OpenBLAS
was 1.4-3x faster on 2 cores.)

``BYTEIR_NUM_THREADS`` caps the BLAS thread pool (through threadpoolctl).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from byteir_core.errors import ProviderError
from byteir_core.interfaces import Backend, Cluster, CompiledCluster, Kernel, Provider
from byteir_core.mlir import ir, stablehlo_api

CALLEE = "cpu.gemm"
CONV_CALLEE = "cpu.conv"
POOL_CALLEE = "cpu.maxpool"
CONSTANTS_FORMAT = "npz-operands"  # constant operands folded into the kernel (NumPy .npz: lhs/rhs)
TYPES = {"f32", "f64"}


def _dims(op) -> dict[str, list[int]]:
    d = stablehlo_api.DotDimensionNumbers(op.attributes["dot_dimension_numbers"])
    return {"lhs_batch": list(d.lhs_batching_dimensions), "lhs_contract": list(d.lhs_contracting_dimensions),
            "rhs_batch": list(d.rhs_batching_dimensions), "rhs_contract": list(d.rhs_contracting_dimensions)}


def _static(t) -> bool:
    return isinstance(t, ir.RankedTensorType) and t.has_static_shape and str(t.element_type) in TYPES


class CpuGemmBackend(Backend):
    name = "cpu_blas"
    device = "cpu"
    targets = ("cpu",)
    max_cluster_ops = None  # one library call per cluster (starts_cluster), plus the epilogue fused into it
    description = "dot_general and convolution as BLAS calls"

    def starts_cluster(self, op):
        return op.name in ANCHORS

    def claims(self, op):
        if op.name in EPILOGUE_OPS:
            return 30 if _epilogue_ok(op) else None
        if op.name == "stablehlo.reduce_window":
            return 20 if _maxpool_attrs(op) is not None else None
        if op.name not in ("stablehlo.dot_general", "stablehlo.convolution"):
            return None
        types = [v.type for v in list(op.operands) + list(op.results)]
        if not all(_static(t) for t in types) or len({str(t.element_type) for t in types}) != 1:
            return None
        if op.name == "stablehlo.dot_general":
            return None if "algorithm" in op.attributes else 20
        return 20 if _conv_supported(op) else None

    def compile(self, cluster: Cluster) -> CompiledCluster:
        block = cluster.module.body.operations[0].regions[0].blocks[0]
        ops = [o.operation for o in block.operations]
        pools = [o for o in ops if o.name == "stablehlo.reduce_window"]
        if pools:
            if not isinstance(pools[0].operands[0], ir.BlockArgument):
                raise ValueError("cpu_blas: max pooling of a constant is folded, not run")
            return CompiledCluster(POOL_CALLEE, None, _maxpool_attrs(pools[0]))
        anchors = [o for o in ops if o.name in ANCHORS]
        if len(anchors) != 1 or anchors[0] is not [o for o in ops if o.name != "stablehlo.constant"][0]:
            raise ValueError(f"cpu_blas: a cluster is one library op and its epilogue, got {[o.name for o in ops]}")
        dot = anchors[0]
        args = list(block.arguments)
        constants = {}
        for side, v in zip(("lhs", "rhs"), dot.operands):
            if v not in args:  # a small constant the driver copied into the cluster
                constants[side] = np.asarray(v.owner.attributes["value"])
        kernel = None
        if constants:
            buf = io.BytesIO()
            np.savez(buf, **constants)
            kernel = Kernel(CONSTANTS_FORMAT, buf.getvalue(), entry="gemm")
        # runtime operands that are artifact weights (the provider prepacks them once)
        const_operands = ",".join(str(i) for i in cluster.constant_inputs)
        if dot.name == "stablehlo.convolution":
            epilogue = _epilogue_steps(dot, ops, args)
            return CompiledCluster(CONV_CALLEE, kernel, {**_conv_attrs(dot), "const_operands": const_operands,
                                                         "epilogue": epilogue})
        attrs = {k: ",".join(map(str, v)) for k, v in _dims(dot).items()}
        return CompiledCluster(CALLEE, kernel, {**attrs, "const_operands": const_operands})


def _i64s(op, name, default):
    return list(op.attributes[name]) if name in op.attributes else default


ANCHORS = frozenset({"stablehlo.dot_general", "stablehlo.convolution", "stablehlo.reduce_window"})
EPILOGUE_OPS = frozenset({"stablehlo.add", "stablehlo.maximum", "stablehlo.clamp", "stablehlo.broadcast_in_dim"})


def _producer(v):
    o = v.owner
    o = getattr(o, "operation", o)
    return o if isinstance(o, ir.Operation) else None


def _users(v) -> list:
    return [getattr(u.owner, "operation", u.owner) for u in v.uses]


def _previous(op):
    """The op just before ``op`` in its block (None for the first)."""
    prev = None
    for o in op.block.operations:
        o = o.operation
        if o == op:
            return prev
        prev = o
    return None


def _same(a, b) -> bool:
    """``a == b`` for operations that may be None (the bindings refuse to compare an operation with None)."""
    return a is not None and b is not None and a == b


def _is_zero(v) -> bool:
    o = _producer(v)
    while o is not None and o.name == "stablehlo.broadcast_in_dim":
        o = _producer(o.operands[0])
    if o is None or o.name != "stablehlo.constant":
        return False
    a = o.attributes["value"]
    return isinstance(a, ir.DenseElementsAttr) and a.is_splat and float(np.asarray(a).reshape(-1)[0]) == 0.0


def _chain_conv(v):
    """The convolution whose fused epilogue ends in ``v`` (a conv result, or an epilogue op's), else None.
    Every link has a single use and follows its predecessor directly in program order (so the partitioner's
    runs keep the chain in the convolution's cluster)."""
    o = _producer(v)
    if o is None or len(_users(v)) != 1:
        return None
    if o.name == "stablehlo.convolution":
        t = ir.RankedTensorType(v.type)
        return o if (_static(t) and str(t.element_type) == "f32" and _conv_supported(o)
                     and all(_static(x.type) for x in o.operands)) else None
    if o.name in ("stablehlo.add", "stablehlo.maximum", "stablehlo.clamp") and _epilogue_ok(o):
        return _chain_conv(_chain_input(o))
    return None


def _chain_input(op):
    """The operand of an epilogue add/maximum that continues the chain (the other is bias/residual/zero)."""
    if op.name == "stablehlo.clamp":
        return op.operands[1]
    a, b = op.operands
    pa, pb = _producer(a), _producer(b)
    if op.name == "stablehlo.maximum":
        return a if _is_zero(b) else b
    if pb is not None and pb.name == "stablehlo.broadcast_in_dim" and _bias_vector(pb) is not None:
        return a
    if pa is not None and pa.name == "stablehlo.broadcast_in_dim" and _bias_vector(pa) is not None:
        return b
    chain_like = ("stablehlo.convolution", "stablehlo.add", "stablehlo.maximum")
    candidates = [v for v, p in ((a, pa), (b, pb)) if p is not None and p.name in chain_like]
    if len(candidates) == 2:  # both are convolution chains (a downsampled shortcut): the one just before
        prev = _previous(op)
        candidates.sort(key=lambda v: not _same(_producer(v), prev))
    for v in candidates:
        if _chain_conv(v) is not None:
            return v
    return b


def _scalar_constant(v):
    """The value of a splat constant ``v`` is, or a rank-0 one broadcast into ``v``; else None."""
    o = _producer(v)
    if o is not None and o.name == "stablehlo.broadcast_in_dim":
        src = _producer(o.operands[0])
        if src is None or ir.RankedTensorType(o.operands[0].type).rank != 0:
            return None
        o = src
    if o is None or o.name != "stablehlo.constant":
        return None
    a = o.attributes["value"]
    if not isinstance(a, ir.DenseElementsAttr) or not a.is_splat:
        return None
    return float(np.asarray(a).reshape(-1)[0])


def _clamp_bounds_ok(op) -> bool:
    """``clamp(lo, x, hi)`` (ReLU6 and friends): constant bounds, each a constant or a broadcast of a scalar
    one used by this clamp only, placed between ``x``'s producer and the clamp (what the partitioner needs to
    keep them in the convolution's cluster)."""
    lo, x, hi = op.operands
    if _scalar_constant(lo) is None or _scalar_constant(hi) is None or _scalar_constant(lo) > _scalar_constant(hi):
        return False
    px = _producer(x)
    between = []
    for v in (lo, hi):
        b = _producer(v)
        if b.name == "stablehlo.broadcast_in_dim":
            if len(_users(v)) != 1 or any(_same(b, o) for o in between):
                return False
            between.append(b)
    prev = _previous(op)
    for _ in between:  # the bounds' broadcasts come right before the clamp, in either order
        if not any(_same(prev, b) for b in between):
            return False
        prev = _previous(prev)
    return _same(prev, px)


def _bias_vector(bcast):
    """``bcast`` is a broadcast of a rank-1 cluster-local constant along one dim: that dim, else None."""
    src = _producer(bcast.operands[0])
    if src is None or src.name != "stablehlo.constant" or len(ir.RankedTensorType(src.results[0].type).shape) != 1:
        return None
    dims = [int(d) for d in ir.DenseI64ArrayAttr(bcast.attributes["broadcast_dimensions"])]
    return dims[0] if len(dims) == 1 else None


def _epilogue_ok(op) -> bool:
    """Whether ``op`` is a link of a convolution's epilogue that oneDNN runs as part of the call: the bias
    broadcast, ``+ bias`` (per output channel), ``+ residual`` (a whole tensor), ``max(x, 0)``."""
    if op.name == "stablehlo.broadcast_in_dim":
        users = _users(op.results[0])
        if len(users) == 1 and users[0].name == "stablehlo.clamp" and op.results[0] != users[0].operands[1]:
            return _epilogue_ok(users[0])  # a bound of a clamp the convolution takes
        if len(users) != 1 or users[0].name != "stablehlo.add" or _bias_vector(op) is None:
            return False
        add = users[0]
        other = add.operands[1] if add.operands[0] == op.results[0] else add.operands[0]
        conv = _chain_conv(other)
        if conv is None or not _same(_previous(add), op) or not _same(_previous(op), _producer(other)):
            return False
        fd = stablehlo_api.ConvDimensionNumbers(conv.attributes["dimension_numbers"]).output_feature_dimension
        return _bias_vector(op) == fd
    if not all(_static(v.type) and str(ir.RankedTensorType(v.type).element_type) == "f32"
               for v in list(op.operands) + list(op.results)):
        return False
    if op.name == "stablehlo.clamp":
        x = op.operands[1]
        return (x.type == op.results[0].type and _chain_conv(x) is not None and len(_users(x)) == 1
                and _clamp_bounds_ok(op))
    if op.operands[0].type != op.results[0].type or op.operands[1].type != op.results[0].type:
        return False
    x = _chain_input(op)
    px = _producer(x)
    if px is None or _chain_conv(x) is None:
        return False
    other = op.operands[1] if op.operands[0] == x else op.operands[0]
    po = _producer(other)
    if op.name == "stablehlo.maximum":
        return _is_zero(other) and _same(_previous(op), px)
    if po is not None and po.name == "stablehlo.broadcast_in_dim" and _bias_vector(po) is not None:
        return _same(_previous(op), po) and _same(_previous(po), px)
    # + residual: a whole tensor the runtime passes (a constant one, e.g. a folded broadcast bias, would be
    # cluster-local and has no argument to pass it through: the add then stays with the cpu backend)
    return _same(_previous(op), px) and not _same(po, px) and (po is None or po.name != "stablehlo.constant")


def _epilogue_steps(conv, ops, args) -> str:
    """The cluster's ops after ``conv`` as ';'-separated steps: ``bias@<input>`` (a per-channel vector the
    runtime passes, a weight) or ``bias=<v0>,<v1>,...`` (its values), ``add:<input>`` (a whole tensor),
    ``relu``, ``clip=<lo>,<hi>``."""
    steps = []
    cur = conv.results[0]
    for o in ops:
        if o == conv or o.name in ("stablehlo.constant", "stablehlo.broadcast_in_dim", "func.return"):
            continue
        if cur not in list(o.operands):
            raise ValueError(f"cpu_blas: {o.name} does not continue the convolution's epilogue")
        if o.name == "stablehlo.clamp":
            steps.append(f"clip={_scalar_constant(o.operands[0])!r},{_scalar_constant(o.operands[2])!r}")
            cur = o.results[0]
            continue
        other = o.operands[1] if o.operands[0] == cur else o.operands[0]
        if o.name == "stablehlo.maximum":
            steps.append("relu")
        else:
            po = _producer(other)
            if po is not None and po.name == "stablehlo.broadcast_in_dim":
                src = po.operands[0]
                if src in args:  # a weight: the runtime passes it
                    steps.append(f"bias@{args.index(src)}")
                else:
                    vec = np.asarray(_producer(src).attributes["value"]).astype(np.float32)
                    steps.append("bias=" + ",".join(repr(float(x)) for x in vec))
            else:
                steps.append(f"add:{args.index(other) if other in args else -1}")
        cur = o.results[0]
    if any(s == "add:-1" for s in steps):
        raise ValueError("cpu_blas: a residual operand must be a cluster input")
    return ";".join(steps)


def _maxpool_attrs(op) -> dict | None:
    """A ``reduce_window`` that is max pooling (f32, static, max body, -inf init, no base dilation, 1-3
    windowed dims, exactly two dims passed through) as cpu.maxpool attributes, else None."""
    if len(op.operands) != 2 or len(op.results) != 1:
        return None
    t = op.operands[0].type
    if not (_static(t) and str(ir.RankedTensorType(t).element_type) == "f32"):
        return None
    init = _producer(op.operands[1])
    if init is None or init.name != "stablehlo.constant":
        return None
    if float(np.asarray(init.attributes["value"]).reshape(-1)[0]) != -np.inf:
        return None
    body = op.regions[0].blocks[0]
    inner = [o.operation for o in body.operations]
    if len(inner) != 2 or inner[0].name != "stablehlo.maximum" or \
            set(inner[0].operands) != set(body.arguments) or inner[1].operands[0] != inner[0].results[0]:
        return None
    rank = len(ir.RankedTensorType(t).shape)
    win = _i64s(op, "window_dimensions", [1] * rank)
    strides = _i64s(op, "window_strides", [1] * rank)
    if any(d != 1 for d in _i64s(op, "base_dilations", [1] * rank)):
        return None
    wdil = _i64s(op, "window_dilations", [1] * rank)
    pad = np.asarray(op.attributes["padding"]).reshape(rank, 2) if "padding" in op.attributes else \
        np.zeros((rank, 2), int)
    spatial = [d for d in range(rank) if win[d] != 1 or strides[d] != 1 or pad[d].any() or wdil[d] != 1]
    passed = [d for d in range(rank) if d not in spatial]
    if len(passed) != 2 or not 1 <= len(spatial) <= 3 or (pad < 0).any():
        return None
    join = lambda xs: ",".join(str(int(x)) for x in xs)  # noqa: E731
    return {"perm": join(passed + spatial), "window": join(win[d] for d in spatial),
            "strides": join(strides[d] for d in spatial), "dilation": join(wdil[d] for d in spatial),
            "padding": join(pad[spatial].reshape(-1))}


def maxpool_numpy(x, window, strides, dilation, padding, out):
    """``out`` (N, C, *spatial) = max pooling of ``x`` (N, C, *spatial) padded with -inf."""
    n_sp = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [(padding[2 * i], padding[2 * i + 1]) for i in range(n_sp)],
               constant_values=-np.inf)
    eff = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    win = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + n_sp)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dilation)]
    np.max(win, axis=tuple(range(2 + n_sp, 2 + 2 * n_sp)), out=out)


def _conv_supported(op) -> bool:
    n = len(op.operands[0].type.shape) - 2
    if "batch_group_count" in op.attributes and op.attributes["batch_group_count"].value != 1:
        return False
    if any(d != 1 for d in _i64s(op, "lhs_dilation", [1] * n)):  # transposed convolutions: not yet
        return False
    if "window_reversal" in op.attributes and any(op.attributes["window_reversal"]):
        return False
    if "padding" in op.attributes and (np.asarray(op.attributes["padding"]) < 0).any():
        return False
    return True


def _conv_attrs(op) -> dict[str, str]:
    d = stablehlo_api.ConvDimensionNumbers(op.attributes["dimension_numbers"])
    n = len(d.input_spatial_dimensions)
    pad = np.asarray(op.attributes["padding"]).reshape(-1) if "padding" in op.attributes else [0] * (2 * n)
    join = lambda xs: ",".join(str(int(x)) for x in xs)  # noqa: E731
    return {
        "input": join([d.input_batch_dimension, d.input_feature_dimension, *d.input_spatial_dimensions]),
        "kernel": join([d.kernel_output_feature_dimension, d.kernel_input_feature_dimension,
                        *d.kernel_spatial_dimensions]),
        "output": join([d.output_batch_dimension, d.output_feature_dimension, *d.output_spatial_dimensions]),
        "strides": join(_i64s(op, "window_strides", [1] * n)),
        "padding": join(pad),
        "rhs_dilation": join(_i64s(op, "rhs_dilation", [1] * n)),
        "groups": str(op.attributes["feature_group_count"].value if "feature_group_count" in op.attributes else 1),
    }


def conv_im2col(x, w, strides, padding, dilation, groups, out):
    """``out`` (N, O, *spatial) = convolution of x (N, C, *spatial) with w (O, C/groups, *kernel).

    Per image and group: cols (C/groups * kernel, out pixels) gathered from a strided window view, then one
    GEMM ``w_g (O/groups, C/groups * kernel) @ cols`` written straight into the output's channel slice.
    """
    n_sp = x.ndim - 2
    if any(padding):
        x = np.pad(x, [(0, 0), (0, 0)] + [(padding[2 * i], padding[2 * i + 1]) for i in range(n_sp)])
    ksz = w.shape[2:]
    eff = [(k - 1) * d + 1 for k, d in zip(ksz, dilation)]
    win = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + n_sp)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dilation)]
    # win: (N, C, *out_spatial, *kernel) -> per image: (C, *kernel, *out_spatial)
    c = x.shape[1]
    pixels = math.prod(win.shape[2:2 + n_sp])
    cg, og = c // groups, w.shape[0] // groups
    order = (0, *range(1 + n_sp, 1 + 2 * n_sp), *range(1, 1 + n_sp))
    wg = w.reshape(groups, og, cg * math.prod(ksz))
    flat_out = out.reshape(out.shape[0], groups, og, pixels)
    for i in range(x.shape[0]):
        for g in range(groups):
            cols = win[i, g * cg:(g + 1) * cg].transpose(order).reshape(cg * math.prod(ksz), pixels)
            np.matmul(wg[g], cols, out=flat_out[i, g])


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x != ""]


class CpuGemmProvider(Provider):
    name = "cpu_blas"
    device = "cpu"
    callees = (CALLEE, CONV_CALLEE, POOL_CALLEE)
    description = "(batched) GEMM and convolution through NumPy's BLAS"

    def __init__(self):
        n = os.environ.get("BYTEIR_NUM_THREADS")
        if n:
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(n), user_api="blas")

    def load(self, callee, kernel, attrs):
        if callee == CONV_CALLEE:
            return self._load_conv(callee, kernel, attrs)
        if callee == POOL_CALLEE:
            return _load_pool(callee, attrs)
        try:
            lb, lc = _ints(attrs["lhs_batch"]), _ints(attrs["lhs_contract"])
            rb, rc = _ints(attrs["rhs_batch"]), _ints(attrs["rhs_contract"])
        except KeyError as e:
            raise ProviderError(f"{callee}: missing attribute {e}") from None
        constants = _constants(callee, kernel)
        plan: dict = {}
        const = set(_ints(attrs.get("const_operands", "")))
        onednn = None
        if _use_dnnl():
            from . import dnnl

            rhs_index = 0 if "lhs" in constants else 1
            onednn = dnnl.Matmul(const_rhs="rhs" in constants or rhs_index in const)

        def permutations(lrank, rrank):
            lfree = [d for d in range(lrank) if d not in lb and d not in lc]
            rfree = [d for d in range(rrank) if d not in rb and d not in rc]
            return lb + lfree + lc, rb + rc + rfree, lfree, rfree

        def run(inputs, outputs):
            it = iter(inputs)
            lhs = constants["lhs"] if "lhs" in constants else next(it)
            rhs = constants["rhs"] if "rhs" in constants else next(it)
            if not plan:
                lp, rp, lfree, rfree = permutations(lhs.ndim, rhs.ndim)
                b = math.prod(lhs.shape[d] for d in lb)
                m = math.prod(lhs.shape[d] for d in lfree)
                k = math.prod(lhs.shape[d] for d in lc)
                n = math.prod(rhs.shape[d] for d in rfree)
                plan.update(lp=lp, rp=rp, shapes=((b, m, k), (b, k, n), (b, m, n)))
            (ls, rs, os_) = plan["shapes"]
            a = lhs.transpose(plan["lp"]).reshape(ls)
            bm = rhs.transpose(plan["rp"]).reshape(rs)
            out = outputs[0].reshape(os_)
            if onednn is not None and a.dtype == np.float32 and min(a.size, bm.size, out.size) > 0:
                onednn(a, bm, out)
            elif os_[0] == 1:
                np.matmul(a[0], bm[0], out=out[0])
            else:
                np.matmul(a, bm, out=out)

        return run

    def _load_conv(self, callee, kernel, attrs):
        try:
            in_perm, k_perm, out_perm = _ints(attrs["input"]), _ints(attrs["kernel"]), _ints(attrs["output"])
            strides, padding = _ints(attrs["strides"]), _ints(attrs["padding"])
            dilation, groups = _ints(attrs["rhs_dilation"]), int(attrs["groups"])
        except KeyError as e:
            raise ProviderError(f"{callee}: missing attribute {e}") from None
        constants = _constants(callee, kernel)
        out_inv = list(np.argsort(out_perm))
        identity_out = out_perm == sorted(out_perm)
        const = set(_ints(attrs.get("const_operands", "")))
        w_index = 0 if "lhs" in constants else 1  # runtime operand index of the weights
        steps = [s for s in attrs.get("epilogue", "").split(";") if s]
        feature = out_perm[1]
        fused = _fusable(steps)
        onednn = None
        if _use_dnnl():
            from . import dnnl

            post = tuple("sum" if s.startswith("add:") else s for s in steps
                         if not s.startswith("bias")) if fused else ()
            onednn = dnnl.Conv(in_perm, k_perm, out_perm, strides, padding, dilation, groups,
                               const_weights="rhs" in constants or w_index in const,
                               bias=fused and bool(steps) and steps[0].startswith("bias"), post_ops=post)
        fixed_bias = {i: np.array([float(v) for v in s[5:].split(",")], np.float32)
                      for i, s in enumerate(steps) if s.startswith("bias=")}

        def vector(i, inputs):
            return fixed_bias[i] if i in fixed_bias else inputs[int(steps[i][5:])]

        def run(inputs, outputs):
            it = iter(inputs)
            x = constants["lhs"] if "lhs" in constants else next(it)
            w = constants["rhs"] if "rhs" in constants else next(it)
            out = outputs[0]
            if onednn is not None and x.dtype == np.float32:
                if fused:
                    bias = vector(0, inputs) if steps and steps[0].startswith("bias") else None
                    res = next((inputs[int(s[4:])] for s in steps if s.startswith("add:")), None)
                    onednn(x, w, out, bias, res)
                    return
                onednn(x, w, out)
            elif identity_out:  # NCHW-style output: the GEMMs write into it directly
                conv_im2col(x.transpose(in_perm), w.transpose(k_perm), strides, padding, dilation, groups, out)
            else:
                canonical = np.empty([out.shape[d] for d in out_perm], out.dtype)  # (N, O, *spatial)
                conv_im2col(x.transpose(in_perm), w.transpose(k_perm), strides, padding, dilation, groups,
                            canonical)
                np.copyto(out, canonical.transpose(out_inv))
            for i, s in enumerate(steps):  # the epilogue, unfused
                if s.startswith("bias"):
                    shape = [1] * out.ndim
                    shape[feature] = out.shape[feature]
                    out += vector(i, inputs).reshape(shape)
                elif s.startswith("add:"):
                    out += inputs[int(s[4:])]
                elif s.startswith("clip="):
                    lo, hi = (float(v) for v in s[5:].split(","))
                    np.clip(out, lo, hi, out=out)
                else:
                    np.maximum(out, 0, out=out)

        return run


def _load_pool(callee, attrs):
    try:
        perm, window, strides = _ints(attrs["perm"]), _ints(attrs["window"]), _ints(attrs["strides"])
        dilation, padding = _ints(attrs["dilation"]), _ints(attrs["padding"])
    except KeyError as e:
        raise ProviderError(f"{callee}: missing attribute {e}") from None
    inv = list(np.argsort(perm))
    onednn = None
    if _use_dnnl():
        from . import dnnl

        onednn = dnnl.MaxPool(perm, window, strides, dilation, padding)

    def run(inputs, outputs):
        x, out = inputs[0], outputs[0]
        if onednn is not None and x.dtype == np.float32:
            onednn(x, out)
            return
        canonical = np.empty([out.shape[d] for d in perm], out.dtype)
        maxpool_numpy(x.transpose(perm), window, strides, dilation, padding, canonical)
        np.copyto(out, canonical.transpose(inv))

    return run


def _fusable(steps: list[str]) -> bool:
    """oneDNN takes an epilogue of the form [bias] [+ tensor] [relu | clip] as bias argument and post-ops."""
    kinds = ["bias" if s.startswith("bias") else "add" if s.startswith("add:") else s.split("=")[0] for s in steps]
    order = {"bias": 0, "add": 1, "relu": 2, "clip": 2}
    return (len(set(kinds)) == len(kinds) and kinds == sorted(kinds, key=order.__getitem__)
            and not {"relu", "clip"} <= set(kinds))


def _use_dnnl() -> bool:
    """oneDNN runs the convolutions (and prepacks their weights) where it loads; im2col + BLAS otherwise.
    Measured on ResNet-18's convolutions (2 cores, AVX-512): oneDNN 400-450 GFLOP/s, im2col 130-250."""
    from . import dnnl

    return dnnl.available()


def _constants(callee, kernel) -> dict:
    if kernel is None:
        return {}
    if kernel.format != CONSTANTS_FORMAT:
        raise ProviderError(f"{callee}: unexpected kernel format {kernel.format!r}")
    with np.load(io.BytesIO(kernel.data)) as z:
        return {k: z[k] for k in z.files}
