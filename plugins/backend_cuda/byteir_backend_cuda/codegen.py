"""Fused Triton kernels from StableHLO: a cluster's elementwise, layout and reduction ops become as few kernels as
their shapes allow.

The model is index arithmetic, as in Inductor's pointwise/reduction kernels: every value of the fused graph can be
computed at any multi-index of its own shape. An elementwise op computes its operands at the same index; a
broadcast, transpose, reshape, slice, pad, concatenate, reverse or iota only rewrites the index (so layout ops fold
into the loads); an input is a masked load at the linear address of the index. Nothing between the loads and the
stores touches memory.

Two kernel shapes:

- **pointwise**: a flat block of ``BLOCK`` elements per program; each output is computed at its own index of the
  flat offset.
- **reduction**: rows x columns, where the columns are the reduced dimensions of the kernel's reductions (all of
  one (rows, cols) split). ``XBLOCK`` rows per program; a row that fits a block is reduced in registers once
  (persistent: softmax and LayerNorm load their row once), a longer one in ``RBLOCK`` chunks. Consumers of a
  reduction at its own row (the broadcast back in softmax, LayerNorm's normalisation) fuse into the same kernel.

Values are computed in fp32 when they are f16/bf16 (loaded, upcast, downcast at the store; an explicit convert to
a narrow type rounds there as the program says). A group of ops that cannot become one kernel (a reduction result
read at another row, outputs of unrelated sizes around a reduction) raises :class:`CannotFuse` naming the op,
and the caller splits the group before it.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

import numpy as np

from byteir_core.mlir import ir

TRITON_DTYPE = {"f32": "tl.float32", "f64": "tl.float64", "f16": "tl.float16", "bf16": "tl.bfloat16",
                "i1": "tl.int1", "i8": "tl.int8", "i16": "tl.int16", "i32": "tl.int32", "i64": "tl.int64",
                "ui8": "tl.uint8"}
POINTER_TYPE = {"f32": "*fp32", "f64": "*fp64", "f16": "*fp16", "bf16": "*bf16", "i1": "*i1", "i8": "*i8",
                "i16": "*i16", "i32": "*i32", "i64": "*i64", "ui8": "*u8"}
FLOATS = ("f16", "bf16", "f32", "f64")

#: Longest row reduced in registers in one pass (longer rows loop over RBLOCK chunks).
PERSISTENT_MAX = 4096
#: Elements per program of a pointwise kernel.
POINTWISE_BLOCK = 1024


class CannotFuse(Exception):
    """The group cannot be one kernel; ``op`` is where to split it (None: the group's first op)."""

    def __init__(self, op, why: str):
        super().__init__(why)
        self.op = op


def elem_type(v) -> str:
    return str(ir.ShapedType(v.type).element_type)


def shape_of(v) -> tuple[int, ...]:
    return tuple(ir.ShapedType(v.type).shape)


def compute_type(dtype: str) -> str:
    """The type arithmetic runs in: fp32 for f16/bf16, the type itself otherwise."""
    return "f32" if dtype in ("f16", "bf16") else dtype


def owner_op(v):
    owner = v.owner
    return owner.operation if isinstance(owner, (ir.Operation, ir.OpView)) else None


def _attr_ints(op, name) -> list[int]:
    a = op.attributes[name]
    try:
        return list(ir.DenseI64ArrayAttr(a))
    except (TypeError, ValueError):
        return [int(x) for x in np.asarray(ir.DenseIntElementsAttr(a)).reshape(-1)]


# ------------------------------------------------------------------------------------------------------------
# Index expressions


@dataclass(frozen=True)
class Dim:
    """One coordinate as Triton code, and which block axes it varies along (``x`` rows/flat, ``r`` columns)."""

    code: str
    deps: frozenset = frozenset()

    @staticmethod
    def const(c: int) -> "Dim":
        return Dim(str(int(c)))


@dataclass(frozen=True)
class Index:
    """A multi-index into a value of shape ``shape``. ``flat`` (code, deps) is set when the coordinates are the
    row-major delinearization of that flat offset over ``shape``: linearizing gives it back unchanged, which keeps
    reshapes free and contiguous loads contiguous."""

    dims: tuple
    shape: tuple
    flat: tuple | None = None

    def key(self) -> tuple:
        return tuple(d.code for d in self.dims)

    def deps(self) -> frozenset:
        out = frozenset()
        for d in self.dims:
            out |= d.deps
        return out


def _wrap(code: str) -> str:
    """``code`` parenthesized once: an identifier, number or already-wrapped expression is kept as it is, so the
    same coordinate is always spelled the same (index keys compare spellings)."""
    if code.isidentifier() or code.isdigit():
        return code
    if code.startswith("(") and code.endswith(")"):
        depth = 0
        for i, ch in enumerate(code):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(code) - 1:
                break
        else:
            return code
    return f"({code})"


def delinearize(flat: str, deps: frozenset, shape, bound: int | None = None) -> Index:
    """Coordinates of flat offset ``flat`` in row-major ``shape``; ``bound`` is the offset's range (a larger range
    than the shape's size wraps the leading coordinate too, so lanes past the end still address inside)."""
    n = math.prod(shape)
    if bound is not None and bound > n:  # the coordinates wrap: so does the flat offset they linearize to
        flat = f"({_wrap(flat)} % {n})" if n > 1 else "0"
        deps = deps if n > 1 else frozenset()
        bound = None
    dims = []
    stride = n
    for i, s in enumerate(shape):
        stride //= s
        if s == 1:
            dims.append(Dim.const(0))
            continue
        code = _wrap(flat) if stride == 1 else f"({_wrap(flat)} // {stride})"
        if i > 0:
            code = f"({code} % {s})"
        dims.append(Dim(code, deps))
    return Index(tuple(dims), tuple(shape), (flat, deps))


def linearize(idx: Index, shape) -> tuple[str, frozenset]:
    """Row-major flat offset of ``idx`` in ``shape`` (code, deps)."""
    if idx.flat is not None and tuple(idx.shape) == tuple(shape):
        return idx.flat
    terms = []
    stride = 1
    for d, s in reversed(list(zip(idx.dims, shape))):
        if s != 1 and d.code != "0":
            terms.append(d.code if stride == 1 else f"{d.code} * {stride}")
        stride *= s
    return (" + ".join(reversed(terms)) or "0"), idx.deps()


# ------------------------------------------------------------------------------------------------------------
# Kernel emission


@dataclass
class KernelSpec:
    """A kernel ready to compile: source, parameters (program buffer per pointer parameter), launch shape."""

    name: str
    source: str
    params: list[int]  # program buffer index per parameter, in order
    param_types: list[str]
    constexprs: dict
    grid: tuple[int, int, int]
    num_warps: int


def _is_var(code: str) -> bool:
    return code[:1] == "t" and code[1:].isdigit()


def to_bf16(var: str) -> str:
    """fp32 ``var`` rounded to bf16, nearest-even, written with integer ops: the GPU's conversion rounds so, and
    Triton's interpreter would truncate; spelling it out makes both compute the same bits."""
    bits = f"{var}.to(tl.uint32, bitcast=True)"
    rounded = f"(({bits} + 0x7FFF + (({bits} >> 16) & 1)) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)"
    return f"tl.where({var} != {var}, {var}.to(tl.bfloat16), {rounded})"


def _fmt_float(x: float) -> str:
    if math.isnan(x):
        return 'float("nan")'
    if math.isinf(x):
        return 'float("inf")' if x > 0 else 'float("-inf")'
    return repr(float(x))


def _literal(value, dtype: str) -> str:
    """A scalar of ``dtype``'s compute type as Triton code."""
    ct = compute_type(dtype)
    if ct in FLOATS:
        text = _fmt_float(float(value))
        return text if ct == "f32" else f"tl.full([], {text}, {TRITON_DTYPE[ct]})"
    if ct == "i1":
        return f"tl.full([], {int(bool(value))}, tl.int1)"
    v = int(value)
    if ct == "i32" and -2**31 <= v < 2**31:
        return str(v)
    return f"tl.full([], {v}, {TRITON_DTYPE[ct]})"


_BINARY = {"stablehlo.add": "({a} + {b})", "stablehlo.subtract": "({a} - {b})", "stablehlo.multiply": "({a} * {b})",
           "stablehlo.and": "({a} & {b})", "stablehlo.or": "({a} | {b})", "stablehlo.xor": "({a} ^ {b})",
           # StableHLO defines shifts by the bit width or more (or negative): 0, or the sign for >>
           "stablehlo.shift_left": "tl.where(({b} >= 0) & ({b} < {bits}), {a} << {b}, 0)",
           "stablehlo.shift_right_arithmetic": "tl.where(({b} >= 0) & ({b} < {bits}), {a} >> {b}, "
                                               "tl.where({a} < 0, -1, 0))"}
_MATH = {"stablehlo.exponential": "tl.exp({a})", "stablehlo.log": "tl.log({a})", "stablehlo.sqrt": "tl.sqrt_rn({a})",
         "stablehlo.rsqrt": "(1.0 / tl.sqrt_rn({a}))", "stablehlo.sine": "tl.sin({a})", "stablehlo.cosine": "tl.cos({a})",
         "stablehlo.floor": "tl.floor({a})", "stablehlo.ceil": "tl.ceil({a})", "stablehlo.logistic": "tl.sigmoid({a})",
         "stablehlo.abs": "tl.abs({a})", "stablehlo.negate": "(-{a})",
         # Triton's interpreter has no libdevice: tanh, expm1, log1p, tan, cbrt and rounding are composed from
         # what both it and the GPU have.
         "stablehlo.tanh": "(1.0 - 2.0 / (tl.exp(2.0 * {a}) + 1.0))",
         "stablehlo.exponential_minus_one": "tl.where(tl.abs({a}) < 1e-5, {a} + 0.5 * {a} * {a}, tl.exp({a}) - 1.0)",
         "stablehlo.log_plus_one": "tl.where(tl.abs({a}) < 1e-4, {a} - 0.5 * {a} * {a}, tl.log(1.0 + {a}))",
         "stablehlo.tan": "(tl.sin({a}) / tl.cos({a}))",
         "stablehlo.cbrt": "tl.where({a} < 0, -1.0, 1.0) * tl.exp(tl.log(tl.abs({a})) / 3.0)",
         "stablehlo.round_nearest_afz": "tl.where({a} < 0, -tl.floor(-{a} + 0.5), tl.floor({a} + 0.5))",
         "stablehlo.round_nearest_even": "(tl.floor({a} + 0.5) - tl.where((tl.floor({a} + 0.5) - {a} == 0.5) & "
                                         "(tl.floor({a} + 0.5) % 2 != 0), 1.0, 0.0))",
         "stablehlo.is_finite": "(tl.abs({a}) < float(\"inf\"))"}
_COMPARE = {"EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
#: Single-op reduce bodies: reduce op -> (Triton reduction, combine expression, identity by kind)
_REDUCERS = {"stablehlo.add": ("tl.sum", "({a} + {b})", {"f": 0.0, "i": 0}),
             "stablehlo.maximum": ("tl.max", "tl.maximum({a}, {b})", {"f": -math.inf, "i": "min"}),
             "stablehlo.minimum": ("tl.min", "tl.minimum({a}, {b})", {"f": math.inf, "i": "max"}),
             "stablehlo.or": ("tl.max", "tl.maximum({a}, {b})", {"i": 0}),
             "stablehlo.and": ("tl.min", "tl.minimum({a}, {b})", {"i": 1})}
#: Most window positions a reduce_window is unrolled over (pooling windows are 2x2 .. 7x7).
MAX_WINDOW = 64
INDEX_OPS = ("stablehlo.reduce_window", "stablehlo.broadcast_in_dim", "stablehlo.reshape", "stablehlo.transpose", "stablehlo.slice",
             "stablehlo.reverse", "stablehlo.pad", "stablehlo.concatenate", "stablehlo.iota", "stablehlo.gather",
             "stablehlo.dynamic_slice")
ELEMENTWISE_OPS = frozenset(list(_BINARY) + list(_MATH) + [
    "stablehlo.divide", "stablehlo.maximum", "stablehlo.minimum", "stablehlo.power", "stablehlo.atan2",
    "stablehlo.sign", "stablehlo.not", "stablehlo.compare", "stablehlo.select", "stablehlo.clamp",
    "stablehlo.convert", "stablehlo.bitcast_convert", "stablehlo.shift_right_logical"])


def reducer_of(op):
    """(triton reduction, combine, identity) of a single-result reduce with a one-op body, else None."""
    if op.name != "stablehlo.reduce" or len(op.results) != 1:
        return None
    return reducer_of_region(op)


def reducer_of_region(op):
    """The reducer of ``op``'s one-op body (reduce, reduce_window), else None."""
    body = [o.operation for o in op.regions[0].blocks[0].operations]
    if len(body) != 2 or body[0].name not in _REDUCERS or body[1].name != "stablehlo.return":
        return None
    args = list(op.regions[0].blocks[0].arguments)
    if set(body[0].operands) != set(args) or body[1].operands[0] != body[0].results[0]:
        return None
    dtype = elem_type(op.results[0])
    red, combine, ident = _REDUCERS[body[0].name]
    kind = "f" if dtype in FLOATS else "i"
    if kind not in ident:
        return None
    identity = ident[kind]
    if identity in ("min", "max"):
        bits = {"i1": 1, "i8": 8, "i16": 16, "i32": 32, "i64": 64}.get(dtype)
        if bits is None:
            return None
        identity = -(2 ** (bits - 1)) if identity == "min" else 2 ** (bits - 1) - 1
        if dtype == "i1":
            identity = 0 if red == "tl.max" else 1
    return red, combine, identity


def clamp_start(code: str, dtype: str, limit: int) -> str:
    """A start index clamped into ``[0, limit]`` (``limit = dim - slice size``), as StableHLO's gather and
    dynamic_slice say. Narrow index types are widened first: Triton refuses (or would wrap) a bound that does not
    fit the index's own type, e.g. an i8 start into a dimension of 300."""
    if re.fullmatch(r"-?\d+", code):  # an i32 constant's literal
        return str(min(max(int(code), 0), limit))
    if dtype in ("i8", "i16") or (dtype == "i32" and limit > 2 ** 31 - 1):
        code = f"({code}).to({'tl.int64' if limit > 2 ** 31 - 1 else 'tl.int32'})"
    return f"tl.minimum(tl.maximum({code}, 0), {limit})"


def gather_plan(op):
    """(offset_dims, collapsed_slice_dims, start_index_map, index_vector_dim) of a gather without batching dims
    (what the emitter writes), else None."""
    from byteir_core.mlir import stablehlo_api

    d = stablehlo_api.GatherDimensionNumbers(op.attributes["dimension_numbers"])
    if list(d.operand_batching_dims) or list(d.start_indices_batching_dims):
        return None
    return list(d.offset_dims), list(d.collapsed_slice_dims), list(d.start_index_map), int(d.index_vector_dim)


def window_plan(op):
    """(window, strides, window dilations, padding, reducer) of a single-operand reduce_window this emitter
    unrolls (no base dilation, at most MAX_WINDOW positions), else None."""
    if op.name != "stablehlo.reduce_window" or len(op.results) != 1:
        return None
    red = reducer_of_region(op)
    if red is None:
        return None
    rank = len(shape_of(op.operands[0]))

    def ints(name, default):
        return _attr_ints(op, name) if name in op.attributes else [default] * rank
    windows = ints("window_dimensions", 1)
    if any(b != 1 for b in ints("base_dilations", 1)) or math.prod(windows) > MAX_WINDOW:
        return None
    pads = [(0, 0)] * rank
    if "padding" in op.attributes:
        flat = [int(x) for x in np.asarray(ir.DenseIntElementsAttr(op.attributes["padding"])).reshape(-1)]
        pads = list(zip(flat[0::2], flat[1::2]))
    return windows, ints("window_strides", 1), ints("window_dilations", 1), pads, red


#: Scatter combiners the cuda backend runs: add (atomically; element types with hardware atomics on sm_80 and
#: newer) and replace (plain stores: with duplicate indices one of the updates wins, as StableHLO allows).
ATOMIC_ADD_TYPES = ("f32", "i32", "i64")


def scatter_plan(op) -> dict | None:
    """Dimension numbers and combiner of a single-operand ``stablehlo.scatter`` the emitter writes, else None."""
    from byteir_core.mlir import stablehlo_api

    if op.name != "stablehlo.scatter" or len(op.operands) != 3 or len(op.results) != 1:
        return None
    block = op.regions[0].blocks[0]
    body = [o.operation for o in block.operations]
    args = list(block.arguments)
    dtype = elem_type(op.results[0])
    if len(body) == 1 and body[0].operands[0] == args[1]:
        combiner = "replace"
    elif len(body) == 2 and body[0].name == "stablehlo.add" and set(body[0].operands) == set(args) \
            and body[1].operands[0] == body[0].results[0] and dtype in ATOMIC_ADD_TYPES:
        combiner = "add"
    else:
        return None
    d = stablehlo_api.ScatterDimensionNumbers(op.attributes["scatter_dimension_numbers"])
    if list(d.input_batching_dims) or list(d.scatter_indices_batching_dims):
        return None
    return {"combiner": combiner, "update_window_dims": list(d.update_window_dims),
            "inserted_window_dims": list(d.inserted_window_dims),
            "scatter_dims_to_operand_dims": list(d.scattered_dims_to_operand_dims),
            "index_vector_dim": int(d.index_vector_dim)}


class _Block:
    """Lines of one scope; nested loops are flushed into their parent when they close."""

    def __init__(self, indent: int):
        self.indent = indent
        self.lines: list[str] = []


@dataclass
class Group:
    """Ops fused into one kernel, with the buffers it reads (value -> program buffer) and writes."""

    ops: list
    loads: dict = field(default_factory=dict)  # ir.Value -> buffer index
    stores: list = field(default_factory=list)  # (ir.Value, buffer index)


class KernelEmitter:
    """Writes one Triton kernel for a :class:`Group`. ``constants`` maps a splat constant's value to its scalar;
    ``buffers`` gives each program buffer's (shape, dtype)."""

    def __init__(self, name: str, group: Group, splats: dict, buffers: list):
        self.name = name
        self.group = group
        self.in_group = set(group.ops)
        self.splats = splats
        self.buffers = buffers
        self.params: list[int] = []
        self.n = 0
        self.scopes: list[dict] = [{}]
        self.blocks: list[_Block] = [_Block(1)]
        self._extra_mask: str | None = None  # pointwise: the store mask of an output smaller than the grid
        self._full_store = False  # reduction kernels: storing rows x columns (else one value per row)
        self.full_index: Index | None = None
        self.reduced: dict = {}  # reduce result -> (var, row index key)
        self.stack: list = []  # ops being emitted, outermost first

    # -- code helpers ---------------------------------------------------------------------------------------
    def tmp(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def line(self, text: str, outer: bool = False) -> None:
        block = self.blocks[0] if outer else self.blocks[-1]
        block.lines.append("    " * block.indent + text)

    def bind(self, code: str, deps: frozenset) -> str:
        """A variable holding ``code``; placed in the outermost scope its dependencies allow (row values are
        hoisted out of column loops)."""
        var = self.tmp()
        self.line(f"{var} = {code}", outer="r" not in deps)
        return var

    def param(self, buf: int) -> str:
        if buf not in self.params:
            self.params.append(buf)
        return f"p{self.params.index(buf)}"

    def mask_for(self, deps: frozenset) -> str | None:
        if self.mode == "pointwise":
            return "xmask" if deps else None
        parts = [m for d, m in (("x", "xmask"), ("r", "rmask")) if d in deps]
        return " & ".join(parts) or None

    # -- values ---------------------------------------------------------------------------------------------
    def emit(self, v, idx: Index) -> tuple[str, frozenset]:
        """(code, deps) of value ``v`` at ``idx``, in its compute type."""
        key = (v, idx.key())
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        out = self._emit(v, idx)
        if out[1] and "r" in out[1]:
            self.scopes[-1][key] = out
        else:
            self.scopes[0][key] = out
        return out

    def _emit(self, v, idx: Index) -> tuple[str, frozenset]:
        if v in self.splats:
            return _literal(self.splats[v], elem_type(v)), frozenset()
        op = owner_op(v)
        if v in self.group.loads or op is None or op not in self.in_group:
            return self._load(v, idx)
        return self._emit_op(op, v, idx)

    def _load(self, v, idx: Index) -> tuple[str, frozenset]:
        buf = self.group.loads.get(v)
        if buf is None:
            raise CannotFuse(None, f"value {v.get_name() if hasattr(v, 'get_name') else v} has no buffer")
        shape, dtype = self.buffers[buf]
        addr, deps = linearize(idx, shape)
        mask = self.mask_for(deps)
        p = self.param(buf)
        if mask:
            code = f"tl.load({p} + ({addr}), mask={mask}, other=0)"
        else:
            code = f"tl.load({p} + ({addr}))"
        if compute_type(dtype) != dtype:
            code += f".to({TRITON_DTYPE[compute_type(dtype)]})"
        return self.bind(code, deps), deps

    def _emit_op(self, op, v, idx: Index) -> tuple[str, frozenset]:
        self.stack.append(op)
        try:
            return self._emit_op_inner(op, v, idx)
        finally:
            self.stack.pop()

    def _emit_op_inner(self, op, v, idx: Index) -> tuple[str, frozenset]:
        name = op.name
        if name == "stablehlo.reduce":
            return self._reduce_result(op, v, idx)
        if name in INDEX_OPS:
            return self._index_op(op, v, idx)
        scalar = Index((), ())
        args = [self.emit(o, scalar if not shape_of(o) and shape_of(v) else idx) for o in op.operands]
        deps = frozenset().union(*[a[1] for a in args]) if args else frozenset()
        a = [x[0] for x in args]
        dtype = elem_type(v)
        in_dtype = elem_type(op.operands[0]) if len(op.operands) else dtype
        if name in _BINARY:
            if dtype == "i1" and name in ("stablehlo.add", "stablehlo.multiply"):
                code = f"({a[0]} | {a[1]})" if name == "stablehlo.add" else f"({a[0]} & {a[1]})"
            else:
                bits = {"i8": 8, "i16": 16, "i32": 32, "i64": 64}.get(dtype, 32)
                code = _BINARY[name].format(a=a[0], b=a[1], bits=bits)
                if name.startswith("stablehlo.shift"):
                    code = f"{code}.to({TRITON_DTYPE[dtype]})"
        elif name in _MATH:
            code = _MATH[name].format(a=a[0])
            if dtype == "f64":  # the correctly rounded square root is fp32-only; fp64's tl.sqrt is exact
                code = code.replace("tl.sqrt_rn(", "tl.sqrt(")
            if name == "stablehlo.abs" and in_dtype not in FLOATS:
                code = f"tl.where({a[0]} < 0, -{a[0]}, {a[0]})"
        elif name == "stablehlo.divide":
            if dtype in FLOATS:
                code = f"({a[0]} / {a[1]})"
            else:  # StableHLO integer division truncates toward zero
                code = (f"tl.where(({a[0]} < 0) != ({a[1]} < 0), -(tl.abs({a[0]}) // tl.abs({a[1]})), "
                        f"tl.abs({a[0]}) // tl.abs({a[1]}))")
        elif name in ("stablehlo.maximum", "stablehlo.minimum"):
            fn = "tl.maximum" if name.endswith("maximum") else "tl.minimum"
            nan = ", propagate_nan=tl.PropagateNan.ALL" if dtype in FLOATS else ""
            code = f"{fn}({a[0]}, {a[1]}{nan})"
        elif name == "stablehlo.power":
            code = (f"tl.where({a[1]} == 0, 1.0, tl.where({a[0]} < 0, tl.where(tl.floor({a[1]}) == {a[1]}, "
                    f"tl.where(tl.floor({a[1]} * 0.5) * 2.0 == {a[1]}, 1.0, -1.0) * tl.exp({a[1]} * "
                    f"tl.log(-{a[0]})), float(\"nan\")), tl.exp({a[1]} * tl.log({a[0]}))))")
            if dtype not in FLOATS:
                raise CannotFuse(op, "integer power")
        elif name == "stablehlo.atan2":
            raise CannotFuse(op, "atan2 has no Triton lowering here")
        elif name == "stablehlo.sign":
            code = f"tl.where({a[0]} > 0, 1, tl.where({a[0]} < 0, -1, 0)).to({TRITON_DTYPE[compute_type(dtype)]})"
            if dtype in FLOATS:
                code = f"tl.where({a[0]} != {a[0]}, {a[0]}, {code})"
        elif name == "stablehlo.not":
            code = f"({a[0]} == 0)" if dtype == "i1" else f"(~{a[0]})"
        elif name == "stablehlo.shift_right_logical":
            raise CannotFuse(op, "logical shift")
        elif name == "stablehlo.compare":
            direction = str(op.attributes["comparison_direction"]).split()[-1].rstrip(">")
            code = f"({a[0]} {_COMPARE[direction]} {a[1]})"
        elif name == "stablehlo.select":
            code = f"tl.where({a[0]}, {a[1]}, {a[2]})"
        elif name == "stablehlo.clamp":
            code = f"tl.minimum(tl.maximum({a[1]}, {a[0]}), {a[2]})"
        elif name == "stablehlo.convert":
            src_var = a[0]
            if dtype == "bf16" and compute_type(in_dtype) != "f32":  # via fp32 (f64: rounds twice, rarely off)
                src_var = self.bind(f"{src_var}.to(tl.float32)", deps)
            elif not _is_var(src_var):
                src_var = self.bind(src_var, deps)
            code = self._convert(src_var, "f32" if dtype == "bf16" else in_dtype, dtype)
        elif name == "stablehlo.bitcast_convert":
            if in_dtype in ("f16", "bf16") or dtype in ("f16", "bf16"):
                raise CannotFuse(op, "bitcast of a 16-bit float")
            code = f"{a[0]}.to({TRITON_DTYPE[dtype]}, bitcast=True)"
        else:
            raise CannotFuse(op, f"{name} has no Triton lowering")
        return self.bind(code, deps), deps

    @staticmethod
    def _convert(a: str, src: str, dst: str) -> str:
        if dst == "i1":
            return f"({a} != 0)"
        if dst == "bf16" and compute_type(src) == "f32":  # round to the narrow type, keep computing in fp32
            return f"{to_bf16(a)}.to(tl.float32)"
        if dst in ("f16", "bf16"):
            return f"{a}.to({TRITON_DTYPE[dst]}).to(tl.float32)"
        return f"{a}.to({TRITON_DTYPE[compute_type(dst)]})"

    # -- layout ops -----------------------------------------------------------------------------------------
    def _index_op(self, op, v, idx: Index) -> tuple[str, frozenset]:
        name = op.name
        if name == "stablehlo.iota":
            d = idx.dims[int(ir.IntegerAttr(op.attributes["iota_dimension"]).value)]
            dtype = elem_type(v)
            if d.code == "0":
                return _literal(0, dtype), frozenset()
            return self.bind(f"({d.code}).to({TRITON_DTYPE[compute_type(dtype)]})", d.deps), d.deps
        src = op.operands[0]
        sshape = shape_of(src)
        if name == "stablehlo.reshape":
            flat, deps = linearize(idx, shape_of(v))
            return self.emit(src, delinearize(flat, deps, sshape))
        if name == "stablehlo.broadcast_in_dim":
            bd = _attr_ints(op, "broadcast_dimensions")
            dims = tuple(idx.dims[bd[j]] if sshape[j] != 1 else Dim.const(0) for j in range(len(sshape)))
            same = tuple(sshape) == tuple(shape_of(v)) and bd == list(range(len(sshape)))
            return self.emit(src, Index(dims, sshape, idx.flat if same else None))
        if name == "stablehlo.transpose":
            perm = _attr_ints(op, "permutation")
            dims = [None] * len(perm)
            for i, p in enumerate(perm):
                dims[p] = idx.dims[i]
            return self.emit(src, Index(tuple(dims), sshape))
        if name == "stablehlo.slice":
            start, stride = _attr_ints(op, "start_indices"), _attr_ints(op, "strides")
            dims = []
            for d, s0, st in zip(idx.dims, start, stride):
                code = d.code if st == 1 else f"{d.code} * {st}"
                dims.append(Dim(code if s0 == 0 else f"({code} + {s0})", d.deps))
            return self.emit(src, Index(tuple(dims), sshape))
        if name == "stablehlo.reverse":
            rev = set(_attr_ints(op, "dimensions"))
            dims = tuple(Dim(f"({sshape[k] - 1} - {d.code})", d.deps) if k in rev and sshape[k] > 1 else d
                         for k, d in enumerate(idx.dims))
            return self.emit(src, Index(dims, sshape))
        if name == "stablehlo.pad":
            return self._pad(op, v, idx)
        if name == "stablehlo.concatenate":
            return self._concatenate(op, v, idx)
        if name in ("stablehlo.gather", "stablehlo.dynamic_slice"):
            return self._gather(op, v, idx)
        if name == "stablehlo.reduce_window":
            return self._reduce_window(op, v, idx)
        raise CannotFuse(op, f"{name} has no Triton lowering")

    def _reduce_window(self, op, v, idx: Index):
        """Pooling: the window is unrolled; each position reads the operand at ``idx * stride + w * dilation -
        pad_low`` and positions in the padding contribute the reduction's identity."""
        plan = window_plan(op)
        if plan is None:
            raise CannotFuse(op, "reduce_window this emitter cannot unroll")
        windows, strides, wdil, pads, (red, combine, identity) = plan
        src, init = op.operands
        sshape = shape_of(src)
        dtype = elem_type(v)
        ident = _literal(identity, dtype)
        acc, deps = ident, frozenset()
        for w in itertools.product(*[range(n) for n in windows]):
            dims, conds = [], []
            for d, (i, s, wk, dl, (lo, _)) in enumerate(zip(idx.dims, strides, w, wdil, pads)):
                code = i.code if s == 1 else f"{i.code} * {s}"
                off = wk * dl - lo
                if off:
                    code = f"({code} + {off})" if off > 0 else f"({code} - {-off})"
                if off < 0 or (shape_of(v)[d] - 1) * s + off > sshape[d] - 1:  # may read the padding
                    conds.append(f"({code} >= 0) & ({code} < {sshape[d]})")
                    code = f"tl.minimum(tl.maximum({code}, 0), {sshape[d] - 1})"
                dims.append(Dim(code, i.deps))
            x, xdeps = self.emit(src, Index(tuple(dims), sshape))
            if conds:
                x = f"tl.where({' & '.join(conds)}, {x}, {ident})"
            acc = combine.format(a=acc, b=x) if acc != ident else x
            deps = deps | xdeps | idx.deps()
            acc = self.bind(acc, deps)
        init_v, _ = self.emit(init, Index((), ()))
        if init not in self.splats or float(self.splats[init]) != float(identity):
            acc = self.bind(combine.format(a=acc, b=init_v), deps)
        return acc, deps

    def _pad(self, op, v, idx: Index):
        src, padv = op.operands
        sshape = shape_of(src)
        low, interior = _attr_ints(op, "edge_padding_low"), _attr_ints(op, "interior_padding")
        dims, conds = [], []
        for d, lo, it, s, n in zip(idx.dims, low, interior, sshape, shape_of(v)):
            if lo == 0 and it == 0 and n <= s:  # every coordinate of the result is one of the operand's
                dims.append(d)
                continue
            shifted = f"({d.code} - {lo})" if lo else d.code
            q = shifted if it == 0 else f"({shifted} // {it + 1})"
            conds.append(f"({shifted} >= 0)")
            conds.append(f"({q} < {s})")
            if it:
                conds.append(f"({shifted} % {it + 1} == 0)")
            dims.append(Dim(f"tl.minimum(tl.maximum({q}, 0), {s - 1})", d.deps))
        inner, deps = self.emit(src, Index(tuple(dims), sshape))
        pv, pdeps = self.emit(padv, Index((), ()))
        if not conds:
            return inner, deps
        deps = deps | idx.deps() | pdeps
        return self.bind(f"tl.where({' & '.join(conds)}, {inner}, {pv})", deps), deps

    def _concatenate(self, op, v, idx: Index):
        axis = int(ir.IntegerAttr(op.attributes["dimension"]).value)
        d = idx.dims[axis]
        parts = []
        offset = 0
        for src in op.operands:
            sshape = shape_of(src)
            size = sshape[axis]
            dims = list(idx.dims)
            local = f"({d.code} - {offset})" if offset else d.code
            dims[axis] = Dim(f"tl.minimum(tl.maximum({local}, 0), {size - 1})", d.deps)
            parts.append((offset + size, self.emit(src, Index(tuple(dims), sshape))))
            offset += size
        code, deps = parts[-1][1]
        for end, (c, dp) in reversed(parts[:-1]):
            code = f"tl.where({d.code} < {end}, {c}, {code})"
            deps = deps | dp
        deps = deps | d.deps
        return self.bind(code, deps), deps

    def _gather(self, op, v, idx: Index):
        """A gather/dynamic_slice whose start indices select whole slices: the start indices are loaded (from the
        result's batch coordinates), clamped into range as StableHLO says, and added to the slice coordinates."""
        if op.name == "stablehlo.dynamic_slice":
            src = op.operands[0]
            sshape = shape_of(src)
            sizes = _attr_ints(op, "slice_sizes")
            dims = []
            for k, d in enumerate(idx.dims):
                start, sdeps = self.emit(op.operands[1 + k], Index((), ()))
                start = clamp_start(start, elem_type(op.operands[1 + k]), sshape[k] - sizes[k])
                dims.append(Dim(f"({d.code} + {start})", d.deps | sdeps))
            return self.emit(src, Index(tuple(dims), sshape))
        src, indices = op.operands
        sshape, ishape = shape_of(src), shape_of(indices)
        plan = gather_plan(op)
        if plan is None:
            raise CannotFuse(op, "batched gather")
        offset_dims, collapsed, start_map, ivd = plan
        sizes = _attr_ints(op, "slice_sizes")
        out_rank = len(shape_of(v))
        batch_dims = [d for d in range(out_rank) if d not in offset_dims]
        base = [idx.dims[d] for d in batch_dims]  # coordinates of the start-index vector in `indices`
        starts = {}
        for j, od in enumerate(start_map):
            coords = list(base)
            if ivd < len(ishape):
                coords.insert(ivd, Dim.const(j))
            s, sdeps = self.emit(indices, Index(tuple(coords), ishape))
            starts[od] = (clamp_start(s, elem_type(indices), sshape[od] - sizes[od]), sdeps)
        dims = []
        offset_iter = iter(offset_dims)
        for k in range(len(sshape)):
            if k in collapsed:
                inner = Dim.const(0)
            else:
                inner = idx.dims[next(offset_iter)]
            if k in starts:
                s, sdeps = starts[k]
                dims.append(Dim(f"({inner.code} + {s})", inner.deps | sdeps))
            else:
                dims.append(inner)
        return self.emit(src, Index(tuple(dims), sshape))

    # -- reductions -----------------------------------------------------------------------------------------
    def _reduce_result(self, op, v, idx: Index):
        if self.mode != "reduce":
            raise CannotFuse(op, "reduction in a pointwise kernel")
        if v in self.reduced:
            var, key = self.reduced[v]
            if idx.key() != key:
                raise CannotFuse(self._consumer(op), "reduction result read at another row")
            return var, frozenset({"x"})
        src, init = op.operands
        dims = _attr_ints(op, "dimensions")
        sshape = shape_of(src)
        kept = [k for k in range(len(sshape)) if k not in dims]
        if (math.prod(sshape[k] for k in kept), math.prod(sshape[k] for k in dims)) != (self.rows, self.cols):
            raise CannotFuse(op, "reduction of another shape")
        row = delinearize("xoffs", frozenset("x"), [sshape[k] for k in kept])
        if idx.key() != row.key():
            raise CannotFuse(self._consumer(op), "reduction result read at another row")
        red, combine, identity = reducer_of(op)
        dtype = elem_type(v)
        ct = compute_type(dtype)
        acc_t = "int32" if ct == "i1" else TRITON_DTYPE[ct].removeprefix("tl.")
        ident = _literal(identity, dtype if dtype != "i1" else "i32")
        full = self._anchor_index(sshape, kept, dims)
        if self.persistent:
            x, deps = self.emit(src, full)
            if dtype == "i1":
                x = f"{x}.to(tl.int32)"
            acc = self.bind(f"tl.where(xmask & rmask, {x}, {ident})", frozenset("xr"))
        else:
            acc = self.tmp()
            self.line(f"{acc} = tl.full([XBLOCK, RBLOCK], {ident}, tl.{acc_t})")
            self.open_loop()
            x, deps = self.emit(src, full)
            if dtype == "i1":
                x = f"{x}.to(tl.int32)"
            self.line(f"{acc} = tl.where(xmask & rmask, {combine.format(a=acc, b=x)}, {acc})")
            self.close_loop()
        out = f"{red}({acc}, 1)[:, None]"
        init_v, _ = self.emit(init, Index((), ()))
        if init not in self.splats or float(self.splats[init]) != float(identity):
            out = combine.format(a=out, b=init_v)
        if dtype == "i1":
            out = f"({out} != 0)"
        var = self.bind(out, frozenset({"x"}))
        self.reduced[v] = (var, row.key())
        return var, frozenset({"x"})

    def _consumer(self, op):
        """The op that asked for ``op``'s result (where to split), or ``op`` when a store did."""
        below = [o for o in self.stack if o is not op]
        return below[-1] if below else op

    def _anchor_index(self, shape, kept, dims) -> Index:
        rows = delinearize("xoffs", frozenset({"x"}), [shape[k] for k in kept])
        cols = delinearize("roffs", frozenset({"r"}), [shape[k] for k in dims])
        out = [None] * len(shape)
        for k, d in zip(kept, rows.dims):
            out[k] = d
        for k, d in zip(dims, cols.dims):
            out[k] = d
        flat = None
        if dims == list(range(len(shape) - len(dims), len(shape))):  # reduced dims trailing: flat = row*C + col
            flat = (f"xoffs * {self.cols} + roffs", frozenset("xr"))
        return Index(tuple(out), tuple(shape), flat)

    def open_loop(self) -> None:
        b = _Block(self.blocks[-1].indent + 1)
        self.blocks.append(b)
        self.scopes.append({})
        self.line("roffs = roff + rbase")
        self.line("rmask = roffs < RNUMEL")

    def close_loop(self) -> None:
        b = self.blocks.pop()
        self.scopes.pop()
        self.line("for roff in range(0, RNUMEL, RBLOCK):")
        self.blocks[-1].lines.extend(b.lines)

    # -- whole kernels --------------------------------------------------------------------------------------
    def generate(self) -> KernelSpec | None:
        """The kernel, or None when it has nothing to write (every output is empty)."""
        self.group.stores = [(v, b) for v, b in self.group.stores if math.prod(self.buffers[b][0]) > 0]
        if not self.group.stores:
            return None
        reduces = [op for op in self.group.ops if op.name == "stablehlo.reduce"]
        if reduces:
            return self._reduction_kernel(reduces[0])
        return self._pointwise_kernel()

    def _store(self, v, buf, idx: Index) -> None:
        shape, dtype = self.buffers[buf]
        code, deps = self.emit(v, idx)
        addr, adeps = linearize(idx, shape)
        need = frozenset("xr") if self._full_store else frozenset("x")
        for axis in sorted(need - adeps):  # a one-element output: the address still needs the block's shape
            addr = f"{addr} + 0 * {'offs' if self.mode == 'pointwise' else 'xoffs' if axis == 'x' else 'roffs'}"
        mask = self.mask_for(need)
        if self._extra_mask:
            mask = f"{mask} & {self._extra_mask}"
        if not need <= deps:  # constant along a block axis: give it the block's shape before storing
            block = "[BLOCK]" if self.mode == "pointwise" else "[XBLOCK, RBLOCK]" if self._full_store \
                else "[XBLOCK, 1]"
            ct = TRITON_DTYPE[compute_type(dtype)]
            code = (f"tl.full({block}, {code}, {ct})" if not deps and not _is_var(code)
                    else f"tl.broadcast_to({code}, {block})")
        if dtype == "i1":
            val = f"({code} != 0)"
        elif dtype == "bf16":
            val = to_bf16(code if _is_var(code) else self.bind(code, deps))
        else:
            val = f"{code}.to({TRITON_DTYPE[dtype]})"
        p = self.param(buf)
        self.line(f"tl.store({p} + ({addr}), {val}, mask={mask})")

    def _pointwise_kernel(self) -> KernelSpec:
        self.mode = "pointwise"
        self._full_store = False
        n = max(math.prod(self.buffers[b][0]) for _, b in self.group.stores)
        block = min(POINTWISE_BLOCK, max(16, 1 << (n - 1).bit_length()))
        wide = n >= 2**31
        head = ["    pid = tl.program_id(0)",
                f"    offs = pid{'.to(tl.int64)' if wide else ''} * BLOCK + tl.arange(0, BLOCK)",
                f"    xmask = offs < {n}"]
        for v, buf in self.group.stores:
            shape = self.buffers[buf][0]
            numel = math.prod(shape)
            self._extra_mask = f"(offs < {numel})" if numel < n else None
            self._store(v, buf, delinearize("offs", frozenset("x"), shape, bound=n))
        self._extra_mask = None
        warps = 4 if block >= 512 else (2 if block >= 128 else 1)
        return self._finish(head, {"BLOCK": block}, (math.ceil(n / block), 1, 1), warps)

    def _reduction_kernel(self, first) -> KernelSpec:
        self.mode = "reduce"
        src = first.operands[0]
        sshape = shape_of(src)
        dims = _attr_ints(first, "dimensions")
        kept = [k for k in range(len(sshape)) if k not in dims]
        self.rows = math.prod(sshape[k] for k in kept)
        self.cols = math.prod(sshape[k] for k in dims)
        pow2 = lambda n: max(2, 1 << (n - 1).bit_length())  # noqa: E731
        if dims == list(range(len(sshape) - len(dims), len(sshape))):
            # reduced dims innermost: a row is contiguous; the whole row in registers when it fits
            self.persistent = self.cols <= PERSISTENT_MAX
            rblock = pow2(self.cols) if self.persistent else 1024
            xblock = max(1, min(pow2(self.rows), max(1, 2048 // rblock), 64))
        else:
            # reduced dims outside (a bias gradient's column sums): neighbouring rows are contiguous in memory,
            # so many rows share a block (coalesced loads along its first axis) and columns are looped over
            xblock = min(64, pow2(self.rows))
            rblock = min(pow2(self.cols), max(2, 2048 // xblock))
            self.persistent = self.cols <= rblock
        full = self._anchor_index(sshape, kept, dims)
        wide = self.rows * self.cols >= 2**31
        head = ["    pid = tl.program_id(0)",
                f"    xoffs = pid{'.to(tl.int64)' if wide else ''} * XBLOCK + tl.arange(0, XBLOCK)[:, None]",
                f"    xmask = xoffs < {self.rows}",
                "    rbase = tl.arange(0, RBLOCK)[None, :]"]
        if self.persistent:
            head += ["    roffs = rbase", "    rmask = roffs < RNUMEL"]
        row_stores, full_stores = [], []
        for v, buf in self.group.stores:
            numel = math.prod(self.buffers[buf][0])
            if numel == self.rows:
                row_stores.append((v, buf))
            elif numel == self.rows * self.cols:
                full_stores.append((v, buf))
            else:
                raise CannotFuse(owner_op(v), "an output of another size than the reduction's rows or elements")
        self._extra_mask = None
        self._full_store = False
        for op in self.group.ops:  # every reduction once, in order, outside the loops of the others
            if op.name == "stablehlo.reduce":
                s = shape_of(op.operands[0])
                red_dims = _attr_ints(op, "dimensions")
                self.emit(op.results[0], delinearize("xoffs", frozenset("x"),
                                                     [n for k, n in enumerate(s) if k not in red_dims]))
        for v, buf in row_stores:
            self._store(v, buf, delinearize("xoffs", frozenset("x"), self.buffers[buf][0]))
        self._full_store = True
        if full_stores:
            if not self.persistent:
                self.open_loop()
            for v, buf in full_stores:
                shape = self.buffers[buf][0]
                if tuple(shape) == tuple(sshape):
                    idx = full
                elif full.flat is not None:
                    idx = delinearize(full.flat[0], full.flat[1], shape)
                else:
                    raise CannotFuse(owner_op(v), "an output laid out unlike the reduction's input")
                self._store(v, buf, idx)
            if not self.persistent:
                self.close_loop()
        warps = 8 if xblock * rblock >= 4096 else 4 if xblock * rblock >= 512 else 2 if xblock * rblock >= 128 else 1
        return self._finish(head, {"XBLOCK": xblock, "RBLOCK": rblock, "RNUMEL": self.cols},
                            (math.ceil(self.rows / xblock), 1, 1), warps)

    def scatter_kernel(self, op, out_buf: int) -> KernelSpec | None:
        """The update pass of a ``stablehlo.scatter`` (its result already holds the operand): one lane per update
        element computes the result index from the start indices and the window coordinates, skips it when out
        of bounds, and adds atomically (combiner add) or stores (replace). ``scatter_plan`` says which scatters."""
        plan = scatter_plan(op)
        _, indices, updates = op.operands
        ushape, ishape = shape_of(updates), shape_of(indices)
        oshape = shape_of(op.results[0])
        n = math.prod(ushape)
        if n == 0 or math.prod(oshape) == 0:
            return None
        self.mode = "pointwise"
        uidx = delinearize("offs", frozenset("x"), ushape)
        value, vdeps = self.emit(updates, uidx)
        batch = [d for d in range(len(ushape)) if d not in plan["update_window_dims"]]
        ivd = plan["index_vector_dim"]
        starts = {}
        for j, od in enumerate(plan["scatter_dims_to_operand_dims"]):
            coords = [uidx.dims[d] for d in batch]
            if ivd < len(ishape):
                coords.insert(ivd, Dim.const(j))
            starts[od] = self.emit(indices, Index(tuple(coords), ishape))
        window = iter(plan["update_window_dims"])
        dims, conds = [], []
        for k, size in enumerate(oshape):
            inner = Dim.const(0) if k in plan["inserted_window_dims"] else uidx.dims[next(window)]
            if k in starts:
                s, sdeps = starts[k]
                code = self.bind(f"({inner.code} + {s}).to(tl.int64)", inner.deps | sdeps)
                conds.append(f"({code} >= 0) & ({code} < {size})")
                dims.append(Dim(code, inner.deps | sdeps))
            else:
                dims.append(inner)
        addr, _ = linearize(Index(tuple(dims), oshape), oshape)
        mask = " & ".join(["xmask", *conds])
        p = self.param(out_buf)
        dtype = self.buffers[out_buf][1]
        if "x" not in vdeps:  # the same update everywhere (a constant, a scalar): give it the block's shape
            value = self.bind(f"tl.zeros([BLOCK], {TRITON_DTYPE[compute_type(dtype)]}) + {value}", frozenset("x"))
        val = f"{value}.to({TRITON_DTYPE[dtype]})"
        if plan["combiner"] == "add":
            self.line(f"tl.atomic_add({p} + ({addr}), {val}, mask={mask}, sem=\"relaxed\")")
        else:
            self.line(f"tl.store({p} + ({addr}), {val}, mask={mask})")
        block = min(POINTWISE_BLOCK, max(16, 1 << (n - 1).bit_length()))
        head = ["    pid = tl.program_id(0)", "    offs = pid * BLOCK + tl.arange(0, BLOCK)", f"    xmask = offs < {n}"]
        return self._finish(head, {"BLOCK": block}, (math.ceil(n / block), 1, 1), 4 if block >= 512 else 2)

    def _finish(self, head, constexprs, grid, warps) -> KernelSpec:
        params = [f"p{i}" for i in range(len(self.params))]
        cparams = [f"{k}: tl.constexpr" for k in constexprs]
        body = head + self.blocks[0].lines
        src = ("import triton\nimport triton.language as tl\n\n\n"
               f"def {self.name}({', '.join(params + cparams)}):\n" + "\n".join(body) + "\n")
        types = [POINTER_TYPE[self.buffers[b][1]] for b in self.params]
        return KernelSpec(self.name, src, list(self.params), types, constexprs, grid, warps)
