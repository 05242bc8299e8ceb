"""StableHLO cluster -> Linalg -> bufferized loops -> LLVM -> a PIC shared object, ahead of time.

The kernel is ``void _mlir_ciface_main(Memref *in0, ..., Memref *out0, ...)``: results become out-params
(``buffer-results-to-out-params``), so the kernel writes straight into the runtime's buffers.
MLIR translates the LLVM dialect to LLVM IR; llvmlite's LLVM optimizes it for the target CPU (``BYTEIR_CPU``,
default the compiling machine's: AVX-512/AVX2 as it has them) with the loop and SLP vectorizers, vector math
going to glibc's libmvec (f32 exp to an inlined polynomial); the object is linked by the system C compiler into a shared object that the
provider loads with ctypes: no JIT at load time. The ISA extensions the code may use travel with the kernel
and the provider refuses to load it on a CPU without them; beyond libc, libm, libmvec and the OpenMP runtime
the kernel calls only what it carries (:mod:`.portability`).
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache

from byteir_core.errors import TargetError
from byteir_core.interfaces import Cluster
from byteir_core.mlir import capture_diagnostics, diagnostics_to_text, ir, module_to_bytecode, run_pipeline, walk_ops

from .gomp_shim import shim_object
from .portability import BF16_AS_F32, check_portable, expand_bf16_conversions, link_helpers
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

# Matrix products the cpu_blas backend does not take (inside a while loop: an LSTM's step) become loops whose
# innermost one is the reduction, reading B down a column, which LLVM cannot vectorize. Swapping it with the
# last parallel loop (i, k, j) streams a row of B into a row of C, 16 lanes at a time. Measured on a Keras LSTM
# (128 units, 32 steps, batch 8, 2 layers; Zen 4, 2 cores): 128 ms -> 3.0 ms a call.
GENERALIZE_MATMULS = """module attributes {transform.with_named_sequence} {
  transform.named_sequence @generalize(%root: !transform.any_op {transform.readonly}) {
    %mm = transform.structured.match ops{["linalg.matmul", "linalg.batch_matmul"]} in %root
            : (!transform.any_op) -> !transform.any_op
    %g = transform.structured.generalize %mm : (!transform.any_op) -> !transform.any_op
    transform.yield
  }
}"""
INTERCHANGE = """module attributes {transform.with_named_sequence} {
  transform.named_sequence @interchange(%root: !transform.any_op {transform.readonly}) {
    %ops = transform.structured.match attributes{byteir.interchange} in %root : (!transform.any_op) -> !transform.any_op
    %i = transform.structured.interchange %ops iterator_interchange = PERM : (!transform.any_op) -> !transform.any_op
    transform.yield
  }
}"""
INTERCHANGE_ATTR = "byteir.interchange"


def _contraction_loops(op) -> int | None:
    """The loop count of a ``linalg.generic`` that multiplies and accumulates with its one reduction loop
    innermost and its output's last dimension on the last parallel loop (so that loop is the one to make
    innermost); else None."""
    iters = [str(a).strip('"').split("<")[-1].rstrip(">") for a in op.attributes["iterator_types"]]
    n = len(iters)
    if n < 2 or iters[-1] != "reduction" or iters.count("reduction") != 1:
        return None
    maps = [ir.AffineMapAttr(a).value for a in op.attributes["indexing_maps"]]
    last = [str(mp.results[-1]) if mp.results else "" for mp in maps]
    # the output and some input run along the last parallel loop (``B[k, j]``); with every input contiguous
    # along the reduction instead (``x @ w.T``), the reduction innermost is the better order and stays
    if last[-1] != f"d{n - 2}" or f"d{n - 2}" not in last[:-1]:
        return None
    body = {o.operation.name for o in op.regions[0].blocks[0].operations}
    if not ({"arith.mulf", "arith.addf"} <= body or {"arith.muli", "arith.addi"} <= body):
        return None
    return n


def interchange_contractions(m) -> None:
    """Named matrix products generalized, then every contraction loop nest as :func:`_contraction_loops`
    describes gets its last two loops swapped (the transform dialect's ``interchange``)."""
    from torch_mlir.dialects.transform import interpreter

    if any(op.name in ("linalg.matmul", "linalg.batch_matmul") for op in walk_ops(m)):
        td = ir.Module.parse(GENERALIZE_MATMULS)
        interpreter.apply_named_sequence(m, td.body.operations[0], td)
    by_loops: dict[int, list] = {}
    for op in walk_ops(m):
        if op.name == "linalg.generic":
            n = _contraction_loops(op)
            if n is not None:
                by_loops.setdefault(n, []).append(op)
    for n, ops in by_loops.items():
        for op in ops:
            op.attributes[INTERCHANGE_ATTR] = ir.UnitAttr.get()
        perm = list(range(n - 2)) + [n - 1, n - 2]
        td = ir.Module.parse(INTERCHANGE.replace("PERM", str(perm)))
        interpreter.apply_named_sequence(m, td.body.operations[0], td)
        for op in walk_ops(m):
            if INTERCHANGE_ATTR in op.attributes:
                del op.attributes[INTERCHANGE_ATTR]


AFTER_BUFFERIZE = ("buffer-results-to-out-params{hoist-static-allocs=true modify-public-functions=true},"
                   "buffer-deallocation-pipeline,canonicalize")

TO_LLVM = ("func.func(convert-linalg-to-loops),expand-strided-metadata,lower-affine,convert-scf-to-cf,"
           "convert-to-llvm,reconcile-unrealized-casts")

# Multithreaded: parallel loops become OpenMP work-sharing loops calling the LLVM OpenMP runtime's entry points
# (__kmpc_*), which each such kernel carries, written on GNU OpenMP (gomp_shim.py).
# memref.alloca_scope (which wraps each OpenMP loop body) is lowered before scf-to-cf splits that body into
# several blocks, which the op does not allow.
TO_LLVM_OPENMP = ("func.func(convert-linalg-to-parallel-loops),convert-scf-to-openmp,expand-strided-metadata,"
                  "finalize-memref-to-llvm,lower-affine,convert-scf-to-cf,convert-to-llvm,reconcile-unrealized-casts")

#: ``BYTEIR_CPU_CHECKS=1``: every memref access and view of a generated kernel is checked against its bounds
#: (MLIR's runtime op verification, run on the loops before they become LLVM); a failed check writes the op, its
#: location and the kernel to stderr and aborts. For hunting wrong results (byteir_core/runtime/debug.py).
CHECKS_ENV = "BYTEIR_CPU_CHECKS"
CHECKS = "generate-runtime-verification"


def wants_checks() -> bool:
    return os.environ.get(CHECKS_ENV, "") not in ("", "0")


def wants_poisoned_temporaries() -> bool:
    """A checked build, or ``BYTEIR_POISON=1`` when compiling: the kernels' own temporaries (``memref.alloc``,
    ``memref.alloca``) start as NaN (floats) or -1 (integers), as the runtime's poisoned arenas do."""
    return wants_checks() or os.environ.get("BYTEIR_POISON", "") not in ("", "0")


def _poison_temporaries(m) -> None:
    """Fill every buffer a kernel allocates for itself right after its allocation: floats with the quiet NaN
    (a NaN with a payload would print as ``nan(0x...)``, which :func:`_older_float_syntax` does not read),
    integers with -1."""
    from torch_mlir.dialects import arith, linalg

    for op in [op for op in walk_ops(m) if op.name in ("memref.alloc", "memref.alloca")]:
        el = ir.MemRefType(op.results[0].type).element_type
        with ir.InsertionPoint.after(op), op.location:
            if isinstance(el, (ir.IntegerType, ir.IndexType)):
                v = arith.constant(el, -1)
            elif str(el) in ("f16", "bf16", "f32", "f64"):
                v = arith.constant(el, ir.FloatAttr.get(el, float("nan")))
            else:
                continue
            linalg.fill(v, outs=[op.results[0]])


def parallel_rows(module) -> None:
    """Each outermost ``scf.parallel`` of n > 1 dimensions becomes one over its first n - 1 (the rows: OpenMP
    collapses them into one work-sharing loop) around an ``scf.for`` over the last, and a parallel loop nested in
    another becomes ``scf.for`` loops. Collapsed with the rows, the innermost loop's index would be a division
    and a remainder of the collapsed one at every element, and LLVM would not vectorize it (a scalar ``expf``
    per element); nested, it would start a parallel region per iteration of the outer loop."""
    def loops(op, dims, body_ip_op):
        """scf.for loops over ``dims`` of the parallel ``op``, created before ``body_ip_op``: their indices."""
        ivs = []
        ip_op = body_ip_op
        lbs, ubs, steps, _ = _parallel_bounds(op)
        for d in dims:
            with ir.InsertionPoint(ip_op), op.location:
                f = ir.Operation.create("scf.for", operands=[lbs[d], ubs[d], steps[d]], regions=1)
                block = f.regions[0].blocks.append(ir.IndexType.get())
                with ir.InsertionPoint(block):
                    ip_op = ir.Operation.create("scf.yield")
            ivs.append(block.arguments[0])
        return ivs, ip_op

    def move_body(op, ivs, before):
        block = op.regions[0].blocks[0]
        ops = [o.operation for o in block.operations]
        for o in ops[:-1]:  # the terminator (scf.reduce) stays
            o.move_before(before)
        for arg, iv in zip(block.arguments, ivs):
            arg.replace_all_uses_with(iv)
        op.erase()

    def rewrite(op, nested: bool) -> None:
        for region in op.regions:
            for block in region.blocks:
                for inner in list(block.operations):
                    inner = inner.operation
                    rewrite(inner, nested or op.name == "scf.parallel")
        if op.name != "scf.parallel" or _parallel_bounds(op)[3]:
            return
        n = len(op.regions[0].blocks[0].arguments)
        if nested:
            ivs, ip = loops(op, range(n), op)
            move_body(op, ivs, ip)
        elif n > 1:
            lbs, ubs, steps, _ = _parallel_bounds(op)
            with ir.InsertionPoint(op), op.location:
                rows = ir.Operation.create(
                    "scf.parallel", operands=[*lbs[:-1], *ubs[:-1], *steps[:-1]], regions=1,
                    attributes={"operandSegmentSizes": ir.DenseI32ArrayAttr.get([n - 1, n - 1, n - 1, 0])})
                block = rows.regions[0].blocks.append(*[ir.IndexType.get()] * (n - 1))
                with ir.InsertionPoint(block):
                    reduce = ir.Operation.create("scf.reduce")
            (last,), ip = loops(op, [n - 1], reduce)
            move_body(op, [*block.arguments, last], ip)

    for fn in module.body.operations:
        rewrite(fn.operation, False)


def _parallel_bounds(op):
    """(lower bounds, upper bounds, steps, init values) of an ``scf.parallel``."""
    sizes = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
    ops = list(op.operands)
    out, at = [], 0
    for k in sizes:
        out.append(ops[at:at + k])
        at += k
    return out


def _split_after_loops(pipeline: str) -> tuple[str, str]:
    """(linalg to loops, the rest): the checks go between, where every index is a ``memref.load``/``store``."""
    loops, rest = pipeline.split(",", 1)
    assert loops.startswith("func.func(convert-linalg-to-"), pipeline
    return loops, rest


#: In a checked kernel: the shapes of its operands (``4x8;;16``: inputs then outputs, ``;``-separated), which the
#: provider compares with the arrays it is handed (the kernel reads its sizes as constants: a smaller buffer
#: would be read and written past its end, and the bounds checks would not see it).
SHAPES_SYMBOL = "byteir_operand_shapes"


def _shapes_global(cluster: Cluster) -> str:
    text = ";".join("x".join(map(str, s.shape)) for s in (*cluster.inputs, *cluster.outputs))
    return f'\n@{SHAPES_SYMBOL} = constant [{len(text) + 1} x i8] c"{text}\\00"\n'


def _name_kernel_in_checks(m, name: str) -> None:
    for op in walk_ops(m):
        if op.name == "cf.assert":
            msg = ir.StringAttr(op.attributes["msg"]).value
            op.attributes["msg"] = ir.StringAttr.get(f"byteir cpu kernel {name} ({CHECKS_ENV}=1): {msg}")


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
    """Kernels touching >= PARALLEL_MIN_ELEMENTS elements run their outer parallel loops on GNU OpenMP, the pool
    oneDNN and PyTorch run on (``BYTEIR_CPU_OPENMP=0`` or ``BYTEIR_NUM_THREADS=1``: single-threaded). Once the
    oneDNN GEMMs and these kernels shared PyTorch's pool, turning them on measured faster everywhere (AMD EPYC
    Zen 4, 2 cores): BERT 5.8-6.3 -> 5.2-5.6 ms, a LLaMA training step 45.6 -> 44-46 ms and its inference 11.6
    -> 10.8 ms; earlier, on a pool of their own beside OpenBLAS's, they made BERT slower."""
    if os.environ.get("BYTEIR_CPU_OPENMP", "1") == "0" or os.environ.get("BYTEIR_NUM_THREADS") == "1":
        return False
    if openmp_library() is None:
        return False
    return max((math.prod(s.shape) for s in cluster.inputs + cluster.outputs), default=0) >= PARALLEL_MIN_ELEMENTS


def _mark_reductions_reassociable(m) -> None:
    """Let LLVM vectorize reductions: the combiner of every reducing ``linalg.generic`` (the op that folds the
    accumulator, i.e. uses an output block argument and is yielded) may be reassociated. Only those ops get
    the flag: elsewhere ``reassoc`` would let LLVM rewrite ``(x + c) - c`` and the like."""
    flag = ir.Attribute.parse("#arith.fastmath<reassoc>")
    for op in walk_ops(m):
        if op.name != "linalg.generic" or "reduction" not in str(op.attributes["iterator_types"]):
            continue
        n_out = len(op.results) if op.results else None
        block = op.regions[0].blocks[0]
        args = list(block.arguments)
        if n_out is None:  # on buffers: count the outputs from the operand segments
            n_out = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))[1]
        outs = args[len(args) - n_out:]
        term = block.operations[len(block.operations) - 1]
        for v in term.operands:
            owner = v.owner
            if not isinstance(owner, ir.Operation) and hasattr(owner, "operation"):
                owner = owner.operation
            if not isinstance(owner, ir.Operation):
                continue
            if owner.name in _REASSOC_OPS and any(o in outs for o in owner.operands):
                owner.attributes["fastmath"] = flag


_REASSOC_OPS = frozenset({"arith.addf", "arith.mulf", "arith.maximumf", "arith.minimumf", "arith.maxnumf",
                          "arith.minnumf"})


def _distinct_results(m) -> None:
    """Each result of ``@main`` its own buffer: a buffer returned again (a cluster whose two results are one
    value, e.g. an LSTM's last output and its final state) is copied into a fresh one for the repeat.
    ``buffer-results-to-out-params{hoist-static-allocs}`` would otherwise replace the one allocation by two
    out-parameters and crash the process."""
    for op in m.body.operations:
        if op.operation.name != "func.func":
            continue
        block = op.regions[0].blocks[0]
        term = block.operations[len(block.operations) - 1]
        seen = set()
        for k, v in enumerate(list(term.operands)):
            key = v.get_name() if hasattr(v, "get_name") else id(v)
            plain = None
            if isinstance(v.type, ir.MemRefType):
                t = ir.MemRefType(v.type)
                plain = ir.MemRefType.get(t.shape, t.element_type)
            if key in seen and plain is not None and str(plain) == str(v.type):  # identity layout: a copy fits
                with ir.InsertionPoint(term), term.location:
                    fresh = ir.Operation.create(
                        "memref.alloc", results=[plain],
                        attributes={"operandSegmentSizes": ir.DenseI32ArrayAttr.get([0, 0]),
                                    "alignment": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 64)}).result
                    ir.Operation.create("memref.copy", operands=[v, fresh])
                term.operands[k] = fresh
            seen.add(key)


def _mark_noalias(m) -> None:
    """The kernel's buffers never overlap (the runtime hands each operand its own buffer): say so, so LLVM
    keeps accumulators in registers and vectorizes without run-time overlap checks."""
    for op in m.body.operations:
        if op.operation.name != "func.func":
            continue
        args = op.regions[0].blocks[0].arguments
        attrs = [ir.DictAttr.get({"llvm.noalias": ir.UnitAttr.get()}) if isinstance(a.type, ir.MemRefType)
                 else ir.DictAttr.get({}) for a in args]
        op.attributes["arg_attrs"] = ir.ArrayAttr.get(attrs)


def lower_to_llvm_dialect(cluster: Cluster, threads: bool = False, checks: bool = False, poison: bool = False):
    """A copy of the cluster module, lowered to the LLVM dialect with a C interface for ``@main`` (with bounds
    checks: :data:`CHECKS_ENV`; with its temporaries poisoned: :func:`wants_poisoned_temporaries`)."""
    ctx = cluster.module.context
    with ctx, ir.Location.unknown():
        m = ir.Module.parse(module_to_bytecode(cluster.module))
        _stage(m, "stablehlo-to-linalg", lambda: run_pipeline(m, TO_LINALG))
        _stage(m, "interchange-contractions", lambda: interchange_contractions(m))

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
            _distinct_results(m)

        _stage(m, "bufferize", bufferize)
        _stage(m, "buffer-results-to-out-params", lambda: run_pipeline(m, AFTER_BUFFERIZE))
        for op in m.body.operations:
            if op.operation.name == "func.func":
                op.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        _mark_reductions_reassociable(m)
        _mark_noalias(m)
        _stage(m, "bf16-as-f32", lambda: run_pipeline(m, BF16_AS_F32))
        _stage(m, "expand-bf16-conversions", lambda: expand_bf16_conversions(m))
        to_llvm = TO_LLVM_OPENMP if threads else TO_LLVM
        if poison:
            _stage(m, "poison-temporaries", lambda: _poison_temporaries(m))
        loops, rest = _split_after_loops(to_llvm)
        _stage(m, "to-loops", lambda: run_pipeline(m, loops))
        if threads:
            _stage(m, "rows-in-parallel", lambda: parallel_rows(m))
        if checks:
            _stage(m, CHECKS, lambda: run_pipeline(m, CHECKS))
            _name_kernel_in_checks(m, cluster.name)
        _stage(m, "lower-to-llvm", lambda: run_pipeline(m, rest))
    return m


_llvm_ready = False


def _llvmlite():
    """llvmlite's LLVM, set up once: native target, and glibc's vector math library (libmvec) as the
    vectorizer's source of vector ``expf``/``logf``/... so loops calling them vectorize too."""
    global _llvm_ready
    import llvmlite.binding as llvm

    if not _llvm_ready:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        if _libmvec():
            llvm.set_option("byteir", "-vector-library=LIBMVEC")
        _llvm_ready = True
    return llvm


#: LLVM's loop unroller at O3 (threshold 300) fully unrolls the small constant-trip loops of a fused kernel after
#: vectorizing them. That pays on straight-line kernels (BERT, 4 runs each, Zen 4: 6.55 ms at 300, 6.95 at 100)
#: but not around a while loop's body: a Keras LSTM's kernel grew from 2,500 lines of IR to 47,000, took 3.3 s
#: to build and ran slower (3.96 ms) than at threshold 50 (0.85 s, 2.87 ms). Kernels with control flow get
#: :data:`LOOP_UNROLL_THRESHOLD`.
UNROLL_THRESHOLD_ENV = "BYTEIR_CPU_UNROLL_THRESHOLD"
DEFAULT_UNROLL_THRESHOLD = 300
LOOP_UNROLL_THRESHOLD = 50
_CONTROL_FLOW = ("stablehlo.while", "stablehlo.if", "stablehlo.case")


def unroll_threshold(cluster: Cluster | None = None) -> int:
    """LLVM's unroll threshold for ``cluster``'s kernel: ``BYTEIR_CPU_UNROLL_THRESHOLD``, else
    :data:`DEFAULT_UNROLL_THRESHOLD`; at most :data:`LOOP_UNROLL_THRESHOLD` when it holds control flow."""
    value = os.environ.get(UNROLL_THRESHOLD_ENV, "")
    n = int(value) if value.isdigit() else DEFAULT_UNROLL_THRESHOLD
    if cluster is not None and any(name in _CONTROL_FLOW for name in cluster.op_names):
        n = min(n, LOOP_UNROLL_THRESHOLD)
    return n


def _libmvec() -> bool:
    import ctypes.util

    return os.uname().machine == "x86_64" and ctypes.util.find_library("mvec") is not None


# A float literal as MLIR's LLVM prints it: hexadecimal bits (f0x...), a shortest round-trip decimal, inf, nan.
_FLOAT_LITERAL = re.compile(r"(?<![\w.%@$\"-])(f0x[0-9A-Fa-f]+|[-+]?\d+\.\d+(?:e[-+]?\d+)?|[-+]?inf|"
                            r"[-+]?(?:qnan|s?nan\(0x[0-9A-Fa-f]+\))|[-+]?nan)(?![\w.])")
#: NaNs as newer LLVMs print them: ``+qnan``, ``-nan(0x<payload>)`` (quiet), ``+snan(0x<payload>)``; the payload is
#: the significand without its quiet bit.
_NAN_LITERAL = re.compile(r"([-+]?)(?:(qnan)|(s?)nan\((0x[0-9A-Fa-f]+)\))$")
_FLOAT_BITS = {"half": (5, 10), "bfloat": (8, 7), "float": (8, 23), "double": (11, 52)}


def _nan_as_llvm22_literal(mo, kind: str) -> str:
    if kind not in _FLOAT_BITS:
        raise TargetError(f"cpu codegen: cannot rewrite {kind} literal {mo.group(0)!r} for llvmlite")
    exp, man = _FLOAT_BITS[kind]
    quiet = 0 if mo.group(3) else 1 << (man - 1)
    payload = int(mo.group(4), 16) if mo.group(4) else 0
    sign = int(mo.group(1) == "-")
    if kind == "float":  # written as a double of the same value: the significand moves up by 52 - 23 bits
        exp, man, quiet, payload = 11, 52, quiet << 29, payload << 29
    bits = (sign << (exp + man)) | (((1 << exp) - 1) << man) | quiet | payload
    return {"half": "0xH%04X", "bfloat": "0xR%04X"}.get(kind, "0x%016X") % bits
_FLOAT_TYPE = re.compile(r"\b(half|bfloat|float|double|x86_fp80|fp128)\b")


@lru_cache(maxsize=1 << 16)
def _as_llvm22_literal(token: str, kind: str) -> str:
    """One float literal of type ``kind`` in the form LLVM 22 parses: float/double as the bits of the value as a
    double (``0x`` + 16 digits: exact), half as ``0xH``, bfloat as ``0xR``."""
    import struct

    import numpy as np

    widths = {"half": 4, "bfloat": 4, "float": 8, "double": 16, "x86_fp80": 20, "fp128": 32}
    nan = _NAN_LITERAL.match(token)
    if nan:
        return _nan_as_llvm22_literal(nan, kind)
    if token.startswith("f0x"):
        digits = token[3:]
        if len(digits) != widths[kind]:
            raise TargetError(f"cpu codegen: float literal {token!r} does not fit type {kind}")
        bits = int(digits, 16)
        if kind == "float":
            value = np.array([bits], np.uint32).view(np.float32)[0]
        elif kind == "half":
            return "0xH" + digits.upper()
        elif kind == "bfloat":
            return "0xR" + digits.upper()
        elif kind == "double":
            return "0x" + digits.upper()
        else:
            return ("0xK" if kind == "x86_fp80" else "0xL") + digits.upper()
    else:
        if kind == "double":
            return token if token[-3:] not in ("inf", "nan") else (
                ("0xFFF" if token[0] == "-" else "0x7FF") + ("0000000000000" if token.endswith("inf") else "8000000000000"))
        value = np.float64(float(token))
        if kind == "float":
            value = np.float32(value)
        elif kind == "half":
            return f"0xH{int(np.array([value], np.float16).view(np.uint16)[0]):04X}"
        elif kind == "bfloat":
            f = np.array([value], np.float32).view(np.uint32)[0]
            if np.isnan(value):
                return f"0xR{(int(f) >> 16) | 0x40:04X}"
            return f"0xR{((int(f) + 0x7FFF + ((int(f) >> 16) & 1)) >> 16) & 0xFFFF:04X}"  # round to nearest even
        else:
            raise TargetError(f"cpu codegen: cannot rewrite {kind} literal {token!r} for llvmlite")
    # float: the same value as a double, keeping a NaN's payload
    bits = int(np.array([value], np.float32).view(np.uint32)[0])
    sign, exp, man = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if exp == 0xFF:
        d = (sign << 63) | (0x7FF << 52) | (man << 29)
    else:
        d = struct.unpack("<Q", struct.pack("<d", float(value)))[0]
    return f"0x{d:016X}"


def _older_float_syntax(text: str) -> str:
    """MLIR's LLVM (newer than llvmlite's LLVM 22) prints float constants as ``f0x<bits>``, as shortest decimals
    that are not exact, and as ``inf``/``nan``; LLVM 22 reads none of these for ``float``. Each literal is rewritten
    for its type: the last float type named before it on its line (LLVM IR states a constant's type before it,
    or once before an instruction's operands)."""
    out = []
    for line in text.split("\n"):
        if not line.startswith(("declare", "!", ";", "attributes", "source_filename", "target")) and \
                _FLOAT_TYPE.search(line):
            types = [(m.start(), m.group(1)) for m in _FLOAT_TYPE.finditer(line)]
            starts = [t[0] for t in types]

            def sub(mo, types=types, starts=starts):
                k = bisect.bisect_left(starts, mo.start())  # the last type named before the literal
                if k == 0:
                    return mo.group(0)
                return _as_llvm22_literal(mo.group(0), types[k - 1][1])
            line = _FLOAT_LITERAL.sub(sub, line)
        out.append(line)
    return "\n".join(out)


#: x86 ISA extensions a kernel may rely on: LLVM's name -> /proc/cpuinfo's (recorded with the kernel).
ISA_FLAGS = {"avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f",
             "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512bf16": "avx512_bf16"}
#: What the generic x86-64 micro-architecture levels imply (other named CPUs are not checked at load).
LEVEL_ISA = {"x86-64": (), "generic": (), "x86-64-v2": (), "x86-64-v3": ("avx", "avx2", "fma", "f16c"),
             "x86-64-v4": ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl")}


def target_cpu() -> tuple[str, str, tuple[str, ...]]:
    """(LLVM CPU name, feature string, ISA flags the code may use) for the kernels: ``BYTEIR_CPU`` (set by
    ``byteir compile --cpu``) names an LLVM CPU (``x86-64-v3`` = AVX2, ``x86-64-v4`` = AVX-512, ``znver4``,
    ``skylake-avx512`` ...); the default ``native`` is the compiling machine's CPU and all its features."""
    name = os.environ.get("BYTEIR_CPU", "native").strip() or "native"
    if name == "native":
        return _native_cpu()
    _check_cpu_name(name)
    return name, "", tuple(LEVEL_ISA.get(name, ()))


@lru_cache(maxsize=1)
def _native_cpu() -> tuple[str, str, tuple[str, ...]]:
    """The compiling machine's CPU, asked once: LLVM's host feature query took ~20 ms a kernel."""
    llvm = _llvmlite()
    feats = llvm.get_host_cpu_features()
    on = {k for k, v in feats.items() if v}
    return llvm.get_host_cpu_name(), feats.flatten(), tuple(c for f, c in ISA_FLAGS.items() if f in on)


_PROBE = """import sys, llvmlite.binding as llvm
llvm.initialize_native_target(); llvm.initialize_native_asmprinter()
tm = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(cpu=sys.argv[1])
tm.emit_object(llvm.parse_assembly(""))
"""


@lru_cache(maxsize=None)
def _check_cpu_name(name: str) -> None:
    """LLVM only warns about a CPU name it does not know (and may then crash): ask it in a child process."""
    import sys

    r = subprocess.run([sys.executable, "-c", _PROBE, name], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or "not a recognized processor" in r.stderr:
        raise TargetError(f"BYTEIR_CPU={name!r} (--cpu): LLVM does not know this CPU; use an LLVM CPU name such "
                          "as x86-64, x86-64-v3, x86-64-v4, znver4, skylake-avx512, or 'native'")


def llvm_ir(m) -> str:
    """An LLVM-dialect module as LLVM IR text in llvmlite's dialect (MLIR's translation)."""
    from torch_mlir.dialects import llvm as llvmd

    with m.context:
        text = llvmd.translate_module_to_llvmir(m.operation)
    return _asserts_to_stderr(_older_float_syntax(text))


def llvm_object(m, extra: str = "") -> tuple[bytes, tuple[str, ...]]:
    """(object code, ISA flags it may use) from an LLVM-dialect module: MLIR translates it to LLVM IR (plus
    ``extra`` LLVM IR) for :func:`object_from_llvm_ir`."""
    return object_from_llvm_ir(llvm_ir(m) + extra)


_ASSERT_PRINTER = """
@byteir_newline = private constant [1 x i8] c"\\0A"
declare i64 @strlen(ptr)
declare i64 @write(i32, ptr, i64)
define internal void @byteir_check_failed(ptr %s) {
  %n = call i64 @strlen(ptr %s)
  %a = call i64 @write(i32 2, ptr %s, i64 %n)
  %b = call i64 @write(i32 2, ptr @byteir_newline, i64 1)
  ret void
}
"""


def _asserts_to_stderr(text: str) -> str:
    """A failed ``cf.assert`` lowers to ``puts(msg); abort()``: stdout is buffered when it is a pipe and abort
    does not flush it, so the message would be lost. The message goes to stderr, unbuffered, instead."""
    if "@puts(" not in text:
        return text
    text = re.sub(r"^declare [^\n]*@puts\(ptr[^\n]*$", "", text, flags=re.M)
    return text.replace("@puts(", "@byteir_check_failed(") + _ASSERT_PRINTER


#: One kernel's LLVM work at a time (llvmlite serializes its calls anyway): the unroll threshold is a global
#: LLVM option, set for each kernel right before its passes run.
_llvm_lock = threading.Lock()
_unroll_set: int | None = None


def object_from_llvm_ir(text: str, unroll: int | None = None) -> tuple[bytes, tuple[str, ...]]:
    """:func:`_object_from_llvm_ir` with LLVM's unroll threshold at ``unroll`` (None: :func:`unroll_threshold`)."""
    global _unroll_set
    llvm = _llvmlite()
    unroll = unroll_threshold() if unroll is None else unroll
    with _llvm_lock:
        if unroll != _unroll_set:
            llvm.set_option("byteir", f"-unroll-threshold={unroll}")
            _unroll_set = unroll
        return _object_from_llvm_ir(text)


def _object_from_llvm_ir(text: str) -> tuple[bytes, tuple[str, ...]]:
    """(object code, ISA flags it may use) from LLVM IR in llvmlite's dialect: llvmlite's LLVM optimizes it for
    :func:`target_cpu` (O3 with loop and SLP vectorization), vector math becomes libmvec calls or inlined code
    (:func:`_vector_math_calls`), the conversion
    helpers the CPU may need are added, and the object is position-independent. It works in an LLVM context of
    its own; :func:`object_from_llvm_ir` runs one at a time (the unroll threshold is a global option)."""
    llvm = _llvmlite()
    cpu, features, isa = target_cpu()
    context = llvm.create_context()
    mod = llvm.parse_assembly(_i1_memory_as_bytes(text), context=context)
    triple = llvm.get_process_triple()
    tm = llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=OPT_LEVEL, reloc="pic", codemodel="default")
    mod.triple = triple
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    text = str(mod)
    vector_math = _vector_math_calls(text, isa)
    if vector_math is not text:
        mod = llvm.parse_assembly(vector_math, context=context)
        if "@byteir_expf_v" in vector_math:  # inline the exp polynomials into the vector loops
            mpm = llvm.create_new_module_pass_manager()
            mpm.add_always_inliner_pass()
            mpm.add_instruction_combine_pass()
            mpm.run(mod, pb)
    link_helpers(mod, context)
    return tm.emit_object(mod), isa


_I1_LOAD = re.compile(r"^(\s*)(%[-\w.]+) = load i1, ptr (%[-\w.]+)((?:, align \d+)?)$", re.M)
_I1_STORE = re.compile(r"^(\s*)store i1 ([-\w.%]+), ptr (%[-\w.]+)((?:, align \d+)?)$", re.M)


def _i1_memory_as_bytes(text: str) -> str:
    """Booleans in memory (a byte each) loaded and stored as ``i8``, truncated to ``i1`` after the load and
    zero-extended before the store, which is what ``load i1``/``store i1`` mean for 0/1 bytes. The loop
    vectorizer then reads 16 mask bytes with one vector load and one compare; from ``load i1`` it assembled each
    mask bit by bit (five instructions a byte: a masked softmax spent a third of its time there)."""
    if "load i1," not in text and "store i1 " not in text:
        return text
    n = itertools.count()

    def load(mo):
        k = next(n)
        return (f"{mo.group(1)}%byteir.i1.{k} = load i8, ptr {mo.group(3)}{mo.group(4)}\n"
                f"{mo.group(1)}{mo.group(2)} = trunc i8 %byteir.i1.{k} to i1")

    def store(mo):
        k = next(n)
        return (f"{mo.group(1)}%byteir.i1.{k} = zext i1 {mo.group(2)} to i8\n"
                f"{mo.group(1)}store i8 %byteir.i1.{k}, ptr {mo.group(3)}{mo.group(4)}")

    return _I1_STORE.sub(store, _I1_LOAD.sub(load, text))


_VECTOR_MATH = re.compile(r"@llvm\.(exp|log|sin|cos|tan|tanh|exp2|exp10|log2|log10|pow)\.v(\d+)f(32|64)\b")
# libmvec's vector-function ABI letters by register width: b = SSE (128 bits), d = AVX2 (256), e = AVX-512.
_ISA = {128: "b", 256: "d", 512: "e"}


def _vector_math_calls(text: str, isa: tuple[str, ...]) -> str:
    """Vectorized math intrinsics (``llvm.exp.v16f32`` ...) as calls to glibc's libmvec (``_ZGVeN16v_logf``):
    LLVM would otherwise split each into scalar calls. llvmlite's LLVM offers no ``-vector-library`` switch, so
    the vectorizer's output is rewritten by name; a width or function libmvec lacks, or an ISA the target CPU
    lacks, stays as is. f32 ``exp`` of any width becomes :func:`_expf_ir` instead, inlined (any x86-64, no
    libmvec needed)."""
    if "@llvm." not in text:
        return text
    lib = _libmvec_handle() if _libmvec() else None
    inline: dict[str, str] = {}

    def sub(mo):
        fn, lanes, bits = mo.group(1), int(mo.group(2)), int(mo.group(3))
        if fn == "exp" and bits == 32:
            inline[f"byteir_expf_v{lanes}"] = _expf_ir(f"byteir_expf_v{lanes}", lanes)
            return f"@byteir_expf_v{lanes}"
        width = _ISA.get(lanes * bits)
        if lib is None or width is None or (width == "e" and "avx512f" not in isa) or (
                width == "d" and "avx2" not in isa):
            return mo.group(0)
        name = f"_ZGV{width}N{lanes}{'vv' if fn == 'pow' else 'v'}_{fn}{'f' if bits == 32 else ''}"
        return "@" + name if hasattr(lib, name) else mo.group(0)

    out = _VECTOR_MATH.sub(sub, text)
    if inline:
        # the intrinsic's declaration was renamed with its calls: the definition takes its place
        out = re.sub(r"^declare [^\n]*@(byteir_expf_v\d+)\([^\n]*\n", "", out, flags=re.M)
        for lanes in sorted({int(k.rsplit("v", 1)[1]) for k in inline}):
            vt = f"<{lanes} x float>"
            if f"@llvm.fmuladd.v{lanes}f32(" not in out:
                out += f"\ndeclare {vt} @llvm.fmuladd.v{lanes}f32({vt}, {vt}, {vt})\n"
        out += "\n" + "\n".join(inline.values())
    return out


def _f32_literal(v: float) -> str:
    """An f32 constant as LLVM IR spells it: the double of the same value, in hex."""
    import struct

    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", struct.unpack("<f", struct.pack("<f", v))[0]))[0]


#: Cephes' single-precision exp (S. Moshier): exp(r) on [-ln2/2, ln2/2] as 1 + r + r^2 P(r), within 2 ulp of the
#: true value. libmvec's expf costs about 50 cycles a 16-lane vector on Zen 4 and leaves its fast path for the
#: whole vector when one lane's result is subnormal or zero (a masked softmax: -inf in half of every row), where
#: it calls scalar expf lane by lane; PyTorch's and Inductor's CPU kernels use polynomials of this kind too.
_EXPF_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
              5.0000001201e-1)


def _expf_ir(name: str, lanes: int) -> str:
    """An always-inlined ``<lanes x float>`` exp in LLVM IR, branch-free, for any x86-64 (no FMA, rounding or
    libm call needed; ``fmuladd`` fuses where the CPU has FMA). x = n ln2 + r with n = round(x log2 e) (the
    1.5 * 2^23 trick) and ln2 split in two so n * hi is exact (Cephes' Cody-Waite constants); the result is
    P(r) * 2^(n/2) * 2^(n - n/2), so a subnormal result is rounded once and an overflow gives inf. x is
    clamped to [-104, 89] (exp(-104) rounds to 0 and exp(89) overflows, so -inf gives 0 and +inf gives inf);
    NaN lanes return x."""
    vt, it, mt = f"<{lanes} x float>", f"<{lanes} x i32>", f"<{lanes} x i1>"

    def f(v):
        return f"splat (float {_f32_literal(v)})"

    def i(v):
        return f"splat (i32 {v})"

    fma = f"@llvm.fmuladd.v{lanes}f32"
    lines = [
        f"  %lo = fcmp olt {vt} %x, {f(-104.0)}",
        f"  %x1 = select {mt} %lo, {vt} {f(-104.0)}, {vt} %x",
        f"  %hi = fcmp ogt {vt} %x1, {f(89.0)}",
        f"  %xc = select {mt} %hi, {vt} {f(89.0)}, {vt} %x1",
        f"  %t = call {vt} {fma}({vt} %xc, {vt} {f(1.44269504088896341)}, {vt} {f(12582912.0)})",
        f"  %nf = fsub {vt} %t, {f(12582912.0)}",
        f"  %r1 = call {vt} {fma}({vt} %nf, {vt} {f(-0.693359375)}, {vt} %xc)",
        f"  %r = call {vt} {fma}({vt} %nf, {vt} {f(2.12194440e-4)}, {vt} %r1)",
        f"  %z = fmul {vt} %r, %r",
    ]
    acc = f(_EXPF_POLY[0])
    for k, c in enumerate(_EXPF_POLY[1:]):
        lines.append(f"  %p{k} = call {vt} {fma}({vt} {acc if k == 0 else f'%p{k - 1}'}, {vt} %r, {vt} {f(c)})")
    last = f"%p{len(_EXPF_POLY) - 2}"
    lines += [
        f"  %q = call {vt} {fma}({vt} {last}, {vt} %z, {vt} %r)",
        f"  %y = fadd {vt} %q, {f(1.0)}",
        f"  %n = fptosi {vt} %nf to {it}",
        f"  %n1 = ashr {it} %n, {i(1)}",
        f"  %n2 = sub {it} %n, %n1",
        f"  %e1 = add {it} %n1, {i(127)}",
        f"  %e2 = add {it} %n2, {i(127)}",
        f"  %b1 = shl {it} %e1, {i(23)}",
        f"  %b2 = shl {it} %e2, {i(23)}",
        f"  %s1 = bitcast {it} %b1 to {vt}",
        f"  %s2 = bitcast {it} %b2 to {vt}",
        f"  %y1 = fmul {vt} %y, %s1",
        f"  %y2 = fmul {vt} %y1, %s2",
        f"  %nan = fcmp uno {vt} %x, %x",
        f"  %res = select {mt} %nan, {vt} %x, {vt} %y2",
        f"  ret {vt} %res",
    ]
    body = "\n".join(lines)
    return f"define internal {vt} @{name}({vt} %x) alwaysinline {{\n{body}\n}}\n"


def _libmvec_handle():
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("mvec"))


def compile_to_shared_object(cluster: Cluster) -> tuple[bytes, bool, tuple[str, ...]]:
    """(shared object, whether it calls the OpenMP runtime, ISA flags its code may use)."""
    future, omp, isa = start_shared_object(cluster)
    return future.result(), omp, isa


def start_shared_object(cluster: Cluster) -> tuple[Future, bool, tuple[str, ...]]:
    """Lower ``cluster`` to LLVM IR here (MLIR: the caller's thread), and hand LLVM's optimization, code
    generation and the link to the build pool: (a future of the shared object, whether it calls the OpenMP
    runtime, ISA flags its code may use). A whole model's kernels so build on every core at once."""
    threads = wants_threads(cluster)
    checks = wants_checks()
    m = lower_to_llvm_dialect(cluster, threads, checks, wants_poisoned_temporaries())
    omp = openmp_library() if threads else None
    with m.context:
        try:
            text = llvm_ir(m) + (_shapes_global(cluster) if checks else "")
        except Exception as e:  # noqa: BLE001
            raise TargetError(f"cpu codegen failed translating to LLVM IR: {e}") from None
    _llvmlite()  # initialized once, before any worker thread uses LLVM
    isa = target_cpu()[2]
    return _build_pool().submit(_build, text, cluster.name, omp, unroll_threshold(cluster)), bool(omp), isa


def _build(text: str, name: str, omp: str | None, unroll: int | None = None) -> bytes:
    try:
        code, _ = object_from_llvm_ir(text, unroll)
    except TargetError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TargetError(f"cpu codegen failed in LLVM: {e}") from None
    return link_shared_object(code, name, omp)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's threads: an inherited executor would queue builds that no
    thread ever runs (the conformance runner forks its workers). The child makes its own pool when it needs one."""
    global _pool, _pool_lock, _llvm_lock
    _pool, _pool_lock, _llvm_lock = None, threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _build_pool() -> ThreadPoolExecutor:
    """Threads that build kernels: ``BYTEIR_COMPILE_THREADS``, default one per core."""
    global _pool
    with _pool_lock:
        if _pool is None:
            n = os.environ.get("BYTEIR_COMPILE_THREADS", "")
            workers = int(n) if n.isdigit() and int(n) > 0 else (os.cpu_count() or 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="byteir-cpu-build")
        return _pool


def link_shared_object(code: bytes, name: str, omp: str | None = None) -> bytes:
    """The object code of kernel ``name`` linked into a shared object by the system C compiler, checked to
    call nothing beyond libc, libm, libmvec and, where ``omp`` (multithreaded), GNU OpenMP: whatever it takes
    from libgcc is copied in (``-static-libgcc``), as libgcc_s is not on every machine in the same version."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise TargetError("cpu backend needs a C compiler driver (cc or gcc) to link kernels; none on PATH")
    with tempfile.TemporaryDirectory(prefix="byteir-cpu-") as d:
        obj, so = os.path.join(d, "k.o"), os.path.join(d, "k.so")
        with open(obj, "wb") as f:
            f.write(code)
        # A multithreaded kernel carries its __kmpc_* entry points, written on GNU OpenMP (gomp_shim.py); libgomp
        # itself is not named: the provider loads it globally first (PyTorch's when PyTorch is there).
        libs = []
        if omp:
            shim = os.path.join(d, "gomp_shim.o")
            with open(shim, "wb") as f:
                f.write(shim_object(cc))
            libs.append(shim)
        if _libmvec():
            libs.append("-lmvec")
        r = subprocess.run([cc, "-shared", "-static-libgcc", "-o", so, obj, "-lm", *libs], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise TargetError(f"linking the cpu kernel failed ({cc}): {r.stderr.strip()}")
        with open(so, "rb") as f:
            data = f.read()
    check_portable(data, name)
    return data
