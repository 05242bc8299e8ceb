"""Runtime overhead: microseconds per ByRE step, per request set-up, and the reference path vs NumPy.

Run by hand (not a test):  .venv/bin/python benchmarks/runtime_dispatch.py
Prints medians over repeated runs; the machines are shared and noisy, so compare ratios from one run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import byteir_core  # noqa: E402
from byteir_core.byre import Artifact  # noqa: E402
from byteir_core.byre.format import READ, WRITE, Arg, Buffer, ByreModule, Step  # noqa: E402
from byteir_core.compiler.memplan import plan_memory  # noqa: E402
from byteir_core.dtypes import TensorSpec  # noqa: E402
from byteir_core.interfaces import Provider  # noqa: E402
from byteir_core.plugins import get_registry  # noqa: E402


class NoopProvider(Provider):
    name = "bench"
    callees = ("bench.noop",)

    def load(self, callee, kernel, attrs):
        def fn(inputs, outputs):
            pass

        return fn


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dispatch_program(steps: int) -> ByreModule:
    spec = TensorSpec((16,), "f32")
    bm = ByreModule(args=[Arg("x", "input", spec), Arg("y", "output", spec)], buffers=[], steps=[], kernels={},
                    weights={})
    bm.buffers = [Buffer(0, spec, "arg", arg=0), Buffer(1, spec, "arg", arg=1)]
    prev = 0
    for i in range(steps):
        bm.buffers.append(Buffer(len(bm.buffers), spec, "alloc"))
        cur = len(bm.buffers) - 1
        bm.steps.append(Step("compute", [prev, cur], callee="bench.noop", effects=[READ, WRITE], backend="bench"))
        prev = cur
    bm.steps.append(Step("copy", [prev, 1]))
    plan_memory(bm)
    return bm


def main() -> None:
    reg = get_registry()
    reg._store("provider", NoopProvider(), "benchmark")
    steps = 1000
    session = byteir_core.load(Artifact(dispatch_program(steps)).to_bytes())
    x = np.ones(16, np.float32)
    req = session.new_request_context()
    req.bind_arg(0, x)
    req.finish_io_binding()
    run = median_seconds(req.run, 50)
    def set_up():
        r = session.new_request_context()
        r.bind_arg(0, x)
        r.finish_io_binding()
        r.release()

    setup = median_seconds(set_up, 200)
    call = median_seconds(lambda: session(x), 50)
    print(f"dispatch: {run / (steps + 1) * 1e6:.2f} us per step (median of 50 runs of {steps + 1} steps)")
    print(f"request set-up (bindings; arena and its {len(session.module.buffers)} views reused from the session's "
          f"pool): {setup * 1e6:.1f} us")
    print(f"session(x) end to end with {steps + 1} steps: {call * 1e3:.3f} ms")

    if "cpu" in reg.backends:  # a real native kernel: ctypes call with cached memref descriptors
        add = """func.func @main(%x: tensor<4xf32>, %y: tensor<4xf32>) -> tensor<4xf32> {
  %a = stablehlo.add %x, %y : tensor<4xf32>
  return %a : tensor<4xf32>
}"""
        small = byteir_core.load(byteir_core.compile(add, target="cpu").to_bytes())
        r = small.new_request_context()
        r.bind_arg(0, np.ones(4, np.float32))
        r.bind_arg(1, np.ones(4, np.float32))
        r.finish_io_binding()
        one = median_seconds(r.run, 2000)
        print(f"cpu backend: a request of one native kernel (4-element add) runs in {one * 1e6:.2f} us")

    from programs import MLP, mlp_numpy

    xm = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    t_np = median_seconds(lambda: mlp_numpy(xm), 200)
    for target in ["reference"] + (["cpu"] if "cpu" in reg.backends else []):
        t0 = time.perf_counter()
        art = byteir_core.compile(MLP, target=target)
        compile_s = time.perf_counter() - t0
        mlp = byteir_core.load(art.to_bytes())
        t = median_seconds(lambda: mlp(xm), 30)
        print(f"examples/mlp.mlir --target {target}: compile {compile_s:.3f} s; run {t * 1e3:.3f} ms vs NumPy "
              f"{t_np * 1e3:.4f} ms (float64): ratio byteir/numpy = {t / t_np:.1f}x")


if __name__ == "__main__":
    main()
