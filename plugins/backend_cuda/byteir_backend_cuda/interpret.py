"""Run a cuda :class:`~byteir_backend_cuda.program.Program` on the host: every Triton kernel through Triton's
interpreter (torch CPU tensors), GEMMs through torch, over the same buffers, scratch layout and launch grids
the GPU provider uses. This is how GPU numerics are tested on machines without a GPU."""

from __future__ import annotations

import numpy as np

from .program import Launch, Program, unb64
from .triton_build import interpret

_TORCH_DTYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16", "i1": "bool",
                 "i8": "int8", "ui8": "uint8", "i16": "int16", "i32": "int32", "i64": "int64"}


def torch_dtype(name: str):
    import torch

    return getattr(torch, _TORCH_DTYPES[name])


def as_torch(a):
    """A torch CPU tensor sharing memory with ``a`` (a NumPy array, bfloat16 included, or a torch tensor)."""
    import torch

    if isinstance(a, torch.Tensor):
        return a
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    if a.dtype == np.bool_:
        return torch.from_numpy(a.view(np.uint8)).view(torch.bool)
    return torch.from_numpy(a)


class ProgramRunner:
    """A loaded program: constants decoded once; :meth:`__call__` runs it over caller buffers."""

    def __init__(self, program: Program):
        import torch

        self.program = program
        self.constants = {}
        for i, b in enumerate(program.buffers):
            if b.kind == "constant":
                raw = torch.frombuffer(bytearray(unb64(b.data)), dtype=torch.uint8)
                self.constants[i] = raw.view(torch_dtype(b.dtype)).reshape(b.shape)

    def __call__(self, inputs, outputs) -> None:
        import torch

        p = self.program
        scratch = torch.empty(max(p.scratch_bytes, 1), dtype=torch.uint8)
        bufs = []
        for i, b in enumerate(p.buffers):
            if b.kind == "input":
                bufs.append(as_torch(inputs[b.index]))
            elif b.kind == "output":
                bufs.append(as_torch(outputs[b.index]))
            elif b.kind == "scratch":
                n = int(np.prod(b.shape, dtype=np.int64)) * torch.empty(0, dtype=torch_dtype(b.dtype)).element_size()
                bufs.append(scratch[b.offset:b.offset + n].view(torch_dtype(b.dtype)).reshape(b.shape))
            else:
                bufs.append(self.constants[i])
        for launch in p.launches:
            run_launch(p, launch, bufs)


def run_launch(p: Program, launch: Launch, bufs) -> None:
    if launch.kind == "triton":
        args = [bufs[a["buf"]] if "buf" in a else a["value"] for a in launch.args]
        interpret(p.kernels[launch.kernel], launch.grid, args)
    elif launch.kind == "gemm":
        from .gemm import gemm_reference

        gemm_reference(launch.attrs, bufs[launch.args[0]["buf"]], bufs[launch.args[1]["buf"]],
                       bufs[launch.args[2]["buf"]])
    else:
        raise ValueError(f"unknown launch kind {launch.kind!r}")
