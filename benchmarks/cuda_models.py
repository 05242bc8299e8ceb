"""byteir ``--target cuda`` on an NVIDIA GPU against torch eager and torch.compile (Inductor), one process.

Run by hand on a machine with a GPU (``make test-gpu`` runs it after the GPU tests):

    python benchmarks/cuda_models.py [--models mlp,resnet18,bert,llama] [--dtypes fp16,bf16] [--repeat 50]

For each model and dtype: the module is compiled by byteir (whole model through the torch frontend, kernels
for the local GPU's architecture) and run by the CuPy provider on torch CUDA tensors (zero-copy in and out, one
stream, CUDA graphs replayed); torch eager and ``torch.compile`` (Inductor, default mode) run the module
itself. Then a LLaMA training step (forward + backward through ``torch.compile(backend="byteir")`` against
Inductor and eager), the bandwidth of fused memory-bound kernels (softmax and LayerNorm over a large tensor,
GB/s of bytes read + written) and byteir's per-request CPU overhead under CUDA graphs. Prints medians (CUDA
events around each call after warm-up) and the ratio byteir / best peer (below 1: byteir is faster), with the
GPU's name.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
warnings.filterwarnings("ignore")

import cpu_models  # noqa: E402  (the same hand-written models as the CPU benchmark)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def models(dtype):
    """(name, module, inputs) at GPU-sized shapes."""
    out = []
    mlp = cpu_models.MLP()
    out.append(("mlp", mlp, (torch.randn(256, 1024),)))
    out.append(("resnet18", cpu_models.ResNet18(), (torch.randn(8, 3, 224, 224),)))
    out.append(("bert", cpu_models.Bert(), (torch.randn(8, 128, 256),)))
    out.append(("llama", cpu_models.Llama(seq=512), (torch.randint(0, 32000, (4, 512)),)))
    res = []
    for name, m, args in out:
        m = m.to(dtype).eval().cuda()
        args = tuple((a.to(dtype) if a.is_floating_point() else a).cuda() for a in args)
        res.append((name, m, args))
    return res


def median_ms(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def byteir_session(model, args):
    """Compile from a host copy of the module (the export reads the weights on the host), run on the GPU."""
    import copy

    import byteir_core

    t0 = time.perf_counter()
    host_args = tuple(a.cpu() for a in args)
    art = byteir_core.compile(copy.deepcopy(model).cpu(), host_args, target="cuda")
    session = byteir_core.load(art.to_bytes(), device="cuda")
    return session, time.perf_counter() - t0, art


def inference(names, dtypes, repeat):
    print(f"\n## inference (median ms over {repeat} calls)\n")
    print("| model | dtype | byteir | eager | Inductor | byteir / best peer | byteir compile s | ops off cuda |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for dname in dtypes:
        dtype = DTYPES[dname]
        for name, model, args in models(dtype):
            if name not in names:
                continue
            with torch.no_grad():
                session, compile_s, art = byteir_session(model, args)
                stream = torch.cuda.Stream()
                with torch.cuda.stream(stream):
                    t_b = median_ms(lambda: session.run(*args), repeat)
                t_e = median_ms(lambda: model(*args), repeat)
                compiled = torch.compile(model)
                t_i = median_ms(lambda: compiled(*args), repeat)
            off = {b: sum(v.values()) for b, v in art.report["ops_per_backend"].items() if b != "cuda"}
            print(f"| {name} | {dname} | {t_b:.3f} | {t_e:.3f} | {t_i:.3f} | **{t_b / min(t_e, t_i):.2f}** | "
                  f"{compile_s:.1f} | {off or '-'} |")


def training(repeat):
    print("\n## LLaMA training step, bf16 (forward + backward, median ms)\n")
    torch.manual_seed(0)
    results = {}
    for backend in ("byteir", "inductor", "eager"):
        model = cpu_models.Llama(seq=512).to(torch.bfloat16).cuda()
        ids = torch.randint(0, 32000, (4, 512)).cuda()
        step_model = model if backend == "eager" else torch.compile(
            model, backend=backend, **({"options": {"target": "cuda"}} if backend == "byteir" else {}))

        def step():
            loss = step_model(ids).float().square().mean()
            loss.backward()

        results[backend] = median_ms(step, max(5, repeat // 5))
    best = min(results["inductor"], results["eager"])
    print(f"byteir {results['byteir']:.2f} / Inductor {results['inductor']:.2f} / eager {results['eager']:.2f}: "
          f"byteir / best peer **{results['byteir'] / best:.2f}**")


def bandwidth(repeat):
    """Fused memory-bound kernels: GB/s of bytes read + written, against the device-to-device copy."""
    print("\n## memory-bound kernels, fp16 [16384, 8192] (GB/s read + written)\n")
    x = torch.randn(16384, 8192, dtype=torch.float16, device="cuda")
    nbytes = 2 * x.numel() * x.element_size()
    copy_ms = median_ms(lambda: x.clone(), repeat)

    class Softmax(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x.float(), -1).half()

    ln = torch.nn.LayerNorm(8192).half().cuda()
    print(f"copy (torch): {nbytes / copy_ms / 1e6:.0f} GB/s")
    for name, m in (("softmax", Softmax()), ("layernorm", ln)):
        with torch.no_grad():
            session, _, _ = byteir_session(m.eval(), (x,))
            t = median_ms(lambda: session.run(x), repeat)
            te = median_ms(lambda: m(x), repeat)
        print(f"{name}: byteir {nbytes / t / 1e6:.0f} GB/s, eager {nbytes / te / 1e6:.0f} GB/s "
              f"({100 * copy_ms / t:.0f}% of the copy)")


def overhead(repeat):
    """CPU time per request for a tiny model under CUDA graphs (what the host adds around the GPU's work)."""
    print("\n## per-request CPU overhead, tiny MLP, CUDA graphs on\n")
    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64)).half().cuda().eval()
    x = torch.randn(8, 64, dtype=torch.float16, device="cuda")
    with torch.no_grad():
        session, _, _ = byteir_session(m, (x,))
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for _ in range(10):
                session.run(x)
            stream.synchronize()
            n = max(200, repeat * 10)
            t0 = time.perf_counter()
            for _ in range(n):
                session.run(x)
            host = (time.perf_counter() - t0) / n
            stream.synchronize()
    print(f"{host * 1e6:.1f} us per request (host side, launches queued asynchronously)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,resnet18,bert,llama")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--skip", default="", help="comma-separated: inference,training,bandwidth,overhead")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/cuda_models.py needs an NVIDIA GPU and a CUDA build of torch")
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    skip = set(a.skip.split(","))
    if "inference" not in skip:
        inference(set(a.models.split(",")), a.dtypes.split(","), a.repeat)
    if "training" not in skip:
        training(a.repeat)
    if "bandwidth" not in skip:
        bandwidth(a.repeat)
    if "overhead" not in skip:
        overhead(a.repeat)


if __name__ == "__main__":
    main()
