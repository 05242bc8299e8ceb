"""The `byteir` command, run as a user runs it: a subprocess, exit codes, files, messages."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from programs import mlp_numpy

ROOT = Path(__file__).resolve().parents[1]
MLP = str(ROOT / "examples" / "mlp.mlir")


def byteir(*args, cwd=None, **env):
    return subprocess.run([sys.executable, "-m", "byteir_core.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **env})


def assert_clean_error(r, *needles):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error:"), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_compile_run_inspect(tmp_path):
    out = tmp_path / "x.byre"
    r = byteir("compile", MLP, "-o", out, "-v")
    assert r.returncode == 0, r.stderr
    assert out.exists() and "fallback chain: cpu -> reference" in r.stderr and "stablehlo.dot_general" in r.stderr

    r = byteir("run", out)
    assert r.returncode == 0, r.stderr
    assert "output 0 output0: float32 [4, 8] sum=" in r.stdout and "warm median" in r.stdout

    x = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input0=x)
    r = byteir("run", out, "--inputs", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["output0"], mlp_numpy(x), rtol=1e-5, atol=1e-6)

    r = byteir("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["byre_version"] == "1.2" and info["manifest"]["target"] == "cpu"
    assert info["manifest"]["byteir_core"] and info["weights"]["bytes"] > 0 and info["kernels"]
    assert len(info["sha256"]) == 64

    r = byteir("inspect", out, "--extract", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "k").iterdir())
    assert [f.name.split(".")[0] for f in files] == [k["name"] for k in info["kernels"]]
    magic = {"stablehlo-portable": b"ML\xefR", "elf-shared-object": b"\x7fELF", "npz-operands": b"PK"}
    for f, k in zip(files, info["kernels"]):
        assert f.stat().st_size == k["bytes"] and f.read_bytes().startswith(magic[k["format"]])
    assert '"byre.compute"' in r.stdout and "ByRE 1.2" in r.stdout

    r = byteir("run", out, "--sha256", "f" * 64)
    assert_clean_error(r, "pinned")


def test_text_artifact_and_opt(tmp_path):
    out = tmp_path / "x.byre.mlir"
    assert byteir("compile", MLP, "-o", out).returncode == 0
    first, rest = out.read_text().split("\n", 1)  # ByRE 1.2: a digest line, then the module
    assert re.fullmatch(r"// byre 1\.2 sha256=[0-9a-f]{64} bytes=\d+", first) and rest.startswith("module attributes {")
    r = byteir("run", out)
    assert r.returncode == 0 and "float32 [4, 8]" in r.stdout
    r = byteir("opt", MLP, "--pass-groups", "legalize")
    assert r.returncode == 0 and "stablehlo.iota" in r.stdout and "func.func @main" in r.stdout
    r = byteir("opt", MLP, "--pass-groups", "fold-constants")
    assert r.returncode == 0 and "stablehlo.iota" not in r.stdout


def test_errors_are_one_clean_message_and_leave_no_file(tmp_path):
    out = tmp_path / "o.byre"
    assert_clean_error(byteir("compile", tmp_path / "missing.mlir", "-o", out), "missing.mlir", "No such file")
    bad = tmp_path / "bad.mlir"
    bad.write_text("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
                   "  %y = stablehlo.custom_call @vendor_op(%x) : (tensor<4xf32>) -> tensor<4xf32>\n"
                   "  return %y : tensor<4xf32>\n}\n")
    assert_clean_error(byteir("compile", bad, "-o", out), "stablehlo.custom_call x1", f"{bad}:2:")
    assert_clean_error(byteir("compile", MLP, "-o", out, "--target", "nope"), "unknown target 'nope'")
    assert not out.exists() and not list(tmp_path.glob(".o.byre*"))
    good = tmp_path / "g.byre"
    assert byteir("compile", MLP, "-o", good).returncode == 0
    trunc = tmp_path / "t.byre"
    trunc.write_bytes(good.read_bytes()[:300])
    assert_clean_error(byteir("run", trunc), str(trunc), "truncated or corrupted")
    assert_clean_error(byteir("inspect", tmp_path / "nothing.byre"), "cannot read")
    np.savez(tmp_path / "bad.npz", input0=np.zeros((4, 15), np.float32))
    assert_clean_error(byteir("run", good, "--inputs", tmp_path / "bad.npz"),
                       "expected f32 [4, 16], got float32 [4, 15]")


def test_input_shape_makes_dynamic_program_static(tmp_path):
    dyn = tmp_path / "dyn.mlir"
    dyn.write_text("func.func @main(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {\n"
                   "  %y = stablehlo.multiply %x, %x : tensor<?x4xf32>\n  return %y : tensor<?x4xf32>\n}\n")
    out = tmp_path / "dyn.byre"
    assert_clean_error(byteir("compile", dyn, "-o", out), "dynamic shapes", "--input-shape")
    r = byteir("compile", dyn, "-o", out, "--input-shape", "3x4")
    assert r.returncode == 0, r.stderr
    r = byteir("inspect", out, "--json")
    assert json.loads(r.stdout)["inputs"] == [{"name": "input0", "type": "3x4xf32"}]


def test_dump_dir_and_default_output_name(tmp_path):
    r = byteir("compile", MLP, "--dump-dir", tmp_path / "dump", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mlp.byre").exists()
    assert len(list((tmp_path / "dump").glob("*.mlir"))) >= 7


def test_only_the_core(tmp_path):
    """BYTEIR_PLUGINS= (empty) loads no third-party plugin: compile and run with the built-ins alone."""
    out = tmp_path / "x.byre"
    r = byteir("compile", MLP, "-o", out, "--target", "cpu", "-v", BYTEIR_PLUGINS="")
    assert r.returncode == 0, r.stderr
    assert "no installed backend serves target 'cpu'" in r.stderr
    r = byteir("run", out, BYTEIR_PLUGINS="")
    assert r.returncode == 0 and "float32 [4, 8]" in r.stdout
    r = byteir("list-plugins", "--json", BYTEIR_PLUGINS="")
    rows = {p["name"]: p["status"] for p in json.loads(r.stdout)}
    assert rows["asic_stub"] == "disabled" and rows["reference"] == "ok"
    r = byteir("compile", MLP, "-o", out, "--target", "asic_stub", BYTEIR_PLUGINS="")
    assert_clean_error(r, "unknown target 'asic_stub'")


def test_list_plugins_json():
    r = byteir("list-plugins", "--json")
    assert r.returncode == 0
    rows = {p["name"]: p for p in json.loads(r.stdout)}
    assert rows["reference"]["status"] == "ok" and rows["asic_stub"]["status"] == "ok"
    assert "frontend stablehlo" in rows["stablehlo"]["registers"]


# -- further checks of the same commands -------------------------------------------------------------------

def mlp_from_the_source(x: np.ndarray) -> np.ndarray:
    """examples/mlp.mlir written out element by element: w1[i,j] = i*0.01, b1 = 0.1, w2[i,j] = j*0.05,
    softmax over the last axis (max-subtracted), all in float64."""
    w1 = np.fromfunction(lambda i, j: i * 0.01, (16, 32))
    w2 = np.fromfunction(lambda i, j: j * 0.05, (32, 8))
    h = np.tanh(np.einsum("bi,ij->bj", x.astype(np.float64), w1) + 0.1)
    o = np.einsum("bi,ij->bj", h, w2)
    e = np.exp(o - o.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def parse_output_line(stdout: str) -> tuple[str, list[int], float, float]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("output 0 "))
    head, sums = line.split(" sum=")
    total, l2 = sums.split(" l2=")
    dtype, shape = head.split(": ", 1)[1].split(" ", 1)
    return dtype, json.loads(shape), float(total), float(l2)


def test_run_random_inputs_checksum_and_npz_round_trip(tmp_path):
    out = tmp_path / "x.byre"
    r = byteir("compile", MLP, "-o", out, "-v")
    assert r.returncode == 0, r.stderr
    assert "fallback chain:" in r.stderr and "reference" in r.stderr.split("fallback chain:")[1].splitlines()[0]
    assert f"wrote {out}" in r.stderr

    # random inputs, seeded: the printed checksum is the one of the MLP applied to those inputs
    r1, r2, r3 = byteir("run", out), byteir("run", out, "--seed", "0"), byteir("run", out, "--seed", "1")
    assert r1.returncode == r2.returncode == r3.returncode == 0, (r1.stderr, r2.stderr, r3.stderr)
    dtype, shape, total, l2 = parse_output_line(r1.stdout)
    assert (dtype, shape) == ("float32", [4, 8])
    x0 = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    ref = mlp_from_the_source(x0)
    assert total == pytest.approx(ref.sum(), rel=1e-5) and l2 == pytest.approx(np.sqrt((ref**2).sum()), rel=1e-5)
    assert parse_output_line(r2.stdout) == parse_output_line(r1.stdout)
    assert parse_output_line(r3.stdout)[3] != l2

    # --inputs / --output against an independent NumPy computation, by name and positionally
    x = np.random.default_rng(11).uniform(-3, 3, (4, 16)).astype(np.float32)
    np.savez(tmp_path / "named.npz", input0=x)
    np.savez(tmp_path / "positional.npz", x)
    for src in ("named.npz", "positional.npz"):
        res = tmp_path / f"out-{src}"
        r = byteir("run", out, "--inputs", tmp_path / src, "--output", res)
        assert r.returncode == 0, r.stderr
        assert f"wrote {res}" in r.stdout
        with np.load(res) as z:
            assert list(z.keys()) == ["output0"]
            y = z["output0"]
        assert y.dtype == np.float32 and y.shape == (4, 8)
        np.testing.assert_allclose(y, mlp_from_the_source(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y.sum(axis=-1), np.ones(4), rtol=1e-5)


def test_verbose_compile_and_inspect_show_devices_and_crossings(tmp_path):
    """The ASIC template's device: where its steps run, its arena, and the copies in and out of it."""
    pytest.importorskip("byteir_backend_asic_stub")
    out = tmp_path / "x.byre"
    r = byteir("compile", MLP, "-o", out, "--target", "asic_stub", "-v", BYTEIR_DISABLE_PLUGINS="cpu,cuda")
    assert r.returncode == 0, r.stderr
    assert re.search(r"steps per device: cpu 2, asic_stub 2; arenas: cpu \d+ bytes, asic_stub \d+ bytes", r.stderr)
    assert re.search(r"copies asic_stub -> cpu: 2 \(\d+ bytes per run\)", r.stderr), r.stderr
    assert re.search(r"copies cpu -> asic_stub: 2 \(\d+ bytes per run\)", r.stderr), r.stderr
    r = byteir("inspect", out, "--summary-only")
    assert r.returncode == 0, r.stderr
    assert re.search(r"arenas: cpu \d+ bytes, asic_stub \d+ bytes", r.stdout) and "ByRE 1.2" in r.stdout
    r = byteir("run", out)
    assert r.returncode == 0 and "output 0 output0: float32 [4, 8]" in r.stdout, r.stderr


def test_target_cuda_without_its_plugin_warns_where_the_user_looks(tmp_path):
    """Without byteir-backend-cuda, --target cuda compiles for the host: a warning on stderr says so, names what to
    install and where the ops run; the artifact's report and manifest tell the same story."""
    out = tmp_path / "x.byre"
    r = byteir("compile", MLP, "-o", out, "--target", "cuda", BYTEIR_DISABLE_PLUGINS="cuda")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"wrote {out}") and lines[0].endswith("target cuda")
    assert re.fullmatch(r"warning: target 'cuda' is not installed \(pip install byteir-backend-cuda\): this artifact "
                        r"runs its ops on reference x\d+ \(device cpu\) instead", lines[1]), lines
    r = byteir("inspect", out, "--json")
    info = json.loads(r.stdout)
    assert info["manifest"]["target"] == "cuda" and set(info["ops_per_backend"]) == {"reference"}
    assert info["computes_per_device"] == {"cpu": 1} and info["arenas"] == {}
    r = byteir("compile", MLP, "-o", out, "--target", "cpu", "-v")  # an installed target: no warning
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_inspect_manifest_and_extract(tmp_path):
    from importlib import metadata

    out = tmp_path / "x.byre"
    assert byteir("compile", MLP, "-o", out).returncode == 0
    r = byteir("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    m = info["manifest"]
    assert info["byre_version"] == "1.2"
    assert m["byteir_core"] == metadata.version("byteir-core") and m["target"] == "cpu"
    assert m["frontend"] == "stablehlo" and "reference" in m["plugins"]
    assert m["plugins"]["reference"] == f"byteir-core {metadata.version('byteir-core')}"
    assert info["inputs"] == [{"name": "input0", "type": "4x16xf32"}]
    assert info["outputs"] == [{"name": "output0", "type": "4x8xf32"}]
    assert info["weights"]["bytes"] > 0 and info["kernels"]
    assert all(k["bytes"] > 0 for k in info["kernels"])

    d = tmp_path / "kernels"
    r = byteir("inspect", out, "--summary-only", "--extract", d)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in d.iterdir())
    assert len(files) == len(info["kernels"])
    assert sorted(f.split(".")[0] for f in files) == sorted(k["name"] for k in info["kernels"])
    assert sum(p.stat().st_size for p in d.iterdir()) == sum(k["bytes"] for k in info["kernels"])
    assert '"byre.compute"' not in r.stdout  # --summary-only
    assert r.stdout.count("extracted ") == len(files)


def test_compiled_artifact_is_readable_per_the_umask(tmp_path):
    """An artifact is a deliverable: saved with the permissions any other file written now would get."""
    old = os.umask(0o022)
    try:
        out = tmp_path / "x.byre"
        text = tmp_path / "x.byre.mlir"
        assert byteir("compile", MLP, "-o", out).returncode == 0
        assert byteir("compile", MLP, "-o", text).returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE(text.stat().st_mode) == 0o644


def test_text_artifact_runs_like_the_bytecode(tmp_path):
    text, binary = tmp_path / "x.byre.mlir", tmp_path / "x.byre"
    assert byteir("compile", MLP, "-o", text).returncode == 0
    assert byteir("compile", MLP, "-o", binary).returncode == 0
    assert "byre.compute" in text.read_text()
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input0=x)
    for art in (text, binary):
        r = byteir("run", art, "--inputs", tmp_path / "in.npz", "--output", tmp_path / f"{art.name}.npz")
        assert r.returncode == 0, r.stderr
        with np.load(tmp_path / f"{art.name}.npz") as z:
            np.testing.assert_allclose(z["output0"], mlp_from_the_source(x), rtol=1e-5, atol=1e-6)


def test_opt_legalize_prints_stablehlo(tmp_path):
    r = byteir("opt", MLP, "--pass-groups", "legalize")
    assert r.returncode == 0, r.stderr
    assert "func.func @main(%arg0: tensor<4x16xf32>) -> tensor<4x8xf32>" in r.stdout
    assert "stablehlo.dot_general" in r.stdout and "stablehlo.reduce" in r.stdout and "error" not in r.stderr
    r = byteir("opt", MLP, "--pass-groups", "legalize", "-o", tmp_path / "o.mlir")
    assert r.returncode == 0 and r.stdout == ""
    assert "stablehlo.dot_general" in (tmp_path / "o.mlir").read_text()


def assert_one_line_error(r, *needles):
    assert_clean_error(r, *needles)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_each_failed_compile_leaves_no_file(tmp_path):
    out = tmp_path / "o.byre"
    assert_one_line_error(byteir("compile", tmp_path / "missing.mlir", "-o", out), "missing.mlir")
    assert list(tmp_path.iterdir()) == []

    bad = tmp_path / "bad.mlir"
    bad.write_text("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
                   "  %a = stablehlo.abs %x : tensor<4xf32>\n"
                   "  %y = stablehlo.custom_call @vendor_op(%a) : (tensor<4xf32>) -> tensor<4xf32>\n"
                   "  return %y : tensor<4xf32>\n}\n")
    r = byteir("compile", bad, "-o", out)
    assert_clean_error(r, "stablehlo.custom_call", f"{bad}:3:")
    assert r.stderr.count("error:") == 1 and "stablehlo.abs" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mlir"]

    assert_one_line_error(byteir("compile", MLP, "-o", out, "--target", "nope"), "'nope'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mlir"]


def test_truncated_artifact_is_one_clean_error(tmp_path):
    good = tmp_path / "g.byre"
    assert byteir("compile", MLP, "-o", good).returncode == 0
    data = good.read_bytes()
    for n in (8, len(data) // 2, len(data) - 1):
        trunc = tmp_path / f"t{n}.byre"
        trunc.write_bytes(data[:n])
        assert_one_line_error(byteir("run", trunc), str(trunc))


def test_run_with_a_missing_inputs_file_is_a_clean_error(tmp_path):
    good = tmp_path / "g.byre"
    assert byteir("compile", MLP, "-o", good).returncode == 0
    assert_one_line_error(byteir("run", good, "--inputs", tmp_path / "nothing.npz"), "nothing.npz")


def test_input_shape_artifact_runs_statically(tmp_path):
    dyn = tmp_path / "dyn.mlir"
    dyn.write_text("func.func @main(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {\n"
                   "  %y = stablehlo.multiply %x, %x : tensor<?x4xf32>\n  return %y : tensor<?x4xf32>\n}\n")
    out = tmp_path / "dyn.byre"
    r = byteir("compile", dyn, "-o", out, "--input-shape", "5x4")
    assert r.returncode == 0, r.stderr
    info = json.loads(byteir("inspect", out, "--json").stdout)
    assert info["inputs"] == [{"name": "input0", "type": "5x4xf32"}]
    assert info["outputs"] == [{"name": "output0", "type": "5x4xf32"}]
    x = np.arange(20, dtype=np.float32).reshape(5, 4) - 7
    np.savez(tmp_path / "in.npz", input0=x)
    r = byteir("run", out, "--inputs", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_array_equal(z["output0"], x * x)
    np.savez(tmp_path / "wrong.npz", input0=np.zeros((3, 4), np.float32))
    assert_clean_error(byteir("run", out, "--inputs", tmp_path / "wrong.npz"), "[5, 4]")


def test_run_profile_prints_the_slowest_steps(tmp_path):
    out = tmp_path / "x.byre"
    assert byteir("compile", MLP, "-o", out).returncode == 0
    r = byteir("run", out, "--profile", "3", "--top", "2")
    assert r.returncode == 0, r.stderr
    assert re.search(r"profile: \d+ steps, [\d.]+ ms in steps", r.stdout) and "slowest 2 steps" in r.stdout
    assert "dot_general" in r.stdout


def test_compile_for_a_chosen_cpu(tmp_path):
    from byteir_core.byre import read_artifact

    out = tmp_path / "v3.byre"
    r = byteir("compile", MLP, "-o", out, "--cpu", "x86-64-v3")
    assert r.returncode == 0, r.stderr
    natives = [s for s in read_artifact(str(out)).module.steps if s.callee == "cpu.native"]
    assert natives and all(set(s.attrs["isa"].split(",")) == {"avx", "avx2", "fma", "f16c"} for s in natives)
    bad = byteir("compile", MLP, "-o", tmp_path / "bad.byre", "--cpu", "not-a-cpu")
    assert bad.returncode != 0 and "LLVM does not know this CPU" in bad.stderr and not (tmp_path / "bad.byre").exists()
