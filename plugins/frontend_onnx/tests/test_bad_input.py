"""Bad ONNX input: one error naming the file and the node (name, op_type, index) and the reason; nothing written,
no traceback from the CLI, and the process survives (torch-mlir's crashes are caught in a worker process)."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import _model, cnn

import byteir_core
from byteir_core.errors import FrontendError
from byteir_frontend_onnx.importer import OnnxUnsupportedError

BYTEIR = [sys.executable, "-m", "byteir_core.cli"]


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _cli_refuses(tmp_path, model_path, *needles):
    out = tmp_path / "out.byre"
    r = subprocess.run(BYTEIR + ["compile", str(model_path), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)
    assert not out.exists() and not list(tmp_path.glob("out.byre*"))
    return r.stderr


def _refuses(model, *needles, kind=FrontendError, **kw):
    with pytest.raises(kind) as e:
        byteir_core.compile(model, target="cpu", progress=False, **kw)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    return e.value


def test_truncated_and_malformed_protobufs_name_the_file(tmp_path):
    good = cnn(batch=1).SerializeToString()
    for name, data in (("truncated.onnx", good[: len(good) // 2]), ("garbage.onnx", b"\x08\x07\xff\xff\xff" * 40),
                       ("empty.onnx", b"")):
        p = tmp_path / name
        p.write_bytes(data)
        _refuses(str(p), name)
        _cli_refuses(tmp_path, p, name)


def test_an_opset_newer_than_onnx_knows_is_refused_by_number(tmp_path):
    m = cnn(batch=1)
    m.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    p = tmp_path / "future.onnx"
    p.write_bytes(m.SerializeToString())
    _cli_refuses(tmp_path, p, "future.onnx", f"opset {onnx.defs.onnx_opset_version() + 5}", "newer")


def test_unknown_domains_and_ops_are_listed_all_at_once_before_lowering():
    nodes = [helper.make_node("FancyNorm", ["x"], ["a"], name="norm1", domain="com.vendor"),
             helper.make_node("FancyNorm", ["a"], ["b"], name="norm2", domain="com.vendor"),
             helper.make_node("Relu", ["b"], ["c"], name="relu"),
             helper.make_node("Frobnicate", ["c"], ["y"], name="frob")]
    g = helper.make_graph(nodes, "g", [_vi("x", [2, 3])], [_vi("y", [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.vendor", 1)])
    err = _refuses(m, "FancyNorm", "com.vendor", "x2", "norm1", "norm2", "Frobnicate", "frob", "2 kind(s)",
                   kind=OnnxUnsupportedError)
    assert {(o.op_type, o.count) for o in err.ops} == {("FancyNorm", 2), ("Frobnicate", 1)}


def test_ops_the_lowering_cannot_take_are_all_listed_with_their_nodes():
    """Two different kinds of node torch-mlir cannot lower (one of them crashes it), in one error."""
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool_u8", kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
             helper.make_node("Identity", ["p"], ["r"], name="same"),
             helper.make_node("StringNormalizer", ["s"], ["t"], name="strnorm", case_change_action="LOWER")]
    g = helper.make_graph(nodes, "g", [_vi("x", [1, 1, 5, 5], TensorProto.UINT8), _vi("s", [2], TensorProto.STRING)],
                          [_vi("r", [1, 1, 5, 5], TensorProto.UINT8), _vi("t", [2], TensorProto.STRING)])
    err = _refuses(_model(g, 17), "pool_u8", "MaxPool", "strnorm", "StringNormalizer",
                   kind=OnnxUnsupportedError)
    assert {o.op_type for o in err.ops} == {"MaxPool", "StringNormalizer"}
    # the process is alive and compiles the next model
    art = byteir_core.compile(cnn(batch=1), target="cpu", progress=False)
    assert byteir_core.load(art).run(np.zeros((1, 3, 8, 8), np.float32))[0].shape == (1, 5)


def test_a_missing_initializer_names_the_node_and_input_index(tmp_path):
    m = cnn(batch=1)
    del m.graph.initializer[1]  # conv.bias
    p = tmp_path / "missing.onnx"
    onnx.save(m, str(p))
    _cli_refuses(tmp_path, p, "missing.onnx", "'conv.bias'", "input 2", "'conv' (Conv, node #0)")


def test_a_cycle_is_named_node_by_node(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Neg", ["a"], ["y"], name="out")]
    g = helper.make_graph(nodes, "g", [_vi("x", [2])], [_vi("y", [2])])
    p = tmp_path / "cycle.onnx"
    onnx.save(_model(g, 17), str(p))
    _cli_refuses(tmp_path, p, "cycle.onnx", "cycle", "'first' (Add, node #0)", "'second' (Relu, node #1)")


def test_unsorted_but_acyclic_graphs_are_sorted_and_compile():
    nodes = [helper.make_node("Neg", ["a"], ["y"], name="late"), helper.make_node("Relu", ["x"], ["a"], name="early")]
    g = helper.make_graph(nodes, "g", [_vi("x", [3])], [_vi("y", [3])])
    art = byteir_core.compile(_model(g, 17), target="cpu", progress=False)
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    np.testing.assert_allclose(byteir_core.load(art).run(x)[0], -np.maximum(x, 0))


def test_inconsistent_shapes_name_the_node(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    w = numpy_helper.from_array(np.ones((5, 4), np.float32), "w")
    g = helper.make_graph(nodes, "g", [_vi("x", [2, 3])], [_vi("y", [2, 4])], initializer=[w])
    p = tmp_path / "shapes.onnx"
    onnx.save(_model(g, 17), str(p))
    _cli_refuses(tmp_path, p, "shapes.onnx", "inconsistent shapes", "'proj' (MatMul, node #0)")


def test_a_node_in_a_domain_the_model_does_not_import_is_named():
    nodes = [helper.make_node("Thing", ["x"], ["y"], name="t0", domain="com.elsewhere")]
    g = helper.make_graph(nodes, "g", [_vi("x", [2])], [_vi("y", [2])])
    _refuses(_model(g, 17), "'t0' (Thing, node #0)", "com.elsewhere", "does not import")


def test_missing_external_data_names_the_file(tmp_path):
    p = tmp_path / "ext.onnx"
    onnx.save(cnn(batch=1), str(p), save_as_external_data=True, location="ext.weights", size_threshold=0)
    (tmp_path / "ext.weights").unlink()
    _cli_refuses(tmp_path, p, "ext.onnx", "ext.weights", "beside the model")


def test_wrong_input_shape_names_are_refused_with_the_inputs_listed():
    _refuses(cnn(batch="n"), "'pixels'", "image", input_shapes={"pixels": [1, 3, 8, 8]})
    _refuses(cnn(batch="n"), "dimension 1", input_shapes={"image": [1, 4, 8, 8]})
