"""ONNX's training-domain optimizers (``ai.onnx.preview.training``: Adagrad, Momentum, Adam) as arithmetic, before
import.

torch-mlir lowers none of them. Each update is the formula of onnx's reference implementation (the operator
spec's own), written with default-domain ops in the tensors' type, for every tensor it updates (the ops take
``R, T`` then ``n`` tensors of each kind, and return the ``n`` updated tensors of each kind):

- **Adagrad**: ``r = R / (1 + T * decay_factor)``; ``g = norm_coefficient * X + G``; ``H' = H + g * g``;
  ``X' = X - r * g / (sqrt(H') + epsilon)``.
- **Momentum** (``mode`` standard or nesterov): ``g = norm_coefficient * X + G``; ``V' = alpha * V + b * g``
  with ``b = beta`` after the first step (``T > 0``) and 1 at it; ``X' = X - R * V'`` (standard) or
  ``X' = X - R * (g + alpha * V')`` (nesterov).
- **Adam**: ``g = norm_coefficient * X + G``; ``V' = alpha * V + (1 - alpha) * g``;
  ``H' = beta * H + (1 - beta) * g * g``; ``r = R * sqrt(1 - beta^T) / (1 - alpha^T)`` when ``T > 0``, else ``R``;
  ``X' = (1 - norm_coefficient_post) * (X - r * V' / (sqrt(H') + epsilon))``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .quantize import GraphBuilder

DOMAIN = "ai.onnx.preview.training"
_NP = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}


def rewrite(n: onnx.NodeProto, info, inits: list) -> list[onnx.NodeProto] | None:
    kinds = {"Adagrad": 3, "Momentum": 3, "Adam": 4}.get(n.op_type)
    if kinds is None or (len(n.input) - 2) % kinds or len(n.input) < 2 + kinds:
        return None
    count = (len(n.input) - 2) // kinds
    elem = info(n.input[2])[1]
    if elem not in _NP or any(info(x)[1] != elem for x in n.input[2:]):
        return None
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    dt = _NP[elem]
    b = GraphBuilder(n.name or n.op_type, inits)

    def c(v):
        return b.const(np.array(v, dt))

    def op(name, *xs):
        return b.op(name, list(xs))

    r, t = b.cast(n.input[0], elem), b.cast(n.input[1], elem)
    first = op("Greater", t, c(0))  # T > 0: after the first step
    groups = [list(n.input[2 + k * count:2 + (k + 1) * count]) for k in range(kinds)]
    outs = [list(n.output[k * count:(k + 1) * count]) for k in range(kinds - 1)]
    for i in range(count):
        x, grad = groups[0][i], groups[1][i]
        g = op("Add", op("Mul", c(a.get("norm_coefficient", 0.0)), x), grad)
        if n.op_type == "Adagrad":
            h = groups[2][i]
            rate = op("Div", r, op("Add", c(1.0), op("Mul", t, c(a.get("decay_factor", 0.0)))))
            h_new = b.op("Add", [h, op("Mul", g, g)], outs[1][i] or None)
            step = op("Div", op("Mul", rate, g), op("Add", op("Sqrt", h_new), c(a.get("epsilon", 0.0))))
            b.op("Sub", [x, step], outs[0][i] or None)
        elif n.op_type == "Momentum":
            v = groups[2][i]
            alpha, beta = a.get("alpha", 0.0), a.get("beta", 0.0)
            mode = a.get("mode", b"standard")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("standard", "nesterov"):
                return None
            beta_now = b.op("Where", [first, c(beta), c(1.0)])
            v_new = b.op("Add", [op("Mul", c(alpha), v), op("Mul", beta_now, g)], outs[1][i] or None)
            direction = v_new if mode == "standard" else op("Add", g, op("Mul", c(alpha), v_new))
            b.op("Sub", [x, op("Mul", r, direction)], outs[0][i] or None)
        else:  # Adam
            v, h = groups[2][i], groups[3][i]
            alpha, beta = a.get("alpha", 0.9), a.get("beta", 0.999)
            v_new = b.op("Add", [op("Mul", c(alpha), v), op("Mul", c(1.0 - alpha), g)], outs[1][i] or None)
            h_new = b.op("Add", [op("Mul", c(beta), h), op("Mul", c(1.0 - beta), op("Mul", g, g))],
                         outs[2][i] or None)
            corrected = op("Div", op("Mul", r, op("Sqrt", op("Sub", c(1.0), op("Pow", c(beta), t)))),
                           op("Sub", c(1.0), op("Pow", c(alpha), t)))
            rate = b.op("Where", [first, corrected, r])
            x_new = op("Sub", x, op("Mul", rate, op("Div", v_new, op("Add", op("Sqrt", h_new),
                                                                          c(a.get("epsilon", 0.0))))))
            b.op("Mul", [c(1.0 - a.get("norm_coefficient_post", 0.0)), x_new], outs[0][i] or None)
    return b.nodes
