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


# ---------------------------------------------------------------- wrong inputs: InputError naming the argument

class _FakeCudaArray:
    """What a GPU array looks like through DLPack (a torch CUDA tensor, a CuPy array) on a machine without one."""
    shape, dtype = (4, 16), np.dtype(np.float32)

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0

    def __dlpack__(self, stream=None, **kw):
        raise BufferError("the data is on the GPU")


def _bad_inputs():
    """(id, value, what the message must say after 'got')."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    masked[0, 0] = np.ma.masked
    return [
        ("none", None, "None"),
        ("f64", x.astype(np.float64), r"float64 \[4, 16\]"),
        ("i32", x.astype(np.int32), r"int32 \[4, 16\]"),
        ("shape", x[:, :15], r"float32 \[4, 15\]"),
        ("rank3", x[None], r"float32 \[1, 4, 16\]"),
        ("rank0", np.float32(1.0), r"float32 \[\]"),
        ("string", "x", "a str"),
        ("dict", {"x": x}, "a dict: not a numeric array"),
        ("object_array", np.empty((4, 16), object), r"object \[4, 16\]"),
        ("ragged_list", [[1.0, 2.0], [3.0]], "a Python list"),
        ("list_of_strings", [["a"] * 16] * 4, "a Python list of <U1"),
        ("list_wrong_shape", [[0.5] * 16] * 3, r"a Python list of float64 \[3, 16\]"),
        ("python_float", 2.5, r"a Python float of float64 \[\]"),
        ("python_int", 7, r"a Python int of int64 \[\]"),
        ("masked", masked, "a masked array with masked elements"),
        ("fake_cuda_dlpack", _FakeCudaArray(), "a _FakeCudaArray on cuda:0: this argument lives on the host"),
    ]


def _bind_and_run(session, value):
    """The low-level path: bind_arg, finish_io_binding, run."""
    req = session.new_request_context()
    try:
        req.bind_arg(session.get_input_arg_offsets()[0], value)
        req.finish_io_binding()
        req.run()
    finally:
        req.release()


@pytest.fixture(scope="module", params=["reference", "cpu"])
def mlp_session(request, tmp_path_factory):
    if request.param == "cpu":
        pytest.importorskip("byteir_backend_cpu")
    return byteir_core.load(byteir_core.compile(MLP, target=request.param).to_bytes())


@pytest.mark.parametrize("path", ["call", "run", "bind_arg"])
@pytest.mark.parametrize("case,value,got", _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
def test_wrong_inputs_are_input_errors_naming_the_argument(mlp_session, path, case, value, got):
    call = {"call": lambda v: mlp_session(v), "run": lambda v: mlp_session.run(v),
            "bind_arg": lambda v: _bind_and_run(mlp_session, v)}[path]
    if path == "bind_arg" and case == "python_int":  # an int is a raw pointer there: the next test
        return
    with pytest.raises(InputError, match=r"input argument 0 \(input0\): expected f32 \[4, 16\], got " + got):
        call(value)


def test_wrong_inputs_torch(mlp_session):
    torch = pytest.importorskip("torch")
    x = torch.zeros(4, 16)
    cases = [(x.double(), r"float64 \[4, 16\]"), (x[:, :3], r"float32 \[4, 3\]"),
             (torch.zeros(4, 16, device="meta"), "a torch tensor on meta: this argument lives on the host"),
             (x.to_sparse(), "a torch tensor of layout torch.sparse_coo: pass a dense tensor")]
    if torch.cuda.is_available():
        cases.append((x.cuda(), "a torch tensor on cuda:0: this argument lives on the host"))
    for value, got in cases:
        for call in (mlp_session, mlp_session.run, lambda v: _bind_and_run(mlp_session, v)):
            with pytest.raises(InputError, match=r"input argument 0 \(input0\): expected f32 \[4, 16\], got " + got):
                call(value)


def test_bind_arg_refuses_what_cannot_be_a_pointer_or_an_offset(mlp_session):
    req = mlp_session.new_request_context()
    for value in (0, 5, -1, 2 ** 64, True):
        with pytest.raises(InputError, match=r"input argument 0 \(input0\): expected f32 \[4, 16\], got "):
            req.bind_arg(0, value)  # would have been read as an address (5: a segfault)
    with pytest.raises(InputError, match=r"got the int 5: an int is a raw host pointer here.*np.array\(5\)"):
        req.bind_arg(0, 5)
    with pytest.raises(InputError, match=r"argument offset must be an int .*got str 'input0'"):
        req.bind_arg("input0", np.zeros((4, 16), np.float32))
    with pytest.raises(InputError, match="out of range"):
        req.bind_arg(7, np.zeros((4, 16), np.float32))
    out = mlp_session.get_output_arg_offsets()[0]
    with pytest.raises(InputError, match=r"output argument 1 \(output0\): expected f32 \[4, 8\] \(a writable "
                                         r"C-contiguous array\), got a Python list"):
        req.bind_arg(out, [[0.0] * 8] * 4)
    with pytest.raises(InputError, match=r"output argument 1 \(output0\) must be a writable, aligned, C-contiguous"):
        req.bind_arg(out, np.zeros((8, 4), np.float32).T)
    with pytest.raises(InputError, match=r"expected 1 inputs \(input0\), got 0"):
        mlp_session.run()
    with pytest.raises(InputError, match=r"expected 1 inputs \(input0\), got 2"):
        mlp_session.run(np.zeros((4, 16), np.float32), np.zeros((4, 16), np.float32))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
def test_strided_foreign_and_odd_arrays_are_copied_and_give_the_same_result(mlp_session):
    """Strided, transposed, reversed, big-endian, misaligned inputs and ndarray subclasses are copied into the
    argument's layout; the result equals that of the contiguous array, bit for bit."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    want = mlp_session.run(x)[0]
    wide = np.zeros((8, 32), np.float32)
    wide[::2, ::2] = x
    raw = np.frombuffer(b"\0" + x.tobytes(), np.uint8)[1:]  # misaligned by one byte
    variants = {"strided": wide[::2, ::2], "transposed": np.ascontiguousarray(x.T).T, "reversed": x[::-1][::-1],
                "big_endian": x.astype(">f4"), "misaligned": raw.view(np.float32).reshape(4, 16),
                "matrix": np.asmatrix(x), "masked_nothing": np.ma.masked_array(x), "read_only": x.copy(),
                "list": x.tolist()}
    variants["read_only"].flags.writeable = False
    assert not variants["misaligned"].flags.aligned and variants["big_endian"].dtype.byteorder == ">"
    for name, v in variants.items():
        for got in (mlp_session.run(v)[0], mlp_session(v)):
            np.testing.assert_array_equal(np.asarray(got), want, err_msg=name)
        req = mlp_session.new_request_context()
        req.bind_arg(0, v)
        req.finish_io_binding()
        req.run()
        np.testing.assert_array_equal(req.get_arg(1), want, err_msg=name)
        req.release()


def test_strided_torch_tensors_are_read_by_value(mlp_session):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    want = mlp_session.run(x)[0]
    t = torch.from_numpy(x)
    variants = {"transposed": torch.from_numpy(np.ascontiguousarray(x.T)).T, "sliced": torch.from_numpy(
        np.repeat(x, 2, axis=1))[:, ::2], "expanded_row": torch.from_numpy(x[:1]).expand(4, 16),
        "requires_grad": t.clone().requires_grad_(), "negative_view": (-t)._neg_view()}
    wants = {"expanded_row": mlp_session.run(np.repeat(x[:1], 4, axis=0))[0]}
    for name, v in variants.items():
        assert name in ("requires_grad",) or not v.is_contiguous() or name == "negative_view"
        got = mlp_session(v)
        assert isinstance(got, torch.Tensor)
        np.testing.assert_array_equal(got.numpy(), wants.get(name, want), err_msg=name)


def test_python_scalars_and_lists_convert_when_the_values_fit():
    """A rank-0 input takes a Python scalar and a rank-1 one a list (converted to the argument's type when no
    value changes kind: ints into floats, bools into ints); floats into an integer input, or an int that does not
    fit, are InputErrors. Through run() an int is a value; only bind_arg takes ints as raw pointers."""
    text = func("%n: tensor<i32>, %x: tensor<3xf32>", "tensor<3xf32>",
                "  %f = stablehlo.convert %n : (tensor<i32>) -> tensor<f32>\n"
                "  %b = stablehlo.broadcast_in_dim %f, dims = [] : (tensor<f32>) -> tensor<3xf32>\n"
                "  %r = stablehlo.multiply %x, %b : tensor<3xf32>\n  return %r : tensor<3xf32>")
    s = byteir_core.load(byteir_core.compile(text, target="reference").to_bytes())
    np.testing.assert_array_equal(s(3, [1, 2, 3]), np.array([3, 6, 9], np.float32))
    np.testing.assert_array_equal(s(np.int32(2), (0.5, 1.5, 2.5)), np.array([1, 3, 5], np.float32))
    np.testing.assert_array_equal(s(True, [1.0, 2.0, 3.0]), np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(s(input0=4, input1=[1, 1, 1]), np.array([4, 4, 4], np.float32))
    with pytest.raises(InputError, match=r"input argument 0 \(input0\): expected i32 \[\], got a Python float of "
                                         r"float64 \[\] \(its values do not convert to i32"):
        s(2.5, [1, 2, 3])
    with pytest.raises(InputError, match=r"input argument 0 \(input0\): expected i32 \[\], got a Python int of "
                                         r"int64 \[\]"):
        s(2 ** 40, [1, 2, 3])
    with pytest.raises(InputError, match=r"input argument 1 \(input1\): expected f32 \[3\], got a Python list of "
                                         r"int64 \[2\]"):
        s(1, [1, 2])
    req = s.new_request_context()
    req.bind_arg(0, np.array(5, np.int32))
    req.bind_arg(1, [1.0, 0.0, -1.0])  # lists are values on the low-level path too
    req.finish_io_binding()
    req.run()
    np.testing.assert_array_equal(req.get_arg(2), np.array([5, 0, -5], np.float32))


def test_binding_again_after_finish_rebinds(mlp_path):
    """bind_arg after finish_io_binding takes effect for the next run (it used to run on the old binding)."""
    s = byteir_core.load(mlp_path)
    rng = np.random.default_rng(8)
    x, y = (rng.standard_normal((4, 16)).astype(np.float32) for _ in range(2))
    req = s.new_request_context()
    req.bind_arg(0, x)
    req.finish_io_binding()
    req.run()
    np.testing.assert_allclose(req.get_arg(1), mlp_numpy(x), rtol=1e-5, atol=1e-6)
    req.bind_arg(0, y)
    out = np.zeros((4, 8), np.float32)
    req.bind_arg(1, out)
    req.run()
    np.testing.assert_allclose(out, mlp_numpy(y), rtol=1e-5, atol=1e-6)
    req.release()
