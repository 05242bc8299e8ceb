"""ONNX models in through every door (path, bytes, ModelProto, the CLI), checked against ONNX Runtime."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_models import asymmetric_avgpool, cnn, old_opset_bn, ort_run, two_outputs, upsampler

import byteir_core

BYTEIR = [sys.executable, "-m", "byteir_core.cli"]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    onnx.save(cnn(batch=2), str(p))
    return p


def test_path_bytes_and_modelproto_compile_to_what_onnxruntime_computes(cnn_file):
    x = _x((2, 3, 8, 8))
    (want,) = ort_run(str(cnn_file), {"image": x})
    for model, kw in ((str(cnn_file), {}), (cnn_file, {}), (cnn_file.read_bytes(), {"frontend": "onnx"}),
                      (onnx.load(str(cnn_file)), {})):
        art = byteir_core.compile(model, target="cpu", progress=False, **kw)
        (got,) = byteir_core.load(art).run(x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_input_and_output_names_are_the_graphs(tmp_path):
    art = byteir_core.compile(two_outputs(), target="cpu", progress=False)
    s = byteir_core.load(art)
    assert [s.get_arg_name(i) for i in range(4)] == ["x", "y", "sum.out", "prod:out"]
    x, y = _x((2, 3), 1), _x((2, 3), 2)
    out = s(y=y, x=x)  # inputs by their ONNX names
    np.testing.assert_allclose(out[0], x + y, rtol=1e-6)
    np.testing.assert_allclose(out[1], x * y, rtol=1e-6)
    model = tmp_path / "two.onnx"
    onnx.save(two_outputs(), str(model))
    out_file = tmp_path / "two.byre"
    subprocess.run(BYTEIR + ["compile", str(model), "-o", str(out_file)], check=True, capture_output=True)
    shown = subprocess.run(BYTEIR + ["inspect", str(out_file)], check=True, capture_output=True, text=True).stdout
    for name in ("sum.out", "prod:out"):
        assert name in shown


def test_old_opsets_are_converted_first_and_match_onnxruntime():
    m = old_opset_bn()
    assert m.opset_import[0].version == 7
    x = _x((1, 3, 4, 4), 3)
    (want,) = ort_run(m, {"x": x})
    (got,) = byteir_core.load(byteir_core.compile(m, target="cpu", progress=False)).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_asymmetric_pool_padding_is_rewritten_exactly():
    """torch-mlir pads both sides by the begin pads; byteir splits the pads off first (Inception v1's pool5)."""
    m = asymmetric_avgpool()
    x = _x((1, 4, 6, 6), 4)
    (want,) = ort_run(m, {"x": x})
    (got,) = byteir_core.load(byteir_core.compile(m, target="cpu", progress=False)).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.reshape(4), x.mean(axis=(2, 3)).reshape(4), rtol=1e-5)


def test_external_data_beside_the_model_is_read(tmp_path):
    m = cnn(batch=1)
    path = tmp_path / "big.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="big.weights",
              size_threshold=0)
    assert (tmp_path / "big.weights").stat().st_size > 1000
    assert path.stat().st_size < 1000  # the weights are not in the protobuf
    x = _x((1, 3, 8, 8), 5)
    (want,) = ort_run(str(path), {"image": x})
    (got,) = byteir_core.load(byteir_core.compile(path, target="cpu", progress=False)).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_symbolic_dims_are_pinned_by_input_name(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(cnn(batch="batch"), str(path))
    x = _x((3, 3, 8, 8), 6)
    (want,) = ort_run(str(path), {"image": x})
    art = byteir_core.compile(path, target="cpu", progress=False, input_shapes={"image": [3, 3, 8, 8]})
    (got,) = byteir_core.load(art).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    out = tmp_path / "dyn.byre"
    r = subprocess.run(BYTEIR + ["compile", str(path), "-o", str(out), "--input-shape", "image=3x3x8x8"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (got,) = byteir_core.load(out).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    r = subprocess.run(BYTEIR + ["compile", str(path), "-o", str(tmp_path / "x.byre"), "--input-shape",
                                 "pixels=3x3x8x8"], capture_output=True, text=True)
    assert r.returncode == 1 and "'pixels'" in r.stderr and "image" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.byre").exists()


def test_a_symbolic_dim_left_dynamic_on_cpu_names_the_input_and_the_fix(tmp_path):
    """The CPU backend needs static shapes: the error names the dynamic argument and how to pin it."""
    with pytest.raises(byteir_core.ByteirError) as e:
        byteir_core.compile(cnn(batch="batch"), target="cpu", progress=False)
    assert "--input-shape" in str(e.value)


def test_every_installed_target_compiles_the_same_model():
    from byteir_core.plugins import get_registry

    targets = sorted(set(get_registry().backends) & {"cpu", "cuda", "asic_stub"}) + ["reference"]
    m = cnn(batch=2)
    x = _x((2, 3, 8, 8), 7)
    (want,) = ort_run(m, {"image": x})
    for target in targets:
        art = byteir_core.compile(m, target=target, progress=False)
        assert art.module.steps, target
        if target in ("cpu", "reference", "asic_stub"):
            (got,) = byteir_core.load(art).run(x)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=target)


def test_ceil_mode_maxpool_and_floored_mod_match_onnxruntime():
    """Two lowerings torch-mlir gets wrong without an error, rewritten before import (rewrites.py)."""
    from onnx import TensorProto, helper
    from onnx_models import _model

    pool = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    g = helper.make_graph([pool], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])])
    x = _x((1, 2, 6, 7), 8)
    (want,) = ort_run(_model(g, 17), {"x": x})
    (got,) = byteir_core.load(byteir_core.compile(_model(g, 17), target="cpu", progress=False)).run(x)
    np.testing.assert_array_equal(got, want)
    mod = helper.make_node("Mod", ["a", "b"], ["r"], name="mod")
    for t, dt in ((TensorProto.INT32, np.int32), (TensorProto.FLOAT, np.float32)):
        g = helper.make_graph([mod], "g", [helper.make_tensor_value_info(n, t, [6]) for n in "ab"],
                              [helper.make_tensor_value_info("r", t, [6])])
        a = np.array([-4, 7, 5, 4, -7, 8], dt)
        b = np.array([2, -3, 8, -2, 3, 5], dt)
        (got,) = byteir_core.load(byteir_core.compile(_model(g, 17), target="cpu", progress=False)).run(a, b)
        np.testing.assert_array_equal(got, np.mod(a, b))  # the divisor's sign, like Python's %


@pytest.mark.parametrize("mode,ctm,how", [
    ("nearest", "asymmetric", {"scales": [1, 1, 2, 2]}),  # YOLO's neck: Upsample x2
    ("linear", "half_pixel", {"scales": [1, 1, 2, 2]}),
    ("linear", "align_corners", {"sizes": [1, 4, 10, 12]}),
    ("cubic", "pytorch_half_pixel", {"sizes": [1, 4, 10, 12]}),
])
def test_resize_in_an_upsampling_path_matches_onnxruntime(mode, ctm, how):
    """torch-mlir lowers no ONNX Resize; byteir rewrites it (rewrites.py / resize.py) into Gather or MatMul per
    axis with weights from ONNX's reference kernel."""
    m = upsampler(mode, ctm, **how)
    x = _x((1, 4, 5, 6), 11)
    (want,) = ort_run(m, {"x": x})
    art = byteir_core.compile(m, target="cpu", progress=False)
    (got,) = byteir_core.load(art).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _recurrent(kind: str, direction: str, layout: int = 0, lens=None, **attrs):
    """A ``kind`` layer (seq 5, batch 3, input 4, hidden 6) with biases, initial state, and for LSTM peepholes,
    followed by a Tanh on Y so every output is used."""
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(21)
    g = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    dirs = 2 if direction == "bidirectional" else 1
    seq, batch, inp, hid = 5, 3, 4, 6
    inits = {"W": r.standard_normal((dirs, g * hid, inp)) * 0.5, "R": r.standard_normal((dirs, g * hid, hid)) * 0.5,
             "B": r.standard_normal((dirs, 2 * g * hid)) * 0.2}
    state = (batch, dirs, hid) if layout else (dirs, batch, hid)
    inits["h0"] = r.standard_normal(state) * 0.3
    names = ["x", "W", "R", "B", "lens" if lens is not None else "", "h0"]
    if kind == "LSTM":
        inits["c0"] = r.standard_normal(state) * 0.3
        inits["P"] = r.standard_normal((dirs, 3 * hid)) * 0.3
        names += ["c0", "P"]
    tensors = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    if lens is not None:
        tensors.append(numpy_helper.from_array(np.array(lens, np.int32), "lens"))
    outs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    node = helper.make_node(kind, names, outs, name="rnn", hidden_size=hid, direction=direction, layout=layout,
                            **attrs)
    xshape = [batch, seq, inp] if layout else [seq, batch, inp]
    yshape = [batch, seq, dirs, hid] if layout else [seq, dirs, batch, hid]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node, helper.make_node("Tanh", ["Y"], ["y"], name="tanh")], "rnn", [vi("x", TensorProto.FLOAT, xshape)],
        [vi("y", TensorProto.FLOAT, yshape), vi("Y_h", TensorProto.FLOAT, list(state))]
        + ([vi("Y_c", TensorProto.FLOAT, list(state))] if kind == "LSTM" else []), initializer=tensors)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m, xshape


@pytest.mark.parametrize("kind,direction,layout,lens,attrs", [
    ("LSTM", "bidirectional", 0, None, {}),
    ("LSTM", "forward", 1, None, {}),
    ("LSTM", "reverse", 0, None, {"clip": 0.5}),  # clip binds: gate inputs reach about 2
    ("LSTM", "forward", 0, [5, 2, 4], {}),  # shorter sequences: state stops, Y zero past the end
    ("GRU", "reverse", 0, None, {"linear_before_reset": 1}),
    ("GRU", "bidirectional", 1, None, {}),
    ("RNN", "bidirectional", 0, None, {"activations": ["Relu", "Tanh"]}),
])
def test_recurrent_layers_are_unrolled_and_match_onnxruntime(kind, direction, layout, lens, attrs):
    """torch-mlir's RNN/GRU/LSTM loop does not reach StableHLO; byteir unrolls them (rnn.py). Checked against ONNX
    Runtime, or for ``layout=1`` (which ONNX Runtime refuses) against onnx's reference implementation."""
    m, xshape = _recurrent(kind, direction, layout, lens, **attrs)
    x = _x(xshape, 22)
    if layout:
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(m).run(None, {"x": x})
    else:
        want = ort_run(m, {"x": x})
    art = byteir_core.compile(m, target="cpu", progress=False)
    got = byteir_core.load(art).run(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_same_padded_pools_hardmax_and_an_unbounded_clip_match_onnxruntime():
    """Rewrites before import (rewrites.py): pools with auto_pad SAME_UPPER/SAME_LOWER (TensorFlow exports) get
    explicit pads, Hardmax becomes ArgMax == position, Clip without bounds an Identity."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], name="avg", kernel_shape=[3, 2], strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("MaxPool", ["x"], ["m"], name="max", kernel_shape=[2, 3], strides=[1, 2],
                         auto_pad="SAME_LOWER"),
        helper.make_node("Clip", ["m"], ["c"], name="clip"),
        helper.make_node("Hardmax", ["c"], ["h"], name="hardmax", axis=-1),
    ]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "pools", [vi("x", TensorProto.FLOAT, [1, 2, 7, 9])],
                          [vi("a", TensorProto.FLOAT, [1, 2, 4, 5]), vi("h", TensorProto.FLOAT, [1, 2, 7, 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    x = _x((1, 2, 7, 9), 31)
    want = ort_run(m, {"x": x})
    art = byteir_core.compile(m, target="cpu", progress=False)
    got = byteir_core.load(art).run(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[1], want[1])
    assert want[1].sum() == 2 * 7  # one 1 per row


def test_onehot_with_runtime_values_and_cumprod_are_rewritten_correctly():
    """OneHot (negative and out-of-range indices, on/off values given at run time; against ONNX Runtime) and
    CumProd (opset 26, exclusive and reverse; against NumPy) are rewritten before import (rewrites.py)."""
    from onnx import TensorProto, helper, numpy_helper

    vi = helper.make_tensor_value_info

    def model(node, inputs, outputs, inits, opset):
        m = helper.make_model(helper.make_graph([node], "m", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8 if opset < 21 else 10
        return m

    onehot = model(helper.make_node("OneHot", ["idx", "depth", "values"], ["oh"], name="onehot", axis=0),
                   [vi("idx", TensorProto.INT64, [2, 3]), vi("values", TensorProto.FLOAT, [2])],
                   [vi("oh", TensorProto.FLOAT, [6, 2, 3])],
                   [numpy_helper.from_array(np.array(6, np.int64), "depth")], 17)
    feeds = {"idx": np.array([[0, 5, -1], [-6, 7, 2]], np.int64), "values": np.array([-2.0, 3.0], np.float32)}
    (want,) = ort_run(onehot, feeds)
    got = byteir_core.load(byteir_core.compile(onehot, target="cpu", progress=False))(**feeds)
    np.testing.assert_array_equal(got, want)
    assert (want == 3.0).sum() == 5  # index 7 is out of range: a row of off values

    cumprod = model(helper.make_node("CumProd", ["x", "axis"], ["cp"], name="cumprod", exclusive=1, reverse=1),
                    [vi("x", TensorProto.FLOAT, [2, 5])], [vi("cp", TensorProto.FLOAT, [2, 5])],
                    [numpy_helper.from_array(np.array(1, np.int64), "axis")], 26)
    x = _x((2, 5), 41)
    want = np.concatenate([np.cumprod(x[:, ::-1], axis=1)[:, ::-1][:, 1:], np.ones((2, 1), np.float32)], axis=1)
    got = byteir_core.load(byteir_core.compile(cumprod, target="cpu", progress=False))(x=x)
    np.testing.assert_allclose(got, want, rtol=1e-6)
