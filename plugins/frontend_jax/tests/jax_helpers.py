"""Shared by the jax frontend's tests: compile with byteir for --target cpu, run, compare with JAX on the CPU."""

import jax
import numpy as np

import byteir_core

# fp32 tolerances every model is held to unless a test says why not
RTOL, ATOL = 1e-4, 1e-5


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def assert_tree_close(got, want, rtol=RTOL, atol=ATOL):
    """Same pytree structure (byteir rebuilds the function's tuples and dicts) and every leaf close."""
    gs, ws = jax.tree_util.tree_structure(got), jax.tree_util.tree_structure(want)
    assert gs == ws, f"structure {gs} != JAX's {ws}"
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def compile_and_check(fn, args, *, options=None, runtime_args=None, rtol=RTOL, atol=ATOL):
    """jit ``fn``, compile it for cpu, run it on ``runtime_args`` (default: every leaf of ``args``) and compare
    with JAX's own CPU result. Returns the session."""
    jitted = jax.jit(fn)
    want = jitted(*args)
    sess = byteir_core.load(byteir_core.compile(jitted, args, target="cpu", options=options))
    flat = jax.tree_util.tree_leaves(args) if runtime_args is None else runtime_args
    got = sess(*flat)
    assert_tree_close(got, want, rtol, atol)
    return sess


def input_names(sess):
    return [sess.get_arg_name(i) for i in sess.get_input_arg_offsets()]
