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

from index_clamping import CASES, GATHERS, adversarial, check_against_spec_and_reference, gather_spec, index_array, program

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
    check_against_spec_and_reference(session, text, op, case, idx_type, seed=21, n=6)


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


@pytest.mark.parametrize("idx_type,rows", [("i8", 300), ("i16", 40000), ("i8", 100)])
def test_cuda_narrow_index_types_into_large_dims(idx_type, rows):
    """i8/i16 start indices into a dimension whose last valid start does not fit the index type (an i8 id into
    300 rows): Triton refused the clamp bound ``299`` as an int8 ("Scalar 299 is out of range for type int8"),
    at compile time for a GPU and at run time in the interpreter; the start is now widened before clamping."""
    from index_clamping import INT_BOUNDS, NP_INDEX, dynamic_slice_program, dynamic_slice_spec, gather_program

    lo, hi = INT_BOUNDS[idx_type]
    rng = np.random.default_rng(23)
    x = rng.standard_normal((rows, 2)).astype(np.float32)
    dims = dict(offset_dims=[1], collapsed_slice_dims=[0], start_index_map=[0], index_vector_dim=1, slice_sizes=[1, 2])
    art = compile_cuda(gather_program((rows, 2), (8,), (8, 2), dims, idx_type))
    assert "stablehlo.gather" in art.report["ops_per_backend"].get("cuda", {})
    ids = np.array([lo, hi, -1, 0, 1, hi - 1, 50, 99], dtype=NP_INDEX[idx_type])
    np.testing.assert_array_equal(np.asarray(load_interpreted(art).run(x, ids)[0]), gather_spec(x, ids, **dims))
    art = compile_cuda(dynamic_slice_program((rows, 2), (3, 2), idx_type))
    assert "stablehlo.dynamic_slice" in art.report["ops_per_backend"].get("cuda", {})
    session = load_interpreted(art)
    for v in (lo, hi, -1, 0, 99):
        starts = [np.array(v, NP_INDEX[idx_type]), np.array(lo, NP_INDEX[idx_type])]
        np.testing.assert_array_equal(np.asarray(session.run(x, *starts)[0]), dynamic_slice_spec(x, [v, lo], (3, 2)))


@pytest.mark.parametrize("value,idx_type", [(7, "i32"), (-3, "i32"), (200, "i16"), (-100, "i8")])
def test_cuda_constant_start_indices(value, idx_type):
    """Splat constant start indices become literals in the kernel (the pass groups that would fold the ops are
    off): they are clamped too, at compile time."""
    text = f"""func.func @main(%x: tensor<300x2xf32>) -> (tensor<3x2xf32>, tensor<4x2xf32>) {{
  %i = stablehlo.constant dense<{value}> : tensor<3x1x{idx_type}>
  %r = "stablehlo.gather"(%x, %i) <{{dimension_numbers = #stablehlo.gather<offset_dims = [1], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 1>, indices_are_sorted = false, slice_sizes = array<i64: 1, 2>}}> : (tensor<300x2xf32>, tensor<3x1x{idx_type}>) -> tensor<3x2xf32>
  %s0 = stablehlo.constant dense<{value}> : tensor<{idx_type}>
  %s = stablehlo.dynamic_slice %x, %s0, %s0, sizes = [4, 2] : (tensor<300x2xf32>, tensor<{idx_type}>, tensor<{idx_type}>) -> tensor<4x2xf32>
  return %r, %s : tensor<3x2xf32>, tensor<4x2xf32>
}}"""
    art = compile_cuda(text, pass_groups=["legalize"])
    assert {"stablehlo.gather", "stablehlo.dynamic_slice"} <= set(art.report["ops_per_backend"].get("cuda", {}))
    x = np.arange(600, dtype=np.float32).reshape(300, 2)
    r, s = (np.asarray(a) for a in load_interpreted(art).run(x))
    row, start = min(max(value, 0), 299), min(max(value, 0), 296)
    np.testing.assert_array_equal(r, np.repeat(x[row:row + 1], 3, axis=0))
    np.testing.assert_array_equal(s, x[start:start + 4])
