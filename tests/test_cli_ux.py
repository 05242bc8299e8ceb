"""What a new user trips over in the `byteir` command: timings that mean something, a profile table readable in
an 80-column terminal or a pipe, one-line errors for every file the command writes or reads, and --help that
lists the valid values."""

import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from test_cli import MLP, assert_clean_error, byteir

import byteir_core


def assert_one_line_error(r, *needles):
    assert_clean_error(r, *needles)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture(scope="module")
def mlp_byre(tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "mlp.byre"
    r = byteir("compile", MLP, "-o", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def two_inputs_byre(tmp_path_factory):
    d = tmp_path_factory.mktemp("two")
    src = d / "sub.mlir"
    src.write_text("func.func @main(%a: tensor<3xf32>, %b: tensor<3xf32>) -> tensor<3xf32> {\n"
                   "  %y = stablehlo.subtract %a, %b : tensor<3xf32>\n  return %y : tensor<3xf32>\n}\n")
    r = byteir("compile", src, "-o", d / "sub.byre")
    assert r.returncode == 0, r.stderr
    return d / "sub.byre"


# -- A: the time printed is a warm median over many runs, not one cold call ---------------------------------

TIMING = re.compile(r"warm median ([\d.]+) ms over (\d+) runs \(min ([\d.]+) ms; first call ([\d.]+) ms\)")


def test_run_prints_a_warm_median_over_many_runs(mlp_byre):
    r = byteir("run", mlp_byre)
    assert r.returncode == 0, r.stderr
    m = TIMING.search(r.stdout)
    assert m, r.stdout
    median, n, least, first = float(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert n >= 5 and 0 < least <= median <= first

    r = byteir("run", mlp_byre, "--repeat", "7")
    assert r.returncode == 0, r.stderr
    m = TIMING.search(r.stdout)
    assert m and m[2] == "7", r.stdout
    assert "output 0 output0: float32 [4, 8] sum=" in r.stdout


def test_run_repeat_must_be_positive(mlp_byre):
    r = byteir("run", mlp_byre, "--repeat", "0")
    assert r.returncode == 2 and "--repeat" in r.stderr and "Traceback" not in r.stderr


# -- B: the --profile table keeps its numbers in a narrow terminal and in a pipe ----------------------------

def run_piped(*args, **env):
    """The command with stdout a pipe and, unless given, no COLUMNS: rich then lays out for 80 columns."""
    e = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "byteir_core.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=e)


@pytest.mark.parametrize("columns", ["80", None, "60"])
def test_profile_table_is_readable_when_narrow_or_piped(mlp_byre, columns):
    r = run_piped("run", mlp_byre, "--profile", "3", **({"COLUMNS": columns} if columns else {}))
    assert r.returncode == 0, r.stderr
    width = int(columns or 80)
    lines = r.stdout.splitlines()
    fit = lines if width >= 80 else [ln for ln in lines if ln[:1] in "┏┃┡│└"]  # at 60 the table alone
    assert all(len(ln) <= width for ln in fit), "\n".join(ln for ln in fit if len(ln) > width)
    header = next(ln for ln in lines if "backend" in ln and ln.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")][:4] == ["step", "backend", "µs", "%"], header
    rows = [ln for ln in lines if ln.startswith("│")]
    assert len(rows) == 4, r.stdout
    backends = set()
    for row in rows:
        step, backend, us, pct = [c.strip() for c in row.strip("│").split("│")][:4]
        assert step.isdigit() and re.fullmatch(r"\d+\.\d", us) and re.fullmatch(r"\d+\.\d", pct), row
        assert "…" not in backend, row
        backends.add(backend)
    assert backends == {"cpu", "cpu_blas"}, r.stdout


# -- C: every file the command writes fails as one line naming the path ------------------------------------

def test_inspect_extract_into_an_unwritable_place_is_one_line(mlp_byre, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_one_line_error(byteir("inspect", mlp_byre, "--extract", afile / "k"), f"cannot write --extract {afile}")
    assert_one_line_error(byteir("inspect", mlp_byre, "--summary-only", "--extract", "/proc/forbidden"),
                          "cannot write --extract /proc/forbidden")


def test_compile_opt_and_dump_dir_into_an_unwritable_place_are_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_one_line_error(byteir("compile", MLP, "-o", afile / "x.byre"), f"cannot write -o {afile / 'x.byre'}")
    assert_one_line_error(byteir("compile", MLP, "-o", "/proc/x.byre"), "cannot write -o /proc/x.byre")
    assert_one_line_error(byteir("compile", MLP, "-o", tmp_path / "x.byre", "--dump-dir", afile / "d"),
                          f"cannot write --dump-dir {afile / 'd'}")
    assert_one_line_error(byteir("opt", MLP, "-o", afile / "o.mlir"), f"cannot write -o {afile / 'o.mlir'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_run_output_into_an_unwritable_place_is_one_line(mlp_byre, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_one_line_error(byteir("run", mlp_byre, "--output", afile / "o.npz"), "cannot write --output")


# -- D: an empty model file is named as such ---------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "  \n\n\t\n", "// nothing here\n   // but comments\n\n"])
def test_empty_mlir_file_is_named(tmp_path, text):
    src = tmp_path / "empty.mlir"
    src.write_text(text)
    out = tmp_path / "empty.byre"
    assert_one_line_error(byteir("compile", src, "-o", out), str(src), "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mlir"]
    assert_one_line_error(byteir("opt", src), str(src), "empty")


# -- E: an .npz whose names do not match the inputs is refused, not used by position -----------------------

def test_inputs_with_other_names_are_refused(two_inputs_byre, tmp_path):
    a, b = np.array([5, 6, 7], np.float32), np.array([1, 1, 2], np.float32)
    np.savez(tmp_path / "in.npz", a=a, b=b)
    assert_one_line_error(byteir("run", two_inputs_byre, "--inputs", tmp_path / "in.npz"),
                          "in.npz holds ['a', 'b']", "the artifact's inputs are ['input0', 'input1']")
    np.savez(tmp_path / "one.npz", input0=a)
    assert_one_line_error(byteir("run", two_inputs_byre, "--inputs", tmp_path / "one.npz"),
                          "['input0']", "['input0', 'input1']")


def test_inputs_saved_positionally_are_used_in_order(two_inputs_byre, tmp_path):
    a, b = np.array([5, 6, 7], np.float32), np.array([1, 1, 2], np.float32)
    np.savez(tmp_path / "pos.npz", a, b)  # keys arr_0, arr_1
    np.savez(tmp_path / "named.npz", input1=b, input0=a)
    for src in ("pos.npz", "named.npz"):
        r = byteir("run", two_inputs_byre, "--inputs", tmp_path / src, "--output", tmp_path / f"out-{src}")
        assert r.returncode == 0, r.stderr
        with np.load(tmp_path / f"out-{src}") as z:
            np.testing.assert_array_equal(z["output0"], a - b)


# -- F: --help documents every option with its valid values -------------------------------------------------

def test_every_option_of_every_subcommand_has_help():
    from byteir_core.cli import build_parser

    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= {"compile", "run", "inspect", "opt", "list-plugins", "cache"}
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), (name, action.dest)


def test_compile_and_opt_help_list_installed_targets_frontends_and_pass_groups():
    from byteir_core.compiler.partition import WELL_KNOWN_TARGETS, _targets
    from byteir_core.plugins import load_registry

    reg = load_registry()
    targets = set(_targets(reg)) | set(WELL_KNOWN_TARGETS)
    groups = [n for n, g in reg.pass_groups.items() if g.stage == "hlo"]
    assert {"cpu", "reference"} <= targets and "stablehlo" in reg.frontends and "legalize" in groups
    for cmd in ("compile", "opt"):
        r = byteir(cmd, "--help")
        assert r.returncode == 0, r.stderr
        text = " ".join(r.stdout.split())
        for name in [*reg.frontends, *groups] + (sorted(targets) if cmd == "compile" else []):
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (cmd, name, r.stdout)


def test_version_and_top_level_help_do_not_load_the_plugins():
    code = ("import sys; from byteir_core import plugins; from byteir_core.cli import build_parser; "
            "ap = build_parser(); ap.format_help(); print(plugins._registry is None)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "True", (r.stdout, r.stderr)


def test_inputs_that_are_not_an_npz_are_one_line(mlp_byre, tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "one.npy", np.zeros((4, 16), np.float32))
    (tmp_path / "text.npz").write_text("input0 = 1\n")
    for name in ("empty.npz", "one.npy", "text.npz"):
        assert_one_line_error(byteir("run", mlp_byre, "--inputs", tmp_path / name), f"--inputs {tmp_path / name}")


def test_input_shapes_by_name_pin_the_named_arguments(tmp_path):
    """--input-shape name=1x3x224x224 (the ONNX habit): by the entry's argument names (input{i} when the
    frontend gave none); an unknown name lists the real ones; mixing named and positional is refused."""
    from byteir_core.cli import _shapes

    assert _shapes("image=1x3x8x8,mask=scalar") == {"image": [1, 3, 8, 8], "mask": []}
    assert _shapes("1x3,4") == [[1, 3], [4]]
    with pytest.raises(byteir_core.ByteirError, match="by name"):
        _shapes("image=1x3,4")
    prog = tmp_path / "dyn.mlir"
    prog.write_text("func.func @main(%x: tensor<?x4xf32>, %y: tensor<4xf32>) -> tensor<?x4xf32> {\n"
                    "  %b = stablehlo.broadcast_in_dim %y, dims = [1] : (tensor<4xf32>) -> tensor<3x4xf32>\n"
                    "  %c = stablehlo.convert %x : tensor<?x4xf32>\n"
                    "  return %c : tensor<?x4xf32>\n}\n")
    art = byteir_core.compile(str(prog), target="reference", input_shapes={"input0": [3, 4]})
    assert list(art.module.args[0].spec.shape) == [3, 4]
    with pytest.raises(byteir_core.ByteirError, match="'x0'.*input0, input1"):
        byteir_core.compile(str(prog), target="reference", input_shapes={"x0": [3, 4]})
