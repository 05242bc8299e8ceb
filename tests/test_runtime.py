"""Runtime Session: the ByteIR-style low-level API, input checking, torch/DLPack inputs, concurrency."""

import ctypes
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from programs import MLP, func, mlp_numpy

import byteir_core
from byteir_core.byre import read_artifact
from byteir_core.errors import InputError, ProviderError


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("rt") / "mlp.byre"
    byteir_core.compile(MLP, target="reference", output=p)
    return p


def test_low_level_api(mlp_path):
    s = byteir_core.Session()
    s.load(str(mlp_path))
    ins, outs = s.get_input_arg_offsets(), s.get_output_arg_offsets()
    assert ins == [0] and outs == [1] and s.get_weight_arg_offsets() == [2]
    assert s.get_static_shape(0) == [4, 16] and s.get_data_type(0) == "f32"
    assert s.get_static_shape(1) == [4, 8]
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    out = np.zeros((4, 8), np.float32)
    req = s.new_request_context(None)
    req.bind_arg(0, x)
    req.bind_arg(1, out)  # caller-owned output buffer is written in place
    req.finish_io_binding()
    req.run()
    req.sync()
    assert req.get_arg(1) is out
    np.testing.assert_allclose(out, mlp_numpy(x), rtol=1e-5, atol=1e-6)


def test_bind_by_pointer(mlp_path):
    s = byteir_core.load(mlp_path)
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    out = np.zeros((4, 8), np.float32)
    req = s.new_request_context()
    req.bind_arg(0, x.ctypes.data)
    req.bind_arg(1, out.ctypes.data_as(ctypes.c_void_p).value)
    req.finish_io_binding()
    req.run()
    np.testing.assert_allclose(out, mlp_numpy(x), rtol=1e-5, atol=1e-6)


def test_input_errors_name_argument(mlp_path):
    s = byteir_core.load(mlp_path)
    with pytest.raises(InputError, match=r"argument 0 \(input0\): expected f32 \[4, 16\], got float32 \[4, 15\]"):
        s(np.zeros((4, 15), np.float32))
    with pytest.raises(InputError, match=r"expected f32 \[4, 16\], got float64"):
        s(np.zeros((4, 16)))
    with pytest.raises(InputError, match="expected 1 inputs"):
        s(np.zeros((4, 16), np.float32), np.zeros(1))
    req = s.new_request_context()
    with pytest.raises(InputError, match="not bound: 0"):
        req.finish_io_binding()
    with pytest.raises(InputError, match="is a weight"):
        req.bind_arg(2, np.zeros(1))


def test_non_contiguous_and_torch_inputs(mlp_path):
    torch = pytest.importorskip("torch")
    s = byteir_core.load(mlp_path)
    base = np.random.default_rng(3).standard_normal((16, 4)).astype(np.float32)
    np.testing.assert_allclose(s(base.T), mlp_numpy(base.T), rtol=1e-5, atol=1e-6)  # a strided view
    t = torch.from_numpy(base.T.copy())
    out = s(t)
    assert isinstance(out, torch.Tensor)  # torch in, torch out
    np.testing.assert_allclose(out.numpy(), mlp_numpy(base.T), rtol=1e-5, atol=1e-6)


def test_torch_bf16_round_trip():
    torch = pytest.importorskip("torch")
    text = func("%a: tensor<4xbf16>", "tensor<4xbf16>",
                "  %r = stablehlo.multiply %a, %a : tensor<4xbf16>\n  return %r : tensor<4xbf16>")
    s = byteir_core.load(byteir_core.compile(text).to_bytes())
    a = torch.tensor([1.5, -2.0, 3.0, 0.25], dtype=torch.bfloat16)
    out = s(a)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, a * a)


def test_concurrent_requests_on_one_session(mlp_path):
    s = byteir_core.load(mlp_path)
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((4, 16)).astype(np.float32) for _ in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(lambda x: s(x), xs))
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y, mlp_numpy(x), rtol=1e-5, atol=1e-6)


def test_missing_provider_is_a_load_error(mlp_path, tmp_path):
    text = read_artifact(mlp_path).text(elide_payloads=False)
    text = text.replace('callee = "reference.stablehlo"', 'callee = "vendorx.run"') \
               .replace('byre.backend = "reference"', 'byre.backend = "vendorx"')
    p = tmp_path / "v.byre.mlir"
    p.write_text(text)
    with pytest.raises(ProviderError, match=r"callee 'vendorx.run' \(compiled by backend 'vendorx'\): no installed "
                                            r"provider; install the plugin that provides backend 'vendorx'"):
        byteir_core.load(p)
    # when the manifest knows the distribution, the message names it
    p.write_text(text.replace('backends = {reference = "byteir-core', 'backends = {vendorx = "byteir-backend-vendorx'))
    with pytest.raises(ProviderError, match=r"install byteir-backend-vendorx \(the artifact was compiled with "
                                            r"byteir-backend-vendorx"):
        byteir_core.load(p)


def test_unknown_device(mlp_path):
    with pytest.raises(ProviderError, match="device 'tpu'"):
        byteir_core.load(mlp_path, device="tpu")


def test_interpreter_and_copy_into_refuse_silent_partial_writes():
    from byteir_core.dtypes import copy_into
    from byteir_core.interpreter import Interpreter
    from byteir_core.mlir import stablehlo_api

    text = func("%x: tensor<3xf32>", "tensor<3xf32>", "  %y = stablehlo.add %x, %x : tensor<3xf32>\n"
                "  return %y : tensor<3xf32>")
    run = Interpreter().load(stablehlo_api.serialize_portable_artifact_str(text, "1.0.0"), "k")
    x = np.ones(3, np.float32)
    with pytest.raises(ProviderError, match="returned 1 results for 2 output buffers"):
        run([x], [np.empty(3, np.float32), np.empty(3, np.float32)])
    out = np.empty(3, np.float32)
    run([x], [out])
    np.testing.assert_array_equal(out, 2 * x)
    with pytest.raises(ValueError, match="C-contiguous"):
        copy_into(np.empty((3, 4), np.float32).T, np.ones((4, 3), np.float32))


def test_profile_times_every_step_and_names_what_ran(mlp_path):
    s = byteir_core.load(mlp_path)
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    rows = s.profile(x, repeat=3, warmup=1)
    assert [r["step"] for r in rows] == list(range(len(s.module.steps)))
    computes = [r for r in rows if r["op"] == "compute"]
    assert computes and all(r["median_us"] > 0 for r in rows)
    assert all(r["backend"] == "reference" and r["ops"] for r in computes)
    assert {o for r in computes for o in r["ops"]} >= {"stablehlo.dot_general"}
    assert [4, 16] in rows[0]["shapes"]
    np.testing.assert_allclose(s.run(x)[0], mlp_numpy(x), rtol=1e-5, atol=1e-6)  # profiling left it usable
    with pytest.raises(InputError, match="expected 1 inputs"):
        s.profile()
    with pytest.raises(InputError, match="repeat must be >= 1"):
        s.profile(x, repeat=0)


def test_device_cpu_and_the_default_run_a_host_artifact_the_same(mlp_path):
    x = np.random.default_rng(6).standard_normal((4, 16)).astype(np.float32)
    as_compiled = byteir_core.load(mlp_path)
    assert as_compiled.device is None
    np.testing.assert_array_equal(byteir_core.load(mlp_path, device="cpu")(x), as_compiled(x))
    np.testing.assert_allclose(as_compiled(x), mlp_numpy(x), rtol=1e-5, atol=1e-6)


def test_host_memory_views_copies_and_imports():
    from byteir_core.dtypes import TensorSpec
    from byteir_core.interfaces import HostMemory

    mem = HostMemory()
    arena = mem.allocate(256)
    a = mem.view(arena, 64, TensorSpec((2, 3), "f32"))
    inner = mem.view(a, 12, TensorSpec((3,), "f32"))  # a view of a view: the second row
    mem.from_host(np.arange(6, dtype=np.float32).reshape(2, 3), a)
    np.testing.assert_array_equal(inner, [3, 4, 5])
    assert np.shares_memory(inner, arena) and arena[64:88].view(np.float32)[3] == 3
    back = mem.to_host(a)
    assert not np.shares_memory(back, arena)
    np.testing.assert_array_equal(back, np.arange(6).reshape(2, 3))
    b = mem.view(mem.allocate(24), 0, TensorSpec((2, 3), "f32"))
    mem.copy(a, b)
    np.testing.assert_array_equal(b, back)
    spec = TensorSpec((2, 3), "f32")
    assert mem.import_array(b, spec) is b  # host memory in: taken as it is
    assert mem.import_array(np.zeros((3, 2), np.float32).T, spec) is None  # strided: the session copies it
    torch = pytest.importorskip("torch")
    t = torch.zeros(2, 3)
    view = mem.import_array(t, spec)
    view[0, 0] = 7.0
    assert t[0, 0].item() == 7.0  # zero-copy
    out = mem.export(back, like=t)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3) and out[1, 2].item() == 5.0
    assert mem.export(back, like=None) is back
