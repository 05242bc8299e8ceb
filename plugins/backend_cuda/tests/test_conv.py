"""Implicit-GEMM convolution kernel of the cuda backend, run through Triton's interpreter against float64 torch
convolutions: NCHW/OIHW, NHWC/HWIO, NHWC/OIHW (byteir's channels-last rewrite) and other layouts, strides,
asymmetric padding, dilation, groups and depthwise, 1x1, a ResNet stem, 1-D and 3-D, f32/f16/bf16, both K
walks (flat and tap-major, with and without the repacked kernel tensor). Plus: the kernels compile to cubin +
PTX for sm_80 and sm_90, and the PTX assembles with Triton's ptxas."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton: the kernels run on the host

import base64  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from byteir_backend_cuda import conv, triton_build  # noqa: E402
from byteir_backend_cuda.interpret import ProgramRunner  # noqa: E402
from byteir_backend_cuda.program import Program  # noqa: E402
from cuda_check import assemble  # noqa: E402

F = torch.nn.functional
needs_interpreter = pytest.mark.usefixtures("bf16_dot")  # fails, never skips, without the interpreter

MLIR = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
# several pixel, feature and k blocks even on small shapes
SMALL = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=2)
# |got - want| <= atol + rtol * |want|; f16/bf16: the inputs are exact in f64, the sums f32, the result rounded
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=1e-2, atol=1e-2),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


@pytest.fixture
def bf16_dot():
    """bf16 ``tl.dot`` in Triton's interpreter needs the provider's fix (triton_build._widen_bf16_dots), which
    ``interpreter_ready()`` installs."""
    assert triton_build.interpreter_ready() is None


def to_layout(t, canon: str, layout: str):
    """``t`` (dims named by ``canon``, e.g. NCHW) permuted to ``layout`` (e.g. NHWC), and the positions of
    ``canon``'s dims in it (StableHLO's dimension numbers, in canon's order)."""
    dims = [layout.index(ch) for ch in canon]
    return t.permute([canon.index(ch) for ch in layout]).contiguous(), dims


def reference(x, w, stride, padding, dilation, groups):
    """f64 convolution of canonical x [N,C,*sp] and w [O,I,*sp]; padding (lo, hi) per spatial dim."""
    flat = [p for lo_hi in reversed(padding) for p in lo_hi]  # F.pad wants the last dim first
    x = F.pad(x.double(), flat)
    fn = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    return fn(x, w.double(), stride=stride, dilation=dilation, groups=groups)


def run_conv(x, w, *, stride, padding, dilation=None, groups=1, layouts=("NCHW", "OIHW", "NCHW"),
             out_dtype=None, config=SMALL):
    """Run conv_program on canonical x [N,C,*sp], w [O,I,*sp] stored in ``layouts`` (lhs, rhs, out); returns
    the result in canonical layout and the program."""
    nsp = x.dim() - 2
    sp = "DHW"[3 - nsp:]
    xl, wl, yl = layouts
    dilation = dilation or [1] * nsp
    out_sp = [(n + lo + hi - (k - 1) * d - 1) // s + 1
              for n, k, s, d, (lo, hi) in zip(x.shape[2:], w.shape[2:], stride, dilation, padding)]
    want_shape = [x.shape[0], w.shape[0], *out_sp]
    x_arr, input_dims = to_layout(x, "NC" + sp, xl)
    w_arr, kernel_dims = to_layout(w, "OI" + sp, wl)
    out_dtype = out_dtype or x.dtype
    y_canon = torch.empty(want_shape, dtype=out_dtype)
    y_arr, output_dims = to_layout(y_canon, "NC" + sp, yl)
    prog = conv.conv_program(
        (list(x_arr.shape), MLIR[x.dtype]), (list(w_arr.shape), MLIR[w.dtype]),
        (list(y_arr.shape), MLIR[out_dtype]), input_dims=input_dims, kernel_dims=kernel_dims,
        output_dims=output_dims, strides=stride, padding=padding, rhs_dilation=dilation,
        feature_group_count=groups, config=config)
    y_arr.fill_(float("nan"))  # every element must be written
    ProgramRunner(prog)([guarded(x_arr), guarded(w_arr)], [y_arr])
    back = [yl.index(ch) for ch in "NC" + sp]
    return y_arr.permute(back), prog


def guarded(t):
    """``t`` copied into the middle of a NaN-filled allocation: a read outside it that reaches a result (even
    multiplied by a 0 weight) makes that result NaN."""
    n = t.numel()
    flat = torch.full((3 * n + 64,), float("nan"), dtype=t.dtype)
    view = flat[n + 32:2 * n + 32].view(t.shape)
    view.copy_(t)
    return view


def make(N, C, sp, O, I, ksp, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, *sp, generator=g).to(dtype)
    w = (torch.randn(O, I, *ksp, generator=g) / (I * np.prod(ksp)) ** 0.5).to(dtype)
    return x, w


def close(got, want, dtype):
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got.double(), want, **TOL[dtype])


# name: (N, C, (H, W), O, groups, (KH, KW), stride, padding, dilation, layouts)
CASES_2D = {
    "nchw_oihw": (2, 5, (9, 7), 6, 1, (3, 3), [1, 1], [(1, 1), (1, 1)], [1, 1], ("NCHW", "OIHW", "NCHW")),
    "nhwc_hwio": (2, 5, (9, 7), 6, 1, (3, 3), [1, 1], [(1, 1), (1, 1)], [1, 1], ("NHWC", "HWIO", "NHWC")),
    "nhwc_oihw": (2, 5, (9, 7), 6, 1, (3, 3), [1, 1], [(1, 1), (1, 1)], [1, 1], ("NHWC", "OIHW", "NHWC")),
    "stride2_asym_pad": (1, 4, (11, 10), 7, 1, (3, 2), [2, 2], [(1, 2), (0, 1)], [1, 1], ("NCHW", "OIHW", "NCHW")),
    "dilation2_3": (1, 3, (10, 9), 5, 1, (3, 3), [1, 1], [(2, 2), (1, 0)], [2, 3], ("NHWC", "HWIO", "NHWC")),
    "groups2": (2, 6, (7, 7), 10, 2, (3, 3), [1, 1], [(1, 1), (1, 1)], [1, 1], ("NCHW", "OIHW", "NCHW")),
    "depthwise": (2, 6, (8, 7), 6, 6, (3, 3), [1, 1], [(1, 1), (1, 1)], [1, 1], ("NHWC", "OIHW", "NHWC")),
    "depthwise_x2_stride2": (1, 5, (9, 9), 10, 5, (3, 3), [2, 2], [(1, 1), (1, 1)], [1, 1],
                             ("NCHW", "OIHW", "NCHW")),
    "1x1": (2, 24, (5, 6), 20, 1, (1, 1), [1, 1], [(0, 0), (0, 0)], [1, 1], ("NHWC", "OIHW", "NHWC")),
    "1x1_stride2_nchw": (1, 17, (7, 7), 9, 1, (1, 1), [2, 2], [(0, 0), (0, 0)], [1, 1],
                         ("NCHW", "OIHW", "NCHW")),
    "stem_7x7_s2_p3": (1, 3, (14, 13), 16, 1, (7, 7), [2, 2], [(3, 3), (3, 3)], [1, 1],
                       ("NHWC", "OIHW", "NHWC")),
    # tap-major (>= 16 features per group): 20 per group, not a multiple of BLOCK_K; repacked OIHW kernel
    "tap_major_groups2": (2, 40, (6, 5), 36, 2, (3, 3), [1, 1], [(1, 1), (1, 1)], [1, 1],
                          ("NHWC", "OIHW", "NHWC")),
    "tap_major_hwio_stride2": (1, 33, (7, 8), 18, 1, (3, 3), [2, 1], [(1, 0), (1, 2)], [1, 2],
                               ("NHWC", "HWIO", "NHWC")),
    "tap_major_nchw": (2, 16, (5, 5), 17, 1, (3, 3), [1, 1], [(1, 1), (0, 0)], [1, 1], ("NCHW", "OIHW", "NCHW")),
    # any permutation is addressed by strides
    "odd_layouts": (2, 5, (6, 7), 4, 1, (2, 3), [1, 2], [(0, 1), (2, 0)], [2, 1], ("CWNH", "WOHI", "HCWN")),
}


@needs_interpreter
@pytest.mark.parametrize("case", CASES_2D)
def test_conv2d_f32_matches_reference(case):
    N, C, sp, O, groups, ksp, stride, padding, dilation, layouts = CASES_2D[case]
    x, w = make(N, C, sp, O, C // groups, ksp)
    got, prog = run_conv(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         layouts=layouts)
    close(got, reference(x, w, stride, padding, dilation, groups), torch.float32)
    assert prog.kernels[-1].constexprs["TAP_MAJOR"] == (C // groups >= 16)


@needs_interpreter
def test_tap_major_kernel_packing_on_and_off():
    """The tap-major walk reads an OIHW kernel either repacked (scratch + pack launch) or in place."""
    x, w = make(1, 18, (5, 6), 20, 18, (3, 2))
    want = reference(x, w, [1, 1], [(1, 1), (0, 1)], [1, 1], 1)
    for pack in (True, False):
        got, prog = run_conv(x, w, stride=[1, 1], padding=[(1, 1), (0, 1)], layouts=("NHWC", "OIHW", "NHWC"),
                             config={**SMALL, "PACK": pack})
        assert [k.name for k in prog.kernels] == (["conv_weight_pack", "conv_fwd"] if pack else ["conv_fwd"])
        close(got, want, torch.float32)


@needs_interpreter
@pytest.mark.parametrize("tap_major", [False, True], ids=["flat", "tap_major"])
def test_flat_and_tap_major_walks_agree(tap_major):
    """Either K walk is correct whatever the feature count (the config only picks the faster one)."""
    x, w = make(2, 6, (6, 5), 8, 3, (3, 3))
    got, _ = run_conv(x, w, stride=[1, 2], padding=[(1, 0), (1, 1)], groups=2, layouts=("NHWC", "HWIO", "NHWC"),
                      config={**SMALL, "TAP_MAJOR": tap_major})
    close(got, reference(x, w, [1, 2], [(1, 0), (1, 1)], [1, 1], 2), torch.float32)


@needs_interpreter
@pytest.mark.parametrize("layouts", [("NCW", "OIW", "NCW"), ("NWC", "WIO", "NWC")], ids=["ncw", "nwc"])
def test_conv1d(layouts):
    x, w = make(2, 5, (13,), 6, 5, (3,))
    got, _ = run_conv(x, w, stride=[2], padding=[(2, 1)], dilation=[2], layouts=layouts)
    close(got, reference(x, w, [2], [(2, 1)], [2], 1), torch.float32)


@needs_interpreter
@pytest.mark.parametrize("layouts", [("NCDHW", "OIDHW", "NCDHW"), ("NDHWC", "DHWIO", "NDHWC")],
                         ids=["ncdhw", "ndhwc"])
def test_conv3d(layouts):
    x, w = make(1, 4, (4, 5, 5), 6, 2, (2, 3, 3))
    pad = [(1, 0), (1, 1), (0, 1)]
    got, _ = run_conv(x, w, stride=[1, 2, 1], padding=pad, groups=2, layouts=layouts)
    close(got, reference(x, w, [1, 2, 1], pad, [1, 1, 1], 2), torch.float32)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("case", ["nhwc_oihw", "stride2_asym_pad", "depthwise", "stem_7x7_s2_p3",
                                  "tap_major_groups2"])
def test_conv2d_half_matches_reference(dtype, case, bf16_dot):
    N, C, sp, O, groups, ksp, stride, padding, dilation, layouts = CASES_2D[case]
    x, w = make(N, C, sp, O, C // groups, ksp, dtype)
    got, _ = run_conv(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups, layouts=layouts)
    assert got.dtype == dtype
    close(got, reference(x, w, stride, padding, dilation, groups), dtype)


@needs_interpreter
def test_f16_inputs_f32_result():
    """The result type may differ from the operands' (the f32 sums are cast at the store)."""
    x, w = make(1, 20, (5, 5), 12, 20, (3, 3), torch.float16)
    got, _ = run_conv(x, w, stride=[1, 1], padding=[(1, 1), (1, 1)], layouts=("NHWC", "OIHW", "NHWC"),
                      out_dtype=torch.float32)
    assert got.dtype == torch.float32
    close(got, reference(x, w, [1, 1], [(1, 1), (1, 1)], [1, 1], 1), torch.float32)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_default_config(dtype):
    """The tiles conv_config picks (one or two tiles here), with NumPy arrays as the program's buffers."""
    x, w = make(2, 19, (8, 8), 40, 19, (3, 3), dtype)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    out = np.full((2, 4, 4, 40), np.nan, np.float32 if dtype == torch.float32 else np.float16)
    prog = conv.conv_program((list(x_nhwc.shape), MLIR[dtype]), (list(w.shape), MLIR[dtype]),
                             (list(out.shape), MLIR[dtype]), input_dims=[0, 3, 1, 2], kernel_dims=[0, 1, 2, 3],
                             output_dims=[0, 3, 1, 2], strides=[2, 2], padding=[(1, 1), (1, 1)],
                             rhs_dilation=[1, 1], feature_group_count=1)
    cfg = conv.conv_config(32, 40, 19, 9, 1, MLIR[dtype])
    assert prog.kernels[-1].constexprs["BLOCK_M"] == cfg["BLOCK_M"] == 32
    ProgramRunner(prog)([x_nhwc.numpy(), w.numpy()], [out])
    got = torch.from_numpy(out).permute(0, 3, 1, 2)
    close(got, reference(x, w, [2, 2], [(1, 1), (1, 1)], [1, 1], 1), dtype)


@needs_interpreter
@pytest.mark.parametrize("tap_major", [False, True], ids=["flat", "tap_major"])
def test_64_bit_indexing(tap_major):
    """The INDEX_64 variant (tensors of 2**31 elements or more, too large to test) on a small convolution."""
    x, w = make(2, 16, (5, 6), 12, 8, (3, 3))
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    out = torch.full((2, 5, 6, 12), float("nan"))
    prog = conv.conv_program((list(x_nhwc.shape), "f32"), (list(w.shape), "f32"), (list(out.shape), "f32"),
                             input_dims=[0, 3, 1, 2], kernel_dims=[0, 1, 2, 3], output_dims=[0, 3, 1, 2],
                             strides=[1, 1], padding=[(1, 1), (1, 1)], rhs_dilation=[1, 1],
                             feature_group_count=2, config={**SMALL, "TAP_MAJOR": tap_major, "PACK": tap_major})
    for k in prog.kernels:
        assert k.constexprs["INDEX_64"] is False
        k.constexprs["INDEX_64"] = True
    ProgramRunner(prog)([x_nhwc, w], [out])
    close(out.permute(0, 3, 1, 2), reference(x, w, [1, 1], [(1, 1), (1, 1)], [1, 1], 2), torch.float32)


@needs_interpreter
def test_empty_reduction_writes_zeros_and_empty_batch_launches_nothing():
    x, w = make(1, 0, (4, 4), 3, 0, (3, 3))
    got, prog = run_conv(x, w, stride=[1, 1], padding=[(1, 1), (1, 1)])
    assert prog.kernels[-1].constexprs["K_STEPS"] == 0 and (got == 0).all()
    x, w = make(0, 4, (4, 4), 3, 4, (3, 3))
    got, prog = run_conv(x, w, stride=[1, 1], padding=[(0, 0), (0, 0)])
    assert got.numel() == 0 and prog.launches == []


# --- configuration and program layout -------------------------------------------------------------------

def test_config_tiles():
    # ResNet-50 3x3 layer, batch 32, f16: tap-major, 64-feature K steps, full tiles
    cfg = conv.conv_config(32 * 56 * 56, 64, 64, 9, 1, "f16")
    assert cfg == dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, TAP_MAJOR=True, num_warps=4, num_stages=3)
    assert conv.conv_config(32 * 14 * 14, 1024, 256, 1, 1, "bf16")["num_warps"] == 8  # 128 x 128 tiles
    assert conv.conv_config(100, 8, 96, 9, 1, "f16")["BLOCK_K"] == 32  # 96 = 3 x 32: no padded features
    # RGB stem and depthwise: flat K walk; depthwise gets the smallest feature tile
    assert conv.conv_config(32 * 112 * 112, 64, 3, 49, 1, "f16")["TAP_MAJOR"] is False
    dw = conv.conv_config(32 * 56 * 56, 1, 1, 9, 96, "f16")
    assert dw["BLOCK_N"] == 16 and dw["BLOCK_K"] == 16 and not dw["TAP_MAJOR"]
    # a 7x7 layer at batch 1: tiles shrink so that more than a handful of programs run
    late = conv.conv_config(49, 512, 512, 9, 1, "f16")
    assert late["BLOCK_M"] == 32 and late["BLOCK_N"] == 32
    # f32 (no tensor cores): at most 64 x 64 x 32
    f32 = conv.conv_config(8 * 56 * 56, 64, 64, 9, 1, "f32")
    assert (f32["BLOCK_M"], f32["BLOCK_N"], f32["BLOCK_K"]) == (64, 64, 32)


def test_program_buffers_follow_the_convention():
    f16 = lambda s: (s, "f16")  # noqa: E731
    nhwc = dict(input_dims=[0, 3, 1, 2], output_dims=[0, 3, 1, 2], strides=[1, 1], padding=[(1, 1), (1, 1)],
                rhs_dilation=[1, 1])
    # NHWC with an OIHW 3x3 kernel: the kernel is repacked into scratch first
    p = conv.conv_program(f16([2, 8, 8, 64]), f16([32, 64, 3, 3]), f16([2, 8, 8, 32]), kernel_dims=[0, 1, 2, 3],
                          **nhwc)
    assert [(b.kind, b.index) for b in p.buffers] == [("input", 0), ("input", 1), ("output", 0), ("scratch", -1)]
    assert p.buffers[3].shape == [1, 3, 3, 64, 32] and p.buffers[3].offset == 0
    assert p.scratch_bytes >= 3 * 3 * 64 * 32 * 2 and p.scratch_bytes % 256 == 0
    assert [p.kernels[x.kernel].name for x in p.launches] == ["conv_weight_pack", "conv_fwd"]
    assert p.launches[0].args == [{"buf": 1}, {"buf": 3}]
    assert p.launches[1].args == [{"buf": 0}, {"buf": 3}, {"buf": 2}]
    k = p.kernels[1]
    assert (k.constexprs["WS_O"], k.constexprs["WS_I"]) == (1, 32)  # the packed [KD,KH,KW,I,O] strides
    assert (k.constexprs["XS_C"], k.constexprs["XS_W"], k.constexprs["XS_N"]) == (1, 64, 8 * 8 * 64)
    assert k.signature == {"X": "*fp16", "W": "*fp16", "Y": "*fp16"}
    assert "@triton.jit" not in k.source
    # HWIO is read in place; grid (pixel blocks, feature blocks, groups)
    p = conv.conv_program(f16([2, 8, 8, 64]), f16([3, 3, 32, 64]), f16([2, 8, 8, 64]), kernel_dims=[3, 2, 0, 1],
                          feature_group_count=2, config=dict(BLOCK_M=32, BLOCK_N=16), **nhwc)
    assert [b.kind for b in p.buffers] == ["input", "input", "output"] and p.scratch_bytes == 0
    assert p.launches[0].grid == [4, 2, 2]
    again = Program.from_bytes(p.to_bytes())
    assert again.kernels[0].source == p.kernels[0].source and again.launches == p.launches


GOOD = dict(lhs=([1, 4, 8, 8], "f32"), rhs=([6, 4, 3, 3], "f32"), out=([1, 6, 8, 8], "f32"),
            input_dims=[0, 1, 2, 3], kernel_dims=[0, 1, 2, 3], output_dims=[0, 1, 2, 3], strides=[1, 1],
            padding=[(1, 1), (1, 1)], rhs_dilation=[1, 1], feature_group_count=1)


@pytest.mark.parametrize("bad, match", [
    (dict(lhs_dilation=[2, 2], out=([1, 6, 17, 17], "f32")), "lhs_dilation"),
    (dict(batch_group_count=2), "batch_group_count"),
    (dict(padding=[(-1, 1), (1, 1)], out=([1, 6, 7, 8], "f32")), "negative padding"),
    (dict(window_reversal=[True, False]), "window reversal"),
    (dict(rhs=([6, 4, 3, 3], "f16")), "one type"),
    (dict(lhs=([1, 4, 8, 8], "i32"), rhs=([6, 4, 3, 3], "i32")), "one type"),
    (dict(out=([1, 6, 7, 8], "f32")), "spatial dim 0 should be 8"),
    (dict(feature_group_count=3), "features do not agree"),
    (dict(rhs=([6, 2, 3, 3], "f32")), "features do not agree"),
    (dict(input_dims=[0, 1, 2, 2]), "not a permutation"),
    (dict(lhs=([1, 4, 8, 8, 8, 8], "f32"), rhs=([6, 4, 3, 3, 3, 3], "f32"), out=([1, 6, 8, 8, 8, 8], "f32"),
          input_dims=[0, 1, 2, 3, 4, 5], kernel_dims=[0, 1, 2, 3, 4, 5], output_dims=[0, 1, 2, 3, 4, 5]), "rank"),
])
def test_unsupported_convolutions_are_refused(bad, match):
    assert conv.unsupported_reason(**GOOD) is None
    args = {**GOOD, **bad}
    assert match in conv.unsupported_reason(**args)
    with pytest.raises(ValueError, match=match):
        conv.conv_program(**args)


# --- compilation ----------------------------------------------------------------------------------------

LIMIT_SHARED = {80: 166912, 90: 232448}  # max dynamic shared memory per block (bytes)


def test_kernels_compile_for_sm80_and_sm90(tmp_path, monkeypatch):
    """A tap-major f16 NHWC/OIHW 3x3 layer (with its kernel repack), an f32 and a flat bf16 (RGB stem)
    configuration: cubin is an ELF, shared memory fits, and the PTX assembles with Triton's own ptxas."""
    plugin_root = str(Path(conv.__file__).resolve().parents[1])  # the compile worker imports the package
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [plugin_root, os.environ.get("PYTHONPATH")])))
    nhwc = dict(input_dims=[0, 3, 1, 2], kernel_dims=[0, 1, 2, 3], output_dims=[0, 3, 1, 2], rhs_dilation=[1, 1])
    layer = conv.conv_program(([32, 56, 56, 64], "f16"), ([64, 64, 3, 3], "f16"), ([32, 56, 56, 64], "f16"),
                              strides=[1, 1], padding=[(1, 1), (1, 1)], **nhwc)
    f32 = conv.conv_program(([8, 28, 28, 128], "f32"), ([128, 128, 3, 3], "f32"), ([8, 14, 14, 128], "f32"),
                            strides=[2, 2], padding=[(1, 1), (1, 1)], **nhwc)
    stem = conv.conv_program(([32, 224, 224, 3], "bf16"), ([64, 3, 7, 7], "bf16"), ([32, 112, 112, 64], "bf16"),
                             strides=[2, 2], padding=[(3, 3), (3, 3)], **nhwc)
    assert [k.name for k in layer.kernels] == ["conv_weight_pack", "conv_fwd"]
    assert not stem.kernels[-1].constexprs["TAP_MAJOR"]
    kernels = layer.kernels + f32.kernels + stem.kernels
    triton_build.compile_kernels(kernels, archs=(80, 90))
    # Triton's own assemblers: `ptxas` (CUDA 12.x) below sm_90, `ptxas-blackwell` (CUDA 13.x) from sm_90 on
    for i, kernel in enumerate(kernels):
        assert sorted(b.arch for b in kernel.binaries) == [80, 90], kernel.name
        for b in kernel.binaries:
            assert base64.b64decode(b.cubin)[:4] == b"\x7fELF", kernel.name
            assert 0 <= b.shared <= LIMIT_SHARED[b.arch], (kernel.name, b.arch, b.shared)
            assert b.num_warps == kernel.num_warps
            arch = "sm_90a" if b.arch == 90 else "sm_80"
            assert f".target {arch}" in b.ptx
            if kernel is layer.kernels[1]:
                # channels-last input and the repacked kernel: 16-byte asynchronous copies, tensor cores
                assert "cp.async.cg.shared.global" in b.ptx
                assert ("wgmma" if b.arch == 90 else "mma.sync") in b.ptx
            assert assemble(b.ptx, b.arch, tmp_path / f"{kernel.name}_{i}_{b.arch}.ptx")[:4] == b"\x7fELF"
