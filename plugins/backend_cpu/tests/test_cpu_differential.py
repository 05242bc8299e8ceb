"""Differential tests: every op the cpu backend claims, per dtype and shape, against the reference interpreter.

Each program is compiled twice, for ``cpu`` and for ``reference``; the test first checks that the op really
went to the cpu backend (so a silent fallback cannot pass), then compares outputs: bit-exact for integers and
booleans, within a tolerance per float type.
"""

import numpy as np
import pytest

import byteir_core
from byteir_core.dtypes import to_numpy
from programs import elementwise, random_array, ty

rng = np.random.default_rng(1234)


def random(shape, dtype, kind="any"):
    return random_array(rng, shape, dtype, kind)


#: Where a dtype's kernels differ by CPU: no bf16 conversion instruction below AVX512-BF16, no f16 one below F16C
#: (x86-64-v3). Those cases run once more with kernels built for these CPUs (marker ``cpu``, see conftest.py),
#: so a machine with AVX-512 also runs what an AVX2 or a baseline x86-64 machine would.
OLDER_CPUS = {"bf16": ("x86-64-v3", "x86-64"), "f16": ("x86-64",)}


def on_older_cpus(cases):
    """``cases`` (dtypes, or tuples of dtypes for a multi-argument parametrize), then each case again for every
    CPU of :data:`OLDER_CPUS` that one of its dtypes names."""
    extra = []
    for case in cases:
        dtypes = case if isinstance(case, tuple) else (case,)
        for cpu in dict.fromkeys(c for d in dtypes for c in OLDER_CPUS.get(d, ())):
            extra.append(pytest.param(*dtypes, marks=pytest.mark.cpu(cpu), id="-".join([*dtypes, cpu])))
    return [*cases, *extra]


def check(text, inputs, expect_on_cpu, accumulate=False, pass_groups=None):
    """``accumulate``: sums of many products, whose rounding depends on summation order; compare with an
    absolute tolerance scaled by the output's magnitude."""
    cpu = byteir_core.compile(text, target="cpu", pass_groups=pass_groups)
    per = cpu.report["ops_per_backend"]
    claimed = set().union(*(per.get(b, {}) for b in ("cpu", "cpu_blas", "cpu_host")))  # the cpu target's backends
    assert set(expect_on_cpu) <= claimed, cpu.report["ops_per_backend"]
    ref = byteir_core.compile(text, target="reference", pass_groups=pass_groups)
    before = [np.copy(a) for a in inputs]
    got = byteir_core.load(cpu.to_bytes()).run(*inputs)
    for a, b in zip(inputs, before):  # kernels never write into the caller's arrays (bytes: NaN == NaN here)
        assert a.tobytes() == b.tobytes()
    want = byteir_core.load(ref.to_bytes()).run(*inputs)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if np.issubdtype(g.dtype, np.floating) or g.dtype.name == "bfloat16":
            tol = {"float64": 1e-12, "float32": 2e-6, "float16": 2e-3, "bfloat16": 1.6e-2}[g.dtype.name]  # ~2 ulp
            scale = float(np.abs(w.astype(np.float64)).max(initial=1.0)) if accumulate else 1.0
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol, atol=tol * scale * 4,
                                       equal_nan=True)
        else:
            np.testing.assert_array_equal(g, w)


UNARY_FLOAT = {
    "abs": "any", "ceil": "any", "cosine": "any", "exponential": "any",
    "exponential_minus_one": "any", "floor": "any", "log": "positive", "log_plus_one": "positive",
    "logistic": "any", "negate": "any", "rsqrt": "positive", "sign": "any", "sine": "any", "sqrt": "positive",
    "tan": "unit", "tanh": "any", "round_nearest_afz": "any", "round_nearest_even": "any",
}


@pytest.mark.parametrize("dtype", on_older_cpus(["f32", "f64", "f16", "bf16"]))
@pytest.mark.parametrize("op", sorted(UNARY_FLOAT))
def test_unary_float(op, dtype):
    t = ty((3, 5), dtype)
    text = elementwise(op, t)
    check(text, [random((3, 5), dtype, UNARY_FLOAT[op])], [f"stablehlo.{op}"])


BINARY_FLOAT = {"add": "any", "subtract": "any", "multiply": "any", "divide": "nonzero", "maximum": "any",
                "minimum": "any", "atan2": "nonzero", "power": "positive", "remainder": "nonzero"}


@pytest.mark.parametrize("dtype", on_older_cpus(["f32", "f64", "f16", "bf16"]))
@pytest.mark.parametrize("op", sorted(BINARY_FLOAT))
def test_binary_float(op, dtype):
    t = ty((4, 3), dtype)
    text = elementwise(op, t, 2)
    x = random((4, 3), dtype, "positive" if op == "power" else "any")
    y = random((4, 3), dtype, BINARY_FLOAT[op])
    if op == "power":
        y = (y % 3).astype(y.dtype)
    check(text, [x, y], [f"stablehlo.{op}"])


BINARY_INT = {"add": "any", "subtract": "any", "multiply": "any", "maximum": "any", "minimum": "any",
              "and": "any", "or": "any", "xor": "any", "divide": "nonzero", "remainder": "nonzero"}


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
@pytest.mark.parametrize("dtype", ["f32", "i32"])
def test_compare_select_clamp(direction, dtype):
    t, b = ty((4, 4), dtype), ty((4, 4), "i1")
    text = f"""func.func @main(%x: {t}, %y: {t}, %lo: {t}, %hi: {t}) -> ({t}, {b}) {{
  %c = stablehlo.compare {direction}, %x, %y : ({t}, {t}) -> {b}
  %s = stablehlo.select %c, %x, %y : {b}, {t}
  %r = stablehlo.clamp %lo, %s, %hi : {t}
  return %r, %c : {t}, {b}
}}"""
    x = random((4, 4), dtype)
    y = np.where(rng.random((4, 4)) < 0.3, x, random((4, 4), dtype)).astype(x.dtype)  # some ties
    lo = np.full((4, 4), -1, x.dtype)
    check(text, [x, y, lo, np.full((4, 4), 1, x.dtype)],
          ["stablehlo.compare", "stablehlo.select", "stablehlo.clamp"])


@pytest.mark.parametrize("src,dst", on_older_cpus([
    ("f32", "i32"), ("i32", "f32"), ("f32", "f16"), ("f16", "f32"), ("i64", "i32"), ("i32", "i64"), ("i1", "f32"),
    ("f32", "i1"), ("f64", "f32"), ("i8", "i32"), ("f32", "bf16"), ("bf16", "f32"), ("bf16", "i32")]))
def test_convert(src, dst):
    a, b = ty((5,), src), ty((5,), dst)
    text = f"func.func @main(%x: {a}) -> {b} {{\n  %r = stablehlo.convert %x : ({a}) -> {b}\n  return %r : {b}\n}}"
    x = random((5,), src)
    if src.startswith("f") and dst.startswith("i") and dst != "i1":
        x = (x * 3).astype(x.dtype)
    check(text, [x], ["stablehlo.convert"])


def test_is_finite():
    t, b = ty((6,), "f32"), ty((6,), "i1")
    text = f"func.func @main(%x: {t}) -> {b} {{\n  %r = stablehlo.is_finite %x : ({t}) -> {b}\n  return %r : {b}\n}}"
    check(text, [np.array([1.0, np.inf, -np.inf, np.nan, 0.0, -3.5], np.float32)], ["stablehlo.is_finite"])


@pytest.mark.parametrize("dtype", on_older_cpus(["f32", "f16", "bf16", "i32"]))
def test_dot_general_batched_and_transposed(dtype):
    text = f"""func.func @main(%a: {ty((2, 3, 5), dtype)}, %b: {ty((2, 4, 5), dtype)}) -> {ty((2, 3, 4), dtype)} {{
  %d = stablehlo.dot_general %a, %b, batching_dims = [0] x [0], contracting_dims = [2] x [2] : ({ty((2, 3, 5), dtype)}, {ty((2, 4, 5), dtype)}) -> {ty((2, 3, 4), dtype)}
  return %d : {ty((2, 3, 4), dtype)}
}}"""
    check(text, [random((2, 3, 5), dtype), random((2, 4, 5), dtype)], ["stablehlo.dot_general"], accumulate=True)


def test_structural_ops_rank0_and_broadcasts():
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
    check(text, [x, np.array(1.5, np.float32)], pass_groups=no_folding, expect_on_cpu=
          ["stablehlo.transpose", "stablehlo.concatenate", "stablehlo.reverse", "stablehlo.broadcast_in_dim",
           "stablehlo.slice", "stablehlo.iota"])


def test_pad_reshape_and_zero_size():
    text = """func.func @main(%x: tensor<2x3xf32>, %z: tensor<0x3xf32>) -> (tensor<5x8xf32>, tensor<6xf32>, tensor<0x3xf32>) {
  %v = stablehlo.constant dense<-1.0> : tensor<f32>
  %p = stablehlo.pad %x, %v, low = [1, 2], high = [1, 1], interior = [1, 1] : (tensor<2x3xf32>, tensor<f32>) -> tensor<5x8xf32>
  %e = stablehlo.exponential %x : tensor<2x3xf32>
  %r = stablehlo.reshape %e : (tensor<2x3xf32>) -> tensor<6xf32>
  %zz = stablehlo.add %z, %z : tensor<0x3xf32>
  return %p, %r, %zz : tensor<5x8xf32>, tensor<6xf32>, tensor<0x3xf32>
}"""
    check(text, [random((2, 3), "f32"), np.zeros((0, 3), np.float32)], ["stablehlo.pad", "stablehlo.reshape"])


@pytest.mark.parametrize("dtype", ["f32", "i32"])
def test_reduce_sum_and_max(dtype):
    t = ty((4, 6), dtype)
    s = ty((), dtype)
    init_max = "0xFF800000" if dtype == "f32" else "-2147483648"
    text = f"""func.func @main(%x: {t}) -> ({ty((6,), dtype)}, {ty((4,), dtype)}) {{
  %z = stablehlo.constant dense<0> : {s}
  %m = stablehlo.constant dense<{init_max}> : {s}
  %a = stablehlo.reduce(%x init: %z) applies stablehlo.add across dimensions = [0] : ({t}, {s}) -> {ty((6,), dtype)}
  %b = stablehlo.reduce(%x init: %m) applies stablehlo.maximum across dimensions = [1] : ({t}, {s}) -> {ty((4,), dtype)}
  return %a, %b : {ty((6,), dtype)}, {ty((4,), dtype)}
}}""".replace("dense<0> : tensor<f32>", "dense<0.0> : tensor<f32>")
    check(text, [random((4, 6), dtype)], ["stablehlo.reduce"], accumulate=True)


@pytest.mark.parametrize("stride,pad,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 1, 2, 1), (1, 0, 1, 2)])
def test_convolution(stride, pad, dilation, groups):
    n, c, h, o, k = 2, 4, 7, 6, 3
    eff = (k - 1) * dilation + 1
    oh = (h + 2 * pad - eff) // stride + 1
    xin, win, out = (n, c, h, h), (o, c // groups, k, k), (n, o, oh, oh)
    text = f"""func.func @main(%x: {ty(xin, "f32")}, %w: {ty(win, "f32")}) -> {ty(out, "f32")} {{
  %r = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {{stride = [{stride}, {stride}], pad = [[{pad}, {pad}], [{pad}, {pad}]], rhs_dilate = [{dilation}, {dilation}]}} {{batch_group_count = 1 : i64, feature_group_count = {groups} : i64}} : ({ty(xin, "f32")}, {ty(win, "f32")}) -> {ty(out, "f32")}
  return %r : {ty(out, "f32")}
}}"""
    check(text, [random(xin, "f32"), random(win, "f32")], ["stablehlo.convolution"], accumulate=True)


def test_unclaimed_ops_fall_back_to_reference_and_the_report_says_so():
    """A sort by |x| (a comparator the host sort does not recognize) goes to the reference backend."""
    text = """func.func @main(%x: tensor<5xf32>) -> tensor<5xf32> {
  %s = "stablehlo.sort"(%x) ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %aa = stablehlo.abs %a : tensor<f32>
      %bb = stablehlo.abs %b : tensor<f32>
      %c = stablehlo.compare LT, %aa, %bb : (tensor<f32>, tensor<f32>) -> tensor<i1>
      stablehlo.return %c : tensor<i1>
  }) {dimension = 0 : i64, is_stable = true} : (tensor<5xf32>) -> tensor<5xf32>
  %e = stablehlo.exponential %s : tensor<5xf32>
  return %e : tensor<5xf32>
}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.exponential": 1},
                                             "reference": {"stablehlo.sort": 1}}
    x = np.array([3.0, -1.0, 2.0, 0.5, -4.0], np.float32)
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x), np.exp(x[np.argsort(np.abs(x), kind="stable")]),
                               rtol=1e-6)


@pytest.mark.parametrize("lhs,rhs,dims,out", [
    ((6, 5), (5, 7), "contracting_dims = [1] x [0]", (6, 7)),                      # plain GEMM
    ((6, 5), (7, 5), "contracting_dims = [1] x [1]", (6, 7)),                      # B transposed (x @ W^T)
    ((5, 6), (5, 7), "contracting_dims = [0] x [0]", (6, 7)),                      # A transposed
    ((3, 2, 4, 5), (3, 2, 5, 6), "batching_dims = [0, 1] x [0, 1], contracting_dims = [3] x [2]", (3, 2, 4, 6)),
    ((4, 3, 5), (5, 3, 2), "batching_dims = [1] x [1], contracting_dims = [2] x [0]", (3, 4, 2)),  # batch in the middle
    ((2, 3, 4), (3, 4, 5), "contracting_dims = [1, 2] x [0, 1]", (2, 5)),          # two contracting dims
    ((8,), (8,), "contracting_dims = [0] x [0]", ()),                              # dot product to rank 0
])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_gemm_library_calls(lhs, rhs, dims, out, dtype):
    text = f"""func.func @main(%a: {ty(lhs, dtype)}, %b: {ty(rhs, dtype)}) -> {ty(out, dtype)} {{
  %d = stablehlo.dot_general %a, %b, {dims} : ({ty(lhs, dtype)}, {ty(rhs, dtype)}) -> {ty(out, dtype)}
  return %d : {ty(out, dtype)}
}}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu_blas": {"stablehlo.dot_general": 1}}
    check(text, [random(lhs, dtype), random(rhs, dtype)], ["stablehlo.dot_general"], accumulate=True)


def test_gemm_with_a_small_constant_operand_and_fused_epilogue():
    text = """func.func @main(%x: tensor<4x3xf32>) -> tensor<4x2xf32> {
  %w = stablehlo.constant dense<[[1.0, -2.0], [0.5, 4.0], [3.0, 0.25]]> : tensor<3x2xf32>
  %d = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x3xf32>, tensor<3x2xf32>) -> tensor<4x2xf32>
  %t = stablehlo.tanh %d : tensor<4x2xf32>
  %y = stablehlo.multiply %t, %d : tensor<4x2xf32>
  return %y : tensor<4x2xf32>
}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.multiply": 1, "stablehlo.tanh": 1},
                                             "cpu_blas": {"stablehlo.dot_general": 1}}
    assert {k.kernel.format for k in art.module.kernels.values()} == {"npz-operands", "elf-shared-object"}
    x = random((4, 3), "f32")
    w = np.array([[1.0, -2.0], [0.5, 4.0], [3.0, 0.25]])
    d = x.astype(np.float64) @ w
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x), np.tanh(d) * d, rtol=1e-5, atol=1e-5)


def test_integer_and_f16_gemm_stay_in_generated_code():
    text = """func.func @main(%a: tensor<3x4xi32>, %b: tensor<4x2xi32>) -> tensor<3x2xi32> {
  %d = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<3x4xi32>, tensor<4x2xi32>) -> tensor<3x2xi32>
  return %d : tensor<3x2xi32>
}"""
    assert byteir_core.compile(text, target="cpu").report["ops_per_backend"] == {"cpu": {"stablehlo.dot_general": 1}}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("stride,pad,dilation,groups", [(1, (0, 0), 1, 1), (2, (1, 2), 1, 1), (1, (2, 1), 2, 1),
                                                        (2, (1, 1), 1, 4)])
def test_convolution_as_im2col_gemm(layout, stride, pad, dilation, groups):
    n, c, h, o, k = 2, 4, 9, 8, 3
    eff = (k - 1) * dilation + 1
    oh = (h + sum(pad) - eff) // stride + 1
    if layout == "nchw":
        xin, win, out, dims = (n, c, h, h), (o, c // groups, k, k), (n, o, oh, oh), "[b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]"
    else:  # TensorFlow's layout
        xin, win, out, dims = (n, h, h, c), (k, k, c // groups, o), (n, oh, oh, o), "[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]"
    text = f"""func.func @main(%x: {ty(xin, "f32")}, %w: {ty(win, "f32")}) -> {ty(out, "f32")} {{
  %r = stablehlo.convolution(%x, %w) dim_numbers = {dims}, window = {{stride = [{stride}, {stride}], pad = [[{pad[0]}, {pad[1]}], [{pad[0]}, {pad[1]}]], rhs_dilate = [{dilation}, {dilation}]}} {{batch_group_count = 1 : i64, feature_group_count = {groups} : i64}} : ({ty(xin, "f32")}, {ty(win, "f32")}) -> {ty(out, "f32")}
  return %r : {ty(out, "f32")}
}}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu_blas": {"stablehlo.convolution": 1}}
    check(text, [random(xin, "f32"), random(win, "f32")], ["stablehlo.convolution"], accumulate=True)


def test_conv1d_and_f16_conv_placement():
    text = """func.func @main(%x: tensor<1x3x10xf32>, %w: tensor<5x3x4xf32>) -> tensor<1x5x7xf32> {
  %r = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0]x[o, i, 0]->[b, f, 0], window = {stride = [1], pad = [[0, 0]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<1x3x10xf32>, tensor<5x3x4xf32>) -> tensor<1x5x7xf32>
  return %r : tensor<1x5x7xf32>
}"""
    check(text, [random((1, 3, 10), "f32"), random((5, 3, 4), "f32")], ["stablehlo.convolution"], accumulate=True)
    f16 = text.replace("f32", "f16")
    assert byteir_core.compile(f16, target="cpu").report["ops_per_backend"] == {"cpu": {"stablehlo.convolution": 1}}


@pytest.mark.parametrize("kind,init", [("maximum", "0xFF800000"), ("add", "0.0")])
@pytest.mark.parametrize("window,stride,pad", [((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (0, 0))])
def test_reduce_window_pooling(kind, init, window, stride, pad):
    n, c, h = 1, 3, 8
    oh = (h + 2 * pad[0] - window[0]) // stride[0] + 1
    text = f"""func.func @main(%x: tensor<{n}x{c}x{h}x{h}xf32>) -> tensor<{n}x{c}x{oh}x{oh}xf32> {{
  %i = stablehlo.constant dense<{init}> : tensor<f32>
  %r = "stablehlo.reduce_window"(%x, %i) <{{padding = dense<[[0, 0], [0, 0], [{pad[0]}, {pad[0]}], [{pad[1]}, {pad[1]}]]> : tensor<4x2xi64>, window_dimensions = array<i64: 1, 1, {window[0]}, {window[1]}>, window_strides = array<i64: 1, 1, {stride[0]}, {stride[1]}>}}> ({{
  ^bb0(%a: tensor<f32>, %b: tensor<f32>):
    %m = stablehlo.{kind} %a, %b : tensor<f32>
    stablehlo.return %m : tensor<f32>
  }}) : (tensor<{n}x{c}x{h}x{h}xf32>, tensor<f32>) -> tensor<{n}x{c}x{oh}x{oh}xf32>
  return %r : tensor<{n}x{c}x{oh}x{oh}xf32>
}}"""
    check(text, [random((n, c, h, h), "f32")], ["stablehlo.reduce_window"], accumulate=True)


@pytest.mark.parametrize("idx_type", ["i32", "i64"])
def test_gather_embedding_lookup(idx_type):
    """What an embedding table lookup becomes: gather rows of a [vocab, hidden] table."""
    text = f"""func.func @main(%table: tensor<50x8xf32>, %ids: tensor<2x5x{idx_type}>) -> tensor<2x5x8xf32> {{
  %r = "stablehlo.gather"(%table, %ids) <{{dimension_numbers = #stablehlo.gather<offset_dims = [2], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 2>, indices_are_sorted = false, slice_sizes = array<i64: 1, 8>}}> : (tensor<50x8xf32>, tensor<2x5x{idx_type}>) -> tensor<2x5x8xf32>
  return %r : tensor<2x5x8xf32>
}}"""
    ids = rng.integers(0, 50, size=(2, 5)).astype(to_numpy(idx_type))
    check(text, [random((50, 8), "f32"), ids], ["stablehlo.gather"])


def test_dynamic_slice_and_update_slice():
    text = """func.func @main(%x: tensor<6x8xf32>, %u: tensor<2x3xf32>, %i: tensor<i32>, %j: tensor<i32>) -> (tensor<2x3xf32>, tensor<6x8xf32>) {
  %s = stablehlo.dynamic_slice %x, %i, %j, sizes = [2, 3] : (tensor<6x8xf32>, tensor<i32>, tensor<i32>) -> tensor<2x3xf32>
  %d = stablehlo.dynamic_update_slice %x, %u, %j, %i : (tensor<6x8xf32>, tensor<2x3xf32>, tensor<i32>, tensor<i32>) -> tensor<6x8xf32>
  return %s, %d : tensor<2x3xf32>, tensor<6x8xf32>
}"""
    for i, j in [(1, 2), (5, 7), (-3, 0)]:  # start indices are clamped into range
        check(text, [random((6, 8), "f32"), random((2, 3), "f32"), np.array(i, np.int32), np.array(j, np.int32)],
              ["stablehlo.dynamic_slice", "stablehlo.dynamic_update_slice"])


def test_large_kernels_are_multithreaded_and_still_exact(monkeypatch):
    """Kernels touching >= 32768 elements use OpenMP parallel loops (BYTEIR_CPU_OPENMP=0 turns them off);
    results match the serial kernel's."""
    text = """func.func @main(%x: tensor<256x320xf32>, %y: tensor<320x256xf32>) -> (tensor<256x320xf32>, tensor<256xf32>) {
  %t = stablehlo.transpose %y, dims = [1, 0] : (tensor<320x256xf32>) -> tensor<256x320xf32>
  %l = stablehlo.logistic %x : tensor<256x320xf32>
  %m = stablehlo.multiply %l, %t : tensor<256x320xf32>
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%m init: %z) applies stablehlo.add across dimensions = [1] : (tensor<256x320xf32>, tensor<f32>) -> tensor<256xf32>
  return %m, %s : tensor<256x320xf32>, tensor<256xf32>
}"""
    x, y = random((256, 320), "f32"), random((320, 256), "f32")
    monkeypatch.setenv("BYTEIR_CPU_OPENMP", "0")
    assert [s.attrs["openmp"] for s in byteir_core.compile(text, target="cpu").module.steps
            if s.op == "compute"] == [0]
    monkeypatch.delenv("BYTEIR_CPU_OPENMP")
    threaded = byteir_core.compile(text, target="cpu")  # the default
    assert [s.attrs["openmp"] for s in threaded.module.steps if s.op == "compute"] == [1]
    monkeypatch.setenv("BYTEIR_NUM_THREADS", "1")
    serial = byteir_core.compile(text, target="cpu")
    assert [s.attrs["openmp"] for s in serial.module.steps if s.op == "compute"] == [0]
    a = byteir_core.load(threaded.to_bytes()).run(x, y)
    b = byteir_core.load(serial.to_bytes()).run(x, y)
    # sums reassociated for vectorization: a different rounding order
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-5)
    monkeypatch.delenv("BYTEIR_NUM_THREADS")
    check(text, [x, y], ["stablehlo.logistic", "stablehlo.reduce"], accumulate=True)  # threaded vs interpreter


def test_concurrent_requests_with_cached_descriptors():
    """Kernels cache memref descriptors per operand; concurrent requests with their own arrays stay correct."""
    from concurrent.futures import ThreadPoolExecutor

    text = """func.func @main(%x: tensor<16x32xf32>, %w: tensor<32x8xf32>) -> tensor<16x8xf32> {
  %t = stablehlo.tanh %x : tensor<16x32xf32>
  %d = stablehlo.dot_general %t, %w, contracting_dims = [1] x [0] : (tensor<16x32xf32>, tensor<32x8xf32>) -> tensor<16x8xf32>
  %e = stablehlo.exponential %d : tensor<16x8xf32>
  return %e : tensor<16x8xf32>
}"""
    session = byteir_core.load(byteir_core.compile(text, target="cpu").to_bytes())
    pairs = [(random((16, 32), "f32"), random((32, 8), "f32") * 0.1) for _ in range(32)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(lambda p: session(*p), pairs))
    for (x, w), y in zip(pairs, outs):
        np.testing.assert_allclose(y, np.exp(np.tanh(x.astype(np.float64)) @ w), rtol=1e-5)


TANH = """func.func @main(%x: tensor<64x64xf32>) -> tensor<64x64xf32> {
  %t = stablehlo.tanh %x : tensor<64x64xf32>
  %e = stablehlo.exponential %t : tensor<64x64xf32>
  return %e : tensor<64x64xf32>
}"""


@pytest.mark.parametrize("cpu", ["x86-64", "x86-64-v3", "x86-64-v4"])
def test_kernels_for_a_chosen_cpu_record_the_isa_they_need(cpu, monkeypatch):
    """--cpu / BYTEIR_CPU: code for an older CPU than this one runs here; the ISA flags travel with the kernel."""
    from byteir_backend_cpu.provider import host_isa

    monkeypatch.setenv("BYTEIR_CPU", cpu)
    art = byteir_core.compile(TANH, target="cpu")
    (step,) = [s for s in art.module.steps if s.callee == "cpu.native"]
    isa = set(filter(None, step.attrs["isa"].split(",")))
    assert isa == {"x86-64": set(), "x86-64-v3": {"avx", "avx2", "fma", "f16c"}}.get(cpu, isa)
    if cpu == "x86-64-v4":
        assert {"avx512f", "avx2"} <= isa
    if host_isa() and not isa <= host_isa():
        pytest.skip(f"this machine lacks {isa - host_isa()}")  # the load refusal is tested below
    x = random((64, 64), "f32")
    np.testing.assert_allclose(byteir_core.load(art.to_bytes()).run(x)[0], np.exp(np.tanh(x)), rtol=2e-6)


def test_kernel_needing_an_isa_the_cpu_lacks_is_refused_at_load(monkeypatch):
    from byteir_core.byre import read_artifact
    from byteir_core.errors import ProviderError

    art = byteir_core.compile(TANH, target="cpu")
    for s in art.module.steps:
        if s.callee == "cpu.native":
            s.attrs["isa"] = "avx2,amx_tile_imaginary"
    with pytest.raises(ProviderError, match="compiled for a CPU with amx_tile_imaginary, which this CPU lacks"):
        byteir_core.load(read_artifact(art.to_bytes()))


def test_unknown_cpu_name_is_a_clear_error(monkeypatch):
    from byteir_core.errors import ByteirError

    monkeypatch.setenv("BYTEIR_CPU", "pentium-9000")
    with pytest.raises(ByteirError, match="BYTEIR_CPU='pentium-9000'"):
        byteir_core.compile(TANH, target="cpu")
