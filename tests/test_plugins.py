"""The plugin host: third-party packages found by entry point, each loaded on its own, failures isolated.

Each scenario runs in a subprocess with a throwaway plugin package on PYTHONPATH, because the registry is
process-wide and importlib.metadata caches what it found.
"""

import json
import textwrap

import numpy as np
from plugin_factory import install_plugin, list_plugins, run_python

BUILTINS = ("stablehlo", "hlo-passes", "reference")

TOY = textwrap.dedent('''
    import numpy as np
    from byteir_core import hookimpl
    from byteir_core.interfaces import Backend, CompiledCluster, Kernel, Provider

    BYTEIR_PLUGIN_API = "1.0"

    class Toy(Backend):
        name, device = "toy", "cpu"
        def claims(self, op):
            return 5 if op.name == "stablehlo.tanh" else None
        def compile(self, cluster):
            assert cluster.op_names == ["stablehlo.tanh"], cluster.op_names
            return CompiledCluster("toy.tanh", Kernel("toy-bytes", b"tanh:" + str(cluster.inputs[0]).encode()),
                                   attrs={"scale": 1.0})

    class ToyProvider(Provider):
        name, callees = "toy", ("toy.tanh",)
        def load(self, callee, kernel, attrs):
            assert kernel.data.startswith(b"tanh:") and attrs == {"scale": 1.0}
            def fn(inputs, outputs):
                np.tanh(inputs[0], out=outputs[0])
            return fn

    @hookimpl
    def byteir_register_backends(register):
        register(Toy())

    @hookimpl
    def byteir_register_providers(register):
        register(ToyProvider())
''')

TANH_PLUS_X = '''func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %t = stablehlo.tanh %x : tensor<2x3xf32>
  %y = stablehlo.add %t, %x : tensor<2x3xf32>
  return %y : tensor<2x3xf32>
}'''

COMPILE_AND_RUN = f'''
import json, numpy as np, byteir_core
art = byteir_core.compile({TANH_PLUS_X!r}, target=TARGET)
x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
y = byteir_core.load(art.to_bytes())(x)
print(json.dumps({{"ops": art.report["ops_per_backend"], "y": y.tolist()}}))
'''


def compile_and_run(site, target, **env):
    r = run_python(site, COMPILE_AND_RUN.replace("TARGET", repr(target)), **env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def expected():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    return np.tanh(x) + x


def test_third_party_plugin_is_found_and_used(tmp_path):
    install_plugin(tmp_path, "toy_plugin", TOY, "toy", dist="byteir-backend-toy", version="1.2.3")
    plugins = list_plugins(tmp_path)
    toy = plugins["toy"]
    assert toy["status"] == "ok" and toy["distribution"] == "byteir-backend-toy" and toy["version"] == "1.2.3"
    assert toy["registers"] == ["backend toy (device cpu)", "provider toy (device cpu)"]
    assert all(plugins[b]["status"] == "ok" and plugins[b]["builtin"] for b in BUILTINS)
    out = compile_and_run(tmp_path, "toy")
    assert out["ops"] == {"toy": {"stablehlo.tanh": 1}, "reference": {"stablehlo.add": 1}}
    np.testing.assert_allclose(out["y"], expected(), rtol=1e-6)


def test_plugin_whose_import_raises_is_isolated(tmp_path):
    install_plugin(tmp_path, "broken_plugin", 'raise ImportError("vendor SDK libfoo.so missing")\n', "broken")
    plugins = list_plugins(tmp_path)
    assert plugins["broken"]["status"] == "failed"
    assert "ImportError: vendor SDK libfoo.so missing" in plugins["broken"]["error"]
    assert all(plugins[b]["status"] == "ok" for b in BUILTINS)
    out = compile_and_run(tmp_path, "reference")  # everything else still works, in the same process
    assert out["ops"] == {"reference": {"stablehlo.add": 1, "stablehlo.tanh": 1}}
    np.testing.assert_allclose(out["y"], expected(), rtol=1e-6)


def test_plugin_raising_systemexit_on_import_does_not_take_the_host_down(tmp_path):
    install_plugin(tmp_path, "exiting_plugin", "import sys\nsys.exit(3)\n", "exiting")
    plugins = list_plugins(tmp_path)
    assert plugins["exiting"]["status"] == "failed" and "SystemExit" in plugins["exiting"]["error"]


def test_incompatible_api_version_is_refused(tmp_path):
    install_plugin(tmp_path, "future_plugin", TOY.replace('BYTEIR_PLUGIN_API = "1.0"', 'BYTEIR_PLUGIN_API = "2.0"'),
                   "future")
    plugins = list_plugins(tmp_path)
    f = plugins["future"]
    assert f["status"] == "incompatible" and "2.0" in f["error"] and "1.0" in f["error"]
    assert f["registers"] == []
    r = run_python(tmp_path, f"import byteir_core\nbyteir_core.compile({TANH_PLUS_X!r}, target='toy')")
    assert r.returncode != 0 and "unknown target 'toy'" in r.stderr  # its backend was never registered


def test_invalid_registration_registers_nothing_from_that_plugin(tmp_path):
    bad = TOY + textwrap.dedent('''
        from byteir_core.interfaces import Frontend
        class Fe(Frontend):
            name = "halfway"
            def accepts(self, model): return False
        @hookimpl
        def byteir_register_frontends(register):
            register(Fe())
            register("not a frontend")
    ''')
    install_plugin(tmp_path, "bad_plugin", bad, "bad")
    install_plugin(tmp_path, "raising_plugin", TOY.replace("register(Toy())", "raise RuntimeError('license expired')")
                   .replace('name, device = "toy"', 'name, device = "toy2"').replace('"toy.tanh"', '"toy2.tanh"')
                   .replace('name, callees = "toy"', 'name, callees = "toy2"'), "raising")
    plugins = list_plugins(tmp_path)
    assert plugins["bad"]["status"] == "failed" and "not a Frontend" in plugins["bad"]["error"]
    assert plugins["bad"]["registers"] == []
    assert plugins["raising"]["status"] == "failed" and "license expired" in plugins["raising"]["error"]
    r = run_python(tmp_path, "import json; from byteir_core.plugins import get_registry as g; r = g(); "
                             "print(json.dumps([sorted(r.frontends), sorted(r.backends), sorted(r.providers)]))")
    assert r.returncode == 0, r.stderr
    frontends, backends, providers = json.loads(r.stdout)
    assert "halfway" not in frontends and "stablehlo" in frontends
    assert not {"toy", "toy2"} & set(backends) and "reference" in backends
    assert not {"toy", "toy2"} & set(providers) and "reference" in providers


def test_duplicate_backend_name_fails_the_second_plugin(tmp_path):
    install_plugin(tmp_path, "toy_a", TOY, "a_toy")
    install_plugin(tmp_path, "toy_b", TOY, "b_toy")
    plugins = list_plugins(tmp_path)
    assert plugins["a_toy"]["status"] == "ok"
    assert plugins["b_toy"]["status"] == "failed"
    assert "backend 'toy' is already registered by plugin 'a_toy'" in plugins["b_toy"]["error"]


def test_environment_restricts_and_blocks(tmp_path):
    install_plugin(tmp_path, "toy_a", TOY, "a_toy")
    install_plugin(tmp_path, "broken_plugin", 'raise ImportError("nope")\n', "broken")
    only = list_plugins(tmp_path, BYTEIR_PLUGINS="a_toy")
    assert only["a_toy"]["status"] == "ok"
    assert only["broken"]["status"] == "disabled" and "BYTEIR_PLUGINS" in only["broken"]["error"]
    assert all(only[b]["status"] == "ok" for b in BUILTINS)
    blocked = list_plugins(tmp_path, BYTEIR_DISABLE_PLUGINS="a_toy,broken")
    assert blocked["a_toy"]["status"] == "disabled" and blocked["broken"]["status"] == "disabled"
    assert all(blocked[b]["status"] == "ok" for b in BUILTINS)


def test_list_plugins_table_exits_zero_and_names_the_failure(tmp_path):
    install_plugin(tmp_path, "broken_plugin", 'raise ImportError("vendor SDK missing")\n', "broken")
    r = run_python(tmp_path, "import sys; from byteir_core.cli import main; sys.exit(main(['list-plugins']))",
                   COLUMNS="200")
    assert r.returncode == 0, r.stderr
    assert "broken" in r.stdout and "failed" in r.stdout and "vendor SDK missing" in r.stdout
    assert "reference" in r.stdout and "ok" in r.stdout


def test_bundled_asic_stub_is_listed():
    import byteir_core.plugins as p

    reg = p.load_registry()
    names = {i.name: i for i in reg.plugins}
    assert names["asic_stub"].status == "ok"
    assert names["reference"].registers == ["backend reference (device cpu)", "provider reference (device cpu)"]


def test_entry_point_name_clash_with_a_builtin_is_reported(tmp_path):
    install_plugin(tmp_path, "impostor", TOY, "reference", dist="byteir-impostor")
    r = run_python(tmp_path, "import json; from byteir_core.plugins import get_registry as g; "
                             "print(json.dumps([p.as_dict() for p in g().plugins if p.name == 'reference']))")
    builtin, impostor = json.loads(r.stdout)
    assert builtin["status"] == "ok" and builtin["builtin"] and builtin["distribution"] == "byteir-core"
    assert impostor["distribution"] == "byteir-impostor" and impostor["status"] == "failed"
    assert "already used by byteir-core" in impostor["error"]
