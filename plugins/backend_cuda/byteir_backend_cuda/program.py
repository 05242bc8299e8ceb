"""What a cuda kernel payload holds: a small launch program over the cluster's buffers.

One ``byre.compute`` of the ``cuda`` target runs one :class:`Program`: a list of launches (Triton kernels
compiled ahead of time, GEMM library calls) over numbered buffers. Buffers ``0 .. n_in-1`` are the cluster's
inputs, ``n_in .. n_in+n_out-1`` its outputs, then scratch buffers (intermediates between launches, placed in
one per-call scratch area) and constants (small tensors carried in the payload, uploaded once at load).

The payload is JSON (binaries base64): readable with ``byteir inspect --extract`` and any JSON tool, and the
runtime needs neither Triton nor the compiler to run it -- only the cubin/PTX and the launch metadata.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "byteir-cuda-program"
#: Version of the payload layout; a provider refuses a newer major.
PROGRAM_VERSION = "1.0"


@dataclass
class BufferDecl:
    """One buffer of a program. ``kind``: ``input`` | ``output`` | ``scratch`` | ``constant``."""

    kind: str
    shape: list[int]
    dtype: str  # MLIR element type name: f32, f16, bf16, i1, i8, i32, i64, ...
    index: int = -1  # input/output: position among the cluster's inputs/outputs
    offset: int = 0  # scratch: byte offset in the scratch area
    data: str = ""  # constant: base64 of the row-major bytes


@dataclass
class TritonBinary:
    """One compiled variant of a Triton kernel for one GPU architecture."""

    arch: int  # compute capability as an int: 80, 90
    cubin: str  # base64
    ptx: str
    shared: int  # dynamic shared memory bytes
    num_warps: int
    global_scratch_size: int = 0
    global_scratch_align: int = 1
    profile_scratch_size: int = 0
    profile_scratch_align: int = 1


@dataclass
class TritonKernel:
    """A Triton kernel as byteir wrote it: its source (kept for reading, and for the host interpreter), the
    signature it was compiled with (non-constexpr parameters in order), its constexprs, and one binary per
    requested architecture."""

    name: str
    source: str
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3
    binaries: list[TritonBinary] = field(default_factory=list)


@dataclass
class Launch:
    """One step of a program.

    ``kind == "triton"``: ``kernel`` indexes :attr:`Program.kernels`; ``grid`` is (x, y, z); ``args`` gives each
    non-constexpr parameter in signature order as ``{"buf": i}`` (a buffer's device pointer) or
    ``{"value": v}`` (a scalar).

    ``kind == "gemm"``: ``args`` = {"a": i, "b": i, "c": i} buffers, with ``attrs`` holding the batched-GEMM
    description (see gemm.py): C[batch] = A[batch] @ B[batch] with transposes folded, fp32 accumulation.
    """

    kind: str
    kernel: int = -1
    grid: list[int] = field(default_factory=lambda: [1, 1, 1])
    args: list[dict] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Program:
    buffers: list[BufferDecl]
    launches: list[Launch]
    kernels: list[TritonKernel] = field(default_factory=list)
    scratch_bytes: int = 0
    version: str = PROGRAM_VERSION

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Program":
        d = json.loads(data)
        major = str(d.get("version", "0")).split(".")[0]
        if major != PROGRAM_VERSION.split(".")[0]:
            raise ValueError(f"cuda program version {d.get('version')!r}; this provider reads {PROGRAM_VERSION}")
        kernels = [TritonKernel(**{**k, "binaries": [TritonBinary(**b) for b in k["binaries"]]})
                   for k in d["kernels"]]
        return cls(buffers=[BufferDecl(**b) for b in d["buffers"]],
                   launches=[Launch(**x) for x in d["launches"]], kernels=kernels,
                   scratch_bytes=d["scratch_bytes"], version=d["version"])


def program_of(kernel) -> Program:
    """The program a ``cuda.program`` step carries, or a ProviderError naming what is wrong with it."""
    from byteir_core.errors import ProviderError

    if kernel is None or kernel.format != FORMAT:
        raise ProviderError(f"cuda.program needs a {FORMAT!r} kernel, got {kernel.format if kernel else 'none'}")
    try:
        return Program.from_bytes(kernel.data)
    except Exception as e:  # noqa: BLE001
        raise ProviderError(f"cuda.program: the kernel payload is not a valid program ({e})") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode())
