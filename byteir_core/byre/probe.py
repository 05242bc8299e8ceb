"""Parse MLIR in a short-lived child process, so that a crash or a hang of MLIR's reader costs a child.

``python -m byteir_core.byre.probe bytecode|text`` (or this file run by path, which skips importing
byteir_core and its dependencies) reads the bytes on stdin and parses them in an MLIR context set up as the
ByRE reader sets up its own. Exit status 0: MLIR parsed them; 3: MLIR refused them (its diagnostics on
stderr); 2: the probe could not run (no MLIR bindings). The ByRE reader uses it for what no digest vouches for:
ByRE 1.0/1.1 bytecode and text without a digest line (see docs/byre.md, "What loading costs").
"""

from __future__ import annotations

import os
import subprocess
import sys

#: Seconds a child may take before the file is called a hang: this plus one per 20 MB.
TIMEOUT_S = 20.0
_REFUSED, _CANNOT_RUN = 3, 2


def parse_in_child(body: bytes, kind: str) -> tuple[str, str]:
    """Parse ``body`` (``kind`` "bytecode" or "text") in a child. Returns (outcome, detail): outcome is "ok",
    "refused" (detail: MLIR's diagnostics), "crashed" (detail: the signal), "hung" (detail: the timeout) or
    "unavailable" (the child could not run; detail says why)."""
    timeout = TIMEOUT_S + len(body) / 20e6
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the bindings this process imports
    env.pop("PYTHONSTARTUP", None)
    try:
        p = subprocess.run([sys.executable, "-X", "faulthandler", os.path.abspath(__file__), kind], input=body,
                           capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "hung", f"no result after {timeout:.0f} s"
    except OSError as e:
        return "unavailable", f"cannot start {sys.executable}: {e.strerror}"
    err = p.stderr.decode("utf-8", "replace").strip()
    if p.returncode == 0:
        return "ok", ""
    if p.returncode == _REFUSED:
        return "refused", err
    if p.returncode < 0:
        import signal

        try:
            name = signal.Signals(-p.returncode).name
        except ValueError:
            name = f"signal {-p.returncode}"
        return "crashed", name
    if p.returncode == _CANNOT_RUN:
        return "unavailable", err[-300:]
    # an uncaught C++ exception or a fatal error that exited rather than signalled
    return "crashed", f"exit status {p.returncode}" + (f": {err.splitlines()[0][:200]}" if err else "")


def _main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # run by path: no sibling shadowing
    kind = sys.argv[1] if len(sys.argv) > 1 else "bytecode"
    data = sys.stdin.buffer.read()
    try:
        from torch_mlir import ir
        from torch_mlir._mlir_libs import _stablehlo
    except ImportError as e:
        print(f"no MLIR bindings: {e}", file=sys.stderr)
        return _CANNOT_RUN
    ctx = ir.Context()
    _stablehlo.register_dialect(ctx)
    ctx.allow_unregistered_dialects = True
    with ctx, ir.Location.unknown():
        try:
            ir.Module.parse(data if kind == "bytecode" else data.decode("utf-8"))
        except ir.MLIRError as e:
            try:
                lines = []
                for d in getattr(e, "error_diagnostics", None) or []:
                    lines.append(f"{d.location}: {d.message}")
                    lines.extend(f"  note: {n.location}: {n.message}" for n in d.notes)
                text = "\n".join(lines) or str(e)
            except Exception as e2:  # noqa: BLE001 -- a diagnostic that does not convert to str
                text = f"MLIR refused it (its diagnostic is unprintable: {type(e2).__name__})"
            print(text, file=sys.stderr)
            return _REFUSED
        except Exception as e:  # noqa: BLE001 -- anything else the bindings raise is a refusal too
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return _REFUSED
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: nothing to flush, and it is the slow part


if __name__ == "__main__":
    sys.exit(_main())
