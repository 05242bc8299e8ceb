"""StableHLO cluster -> Linalg -> bufferized loops -> LLVM -> a PIC shared object, ahead of time.

The kernel is ``void _mlir_ciface_main(Memref *in0, ..., Memref *out0, ...)``: results become out-params
(``buffer-results-to-out-params``), so the kernel writes straight into the runtime's buffers.
Object code comes from MLIR's own LLVM (``ExecutionEngine(enable_pic=True).dump_to_object_file``), linked
by the system C compiler into a shared object that the provider loads with ctypes: no JIT at load time.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile

from byteir_core.errors import TargetError
from byteir_core.interfaces import Cluster
from byteir_core.mlir import capture_diagnostics, diagnostics_to_text, ir, module_to_bytecode, run_pipeline

from .provider import openmp_library

# Linalg on tensors, with elementwise producers fused into their consumers.
TO_LINALG = ("func.func(chlo-legalize-to-stablehlo),func.func(stablehlo-legalize-to-linalg),"
             "func.func(linalg-fuse-elementwise-ops),canonicalize,cse")

# One-shot bufferization through the transform op, because it can make strided copies linalg.copy
# (the pass form emits memref.copy, which needs a runtime library the wheel lacks: FACTS.md section 1).
BUFFERIZE = """module attributes {transform.with_named_sequence} {
  transform.named_sequence @bufferize(%root: !transform.any_op {transform.consumed}) {
    %0 = transform.bufferization.one_shot_bufferize %root {bufferize_function_boundaries = true,
           function_boundary_type_conversion = 1 : i32, memcpy_op = "linalg.copy"}
           : (!transform.any_op) -> !transform.any_op
    transform.yield
  }
}"""

AFTER_BUFFERIZE = ("buffer-results-to-out-params{hoist-static-allocs=true modify-public-functions=true},"
                   "buffer-deallocation-pipeline,canonicalize")

TO_LLVM = ("func.func(convert-linalg-to-loops),expand-strided-metadata,lower-affine,convert-scf-to-cf,"
           "convert-to-llvm,reconcile-unrealized-casts")

# Multithreaded: parallel loops become OpenMP work-sharing loops calling the LLVM/Intel OpenMP runtime
# (__kmpc_*), which the intel-openmp wheel ships as libiomp5.
# memref.alloca_scope (which wraps each OpenMP loop body) is lowered before scf-to-cf splits that body into
# several blocks, which the op does not allow.
TO_LLVM_OPENMP = ("func.func(convert-linalg-to-parallel-loops),convert-scf-to-openmp,expand-strided-metadata,"
                  "finalize-memref-to-llvm,lower-affine,convert-scf-to-cf,convert-to-llvm,reconcile-unrealized-casts")

#: Kernels whose largest operand or result has fewer elements than this stay single-threaded: forking costs
#: microseconds.
PARALLEL_MIN_ELEMENTS = 1 << 15

ENTRY = "main"
OPT_LEVEL = 3


def _stage(module, name: str, fn) -> None:
    with capture_diagnostics(module.context) as diags:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            detail = diagnostics_to_text(e) if isinstance(e, ir.MLIRError) else str(e)
            extra = "; ".join(diags)
            raise TargetError(f"cpu codegen failed at {name}: {detail}{'; ' + extra if extra else ''}") from None


def wants_threads(cluster: Cluster) -> bool:
    """OpenMP kernels are opt-in (BYTEIR_CPU_OPENMP=1): measured on 2 cores, their thread pool fights NumPy's
    OpenBLAS pool (BERT: 9.2 ms serial, 34.6 ms with KMP_BLOCKTIME=0, 10.0 ms with the default 200 ms spin).
    One pool shared by GEMMs and generated kernels is the way to turn them on by default."""
    if os.environ.get("BYTEIR_CPU_OPENMP") != "1" or os.environ.get("BYTEIR_NUM_THREADS") == "1":
        return False
    if openmp_library() is None:
        return False
    return max((math.prod(s.shape) for s in cluster.inputs + cluster.outputs), default=0) >= PARALLEL_MIN_ELEMENTS


def lower_to_llvm_dialect(cluster: Cluster, threads: bool = False):
    """A copy of the cluster module, lowered to the LLVM dialect with a C interface for ``@main``."""
    ctx = cluster.module.context
    with ctx, ir.Location.unknown():
        m = ir.Module.parse(module_to_bytecode(cluster.module))
        _stage(m, "stablehlo-to-linalg", lambda: run_pipeline(m, TO_LINALG))

        def bufferize():
            from torch_mlir.dialects.transform import interpreter

            # Inputs are the runtime's buffers (often the caller's arrays): never update them in place.
            for op in m.body.operations:
                if op.operation.name == "func.func":
                    n = len(op.regions[0].blocks[0].arguments)
                    no_write = ir.DictAttr.get({"bufferization.writable": ir.BoolAttr.get(False)})
                    op.attributes["arg_attrs"] = ir.ArrayAttr.get([no_write] * n)
            td = ir.Module.parse(BUFFERIZE)
            interpreter.apply_named_sequence(m, td.body.operations[0], td)

        _stage(m, "bufferize", bufferize)
        _stage(m, "buffer-results-to-out-params", lambda: run_pipeline(m, AFTER_BUFFERIZE))
        for op in m.body.operations:
            if op.operation.name == "func.func":
                op.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        _stage(m, "lower-to-llvm", lambda: run_pipeline(m, TO_LLVM_OPENMP if threads else TO_LLVM))
    return m


def compile_to_shared_object(cluster: Cluster) -> tuple[bytes, bool]:
    """(shared object, whether it calls the OpenMP runtime)."""
    from torch_mlir.execution_engine import ExecutionEngine

    threads = wants_threads(cluster)
    m = lower_to_llvm_dialect(cluster, threads)
    omp = openmp_library() if threads else None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise TargetError("cpu backend needs a C compiler driver (cc or gcc) to link kernels; none on PATH")
    with tempfile.TemporaryDirectory(prefix="byteir-cpu-") as d:
        obj, so = os.path.join(d, "k.o"), os.path.join(d, "k.so")
        with m.context:
            try:
                engine = ExecutionEngine(m, opt_level=OPT_LEVEL, enable_pic=True, shared_libs=[omp] if omp else [])
                engine.dump_to_object_file(obj)
            except Exception as e:  # noqa: BLE001
                raise TargetError(f"cpu codegen failed in LLVM: {e}") from None
        # libiomp5 is named (DT_NEEDED) but found at run time by soname: the provider loads it first.
        libs = ["-L" + os.path.dirname(omp), "-liomp5"] if omp else []
        r = subprocess.run([cc, "-shared", "-o", so, obj, "-lm", *libs], capture_output=True, text=True)
        if r.returncode != 0:
            raise TargetError(f"linking the cpu kernel failed ({cc}): {r.stderr.strip()}")
        with open(so, "rb") as f:
            return f.read(), bool(omp)
