"""ByRE 1.2: text <-> bytecode round trips, the header and digest line, the version rules, and every kind of bad
artifact gives ByreFormatError."""

import re

import numpy as np
import pytest
from programs import MLP, func, mlp_numpy

import byteir_core
from byteir_core.byre import Artifact, container, read_artifact
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
    assert re.match(r"// byre 1\.2 sha256=[0-9a-f]{64} bytes=\d+\n", text)
    assert "byre.version = \"1.2\"" in text and '"byre.compute"' in text and "byre.entry_point" in text
    assert open(art.path, "rb").read().startswith(b"ML\xefR\x0dByRE 1.2 container")
    from_text = read_artifact(text_path)
    from_bytes = read_artifact(art.path)
    assert from_text.integrity == from_bytes.integrity == "sha256"
    assert from_bytes.to_bytes() == open(art.path, "rb").read()  # the whole file: header and body
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
    """A text artifact edited as a tool would: the digest line recomputed, so the module's own checks are what
    refuse it (an edit that kept the old line is refused for the digest alone, see test_text_digest_line)."""
    text = read_artifact(path).text(elide_payloads=False)
    assert old in text, old
    p = tmp_path / name
    p.write_bytes(container.wrap_text(text.replace(old, new, 1), "1.2"))
    return p


def test_newer_major_version_is_refused_naming_both(art, tmp_path):
    p = _rewrite(art.path, tmp_path, 'byre.version = "1.2"', 'byre.version = "2.3"')
    with pytest.raises(ByreFormatError) as e:
        read_artifact(p)
    assert str(p) in str(e.value) and "2.3" in str(e.value) and "up to 1.2" in str(e.value)


def test_newer_minor_version_is_refused_by_name(art, tmp_path):
    """A minor bump may place buffers where an older reader would not look (1.1: devices): refuse, naming both."""
    p = _rewrite(art.path, tmp_path, 'byre.version = "1.2"', 'byre.version = "1.3"')
    with pytest.raises(ByreFormatError, match=r"written as ByRE 1\.3, but this reader \(byteir-core .+\) "
                                              r"understands ByRE up to 1\.2; upgrade byteir-core") as e:
        read_artifact(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("version", ["1.3", "2.0"])
def test_newer_version_in_the_header_is_refused_by_name(art, tmp_path, version):
    """The header's version is checked before MLIR parses anything (a newer major before its digest too)."""
    body = container.wrap(b"ML\xefR\x0dMLIR\0" + b"whatever a later version holds", version)
    for p, data in ((tmp_path / "new.byre", body),
                    (tmp_path / "new.byre.mlir", container.wrap_text("module {}\n", version))):
        p.write_bytes(data)
        with pytest.raises(ByreFormatError, match=rf"written as ByRE {re.escape(version)}, but this reader "
                                                  r"\(byteir-core .+\) understands ByRE up to 1\.2") as e:
            read_artifact(p)
        assert str(p) in str(e.value)


def test_what_a_byre_1_1_reader_says_of_a_1_2_file(art):
    """ByRE 1.0/1.1 readers hand a .byre to MLIR's bytecode reader: the 1.2 header is an MLIR bytecode prelude whose
    producer string names the version, and MLIR quotes it in its error; the text's byre.version = "1.2" is refused by
    name by their own version check."""
    from byteir_core.mlir import diagnostics_to_text, ir, new_context

    with new_context(), ir.Location.unknown():
        with pytest.raises(ir.MLIRError) as e:
            ir.Module.parse(art.to_bytes())
    said = diagnostics_to_text(e.value)
    assert "produced by: ByRE 1.2 container: needs a reader that understands ByRE 1.2 (upgrade byteir-core)" in said


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
    p.write_text(old)  # as 1.0 wrote text: no digest line
    read = read_artifact(p)
    m = read.module
    assert m.version == "1.0" and m.arenas == {"cpu": 64} and m.buffers[2].device == "cpu"
    assert read.integrity == "none: text without a '// byre' digest line"
    x = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    np.testing.assert_array_equal(byteir_core.load(p)(x), 4 * x)


def test_truncated_bytecode(art, tmp_path):
    data = open(art.path, "rb").read()
    for cut in (8, 60, 200, len(data) // 2, len(data) - 3):
        p = tmp_path / f"cut{cut}.byre"
        p.write_bytes(data[:cut])
        with pytest.raises(ByreFormatError, match="truncated or corrupted|damaged ByRE header") as e:
            byteir_core.load(p)
        assert str(p) in str(e.value)
    p = tmp_path / "longer.byre"
    p.write_bytes(data + b"\0")
    with pytest.raises(ByreFormatError, match=r"corrupted, bytes were added: the header says \d+ bytes"):
        byteir_core.load(p)


def test_corrupted_payload_is_detected(art, tmp_path):
    data = bytearray(open(art.path, "rb").read())
    # flip bytes inside the weight payload (float data of 0.01*i values), not in the structure
    w = art.module.weights["w0"]
    at = bytes(data).find(w[1024:1056])
    assert at > 0
    data[at:at + 4] = b"\x00\x00\xc0\x7f"
    p = tmp_path / "corrupt.byre"
    p.write_bytes(bytes(data))
    with pytest.raises(ByreFormatError, match=r"corrupted: its sha256 is [0-9a-f]{64}, but its header records"):
        read_artifact(p)
    # with the header's digest recomputed over the changed body, the payload digest inside still catches it
    header = len(data) - len(container.open_bytes(open(art.path, "rb").read(), art.path, "1.2").body)
    p.write_bytes(container.wrap(bytes(data[header:]), "1.2"))
    with pytest.raises(ByreFormatError, match="corrupted payload"):
        read_artifact(p)


def test_text_digest_line(art, tmp_path):
    """Text edited by hand: with the old digest line it is refused, saying how to load it; without the line it loads,
    marked unverified; a damaged line is refused."""
    p = art.save(tmp_path / "m.byre.mlir")
    lines = p.read_text().split("\n", 1)
    edited = lines[1].replace('"byre.argname" = "input0"', '"byre.argname" = "x"').replace(
        'byre.argname = "input0"', 'byre.argname = "x"')
    assert edited != lines[1]
    p.write_text(lines[0] + "\n" + edited)
    with pytest.raises(ByreFormatError, match=r"changed since it was written.* delete the first line to load it "
                                              r"unverified") as e:
        read_artifact(p)
    assert str(p) in str(e.value)
    p.write_text(edited)
    unverified = read_artifact(p)
    assert [a.name for a in unverified.module.args][0] == "x"
    assert unverified.integrity.startswith("none: text") and unverified.summary()["integrity"] == unverified.integrity
    for bad in (lines[0].replace("sha256=", "sha=") + "\n", lines[0][:-3] + "\n", "// byre 1.2\n"):
        p.write_text(bad + lines[1])
        with pytest.raises(ByreFormatError, match="damaged digest line|changed since it was written"):
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
