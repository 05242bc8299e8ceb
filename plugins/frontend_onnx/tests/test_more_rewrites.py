"""Graph rewrites before import for ops torch-mlir cannot lower (byteir_frontend_onnx.rewrites, .training, .ml),
each checked against onnx's reference implementation; values read at run time are varied through one compiled
artifact, so none of them can have been baked in."""

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import byteir_core


def _model(nodes, inputs, outputs, opset=22, inits=(), extra=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *extra])
    m.ir_version = 10
    return m


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _check(m, feeds_list, rtol=1e-5, atol=1e-6):
    session = byteir_core.load(byteir_core.compile(m, target="cpu", progress=False))
    ref = ReferenceEvaluator(m)
    for feeds in feeds_list:
        want = ref.run(None, feeds)
        got = session(**feeds)
        got = got if isinstance(got, (list, tuple)) else [got]
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


rng = np.random.default_rng(7)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 3, 2], "pads": [1, 0, 1, 0, 1, 1], "count_include_pad": 0},
    {"kernel_shape": [2, 2, 2], "strides": [2, 1, 1], "dilations": [1, 2, 2], "count_include_pad": 1},
    {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 1, 0, 1]},
])
def test_average_pool_3d_and_dilated(attrs):
    """torch-mlir crashed on 3-D AveragePool and miscomputed dilated ones; they are depthwise convolutions now."""
    spatial = [5, 6, 7][-len(attrs["kernel_shape"]):]
    m = _model([helper.make_node("AveragePool", ["x"], ["y"], **attrs)], [_vi("x", [2, 3, *spatial])],
               [_vi("y", None)])
    _check(m, [{"x": rng.standard_normal((2, 3, *spatial)).astype(np.float32)}])


@pytest.mark.parametrize("attrs", [{"p": 3, "kernel_shape": [3, 2], "auto_pad": "SAME_UPPER"},
                                   {"p": 2, "kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 0, 0, 1]},
                                   {"p": 1, "kernel_shape": [2, 2, 2]}])
def test_lp_pool(attrs):
    spatial = [6, 5, 4][:len(attrs["kernel_shape"])]
    m = _model([helper.make_node("LpPool", ["x"], ["y"], **attrs)], [_vi("x", [1, 4, *spatial])], [_vi("y", None)])
    _check(m, [{"x": rng.standard_normal((1, 4, *spatial)).astype(np.float32)}], rtol=1e-4)


def test_reverse_sequence_lengths_are_read_at_run_time():
    m = _model([helper.make_node("ReverseSequence", ["x", "lens"], ["y"], time_axis=1, batch_axis=0)],
               [_vi("x", [3, 5, 2]), _vi("lens", [3], TensorProto.INT64)], [_vi("y", [3, 5, 2])])
    x = rng.standard_normal((3, 5, 2)).astype(np.float32)
    _check(m, [{"x": x, "lens": np.array(v, np.int64)} for v in ([5, 1, 3], [2, 4, 0], [1, 1, 1])])


def test_pad_value_is_read_at_run_time():
    m = _model([helper.make_node("Pad", ["x", "pads", "v"], ["y"], mode="constant")],
               [_vi("x", [2, 3]), _vi("v", [])], [_vi("y", [3, 6])],
               inits=[helper.make_tensor("pads", TensorProto.INT64, [4], [1, 2, 0, 1])])
    x = rng.standard_normal((2, 3)).astype(np.float32)
    _check(m, [{"x": x, "v": np.array(v, np.float32)} for v in (0.0, -2.5, np.inf)])


def test_compress_with_a_constant_condition():
    cond = helper.make_tensor("c", TensorProto.BOOL, [4], [True, False, True, True])
    m = _model([helper.make_node("Compress", ["x", "c"], ["y"], axis=1),
                helper.make_node("Compress", ["x", "c"], ["z"])],
               [_vi("x", [3, 5])], [_vi("y", None), _vi("z", None)], inits=[cond])
    _check(m, [{"x": rng.standard_normal((3, 5)).astype(np.float32)}])


@pytest.mark.parametrize("op,attrs,kinds", [
    ("Adam", {"alpha": 0.9, "beta": 0.99, "epsilon": 1e-3, "norm_coefficient": 0.01,
              "norm_coefficient_post": 0.02}, 4),
    ("Adagrad", {"decay_factor": 0.1, "epsilon": 1e-4, "norm_coefficient": 0.01}, 3),
    ("Momentum", {"alpha": 0.9, "beta": 0.5, "mode": "nesterov", "norm_coefficient": 0.01}, 3),
])
def test_training_optimizers_on_two_tensors(op, attrs, kinds):
    """Two tensors updated by one node, at the first step (T=0: no bias correction, beta taken as 1) and later."""
    names = [f"{k}{i}" for k in "XGVH"[:kinds] for i in range(2)]
    outs = [f"{k}{i}_new" for k in ("X", "V", "H")[:kinds - 1] for i in range(2)]
    training = helper.make_opsetid("ai.onnx.preview.training", 1)
    m = _model([helper.make_node(op, ["R", "T", *names], outs, domain="ai.onnx.preview.training", **attrs)],
               [_vi("R", []), _vi("T", [], TensorProto.INT64)] + [_vi(n, [3, 4]) for n in names],
               [_vi(o, [3, 4]) for o in outs], extra=[training])
    base = {n: rng.standard_normal((3, 4)).astype(np.float32) for n in names}
    if kinds == 4:
        base["H0"], base["H1"] = np.abs(base["H0"]), np.abs(base["H1"])
    _check(m, [{**base, "R": np.array(0.1, np.float32), "T": np.array(t, np.int64)} for t in (0, 3)], rtol=1e-4)


def test_ml_binarizer_and_array_feature_extractor():
    ml = helper.make_opsetid("ai.onnx.ml", 3)
    m = _model([helper.make_node("Binarizer", ["x"], ["b"], domain="ai.onnx.ml", threshold=0.25),
                helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["f"], domain="ai.onnx.ml")],
               [_vi("x", [3, 5]), _vi("i", [2], TensorProto.INT64)], [_vi("b", [3, 5]), _vi("f", [3, 2])],
               extra=[ml])
    x = rng.standard_normal((3, 5)).astype(np.float32)
    _check(m, [{"x": x, "i": np.array(v, np.int64)} for v in ([4, 0], [1, 1])])


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([0, 0, 3], [20, 10, 4], None, None),          # whole axes among a cut one: torch-mlir went dynamic
    ([0, -3], [1000, -1], [0, 2], None),           # clamped end, negative positions
    ([-1, 0], [-1000, 10], [1, 0], [-2, 1]),       # a negative step to the first element
    ([0], [20], [0], [1]),                          # cuts nothing: an Identity
])
def test_slice_with_constant_operands(starts, ends, axes, steps):
    inits = [helper.make_tensor("s", TensorProto.INT64, [len(starts)], starts),
             helper.make_tensor("e", TensorProto.INT64, [len(ends)], ends)]
    names = ["x", "s", "e"]
    if axes is not None:
        inits.append(helper.make_tensor("a", TensorProto.INT64, [len(axes)], axes))
        names.append("a")
    if steps is not None:
        inits.append(helper.make_tensor("t", TensorProto.INT64, [len(steps)], steps))
        names.append("t")
    m = _model([helper.make_node("Slice", names, ["y"])], [_vi("x", [20, 10, 5])], [_vi("y", None)], inits=inits)
    _check(m, [{"x": rng.standard_normal((20, 10, 5)).astype(np.float32)}])


@pytest.mark.parametrize("shape,axes", [([3, 7], [1, 2]), ([6, 2, 4], None), ([9], [-2])])
def test_center_crop_pad(shape, axes):
    attrs = {"axes": axes} if axes else {}
    m = _model([helper.make_node("CenterCropPad", ["x", "shape"], ["y"], **attrs)], [_vi("x", [4, 5, 3])],
               [_vi("y", None)], inits=[helper.make_tensor("shape", TensorProto.INT64, [len(shape)], shape)])
    _check(m, [{"x": rng.standard_normal((4, 5, 3)).astype(np.float32)}])


def test_backend_specializes_inputs_a_shape_is_computed_from():
    """A window size given at run time, cast and decremented before a Range (HannWindow's expansion): the
    onnx.backend compiles it as the constant it is run with, once per value."""
    from byteir_frontend_onnx.backend import ByteirBackend

    nodes = [helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["nf", "one"], ["last"]),
             helper.make_node("Range", ["zero", "last", "one"], ["r"]),
             helper.make_node("Mul", ["r", "nf"], ["y"])]
    m = _model(nodes, [_vi("n", [], TensorProto.INT64)], [_vi("y", None)],
               inits=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
                      helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    rep = ByteirBackend.prepare(m)
    for size in (4, 7):
        (got,) = rep.run([np.array(size, np.int64)])
        np.testing.assert_array_equal(got, np.arange(size - 1, dtype=np.float32) * size)


@pytest.mark.parametrize("complex_in,axis,length,inverse,onesided", [
    (True, 1, None, 0, 0),     # forward, complex input, the middle axis
    (False, 2, None, 0, 1),    # rfft: real input, half the spectrum
    (False, 1, 10, 0, 0),      # zero-padded to 10
    (True, 2, 4, 1, 0),        # inverse, truncated to 4
    (True, 1, 8, 1, 1),        # irfft to a real signal of 8
])
def test_dft_matches_numpy(complex_in, axis, length, inverse, onesided):
    shape = [2, 5, 6, 2 if complex_in else 1]
    inputs = ["x", "n" if length else "", "axis"]
    inits = [helper.make_tensor("axis", TensorProto.INT64, [], [axis])]
    if length:
        inits.append(helper.make_tensor("n", TensorProto.INT64, [], [length]))
    m = _model([helper.make_node("DFT", inputs, ["y"], inverse=inverse, onesided=onesided)], [_vi("x", shape)],
               [_vi("y", None)], inits=inits)
    x = rng.standard_normal(shape).astype(np.float32)
    z = x[..., 0] + 1j * x[..., 1] if complex_in else x[..., 0]
    if inverse and onesided:
        want = np.fft.irfft(z, n=length, axis=axis)[..., None]
    else:
        f = np.fft.ifft(z, n=length, axis=axis) if inverse else np.fft.fft(z, n=length, axis=axis)
        if onesided:
            f = np.take(f, range(f.shape[axis] // 2 + 1), axis=axis)
        want = np.stack([f.real, f.imag], -1)
    got = byteir_core.load(byteir_core.compile(m, target="cpu", progress=False))(x=x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_scatter_with_reductions():
    """ScatterND (multiply, a negative index) and ScatterElements (max along axis 1, a repeated index)."""
    m = _model([helper.make_node("ScatterND", ["d", "i", "u"], ["a"], reduction="mul"),
                helper.make_node("ScatterElements", ["d", "j", "v"], ["b"], axis=1, reduction="max")],
               [_vi("d", [4, 3]), _vi("i", [2, 1], TensorProto.INT64), _vi("u", [2, 3]),
                _vi("j", [4, 2], TensorProto.INT64), _vi("v", [4, 2])], [_vi("a", [4, 3]), _vi("b", [4, 3])])
    feeds = {"d": rng.standard_normal((4, 3)).astype(np.float32), "u": rng.standard_normal((2, 3)).astype(np.float32),
             "v": rng.standard_normal((4, 2)).astype(np.float32) * 3}
    _check(m, [{**feeds, "i": np.array(i, np.int64).reshape(2, 1), "j": np.array(j, np.int64)}
               for i, j in (([0, -1], [[0, 0], [1, 2], [-1, 1], [2, 2]]), ([3, 3], [[1, 0], [0, 0], [2, 2], [0, -3]]))])


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_writes_at_run_time_positions(mode):
    m = _model([helper.make_node("TensorScatter", ["cache", "new", "pos"], ["out"], mode=mode, axis=-2)],
               [_vi("cache", [2, 3, 6, 4]), _vi("new", [2, 3, 2, 4]), _vi("pos", [2], TensorProto.INT64)],
               [_vi("out", [2, 3, 6, 4])], opset=24)
    feeds = {"cache": rng.standard_normal((2, 3, 6, 4)).astype(np.float32),
             "new": rng.standard_normal((2, 3, 2, 4)).astype(np.float32)}
    positions = ([0, 4], [5, 1]) if mode == "circular" else ([0, 4], [3, 1])
    _check(m, [{**feeds, "pos": np.array(p, np.int64)} for p in positions])


def test_loop_with_a_constant_trip_count_is_unrolled():
    """A Loop whose condition is passed through: unrolled, with its carried value and its scan output."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["y_in", "f"], ["p"]),
         helper.make_node("Add", ["p", "w"], ["y_out"]),
         helper.make_node("Identity", ["p"], ["s"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("c_in", [], TensorProto.BOOL), _vi("y_in", [3])],
        [_vi("c_out", [], TensorProto.BOOL), _vi("y_out", [3]), _vi("s", [3])])
    m = _model([helper.make_node("Loop", ["m", "", "y0"], ["y", "ss"], body=body)], [_vi("y0", [3])],
               [_vi("y", [3]), _vi("ss", [4, 3])],
               inits=[helper.make_tensor("m", TensorProto.INT64, [], [4]),
                      helper.make_tensor("w", TensorProto.FLOAT, [3], [0.5, -1.0, 2.0])])
    y0 = rng.standard_normal(3).astype(np.float32)
    y, ss = y0, []
    for i in range(4):  # the loop written out (onnx's reference fails on this Loop's scan output)
        ss.append(y * np.float32(i))
        y = ss[-1] + np.array([0.5, -1.0, 2.0], np.float32)
    got_y, got_ss = byteir_core.load(byteir_core.compile(m, target="cpu", progress=False))(y0=y0)
    np.testing.assert_allclose(got_y, y, rtol=1e-6)
    np.testing.assert_allclose(got_ss, np.stack(ss), rtol=1e-6)


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_a_constant_condition_is_its_branch(flag):
    """The branches give different shapes, which only a known condition can compile; the taken one reads a value
    of the enclosing graph and has a constant of its own."""
    then = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["t"])], "then", [], [_vi("t", [2, 3])],
                             initializer=[helper.make_tensor("k", TensorProto.FLOAT, [], [3.0])])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], keepdims=0)], "else", [], [_vi("e", [])])
    m = _model([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], [_vi("x", [2, 3])],
               [_vi("y", None)], inits=[helper.make_tensor("c", TensorProto.BOOL, [], [flag])])
    x = rng.standard_normal((2, 3)).astype(np.float32)
    got = byteir_core.load(byteir_core.compile(m, target="cpu", progress=False))(x=x)
    np.testing.assert_allclose(got, x * 3 if flag else x.sum(), rtol=1e-6)


def test_col2im_max_unpool_space_to_depth_einsum_and_mod():
    """Col2Im (strides, pads, dilations), MaxUnpool (to a larger output shape), SpaceToDepth in CRD mode, a
    one-operand Einsum (a batch diagonal) and floored Mod over infinite divisors, against the reference."""
    inits = [helper.make_tensor("image", TensorProto.INT64, [2], [6, 5]),
             helper.make_tensor("block", TensorProto.INT64, [2], [2, 2]),
             helper.make_tensor("out_shape", TensorProto.INT64, [4], [1, 2, 5, 5])]
    nodes = [helper.make_node("Col2Im", ["cols", "image", "block"], ["img"], strides=[2, 1], pads=[1, 0, 0, 1],
                              dilations=[1, 2]),
             helper.make_node("MaxUnpool", ["v", "idx", "out_shape"], ["unpooled"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("SpaceToDepth", ["s"], ["s2d"], blocksize=2, mode="CRD"),
             helper.make_node("Einsum", ["e"], ["diag"], equation="...ii->...i"),
             helper.make_node("Mod", ["ma", "mb"], ["mod"], fmod=0)]
    m = _model(nodes, [_vi("cols", [1, 8, 12]), _vi("v", [1, 2, 2, 2]), _vi("idx", [1, 2, 2, 2], TensorProto.INT64),
                       _vi("s", [1, 3, 4, 6]), _vi("e", [2, 3, 3]), _vi("ma", [6]), _vi("mb", [6])],
               [_vi("img", None), _vi("unpooled", None), _vi("s2d", None), _vi("diag", None), _vi("mod", [6])],
               inits=inits)
    feeds = {"cols": rng.standard_normal((1, 8, 12)).astype(np.float32),
             "v": rng.standard_normal((1, 2, 2, 2)).astype(np.float32),
             "idx": np.array([0, 3, 9, 14, 16, 21, 27, 30], np.int64).reshape(1, 2, 2, 2),
             "s": rng.standard_normal((1, 3, 4, 6)).astype(np.float32),
             "e": rng.standard_normal((2, 3, 3)).astype(np.float32),
             "ma": np.array([-3.0, 3.0, -1.0, 1.0, 5.5, -7.25], np.float32),
             "mb": np.array([np.inf, np.inf, -np.inf, -np.inf, 2.0, 3.0], np.float32)}
    _check(m, [feeds])


@pytest.mark.parametrize("mode", ["edge", "reflect", "wrap"])
def test_pad_modes(mode):
    """Reflect and wrap by more than the axis once over (np.pad, the reference, takes no negative pads)."""
    m = _model([helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode=mode)], [_vi("x", [2, 3, 4])],
               [_vi("y", None)], inits=[helper.make_tensor("pads", TensorProto.INT64, [4], [2, 1, 5, 1]),
                                        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    _check(m, [{"x": rng.standard_normal((2, 3, 4)).astype(np.float32)}])


def test_det_lp_normalization_bool_reductions_and_reduce_prod():
    nodes = [helper.make_node("Det", ["m3"], ["d3"]), helper.make_node("Det", ["m4"], ["d4"]),
             helper.make_node("LpNormalization", ["v"], ["l2"], axis=0, p=2),
             helper.make_node("ReduceMax", ["flags", "ax"], ["any"], keepdims=0),
             helper.make_node("ReduceMin", ["flags", "ax"], ["all"], keepdims=1),
             helper.make_node("ReduceProd", ["v"], ["prod"], keepdims=1),
             helper.make_node("ReduceProd", ["v", "ax2"], ["prod2"], keepdims=0)]
    m = _model(nodes, [_vi("m3", [2, 3, 3]), _vi("m4", [4, 4]), _vi("v", [2, 2, 3]), _vi("flags", [3, 4],
                                                                                            TensorProto.BOOL)],
               [_vi(o, None) for o in ("d3", "d4", "l2")] + [_vi(o, None, TensorProto.BOOL) for o in ("any", "all")]
               + [_vi(o, None) for o in ("prod", "prod2")],
               inits=[helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
                      helper.make_tensor("ax2", TensorProto.INT64, [2], [0, 2])])
    v = rng.standard_normal((2, 2, 3)).astype(np.float32)
    v[:, 1, 2] = 0.0  # a zero norm along axis 0
    flags = np.array([[True, False, True, True], [False] * 4, [True] * 4])
    _check(m, [{"m3": rng.standard_normal((2, 3, 3)).astype(np.float32),
                "m4": rng.standard_normal((4, 4)).astype(np.float32), "v": v, "flags": flags}], rtol=1e-4)


def test_conv_integer_with_per_channel_weight_zero_points():
    m = _model([helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 0, 1, 2], strides=[1, 2])],
               [_vi("x", [1, 2, 5, 6], TensorProto.UINT8), _vi("w", [3, 2, 3, 3], TensorProto.UINT8),
                _vi("xz", [], TensorProto.UINT8), _vi("wz", [3], TensorProto.UINT8)],
               [_vi("y", None, TensorProto.INT32)])
    feeds = {"x": rng.integers(0, 256, (1, 2, 5, 6)).astype(np.uint8),
             "w": rng.integers(0, 256, (3, 2, 3, 3)).astype(np.uint8),
             "xz": np.array(128, np.uint8), "wz": np.array([3, 250, 128], np.uint8)}
    _check(m, [feeds], rtol=0, atol=0)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_transpose_same_padding(auto_pad):
    m = _model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[2, 2])],
               [_vi("x", [1, 2, 3, 4]), _vi("w", [2, 3, 4, 3])], [_vi("y", None)])
    _check(m, [{"x": rng.standard_normal((1, 2, 3, 4)).astype(np.float32),
                "w": rng.standard_normal((2, 3, 4, 3)).astype(np.float32)}], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("signed", [False, True])
def test_qlinear_conv_per_channel_with_bias(signed):
    """A QOperator-format convolution (what ONNX Runtime's quantizer writes): per-channel weight scales and zero
    points, an int32 bias, uint8 or int8 activations; bit-exact against the reference."""
    at, anp = (TensorProto.INT8, np.int8) if signed else (TensorProto.UINT8, np.uint8)
    lo, hi = (-128, 128) if signed else (0, 256)
    inits = [helper.make_tensor("xs", TensorProto.FLOAT, [], [0.02]),
             helper.make_tensor("xz", at, [], [3 if signed else 128]),
             helper.make_tensor("ws", TensorProto.FLOAT, [4], [0.01, 0.03, 0.005, 0.02]),
             helper.make_tensor("wz", TensorProto.INT8, [4], [0, 1, -2, 0]),
             helper.make_tensor("ys", TensorProto.FLOAT, [], [0.05]),
             helper.make_tensor("yz", at, [], [-5 if signed else 100]),
             helper.make_tensor("bias", TensorProto.INT32, [4], [100, -300, 0, 2500])]
    m = _model([helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"], ["y"],
                                 pads=[1, 1, 1, 1], strides=[2, 1])],
               [_vi("x", [1, 3, 7, 6], at), _vi("w", [4, 3, 3, 3], TensorProto.INT8)], [_vi("y", None, at)],
               inits=inits)
    feeds = {"x": rng.integers(lo, hi, (1, 3, 7, 6)).astype(anp),
             "w": rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)}
    _check(m, [feeds], rtol=0, atol=0)


def test_stacked_matmul_by_a_weight_is_one_2d_product():
    """[2, 5, 8] @ [8, 3] (a weight) becomes a [10, 8] @ [8, 3] product: no batched dot over a broadcast weight is
    left in the StableHLO, and the values are the reference's."""
    from byteir_core.mlir import new_context

    from byteir_frontend_onnx.importer import to_stablehlo

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3], rng.standard_normal(24).astype(np.float32).tolist())
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [2, 5, 8])], [_vi("y", [2, 5, 3])],
               inits=[w])
    text = str(to_stablehlo(m, {}, new_context()))
    assert "batching_dims" not in text and "tensor<10x8xf32>" in text
    _check(m, [{"x": rng.standard_normal((2, 5, 8)).astype(np.float32)}])
