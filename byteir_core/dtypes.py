"""Element types: MLIR names <-> NumPy dtypes (bfloat16 through ml_dtypes)."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

_MLIR_TO_NUMPY: dict[str, np.dtype] = {
    "f64": np.dtype(np.float64),
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "i1": np.dtype(np.bool_),
    "i8": np.dtype(np.int8),
    "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "ui8": np.dtype(np.uint8),
    "ui16": np.dtype(np.uint16),
    "ui32": np.dtype(np.uint32),
    "ui64": np.dtype(np.uint64),
    # narrow types (ml_dtypes, one byte per element): the reference backend runs converts from and to them
    "f8E4M3FN": np.dtype(ml_dtypes.float8_e4m3fn),
    "f8E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "f8E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "f8E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "i4": np.dtype(ml_dtypes.int4),
    "ui4": np.dtype(ml_dtypes.uint4),
    "f4E2M1FN": np.dtype(ml_dtypes.float4_e2m1fn),
    "f8E8M0FNU": np.dtype(ml_dtypes.float8_e8m0fnu),
    "i2": np.dtype(ml_dtypes.int2),
    "ui2": np.dtype(ml_dtypes.uint2),
    "complex<f32>": np.dtype(np.complex64),
    "complex<f64>": np.dtype(np.complex128),
}
_NUMPY_TO_MLIR = {v: k for k, v in _MLIR_TO_NUMPY.items()}


def to_numpy(mlir_type: str) -> np.dtype:
    try:
        return _MLIR_TO_NUMPY[mlir_type]
    except KeyError:
        raise TypeError(f"element type {mlir_type!r} has no NumPy equivalent; "
                        f"supported: {', '.join(_MLIR_TO_NUMPY)}") from None


def to_mlir(dtype) -> str:
    dt = np.dtype(dtype)
    try:
        return _NUMPY_TO_MLIR[dt]
    except KeyError:
        raise TypeError(f"NumPy dtype {dt} has no MLIR element type") from None


@dataclass(frozen=True)
class TensorSpec:
    """Static shape and element type of a tensor (or buffer) crossing an interface."""

    shape: tuple[int, ...]
    dtype: str  # MLIR element type name: "f32", "bf16", "i1", "i64", ...

    @property
    def np_dtype(self) -> np.dtype:
        return to_numpy(self.dtype)

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * self.np_dtype.itemsize

    def tensor_type(self) -> str:
        return "tensor<" + "".join(f"{d}x" for d in self.shape) + self.dtype + ">"

    def memref_type(self) -> str:
        return "memref<" + "".join(f"{d}x" for d in self.shape) + self.dtype + ">"

    def __str__(self) -> str:
        return "x".join(str(d) for d in self.shape) + ("x" if self.shape else "") + self.dtype

    @classmethod
    def from_type(cls, t) -> "TensorSpec":
        """From an MLIR ``RankedTensorType`` or ``MemRefType`` with a static shape."""
        from .mlir import ir

        st = ir.ShapedType(t)
        if not st.has_static_shape:
            raise TypeError(f"type {t} has a dynamic shape; give static shapes (e.g. --input-shape)")
        return cls(tuple(st.shape), str(st.element_type))


def copy_into(dst: np.ndarray, src) -> None:
    """Copy ``src``'s bytes into the C-contiguous buffer ``dst`` (same size; any rank, bf16 included)."""
    src = np.require(np.asarray(src), requirements="C")
    if not dst.flags.c_contiguous:  # reshape(-1) would write into a copy and lose the result
        raise ValueError("copy_into needs a C-contiguous destination buffer")
    if src.nbytes != dst.nbytes:
        raise ValueError(f"cannot copy {src.nbytes} bytes into a buffer of {dst.nbytes}")
    dst.reshape(-1).view(np.uint8)[:] = src.reshape(-1).view(np.uint8)
