"""The ``cuda`` target: StableHLO clusters compiled ahead of time to Triton kernels (cubin + PTX per GPU
architecture) and GEMM launches, run by CuPy on an NVIDIA GPU -- or on the host through Triton's interpreter
(``BYTEIR_CUDA_INTERPRET=1`` / ``device="cuda-interpret"``), which is how the kernels are tested without a GPU.

What the backend claims (everything else falls back to ``cpu`` with copies in between, and the report says so):
elementwise math, comparisons, selects and converts; layout ops folded into loads (broadcast, reshape, transpose,
slice, pad, concatenate, reverse, iota, gather of whole slices, dynamic_slice); pooling (reduce_window, unrolled); scatter (add atomically in f32/i32/i64, or replace);
single-op reductions (sum, max, min, and/or) with their producers and consumers; ``dot_general`` as a GEMM launch; ``convolution`` as an
implicit-GEMM Triton kernel (any layout, groups, strides, dilation; not transposed); ``byteir.flash_attn_fwd`` and
``byteir.flash_attn_bwd`` as fused attention kernels. Types: f32, f16, bf16, f64, i1, i8, i16, i32, i64.
"""

from __future__ import annotations

import os

from byteir_core import hookimpl
from byteir_core.errors import ProviderError
from byteir_core.interfaces import Backend, Cluster, CompiledCluster, Kernel, Provider
from byteir_core.mlir import ir

from .codegen import ELEMENTWISE_OPS, INDEX_OPS, gather_plan, reducer_of, scatter_plan, window_plan
from .fusion import ATTENTION_CALLS, custom_call_target
from .program import FORMAT, program_of

BYTEIR_PLUGIN_API = "1.0"

CALLEE = "cuda.program"
TYPES = frozenset({"f32", "f64", "f16", "bf16", "i1", "i8", "i16", "i32", "i64"})
FLOAT_TYPES = frozenset({"f32", "f16", "bf16", "f64"})
#: Elementwise ops the emitter cannot write yet (they fall back).
NOT_YET = frozenset({"stablehlo.atan2", "stablehlo.shift_right_logical"})


def _type_ok(t) -> bool:
    return isinstance(t, ir.RankedTensorType) and t.has_static_shape and str(t.element_type) in TYPES


def _elem(v) -> str:
    return str(ir.RankedTensorType(v.type).element_type)


def gpu_archs() -> tuple[int, ...]:
    """Architectures to compile for: ``BYTEIR_CUDA_ARCHS`` (``byteir compile --gpu-arch sm_80,sm_90``; ``none``:
    Triton source only, for the host interpreter), else the local GPU's when CuPy sees one, else sm_80 and
    sm_90."""
    text = os.environ.get("BYTEIR_CUDA_ARCHS", "").strip()
    if text == "none":  # kernels as source only: runnable by the interpreter, not on a GPU (quick tests)
        return ()
    if text:
        archs = []
        for part in text.replace(" ", "").split(","):
            digits = part.lower().removeprefix("sm_").removeprefix("compute_").rstrip("a")
            if not digits.isdigit() or int(digits) < 70:
                raise ValueError(f"BYTEIR_CUDA_ARCHS / --gpu-arch: {part!r} is not a GPU architecture such as "
                                 "sm_80 or sm_90 (Triton needs sm_70 or newer)")
            archs.append(int(digits))
        return tuple(dict.fromkeys(archs))
    from .gpu import local_arch

    local = local_arch()
    return (local,) if local else (80, 90)


class CudaBackend(Backend):
    name = "cuda"
    device = "cuda"
    fallback = ("cpu",)
    description = "fused Triton kernels (cubin + PTX), GEMM launches and flash attention for NVIDIA GPUs"

    def claims(self, op):
        name = op.name
        target = custom_call_target(op)
        if target is not None:
            return 20 if target in ATTENTION_CALLS and self._attention_ok(op) else None
        if not all(_type_ok(v.type) for v in list(op.operands) + list(op.results)):
            return None
        if name == "stablehlo.dot_general":
            types = {_elem(v) for v in op.operands}
            return 10 if len(types) == 1 and types <= FLOAT_TYPES else None
        if name == "stablehlo.reduce":
            return 10 if reducer_of(op) is not None else None
        if name == "stablehlo.convolution":
            from . import conv
            from .fusion import conv_args, value_spec

            try:
                args = conv_args(op)
            except Exception:  # noqa: BLE001 -- attributes this reader does not know: not ours
                return None
            lhs, rhs = op.operands
            why = conv.unsupported_reason(value_spec(lhs), value_spec(rhs), value_spec(op.results[0]), **args)
            return 10 if why is None else None
        if name == "stablehlo.reduce_window":
            return 10 if window_plan(op) is not None else None
        if name == "stablehlo.scatter":
            return 10 if scatter_plan(op) is not None else None
        if name in NOT_YET:
            return None
        if name == "stablehlo.power" and _elem(op.results[0]) not in FLOAT_TYPES:
            return None
        if name == "stablehlo.remainder":
            return None
        if name == "stablehlo.bitcast_convert":
            if {_elem(op.operands[0]), _elem(op.results[0])} & {"f16", "bf16", "i1"}:
                return None
        if name == "stablehlo.gather" and gather_plan(op) is None:
            return None
        if name in ELEMENTWISE_OPS or name in INDEX_OPS or name == "stablehlo.reduce":
            return 10
        return None

    @staticmethod
    def _attention_ok(op) -> bool:
        """Static shapes and what the attention kernels support (attention.unsupported_reason); otherwise the core
        decomposes the call into StableHLO, which this backend then compiles like any other ops."""
        from . import attention
        from .fusion import attention_operands, value_spec

        if not all(isinstance(v.type, ir.RankedTensorType) and v.type.has_static_shape for v in op.operands):
            return False
        a = attention_operands(op)
        mask = value_spec(a["mask"]) if a["mask"] is not None else None
        return attention.unsupported_reason(value_spec(a["q"]), value_spec(a["k"]), value_spec(a["v"]), mask) is None

    def compile(self, cluster: Cluster) -> CompiledCluster:
        from .fusion import build_program
        from .triton_build import compile_kernels

        program = build_program(cluster)
        compile_kernels(program.kernels, gpu_archs())
        return CompiledCluster(CALLEE, Kernel(FORMAT, program.to_bytes(), "program"),
                               {"kernels": len(program.kernels), "launches": len(program.launches)})


def interpret_requested(device: str | None) -> bool:
    return device == "cuda-interpret" or os.environ.get("BYTEIR_CUDA_INTERPRET", "") == "1"


class CudaProvider(Provider):
    """Runs ``cuda.program`` payloads: on the GPU through CuPy, or through Triton's interpreter on the host."""

    name = "cuda"
    device = "cuda"
    callees = (CALLEE,)
    description = "CuPy on an NVIDIA GPU (BYTEIR_CUDA_INTERPRET=1: Triton's interpreter on the host)"

    def open(self, device: str | None = None) -> Provider:
        if interpret_requested(device):
            return CudaInterpretProvider()
        from .gpu import gpu_problem

        why = gpu_problem()
        if why:
            raise ProviderError(f"cuda artifact: {why} (to run it on the host without a GPU, slowly: "
                                "BYTEIR_CUDA_INTERPRET=1 or load(..., device='cuda-interpret'))")
        from .runtime import CupyProvider

        return CupyProvider()


class CudaInterpretProvider(Provider):
    """The cuda target on the host: buffers are host memory, kernels run in Triton's interpreter."""

    name = "cuda"
    device = "cuda"
    callees = (CALLEE,)

    def __init__(self):
        from .triton_build import interpreter_ready

        why = interpreter_ready()
        if why:
            raise ProviderError(f"cuda interpreter: {why}")

    def load(self, callee: str, kernel: Kernel | None, attrs: dict):
        from .interpret import ProgramRunner

        return ProgramRunner(program_of(kernel))


@hookimpl
def byteir_register_backends(register):
    register(CudaBackend())


@hookimpl
def byteir_register_providers(register):
    register(CudaProvider())
