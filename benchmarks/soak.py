"""Soak: many threads sending many requests to one Session; every result must equal the single-threaded run's,
and resident memory must stay flat once warmed up.

Run by hand (not a test; ``tests/test_soak.py`` runs a short version):

    .venv/bin/python benchmarks/soak.py                      # 8 threads x 1,000 requests per program and target
    .venv/bin/python benchmarks/soak.py --threads 4 --requests 200 --only mlp

Programs: ``examples/mlp.mlir``, and a small transformer (token embedding, 2 pre-norm blocks of causal attention
and a GELU MLP, logits) written in PyTorch and compiled whole; each for the ``cpu`` and ``reference`` targets,
loaded once, called concurrently (on reference, a one-block transformer and ``--reference-requests`` per thread:
the interpreter takes about 0.1 s a request). Then a ``torch.compile(backend="byteir")`` model called from
several threads, against its single-threaded results and eager.

Per case it prints the requests, wall time, requests/s, mismatches against the single-threaded results (must be
0), resident memory (``/proc/self/statm``) after warm-up and at the end (after ``gc.collect()``), and the growth
in MB per 1,000 requests. For torch.compile it also reports graphs compiled again while the threads ran (Dynamo
guards failing under concurrency) and a changed torch thread count. Exit status 1 on any mismatch or problem.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident memory of this process in MB (``/proc/self/statm``: pages)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2 ** 20
    except OSError:  # not Linux: the peak is what resource offers
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


@dataclass
class SoakResult:
    name: str
    threads: int
    requests: int  # per thread
    seconds: float
    mismatches: int
    errors: list = field(default_factory=list)
    rss_warm: float = 0.0
    rss_end: float = 0.0
    rss_peak: float = 0.0

    @property
    def total(self) -> int:
        return self.threads * self.requests

    @property
    def mb_per_1000(self) -> float:
        return (self.rss_end - self.rss_warm) / (self.total / 1000)

    def line(self) -> str:
        rate = self.total / self.seconds
        return (f"{self.name:28s} {self.threads}x{self.requests:<5d} {self.seconds:7.1f} s {rate:8.1f} req/s  "
                f"mismatches {self.mismatches:<3d} RSS {self.rss_warm:7.1f} -> {self.rss_end:7.1f} MB "
                f"(peak {self.rss_peak:7.1f})  {self.mb_per_1000:+.3f} MB / 1,000 requests")


def same(got, want) -> bool:
    """Bit-identical outputs (NaN equal to NaN): a concurrent run must give what the single-threaded run gave."""
    if isinstance(got, (list, tuple)):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    g, w = np.asarray(got), np.asarray(want)
    return g.shape == w.shape and g.dtype == w.dtype and g.tobytes() == w.tobytes()


def soak(call, inputs: list, expected: list, *, threads: int, requests: int, warmup: int = 50,
         name: str = "", check=same) -> SoakResult:
    """``threads`` threads each make ``warmup`` then ``requests`` calls ``call(*inputs[k])`` (k cycling through
    the inputs, each thread from its own offset) and check every result against ``expected[k]``. Resident
    memory is read (after ``gc.collect()``) once every thread has warmed up and again at the end."""
    barrier = threading.Barrier(threads + 1)
    mismatches = [0] * threads
    errors: list = []
    done = [0] * threads
    peak = [0.0]

    def work(t: int) -> None:
        try:
            for i in range(warmup):
                k = (t * 7 + i) % len(inputs)
                call(*inputs[k])
            barrier.wait()
            barrier.wait()  # the main thread has measured memory
            for i in range(requests):
                k = (t * 7 + i) % len(inputs)
                if not check(call(*inputs[k]), expected[k]):
                    mismatches[t] += 1
                done[t] += 1
        except threading.BrokenBarrierError:
            pass
        except Exception as e:  # noqa: BLE001 -- reported, and the run fails
            errors.append(f"thread {t}: {type(e).__name__}: {e}")
            barrier.abort()

    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    try:
        barrier.wait()
        gc.collect()
        warm = rss_mb()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        barrier.wait()
    except threading.BrokenBarrierError:
        warm, t0, stop, sampler = rss_mb(), time.perf_counter(), threading.Event(), None
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t0
    stop.set()
    if sampler is not None:
        sampler.join()
    gc.collect()
    end = rss_mb()
    return SoakResult(name, threads, requests, seconds, sum(mismatches) + (requests * threads - sum(done)), errors,
                      warm, end, max(peak[0], end))


# ---------------------------------------------------------------- programs

def mlp_program():
    """(model, example inputs for compile or None, input sets): examples/mlp.mlir with 16 random inputs."""
    rng = np.random.default_rng(0)
    text = (ROOT / "examples" / "mlp.mlir").read_text()
    return text, None, [(rng.standard_normal((4, 16)).astype(np.float32),) for _ in range(16)]


def tiny_transformer(vocab: int = 96, hidden: int = 32, heads: int = 4, layers: int = 2, seq: int = 16):
    """A small decoder in PyTorch: token and position embeddings (a gather), pre-norm blocks of causal
    scaled-dot-product attention and a GELU MLP, final norm, logits."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
            self.up, self.down = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(hidden, dim=-1)
            q, k, v = (t.reshape(b, s, heads, hidden // heads).transpose(1, 2) for t in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, s, hidden))
            return x + self.down(F.gelu(self.up(self.ln2(x))))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, hidden), nn.Embedding(seq, hidden)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.norm, self.head = nn.LayerNorm(hidden), nn.Linear(hidden, vocab)

        def forward(self, ids):
            x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.norm(x))

    torch.manual_seed(0)
    return Decoder().eval(), seq, vocab


#: The transformer's size per target: the reference interpreter takes about 0.1 s a request even for the small
#: one (the oracle, not a fast path), so it gets a smaller model and fewer requests (``--reference-requests``).
TRANSFORMER = {"cpu": dict(vocab=96, hidden=64, heads=4, layers=2, seq=32),
               "reference": dict(vocab=32, hidden=16, heads=2, layers=1, seq=8)}


def transformer_program(target: str = "cpu"):
    import torch

    model, seq, vocab = tiny_transformer(**TRANSFORMER.get(target, TRANSFORMER["cpu"]))
    g = torch.Generator().manual_seed(1)
    inputs = [(torch.randint(0, vocab, (2, seq), generator=g),) for _ in range(16)]
    return model, inputs[0], [(x.numpy(),) for (x,) in inputs]


PROGRAMS = {"mlp": lambda target: mlp_program(), "transformer": transformer_program}


def session_case(program: str, target: str, threads: int, requests: int, warmup: int) -> SoakResult:
    import byteir_core

    model, example, inputs = PROGRAMS[program](target)
    t0 = time.perf_counter()
    art = byteir_core.compile(model, example, target=target)
    session = byteir_core.load(art.to_bytes())
    expected = [session.run(*x) for x in inputs]  # the single-threaded results
    expected = [session.run(*x) for x in inputs]  # twice: a run must not depend on the one before
    print(f"  {program} for {target}: compiled and loaded in {time.perf_counter() - t0:.1f} s; backends "
          f"{sorted(art.report['ops_per_backend'])}", flush=True)
    return soak(session.run, inputs, expected, threads=threads, requests=requests, warmup=warmup,
                name=f"{program} / {target}")


def torch_compile_case(threads: int, requests: int, warmup: int) -> tuple[SoakResult, float, str]:
    """The tiny transformer under ``torch.compile(backend="byteir")``, called from ``threads`` threads (grad
    off in each: grad mode is per thread, and a guard on it would recompile). Returns the result against the
    compiled model's single-threaded outputs, the largest difference from eager, and a problem seen on the way
    (graphs compiled again under threads, torch's thread count changed), or ''."""
    import torch
    from byteir_frontend_torch.dynamo import compile_log

    model, seq, vocab = tiny_transformer(**TRANSFORMER["cpu"])
    compiled = torch.compile(model, backend="byteir")
    g = torch.Generator().manual_seed(2)
    inputs = [(torch.randint(0, vocab, (2, seq), generator=g),) for _ in range(16)]
    t0 = time.perf_counter()
    with torch.no_grad():
        eager = [model(*x) for x in inputs]
        expected = [compiled(*x).clone() for x in inputs]
    print(f"  torch.compile: compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    diff = max(float((e - c).abs().max()) for e, c in zip(eager, expected))
    graphs, torch_threads = len(compile_log), torch.get_num_threads()

    def call(x):
        with torch.no_grad():
            return compiled(x)

    def check(got, want):
        return torch.equal(got, want)

    r = soak(call, inputs, expected, threads=threads, requests=requests, warmup=warmup,
             name="transformer / torch.compile", check=check)
    problems = []
    if len(compile_log) != graphs:  # Dynamo guards failed under threads: byteir compiled (or fetched) again
        problems.append(f"{len(compile_log) - graphs} graph(s) compiled again under threads (Dynamo recompiles; "
                        "past its recompile_limit the frame runs in eager)")
    if torch.get_num_threads() != torch_threads:
        problems.append(f"torch's thread count changed from {torch_threads} to {torch.get_num_threads()}")
    return r, diff, "; ".join(problems)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--requests", type=int, default=1000, help="requests per thread")
    ap.add_argument("--reference-requests", type=int, default=50,
                    help="requests per thread for the transformer on the reference interpreter (slow)")
    ap.add_argument("--warmup", type=int, default=50, help="requests per thread before memory is measured")
    ap.add_argument("--only", default="mlp,transformer,torch.compile", help="cases: mlp, transformer, torch.compile")
    ap.add_argument("--targets", default="cpu,reference")
    args = ap.parse_args(argv)
    only = args.only.split(",")
    print(f"soak: {args.threads} threads x {args.requests} requests; {cpu_name()}; Python {platform.python_version()}",
          flush=True)
    results = []
    for program in ("mlp", "transformer"):
        if program not in only:
            continue
        for target in args.targets.split(","):
            n = args.reference_requests if (program, target) == ("transformer", "reference") else args.requests
            r = session_case(program, target, args.threads, n, args.warmup)
            print(r.line(), flush=True)
            results.append(r)
    if "torch.compile" in only:
        r, diff, problem = torch_compile_case(args.threads, args.requests, args.warmup)
        print(r.line() + f"  (max |compiled - eager| {diff:.2e})", flush=True)
        if problem:
            print(f"  PROBLEM: {problem}", flush=True)
            r.errors.append(problem)
        results.append(r)
    bad = [r for r in results if r.mismatches or r.errors]
    for r in bad:
        print(f"FAILED {r.name}: {r.mismatches} mismatches; {'; '.join(r.errors[:3])}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
