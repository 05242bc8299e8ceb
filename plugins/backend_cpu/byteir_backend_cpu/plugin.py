"""The ``cpu`` target: StableHLO clusters compiled ahead of time to native code for the host CPU.

Generated code: Linalg lowered to loop nests (fused elementwise ops, LLVM -O3); tiling, vectorization and
threads in generated code come next (issue 3). GEMMs (``dot_general`` in f32/f64) go to ``cpu_blas``, which
joins the ``cpu`` target with a higher priority and calls BLAS. It claims only ops whose lowering is checked
against the reference interpreter by ``tests/test_cpu_differential.py``; everything else falls back to
``reference`` and the compile report says so.
"""

from __future__ import annotations

from byteir_core import hookimpl
from byteir_core.interfaces import Backend, Cluster, CompiledCluster, Kernel
from byteir_core.mlir import ir

from .blas import CpuGemmBackend, CpuGemmProvider
from .codegen import ENTRY, compile_to_shared_object
from .provider import CALLEE, FORMAT, CpuProvider

BYTEIR_PLUGIN_API = "1.0"

# cbrt is left out: its math.cbrt has no lowering to LLVM in this MLIR build (ExecutionEngine fails).
ELEMENTWISE = """abs add and atan2 ceil clamp compare convert cosine divide exponential exponential_minus_one
    floor is_finite log log_plus_one logistic maximum minimum multiply negate not or power remainder
    round_nearest_afz round_nearest_even rsqrt select sign sine sqrt subtract tan tanh xor""".split()
STRUCTURAL = """broadcast_in_dim concatenate dot_general iota pad reduce reduce_window reshape reverse slice transpose
    convolution gather dynamic_slice dynamic_update_slice""".split()

CLAIMED = frozenset(f"stablehlo.{n}" for n in ELEMENTWISE + STRUCTURAL)
TYPES = frozenset({"f32", "f64", "f16", "bf16", "i1", "i8", "i16", "i32", "i64"})


def _type_ok(t) -> bool:
    return isinstance(t, ir.RankedTensorType) and t.has_static_shape and str(t.element_type) in TYPES


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
        return 10 if _nested_ok(op) else None

    def compile(self, cluster: Cluster) -> CompiledCluster:
        so, openmp = compile_to_shared_object(cluster)
        return CompiledCluster(CALLEE, Kernel(FORMAT, so, ENTRY), {"openmp": int(openmp)})


@hookimpl
def byteir_register_backends(register):
    register(CpuBackend())
    register(CpuGemmBackend())


@hookimpl
def byteir_register_providers(register):
    register(CpuProvider())
    register(CpuGemmProvider())
