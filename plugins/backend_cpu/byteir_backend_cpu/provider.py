"""The CPU provider: loads kernels (shared objects carried in the artifact) and calls them through ctypes.

Loading an artifact runs its native code: see the trust note in docs/byre.md.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
import uuid
import weakref
from functools import lru_cache

import numpy as np

from byteir_core.errors import ProviderError
from byteir_core.interfaces import Provider

CALLEE = "cpu.native"
FORMAT = "elf-shared-object"


@lru_cache(maxsize=None)
def _descriptor_type(rank: int):
    """MLIR's ranked memref descriptor: allocated, aligned, offset, sizes[rank], strides[rank]."""
    fields = [("allocated", ctypes.c_void_p), ("aligned", ctypes.c_void_p), ("offset", ctypes.c_int64)]
    if rank:
        fields += [("sizes", ctypes.c_int64 * rank), ("strides", ctypes.c_int64 * rank)]
    return type(f"MemRef{rank}D", (ctypes.Structure,), {"_fields_": fields})


def descriptor(a: np.ndarray):
    rank = a.ndim
    ptr = a.ctypes.data
    d = _descriptor_type(rank)(ptr, ptr, 0)
    if rank:
        d.sizes[:] = a.shape
        d.strides[:] = [s // a.itemsize for s in a.strides] if a.size else [0] * rank
    return d


@lru_cache(maxsize=1)
def host_isa() -> frozenset:
    """The CPU's instruction-set flags as /proc/cpuinfo names them (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def openmp_library() -> str | None:
    """Path of libiomp5 (from the intel-openmp wheel, or BYTEIR_OPENMP_LIB), or None."""
    explicit = os.environ.get("BYTEIR_OPENMP_LIB")
    candidates = [explicit] if explicit else [os.path.join(sys.prefix, "lib", "libiomp5.so")]
    return next((c for c in candidates if c and os.path.exists(c)), None)


_openmp = None


def _load_openmp() -> None:
    """Load libiomp5 once, globally, so kernels that need it (DT_NEEDED libiomp5.so) resolve to it.

    The pool is shared by oneDNN (GEMMs, convolutions) and multithreaded generated kernels. Idle workers spin
    for KMP_BLOCKTIME before sleeping: Intel's default (200 ms) steals the cores from anything else that runs
    next (PyTorch's own pool under torch.compile, NumPy's BLAS); 0 makes every parallel region pay a wake-up
    (ResNet-18: 18.3 ms); 1 ms keeps back-to-back library calls warm (15.4 ms). A user's setting wins.
    BYTEIR_NUM_THREADS caps the pool.
    """
    global _openmp
    if _openmp is not None:
        return
    path = openmp_library()
    if path is None:
        raise ProviderError("this artifact's cpu kernels are multithreaded and need libiomp5: "
                            "pip install intel-openmp (or set BYTEIR_OPENMP_LIB)")
    os.environ.setdefault("KMP_BLOCKTIME", "1")
    if os.environ.get("BYTEIR_NUM_THREADS"):
        os.environ.setdefault("OMP_NUM_THREADS", os.environ["BYTEIR_NUM_THREADS"])
    _openmp = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)


def _load_library(data: bytes) -> ctypes.CDLL:
    """dlopen a shared object held in memory.

    The dynamic loader identifies libraries by path, and returns an already-loaded library for a path it
    has seen, even if the file changed: so every kernel gets a path never used before (a fresh uuid), and the
    file is unlinked once mapped.
    """
    path = os.path.join(tempfile.gettempdir(), f"byteir-kernel-{os.getpid()}-{uuid.uuid4().hex}.so")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return ctypes.CDLL(path)
    finally:
        os.unlink(path)


def _checked_shapes(lib) -> list[tuple[int, ...]] | None:
    """The operand shapes a checked kernel records (``codegen.SHAPES_SYMBOL``), or None for other kernels."""
    try:
        raw = ctypes.string_at(ctypes.addressof(ctypes.c_char.in_dll(lib, "byteir_operand_shapes"))).decode()
    except ValueError:  # no such symbol
        return None
    return [tuple(int(n) for n in s.split("x")) if s else () for s in raw.split(";")]


class CpuProvider(Provider):
    name = "cpu"
    device = "cpu"
    callees = (CALLEE,)
    description = "runs ahead-of-time compiled kernels (shared objects) through ctypes"

    def load(self, callee, kernel, attrs):
        if kernel is None or kernel.format != FORMAT:
            raise ProviderError(f"{callee}: expected an {FORMAT} kernel, got {kernel.format if kernel else None}")
        if not kernel.data.startswith(b"\x7fELF"):
            raise ProviderError(f"{callee}: kernel is not an ELF shared object")
        host = host_isa()  # unknown (empty) where /proc/cpuinfo cannot be read: not checked
        missing = [f for f in str(attrs.get("isa", "")).split(",") if f and host and f not in host]
        if missing:
            raise ProviderError(f"{callee}: kernel {kernel.entry!r} was compiled for a CPU with {', '.join(missing)}, "
                                "which this CPU lacks; recompile here, or for an older CPU with "
                                "'byteir compile --cpu x86-64-v3' (AVX2) or '--cpu x86-64' (BYTEIR_CPU)")
        if int(attrs.get("openmp", 0)):
            _load_openmp()
        try:
            lib = _load_library(kernel.data)
            fn = getattr(lib, f"_mlir_ciface_{kernel.entry}")
        except (OSError, AttributeError) as e:
            raise ProviderError(f"{callee}: cannot load kernel {kernel.entry!r}: {e}") from None
        fn.restype = None
        shapes = _checked_shapes(lib)  # a kernel built with BYTEIR_CPU_CHECKS=1: its operands' shapes

        # Descriptors are cached per operand position and reused while the same array object comes back (the
        # session's pooled arena views do on every request): a call then costs ~2 µs instead of ~10 µs.
        cache: list = []

        def run(inputs, outputs):
            arrays = (*inputs, *outputs)
            if shapes is not None and [tuple(a.shape) for a in arrays] != shapes:
                raise ProviderError(f"{callee}: kernel {kernel.entry!r} (BYTEIR_CPU_CHECKS=1) was compiled for "
                                    f"operands {shapes}, got {[tuple(a.shape) for a in arrays]}")
            if len(cache) != len(arrays):
                cache[:] = [None] * len(arrays)
            refs = []
            for i, a in enumerate(arrays):
                c = cache[i]
                if c is None or c[0]() is not a:
                    d = descriptor(a)
                    c = cache[i] = (weakref.ref(a), ctypes.byref(d), d)
                refs.append(c[1])
            fn(*refs)

        run.library = lib  # keep the library mapped as long as the kernel lives
        return run
