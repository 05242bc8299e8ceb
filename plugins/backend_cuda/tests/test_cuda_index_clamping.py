"""Out-of-range start indices in the cuda backend's Triton kernels (run through Triton's interpreter, as
cuda_check does): gather and dynamic_slice folded into loads clamp their start indices as the StableHLO spec
says (the whole slice in bounds), scatter masks off update elements that fall outside. Indices are negative,
huge, INT_MIN/INT_MAX of i32 and i64, at and one past the boundary, and 64-bit values whose low 32 bits look
valid (``tests/index_clamping.py``); results are compared bit-exactly with NumPy written from the spec and with
the reference interpreter. Ops the backend does not claim (dynamic_update_slice, gathers with batching dims) run
on the cpu fallback of the same artifact and are checked too."""

import numpy as np
import pytest
from cuda_check import compile_cuda, load_interpreted

import byteir_core
from index_clamping import CASES, GATHERS, adversarial, assert_matches, cases, gather_spec, index_array, program

#: Cases whose op the cuda backend must have claimed (a silent fallback to cpu cannot pass).
ON_CUDA = {"dynamic_slice": "stablehlo.dynamic_slice", "gather": "stablehlo.gather",
           "scatter_replace": "stablehlo.scatter", "scatter_add": "stablehlo.scatter"}


@pytest.mark.parametrize("idx_type", ["i32", "i64"])
@pytest.mark.parametrize("op,case", CASES)
def test_cuda_clamps_like_the_spec(op, case, idx_type):
    text = program(op, case, idx_type)
    art = compile_cuda(text)
    per = art.report["ops_per_backend"]
    if op in ON_CUDA and case != "batching":
        assert ON_CUDA[op] in per.get("cuda", {}), per
    assert "reference" not in per
    session = load_interpreted(art)
    ref = byteir_core.load(byteir_core.compile(text, target="reference").to_bytes())
    rng = np.random.default_rng(21)
    for inputs, want in cases(op, case, idx_type, rng, n=6):
        before = [a.copy() for a in inputs]
        got = np.asarray(session.run(*inputs)[0])
        assert_matches(got, want, op, inputs)
        assert_matches(got, ref.run(*inputs)[0], op, inputs)
        for a, b in zip(inputs, before):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("idx_type", ["i32", "i64"])
def test_cuda_clamps_inside_fused_reductions(idx_type):
    """A gather and a dynamic_slice read inside one fused kernel with a reduction (softmax-like rows): the clamped
    start indices are computed in the reduction's loads too."""
    g = GATHERS["window2d"]
    it = f"tensor<{idx_type}>"
    text = f"""func.func @main(%x: tensor<5x7x2xf32>, %i: tensor<3x2x{idx_type}>, %y: tensor<6x8xf32>, %a: {it}, %b: {it}) -> (tensor<3x2x3xf32>, tensor<2xf32>) {{
  %g = "stablehlo.gather"(%x, %i) <{{dimension_numbers = #stablehlo.gather<offset_dims = [1, 2, 3], collapsed_slice_dims = [], start_index_map = [0, 1], index_vector_dim = 1>, indices_are_sorted = false, slice_sizes = array<i64: 2, 3, 2>}}> : (tensor<5x7x2xf32>, tensor<3x2x{idx_type}>) -> tensor<3x2x3x2xf32>
  %e = stablehlo.exponential %g : tensor<3x2x3x2xf32>
  %z = stablehlo.constant dense<0.0> : tensor<f32>
  %r = stablehlo.reduce(%e init: %z) applies stablehlo.add across dimensions = [3] : (tensor<3x2x3x2xf32>, tensor<f32>) -> tensor<3x2x3xf32>
  %s = stablehlo.dynamic_slice %y, %a, %b, sizes = [2, 3] : (tensor<6x8xf32>, {it}, {it}) -> tensor<2x3xf32>
  %m = stablehlo.multiply %s, %s : tensor<2x3xf32>
  %q = stablehlo.reduce(%m init: %z) applies stablehlo.add across dimensions = [1] : (tensor<2x3xf32>, tensor<f32>) -> tensor<2xf32>
  return %r, %q : tensor<3x2x3xf32>, tensor<2xf32>
}}"""
    art = compile_cuda(text)
    assert {"stablehlo.gather", "stablehlo.dynamic_slice", "stablehlo.reduce"} <= set(art.report["ops_per_backend"]
                                                                                       .get("cuda", {}))
    session = load_interpreted(art)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((5, 7, 2)).astype(np.float32)
    y = rng.standard_normal((6, 8)).astype(np.float32)
    vals, v0, v1 = adversarial(idx_type, 3), adversarial(idx_type, 4), adversarial(idx_type, 5)
    for k in range(6):
        idx = index_array(vals, (3, 2), idx_type, rng)
        a, b = v0[(3 * k) % len(v0)], v1[(5 * k + 1) % len(v1)]
        starts = [np.array(v, dtype=object).astype(idx.dtype) for v in (a, b)]
        r, q = (np.asarray(o) for o in session.run(x, idx, y, *starts))
        want_r = np.exp(gather_spec(x, idx, **g["dims"]).astype(np.float64)).sum(axis=3)
        a0, b0 = min(max(a, 0), 4), min(max(b, 0), 5)
        want_q = (y[a0:a0 + 2, b0:b0 + 3].astype(np.float64) ** 2).sum(axis=1)
        np.testing.assert_allclose(r, want_r, rtol=1e-5, err_msg=str(idx.tolist()))
        np.testing.assert_allclose(q, want_q, rtol=1e-5, err_msg=str((a, b)))
