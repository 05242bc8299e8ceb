"""The plugin host: third-party packages found by entry point, each loaded on its own, failures isolated.

Each scenario runs in a subprocess with a throwaway plugin package on PYTHONPATH, because the registry is
process-wide and importlib.metadata caches what it found.
"""

import json
import os
import subprocess
import sys
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


# -- the same scenarios, checked through the installed command and from further angles ----------------------

def byteir_cli(site, *args, **env_extra):
    """``python -m byteir_core.cli ARGS`` with ``site`` on PYTHONPATH: the command as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200", **env_extra)
    for var in ("BYTEIR_PLUGINS", "BYTEIR_DISABLE_PLUGINS"):
        if var not in env_extra:
            env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "byteir_core.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=180)


def cli_plugins(site, **env_extra) -> dict:
    r = byteir_cli(site, "list-plugins", "--json", **env_extra)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len({p["name"] for p in rows}) == len(rows)  # each entry point listed once
    return {p["name"]: p for p in rows}


# A toy backend whose compile returns a callee and no kernel at all; the provider computes tanh itself.
TOY_NO_KERNEL = textwrap.dedent('''
    import numpy as np
    from byteir_core import hookimpl
    from byteir_core.interfaces import Backend, CompiledCluster, Provider

    BYTEIR_PLUGIN_API = "1.0"

    class Toy(Backend):
        name, device, fallback = "toy", "cpu", ()
        def claims(self, op):
            return 5 if op.name == "stablehlo.tanh" else None
        def compile(self, cluster):
            return CompiledCluster(callee="toy.tanh")

    class ToyProvider(Provider):
        name, device, callees = "toy", "cpu", ("toy.tanh",)
        def load(self, callee, kernel, attrs):
            if callee != "toy.tanh" or kernel is not None or attrs:
                raise RuntimeError(f"unexpected load({callee!r}, {kernel!r}, {attrs!r})")
            def fn(inputs, outputs):
                outputs[0][...] = np.tanh(inputs[0])
            return fn

    @hookimpl
    def byteir_register_backends(register):
        register(Toy())

    @hookimpl
    def byteir_register_providers(register):
        register(ToyProvider())
''')


def test_kernel_less_plugin_through_the_command_and_a_saved_artifact(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site, "toy_nk", TOY_NO_KERNEL, "toy", dist="byteir-backend-toy", version="0.0.7")
    toy = cli_plugins(site)["toy"]
    assert (toy["status"], toy["error"], toy["distribution"], toy["version"], toy["builtin"]) == (
        "ok", "", "byteir-backend-toy", "0.0.7", False)
    assert "backend toy (device cpu)" in toy["registers"] and "provider toy (device cpu)" in toy["registers"]

    art_path = tmp_path / "toy.byre"
    script = textwrap.dedent(f'''
        import json, numpy as np, byteir_core
        art = byteir_core.compile({TANH_PLUS_X!r}, target="toy", output={str(art_path)!r})
        x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
        y = byteir_core.load({str(art_path)!r})(x)
        print(json.dumps({{"ops": art.report["ops_per_backend"], "chain": art.report.get("fallback_chain"),
                          "manifest": art.module.manifest, "y": np.asarray(y).tolist()}}))
    ''')
    r = run_python(site, script)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ops"] == {"toy": {"stablehlo.tanh": 1}, "reference": {"stablehlo.add": 1}}
    assert out["chain"] == ["toy", "reference"]
    assert out["manifest"]["target"] == "toy"
    assert out["manifest"]["plugins"]["toy"] == "byteir-backend-toy 0.0.7"
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(out["y"], np.tanh(x) + x, rtol=1e-6, atol=1e-7)

    # the artifact runs from the command too, and is refused cleanly where the toy provider is not installed
    r = byteir_cli(site, "run", art_path)
    assert r.returncode == 0, r.stderr
    assert "float32 [2, 3]" in r.stdout
    r = byteir_cli(site, "run", art_path, BYTEIR_DISABLE_PLUGINS="toy")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error:") and "'toy.tanh'" in r.stderr and "byteir-backend-toy" in r.stderr


def test_incompatible_plugin_hooks_are_never_called(tmp_path):
    marker = tmp_path / "hook-called"
    site = tmp_path / "site"
    site.mkdir()
    src = TOY.replace('BYTEIR_PLUGIN_API = "1.0"', 'BYTEIR_PLUGIN_API = "2.0"').replace(
        "register(Toy())", f"open({str(marker)!r}, 'w').close(); register(Toy())")
    install_plugin(site, "future_plugin", src, "future")
    f = cli_plugins(site)["future"]
    assert f["status"] == "incompatible"
    assert "2.0" in f["error"] and "1.0" in f["error"] and f["registers"] == []
    assert not marker.exists()
    r = run_python(site, "from byteir_core.plugins import get_registry as g; r = g(); "
                         "print(r.pm.has_plugin('future'), 'toy' in r.backends, 'toy' in r.providers, "
                         "'toy.tanh' in r.callee_provider)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "False", "False"]
    assert not marker.exists()


def test_failed_plugin_leaves_nothing_half_registered_and_the_rest_compiles(tmp_path):
    # a valid backend and frontend first, then an invalid object: none of it may stay
    src = TOY + textwrap.dedent('''
        from byteir_core.interfaces import Frontend
        class Fe(Frontend):
            name = "halfway"
            def accepts(self, model): return True
        @hookimpl
        def byteir_register_frontends(register):
            register(Fe())
        @hookimpl
        def byteir_register_pass_groups(register):
            register("not a backend")
    ''')
    install_plugin(tmp_path, "half_plugin", src, "half")
    half = cli_plugins(tmp_path)["half"]
    assert half["status"] == "failed" and half["registers"] == []
    assert "'not a backend'" in half["error"] and "PassGroup" in half["error"]
    script = textwrap.dedent(f'''
        import json, numpy as np, byteir_core
        from byteir_core.plugins import get_registry
        r = get_registry()
        seen = [sorted(r.frontends), sorted(r.backends), sorted(r.providers), sorted(r.callee_provider),
                sorted(f"{{k}}:{{n}}" for k, n in r.owner if r.owner[(k, n)] == "half"), r.pm.has_plugin("half")]
        art = byteir_core.compile({TANH_PLUS_X!r}, target="reference")  # the accept-everything frontend is gone
        y = byteir_core.load(art.to_bytes())(np.ones((2, 3), np.float32))
        print(json.dumps({{"seen": seen, "frontend": art.module.manifest["frontend"], "y": y.tolist()}}))
    ''')
    r = run_python(tmp_path, script)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    frontends, backends, providers, callees, owned, registered = out["seen"]
    assert "halfway" not in frontends and "stablehlo" in frontends
    assert "toy" not in backends and "toy" not in providers and "toy.tanh" not in callees
    assert owned == [] and registered is False
    assert out["frontend"] == "stablehlo"
    np.testing.assert_allclose(out["y"], np.full((2, 3), np.tanh(1.0) + 1.0), rtol=1e-6)


def test_plugin_raising_systemexit_inside_a_hook_is_isolated(tmp_path):
    """Like an import that raises SystemExit, a hook that does so must fail only its own plugin."""
    install_plugin(tmp_path, "exit_in_hook", TOY.replace("register(Toy())", "import sys; sys.exit(4)"), "exithook")
    r = byteir_cli(tmp_path, "list-plugins", "--json")
    assert r.returncode == 0, (r.returncode, r.stderr)
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    assert plugins["exithook"]["status"] == "failed" and "SystemExit" in plugins["exithook"]["error"]
    assert all(plugins[b]["status"] == "ok" for b in BUILTINS)


def test_duplicate_names_and_callees_fail_the_later_registration(tmp_path):
    install_plugin(tmp_path, "toy_a", TOY, "a_toy", dist="byteir-toy-a")
    # different backend/provider names, same callee: the callee clash alone must fail the second plugin
    other = (TOY.replace('name, device = "toy"', 'name, device = "toy_b"')
             .replace('name, callees = "toy"', 'name, callees = "toy_b"'))
    install_plugin(tmp_path, "toy_c", other, "c_toy", dist="byteir-toy-c")
    plugins = cli_plugins(tmp_path)
    assert plugins["a_toy"]["status"] == "ok"
    c = plugins["c_toy"]
    assert c["status"] == "failed" and c["registers"] == []
    assert "'toy.tanh'" in c["error"] and "'toy'" in c["error"]
    r = run_python(tmp_path, "from byteir_core.plugins import get_registry as g; r = g(); "
                             "print(sorted(b for b in r.backends if b.startswith('toy')), "
                             "r.callee_provider['toy.tanh'].name, r.owner[('backend', 'toy')])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['toy'] toy a_toy"


def test_one_plugin_registering_the_same_backend_name_twice_fails(tmp_path):
    """Names are global: a second registration of a name must not silently replace the first."""
    install_plugin(tmp_path, "twice", TOY.replace("register(Toy())", "register(Toy()); register(Toy())"), "twice")
    t = cli_plugins(tmp_path)["twice"]
    assert t["status"] == "failed", t
    assert "'toy'" in t["error"] and t["registers"] == []


def test_disable_blocks_only_what_it_names(tmp_path):
    install_plugin(tmp_path, "toy_a", TOY, "a_toy")
    install_plugin(tmp_path, "broken_plugin", 'raise ImportError("nope")\n', "broken")
    plugins = cli_plugins(tmp_path, BYTEIR_DISABLE_PLUGINS="broken")
    assert plugins["a_toy"]["status"] == "ok"
    assert plugins["broken"]["status"] == "disabled" and "BYTEIR_DISABLE_PLUGINS" in plugins["broken"]["error"]
    assert all(plugins[b]["status"] == "ok" for b in BUILTINS)
    # disabling a built-in is not possible: every chain ends in reference
    plugins = cli_plugins(tmp_path, BYTEIR_DISABLE_PLUGINS="reference,stablehlo", BYTEIR_PLUGINS="")
    assert all(plugins[b]["status"] == "ok" for b in BUILTINS)
    assert plugins["a_toy"]["status"] == "disabled" and plugins["broken"]["status"] == "disabled"
    # what BYTEIR_PLUGINS keeps is really used, and what it drops really is not
    out = compile_and_run(tmp_path, "toy", BYTEIR_PLUGINS="a_toy")
    assert out["ops"] == {"toy": {"stablehlo.tanh": 1}, "reference": {"stablehlo.add": 1}}
    np.testing.assert_allclose(out["y"], expected(), rtol=1e-6)
    r = run_python(tmp_path, f"import byteir_core\nbyteir_core.compile({TANH_PLUS_X!r}, target='toy')",
                   BYTEIR_PLUGINS="broken")
    assert r.returncode != 0 and "unknown target 'toy'" in r.stderr


def test_list_plugins_table_from_the_command(tmp_path):
    install_plugin(tmp_path, "broken_plugin", 'raise ImportError("vendor SDK missing")\n', "broken")
    install_plugin(tmp_path, "toy_a", TOY, "a_toy", dist="byteir-toy-a", version="4.5.6")
    r = byteir_cli(tmp_path, "list-plugins")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "broken" in ln)
    assert "failed" in line and "vendor SDK missing" in line
    assert "byteir-toy-a 4.5.6" in r.stdout and "backend toy (device cpu)" in r.stdout
