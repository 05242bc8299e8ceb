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
