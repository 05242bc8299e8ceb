"""jax.export inputs: an Exported object, serialized bytes, a .bin / .jaxexport file through the CLI."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import byteir_core
from byteir_core.errors import FrontendError
from byteir_frontend_jax.plugin import JaxFrontend
from jax_helpers import assert_tree_close, input_names, rand

BYTEIR = os.path.join(os.path.dirname(sys.executable), "byteir")


def model(params, x):
    h = jax.nn.relu(x @ params["dense"]["kernel"] + params["dense"]["bias"])
    return {"probs": jax.nn.softmax(h @ params["out"], axis=-1), "norm": jnp.sqrt((h * h).sum())}


def make(seed=0):
    rng = np.random.default_rng(seed)
    params = {"dense": {"kernel": rand(rng, 6, 10, scale=0.4), "bias": rand(rng, 10, scale=0.1)},
              "out": rand(rng, 10, 3, scale=0.3)}
    return params, rand(rng, 5, 6)


def test_an_exported_object_compiles_and_matches_jax():
    params, x = make()
    exp = export.export(jax.jit(model))(params, x)
    sess = byteir_core.load(byteir_core.compile(exp, target="cpu"))
    assert input_names(sess) == ["params['dense']['bias']", "params['dense']['kernel']", "params['out']", "x"]
    assert_tree_close(sess(*jax.tree_util.tree_leaves((params, x))), exp.call(params, x))


def test_an_exported_object_with_frozen_weights():
    params, x = make(1)
    exp = export.export(jax.jit(model))(params, x)
    sess = byteir_core.load(byteir_core.compile(exp, (params, x), target="cpu", options={"weights": [0]}))
    assert input_names(sess) == ["x"]
    x2 = make(2)[1]
    assert_tree_close(sess(x2), jax.jit(model)(params, x2))


def test_serialized_bytes_compile():
    params, x = make(3)
    blob = export.export(jax.jit(model))(params, x).serialize()
    assert isinstance(blob, bytearray) and JaxFrontend().accepts(blob) and JaxFrontend().accepts(bytes(blob))
    sess = byteir_core.load(byteir_core.compile(bytes(blob), target="cpu"))
    assert_tree_close(sess(*jax.tree_util.tree_leaves((params, x))), jax.jit(model)(params, x))


def test_serialized_export_through_the_cli(tmp_path):
    params, x = make(4)
    path = tmp_path / "exported.bin"
    path.write_bytes(export.export(jax.jit(model))(params, x).serialize())
    out = tmp_path / "out.byre"
    r = subprocess.run([BYTEIR, "compile", str(path), "-o", str(out), "--target", "cpu"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sess = byteir_core.load(str(out))
    assert sess.module.manifest["frontend"] == "jax"
    assert_tree_close(sess(*jax.tree_util.tree_leaves((params, x))), jax.jit(model)(params, x))
    # byteir run feeds the artifact's inputs itself (random data): it must run to the end
    r = subprocess.run([BYTEIR, "run", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_list_plugins_shows_the_jax_frontend():
    r = subprocess.run([BYTEIR, "list-plugins"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    row = next(ln for ln in r.stdout.splitlines() if "byteir-frontend-jax" in ln)
    assert "frontend jax" in row and "ok" in row


def test_plugin_module_does_not_import_jax():
    code = ("import sys, byteir_frontend_jax.plugin as p; fe = p.JaxFrontend(); "
            "assert not fe.accepts(lambda x: x) and not fe.accepts('m.onnx') and not fe.accepts(b'ML\\xefR12345678'); "
            "print('jax' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_accepts_only_jax_inputs(tmp_path):
    fe = JaxFrontend()
    params, x = make()
    exp = export.export(jax.jit(model))(params, x)
    assert fe.accepts(jax.jit(model)) and fe.accepts(exp)
    assert not fe.accepts(model)  # a plain function only with frontend="jax"
    import torch

    assert not fe.accepts(torch.nn.Linear(2, 2))  # callable, but the torch frontend's
    mlirbc = tmp_path / "m.bin"
    mlirbc.write_bytes(exp.mlir_module_serialized)  # MLIR bytecode is the stablehlo frontend's
    assert not fe.accepts(str(mlirbc)) and not fe.accepts(exp.mlir_module_serialized)
    other = tmp_path / "weights.bin"
    other.write_bytes(os.urandom(256))
    assert not fe.accepts(other) and not fe.accepts(str(tmp_path / "missing.bin"))
    good = tmp_path / "model.bin"
    good.write_bytes(exp.serialize())
    assert fe.accepts(good) and fe.accepts(str(good))


def test_a_plain_function_with_frontend_jax():
    params, x = make(5)
    sess = byteir_core.load(byteir_core.compile(model, (params, x), frontend="jax", target="cpu",
                                                options={"weights": [0]}))
    assert_tree_close(sess(x), jax.jit(model)(params, x))


def test_sharding_constraints_on_one_device_are_dropped():
    """JAX lowers with Shardy: sdy.sharding_constraint / sdy.mesh / sdy.* attributes, which byteir's MLIR cannot
    even deserialize; on one device they mean nothing and the frontend removes them."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((1,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))

    def f(x):
        y = jax.lax.with_sharding_constraint(jnp.tanh(x) * 2.0, NamedSharding(mesh, PartitionSpec("batch")))
        return y + 1.0

    x = rand(np.random.default_rng(8), 4, 3)
    assert "sdy.sharding_constraint" in export.export(jax.jit(f))(x).mlir_module()
    sess = byteir_core.load(byteir_core.compile(jax.jit(f), (x,), target="cpu"))
    assert_tree_close(sess(x), jax.jit(f)(x))


def test_an_export_for_several_platforms_runs_its_cpu_branch():
    def f(a, b):
        return jnp.sin(a) * b

    a, b = make(9)[1], make(10)[1]
    exp = export.export(jax.jit(f), platforms=("cuda", "cpu"))(a, b)  # @main takes a platform index first
    sess = byteir_core.load(byteir_core.compile(exp, target="cpu"))
    assert input_names(sess) == ["a", "b"]
    assert_tree_close(sess(a, b), jax.jit(f)(a, b))


def test_a_shape_polymorphic_export_at_static_shapes(tmp_path):
    def f(a, b):
        return jnp.sin(a) * b

    (n,) = export.symbolic_shape("n")
    spec = jax.ShapeDtypeStruct((n, 6), np.float32)
    exp = export.export(jax.jit(f))(spec, spec)
    a, b = make(11)[1], make(12)[1]  # [5, 6]
    sess = byteir_core.load(byteir_core.compile(exp, target="cpu", input_shapes=[[5, 6], [5, 6]]))
    assert_tree_close(sess(a, b), jax.jit(f)(a, b))
    # jax's shape assertion (n >= 1) is checked against the given shapes, with jax's own message
    with pytest.raises(FrontendError, match=r"break the export's shape constraints.*'n' = 0"):
        byteir_core.compile(exp, target="cpu", input_shapes=[[0, 6], [0, 6]])
    # through the CLI: --input-shape
    path = tmp_path / "poly.jaxexport"
    path.write_bytes(exp.serialize())
    out = tmp_path / "poly.byre"
    r = subprocess.run([BYTEIR, "compile", str(path), "-o", str(out), "--input-shape", "5x6,5x6"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert_tree_close(byteir_core.load(str(out))(a, b), jax.jit(f)(a, b))
