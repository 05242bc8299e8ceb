"""Wrong inputs to a cuda session are InputErrors naming the argument, before the device takes them: its import
views and reshapes an array into the argument's type, so a CuPy/torch CUDA array of the wrong dtype or shape
was reinterpreted (int32 bits read as float32, [64] as [4, 16]) instead of refused. Run on the model of the CUDA
API (fake_cupy) and through Triton's interpreter."""

import numpy as np
import pytest
from cuda_check import compile_cuda, load_interpreted, programs_of
from test_runtime_fake_gpu import fake_gpu  # noqa: F401 (the fixture)

import byteir_core
import fake_cupy
from byteir_core.errors import InputError
from programs import MLP, mlp_numpy


def _expect(got):
    return r"input argument 0 \(input0\): expected f32 \[4, 16\], got " + got


def test_device_arrays_of_the_wrong_type_are_refused_not_reinterpreted(fake_gpu):  # noqa: F811
    art = byteir_core.compile(MLP, target="cuda")
    for p in programs_of(art):
        fake_cupy.register(p.kernels)
    session = byteir_core.load(art.to_bytes(), device="cuda")
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    for value, got in [(fake_gpu.asarray(x.view(np.int32)), r"int32 \[4, 16\]"),
                       (fake_gpu.asarray(x.reshape(64)), r"float32 \[64\]"),
                       (fake_gpu.asarray(x.astype(np.float64)), r"float64 \[4, 16\]"),
                       (fake_gpu.asarray(x.T.copy()), r"float32 \[16, 4\]")]:
        with pytest.raises(InputError, match=_expect(got)):
            session.run(value)
        req = session.new_request_context()
        with pytest.raises(InputError, match=_expect(got)):
            req.bind_arg(0, value)
    (y,) = session.run(fake_gpu.asarray(x))  # the right one still runs zero-copy
    np.testing.assert_allclose(np.asarray(y), mlp_numpy(x), rtol=1e-5, atol=1e-6)
    (y,) = session.run(x.astype(">f4"))  # a host array in the other byte order is converted, then uploaded
    np.testing.assert_allclose(np.asarray(y), mlp_numpy(x), rtol=1e-5, atol=1e-6)


def test_interpreted_cuda_session_checks_inputs_like_the_host():
    torch = pytest.importorskip("torch")
    session = load_interpreted(compile_cuda(MLP))
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    for value, got in [(torch.from_numpy(x).to(torch.int32), r"int32 \[4, 16\]"),
                       (torch.from_numpy(x).reshape(64), r"float32 \[64\]"), (None, "None"),
                       (3, r"a Python int of int64 \[\]")]:
        with pytest.raises(InputError, match=_expect(got)):
            session.run(value)
    want = mlp_numpy(x)
    for value in (torch.from_numpy(np.ascontiguousarray(x.T)).T, x.tolist(), np.ascontiguousarray(x.T).T):
        np.testing.assert_allclose(np.asarray(session.run(value)[0]), want, rtol=1e-5, atol=1e-6)
