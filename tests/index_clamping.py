"""Out-of-range indices, shared by the clamping tests of every backend: StableHLO programs with run-time start
indices (gather, dynamic_slice, dynamic_update_slice, scatter), adversarial index values, and NumPy versions of
what the StableHLO spec says each op does with them, written from the spec, one element at a time:

- ``dynamic_slice`` / ``dynamic_update_slice``: ``adjusted_start_indices = clamp(0, start_indices,
  shape(operand) - slice_sizes)`` (``shape(update)`` for the update);
- ``gather``: ``full_start_index[d_operand] = clamp(start_index[d_start], 0, dim(operand, d_operand) -
  slice_sizes[d_operand])``: the whole slice is in bounds;
- ``scatter``: an update element whose ``result_index`` is out of bounds is skipped (``updated_results =
  results``), the others apply in row-major order of the updates.

Indices are taken as Python integers, so the clamping is exact whatever the index type (no wrap-around).
"""

from __future__ import annotations

import itertools

import numpy as np

from programs import ty

INT_BOUNDS = {"i8": (-2 ** 7, 2 ** 7 - 1), "i16": (-2 ** 15, 2 ** 15 - 1), "i32": (-2 ** 31, 2 ** 31 - 1),
              "i64": (-2 ** 63, 2 ** 63 - 1), "ui8": (0, 2 ** 8 - 1), "ui16": (0, 2 ** 16 - 1),
              "ui32": (0, 2 ** 32 - 1), "ui64": (0, 2 ** 64 - 1)}
NP_INDEX = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64, "ui8": np.uint8, "ui16": np.uint16,
            "ui32": np.uint32, "ui64": np.uint64}


def adversarial(idx_type: str, limit: int) -> list[int]:
    """Start-index values for a dimension whose largest valid start is ``limit`` (``dim - size``): in range, at
    and one past each boundary, negative, huge, the type's extremes, and (64-bit types) values whose low 32 bits
    are a valid index, which an implementation truncating to 32 bits would read as in range."""
    lo, hi = INT_BOUNDS[idx_type]
    vals = [0, 1, limit, limit + 1, limit + 2, -1, -2, -limit - 1, 1000, -1000, 2 ** 20, -2 ** 20, lo, hi, lo + 1,
            hi - 1]
    if idx_type in ("i64", "ui64"):
        vals += [2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 32 + 1, -2 ** 32 + 1, -2 ** 31, -2 ** 31 - 1]
    out = []
    for v in vals:
        if lo <= v <= hi and v not in out:
            out.append(v)
    return out


def clamp(v: int, lo: int, hi: int) -> int:
    return min(max(int(v), lo), hi)


# ---------------------------------------------------------------- NumPy from the spec

def dynamic_slice_spec(x: np.ndarray, starts, sizes) -> np.ndarray:
    s = [clamp(v, 0, n - k) for v, n, k in zip(starts, x.shape, sizes)]
    return x[tuple(slice(a, a + k) for a, k in zip(s, sizes))].copy()


def dynamic_update_slice_spec(x: np.ndarray, update: np.ndarray, starts) -> np.ndarray:
    out = x.copy()
    s = [clamp(v, 0, n - k) for v, n, k in zip(starts, x.shape, update.shape)]
    out[tuple(slice(a, a + k) for a, k in zip(s, update.shape))] = update
    return out


def _start_index(indices: np.ndarray, batch_index: list[int], index_vector_dim: int) -> list[int]:
    """The start index a gather/scatter reads at ``batch_index``: a vector along ``index_vector_dim``, or one
    scalar when that dim is past the last (the spec's implicit trailing 1)."""
    if index_vector_dim < indices.ndim:
        pos = list(batch_index)
        pos.insert(index_vector_dim, slice(None))
        return [int(v) for v in indices[tuple(pos)]]
    return [int(indices[tuple(batch_index)])]


def gather_spec(operand: np.ndarray, start_indices: np.ndarray, *, offset_dims, collapsed_slice_dims,
                start_index_map, index_vector_dim, slice_sizes, operand_batching_dims=(),
                start_indices_batching_dims=()) -> np.ndarray:
    rank = operand.ndim
    batch_shape = list(start_indices.shape)
    if index_vector_dim < start_indices.ndim:
        del batch_shape[index_vector_dim]
    skipped = set(collapsed_slice_dims) | set(operand_batching_dims)
    offset_sizes = [slice_sizes[d] for d in range(rank) if d not in skipped]
    result_rank = len(batch_shape) + len(offset_sizes)
    batch_dims = [d for d in range(result_rank) if d not in offset_dims]
    shape = [0] * result_rank
    for d, n in zip(offset_dims, offset_sizes):
        shape[d] = n
    for d, n in zip(batch_dims, batch_shape):
        shape[d] = n
    result = np.empty(shape, operand.dtype)
    for result_index in itertools.product(*(range(n) for n in shape)):
        batch_index = [result_index[d] for d in batch_dims]
        start_index = _start_index(start_indices, batch_index, index_vector_dim)
        full_start = [0] * rank
        for d_start, d_operand in enumerate(start_index_map):
            full_start[d_operand] = clamp(start_index[d_start], 0, operand.shape[d_operand] - slice_sizes[d_operand])
        full_batching = [0] * rank
        for d_operand, d_start in zip(operand_batching_dims, start_indices_batching_dims):
            full_batching[d_operand] = batch_index[d_start if d_start < index_vector_dim else d_start - 1]
        offset_index = iter(result_index[d] for d in offset_dims)
        full_offset = [0 if d in skipped else next(offset_index) for d in range(rank)]
        operand_index = tuple(a + b + c for a, b, c in zip(full_start, full_batching, full_offset))
        result[result_index] = operand[operand_index]
    return result


COMBINE = {"replace": lambda cur, upd: upd, "add": lambda cur, upd: cur + upd}


def scatter_spec(operand: np.ndarray, scatter_indices: np.ndarray, updates: np.ndarray, *, update_window_dims,
                 inserted_window_dims, scatter_dims_to_operand_dims, index_vector_dim,
                 combiner="replace") -> np.ndarray:
    result = operand.copy()
    rank = operand.ndim
    scatter_dims = [d for d in range(updates.ndim) if d not in update_window_dims]
    window_dims = [d for d in range(rank) if d not in inserted_window_dims]
    for update_index in itertools.product(*(range(n) for n in updates.shape)):
        start_index = _start_index(scatter_indices, [update_index[d] for d in scatter_dims], index_vector_dim)
        full_start = [0] * rank
        for d_start, d_operand in enumerate(scatter_dims_to_operand_dims):
            full_start[d_operand] = start_index[d_start]
        full_window = [0] * rank
        for j, d in enumerate(window_dims):
            full_window[d] = update_index[update_window_dims[j]]
        result_index = tuple(a + b for a, b in zip(full_start, full_window))
        if all(0 <= i < n for i, n in zip(result_index, operand.shape)):
            result[result_index] = COMBINE[combiner](result[result_index], updates[update_index])
    return result


# ---------------------------------------------------------------- programs

def dynamic_slice_program(shape, sizes, idx_type: str, dtype="f32") -> str:
    """``@main(x, s0, ..., s{r-1}) -> dynamic_slice(x, s..., sizes)``."""
    r = len(shape)
    it = f"tensor<{idx_type}>"
    args = ", ".join([f"%x: {ty(shape, dtype)}"] + [f"%s{k}: {it}" for k in range(r)])
    starts = ", ".join(f"%s{k}" for k in range(r))
    out = ty(sizes, dtype)
    return (f"func.func @main({args}) -> {out} {{\n"
            f"  %r = stablehlo.dynamic_slice %x, {starts}, sizes = [{', '.join(map(str, sizes))}] : "
            f"({ty(shape, dtype)}, {', '.join([it] * r)}) -> {out}\n  return %r : {out}\n}}")


def dynamic_update_slice_program(shape, ushape, idx_type: str, dtype="f32") -> str:
    """``@main(x, u, s0, ..., s{r-1}) -> dynamic_update_slice(x, u, s...)``."""
    r = len(shape)
    it = f"tensor<{idx_type}>"
    xt, ut = ty(shape, dtype), ty(ushape, dtype)
    args = ", ".join([f"%x: {xt}", f"%u: {ut}"] + [f"%s{k}: {it}" for k in range(r)])
    starts = ", ".join(f"%s{k}" for k in range(r))
    return (f"func.func @main({args}) -> {xt} {{\n"
            f"  %r = stablehlo.dynamic_update_slice %x, %u, {starts} : ({xt}, {ut}, {', '.join([it] * r)}) -> {xt}\n"
            f"  return %r : {xt}\n}}")


def _ints(xs) -> str:
    return "[" + ", ".join(map(str, xs)) + "]"


def gather_program(operand_shape, indices_shape, result_shape, dims: dict, idx_type: str, dtype="f32") -> str:
    """``@main(operand, indices) -> gather`` with the dimension numbers ``dims`` (the keywords of
    :func:`gather_spec`)."""
    ot, it, rt = ty(operand_shape, dtype), ty(indices_shape, idx_type), ty(result_shape, dtype)
    extra = ""
    if dims.get("operand_batching_dims"):
        extra = (f", operand_batching_dims = {_ints(dims['operand_batching_dims'])}, start_indices_batching_dims = "
                 f"{_ints(dims['start_indices_batching_dims'])}")
    dn = (f"#stablehlo.gather<offset_dims = {_ints(dims['offset_dims'])}, collapsed_slice_dims = "
          f"{_ints(dims['collapsed_slice_dims'])}{extra}, start_index_map = {_ints(dims['start_index_map'])}, "
          f"index_vector_dim = {dims['index_vector_dim']}>")
    sizes = ", ".join(map(str, dims["slice_sizes"]))
    return (f"func.func @main(%x: {ot}, %i: {it}) -> {rt} {{\n"
            f"  %r = \"stablehlo.gather\"(%x, %i) <{{dimension_numbers = {dn}, indices_are_sorted = false, "
            f"slice_sizes = array<i64: {sizes}>}}> : ({ot}, {it}) -> {rt}\n  return %r : {rt}\n}}")


def scatter_program(operand_shape, indices_shape, updates_shape, dims: dict, idx_type: str, dtype="f32",
                    combiner="replace") -> str:
    ot, it, ut = ty(operand_shape, dtype), ty(indices_shape, idx_type), ty(updates_shape, dtype)
    st = f"tensor<{dtype}>"
    body = ("    stablehlo.return %b : " + st if combiner == "replace" else
            f"    %s = stablehlo.add %a, %b : {st}\n    stablehlo.return %s : {st}")
    dn = (f"#stablehlo.scatter<update_window_dims = {_ints(dims['update_window_dims'])}, inserted_window_dims = "
          f"{_ints(dims['inserted_window_dims'])}, scatter_dims_to_operand_dims = "
          f"{_ints(dims['scatter_dims_to_operand_dims'])}, index_vector_dim = {dims['index_vector_dim']}>")
    return (f"func.func @main(%x: {ot}, %i: {it}, %u: {ut}) -> {ot} {{\n"
            f"  %r = \"stablehlo.scatter\"(%x, %i, %u) ({{\n  ^bb0(%a: {st}, %b: {st}):\n{body}\n  }}) "
            f"{{scatter_dimension_numbers = {dn}, indices_are_sorted = false, unique_indices = false}} : "
            f"({ot}, {it}, {ut}) -> {ot}\n  return %r : {ot}\n}}")


#: Gathers the tests run: an embedding lookup (rows, collapsed), a 2-d window start (slices of 2x3 at a
#: (row, column) start, neither collapsed, index vector in the middle of the indices), and a gather whose start
#: index maps to the last operand dim only.
GATHERS = {
    "embedding": dict(operand_shape=(7, 4), indices_shape=(3, 4), result_shape=(3, 4, 4),
                      dims=dict(offset_dims=[2], collapsed_slice_dims=[0], start_index_map=[0], index_vector_dim=2,
                                slice_sizes=[1, 4])),
    "window2d": dict(operand_shape=(5, 7, 2), indices_shape=(3, 2), result_shape=(3, 2, 3, 2),
                     dims=dict(offset_dims=[1, 2, 3], collapsed_slice_dims=[], start_index_map=[0, 1],
                               index_vector_dim=1, slice_sizes=[2, 3, 2])),
    "last_dim": dict(operand_shape=(3, 9), indices_shape=(4, 1), result_shape=(4, 3, 4),
                     dims=dict(offset_dims=[1, 2], collapsed_slice_dims=[], start_index_map=[1], index_vector_dim=1,
                               slice_sizes=[3, 4])),
    # the slice spans dim 1 whole: its only valid start is 0
    "whole_dim": dict(operand_shape=(4, 5), indices_shape=(3, 2), result_shape=(3, 2, 5),
                      dims=dict(offset_dims=[1, 2], collapsed_slice_dims=[], start_index_map=[0, 1],
                                index_vector_dim=1, slice_sizes=[2, 5])),
    # operand dim 0 indexed by the indices' batch dim 0 (operand_batching_dims), rows picked in dim 1
    "batching": dict(operand_shape=(2, 6, 3), indices_shape=(2, 4), result_shape=(2, 4, 3),
                     dims=dict(offset_dims=[2], collapsed_slice_dims=[1], operand_batching_dims=[0],
                               start_indices_batching_dims=[0], start_index_map=[1], index_vector_dim=2,
                               slice_sizes=[1, 1, 3])),
}

#: Scatters: rows replaced/added into a table (inserted dim 0), and 2x2 windows at 2-d starts (partly outside).
SCATTERS = {
    "rows": dict(operand_shape=(6, 3), indices_shape=(5, 1), updates_shape=(5, 3),
                 dims=dict(update_window_dims=[1], inserted_window_dims=[0], scatter_dims_to_operand_dims=[0],
                           index_vector_dim=1)),
    "window2d": dict(operand_shape=(4, 5), indices_shape=(4, 2), updates_shape=(4, 2, 2),
                     dims=dict(update_window_dims=[1, 2], inserted_window_dims=[], scatter_dims_to_operand_dims=[0, 1],
                               index_vector_dim=1)),
}


def index_array(values, shape, idx_type: str, rng) -> np.ndarray:
    """An index tensor of ``shape`` filled with ``values`` (cycled from a random offset, so every value lands in
    every position over the cases)."""
    n = int(np.prod(shape))
    k = int(rng.integers(0, len(values)))
    flat = [values[(k + j) % len(values)] for j in range(n)]
    return np.array(flat, dtype=object).astype(NP_INDEX[idx_type]).reshape(shape)


def in_while(text: str) -> str:
    """One of the programs above with its op moved into the body of a ``while`` loop that runs once (the op reads
    the function's arguments from the enclosing scope): ops in control-flow regions take another code path in
    some backends (the cpu backend's SCF rewrite, its scatter loops)."""
    lines = text.split("\n")
    head, body, ret = lines[0], lines[1:-2], lines[-2]
    rt = ret.split(" : ", 1)[1]
    zero = "0.0" if rt.endswith("f32>") else "0"
    return "\n".join([
        head,
        "  %c0 = stablehlo.constant dense<0> : tensor<i32>",
        f"  %z = stablehlo.constant dense<{zero}> : {rt}",
        f"  %w:2 = stablehlo.while(%t = %c0, %acc = %z) : tensor<i32>, {rt}",
        "  cond {",
        "    %n = stablehlo.constant dense<1> : tensor<i32>",
        "    %c = stablehlo.compare LT, %t, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>",
        "    stablehlo.return %c : tensor<i1>",
        "  } do {",
        *("  " + b for b in body),
        f"    %r2 = stablehlo.add %r, %acc : {rt}",
        "    %one = stablehlo.constant dense<1> : tensor<i32>",
        "    %t2 = stablehlo.add %t, %one : tensor<i32>",
        f"    stablehlo.return %t2, %r2 : tensor<i32>, {rt}",
        "  }",
        f"  return %w#1 : {rt}",
        "}"])


# ---------------------------------------------------------------- cases: (program, [(inputs, expected)])

#: dynamic_slice / dynamic_update_slice: (operand shape, slice or update shape); in "whole_dim" the slice spans
#: dim 1 entirely, so 0 is its only valid start.
SLICES = {"2d": ((6, 8), (2, 3)), "whole_dim": ((5, 4), (2, 4))}

#: Every (op, case) the clamping tests run.
CASES = ([("dynamic_slice", n) for n in SLICES] + [("dynamic_update_slice", n) for n in SLICES]
         + [("gather", n) for n in GATHERS] + [(f"scatter_{c}", n) for n in SCATTERS for c in ("replace", "add")])


def program(op: str, case: str, idx_type: str) -> str:
    if op == "dynamic_slice":
        return dynamic_slice_program(*SLICES[case], idx_type)
    if op == "dynamic_update_slice":
        return dynamic_update_slice_program(*SLICES[case], idx_type)
    if op == "gather":
        g = GATHERS[case]
        return gather_program(g["operand_shape"], g["indices_shape"], g["result_shape"], g["dims"], idx_type)
    g = SCATTERS[case]
    return scatter_program(g["operand_shape"], g["indices_shape"], g["updates_shape"], g["dims"], idx_type,
                           combiner=op.removeprefix("scatter_"))


def _scalar(v: int, idx_type: str) -> np.ndarray:
    return np.array(v, dtype=object).astype(NP_INDEX[idx_type])


def cases(op: str, case: str, idx_type: str, rng, n: int = 12) -> list:
    """``[(inputs, expected output)]`` for :func:`program`: for the slices every adversarial value of each start
    index against two others of the other; for gather and scatter ``n`` index tensors drawn from the
    adversarial values (a valid range of ``[0, dim - size]`` for the smallest such dim; scatter: 3)."""
    out = []
    if op in ("dynamic_slice", "dynamic_update_slice"):
        shape, sizes = SLICES[case]
        x = rng.standard_normal(shape).astype(np.float32)
        u = rng.standard_normal(sizes).astype(np.float32)
        v0, v1 = adversarial(idx_type, shape[0] - sizes[0]), adversarial(idx_type, shape[1] - sizes[1])
        pairs = [(a, v1[(k + s) % len(v1)]) for k, a in enumerate(v0) for s in (0, 5)]
        pairs += [(v0[(k + 3) % len(v0)], b) for k, b in enumerate(v1)]
        for a, b in pairs:
            starts = [_scalar(a, idx_type), _scalar(b, idx_type)]
            if op == "dynamic_slice":
                out.append(([x, *starts], dynamic_slice_spec(x, [a, b], sizes)))
            else:
                out.append(([x, u, *starts], dynamic_update_slice_spec(x, u, [a, b])))
    elif op == "gather":
        g = GATHERS[case]
        x = rng.standard_normal(g["operand_shape"]).astype(np.float32)
        d = g["dims"]
        limit = min(g["operand_shape"][k] - d["slice_sizes"][k] for k in d["start_index_map"])
        vals = adversarial(idx_type, limit)
        for _ in range(n):
            idx = index_array(vals, g["indices_shape"], idx_type, rng)
            out.append(([x, idx], gather_spec(x, idx, **d)))
    else:
        g = SCATTERS[case]
        x = rng.standard_normal(g["operand_shape"]).astype(np.float32)
        u = rng.standard_normal(g["updates_shape"]).astype(np.float32)
        vals = adversarial(idx_type, 3)
        for _ in range(n):
            idx = index_array(vals, g["indices_shape"], idx_type, rng)
            out.append(([x, idx, u], scatter_spec(x, idx, u, **g["dims"], combiner=op.removeprefix("scatter_"))))
    return out


def assert_matches(got: np.ndarray, want: np.ndarray, op: str, inputs) -> None:
    """Bit-exact, except scatter-add (the order of float additions to one element is the implementation's)."""
    where = f"{op} with indices {[a.tolist() for a in inputs if a.dtype.kind in 'iu']}"
    assert got.shape == want.shape and got.dtype == want.dtype, where
    if op == "scatter_add":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=where)
    else:
        np.testing.assert_array_equal(got, want, err_msg=where)


def check_against_spec_and_reference(session, text: str, op: str, case: str, idx_type: str, seed: int,
                                     n: int) -> None:
    """``session`` (a backend's artifact of ``text``) against the spec's NumPy model and the reference
    interpreter, bit for bit, on ``n`` adversarial index sets; the inputs must come back unchanged."""
    import byteir_core

    ref = byteir_core.load(byteir_core.compile(text, target="reference").to_bytes())
    for inputs, want in cases(op, case, idx_type, np.random.default_rng(seed), n=n):
        before = [a.copy() for a in inputs]
        got = np.asarray(session.run(*inputs)[0])
        assert_matches(got, want, op, inputs)
        assert_matches(got, ref.run(*inputs)[0], op, inputs)
        for a, b in zip(inputs, before):
            assert a.tobytes() == b.tobytes()
