"""A stand-in for the slice of CuPy the cuda provider uses, over host memory, so the GPU runtime's own logic
(buffers, scratch, staging of misaligned arrays, streams, CUDA graph capture and replay, the cuBLAS call's
transposes and leading dimensions) runs in tests on machines without a GPU.

It is a model of the CUDA API, not of a GPU: a "module" must be loaded from a CUDA ELF (cubin) or PTX text; a
kernel launch runs the Triton source registered for that kernel name through Triton's interpreter; and
``gemmStridedBatchedEx`` computes what cuBLAS's column-major definition says, reading raw pointers. What this
cannot check (the cubin's machine code, timing) is left to ``make test-gpu``.
"""

from __future__ import annotations

import ctypes
import sys
import types

import ml_dtypes
import numpy as np

#: cubin bytes (and PTX bytes) -> TritonKernel, registered by the test before loading an artifact
KERNELS: dict = {}
#: every launch that ran on the "device": (kernel name, grid, block, shared) -- for assertions
LAUNCHES: list = []
#: launches the host issued (a graph replay issues none)
ISSUED: list = []
#: every cuBLAS call: (transa, transb, m, n, k, lda, ldb, ldc, batch)
GEMMS: list = []

uint8, uint16, float32 = np.uint8, np.uint16, np.float32


class ndarray(np.ndarray):
    """Host memory standing for device memory: ``.data.ptr`` like CuPy's."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def get(self):
        return np.array(self)

    def set(self, host, stream=None):
        np.copyto(np.asarray(self), np.asarray(host).reshape(self.shape))


def _dev(a) -> ndarray:
    return np.asarray(a).view(ndarray)


def empty(shape, dtype=np.float32):
    return _dev(np.empty(shape, dtype))


def empty_like(a):
    return _dev(np.empty_like(np.asarray(a)))


def asarray(a):
    return _dev(np.array(a))


def ascontiguousarray(a):
    return _dev(np.ascontiguousarray(np.asarray(a)))


def asnumpy(a, stream=None):
    return np.array(a)


def copyto(dst, src):
    np.copyto(np.asarray(dst), np.asarray(src))


class _Graph:
    def __init__(self, calls):
        self.calls = calls

    def launch(self, stream):
        for call in self.calls:
            call()


class Stream:
    _next = 1000

    def __init__(self, ptr=None, non_blocking=False):
        if ptr is None:
            Stream._next += 1
            ptr = Stream._next
        self.ptr = ptr
        self.captured = None
        _STREAMS[ptr] = self  # cuBLAS is handed the pointer: find the stream again

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def begin_capture(self):
        self.captured = []

    def end_capture(self):
        graph, self.captured = _Graph(self.captured), None
        return graph

    def run(self, call):
        """Queue ``call`` (capturing) or run it now."""
        if self.captured is not None:
            self.captured.append(call)
        else:
            call()


class ExternalStream(Stream):
    def __new__(cls, ptr):
        return _STREAMS.get(ptr) or super().__new__(cls)

    def __init__(self, ptr):
        if getattr(self, "ptr", None) != ptr:
            super().__init__(ptr)


_STREAMS: dict = {}
_NULL = Stream(0)


def register(kernels) -> None:
    """Make each kernel's binaries loadable: a module loaded from them runs the kernel's source."""
    from byteir_backend_cuda.program import unb64

    for k in kernels:
        for b in k.binaries:
            KERNELS[unb64(b.cubin)] = k
            KERNELS[b.ptx.encode()] = k


class _Function:
    def __init__(self, name, kernel):
        self.name = name
        self.kernel = kernel
        self.max_dynamic_shared_size_bytes = 0

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        from byteir_backend_cuda.interpret import as_torch
        from byteir_backend_cuda.triton_build import interpret

        kernel = self.kernel
        assert block == (32 * kernel.num_warps, 1, 1), (block, kernel.num_warps)
        # Triton kernels take two trailing scratch pointers (global, profile)
        assert len(args) == len(kernel.signature) + 2, (len(args), kernel.signature)
        tensors = [as_torch(np.asarray(a)) if isinstance(a, ndarray) else a.item() for a in args[:-2]]

        def call():
            LAUNCHES.append((self.name, grid, block, shared_mem))
            interpret(kernel, grid, tensors)

        ISSUED.append(self.name)
        stream.run(call)


class _Module:
    def load(self, data: bytes):
        assert data[:4] == b"\x7fELF" or data.lstrip().startswith(b"//"), "not a cubin or PTX"
        self.data = data

    def get_function(self, name):
        assert name.encode() in self.data, f"{name} is not in the loaded module"
        return _Function(name, KERNELS[self.data])


class _Device:
    def __init__(self, i=0):
        self.compute_capability = "90"


def _read(ptr, dtype, count):
    nbytes = np.dtype(dtype).itemsize * count
    return np.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype=dtype).copy()


def _write(ptr, values):
    ctypes.memmove(ptr, np.ascontiguousarray(values).ctypes.data, values.nbytes)


_CUDA_TYPES = {0: np.float32, 1: np.float64, 2: np.float16, 14: ml_dtypes.bfloat16}


def gemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb,
                         strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType, algo):
    """cuBLAS's definition, column-major: C_b = alpha op(A_b) op(B_b) + beta C_b with op(A) m x k and op(B)
    k x n; element (i, j) of a matrix with leading dimension ld is at i + j * ld."""
    stream = _CUBLAS_STREAM.get(handle, _NULL)
    GEMMS.append((transa, transb, m, n, k, lda, ldb, ldc, batchCount))
    scalar = np.float64 if computeType == 70 else np.float32
    # host pointer mode: cuBLAS reads alpha and beta when called (a captured graph keeps their values), not when
    # the work runs; reading them at replay read freed host memory (a replayed GEMM computed 0 * A @ B)
    al, be = _read(alpha, scalar, 1)[0], _read(beta, scalar, 1)[0]

    def call():
        for b in range(batchCount):
            def matrix(ptr, t, rows, cols, ld, trans, stride):
                r, c = (cols, rows) if trans else (rows, cols)  # stored shape
                raw = _read(ptr + b * stride * np.dtype(_CUDA_TYPES[t]).itemsize, _CUDA_TYPES[t], ld * (c - 1) + r)
                stored = np.stack([raw[j * ld:j * ld + r] for j in range(c)], axis=1).astype(np.float64)
                return stored.T if trans else stored
            a = matrix(A, Atype, m, k, lda, transa, strideA)
            bm = matrix(B, Btype, k, n, ldb, transb, strideB)
            out = al * (a @ bm)
            ct = _CUDA_TYPES[Ctype]
            for j in range(n):
                col_ptr = C + (b * strideC + j * ldc) * np.dtype(ct).itemsize
                old = _read(col_ptr, ct, m).astype(np.float64)
                _write(col_ptr, (out[:, j] + (be * old if be else 0)).astype(ct))

    stream.run(call)


_CUBLAS_STREAM: dict = {}


def setStream(handle, ptr):
    _CUBLAS_STREAM[handle] = _STREAMS.get(ptr, _NULL)



def install(monkeypatch) -> types.ModuleType:
    """Put this module in place of ``cupy`` and ``cupy_backends.cuda.libs.cublas`` for one test."""
    me = sys.modules[__name__]
    cuda = types.SimpleNamespace(
        Stream=Stream, ExternalStream=ExternalStream, get_current_stream=lambda: _NULL,
        function=types.SimpleNamespace(Module=_Module), Device=_Device,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        device=types.SimpleNamespace(get_cublas_handle=lambda: 1))
    cupy = types.ModuleType("cupy")
    for name in ("ndarray", "empty", "empty_like", "asarray", "ascontiguousarray", "asnumpy", "copyto", "uint8",
                 "uint16", "float32"):
        setattr(cupy, name, getattr(me, name))
    cupy.cuda = cuda
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = types.SimpleNamespace(setStream=setStream, gemmStridedBatchedEx=gemmStridedBatchedEx)
    for name, mod in (("cupy", cupy), ("cupy_backends", types.ModuleType("cupy_backends")),
                      ("cupy_backends.cuda", types.ModuleType("cupy_backends.cuda")),
                      ("cupy_backends.cuda.libs", libs)):
        monkeypatch.setitem(sys.modules, name, mod)
    KERNELS.clear()
    LAUNCHES.clear()
    ISSUED.clear()
    GEMMS.clear()
    return cupy
