"""What the jax frontend refuses, and that it says what and where (a FrontendError, never a deep traceback)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import byteir_core
from byteir_core.errors import FrontendError, NoFrontendError, OptionError

BYTEIR = os.path.join(os.path.dirname(sys.executable), "byteir")


def affine(w, x):
    return x @ w + 1.0


W, X = np.ones((3, 4), np.float32), np.ones((2, 3), np.float32)


def serialized():
    return bytes(export.export(jax.jit(affine))(W, X).serialize())


def test_a_jitted_function_needs_example_inputs():
    with pytest.raises(FrontendError, match=r"'affine': tracing it needs example inputs"):
        byteir_core.compile(jax.jit(affine), target="cpu")


def test_example_inputs_of_the_wrong_shape_name_the_shapes_and_jax_reason():
    with pytest.raises(FrontendError) as e:
        byteir_core.compile(jax.jit(affine), (W, np.ones((2, 5), np.float32)), target="cpu")
    msg = str(e.value)
    assert "'affine' could not be traced" in msg and "float32[2, 5]" in msg and "dot_general" in msg


def test_a_function_that_fails_to_trace():
    def broken(x):
        if x.sum() > 0:  # Python control flow on a traced value
            return x
        return -x

    with pytest.raises(FrontendError) as e:
        byteir_core.compile(jax.jit(broken), (X,), target="cpu")
    assert "'broken' could not be traced" in str(e.value) and "TracerBoolConversionError" in str(e.value)


def test_lapack_custom_calls_are_named_with_the_users_line():
    def inverse(a):
        return jnp.linalg.inv(a)  # lowers to lapack_sgetrf_ffi / lapack_strsm_ffi on the CPU

    with pytest.raises(FrontendError) as e:
        byteir_core.compile(jax.jit(inverse), (np.eye(3, dtype=np.float32) * 2,), target="cpu")
    msg = str(e.value)
    line = inverse.__code__.co_firstlineno + 1
    assert "lapack_sgetrf_ffi x1 (lu at test_jax_errors.py:" + str(line) + ")" in msg, msg
    assert "jnp.linalg" in msg


def test_host_callbacks_are_refused():
    def noisy(x):
        jax.debug.print("x = {}", x)
        return x * 2

    # jax.export itself refuses to export a host callback; the error says which function
    with pytest.raises(FrontendError, match=r"(?s)'noisy' could not be traced.*host_callbacks"):
        byteir_core.compile(jax.jit(noisy), (X,), target="cpu")


def test_a_corrupt_jaxexport_file(tmp_path):
    path = tmp_path / "model.jaxexport"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(FrontendError, match=r"model.jaxexport: not a serialized jax.export.Exported"):
        byteir_core.compile(str(path), target="cpu")
    # the same through the CLI: one error line, exit status 1, no traceback
    r = subprocess.run([BYTEIR, "compile", str(path), "-o", str(tmp_path / "o.byre")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "error:" in r.stderr and "not a serialized jax.export.Exported" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_truncated_bin_file(tmp_path):
    path = tmp_path / "exported.bin"
    path.write_bytes(serialized()[:200])
    # .bin is a generic suffix: the jax frontend does not claim a file it cannot read as an export
    with pytest.raises(NoFrontendError):
        byteir_core.compile(str(path), target="cpu")
    with pytest.raises(FrontendError, match=r"exported.bin: not a serialized jax.export.Exported.*truncated"):
        byteir_core.compile(str(path), target="cpu", frontend="jax")


def test_a_damaged_stablehlo_module_inside_an_export(tmp_path):
    blob = bytearray(serialized())
    start = blob.find(b"ML\xefR")
    blob[start + 30:start + 90] = b"\xff" * 60  # keep the flatbuffer's shape, break the module
    path = tmp_path / "damaged.jaxexport"
    path.write_bytes(bytes(blob))
    with pytest.raises(FrontendError) as e:
        byteir_core.compile(str(path), target="cpu")
    assert "damaged.jaxexport" in str(e.value) and "StableHLO" in str(e.value)


def test_an_unreadable_file(tmp_path):
    with pytest.raises(FrontendError, match="cannot read .*missing.jaxexport"):
        byteir_core.compile(str(tmp_path / "missing.jaxexport"), target="cpu")


def test_bad_weights_options():
    with pytest.raises(FrontendError, match=r"weights=\[2\] names argument\(s\) \[2\].*takes 2 positional"):
        byteir_core.compile(jax.jit(affine), (W, X), target="cpu", options={"weights": [2]})
    with pytest.raises(FrontendError, match="argument numbers"):
        byteir_core.compile(jax.jit(affine), (W, X), target="cpu", options={"weights": ["w"]})
    exp = export.export(jax.jit(affine))(W, X)
    with pytest.raises(FrontendError, match="give the example inputs that hold them"):
        byteir_core.compile(exp, target="cpu", options={"weights": [0]})
    with pytest.raises(OptionError, match="weights"):  # the core lists this frontend's options
        byteir_core.compile(jax.jit(affine), (W, X), target="cpu", options={"weight": [0]})


def test_example_inputs_that_do_not_fit_an_exported():
    exp = export.export(jax.jit(affine))(W, X)
    with pytest.raises(FrontendError, match=r"example input x is float32\[2, 4\]; the exported function takes "
                                            r"float32\[2, 3\]"):
        byteir_core.compile(exp, (W, np.ones((2, 4), np.float32)), target="cpu", options={"weights": [0]})
    with pytest.raises(FrontendError, match="structure"):
        byteir_core.compile(exp, ({"w": W}, X), target="cpu", options={"weights": [0]})


def test_a_multi_device_export_is_refused():
    if jax.device_count() > 1:  # pragma: no cover -- CI's CPU has one device
        pytest.fail("unexpected: several jax devices")
    exp = export.export(jax.jit(affine))(W, X)
    object.__setattr__(exp, "nr_devices", 2)  # what exporting under a 2-device mesh records
    with pytest.raises(FrontendError, match="exported for 2 devices"):
        byteir_core.compile(exp, target="cpu")
