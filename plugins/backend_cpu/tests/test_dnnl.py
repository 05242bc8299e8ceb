"""oneDNN behind the cpu_blas callees: convolutions (any dimension numbers, groups, strides, dilation) and
(batched) matmuls against NumPy, constant weights prepacked once, and the im2col/BLAS path when it is off."""

import ast
import platform
import sys

import numpy as np
import pytest

import byteir_core
from byteir_backend_cpu import dnnl
from byteir_backend_cpu.blas import conv_im2col

# oneDNN is a dependency of the plugin on x86-64 Linux: there it must load (test_onednn_loads_where_it_is_a_dependency)
pytestmark = pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                                reason="oneDNN is only a dependency on x86-64 Linux")


def test_onednn_loads_where_it_is_a_dependency():
    assert dnnl.available(), "onednn-cpu-gomp is installed with byteir-backend-cpu here but did not load"
    assert dnnl.lib().version[:2] == dnnl.VERSION


_POOLS = """
import sys, numpy as np
if sys.argv[1] == "torch-first":
    import torch
    torch.ones(1 << 20).mul(2)  # PyTorch's pool started
from byteir_backend_cpu import dnnl
a = np.ones((64, 64), np.float32)
out = np.empty_like(a)
dnnl.Matmul(const_rhs=False)(a[None], a[None], out[None])
assert (out == 64).all()
maps = [line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line or "libiomp" in line]
print(sorted(set(maps)))
"""


@pytest.mark.parametrize("order", ["torch-first", "alone"])
def test_onednn_runs_on_one_gnu_openmp_pool_shared_with_pytorch(order):
    """oneDNN's GEMMs run on the libgomp PyTorch already runs on (a second pool's spinning workers took the
    cores from every GEMM of a training step), and with PyTorch absent on the system's: one OpenMP runtime in
    the process either way, no Intel OpenMP."""
    import subprocess

    r = subprocess.run([sys.executable, "-c", _POOLS, order], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    libs = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert len(libs) == 1 and "libgomp" in libs[0], libs
    if order == "torch-first":
        assert "torch" in libs[0], libs

rng = np.random.default_rng(7)


def ref_conv(x, w, strides, pad, dil, groups):
    out_sp = [(x.shape[2 + i] + pad[2 * i] + pad[2 * i + 1] - ((w.shape[2 + i] - 1) * dil[i] + 1)) // strides[i] + 1
              for i in range(2)]
    out = np.empty((x.shape[0], w.shape[0], *out_sp), np.float32)
    conv_im2col(x.astype(np.float64).astype(np.float32), w, strides, pad, dil, groups, out)
    return out


@pytest.mark.parametrize("case", [
    dict(c=3, o=16, k=7, s=2, p=3, d=1, g=1, hw=32),      # ResNet's stem
    dict(c=16, o=16, k=3, s=1, p=1, d=1, g=1, hw=14),
    dict(c=16, o=32, k=1, s=2, p=0, d=1, g=1, hw=14),     # 1x1 downsample
    dict(c=16, o=16, k=3, s=1, p=2, d=2, g=1, hw=12),     # dilated
    dict(c=16, o=32, k=3, s=1, p=1, d=1, g=4, hw=10),     # grouped
    dict(c=16, o=16, k=3, s=1, p=1, d=1, g=16, hw=10),    # depthwise
])
@pytest.mark.parametrize("const_weights", [True, False])
def test_conv_matches_im2col(case, const_weights):
    x = rng.standard_normal((2, case["c"], case["hw"], case["hw"])).astype(np.float32)
    w = rng.standard_normal((case["o"], case["c"] // case["g"], case["k"], case["k"])).astype(np.float32)
    s, p, d, g = [case["s"]] * 2, [case["p"]] * 4, [case["d"]] * 2, case["g"]
    expect = ref_conv(x, w, s, p, d, g)
    conv = dnnl.Conv([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], s, p, d, g, const_weights)
    out = np.empty_like(expect)
    for _ in range(2):  # the second call reuses the primitive (and the packed weights when constant)
        out[...] = np.nan
        conv(x, w, out)
        np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-4)
    if not const_weights:  # weights that change between calls are re-read every call
        w2 = w * 2
        conv(x, w2, out)
        np.testing.assert_allclose(out, expect * 2, rtol=1e-4, atol=2e-4)


def test_conv_in_nhwc_and_hwio_layouts_needs_no_transposes():
    x = rng.standard_normal((1, 9, 9, 8)).astype(np.float32)    # NHWC
    w = rng.standard_normal((3, 3, 8, 12)).astype(np.float32)   # HWIO
    out = np.empty((1, 9, 9, 12), np.float32)                    # NHWC
    conv = dnnl.Conv([0, 3, 1, 2], [3, 2, 0, 1], [0, 3, 1, 2], [1, 1], [1, 1, 1, 1], [1, 1], 1, True)
    conv(x, w, out)
    expect = ref_conv(x.transpose(0, 3, 1, 2).copy(), w.transpose(3, 2, 0, 1).copy(), [1, 1], [1, 1, 1, 1], [1, 1], 1)
    np.testing.assert_allclose(out, expect.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    (plan,) = conv._plans.values()
    assert dnnl.ARG_SRC not in plan and dnnl.ARG_DST not in plan  # the kernel reads and writes them in place
    assert "ref" not in conv.impl, conv.impl


@pytest.mark.parametrize("shape", [(1, 64, 256, 96), (3, 17, 33, 5), (1, 1, 128, 1)])
@pytest.mark.parametrize("const_rhs", [True, False])
def test_matmul_matches_numpy(shape, const_rhs):
    b, m, k, n = shape
    a = rng.standard_normal((b, m, k)).astype(np.float32)
    w = rng.standard_normal((b, n, k)).astype(np.float32).transpose(0, 2, 1)  # a strided (transposed) view
    out = np.empty((b, m, n), np.float32)
    mm = dnnl.Matmul(const_rhs)
    for _ in range(2):
        mm(a, w, out)
        np.testing.assert_allclose(out, a @ w, rtol=1e-4, atol=1e-4)


CONV_MLP = """func.func @main(%x: tensor<2x8x10x10xf32>, %w: tensor<16x8x3x3xf32>, %m: tensor<64x32xf32>) -> (tensor<2x16x10x10xf32>, tensor<2x16x32xf32>) {
  %y = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {pad = [[1, 1], [1, 1]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<2x8x10x10xf32>, tensor<16x8x3x3xf32>) -> tensor<2x16x10x10xf32>
  %r = stablehlo.reshape %y : (tensor<2x16x10x10xf32>) -> tensor<2x16x100xf32>
  %s = stablehlo.slice %r [0:2, 0:16, 0:64] : (tensor<2x16x100xf32>) -> tensor<2x16x64xf32>
  %z = stablehlo.dot_general %s, %m, contracting_dims = [2] x [0] : (tensor<2x16x64xf32>, tensor<64x32xf32>) -> tensor<2x16x32xf32>
  return %y, %z : tensor<2x16x10x10xf32>, tensor<2x16x32xf32>
}"""


@pytest.mark.parametrize("use_dnnl", ["1", "0"])
def test_artifact_results_equal_with_and_without_onednn(use_dnnl, monkeypatch):
    monkeypatch.setenv("BYTEIR_CPU_DNNL", use_dnnl)
    dnnl.available.cache_clear()
    try:
        art = byteir_core.compile(CONV_MLP, target="cpu")
        assert {s.callee for s in art.module.steps} >= {"cpu.conv", "cpu.gemm"}
        x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
        w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
        m = rng.standard_normal((64, 32)).astype(np.float32)
        y, z = byteir_core.load(art.to_bytes()).run(x, w, m)
        expect_y = ref_conv(x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        np.testing.assert_allclose(y, expect_y, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(z, expect_y.reshape(2, 16, 100)[:, :, :64] @ m, rtol=1e-4, atol=1e-3)
    finally:
        dnnl.available.cache_clear()


def test_weights_of_the_artifact_are_marked_constant():
    """Weights (constants of the program) reach the provider as const_operands, so they are packed once."""
    text = CONV_MLP.replace("%w: tensor<16x8x3x3xf32>, ", "").replace(
        "(%x, %w)", "(%x, %wc)").replace("  %y =", "  %wc = stablehlo.constant dense<0.5> : tensor<16x8x3x3xf32>\n  %y =", 1)
    text = text.replace("dense<0.5>", "dense<" + np.array2string(
        rng.standard_normal((16, 8, 3, 3)).astype(np.float32), separator=",", threshold=10**6).replace("\n", "") + ">")
    art = byteir_core.compile(text, target="cpu")
    (conv,) = [s for s in art.module.steps if s.callee == "cpu.conv"]
    assert conv.attrs["const_operands"] == "1"
    (gemm,) = [s for s in art.module.steps if s.callee == "cpu.gemm"]
    assert gemm.attrs["const_operands"] == ""


def maxpool_program(shape, window, strides, pad):
    t = "x".join(map(str, shape))
    out = [(shape[d] + pad[d][0] + pad[d][1] - window[d]) // strides[d] + 1 for d in range(4)]
    ot = "x".join(map(str, out))
    return f"""func.func @main(%x: tensor<{t}xf32>) -> tensor<{ot}xf32> {{
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %r = "stablehlo.reduce_window"(%x, %ninf) ({{
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %m = stablehlo.maximum %a, %b : tensor<f32>
      stablehlo.return %m : tensor<f32>
  }}) {{window_dimensions = array<i64: {', '.join(map(str, window))}>, window_strides = array<i64: {', '.join(map(str, strides))}>, padding = dense<{[list(p) for p in pad]}> : tensor<4x2xi64>}} : (tensor<{t}xf32>, tensor<f32>) -> tensor<{ot}xf32>
  return %r : tensor<{ot}xf32>
}}"""


def ref_maxpool(x, window, strides, pad):
    xp = np.pad(x, pad, constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, window)[tuple(slice(None, None, s) for s in strides)]
    return win.max(axis=(4, 5, 6, 7))


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("use_dnnl", ["1", "0"])
def test_max_pooling_is_a_library_call(layout, use_dnnl, monkeypatch):
    monkeypatch.setenv("BYTEIR_CPU_DNNL", use_dnnl)
    dnnl.available.cache_clear()
    try:
        if layout == "nchw":
            shape, window, strides, pad = (2, 5, 13, 12), (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 0))
        else:
            shape, window, strides, pad = (2, 13, 12, 5), (1, 3, 2, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (0, 0), (0, 0))
        art = byteir_core.compile(maxpool_program(shape, window, strides, pad), target="cpu")
        assert [s.callee for s in art.module.steps] == ["cpu.maxpool"]
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(byteir_core.load(art.to_bytes())(x), ref_maxpool(x, window, strides, pad))
    finally:
        dnnl.available.cache_clear()


def test_other_reduce_windows_stay_in_generated_code():
    text = maxpool_program((1, 2, 6, 6), (1, 1, 2, 2), (1, 1, 2, 2), ((0, 0),) * 4).replace(
        "stablehlo.maximum %a", "stablehlo.add %a").replace("0xFF800000", "0.0")
    art = byteir_core.compile(text, target="cpu")
    assert [s.callee for s in art.module.steps] == ["cpu.native"]


def _vec(v):
    return "dense<[" + ", ".join(repr(float(x)) for x in v) + "]> : tensor<%dxf32>" % len(v)


def residual_block_program(c, bias1, bias2, bias_sc):
    """relu(conv2(relu(conv1(x) + b1)) + b2 + (conv_sc(x) + b_sc)): a ResNet block with a projection shortcut,
    weights as arguments, biases as constants."""
    t = f"tensor<1x{c}x8x8xf32>"
    wt = f"tensor<{c}x{c}x3x3xf32>"
    w1t = f"tensor<{c}x{c}x1x1xf32>"
    dn = "dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]"
    attrs = "{batch_group_count = 1 : i64, feature_group_count = 1 : i64}"

    def conv(name, src, w, wty, pad):
        return (f"  %{name} = stablehlo.convolution(%{src}, %{w}) {dn}, window = {{pad = [[{pad}, {pad}], [{pad}, {pad}]]}}"
                f" {attrs} : ({t}, {wty}) -> {t}\n")

    def bias(name, src, v):
        return (f"  %{name}c = stablehlo.constant {_vec(v)}\n"
                f"  %{name}b = stablehlo.broadcast_in_dim %{name}c, dims = [1] : (tensor<{c}xf32>) -> {t}\n"
                f"  %{name} = stablehlo.add %{src}, %{name}b : {t}\n")

    body = (conv("c1", "x", "w1", wt, 1) + bias("y1", "c1", bias1) +
            f"  %z = stablehlo.constant dense<0.0> : {t}\n  %r1 = stablehlo.maximum %y1, %z : {t}\n" +
            conv("c2", "r1", "w2", wt, 1) + bias("y2", "c2", bias2) +
            conv("cs", "x", "ws", w1t, 0) + bias("ys", "cs", bias_sc) +
            f"  %s = stablehlo.add %y2, %ys : {t}\n  %r = stablehlo.maximum %s, %z : {t}\n  return %r : {t}")
    return f"func.func @main(%x: {t}, %w1: {wt}, %w2: {wt}, %ws: {w1t}) -> {t} {{\n{body}\n}}"


@pytest.fixture(params=["1", "0"], ids=["onednn", "im2col"])
def dnnl_or_not(request, monkeypatch):
    """The cpu_blas callees with oneDNN, then without it (``BYTEIR_CPU_DNNL=0``: im2col and NumPy's BLAS)."""
    monkeypatch.setenv("BYTEIR_CPU_DNNL", request.param)
    dnnl.available.cache_clear()
    yield request.param
    dnnl.available.cache_clear()


def test_bias_residual_and_relu_are_fused_into_the_convolutions(dnnl_or_not):
    c = 8
    b1, b2, bs = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    art = byteir_core.compile(residual_block_program(c, b1, b2, bs), target="cpu")
    convs = [s for s in art.module.steps if s.callee == "cpu.conv"]
    assert len(convs) == 3
    # nothing left for generated code but the NCHW <-> NHWC transposes at the block's input and output
    assert [c["ops"] for c in art.report["clusters"] if c["backend"] == "cpu"] == [["stablehlo.transpose"]] * 2
    kinds = sorted(";".join(p.split("=")[0].split(":")[0] for p in s.attrs["epilogue"].split(";")) for s in convs)
    assert kinds == ["bias", "bias;add;relu", "bias;relu"], kinds
    x = rng.standard_normal((1, c, 8, 8)).astype(np.float32)
    w1, w2 = (rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.3 for _ in range(2))
    ws = rng.standard_normal((c, c, 1, 1)).astype(np.float32)
    sh = (1, c, 1, 1)
    r1 = np.maximum(ref_conv(x, w1, [1, 1], [1] * 4, [1, 1], 1) + b1.reshape(sh), 0)
    y2 = ref_conv(r1, w2, [1, 1], [1] * 4, [1, 1], 1) + b2.reshape(sh)
    ys = ref_conv(x, ws, [1, 1], [0] * 4, [1, 1], 1) + bs.reshape(sh)
    session = byteir_core.load(art.to_bytes())
    for _ in range(2):
        np.testing.assert_allclose(session(x, w1, w2, ws), np.maximum(y2 + ys, 0), rtol=1e-4, atol=1e-4)


def test_an_add_that_is_not_an_epilogue_stays_out_of_the_library_call():
    """conv(x) + y where y is computed after the convolution: not adjacent, so generated code adds."""
    text = """func.func @main(%x: tensor<1x4x6x6xf32>, %w: tensor<4x4x3x3xf32>, %y: tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32> {
  %c = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {pad = [[1, 1], [1, 1]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32>
  %t = stablehlo.tanh %y : tensor<1x4x6x6xf32>
  %s = stablehlo.add %c, %t : tensor<1x4x6x6xf32>
  return %s : tensor<1x4x6x6xf32>
}"""
    art = byteir_core.compile(text, target="cpu")
    assert [s.callee for s in art.module.steps] == ["cpu.conv", "cpu.native"]
    assert art.module.steps[0].attrs["epilogue"] == ""


def test_a_new_axis_is_not_read_as_a_broadcast():
    """NumPy gives a size-1 axis stride 0; passed as is, oneDNN picks its reference kernel (seconds per call)."""
    a, b = rng.standard_normal((96, 80)).astype(np.float32), rng.standard_normal((80, 72)).astype(np.float32)
    out = np.empty((1, 96, 72), np.float32)
    mm = dnnl.Matmul(const_rhs=False)
    mm(a[None], b[None], out)
    np.testing.assert_allclose(out[0], a @ b, rtol=1e-4, atol=1e-4)
    assert "ref" not in mm.impl, mm.impl


def test_a_constant_residual_stays_out_of_the_library_call():
    """conv(x) + C with C a whole-tensor constant (a bias broadcast folded by constant folding, as in ONNX
    DenseNet-121) has no runtime argument to pass C through: the add stays in generated code. It used to fail
    the compile ("a residual operand must be a cluster input")."""
    c = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    text = f"""func.func @main(%x: tensor<1x4x6x6xf32>, %w: tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32> {{
  %k = stablehlo.constant dense<{np.array2string(c, separator=',', threshold=10**6, floatmode='unique')}> : tensor<1x4x6x6xf32>
  %c = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {{pad = [[1, 1], [1, 1]]}} {{batch_group_count = 1 : i64, feature_group_count = 1 : i64}} : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32>
  %s = stablehlo.add %c, %k : tensor<1x4x6x6xf32>
  return %s : tensor<1x4x6x6xf32>
}}"""
    art = byteir_core.compile(text, target="cpu")
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    (got,) = byteir_core.load(art).run(x, w)
    want = ref_conv(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1) + c
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def relu6_program(c, bias, pad_next):
    """conv -> + bias -> clamp(0, 6) (ReLU6, its bounds broadcast scalars) -> zero pad -> strided depthwise conv:
    MobileNetV2's block as Keras writes it (a ZeroPadding2D before the stride-2 convolution)."""
    t = f"tensor<1x8x8x{c}xf32>"
    dn = "dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]"
    return f"""func.func @main(%x: {t}, %w: tensor<1x1x{c}x{c}xf32>, %dw: tensor<3x3x1x{c}xf32>) -> tensor<1x4x4x{c}xf32> {{
  %c = stablehlo.convolution(%x, %w) {dn}, window = {{pad = [[0, 0], [0, 0]]}} {{batch_group_count = 1 : i64, feature_group_count = 1 : i64}} : ({t}, tensor<1x1x{c}x{c}xf32>) -> {t}
  %bc = stablehlo.constant {_vec(bias)}
  %bb = stablehlo.broadcast_in_dim %bc, dims = [3] : (tensor<{c}xf32>) -> {t}
  %y = stablehlo.add %c, %bb : {t}
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %six = stablehlo.constant dense<6.0> : tensor<f32>
  %lo = stablehlo.broadcast_in_dim %zero, dims = [] : (tensor<f32>) -> {t}
  %hi = stablehlo.broadcast_in_dim %six, dims = [] : (tensor<f32>) -> {t}
  %r = stablehlo.clamp %lo, %y, %hi : {t}
  %p = stablehlo.pad %r, %zero, low = [0, {pad_next[0]}, {pad_next[0]}, 0], high = [0, {pad_next[1]}, {pad_next[1]}, 0], interior = [0, 0, 0, 0] : ({t}, tensor<f32>) -> tensor<1x{8 + sum(pad_next)}x{8 + sum(pad_next)}x{c}xf32>
  %d = stablehlo.convolution(%p, %dw) {dn}, window = {{stride = [2, 2], pad = [[0, 0], [0, 0]]}} {{batch_group_count = 1 : i64, feature_group_count = {c} : i64}} : (tensor<1x{8 + sum(pad_next)}x{8 + sum(pad_next)}x{c}xf32>, tensor<3x3x1x{c}xf32>) -> tensor<1x4x4x{c}xf32>
  return %d : tensor<1x4x4x{c}xf32>
}}"""


def test_relu6_is_fused_into_the_convolution_and_a_zero_pad_into_the_next(dnnl_or_not):
    c = 8
    bias = rng.standard_normal(c).astype(np.float32) * 3
    text = relu6_program(c, bias, (0, 1))
    art = byteir_core.compile(text, target="cpu")
    # both convolutions are library calls; no generated kernel is left (no clamp, no pad)
    assert [s.callee for s in art.module.steps] == ["cpu.conv", "cpu.conv"], art.report["clusters"]
    assert art.module.steps[0].attrs["epilogue"].split(";")[1] == "clip=0.0,6.0"
    x = rng.standard_normal((1, 8, 8, c)).astype(np.float32) * 3
    w = rng.standard_normal((1, 1, c, c)).astype(np.float32)
    dw = rng.standard_normal((3, 3, 1, c)).astype(np.float32)
    # the interpreter on the program as written (no simplification: the pad and the clamp run as they are)
    expect = byteir_core.load(byteir_core.compile(text, target="reference", pass_groups=["legalize"]))(x, w, dw)
    got = byteir_core.load(art.to_bytes())(x, w, dw)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)


_FORKED = """
import os, numpy as np, byteir_core
from byteir_backend_cpu import dnnl
a = np.ones((256, 256), np.float32)
out = np.empty_like(a)
mm = dnnl.Matmul(const_rhs=False)
mm(a[None], a[None], out[None])  # the parent's OpenMP pool is running
t = "tensor<64x1024xf32>"
art = byteir_core.compile(f"func.func @main(%x: {t}) -> {t} {{ %e = stablehlo.exponential %x : {t}\\n return %e : {t} }}",
                          target="cpu")
s = byteir_core.load(art)
assert [st.attrs["openmp"] for st in art.module.steps if st.op == "compute"] == [1]
x = np.zeros((64, 1024), np.float32)
s.run(x)
pid = os.fork()
if pid == 0:
    mm(a[None], a[None], out[None])
    r = s.run(x)[0]
    os._exit(0 if (out == 256).all() and (r == 1).all() else 3)
_, status = os.waitpid(pid, 0)
mm(a[None], a[None], out[None])
print(status, bool((out == 256).all()), bool((s.run(x)[0] == 1).all()))
"""


@pytest.mark.parametrize("cap", [None, "2"])
def test_a_forked_child_runs_onednn_and_openmp_kernels(cap):
    """libgomp's pool does not survive fork (its next parallel region in the child crashed the ONNX conformance
    runner's forked workers): a forked child runs its OpenMP regions on one thread, with BYTEIR_NUM_THREADS set
    too, and the parent goes on with its pool."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "BYTEIR_NUM_THREADS"}
    if cap:
        env["BYTEIR_NUM_THREADS"] = cap
    r = subprocess.run([sys.executable, "-c", _FORKED], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["0", "True", "True"], r.stdout
