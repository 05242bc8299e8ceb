"""Triton kernels written by byteir: load their source, compile them to cubin + PTX per GPU architecture, and
run them through Triton's host interpreter.

Compilation needs no GPU (Triton carries LLVM's NVPTX backend and its own ``ptxas``). The interpreter runs
the very same kernel source on the host with torch CPU tensors; it needs ``TRITON_INTERPRET=1`` in the
environment before ``triton`` is first imported (Triton decides at import time whether its own library
functions -- ``tl.sum``, ``tl.sigmoid`` ... -- are interpreted): :func:`interpreter_ready` sets it when it can and
says so when it cannot.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from .program import TritonBinary, TritonKernel, b64

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset

#: Architectures compiled when the user names none and no GPU is visible.
DEFAULT_ARCHS = (80, 90)


def _source_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"byteir-triton-src-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


@lru_cache(maxsize=None)
def _load_module(source: str):
    """Import kernel source as a module (Triton reads a kernel's source with ``inspect``: it must be a file)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"byteir_triton_{digest}"
    path = _source_dir() / f"{name}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def python_function(kernel: TritonKernel):
    """The plain Python function the kernel's source defines (the source does not decorate it)."""
    fn = getattr(_load_module(kernel.source), kernel.name, None)
    if fn is None:
        raise ValueError(f"kernel source does not define {kernel.name!r}")
    return fn


def _compile_here(kernel: TritonKernel, archs) -> TritonKernel:
    """Compile in this process (the worker of :func:`compile_kernels`; Triton's interpreter must be off)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = JITFunction(python_function(kernel))
    sig = dict(kernel.signature)
    for name in kernel.constexprs:
        sig[name] = "constexpr"
    # every buffer byteir hands a kernel is 16-byte aligned (the runtime copies a caller's misaligned view):
    # saying so lets Triton vectorize loads and stores
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in kernel.signature.items()
             if t.startswith("*")}
    src = ASTSource(fn=fn, signature=sig, constexprs=dict(kernel.constexprs), attrs=attrs)
    kernel.binaries = []
    for arch in archs:
        k = triton.compile(src, target=GPUTarget("cuda", int(arch), 32),
                           options={"num_warps": kernel.num_warps, "num_stages": kernel.num_stages})
        md = k.metadata
        kernel.binaries.append(TritonBinary(
            arch=int(arch), cubin=b64(k.asm["cubin"]), ptx=k.asm["ptx"], shared=int(md.shared),
            num_warps=int(md.num_warps), global_scratch_size=int(md.global_scratch_size),
            global_scratch_align=int(md.global_scratch_align),
            profile_scratch_size=int(getattr(md, "profile_scratch_size", 0) or 0),
            profile_scratch_align=int(getattr(md, "profile_scratch_align", 1) or 1)))
    return kernel


def compile_kernels(kernels: list[TritonKernel], archs=DEFAULT_ARCHS) -> None:
    """Fill each kernel's ``binaries`` (cubin, PTX and launch metadata per architecture).

    Triton compiles in worker processes: its interpreter (which tests and ``BYTEIR_CUDA_INTERPRET`` use in this
    process) and its compiler cannot share one process, a crash in LLVM cannot take the caller down, and unique
    kernels compile in parallel."""
    import json
    import subprocess
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import asdict

    if not kernels:
        return
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    workers = max(1, min(len(kernels), os.cpu_count() or 1))
    chunks = [kernels[i::workers] for i in range(workers)]

    def run(chunk):
        payload = json.dumps({"archs": list(archs), "kernels": [asdict(k) for k in chunk]})
        r = subprocess.run([sys.executable, "-m", "byteir_backend_cuda.triton_build"], input=payload,
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            tail = r.stderr.strip().splitlines()[-12:]
            raise RuntimeError("Triton failed to compile a kernel:\n" + "\n".join(tail))
        return chunk, json.loads(r.stdout)

    with ThreadPoolExecutor(workers) as pool:
        for chunk, out in pool.map(run, chunks):
            for k, bins in zip(chunk, out):
                k.binaries = [TritonBinary(**b) for b in bins]


def _worker() -> None:
    import json
    from dataclasses import asdict

    req = json.loads(sys.stdin.read())
    out = []
    for k in req["kernels"]:
        k.pop("binaries", None)
        kernel = _compile_here(TritonKernel(**k), req["archs"])
        out.append([asdict(b) for b in kernel.binaries])
    sys.stdout.write(json.dumps(out))


def interpreter_ready() -> str | None:
    """None when Triton's interpreter can run kernels in this process, else why not (one line)."""
    if "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
    if os.environ.get("TRITON_INTERPRET") != "1":
        return ("Triton was imported in this process without TRITON_INTERPRET=1; set TRITON_INTERPRET=1 (or "
                "BYTEIR_CUDA_INTERPRET=1 before anything imports triton) to run cuda kernels on the host")
    try:
        import triton  # noqa: F401 (is it importable?)
        import torch  # noqa: F401
    except ImportError as e:
        return f"the cuda interpreter needs triton and torch (CPU build): {e}"
    from triton import knobs

    if not knobs.runtime.interpret:
        return "Triton's interpreter is off in this process (TRITON_INTERPRET was set after triton was imported)"
    _widen_bf16_dots()
    return None


_dots_widened = False


def _widen_bf16_dots() -> None:
    """Triton 3.9's interpreter keeps bf16 as its uint16 bit pattern and ``tl.dot`` multiplies those bits
    (triton-lang/triton#11584, unsupported upstream). Widen bf16 dot operands to f32 first: exact, and what the
    GPU's bf16 MMA with f32 accumulation computes."""
    global _dots_widened
    if _dots_widened:
        return
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder

    orig = InterpreterBuilder.create_dot

    def create_dot(self, a, b, d, *args, **kwargs):
        a, b = (self.cast_impl(x, tl.float32) if x.dtype.scalar == tl.bfloat16 else x for x in (a, b))
        return orig(self, a, b, d, *args, **kwargs)

    InterpreterBuilder.create_dot = create_dot
    _dots_widened = True


@lru_cache(maxsize=None)
def _interpreted(source: str, name: str):
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(getattr(_load_module(source), name))


def interpret(kernel: TritonKernel, grid, args) -> None:
    """Run ``kernel`` on the host over ``grid`` with ``args`` (torch CPU tensors for pointers, Python scalars),
    constexprs as compiled."""
    why = interpreter_ready()
    if why:
        raise RuntimeError(why)
    fn = _interpreted(kernel.source, kernel.name)
    fn[tuple(grid)](*args, **kernel.constexprs)


if __name__ == "__main__":
    _worker()
