"""Casts to and from float8, float4, 4- and 2-bit integers, BitCast (byteir_frontend_onnx.native) and Scan
unrolled (byteir_frontend_onnx.scan), checked against onnx's reference implementation, through a saved artifact."""

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import byteir_core


def _model(nodes, inputs, outputs, opset=25, inits=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 11
    return m


def _vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def _through_file(model, tmp_path, feeds):
    """Compile, save, load back, run: the narrow types cross the ByRE file (its bytecode check) too."""
    art = byteir_core.compile(model, target="cpu", progress=False)
    path = art.save(tmp_path / "m.byre")
    return byteir_core.load(path)(**feeds)


# values that probe each cast's edges: halfway cases, overflow, inf, NaN, signed zero, tiny values
EDGES = np.array([0.0, -0.0, 0.3, -1.7, 2.5, 3.5, 447.0, 464.0, 470.0, 1e6, -1e6, 61440.0, np.inf, -np.inf,
                  np.nan, 1e-9], np.float32)

F8 = [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2FNUZ]


@pytest.mark.parametrize("saturate", [1, 0])
def test_float8_casts_match_the_reference(tmp_path, saturate):
    """f32 -> each float8 type (saturating or not) -> f32, and CastLike with saturate=0 (onnxscript's folder used
    to turn it into a saturating Cast): NaN, inf, overflow and ties as onnx's reference gives them."""
    nodes, outs = [], []
    for k, t in enumerate(F8):
        nodes.append(helper.make_node("Cast", ["x"], [f"q{k}"], to=t, saturate=saturate))
        nodes.append(helper.make_node("Cast", [f"q{k}"], [f"y{k}"], to=TensorProto.FLOAT))
        outs.append(_vi(f"y{k}", TensorProto.FLOAT, [len(EDGES)]))
    nodes.append(helper.make_node("CastLike", ["x", "like"], ["q_like"], saturate=saturate))
    outs.append(_vi("q_like", TensorProto.FLOAT8E5M2, [len(EDGES)]))
    m = _model(nodes, [_vi("x", TensorProto.FLOAT, [len(EDGES)]), _vi("like", TensorProto.FLOAT8E5M2, [1])], outs)
    feeds = {"x": EDGES, "like": np.zeros(1, ml_dtypes.float8_e5m2)}
    want = ReferenceEvaluator(m).run(None, feeds)
    got = _through_file(m, tmp_path, feeds)
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g.astype(np.float32), w.astype(np.float32))
    if not saturate:  # the cases that differ from a saturating cast are really there
        assert np.isnan(got[0]).sum() > 1 and np.isinf(got[-1].astype(np.float32)).sum() > 2


def test_narrow_integers_and_float4_in_and_out(tmp_path):
    """int2/uint2 (carried as 4-bit integers inside torch-mlir), int4 and float4 as graph inputs and outputs, with
    the reference's rounding, saturation and out-of-range rules."""
    x = np.array([-9.0, -2.6, -1.5, -0.4, 0.0, 0.6, 1.5, 2.5, 3.7, 8.0, 15.2, np.nan, np.inf, -7.0], np.float32)
    i2 = np.array([-2, -1, 0, 1, 1, 0, -2, -1, 0, 1, 0, -1, 1, -2], ml_dtypes.int2)
    m = _model([helper.make_node("Cast", ["x"], ["a"], to=TensorProto.INT4),
                helper.make_node("Cast", ["x"], ["b"], to=TensorProto.UINT4),
                helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT4E2M1),
                helper.make_node("Cast", ["x"], ["d"], to=TensorProto.UINT2),
                helper.make_node("Cast", ["i2"], ["e"], to=TensorProto.FLOAT),
                helper.make_node("Identity", ["i2"], ["f"])],
               [_vi("x", TensorProto.FLOAT, [14]), _vi("i2", TensorProto.INT2, [14])],
               [_vi("a", TensorProto.INT4, [14]), _vi("b", TensorProto.UINT4, [14]),
                _vi("c", TensorProto.FLOAT4E2M1, [14]), _vi("d", TensorProto.UINT2, [14]),
                _vi("e", TensorProto.FLOAT, [14]), _vi("f", TensorProto.INT2, [14])])
    want = ReferenceEvaluator(m).run(None, {"x": x, "i2": i2})
    got = _through_file(m, tmp_path, {"x": x, "i2": i2})
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g.astype(np.float32), w.astype(np.float32))
    assert len(np.unique(got[0].astype(np.float32))) > 5


def test_bitcast_is_a_reinterpretation():
    x = np.array([1.0, -2.5, np.inf, 3e-41], np.float32)
    m = _model([helper.make_node("BitCast", ["x"], ["y"], to=TensorProto.INT32)],
               [_vi("x", TensorProto.FLOAT, [4])], [_vi("y", TensorProto.INT32, [4])], opset=26)
    art = byteir_core.compile(m, target="cpu", progress=False)
    got = byteir_core.load(art)(x=x)  # one output: the array itself
    np.testing.assert_array_equal(got, x.view(np.int32))


def test_scan_unrolled_matches_the_reference():
    """A Scan with a state, a forward and a reverse scan input (axis 1), a value read from the enclosing graph,
    and a forward and a reverse scan output (axis 0 and 1): unrolled, it gives the values of the loop written out
    in NumPy (onnx's reference refuses reverse directions)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "a_t"], ["s1"]),
         helper.make_node("Mul", ["s1", "w"], ["s_out"]),
         helper.make_node("Sub", ["s_out", "b_t"], ["y_t"]),
         helper.make_node("Identity", ["a_t"], ["z_t"])],
        "body",
        [_vi("s_in", TensorProto.FLOAT, [2]), _vi("a_t", TensorProto.FLOAT, [2]), _vi("b_t", TensorProto.FLOAT, [2])],
        [_vi("s_out", TensorProto.FLOAT, [2]), _vi("y_t", TensorProto.FLOAT, [2]), _vi("z_t", TensorProto.FLOAT, [2])])
    scan = helper.make_node("Scan", ["s0", "a", "b"], ["s_final", "ys", "zs"], body=body, num_scan_inputs=2,
                            scan_input_axes=[1, 1], scan_input_directions=[0, 1], scan_output_axes=[0, 1],
                            scan_output_directions=[0, 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.5, 2.0])
    m = _model([scan], [_vi("s0", TensorProto.FLOAT, [2]), _vi("a", TensorProto.FLOAT, [2, 5]),
                        _vi("b", TensorProto.FLOAT, [2, 5])],
               [_vi("s_final", TensorProto.FLOAT, [2]), _vi("ys", TensorProto.FLOAT, [5, 2]),
                _vi("zs", TensorProto.FLOAT, [2, 5])], opset=21, inits=[w])
    rng = np.random.default_rng(3)
    feeds = {"s0": rng.standard_normal(2).astype(np.float32), "a": rng.standard_normal((2, 5)).astype(np.float32),
             "b": rng.standard_normal((2, 5)).astype(np.float32)}
    state, ys, zs = feeds["s0"], [], []
    for t in range(5):
        state = (state + feeds["a"][:, t]) * np.array([0.5, 2.0], np.float32)
        ys.append(state - feeds["b"][:, 4 - t])
        zs.append(feeds["a"][:, t])
    want = [state, np.stack(ys, 0), np.stack(zs[::-1], 1)]
    art = byteir_core.compile(m, target="cpu", progress=False)
    got = byteir_core.load(art)(**feeds)
    for w_, g in zip(want, got):
        np.testing.assert_allclose(g, w_, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[2], feeds["a"][:, ::-1])


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [1, 0])
def test_float8e8m0_casts(tmp_path, round_mode, saturate):
    """float -> float8e8m0 (a power of two) in each rounding mode, saturating or not, and back: the values of
    onnx's own converter, through a saved artifact."""
    from onnx.numpy_helper import to_float8e8m0

    x = np.array([1.0, 3.0, 0.3, 1.5, 1.75, -6.0, 2.0 ** 127 * 1.5, 3e38, np.inf, np.nan, 1e-40, 0.0, 2.0 ** -126],
                 np.float32)
    m = _model([helper.make_node("Cast", ["x"], ["q"], to=TensorProto.FLOAT8E8M0, saturate=saturate,
                                 round_mode=round_mode),
                helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)],
               [_vi("x", TensorProto.FLOAT, [len(x)])],
               [_vi("q", TensorProto.FLOAT8E8M0, [len(x)]), _vi("y", TensorProto.FLOAT, [len(x)])])
    q, y = _through_file(m, tmp_path, {"x": x})
    want = to_float8e8m0(x, bool(saturate), round_mode)
    np.testing.assert_array_equal(q.view(np.uint8), want.view(np.uint8))
    np.testing.assert_array_equal(y, want.astype(np.float32))
