"""The StableHLO reference interpreter as a runtime engine: load a portable artifact, run it on NumPy buffers.

Used by the built-in reference provider, and by vendor backends as a simulator (see the ASIC template).
One MLIR context per engine, one call at a time: it is the correctness oracle, not a fast path.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import numpy as np

from .dtypes import copy_into
from .errors import ProviderError
from .mlir import capture_diagnostics, ir, new_context, stablehlo_api

Program = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], None]


def _to_attr(a: np.ndarray):
    a = np.require(a, requirements="C")  # unlike ascontiguousarray, keeps rank 0
    if a.dtype.name == "bfloat16":  # bf16 kernels take i16 bit patterns (NumPy has no bf16 buffer format)
        a = a.view(np.int16)
    elif a.dtype.name.startswith("float8"):  # float8 kernels take i8 bit patterns (reference.py's wrapper)
        a = a.view(np.int8)
    elif a.dtype.name == "float4_e2m1fn":  # 4-bit float kernels take i8 holding the bits as a signed nibble
        a = ((a.view(np.uint8) & 0xF).astype(np.int8) ^ 8) - 8
    elif a.dtype.name in ("int4", "uint4", "int2", "uint2"):  # narrow integer kernels take i8 values (one per byte)
        a = a.astype(np.int8)
    return ir.DenseElementsAttr.get(a, shape=list(a.shape))


class Interpreter:
    def __init__(self):
        self._ctx: ir.Context | None = None
        self._lock = threading.Lock()

    def load(self, artifact: bytes, what: str) -> Program:
        """Deserialize a StableHLO portable artifact; ``what`` names it in errors (e.g. the callee)."""
        with self._lock:
            if self._ctx is None:
                self._ctx = new_context()
            try:
                module = stablehlo_api.deserialize_portable_artifact(self._ctx, artifact)
            except Exception as e:  # noqa: BLE001
                raise ProviderError(f"{what}: not a readable StableHLO portable artifact: {e}") from None

        def run(inputs, outputs):
            with self._lock, self._ctx, ir.Location.unknown(), capture_diagnostics(self._ctx) as diags:
                try:
                    results = stablehlo_api.eval_module(module, [_to_attr(a) for a in inputs])
                except Exception as e:  # noqa: BLE001
                    raise ProviderError(f"{what}: the interpreter failed: {'; '.join(diags) or e}") from None
                if len(results) != len(outputs):
                    raise ProviderError(f"{what}: the kernel returned {len(results)} results for "
                                        f"{len(outputs)} output buffers")
                for out, res in zip(outputs, results):
                    copy_into(out, res)

        return run
