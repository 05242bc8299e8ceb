"""Devices (ByRE 1.1): buffers on a device of a plugin's own, copies where data crosses, arenas per device.

A throwaway plugin declares device "fakedev": a backend claiming add, multiply and reshape and a provider whose
memory wraps host bytes in :class:`FakeArray`, a class NumPy cannot read. Any place that hands a device array
to host code, or a host array to the device, fails loudly instead of working by accident.
"""

import tempfile
import threading
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import byteir_core
from byteir_core import hookimpl, plugins
from byteir_core.byre import read_artifact
from byteir_core.errors import ByreFormatError, ByteirTargetWarning, InputError, ProviderError
from byteir_core.interfaces import Backend, CompiledCluster, DeviceMemory, HostMemory, Kernel, Provider
from byteir_core.interpreter import Interpreter

DEV = "fakedev"
N = 512  # f32 elements: 2 KiB, so the constant below becomes a weight


class FakeArray:
    """An array of device "fakedev". It has a shape and a dtype but no buffer protocol, no __array__ and no
    __dlpack__: NumPy sees an opaque object, so it never passes for host memory."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray):
        self.data = data

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype


def _fake(x, what: str) -> np.ndarray:
    assert isinstance(x, FakeArray), f"{what}: got {type(x).__name__}, expected a fakedev array"
    return x.data


def _host(x, what: str) -> np.ndarray:
    assert isinstance(x, np.ndarray), f"{what}: got {type(x).__name__}, expected a host array"
    return x


class FakeMemory(DeviceMemory):
    device = DEV

    def __init__(self):
        self.synchronized: list = []  # the stream of every synchronize() call
        self.uploads = 0
        self.copy_streams: list = []  # the stream each upload/copy was ordered on

    def allocate(self, nbytes):
        return FakeArray(np.empty(nbytes, np.uint8))

    def view(self, buffer, byte_offset, spec):
        return FakeArray(HostMemory().view(_fake(buffer, "view"), byte_offset, spec))

    def from_host(self, host, dst, stream=None):
        self.uploads += 1
        self.copy_streams.append(stream)
        np.copyto(_fake(dst, "from_host dst"), _host(host, "from_host src"))

    def to_host(self, src, stream=None):
        return _fake(src, "to_host").copy()

    def copy(self, src, dst, stream=None):
        self.copy_streams.append(stream)
        np.copyto(_fake(dst, "copy dst"), _fake(src, "copy src"))

    def import_array(self, x, spec):
        return x if isinstance(x, FakeArray) else None

    def export(self, array, like, spec=None):
        _fake(like, "export like")
        _fake(array, "export")
        return array

    def synchronize(self, stream):
        self.synchronized.append(stream)


class FakeBackend(Backend):
    name = DEV
    device = DEV
    fallback = ()  # the rest goes to the reference backend, on the host

    def claims(self, op):
        return 10 if op.name in ("stablehlo.add", "stablehlo.multiply", "stablehlo.reshape") else None

    def compile(self, cluster):
        return CompiledCluster(f"{DEV}.run", Kernel("stablehlo-portable", cluster.portable_artifact()))


class FakeProvider(Provider):
    name = DEV
    device = DEV
    callees = (f"{DEV}.run",)
    takes_stream = True

    def __init__(self):
        self.opened: list = []  # the device of every open() call
        self.streams: list = []  # the stream of every kernel call
        self.last_inputs: list = []
        self.mem = FakeMemory()
        self._interpreter = Interpreter()
        self._lock = threading.Lock()

    def open(self, device):
        self.opened.append(device)
        return self

    def memory(self):
        return self.mem

    def load(self, callee, kernel, attrs):
        program = self._interpreter.load(kernel.data, callee)

        def run(inputs, outputs, stream):
            with self._lock:
                self.streams.append(stream)
                self.last_inputs = list(inputs)
            program([_fake(x, "kernel input") for x in inputs], [_fake(y, "kernel output") for y in outputs])

        return run


@pytest.fixture(scope="module")
def fake():
    """A registry holding the installed plugins plus the fakedev plugin, loaded through the plugin hooks."""
    provider = FakeProvider()

    @hookimpl
    def byteir_register_backends(register):
        register(FakeBackend())

    @hookimpl
    def byteir_register_providers(register):
        register(provider)

    module = types.SimpleNamespace(BYTEIR_PLUGIN_API="1.0", byteir_register_backends=byteir_register_backends,
                                   byteir_register_providers=byteir_register_providers)
    reg = plugins.load_registry()
    info = reg.load_module(DEV, "test_devices.fakedev", "byteir-backend-fakedev", "0.0.1", loader=lambda: module)
    assert info.status == "ok", info.error
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugins, "_registry", reg)
        yield provider


W = (np.arange(N) % 7 - 3).astype(np.float32) / 4
PROGRAM = f"""
func.func @main(%x: tensor<{N}xf32>, %y: tensor<{N}xf32>) -> (tensor<{N}xf32>, tensor<{N}xf32>) {{
  %w = stablehlo.constant dense<{W.tolist()}> : tensor<{N}xf32>
  %a = stablehlo.add %x, %w : tensor<{N}xf32>
  %t = stablehlo.tanh %a : tensor<{N}xf32>
  %m = stablehlo.multiply %t, %y : tensor<{N}xf32>
  return %m, %t : tensor<{N}xf32>, tensor<{N}xf32>
}}
"""


def expected(x, y):
    t = np.tanh(x.astype(np.float64) + W)
    return t * y, t


def inputs(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)


@pytest.fixture(scope="module")
def art(fake):
    return byteir_core.compile(PROGRAM, target=DEV)


def test_partition_puts_arguments_on_the_device_and_copies_where_data_crosses(art):
    bm = art.module
    dev = {b.id: b.device for b in bm.buffers}
    # add (fakedev) -> copy to the host -> tanh (reference, on the host) -> copy back -> multiply (fakedev);
    # the returned tanh result is made on the host and copied into its output argument on fakedev
    assert [(s.op, s.backend) for s in bm.steps] == [
        ("compute", DEV), ("copy", ""), ("compute", "reference"), ("copy", ""), ("compute", DEV), ("copy", "")]
    assert [(dev[s.operands[0]], dev[s.operands[1]]) for s in bm.steps if s.op == "copy"] == [
        (DEV, "cpu"), ("cpu", DEV), ("cpu", DEV)]
    for s in bm.steps:
        if s.op == "compute":
            assert {dev[o] for o in s.operands} == {"reference": {"cpu"}, DEV: {DEV}}[s.backend]
    assert bm.arg_devices() == [DEV, DEV, DEV, DEV, DEV]  # x, y, two outputs, and the weight add reads first
    assert [a.kind for a in bm.args] == ["input", "input", "output", "output", "weight"]
    assert art.report["devices"] == {"cpu": 1, DEV: 2}
    assert art.report["copies"] == [{"src_device": DEV, "dst_device": "cpu", "bytes": 4 * N},
                                    {"src_device": "cpu", "dst_device": DEV, "bytes": 4 * N},
                                    {"src_device": "cpu", "dst_device": DEV, "bytes": 4 * N}]
    # host: the copy of a and t live at once; fakedev: a, then (after a is copied out) the copy of t
    assert bm.arenas == {"cpu": 2 * 4 * N, DEV: 4 * N} == art.report["arenas"]
    assert bm.arena_bytes == 2 * 4 * N


def test_a_host_only_artifact_has_one_arena_and_no_crossings(fake):
    art = byteir_core.compile(PROGRAM, target="reference")
    assert {b.device for b in art.module.buffers} == {"cpu"}
    assert art.report["copies"] == [] and set(art.report["devices"]) == {"cpu"}
    assert set(art.module.arenas) <= {"cpu"}


def test_text_and_bytecode_round_trip_keep_devices_and_arenas(art, tmp_path):
    text = art.save(tmp_path / "m.byre.mlir").read_text()
    assert 'byre.version = "1.2"' in text and f'byre.device = "{DEV}"' in text
    assert f'byre.arenas = {{cpu = {8 * N} : i64, {DEV} = {4 * N} : i64}}' in text
    art.save(tmp_path / "m.byre")
    for p in (tmp_path / "m.byre.mlir", tmp_path / "m.byre"):
        m = read_artifact(p).module
        assert [(b.kind, b.device, b.arena_offset) for b in m.buffers] == \
            [(b.kind, b.device, b.arena_offset) for b in art.module.buffers]
        assert m.arenas == art.module.arenas and m.arena_bytes == art.module.arena_bytes
        assert [(s.op, s.operands) for s in m.steps] == [(s.op, s.operands) for s in art.module.steps]


def test_verification_of_devices(art, tmp_path):
    text = art.text(elide_payloads=False)

    def refused(old, new, needle):
        assert old in text, old
        p = tmp_path / "bad.byre.mlir"
        p.write_text(text.replace(old, new, 1))
        with pytest.raises(ByreFormatError, match=needle):
            read_artifact(p)

    refused(f"{DEV} = {4 * N} : i64}}", f"{DEV} = 64 : i64}}", f"into the {DEV} arena of 64")
    refused(f"byre.arenas = {{cpu = {8 * N} : i64", "byre.arenas = {cpu = 64 : i64", "byre.arena_bytes says")
    # the first allocation (add's result) moved to the host: add now reads fakedev and writes host buffers
    refused(f'byre.arena_offset = 0 : i64, byre.device = "{DEV}"', "byre.arena_offset = 0 : i64",
            f"operands on devices cpu, {DEV}")


def test_numpy_in_numpy_out(art):
    s = byteir_core.load(art.to_bytes())
    x, y = inputs(0)
    m, t = s(x, y)
    assert type(m) is np.ndarray and type(t) is np.ndarray
    em, et = expected(x, y)
    np.testing.assert_allclose(m, em, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t, et, rtol=1e-5, atol=1e-6)


def test_device_arrays_in_device_arrays_out_zero_copy(art, fake):
    s = byteir_core.load(art.to_bytes())
    x, y = inputs(1)
    fx, fy = FakeArray(x.copy()), FakeArray(y.copy())
    m, t = s(fx, fy)
    assert type(m) is FakeArray and type(t) is FakeArray  # exported in the caller's kind
    em, et = expected(x, y)
    np.testing.assert_allclose(m.data, em, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.data, et, rtol=1e-5, atol=1e-6)
    # the kernel read the caller's own bytes: the multiply read y where the caller put it
    assert any(np.shares_memory(a.data, fy.data) for a in fake.last_inputs)
    # an output buffer of the device's kind is written in place
    req = s.new_request_context()
    out = FakeArray(np.zeros(N, np.float32))
    req.bind_arg(0, fx)
    req.bind_arg(1, fy)
    req.bind_arg(2, out)
    req.finish_io_binding()
    req.run()
    req.sync()
    assert req.get_arg(2) is out
    np.testing.assert_allclose(out.data, em, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"input argument 0 \(input0\): expected f32 \[512\], got float32 \[3\]"):
        req.bind_arg(0, FakeArray(np.zeros(3, np.float32)))


def test_host_arrays_bound_to_device_arguments_are_copied_in_and_out(art, fake):
    s = byteir_core.load(art.to_bytes())
    x, y = inputs(2)
    req = s.new_request_context()
    req.bind_arg(0, x)
    req.bind_arg(1, y.copy())
    out = np.zeros(N, np.float32)
    req.bind_arg(2, out)
    req.finish_io_binding()
    req.run()
    req.sync()
    assert req.get_arg(2) is out
    np.testing.assert_allclose(out, expected(x, y)[0], rtol=1e-5, atol=1e-6)
    assert type(req.get_arg(3)) is FakeArray  # an unbound output stays on its device


def test_stream_goes_to_the_kernels_and_sync_waits_for_it(art, fake):
    s = byteir_core.load(art.to_bytes())
    x, y = inputs(3)
    stream = object()
    fake.streams.clear()
    fake.mem.synchronized.clear()
    fake.mem.copy_streams.clear()
    req = s.new_request_context(stream)
    req.bind_arg(0, x)
    req.bind_arg(1, y)
    req.finish_io_binding()
    req.run()
    assert fake.streams == [stream, stream]  # both fakedev kernels got the request's stream
    assert fake.mem.copy_streams and set(fake.mem.copy_streams) == {stream}  # uploads and copies too
    req.sync()
    assert fake.mem.synchronized == [stream]
    np.testing.assert_allclose(fake.mem.to_host(req.get_arg(2)), expected(x, y)[0], rtol=1e-5, atol=1e-6)


def test_concurrent_requests(art):
    s = byteir_core.load(art.to_bytes())
    cases = [inputs(10 + i) for i in range(12)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda c: s(*c), cases))
    for (x, y), (m, t) in zip(cases, outs):
        em, et = expected(x, y)
        np.testing.assert_allclose(m, em, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t, et, rtol=1e-5, atol=1e-6)


def test_the_device_asked_for_reaches_open_and_must_fit_the_artifact(art, fake):
    fake.opened.clear()
    byteir_core.load(art.to_bytes())
    byteir_core.load(art.to_bytes(), device=DEV)
    byteir_core.load(art.to_bytes(), device=f"{DEV}-interpret")  # a provider's variant of its device
    assert fake.opened == [None, DEV, f"{DEV}-interpret"]
    with pytest.raises(ProviderError, match=f"device 'cpu' was asked for, but the artifact was compiled for {DEV}"):
        byteir_core.load(art.to_bytes(), device="cpu")
    with pytest.raises(ProviderError, match="device 'tpu' has no installed provider"):
        byteir_core.load(art.to_bytes(), device="tpu")


def test_weights_are_uploaded_once_at_load(art, fake):
    before = fake.mem.uploads
    s = byteir_core.load(art.to_bytes())
    assert fake.mem.uploads == before + 1
    (w,) = s._weights.values()
    assert type(w) is FakeArray
    np.testing.assert_array_equal(w.data, W)


def test_profile_names_the_crossings_and_waits_for_the_device(art, fake):
    s = byteir_core.load(art.to_bytes())
    fake.mem.synchronized.clear()
    rows = s.profile(*inputs(4), repeat=2, warmup=0)
    assert [r["callee"] for r in rows] == [f"{DEV}.run", f"copy {DEV}->cpu", "reference.stablehlo",
                                           f"copy cpu->{DEV}", f"{DEV}.run", f"copy cpu->{DEV}"]
    assert all(r["median_us"] > 0 for r in rows)
    # every step touching fakedev is synchronized before and after it is timed (5 of 6 steps, twice each)
    assert len(fake.mem.synchronized) >= 2 * 5 * 2


def test_a_provider_that_cannot_open_its_device_is_a_load_error(art, fake, monkeypatch):
    def no_device(device):
        raise ProviderError(f"no {DEV} found: driver missing")

    monkeypatch.setattr(fake, "open", no_device)
    with pytest.raises(ProviderError, match=f"no {DEV} found: driver missing"):
        byteir_core.load(art.to_bytes())


def test_an_artifact_for_a_device_nobody_provides_names_what_to_install(art, monkeypatch):
    monkeypatch.setattr(plugins, "_registry", plugins.load_registry())  # the installed plugins: no fakedev
    with pytest.raises(ProviderError, match=f"callee '{DEV}.run' .* install byteir-backend-fakedev"):
        byteir_core.load(art.to_bytes())


def test_compiling_for_a_well_known_target_that_is_not_installed_warns(monkeypatch):
    monkeypatch.setenv("BYTEIR_DISABLE_PLUGINS", "cuda")
    monkeypatch.setattr(plugins, "_registry", plugins.load_registry())
    with pytest.warns(ByteirTargetWarning, match=r"target 'cuda' is not installed \(pip install byteir-backend-cuda\):"
                                                 r" this artifact runs its ops on reference x3 \(device cpu\)") as w:
        art = byteir_core.compile(PROGRAM, target="cuda")
    assert w[0].filename == __file__  # it points at the caller's compile line
    assert art.manifest["target"] == "cuda" and art.report["ops_per_backend"] == {
        "reference": {"stablehlo.add": 1, "stablehlo.multiply": 1, "stablehlo.tanh": 1}}
    assert "no installed backend serves target 'cuda' (pip install byteir-backend-cuda)" in art.report["notes"][0]
    assert {b.device for b in art.module.buffers} == {"cpu"} and art.report["devices"] == {"cpu": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ByteirTargetWarning)
        byteir_core.compile(PROGRAM, target="reference")  # an installed target compiles without a warning


VIEWS = """
func.func @main(%x: tensor<8x64xf32>, %y: tensor<512xf32>) -> (tensor<512xf32>, tensor<512xf32>) {
  %a = stablehlo.add %x, %x : tensor<8x64xf32>
  %r = stablehlo.reshape %a : (tensor<8x64xf32>) -> tensor<512xf32>
  %t = stablehlo.tanh %r : tensor<512xf32>
  %m = stablehlo.multiply %t, %y : tensor<512xf32>
  %xr = stablehlo.reshape %x : (tensor<8x64xf32>) -> tensor<512xf32>
  return %m, %xr : tensor<512xf32>, tensor<512xf32>
}
"""


def test_views_of_device_buffers_live_on_the_device(fake):
    """A reshape is a view of its source, on the source's device: of an intermediate (read on the host through a
    copy) and of an argument (returned through a copy on the device)."""
    art = byteir_core.compile(VIEWS, target=DEV)
    bm = art.module
    aliases = [b for b in bm.buffers if b.kind == "alias"]
    assert len(aliases) == 2 and all(b.device == DEV == bm.buffers[b.source].device for b in aliases)
    assert [c["src_device"] + "->" + c["dst_device"] for c in art.report["copies"]] == [f"{DEV}->cpu", f"cpu->{DEV}"]
    x = np.random.default_rng(5).standard_normal((8, 64)).astype(np.float32)
    y = np.random.default_rng(6).standard_normal(512).astype(np.float32)
    for s in (byteir_core.load(art.to_bytes()), byteir_core.load(art.save(Path(tempfile.mkdtemp()) / "v.byre"))):
        m, xr = s(x, y)
        np.testing.assert_allclose(m, np.tanh(2 * x.reshape(-1).astype(np.float64)) * y, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(xr, x.reshape(-1))
        fm, fxr = s(FakeArray(x.copy()), FakeArray(y.copy()))
        np.testing.assert_array_equal(fm.data, m)
        np.testing.assert_array_equal(fxr.data, x.reshape(-1))


def test_a_program_with_no_step_on_the_device_still_takes_and_gives_device_arrays(fake):
    """Every op falls back to the host: the arguments stay on fakedev, whose memory comes from its provider."""
    art = byteir_core.compile("""func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %t = stablehlo.tanh %x : tensor<4xf32>
  return %t : tensor<4xf32>
}""", target=DEV)
    assert art.report["devices"] == {"cpu": 1} and art.module.arg_devices() == [DEV, DEV]
    assert [(c["src_device"], c["dst_device"]) for c in art.report["copies"]] == [(DEV, "cpu"), ("cpu", DEV)]
    s = byteir_core.load(art.to_bytes())
    x = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    np.testing.assert_allclose(s(x), np.tanh(x), rtol=1e-6)
    out = s(FakeArray(x.copy()))
    assert type(out) is FakeArray
    np.testing.assert_allclose(out.data, np.tanh(x), rtol=1e-6)
