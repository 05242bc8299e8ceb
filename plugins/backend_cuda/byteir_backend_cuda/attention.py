"""Fused attention for the cuda backend: ``byteir.flash_attn_fwd`` / ``byteir.flash_attn_bwd`` as
FlashAttention-2 Triton kernels.

:func:`fwd_program` and :func:`bwd_program` build a :class:`~byteir_backend_cuda.program.Program` (buffers,
kernels, launches; binaries are filled later by ``triton_build.compile_kernels``). Semantics are those of the
core's decomposition (``byteir_core/builtins/custom_calls.py``): scores ``q @ k^T * scale`` in f32; ``causal``
is bottom-right aligned (query row ``i`` sees key ``j`` iff ``j <= i + Sk - Sq``); an i1 mask keeps where true,
a float mask is added to the scaled scores; the mask broadcasts to ``[B,H,Sq,Sk]``; ``lse`` is the natural-log
sum-exp of the masked scores, in f32. K/V may have fewer heads than Q (grouped-query attention): query head
``h`` reads kv head ``h // (H // H_kv)``.

A query row whose keys are *all* masked has ``lse = -inf``, ``out = 0`` and zero gradients, as in the
decomposition, FlashAttention and torch's SDPA.

The kernels below are plain functions: their source text (with ``import triton.language as tl`` in front) is
what :class:`TritonKernel` carries; ``triton_build`` wraps it for the compiler and the host interpreter. They
are never called from Python directly, and this module does not import Triton (the interpreter needs
``TRITON_INTERPRET=1`` set before Triton's first import, which a test or the provider decides, not us).
Each kernel is one function: the loading scheme does not resolve helper functions.

Exponentials are base 2 (``exp2`` maps to one PTX instruction): scores are scaled by ``scale * log2(e)``,
the running max and sum live in that domain, and ``lse`` is converted back with ``ln(2)`` at the end.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from typing import TYPE_CHECKING

from .program import BufferDecl, Launch, Program, TritonKernel

if TYPE_CHECKING:  # the kernels' source resolves ``tl`` in its own module (see _source)
    import triton.language as tl

Spec = tuple  # (shape: list[int], dtype: str), dtype an MLIR element type name

#: MLIR element type -> Triton pointer element / scalar type names used in signatures.
_TRITON_TYPES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "f64": "fp64", "i1": "i1"}
_DATA_TYPES = ("f32", "f16", "bf16")
_MASK_TYPES = ("i1", "f32", "f16", "bf16", "f64")
_SCRATCH_ALIGN = 256
_I32_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------

def attn_fwd(Q, K, V, Mask, Out, Lse,
             scale, H, H_KV, SQ, SK,
             stride_mb, stride_mh, stride_mm, stride_mn,
             D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """Attention forward: ``Out = softmax(mask(Q K^T * scale)) V`` and ``Lse = logsumexp(mask(Q K^T * scale))``.

    Grid: ``(cdiv(SQ, BLOCK_M), H, B)``; program ``(i, h, b)`` owns query rows ``[i*BLOCK_M, (i+1)*BLOCK_M)``
    of batch ``b``, head ``h``, and streams K/V blocks of ``BLOCK_N`` keys through an online softmax
    (running max ``m``, running sum ``l``, unnormalised accumulator ``acc``; all f32).

    Q ``[B,H,SQ,D]``, K ``[B,H_KV,SK,D]``, V ``[B,H_KV,SK,DV]``, Out ``[B,H,SQ,DV]`` (all contiguous), Lse
    ``[B,H,SQ]`` f32. ``MASK_KIND``: 0 none (``Mask`` is an unused stand-in pointer), 1 bool (keep where true),
    2 float (added to the scaled scores); the mask is addressed through its strides, 0 on broadcast dims.
    ``BLOCK_D``/``BLOCK_DV`` are ``D``/``DV`` rounded up to a power of two; the padding lanes load as 0.
    """
    LOG2E = 1.4426950408889634
    start_m = tl.program_id(0) * BLOCK_M
    off_h = tl.program_id(1)
    off_b = tl.program_id(2)
    bh = off_b * H + off_h
    off_hkv = off_h // (H // H_KV)  # grouped-query attention: a group of H // H_KV query heads per kv head
    # 64-bit base offsets: B*H*S*D can pass 2**31 elements; offsets inside one head stay 32-bit
    q_base = Q + bh.to(tl.int64) * SQ * D
    o_base = Out + bh.to(tl.int64) * SQ * DV
    kv_bh = (off_b * H_KV + off_hkv).to(tl.int64)
    k_base = K + kv_bh * SK * D
    v_base = V + kv_bh * SK * DV
    m_base = Mask + off_b.to(tl.int64) * stride_mb + off_h.to(tl.int64) * stride_mh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_valid = offs_m < SQ
    q = tl.load(q_base + offs_m[:, None] * D + offs_d[None, :],
                mask=m_valid[:, None] & (offs_d[None, :] < D), other=0.0)
    qk_scale = scale * LOG2E

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    if CAUSAL:
        # the last row of this block sees keys up to start_m + BLOCK_M - 1 + SK - SQ: later blocks are all
        # masked and skipped (hi <= 0 when the whole block sits above the diagonal: no key at all)
        hi = tl.minimum(SK, start_m + BLOCK_M + SK - SQ)
    else:
        hi = SK
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < SK
        k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :],
                    mask=n_valid[:, None] & (offs_d[None, :] < D), other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        keep = m_valid[:, None] & n_valid[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None] + (SK - SQ))
        if MASK_KIND != 0:
            mv = tl.load(m_base + offs_m[:, None] * stride_mm + offs_n[None, :] * stride_mn, mask=keep, other=0)
            if MASK_KIND == 1:
                keep = keep & (mv != 0)
            else:
                s = s + mv.to(tl.float32) * LOG2E
        s = tl.where(keep, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        # a row that has only seen masked keys still has m = -inf: shift it by 0 instead, so that its
        # exp2(-inf - shift) terms are 0 and not exp2(-inf + inf) = NaN
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_shift[:, None])
        alpha = tl.exp2(m_i - m_shift)  # rescales what was accumulated under the previous max
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * DV + offs_dv[None, :],
                    mask=n_valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
        # P is rounded to V's type so that f16/bf16 use the tensor cores (as FlashAttention does)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new

    # a row without any unmasked key has l = 0: out 0, lse -inf (see the module docstring)
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
    tl.store(o_base + offs_m[:, None] * DV + offs_dv[None, :], out.to(Out.dtype.element_ty),
             mask=m_valid[:, None] & (offs_dv[None, :] < DV))
    tl.store(Lse + bh.to(tl.int64) * SQ + offs_m, lse, mask=m_valid)


def attn_bwd_delta(Out, DOut, Delta, SQ,
                   DV: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr):
    """Backward preprocess: ``Delta[b,h,i] = sum_j DOut[b,h,i,j] * Out[b,h,i,j]`` in f32 (the row term of
    the softmax gradient, ``dS = P * (dP - Delta)``).

    Grid: ``(cdiv(SQ, BLOCK_M), H, B)``; program ``(i, h, b)`` does rows ``[i*BLOCK_M, (i+1)*BLOCK_M)`` of
    head ``h`` of batch ``b``. Out/DOut ``[B,H,SQ,DV]``, Delta ``[B,H,SQ]`` f32.
    """
    bh = tl.program_id(2).to(tl.int64) * tl.num_programs(1) + tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_valid = offs_m < SQ
    ptrs = bh * SQ * DV + offs_m[:, None] * DV + offs_dv[None, :]
    msk = m_valid[:, None] & (offs_dv[None, :] < DV)
    o = tl.load(Out + ptrs, mask=msk, other=0.0).to(tl.float32)
    do = tl.load(DOut + ptrs, mask=msk, other=0.0).to(tl.float32)
    tl.store(Delta + bh * SQ + offs_m, tl.sum(o * do, 1), mask=m_valid)


def attn_bwd_dkdv(Q, K, V, Mask, DOut, Lse, Delta, DK, DVout,
                  scale, H, H_KV, SQ, SK,
                  stride_mb, stride_mh, stride_mm, stride_mn,
                  D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """Attention backward, key side: ``dV = P^T dO`` and ``dK = scale * dS^T Q`` with ``P = exp(S - Lse)``,
    ``dS = P * (dO V^T - Delta)``.

    Grid: ``(cdiv(SK, BLOCK_N), H_KV, B)``; program ``(j, hkv, b)`` owns keys ``[j*BLOCK_N, (j+1)*BLOCK_N)`` of
    kv head ``hkv`` of batch ``b``, keeps their K, V, dK, dV in registers, and loops over the ``H // H_KV`` query heads that
    share this kv head (grouped-query attention: their contributions are summed here, in a fixed order, so
    the result is deterministic) and over their query blocks of ``BLOCK_M`` rows. S is computed transposed
    (``K Q^T``, keys along rows) so that P^T and dS^T come out directly.
    """
    LOG2E = 1.4426950408889634
    start_n = tl.program_id(0) * BLOCK_N
    off_hkv = tl.program_id(1)
    off_b = tl.program_id(2)
    group = H // H_KV
    kv_base = (off_b * H_KV + off_hkv).to(tl.int64) * SK

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    n_valid = offs_n < SK
    k = tl.load(K + kv_base * D + offs_n[:, None] * D + offs_d[None, :],
                mask=n_valid[:, None] & (offs_d[None, :] < D), other=0.0)
    v = tl.load(V + kv_base * DV + offs_n[:, None] * DV + offs_dv[None, :],
                mask=n_valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
    qk_scale = scale * LOG2E
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    if CAUSAL:
        # key j is seen by query rows i >= j - (SK - SQ): earlier query blocks contribute nothing
        lo = tl.maximum(start_n - (SK - SQ), 0) // BLOCK_M * BLOCK_M
    else:
        lo = 0

    for g in range(0, group):
        off_h = off_hkv * group + g
        bh = (off_b * H + off_h).to(tl.int64)
        m_base = Mask + off_b.to(tl.int64) * stride_mb + off_h.to(tl.int64) * stride_mh
        for start_m in range(lo, SQ, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_valid = offs_m < SQ
            q = tl.load(Q + bh * SQ * D + offs_m[:, None] * D + offs_d[None, :],
                        mask=m_valid[:, None] & (offs_d[None, :] < D), other=0.0)
            do = tl.load(DOut + bh * SQ * DV + offs_m[:, None] * DV + offs_dv[None, :],
                         mask=m_valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
            lse = tl.load(Lse + bh * SQ + offs_m, mask=m_valid, other=0.0)
            delta = tl.load(Delta + bh * SQ + offs_m, mask=m_valid, other=0.0)
            # a row with lse = -inf saw no key: subtracting +inf makes all its P exactly 0 (and not NaN)
            lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)

            s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # [BLOCK_N, BLOCK_M]
            keep = n_valid[:, None] & m_valid[None, :]
            if CAUSAL:
                keep = keep & (offs_n[:, None] <= offs_m[None, :] + (SK - SQ))
            if MASK_KIND != 0:
                mv = tl.load(m_base + offs_m[None, :] * stride_mm + offs_n[:, None] * stride_mn,
                             mask=keep, other=0)
                if MASK_KIND == 1:
                    keep = keep & (mv != 0)
                else:
                    s_t = s_t + mv.to(tl.float32) * LOG2E
            s_t = tl.where(keep, s_t, float("-inf"))
            p_t = tl.exp2(s_t - lse2[None, :])
            dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)

    dk = dk * scale
    tl.store(DK + kv_base * D + offs_n[:, None] * D + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=n_valid[:, None] & (offs_d[None, :] < D))
    tl.store(DVout + kv_base * DV + offs_n[:, None] * DV + offs_dv[None, :], dv.to(DVout.dtype.element_ty),
             mask=n_valid[:, None] & (offs_dv[None, :] < DV))


def attn_bwd_dq(Q, K, V, Mask, DOut, Lse, Delta, DQ,
                scale, H, H_KV, SQ, SK,
                stride_mb, stride_mh, stride_mm, stride_mn,
                D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, PRECISION: tl.constexpr):
    """Attention backward, query side: ``dQ = scale * dS K`` with ``P = exp(S - Lse)``,
    ``dS = P * (dO V^T - Delta)``.

    Grid: ``(cdiv(SQ, BLOCK_M), H, B)``; program ``(i, h, b)`` owns query rows ``[i*BLOCK_M, (i+1)*BLOCK_M)``
    of head ``h`` of batch ``b`` and streams the K/V blocks of its kv head (skipping, when causal, the blocks after the
    diagonal). A kernel of its own rather than atomics from the key-side kernel: deterministic.
    """
    LOG2E = 1.4426950408889634
    start_m = tl.program_id(0) * BLOCK_M
    off_h = tl.program_id(1)
    off_b = tl.program_id(2)
    bh = off_b * H + off_h
    off_hkv = off_h // (H // H_KV)
    kv_bh = (off_b * H_KV + off_hkv).to(tl.int64)
    k_base = K + kv_bh * SK * D
    v_base = V + kv_bh * SK * DV
    m_base = Mask + off_b.to(tl.int64) * stride_mb + off_h.to(tl.int64) * stride_mh
    bh64 = bh.to(tl.int64)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_valid = offs_m < SQ
    q = tl.load(Q + bh64 * SQ * D + offs_m[:, None] * D + offs_d[None, :],
                mask=m_valid[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DOut + bh64 * SQ * DV + offs_m[:, None] * DV + offs_dv[None, :],
                 mask=m_valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
    lse = tl.load(Lse + bh64 * SQ + offs_m, mask=m_valid, other=0.0)
    delta = tl.load(Delta + bh64 * SQ + offs_m, mask=m_valid, other=0.0)
    # a row with lse = -inf saw no key: subtracting +inf makes all its P exactly 0 (and not NaN)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    qk_scale = scale * LOG2E
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if CAUSAL:
        hi = tl.minimum(SK, start_m + BLOCK_M + SK - SQ)
    else:
        hi = SK
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < SK
        k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :],
                    mask=n_valid[:, None] & (offs_d[None, :] < D), other=0.0)
        v = tl.load(v_base + offs_n[:, None] * DV + offs_dv[None, :],
                    mask=n_valid[:, None] & (offs_dv[None, :] < DV), other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        keep = m_valid[:, None] & n_valid[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None] + (SK - SQ))
        if MASK_KIND != 0:
            mv = tl.load(m_base + offs_m[:, None] * stride_mm + offs_n[None, :] * stride_mn, mask=keep, other=0)
            if MASK_KIND == 1:
                keep = keep & (mv != 0)
            else:
                s = s + mv.to(tl.float32) * LOG2E
        s = tl.where(keep, s, float("-inf"))
        p = tl.exp2(s - lse2[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)

    dq = dq * scale
    tl.store(DQ + bh64 * SQ * D + offs_m[:, None] * D + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=m_valid[:, None] & (offs_d[None, :] < D))


def _source(fn) -> str:
    """A kernel's source as a module of its own (what TritonKernel.source holds)."""
    return "import triton.language as tl\n\n\n" + textwrap.dedent(inspect.getsource(fn))


# ---------------------------------------------------------------------------------------------------------
# Block sizes
# ---------------------------------------------------------------------------------------------------------

def _pow2(n: int) -> int:
    # tl.dot wants every dimension >= 16; tl.arange wants powers of two
    return max(16, 1 << (max(n, 1) - 1).bit_length())


def fwd_config(head_dim: int, dtype: str) -> dict:
    """Block sizes and launch shape of the forward kernel for a head dim (the larger of D and Dv) and type.

    Chosen so that neither sm_80 nor sm_90 spills registers (checked with ``ptxas -v``) and the shared memory
    fits (sm_80: 163 KiB per block). f16/bf16 use the tensor cores: 128 query rows by 64 keys, 8 warps (two
    warpgroups on sm_90), 3 pipeline stages; past d=128 the tiles halve. f32 in IEEE mode has no tensor
    cores (the dots are FMA loops that want their operands in registers): small query blocks, 8 warps.
    """
    d = _pow2(head_dim)
    if dtype == "f32":
        if d <= 64:
            return dict(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2)
        return dict(BLOCK_M=16, BLOCK_N=32, num_warps=8, num_stages=2 if d <= 128 else 1)
    if d <= 128:
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)
    return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)


def bwd_config(head_dim: int, dtype: str) -> dict:
    """Block sizes and launch shapes of the backward kernels (same criteria as :func:`fwd_config`).

    ``*_KV``: the key-side kernel holds BLOCK_N_KV keys (K, V, dK, dV) and streams BLOCK_M_KV query rows;
    ``*_Q``: the query-side kernel holds BLOCK_M_Q rows (Q, dO, dQ) and streams BLOCK_N_Q keys -- the split
    of the FlashAttention-2 / Triton-tutorial backward.
    """
    d = _pow2(head_dim)

    def cfg(m_kv, n_kv, w_kv, s_kv, m_q, n_q, w_q, s_q):
        return dict(BLOCK_M_KV=m_kv, BLOCK_N_KV=n_kv, WARPS_KV=w_kv, STAGES_KV=s_kv,
                    BLOCK_M_Q=m_q, BLOCK_N_Q=n_q, WARPS_Q=w_q, STAGES_Q=s_q)

    if dtype == "f32":
        if d <= 64:
            return cfg(16, 64, 8, 2, 64, 32, 8, 2)
        if d <= 128:
            return cfg(16, 32, 8, 1, 32, 32, 8, 1)
        return cfg(16, 32, 8, 1, 32, 16, 8, 1)
    if d <= 64:
        return cfg(32, 128, 8, 3, 128, 32, 8, 3)
    if d <= 128:
        return cfg(32, 64, 8, 2, 64, 32, 4, 2)
    return cfg(16, 32, 4, 1, 32, 16, 4, 1)


# ---------------------------------------------------------------------------------------------------------
# Programs
# ---------------------------------------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


class _Shapes:
    """Checked shapes of one attention call: q [B,H,Sq,D], k [B,Hkv,Sk,D], v [B,Hkv,Sk,Dv]."""

    def __init__(self, q: Spec, k: Spec, v: Spec, mask: Spec | None):
        (qs, qt), (ks, kt), (vs, vt) = q, k, v
        if not (len(qs) == len(ks) == len(vs) == 4):
            raise ValueError(f"attention wants rank-4 q, k, v; got {qs}, {ks}, {vs}")
        if not (qt == kt == vt) or qt not in _DATA_TYPES:
            raise ValueError(f"attention wants q, k, v of one type among {_DATA_TYPES}; got {qt}, {kt}, {vt}")
        self.B, self.H, self.SQ, self.D = (int(x) for x in qs)
        _, self.H_KV, self.SK, _ = (int(x) for x in ks)
        self.DV = int(vs[3])
        if ks[0] != self.B or ks[3] != self.D or list(vs[:3]) != list(ks[:3]):
            raise ValueError(f"attention shapes do not agree: q {qs}, k {ks}, v {vs}")
        if self.H_KV < 1 or self.H % self.H_KV:
            raise ValueError(f"k/v heads ({self.H_KV}) must divide q heads ({self.H})")
        self.dtype = qt
        self.q, self.k, self.v = [self.B, self.H, self.SQ, self.D], list(ks), list(vs)
        self.out = [self.B, self.H, self.SQ, self.DV]
        self.lse = [self.B, self.H, self.SQ]
        self.mask = mask
        self.mask_kind = 0
        self.mask_strides = [0, 0, 0, 0]
        if mask is not None:
            ms, mt = list(mask[0]), mask[1]
            if mt not in _MASK_TYPES:
                raise ValueError(f"attention mask type {mt} not among {_MASK_TYPES}")
            full = [self.B, self.H, self.SQ, self.SK]
            padded = [1] * (4 - len(ms)) + [int(x) for x in ms]
            if len(ms) > 4 or any(m not in (1, f) for m, f in zip(padded, full)):
                raise ValueError(f"attention mask {ms} does not broadcast to {full}")
            dense, acc = [0] * 4, 1
            for i in range(3, -1, -1):
                dense[i] = acc
                acc *= padded[i]
            # broadcast dims get stride 0: the kernels index the mask as if it were [B,H,Sq,Sk]
            self.mask_strides = [0 if padded[i] == 1 else dense[i] for i in range(4)]
            self.mask_kind = 1 if mt == "i1" else 2

    def check(self, name: str, spec: Spec, shape, dtype: str) -> None:
        if list(spec[0]) != list(shape) or spec[1] != dtype:
            raise ValueError(f"attention {name}: expected {dtype} {list(shape)}, got {spec[1]} {list(spec[0])}")

    def stride_type(self) -> str:
        # mask strides are multiplied with in-head row/column indices: 64-bit once the mask is that large
        return "i64" if self.mask is not None and _numel(self.mask[0]) > _I32_MAX else "i32"

    def common_args(self, scale: float) -> list[dict]:
        return [{"value": float(scale)}, {"value": self.H}, {"value": self.H_KV}, {"value": self.SQ},
                {"value": self.SK}] + [{"value": s} for s in self.mask_strides]

    def common_signature(self) -> dict:
        st = self.stride_type()
        return {"scale": "fp32", "H": "i32", "H_KV": "i32", "SQ": "i32", "SK": "i32", "stride_mb": st,
                "stride_mh": st, "stride_mm": st, "stride_mn": st}

    def common_constexprs(self, causal: bool, allow_tf32: bool) -> dict:
        return {"D": self.D, "DV": self.DV, "BLOCK_D": _pow2(self.D), "BLOCK_DV": _pow2(self.DV),
                "CAUSAL": bool(causal), "MASK_KIND": self.mask_kind,
                # f32 dots are exact-IEEE unless TF32 is asked for; f16/bf16 ignore it (tensor cores anyway)
                "PRECISION": "tf32" if allow_tf32 else "ieee"}


def unsupported_reason(q: Spec, k: Spec, v: Spec, mask: Spec | None) -> str | None:
    """Why :func:`fwd_program`/:func:`bwd_program` would refuse these operands (for a backend's claim), or
    None: q, k, v rank 4 of one type among f32/f16/bf16, k/v heads dividing q heads, a mask of i1 or a float
    type broadcastable to ``[B,H,Sq,Sk]``."""
    try:
        _Shapes(q, k, v, mask)
    except ValueError as e:
        return str(e)
    return None


def _ptr(dtype: str) -> str:
    return "*" + _TRITON_TYPES[dtype]


def _launch(kernel: int, grid, args) -> Launch | None:
    grid = [int(g) for g in grid]
    return Launch(kind="triton", kernel=kernel, grid=grid, args=args) if all(grid) else None


def fwd_program(q: Spec, k: Spec, v: Spec, mask: Spec | None, out: Spec, lse: Spec, *, scale: float,
                causal: bool, allow_tf32: bool = False, config: dict | None = None) -> Program:
    """The program of one ``byteir.flash_attn_fwd``: buffers q, k, v[, mask] (inputs), out, lse (outputs);
    one launch of :func:`attn_fwd`. ``config`` overrides entries of :func:`fwd_config` (tests use small
    blocks to cover multi-block paths on small shapes)."""
    sh = _Shapes(q, k, v, mask)
    sh.check("out", out, sh.out, sh.dtype)
    sh.check("lse", lse, sh.lse, "f32")
    cfg = {**fwd_config(max(sh.D, sh.DV), sh.dtype), **(config or {})}
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]

    buffers = [BufferDecl("input", sh.q, sh.dtype, index=0), BufferDecl("input", sh.k, sh.dtype, index=1),
               BufferDecl("input", sh.v, sh.dtype, index=2)]
    if mask is not None:
        buffers.append(BufferDecl("input", list(mask[0]), mask[1], index=3))
    mask_buf = 3 if mask is not None else 0  # no mask: q stands in (MASK_KIND=0 never reads it)
    out_buf = len(buffers)
    buffers += [BufferDecl("output", sh.out, sh.dtype, index=0), BufferDecl("output", sh.lse, "f32", index=1)]

    dt = _ptr(sh.dtype)
    signature = {"Q": dt, "K": dt, "V": dt, "Mask": _ptr(mask[1]) if mask is not None else dt, "Out": dt,
                 "Lse": "*fp32", **sh.common_signature()}
    kernel = TritonKernel(name="attn_fwd", source=_source(attn_fwd), signature=signature,
                          constexprs={**sh.common_constexprs(causal, allow_tf32), "BLOCK_M": bm, "BLOCK_N": bn},
                          num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    args = [{"buf": 0}, {"buf": 1}, {"buf": 2}, {"buf": mask_buf}, {"buf": out_buf}, {"buf": out_buf + 1}]
    # heads and batch on grid y/z (each at most 65535), query blocks on x: programs of one head run together
    launch = _launch(0, (_cdiv(sh.SQ, bm), sh.H, sh.B), args + sh.common_args(scale))
    return Program(buffers=buffers, launches=[launch] if launch else [], kernels=[kernel])


def bwd_program(dout: Spec, q: Spec, k: Spec, v: Spec, mask: Spec | None, out: Spec, lse: Spec, dq: Spec,
                dk: Spec, dv: Spec, *, scale: float, causal: bool, allow_tf32: bool = False,
                config: dict | None = None) -> Program:
    """The program of one ``byteir.flash_attn_bwd``: inputs dout, q, k, v[, mask], out, lse; outputs dq,
    dk, dv; one f32 scratch ``delta [B,H,Sq]``. Launches :func:`attn_bwd_delta`, then :func:`attn_bwd_dkdv`
    and :func:`attn_bwd_dq` (independent of each other). ``config`` overrides entries of :func:`bwd_config`."""
    sh = _Shapes(q, k, v, mask)
    for name, spec, shape, dtype in (("dout", dout, sh.out, sh.dtype), ("out", out, sh.out, sh.dtype),
                                     ("lse", lse, sh.lse, "f32"), ("dq", dq, sh.q, sh.dtype),
                                     ("dk", dk, sh.k, sh.dtype), ("dv", dv, sh.v, sh.dtype)):
        sh.check(name, spec, shape, dtype)
    cfg = {**bwd_config(max(sh.D, sh.DV), sh.dtype), **(config or {})}

    dt = sh.dtype
    buffers = [BufferDecl("input", sh.out, dt, index=0),  # dout
               BufferDecl("input", sh.q, dt, index=1), BufferDecl("input", sh.k, dt, index=2),
               BufferDecl("input", sh.v, dt, index=3)]
    if mask is not None:
        buffers.append(BufferDecl("input", list(mask[0]), mask[1], index=4))
    n_in = len(buffers)
    buffers += [BufferDecl("input", sh.out, dt, index=n_in), BufferDecl("input", sh.lse, "f32", index=n_in + 1)]
    DOUT, Q, K, V, MASK = 0, 1, 2, 3, (4 if mask is not None else 1)  # no mask: q stands in (never read)
    OUT, LSE = n_in, n_in + 1
    DQ, DK, DV = n_in + 2, n_in + 3, n_in + 4
    buffers += [BufferDecl("output", sh.q, dt, index=0), BufferDecl("output", sh.k, dt, index=1),
                BufferDecl("output", sh.v, dt, index=2)]
    DELTA = len(buffers)
    buffers.append(BufferDecl("scratch", sh.lse, "f32", offset=0))
    scratch_bytes = _cdiv(4 * _numel(sh.lse), _SCRATCH_ALIGN) * _SCRATCH_ALIGN

    p = _ptr(dt)
    mp = _ptr(mask[1]) if mask is not None else p
    # the delta kernel is a plain row reduction: about 4096 elements of Out and DOut per program
    delta_rows = min(128, max(16, 4096 // _pow2(sh.DV)))
    common = sh.common_constexprs(causal, allow_tf32)
    kernels = [
        TritonKernel(name="attn_bwd_delta", source=_source(attn_bwd_delta),
                     signature={"Out": p, "DOut": p, "Delta": "*fp32", "SQ": "i32"},
                     constexprs={"DV": sh.DV, "BLOCK_DV": _pow2(sh.DV), "BLOCK_M": delta_rows},
                     num_warps=4, num_stages=1),
        TritonKernel(name="attn_bwd_dkdv", source=_source(attn_bwd_dkdv),
                     signature={"Q": p, "K": p, "V": p, "Mask": mp, "DOut": p, "Lse": "*fp32", "Delta": "*fp32",
                                "DK": p, "DVout": p, **sh.common_signature()},
                     constexprs={**common, "BLOCK_M": cfg["BLOCK_M_KV"], "BLOCK_N": cfg["BLOCK_N_KV"]},
                     num_warps=cfg["WARPS_KV"], num_stages=cfg["STAGES_KV"]),
        TritonKernel(name="attn_bwd_dq", source=_source(attn_bwd_dq),
                     signature={"Q": p, "K": p, "V": p, "Mask": mp, "DOut": p, "Lse": "*fp32", "Delta": "*fp32",
                                "DQ": p, **sh.common_signature()},
                     constexprs={**common, "BLOCK_M": cfg["BLOCK_M_Q"], "BLOCK_N": cfg["BLOCK_N_Q"]},
                     num_warps=cfg["WARPS_Q"], num_stages=cfg["STAGES_Q"]),
    ]
    common_args = sh.common_args(scale)
    launches = [
        _launch(0, (_cdiv(sh.SQ, delta_rows), sh.H, sh.B),
                [{"buf": OUT}, {"buf": DOUT}, {"buf": DELTA}, {"value": sh.SQ}]),
        _launch(1, (_cdiv(sh.SK, cfg["BLOCK_N_KV"]), sh.H_KV, sh.B),
                [{"buf": b} for b in (Q, K, V, MASK, DOUT, LSE, DELTA, DK, DV)] + common_args),
        _launch(2, (_cdiv(sh.SQ, cfg["BLOCK_M_Q"]), sh.H, sh.B),
                [{"buf": b} for b in (Q, K, V, MASK, DOUT, LSE, DELTA, DQ)] + common_args),
    ]
    return Program(buffers=buffers, launches=[x for x in launches if x], kernels=kernels,
                   scratch_bytes=scratch_bytes)
