"""The ``cpu`` target: StableHLO clusters compiled ahead of time to native code for the host CPU.

Generated code: Linalg lowered to loop nests (fused elementwise ops, LLVM -O3); tiling, vectorization and
threads in generated code come next (issue 3). GEMMs (``dot_general`` in f32/f64) go to ``cpu_blas``, which
joins the ``cpu`` target with a higher priority and calls BLAS. It claims only ops whose lowering is checked
against the reference interpreter by ``tests/test_cpu_differential.py`` and ``tests/test_cpu_coverage.py``;
everything else falls back to ``reference`` and the compile report says so. Control flow (``while``, ``if``,
``case``) becomes SCF before code generation (``control_flow.py``); ``cbrt``, ``batch_norm_inference``,
``batch_norm_training`` and ``optimization_barrier`` are expanded (``expand.py``). ``sort``, ``scatter`` and
``select_and_scatter`` with recognized regions (comparator, update computation) go to ``cpu_host``
(``hostops.py``), which joins the target and runs them with NumPy; a scatter inside a while/if/case region
becomes a loop in generated code (``scatter_loops.py``).
"""

from __future__ import annotations

from byteir_core import hookimpl
from byteir_core.interfaces import Backend, Cluster, CompiledCluster, Kernel
from byteir_core.mlir import ir

from .blas import CpuGemmBackend, CpuGemmProvider
from .codegen import ENTRY, start_shared_object
from .hostops import CpuHostOpsBackend, CpuHostOpsProvider, scatter_plan
from .prepare import prepare_cluster
from .provider import CALLEE, FORMAT, CpuProvider

BYTEIR_PLUGIN_API = "1.0"

# cbrt, batch_norm_inference/training and optimization_barrier are expanded before code generation (expand.py):
# math.cbrt has no LLVM lowering in this MLIR build, and stablehlo-legalize-to-linalg has no pattern for the others.
ELEMENTWISE = """abs add and atan2 cbrt ceil clamp compare convert cosine count_leading_zeros divide exponential
    exponential_minus_one floor is_finite log log_plus_one logistic maximum minimum multiply negate not or popcnt
    power reduce_precision remainder round_nearest_afz round_nearest_even rsqrt select shift_left
    shift_right_arithmetic shift_right_logical sign sine sqrt subtract tan tanh xor""".split()
STRUCTURAL = """broadcast_in_dim concatenate dot_general iota pad reduce reduce_window reshape reverse slice transpose
    convolution gather dynamic_slice dynamic_update_slice bitcast_convert batch_norm_inference
    batch_norm_training optimization_barrier""".split()
# Lowered to SCF before code generation (control_flow.py); their regions may hold any op claimed here.
CONTROL_FLOW = ("stablehlo.while", "stablehlo.if", "stablehlo.case")
# Only in control-flow regions: constants and the terminator.
REGION_ONLY = ("stablehlo.constant", "stablehlo.return")

# scatter: also claimed by cpu_host (NumPy, priority 20), so generated code gets it only inside control flow.
CLAIMED = (frozenset(f"stablehlo.{n}" for n in ELEMENTWISE + STRUCTURAL) | frozenset(CONTROL_FLOW)
           | {"stablehlo.scatter"})
TYPES = frozenset({"f32", "f64", "f16", "bf16", "i1", "i8", "i16", "i32", "i64"})


def _type_ok(t) -> bool:
    return isinstance(t, ir.RankedTensorType) and t.has_static_shape and str(t.element_type) in TYPES


def _is_float(t) -> bool:
    return str(ir.RankedTensorType(t).element_type) in ("f32", "f64", "f16", "bf16")


def _nested_ok(op) -> bool:
    """Region bodies (reduce's combiner) may hold only elementwise ops on supported types."""
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                inner = inner.operation
                if inner.name == "stablehlo.return":
                    continue
                if inner.name.removeprefix("stablehlo.") not in ELEMENTWISE or not _nested_ok(inner):
                    return False
                if not all(_type_ok(v.type) for v in list(inner.operands) + list(inner.results)):
                    return False
    return True


class CpuBackend(Backend):
    name = "cpu"
    device = "cpu"
    description = "ahead-of-time native code for the host CPU (Linalg -> LLVM)"

    def claims(self, op):
        if op.name not in CLAIMED:
            return None
        if not all(_type_ok(v.type) for v in list(op.operands) + list(op.results)):
            return None
        if op.name in CONTROL_FLOW:
            return 10 if self._regions_ok(op) else None
        if op.name == "stablehlo.scatter":  # a loop in generated code (scatter_loops.py); cpu_host outbids it
            return 10 if scatter_plan(op) is not None else None
        if op.name.startswith("stablehlo.batch_norm_") and not _is_float(op.results[0].type):
            return None
        if op.name == "stablehlo.bitcast_convert" and "i1" in {str(v.type.element_type) for v in
                                                              (op.operands[0], op.results[0])}:
            return None
        return 10 if _nested_ok(op) else None

    def _regions_ok(self, op) -> bool:
        """Every op in a while/if/case region is one this backend claims (recursively), or a constant."""
        for region in op.regions:
            for block in region.blocks:
                if not all(_type_ok(a.type) for a in block.arguments):
                    return False
                for inner in block.operations:
                    inner = inner.operation
                    if inner.name in REGION_ONLY:
                        if not all(_type_ok(v.type) for v in list(inner.operands) + list(inner.results)):
                            return False
                    elif self.claims(inner) is None:
                        return False
        return True

    def compile(self, cluster: Cluster) -> CompiledCluster:
        # the shared object builds on the pool while the driver goes on to the next cluster
        so, openmp, isa = start_shared_object(prepare_cluster(cluster))
        return CompiledCluster(CALLEE, Kernel(FORMAT, so, ENTRY), {"openmp": int(openmp), "isa": ",".join(isa)})


@hookimpl
def byteir_register_backends(register):
    register(CpuBackend())
    register(CpuGemmBackend())
    register(CpuHostOpsBackend())


@hookimpl
def byteir_register_providers(register):
    register(CpuProvider())
    register(CpuGemmProvider())
    register(CpuHostOpsProvider())
