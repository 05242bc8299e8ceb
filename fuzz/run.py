"""Run one fuzz harness: ``python fuzz/run.py byre|stablehlo|pt2|onnx [--runs N | --seconds S] [--seed K]``.

Starts from a fresh seed corpus (the harness's ``seeds``) unless ``--corpus DIR`` keeps one across runs, runs
libFuzzer through atheris in a child process and prints one line: harness, executions, seconds, findings. An
input that made the harness fail is written to ``--artifacts`` (default ``out/fuzz/NAME/``); keep each one as a
regression case under ``tests/fuzz_regressions/NAME/`` (``make test`` replays them).

Long runs (1,000,000 executions each) are run by hand, e.g. ``python fuzz/run.py byre --runs 1000000``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = ("byre", "stablehlo", "pt2", "onnx")


def make_seeds(name: str, corpus: Path) -> None:
    sys.path.insert(0, str(HERE))
    importlib.import_module(f"fuzz_{name}").seeds(corpus)


def run(name: str, runs: int | None, seconds: float | None, seed: int, corpus: Path | None, artifacts: Path,
        extra: list[str]) -> dict:
    fresh = corpus is None
    corpus = Path(tempfile.mkdtemp(prefix=f"byteir-fuzz-{name}-")) if fresh else corpus
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        make_seeds(name, corpus)
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = [f"-seed={seed}", f"-artifact_prefix={artifacts}/", "-timeout=60", "-rss_limit_mb=6000",
             "-print_final_stats=1"]
    flags.append(f"-runs={runs}" if runs is not None else f"-max_total_time={int(seconds or 60)}")
    # an ONNX lowering gets 20 s (a mutated shape can make torch-mlir work for minutes), well inside -timeout
    env = {"BYTEIR_ONNX_LOWERING_TIMEOUT": "20", **os.environ, "BYTEIR_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(HERE / f"fuzz_{name}.py"), *flags, *extra, str(corpus)],
                       capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    out = r.stdout + r.stderr
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out) or re.search(r"Done (\d+) runs", out)
    execs = int(m.group(1)) if m else 0
    findings = re.findall(r"(?:Test unit written to|crash-|timeout-|oom-)(\S*)", out)
    return {"harness": name, "executions": execs, "seconds": round(dt, 1), "returncode": r.returncode,
            "findings": sorted({f for f in findings if f}), "log": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("harness", choices=HARNESSES)
    ap.add_argument("--runs", type=int, help="executions (default: run for --seconds)")
    ap.add_argument("--seconds", type=float, default=60.0, help="time limit when --runs is not given")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (fixed for reproducible runs)")
    ap.add_argument("--corpus", type=Path, help="a corpus folder to grow across runs (default: fresh seeds)")
    ap.add_argument("--artifacts", type=Path, help="where inputs that fail are written (default out/fuzz/NAME)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print libFuzzer's log")
    args, extra = ap.parse_known_args(argv)
    artifacts = args.artifacts or HERE.parent / "out" / "fuzz" / args.harness
    res = run(args.harness, args.runs, None if args.runs else args.seconds, args.seed, args.corpus, artifacts,
              extra)
    if args.verbose or res["returncode"] != 0:
        print(res["log"][-6000:], file=sys.stderr)
    print(f"fuzz {res['harness']}: {res['executions']} executions in {res['seconds']} s, "
          f"{len(res['findings'])} finding(s){': ' + ', '.join(res['findings']) if res['findings'] else ''} "
          f"(exit {res['returncode']})")
    return res["returncode"]


if __name__ == "__main__":
    sys.exit(main())
