"""A small CNN through byteir both ways: whole-model compile (torch.export) and torch.compile.

    .venv/bin/python examples/torch_cnn.py
"""

import time

import byteir_core
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    nn.Flatten(), nn.Linear(32, 10)).eval()
x = torch.randn(4, 3, 32, 32)

# 1. whole model -> .byre, then run it from the file
t0 = time.perf_counter()
art = byteir_core.compile(model, (x,), target="cpu", output="out/cnn.byre")
print(f"compiled in {time.perf_counter() - t0:.2f} s: {art.report['ops_per_backend']}")
y = byteir_core.load("out/cnn.byre")(x)
with torch.no_grad():
    print("max |byteir - eager| =", (y - model(x)).abs().max().item())

# 2. torch.compile with the byteir backend (found through its entry point), training one step
model.train()
compiled = torch.compile(model, backend="byteir")
loss = compiled(x).logsumexp(-1).mean()
loss.backward()
print("torch.compile(backend='byteir') training step: loss", round(loss.item(), 5),
      "grad norm", round(model[0].weight.grad.norm().item(), 5))
