"""The fuzz harnesses (fuzz/), run briefly with fixed seeds, and every input they ever found replayed.

A finding (an exception other than a documented ``ByteirError``, a crash, a hang) fails the run; keep the input
under tests/fuzz_regressions/<harness>/ once fixed. Long runs: ``make fuzz`` (see fuzz/run.py).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
#: executions per harness in `make test`: about 20 s each on a 2-core machine (onnx: about 60 s)
SMOKE_RUNS = {"byre": 1500, "stablehlo": 400, "pt2": 100, "onnx": 30}


@pytest.mark.parametrize("harness", sorted(SMOKE_RUNS))
def test_fuzz_smoke_run_finds_nothing(harness, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "fuzz" / "run.py"), harness, "--runs", str(SMOKE_RUNS[harness]),
                        "--seed", "7", "--artifacts", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "BYTEIR_CACHE_DIR": str(tmp_path / "cache")})
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0 and "0 finding(s)" in summary, summary + "\n" + r.stderr[-4000:]
    assert f"fuzz {harness}: {SMOKE_RUNS[harness]} executions" in summary, summary
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))


FOUND = sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("case", FOUND, ids=[f"{p.parent.name}/{p.name[:20]}" for p in FOUND])
def test_every_input_fuzzing_ever_found_is_answered_with_a_documented_error(case):
    harness = case.parent.name
    assert harness in SMOKE_RUNS, f"{case}: no harness named {harness!r}"
    r = subprocess.run([sys.executable, str(ROOT / "fuzz" / f"fuzz_{harness}.py"), str(case)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "BYTEIR_PROGRESS": "0"})
    assert r.returncode == 0 and f"Executed {case}" in r.stderr, r.stderr[-4000:]
