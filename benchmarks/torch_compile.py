"""torch.compile(backend="byteir") against eager and Inductor, inference and training, in one process run.

Run by hand (not a test):

    .venv/bin/python benchmarks/torch_compile.py [--models llama,mlp] [--repeat 10]

For each model: median latency of one inference call and of one training step (forward, backward, AdamW
step), the ratio byteir / best peer, and the first-call time (compile included). The peers' calls are
interleaved (one call each per round), so noise on a shared machine falls on all of them alike. byteir's compile
cache is pointed at a fresh directory so first calls really compile. Read ratios, and name the CPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def llama():
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=4000, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, use_cache=False)
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 4000, (2, 128))
    return model, (lambda m: m(input_ids=ids).logits), (lambda m: m(input_ids=ids, labels=ids).loss)


def mlp():
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512))
    x, y = torch.randn(64, 512), torch.randn(64, 512)
    return model, (lambda m: m(x)), (lambda m: torch.nn.functional.mse_loss(m(x), y))


MODELS = {"llama": llama, "mlp": mlp}


def interleaved(fns: dict, repeat: int) -> dict:
    """{name: (median ms, first call s)}: each function's first call (the compile) timed alone, then one warm-up
    call each, then ``repeat`` rounds calling each once in turn, so that a noisy stretch of a shared machine
    falls on every peer alike instead of on whichever ran then."""
    first, times = {}, {k: [] for k in fns}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[k] = time.perf_counter() - t0
        fn()
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(times[k]) * 1e3, first[k]) for k in fns}


def bench(name, repeat):
    torch.manual_seed(0)
    base, infer, loss_of = MODELS[name]()
    peers = ("eager", "inductor", "byteir")
    models, runs, opts = {}, {}, {}
    for peer in peers:
        models[peer] = copy.deepcopy(base)
        runs[peer] = models[peer] if peer == "eager" else torch.compile(models[peer], backend=peer)
        opts[peer] = torch.optim.AdamW(models[peer].parameters(), lr=1e-4)

    def inference(peer):
        def call():
            with torch.no_grad():
                return infer(runs[peer])
        return call

    def step(peer):
        def call():
            loss = loss_of(runs[peer])
            opts[peer].zero_grad()
            loss.backward()
            opts[peer].step()
        return call

    for m in models.values():
        m.eval()
    inf = interleaved({p: inference(p) for p in peers}, repeat)
    for m in models.values():
        m.train()
    train = interleaved({p: step(p) for p in peers}, repeat)
    rows = {p: (*inf[p], *train[p]) for p in peers}
    print(f"\n{name}: median ms (first call s)")
    print(f"{'':10} {'inference':>20} {'train step':>20}")
    for peer, (a, af, b, bf) in rows.items():
        print(f"{peer:10} {a:12.2f} ({af:5.1f}) {b:12.2f} ({bf:5.1f})")
    best_inf = min(rows[p][0] for p in ("eager", "inductor"))
    best_train = min(rows[p][2] for p in ("eager", "inductor"))
    print(f"byteir / best peer: inference {rows['byteir'][0] / best_inf:.2f}, "
          f"training {rows['byteir'][2] / best_train:.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,llama")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    os.environ["BYTEIR_CACHE_DIR"] = tempfile.mkdtemp(prefix="byteir-bench-cache-")
    for name in args.models.split(","):
        bench(name, args.repeat)


if __name__ == "__main__":
    main()
