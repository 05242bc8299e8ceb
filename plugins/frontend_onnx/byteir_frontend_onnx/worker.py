"""torch-mlir's ONNX import and lowering, in a child process that a crash cannot take the caller down with.

torch-mlir's ONNX lowerings end the process on some inputs (a segmentation fault for some ops with unusual
types or attributes), and no Python ``try`` can catch that. So the import and both pipelines run in one
long-lived worker process per compiling process; it answers with StableHLO bytecode (or the reason it could not),
and the caller parses that into the core's context. A worker that dies is reported as the reason for that model
(or, when probing, for that kind of node) and replaced by a new one on the next request.

``BYTEIR_ONNX_IN_PROCESS=1`` lowers in the calling process instead (for debugging with a native debugger).

Protocol: length-prefixed pickles over the worker's stdin/stdout. Request ``(model_bytes, base_dir)``, answer
``("ok", bytecode)`` or ``("failed", stage, lines)`` or ``("import", message)``.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading


class WorkerCrashed(Exception):
    """The worker process ended while lowering (a crash inside torch-mlir)."""

    def __init__(self, returncode: int):
        self.returncode = returncode
        if returncode < 0:
            try:
                sig = signal.Signals(-returncode).name
            except ValueError:
                sig = f"signal {-returncode}"
            text = f"torch-mlir crashed ({sig}) while lowering it"
        else:
            text = f"the lowering process exited with status {returncode}"
        super().__init__(text)


def _write(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def lower_bytes(model_bytes, base: str | None):
    """The worker's job, also used in-process: ONNX bytes (or a ModelProto) -> ("ok", StableHLO bytecode) or
    the failure."""
    import onnx
    from byteir_core.mlir import module_to_bytecode, new_context

    from .importer import LoweringFailed, all_static, import_module, lower
    from .native import lower_native_ops

    if isinstance(model_bytes, onnx.ModelProto):
        proto = model_bytes
    else:
        proto = onnx.ModelProto()
        proto.ParseFromString(model_bytes)
    if base:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(proto, base)
    for fast in ([True, False] if all_static(proto) else [False]):
        ctx = new_context()
        try:
            module = import_module(proto, ctx)
        except Exception as e:  # noqa: BLE001 -- OnnxImportError and friends
            text = " ".join(str(e).split()) or type(e).__name__
            return ("import", text[:600])
        try:
            lower_native_ops(module)
            lower(module, fast=fast)
        except LoweringFailed as e:
            if fast:
                continue  # the full pipeline (with torch-mlir's shape refinement) may still lower it
            return ("failed", e.stage, e.lines)
        return ("ok", module_to_bytecode(module))


def _serve() -> None:
    # The answers get their own file descriptor; fd 1 (where native code such as MLIR's printers may write)
    # becomes stderr, so nothing else can ever write into the answer stream.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    while True:
        try:
            model_bytes, base = _read(inp)
        except EOFError:
            return
        try:
            answer = lower_bytes(model_bytes, base)
        except Exception as e:  # noqa: BLE001
            answer = ("import", f"{type(e).__name__}: {e}"[:600])
        _write(out, answer)


def timeout_s() -> float:
    """Seconds one lowering may take in the worker before it is stopped (``BYTEIR_ONNX_LOWERING_TIMEOUT``,
    default 600)."""
    try:
        return float(os.environ.get("BYTEIR_ONNX_LOWERING_TIMEOUT", "600"))
    except ValueError:
        return 600.0


class WorkerTimedOut(WorkerCrashed):
    def __init__(self, seconds: float):
        Exception.__init__(self, f"torch-mlir's lowering did not finish in {seconds:.0f} s and was stopped "
                                 f"(BYTEIR_ONNX_LOWERING_TIMEOUT)")
        self.returncode = None


def _read_within(proc: subprocess.Popen, seconds: float):
    """One answer from the worker, or WorkerTimedOut / EOFError."""
    import select
    import time

    fd = proc.stdout.fileno()
    deadline = time.monotonic() + seconds
    buf = bytearray()
    need = 8
    n = None
    while len(buf) < need:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkerTimedOut(seconds)
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, min(1 << 20, need - len(buf)))
        if not chunk:
            raise EOFError
        buf += chunk
        if n is None and len(buf) >= 8:
            (n,) = struct.unpack("<Q", bytes(buf[:8]))
            need = 8 + n
    return pickle.loads(bytes(buf[8:]))


class Worker:
    """One child process, started on first use, restarted after a crash or a lowering that takes too long."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.setdefault("PYTHONFAULTHANDLER", "")
        return subprocess.Popen([sys.executable, "-m", "byteir_frontend_onnx.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def lower(self, model_bytes: bytes, base: str | None):
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            try:
                _write(proc.stdin, (model_bytes, base))
                return _read_within(proc, timeout_s())
            except WorkerTimedOut:
                proc.kill()
                proc.wait()
                self._proc = None
                raise
            except (EOFError, BrokenPipeError, OSError):
                rc = proc.wait()
                self._proc = None
                raise WorkerCrashed(rc) from None

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                try:
                    self._proc.stdin.close()
                    self._proc.wait(timeout=5)
                except Exception:  # noqa: BLE001
                    self._proc.kill()
            self._proc = None


_worker = Worker()
atexit.register(_worker.close)


def lower_model(proto, base: str | None):
    """Lower ``proto`` (a ModelProto without its external data) in the worker, or in this process with
    ``BYTEIR_ONNX_IN_PROCESS=1`` or when it is too big to serialize (over protobuf's 2 GB). The answer, or
    ``("crashed", reason)`` when the worker died, ``("timeout", reason)`` when it was stopped."""
    if os.environ.get("BYTEIR_ONNX_IN_PROCESS", "") not in ("", "0"):
        return lower_bytes(proto, base)
    try:
        data = proto.SerializeToString()
    except ValueError:  # in-memory weights over 2 GB: cannot cross a process boundary as one protobuf
        return lower_bytes(proto, base)
    try:
        return _worker.lower(data, base)
    except WorkerTimedOut as e:
        return ("timeout", str(e))
    except WorkerCrashed as e:
        return ("crashed", str(e))


if __name__ == "__main__":
    _serve()
