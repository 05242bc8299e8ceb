"""GEMM and batched GEMM as library calls: the ``cpu_blas`` backend joins the ``cpu`` target with a higher
priority than generated code for ``dot_general``, and its provider runs each one as a (batched) matmul
through NumPy's BLAS (OpenBLAS in the NumPy wheel, multithreaded). Loop nests cannot compete with a tuned
BLAS on GEMM; elementwise epilogues stay in generated code.

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
    max_cluster_ops = 1
    description = "dot_general as BLAS (batched) GEMM calls"

    def claims(self, op):
        if op.name != "stablehlo.dot_general":
            return None
        types = [v.type for v in list(op.operands) + list(op.results)]
        if not all(_static(t) for t in types) or len({str(t.element_type) for t in types}) != 1:
            return None
        if "algorithm" in op.attributes:
            return None
        return 20

    def compile(self, cluster: Cluster) -> CompiledCluster:
        block = cluster.module.body.operations[0].regions[0].blocks[0]
        ops = [o.operation for o in block.operations]
        (dot,) = [o for o in ops if o.name == "stablehlo.dot_general"]
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
        attrs = {k: ",".join(map(str, v)) for k, v in _dims(dot).items()}
        return CompiledCluster(CALLEE, kernel, attrs)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x != ""]


class CpuGemmProvider(Provider):
    name = "cpu_blas"
    device = "cpu"
    callees = (CALLEE,)
    description = "(batched) GEMM through NumPy's BLAS"

    def __init__(self):
        n = os.environ.get("BYTEIR_NUM_THREADS")
        if n:
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(n), user_api="blas")

    def load(self, callee, kernel, attrs):
        try:
            lb, lc = _ints(attrs["lhs_batch"]), _ints(attrs["lhs_contract"])
            rb, rc = _ints(attrs["rhs_batch"]), _ints(attrs["rhs_contract"])
        except KeyError as e:
            raise ProviderError(f"{callee}: missing attribute {e}") from None
        constants = {}
        if kernel is not None:
            if kernel.format != CONSTANTS_FORMAT:
                raise ProviderError(f"{callee}: unexpected kernel format {kernel.format!r}")
            with np.load(io.BytesIO(kernel.data)) as z:
                constants = {k: z[k] for k in z.files}
        plan: dict = {}

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
            if os_[0] == 1:
                np.matmul(a[0], bm[0], out=out[0])
            else:
                np.matmul(a, bm, out=out)

        return run
