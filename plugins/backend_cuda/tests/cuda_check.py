"""Shared by the cuda tests: compile for ``cuda`` and for ``reference``, run the first through the host
interpreter, compare. Kernels are compiled as source only (``BYTEIR_CUDA_ARCHS=none``) here; every distinct
kernel source is collected, and test_ptx.py compiles the lot for sm_80 and sm_90 and checks the binaries."""

from __future__ import annotations

import os

import numpy as np

import byteir_core
from programs import random_array, ty  # noqa: F401 (ty: for the test modules)

rng = np.random.default_rng(4321)
#: Every Triton kernel the tests produced: source -> TritonKernel (for the PTX/cubin checks).
SEEN_KERNELS: dict = {}
TOL = {"float64": 1e-9, "float32": 2e-5, "float16": 4e-3, "bfloat16": 2e-2}


def random(shape, dtype, kind="any"):
    return random_array(rng, shape, dtype, kind)


def programs_of(art):
    from byteir_backend_cuda.program import Program

    return [Program.from_bytes(k.kernel.data) for k in art.module.kernels.values() if k.backend == "cuda"]


def compile_cuda(model, *args, **kw):
    old = os.environ.get("BYTEIR_CUDA_ARCHS")
    os.environ["BYTEIR_CUDA_ARCHS"] = "none"
    try:
        art = byteir_core.compile(model, *args, target="cuda", **kw)
    finally:
        if old is None:
            os.environ.pop("BYTEIR_CUDA_ARCHS", None)
        else:
            os.environ["BYTEIR_CUDA_ARCHS"] = old
    for p in programs_of(art):
        for k in p.kernels:
            SEEN_KERNELS.setdefault(k.source, k)
    return art


def load_interpreted(art):
    return byteir_core.load(art.to_bytes(), device="cuda-interpret")


def assert_close(got, want, accumulate=False, tol=None):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    if np.issubdtype(got.dtype, np.floating) or got.dtype.name == "bfloat16":
        t = tol or TOL[got.dtype.name]
        scale = float(np.abs(want.astype(np.float64)).max(initial=1.0)) if accumulate else 1.0
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=t, atol=t * scale * 4,
                                   equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def check(text, inputs, expect_on_cuda, accumulate=False, pass_groups=None, tol=None, max_kernels=None):
    """Compile ``text`` for cuda and reference; the ops in ``expect_on_cuda`` must have gone to cuda; outputs
    must agree. ``max_kernels``: the most Triton launches the cuda program may have (fusion)."""
    art = compile_cuda(text, pass_groups=pass_groups)
    claimed = set(art.report["ops_per_backend"].get("cuda", {}))
    assert set(expect_on_cuda) <= claimed, art.report["ops_per_backend"]
    if max_kernels is not None:
        n = sum(sum(1 for launch in p.launches if launch.kind == "triton") for p in programs_of(art))
        assert n <= max_kernels, f"{n} Triton launches, expected at most {max_kernels}"
    ref = byteir_core.compile(text, target="reference", pass_groups=pass_groups)
    before = [np.copy(a) for a in inputs]
    got = load_interpreted(art).run(*inputs)
    for a, b in zip(inputs, before):
        assert a.tobytes() == b.tobytes()  # kernels never write into the caller's arrays
    want = byteir_core.load(ref.to_bytes()).run(*inputs)
    for g, w in zip(got, want):
        assert_close(np.asarray(g), np.asarray(w), accumulate, tol)
    return art


def assemble(ptx: str, arch: int, path) -> bytes:
    """Assemble ``ptx`` for ``arch`` (80, 90 -> sm_90a) with the ptxas Triton uses for that architecture (its
    12.9 one reads PTX up to sm_80's, ``ptxas-blackwell`` the 9.4 ISA Triton writes for sm_90); returns the cubin
    or fails with ptxas's message. ``path``: a scratch file stem."""
    import subprocess
    from pathlib import Path

    from triton.backends.nvidia.compiler import get_ptxas

    src, out = Path(f"{path}.ptx"), Path(f"{path}.cubin")
    src.write_text(ptx)
    target = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    r = subprocess.run([get_ptxas(arch).path, f"-arch={target}", str(src), "-o", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, f"ptxas {target}: {r.stderr.strip()[-2000:]}"
    return out.read_bytes()
