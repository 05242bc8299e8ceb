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
