"""The `byteir` command, run as a user runs it: a subprocess, exit codes, files, messages."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert "output 0 output0: float32 [4, 8] sum=" in r.stdout and "ran in" in r.stdout

    x = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input0=x)
    r = byteir("run", out, "--inputs", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["output0"], mlp_numpy(x), rtol=1e-5, atol=1e-6)

    r = byteir("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["byre_version"] == "1.0" and info["manifest"]["target"] == "cpu"
    assert info["manifest"]["byteir_core"] and info["weights"]["bytes"] > 0 and info["kernels"]
    assert len(info["sha256"]) == 64

    r = byteir("inspect", out, "--extract", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "k").iterdir())
    assert [f.name.split(".")[0] for f in files] == [k["name"] for k in info["kernels"]]
    magic = {"stablehlo-portable": b"ML\xefR", "elf-shared-object": b"\x7fELF", "npz-operands": b"PK"}
    for f, k in zip(files, info["kernels"]):
        assert f.stat().st_size == k["bytes"] and f.read_bytes().startswith(magic[k["format"]])
    assert '"byre.compute"' in r.stdout and "ByRE 1.0" in r.stdout

    r = byteir("run", out, "--sha256", "f" * 64)
    assert_clean_error(r, "pinned")


def test_text_artifact_and_opt(tmp_path):
    out = tmp_path / "x.byre.mlir"
    assert byteir("compile", MLP, "-o", out).returncode == 0
    assert out.read_text().startswith("module attributes {")
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
    assert_clean_error(byteir("compile", bad, "-o", out), "stablehlo.custom_call x1", f"{bad}\":2:")
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
