"""The ``hlo`` simplification rules: a zero pad folds into the convolution that reads it, only where that means
the same thing."""

import numpy as np
import pytest

import byteir_core
from byteir_core.compiler.driver import optimize


def conv_of_pad(low, high, interior=(0, 0, 0, 0), value="0.0", lhs_dilate=1):
    h = 6 + low[1] + high[1] + interior[1] * 5
    w = 6 + low[2] + high[2] + interior[2] * 5
    ho, wo = (h - 1) * lhs_dilate + 1 - 2, (w - 1) * lhs_dilate + 1 - 2
    return f"""func.func @main(%x: tensor<1x6x6x2xf32>, %k: tensor<3x3x2x4xf32>) -> tensor<1x{ho}x{wo}x4xf32> {{
  %v = stablehlo.constant dense<{value}> : tensor<f32>
  %p = stablehlo.pad %x, %v, low = {list(low)}, high = {list(high)}, interior = {list(interior)} : (tensor<1x6x6x2xf32>, tensor<f32>) -> tensor<1x{h}x{w}x2xf32>
  %c = stablehlo.convolution(%p, %k) dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f], window = {{pad = [[0, 0], [0, 0]], lhs_dilate = [{lhs_dilate}, {lhs_dilate}]}} {{batch_group_count = 1 : i64, feature_group_count = 1 : i64}} : (tensor<1x{h}x{w}x2xf32>, tensor<3x3x2x4xf32>) -> tensor<1x{ho}x{wo}x4xf32>
  return %c : tensor<1x{ho}x{wo}x4xf32>
}}"""


@pytest.mark.parametrize("case, folds", [
    (dict(low=(0, 0, 0, 0), high=(0, 1, 1, 0)), True),          # Keras' ZeroPadding2D before a strided conv
    (dict(low=(0, 2, 1, 0), high=(0, 0, 3, 0)), True),
    (dict(low=(0, 1, 1, 0), high=(0, 1, 1, 0), value="1.0"), False),      # not a zero pad
    (dict(low=(0, 1, 1, 0), high=(0, 1, 1, 0), interior=(0, 1, 1, 0)), False),
    (dict(low=(0, 1, 1, 0), high=(0, 1, 1, 0), lhs_dilate=2), False),     # padding counted after dilation
])
def test_a_zero_pad_folds_into_the_convolution_only_where_it_means_the_same(case, folds):
    text = conv_of_pad(**case)
    out = optimize(text)
    assert ("stablehlo.pad" not in out) == folds, out
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    k = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    as_written = byteir_core.load(byteir_core.compile(text, target="reference", pass_groups=["legalize"]))(x, k)
    simplified = byteir_core.load(byteir_core.compile(text, target="reference"))(x, k)
    np.testing.assert_allclose(simplified, as_written, rtol=1e-5, atol=1e-5)


def _same_as_written(text, *args):
    as_written = byteir_core.load(byteir_core.compile(text, target="reference", pass_groups=["legalize"]))(*args)
    simplified = byteir_core.load(byteir_core.compile(text, target="reference"))(*args)
    as_written = as_written if isinstance(as_written, tuple) else (as_written,)
    simplified = simplified if isinstance(simplified, tuple) else (simplified,)
    for a, b in zip(simplified, as_written):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_transpose_pairs_cancel_or_compose():
    # PyTorch's backward of x @ w.T reads w.T.T: the two transposes go; a pair that is not the identity is one
    text = """func.func @main(%w: tensor<3x4x5xf32>) -> (tensor<3x4x5xf32>, tensor<4x5x3xf32>, tensor<3x4x5xf32>) {
  %t = stablehlo.transpose %w, dims = [2, 0, 1] : (tensor<3x4x5xf32>) -> tensor<5x3x4xf32>
  %back = stablehlo.transpose %t, dims = [1, 2, 0] : (tensor<5x3x4xf32>) -> tensor<3x4x5xf32>
  %other = stablehlo.transpose %t, dims = [2, 0, 1] : (tensor<5x3x4xf32>) -> tensor<4x5x3xf32>
  %id = stablehlo.transpose %w, dims = [0, 1, 2] : (tensor<3x4x5xf32>) -> tensor<3x4x5xf32>
  return %back, %other, %id : tensor<3x4x5xf32>, tensor<4x5x3xf32>, tensor<3x4x5xf32>
}"""
    out = optimize(text)
    assert out.count("stablehlo.transpose") == 1, out
    assert "dims = [1, 2, 0]" in out, out
    w = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    _same_as_written(text, w)


@pytest.mark.parametrize("lhs, rhs, dims, perm, swaps", [
    ("64x32", "32x16", "contracting_dims = [1] x [0]", [1, 0], True),          # (a @ b).T = b.T @ a.T
    ("2x8x3", "2x3x5", "batching_dims = [0] x [0], contracting_dims = [2] x [1]", [0, 2, 1], True),
    ("2x8x3", "2x3x5", "batching_dims = [0] x [0], contracting_dims = [2] x [1]", [1, 0, 2], False),
])
def test_a_transposed_product_is_the_product_with_operands_swapped(lhs, rhs, dims, perm, swaps):
    ls, rs = [int(d) for d in lhs.split("x")], [int(d) for d in rhs.split("x")]
    if len(ls) == 2:
        out_shape = [ls[0], rs[1]]
    else:
        out_shape = [ls[0], ls[1], rs[2]]
    t_shape = [out_shape[p] for p in perm]
    o, t = "x".join(map(str, out_shape)), "x".join(map(str, t_shape))
    text = f"""func.func @main(%a: tensor<{lhs}xf32>, %b: tensor<{rhs}xf32>) -> tensor<{t}xf32> {{
  %d = stablehlo.dot_general %a, %b, {dims} : (tensor<{lhs}xf32>, tensor<{rhs}xf32>) -> tensor<{o}xf32>
  %t = stablehlo.transpose %d, dims = {perm} : (tensor<{o}xf32>) -> tensor<{t}xf32>
  return %t : tensor<{t}xf32>
}}"""
    out = optimize(text)
    assert ("stablehlo.transpose" not in out) == swaps, out
    rng = np.random.default_rng(1)
    _same_as_written(text, rng.standard_normal(ls).astype(np.float32), rng.standard_normal(rs).astype(np.float32))
