"""The tf frontend against TensorFlow's own outputs: Keras models, tf.function, SavedModels (fp32 rtol 1e-4,
atol 1e-5 unless stated)."""

import subprocess
import sys

import numpy as np
import pytest
import tf_models
from tf_models import keras, tf

import byteir_core


def _compile_and_run(model, inputs, **kw):
    art = byteir_core.compile(model, inputs, target="cpu", **kw)
    return art, byteir_core.load(art).run(*inputs)


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm", "gru", "transformer_block"])
def test_keras_models_match_tensorflow(name):
    rng = tf_models.rng(1)
    model = {"mlp": tf_models.mlp, "cnn": tf_models.cnn, "lstm": lambda: tf_models.rnn("lstm"),
             "gru": lambda: tf_models.rnn("gru"), "transformer_block": tf_models.transformer_block}[name]()
    x = rng.standard_normal((3, *model.inputs[0].shape[1:])).astype(np.float32)
    if name == "cnn":
        tf_models.trained_batchnorm(model, x)
    art, (out,) = _compile_and_run(model, [x])
    ref = model(x, training=False).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    session = byteir_core.load(art)
    inputs = [session.get_arg_name(o) for o in session.get_input_arg_offsets()]
    assert len(inputs) == 1, inputs  # the variables were frozen into the program, not left as inputs


@pytest.mark.slow
def test_mobilenet_v2_matches_tensorflow():
    rng = tf_models.rng(2)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    x = rng.standard_normal((2, 96, 96, 3)).astype(np.float32)
    _, (out,) = _compile_and_run(model, [x])
    ref = model(x, training=False).numpy()
    # 52 convolutions summed in another order: relative to the logits' scale
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def test_a_tf_function_with_a_signature_keeps_names_and_output_structure():
    rng = tf_models.rng(3)
    w = tf.Variable(rng.standard_normal((8, 4)).astype(np.float32))
    b = tf.Variable(rng.standard_normal((4,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([5, 8], tf.float32, name="x"),
                                  tf.TensorSpec([5, 4], tf.float32, name="bias2")])
    def head(x, bias2):
        y = tf.matmul(x, w) + b
        return {"probs": tf.nn.softmax(y + bias2), "logits": y}

    x = rng.standard_normal((5, 8)).astype(np.float32)
    b2 = rng.standard_normal((5, 4)).astype(np.float32)
    art = byteir_core.compile(head, target="cpu")
    session = byteir_core.load(art)
    got = session(x, b2)
    ref = head(tf.constant(x), tf.constant(b2))
    assert set(got) == {"probs", "logits"}
    for k in got:
        np.testing.assert_allclose(got[k], ref[k].numpy(), rtol=1e-4, atol=1e-5)
    assert [session.get_arg_name(o) for o in session.get_input_arg_offsets()] == ["x", "bias2"]
    assert sorted(session.get_arg_name(o) for o in session.get_output_arg_offsets()) == ["logits", "probs"]


def test_a_dynamic_batch_is_pinned_by_input_shapes_or_reported():
    model = tf_models.mlp()
    with pytest.raises(byteir_core.FrontendError, match=r"static shapes only.*--input-shape 1x16"):
        byteir_core.compile(model, target="cpu")
    x = tf_models.rng(4).standard_normal((6, 16)).astype(np.float32)
    art = byteir_core.compile(model, target="cpu", input_shapes={"features": [6, 16]})
    np.testing.assert_allclose(byteir_core.load(art).run(x)[0], model(x).numpy(), rtol=1e-4, atol=1e-5)


def test_a_saved_model_round_trip_through_the_cli(tmp_path):
    rng = tf_models.rng(5)
    model = tf_models.cnn()
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    tf_models.trained_batchnorm(model, x)
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    byteir = [sys.executable, "-m", "byteir_core.cli"]
    out = tmp_path / "cnn.byre"
    # the batch is dynamic in the SavedModel: without a shape the error says which one to give
    r = subprocess.run([*byteir, "compile", str(tmp_path / "sm"), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode != 0 and "--input-shape" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([*byteir, "compile", str(tmp_path / "sm"), "-o", str(out), "--input-shape", "2x16x16x3"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(byteir_core.load(str(out)).run(x)[0], model(x, training=False).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_a_tf_module_saved_model_the_converter_crashes_on_compiles_through_xla(tmp_path):
    model = tf_models.mlp()

    class Wrapped(tf.Module):
        def __init__(self, m):
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([2, 16], tf.float32, name="x")])
        def __call__(self, x):
            return self.m(x)

    tf.saved_model.save(Wrapped(model), str(tmp_path / "sm"))
    x = tf_models.rng(6).standard_normal((2, 16)).astype(np.float32)
    art = byteir_core.compile(str(tmp_path / "sm"), target="cpu")
    np.testing.assert_allclose(byteir_core.load(art).run(x)[0], model(x).numpy(), rtol=1e-4, atol=1e-5)
