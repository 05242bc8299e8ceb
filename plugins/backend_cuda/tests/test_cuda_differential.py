"""Differential tests: every op kind the cuda backend claims, per dtype, compiled for ``cuda`` and run through
Triton's interpreter on the host, against the StableHLO reference interpreter. Each test first checks the op
really went to the cuda backend (a silent fallback cannot pass); fusion tests also bound the kernel count."""

import numpy as np
import pytest
from cuda_check import check, programs_of, random, ty
from programs import elementwise

UNARY_FLOAT = {
    "abs": "any", "ceil": "any", "cosine": "any", "exponential": "any", "exponential_minus_one": "any",
    "floor": "any", "log": "positive", "log_plus_one": "positive", "logistic": "any", "negate": "any",
    "rsqrt": "positive", "sign": "any", "sine": "any", "sqrt": "positive", "tan": "unit", "tanh": "any",
    "round_nearest_afz": "any", "round_nearest_even": "any", "cbrt": "any",
}


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("op", sorted(UNARY_FLOAT))
def test_unary_float(op, dtype):
    t = ty((3, 5), dtype)
    text = elementwise(op, t)
    x = random((3, 5), dtype, UNARY_FLOAT[op])
    if op.startswith("round"):  # exact ties both ways
        x.reshape(-1)[:4] = np.array([0.5, 1.5, -2.5, 2.5]).astype(x.dtype)
    check(text, [x], [f"stablehlo.{op}"], pass_groups=["legalize", "canonicalize"])


BINARY_FLOAT = {"add": "any", "subtract": "any", "multiply": "any", "divide": "nonzero", "maximum": "any",
                "minimum": "any", "power": "any"}


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("op", sorted(BINARY_FLOAT))
def test_binary_float(op, dtype):
    t = ty((4, 3), dtype)
    text = elementwise(op, t, 2)
    x = random((4, 3), dtype)
    y = random((4, 3), dtype, BINARY_FLOAT[op])
    if op == "power":  # negative bases with integral exponents, positive bases with any
        y = np.where(x < 0, np.round(y), y).astype(y.dtype)
    check(text, [x, y], [f"stablehlo.{op}"])


BINARY_INT = {"add": "any", "subtract": "any", "multiply": "any", "maximum": "any", "minimum": "any",
              "and": "any", "or": "any", "xor": "any", "divide": "nonzero"}


@pytest.mark.parametrize("dtype", ["i8", "i16", "i32", "i64"])
@pytest.mark.parametrize("op", sorted(BINARY_INT))
def test_binary_int(op, dtype):
    t = ty((2, 7), dtype)
    text = elementwise(op, t, 2)
    check(text, [random((2, 7), dtype), random((2, 7), dtype, BINARY_INT[op])], [f"stablehlo.{op}"])


@pytest.mark.parametrize("op", ["abs", "negate", "sign", "not"])
@pytest.mark.parametrize("dtype", ["i32", "i64"])
def test_unary_int(op, dtype):
    t = ty((6,), dtype)
    text = elementwise(op, t)
    check(text, [random((6,), dtype)], [f"stablehlo.{op}"])


@pytest.mark.parametrize("op", ["and", "or", "xor"])
def test_bool_ops_and_not(op):
    t = ty((3, 3), "i1")
    text = (f"func.func @main(%x: {t}, %y: {t}) -> {t} {{\n  %a = stablehlo.{op} %x, %y : {t}\n"
            f"  %r = stablehlo.not %a : {t}\n  return %r : {t}\n}}")
    check(text, [random((3, 3), "i1"), random((3, 3), "i1")], [f"stablehlo.{op}", "stablehlo.not"])


@pytest.mark.parametrize("direction", ["EQ", "NE", "LT", "LE", "GT", "GE"])
@pytest.mark.parametrize("dtype", ["f32", "i32", "bf16"])
def test_compare_select_clamp(direction, dtype):
    t, b = ty((4, 4), dtype), ty((4, 4), "i1")
    text = f"""func.func @main(%x: {t}, %y: {t}, %lo: {t}, %hi: {t}) -> ({t}, {b}) {{
  %c = stablehlo.compare {direction}, %x, %y : ({t}, {t}) -> {b}
  %s = stablehlo.select %c, %x, %y : {b}, {t}
  %r = stablehlo.clamp %lo, %s, %hi : {t}
  return %r, %c : {t}, {b}
}}"""
    x = random((4, 4), dtype)
    y = np.where(np.arange(16).reshape(4, 4) % 3 == 0, x, random((4, 4), dtype)).astype(x.dtype)  # some ties
    check(text, [x, y, np.full((4, 4), -1, x.dtype), np.full((4, 4), 1, x.dtype)],
          ["stablehlo.compare", "stablehlo.select", "stablehlo.clamp"], max_kernels=1)


def test_scalar_operands_of_select_and_clamp():
    text = """func.func @main(%p: tensor<i1>, %x: tensor<5xf32>, %y: tensor<5xf32>, %lo: tensor<f32>) -> tensor<5xf32> {
  %s = stablehlo.select %p, %x, %y : tensor<i1>, tensor<5xf32>
  %hi = stablehlo.constant dense<1.0> : tensor<f32>
  %r = stablehlo.clamp %lo, %s, %hi : (tensor<f32>, tensor<5xf32>, tensor<f32>) -> tensor<5xf32>
  return %r : tensor<5xf32>
}"""
    for p in (True, False):
        check(text, [np.array(p), random((5,), "f32"), random((5,), "f32"), np.array(-0.5, np.float32)],
              ["stablehlo.select", "stablehlo.clamp"])


@pytest.mark.parametrize("src,dst", [("f32", "i32"), ("i32", "f32"), ("f32", "f16"), ("f16", "f32"),
                                     ("i64", "i32"), ("i32", "i64"), ("i1", "f32"), ("f32", "i1"),
                                     ("f64", "f32"), ("i8", "i32"), ("f32", "bf16"), ("bf16", "f32"),
                                     ("bf16", "i32"), ("f16", "bf16"), ("i32", "i1"), ("f64", "bf16"), ("i32", "bf16")])
def test_convert(src, dst):
    a, b = ty((5,), src), ty((5,), dst)
    text = f"func.func @main(%x: {a}) -> {b} {{\n  %r = stablehlo.convert %x : ({a}) -> {b}\n  return %r : {b}\n}}"
    x = random((5,), src)
    if src.startswith("f") and dst.startswith("i") and dst != "i1":
        x = (x * 3).astype(x.dtype)
    check(text, [x], ["stablehlo.convert"])


def test_convert_rounds_inside_a_fused_chain():
    """x -> bf16 -> f32 inside one kernel must round to bf16 where the program says, not stay fp32."""
    text = """func.func @main(%x: tensor<64xf32>) -> tensor<64xf32> {
  %b = stablehlo.convert %x : (tensor<64xf32>) -> tensor<64xbf16>
  %f = stablehlo.convert %b : (tensor<64xbf16>) -> tensor<64xf32>
  %d = stablehlo.subtract %x, %f : tensor<64xf32>
  return %d : tensor<64xf32>
}"""
    x = np.linspace(-3, 3, 64).astype(np.float32) + np.float32(1e-3)
    check(text, [x], ["stablehlo.convert", "stablehlo.subtract"], tol=1e-7, max_kernels=1)


def test_is_finite_and_bitcast():
    text = """func.func @main(%x: tensor<6xf32>) -> (tensor<6xi1>, tensor<6xi32>) {
  %r = stablehlo.is_finite %x : (tensor<6xf32>) -> tensor<6xi1>
  %b = stablehlo.bitcast_convert %x : (tensor<6xf32>) -> tensor<6xi32>
  return %r, %b : tensor<6xi1>, tensor<6xi32>
}"""
    check(text, [np.array([1.0, np.inf, -np.inf, np.nan, 0.0, -3.5], np.float32)],
          ["stablehlo.is_finite", "stablehlo.bitcast_convert"])


def test_layout_ops_fold_into_one_kernel():
    text = """func.func @main(%x: tensor<3x4xf32>, %s: tensor<f32>) -> (tensor<4x6xf32>, tensor<3x4xf32>, tensor<2x3xi32>) {
  %t = stablehlo.transpose %x, dims = [1, 0] : (tensor<3x4xf32>) -> tensor<4x3xf32>
  %c = stablehlo.concatenate %t, %t, dim = 1 : (tensor<4x3xf32>, tensor<4x3xf32>) -> tensor<4x6xf32>
  %r = stablehlo.reverse %c, dims = [0] : tensor<4x6xf32>
  %sb = stablehlo.broadcast_in_dim %s, dims = [] : (tensor<f32>) -> tensor<3x4xf32>
  %sl = stablehlo.slice %x [0:3:2, 1:4] : (tensor<3x4xf32>) -> tensor<2x3xf32>
  %m = stablehlo.multiply %x, %sb : tensor<3x4xf32>
  %i = stablehlo.iota dim = 1 : tensor<2x3xi32>
  %cv = stablehlo.convert %sl : (tensor<2x3xf32>) -> tensor<2x3xi32>
  %a = stablehlo.add %i, %cv : tensor<2x3xi32>
  return %r, %m, %a : tensor<4x6xf32>, tensor<3x4xf32>, tensor<2x3xi32>
}"""
    x = (random((3, 4), "f32") * 3).astype(np.float32)
    no_folding = ["legalize", "inline", "shape-refinement", "canonicalize", "cse"]  # keep iota an op
    check(text, [x, np.array(1.5, np.float32)], pass_groups=no_folding, max_kernels=1, expect_on_cuda=[
        "stablehlo.transpose", "stablehlo.concatenate", "stablehlo.reverse", "stablehlo.broadcast_in_dim",
        "stablehlo.slice", "stablehlo.iota"])


def test_pad_reshape_and_zero_size():
    text = """func.func @main(%x: tensor<2x3xf32>, %z: tensor<0x3xf32>) -> (tensor<5x8xf32>, tensor<6xf32>, tensor<0x3xf32>, tensor<2x1xf32>, tensor<2x4xf32>) {
  %v = stablehlo.constant dense<-1.0> : tensor<f32>
  %h = stablehlo.pad %x, %v, low = [0, 0], high = [0, 1], interior = [0, 0] : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x4xf32>
  %p = stablehlo.pad %x, %v, low = [1, 2], high = [1, 1], interior = [1, 1] : (tensor<2x3xf32>, tensor<f32>) -> tensor<5x8xf32>
  %n = stablehlo.pad %x, %v, low = [0, -1], high = [0, -1], interior = [0, 0] : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x1xf32>
  %e = stablehlo.exponential %x : tensor<2x3xf32>
  %r = stablehlo.reshape %e : (tensor<2x3xf32>) -> tensor<6xf32>
  %zz = stablehlo.add %z, %z : tensor<0x3xf32>
  return %p, %r, %zz, %n, %h : tensor<5x8xf32>, tensor<6xf32>, tensor<0x3xf32>, tensor<2x1xf32>, tensor<2x4xf32>
}"""
    check(text, [random((2, 3), "f32"), np.zeros((0, 3), np.float32)], ["stablehlo.pad", "stablehlo.reshape"])


def test_gather_embedding_rows_and_dynamic_slice():
    text = """func.func @main(%table: tensor<10x4xf32>, %ids: tensor<2x3xi64>, %i: tensor<i32>) -> (tensor<2x3x4xf32>, tensor<3x4xf32>) {
  %g = "stablehlo.gather"(%table, %ids) {dimension_numbers = #stablehlo.gather<offset_dims = [2], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 2>, slice_sizes = array<i64: 1, 4>, indices_are_sorted = false} : (tensor<10x4xf32>, tensor<2x3xi64>) -> tensor<2x3x4xf32>
  %z = stablehlo.constant dense<0> : tensor<i32>
  %d = stablehlo.dynamic_slice %table, %i, %z, sizes = [3, 4] : (tensor<10x4xf32>, tensor<i32>, tensor<i32>) -> tensor<3x4xf32>
  return %g, %d : tensor<2x3x4xf32>, tensor<3x4xf32>
}"""
    ids = np.array([[0, 9, 3], [3, 12, -1]], np.int64)  # out-of-range starts clamp, as StableHLO says
    for i in (2, 9):
        check(text, [random((10, 4), "f32"), ids, np.array(i, np.int32)],
              ["stablehlo.gather", "stablehlo.dynamic_slice"])


@pytest.mark.parametrize("dims", [[1], [0], [0, 2], [0, 1, 2]])
@pytest.mark.parametrize("op,dtype", [("add", "f32"), ("maximum", "f32"), ("minimum", "i32"), ("add", "bf16"),
                                      ("add", "i64")])
def test_reduce(dims, op, dtype):
    shape = (3, 5, 4)
    out = [s for k, s in enumerate(shape) if k not in dims]
    init = {"add": "0", "maximum": "-3.0e+38" if dtype != "i32" else "-2147483648",
            "minimum": "2147483647"}[op]
    if dtype in ("f32", "bf16") and op == "add":
        init = "0.0"
    text = f"""func.func @main(%x: {ty(shape, dtype)}) -> {ty(out, dtype)} {{
  %i = stablehlo.constant dense<{init}> : {ty((), dtype)}
  %r = stablehlo.reduce(%x init: %i) applies stablehlo.{op} across dimensions = {dims} : ({ty(shape, dtype)}, {ty((), dtype)}) -> {ty(out, dtype)}
  return %r : {ty(out, dtype)}
}}"""
    check(text, [random(shape, dtype)], ["stablehlo.reduce"], accumulate=True)


def test_reduce_with_a_non_identity_init_and_booleans():
    text = """func.func @main(%x: tensor<4x6xf32>, %b: tensor<4x6xi1>) -> (tensor<4xf32>, tensor<6xi1>, tensor<6xi1>) {
  %i = stablehlo.constant dense<2.5> : tensor<f32>
  %r = stablehlo.reduce(%x init: %i) applies stablehlo.add across dimensions = [1] : (tensor<4x6xf32>, tensor<f32>) -> tensor<4xf32>
  %t = stablehlo.constant dense<true> : tensor<i1>
  %f = stablehlo.constant dense<false> : tensor<i1>
  %all = stablehlo.reduce(%b init: %t) applies stablehlo.and across dimensions = [0] : (tensor<4x6xi1>, tensor<i1>) -> tensor<6xi1>
  %any = stablehlo.reduce(%b init: %f) applies stablehlo.or across dimensions = [0] : (tensor<4x6xi1>, tensor<i1>) -> tensor<6xi1>
  return %r, %all, %any : tensor<4xf32>, tensor<6xi1>, tensor<6xi1>
}"""
    b = random((4, 6), "i1")
    b[:, 0], b[:, 1] = True, False
    check(text, [random((4, 6), "f32"), b], ["stablehlo.reduce"])


SOFTMAX = """func.func @main(%x: tensor<{r}x{c}x{t}>) -> tensor<{r}x{c}x{t}> {{
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %xf = stablehlo.convert %x : (tensor<{r}x{c}x{t}>) -> tensor<{r}x{c}xf32>
  %m = stablehlo.reduce(%xf init: %ninf) applies stablehlo.maximum across dimensions = [1] : (tensor<{r}x{c}xf32>, tensor<f32>) -> tensor<{r}xf32>
  %mb = stablehlo.broadcast_in_dim %m, dims = [0] : (tensor<{r}xf32>) -> tensor<{r}x{c}xf32>
  %d = stablehlo.subtract %xf, %mb : tensor<{r}x{c}xf32>
  %e = stablehlo.exponential %d : tensor<{r}x{c}xf32>
  %s = stablehlo.reduce(%e init: %z) applies stablehlo.add across dimensions = [1] : (tensor<{r}x{c}xf32>, tensor<f32>) -> tensor<{r}xf32>
  %sb = stablehlo.broadcast_in_dim %s, dims = [0] : (tensor<{r}xf32>) -> tensor<{r}x{c}xf32>
  %y = stablehlo.divide %e, %sb : tensor<{r}x{c}xf32>
  %yc = stablehlo.convert %y : (tensor<{r}x{c}xf32>) -> tensor<{r}x{c}x{t}>
  return %yc : tensor<{r}x{c}x{t}>
}}"""


@pytest.mark.parametrize("rows,cols,dtype", [(6, 100, "f32"), (3, 37, "bf16"), (2, 5000, "f32"), (4, 64, "f16")])
def test_softmax_is_one_kernel_persistent_or_looped(rows, cols, dtype):
    """Rows up to 4096 are reduced in registers in one pass; 5000 columns loop over chunks (three passes)."""
    art = check(SOFTMAX.format(r=rows, c=cols, t=dtype), [random((rows, cols), dtype)], ["stablehlo.reduce"],
                max_kernels=1)
    (p,) = programs_of(art)
    assert ("for roff in range" in p.kernels[0].source) == (cols > 4096)


def test_layernorm_with_weights_is_one_kernel():
    text = """func.func @main(%x: tensor<8x48xf32>, %g: tensor<48xf32>, %b: tensor<48xf32>) -> tensor<8x48xf32> {
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %n = stablehlo.constant dense<48.0> : tensor<8xf32>
  %eps = stablehlo.constant dense<1.0e-5> : tensor<8x1xf32>
  %s = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = [1] : (tensor<8x48xf32>, tensor<f32>) -> tensor<8xf32>
  %mean = stablehlo.divide %s, %n : tensor<8xf32>
  %mb = stablehlo.broadcast_in_dim %mean, dims = [0] : (tensor<8xf32>) -> tensor<8x48xf32>
  %d = stablehlo.subtract %x, %mb : tensor<8x48xf32>
  %sq = stablehlo.multiply %d, %d : tensor<8x48xf32>
  %v = stablehlo.reduce(%sq init: %z) applies stablehlo.add across dimensions = [1] : (tensor<8x48xf32>, tensor<f32>) -> tensor<8xf32>
  %var = stablehlo.divide %v, %n : tensor<8xf32>
  %var1 = stablehlo.reshape %var : (tensor<8xf32>) -> tensor<8x1xf32>
  %ve = stablehlo.add %var1, %eps : tensor<8x1xf32>
  %r = stablehlo.rsqrt %ve : tensor<8x1xf32>
  %rb = stablehlo.broadcast_in_dim %r, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x48xf32>
  %y = stablehlo.multiply %d, %rb : tensor<8x48xf32>
  %gb = stablehlo.broadcast_in_dim %g, dims = [1] : (tensor<48xf32>) -> tensor<8x48xf32>
  %bb = stablehlo.broadcast_in_dim %b, dims = [1] : (tensor<48xf32>) -> tensor<8x48xf32>
  %yg = stablehlo.multiply %y, %gb : tensor<8x48xf32>
  %o = stablehlo.add %yg, %bb : tensor<8x48xf32>
  return %o : tensor<8x48xf32>
}"""
    check(text, [random((8, 48), "f32"), random((48,), "f32"), random((48,), "f32")], ["stablehlo.reduce"],
          max_kernels=1)


def test_reduction_result_read_elsewhere_splits_the_kernel():
    """A row sum read transposed cannot be fused with its reduction: two kernels, same answer."""
    text = """func.func @main(%x: tensor<4x4x3xf32>) -> tensor<4x4xf32> {
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = [2] : (tensor<4x4x3xf32>, tensor<f32>) -> tensor<4x4xf32>
  %t = stablehlo.transpose %s, dims = [1, 0] : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %r = stablehlo.add %s, %t : tensor<4x4xf32>
  return %r : tensor<4x4xf32>
}"""
    check(text, [random((4, 4, 3), "f32")], ["stablehlo.reduce", "stablehlo.transpose"], accumulate=True)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_dot_general_batched_and_transposed_with_epilogue(dtype):
    text = f"""func.func @main(%a: {ty((2, 3, 5), dtype)}, %b: {ty((2, 4, 5), dtype)}, %c: {ty((4,), dtype)}) -> {ty((2, 3, 4), dtype)} {{
  %d = stablehlo.dot_general %a, %b, batching_dims = [0] x [0], contracting_dims = [2] x [2] : ({ty((2, 3, 5), dtype)}, {ty((2, 4, 5), dtype)}) -> {ty((2, 3, 4), dtype)}
  %cb = stablehlo.broadcast_in_dim %c, dims = [2] : ({ty((4,), dtype)}) -> {ty((2, 3, 4), dtype)}
  %e = stablehlo.add %d, %cb : {ty((2, 3, 4), dtype)}
  %r = stablehlo.tanh %e : {ty((2, 3, 4), dtype)}
  return %r : {ty((2, 3, 4), dtype)}
}}"""
    check(text, [random((2, 3, 5), dtype), random((2, 4, 5), dtype), random((4,), dtype)],
          ["stablehlo.dot_general", "stablehlo.tanh"], accumulate=True, max_kernels=1)


def test_unclaimed_op_falls_back_to_cpu_with_copies():
    """atan2 has no Triton lowering yet: it runs on cpu between two cuda clusters, and the answer is right."""
    text = """func.func @main(%x: tensor<8xf32>, %y: tensor<8xf32>) -> tensor<8xf32> {
  %a = stablehlo.exponential %x : tensor<8xf32>
  %t = stablehlo.atan2 %a, %y : tensor<8xf32>
  %r = stablehlo.multiply %t, %a : tensor<8xf32>
  return %r : tensor<8xf32>
}"""
    art = check(text, [random((8,), "f32"), random((8,), "f32", "nonzero")], ["stablehlo.exponential"])
    assert "stablehlo.atan2" in art.report["ops_per_backend"]["cpu"]


@pytest.mark.parametrize("op,init,window,strides,padding", [
    ("maximum", "0xFF800000", [1, 1, 3, 3], [1, 1, 2, 2], [[0, 0], [0, 0], [1, 1], [1, 1]]),
    ("add", "0.0", [1, 2, 2, 1], [1, 2, 2, 1], [[0, 0], [0, 0], [0, 0], [0, 0]]),
    ("maximum", "0xFF800000", [1, 1, 2, 2], [1, 1, 1, 1], [[0, 0], [0, 0], [0, 1], [1, 0]])])
def test_pooling_windows(op, init, window, strides, padding):
    shape = (2, 3, 7, 6)
    out = [(s + lo + hi - w) // st + 1 for s, w, st, (lo, hi) in zip(shape, window, strides, padding)]
    text = f"""func.func @main(%x: {ty(shape, "f32")}) -> {ty(out, "f32")} {{
  %i = stablehlo.constant dense<{init}> : tensor<f32>
  %r = "stablehlo.reduce_window"(%x, %i) ({{
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %m = stablehlo.{op} %a, %b : tensor<f32>
      stablehlo.return %m : tensor<f32>
  }}) {{window_dimensions = array<i64: {", ".join(map(str, window))}>, window_strides = array<i64: {", ".join(map(str, strides))}>, padding = dense<{padding}> : tensor<4x2xi64>}} : ({ty(shape, "f32")}, tensor<f32>) -> {ty(out, "f32")}
  return %r : {ty(out, "f32")}
}}"""
    check(text, [random(shape, "f32")], ["stablehlo.reduce_window"], max_kernels=1)


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_convolution_nchw_and_nhwc_with_epilogue(dtype):
    """One NCHW convolution (as torch exports it) and one NHWC with groups and stride, each with a bias + ReLU
    epilogue: implicit-GEMM kernels, the epilogue a fused kernel after each."""
    x, w = ty((2, 4, 9, 9), dtype), ty((6, 4, 3, 3), dtype)
    y = ty((2, 6, 9, 9), dtype)
    xn, wn, yn = ty((2, 9, 9, 4), dtype), ty((3, 3, 2, 6), dtype), ty((2, 5, 5, 6), dtype)
    text = f"""func.func @main(%x: {x}, %w: {w}, %b: {ty((6,), dtype)}, %xn: {xn}, %wn: {wn}) -> ({y}, {yn}) {{
  %c = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {{stride = [1, 1], pad = [[1, 1], [1, 1]]}} {{batch_group_count = 1 : i64, feature_group_count = 1 : i64}} : ({x}, {w}) -> {y}
  %bb = stablehlo.broadcast_in_dim %b, dims = [1] : ({ty((6,), dtype)}) -> {y}
  %a = stablehlo.add %c, %bb : {y}
  %z = stablehlo.constant dense<0.0> : {y}
  %r = stablehlo.maximum %a, %z : {y}
  %cn = stablehlo.convolution(%xn, %wn) dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f], window = {{stride = [2, 2], pad = [[1, 1], [1, 1]]}} {{batch_group_count = 1 : i64, feature_group_count = 2 : i64}} : ({xn}, {wn}) -> {yn}
  return %r, %cn : {y}, {yn}
}}"""
    check(text, [random((2, 4, 9, 9), dtype), random((6, 4, 3, 3), dtype), random((6,), dtype),
                 random((2, 9, 9, 4), dtype), random((3, 3, 2, 6), dtype)], ["stablehlo.convolution"],
          accumulate=True, pass_groups=["legalize", "canonicalize"])


def test_outputs_of_different_sizes_in_one_kernel_share_values_correctly():
    """A small output (a reshaped vector) and a large one reading it broadcast: both at their own indices of one
    flat range; the small one's lanes wrap, and a value loaded for it must not be reused unwrapped."""
    text = """func.func @main(%x: tensor<4x16xf32>, %c: tensor<16xf32>) -> (tensor<1x16xf32>, tensor<4x16xf32>) {
  %r = stablehlo.reshape %c : (tensor<16xf32>) -> tensor<1x16xf32>
  %b = stablehlo.broadcast_in_dim %r, dims = [0, 1] : (tensor<1x16xf32>) -> tensor<4x16xf32>
  %m = stablehlo.multiply %x, %b : tensor<4x16xf32>
  return %r, %m : tensor<1x16xf32>, tensor<4x16xf32>
}"""
    check(text, [random((4, 16), "f32"), random((16,), "f32")], ["stablehlo.multiply"], max_kernels=1)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_scalar_outputs_beside_larger_ones(dtype):
    """A rank-0 result (a loss) in the same kernel as a larger one, and a full reduction to a scalar."""
    t, s = ty((3, 4), dtype), ty((), dtype)
    text = f"""func.func @main(%x: {t}, %y: {s}) -> ({s}, {t}, {s}) {{
  %n = stablehlo.negate %y : {s}
  %b = stablehlo.broadcast_in_dim %n, dims = [] : ({s}) -> {t}
  %m = stablehlo.multiply %x, %b : {t}
  %z = stablehlo.constant dense<0.0> : {s}
  %r = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = [0, 1] : ({t}, {s}) -> {s}
  return %n, %m, %r : {s}, {t}, {s}
}}"""
    check(text, [random((3, 4), dtype), random((), dtype)], ["stablehlo.negate", "stablehlo.reduce"],
          accumulate=True)


@pytest.mark.parametrize("combiner,dtype", [("add", "f32"), ("add", "i32"), ("replace", "bf16")])
def test_scatter_rows_with_duplicates_and_out_of_range_indices(combiner, dtype):
    """An embedding gradient's scatter: rows of updates added (atomically) into a table at given ids, duplicates
    summed, out-of-range ids skipped; replace with unique ids."""
    body = "%s = stablehlo.add %a, %b : tensor<{t}>\n      stablehlo.return %s : tensor<{t}>" if combiner == "add" \
        else "stablehlo.return %b : tensor<{t}>"
    body = body.replace("{t}", dtype)
    text = f"""func.func @main(%table: {ty((10, 4), dtype)}, %ids: tensor<5x1xi64>, %upd: {ty((5, 4), dtype)}) -> {ty((10, 4), dtype)} {{
  %r = "stablehlo.scatter"(%table, %ids, %upd) ({{
    ^bb0(%a: tensor<{dtype}>, %b: tensor<{dtype}>):
      {body}
  }}) {{scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [1], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 1>, indices_are_sorted = false, unique_indices = false}} : ({ty((10, 4), dtype)}, tensor<5x1xi64>, {ty((5, 4), dtype)}) -> {ty((10, 4), dtype)}
  return %r : {ty((10, 4), dtype)}
}}"""
    ids = np.array([[3], [7], [3], [12], [0]] if combiner == "add" else [[3], [7], [1], [-2], [0]], np.int64)
    check(text, [random((10, 4), dtype), ids, random((5, 4), dtype)], ["stablehlo.scatter"], accumulate=True)


@pytest.mark.parametrize("dtype", ["i32", "i64", "i8"])
def test_shifts_by_any_amount(dtype):
    """Amounts of 0 .. bit width and beyond, and negative ones: StableHLO gives 0 (or the sign, shifting right)."""
    t = ty((12,), dtype)
    text = f"""func.func @main(%x: {t}, %s: {t}) -> ({t}, {t}) {{
  %l = stablehlo.shift_left %x, %s : {t}
  %r = stablehlo.shift_right_arithmetic %x, %s : {t}
  return %l, %r : {t}, {t}
}}"""
    bits = {"i8": 8, "i32": 32, "i64": 64}[dtype]
    x = np.array([5, -7, 1, -1, 100, -100, 3, -3, 0, 12, -12, 1], dtype=random((1,), dtype).dtype)
    s = np.array([0, 1, bits - 1, bits - 1, bits, bits + 3, -1, 2, 5, 3, 3, 200 % 128], dtype=x.dtype)
    check(text, [x, s], ["stablehlo.shift_left", "stablehlo.shift_right_arithmetic"])

