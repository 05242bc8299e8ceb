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


#: GNU OpenMP's soname: PyTorch's copy when PyTorch is loaded (the loader matches it by this name).
GOMP = "libgomp.so.1"


def openmp_library() -> str | None:
    """The GNU OpenMP runtime multithreaded kernels and oneDNN run on: ``BYTEIR_OPENMP_LIB``, else the
    system's libgomp (by soname), else the torch wheel's copy; None when there is none."""
    explicit = os.environ.get("BYTEIR_OPENMP_LIB")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    return _gomp_on_this_machine()


@lru_cache(maxsize=1)
def _gomp_on_this_machine() -> str | None:
    import ctypes.util
    import importlib.util

    if ctypes.util.find_library("gomp"):
        return GOMP
    spec = importlib.util.find_spec("torch")  # not imported: only its files are looked at
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = os.path.join(root, "lib", GOMP)
        if os.path.exists(p):
            return p
    return None


_openmp = None
_forked = False


def _single_threaded_after_fork() -> None:
    """In a forked child (multiprocessing's fork workers, the ONNX conformance runner's), libgomp's pool is the
    parent's, whose threads do not exist here: its next parallel region with more than one thread crashes the
    process. The child's OpenMP regions run on its one thread instead (PyTorch's too: it is the same pool)."""
    global _forked
    _forked = True
    if _openmp is not None:
        _openmp.omp_set_num_threads(1)


os.register_at_fork(after_in_child=_single_threaded_after_fork)


def in_forked_child() -> bool:
    return _forked


def load_gomp() -> ctypes.CDLL:
    """GNU OpenMP, loaded once and globally: multithreaded kernels (whose ``__kmpc_*`` calls are written on it,
    ``gomp_shim.py``) and oneDNN find its symbols there. The libgomp already in the process comes first
    (PyTorch's: dlopen matches it by soname), so byteir's parallel regions and PyTorch's run on one pool; a
    second runtime's threads would spin against PyTorch's, whose idle workers spin for about 10 ms after each
    region. It follows ``torch.set_num_threads`` / ``OMP_NUM_THREADS``."""
    global _openmp
    if _openmp is None:
        path = openmp_library()
        try:
            if path is None:
                raise OSError(os.environ.get("BYTEIR_OPENMP_LIB") or "no libgomp found")
            _openmp = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
        except OSError as e:
            raise ProviderError(f"byteir's cpu kernels need GNU OpenMP ({GOMP}), found neither on this system "
                                f"nor in a torch wheel ({e}): install your distribution's libgomp1, or set "
                                f"BYTEIR_OPENMP_LIB") from None
        if _forked:  # PyTorch may have started the pool before the fork
            _openmp.omp_set_num_threads(1)
    return _openmp


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
            load_gomp()
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
