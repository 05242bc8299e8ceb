"""What a TensorFlow user gets wrong, and what byteir says: the TF op XLA cannot take and where it was made,
missing shapes, a SavedModel's wrong signature or tags or a damaged file; and TensorFlow loaded before byteir
in one process."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tf_models
from tf_models import tf

import byteir_core
from byteir_core.errors import FrontendError


def test_a_py_function_inside_is_named_with_where_it_was_made_and_the_fix():
    @tf.function
    def scaled(x):
        y = tf.py_function(lambda a: a * 2, [x], tf.float32)
        return y + 1

    with pytest.raises(FrontendError) as e:
        byteir_core.compile(scaled, [np.ones(3, np.float32)], target="cpu")
    msg = str(e.value)
    assert "tf.function 'scaled'" in msg and "EagerPyFunc (tf.py_function)" in msg
    assert "test_tf_errors.py" in msg and "move them out of the compiled function" in msg


def test_string_ops_are_named():
    @tf.function
    def as_text(x):
        return tf.strings.length(tf.strings.as_string(x))

    with pytest.raises(FrontendError, match=r"TensorFlow op\(s\) AsString.*no XLA kernel"):
        byteir_core.compile(as_text, [np.ones(3, np.float32)], target="cpu")


def test_no_signature_and_no_example_inputs():
    @tf.function
    def double(x):
        return x * 2

    with pytest.raises(FrontendError, match="tf.function 'double' has no input signature: give example inputs"):
        byteir_core.compile(double, target="cpu")


def test_example_inputs_that_do_not_fit_the_signature():
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def double(x):
        return x * 2

    with pytest.raises(FrontendError, match=r"example input 0 is float32\[2, 5\], the function declares "
                                            r"float32\[None, 4\]"):
        byteir_core.compile(double, [np.ones((2, 5), np.float32)], target="cpu")
    with pytest.raises(FrontendError, match=r"takes 1 input\(s\), 2 example input\(s\) given"):
        byteir_core.compile(double, [np.ones((2, 4), np.float32)] * 2, target="cpu")
    with pytest.raises(FrontendError, match=r"--input-shape names 'y', which are not inputs"):
        byteir_core.compile(double, target="cpu", input_shapes={"y": [2, 4]})


def test_saved_model_signature_tags_and_damage(tmp_path):
    model = tf_models.mlp()
    sm = tmp_path / "sm"
    model.export(str(sm), format="tf_saved_model", verbose=False)
    with pytest.raises(FrontendError, match=r"no signature 'predict'; it has: .*serving_default"):
        byteir_core.compile(str(sm), target="cpu", options={"signature": "predict"})
    with pytest.raises(FrontendError, match=r"no meta graph with tags 'train'; it has: serve"):
        byteir_core.compile(str(sm), target="cpu", options={"tags": "train"})
    (sm / "saved_model.pb").write_bytes(b"\x0a\xff\xff garbage")
    with pytest.raises(FrontendError, match=r"cannot read saved_model.pb"):
        byteir_core.compile(str(sm), target="cpu", input_shapes=[[1, 16]])


def test_tensorflow_imported_before_byteir_then_torch_and_triton(tmp_path):
    """TensorFlow puts its LLVM in the global symbol scope; byteir's MLIR bindings (and Triton, which torch and
    the cuda backend load) are bound to their own, or LLVM ends the process on a twice-registered option."""
    script = textwrap.dedent("""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import numpy as np
        import tensorflow as tf
        import keras
        import byteir_core
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        x = np.ones((2, 4), np.float32)
        out = byteir_core.load(byteir_core.compile(m, [x], target="cpu")).run(x)[0]
        assert np.allclose(out, m(x).numpy(), rtol=1e-5, atol=1e-6)
        import torch
        lin = torch.nn.Linear(4, 3)
        art = byteir_core.compile(lin, (torch.ones(2, 4),), target="cpu")
        out = byteir_core.load(art).run(x)[0]
        assert np.allclose(out, lin(torch.ones(2, 4)).detach().numpy(), rtol=1e-5, atol=1e-6)
        import triton
        print("all three in one process")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "all three in one process" in r.stdout, r.stderr[-3000:]


def test_listed_as_a_plugin_without_importing_tensorflow():
    script = textwrap.dedent("""
        import json, subprocess, sys
        import byteir_frontend_tf.plugin
        assert "tensorflow" not in sys.modules, "the plugin module imported TensorFlow"
        from byteir_core.plugins import get_registry
        registry = get_registry()
        assert "tf" in registry.frontends, sorted(registry.frontends)
        assert "tensorflow" not in sys.modules, "discovering the plugin imported TensorFlow"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "byteir_core.cli", "list-plugins", "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"tf"' in r.stdout and "byteir-frontend-tf" in r.stdout


def test_an_artifact_byteir_cannot_read_names_both_stablehlo_versions(monkeypatch):
    """TensorFlow 2.21 writes StableHLO 1.13.7; were its artifact unreadable (a newer TensorFlow), the error says
    which version TensorFlow wrote and which ones byteir reads."""
    from byteir_core.compiler import importing
    from byteir_core.mlir import stablehlo_api

    def damaged(context, blob, where, producer):
        return original(context, blob[:64] + b"\0" * 16, where, producer)

    original = importing.read_portable_artifact
    monkeypatch.setattr(importing, "read_portable_artifact", damaged)
    with pytest.raises(FrontendError) as e:
        byteir_core.compile(tf_models.mlp(), [np.ones((2, 16), np.float32)], target="cpu")
    msg = str(e.value)
    assert "Keras model 'mlp'" in msg and f"TensorFlow {tf.__version__} (StableHLO 1.13" in msg
    assert f"byteir reads StableHLO {stablehlo_api.get_minimum_version()} to " \
           f"{stablehlo_api.get_current_version()}" in msg
