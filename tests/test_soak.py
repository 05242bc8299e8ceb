"""A short soak (``benchmarks/soak.py`` is the long one): 4 threads x 100 requests on one Session, for the cpu
and reference targets, every result bit-identical to the single-threaded run, and resident memory flat after
warm-up (a tolerant bound: a leak of a few KB a request would pass 100 requests by little, but a leaked arena
or a growing pool of workspaces would not)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import byteir_core

_SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("byteir_soak_benchmark", _SOAK)
    mod = sys.modules.get(spec.name)
    if mod is None:
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("target", ["cpu", "reference"])
def test_threads_get_the_single_threaded_results_and_memory_stays_flat(target):
    if target == "cpu":
        pytest.importorskip("byteir_backend_cpu")
    soak = _soak_module()
    text, _, inputs = soak.mlp_program()
    session = byteir_core.load(byteir_core.compile(text, target=target).to_bytes())
    expected = [session.run(*x) for x in inputs]
    r = soak.soak(session.run, inputs, expected, threads=4, requests=100, warmup=20, name=f"mlp / {target}")
    assert not r.errors, r.errors
    assert r.mismatches == 0, r.line()
    assert r.rss_end - r.rss_warm < 5.0, r.line()
    assert 1 <= _pooled(session) <= 4  # the session keeps at most one workspace per concurrent request


def _pooled(session) -> int:
    """Workspaces the session keeps for reuse (each request takes one and gives it back)."""
    q, taken = session._workspaces, []
    while True:
        try:
            taken.append(q.get_nowait())
        except Exception:  # noqa: BLE001 -- queue.Empty
            break
    for w in taken:
        q.put(w)
    return len(taken)


def test_soak_counts_mismatches_and_errors():
    """The harness itself: a call that sometimes returns something else is counted, one that raises is
    reported with its thread."""
    soak = _soak_module()
    calls = iter(range(10 ** 6))

    def flaky(x):
        return x + (1 if next(calls) % 50 == 49 else 0)

    inputs = [(np.float32(i),) for i in range(4)]
    r = soak.soak(flaky, inputs, [x for (x,) in inputs], threads=2, requests=100, warmup=0)
    assert r.mismatches == 4 and not r.errors

    def broken(x):
        raise ValueError("boom")

    r = soak.soak(broken, inputs, [x for (x,) in inputs], threads=2, requests=10, warmup=1)
    assert r.errors and "ValueError: boom" in r.errors[0]
