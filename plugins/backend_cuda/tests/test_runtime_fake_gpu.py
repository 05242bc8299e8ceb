"""The GPU provider's own logic on a model of the CUDA API (fake_cupy: host memory, kernels through Triton's
interpreter, cuBLAS by its column-major definition): artifacts compiled for sm_90 load their cubins, launch with
the recorded block size, run GEMMs with the right transposes and leading dimensions, stage misaligned arrays,
and capture and replay CUDA graphs on a caller's stream."""

import numpy as np
import pytest

import byteir_core
import fake_cupy
from byteir_core.errors import ProviderError
from cuda_check import assert_close, programs_of, random, ty


@pytest.fixture
def fake_gpu(monkeypatch):
    from byteir_backend_cuda import gpu

    cp = fake_cupy.install(monkeypatch)
    gpu.local_arch.cache_clear()
    monkeypatch.delenv("BYTEIR_CUDA_INTERPRET", raising=False)
    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "sm_90")
    yield cp
    gpu.local_arch.cache_clear()


def _load(text_or_art, **kw):
    art = text_or_art if hasattr(text_or_art, "module") else byteir_core.compile(text_or_art, target="cuda", **kw)
    for p in programs_of(art):
        fake_cupy.register(p.kernels)
    return art, byteir_core.load(art.to_bytes(), device="cuda")


def _reference(text, inputs):
    return byteir_core.load(byteir_core.compile(text, target="reference").to_bytes()).run(*inputs)


def test_mlp_example_on_the_gpu_provider(fake_gpu):
    from programs import MLP, mlp_numpy

    art, session = _load(MLP)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    (y,) = session.run(x)
    assert isinstance(y, np.ndarray)  # NumPy in, NumPy out: copied to and from the device
    np.testing.assert_allclose(y, mlp_numpy(x), rtol=1e-5, atol=1e-6)
    assert len(fake_cupy.GEMMS) == 2 and fake_cupy.LAUNCHES


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("lhs_shape,rhs_shape,dims,out_shape", [
    ((5, 3), (3, 4), "contracting_dims = [1] x [0]", (5, 4)),                       # [M,K] @ [K,N]
    ((3, 5), (3, 4), "contracting_dims = [0] x [0]", (5, 4)),                       # lhs stored [K,M]
    ((5, 3), (4, 3), "contracting_dims = [1] x [1]", (5, 4)),                       # rhs stored [N,K]
    ((2, 3, 5), (2, 4, 3), "batching_dims = [0] x [0], contracting_dims = [1] x [2]", (2, 5, 4)),
    ((3, 2, 5), (2, 3, 4), "batching_dims = [1] x [0], contracting_dims = [0] x [1]", (2, 5, 4)),  # copied
])
def test_gemm_layouts_reach_cublas_with_the_right_transposes(fake_gpu, dtype, lhs_shape, rhs_shape, dims,
                                                              out_shape):
    a, b, o = ty(lhs_shape, dtype), ty(rhs_shape, dtype), ty(out_shape, dtype)
    text = f"""func.func @main(%a: {a}, %b: {b}) -> {o} {{
  %d = stablehlo.dot_general %a, %b, {dims} : ({a}, {b}) -> {o}
  return %d : {o}
}}"""
    inputs = [random(lhs_shape, dtype), random(rhs_shape, dtype)]
    _, session = _load(text, pass_groups=["legalize", "canonicalize"])
    (got,) = session.run(*inputs)
    (want,) = _reference(text, inputs)
    assert_close(got, want, accumulate=True)
    assert len(fake_cupy.GEMMS) == 1


def test_each_stream_captures_once_then_replays(fake_gpu, monkeypatch):
    """On a caller's stream (or the default one, captured on a stream of the program's own): the first call
    launches eagerly, the second is captured into a CUDA graph and launched, later ones replay it (the host
    issues no launch); BYTEIR_CUDA_GRAPHS=0 launches every time."""
    text = f"""func.func @main(%x: {ty((64,), "f32")}) -> {ty((64,), "f32")} {{
  %e = stablehlo.exponential %x : {ty((64,), "f32")}
  %t = stablehlo.tanh %e : {ty((64,), "f32")}
  return %t : {ty((64,), "f32")}
}}"""
    x = random((64,), "f32")
    (want,) = _reference(text, [x])
    kept = fake_gpu.empty((64,), np.float32)
    for graphs, issued, out, own_stream in (("1", [1, 1, 0, 0], None, True), ("1", [1, 1, 0, 0], kept, True),
                                            ("1", [1, 1, 0, 0], None, False), ("0", [1, 1, 1, 1], None, True)):
        monkeypatch.setenv("BYTEIR_CUDA_GRAPHS", graphs)
        _, session = _load(text)
        stream = fake_gpu.cuda.Stream() if own_stream else None  # None: the default stream
        xd = fake_gpu.asarray(x)
        for expected in issued:
            before, ran = len(fake_cupy.ISSUED), len(fake_cupy.LAUNCHES)
            req = session.new_request_context(stream=stream)
            req.bind_arg(session.get_input_arg_offsets()[0], xd)
            if out is not None:  # the caller keeps its output buffer: the graph is captured over it
                req.bind_arg(session.get_output_arg_offsets()[0], out)
            req.finish_io_binding()
            req.run()
            req.sync()
            assert_close(np.array(req.get_arg(session.get_output_arg_offsets()[0])), want)
            req.release()
            assert (len(fake_cupy.ISSUED) - before, len(fake_cupy.LAUNCHES) - ran) == (expected, 1)


def test_misaligned_caller_arrays_are_staged(fake_gpu):
    text = f"""func.func @main(%x: {ty((8,), "f32")}) -> {ty((8,), "f32")} {{
  %n = stablehlo.negate %x : {ty((8,), "f32")}
  return %n : {ty((8,), "f32")}
}}"""
    _, session = _load(text)
    raw = fake_gpu.empty((9,), np.float32)
    x = raw[1:]  # 4 bytes past an aligned allocation
    assert x.data.ptr % 16
    x[...] = np.arange(8, dtype=np.float32)
    req = session.new_request_context()
    req.bind_arg(session.get_input_arg_offsets()[0], x)
    out_raw = fake_gpu.empty((9,), np.float32)
    req.bind_arg(session.get_output_arg_offsets()[0], out_raw[1:])
    req.finish_io_binding()
    req.run()
    req.sync()
    np.testing.assert_array_equal(np.asarray(out_raw[1:]), -np.arange(8, dtype=np.float32))


def test_without_cupy_or_a_driver_loading_says_so_in_one_line(monkeypatch):
    from byteir_backend_cuda import gpu

    monkeypatch.delenv("BYTEIR_CUDA_INTERPRET", raising=False)
    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "sm_80")
    gpu.local_arch.cache_clear()
    art = byteir_core.compile(f"""func.func @main(%x: {ty((4,), "f32")}) -> {ty((4,), "f32")} {{
  %n = stablehlo.negate %x : {ty((4,), "f32")}
  return %n : {ty((4,), "f32")}
}}""", target="cuda")
    why = gpu.gpu_problem()
    assert why is not None  # no development machine has a GPU
    with pytest.raises(ProviderError) as e:
        byteir_core.load(art.to_bytes())
    msg = str(e.value)
    assert "\n" not in msg and why in msg and "BYTEIR_CUDA_INTERPRET=1" in msg
