"""byteir on the CPU against the tools a user would pick instead, in one process run.

Run by hand (not a test):

    make bench-setup                        # installs the peers: onnx, onnxruntime, IREE (compiler + runtime)
    .venv/bin/python benchmarks/cpu_models.py [--models mlp,bert] [--repeat 20]
    .venv/bin/python benchmarks/cpu_models.py --onnx-vs-torch --repeat 200   # byteir from .onnx vs from torch only

For each model: the PyTorch module is exported once to StableHLO (torch.export + torch-mlir's FX importer,
weights as constants); byteir compiles that StableHLO for ``--target cpu``; IREE (llvm-cpu, host CPU)
compiles the same StableHLO; torch eager, torch.compile (Inductor) and ONNX Runtime run the module itself.
byteir also compiles the module exported to ONNX (opset 17, as ONNX Runtime gets it) through its ONNX frontend,
printed as "byteir from .onnx" with its ratio to byteir from torch. Prints median latency, the ratio byteir / best peer (below 1 means byteir is faster) and compile times.
The machines are shared and noisy: read ratios from one run, not absolute times across runs.

On the development machines OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set (a workaround for old OpenBLAS builds)
and pin NumPy's OpenBLAS to slower Haswell kernels; ``make bench`` unsets both for this command, as a user's
machine would run. The first line printed names the BLAS kernel family in use.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
torch.manual_seed(0)


# ---- models (written by hand: no torchvision, no hub) ------------------------------------------------------


class MLP(torch.nn.Module):
    """1024-4096-4096-1024 with GELU, batch 64."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = torch.nn.Linear(1024, 4096), torch.nn.Linear(4096, 4096), torch.nn.Linear(4096, 1024)

    def forward(self, x):
        g = torch.nn.functional.gelu
        return self.l3(g(self.l2(g(self.l1(x)))))


class EncoderLayer(torch.nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.out = torch.nn.Linear(hidden, hidden)
        self.ln1, self.ln2 = torch.nn.LayerNorm(hidden), torch.nn.LayerNorm(hidden)
        self.ff1, self.ff2 = torch.nn.Linear(hidden, ffn), torch.nn.Linear(ffn, hidden)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=-1)
        split = lambda t: t.reshape(b, s, self.heads, h // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h // self.heads), dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, s, h)
        x = self.ln1(x + self.out(ctx))
        return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


class Bert(torch.nn.Module):
    """BERT-style encoder: hidden 256, 4 heads, FFN 1024, 4 layers, seq 128 (input: embeddings)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([EncoderLayer(256, 4, 1024) for _ in range(4)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class BasicBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = torch.nn.BatchNorm2d(cout)
        self.c2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = torch.nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class ResNet18(torch.nn.Module):
    """ResNet-18 (as torchvision defines it, written out by hand), 1x3x224x224."""

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False), torch.nn.BatchNorm2d(64),
                                        torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = torch.nn.Sequential(*blocks)
        self.fc = torch.nn.Linear(512, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight, self.eps = torch.nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class LlamaLayer(torch.nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (torch.nn.Linear(hidden, hidden, bias=False) for _ in range(4))
        self.gate, self.up = torch.nn.Linear(hidden, ffn, bias=False), torch.nn.Linear(hidden, ffn, bias=False)
        self.down = torch.nn.Linear(ffn, hidden, bias=False)
        self.n1, self.n2 = RMSNorm(hidden), RMSNorm(hidden)

    @staticmethod
    def rotate(x, cos, sin):
        a, b = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-b, a], dim=-1) * sin

    def forward(self, x, cos, sin, mask):
        b, s, h = x.shape
        d = h // self.heads
        y = self.n1(x)
        split = lambda t: t.reshape(b, s, self.heads, d).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(y)), split(self.k(y)), split(self.v(y))
        q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, s, h))
        y = self.n2(x)
        return x + self.down(torch.nn.functional.silu(self.gate(y)) * self.up(y))


class Llama(torch.nn.Module):
    """LLaMA-style decoder: vocab 32000, hidden 512, 8 heads, FFN 1376, 4 layers, seq 128; returns logits."""

    def __init__(self, vocab=32000, hidden=512, heads=8, ffn=1376, layers=4, seq=128):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.layers = torch.nn.ModuleList([LlamaLayer(hidden, heads, ffn) for _ in range(layers)])
        self.norm = RMSNorm(hidden)
        self.head = torch.nn.Linear(hidden, vocab, bias=False)
        d = hidden // heads
        freq = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
        ang = torch.outer(torch.arange(seq).float(), freq)
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1))
        self.register_buffer("sin", torch.cat([ang.sin(), ang.sin()], -1))
        self.register_buffer("mask", torch.full((seq, seq), float("-inf")).triu(1))

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.head(self.norm(x))


MODELS = {
    "mlp": (MLP, lambda: (torch.randn(64, 1024),)),
    "bert": (Bert, lambda: (torch.randn(1, 128, 256),)),
    "resnet18": (ResNet18, lambda: (torch.randn(1, 3, 224, 224),)),
    "llama": (Llama, lambda: (torch.randint(0, 32000, (1, 128)),)),
}


# ---- export to StableHLO ---------------------------------------------------------------------------------


def export_stablehlo(model, inputs):
    from torch_mlir import fx, ir
    from torch_mlir.extras.fx_importer import FxImporterHooks

    class DenseLiterals(FxImporterHooks):
        """Weights as dense attributes (readable from Python), not dense_resource blobs."""

        def resolve_literal(self, gni, literal, info):
            if not isinstance(literal, torch.Tensor) or literal.numel() <= 1 or literal.dtype == torch.bfloat16:
                return None
            arr = np.ascontiguousarray(literal.detach().cpu().numpy())
            attr = ir.DenseElementsAttr.get(arr, shape=list(arr.shape))
            return ir.Operation.create("torch.vtensor.literal", results=[gni._cc.tensor_to_vtensor_type(literal)],
                                       attributes={"value": attr}).result

    return fx.export_and_import(model, *inputs, output_type="stablehlo", hooks=DenseLiterals())


# ---- runners ---------------------------------------------------------------------------------------------


def median_ms(fn, repeat):
    fn()
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run_byteir(stablehlo, inputs):
    import byteir_core

    t0 = time.perf_counter()
    art = byteir_core.compile(stablehlo, target="cpu")
    session = byteir_core.load(art.to_bytes())
    compile_s = time.perf_counter() - t0
    xs = [i.numpy() for i in inputs]
    return (lambda: session(*xs)), compile_s, session(*xs), art.report["ops_per_backend"]


def export_onnx(model, inputs) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(model, inputs, buf, dynamo=False, opset_version=17, input_names=["x"])
    return buf.getvalue()


def run_byteir_onnx(model, inputs):
    """byteir from the model exported to ONNX (the ONNX frontend), the way ONNX Runtime gets it: the issue's bar
    is within 5% of byteir from torch."""
    import byteir_core

    t0 = time.perf_counter()
    art = byteir_core.compile(export_onnx(model, inputs), frontend="onnx", target="cpu")
    session = byteir_core.load(art.to_bytes())
    compile_s = time.perf_counter() - t0
    xs = [i.numpy() for i in inputs]
    return (lambda: session(*xs)), compile_s, session(*xs)


def run_eager(model, inputs):
    def fn():
        with torch.no_grad():
            return model(*inputs)
    return fn, 0.0, fn().numpy()


def run_inductor(model, inputs):
    """Compile time is Inductor's cold one (its FX-graph and autotuning caches off), as byteir's is here: a
    warm Inductor cache on the development machine gave 0.3-2 s."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    compiled = torch.compile(model, backend="inductor")
    t0 = time.perf_counter()
    with torch.no_grad(), inductor_config.patch(force_disable_caches=True):
        out = compiled(*inputs)
    compile_s = time.perf_counter() - t0

    def fn():
        with torch.no_grad():
            return compiled(*inputs)
    return fn, compile_s, out.numpy()


def run_onnxruntime(model, inputs):
    import onnxruntime as ort

    t0 = time.perf_counter()
    sess = ort.InferenceSession(export_onnx(model, inputs), providers=["CPUExecutionProvider"])
    compile_s = time.perf_counter() - t0
    feed = {"x": inputs[0].numpy()}
    return (lambda: sess.run(None, feed)), compile_s, sess.run(None, feed)[0]


def run_iree(stablehlo, inputs):
    import iree.compiler as ic
    import iree.runtime as rt

    text = str(stablehlo)
    t0 = time.perf_counter()
    vmfb = ic.compile_str(text, target_backends=["llvm-cpu"], input_type="stablehlo",
                          extra_args=["--iree-llvmcpu-target-cpu=host"])
    config = rt.Config("local-task")
    ctx = rt.SystemContext(config=config)
    ctx.add_vm_module(rt.VmModule.copy_buffer(config.vm_instance, vmfb))
    f = ctx.modules.module["main"]
    compile_s = time.perf_counter() - t0
    xs = [i.numpy() for i in inputs]
    return (lambda: f(*xs).to_host()), compile_s, np.asarray(f(*xs).to_host())


PEERS = {"torch eager": run_eager, "torch.compile (Inductor)": run_inductor, "ONNX Runtime": run_onnxruntime,
         "IREE llvm-cpu": run_iree}


def onnx_vs_torch(args) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; byteir from torch vs from .onnx, "
          f"{args.repeat} alternating calls each")
    for name in args.models.split(","):
        cls, make_inputs = MODELS[name]
        model = cls().eval()
        inputs = make_inputs()
        from_torch = run_byteir(export_stablehlo(model, inputs), inputs)[0]
        from_onnx = run_byteir_onnx(model, inputs)[0]
        for _ in range(3):
            from_torch(), from_onnx()
        t_torch, t_onnx = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            from_torch()
            t1 = time.perf_counter()
            from_onnx()
            t_torch.append(t1 - t0)
            t_onnx.append(time.perf_counter() - t1)
        a, b = statistics.median(t_torch) * 1e3, statistics.median(t_onnx) * 1e3
        print(f"  {name:9s} from torch {a:8.2f} ms   from .onnx {b:8.2f} ms   ratio {b / a:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--onnx-vs-torch", action="store_true",
                    help="only byteir from torch against byteir from the .onnx export, timed alternately call by "
                         "call (drift and neighbours' load hit both alike), --repeat calls each")
    args = ap.parse_args()
    if args.onnx_vs_torch:
        return onnx_vs_torch(args)
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i.get('architecture', '')} x{i['num_threads']}" for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; NumPy BLAS: {', '.join(blas)}")
    rows = []
    for name in args.models.split(","):
        cls, make_inputs = MODELS[name]
        model = cls().eval()
        inputs = make_inputs()
        with torch.no_grad():
            expected = model(*inputs).numpy()
        t0 = time.perf_counter()
        shlo = export_stablehlo(model, inputs)
        export_s = time.perf_counter() - t0
        results = {}
        fn, compile_s, out, placement = run_byteir(shlo, inputs)
        err = float(np.abs(out - expected).max())
        results["byteir"] = (median_ms(fn, args.repeat), compile_s, err)
        try:
            ofn, ocompile, oout = run_byteir_onnx(model, inputs)
            results["byteir from .onnx"] = (median_ms(ofn, args.repeat), ocompile,
                                            float(np.abs(np.asarray(oout) - expected).max()))
        except Exception as e:  # noqa: BLE001 -- reported, not fatal
            results["byteir from .onnx"] = (None, None, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}")
        for peer, runner in PEERS.items():
            try:
                src = shlo if peer.startswith("IREE") else model
                pfn, pcompile, pout = runner(src, inputs)
                perr = float(np.abs(np.asarray(pout) - expected).max())
                results[peer] = (median_ms(pfn, args.repeat), pcompile, perr)
            except Exception as e:  # noqa: BLE001 -- a peer that is missing or fails is reported, not fatal
                results[peer] = (None, None, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}")
        best = min((v[0], k) for k, v in results.items() if not k.startswith("byteir") and v[0] is not None)
        print(f"\n{name}: export to StableHLO {export_s:.1f} s; byteir placement {placement}")
        print(f"  {'runtime':28s} {'median ms':>10s} {'compile s':>10s}  max |err| vs eager")
        for k, (ms, cs, e) in results.items():
            if ms is None:
                print(f"  {k:28s} {'-':>10s} {'-':>10s}  {e}")
            else:
                print(f"  {k:28s} {ms:10.2f} {cs:10.2f}  {e:.2e}")
        ratio = results["byteir"][0] / best[0]
        print(f"  ratio byteir / best peer ({best[1]}): {ratio:.2f}")
        if results["byteir from .onnx"][0] is not None:
            print(f"  ratio byteir from .onnx / byteir from torch: "
                  f"{results['byteir from .onnx'][0] / results['byteir'][0]:.2f}")
        rows.append((name, results["byteir"][0], best[1], best[0], ratio))
    if "mlp" in args.models.split(","):
        # The bar: the GEMM-bound MLP at >= 85% of the machine's measured SGEMM peak.
        # Peak = the faster of NumPy's BLAS and oneDNN (what byteir calls) on a 2048^3 SGEMM, measured now.
        a, b = np.random.rand(2048, 2048).astype(np.float32), np.random.rand(2048, 2048).astype(np.float32)
        peaks = {}
        try:  # oneDNN first: OpenBLAS's workers spin for a while after NumPy's call and would slow it
            from byteir_backend_cpu import dnnl

            if dnnl.available():
                mm, c = dnnl.Matmul(const_rhs=False), np.empty((1, 2048, 2048), np.float32)
                peaks["oneDNN"] = 2 * 2048 ** 3 / median_ms(lambda: mm(a[None], b[None], c), 5) / 1e6
        except ImportError:
            pass
        peaks["NumPy"] = 2 * 2048 ** 3 / median_ms(lambda: a @ b, 5) / 1e6
        peak_by, peak = max(peaks.items(), key=lambda kv: kv[1])
        mlp_ms = next(r[1] for r in rows if r[0] == "mlp")
        flops = 2 * 64 * (1024 * 4096 + 4096 * 4096 + 4096 * 1024)
        achieved = flops / mlp_ms / 1e6
        print(f"\nSGEMM peak ({peak_by} 2048^3; " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
              + f"): {peak:.0f} GFLOP/s; byteir MLP: {achieved:.0f} GFLOP/s = "
              f"{100 * achieved / peak:.0f}% of peak")
    print("\nsummary: model, byteir ms, best peer, peer ms, ratio")
    for r in rows:
        print(f"  {r[0]:6s} {r[1]:8.2f}  {r[2]:26s} {r[3]:8.2f}  {r[4]:.2f}")


if __name__ == "__main__":
    main()
