"""The ASIC template: heterogeneous partitioning across two backends in one artifact, run end to end."""

import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import byteir_core
from byteir_core.byre import Artifact, read_artifact
from byteir_core.errors import ProviderError
from byteir_core.plugins import load_registry, reset_registry

PROGRAM = """
func.func @main(%x: tensor<1x2x5x5xf32>, %w: tensor<4x2x3x3xf32>, %m: tensor<36x6xf32>) -> tensor<1x6xf32> {
  %c = stablehlo.convolution(%x, %w) dim_numbers = [b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1], window = {stride = [1, 1], pad = [[0, 0], [0, 0]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<1x2x5x5xf32>, tensor<4x2x3x3xf32>) -> tensor<1x4x3x3xf32>
  %t = stablehlo.tanh %c : tensor<1x4x3x3xf32>
  %f = stablehlo.reshape %t : (tensor<1x4x3x3xf32>) -> tensor<1x36xf32>
  %d = stablehlo.dot_general %f, %m, contracting_dims = [1] x [0] : (tensor<1x36xf32>, tensor<36x6xf32>) -> tensor<1x6xf32>
  %y = stablehlo.add %d, %d : tensor<1x6xf32>
  return %y : tensor<1x6xf32>
}
"""


def numpy_reference(x, w, m):
    conv = np.zeros((1, 4, 3, 3))
    for o in range(4):
        for i in range(3):
            for j in range(3):
                conv[0, o, i, j] = (x[0, :, i:i + 3, j:j + 3].astype(np.float64) * w[o]).sum()
    return 2 * (np.tanh(conv).reshape(1, 36) @ m)


@pytest.fixture(scope="module", params=["as-installed", "cpu-disabled"])
def compiled(request, tmp_path_factory):
    """Compiled twice: with whatever is installed, and with the cpu plugin disabled so that everything the chip
    does not claim must reach the core's reference backend through the rest of the fallback chain."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "cpu-disabled":
            mp.setenv("BYTEIR_DISABLE_PLUGINS", "cpu")
        reset_registry()
        try:
            rest = "cpu" if "cpu" in load_registry().backends else "reference"
            assert request.param == "as-installed" or rest == "reference"
            path = tmp_path_factory.mktemp("asic") / "model.byre"
            art = byteir_core.compile(PROGRAM, target="asic_stub", output=path)
            yield art, path, rest
        finally:
            mp.undo()
            reset_registry()


def test_gemm_and_conv_go_to_the_chip_and_the_rest_falls_back(compiled):
    art, _, rest = compiled
    # the rest goes to cpu when a cpu backend is installed, else on to the core's reference backend
    per = art.report["ops_per_backend"]
    assert per["asic_stub"] == {"stablehlo.convolution": 1, "stablehlo.dot_general": 1}
    assert set(per) == {"asic_stub", rest}
    assert "stablehlo.tanh" in per[rest] and "stablehlo.add" in per[rest]
    assert art.report["fallback_chain"] == ["asic_stub", "cpu", "reference"]
    assert {k.backend for k in art.module.kernels.values()} == {"asic_stub", rest}
    assert "asic-stub-blob" in {k.kernel.format for k in art.module.kernels.values()}
    assert art.manifest["backends"]["asic_stub"].startswith("byteir-backend-asic-stub ")
    # conv (chip) -> tanh, reshape (fallback) -> dot (chip) -> add (fallback)
    assert [s.backend for s in art.module.steps if s.op == "compute"] == ["asic_stub", rest, "asic_stub", rest]
    assert art.module.arena_bytes > 0  # intermediates between the two backends live in the planned arena


def test_runs_end_to_end_against_numpy(compiled):
    _, path, _ = compiled
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    m = rng.standard_normal((36, 6)).astype(np.float32)
    out = byteir_core.load(path)(x, w, m)
    np.testing.assert_allclose(out, numpy_reference(x, w, m), rtol=1e-5, atol=1e-5)


def test_concurrent_requests_are_independent(compiled):
    """The provider's fn may run on several threads at once: each request must get its own answer."""
    _, path, _ = compiled
    session = byteir_core.load(path)
    rng = np.random.default_rng(11)
    cases = [tuple(rng.standard_normal(s).astype(np.float32) for s in ((1, 2, 5, 5), (4, 2, 3, 3), (36, 6)))
             for _ in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda c: session(*c), cases))
    for case, out in zip(cases, outs):
        np.testing.assert_allclose(out, numpy_reference(*case), rtol=1e-5, atol=1e-5)


def test_bad_blob_header_is_a_load_time_error(compiled, tmp_path):
    art, path, _ = compiled
    (k,) = [k for k in art.module.kernels.values() if k.backend == "asic_stub"][:1]
    bad = read_artifact(path)
    bad.module.kernels[k.name].kernel = type(k.kernel)(k.kernel.format, b"NOTASIC!" + k.kernel.data[8:])
    with pytest.raises(ProviderError, match="not an asic_stub kernel"):
        byteir_core.load(Artifact(bad.module).to_bytes())
    newer = read_artifact(path)
    hdr = struct.pack("<8sHHH", b"ASICSTB1", 9, 2, 1)
    newer.module.kernels[k.name].kernel = type(k.kernel)(k.kernel.format, hdr + k.kernel.data[14:])
    with pytest.raises(ProviderError, match="blob version 9 is newer"):
        byteir_core.load(Artifact(newer.module).to_bytes())
    zero = read_artifact(path)
    hdr = struct.pack("<8sHHH", b"ASICSTB1", 0, 2, 1)
    zero.module.kernels[k.name].kernel = type(k.kernel)(k.kernel.format, hdr + k.kernel.data[14:])
    with pytest.raises(ProviderError, match="blob version 0 is invalid"):
        byteir_core.load(Artifact(zero.module).to_bytes())
    short = read_artifact(path)
    short.module.kernels[k.name].kernel = type(k.kernel)(k.kernel.format, b"ASICSTB1")
    with pytest.raises(ProviderError, match="shorter than its header"):
        byteir_core.load(Artifact(short.module).to_bytes())


@pytest.mark.parametrize("dtype", ["f16", "i8", "i32"])
def test_every_claimed_element_type_runs_on_the_chip(dtype):
    """Claim only what you can run: each element type the chip claims must give the right answer."""
    text = f"""func.func @main(%a: tensor<2x3x{dtype}>, %b: tensor<3x4x{dtype}>) -> tensor<2x4x{dtype}> {{
  %d = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<2x3x{dtype}>, tensor<3x4x{dtype}>) -> tensor<2x4x{dtype}>
  return %d : tensor<2x4x{dtype}>
}}"""
    art = byteir_core.compile(text, target="asic_stub")
    assert art.report["ops_per_backend"] == {"asic_stub": {"stablehlo.dot_general": 1}}
    np_type = {"f16": np.float16, "i8": np.int8, "i32": np.int32}[dtype]
    rng = np.random.default_rng(3)
    a = rng.integers(-4, 5, (2, 3)).astype(np_type)  # small integers: exact in every type, no int8 overflow
    b = rng.integers(-4, 5, (3, 4)).astype(np_type)
    out = byteir_core.load(art.to_bytes())(a, b)
    assert out.dtype == np_type
    np.testing.assert_array_equal(out, a.astype(np.int64) @ b.astype(np.int64))


def test_unsupported_types_are_not_claimed():
    text = """func.func @main(%a: tensor<2x3xf64>, %b: tensor<3x2xf64>) -> tensor<2x2xf64> {
  %d = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<2x3xf64>, tensor<3x2xf64>) -> tensor<2x2xf64>
  return %d : tensor<2x2xf64>
}"""
    art = byteir_core.compile(text, target="asic_stub")
    assert "asic_stub" not in art.report["ops_per_backend"]


def test_listed_as_a_plugin():
    reg = load_registry()
    (info,) = [p for p in reg.plugins if p.name == "asic_stub"]
    assert info.status == "ok" and info.distribution == "byteir-backend-asic-stub"
    assert "backend asic_stub (device asic_stub)" in info.registers
    assert "provider asic_stub (device asic_stub)" in info.registers
