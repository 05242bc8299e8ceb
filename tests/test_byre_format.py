"""ByRE 1.1: text <-> bytecode round trips, the version rules, and every kind of bad artifact gives ByreFormatError."""

import re

import numpy as np
import pytest
from programs import MLP, func, mlp_numpy

import byteir_core
from byteir_core.byre import Artifact, read_artifact
from byteir_core.byre.format import READ, WRITE, Arg, Buffer, ByreModule, Step
from byteir_core.compiler.memplan import plan_memory
from byteir_core.dtypes import TensorSpec
from byteir_core.errors import ArtifactIntegrityError, ByreFormatError


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    d = tmp_path_factory.mktemp("byre")
    return byteir_core.compile(MLP, target="reference", output=d / "mlp.byre")


def test_bytecode_and_text_round_trip(art, tmp_path):
    text_path = art.save(tmp_path / "mlp.byre.mlir")
    text = text_path.read_text()
    assert "byre.version = \"1.1\"" in text and '"byre.compute"' in text and "byre.entry_point" in text
    from_text = read_artifact(text_path)
    from_bytes = read_artifact(art.path)
    # same program either way: args, steps, kernels and weights (payloads byte for byte)
    for m in (from_text.module, from_bytes.module):
        assert [(a.name, a.kind, str(a.spec)) for a in m.args] == \
            [(a.name, a.kind, str(a.spec)) for a in art.module.args]
        assert [(s.op, s.callee, s.operands) for s in m.steps] == \
            [(s.op, s.callee, s.operands) for s in art.module.steps]
        assert {k: v.kernel.data for k, v in m.kernels.items()} == \
            {k: v.kernel.data for k, v in art.module.kernels.items()}
        assert m.weights == art.module.weights
        assert m.manifest == art.module.manifest
    # text saved from the bytecode-loaded artifact is the same text again
    assert from_bytes.text(elide_payloads=False) == from_text.text(elide_payloads=False)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(text_path)(x), mlp_numpy(x), rtol=1e-5, atol=1e-6)


def test_manifest_names_versions_target_and_pipeline(art):
    m = art.manifest
    assert m["byteir_core"] == byteir_core.__version__
    assert m["target"] == "reference" and m["frontend"] == "stablehlo"
    assert "legalize" in m["pipeline"] and "reference" in m["plugins"]
    assert re.fullmatch(r"[0-9a-f]{16}", m["options_hash"])
    assert "created" not in m  # a wall-clock time would make every rebuild's bytes differ


def test_same_input_gives_byte_identical_artifacts(tmp_path, monkeypatch):
    """Issue 14 finding 4: two compiles of one input gave two sha256 (creation time and stage timings were in the
    hashed bytes)."""
    a, b = tmp_path / "a.byre", tmp_path / "b.byre"
    for out in (a, b):
        art = byteir_core.compile(MLP, target="cpu", output=out)
        assert art.report["stage_seconds"]  # timings stay on the in-memory artifact
    assert a.read_bytes() == b.read_bytes()
    assert "stage_seconds" not in read_artifact(a).report
    for target in ("reference", "asic_stub"):
        assert byteir_core.compile(MLP, target=target).to_bytes() == byteir_core.compile(MLP, target=target).to_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c = byteir_core.compile(MLP, target="cpu", output=tmp_path / "c.byre")
    d = byteir_core.compile(MLP, target="cpu", output=tmp_path / "d.byre")
    assert c.manifest["created"] == "2023-11-14T22:13:20+00:00" == read_artifact(tmp_path / "c.byre").manifest["created"]
    assert (tmp_path / "c.byre").read_bytes() == (tmp_path / "d.byre").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(byteir_core.OptionError, match="SOURCE_DATE_EPOCH"):
        byteir_core.compile(MLP, target="cpu")


def _rewrite(path, tmp_path, old, new, name="edited.byre.mlir"):
    text = read_artifact(path).text(elide_payloads=False)
    assert old in text, old
    p = tmp_path / name
    p.write_text(text.replace(old, new, 1))
    return p


def test_newer_major_version_is_refused_naming_both(art, tmp_path):
    p = _rewrite(art.path, tmp_path, 'byre.version = "1.1"', 'byre.version = "2.3"')
    with pytest.raises(ByreFormatError) as e:
        read_artifact(p)
    assert str(p) in str(e.value) and "2.3" in str(e.value) and "up to 1.1" in str(e.value)


def test_newer_minor_version_is_refused_by_name(art, tmp_path):
    """A minor bump may place buffers where an older reader would not look (1.1: devices): refuse, naming both."""
    p = _rewrite(art.path, tmp_path, 'byre.version = "1.1"', 'byre.version = "1.2"')
    with pytest.raises(ByreFormatError, match=r"written as ByRE 1\.2, but this reader \(byteir-core .+\) "
                                              r"understands ByRE up to 1\.1; upgrade byteir-core") as e:
        read_artifact(p)
    assert str(p) in str(e.value)


def test_a_byre_1_0_file_still_loads_and_runs(tmp_path):
    """What byteir-core 0.1.0 wrote: version 1.0, one host arena in byre.arena_bytes, no byre.arenas or devices."""
    double = byteir_core.compile(func("%x: tensor<4xf32>", "tensor<4xf32>", "  %y = stablehlo.add %x, %x : "
                                      "tensor<4xf32>\n  return %y : tensor<4xf32>"), target="reference").module
    spec = TensorSpec((4,), "f32")
    twice = [Step("compute", [0, 2], callee="reference.stablehlo", kernel="k", effects=[READ, WRITE],
                  backend="reference"),
             Step("compute", [2, 1], callee="reference.stablehlo", kernel="k", effects=[READ, WRITE],
                  backend="reference")]
    bm = ByreModule(args=[Arg("x", "input", spec), Arg("y", "output", spec)],
                    buffers=[Buffer(0, spec, "arg", arg=0), Buffer(1, spec, "arg", arg=1), Buffer(2, spec, "alloc")],
                    steps=twice, kernels={"k": next(iter(double.kernels.values()))}, weights={}, version="1.0")
    plan_memory(bm)
    old = re.sub(r"byre\.arenas = \{[^}]*\}, ", "", Artifact(bm).text(elide_payloads=False))
    assert "byre.arenas" not in old and "byre.device" not in old and 'byre.version = "1.0"' in old
    assert "byre.arena_bytes = 64 : i64" in old
    p = tmp_path / "old.byre.mlir"
    p.write_text(old)
    m = read_artifact(p).module
    assert m.version == "1.0" and m.arenas == {"cpu": 64} and m.buffers[2].device == "cpu"
    x = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    np.testing.assert_array_equal(byteir_core.load(p)(x), 4 * x)


def test_truncated_bytecode(art, tmp_path):
    data = open(art.path, "rb").read()
    for cut in (8, len(data) // 2, len(data) - 3):
        p = tmp_path / f"cut{cut}.byre"
        p.write_bytes(data[:cut])
        with pytest.raises(ByreFormatError, match="truncated or corrupted|no byre.version") as e:
            byteir_core.load(p)
        assert str(p) in str(e.value)


def test_corrupted_payload_is_detected(art, tmp_path):
    data = bytearray(open(art.path, "rb").read())
    # flip bytes inside the weight payload (float data of 0.01*i values), not in the structure
    w = art.module.weights["w0"]
    at = bytes(data).find(w[1024:1056])
    assert at > 0
    data[at:at + 4] = b"\x00\x00\xc0\x7f"
    p = tmp_path / "corrupt.byre"
    p.write_bytes(bytes(data))
    with pytest.raises(ByreFormatError, match="corrupted payload"):
        read_artifact(p)


@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"\x7fELF\x02\x01\x01" + bytes(100), "not a ByRE artifact"),
    (b"module {\n}\n", "not a ByRE artifact"),
    (b'module attributes {byre.version = "1.1"} {\n}\n', "no entry function"),
    (b'module attributes {byre.version = "one"} {\n}\n', "not MAJOR.MINOR"),
    (b'module attributes {byre.version = "1.0"} { func.func @main( }', "truncated or corrupted MLIR text"),
])
def test_not_byre(tmp_path, content, needle):
    p = tmp_path / "x.byre"
    p.write_bytes(content)
    with pytest.raises(ByreFormatError, match=needle) as e:
        read_artifact(p)
    assert str(p) in str(e.value)


def test_structural_errors_name_the_problem(art, tmp_path):
    p = _rewrite(art.path, tmp_path, 'memory_effects = [1 : i32, 1 : i32, 2 : i32]',
                 'memory_effects = [1 : i32, 2 : i32]')
    with pytest.raises(ByreFormatError, match="memory_effects"):
        read_artifact(p)
    p = _rewrite(art.path, tmp_path, 'kernel = "k0_reference"', 'kernel = "k9_missing"', "k.byre.mlir")
    with pytest.raises(ByreFormatError, match="k9_missing"):
        read_artifact(p)
    p = _rewrite(art.path, tmp_path, 'byre.argtype = "input"', 'byre.argtype = "banana"', "a.byre.mlir")
    with pytest.raises(ByreFormatError, match="byre.argtype"):
        read_artifact(p)


def test_missing_file():
    with pytest.raises(ByreFormatError, match="cannot read"):
        read_artifact("/nonexistent/model.byre")


def test_sha256_pinning(art):
    good = art.sha256()
    assert byteir_core.load(art.path, expected_sha256=good) is not None
    with pytest.raises(ArtifactIntegrityError, match="pinned"):
        byteir_core.load(art.path, expected_sha256="0" * 64)


def test_sha256_of_a_text_artifact_is_the_file_hash(art, tmp_path):
    import hashlib

    p = art.save(tmp_path / "m.byre.mlir")
    text_art = read_artifact(p)
    assert text_art.sha256() == hashlib.sha256(p.read_bytes()).hexdigest()
    assert byteir_core.load(p, expected_sha256=text_art.sha256()) is not None


def test_failed_save_leaves_nothing_behind(art, tmp_path, monkeypatch):
    target = tmp_path / "out.byre"

    def boom(self):
        raise OSError("disk full")

    monkeypatch.setattr(type(art), "to_bytes", boom)
    with pytest.raises(OSError):
        art.save(target)
    assert list(tmp_path.iterdir()) == []
