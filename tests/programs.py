"""Small StableHLO programs shared by the tests, with NumPy versions computed independently."""

import numpy as np

MLP = open(__file__.replace("tests/programs.py", "examples/mlp.mlir")).read()


def mlp_numpy(x: np.ndarray) -> np.ndarray:
    w1 = np.repeat((np.arange(16) * 0.01)[:, None], 32, axis=1)
    w2 = np.repeat((np.arange(8) * 0.05)[None, :], 32, axis=0)
    o = np.tanh(x.astype(np.float64) @ w1 + 0.1) @ w2
    e = np.exp(o - o.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def func(args: str, results: str, body: str) -> str:
    return f"func.func @main({args}) -> ({results}) {{\n{body}\n}}\n"
