"""Small TensorFlow/Keras models for the tf frontend's tests (random weights, seeded; nothing downloaded)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def rng(seed=0):
    keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


def mlp():
    return keras.Sequential([keras.Input((16,), name="features"), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(4)], name="mlp")


def cnn():
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, padding="same"), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(12, 3, strides=2, activation="relu"),
        keras.layers.AveragePooling2D(2), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10),
    ], name="cnn")


def trained_batchnorm(model, x):
    """Move BatchNormalization's statistics off their 0/1 start, so inference-mode BN is really exercised."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.linspace(-0.5, 0.5, c).astype(np.float32))
            layer.moving_variance.assign(np.linspace(0.5, 2.0, c).astype(np.float32))
            layer.gamma.assign(np.linspace(0.8, 1.2, c).astype(np.float32))
            layer.beta.assign(np.linspace(-0.1, 0.1, c).astype(np.float32))
    return model


def rnn(kind):
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]
    return keras.Sequential([keras.Input((7, 5)), layer(6, return_sequences=True), layer(4)], name=kind)


def transformer_block(seq=10, dim=16, heads=2):
    inp = keras.Input((seq, dim), name="tokens")
    att = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=dim // heads)(inp, inp)
    h = keras.layers.LayerNormalization()(inp + att)
    f = keras.layers.Dense(4 * dim, activation="gelu")(h)
    f = keras.layers.Dense(dim)(f)
    return keras.Model(inp, keras.layers.LayerNormalization()(h + f), name="block")
