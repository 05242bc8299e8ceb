"""The reference backend end to end (compile -> .byre -> Session), checked against NumPy computed independently."""

import ml_dtypes
import numpy as np
import pytest
from programs import func

import byteir_core
from byteir_core.builtins.reference import INTERPRETER_OPS

rng = np.random.default_rng(42)
X = rng.standard_normal((3, 4)).astype(np.float32)
Y = rng.standard_normal((3, 4)).astype(np.float32)
P = (np.abs(X) + 0.5).astype(np.float32)
T = "tensor<3x4xf32>"


def run(text, *inputs, tmp_path=None, **kw):
    art = byteir_core.compile(text, target="reference", **kw)
    return byteir_core.load(art.to_bytes()).run(*inputs), art


def unary(op):
    return func(f"%x: {T}", T, f"  %r = stablehlo.{op} %x : {T}\n  return %r : {T}")


def binary(op):
    return func(f"%x: {T}, %y: {T}", T, f"  %r = stablehlo.{op} %x, %y : {T}\n  return %r : {T}")


@pytest.mark.parametrize("op,ref,arg", [
    ("exponential", np.exp, X), ("log", np.log, P), ("tanh", np.tanh, X), ("sqrt", np.sqrt, P),
    ("rsqrt", lambda a: 1 / np.sqrt(a), P), ("logistic", lambda a: 1 / (1 + np.exp(-a)), X),
    ("abs", np.abs, X), ("negate", np.negative, X), ("floor", np.floor, X), ("ceil", np.ceil, X),
    ("sine", np.sin, X), ("cosine", np.cos, X), ("sign", np.sign, X),
    ("log_plus_one", np.log1p, P), ("exponential_minus_one", np.expm1, X),
])
def test_unary(op, ref, arg):
    assert f"stablehlo.{op}" in INTERPRETER_OPS
    (out,), _ = run(unary(op), arg)
    np.testing.assert_allclose(out, ref(arg.astype(np.float64)), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op,ref", [
    ("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply), ("divide", np.divide),
    ("maximum", np.maximum), ("minimum", np.minimum), ("atan2", np.arctan2),
])
def test_binary(op, ref):
    (out,), _ = run(binary(op), X, Y)
    np.testing.assert_allclose(out, ref(X.astype(np.float64), Y), rtol=2e-6, atol=2e-6)


def test_power_compare_select_and_i1_output():
    text = func(f"%x: {T}, %y: {T}", f"{T}, tensor<3x4xi1>", f"""
  %p = stablehlo.power %x, %y : {T}
  %c = stablehlo.compare GT, %x, %y : ({T}, {T}) -> tensor<3x4xi1>
  %s = stablehlo.select %c, %x, %y : tensor<3x4xi1>, {T}
  return %s, %c : {T}, tensor<3x4xi1>""")
    (s, c), _ = run(text, X, Y)
    np.testing.assert_array_equal(c, X > Y)
    assert c.dtype == np.bool_
    np.testing.assert_array_equal(s, np.where(X > Y, X, Y))


def test_batched_dot_general_transpose_reduce():
    a = rng.standard_normal((2, 3, 5)).astype(np.float32)
    b = rng.standard_normal((2, 5, 4)).astype(np.float32)
    text = func("%a: tensor<2x3x5xf32>, %b: tensor<2x5x4xf32>", "tensor<2x4x3xf32>, tensor<2xf32>", """
  %d = stablehlo.dot_general %a, %b, batching_dims = [0] x [0], contracting_dims = [2] x [1] : (tensor<2x3x5xf32>, tensor<2x5x4xf32>) -> tensor<2x3x4xf32>
  %t = stablehlo.transpose %d, dims = [0, 2, 1] : (tensor<2x3x4xf32>) -> tensor<2x4x3xf32>
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %s = stablehlo.reduce(%d init: %z) applies stablehlo.add across dimensions = [1, 2] : (tensor<2x3x4xf32>, tensor<f32>) -> tensor<2xf32>
  return %t, %s : tensor<2x4x3xf32>, tensor<2xf32>""")
    (t, s), _ = run(text, a, b)
    ref = np.einsum("bij,bjk->bik", a.astype(np.float64), b)
    np.testing.assert_allclose(t, ref.transpose(0, 2, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s, ref.sum(axis=(1, 2)), rtol=1e-5, atol=1e-4)


def test_convolution_and_max_pool():
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    text = func("%x: tensor<1x2x6x6xf32>, %w: tensor<3x2x3x3xf32>", "tensor<1x3x2x2xf32>", """
  %c = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {stride = [1, 1], pad = [[0, 0], [0, 0]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<1x2x6x6xf32>, tensor<3x2x3x3xf32>) -> tensor<1x3x4x4xf32>
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %p = "stablehlo.reduce_window"(%c, %ninf) ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %m = stablehlo.maximum %a, %b : tensor<f32>
      stablehlo.return %m : tensor<f32>
  }) {window_dimensions = array<i64: 1, 1, 2, 2>, window_strides = array<i64: 1, 1, 2, 2>} : (tensor<1x3x4x4xf32>, tensor<f32>) -> tensor<1x3x2x2xf32>
  return %p : tensor<1x3x2x2xf32>""")
    (out,), _ = run(text, x, w)
    conv = np.zeros((1, 3, 4, 4))
    for o in range(3):
        for i in range(4):
            for j in range(4):
                conv[0, o, i, j] = (x[0, :, i:i + 3, j:j + 3] * w[o]).sum()
    pool = conv.reshape(1, 3, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_allclose(out, pool, rtol=1e-5, atol=1e-5)


def test_concat_slice_pad_iota_convert_broadcast():
    text = func(f"%x: {T}", "tensor<6x2xi32>, tensor<2x3xf32>", f"""
  %cat = stablehlo.concatenate %x, %x, dim = 0 : ({T}, {T}) -> tensor<6x4xf32>
  %sl = stablehlo.slice %cat [0:6, 1:3] : (tensor<6x4xf32>) -> tensor<6x2xf32>
  %i = stablehlo.convert %sl : (tensor<6x2xf32>) -> tensor<6x2xi32>
  %io = stablehlo.iota dim = 1 : tensor<2x3xf32>
  %b = stablehlo.constant dense<[1.0, 2.0]> : tensor<2xf32>
  %bb = stablehlo.broadcast_in_dim %b, dims = [0] : (tensor<2xf32>) -> tensor<2x3xf32>
  %m = stablehlo.multiply %io, %bb : tensor<2x3xf32>
  return %i, %m : tensor<6x2xi32>, tensor<2x3xf32>""")
    x = (X * 10).astype(np.float32)
    (i, m), _ = run(text, x)
    np.testing.assert_array_equal(i, np.trunc(np.concatenate([x, x])[:, 1:3]).astype(np.int32))
    np.testing.assert_array_equal(m, np.arange(3)[None, :] * np.array([1.0, 2.0])[:, None])


def test_bf16_in_and_out():
    a = rng.standard_normal((4,)).astype(ml_dtypes.bfloat16)
    text = func("%a: tensor<4xbf16>", "tensor<4xbf16>, tensor<4xf32>", """
  %s = stablehlo.add %a, %a : tensor<4xbf16>
  %f = stablehlo.convert %a : (tensor<4xbf16>) -> tensor<4xf32>
  return %s, %f : tensor<4xbf16>, tensor<4xf32>""")
    (s, f), _ = run(text, a)
    assert s.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(s.astype(np.float32), (a.astype(np.float32) * 2))
    np.testing.assert_array_equal(f, a.astype(np.float32))


def test_control_flow_if_and_while_with_captured_values():
    text = func(f"%p: tensor<i1>, %x: {T}", f"{T}, tensor<i64>", f"""
  %d = stablehlo.add %x, %x : {T}
  %r = "stablehlo.if"(%p) ({{ stablehlo.return %d : {T} }}, {{ stablehlo.return %x : {T} }}) : (tensor<i1>) -> {T}
  %zero = stablehlo.constant dense<0> : tensor<i64>
  %ten = stablehlo.constant dense<10> : tensor<i64>
  %one = stablehlo.constant dense<1> : tensor<i64>
  %w = stablehlo.while(%i = %zero) : tensor<i64>
   cond {{
    %c = stablehlo.compare LT, %i, %ten : (tensor<i64>, tensor<i64>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
   }} do {{
    %n = stablehlo.add %i, %one : tensor<i64>
    stablehlo.return %n : tensor<i64>
   }}
  return %r, %w : {T}, tensor<i64>""")
    (r, w), _ = run(text, np.array(True), X)
    np.testing.assert_array_equal(r, X * 2)
    assert int(w) == 10
    (r, _), _ = run(text, np.array(False), X)
    np.testing.assert_array_equal(r, X)


def test_rank0_and_zero_size():
    text = func("%s: tensor<f32>, %z: tensor<0x3xf32>", "tensor<f32>, tensor<0x3xf32>", """
  %a = stablehlo.multiply %s, %s : tensor<f32>
  %b = stablehlo.add %z, %z : tensor<0x3xf32>
  return %a, %b : tensor<f32>, tensor<0x3xf32>""")
    (a, b), _ = run(text, np.array(3.0, np.float32), np.zeros((0, 3), np.float32))
    assert a.shape == () and float(a) == 9.0 and b.shape == (0, 3)


def test_returned_input_duplicate_result_and_constant_are_copied():
    text = func(f"%x: {T}", f"{T}, {T}, {T}, tensor<2xf32>", f"""
  %y = stablehlo.add %x, %x : {T}
  %c = stablehlo.constant dense<[1.5, -2.0]> : tensor<2xf32>
  return %x, %y, %y, %c : {T}, {T}, {T}, tensor<2xf32>""")
    (a, b, c, d), art = run(text, X)
    np.testing.assert_array_equal(a, X)
    np.testing.assert_array_equal(b, 2 * X)
    np.testing.assert_array_equal(c, 2 * X)
    np.testing.assert_array_equal(d, [1.5, -2.0])
    assert sum(s.op == "copy" for s in art.module.steps) == 3  # x, the second y, the constant


def test_lone_reshape_is_an_alias_not_a_kernel():
    text = func(f"%x: {T}", "tensor<12xf32>", f"""
  %r = stablehlo.reshape %x : ({T}) -> tensor<12xf32>
  return %r : tensor<12xf32>""")
    (out,), art = run(text, X)
    np.testing.assert_array_equal(out, X.reshape(-1))
    assert not art.module.kernels
    assert [b.kind for b in art.module.buffers].count("alias") == 1


def test_constant_folding_and_weights():
    text = func(f"%x: tensor<64x64xf32>", "tensor<64x64xf32>", """
  %i = stablehlo.iota dim = 0 : tensor<64x64xf32>
  %s = stablehlo.constant dense<0.5> : tensor<64x64xf32>
  %w = stablehlo.multiply %i, %s : tensor<64x64xf32>
  %r = stablehlo.add %x, %w : tensor<64x64xf32>
  return %r : tensor<64x64xf32>""")
    x = rng.standard_normal((64, 64)).astype(np.float32)
    (out,), art = run(text, x)
    np.testing.assert_allclose(out, x + np.arange(64)[:, None] * 0.5, rtol=1e-6)
    # iota * 0.5 was evaluated at compile time; the 16 KiB result is carried as a weight
    assert art.report["ops_per_backend"] == {"reference": {"stablehlo.add": 1}}
    assert [a.kind for a in art.module.args] == ["input", "output", "weight"]
    assert len(art.module.weights["w0"]) == 64 * 64 * 4


NARROW = [("f8E4M3FN", ml_dtypes.float8_e4m3fn), ("f8E5M2", ml_dtypes.float8_e5m2),
          ("f8E4M3FNUZ", ml_dtypes.float8_e4m3fnuz), ("f8E5M2FNUZ", ml_dtypes.float8_e5m2fnuz),
          ("i4", ml_dtypes.int4), ("ui4", ml_dtypes.uint4), ("f4E2M1FN", ml_dtypes.float4_e2m1fn),
          ("i2", ml_dtypes.int2), ("ui2", ml_dtypes.uint2), ("f8E8M0FNU", ml_dtypes.float8_e8m0fnu)]
_INT_RANGES = {"i4": (-8, 7), "ui4": (0, 15), "i2": (-2, 1), "ui2": (0, 3)}


@pytest.mark.parametrize("mlir_type,np_type", NARROW)
def test_narrow_types_in_and_out(mlir_type, np_type):
    """float8 and 4-bit tensors as arguments and results (ml_dtypes arrays), converted to and from f32: the
    values ml_dtypes' own casts give (ONNX's Cast cases to and from these types run on the reference backend)."""
    n = f"tensor<3x4x{mlir_type}>"
    text = func(f"%x: {n}, %y: {T}", f"{T}, {n}",
                f"  %a = stablehlo.convert %x : ({n}) -> {T}\n"
                f"  %b = stablehlo.convert %y : ({T}) -> {n}\n"
                f"  return %a, %b : {T}, {n}")
    if mlir_type in _INT_RANGES:
        lo, hi = _INT_RANGES[mlir_type]
        x = rng.integers(lo, hi + 1, (3, 4)).astype(np_type)
        y = rng.integers(lo, hi + 1, (3, 4)).astype(np.float32)
    elif mlir_type == "f8E8M0FNU":  # unsigned powers of two (its NaN converts as inf here; ONNX's lowering
        x = np.abs(X * 2).astype(np_type)  # spells the NaN out)
        y = np.abs(Y * 2)
    else:
        x = (X * 2).astype(np_type)
        y = Y * 2
    (a, b), _ = run(text, x, y)
    assert a.dtype == np.float32 and b.dtype == np.dtype(np_type)
    np.testing.assert_array_equal(a, x.astype(np.float32))
    np.testing.assert_array_equal(b.astype(np.float32), y.astype(np_type).astype(np.float32))
    assert len(np.unique(a)) >= 3  # varied values, not one
