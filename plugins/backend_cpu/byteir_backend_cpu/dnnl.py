"""oneDNN (``onednn-cpu-gomp``, oneDNN 3.2 built on GNU OpenMP) through its C API and ctypes.

Why: oneDNN's JIT kernels pick AVX-512 / AVX2 code for the CPU they run on, and prepack weights into the blocked
layout that kernel wants (once, for weights that are artifact constants).

Why the GNU OpenMP build: PyTorch runs its ops on libgomp, whose idle workers spin for about 10 ms after each
parallel region. oneDNN on any other pool (the Intel OpenMP build this backend used first) then ran every GEMM
of a torch.compile training step against a spinning PyTorch worker on the same cores: an MLP step took 18 ms,
against 13 ms with oneDNN on PyTorch's own pool (AMD EPYC Zen 4, 2 cores). So oneDNN takes the libgomp already
in the process (PyTorch's), else the system's, else the copy in the torch wheel: one pool, in or out of PyTorch.
It follows ``torch.set_num_threads`` / ``OMP_NUM_THREADS``; ``BYTEIR_NUM_THREADS`` caps its calls alone.

The enum values below are oneDNN 3.2's (printed from that release's ``dnnl_types.h``); the distribution is
pinned to that version and the library's version is checked when it loads. Nothing here loads the library
until an artifact with a ``cpu.gemm`` / ``cpu.conv`` / ``cpu.maxpool`` step is loaded; ``BYTEIR_CPU_DNNL=0`` (or a
machine without the wheel) sends those steps to NumPy instead.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from functools import lru_cache

import numpy as np

from byteir_core.errors import ProviderError

from .provider import in_forked_child, load_gomp

DIST = "onednn-cpu-gomp"
VERSION = (3, 2)

SUCCESS = 0
ENGINE_CPU = 1
STREAM_DEFAULT = 1
DT = {"f32": 3, "bf16": 2, "f16": 1, "i32": 4, "i8": 5, "ui8": 6}
TAG_ANY = 1
#: plain row-major tags by rank (``a``, ``ab``, ``abc``, ...)
TAG_PLAIN = {1: 2, 2: 3, 3: 4, 4: 5, 5: 6}
TAG = {"ab": 3, "ba": 14, "abc": 4, "acb": 15, "abcd": 5, "acdb": 22, "abcde": 6, "abdc": 20, "acbd": 21}
FORWARD_INFERENCE = 96
CONV_DIRECT = 1
POOLING_MAX = 511
ELTWISE = {"relu": 32, "gelu_erf": 49, "gelu_tanh": 43, "logistic": 41, "tanh": 33, "clip": 46}
BINARY = {"add": 131056, "mul": 131057}
Q_SRC_MD, Q_WEIGHTS_MD, Q_DST_MD, Q_SCRATCHPAD_MD, Q_IMPL_INFO = 129, 131, 133, 136, 8
SCRATCHPAD_USER = 1
ARG_SRC, ARG_WEIGHTS, ARG_BIAS, ARG_DST, ARG_SCRATCHPAD, ARG_FROM, ARG_TO = 1, 33, 41, 17, 80, 1, 17
ARG_POST_OP_BASE, ARG_SRC_1 = 32768, 2
MAX_NDIMS = 12

Dims = ctypes.c_int64 * MAX_NDIMS


class ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


def library_path() -> str | None:
    explicit = os.environ.get("BYTEIR_DNNL_LIB")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for name in ("libdnnl.so.3", "libdnnl.so"):
        p = os.path.join(sys.prefix, "lib", name)
        if os.path.exists(p):
            return p
    return None


class _Lib:
    """The loaded library, one CPU engine and one stream (oneDNN CPU streams execute synchronously)."""

    def __init__(self, path: str):
        self.gomp = load_gomp()  # PyTorch's pool when PyTorch is loaded
        cap = os.environ.get("BYTEIR_NUM_THREADS", "")
        self.threads = int(cap) if cap.isdigit() and int(cap) > 0 else None
        self.lib = lib = ctypes.CDLL(path)
        lib.dnnl_version.restype = ctypes.POINTER(_Version)
        v = lib.dnnl_version().contents
        self.version = (v.major, v.minor, v.patch)
        if self.version[:2] != VERSION:
            raise ProviderError(f"{path} is oneDNN {'.'.join(map(str, self.version))}; byteir's oneDNN calls "
                                f"are written for {VERSION[0]}.{VERSION[1]} (pip install '{DIST}==2023.2.0')")
        lib.dnnl_primitive_desc_query_md.restype = ctypes.c_void_p
        lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
        lib.dnnl_memory_desc_equal.restype = ctypes.c_int
        self.engine = ctypes.c_void_p()
        self.check(lib.dnnl_engine_create(ctypes.byref(self.engine), ENGINE_CPU, ctypes.c_size_t(0)), "engine")
        self.stream = ctypes.c_void_p()
        self.check(lib.dnnl_stream_create(ctypes.byref(self.stream), self.engine, STREAM_DEFAULT), "stream")

    def execute(self, prim, n: int, args, what: str) -> None:
        """Run a primitive on the stream; with ``BYTEIR_NUM_THREADS`` set, on at most that many threads (the
        calling thread's OpenMP setting is put back afterwards: it is PyTorch's too)."""
        if self.threads is None or in_forked_child():  # a forked child runs on one thread (provider.py)
            self.check(self.lib.dnnl_primitive_execute(prim, self.stream, n, args), what)
            return
        before = self.gomp.omp_get_max_threads()
        self.gomp.omp_set_num_threads(self.threads)
        try:
            self.check(self.lib.dnnl_primitive_execute(prim, self.stream, n, args), what)
        finally:
            self.gomp.omp_set_num_threads(before)

    @staticmethod
    def check(status: int, what: str) -> None:
        if status != SUCCESS:
            names = {1: "out of memory", 2: "invalid arguments", 3: "unimplemented", 5: "runtime error",
                     7: "not required"}
            raise ProviderError(f"oneDNN: {what} failed ({names.get(status, f'status {status}')})")

    def md(self, shape, dtype: str, tag) -> ctypes.c_void_p:
        m = ctypes.c_void_p()
        dims = Dims(*shape)
        tag_v = TAG_PLAIN[len(shape)] if tag == "plain" else (TAG_ANY if tag == "any" else TAG[tag])
        self.check(self.lib.dnnl_memory_desc_create_with_tag(ctypes.byref(m), len(shape), dims, DT[dtype], tag_v),
                   f"memory descriptor {list(shape)} {dtype} {tag}")
        return m

    def md_strided(self, shape, dtype: str, strides) -> ctypes.c_void_p:
        m = ctypes.c_void_p()
        self.check(self.lib.dnnl_memory_desc_create_with_strides(
            ctypes.byref(m), len(shape), Dims(*shape), DT[dtype], Dims(*strides)), f"memory descriptor {list(shape)}")
        return m

    def memory(self, md) -> ctypes.c_void_p:
        mem = ctypes.c_void_p()
        self.check(self.lib.dnnl_memory_create(ctypes.byref(mem), md, self.engine, ctypes.c_void_p(0)), "memory")
        return mem

    def query(self, pd, what: int) -> ctypes.c_void_p:
        return ctypes.c_void_p(self.lib.dnnl_primitive_desc_query_md(pd, what, 0))

    def impl_name(self, pd) -> str:
        s = ctypes.c_char_p()
        self.lib.dnnl_primitive_desc_query(pd, Q_IMPL_INFO, 0, ctypes.byref(s))
        return s.value.decode() if s.value else "?"

    def primitive(self, pd) -> ctypes.c_void_p:
        p = ctypes.c_void_p()
        self.check(self.lib.dnnl_primitive_create(ctypes.byref(p), pd), "primitive creation")
        return p


_lib: _Lib | None = None
_lib_lock = threading.Lock()


def lib() -> _Lib:
    global _lib
    with _lib_lock:
        if _lib is None:
            path = library_path()
            if path is None:
                raise ProviderError(f"this artifact calls oneDNN, which is not installed: "
                                    f"pip install '{DIST}==2023.2.0' (or set BYTEIR_DNNL_LIB)")
            _lib = _Lib(path)
        return _lib


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether oneDNN loads here: the cpu_blas provider then runs its GEMMs, convolutions and poolings through
    it (checked when an artifact loads). ``BYTEIR_CPU_DNNL=0`` turns it off."""
    if os.environ.get("BYTEIR_CPU_DNNL", "1") == "0":
        return False
    try:
        lib()
        return True
    except (ProviderError, OSError):
        return False


class _Reorder:
    """A oneDNN reorder between two memory descriptors, with memory objects whose data pointers change."""

    def __init__(self, L: _Lib, src_md, dst_md):
        self.L = L
        pd = ctypes.c_void_p()
        L.check(L.lib.dnnl_reorder_primitive_desc_create(ctypes.byref(pd), src_md, L.engine, dst_md, L.engine,
                                                         None), "reorder")
        self.prim = L.primitive(pd)
        self.src, self.dst = L.memory(src_md), L.memory(dst_md)
        self.args = (ExecArg * 2)(ExecArg(ARG_FROM, self.src.value), ExecArg(ARG_TO, self.dst.value))

    def __call__(self, src_ptr: int, dst_ptr: int) -> None:
        L = self.L
        L.lib.dnnl_memory_set_data_handle(self.src, ctypes.c_void_p(src_ptr))
        L.lib.dnnl_memory_set_data_handle(self.dst, ctypes.c_void_p(dst_ptr))
        L.execute(self.prim, 2, self.args, "reorder")


class _Planned:
    """A oneDNN operation whose primitive (and its memory objects) is made on first call per array shapes and
    strides, then reused; one call at a time (the memory objects hold the data pointers)."""

    def _plan_for(self, *arrays):
        key = tuple((a.shape, a.strides) for a in arrays) + (arrays[0].dtype,)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(*arrays)
        return plan


def _aligned(nbytes: int) -> np.ndarray:
    buf = np.empty(nbytes + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + nbytes]


class Conv(_Planned):
    """A StableHLO convolution (any dimension numbers) as a oneDNN forward-inference convolution.

    The arrays come in the layout the program has (``in_perm`` = positions of batch, feature, spatial dims);
    oneDNN's descriptors describe them by strides, so no transpose is made by us. The primitive runs in the
    layout oneDNN prefers (NHWC or blocked): inputs and outputs are reordered when they differ, the weights
    once when they are artifact constants. Primitives are created on first call per shape.
    """

    def __init__(self, in_perm, k_perm, out_perm, strides, padding, dilation, groups, const_weights: bool,
                 bias: bool = False, post_ops: tuple[str, ...] = ()):
        self.L = lib()
        self.bias, self.post_ops = bias, tuple(post_ops)  # post-ops: "sum" (+ a tensor), "relu", in order
        self.in_perm, self.k_perm, self.out_perm = in_perm, k_perm, out_perm
        self.strides, self.padding, self.dilation, self.groups = strides, padding, dilation, groups
        self.const_weights = const_weights
        self._plans: dict = {}
        self.lock = threading.Lock()
        self.impl = None

    def _md_of(self, a: np.ndarray, perm, groups: int = 1):
        dims = [a.shape[d] for d in perm]
        strides = _elem_strides(a)
        st = [strides[d] for d in perm]
        if groups > 1:  # weights (O, I, ...) -> (G, O/G, I, ...)
            dims = [groups, dims[0] // groups] + dims[1:]
            st = [st[0] * (dims[1])] + st
        return self.L.md_strided(dims, _DT_NAME[a.dtype], st)

    def _plan(self, x, w, out):
        L = self.L
        n_sp = len(self.in_perm) - 2
        dt = _DT_NAME[x.dtype]
        x_md, w_md, o_md = self._md_of(x, self.in_perm), self._md_of(w, self.k_perm, self.groups), \
            self._md_of(out, self.out_perm)
        wdims = [w.shape[d] for d in self.k_perm]
        if self.groups > 1:
            wdims = [self.groups, wdims[0] // self.groups] + wdims[1:]
        pd = ctypes.c_void_p()
        pad_l = [self.padding[2 * i] for i in range(n_sp)]
        pad_r = [self.padding[2 * i + 1] for i in range(n_sp)]
        n_out = out.shape[self.out_perm[1]]
        bias_md = L.md([n_out], dt, "plain") if self.bias else None
        attr = None
        if self.post_ops:
            attr, po = ctypes.c_void_p(), ctypes.c_void_p()
            L.check(L.lib.dnnl_primitive_attr_create(ctypes.byref(attr)), "attributes")
            L.check(L.lib.dnnl_post_ops_create(ctypes.byref(po)), "post-ops")
            for p in self.post_ops:
                if p == "sum":
                    L.check(L.lib.dnnl_post_ops_append_sum(po, ctypes.c_float(1.0), ctypes.c_int32(0), 0), "sum")
                else:  # "relu", or "clip=<lo>,<hi>" (max(lo, min(hi, x)))
                    kind, _, bounds = p.partition("=")
                    alpha, beta = (float(v) for v in bounds.split(",")) if bounds else (0.0, 0.0)
                    L.check(L.lib.dnnl_post_ops_append_eltwise(po, ELTWISE[kind], ctypes.c_float(alpha),
                                                               ctypes.c_float(beta)), p)
            L.check(L.lib.dnnl_primitive_attr_set_post_ops(attr, po), "post-ops")
        L.check(L.lib.dnnl_convolution_forward_primitive_desc_create(
            ctypes.byref(pd), L.engine, FORWARD_INFERENCE, CONV_DIRECT,
            x_md if _channels_last(x, self.in_perm) else L.md([x.shape[d] for d in self.in_perm], dt, "any"),
            L.md(wdims, dt, "any"), bias_md,
            o_md if _channels_last(out, self.out_perm) else L.md([out.shape[d] for d in self.out_perm], dt, "any"),
            Dims(*self.strides), Dims(*[d - 1 for d in self.dilation]), Dims(*pad_l), Dims(*pad_r), attr),
            f"convolution {list(x.shape)} * {list(w.shape)} -> {list(out.shape)}"
            + (f" with {'+'.join(self.post_ops)}" if self.post_ops else ""))
        self.impl = L.impl_name(pd)
        plan = {"prim": L.primitive(pd)}
        mems = {}
        for arg, q, user in ((ARG_SRC, Q_SRC_MD, x_md), (ARG_WEIGHTS, Q_WEIGHTS_MD, w_md), (ARG_DST, Q_DST_MD, o_md)):
            want = L.query(pd, q)
            mems[arg] = L.memory(want)
            if L.lib.dnnl_memory_desc_equal(want, user):
                continue
            buf = _aligned(L.lib.dnnl_memory_desc_get_size(want))
            L.lib.dnnl_memory_set_data_handle(mems[arg], ctypes.c_void_p(buf.ctypes.data))
            if arg == ARG_DST:
                plan[arg] = (_Reorder(L, want, user), buf)
            else:
                plan[arg] = (_Reorder(L, user, want), buf)
        if self.bias:
            mems[ARG_BIAS] = L.memory(bias_md)
        if "sum" in self.post_ops and ARG_DST in plan:  # the tensor to add goes into oneDNN's dst first
            plan["residual"] = _Reorder(L, o_md, L.query(pd, Q_DST_MD))
        args = list(mems.items())
        plan["mems"] = mems
        exec_args = [ExecArg(a, m.value) for a, m in args]
        plan["exec"] = (ExecArg * len(exec_args))(*exec_args)
        plan["n"] = len(exec_args)
        plan["packed"] = False
        return plan

    def __call__(self, x: np.ndarray, w: np.ndarray, out: np.ndarray, bias: np.ndarray | None = None,
                 residual: np.ndarray | None = None) -> None:
        L = self.L
        with self.lock:
            plan = self._plan_for(x, w, out)
            set_handle = L.lib.dnnl_memory_set_data_handle
            mems = plan["mems"]
            for arg, a in ((ARG_SRC, x), (ARG_WEIGHTS, w)):
                if arg in plan:
                    if arg == ARG_WEIGHTS and self.const_weights and plan["packed"]:
                        continue
                    reorder, buf = plan[arg]
                    reorder(a.ctypes.data, buf.ctypes.data)
                    plan["packed"] = plan["packed"] or arg == ARG_WEIGHTS
                else:
                    set_handle(mems[arg], ctypes.c_void_p(a.ctypes.data))
            if ARG_DST not in plan:
                set_handle(mems[ARG_DST], ctypes.c_void_p(out.ctypes.data))
            if self.bias:
                set_handle(mems[ARG_BIAS], ctypes.c_void_p(bias.ctypes.data))
            if "sum" in self.post_ops:
                if ARG_DST in plan:
                    plan["residual"](residual.ctypes.data, plan[ARG_DST][1].ctypes.data)
                elif residual is not out:
                    np.copyto(out, residual)
            L.execute(plan["prim"], plan["n"], plan["exec"],
                    f"convolution ({self.impl})")
            if ARG_DST in plan:
                reorder, buf = plan[ARG_DST]
                reorder(buf.ctypes.data, out.ctypes.data)


_DT_NAME = {np.dtype(np.float32): "f32"}


def _elem_strides(a: np.ndarray) -> list[int]:
    """Strides in elements, a size-1 dim's made that of a dense outer dim: NumPy gives a new axis stride 0,
    which oneDNN reads as a broadcast and answers with its reference kernel (a 2048^3 matmul: 40 s)."""
    st = [s // a.itemsize for s in a.strides]
    outer = max((s * n for s, n in zip(st, a.shape) if n > 1), default=1)
    return [outer if n == 1 else s for s, n in zip(st, a.shape)]


def _channels_last(a: np.ndarray, perm) -> bool:
    """Channels innermost (NHWC): oneDNN's kernels run on that layout as it is, with no reorder."""
    return a.strides[perm[1]] == a.itemsize and a.shape[perm[1]] > 1


class MaxPool(_Planned):
    """Max pooling (padding reads as -inf) over arrays of any layout: ``perm`` lists the dims taken as N, C and
    the spatial dims. Runs in the layout the arrays have (oneDNN describes them by strides)."""

    def __init__(self, perm, window, strides, dilation, padding):
        self.L = lib()
        self.perm, self.window, self.strides, self.dilation, self.padding = perm, window, strides, dilation, padding
        self._plans: dict = {}
        self.lock = threading.Lock()
        self.impl = None

    def _md(self, a):
        strides = _elem_strides(a)
        return self.L.md_strided([a.shape[d] for d in self.perm], _DT_NAME[a.dtype],
                                 [strides[d] for d in self.perm])

    def _plan(self, x, out):
        L = self.L
        n_sp = len(self.window)
        pd = ctypes.c_void_p()
        src, dst = self._md(x), self._md(out)
        L.check(L.lib.dnnl_pooling_forward_primitive_desc_create(
            ctypes.byref(pd), L.engine, FORWARD_INFERENCE, POOLING_MAX, src, dst, Dims(*self.strides),
            Dims(*self.window), Dims(*[d - 1 for d in self.dilation]),
            Dims(*[self.padding[2 * i] for i in range(n_sp)]), Dims(*[self.padding[2 * i + 1] for i in range(n_sp)]),
            None), f"max pooling {list(x.shape)} -> {list(out.shape)}")
        self.impl = L.impl_name(pd)
        mems = {ARG_SRC: L.memory(src), ARG_DST: L.memory(dst)}
        args = [ExecArg(a, m.value) for a, m in mems.items()]
        return {"prim": L.primitive(pd), "mems": mems, "exec": (ExecArg * len(args))(*args), "n": len(args)}

    def __call__(self, x: np.ndarray, out: np.ndarray) -> None:
        L = self.L
        with self.lock:
            plan = self._plan_for(x, out)
            L.lib.dnnl_memory_set_data_handle(plan["mems"][ARG_SRC], ctypes.c_void_p(x.ctypes.data))
            L.lib.dnnl_memory_set_data_handle(plan["mems"][ARG_DST], ctypes.c_void_p(out.ctypes.data))
            L.execute(plan["prim"], plan["n"], plan["exec"],
                    f"max pooling ({self.impl})")


class Matmul(_Planned):
    """``out[b] = lhs[b] @ rhs[b]`` for (B, M, K) x (B, K, N) -> (B, M, N) arrays of any strides, as a oneDNN
    matmul. Weights that are artifact constants are prepacked once into the layout the kernel wants; others are
    read where they are."""

    def __init__(self, const_rhs: bool):
        self.L = lib()
        self.const_rhs = const_rhs
        self._plans: dict = {}
        self.lock = threading.Lock()
        self.impl = None

    def _md(self, a: np.ndarray):
        return self.L.md_strided(list(a.shape), _DT_NAME[a.dtype], _elem_strides(a))

    def _plan(self, lhs, rhs, out):
        L = self.L
        dt = _DT_NAME[lhs.dtype]
        rhs_md = self._md(rhs)
        w_md = L.md(list(rhs.shape), dt, "any") if self.const_rhs else rhs_md
        pd = ctypes.c_void_p()
        L.check(L.lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), L.engine, self._md(lhs), w_md, None,
                                                        self._md(out), None),
                f"matmul {list(lhs.shape)} x {list(rhs.shape)}")
        self.impl = L.impl_name(pd)
        want = L.query(pd, Q_WEIGHTS_MD)
        mems = {ARG_SRC: L.memory(self._md(lhs)), ARG_WEIGHTS: L.memory(want), ARG_DST: L.memory(self._md(out))}
        plan = {"prim": L.primitive(pd), "mems": mems, "packed": None}
        if self.const_rhs and not L.lib.dnnl_memory_desc_equal(want, rhs_md):
            buf = _aligned(L.lib.dnnl_memory_desc_get_size(want))
            L.lib.dnnl_memory_set_data_handle(mems[ARG_WEIGHTS], ctypes.c_void_p(buf.ctypes.data))
            plan["packed"] = (_Reorder(L, rhs_md, want), buf)
        args = [ExecArg(a, m.value) for a, m in mems.items()]
        plan["exec"], plan["n"], plan["done"] = (ExecArg * len(args))(*args), len(args), False
        return plan

    def __call__(self, lhs: np.ndarray, rhs: np.ndarray, out: np.ndarray) -> None:
        L = self.L
        with self.lock:
            plan = self._plan_for(lhs, rhs, out)
            set_handle = L.lib.dnnl_memory_set_data_handle
            mems = plan["mems"]
            set_handle(mems[ARG_SRC], ctypes.c_void_p(lhs.ctypes.data))
            set_handle(mems[ARG_DST], ctypes.c_void_p(out.ctypes.data))
            if plan["packed"] is not None:
                if not plan["done"]:
                    reorder, buf = plan["packed"]
                    reorder(rhs.ctypes.data, buf.ctypes.data)
                    plan["done"] = True
            else:
                set_handle(mems[ARG_WEIGHTS], ctypes.c_void_p(rhs.ctypes.data))
            L.execute(plan["prim"], plan["n"], plan["exec"],
                    f"matmul ({self.impl})")
