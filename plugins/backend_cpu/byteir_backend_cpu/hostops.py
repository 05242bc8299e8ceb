"""``sort``, ``scatter`` and ``select_and_scatter`` as host kernels: the ``cpu_host`` backend joins the ``cpu``
target (one op per cluster) and its provider runs each op with NumPy.

``stablehlo-legalize-to-linalg`` in this build lowers none of them correctly (select_and_scatter: see below).
Each carries a region (comparator, update computation, selection) that could be anything; this backend claims
an op only when it recognizes the region, and otherwise leaves it to the reference backend (the compile report
says so). Scatters inside while/if/case regions run in generated code instead (``scatter_loops.py``).

- ``sort``: a comparator that is one ``compare LT|GT`` of the two block arguments of one operand (either order),
  with comparison type FLOAT (or none), TOTALORDER, SIGNED (integers) or UNSIGNED (booleans). Every operand is
  permuted by the key operand's order (an argsort along ``dimension``), stable in every case, which is a valid
  order for ``is_stable = false`` too. TOTALORDER sorts by the IEEE total order (-NaN < -inf < ... < -0 < +0 <
  ... < inf < NaN). With FLOAT comparisons a NaN is unordered and StableHLO leaves the result to the
  implementation: here NaN ranks above every number (last when ascending, first when descending, as torch
  sorts), and -0 ties with +0.
- ``scatter``: one input, one update tensor and an update computation that is ``return %update`` (replace) or
  one of ``add multiply maximum minimum and or xor`` of the two arguments. Updates apply in the order of the
  update tensor's elements (row-major), like the reference interpreter: for ``add`` on floats the rounding is the
  interpreter's, and for replace the last update of an index wins. Update elements whose result index falls
  outside the input are skipped (the spec leaves them to the implementation; the interpreter skips them too).
  ``indices_are_sorted``/``unique_indices`` are hints the NumPy kernels do not need.
- ``select_and_scatter`` (max-pool backward): a select region that is one ``compare GE|GT|LE|LT`` of its two
  arguments (FLOAT or SIGNED/UNSIGNED comparisons) and a scatter region like scatter's (not replace). Each
  window's element is chosen the way the spec and the interpreter do it: a walk over the window in row-major
  order that keeps the current choice while ``select(current, next)`` holds (with GE: the first maximum), padding
  positions skipped; source values then combine into the chosen positions in row-major order of the source,
  starting from ``init_value`` everywhere. (The Linalg lowering of this build handles only non-overlapping
  windows and picks the last maximum on ties, so generated code is not used.)

Constant operands (the driver copies small constants into a cluster) travel in the kernel blob.
"""

from __future__ import annotations

import io
import json
import re

import ml_dtypes
import numpy as np

from byteir_core.dtypes import to_numpy
from byteir_core.errors import ProviderError
from byteir_core.interfaces import Backend, Cluster, CompiledCluster, Kernel, Provider
from byteir_core.mlir import ir, stablehlo_api

SORT = "cpu.sort"
SCATTER = "cpu.scatter"
SELECT_AND_SCATTER = "cpu.select_and_scatter"
CONSTANTS_FORMAT = "npz-raw-operands"  # constant operands: raw bytes per operand, dtype/shape in the spec
TYPES = frozenset({"f32", "f64", "f16", "bf16", "i1", "i8", "i16", "i32", "i64"})
FLOATS = frozenset({"f32", "f64", "f16", "bf16"})

SCATTER_COMBINERS = {
    "stablehlo.add": "add", "stablehlo.multiply": "multiply", "stablehlo.maximum": "maximum",
    "stablehlo.minimum": "minimum", "stablehlo.and": "and", "stablehlo.or": "or", "stablehlo.xor": "xor",
}


def _elem(t) -> str | None:
    if not isinstance(t, ir.RankedTensorType) or not t.has_static_shape:
        return None
    e = str(t.element_type)
    return e if e in TYPES else None


def _body(op):
    """(block arguments, ops before the terminator, terminator) of the op's single-block region."""
    if len(op.regions) != 1 or len(op.regions[0].blocks) != 1:
        return None
    block = op.regions[0].blocks[0]
    ops = [o.operation for o in block.operations]
    if not ops or ops[-1].name != "stablehlo.return":
        return None
    return list(block.arguments), ops[:-1], ops[-1]


def _arg_index(value, args) -> int | None:
    for i, a in enumerate(args):
        if value == a:
            return i
    return None


# ---------------------------------------------------------------- sort


def sort_plan(op) -> dict | None:
    """How to run this ``stablehlo.sort`` with NumPy, or None when it is not recognized."""
    elems = [_elem(v.type) for v in op.operands]
    if not elems or None in elems or [_elem(r.type) for r in op.results] != elems:
        return None
    rank = ir.RankedTensorType(op.operands[0].type).rank
    if rank == 0:
        return None
    dim = ir.IntegerAttr(op.attributes["dimension"]).value if "dimension" in op.attributes else -1
    if not -rank <= dim < rank:
        return None
    body = _body(op)
    if body is None:
        return None
    args, ops, ret = body
    if len(ops) != 1 or ops[0].name != "stablehlo.compare":
        return None
    if len(ret.operands) != 1 or ret.operands[0] != ops[0].results[0]:
        return None
    cmp = ops[0]
    a, b = (_arg_index(v, args) for v in cmp.operands)
    if a is None or b is None or a // 2 != b // 2 or a == b:
        return None
    key = a // 2
    direction = stablehlo_api.ComparisonDirectionAttr(cmp.attributes["comparison_direction"]).value
    if direction not in ("LT", "GT"):
        return None
    ascending = (direction == "LT") == (a % 2 == 0)
    kind = elems[key]
    ctype = (stablehlo_api.ComparisonTypeAttr(cmp.attributes["compare_type"]).value
             if "compare_type" in cmp.attributes else None)
    if kind in FLOATS:
        if ctype not in (None, "FLOAT", "TOTALORDER"):
            return None
        order = "total" if ctype == "TOTALORDER" else "float"
    elif kind == "i1":
        if ctype not in (None, "UNSIGNED"):
            return None
        order = "int"
    else:
        if ctype not in (None, "SIGNED"):
            return None
        order = "int"
    return {"op": "sort", "dimension": dim % rank, "key": key, "ascending": ascending, "order": order}


def _total_order_key(x: np.ndarray) -> np.ndarray:
    """Signed integers ordered as IEEE-754 totalOrder orders the floats ``x``."""
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[x.dtype.itemsize]
    i = x.view(bits)
    mask = np.array(np.iinfo(bits).max, dtype=bits)
    return i ^ ((i >> (8 * x.dtype.itemsize - 1)) & mask)


def run_sort(plan: dict, operands: list, outputs: list) -> None:
    dim = plan["dimension"]
    key = operands[plan["key"]]
    if plan["order"] == "total":
        k = _total_order_key(np.ascontiguousarray(key))
        perm = np.argsort(k if plan["ascending"] else ~k, axis=dim, kind="stable")
    elif plan["order"] == "float":
        k = key.astype(np.float64)  # exact for every float type; NumPy sorts NaN last
        nan = np.isnan(k)
        if plan["ascending"]:
            perm = np.argsort(k, axis=dim, kind="stable")
        else:  # NaN first, then descending; stable among ties (-0 == +0)
            perm = np.lexsort((np.where(nan, 0.0, -k), ~nan), axis=dim)
    else:
        k = key if key.dtype != np.bool_ else key.astype(np.int8)
        perm = np.argsort(k if plan["ascending"] else ~k, axis=dim, kind="stable")
    for src, out in zip(operands, outputs):
        out[...] = np.take_along_axis(src, perm, axis=dim)


# ---------------------------------------------------------------- scatter


def scatter_plan(op) -> dict | None:
    """How to run this ``stablehlo.scatter`` with NumPy, or None when it is not recognized."""
    if len(op.operands) != 3 or len(op.results) != 1:
        return None
    x, idx, upd = op.operands
    ex, ei, eu = _elem(x.type), _elem(idx.type), _elem(upd.type)
    if ex is None or ex != eu or ei not in ("i8", "i16", "i32", "i64") or _elem(op.results[0].type) != ex:
        return None
    body = _body(op)
    if body is None:
        return None
    args, ops, ret = body
    if len(args) != 2 or len(ret.operands) != 1:
        return None
    if not ops:
        if ret.operands[0] != args[1]:
            return None
        combiner = "replace"
    else:
        if len(ops) != 1 or ops[0].name not in SCATTER_COMBINERS or ret.operands[0] != ops[0].results[0]:
            return None
        if {_arg_index(v, args) for v in ops[0].operands} != {0, 1}:
            return None
        combiner = SCATTER_COMBINERS[ops[0].name]
        if combiner in ("and", "or", "xor") and ex in FLOATS:
            return None
    d = stablehlo_api.ScatterDimensionNumbers(op.attributes["scatter_dimension_numbers"])
    return {"op": "scatter", "combiner": combiner,
            "update_window_dims": list(d.update_window_dims), "inserted_window_dims": list(d.inserted_window_dims),
            "input_batching_dims": list(d.input_batching_dims),
            "scatter_indices_batching_dims": list(d.scatter_indices_batching_dims),
            "scatter_dims_to_operand_dims": list(d.scattered_dims_to_operand_dims),
            "index_vector_dim": int(d.index_vector_dim)}


def scatter_result_indices(plan: dict, input_shape, indices: np.ndarray, update_shape):
    """(flat result index, valid mask) of every update element, in row-major order of the updates."""
    rank_u, rank_in = len(update_shape), len(input_shape)
    m = int(np.prod(update_shape, dtype=np.int64))
    uidx = np.indices(update_shape, dtype=np.int64).reshape(rank_u, m)
    uwd = plan["update_window_dims"]
    usd = [d for d in range(rank_u) if d not in uwd]
    ivd = plan["index_vector_dim"]
    ind = indices.astype(np.int64)
    ind = np.moveaxis(ind, ivd, -1) if ivd < ind.ndim else ind[..., None]
    scatter_index = uidx[usd]  # (number of batch dims of the indices, m)
    start = ind[tuple(scatter_index)] if usd else np.broadcast_to(ind, (m, ind.shape[-1]))
    full = np.zeros((m, rank_in), np.int64)
    for k, d in enumerate(plan["scatter_dims_to_operand_dims"]):
        full[:, d] += start[:, k]
    for din, dstart in zip(plan["input_batching_dims"], plan["scatter_indices_batching_dims"]):
        full[:, din] += scatter_index[dstart if dstart < ivd else dstart - 1]
    skipped = set(plan["inserted_window_dims"]) | set(plan["input_batching_dims"])
    window_dims = [d for d in range(rank_in) if d not in skipped]
    for j, d in enumerate(window_dims):
        full[:, d] += uidx[uwd[j]]
    shape = np.asarray(input_shape, np.int64)
    valid = np.all((full >= 0) & (full < shape), axis=1) if rank_in else np.ones(m, bool)
    flat = np.ravel_multi_index(tuple(full[valid].T), tuple(input_shape)) if rank_in else np.zeros(
        int(valid.sum()), np.int64)
    return flat, valid


_UFUNCS = {"add": np.add, "multiply": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
           "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}


def _row_scatter(plan: dict, input_shape, indices: np.ndarray, updates: np.ndarray):
    """(row numbers, values as rows) when every update writes a whole row of the input's trailing dimensions at
    an index into its leading ones (an embedding's backward: ``grad[ids] += dy``; cross-entropy's backward: one
    element per row), else None. Only the rows are computed, not the index of every element."""
    k = len(plan["scatter_dims_to_operand_dims"])
    n_w = len(input_shape) - k
    if (k == 0 or plan["input_batching_dims"] or plan["scatter_dims_to_operand_dims"] != list(range(k))
            or plan["inserted_window_dims"] != list(range(k))):
        return None
    if (updates.ndim < n_w or plan["update_window_dims"] != list(range(updates.ndim - n_w, updates.ndim))
            or tuple(updates.shape[updates.ndim - n_w:]) != tuple(input_shape[k:])):
        return None
    ivd = plan["index_vector_dim"]
    ind = np.moveaxis(indices, ivd, -1) if ivd < indices.ndim else indices[..., None]
    if ind.shape[-1] != k or tuple(ind.shape[:-1]) != tuple(updates.shape[:updates.ndim - n_w]):
        return None
    ind = ind.reshape(-1, k).astype(np.int64, copy=False)
    valid = np.all((ind >= 0) & (ind < np.asarray(input_shape[:k], np.int64)), axis=1)
    rows = np.ravel_multi_index(tuple(ind[valid].T), tuple(input_shape[:k]))
    vals = np.ascontiguousarray(updates).reshape(len(valid), -1)
    return rows, vals if valid.all() else vals[valid]


def run_scatter(plan: dict, operands: list, outputs: list) -> None:
    x, indices, updates = operands
    out = outputs[0]
    np.copyto(out, x)
    if updates.size == 0 or out.size == 0:
        return
    by_rows = _row_scatter(plan, x.shape, indices, updates)
    if by_rows is not None:
        rows, vals = by_rows
        target = _flat_view(out).reshape(-1, vals.shape[1])
        if plan["combiner"] == "replace":
            keep = _last_occurrences(rows)
            target[rows[keep]] = vals[keep]
        elif len(rows):
            # Pass j applies every row's j-th update (in their order): the rows of one pass are distinct, so each
            # is one vector operation, and a row's updates combine in the order run one by one would (no
            # ufunc.at, and no reassociation: reduceat sums pairwise). As many passes as a row has updates.
            order = np.argsort(rows, kind="stable")
            rows, vals = rows[order], vals[order]
            new_row = np.concatenate(([True], rows[1:] != rows[:-1]))
            starts = np.flatnonzero(new_row)
            nth = np.arange(len(rows)) - starts[np.cumsum(new_row) - 1]  # each update's place among its row's
            ufunc = _UFUNCS[plan["combiner"]]
            for j in range(int(nth.max()) + 1):
                sel = nth == j
                target[rows[sel]] = ufunc(target[rows[sel]], vals[sel])
        _write_back(target.reshape(-1), out)
        return
    flat, valid = scatter_result_indices(plan, x.shape, indices, updates.shape)
    vals = np.ascontiguousarray(updates).reshape(-1)[valid]
    target = _flat_view(out)
    if plan["combiner"] == "replace":
        keep = _last_occurrences(flat)
        target[flat[keep]] = vals[keep]
    else:
        _UFUNCS[plan["combiner"]].at(target, flat, vals)
    _write_back(target, out)


def _last_occurrences(index: np.ndarray) -> np.ndarray:
    """Positions of each value's last occurrence in ``index``: where updates replace, the last one wins."""
    _, first_of_reversed = np.unique(index[::-1], return_index=True)
    return len(index) - 1 - first_of_reversed


def _flat_view(out: np.ndarray) -> np.ndarray:
    """``out`` flattened: a view of it when it is C-contiguous (the runtime's buffers are), else a copy."""
    return out.reshape(-1) if out.flags.c_contiguous else out.flatten()


def _write_back(flat: np.ndarray, out: np.ndarray) -> None:
    if not np.shares_memory(flat, out):
        np.copyto(out, flat.reshape(out.shape))


# ---------------------------------------------------------------- select_and_scatter


def _binary_of_args(block_ops, args, ret):
    """The op name when a region is exactly ``op(arg0, arg1)`` (either order) returned; else None."""
    if len(block_ops) != 1 or len(ret.operands) != 1 or ret.operands[0] != block_ops[0].results[0]:
        return None
    return block_ops[0]


def select_and_scatter_plan(op) -> dict | None:
    if len(op.operands) != 3 or len(op.results) != 1 or len(op.regions) != 2:
        return None
    x, src, init = op.operands
    ex = _elem(x.type)
    if ex is None or _elem(src.type) != ex or _elem(init.type) != ex or _elem(op.results[0].type) != ex:
        return None
    rank = ir.RankedTensorType(x.type).rank
    regions = []
    for region in op.regions:
        if len(region.blocks) != 1:
            return None
        block = region.blocks[0]
        ops = [o.operation for o in block.operations]
        if not ops or ops[-1].name != "stablehlo.return" or len(block.arguments) != 2:
            return None
        inner = _binary_of_args(ops[:-1], list(block.arguments), ops[-1])
        if inner is None:
            return None
        regions.append((inner, [_arg_index(v, list(block.arguments)) for v in inner.operands]))
    (cmp, cargs), (comb, sargs) = regions
    if cmp.name != "stablehlo.compare" or cargs != [0, 1]:
        return None
    direction = stablehlo_api.ComparisonDirectionAttr(cmp.attributes["comparison_direction"]).value
    ctype = (stablehlo_api.ComparisonTypeAttr(cmp.attributes["compare_type"]).value
             if "compare_type" in cmp.attributes else None)
    if direction not in ("GE", "GT", "LE", "LT") or ctype not in (None, "FLOAT", "SIGNED", "UNSIGNED"):
        return None
    if ctype == "FLOAT" and ex not in FLOATS or ctype == "SIGNED" and ex in FLOATS | {"i1"}:
        return None
    if ctype == "UNSIGNED" and ex != "i1":
        return None
    if comb.name not in SCATTER_COMBINERS or sorted(sargs) != [0, 1]:
        return None
    combiner = SCATTER_COMBINERS[comb.name]
    if combiner in ("and", "or", "xor") and ex in FLOATS:
        return None

    def ints(name, default):
        return [int(v) for v in op.attributes[name]] if name in op.attributes else default

    window = ints("window_dimensions", [1] * rank)
    strides = ints("window_strides", [1] * rank)
    padding = (np.asarray(op.attributes["padding"]).reshape(rank, 2).tolist() if "padding" in op.attributes
               else [[0, 0]] * rank)
    return {"op": "select_and_scatter", "select": direction, "combiner": combiner, "window": window,
            "strides": strides, "padding_low": [int(p[0]) for p in padding]}


_SELECT = {"GE": np.greater_equal, "GT": np.greater, "LE": np.less_equal, "LT": np.less}


def run_select_and_scatter(plan: dict, operands: list, outputs: list) -> None:
    x, src, init = operands
    out = outputs[0]
    out[...] = init
    if src.size == 0 or x.size == 0:
        return
    rank = x.ndim
    keep = _SELECT[plan["select"]]
    xs = x.astype(np.int8) if x.dtype == np.bool_ else x
    base = [np.arange(n, dtype=np.int64).reshape([-1 if d == i else 1 for d in range(rank)]) * s - p
            for i, (n, s, p) in enumerate(zip(src.shape, plan["strides"], plan["padding_low"]))]
    chosen = np.full(src.shape, -1, np.int64)  # flat operand index, -1: nothing in the window yet
    value = np.zeros(src.shape, xs.dtype)
    for offset in np.ndindex(*plan["window"]):  # row-major walk over the window
        idx = [b + o for b, o in zip(base, offset)]
        inside = np.ones(src.shape, bool)
        for i, n in zip(idx, x.shape):
            inside = inside & (i >= 0) & (i < n)
        clipped = [np.clip(i, 0, n - 1) for i, n in zip(idx, x.shape)]
        cur = np.broadcast_to(xs[tuple(clipped)], src.shape)
        flat = np.broadcast_to(np.ravel_multi_index(tuple(clipped), x.shape), src.shape)
        with np.errstate(invalid="ignore"):
            take = inside & ((chosen < 0) | ~keep(value, cur))
        value = np.where(take, cur, value)
        chosen = np.where(take, flat, chosen)
    has = chosen >= 0
    target = _flat_view(out)
    _UFUNCS[plan["combiner"]].at(target, chosen[has], np.ascontiguousarray(src)[has])
    _write_back(target, out)


# ---------------------------------------------------------------- backend and provider


_PLANS = {"stablehlo.sort": sort_plan, "stablehlo.scatter": scatter_plan,
          "stablehlo.select_and_scatter": select_and_scatter_plan}
_CALLEES = {"sort": SORT, "scatter": SCATTER, "select_and_scatter": SELECT_AND_SCATTER}


class CpuHostOpsBackend(Backend):
    name = "cpu_host"
    device = "cpu"
    targets = ("cpu",)
    max_cluster_ops = 1
    description = "sort, scatter and select_and_scatter as NumPy host kernels (recognized regions only)"

    def claims(self, op):
        plan = _PLANS.get(op.name)
        return 20 if plan is not None and plan(op) is not None else None

    def compile(self, cluster: Cluster) -> CompiledCluster:
        block = cluster.module.body.operations[0].regions[0].blocks[0]
        ops = [o.operation for o in block.operations]
        (op,) = [o for o in ops if o.name in _PLANS]
        plan = _PLANS[op.name](op)
        if plan is None:
            raise ValueError(f"cpu_host: {op.name} is not one this backend recognizes")
        sources, constants = [], []
        for v in op.operands:
            if isinstance(v, ir.BlockArgument) or isinstance(getattr(v, "owner", None), ir.Block):
                sources.append(["input", ir.BlockArgument(v).arg_number])
            else:  # a constant the driver copied into the cluster
                const = v.owner.operation
                if const.name != "stablehlo.constant":
                    raise ValueError(f"cpu_host: unexpected producer {const.name} in a one-op cluster")
                t = ir.RankedTensorType(v.type)
                # A splat (a scatter's zero-filled operand: an embedding's gradient) travels as one element and
                # is read as a broadcast view: no megabytes in the artifact, no copy of them at every call.
                splat = ir.DenseElementsAttr(const.attributes["value"]).is_splat and len(t.shape) > 0
                sources.append(["splat" if splat else "constant", len(constants), str(t.element_type),
                                list(t.shape)])
                constants.append(_constant_bytes(const, t, one=splat))
        plan["operands"] = sources
        results = list(block.operations)[-1].operation.operands
        plan["results"] = [_arg_index(v, list(op.results)) for v in results]
        kernel = None
        if constants:
            buf = io.BytesIO()
            np.savez(buf, **{f"c{i}": np.frombuffer(c, np.uint8) for i, c in enumerate(constants)})
            kernel = Kernel(CONSTANTS_FORMAT, buf.getvalue(), entry=plan["op"])
        return CompiledCluster(_CALLEES[plan["op"]], kernel, {"plan": json.dumps(plan)})


def _constant_bytes(const, t, one: bool = False) -> bytes:
    """The constant's values, or with ``one`` (a splat) its one value."""
    attr = ir.DenseElementsAttr(const.attributes["value"])
    elem = str(t.element_type)
    shape = () if one else tuple(t.shape)
    n = int(np.prod(shape, dtype=np.int64))
    if elem == "bf16":  # bf16 attributes have no buffer protocol (nor element access): read the printed form
        a = _bf16_from_text(str(attr), n)
    elif attr.is_splat:
        a = np.full(shape, np.asarray(attr).reshape(-1)[0], to_numpy(elem))
    else:
        a = np.asarray(attr)
    return np.ascontiguousarray(a.astype(to_numpy(elem), copy=False).reshape(shape)).tobytes()


def _bf16_from_text(text: str, n: int) -> np.ndarray:
    """Values of a printed bf16 ``dense<...>`` attribute: hex bytes (little-endian), or a (nested) list of
    decimal numbers and hex bit patterns (how non-finite values print)."""
    inner = text[text.index("<") + 1:text.rindex("> :")].strip()
    if inner.startswith('"0x'):
        bits = np.frombuffer(bytes.fromhex(inner[3:-1]), "<u2")
    else:
        tokens = re.findall(r"0x[0-9A-Fa-f]+|[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)", inner)
        bits = np.array([int(t, 16) if t.startswith("0x") else
                         int(np.array(float(t), np.float32).astype(ml_dtypes.bfloat16).view(np.uint16))
                         for t in tokens], np.uint16)
    if bits.size == 1 and n != 1:
        bits = np.full(n, bits[0], np.uint16)
    if bits.size != n:
        raise ValueError(f"cpu_host: cannot read a bf16 constant ({bits.size} values for {n} elements)")
    return bits.astype(np.uint16).view(ml_dtypes.bfloat16)


class CpuHostOpsProvider(Provider):
    name = "cpu_host"
    device = "cpu"
    callees = (SORT, SCATTER, SELECT_AND_SCATTER)
    description = "sort, scatter and select_and_scatter with NumPy"

    def load(self, callee, kernel, attrs):
        try:
            plan = json.loads(attrs["plan"])
            sources = plan["operands"]
            result_of_output = plan["results"]
        except (KeyError, TypeError, ValueError) as e:
            raise ProviderError(f"{callee}: bad or missing plan attribute: {e}") from None
        constants = {}
        if kernel is not None:
            if kernel.format != CONSTANTS_FORMAT:
                raise ProviderError(f"{callee}: unexpected kernel format {kernel.format!r}")
            with np.load(io.BytesIO(kernel.data)) as z:
                raw = {k: z[k] for k in z.files}
            for s in sources:
                if s[0] == "constant":
                    constants[s[1]] = np.frombuffer(raw[f"c{s[1]}"].tobytes(), to_numpy(s[2])).reshape(s[3])
                elif s[0] == "splat":
                    one = np.frombuffer(raw[f"c{s[1]}"].tobytes(), to_numpy(s[2])).reshape(())
                    constants[s[1]] = np.broadcast_to(one, tuple(s[3]))
        fn = {SORT: run_sort, SCATTER: run_scatter, SELECT_AND_SCATTER: run_select_and_scatter}[callee]
        n_results = len(result_of_output)

        def run(inputs, outputs):
            operands = [inputs[s[1]] if s[0] == "input" else constants[s[1]] for s in sources]
            if len(outputs) != n_results:
                raise ProviderError(f"{callee}: expected {n_results} outputs, got {len(outputs)}")
            if result_of_output == list(range(len(result_of_output))) and len(outputs) == _n_results(plan, operands):
                fn(plan, operands, list(outputs))
                return
            full = [np.empty(o.shape, o.dtype) for o in _result_templates(plan, operands)]
            fn(plan, operands, full)
            for out, r in zip(outputs, result_of_output):
                np.copyto(out, full[r])

        return run


def _n_results(plan, operands) -> int:
    return len(operands) if plan["op"] == "sort" else 1


def _result_templates(plan, operands):
    return operands if plan["op"] == "sort" else operands[:1]
