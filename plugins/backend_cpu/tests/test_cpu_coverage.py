"""Op coverage of the cpu target beyond the basics: bit ops, bitcasts, cbrt, batch norm, control flow (while/if/
case lowered to SCF), sort and scatter (host kernels). Each program runs on ``cpu`` and on the reference
interpreter; ``check`` first asserts that the ops under test really went to the cpu target's backends.
"""

import os
import sys

import numpy as np
import pytest

import byteir_core
from byteir_core.dtypes import to_numpy

sys.path.insert(0, os.path.dirname(__file__))  # the helpers of the differential tests (import mode: importlib)
from test_cpu_differential import check, on_older_cpus, random, ty  # noqa: E402

rng = np.random.default_rng(99)
INTS = ["i8", "i32", "i64"]
FLOATS = ["f32", "f16", "bf16", "f64"]


def unary(op, dtype, shape):
    t = ty(shape, dtype)
    return f"func.func @main(%x: {t}) -> {t} {{\n  %r = stablehlo.{op} %x : {t}\n  return %r : {t}\n}}"


def edge_ints(dtype, n=24):
    info = np.iinfo(to_numpy(dtype))
    base = np.array([0, 1, -1, 2, info.max, info.min, info.max - 1, info.min + 1], dtype=to_numpy(dtype))
    extra = rng.integers(info.min, info.max, size=n - len(base), dtype=to_numpy(dtype), endpoint=True)
    return np.concatenate([base, extra])


# ---------------------------------------------------------------- bit ops


@pytest.mark.parametrize("op", ["count_leading_zeros", "popcnt"])
@pytest.mark.parametrize("dtype", INTS)
def test_bit_counting(op, dtype):
    check(unary(op, dtype, (24,)), [edge_ints(dtype)], [f"stablehlo.{op}"])


@pytest.mark.parametrize("op", ["shift_left", "shift_right_arithmetic", "shift_right_logical"])
@pytest.mark.parametrize("dtype", INTS)
def test_shifts_including_out_of_range_amounts(op, dtype):
    bits = np.iinfo(to_numpy(dtype)).bits
    t = ty((24,), dtype)
    text = f"func.func @main(%x: {t}, %s: {t}) -> {t} {{\n  %r = stablehlo.{op} %x, %s : {t}\n  return %r : {t}\n}}"
    amounts = np.array([0, 1, bits - 1, bits, bits + 1, -1, 3, 5] * 3, dtype=to_numpy(dtype))
    check(text, [edge_ints(dtype), amounts], [f"stablehlo.{op}"])


def test_bit_ops_rank0_and_zero_size():
    text = """func.func @main(%x: tensor<i32>, %z: tensor<0x4xi64>) -> (tensor<i32>, tensor<0x4xi64>) {
  %a = stablehlo.popcnt %x : tensor<i32>
  %b = stablehlo.shift_left %a, %x : tensor<i32>
  %c = stablehlo.count_leading_zeros %z : tensor<0x4xi64>
  return %b, %c : tensor<i32>, tensor<0x4xi64>
}"""
    check(text, [np.array(3, np.int32), np.zeros((0, 4), np.int64)],
          ["stablehlo.popcnt", "stablehlo.shift_left", "stablehlo.count_leading_zeros"])


@pytest.mark.parametrize("sshape,sdt,dshape,ddt", [
    ((6,), "f32", (6,), "i32"), ((6,), "i32", (6,), "f32"), ((4,), "i16", (4,), "bf16"), ((4,), "bf16", (4,), "f16"),
    ((3,), "f32", (3, 2), "f16"), ((3, 2), "i32", (3,), "i64"), ((3,), "f64", (3, 8), "i8"), ((), "f32", (), "i32"),
    ((2, 4), "i8", (2,), "f32"),
])
def test_bitcast_convert(sshape, sdt, dshape, ddt):
    a, b = ty(sshape, sdt), ty(dshape, ddt)
    text = f"func.func @main(%x: {a}) -> {b} {{\n  %r = stablehlo.bitcast_convert %x : ({a}) -> {b}\n  return %r : {b}\n}}"
    x = random(sshape, sdt)
    if sdt.startswith("i"):  # any bit pattern, but no NaN payload games: keep them finite
        x = (x * 7 + 1000).astype(x.dtype) if sdt != "i8" else x
    check(text, [np.asarray(x)], ["stablehlo.bitcast_convert"])


@pytest.mark.parametrize("dtype,fmt", [("f32", "e5m10"), ("f32", "e8m7"), ("f32", "e4m3"), ("f64", "e8m23"),
                                       ("f16", "e5m2"), ("bf16", "e8m3")])
def test_reduce_precision(dtype, fmt):
    t = ty((12,), dtype)
    text = (f"func.func @main(%x: {t}) -> {t} {{\n  %r = stablehlo.reduce_precision %x, format = {fmt} : {t}\n"
            f"  return %r : {t}\n}}")
    x = np.array([1.0001, 3e-8, 1e6, np.nan, np.inf, -np.inf, -2.5, 0.0, -0.0, 65504.0, 1.5e-5, 123.456])
    with np.errstate(over="ignore"):  # 1e6 and 65504 do not fit every type: they become inf, on purpose
        x = x.astype(to_numpy(dtype))
    check(text, [x], ["stablehlo.reduce_precision"])


# ---------------------------------------------------------------- expanded ops


@pytest.mark.parametrize("dtype", on_older_cpus(FLOATS))
def test_cbrt(dtype):
    x = np.array([1, -8, 27, 0, -0.0, 0.001, -3.5, 1e4, np.inf, -np.inf, np.nan, 64, 0.125, 2, -1e-3, 7.77],
                 dtype=np.float64)
    x = np.concatenate([x, rng.standard_normal(16) * 100])
    check(unary("cbrt", dtype, (32,)), [x.astype(to_numpy(dtype))], ["stablehlo.cbrt"])


def test_cbrt_extremes_f32_f64():
    for dtype, dt in [("f32", np.float32), ("f64", np.float64)]:
        info = np.finfo(dt)
        x = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, -info.smallest_subnormal, 1.0,
                      info.eps, 3.0], dtype=dt)
        check(unary("cbrt", dtype, (8,)), [x], ["stablehlo.cbrt"])


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("shape,feature", [((2, 3, 4, 5), 1), ((4, 6), 1), ((2, 5, 3), 2), ((3,), 0), ((0, 3), 1)])
def test_batch_norm_inference_against_numpy(dtype, shape, feature):
    """The interpreter cannot run batch_norm_inference (the reference backend refuses it), so the oracle is
    NumPy in float64 on the same (rounded) inputs."""
    c = shape[feature]
    t, v = ty(shape, dtype), ty((c,), dtype)
    text = f"""func.func @main(%x: {t}, %s: {v}, %o: {v}, %m: {v}, %var: {v}) -> {t} {{
  %r = "stablehlo.batch_norm_inference"(%x, %s, %o, %m, %var) {{epsilon = 1.0e-3 : f32, feature_index = {feature} : i64}} : ({t}, {v}, {v}, {v}, {v}) -> {t}
  return %r : {t}
}}"""
    x, scale, offset, mean = (random(shape, dtype), random((c,), dtype), random((c,), dtype), random((c,), dtype))
    var = random((c,), dtype, "positive")
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.batch_norm_inference": 1}}
    got = byteir_core.load(art.to_bytes())(x, scale, offset, mean, var)
    bshape = [1] * len(shape)
    bshape[feature] = c
    f = [a.astype(np.float64) for a in (x, scale, offset, mean, var)]
    b = [a.reshape(bshape) for a in f[1:]]
    want = b[0] * ((f[0] - b[2]) / np.sqrt(b[3] + np.float64(np.float32(1e-3)))) + b[1]
    assert got.dtype == x.dtype and got.shape == x.shape
    tol = {"f32": 1e-5, "f64": 1e-12, "f16": 4e-3, "bf16": 3e-2}[dtype]  # a few roundings in the input type
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol * 4)


@pytest.mark.parametrize("dtype", on_older_cpus(["f32", "f16", "bf16", "f64"]))
@pytest.mark.parametrize("shape,feature", [((4, 3, 5, 2), 1), ((8, 6), 1), ((2, 5, 3), 2), ((6,), 0)])
def test_batch_norm_training_against_numpy(dtype, shape, feature):
    """Batch statistics (mean, biased variance) over every dimension but the feature one. The reference
    backend refuses this op too: NumPy in float64 is the oracle."""
    c = shape[feature]
    t, v = ty(shape, dtype), ty((c,), dtype)
    text = f"""func.func @main(%x: {t}, %s: {v}, %o: {v}) -> ({t}, {v}, {v}) {{
  %r:3 = "stablehlo.batch_norm_training"(%x, %s, %o) {{epsilon = 1.0e-5 : f32, feature_index = {feature} : i64}} : ({t}, {v}, {v}) -> ({t}, {v}, {v})
  return %r#0, %r#1, %r#2 : {t}, {v}, {v}
}}"""
    x = (random(shape, dtype).astype(np.float64) + 3.0).astype(to_numpy(dtype))  # a mean far from 0
    scale, offset = random((c,), dtype), random((c,), dtype)
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.batch_norm_training": 1}}
    y, mean, var = byteir_core.load(art.to_bytes())(x, scale, offset)
    axes = tuple(d for d in range(len(shape)) if d != feature)
    xf = x.astype(np.float64)
    want_mean = xf.mean(axis=axes)
    want_var = xf.var(axis=axes)
    bshape = [1] * len(shape)
    bshape[feature] = c
    want_y = (scale.astype(np.float64).reshape(bshape) * (xf - want_mean.reshape(bshape))
              / np.sqrt(want_var.reshape(bshape) + np.float64(np.float32(1e-5))) + offset.astype(np.float64).reshape(bshape))
    tol = {"f32": 2e-5, "f64": 1e-12, "f16": 4e-3, "bf16": 3e-2}[dtype]
    for got, want in ((y, want_y), (mean, want_mean), (var, want_var)):
        assert got.dtype == x.dtype and got.shape == want.shape
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol * 4)


def test_optimization_barrier_is_an_identity_in_generated_code():
    text = """func.func @main(%x: tensor<3xf32>, %y: tensor<2xi32>) -> (tensor<3xf32>, tensor<2xi32>) {
  %e = stablehlo.exponential %x : tensor<3xf32>
  %r:2 = stablehlo.optimization_barrier %e, %y : tensor<3xf32>, tensor<2xi32>
  %l = stablehlo.log %r#0 : tensor<3xf32>
  return %l, %r#1 : tensor<3xf32>, tensor<2xi32>
}"""
    check(text, [random((3,), "f32"), random((2,), "i32")], ["stablehlo.optimization_barrier"])
    alone = """func.func @main(%x: tensor<3xf32>, %y: tensor<2xi32>) -> (tensor<2xi32>, tensor<3xf32>) {
  %r:2 = stablehlo.optimization_barrier %x, %y : tensor<3xf32>, tensor<2xi32>
  return %r#1, %r#0 : tensor<2xi32>, tensor<3xf32>
}"""
    check(alone, [random((3,), "f32"), random((2,), "i32")], ["stablehlo.optimization_barrier"])


# ---------------------------------------------------------------- control flow


def counted_loop(dtype, trips):
    t = ty((2, 3), dtype)
    return f"""func.func @main(%x: {t}, %y: {t}) -> ({t}, {t}, tensor<i64>) {{
  %c0 = stablehlo.constant dense<0> : tensor<i64>
  %r:3 = stablehlo.while(%i = %c0, %a = %x, %b = %y) : tensor<i64>, {t}, {t}
  cond {{
    %n = stablehlo.constant dense<{trips}> : tensor<i64>
    %c = stablehlo.compare LT, %i, %n : (tensor<i64>, tensor<i64>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  }} do {{
    %one = stablehlo.constant dense<1> : tensor<i64>
    %i2 = stablehlo.add %i, %one : tensor<i64>
    %s = stablehlo.add %a, %b : {t}
    stablehlo.return %i2, %b, %s : tensor<i64>, {t}, {t}
  }}
  return %r#1, %r#2, %r#0 : {t}, {t}, tensor<i64>
}}"""


@pytest.mark.parametrize("dtype", on_older_cpus(["f32", "f16", "bf16", "i8", "i32", "i64"]))
@pytest.mark.parametrize("trips", [0, 1, 6])
def test_while_fibonacci_swaps_carried_values(dtype, trips):
    """The body yields (b, a + b): carried values change places every iteration."""
    x, y = random((2, 3), dtype), random((2, 3), dtype)
    check(counted_loop(dtype, trips), [x, y], ["stablehlo.while"])


def test_while_carrying_booleans_and_yielding_a_captured_value():
    """i1 carried values (xor/and per trip), and a body that yields an outer value instead of its argument."""
    text = """func.func @main(%m: tensor<6xi1>, %k: tensor<6xi1>, %w: tensor<3xf32>) -> (tensor<6xi1>, tensor<6xi1>, tensor<3xf32>) {
  %c0 = stablehlo.constant dense<0> : tensor<i8>
  %z = stablehlo.constant dense<0.0> : tensor<3xf32>
  %r:4 = stablehlo.while(%i = %c0, %a = %m, %b = %k, %v = %z) : tensor<i8>, tensor<6xi1>, tensor<6xi1>, tensor<3xf32>
  cond {
    %n = stablehlo.constant dense<3> : tensor<i8>
    %c = stablehlo.compare LT, %i, %n : (tensor<i8>, tensor<i8>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  } do {
    %one = stablehlo.constant dense<1> : tensor<i8>
    %i2 = stablehlo.add %i, %one : tensor<i8>
    %x = stablehlo.xor %a, %b : tensor<6xi1>
    %y = stablehlo.and %a, %b : tensor<6xi1>
    %ny = stablehlo.not %y : tensor<6xi1>
    stablehlo.return %i2, %x, %ny, %w : tensor<i8>, tensor<6xi1>, tensor<6xi1>, tensor<3xf32>
  }
  return %r#1, %r#2, %r#3 : tensor<6xi1>, tensor<6xi1>, tensor<3xf32>
}"""
    check(text, [random((6,), "i1"), random((6,), "i1"), random((3,), "f32")], ["stablehlo.while"])


def test_while_data_dependent_trip_count_and_captured_values():
    """Halve until the norm is below a threshold the body never sees as an argument (implicit capture)."""
    text = """func.func @main(%x: tensor<8xf32>, %limit: tensor<f32>) -> (tensor<8xf32>, tensor<i32>) {
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %r:2 = stablehlo.while(%v = %x, %n = %c0) : tensor<8xf32>, tensor<i32>
  cond {
    %z = stablehlo.constant dense<0.0> : tensor<f32>
    %sq = stablehlo.multiply %v, %v : tensor<8xf32>
    %s = stablehlo.reduce(%sq init: %z) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
    %c = stablehlo.compare GT, %s, %limit : (tensor<f32>, tensor<f32>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  } do {
    %h = stablehlo.constant dense<0.5> : tensor<8xf32>
    %v2 = stablehlo.multiply %v, %h : tensor<8xf32>
    %one = stablehlo.constant dense<1> : tensor<i32>
    %n2 = stablehlo.add %n, %one : tensor<i32>
    stablehlo.return %v2, %n2 : tensor<8xf32>, tensor<i32>
  }
  return %r#0, %r#1 : tensor<8xf32>, tensor<i32>
}"""
    for limit in [1e-3, 10.0, 1e9]:
        check(text, [random((8,), "f32") * 10, np.array(limit, np.float32)], ["stablehlo.while"])


def test_while_rnn_step_with_dot_and_dynamic_slice():
    """What a scan becomes: a loop over time steps slicing the input, a matmul and tanh per step, and a
    dynamic_update_slice writing each step's state into the output sequence."""
    text = """func.func @main(%xs: tensor<5x4xf32>, %w: tensor<4x4xf32>, %h0: tensor<1x4xf32>) -> (tensor<5x4xf32>, tensor<1x4xf32>) {
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %out0 = stablehlo.constant dense<0.0> : tensor<5x4xf32>
  %r:3 = stablehlo.while(%t = %c0, %h = %h0, %out = %out0) : tensor<i32>, tensor<1x4xf32>, tensor<5x4xf32>
  cond {
    %n = stablehlo.constant dense<5> : tensor<i32>
    %c = stablehlo.compare LT, %t, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  } do {
    %z = stablehlo.constant dense<0> : tensor<i32>
    %x = stablehlo.dynamic_slice %xs, %t, %z, sizes = [1, 4] : (tensor<5x4xf32>, tensor<i32>, tensor<i32>) -> tensor<1x4xf32>
    %d = stablehlo.dot_general %h, %w, contracting_dims = [1] x [0] : (tensor<1x4xf32>, tensor<4x4xf32>) -> tensor<1x4xf32>
    %s = stablehlo.add %d, %x : tensor<1x4xf32>
    %h2 = stablehlo.tanh %s : tensor<1x4xf32>
    %o2 = stablehlo.dynamic_update_slice %out, %h2, %t, %z : (tensor<5x4xf32>, tensor<1x4xf32>, tensor<i32>, tensor<i32>) -> tensor<5x4xf32>
    %one = stablehlo.constant dense<1> : tensor<i32>
    %t2 = stablehlo.add %t, %one : tensor<i32>
    stablehlo.return %t2, %h2, %o2 : tensor<i32>, tensor<1x4xf32>, tensor<5x4xf32>
  }
  return %r#2, %r#1 : tensor<5x4xf32>, tensor<1x4xf32>
}"""
    check(text, [random((5, 4), "f32"), random((4, 4), "f32") * 0.5, random((1, 4), "f32")], ["stablehlo.while"],
          accumulate=True)


def test_while_body_with_convolution_pooling_cbrt_and_a_gather_after():
    """Structural ops inside a loop body (convolution, reduce_window, broadcast, cbrt) and a gather of the result."""
    text = """func.func @main(%x: tensor<1x2x6x6xf32>, %w: tensor<2x2x3x3xf32>, %ids: tensor<3xi32>) -> (tensor<1x2x6x6xf32>, tensor<3x6xf32>, tensor<i32>) {
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %r:2 = stablehlo.while(%i = %c0, %v = %x) : tensor<i32>, tensor<1x2x6x6xf32>
  cond {
    %n = stablehlo.constant dense<2> : tensor<i32>
    %c = stablehlo.compare LT, %i, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  } do {
    %conv = stablehlo.convolution(%v, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {stride = [1, 1], pad = [[1, 1], [1, 1]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<1x2x6x6xf32>, tensor<2x2x3x3xf32>) -> tensor<1x2x6x6xf32>
    %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %pool = "stablehlo.reduce_window"(%conv, %ninf) <{padding = dense<[[0, 0], [0, 0], [1, 1], [1, 1]]> : tensor<4x2xi64>, window_dimensions = array<i64: 1, 1, 3, 3>, window_strides = array<i64: 1, 1, 1, 1>}> ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %m = stablehlo.maximum %a, %b : tensor<f32>
      stablehlo.return %m : tensor<f32>
    }) : (tensor<1x2x6x6xf32>, tensor<f32>) -> tensor<1x2x6x6xf32>
    %s = stablehlo.constant dense<[1.0, 0.5]> : tensor<2xf32>
    %o = stablehlo.constant dense<[0.0, 0.1]> : tensor<2xf32>
    %mu = stablehlo.constant dense<[0.2, -0.1]> : tensor<2xf32>
    %var = stablehlo.constant dense<[1.5, 2.0]> : tensor<2xf32>
    %sb = stablehlo.broadcast_in_dim %s, dims = [1] : (tensor<2xf32>) -> tensor<1x2x6x6xf32>
    %bn = stablehlo.multiply %pool, %sb : tensor<1x2x6x6xf32>
    %cb = stablehlo.cbrt %bn : tensor<1x2x6x6xf32>
    %one = stablehlo.constant dense<1> : tensor<i32>
    %i2 = stablehlo.add %i, %one : tensor<i32>
    stablehlo.return %i2, %cb : tensor<i32>, tensor<1x2x6x6xf32>
  }
  %flat = stablehlo.reshape %r#1 : (tensor<1x2x6x6xf32>) -> tensor<12x6xf32>
  %g = "stablehlo.gather"(%flat, %ids) <{dimension_numbers = #stablehlo.gather<offset_dims = [1], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 1>, indices_are_sorted = false, slice_sizes = array<i64: 1, 6>}> : (tensor<12x6xf32>, tensor<3xi32>) -> tensor<3x6xf32>
  return %r#1, %g, %r#0 : tensor<1x2x6x6xf32>, tensor<3x6xf32>, tensor<i32>
}"""
    check(text, [random((1, 2, 6, 6), "f32"), random((2, 2, 3, 3), "f32") * 0.3, np.array([0, 11, 5], np.int32)],
          ["stablehlo.while", "stablehlo.gather"], accumulate=True)


def test_while_result_feeds_and_is_fed_by_other_generated_ops():
    text = """func.func @main(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %e = stablehlo.exponential %x : tensor<4xf32>
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %r:2 = stablehlo.while(%i = %c0, %v = %e) : tensor<i32>, tensor<4xf32>
  cond {
    %n = stablehlo.constant dense<3> : tensor<i32>
    %c = stablehlo.compare LT, %i, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  } do {
    %one = stablehlo.constant dense<1> : tensor<i32>
    %i2 = stablehlo.add %i, %one : tensor<i32>
    %v2 = stablehlo.sqrt %v : tensor<4xf32>
    stablehlo.return %i2, %v2 : tensor<i32>, tensor<4xf32>
  }
  %l = stablehlo.log %r#1 : tensor<4xf32>
  return %l, %e : tensor<4xf32>, tensor<4xf32>
}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.exponential": 1, "stablehlo.log": 1,
                                                     "stablehlo.while": 1}}
    assert len(art.report["clusters"]) == 1  # one native kernel: the loop fused into its neighbours' cluster
    check(text, [random((4,), "f32")], ["stablehlo.while"])


def test_control_flow_in_multithreaded_kernels(monkeypatch):
    """With BYTEIR_CPU_OPENMP=1 a big loop body gets OpenMP parallel loops inside the scf.while / scf.if."""
    monkeypatch.setenv("BYTEIR_CPU_OPENMP", "1")
    t = "tensor<256x256xf32>"
    text = f"""func.func @main(%x: {t}, %p: tensor<i1>) -> {t} {{
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %r:2 = stablehlo.while(%i = %c0, %v = %x) : tensor<i32>, {t}
  cond {{
    %n = stablehlo.constant dense<3> : tensor<i32>
    %c = stablehlo.compare LT, %i, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  }} do {{
    %one = stablehlo.constant dense<1> : tensor<i32>
    %i2 = stablehlo.add %i, %one : tensor<i32>
    %v2 = stablehlo.tanh %v : {t}
    %v3 = "stablehlo.if"(%p) ({{
      %a = stablehlo.add %v2, %v2 : {t}
      stablehlo.return %a : {t}
    }}, {{
      stablehlo.return %v2 : {t}
    }}) : (tensor<i1>) -> {t}
    stablehlo.return %i2, %v3 : tensor<i32>, {t}
  }}
  return %r#1 : {t}
}}"""
    art = byteir_core.compile(text, target="cpu")
    assert [s.attrs["openmp"] for s in art.module.steps if s.op == "compute"] == [1]
    for p in (True, False):
        check(text, [random((256, 256), "f32"), np.array(p)], ["stablehlo.while"])


def if_program(dtype, shape):
    t = ty(shape, dtype)
    return f"""func.func @main(%p: tensor<i1>, %x: {t}, %y: {t}) -> ({t}, {t}) {{
  %r:2 = "stablehlo.if"(%p) ({{
    %a = stablehlo.add %x, %y : {t}
    stablehlo.return %a, %x : {t}, {t}
  }}, {{
    %b = stablehlo.multiply %x, %y : {t}
    %c = stablehlo.subtract %b, %x : {t}
    stablehlo.return %c, %b : {t}, {t}
  }}) : (tensor<i1>) -> ({t}, {t})
  return %r#0, %r#1 : {t}, {t}
}}"""


@pytest.mark.parametrize("dtype", on_older_cpus(["f32", "f16", "bf16", "i1", "i8", "i32", "i64"]))
@pytest.mark.parametrize("pred", [True, False])
def test_if_branches_differ(dtype, pred):
    shape = (3, 2)
    text = if_program(dtype, shape)
    if dtype == "i1":  # no subtract/multiply on booleans: use and/xor
        text = text.replace("stablehlo.multiply", "stablehlo.and").replace("stablehlo.subtract", "stablehlo.xor")
        text = text.replace("stablehlo.add", "stablehlo.or")
    check(text, [np.array(pred), random(shape, dtype), random(shape, dtype)], ["stablehlo.if"])


def test_if_rank0_zero_size_and_nested():
    text = """func.func @main(%p: tensor<i1>, %q: tensor<i1>, %s: tensor<f32>, %z: tensor<0x2xf32>) -> (tensor<f32>, tensor<0x2xf32>) {
  %r:2 = "stablehlo.if"(%p) ({
    %in = "stablehlo.if"(%q) ({
      %n = stablehlo.negate %s : tensor<f32>
      stablehlo.return %n : tensor<f32>
    }, {
      %e = stablehlo.exponential %s : tensor<f32>
      stablehlo.return %e : tensor<f32>
    }) : (tensor<i1>) -> tensor<f32>
    stablehlo.return %in, %z : tensor<f32>, tensor<0x2xf32>
  }, {
    %two = stablehlo.constant dense<2.0> : tensor<f32>
    %m = stablehlo.multiply %s, %two : tensor<f32>
    %zz = stablehlo.add %z, %z : tensor<0x2xf32>
    stablehlo.return %m, %zz : tensor<f32>, tensor<0x2xf32>
  }) : (tensor<i1>) -> (tensor<f32>, tensor<0x2xf32>)
  return %r#0, %r#1 : tensor<f32>, tensor<0x2xf32>
}"""
    for p in (True, False):
        for q in (True, False):
            check(text, [np.array(p), np.array(q), np.array(1.25, np.float32), np.zeros((0, 2), np.float32)],
                  ["stablehlo.if"])


def case_program(n_branches):
    branches = []
    for k in range(n_branches):
        body = [f"    %k{k} = stablehlo.constant dense<{k + 1}.5> : tensor<4xf32>",
                f"    %m{k} = stablehlo.multiply %x, %k{k} : tensor<4xf32>"]
        op = ["add", "tanh", "negate", "exponential"][k % 4]
        if op == "add":
            body.append(f"    %r{k} = stablehlo.add %m{k}, %x : tensor<4xf32>")
        else:
            body.append(f"    %r{k} = stablehlo.{op} %m{k} : tensor<4xf32>")
        body.append(f"    stablehlo.return %r{k} : tensor<4xf32>")
        branches.append("{\n" + "\n".join(body) + "\n  }")
    return f"""func.func @main(%i: tensor<i32>, %x: tensor<4xf32>) -> tensor<4xf32> {{
  %r = "stablehlo.case"(%i) ({", ".join(branches)}) : (tensor<i32>) -> tensor<4xf32>
  return %r : tensor<4xf32>
}}"""


@pytest.mark.parametrize("dtype", ["f16", "bf16", "i1", "i8", "i32", "i64"])
def test_case_branches_per_dtype(dtype):
    t = ty((2, 3), dtype)
    ops = ["and", "or", "xor"] if dtype == "i1" else ["add", "multiply", "subtract"]
    branches = ", ".join(f"{{\n    %r{k} = stablehlo.{op} %x, %y : {t}\n    stablehlo.return %r{k} : {t}\n  }}"
                         for k, op in enumerate(ops))
    text = f"""func.func @main(%i: tensor<i32>, %x: {t}, %y: {t}) -> {t} {{
  %r = "stablehlo.case"(%i) ({branches}) : (tensor<i32>) -> {t}
  return %r : {t}
}}"""
    x, y = random((2, 3), dtype), random((2, 3), dtype)
    for i in (0, 1, 2, 3, -7):
        check(text, [np.array(i, np.int32), x, y], ["stablehlo.case"])


@pytest.mark.parametrize("n", [1, 2, 4])
def test_case_every_branch_and_out_of_range_indices(n):
    """An index outside [0, N) runs the last branch."""
    x = random((4,), "f32")
    for i in sorted({0, 1, 2, 3, n - 1, n, n + 5, -1, -(2 ** 31)}):
        check(case_program(n), [np.array(i, np.int32), x], ["stablehlo.case"])


def test_control_flow_with_an_unclaimed_op_inside_falls_back_whole():
    """A region holding an op the generated code cannot run (a sort: host kernels run one op each, not
    inside a loop) sends the whole if to the reference backend, and the report says so."""
    text = """func.func @main(%p: tensor<i1>, %x: tensor<4xf32>) -> tensor<4xf32> {
  %r = "stablehlo.if"(%p) ({
    %s = "stablehlo.sort"(%x) ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %c = stablehlo.compare LT, %a, %b : (tensor<f32>, tensor<f32>) -> tensor<i1>
      stablehlo.return %c : tensor<i1>
    }) {dimension = 0 : i64} : (tensor<4xf32>) -> tensor<4xf32>
    stablehlo.return %s : tensor<4xf32>
  }, {
    stablehlo.return %x : tensor<4xf32>
  }) : (tensor<i1>) -> tensor<4xf32>
  %e = stablehlo.exponential %r : tensor<4xf32>
  return %e : tensor<4xf32>
}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.exponential": 1}, "reference": {"stablehlo.if": 1}}
    x = random((4,), "f32")
    run = byteir_core.load(art.to_bytes())
    np.testing.assert_allclose(run(np.array(True), x), np.exp(np.sort(x)), rtol=1e-6)
    np.testing.assert_allclose(run(np.array(False), x), np.exp(x), rtol=1e-6)


# ---------------------------------------------------------------- sort (host kernel)


def sort_program(shapes_dtypes, dim, key, direction, swap=False, compare_type=None, stable=True, results=None):
    """A sort of several operands, compared on operand ``key`` with ``direction`` (arguments swapped: the
    opposite order)."""
    types = [ty(s, d) for s, d in shapes_dtypes]
    n = len(types)
    scalars = [ty((), d) for _, d in shapes_dtypes]
    args = ", ".join(f"%a{i}: {scalars[i]}, %b{i}: {scalars[i]}" for i in range(n))
    lhs, rhs = (f"%b{key}", f"%a{key}") if swap else (f"%a{key}", f"%b{key}")
    ct = f", {compare_type}" if compare_type else ""
    results = list(range(n)) if results is None else results
    sig = ", ".join(f"%x{i}: {t}" for i, t in enumerate(types))
    rtypes = ", ".join(types[r] for r in results)
    return f"""func.func @main({sig}) -> ({rtypes}) {{
  %s:{n} = "stablehlo.sort"({", ".join(f"%x{i}" for i in range(n))}) ({{
    ^bb0({args}):
      %c = stablehlo.compare {direction}, {lhs}, {rhs}{ct} : ({scalars[key]}, {scalars[key]}) -> tensor<i1>
      stablehlo.return %c : tensor<i1>
  }}) {{dimension = {dim} : i64, is_stable = {str(stable).lower()}}} : ({", ".join(types)}) -> ({", ".join(types)})
  return {", ".join(f"%s#{r}" for r in results)} : {rtypes}
}}""".replace(f"%s:{n} = " if n == 1 else "\x00", "%s = " if n == 1 else "\x00").replace(
        "%s#0" if n == 1 else "\x00", "%s" if n == 1 else "\x00")


def with_ties(shape, dtype):
    """Random values with many repeats (ties) so that stability is visible."""
    x = random(shape, dtype)
    if dtype != "i1":
        x = (x.astype(np.float64) // 2).astype(to_numpy(dtype))
    return x


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i1", "i8", "i32", "i64"])
@pytest.mark.parametrize("direction,swap", [("LT", False), ("GT", False), ("LT", True)])
def test_sort_single_operand(dtype, direction, swap):
    text = sort_program([((4, 9), dtype)], 1, 0, direction, swap)
    check(text, [with_ties((4, 9), dtype)], ["stablehlo.sort"])


@pytest.mark.parametrize("dtype", ["f32", "bf16", "i32", "i64"])
@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("direction", ["LT", "GT"])
def test_sort_stable_argsort_with_ties_every_dimension(dtype, dim, direction):
    """What torch.sort / argsort become: (values, iota) sorted on the values; ties keep their order."""
    shape = (3, 4, 5)
    text = sort_program([(shape, dtype), (shape, "i32")], dim, 0, direction)
    iota = np.broadcast_to(np.arange(shape[dim], dtype=np.int32).reshape([-1 if d == dim else 1 for d in range(3)]),
                           shape).copy()
    check(text, [with_ties(shape, dtype), iota], ["stablehlo.sort"])


def test_sort_key_is_not_the_first_operand_and_only_some_results_are_used():
    text = sort_program([((12,), "f32"), ((12,), "i64"), ((12,), "bf16")], 0, 1, "GT", results=[2, 0])
    check(text, [random((12,), "f32"), with_ties((12,), "i64"), random((12,), "bf16")], ["stablehlo.sort"])


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("direction", ["LT", "GT"])
def test_sort_total_order_finite_values_against_the_interpreter(dtype, direction):
    text = sort_program([((3, 10), dtype), ((3, 10), "i32")], 1, 0, direction, compare_type="TOTALORDER")
    check(text, [with_ties((3, 10), dtype), random((3, 10), "i32")], ["stablehlo.sort"])


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("direction", ["LT", "GT"])
def test_sort_total_order_with_nan_inf_and_signed_zeros(dtype, direction):
    """-NaN < -inf < ... < -0 < +0 < ... < inf < +NaN. The interpreter is no oracle here (its TOTALORDER sort
    of this input is not ordered: it ends [..., 1, inf, nan, 2.5]), so the expected permutation is written out."""
    vals = np.array([np.nan, 1.0, -0.0, 0.0, -np.inf, np.inf, -1.0, 0.0, -0.0, np.nan, 2.5, -2.5], np.float64)
    x = vals.astype(to_numpy(dtype))
    x[9] = -x[9]  # a NaN with the sign bit set
    assert np.signbit(x[9].astype(np.float32)) and not np.signbit(x[0].astype(np.float32))
    ascending = [9, 4, 11, 6, 2, 8, 3, 7, 1, 10, 5, 0]  # ties (-0, -0) and (0, 0) keep their input order
    descending = [0, 5, 10, 1, 3, 7, 2, 8, 6, 11, 4, 9]
    want = ascending if direction == "LT" else descending
    text = sort_program([((12,), dtype), ((12,), "i32")], 0, 0, direction, compare_type="TOTALORDER")
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu_host": {"stablehlo.sort": 1}}
    values, perm = byteir_core.load(art.to_bytes()).run(x, np.arange(12, dtype=np.int32))
    np.testing.assert_array_equal(perm, want)
    assert values.tobytes() == x[want].tobytes()  # bit for bit: signs of zeros and NaNs included


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_sort_float_compare_with_nan_ranks_nan_above_numbers(dtype):
    """With FLOAT comparisons NaN is unordered and StableHLO leaves the order to the implementation, so the
    interpreter is no oracle here: expect NumPy's (and torch's) convention, NaN above every number."""
    dt = to_numpy(dtype)
    x = np.array([3.0, np.nan, -1.0, 0.0, np.nan, -np.inf, 2.0, np.inf, 2.0, -0.0], np.float64).astype(dt)
    idx = np.arange(10, dtype=np.int32)
    for direction in ("LT", "GT"):
        text = sort_program([((10,), dtype), ((10,), "i32")], 0, 0, direction)
        art = byteir_core.compile(text, target="cpu")
        assert art.report["ops_per_backend"] == {"cpu_host": {"stablehlo.sort": 1}}
        values, perm = byteir_core.load(art.to_bytes()).run(x, idx)
        order = np.argsort(x.astype(np.float64), kind="stable")  # NumPy: NaN last, ties stable
        if direction == "GT":  # NaN first, then descending, ties stable
            nan = np.isnan(x.astype(np.float64))
            order = np.concatenate([np.flatnonzero(nan),
                                    np.flatnonzero(~nan)[np.argsort(-x.astype(np.float64)[~nan], kind="stable")]])
        np.testing.assert_array_equal(perm, order)
        assert values.tobytes() == x[order].tobytes()


def test_sort_zero_size_and_length_one():
    text = sort_program([((0, 3), "f32"), ((0, 3), "i32")], 1, 0, "LT")
    check(text, [np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)], ["stablehlo.sort"])
    text = sort_program([((4, 1), "i64")], 1, 0, "GT")
    check(text, [random((4, 1), "i64")], ["stablehlo.sort"])


def test_sort_unstable_with_distinct_keys_and_negative_dimension():
    text = sort_program([((5, 6), "f32"), ((5, 6), "i32")], -1, 0, "LT", stable=False)
    x = rng.permutation(30).reshape(5, 6).astype(np.float32)  # distinct keys: one valid order
    check(text, [x, random((5, 6), "i32")], ["stablehlo.sort"])


def test_sort_with_a_constant_operand():
    text = """func.func @main(%x: tensor<6xf32>) -> (tensor<6xf32>, tensor<6xi32>) {
  %i = stablehlo.constant dense<[10, 11, 12, 13, 14, 15]> : tensor<6xi32>
  %s:2 = "stablehlo.sort"(%x, %i) ({
    ^bb0(%a: tensor<f32>, %b: tensor<f32>, %c: tensor<i32>, %d: tensor<i32>):
      %lt = stablehlo.compare GT, %a, %b : (tensor<f32>, tensor<f32>) -> tensor<i1>
      stablehlo.return %lt : tensor<i1>
  }) {dimension = 0 : i64, is_stable = true} : (tensor<6xf32>, tensor<6xi32>) -> (tensor<6xf32>, tensor<6xi32>)
  return %s#0, %s#1 : tensor<6xf32>, tensor<6xi32>
}"""
    check(text, [with_ties((6,), "f32")], ["stablehlo.sort"])


def test_sort_comparators_not_recognized_fall_back():
    lexicographic = """func.func @main(%x: tensor<6xi32>, %y: tensor<6xi32>) -> (tensor<6xi32>, tensor<6xi32>) {
  %s:2 = "stablehlo.sort"(%x, %y) ({
    ^bb0(%a: tensor<i32>, %b: tensor<i32>, %c: tensor<i32>, %d: tensor<i32>):
      %eq = stablehlo.compare EQ, %a, %b : (tensor<i32>, tensor<i32>) -> tensor<i1>
      %lt0 = stablehlo.compare LT, %a, %b : (tensor<i32>, tensor<i32>) -> tensor<i1>
      %lt1 = stablehlo.compare LT, %c, %d : (tensor<i32>, tensor<i32>) -> tensor<i1>
      %r = stablehlo.select %eq, %lt1, %lt0 : tensor<i1>, tensor<i1>
      stablehlo.return %r : tensor<i1>
  }) {dimension = 0 : i64} : (tensor<6xi32>, tensor<6xi32>) -> (tensor<6xi32>, tensor<6xi32>)
  return %s#0, %s#1 : tensor<6xi32>, tensor<6xi32>
}"""
    le = sort_program([((6,), "i32")], 0, 0, "LE")
    for text in (lexicographic, le):
        art = byteir_core.compile(text, target="cpu")
        assert art.report["ops_per_backend"] == {"reference": {"stablehlo.sort": 1}}
    x, y = with_ties((6,), "i32"), random((6,), "i32")
    got = byteir_core.load(byteir_core.compile(lexicographic, target="cpu").to_bytes()).run(x, y)
    order = np.lexsort((y, x))
    np.testing.assert_array_equal(got[0], x[order])
    np.testing.assert_array_equal(got[1], y[order])


# ---------------------------------------------------------------- scatter (host kernel)


def scatter_program(in_shape, idx_shape, upd_shape, dtype, idx_dtype, dims, combiner, sorted_=False, unique=False):
    t, it, ut, s = ty(in_shape, dtype), ty(idx_shape, idx_dtype), ty(upd_shape, dtype), ty((), dtype)
    body = ("      stablehlo.return %b : " + s if combiner == "replace" else
            f"      %c = stablehlo.{combiner} %a, %b : {s}\n      stablehlo.return %c : {s}")
    return f"""func.func @main(%x: {t}, %i: {it}, %u: {ut}) -> {t} {{
  %r = "stablehlo.scatter"(%x, %i, %u) ({{
    ^bb0(%a: {s}, %b: {s}):
{body}
  }}) {{scatter_dimension_numbers = #stablehlo.scatter<{dims}>, indices_are_sorted = {str(sorted_).lower()}, unique_indices = {str(unique).lower()}}} : ({t}, {it}, {ut}) -> {t}
  return %r : {t}
}}"""


ROWS = "update_window_dims = [1], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 1"


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i8", "i32", "i64"])
@pytest.mark.parametrize("combiner", ["replace", "add", "multiply", "maximum", "minimum"])
def test_scatter_rows_with_duplicate_indices(dtype, combiner):
    """index_put / index_add over rows; indices repeat, so the order updates apply in matters (for replace:
    the last wins; for float add: the rounding)."""
    idx = np.array([[3], [0], [3], [5], [3], [0], [1]], np.int32)
    x = random((6, 4), dtype)
    u = random((7, 4), dtype)
    if combiner == "multiply" and dtype.startswith("i"):
        u = (u % 3).astype(u.dtype)
    check(scatter_program((6, 4), (7, 1), (7, 4), dtype, "i32", ROWS, combiner), [x, idx, u], ["stablehlo.scatter"])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("combiner", ["add", "multiply", "replace"])
def test_row_scatter_applies_repeated_rows_in_order_bit_for_bit(dtype, combiner):
    """The host kernel's whole-row path (an embedding's backward) combines a row's updates in the order they
    come, onto the input's row, exactly as applying them one by one: no reassociated float sums."""
    from byteir_backend_cpu.hostops import run_scatter

    plan = {"combiner": combiner, "update_window_dims": [2], "inserted_window_dims": [0], "input_batching_dims": [],
            "scatter_indices_batching_dims": [], "scatter_dims_to_operand_dims": [0], "index_vector_dim": 2}
    g = np.random.default_rng(5)
    x = g.standard_normal((7, 33)).astype(dtype)
    idx = np.array([[3, 0, 3, 5, 3, 0], [9, -1, 3, 6, 6, 0]]).reshape(2, 6, 1)  # 9 and -1 are out of range
    u = g.standard_normal((2, 6, 33)).astype(dtype)
    out = np.empty_like(x)
    run_scatter(plan, [x, idx, u], [out])
    ref = x.copy()
    for r, v in zip(idx.reshape(-1), u.reshape(-1, 33)):
        if 0 <= r < 7:
            ref[r] = v if combiner == "replace" else (ref[r] + v if combiner == "add" else ref[r] * v)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("combiner", ["add", "or", "and", "xor", "replace", "maximum"])
def test_scatter_booleans(combiner):
    idx = np.array([[1], [1], [0], [2]], np.int64)
    check(scatter_program((3, 2), (4, 1), (4, 2), "i1", "i64", ROWS, combiner),
          [random((3, 2), "i1"), idx, random((4, 2), "i1")], ["stablehlo.scatter"])


@pytest.mark.parametrize("combiner", ["or", "and", "xor"])
def test_scatter_integer_bitwise(combiner):
    idx = np.array([[1], [1], [0], [2]], np.int32)
    check(scatter_program((3, 2), (4, 1), (4, 2), "i32", "i32", ROWS, combiner),
          [random((3, 2), "i32"), idx, random((4, 2), "i32")], ["stablehlo.scatter"])


def test_scatter_elements_2d_points_torch_scatter_style():
    """Point updates with a 2-D index vector: update_window_dims = [] (torch.scatter / scatter_add)."""
    dims = ("update_window_dims = [], inserted_window_dims = [0, 1], scatter_dims_to_operand_dims = [0, 1], "
            "index_vector_dim = 2")
    idx = np.stack([rng.integers(0, 4, (3, 5)), rng.integers(0, 6, (3, 5))], axis=-1).astype(np.int64)
    check(scatter_program((4, 6), (3, 5, 2), (3, 5), "f32", "i64", dims, "add"),
          [random((4, 6), "f32"), idx, random((3, 5), "f32")], ["stablehlo.scatter"])


def test_scatter_index_vector_dim_first_and_windows_in_the_middle():
    """index_vector_dim = 0, a window that keeps dims 0 and 2 of the input, indices into dim 1 clamped by
    nothing: out-of-range starts (negative, too large) drop only the update elements that fall outside."""
    dims = ("update_window_dims = [0, 2], inserted_window_dims = [1], scatter_dims_to_operand_dims = [1], "
            "index_vector_dim = 0")
    idx = np.array([[2, 0, 7, -1, 4]], np.int32)  # (1, 5): index vectors along dim 0
    check(scatter_program((3, 6, 4), (1, 5), (2, 5, 3), "f32", "i32", dims, "add"),
          [random((3, 6, 4), "f32"), idx, random((2, 5, 3), "f32")], ["stablehlo.scatter"])


def test_scatter_partial_windows_and_implicit_index_vector():
    """index_vector_dim = rank(indices): each index is a scalar; windows of 2 rows (no inserted dims) that may
    stick out of the input."""
    dims = "update_window_dims = [1, 2], inserted_window_dims = [], scatter_dims_to_operand_dims = [0], index_vector_dim = 1"
    idx = np.array([0, 3, 4, 1], np.int32)
    check(scatter_program((5, 3), (4,), (4, 2, 3), "f32", "i32", dims, "replace"),
          [random((5, 3), "f32"), idx, random((4, 2, 3), "f32")], ["stablehlo.scatter"])


def test_scatter_batching_dims():
    """input_batching_dims / scatter_indices_batching_dims (a batched index_put)."""
    dims = ("update_window_dims = [2], inserted_window_dims = [1], input_batching_dims = [0], "
            "scatter_indices_batching_dims = [0], scatter_dims_to_operand_dims = [1], index_vector_dim = 2")
    idx = rng.integers(0, 5, (2, 3, 1)).astype(np.int32)
    check(scatter_program((2, 5, 4), (2, 3, 1), (2, 3, 4), "f32", "i32", dims, "add"),
          [random((2, 5, 4), "f32"), idx, random((2, 3, 4), "f32")], ["stablehlo.scatter"])


def test_scatter_sorted_unique_hints_zero_size_and_rank0_updates():
    idx = np.array([[0], [2], [4]], np.int32)
    check(scatter_program((6, 4), (3, 1), (3, 4), "f32", "i32", ROWS, "replace", sorted_=True, unique=True),
          [random((6, 4), "f32"), idx, random((3, 4), "f32")], ["stablehlo.scatter"])
    check(scatter_program((6, 4), (0, 1), (0, 4), "f32", "i32", ROWS, "add"),
          [random((6, 4), "f32"), np.zeros((0, 1), np.int32), np.zeros((0, 4), np.float32)], ["stablehlo.scatter"])
    point = "update_window_dims = [], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 0"
    check(scatter_program((5,), (1,), (), "i64", "i64", point, "add"),
          [random((5,), "i64"), np.array([3], np.int64), np.array(7, np.int64)], ["stablehlo.scatter"])


def test_scatter_with_constant_indices_and_updates():
    text = """func.func @main(%x: tensor<4x3xbf16>) -> tensor<4x3xbf16> {
  %i = stablehlo.constant dense<[[1], [3], [1]]> : tensor<3x1xi64>
  %u = stablehlo.constant dense<[[1.5, 2.0, -3.0], [0.25, 8.0, 1.0], [4.0, -1.0, 2.0]]> : tensor<3x3xbf16>
  %r = "stablehlo.scatter"(%x, %i, %u) ({
    ^bb0(%a: tensor<bf16>, %b: tensor<bf16>):
      %c = stablehlo.add %b, %a : tensor<bf16>
      stablehlo.return %c : tensor<bf16>
  }) {scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [1], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 1>, indices_are_sorted = false, unique_indices = false} : (tensor<4x3xbf16>, tensor<3x1xi64>, tensor<3x3xbf16>) -> tensor<4x3xbf16>
  return %r : tensor<4x3xbf16>
}"""
    check(text, [random((4, 3), "bf16")], ["stablehlo.scatter"])


@pytest.mark.parametrize("dtype,value", [("f32", "0.0"), ("bf16", "1.5"), ("i32", "-2")])
def test_scatter_into_a_splat_constant(dtype, value):
    """An embedding's gradient: row updates added into a zero-filled table. The splat travels as its one value
    (not the whole table in the artifact) and is read as a broadcast: the result is the same as the reference's."""
    t, it, ut, s = ty((512, 64), dtype), ty((6, 1), "i64"), ty((6, 64), dtype), ty((), dtype)
    text = f"""func.func @main(%i: {it}, %u: {ut}) -> {t} {{
  %x = stablehlo.constant dense<{value}> : {t}
  %r = "stablehlo.scatter"(%x, %i, %u) ({{
    ^bb0(%a: {s}, %b: {s}):
      %c = stablehlo.add %a, %b : {s}
      stablehlo.return %c : {s}
  }}) {{scatter_dimension_numbers = #stablehlo.scatter<{ROWS}>, indices_are_sorted = false, unique_indices = false}} : ({t}, {it}, {ut}) -> {t}
  return %r : {t}
}}"""
    idx = np.array([[7], [0], [7], [511], [600], [3]], np.int64)  # 600 is out of range: skipped
    check(text, [idx, random((6, 64), dtype)], ["stablehlo.scatter"])
    assert len(byteir_core.compile(text, target="cpu").to_bytes()) < 32 * 1024  # the table is 64-128 KiB


def test_scatter_computations_not_recognized_fall_back():
    text = scatter_program((6, 4), (3, 1), (3, 4), "f32", "i32", ROWS, "add").replace(
        "%c = stablehlo.add %a, %b : tensor<f32>",
        "%d = stablehlo.multiply %b, %b : tensor<f32>\n      %c = stablehlo.add %a, %d : tensor<f32>")
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"reference": {"stablehlo.scatter": 1}}
    x, u = random((6, 4), "f32"), random((3, 4), "f32")
    idx = np.array([[1], [1], [5]], np.int32)
    want = x.astype(np.float64)
    for k, row in enumerate(idx[:, 0]):
        want[row] += u[k].astype(np.float64) ** 2
    np.testing.assert_allclose(byteir_core.load(art.to_bytes())(x, idx, u), want, rtol=1e-5, atol=1e-5)


def select_and_scatter_program(shape, src_shape, dtype, window, strides, padding, select="GE", combiner="add",
                               init="0"):
    t, st, sc = ty(shape, dtype), ty(src_shape, dtype), ty((), dtype)
    init = init + ".0" if dtype.startswith(("f", "bf")) else init
    pad = ", ".join(f"[{lo}, {hi}]" for lo, hi in padding)
    return f"""func.func @main(%x: {t}, %s: {st}) -> {t} {{
  %i = stablehlo.constant dense<{init}> : {sc}
  %r = "stablehlo.select_and_scatter"(%x, %s, %i) ({{
    ^bb0(%a: {sc}, %b: {sc}):
      %c = stablehlo.compare {select}, %a, %b : ({sc}, {sc}) -> tensor<i1>
      stablehlo.return %c : tensor<i1>
  }}, {{
    ^bb0(%a: {sc}, %b: {sc}):
      %c = stablehlo.{combiner} %a, %b : {sc}
      stablehlo.return %c : {sc}
  }}) {{window_dimensions = array<i64: {", ".join(map(str, window))}>, window_strides = array<i64: {", ".join(map(str, strides))}>, padding = dense<[{pad}]> : tensor<{len(shape)}x2xi64>}} : ({t}, {st}, {sc}) -> {t}
  return %r : {t}
}}"""


POOLS = [  # shape, source shape, window, strides, padding
    ((4, 4), (2, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),          # non-overlapping
    ((5, 5), (2, 2), (3, 3), (2, 2), ((0, 0), (0, 0))),          # overlapping: one element chosen by several windows
    ((4, 4), (2, 2), (3, 3), (2, 2), ((1, 1), (1, 1))),          # padded: padding is never chosen
    ((1, 2, 6, 6), (1, 2, 3, 3), (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 0), (1, 0))),  # NCHW max pool
    ((7,), (2,), (2,), (3,), ((0, 0),)),                         # stride > window: gaps never chosen
]


@pytest.mark.parametrize("shape,src,window,strides,padding", POOLS)
@pytest.mark.parametrize("select", ["GE", "GT", "LE"])
def test_select_and_scatter_with_ties(shape, src, window, strides, padding, select):
    """Max-pool backward. Many ties (values rounded to a few levels): GE keeps the first maximum of a window,
    GT moves to the last one; the interpreter is the oracle."""
    text = select_and_scatter_program(shape, src, "f32", window, strides, padding, select)
    x = np.round(random(shape, "f32") / 3).astype(np.float32)
    check(text, [x, random(src, "f32")], ["stablehlo.select_and_scatter"])


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f64", "i8", "i32", "i64"])
@pytest.mark.parametrize("combiner", ["add", "maximum", "multiply"])
def test_select_and_scatter_dtypes_and_combiners(dtype, combiner):
    shape, src, window, strides, padding = POOLS[1]
    text = select_and_scatter_program(shape, src, dtype, window, strides, padding, "GE", combiner,
                                      init="1" if combiner == "multiply" else "0")
    check(text, [random(shape, dtype), random(src, dtype)], ["stablehlo.select_and_scatter"])


def test_select_and_scatter_nan_in_windows():
    """A NaN breaks GE's chain (NaN >= v and v >= NaN are both false): the walk moves on, as the interpreter's."""
    shape, src, window, strides, padding = POOLS[1]
    text = select_and_scatter_program(shape, src, "f32", window, strides, padding, "GE")
    x = random(shape, "f32")
    x[0, 1] = x[2, 2] = x[4, 0] = np.nan
    check(text, [x, random(src, "f32")], ["stablehlo.select_and_scatter"])


def test_select_and_scatter_unrecognized_regions_fall_back():
    """A select region that is not a single compare of its arguments: reference (the report says so)."""
    shape, src, window, strides, padding = POOLS[0]
    text = select_and_scatter_program(shape, src, "f32", window, strides, padding, "GE").replace(
        "%c = stablehlo.compare GE, %a, %b : (tensor<f32>, tensor<f32>) -> tensor<i1>",
        "%n = stablehlo.abs %a : tensor<f32>\n      %c = stablehlo.compare GE, %n, %b : (tensor<f32>, tensor<f32>) -> tensor<i1>")
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"reference": {"stablehlo.select_and_scatter": 1}}
    x = np.ones((4, 4), np.float32)  # every window a tie: |first| >= next keeps the first element
    source = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    want = np.zeros((4, 4), np.float32)
    want[::2, ::2] = source
    np.testing.assert_array_equal(byteir_core.load(art.to_bytes())(x, source), want)


@pytest.mark.parametrize("dtype,updates", [
    ("i1", "dense<true>"), ("i1", "dense<[[true, false, true], [false, false, true]]>"),
    ("f16", "dense<[[1.5, -2.0, 3.0], [0.25, 7.0, -1.0]]>"), ("bf16", "dense<2.5>"),
    ("bf16", "dense<[[1.5, 0x7FC0, -3.0], [0x7F80, 8.0, 1.0]]>"), ("i64", "dense<-7>"),
    ("i8", "dense<[[1, -2, 3], [4, 5, -128]]>"), ("f64", "dense<[[1.5, -2.0, 3.0], [0.25, 7.0, -1.0]]>"),
])
def test_host_kernels_carry_constant_operands(dtype, updates):
    """Small constants (splat or not, every type incl. bf16 NaN/inf bit patterns) travel in the kernel blob."""
    t, s = ty((4, 3), dtype), ty((), dtype)
    text = f"""func.func @main(%x: {t}) -> {t} {{
  %i = stablehlo.constant dense<[[1], [3]]> : tensor<2x1xi32>
  %u = stablehlo.constant {updates} : {ty((2, 3), dtype)}
  %r = "stablehlo.scatter"(%x, %i, %u) ({{
    ^bb0(%a: {s}, %b: {s}):
      stablehlo.return %b : {s}
  }}) {{scatter_dimension_numbers = #stablehlo.scatter<{ROWS}>, indices_are_sorted = false, unique_indices = false}} : ({t}, tensor<2x1xi32>, {ty((2, 3), dtype)}) -> {t}
  return %r : {t}
}}"""
    art = byteir_core.compile(text, target="cpu")
    assert [k.kernel.format for k in art.module.kernels.values()] == ["npz-raw-operands"]
    check(text, [np.zeros((4, 3), to_numpy(dtype))], ["stablehlo.scatter"])


def test_host_kernels_write_non_contiguous_outputs():
    """The runtime hands contiguous buffers, but a kernel must not lose its writes on a strided one."""
    from byteir_backend_cpu.hostops import run_scatter, run_select_and_scatter

    plan = {"combiner": "add", "update_window_dims": [1], "inserted_window_dims": [0], "input_batching_dims": [],
            "scatter_indices_batching_dims": [], "scatter_dims_to_operand_dims": [0], "index_vector_dim": 1}
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = np.zeros((4, 6), np.float32)[:, ::2]
    run_scatter(plan, [x, np.array([[1], [1]]), np.ones((2, 3), np.float32)], [out])
    want = x.copy()
    want[1] += 2
    np.testing.assert_array_equal(out, want)
    pool = {"select": "GE", "combiner": "add", "window": [2, 2], "strides": [2, 2], "padding_low": [0, 0]}
    out = np.zeros((4, 8), np.float32)[:, ::2]
    run_select_and_scatter(pool, [np.ones((4, 4), np.float32), np.full((2, 2), 5.0, np.float32),
                                  np.array(1.0, np.float32)], [out])
    want = np.ones((4, 4), np.float32)
    want[::2, ::2] = 6.0
    np.testing.assert_array_equal(out, want)


# ---------------------------------------------------------------- scatter inside control flow (generated code)


def in_if(text):
    """The scatter program's body moved into the then-branch of an if on a new first argument %p (the else
    branch returns the input): a scatter inside control flow, which generated code runs as a loop."""
    head, rest = text.split(") -> ", 1)
    t = rest.split(" {", 1)[0]
    body = rest.split(" {\n", 1)[1].rsplit("  return %r", 1)[0]
    return (head.replace("func.func @main(", "func.func @main(%p: tensor<i1>, ") + f") -> {t} {{\n"
            f"  %o = \"stablehlo.if\"(%p) ({{\n{body}  stablehlo.return %r : {t}\n  }}, {{\n"
            f"  stablehlo.return %x : {t}\n  }}) : (tensor<i1>) -> {t}\n  return %o : {t}\n}}")


SCATTER_CASES = {  # name: (input, indices, updates shapes, dims, index values)
    "rows": ((6, 4), (7, 1), (7, 4), ROWS, np.array([[3], [0], [3], [5], [3], [0], [9]])),
    "points": ((4, 6), (3, 2), (3,), "update_window_dims = [], inserted_window_dims = [0, 1], "
              "scatter_dims_to_operand_dims = [0, 1], index_vector_dim = 1", np.array([[1, 5], [1, 5], [3, -1]])),
    "ivd_first": ((3, 6, 4), (1, 5), (2, 5, 3), "update_window_dims = [0, 2], inserted_window_dims = [1], "
                  "scatter_dims_to_operand_dims = [1], index_vector_dim = 0", np.array([[2, 0, 7, -1, 4]])),
    "windows": ((5, 3), (4,), (4, 2, 3), "update_window_dims = [1, 2], inserted_window_dims = [], "
                "scatter_dims_to_operand_dims = [0], index_vector_dim = 1", np.array([0, 3, 4, 1])),
    "batching": ((2, 5, 4), (2, 3, 1), (2, 3, 4), "update_window_dims = [2], inserted_window_dims = [1], "
                 "input_batching_dims = [0], scatter_indices_batching_dims = [0], scatter_dims_to_operand_dims = [1], "
                 "index_vector_dim = 2", np.array([[[4], [0], [4]], [[1], [1], [3]]])),
}


@pytest.mark.parametrize("case", sorted(SCATTER_CASES))
@pytest.mark.parametrize("combiner", ["add", "replace", "maximum"])
def test_scatter_inside_control_flow_dimension_numbers(case, combiner):
    shape, ishape, ushape, dims, idx = SCATTER_CASES[case]
    text = in_if(scatter_program(shape, ishape, ushape, "f32", "i32", dims, combiner))
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.if": 1}}
    for p in (True, False):
        check(text, [np.array(p), random(shape, "f32"), idx.astype(np.int32), random(ushape, "f32")], ["stablehlo.if"])


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64", "i1", "i8", "i32", "i64"])
@pytest.mark.parametrize("combiner", ["add", "multiply", "minimum", "replace"])
def test_scatter_inside_control_flow_dtypes(dtype, combiner):
    shape, ishape, ushape, dims, idx = SCATTER_CASES["rows"]
    text = in_if(scatter_program(shape, ishape, ushape, dtype, "i64", dims, combiner))
    u = random(ushape, dtype)
    if combiner == "multiply" and dtype not in ("i1",) and not dtype.startswith(("f", "bf")):
        u = (u % 3).astype(u.dtype)
    check(text, [np.array(True), random(shape, dtype), idx.astype(np.int64), u], ["stablehlo.if"])


@pytest.mark.parametrize("dtype", on_older_cpus(["f32", "bf16", "i32"]))
def test_while_loop_writing_one_row_per_iteration(dtype):
    """A fori_loop with x.at[i % 5].add(rows[i % 5]): scatter in a while body, 7 trips (rows revisited)."""
    t, r, s = ty((5, 3), dtype), ty((1, 3), dtype), ty((), dtype)
    text = f"""func.func @main(%x: {t}, %rows: {t}) -> {t} {{
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %r:2 = stablehlo.while(%i = %c0, %acc = %x) : tensor<i32>, {t}
  cond {{
    %n = stablehlo.constant dense<7> : tensor<i32>
    %c = stablehlo.compare LT, %i, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  }} do {{
    %z = stablehlo.constant dense<0> : tensor<i32>
    %five = stablehlo.constant dense<5> : tensor<i32>
    %row = stablehlo.remainder %i, %five : tensor<i32>
    %u = stablehlo.dynamic_slice %rows, %row, %z, sizes = [1, 3] : ({t}, tensor<i32>, tensor<i32>) -> {r}
    %idx = stablehlo.reshape %row : (tensor<i32>) -> tensor<1x1xi32>
    %s = "stablehlo.scatter"(%acc, %idx, %u) ({{
      ^bb0(%a: {s}, %b: {s}):
        %c = stablehlo.add %a, %b : {s}
        stablehlo.return %c : {s}
    }}) {{scatter_dimension_numbers = #stablehlo.scatter<{ROWS}>, indices_are_sorted = false, unique_indices = false}} : ({t}, tensor<1x1xi32>, {r}) -> {t}
    %one = stablehlo.constant dense<1> : tensor<i32>
    %i2 = stablehlo.add %i, %one : tensor<i32>
    stablehlo.return %i2, %s : tensor<i32>, {t}
  }}
  return %r#1 : {t}
}}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.while": 1}}
    check(text, [random((5, 3), dtype), random((5, 3), dtype)], ["stablehlo.while"])


def test_while_scatter_whose_input_is_read_again_in_the_body():
    """The loop argument the scatter updates is also read after the scatter (a difference of old and new): the
    scatter must work on a copy there, not update the argument in place."""
    text = f"""func.func @main(%x: tensor<4x2xf32>, %u: tensor<1x2xf32>) -> (tensor<4x2xf32>, tensor<4x2xf32>) {{
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %d0 = stablehlo.constant dense<0.0> : tensor<4x2xf32>
  %r:3 = stablehlo.while(%i = %c0, %acc = %x, %d = %d0) : tensor<i32>, tensor<4x2xf32>, tensor<4x2xf32>
  cond {{
    %n = stablehlo.constant dense<6> : tensor<i32>
    %c = stablehlo.compare LT, %i, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
    stablehlo.return %c : tensor<i1>
  }} do {{
    %four = stablehlo.constant dense<4> : tensor<i32>
    %row = stablehlo.remainder %i, %four : tensor<i32>
    %idx = stablehlo.reshape %row : (tensor<i32>) -> tensor<1x1xi32>
    %s = "stablehlo.scatter"(%acc, %idx, %u) ({{
      ^bb0(%a: tensor<f32>, %b: tensor<f32>):
        %m = stablehlo.multiply %a, %b : tensor<f32>
        stablehlo.return %m : tensor<f32>
    }}) {{scatter_dimension_numbers = #stablehlo.scatter<{ROWS}>, indices_are_sorted = false, unique_indices = false}} : (tensor<4x2xf32>, tensor<1x1xi32>, tensor<1x2xf32>) -> tensor<4x2xf32>
    %diff = stablehlo.subtract %s, %acc : tensor<4x2xf32>
    %d2 = stablehlo.add %d, %diff : tensor<4x2xf32>
    %one = stablehlo.constant dense<1> : tensor<i32>
    %i2 = stablehlo.add %i, %one : tensor<i32>
    stablehlo.return %i2, %s, %d2 : tensor<i32>, tensor<4x2xf32>, tensor<4x2xf32>
  }}
  return %r#1, %r#2 : tensor<4x2xf32>, tensor<4x2xf32>
}}"""
    art = byteir_core.compile(text, target="cpu")
    assert art.report["ops_per_backend"] == {"cpu": {"stablehlo.while": 1}}
    check(text, [random((4, 2), "f32"), random((1, 2), "f32")], ["stablehlo.while"])
