"""``dot_general`` as a (batched) GEMM launch: the dimension numbers, the plan that views each operand as
[batch, M, K] / [batch, K, N], and the host reference the interpreter runs. The GPU provider runs the same plan
through cuBLAS (runtime.py)."""

from __future__ import annotations

import math

from byteir_core.mlir import ir, stablehlo_api


def dot_attrs(op) -> dict:
    """Launch attributes of a ``dot_general``: dimension numbers, operand/result shapes and types."""
    d = stablehlo_api.DotDimensionNumbers(op.attributes["dot_dimension_numbers"])
    lhs, rhs = (ir.RankedTensorType(v.type) for v in op.operands)
    out = ir.RankedTensorType(op.results[0].type)
    return {"lhs_batch": list(d.lhs_batching_dimensions), "lhs_contract": list(d.lhs_contracting_dimensions),
            "rhs_batch": list(d.rhs_batching_dimensions), "rhs_contract": list(d.rhs_contracting_dimensions),
            "lhs_shape": list(lhs.shape), "rhs_shape": list(rhs.shape), "out_shape": list(out.shape),
            "lhs_type": str(lhs.element_type), "rhs_type": str(rhs.element_type),
            "out_type": str(out.element_type)}


def plan(attrs: dict) -> dict:
    """Permutations that bring lhs to [batch..., M..., K...] and rhs to [batch..., K..., N...], and the sizes of
    the resulting [B, M, K] x [B, K, N] -> [B, M, N] product (the result's layout is batch, M, N already)."""
    ls, rs = attrs["lhs_shape"], attrs["rhs_shape"]
    lb, lc, rb, rc = attrs["lhs_batch"], attrs["lhs_contract"], attrs["rhs_batch"], attrs["rhs_contract"]
    lm = [i for i in range(len(ls)) if i not in lb and i not in lc]
    rn = [i for i in range(len(rs)) if i not in rb and i not in rc]
    return {"lhs_perm": lb + lm + lc, "rhs_perm": rb + rc + rn,
            "B": math.prod(ls[i] for i in lb), "M": math.prod(ls[i] for i in lm),
            "K": math.prod(ls[i] for i in lc), "N": math.prod(rs[i] for i in rn)}


def gemm_reference(attrs: dict, a, b, c) -> None:
    """c = dot_general(a, b) on torch CPU tensors, accumulating in fp32 (fp64 for f64)."""
    import torch

    p = plan(attrs)
    acc = torch.float64 if c.dtype == torch.float64 else torch.float32
    a2 = a.permute(*p["lhs_perm"]).reshape(p["B"], p["M"], p["K"]).to(acc)
    b2 = b.permute(*p["rhs_perm"]).reshape(p["B"], p["K"], p["N"]).to(acc)
    if c.dtype.is_floating_point or c.dtype == torch.bfloat16:
        out = torch.bmm(a2, b2)
    else:  # integer GEMMs: exact in int64
        out = torch.bmm(a2.to(torch.int64), b2.to(torch.int64))
    c.copy_(out.reshape(c.shape).to(c.dtype))
