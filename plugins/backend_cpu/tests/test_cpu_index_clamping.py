"""Out-of-range start indices in the cpu target's code: gather, dynamic_slice and dynamic_update_slice (generated
code) clamp their start indices as the StableHLO spec says, so the whole slice is in bounds; scatter (the
``cpu_host`` NumPy kernel at the top level, a generated loop inside control flow) skips update elements that
fall outside. Indices are negative, huge, INT_MIN/INT_MAX of i32 and i64, at and one past the boundary, and
64-bit values whose low 32 bits look valid (``tests/index_clamping.py``); every result is compared bit-exactly
with NumPy written from the spec and with the reference interpreter."""

import numpy as np
import pytest

import byteir_core
from index_clamping import CASES, assert_matches, cases, check_against_spec_and_reference, in_while, program


def _backend(op: str, nested: bool) -> str:
    return "cpu_host" if op.startswith("scatter") and not nested else "cpu"


@pytest.mark.parametrize("nested", [False, True], ids=["top", "in_while"])
@pytest.mark.parametrize("idx_type", ["i32", "i64"])
@pytest.mark.parametrize("op,case", CASES)
def test_cpu_clamps_like_the_spec(op, case, idx_type, nested):
    text = program(op, case, idx_type)
    if nested:
        text = in_while(text)
    art = byteir_core.compile(text, target="cpu")
    name = "stablehlo.while" if nested else f"stablehlo.{op.split('_')[0] if op.startswith('scatter') else op}"
    assert name in art.report["ops_per_backend"].get(_backend(op, nested), {}), art.report["ops_per_backend"]
    assert "reference" not in art.report["ops_per_backend"]
    cpu = byteir_core.load(art.to_bytes())
    check_against_spec_and_reference(cpu, text, op, case, idx_type, seed=11, n=8)


@pytest.mark.parametrize("idx_type", ["i8", "i16"])
def test_cpu_narrow_index_types(idx_type):
    rng = np.random.default_rng(12)
    for op, case in [("dynamic_slice", "2d"), ("dynamic_update_slice", "whole_dim"), ("gather", "window2d"),
                     ("scatter_add", "window2d")]:
        session = byteir_core.load(byteir_core.compile(program(op, case, idx_type), target="cpu"))
        for inputs, want in cases(op, case, idx_type, rng, n=4):
            assert_matches(session.run(*inputs)[0], want, op, inputs)


def test_cpu_clamps_constant_indices_through_the_pass_groups():
    """Start indices that are constants meet the canonicalizer (which may fold a dynamic_slice into a slice)
    before code generation: the result is still the spec's."""
    from index_clamping import dynamic_slice_spec, dynamic_update_slice_spec, gather_spec

    text = """func.func @main(%x: tensor<6x8xf32>, %u: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<6x8xf32>, tensor<3x4x4xf32>) {
  %a = stablehlo.constant dense<2147483647> : tensor<i32>
  %b = stablehlo.constant dense<-5> : tensor<i32>
  %s = stablehlo.dynamic_slice %x, %a, %b, sizes = [2, 3] : (tensor<6x8xf32>, tensor<i32>, tensor<i32>) -> tensor<2x3xf32>
  %d = stablehlo.dynamic_update_slice %x, %u, %b, %a : (tensor<6x8xf32>, tensor<2x3xf32>, tensor<i32>, tensor<i32>) -> tensor<6x8xf32>
  %ids = stablehlo.constant dense<[[7, -1, 4, 100], [3, 2147483647, -2147483648, 6], [0, 1, 2, 3]]> : tensor<3x4xi32>
  %g = "stablehlo.gather"(%x, %ids) <{dimension_numbers = #stablehlo.gather<offset_dims = [2], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 2>, indices_are_sorted = false, slice_sizes = array<i64: 1, 4>}> : (tensor<6x8xf32>, tensor<3x4xi32>) -> tensor<3x4x4xf32>
  return %s, %d, %g : tensor<2x3xf32>, tensor<6x8xf32>, tensor<3x4x4xf32>
}"""
    rng = np.random.default_rng(13)
    x, u = rng.standard_normal((6, 8)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    ids = np.array([[7, -1, 4, 100], [3, 2 ** 31 - 1, -2 ** 31, 6], [0, 1, 2, 3]], np.int32)
    art = byteir_core.compile(text, target="cpu")
    assert "reference" not in art.report["ops_per_backend"]
    s, d, g = byteir_core.load(art.to_bytes()).run(x, u)
    np.testing.assert_array_equal(s, dynamic_slice_spec(x, [2 ** 31 - 1, -5], [2, 3]))
    np.testing.assert_array_equal(d, dynamic_update_slice_spec(x, u, [-5, 2 ** 31 - 1]))
    np.testing.assert_array_equal(g, gather_spec(x, ids, offset_dims=[2], collapsed_slice_dims=[0], start_index_map=[0],
                                                 index_vector_dim=2, slice_sizes=[1, 4]))


@pytest.mark.parametrize("idx_type", ["i32", "i64"])
def test_cpu_clamps_in_openmp_kernels(monkeypatch, idx_type):
    """A gather large enough for an OpenMP kernel (BYTEIR_CPU_OPENMP=1, >= 32768 elements): the parallel
    loops clamp like the serial ones."""
    from index_clamping import NP_INDEX, gather_program, gather_spec

    monkeypatch.setenv("BYTEIR_CPU_OPENMP", "1")
    dims = dict(offset_dims=[1], collapsed_slice_dims=[0], start_index_map=[0], index_vector_dim=1,
                slice_sizes=[1, 512])
    text = gather_program((100, 512), (64,), (64, 512), dims, idx_type)
    from byteir_backend_cpu.provider import openmp_library

    art = byteir_core.compile(text, target="cpu")
    if openmp_library() is not None:
        assert [dict(s.attrs).get("openmp") for s in art.module.steps] == [1]
    session = byteir_core.load(art.to_bytes())
    rng = np.random.default_rng(14)
    table = rng.standard_normal((100, 512)).astype(np.float32)
    lo, hi = np.iinfo(NP_INDEX[idx_type]).min, np.iinfo(NP_INDEX[idx_type]).max
    ids = np.array([lo, hi, -1, 99, 100, 0, 2 ** 20, -2 ** 20] * 8, dtype=NP_INDEX[idx_type])
    np.testing.assert_array_equal(session.run(table, ids)[0], gather_spec(table, ids, **dims))


@pytest.mark.parametrize("idx_type,rows", [("i8", 300), ("i16", 40000)])
def test_cpu_narrow_index_types_into_large_dims(idx_type, rows):
    """An i8/i16 start into a dimension whose last valid start does not fit the index type (the cuda backend
    once refused these): generated code clamps in the index type widened."""
    from index_clamping import INT_BOUNDS, NP_INDEX, dynamic_slice_program, dynamic_slice_spec, gather_program, \
        gather_spec

    lo, hi = INT_BOUNDS[idx_type]
    x = np.random.default_rng(15).standard_normal((rows, 2)).astype(np.float32)
    dims = dict(offset_dims=[1], collapsed_slice_dims=[0], start_index_map=[0], index_vector_dim=1, slice_sizes=[1, 2])
    ids = np.array([lo, hi, -1, 0, 1, hi - 1, 50, 99], dtype=NP_INDEX[idx_type])
    gather = byteir_core.load(byteir_core.compile(gather_program((rows, 2), (8,), (8, 2), dims, idx_type),
                                                  target="cpu"))
    np.testing.assert_array_equal(gather.run(x, ids)[0], gather_spec(x, ids, **dims))
    ds = byteir_core.load(byteir_core.compile(dynamic_slice_program((rows, 2), (3, 2), idx_type), target="cpu"))
    for v in (lo, hi, -1, 0, 99):
        starts = [np.array(v, NP_INDEX[idx_type]), np.array(hi, NP_INDEX[idx_type])]
        np.testing.assert_array_equal(ds.run(x, *starts)[0], dynamic_slice_spec(x, [v, hi], (3, 2)))
