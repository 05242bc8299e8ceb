"""``torch.ops.byteir.*``: the custom ops our FX passes rewrite patterns into.

They become ``stablehlo.custom_call @byteir.<name>`` in StableHLO (see :mod:`.importer`); a backend may claim
them, and the core decomposes them back into plain StableHLO for backends that do not
(``byteir_core.builtins.custom_calls``). In eager (a graph piece that falls back), they run the math below.

``flash_attn_fwd(q, k, v, mask, scale, causal) -> (out, lse)``
    q ``[B, H, Sq, D]``, k/v ``[B, H, Sk, D]`` (PyTorch's SDPA layout), ``mask`` None, a bool mask (True
    keeps) or an additive float mask broadcastable to ``[B, H, Sq, Sk]``; ``lse`` is the f32 log-sum-exp of the
    scaled, masked scores ``[B, H, Sq]`` (saved for the backward).
``flash_attn_bwd(dout, q, k, v, mask, out, lse, scale, causal) -> (dq, dk, dv)``
"""

from __future__ import annotations

from typing import Optional

import torch

NAMESPACE = "byteir"


def _acc(t: torch.Tensor) -> torch.Tensor:
    """At least f32 (f64 stays f64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _scores(q, k, mask, scale: float, causal: bool):
    s = torch.matmul(_acc(q), _acc(k).transpose(-1, -2)) * scale
    if causal:
        sq, sk = s.shape[-2], s.shape[-1]
        keep = torch.ones(sq, sk, dtype=torch.bool, device=s.device).tril(sk - sq)
        s = s.masked_fill(~keep, float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + _acc(mask)
    return s


@torch.library.custom_op(f"{NAMESPACE}::flash_attn_fwd", mutates_args=())
def flash_attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                   scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    s = _scores(q, k, mask, scale, causal)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1))
    return torch.matmul(p, _acc(v)).to(q.dtype), lse.float()


@flash_attn_fwd.register_fake
def _(q, k, v, mask, scale, causal):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op(f"{NAMESPACE}::flash_attn_bwd", mutates_args=())
def flash_attn_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask: Optional[torch.Tensor], out: torch.Tensor, lse: torch.Tensor, scale: float,
                   causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = _scores(q, k, mask, scale, causal)
    p = torch.exp(s - lse.unsqueeze(-1))                      # [B, H, Sq, Sk]
    do = _acc(dout)
    dv = torch.matmul(p.transpose(-1, -2), do)
    dp = torch.matmul(do, _acc(v).transpose(-1, -2))
    delta = (do * _acc(out)).sum(-1, keepdim=True)
    ds = p * (dp - delta) * scale
    dq = torch.matmul(ds, _acc(k))
    dk = torch.matmul(ds.transpose(-1, -2), _acc(q))
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@flash_attn_bwd.register_fake
def _(dout, q, k, v, mask, out, lse, scale, causal):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, scale, causal = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, mask, out, lse)
    ctx.scale, ctx.causal = scale, causal


def _backward(ctx, dout, dlse):
    q, k, v, mask, out, lse = ctx.saved_tensors
    dq, dk, dv = flash_attn_bwd(dout.contiguous(), q, k, v, mask, out, lse, ctx.scale, ctx.causal)
    return dq, dk, dv, None, None, None


flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)

FWD = torch.ops.byteir.flash_attn_fwd.default
BWD = torch.ops.byteir.flash_attn_bwd.default
