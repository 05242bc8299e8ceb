"""JAX models compiled by byteir for --target cpu, compared with JAX's own CPU results (fp32 rtol 1e-4, atol 1e-5)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_helpers import compile_and_check, input_names, rand


# -- models: plain functions of (params, inputs), as Flax NNX / Equinox models are once split --------------------
def mlp_params(rng, sizes=(16, 32, 8)):
    return {f"layer{i}": {"kernel": rand(rng, a, b, scale=a ** -0.5), "bias": rand(rng, b, scale=0.1)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}


def mlp(params, x):
    n = len(params)
    for i in range(n):
        p = params[f"layer{i}"]
        x = x @ p["kernel"] + p["bias"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


def cnn(params, x):
    """NCHW conv -> relu -> 2x2 max pool -> conv -> relu -> global average pool -> dense."""
    dn = ("NCHW", "OIHW", "NCHW")
    y = lax.conv_general_dilated(x, params["conv1"]["w"], (1, 1), "SAME", dimension_numbers=dn)
    y = jax.nn.relu(y + params["conv1"]["b"][None, :, None, None])
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    y = lax.conv_general_dilated(y, params["conv2"]["w"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
    y = jax.nn.relu(y + params["conv2"]["b"][None, :, None, None])
    y = lax.reduce_window(y, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") / 4.0  # 2x2 average pool
    y = y.mean(axis=(2, 3))
    return y @ params["fc"]["w"] + params["fc"]["b"]


def cnn_params(rng):
    return {"conv1": {"w": rand(rng, 8, 3, 3, 3, scale=0.3), "b": rand(rng, 8, scale=0.1)},
            "conv2": {"w": rand(rng, 16, 8, 3, 3, scale=0.15), "b": rand(rng, 16, scale=0.1)},
            "fc": {"w": rand(rng, 16, 10, scale=0.25), "b": rand(rng, 10, scale=0.1)}}


def layer_norm(x, p, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def transformer_block(params, x, heads=4):
    """Pre-norm block: x + MHA(LN(x)), then + MLP(LN(.)) with GELU; x is [batch, seq, d]."""
    b, s, d = x.shape
    hd = d // heads
    h = layer_norm(x, params["ln1"])
    a = params["attn"]
    q, k, v = (jnp.einsum("bsd,de->bse", h, a[n]).reshape(b, s, heads, hd) for n in ("wq", "wk", "wv"))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd).astype(np.float32)
    attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(b, s, d)
    x = x + attn @ a["wo"]
    h = layer_norm(x, params["ln2"])
    h = jax.nn.gelu(h @ params["mlp"]["w1"] + params["mlp"]["b1"])
    return x + h @ params["mlp"]["w2"] + params["mlp"]["b2"]


def transformer_params(rng, d=32, ff=64):
    s = d ** -0.5
    return {"ln1": {"scale": 1 + rand(rng, d, scale=0.1), "bias": rand(rng, d, scale=0.1)},
            "attn": {n: rand(rng, d, d, scale=s) for n in ("wq", "wk", "wv", "wo")},
            "ln2": {"scale": 1 + rand(rng, d, scale=0.1), "bias": rand(rng, d, scale=0.1)},
            "mlp": {"w1": rand(rng, d, ff, scale=s), "b1": rand(rng, ff, scale=0.1),
                    "w2": rand(rng, ff, d, scale=ff ** -0.5), "b2": rand(rng, d, scale=0.1)}}


def rnn(params, xs, h0):
    """An Elman RNN over the sequence with lax.scan (a stablehlo.while): the last state and every state."""
    def cell(h, x):
        h = jnp.tanh(x @ params["wx"] + h @ params["wh"] + params["b"])
        return h, h

    return lax.scan(cell, h0, xs)


# -- tests --------------------------------------------------------------------------------------------------------
def test_mlp_with_params_as_inputs():
    rng = np.random.default_rng(0)
    params, x = mlp_params(rng), rand(rng, 4, 16)
    sess = compile_and_check(mlp, (params, x))
    # the artifact's inputs are the flattened leaves, named by their pytree paths (dict keys sorted, as jax does)
    assert input_names(sess) == ["params['layer0']['bias']", "params['layer0']['kernel']",
                                 "params['layer1']['bias']", "params['layer1']['kernel']", "x"]


def test_cnn_conv_pooling_relu():
    rng = np.random.default_rng(1)
    params, x = cnn_params(rng), rand(rng, 2, 3, 16, 16)
    sess = compile_and_check(cnn, (params, x), options={"weights": [0]}, runtime_args=[x])
    assert input_names(sess) == ["x"]


def test_transformer_block():
    rng = np.random.default_rng(2)
    params, x = transformer_params(rng), rand(rng, 2, 8, 32)
    sess = compile_and_check(transformer_block, (params, x), options={"weights": [0]}, runtime_args=[x])
    assert input_names(sess) == ["x"]


def test_transformer_block_exact_gelu():
    """GELU with erf (approximate=False) lowers to chlo.erf; the core's legalize group expands it."""
    rng = np.random.default_rng(3)
    params, x = transformer_params(rng), rand(rng, 1, 8, 32)

    def block(p, x):
        return jax.nn.gelu(transformer_block(p, x), approximate=False)

    compile_and_check(block, (params, x), options={"weights": [0]}, runtime_args=[x])


def test_scan_rnn_becomes_a_while_loop():
    rng = np.random.default_rng(4)
    params = {"wx": rand(rng, 6, 12, scale=0.4), "wh": rand(rng, 12, 12, scale=0.3), "b": rand(rng, 12, scale=0.1)}
    xs, h0 = rand(rng, 7, 3, 6), np.zeros((3, 12), np.float32)
    sess = compile_and_check(rnn, (params, xs, h0))
    assert input_names(sess)[-2:] == ["xs", "h0"]
    assert sess.get_static_shape(sess.get_output_arg_offsets()[1]) == [7, 3, 12]


def test_grad_training_step_as_one_program():
    """loss and SGD-updated params from jax.value_and_grad: params are inputs (not frozen) and outputs."""
    rng = np.random.default_rng(5)
    params, x, y = mlp_params(rng, (8, 16, 4)), rand(rng, 6, 8), rand(rng, 6, 4)

    def loss_fn(p, x, y):
        return jnp.mean((mlp(p, x) - y) ** 2)

    def train_step(p, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        return loss, jax.tree_util.tree_map(lambda w, g: w - 0.1 * g, p, grads)

    sess = compile_and_check(train_step, (params, x, y))
    assert len(sess.get_input_arg_offsets()) == 6 and len(sess.get_output_arg_offsets()) == 5
    # a second step fed with the first step's params, as a training loop does
    loss, new_params = sess(*jax.tree_util.tree_leaves((params, x, y)))
    loss2, _ = sess(*jax.tree_util.tree_leaves((new_params, x, y)))
    want2, _ = jax.jit(train_step)(jax.tree_util.tree_map(jnp.asarray, new_params), x, y)
    np.testing.assert_allclose(loss2, want2, rtol=1e-4, atol=1e-5)
    assert loss2 < loss


def test_frozen_nested_params_become_weights():
    """Flax/Equinox style: the model is a function of (params, x); weights=[0] freezes the params' leaves."""
    rng = np.random.default_rng(6)
    params = {"encoder": mlp_params(rng, (16, 32)), "head": {"proj": mlp_params(rng, (32, 8))}}

    def model(p, x, scale):
        h = jax.nn.relu(mlp(p["encoder"], x))
        return {"logits": mlp(p["head"]["proj"], h) * scale, "features": h}

    x, scale = rand(rng, 4, 16), np.float32(0.5)
    sess = compile_and_check(model, (params, x, scale), options={"weights": [0]}, runtime_args=[x, scale])
    assert input_names(sess) == ["x", "scale"]
    assert len(sess.get_weight_arg_offsets()) >= 1  # the 16x32 and 32x8 kernels travel as weights
    # other values of the non-frozen inputs still give JAX's answer
    x2 = rand(rng, 4, 16)
    want = jax.jit(model)(params, x2, np.float32(2.0))
    got = sess(x2, np.float32(2.0))
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-4, atol=1e-5)


def test_unused_arguments_stay_inputs():
    """jax.export drops arguments the function never reads; the artifact still takes every leaf, in order."""
    rng = np.random.default_rng(7)
    x, unused, y = rand(rng, 3), rand(rng, 2), rand(rng, 3)
    sess = compile_and_check(lambda x, unused, y: x * y + 1.0, (x, unused, y))
    assert input_names(sess) == ["x", "unused", "y"]
    assert sess.get_static_shape(sess.get_input_arg_offsets()[1]) == [2]
