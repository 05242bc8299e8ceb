"""byteir_core.compiler.importing: portable artifacts from another StableHLO version, frozen weight arguments."""

import numpy as np
import pytest

import byteir_core
from byteir_core.compiler.importing import freeze_arguments, producer_string, read_portable_artifact
from byteir_core.errors import FrontendError
from byteir_core.mlir import new_context, stablehlo_api

TEXT = """
func.func @main(%w: tensor<3x2xf32>, %x: tensor<4x3xf32>, %b: tensor<2xbf16>, %m: tensor<2xi1>) -> tensor<4x2xf32> {
  %0 = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x3xf32>, tensor<3x2xf32>) -> tensor<4x2xf32>
  %1 = stablehlo.convert %b : (tensor<2xbf16>) -> tensor<2xf32>
  %z = stablehlo.constant dense<0.0> : tensor<2xf32>
  %2 = stablehlo.select %m, %1, %z : tensor<2xi1>, tensor<2xf32>
  %3 = stablehlo.broadcast_in_dim %2, dims = [1] : (tensor<2xf32>) -> tensor<4x2xf32>
  %4 = stablehlo.add %0, %3 : tensor<4x2xf32>
  return %4 : tensor<4x2xf32>
}
"""


def test_an_older_portable_artifact_reads_and_frozen_arguments_become_weights():
    blob = stablehlo_api.serialize_portable_artifact_str(TEXT, "1.0.0")
    assert producer_string(blob) == "StableHLO_v1.0.0"
    ctx = new_context()
    module = read_portable_artifact(ctx, blob, "<test>", "a test (StableHLO 1.0.0)")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2)).astype(np.float32)
    import ml_dtypes

    b = np.array([1.5, -2.25], ml_dtypes.bfloat16)
    m = np.array([True, False])
    freeze_arguments(module, {0: w, 2: b, 3: m})
    text = str(module)
    assert "@main(%arg0: tensor<4x3xf32>)" in text, text
    x = rng.standard_normal((4, 3)).astype(np.float32)
    out = byteir_core.load(byteir_core.compile(module, target="cpu")).run(x)[0]
    np.testing.assert_allclose(out, x @ w + np.array([1.5, 0.0], np.float32), rtol=1e-6, atol=1e-6)


def test_an_unreadable_artifact_names_the_producer_and_our_versions():
    blob = stablehlo_api.serialize_portable_artifact_str(TEXT, "1.0.0")
    with pytest.raises(FrontendError) as e:
        read_portable_artifact(new_context(), blob[:70] + b"\0" * 20, "model.bin", "JAX 9.9 (StableHLO 9.0.0)")
    msg = str(e.value)
    assert "model.bin" in msg and "JAX 9.9 (StableHLO 9.0.0)" in msg and "StableHLO_v1.0.0" in msg
    assert f"{stablehlo_api.get_minimum_version()} to {stablehlo_api.get_current_version()}" in msg
    with pytest.raises(FrontendError, match="not a StableHLO portable artifact"):
        read_portable_artifact(new_context(), b"hello", "x.bin", "nobody")


def test_freezing_a_weight_of_the_wrong_shape_is_an_error():
    module = read_portable_artifact(new_context(), stablehlo_api.serialize_portable_artifact_str(TEXT, "1.0.0"),
                                    "<test>", "test")
    with pytest.raises(FrontendError, match=r"shape \[2, 3\] cannot be bound to tensor<3x2xf32>"):
        freeze_arguments(module, {0: np.zeros((2, 3), np.float32)})
    with pytest.raises(FrontendError, match="has 4 arguments; cannot freeze argument"):
        freeze_arguments(module, {7: np.zeros(1)})
