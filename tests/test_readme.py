"""The README's plugin example is real: installed as a package with an entry point, it partitions and runs."""

import json
import re
from pathlib import Path

import numpy as np
from plugin_factory import install_plugin, run_python

ROOT = Path(__file__).resolve().parents[1]


def readme_plugin_source() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (src,) = [b for b in blocks if "class TanhBackend" in b]
    return src


def test_readme_plugin_example(tmp_path):
    install_plugin(tmp_path, "my_plugin", readme_plugin_source(), "tanh", dist="readme-plugin")
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = f"""
import json, numpy as np, byteir_core
text = '''func.func @main(%x: tensor<3x5xf32>) -> tensor<3x5xf32> {{
  %t = stablehlo.tanh %x : tensor<3x5xf32>
  %y = stablehlo.add %t, %x : tensor<3x5xf32>
  return %y : tensor<3x5xf32>
}}'''
art = byteir_core.compile(text, target="tanh")
y = byteir_core.load(art.to_bytes())(np.load({str(tmp_path / "x.npy")!r}))
np.save({str(tmp_path / "y.npy")!r}, y)
print(json.dumps({{"ops": art.report["ops_per_backend"], "chain": art.report["fallback_chain"],
                  "backends": art.manifest["backends"]}}))
"""
    r = run_python(tmp_path, script)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["ops"]["tanh"] == {"stablehlo.tanh": 1}
    # the rest goes to cpu when the cpu backend is installed, else on to reference
    rest = {k: v for k, v in rep["ops"].items() if k != "tanh"}
    assert rest in ({"cpu": {"stablehlo.add": 1}}, {"reference": {"stablehlo.add": 1}})
    assert rep["chain"][0] == "tanh" and rep["chain"][-1] == "reference"
    assert rep["backends"]["tanh"] == "readme-plugin 0.3.1"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.tanh(x) + x, rtol=1e-6)


def test_readme_python_example_runs(tmp_path):
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                if "byteir_core.compile(\"examples/mlp.mlir\"" in b]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    r = run_python(tmp_path, f"import os; os.chdir({str(tmp_path)!r})\n" + block +
                   "\nimport numpy as np\nassert np.allclose(out, y) and out.shape == (4, 8)\nprint('ok')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok") and (tmp_path / "mlp.byre").exists()


def test_readme_documents_the_real_compile_signature():
    """Issue 14 finding 11: the README's `compile` signature was not the real one."""
    import inspect

    import byteir_core
    from byteir_core.compiler import driver

    text = (ROOT / "README.md").read_text()
    m = re.search(r"`compile\((model, .*?)\)` returns", text, re.S)
    assert m, "README no longer documents compile's signature"
    documented = " ".join(m.group(1).split())
    real = str(inspect.signature(byteir_core.compile))[1:-1]
    assert documented.replace("\"", "'") == real
    # the public wrapper and the driver take the same parameters, and help() explains each of them
    assert list(inspect.signature(byteir_core.compile).parameters) == list(
        inspect.signature(driver.compile).parameters)
    for name in inspect.signature(byteir_core.compile).parameters:
        assert re.search(rf"^\s+{name}\s", byteir_core.compile.__doc__, re.M), name


def test_readme_names_every_public_error_class():
    import byteir_core

    text = (ROOT / "README.md").read_text()
    for name in byteir_core.__all__:
        if name.endswith("Error"):
            assert f"`{name}`" in text, name


def test_makefile_comments_point_to_things_that_exist():
    """Issue 14 finding 11: the Makefile's comments pointed to notes that do not exist."""
    text = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        assert "DEVELOPERS" not in line
        for section in re.findall(r'README, "([^"]+)"', line):
            assert f"## {section}" in readme, section
        for path in re.findall(r"\b((?:[\w-]+/)+[\w.-]+\.(?:md|py))\b", line):
            assert (ROOT / path).exists(), path

