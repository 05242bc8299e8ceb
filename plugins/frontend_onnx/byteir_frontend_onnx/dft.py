"""``DFT`` as matrix products with constant cosine and sine tables, before import (torch-mlir's lowering of it does
not reach StableHLO).

For a signal of static length along ``axis`` and a constant ``dft_length`` ``N`` (the input's length along the
axis by default; ``2 * (length - 1)`` for an inverse one-sided transform), as onnx's reference (NumPy's FFT)
defines it:

- forward: ``X[k] = sum_n x[n] e^{-2 pi i k n / N}`` over the first ``min(length, N)`` samples (zero padding
  beyond), ``k < N`` or, ``onesided``, ``k <= N / 2``;
- inverse: ``x[n] = (1 / N) sum_k X[k] e^{+2 pi i k n / N}``;
- inverse ``onesided`` (irfft): the real signal of a Hermitian spectrum given by its first ``N / 2 + 1`` bins,
  ``x[n] = (1 / N) sum_k w_k Re(X[k] e^{2 pi i k n / N})`` with ``w_k = 2`` except for the DC bin and, for even
  ``N``, the Nyquist bin (weight 1; their imaginary parts drop out).

Real and imaginary parts are separate products (``Re = xr C + xi S``, ``Im = xi C - xr S`` forward), in float32
(or float64 for double inputs); the signal axis is moved last for the products and back after.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .quantize import GraphBuilder


def rewrite(n: onnx.NodeProto, info, consts: dict, opset: int, inits: list) -> list[onnx.NodeProto] | None:
    shape, elem = info(n.input[0])
    if shape is None or len(shape) < 2 or shape[-1] not in (1, 2):
        return None
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    inverse, onesided = bool(a.get("inverse", 0)), bool(a.get("onesided", 0))
    rank = len(shape)
    if opset >= 20:
        axis = -2
        if len(n.input) > 2 and n.input[2]:
            if n.input[2] not in consts:
                return None
            axis = int(np.asarray(consts[n.input[2]]).reshape(-1)[0])
    else:
        axis = a.get("axis", 1)
    axis %= rank
    if axis == rank - 1:
        return None
    length = shape[axis]
    if len(n.input) > 1 and n.input[1]:
        if n.input[1] not in consts:
            return None
        size = int(np.asarray(consts[n.input[1]]).reshape(-1)[0])
    else:
        size = 2 * (length - 1) if inverse and onesided else length
    if size < 1:
        return None
    work = TensorProto.DOUBLE if elem == TensorProto.DOUBLE else TensorProto.FLOAT
    dt = np.float64 if work == TensorProto.DOUBLE else np.float32

    if not inverse:
        rows, cols = min(length, size), (size // 2 + 1 if onesided else size)
    elif onesided:
        rows, cols = min(length, size // 2 + 1), size
    else:
        rows, cols = min(length, size), size
    k, m = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    angle = 2 * np.pi * k * m / size
    cos, sin = np.cos(angle), np.sin(angle)
    if inverse and onesided:
        weight = np.full(rows, 2.0)
        weight[0] = 1.0
        if size % 2 == 0 and size // 2 < rows:
            weight[size // 2] = 1.0
        cos, sin = cos * weight[:, None], sin * weight[:, None]
    if inverse:
        cos, sin = cos / size, sin / size

    b = GraphBuilder(n.name or "DFT", inits)
    x = n.input[0] if elem == work else b.cast(n.input[0], work)
    last = b.const(np.array([rank - 1], np.int64), "last")

    def part(index):
        piece = b.op("Slice", [x, b.const(np.array([index], np.int64)), b.const(np.array([index + 1], np.int64)),
                               last])
        piece = b.op("Squeeze", [piece, last])
        if rows < length:  # samples beyond the transform's length are dropped
            piece = b.op("Slice", [piece, b.const(np.array([0], np.int64)), b.const(np.array([rows], np.int64)),
                                   b.const(np.array([axis], np.int64))])
        return piece

    perm = [d for d in range(rank - 1) if d != axis] + [axis]
    back = list(np.argsort(perm))
    moved = perm != list(range(rank - 1))

    def product(v, table):
        v = b.op("Transpose", [v], perm=perm) if moved else v
        return b.op("MatMul", [v, b.const(table.astype(dt), "table")])

    def finish(v):
        v = b.op("Transpose", [v], perm=back) if moved else v
        return b.op("Unsqueeze", [v, last])

    xr = part(0)
    xi = part(1) if shape[-1] == 2 else None
    sign = 1.0 if inverse else -1.0  # e^{sign 2 pi i k n / N}
    re = product(xr, cos)
    im = product(xr, sign * sin)
    if xi is not None:
        re = b.op("Sub", [re, product(xi, sign * sin)])
        im = b.op("Add", [im, product(xi, cos)])
    if inverse and onesided:
        out = finish(re)
    else:
        out = b.op("Concat", [finish(re), finish(im)], axis=-1)
    if elem != work:
        out = b.cast(out, elem)
    b.op("Identity", [out], n.output[0])
    return b.nodes
