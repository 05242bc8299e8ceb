"""StableHLO cluster -> Linalg -> bufferized loops -> LLVM -> a PIC shared object, ahead of time.

The kernel is ``void _mlir_ciface_main(Memref *in0, ..., Memref *out0, ...)``: results become out-params
(``buffer-results-to-out-params``), so the kernel writes straight into the runtime's buffers.
Object code comes from MLIR's own LLVM (``ExecutionEngine(enable_pic=True).dump_to_object_file``), linked
by the system C compiler into a shared object that the provider loads with ctypes: no JIT at load time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from byteir_core.errors import TargetError
from byteir_core.interfaces import Cluster
from byteir_core.mlir import capture_diagnostics, diagnostics_to_text, ir, module_to_bytecode, run_pipeline

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


def lower_to_llvm_dialect(cluster: Cluster):
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
        _stage(m, "lower-to-llvm", lambda: run_pipeline(m, TO_LLVM))
    return m


def compile_to_shared_object(cluster: Cluster) -> bytes:
    from torch_mlir.execution_engine import ExecutionEngine

    m = lower_to_llvm_dialect(cluster)
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise TargetError("cpu backend needs a C compiler driver (cc or gcc) to link kernels; none on PATH")
    with tempfile.TemporaryDirectory(prefix="byteir-cpu-") as d:
        obj, so = os.path.join(d, "k.o"), os.path.join(d, "k.so")
        with m.context:
            try:
                engine = ExecutionEngine(m, opt_level=OPT_LEVEL, enable_pic=True)
                engine.dump_to_object_file(obj)
            except Exception as e:  # noqa: BLE001
                raise TargetError(f"cpu codegen failed in LLVM: {e}") from None
        r = subprocess.run([cc, "-shared", "-o", so, obj, "-lm"], capture_output=True, text=True)
        if r.returncode != 0:
            raise TargetError(f"linking the cpu kernel failed ({cc}): {r.stderr.strip()}")
        with open(so, "rb") as f:
            return f.read()
