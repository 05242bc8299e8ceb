"""The GPU side of the cuda target: CuPy loads each cubin once (PTX when no cubin matches the GPU), launches on
the request's stream with the recorded grid, warps and shared memory, and runs GEMMs through cuBLAS on the same
stream. Running an artifact needs CuPy (``pip install cupy-cuda12x``), never Triton or the compiler.

Not yet exercised on a GPU by the test suite (no development machine has one); ``make test-gpu`` runs it where
one is present.
"""

from __future__ import annotations

import math

import numpy as np

from byteir_core.dtypes import TensorSpec
from byteir_core.errors import ProviderError
from byteir_core.interfaces import DeviceMemory, Kernel, Provider

from .gemm import plan
from .gpu import _cupy, local_arch
from .program import FORMAT, Program, unb64

#: Kernels assume 16-byte aligned buffers (compiled with that divisibility hint, for vector loads).
ALIGN = 16


def _storage_dtype(dtype) -> np.dtype:
    """CuPy has no bfloat16: such buffers are viewed as uint16 (the kernels only see pointers)."""
    dt = np.dtype(dtype)
    return np.dtype(np.uint16) if dt.name == "bfloat16" else dt


class CupyMemory(DeviceMemory):
    device = "cuda"

    def __init__(self):
        self.cp = _cupy()

    def allocate(self, nbytes: int):
        return self.cp.empty(max(int(nbytes), 1), dtype=self.cp.uint8)

    def view(self, buffer, byte_offset: int, spec: TensorSpec):
        flat = buffer.reshape(-1).view(self.cp.uint8)
        return flat[byte_offset:byte_offset + spec.nbytes].view(_storage_dtype(spec.np_dtype)).reshape(spec.shape)

    def from_host(self, host: np.ndarray, dst) -> None:
        src = np.ascontiguousarray(host).view(_storage_dtype(host.dtype)).reshape(dst.shape)
        dst.set(src, stream=self.cp.cuda.get_current_stream())

    def to_host(self, src) -> np.ndarray:
        return self.cp.asnumpy(src)

    def copy(self, src, dst) -> None:
        self.cp.copyto(dst.reshape(-1).view(self.cp.uint8), src.reshape(-1).view(self.cp.uint8))

    def import_array(self, x, spec: TensorSpec):
        cp = self.cp
        if isinstance(x, cp.ndarray):
            arr = x
        elif type(x).__module__.startswith("torch") and getattr(x, "is_cuda", False):
            import torch

            t = x.detach()
            if t.dtype == torch.bfloat16:
                t = t.view(torch.int16)
            arr = cp.from_dlpack(t)
        else:
            return None
        if not arr.flags.c_contiguous:
            arr = cp.ascontiguousarray(arr)
        return arr.view(_storage_dtype(spec.np_dtype)).reshape(spec.shape)

    def export(self, array, like):
        if like is not None and type(like).__module__.startswith("torch"):
            import torch

            t = torch.from_dlpack(array)
            return t
        return array

    def synchronize(self, stream) -> None:
        (stream or self.cp.cuda.get_current_stream()).synchronize()


class _LoadedKernel:
    def __init__(self, cp, kernel, arch: int):
        # the cubin built for this GPU's architecture, else the newest PTX at or below it (the driver JITs it)
        exact = [b for b in kernel.binaries if b.arch == arch]
        older = sorted((b for b in kernel.binaries if b.arch <= arch), key=lambda b: b.arch)
        if exact:
            b = exact[0]
            data = unb64(b.cubin)
        elif older:
            b = older[-1]
            data = b.ptx.encode()
        else:
            have = ", ".join(f"sm_{b.arch}" for b in kernel.binaries) or "no GPU (BYTEIR_CUDA_ARCHS=none)"
            raise ProviderError(f"kernel {kernel.name}: compiled for {have}; this GPU is sm_{arch} "
                                f"(recompile with --gpu-arch sm_{arch})")
        self.module = cp.cuda.function.Module()
        self.module.load(data)
        self.fn = self.module.get_function(kernel.name)
        self.block = (32 * b.num_warps, 1, 1)
        self.shared = b.shared
        if b.shared > 48 * 1024:
            self.fn.max_dynamic_shared_size_bytes = b.shared
        self.scratch = (b.global_scratch_size, b.global_scratch_align, b.profile_scratch_size)


class CupyProvider(Provider):
    name = "cuda"
    device = "cuda"
    callees = ("cuda.program",)
    takes_stream = True

    def __init__(self):
        self.cp = _cupy()
        self.arch = local_arch()
        self._memory = CupyMemory()

    def memory(self) -> DeviceMemory:
        return self._memory

    def load(self, callee: str, kernel: Kernel | None, attrs: dict):
        if kernel is None or kernel.format != FORMAT:
            raise ProviderError(f"cuda.program needs a {FORMAT!r} kernel")
        program = Program.from_bytes(kernel.data)
        return ProgramOnGpu(self.cp, program, self.arch)


class ProgramOnGpu:
    """One loaded program: modules loaded, constants uploaded; calls launch its steps on the given stream."""

    def __init__(self, cp, program: Program, arch: int):
        self.cp = cp
        self.program = program
        self.kernels = [_LoadedKernel(cp, k, arch) for k in program.kernels]
        self.constants = {}
        for i, b in enumerate(program.buffers):
            if b.kind == "constant":
                spec = TensorSpec(tuple(b.shape), b.dtype)
                host = np.frombuffer(unb64(b.data), dtype=_storage_dtype(spec.np_dtype)).reshape(spec.shape)
                self.constants[i] = cp.asarray(host)
        self._blas = None

    def __call__(self, inputs, outputs, stream=None) -> None:
        cp = self.cp
        p = self.program
        stream = stream or cp.cuda.get_current_stream()
        with stream:
            scratch = cp.empty(max(p.scratch_bytes, 1), dtype=cp.uint8)
            bufs = []
            for i, b in enumerate(p.buffers):
                if b.kind == "input":
                    a = inputs[b.index]
                    bufs.append(a if a.data.ptr % ALIGN == 0 else cp.ascontiguousarray(a.copy()))
                elif b.kind == "output":
                    bufs.append(outputs[b.index])
                elif b.kind == "scratch":
                    spec = TensorSpec(tuple(b.shape), b.dtype)
                    bufs.append(scratch[b.offset:b.offset + spec.nbytes].view(
                        _storage_dtype(spec.np_dtype)).reshape(spec.shape))
                else:
                    bufs.append(self.constants[i])
            staged = {}  # misaligned outputs: written to an aligned buffer, copied after
            for k, b in enumerate(p.buffers):
                if b.kind == "output" and bufs[k].data.ptr % ALIGN:
                    staged[k] = bufs[k]
                    bufs[k] = cp.empty_like(bufs[k])
            for launch in p.launches:
                if launch.kind == "triton":
                    self._launch(launch, bufs, stream)
                else:
                    self._gemm(launch, bufs, stream)
            for k, dst in staged.items():
                dst[...] = bufs[k]

    def _launch(self, launch, bufs, stream) -> None:
        cp = self.cp
        k = self.kernels[launch.kernel]
        args = [bufs[a["buf"]] if "buf" in a else np.int64(a["value"]) for a in launch.args]
        gsize, galign, psize = k.scratch
        grid = tuple(launch.grid)
        n = math.prod(grid)
        gscratch = cp.empty(gsize * n + galign, dtype=cp.uint8) if gsize else None
        pscratch = cp.empty(psize * n, dtype=cp.uint8) if psize else None
        args.append(gscratch if gscratch is not None else np.uint64(0))
        args.append(pscratch if pscratch is not None else np.uint64(0))
        k.fn(grid, k.block, tuple(args), shared_mem=k.shared, stream=stream)

    def _gemm(self, launch, bufs, stream) -> None:
        """C[b] = A[b] @ B[b] through cuBLAS (strided batched, fp32 accumulation, TF32 off unless
        BYTEIR_CUDA_TF32=1), operands brought to [B,M,K] / [B,K,N] row-major first when their layout differs."""
        import os

        cp = self.cp
        from cupy_backends.cuda.libs import cublas

        attrs = launch.attrs
        pl = plan(attrs)
        a, b, c = (bufs[x["buf"]] for x in launch.args)
        B, M, K, N = pl["B"], pl["M"], pl["K"], pl["N"]
        a3 = cp.ascontiguousarray(a.transpose(pl["lhs_perm"])).reshape(B, M, K)
        b3 = cp.ascontiguousarray(b.transpose(pl["rhs_perm"])).reshape(B, K, N)
        c3 = c.reshape(B, M, N)
        dtypes = {"f32": (0, 0), "f64": (1, 1), "f16": (2, 2), "bf16": (14, 14)}  # cudaDataType
        ta, tc = dtypes[attrs["lhs_type"]][0], dtypes[attrs["out_type"]][0]
        tf32 = os.environ.get("BYTEIR_CUDA_TF32") == "1"
        compute = {"f64": 70}.get(attrs["out_type"], 77 if tf32 and attrs["lhs_type"] == "f32" else 68)
        one = np.array(1.0, dtype=np.float64 if attrs["out_type"] == "f64" else np.float32)
        zero = np.zeros((), dtype=one.dtype)
        handle = cp.cuda.device.get_cublas_handle()
        cublas.setStream(handle, stream.ptr)
        # row-major C = A @ B is column-major C^T = B^T @ A^T: pass B first
        cublas.gemmStridedBatchedEx(
            handle, 0, 0, N, M, K, one.ctypes.data, b3.data.ptr, ta, N, K * N, a3.data.ptr, ta, K, M * K,
            zero.ctypes.data, c3.data.ptr, tc, N, M * N, B, compute, 0)
