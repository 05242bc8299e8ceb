"""Convolutions for the cuda backend: ``stablehlo.convolution`` as an implicit-GEMM Triton kernel.

A convolution is a matrix product whose operands are never materialized: per group ``g``,

    out[m, j] = sum_k A[m, k] * B[k, j]

with ``m`` an output pixel ``(n, od, oh, ow)`` (M = batch * output spatial size), ``j`` an output feature of the
group (N = out features / groups) and ``k`` an input feature of the group and a kernel tap ``(ic, kd, kh, kw)``
(K = in features / groups * kernel spatial size). ``A[m, k]`` is the input at ``(n, g*CPG + ic, od*s - pad +
kd*dil, ...)`` -- 0 in the padding -- and ``B[k, j]`` the kernel at ``(g*OCPG + j, ic, kd, kh, kw)``. The kernel
(:func:`conv_fwd`) loads tiles of A and B straight from the input and kernel tensors with index arithmetic and
masked loads, multiplies them with ``tl.dot`` in f32, and casts at the store.

Layouts are StableHLO's dimension numbers: every tensor is addressed through its row-major strides along the
dims those numbers name, so NCHW/OIHW (PyTorch), NHWC with OIHW kernels (byteir's channels-last rewrite),
NHWC/HWIO and any other permutation are all read in place. 1-D, 2-D and 3-D convolutions run the same kernel:
missing spatial dims are unit dims (size 1, stride 1, no padding), whose index arithmetic folds away.

Two ways of walking K (the ``TAP_MAJOR`` constexpr):

* tap-major (in features per group >= 16): the loop runs over the kernel taps and, inside a tap, over blocks
  of ``BLOCK_K`` input features. The tap is one scalar per step, so a pixel's input coordinates and padding
  test are per row of the A tile, and the features of one pixel are contiguous in a channels-last input:
  vector loads. When the kernel tensor is contiguous neither along its in- nor its out-feature dim (OIHW
  with taps > 1: what byteir's channels-last rewrite leaves), a first launch (:func:`conv_weight_pack`)
  copies it into a scratch ``[KD, KH, KW, I, O]`` tensor, so that the B tile loads are contiguous along N.
* flat (few input features: an RGB stem, depthwise convolutions): k runs over all of ``(ic, taps)`` in
  ``BLOCK_K`` chunks and is decoded per element; a tap-major walk would pad each tap's 1..15 features to 16.

Not supported (:func:`unsupported_reason`): ``lhs_dilation`` (transposed convolutions), ``batch_group_count``
!= 1, negative padding, window reversal, operand types other than f32/f16/bf16 or lhs and rhs of different
types. The result may have another of those three types (the cast happens at the store).

This module does not import Triton (see attention.py): the kernels are plain functions whose source text is
what :class:`TritonKernel` carries, one function each.
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

_TRITON_TYPES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
_I32_MAX = 2**31 - 1
_GRID_YZ_MAX = 65535  # CUDA's limit on grid y and z
_SCRATCH_ALIGN = 256
#: Output tiles that fill an sm_80/sm_90 GPU once (108 / 132 SMs): with fewer, conv_config shrinks the tiles.
_ENOUGH_TILES = 128


# ---------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------

def conv_fwd(X, W, Y,
             BATCH: tl.constexpr, CPG: tl.constexpr, OCPG: tl.constexpr, K_STEPS: tl.constexpr,
             ID: tl.constexpr, IH: tl.constexpr, IW: tl.constexpr,
             KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
             OD: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr,
             STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
             PAD_D: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,
             DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,
             XS_N: tl.constexpr, XS_C: tl.constexpr, XS_D: tl.constexpr, XS_H: tl.constexpr, XS_W: tl.constexpr,
             WS_O: tl.constexpr, WS_I: tl.constexpr, WS_D: tl.constexpr, WS_H: tl.constexpr, WS_W: tl.constexpr,
             YS_N: tl.constexpr, YS_C: tl.constexpr, YS_D: tl.constexpr, YS_H: tl.constexpr, YS_W: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
             TAP_MAJOR: tl.constexpr, CHANNELS_INNER: tl.constexpr, INDEX_64: tl.constexpr,
             PRECISION: tl.constexpr):
    """Implicit-GEMM convolution: ``Y[n, g*OCPG + j, od, oh, ow] = sum over ic < CPG and taps (kd, kh, kw) of
    X[n, g*CPG + ic, od*STRIDE_D - PAD_D + kd*DIL_D, ...] * W[g*OCPG + j, ic, kd, kh, kw]`` (input reads
    outside ``[0, ID) x [0, IH) x [0, IW)`` are the padding: 0), accumulated in f32.

    Grid: ``(cdiv(M, BLOCK_M), cdiv(OCPG, BLOCK_N), groups)``; program ``(i, j, g)`` computes output pixels
    ``[i*BLOCK_M, (i+1)*BLOCK_M)`` (pixel ``m`` is ``(n, od, oh, ow)``, ``ow`` fastest) times features
    ``[j*BLOCK_N, (j+1)*BLOCK_N)`` of group ``g``. Pixel blocks are on x: programs running together share the
    B (kernel) tile of one feature block.

    Every size and stride is a constexpr: ``XS_*`` / ``WS_*`` / ``YS_*`` are X's / W's / Y's element strides
    along batch/feature, feature-in, spatial dims (``WS_O``: out feature, ``WS_I``: in feature); ``K_STEPS`` is
    the number of K iterations (``TAPS * cdiv(CPG, BLOCK_K)`` tap-major, ``cdiv(CPG * TAPS, BLOCK_K)`` flat,
    0 for an empty reduction).

    K is walked tap-major (``TAP_MAJOR``: one tap per step, ``BLOCK_K`` features of it) or flat (``BLOCK_K``
    consecutive k, ``k = tap*CPG + ic`` when ``CHANNELS_INNER`` else ``ic*taps + tap``: the order X is
    contiguous in); see the module docstring. Tiles are at least 16 in each dim (``tl.dot``'s minimum): rows,
    features and k past the ends load as 0 and are not stored.
    """
    M = BATCH * OD * OH * OW
    TAPS = KD * KH * KW
    C_STEPS = (CPG + BLOCK_K - 1) // BLOCK_K  # tap-major: feature blocks per tap

    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    ar_k = tl.arange(0, BLOCK_K)
    if INDEX_64:  # a tensor of 2**31 elements or more: every offset computed from here on is 64-bit
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
        g = g.to(tl.int64)
        ar_k = ar_k.to(tl.int64)

    # output pixels of this tile (all index math below is on non-negative values before the window shift:
    # // and % round the same on the GPU and in the host interpreter)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    ow = offs_m % OW
    t = offs_m // OW
    oh = t % OH
    t = t // OH
    od = t % OD
    nb = t // OD
    # where each pixel's window starts in the input (negative inside the low padding)
    d0 = od * STRIDE_D - PAD_D
    h0 = oh * STRIDE_H - PAD_H
    w0 = ow * STRIDE_W - PAD_W
    x_base = X + g * CPG * XS_C  # this group's first input feature

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < OCPG
    oc = g * OCPG + offs_n  # output features (StableHLO: the groups split the kernel's out-feature dim)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, K_STEPS):
        if TAP_MAJOR:
            tap = kk // C_STEPS  # a scalar: the pixel's coordinates and padding test are per row
            ic = (kk % C_STEPS) * BLOCK_K + ar_k
            k_ok = ic < CPG
            kw = tap % KW
            kh = (tap // KW) % KH
            kd = tap // (KW * KH)
            di = d0 + kd * DIL_D
            hi = h0 + kh * DIL_H
            wi = w0 + kw * DIL_W
            row_ok = m_ok & (di >= 0) & (di < ID) & (hi >= 0) & (hi < IH) & (wi >= 0) & (wi < IW)
            x_off = (nb * XS_N + di * XS_D + hi * XS_H + wi * XS_W)[:, None] + (ic * XS_C)[None, :]
            x_ok = row_ok[:, None] & k_ok[None, :]
        else:
            k = kk * BLOCK_K + ar_k
            k_ok = k < CPG * TAPS
            if CHANNELS_INNER:
                ic = k % CPG
                tap = k // CPG
            else:
                ic = k // TAPS
                tap = k % TAPS
            kw = tap % KW
            kh = (tap // KW) % KH
            kd = tap // (KW * KH)
            di = d0[:, None] + (kd * DIL_D)[None, :]
            hi = h0[:, None] + (kh * DIL_H)[None, :]
            wi = w0[:, None] + (kw * DIL_W)[None, :]
            x_ok = (m_ok[:, None] & k_ok[None, :] & (di >= 0) & (di < ID) & (hi >= 0) & (hi < IH)
                    & (wi >= 0) & (wi < IW))
            x_off = (nb * XS_N)[:, None] + (ic * XS_C)[None, :] + di * XS_D + hi * XS_H + wi * XS_W
        w_off = (ic * WS_I + kd * WS_D + kh * WS_H + kw * WS_W)[:, None] + (oc * WS_O)[None, :]
        a = tl.load(x_base + x_off, mask=x_ok, other=0.0)
        b = tl.load(W + w_off, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    y_off = (nb * YS_N + od * YS_D + oh * YS_H + ow * YS_W)[:, None] + (oc * YS_C)[None, :]
    tl.store(Y + y_off, acc.to(Y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def conv_weight_pack(W, P,
                     NUMEL: tl.constexpr, CPG: tl.constexpr, C_OUT: tl.constexpr,
                     KH: tl.constexpr, KW: tl.constexpr,
                     WS_O: tl.constexpr, WS_I: tl.constexpr, WS_D: tl.constexpr, WS_H: tl.constexpr,
                     WS_W: tl.constexpr, BLOCK: tl.constexpr, INDEX_64: tl.constexpr):
    """Copy the kernel tensor into the layout the tap-major convolution reads best: ``P[kd, kh, kw, ic, oc] =
    W[oc, ic, kd, kh, kw]`` (W addressed through its strides ``WS_*``), out features contiguous.

    Grid: ``(cdiv(NUMEL, BLOCK),)``; program ``i`` writes P's elements ``[i*BLOCK, (i+1)*BLOCK)``.
    """
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    ok = offs < NUMEL
    oc = offs % C_OUT
    t = offs // C_OUT
    ic = t % CPG
    t = t // CPG
    kw = t % KW
    t = t // KW
    kh = t % KH
    kd = t // KH
    v = tl.load(W + oc * WS_O + ic * WS_I + kd * WS_D + kh * WS_H + kw * WS_W, mask=ok)
    tl.store(P + offs, v, mask=ok)


def _source(fn) -> str:
    """A kernel's source as a module of its own (what TritonKernel.source holds)."""
    return "import triton.language as tl\n\n\n" + textwrap.dedent(inspect.getsource(fn))


# ---------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int, lo: int = 16) -> int:
    # tl.dot wants every tile dim >= 16; tl.arange wants powers of two
    return max(lo, 1 << (max(n, 1) - 1).bit_length())


def _strides(shape) -> list[int]:
    out, acc = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        out[i] = acc
        acc *= int(shape[i])
    return out


class _Conv:
    """One convolution, checked and normalized to 3 spatial dims (leading unit dims for 1-D and 2-D)."""

    def __init__(self, lhs: Spec, rhs: Spec, out: Spec, input_dims, kernel_dims, output_dims, strides, padding,
                 rhs_dilation, feature_group_count, lhs_dilation, batch_group_count, window_reversal):
        (xs, xt), (ws, wt), (ys, yt) = [([int(d) for d in shape], dtype) for shape, dtype in (lhs, rhs, out)]
        rank = len(xs)
        nsp = rank - 2
        if not 1 <= nsp <= 3 or len(ws) != rank or len(ys) != rank:
            raise ValueError(f"convolution wants lhs, rhs and result of one rank among 3, 4, 5; got {xs}, {ws}, "
                             f"{ys}")
        for name, dims in (("input", input_dims), ("kernel", kernel_dims), ("output", output_dims)):
            if sorted(int(d) for d in dims) != list(range(rank)):
                raise ValueError(f"convolution {name} dimension numbers {list(dims)} are not a permutation of "
                                 f"0..{rank - 1}")
        if xt not in _TRITON_TYPES or wt != xt or yt not in _TRITON_TYPES:
            raise ValueError(f"convolution wants lhs and rhs of one type among {tuple(_TRITON_TYPES)} and a "
                             f"result among them; got {xt}, {wt} -> {yt}")
        strides = [1] * nsp if strides is None else [int(s) for s in strides]
        dil = [1] * nsp if rhs_dilation is None else [int(d) for d in rhs_dilation]
        pad = [(0, 0)] * nsp if padding is None else [(int(lo), int(hi)) for lo, hi in padding]
        if len(strides) != nsp or len(dil) != nsp or len(pad) != nsp:
            raise ValueError(f"convolution window attributes want {nsp} entries: strides {strides}, "
                             f"padding {pad}, rhs_dilation {dil}")
        if lhs_dilation is not None and any(int(d) != 1 for d in lhs_dilation):
            raise ValueError(f"convolution with lhs_dilation {list(lhs_dilation)} (a transposed convolution) "
                             "is not supported")
        if int(batch_group_count) != 1:
            raise ValueError(f"convolution with batch_group_count {batch_group_count} is not supported")
        if window_reversal is not None and any(window_reversal):
            raise ValueError("convolution with window reversal is not supported")
        if any(s < 1 for s in strides) or any(d < 1 for d in dil):
            raise ValueError(f"convolution strides {strides} and rhs_dilation {dil} must be >= 1")
        if any(lo < 0 or hi < 0 for lo, hi in pad):
            raise ValueError(f"convolution with negative padding {pad} is not supported")

        groups = int(feature_group_count)
        xb, xc, *xsp = (int(d) for d in input_dims)
        wo, wi, *wsp = (int(d) for d in kernel_dims)
        yb, yc, *ysp = (int(d) for d in output_dims)
        c_in, c_out = xs[xc], ws[wo]
        if groups < 1 or c_in % groups or c_out % groups or ws[wi] * groups != c_in:
            raise ValueError(f"convolution features do not agree: lhs {c_in}, kernel in {ws[wi]} and out {c_out}, "
                             f"feature_group_count {groups}")
        if groups > _GRID_YZ_MAX:
            raise ValueError(f"convolution with {groups} groups: at most {_GRID_YZ_MAX}")
        if ys[yb] != xs[xb] or ys[yc] != c_out:
            raise ValueError(f"convolution result {ys} does not agree with lhs {xs} and kernel {ws}")
        for i in range(nsp):
            size, k = xs[xsp[i]], ws[wsp[i]]
            # StableHLO's output size: the number of windows of the dilated kernel in the padded input
            padded, window = size + pad[i][0] + pad[i][1], (k - 1) * dil[i] + 1 if k > 0 else 0
            want = (padded - window) // strides[i] + 1 if 0 < padded and window <= padded else 0
            if ys[ysp[i]] != want:
                raise ValueError(f"convolution result {ys}: spatial dim {i} should be {want} (input {size}, "
                                 f"padding {pad[i]}, kernel {k}, stride {strides[i]}, dilation {dil[i]})")

        self.dtype, self.out_dtype = xt, yt
        self.lhs, self.rhs, self.out = xs, ws, ys
        self.groups, self.cpg, self.ocpg, self.c_out = groups, ws[wi], c_out // groups, c_out
        self.batch = xs[xb]
        unit = 3 - nsp  # leading unit spatial dims
        xst, wst, yst = _strides(xs), _strides(ws), _strides(ys)
        self.in_sp = [1] * unit + [xs[d] for d in xsp]
        self.k_sp = [1] * unit + [ws[d] for d in wsp]
        self.out_sp = [1] * unit + [ys[d] for d in ysp]
        self.stride = [1] * unit + strides
        self.pad = [0] * unit + [lo for lo, _ in pad]
        self.dil = [1] * unit + dil
        self.x_strides = [xst[xb], xst[xc]] + [0] * unit + [xst[d] for d in xsp]
        self.w_strides = [wst[wo], wst[wi]] + [0] * unit + [wst[d] for d in wsp]
        self.y_strides = [yst[yb], yst[yc]] + [0] * unit + [yst[d] for d in ysp]
        self.M = self.batch * math.prod(self.out_sp)
        self.taps = math.prod(self.k_sp)
        self.index_64 = max(math.prod(xs), math.prod(ws), math.prod(ys)) > _I32_MAX


def unsupported_reason(lhs: Spec, rhs: Spec, out: Spec, *, input_dims, kernel_dims, output_dims, strides=None,
                       padding=None, rhs_dilation=None, feature_group_count=1, lhs_dilation=None,
                       batch_group_count=1, window_reversal=None) -> str | None:
    """Why :func:`conv_program` would refuse this convolution (for a backend's claim: it then falls back to
    another target), or None. The arguments are :func:`conv_program`'s, plus the StableHLO attributes it
    does not support (``lhs_dilation`` other than 1s, ``batch_group_count`` other than 1, window reversal)."""
    try:
        _Conv(lhs, rhs, out, input_dims, kernel_dims, output_dims, strides, padding, rhs_dilation,
              feature_group_count, lhs_dilation, batch_group_count, window_reversal)
    except ValueError as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------------------------------------
# Block sizes
# ---------------------------------------------------------------------------------------------------------

def conv_config(M: int, ocpg: int, cpg: int, taps: int, groups: int, dtype: str) -> dict:
    """Tile sizes and launch shape of :func:`conv_fwd` for a GEMM of M pixels by ``ocpg`` features per group
    over ``cpg`` in features times ``taps`` kernel taps.

    f16/bf16 run on the tensor cores: up to 128 x 128 output tiles, K steps of up to 64, 8 warps (two
    warpgroups on sm_90) for the largest tile, 3 pipeline stages (at most 96 KiB of shared memory: fits
    sm_80's 163 KiB). f32 in IEEE mode has no tensor cores (``tl.dot`` becomes FMA loops with operands in
    registers): tiles up to 64 x 64, K steps of up to 32, 2 stages. Tiles shrink to the problem (a depthwise
    convolution has 16-wide feature tiles), and while the output has fewer tiles than about one wave on the
    GPU the M tile halves, then the N tile, down to 32 (a 7x7 layer at batch 1 still gets some parallelism).
    """
    tensor_cores = dtype != "f32"
    cap_mn, cap_k = (128, 64) if tensor_cores else (64, 32)
    tap_major = cpg >= 16
    if tap_major:
        # the block of features with the least padding per tap, the larger on a tie (CPG=96: 32, not 64)
        bk = min((b for b in (16, 32, 64) if b <= cap_k), key=lambda b: (_cdiv(cpg, b) * b, -b))
    else:
        bk = 32 if cpg * taps >= 32 else 16
    bn = min(cap_mn, _pow2(ocpg))
    bm = min(cap_mn, _pow2(M))
    while bm > 32 and _cdiv(M, bm) * _cdiv(ocpg, bn) * groups < _ENOUGH_TILES:
        bm //= 2
    while bn > 32 and _cdiv(M, bm) * _cdiv(ocpg, bn) * groups < _ENOUGH_TILES:
        bn //= 2
    big = bm * bn >= (128 * 128 if tensor_cores else 64 * 64)
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, TAP_MAJOR=tap_major,
                num_warps=8 if big else 4, num_stages=3 if tensor_cores else 2)


# ---------------------------------------------------------------------------------------------------------
# Program
# ---------------------------------------------------------------------------------------------------------

def conv_program(lhs: Spec, rhs: Spec, out: Spec, *, input_dims, kernel_dims, output_dims, strides=None,
                 padding=None, rhs_dilation=None, feature_group_count: int = 1, lhs_dilation=None,
                 batch_group_count: int = 1, window_reversal=None, allow_tf32: bool = False,
                 config: dict | None = None) -> Program:
    """The program of one ``stablehlo.convolution``: buffers lhs (input 0), rhs (input 1), out (output 0),
    and, when the kernel tensor is repacked, one scratch ``[KD, KH, KW, I, O]`` copy of it.

    ``lhs``/``rhs``/``out`` are ``(shape, dtype)``; ``input_dims`` = ``[batch, feature, *spatial]`` positions in
    lhs, ``kernel_dims`` = ``[out feature, in feature, *spatial]`` in rhs, ``output_dims`` = ``[batch,
    feature, *spatial]`` in out (StableHLO's dimension numbers); ``strides``, ``padding`` (``(lo, hi)``
    pairs), ``rhs_dilation`` per spatial dim (default 1, 0, 1). Raises ValueError where
    :func:`unsupported_reason` gives a reason. ``allow_tf32``: f32 dots on the TF32 tensor cores (default
    exact IEEE f32). ``config`` overrides entries of :func:`conv_config` (and ``PACK``: repack the kernel
    tensor or not); tests use it for small tiles.
    """
    c = _Conv(lhs, rhs, out, input_dims, kernel_dims, output_dims, strides, padding, rhs_dilation,
              feature_group_count, lhs_dilation, batch_group_count, window_reversal)
    cfg = {**conv_config(c.M, c.ocpg, c.cpg, c.taps, c.groups, c.dtype), **(config or {})}
    # the B tile is contiguous along neither of its dims (OIHW with taps > 1): repack it (see module docstring)
    w_o, w_i = c.w_strides[0], c.w_strides[1]
    pack = cfg.pop("PACK", cfg["TAP_MAJOR"] and w_o != 1 and w_i != 1)
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]

    buffers = [BufferDecl("input", c.lhs, c.dtype, index=0), BufferDecl("input", c.rhs, c.dtype, index=1),
               BufferDecl("output", c.out, c.out_dtype, index=0)]
    kernels, launches, scratch_bytes = [], [], 0
    w_buf, w_strides = 1, c.w_strides
    dt = "*" + _TRITON_TYPES[c.dtype]
    if pack:
        kd, kh, kw = c.k_sp
        packed = [kd, kh, kw, c.cpg, c.c_out]
        numel = math.prod(packed)
        ps = _strides(packed)
        w_buf, w_strides = len(buffers), [1, ps[3], ps[0], ps[1], ps[2]]
        buffers.append(BufferDecl("scratch", packed, c.dtype, offset=0))
        scratch_bytes = _cdiv(numel * (4 if c.dtype == "f32" else 2), _SCRATCH_ALIGN) * _SCRATCH_ALIGN
        kernels.append(TritonKernel(
            name="conv_weight_pack", source=_source(conv_weight_pack), signature={"W": dt, "P": dt},
            constexprs={"NUMEL": numel, "CPG": c.cpg, "C_OUT": c.c_out, "KH": kh, "KW": kw,
                        "WS_O": c.w_strides[0], "WS_I": c.w_strides[1], "WS_D": c.w_strides[2],
                        "WS_H": c.w_strides[3], "WS_W": c.w_strides[4], "BLOCK": 1024,
                        "INDEX_64": c.index_64},
            num_warps=4, num_stages=1))
        if numel:
            launches.append(Launch(kind="triton", kernel=0, grid=[_cdiv(numel, 1024), 1, 1],
                                   args=[{"buf": 1}, {"buf": w_buf}]))

    if cfg["TAP_MAJOR"]:
        k_steps = c.taps * _cdiv(c.cpg, bk)
    else:
        k_steps = _cdiv(c.cpg * c.taps, bk)
    # a convolution without any k (no input feature or an empty window) writes zeros: K_STEPS is 0, and the
    # sizes of 1 below only keep the index arithmetic of its (never run) K loop free of divisions by 0
    constexprs = {"BATCH": c.batch, "CPG": max(c.cpg, 1), "OCPG": c.ocpg, "K_STEPS": k_steps}
    k_sp = [max(k, 1) for k in c.k_sp]
    for prefix, vals in (("I", c.in_sp), ("K", k_sp), ("O", c.out_sp)):
        constexprs.update({f"{prefix}{a}": v for a, v in zip("DHW", vals)})
    for prefix, vals in (("STRIDE_", c.stride), ("PAD_", c.pad), ("DIL_", c.dil)):
        constexprs.update({f"{prefix}{a}": v for a, v in zip("DHW", vals)})
    for prefix, vals in (("XS_", c.x_strides), ("WS_", w_strides), ("YS_", c.y_strides)):
        first = ("O", "I") if prefix == "WS_" else ("N", "C")
        constexprs.update({f"{prefix}{a}": v for a, v in zip(first + ("D", "H", "W"), vals)})
    constexprs.update({
        "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "TAP_MAJOR": bool(cfg["TAP_MAJOR"]),
        # flat walk: k in the order the input is contiguous in (features innermost for channels-last)
        "CHANNELS_INNER": c.x_strides[1] == 1,
        "INDEX_64": c.index_64,
        # f32 dots are exact IEEE unless TF32 is asked for; f16/bf16 ignore it (tensor cores anyway)
        "PRECISION": "tf32" if allow_tf32 else "ieee"})
    kernels.append(TritonKernel(name="conv_fwd", source=_source(conv_fwd),
                                signature={"X": dt, "W": dt, "Y": "*" + _TRITON_TYPES[c.out_dtype]},
                                constexprs=constexprs, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"]))
    grid = [_cdiv(c.M, bm), _cdiv(c.ocpg, bn), c.groups]
    if grid[1] > _GRID_YZ_MAX:
        raise ValueError(f"convolution with {c.ocpg} features per group: too many for BLOCK_N {bn}")
    if all(grid):
        launches.append(Launch(kind="triton", kernel=len(kernels) - 1, grid=grid,
                               args=[{"buf": 0}, {"buf": w_buf}, {"buf": 2}]))
    return Program(buffers=buffers, launches=launches, kernels=kernels, scratch_bytes=scratch_bytes)
