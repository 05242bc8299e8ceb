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


def ty(shape, dtype: str) -> str:
    """The MLIR tensor type of ``shape`` and element type ``dtype``."""
    return "tensor<" + "".join(f"{d}x" for d in shape) + dtype + ">"


def random_array(rng, shape, dtype: str, kind: str = "any") -> np.ndarray:
    """Test data of an MLIR element type: ``kind`` is ``any``, ``positive``, ``nonzero`` or ``unit`` (|x| < 1),
    so ops with restricted domains (log, divide, tan) get inputs inside them."""
    from byteir_core.dtypes import to_numpy

    dt = to_numpy(dtype)
    if dtype == "i1":
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dt, np.integer):
        lo = 1 if kind == "nonzero" else (-9 if kind == "any" else 0)
        return rng.integers(lo, 10, size=shape).astype(dt)
    a = rng.standard_normal(size=shape) * 2
    if kind == "positive":
        a = np.abs(a) + 0.25
    elif kind == "nonzero":
        a = np.where(np.abs(a) < 0.25, 0.5, a)
    elif kind == "unit":
        a = np.tanh(a) * 0.9
    return a.astype(dt)


def elementwise(op: str, t: str, arity: int = 1) -> str:
    """``@main`` applying ``stablehlo.<op>`` to ``arity`` arguments of type ``t``."""
    names = ", ".join(f"%a{i}" for i in range(arity))
    args = ", ".join(f"%a{i}: {t}" for i in range(arity))
    return f"func.func @main({args}) -> {t} {{\n  %r = stablehlo.{op} {names} : {t}\n  return %r : {t}\n}}"
