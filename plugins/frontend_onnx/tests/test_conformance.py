"""ONNX's own node test cases against byteir (--target cpu), at each case's own tolerances.

The ones listed in ``conformance_exclusions.py`` (each with its reason) are expected not to pass; every other
case must pass, so the README's count ("N of M ONNX node cases pass") cannot go down. ``make test`` runs the
cases expected to pass (about 5 minutes on 2 cores: the excluded ones, failing through crashes and timeouts
in torch-mlir, would take 2 more). ``BYTEIR_CONFORMANCE_ALL=1`` runs every case and also fails on a listed case
that passes now, so the list only shrinks; ``python -m byteir_frontend_onnx.conformance --write-exclusions F``
writes the list a full run gives.

The cases run in ``BYTEIR_TEST_JOBS`` processes (default: the CPUs this process may use, at most 4), each
compiling through :mod:`byteir_frontend_onnx.backend` exactly as ``python -m byteir_frontend_onnx.conformance``
does."""

import os

import pytest
from conformance_exclusions import EXCLUDED

from byteir_frontend_onnx.conformance import collect, run_all

pytestmark = pytest.mark.slow  # minutes on 2 cores: in CI, not in `make test-fast`


def _jobs() -> int:
    env = os.environ.get("BYTEIR_TEST_JOBS")
    if env:
        return max(1, int(env))
    return max(1, min(4, len(os.sched_getaffinity(0))))


ALL = os.environ.get("BYTEIR_CONFORMANCE_ALL", "") not in ("", "0")


@pytest.fixture(scope="module")
def cases():
    return collect()


@pytest.fixture(scope="module")
def outcomes(cases):
    run = cases if ALL else [c for c in cases if c.name not in EXCLUDED]
    return {o.name: o for o in run_all(run, "cpu", jobs=_jobs())}


def test_exclusions_are_real_case_names_with_reasons(cases):
    unknown = sorted(set(EXCLUDED) - {c.name for c in cases})
    assert not unknown, f"excluded cases onnx no longer has: {unknown}"
    assert all(isinstance(r, str) and len(r) > 10 for r in EXCLUDED.values())
    assert len(cases) - len(EXCLUDED) >= 1701, "the count in the README only goes up"


def test_every_case_not_excluded_passes(outcomes):
    """...and, with BYTEIR_CONFORMANCE_ALL=1, every excluded case still fails."""
    regressions = sorted(f"{o.name}: {o.status}: {o.reason}" for o in outcomes.values()
                         if o.status != "pass" and o.name not in EXCLUDED)
    newly_passing = sorted(n for n, o in outcomes.items() if o.status == "pass" and n in EXCLUDED)
    passed = sum(o.status == "pass" for o in outcomes.values())
    summary = f"{passed} of {len(outcomes)} ONNX node cases run pass"
    assert not regressions, f"{summary}; cases that should pass but do not:\n  " + "\n  ".join(regressions)
    assert not newly_passing, (f"{summary}; these excluded cases pass now, remove them from "
                               f"conformance_exclusions.py:\n  " + "\n  ".join(newly_passing))
