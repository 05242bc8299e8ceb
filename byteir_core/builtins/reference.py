"""Built-in ``reference`` backend and provider: StableHLO clusters run by the StableHLO reference interpreter.

It is the correctness oracle and the last link of every fallback chain, not a fast path (about 1000x
slower than compiled code). The interpreter aborts the whole process (LLVM ERROR) on an op it does not
know, so this backend claims only ops on :data:`INTERPRETER_OPS` with static shapes, recursively through
regions; deprecated ops are legalized by the ``legalize`` pass group before partitioning.

Two things the interpreter gets wrong are worked around at compile time, in the kernel this backend writes:
it reads unsigned start indices (gather, dynamic_slice, dynamic_update_slice, scatter) as signed, so a ``ui8``
255 clamps to 0 instead of ``dim - size`` (:func:`_signed_start_indices` converts them to ``i64`` first), and it
takes no bf16, float8, float4, 4- or 2-bit integer or unsigned arguments from NumPy (they cross the kernel's
boundary as signless bit patterns, or for narrow integers as i8 values).
"""

from __future__ import annotations

from ..dtypes import TensorSpec
from ..errors import ProviderError
from ..hookspecs import hookimpl
from ..interfaces import Backend, Cluster, CompiledCluster, Kernel, Provider
from ..interpreter import Interpreter
from ..mlir import clone_module, ir, stablehlo_api

BYTEIR_PLUGIN_API = "1.0"

CALLEE = "reference.stablehlo"

#: Ops the StableHLO interpreter executes (a broad sample is checked against NumPy in tests/test_reference_ops.py).
INTERPRETER_OPS = frozenset(f"stablehlo.{n}" for n in """
    abs add and atan2 bitcast_convert broadcast_in_dim case cbrt ceil clamp compare complex concatenate
    constant convert convolution cosine count_leading_zeros divide dot_general dynamic_slice
    dynamic_update_slice exponential exponential_minus_one floor gather get_tuple_element if imag iota
    is_finite log log_plus_one logistic map maximum minimum multiply negate not optimization_barrier or pad
    popcnt power real reduce reduce_precision reduce_window remainder reshape return reverse
    round_nearest_afz round_nearest_even rsqrt scatter select select_and_scatter shift_left
    shift_right_arithmetic shift_right_logical sign sine slice sort sqrt subtract tan tanh transpose tuple
    while xor""".split())

_INTERPRETER_TYPES = {"f64", "f32", "f16", "bf16", "i1", "i8", "i16", "i32", "i64",
                      "ui8", "ui16", "ui32", "ui64", "f8E4M3FN", "f8E5M2", "f8E4M3FNUZ", "f8E5M2FNUZ", "i4", "ui4",
                      "f4E2M1FN", "f8E8M0FNU", "i2", "ui2"}

#: narrow types cross the kernel boundary as i8: float8 as bit patterns, 4- and 2-bit integers as values
_AS_I8_BITS = ("f8E4M3FN", "f8E5M2", "f8E4M3FNUZ", "f8E5M2FNUZ", "f8E8M0FNU")
_AS_I8_VALUES = ("i4", "ui4", "i2", "ui2")
#: 4-bit floats cross it as i8 holding their bit pattern as a signed 4-bit value (-8..7), then i4, then bitcast
_AS_I8_NIBBLE = ("f4E2M1FN",)


def _type_ok(t) -> bool:
    if isinstance(t, ir.TupleType):
        return all(_type_ok(t.get_type(i)) for i in range(t.num_types))
    if not isinstance(t, ir.RankedTensorType):
        return False
    return t.has_static_shape and str(t.element_type) in _INTERPRETER_TYPES


def interpreter_supports(op) -> bool:
    """True when the interpreter can run ``op`` (and everything nested in it) without aborting."""
    op = op.operation
    if op.name not in INTERPRETER_OPS:
        return False
    if not all(_type_ok(v.type) for v in list(op.operands) + list(op.results)):
        return False
    for region in op.regions:
        for block in region.blocks:
            if not all(_type_ok(a.type) for a in block.arguments):
                return False
            for inner in block.operations:
                if not interpreter_supports(inner):
                    return False
    return True


#: Ops whose start indices the interpreter clamps (or bounds-checks, scatter) as signed numbers, and which of their
#: operands are start indices.
_START_INDEX_OPERANDS = {
    "stablehlo.dynamic_slice": lambda op: range(1, len(op.operands)),
    "stablehlo.dynamic_update_slice": lambda op: range(2, len(op.operands)),
    "stablehlo.gather": lambda op: (1,),
    "stablehlo.scatter": lambda op: (len(op.operands) // 2,),  # N inputs, the indices, N updates
}


def _unsigned_index_uses(root) -> list:
    """(op, operand position) of every unsigned start index under ``root`` (regions included)."""
    found = []
    for region in root.regions:
        for block in region.blocks:
            for op in block.operations:
                op = op.operation
                which = _START_INDEX_OPERANDS.get(op.name)
                if which is not None:
                    for k in which(op):
                        t = op.operands[k].type
                        if isinstance(t, ir.RankedTensorType) and str(t.element_type).startswith("ui"):
                            found.append((op, k))
                found.extend(_unsigned_index_uses(op))
    return found


def _signed_start_indices(module) -> bool:
    """Rewrite every unsigned start index as an ``i64`` of the same value, in place; True when there was one.

    The interpreter reads a ``uiN`` start index as the signed ``iN`` of the same bits, so 255 in ``ui8`` clamps
    to 0 where the spec says ``dim - size``. ``convert`` to ``i64`` keeps the value of ``ui8``..``ui32``; a
    ``ui64`` is first limited to ``2**63 - 1`` (unsigned ``minimum``), which clamps, and falls outside for
    scatter, exactly as any larger value does."""
    uses = _unsigned_index_uses(module.operation)
    with module.context:
        i64 = ir.IntegerType.get_signless(64)
        for op, k in uses:
            v = op.operands[k]
            t = ir.RankedTensorType(v.type)
            with op.location, ir.InsertionPoint(op):
                if str(t.element_type) == "ui64":
                    cap = ir.DenseElementsAttr.get_splat(t, ir.IntegerAttr.get(t.element_type, 2 ** 63 - 1))
                    c = ir.Operation.create("stablehlo.constant", results=[t], attributes={"value": cap}).result
                    v = ir.Operation.create("stablehlo.minimum", results=[t], operands=[v, c]).result
                wide = ir.RankedTensorType.get(t.shape, i64)
                op.operands[k] = ir.Operation.create("stablehlo.convert", results=[wide], operands=[v]).result
    return bool(uses)


def _boundary_type(spec: TensorSpec) -> str:
    """The type an argument or result crosses the kernel boundary as: bf16 as i16 and ``uiN`` as ``iN`` bit
    patterns (NumPy cannot hand bf16 to MLIR attributes, and the interpreter refuses unsigned ones)."""
    if spec.dtype == "bf16":
        return spec.tensor_type().replace("bf16", "i16")
    if spec.dtype in _AS_I8_BITS or spec.dtype in _AS_I8_VALUES or spec.dtype in _AS_I8_NIBBLE:
        return spec.tensor_type().replace(spec.dtype, "i8")
    if spec.dtype.startswith("ui"):
        return spec.tensor_type().replace(spec.dtype, spec.dtype[1:])
    return spec.tensor_type()


def _boundary_op(spec: TensorSpec) -> str:
    return "stablehlo.convert" if spec.dtype in _AS_I8_VALUES else "stablehlo.bitcast_convert"


def _boundary_in(name: str, arg: str, spec: TensorSpec) -> list[str]:
    """Lines turning boundary value ``arg`` into ``name`` of the argument's own type."""
    b, t = _boundary_type(spec), spec.tensor_type()
    if spec.dtype in _AS_I8_NIBBLE:
        i4 = t.replace(spec.dtype, "i4")
        return [f"{name}n = stablehlo.convert {arg} : ({b}) -> {i4}",
                f"{name} = stablehlo.bitcast_convert {name}n : ({i4}) -> {t}"]
    return [f"{name} = {_boundary_op(spec)} {arg} : ({b}) -> {t}"]


def _boundary_out(name: str, res: str, spec: TensorSpec) -> list[str]:
    """Lines turning result ``res`` into ``name`` of its boundary type."""
    b, t = _boundary_type(spec), spec.tensor_type()
    if spec.dtype in _AS_I8_NIBBLE:
        i4 = t.replace(spec.dtype, "i4")
        return [f"{name}n = stablehlo.bitcast_convert {res} : ({t}) -> {i4}",
                f"{name} = stablehlo.convert {name}n : ({i4}) -> {b}"]
    return [f"{name} = {_boundary_op(spec)} {res} : ({t}) -> {b}"]


def _needs_boundary(spec: TensorSpec) -> bool:
    return _boundary_type(spec) != spec.tensor_type()


def _boundary_wrapper(cluster: Cluster, module) -> str:
    """The cluster's text (``module``) with bf16 and unsigned arguments/results passed as signless bit patterns.

    The kernel takes and returns them as ``i16``/``iN`` and bitcasts at its boundary; the original ``@main``
    becomes ``@__inner``.
    """
    boundary = _boundary_type
    ins, outs = cluster.inputs, cluster.outputs
    lines, call_args = [], []
    for i, s in enumerate(ins):
        if _needs_boundary(s):
            lines += _boundary_in(f"%in{i}", f"%arg{i}", s)
            call_args.append(f"%in{i}")
        else:
            call_args.append(f"%arg{i}")
    results = [f"%r#{i}" for i in range(len(outs))] if len(outs) > 1 else ["%r"]
    lines.append(f"%r{':' + str(len(outs)) if len(outs) > 1 else ''} = func.call @__inner({', '.join(call_args)})"
                 f" : ({', '.join(s.tensor_type() for s in ins)}) -> ({', '.join(s.tensor_type() for s in outs)})")
    rets = []
    for i, s in enumerate(outs):
        if _needs_boundary(s):
            lines += _boundary_out(f"%out{i}", results[i], s)
            rets.append(f"%out{i}")
        else:
            rets.append(results[i])
    lines.append(f"return {', '.join(rets)} : {', '.join(boundary(s) for s in outs)}")
    args = ", ".join(f"%arg{i}: {boundary(s)}" for i, s in enumerate(ins))
    wrapper = (f"func.func @main({args}) -> ({', '.join(boundary(s) for s in outs)}) {{\n  "
               + "\n  ".join(lines) + "\n}\n")
    inner = str(module).replace("func.func @main(", "func.func private @__inner(", 1).rstrip()
    return inner[:-1] + wrapper + "}\n"  # both functions inside the one module


class ReferenceBackend(Backend):
    name = "reference"
    device = "cpu"
    description = "StableHLO reference interpreter: the correctness oracle and last fallback (slow)"

    def claims(self, op) -> int | None:
        return 0 if interpreter_supports(op) else None

    def compile(self, cluster: Cluster) -> CompiledCluster:
        module = cluster.module
        if _unsigned_index_uses(module.operation):  # rewritten on a copy: the driver's cluster stays as it is
            module = clone_module(module)
            _signed_start_indices(module)
        if any(_needs_boundary(s) for s in cluster.inputs + cluster.outputs):
            text = _boundary_wrapper(cluster, module)
        else:
            text = str(module)
        blob = stablehlo_api.serialize_portable_artifact_str(text, stablehlo_api.get_current_version())
        return CompiledCluster(CALLEE, Kernel("stablehlo-portable", blob, "main"))


class ReferenceProvider(Provider):
    name = "reference"
    device = "cpu"
    callees = (CALLEE,)
    description = "runs stablehlo-portable kernels in the StableHLO interpreter"

    def __init__(self):
        self._interpreter = Interpreter()

    def load(self, callee, kernel, attrs):
        if kernel is None or kernel.format != "stablehlo-portable":
            raise ProviderError(f"{callee} needs a stablehlo-portable kernel, got "
                                f"{kernel.format if kernel else 'none'}")
        return self._interpreter.load(kernel.data, callee)


@hookimpl
def byteir_register_backends(register):
    register(ReferenceBackend())


@hookimpl
def byteir_register_providers(register):
    register(ReferenceProvider())
