"""Every row of docs/errors.md, triggered through the public API (the documented class) and through the `byteir`
command (exit code 1, `error:` lines only, no traceback, nothing written)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plugin_factory import install_plugin
from programs import MLP

import byteir_core

ROOT = Path(__file__).resolve().parents[1]

BROKEN = ("func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n  %y = stablehlo.add %x, %nope : tensor<4xf32>\n"
          "  return %y : tensor<4xf32>\n}\n")
UNCLAIMED = """func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %a = stablehlo.custom_call @no_such_thing(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %a : tensor<4xf32>
}
"""
BROKEN_PLUGIN = "raise ImportError('the vendor SDK libmychip.so is missing')\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    (d / "broken.mlir").write_text(BROKEN)
    (d / "unclaimed.mlir").write_text(UNCLAIMED)
    (d / "mlp.mlir").write_text(MLP)
    (d / "model.xyz").write_text("what is this")
    (d / "garbage.byre").write_bytes(b"\x00not an artifact" * 10)
    byteir_core.compile(MLP, target="cpu", output=d / "mlp.byre")
    byteir_core.compile(MLP, target="asic_stub", output=d / "asic.byre")
    np.savez(d / "bad_shape.npz", input0=np.zeros((3, 16), np.float32))
    site = d / "site"
    site.mkdir()
    install_plugin(site, "mychip_plugin", BROKEN_PLUGIN, "mychip", dist="byteir-backend-mychip")
    return d


def _sha(d):
    return "f" * 64


# (id, class, the API call, the CLI arguments, extra environment, what the message must name)
CASES = [
    ("frontend", byteir_core.FrontendError, lambda d: byteir_core.compile(d / "broken.mlir"),
     ["compile", "{d}/broken.mlir", "-o", "{out}/x.byre"], {}, r"broken\.mlir:2:\d+.*undeclared SSA value"),
    ("no-frontend", byteir_core.NoFrontendError, lambda d: byteir_core.compile(d / "model.xyz"),
     ["compile", "{d}/model.xyz", "-o", "{out}/x.byre"], {}, r"no installed frontend accepts .*model\.xyz"),
    ("option", byteir_core.OptionError, lambda d: byteir_core.compile(d / "mlp.mlir", options={"dynamic_shape": 1}),
     ["compile", "{d}/mlp.mlir", "-o", "{out}/x.byre"], {"SOURCE_DATE_EPOCH": "yesterday"},
     r"(dynamic_shape|SOURCE_DATE_EPOCH)"),
    ("target", byteir_core.TargetError, lambda d: byteir_core.compile(d / "mlp.mlir", target="gpu"),
     ["compile", "{d}/mlp.mlir", "-o", "{out}/x.byre", "--target", "gpu"], {}, r"unknown target 'gpu'.*cuda"),
    ("pass-group", byteir_core.PassGroupError, lambda d: byteir_core.compile(d / "mlp.mlir", pass_groups=["nope"]),
     ["compile", "{d}/mlp.mlir", "-o", "{out}/x.byre", "--pass-groups", "nope"], {}, r"unknown pass group.*nope"),
    ("unsupported", byteir_core.UnsupportedOpError, lambda d: byteir_core.compile(d / "unclaimed.mlir"),
     ["compile", "{d}/unclaimed.mlir", "-o", "{out}/x.byre"], {}, r"stablehlo.custom_call x1.*unclaimed\.mlir:2"),
    ("byre-format", byteir_core.ByreFormatError, lambda d: byteir_core.load(d / "garbage.byre"),
     ["run", "{d}/garbage.byre", "--output", "{out}/o.npz"], {}, r"garbage\.byre"),
    ("integrity", byteir_core.ArtifactIntegrityError,
     lambda d: byteir_core.load(d / "mlp.byre", expected_sha256="f" * 64),
     ["run", "{d}/mlp.byre", "--sha256", "f" * 64, "--output", "{out}/o.npz"], {}, r"mlp\.byre: sha256 is .*pinned"),
    ("input", byteir_core.InputError,
     lambda d: byteir_core.load(d / "mlp.byre")(np.zeros((3, 16), np.float32)),
     ["run", "{d}/mlp.byre", "--inputs", "{d}/bad_shape.npz", "--output", "{out}/o.npz"], {},
     r"input0.*\[4, 16\].*\[3, 16\]"),
]


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "byteir_core.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200", **env})


def _assert_clean(r, pattern, out: Path, multiline=False):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:"), r.stderr
    lines = r.stderr.strip().splitlines()
    if not multiline:
        assert len(lines) == 1, r.stderr
    assert re.search(pattern, r.stderr, re.S), r.stderr
    assert list(out.iterdir()) == [], "a failed command left files behind"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_documented_error_through_the_api_and_the_cli(case, files, tmp_path):
    name, cls, call, argv, env, pattern = case
    with pytest.raises(cls) as e:
        call(files)
    assert type(e.value).__name__ in (ROOT / "docs" / "errors.md").read_text()
    if name != "option":  # the CLI has no options flag: its OptionError comes from SOURCE_DATE_EPOCH
        assert re.search(pattern, str(e.value), re.S), str(e.value)
    out = tmp_path / "out"
    out.mkdir()
    r = _cli([a.format(d=files, out=out) for a in argv], env)
    _assert_clean(r, pattern, out, multiline=name == "unsupported")


def test_plugin_load_error_names_the_plugin_and_its_failure(files, tmp_path):
    """A target whose plugin is installed but fails to import: not "unknown target", not a silent fallback."""
    env = {"PYTHONPATH": str(files / "site")}
    script = ("import byteir_core, sys\ntry:\n    byteir_core.compile(sys.argv[1], target='mychip')\n"
              "except byteir_core.PluginLoadError as e:\n    print('caught', e)\n")
    r = subprocess.run([sys.executable, "-c", script, str(files / "mlp.mlir")], capture_output=True, text=True,
                       timeout=300, env={**os.environ, **env})
    assert "caught plugin 'mychip': failed: import raised ImportError: the vendor SDK libmychip.so is missing" \
        in r.stdout, r.stderr
    out = tmp_path / "out"
    out.mkdir()
    r = _cli(["compile", str(files / "mlp.mlir"), "-o", str(out / "x.byre"), "--target", "mychip"], env)
    _assert_clean(r, r"plugin 'mychip'.*libmychip\.so is missing.*provides target 'mychip'", out)


def test_provider_error_names_what_to_install(files, tmp_path):
    env = {"BYTEIR_DISABLE_PLUGINS": "asic_stub"}
    script = ("import byteir_core, sys\ntry:\n    byteir_core.load(sys.argv[1])\n"
              "except byteir_core.ProviderError as e:\n    print('caught', e)\n")
    r = subprocess.run([sys.executable, "-c", script, str(files / "asic.byre")], capture_output=True, text=True,
                       timeout=300, env={**os.environ, **env})
    assert r.stdout.startswith("caught") and "asic.byre" in r.stdout and "byteir-backend-asic-stub" in r.stdout, \
        (r.stdout, r.stderr)
    out = tmp_path / "out"
    out.mkdir()
    r = _cli(["run", str(files / "asic.byre"), "--output", str(out / "o.npz")], env)
    _assert_clean(r, r"asic\.byre.*byteir-backend-asic-stub", out)


def test_usage_errors_exit_2_and_a_success_exits_0(files, tmp_path):
    r = _cli(["compile", "--no-such-flag", str(files / "mlp.mlir")], {})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "unrecognized arguments" in r.stderr
    r = _cli(["compile", str(files / "mlp.mlir"), "-o", str(tmp_path / "ok.byre")], {})
    assert r.returncode == 0 and (tmp_path / "ok.byre").exists()


def test_errors_md_lists_every_public_error_class():
    text = (ROOT / "docs" / "errors.md").read_text()
    for name in byteir_core.__all__:
        if name.endswith("Error") and name != "ByteirError":
            assert f"| `{name}`" in text, name


def test_a_dynamic_program_with_no_op_left_is_refused_by_name():
    """An identity transpose simplified away leaves @main returning its dynamic argument: no op remains to
    refuse it, and the error still names the argument and the --input-shape to give (not a raw TypeError)."""
    text = """func.func @main(%x: tensor<?x4xf32>, %i: tensor<3xi64>) -> tensor<?x4xf32> {
  %t = stablehlo.transpose %x, dims = [0, 1] : (tensor<?x4xf32>) -> tensor<?x4xf32>
  return %t : tensor<?x4xf32>
}"""
    with pytest.raises(byteir_core.ByteirError, match=r"argument 0 has the dynamic type tensor<\?x4xf32>.*"
                                                      r"--input-shape 1x4,3"):
        byteir_core.compile(text, target="cpu")
