"""Fuzz the PyTorch frontend's ``.pt2`` path: bytes -> a ``.pt2`` file -> ``byteir_core.compile`` (torch.export's
loader, our FX passes, torch-mlir, target ``reference``). Seeds are small saved ``torch.export`` programs."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["byteir_core", "byteir_frontend_torch"]):
    import byteir_core
    import byteir_core.compiler.driver  # noqa: F401  (instrumented: imported before first use)
    import byteir_frontend_torch.exporting  # noqa: F401
    import byteir_frontend_torch.importer  # noqa: F401

NAME = "pt2"
_DIR = tempfile.mkdtemp(prefix="byteir-fuzz-pt2-")


def seeds(d: Path) -> None:
    import torch

    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return torch.relu(self.lin(x)).sum(-1)

    torch.manual_seed(0)
    torch.export.save(torch.export.export(Small().eval(), (torch.randn(2, 4),)), str(d / "small.pt2"))
    torch.export.save(torch.export.export(torch.nn.Tanh(), (torch.randn(3),)), str(d / "tanh.pt2"))


def one_input(data: bytes) -> None:
    from harness import accept

    path = os.path.join(_DIR, "model.pt2")
    with open(path, "wb") as f:
        f.write(data)
    accept(lambda p: byteir_core.compile(p, target="reference", progress=False), path)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from harness import main

    main(sys.modules[__name__])
