"""ONNX's own node test cases run against byteir, counted: ``python -m byteir_frontend_onnx.conformance``.

The cases come from ``onnx.backend.test.case.node.collect_testcases()`` (built in memory; the onnx wheel ships
no node data). Each case's model is compiled for the target through :mod:`byteir_frontend_onnx.backend` and
its outputs compared with the case's expected outputs at the case's own ``rtol``/``atol``, the way onnx's
backend test runner compares them (NaN equals NaN, strings and objects exactly).

    python -m byteir_frontend_onnx.conformance                 # N of M pass, failures by reason
    python -m byteir_frontend_onnx.conformance -k reduce -v    # the cases whose name contains "reduce"
    python -m byteir_frontend_onnx.conformance --jobs 8        # in parallel processes

A case's outcome is ``pass``, ``fail`` (compiled and ran, wrong numbers), or ``error`` (did not compile or run),
with a one-line reason.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx


@dataclass
class Outcome:
    name: str
    status: str  # pass | fail | error
    reason: str = ""
    seconds: float = 0.0


def collect(pattern: str | None = None) -> list:
    """ONNX's node test cases (``onnx.backend.test.case.node``), optionally those whose name contains
    ``pattern``; onnx's own warnings while it builds them are silenced."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    if pattern:
        cases = [c for c in cases if pattern in c.name]
    return sorted(cases, key=lambda c: c.name)


def compare(expected, got, rtol: float, atol: float) -> str | None:
    """None when ``got`` matches ``expected`` as onnx's runner compares outputs, else why not."""
    if len(expected) != len(got):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        if isinstance(e, list):  # sequence outputs
            if not isinstance(g, (list, tuple)) or len(g) != len(e):
                return f"output {i}: expected a sequence of {len(e)}"
            for k, (ee, gg) in enumerate(zip(e, g)):
                why = compare([ee], [gg], rtol, atol)
                if why:
                    return f"output {i}[{k}]: {why}"
            continue
        e = np.asarray(e)
        g = np.asarray(g)
        if e.dtype != g.dtype and not (e.dtype.kind == g.dtype.kind == "U"):
            return f"output {i}: dtype {g.dtype}, expected {e.dtype}"
        if e.shape != g.shape:
            return f"output {i}: shape {g.shape}, expected {e.shape}"
        if e.dtype.kind in "OUSb" or e.dtype.kind in "iu":
            if not np.array_equal(e, g):
                return f"output {i}: values differ ({int((e != g).sum())} of {e.size})"
            continue
        ef, gf = e.astype(np.float64), g.astype(np.float64)
        ok = np.isclose(gf, ef, rtol=rtol, atol=atol, equal_nan=True)
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            return (f"output {i}: {int((~ok).sum())} of {e.size} values off (first at {tuple(bad)}: got "
                    f"{gf[tuple(bad)]!r}, expected {ef[tuple(bad)]!r}; rtol {rtol}, atol {atol})")
    return None


#: seconds a case's lowering may take (torch-mlir loops forever on a few cases); set unless the caller set it
CASE_TIMEOUT_S = "30"


def run_case(case, target: str = "cpu") -> Outcome:
    from . import backend

    os.environ.setdefault("BYTEIR_ONNX_LOWERING_TIMEOUT", CASE_TIMEOUT_S)
    # a failing case is reported as a whole, without lowering each kind of node alone (-v: set it to 1 to see
    # which nodes fail)
    os.environ.setdefault("BYTEIR_ONNX_PROBE", "0")
    t = time.perf_counter()
    from .backend import as_array

    inputs, expected = case.data_sets[0]
    # some cases give their data as TensorProtos (the Cast cases: bfloat16, float8, int4 values)
    inputs = [as_array(x) if isinstance(x, onnx.TensorProto) else x for x in inputs]
    expected = [as_array(x) if isinstance(x, onnx.TensorProto) else x for x in expected]
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            rep = backend.prepare(case.model, device=backend.device_of(target))
            got = rep.run(inputs)
    except Exception as e:  # noqa: BLE001 -- every failure is an outcome with its reason
        text = " ".join(str(e).split()) or type(e).__name__
        return Outcome(case.name, "error", f"{type(e).__name__}: {text[:400]}", time.perf_counter() - t)
    why = compare(expected, list(got), case.rtol, case.atol)
    return Outcome(case.name, "fail" if why else "pass", why or "", time.perf_counter() - t)


def _run_names(args) -> list[Outcome]:
    names, target = args
    wanted = set(names)
    cases = [c for c in collect() if c.name in wanted]
    return [run_case(c, target) for c in cases]


def run_all(cases, target: str = "cpu", jobs: int = 1, progress=None) -> list[Outcome]:
    if jobs <= 1:
        out = []
        for c in cases:
            out.append(run_case(c, target))
            if progress:
                progress(out[-1])
        return out
    from concurrent.futures import ProcessPoolExecutor

    names = [c.name for c in cases]
    chunks = [names[i::jobs] for i in range(jobs)]
    out = []
    with ProcessPoolExecutor(jobs) as pool:
        for res in pool.map(_run_names, [(ch, target) for ch in chunks]):
            out.extend(res)
    return sorted(out, key=lambda o: o.name)


def reason_class(o: Outcome) -> str:
    """A short bucket for a failure's reason (for the summary)."""
    r = o.reason
    for key in ("cannot be compiled", "not supported by target", "inconsistent shapes", "dtype",
                "values off", "values differ", "shape"):
        if key in r:
            return key
    return r.split(":")[0][:60]


def short_reason(o: Outcome) -> str:
    """A reviewed-list reason for a case that does not pass: what fails and why, in one line."""
    r = " ".join(o.reason.split())
    m = re.search(r"- (\w+) \(domain ([\w.]+), opset (\d+)\) x\d+ at node\(s\) [^:]*: (.*?)(?: - \w+ \(domain|$)", r)
    if m:
        why = m.group(4)
        why = re.sub(r"%\S+ = .*", "", why)
        why = why.replace("failed to legalize operation the ONNX op (no lowering for it with these attributes/types)",
                          "torch-mlir has no lowering for it with these attributes/types")
        why = re.sub(r"failed to legalize operation '([\w.]+)'.*", r"torch-mlir leaves \1 it cannot lower", why)
        return f"{m.group(1)} (opset {m.group(3)}): {why.strip(' :')[:140]}"
    if "not supported by target" in r:
        ops = re.findall(r"- (stablehlo\.\w+|chlo\.\w+)", r)
        return f"no backend of the target runs {', '.join(dict.fromkeys(ops)) or 'an op'} (e.g. float8/int4 types)"
    if "got object" in r:
        return "string tensors: byteir has no string type"
    if o.status == "fail":
        return f"wrong result (open bug): {r[:140]}"
    return f"{r[:160]}"


def write_exclusions(outcomes: list[Outcome], path: str) -> None:
    """The reviewed list's starting point: every case that does not pass, with its reason, grouped."""
    rows = sorted(((short_reason(o), o.name) for o in outcomes if o.status != "pass"))
    with open(path, "w") as f:
        f.write('"""ONNX node test cases byteir does not pass yet, each with its reason (see test_conformance.py).\n\n'
                "Regenerate the starting point with ``python -m byteir_frontend_onnx.conformance --jobs 2 "
                "--write-exclusions FILE``\nand review the difference: a case leaves this list when it passes; "
                'none is added without a reason.\n"""\n\nEXCLUDED = {\n')
        for reason, name in rows:
            f.write(f"    {name!r}: {reason!r},\n")
        f.write("}\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m byteir_frontend_onnx.conformance", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="pattern", help="only cases whose name contains this")
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case that does not pass")
    ap.add_argument("--list", metavar="FILE", help="write 'name<TAB>status<TAB>reason' for every case to FILE")
    ap.add_argument("--write-exclusions", metavar="FILE", help="write every case that does not pass, with its "
                    "reason, as a Python dict (the test's exclusion list) to FILE")
    args = ap.parse_args(argv)
    cases = collect(args.pattern)
    t = time.time()
    outcomes = run_all(cases, args.target, args.jobs)
    passed = sum(o.status == "pass" for o in outcomes)
    if args.verbose:
        for o in outcomes:
            if o.status != "pass":
                print(f"{o.status:5} {o.name}: {o.reason}")
    if args.list:
        with open(args.list, "w") as f:
            for o in outcomes:
                f.write(f"{o.name}\t{o.status}\t{o.seconds:.2f}\t{o.reason}\n")
    if args.write_exclusions:
        write_exclusions(outcomes, args.write_exclusions)
    by = Counter(f"{o.status}: {reason_class(o)}" for o in outcomes if o.status != "pass")
    for k, n in by.most_common(15):
        print(f"  {n:5}  {k}")
    print(f"{passed} of {len(outcomes)} ONNX node cases pass on target {args.target} "
          f"({100.0 * passed / max(len(outcomes), 1):.1f}%, {time.time() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
