"""byteir as an onnx.backend: the interface ONNX's conformance machinery drives."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.backend.base import Backend
from onnx_models import cnn, ort_run, two_outputs

import byteir_frontend_onnx.backend as backend


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_it_is_an_onnx_backend_and_prepare_run_returns_the_outputs():
    assert issubclass(backend.ByteirBackend, Backend)
    m = cnn(batch=2)
    x = _x((2, 3, 8, 8))
    (want,) = ort_run(m, {"image": x})
    rep = backend.prepare(m, device="CPU")
    out = rep.run([x])
    np.testing.assert_allclose(out[0], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.probs, want, rtol=1e-4, atol=1e-5)  # by output name too
    np.testing.assert_allclose(rep.run({"image": x})[0], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(backend.run_model(m, [x])[0], want, rtol=1e-4, atol=1e-5)


def test_output_names_that_are_not_identifiers_still_come_back_in_order():
    x, y = _x((2, 3), 1), _x((2, 3), 2)
    out = backend.prepare(two_outputs()).run([x, y])
    np.testing.assert_allclose(out[0], x + y, rtol=1e-6)
    np.testing.assert_allclose(out[1], x * y, rtol=1e-6)


def test_run_node_types_outputs_by_shape_inference():
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, transB=1)
    a, b, c = _x((3, 4), 3), _x((5, 4), 4), _x((5,), 5)
    (y,) = backend.run_node(node, [a, b, c])
    np.testing.assert_allclose(y, 0.5 * a @ b.T + c, rtol=1e-5, atol=1e-6)


def test_symbolic_inputs_compile_once_per_shape():
    rep = backend.prepare(cnn(batch="n"))
    for n in (1, 3, 1):
        x = _x((n, 3, 8, 8), n)
        (want,) = ort_run(cnn(batch="n"), {"image": x})
        np.testing.assert_allclose(rep.run([x])[0], want, rtol=1e-4, atol=1e-5)
    assert len(rep._sessions) == 2


def test_devices():
    assert backend.supports_device("CPU")
    with pytest.raises(ValueError, match="CPU"):
        backend.prepare(cnn(batch=1), device="TPU")
    assert not backend.supports_device("TPU")


def test_wrong_inputs_are_named():
    rep = backend.prepare(two_outputs())
    with pytest.raises(ValueError, match="x, y"):
        rep.run([np.zeros((2, 3), np.float32)])
    with pytest.raises(ValueError, match="missing input"):
        rep.run({"x": np.zeros((2, 3), np.float32)})
