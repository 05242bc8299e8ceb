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
from .program import Program, program_of, unb64

#: Kernels assume 16-byte aligned buffers (compiled with that divisibility hint, for vector loads).
ALIGN = 16


def as_cupy_stream(cp, stream):
    """A CuPy stream for what a caller handed the request: None (the current stream), a CuPy stream, a torch
    stream (``torch.cuda.current_stream()``) or a raw ``cudaStream_t`` as an int."""
    if stream is None:
        return cp.cuda.get_current_stream()
    if isinstance(stream, (cp.cuda.Stream, cp.cuda.ExternalStream)):
        return stream
    if hasattr(stream, "cuda_stream"):  # torch.cuda.Stream
        return cp.cuda.ExternalStream(int(stream.cuda_stream))
    if isinstance(stream, int):
        return cp.cuda.ExternalStream(stream)
    raise ProviderError(f"cuda: cannot use {type(stream).__name__} as a stream (CuPy or torch stream, or an int)")


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

    def from_host(self, host: np.ndarray, dst, stream=None) -> None:
        s = as_cupy_stream(self.cp, stream)
        dst.set(np.ascontiguousarray(host).view(_storage_dtype(host.dtype)).reshape(dst.shape), stream=s)
        if stream is None:  # no request to order it for (weights at load): done before anything reads it
            s.synchronize()

    def to_host(self, src, stream=None) -> np.ndarray:
        s = as_cupy_stream(self.cp, stream)
        out = self.cp.asnumpy(src, stream=s)
        s.synchronize()
        return out

    def copy(self, src, dst, stream=None) -> None:
        with as_cupy_stream(self.cp, stream):
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

    def export(self, array, like, spec: TensorSpec | None = None):
        """torch in, torch out (DLPack, no copy; bf16 viewed back from its uint16 storage); else CuPy."""
        if like is not None and type(like).__module__.startswith("torch"):
            import torch

            t = torch.from_dlpack(array)
            return t.view(torch.bfloat16) if spec is not None and spec.dtype == "bf16" else t
        return array

    def synchronize(self, stream) -> None:
        as_cupy_stream(self.cp, stream).synchronize()


_SCALAR = {"i1": np.bool_, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64, "u32": np.uint32,
           "u64": np.uint64, "fp16": np.float16, "fp32": np.float32, "fp64": np.float64}


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
        self.scalar_types = [_SCALAR.get(t) for t in kernel.signature.values()]
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
        return ProgramOnGpu(self.cp, program_of(kernel), self.arch)


class ProgramOnGpu:
    """One loaded program: modules loaded, constants uploaded; calls launch its steps on the given stream.

    CUDA graphs (``BYTEIR_CUDA_GRAPHS=1``, the default): per stream, the first call runs eagerly and later ones
    replay a captured graph (one driver call instead of one per kernel). A caller who keeps its
    buffers replays a graph captured over them (by pointer, a few kept per program); otherwise one graph per
    stream over the program's own input/output buffers is replayed, the caller's copied in and out."""

    MAX_GRAPHS = 8

    def __init__(self, cp, program: Program, arch: int):
        import os

        self.cp = cp
        self.program = program
        self.kernels = [_LoadedKernel(cp, k, arch) for k in program.kernels]
        self.constants = {}
        for i, b in enumerate(program.buffers):
            if b.kind == "constant":
                spec = TensorSpec(tuple(b.shape), b.dtype)
                host = np.frombuffer(unb64(b.data), dtype=_storage_dtype(spec.np_dtype)).reshape(spec.shape)
                self.constants[i] = cp.asarray(host)
        self.use_graphs = os.environ.get("BYTEIR_CUDA_GRAPHS", "1") != "0"
        self._scratch: dict = {}  # stream pointer -> (scratch area, buffer template, per-launch Triton scratch)
        self._inputs = [(i, b.index) for i, b in enumerate(program.buffers) if b.kind == "input"]
        self._outputs = [(i, b.index) for i, b in enumerate(program.buffers) if b.kind == "output"]
        self._io = self._inputs + self._outputs
        self._graphs: dict = {}  # (stream, caller's buffer pointers) -> graph captured over them
        self._seen: set = set()
        self._staged: dict = {}  # stream -> (graph over the program's own I/O buffers, those buffers)
        self._streams_seen: set = set()
        self._capture_stream = None

    def _per_stream(self, stream):
        """Scratch and its views, kept per stream: a captured graph must see the same addresses every replay,
        and a call then only fills in the caller's buffers."""
        got = self._scratch.get(stream.ptr)
        if got is None:
            cp = self.cp
            p = self.program
            area = cp.empty(max(p.scratch_bytes, 1), dtype=cp.uint8)
            bufs = []
            for i, b in enumerate(p.buffers):
                if b.kind == "scratch":
                    spec = TensorSpec(tuple(b.shape), b.dtype)
                    bufs.append(area[b.offset:b.offset + spec.nbytes].view(
                        _storage_dtype(spec.np_dtype)).reshape(spec.shape))
                else:
                    bufs.append(self.constants.get(i))  # inputs/outputs: filled in per call
            per_launch = []
            for launch in p.launches:
                if launch.kind != "triton":
                    per_launch.append(None)
                    continue
                gsize, galign, psize = self.kernels[launch.kernel].scratch
                n = math.prod(launch.grid)
                per_launch.append((cp.empty(gsize * n + galign, dtype=cp.uint8) if gsize else None,
                                   cp.empty(psize * n, dtype=cp.uint8) if psize else None))
            got = self._scratch[stream.ptr] = (area, bufs, per_launch)
        return got

    def __call__(self, inputs, outputs, stream=None) -> None:
        cp = self.cp
        stream = as_cupy_stream(cp, stream)
        with stream:
            _, template, per_launch = self._per_stream(stream)
            bufs = list(template)
            staged = {}  # misaligned caller buffers: inputs copied, outputs written through aligned ones
            for i, j in self._inputs:
                a = inputs[j]
                if a.data.ptr % ALIGN:
                    staged[i] = None
                    a = a.copy()  # a new allocation is aligned
                bufs[i] = a
            for i, j in self._outputs:
                o = outputs[j]
                if o.data.ptr % ALIGN:
                    staged[i] = o
                    o = cp.empty_like(o)
                bufs[i] = o
            if not self.use_graphs or staged:
                self._launch_all(bufs, per_launch, stream)
            else:
                self._with_graph(stream, bufs, per_launch)
            for k, dst in staged.items():
                if dst is not None:
                    dst[...] = bufs[k]

    def _with_graph(self, stream, bufs, per_launch) -> None:
        """Run through a CUDA graph. Buffers the caller keeps from call to call are captured by pointer; other
        calls go through one graph per stream over buffers of its own, inputs copied in and outputs out."""
        key = (stream.ptr, *(bufs[i].data.ptr for i, _ in self._io))
        graph = self._graphs.get(key)
        if graph is None and key in self._seen and len(self._graphs) < self.MAX_GRAPHS:
            graph = self._graphs[key] = self._capture(stream, bufs, per_launch)
        if graph is not None:
            graph.launch(stream)
            return
        staged = self._staged.get(stream.ptr)
        if staged is None and stream.ptr in self._streams_seen:
            own = list(bufs)
            for i, _ in self._io:
                own[i] = self.cp.empty_like(bufs[i])
            staged = self._staged[stream.ptr] = (self._capture(stream, own, per_launch), own)
        if staged is None:  # the first call on this stream runs eagerly (it also initializes cuBLAS)
            self._seen.add(key)
            self._streams_seen.add(stream.ptr)
            self._launch_all(bufs, per_launch, stream)
            return
        graph, own = staged
        for i, _ in self._inputs:
            own[i][...] = bufs[i]
        graph.launch(stream)
        for i, _ in self._outputs:
            bufs[i][...] = own[i]

    def _capture(self, stream, bufs, per_launch):
        """A graph of the program's launches over ``bufs``. The legacy default stream cannot be captured: its
        work is captured on a stream of the program's own, and the graph then launches on the default one."""
        if stream.ptr == 0:
            if self._capture_stream is None:
                self._capture_stream = self.cp.cuda.Stream(non_blocking=True)
            stream = self._capture_stream
        stream.begin_capture()
        try:
            self._launch_all(bufs, per_launch, stream)
        finally:
            graph = stream.end_capture()
        return graph

    def _launch_all(self, bufs, per_launch, stream) -> None:
        for launch, scratch in zip(self.program.launches, per_launch):
            if launch.kind == "triton":
                self._launch(launch, bufs, scratch, stream)
            else:
                self._gemm(launch, bufs, stream)

    def _launch(self, launch, bufs, scratch, stream) -> None:
        k = self.kernels[launch.kernel]
        # scalars passed with the width the kernel was compiled for (its signature)
        args = [bufs[a["buf"]] if "buf" in a else k.scalar_types[j](a["value"]) for j, a in enumerate(launch.args)]
        gscratch, pscratch = scratch
        args.append(gscratch if gscratch is not None else np.uint64(0))
        args.append(pscratch if pscratch is not None else np.uint64(0))
        k.fn(tuple(launch.grid), k.block, tuple(args), shared_mem=k.shared, stream=stream)

    def _gemm(self, launch, bufs, stream) -> None:
        """C[b] = A[b] @ B[b] through cuBLAS (strided batched, fp32 accumulation, TF32 off unless
        BYTEIR_CUDA_TF32=1). An operand stored [batch, K, M] (or [batch, N, K]) is passed transposed, so the
        usual layouts need no copy; any other layout is copied to [batch, M, K] first (and this program then
        runs without CUDA graphs: the copy's memory is not the graph's)."""
        import os

        cp = self.cp
        from cupy_backends.cuda.libs import cublas

        attrs = launch.attrs
        pl = plan(attrs)
        a, b, c = (bufs[x["buf"]] for x in launch.args)
        B, M, K, N = pl["B"], pl["M"], pl["K"], pl["N"]
        nb = len(attrs["lhs_batch"])
        a_t = _layout(pl["lhs_perm"], nb, len(attrs["lhs_contract"]))  # False: [B,M,K]; True: [B,K,M]
        b_t = _layout(pl["rhs_perm"], nb, len(attrs["rhs_contract"]), rhs=True)  # False: [B,K,N]; True: [B,N,K]
        if a_t is None:
            a, a_t, self.use_graphs = cp.ascontiguousarray(a.transpose(pl["lhs_perm"])), False, False
        if b_t is None:
            b, b_t, self.use_graphs = cp.ascontiguousarray(b.transpose(pl["rhs_perm"])), False, False
        dtypes = {"f32": 0, "f64": 1, "f16": 2, "bf16": 14}  # cudaDataType
        ta, tc = dtypes[attrs["lhs_type"]], dtypes[attrs["out_type"]]
        tf32 = os.environ.get("BYTEIR_CUDA_TF32") == "1"
        compute = 70 if attrs["out_type"] == "f64" else (77 if tf32 and attrs["lhs_type"] == "f32" else 68)
        one = np.array(1.0, dtype=np.float64 if attrs["out_type"] == "f64" else np.float32)
        zero = np.zeros((), dtype=one.dtype)
        handle = cp.cuda.device.get_cublas_handle()
        cublas.setStream(handle, stream.ptr)
        # Row-major C = A @ B is column-major C^T = B^T A^T: cuBLAS gets B first. A row-major [r, c] matrix is a
        # column-major [c, r] one with leading dimension c.
        cublas.gemmStridedBatchedEx(
            handle, 1 if b_t else 0, 1 if a_t else 0, N, M, K, one.ctypes.data,
            b.data.ptr, ta, K if b_t else N, K * N, a.data.ptr, ta, M if a_t else K, M * K,
            zero.ctypes.data, c.data.ptr, tc, N, M * N, B, compute, -1)  # -1: CUBLAS_GEMM_DEFAULT


def _layout(perm: list[int], nb: int, nc: int, rhs: bool = False) -> bool | None:
    """Whether an operand whose plan permutation is ``perm`` is stored as-is (False), with its two GEMM
    dimensions swapped (True), or in neither way (None). Batch dims must lead in order; the free and
    contracting dims each stay in order."""
    batch, rest = perm[:nb], perm[nb:]
    if batch != list(range(nb)):
        return None
    first, second = (rest[:nc], rest[nc:]) if rhs else (rest[:len(rest) - nc], rest[len(rest) - nc:])
    if first + second == sorted(rest):
        return False
    if second + first == sorted(rest) and first == sorted(first) and second == sorted(second):
        return True
    return None
