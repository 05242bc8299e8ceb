"""The runtime (BRT): load a ByRE artifact, bind inputs, run the steps through providers.

The runtime never imports the compiler. Loading an artifact that carries native code is running that
code: load only artifacts you trust, and pin them with ``expected_sha256`` (``byteir inspect`` prints it).
"""

from __future__ import annotations

import ctypes
import queue
import statistics
import time
from typing import Any

import ml_dtypes
import numpy as np

from ..byre import Artifact, read_artifact
from ..byre.format import READ, WRITE, ByreModule
from ..dtypes import copy_into
from ..errors import InputError, ProviderError
from ..plugins import get_registry


def _from_torch(x) -> np.ndarray:
    if x.requires_grad:
        x = x.detach()
    if x.device.type != "cpu":
        raise InputError(f"torch tensor on {x.device}; this session runs on the host (device='cpu')")
    if str(x.dtype) == "torch.bfloat16":
        import torch

        return np.from_dlpack(x.contiguous().view(torch.int16)).view(ml_dtypes.bfloat16)
    return np.from_dlpack(x)


def _view(source: np.ndarray, b) -> np.ndarray:
    raw = source.reshape(-1).view(np.uint8)[b.byte_offset:b.byte_offset + b.spec.nbytes]
    return raw.view(b.spec.np_dtype).reshape(b.spec.shape)


def as_numpy(x: Any) -> np.ndarray:
    """A NumPy view of ``x`` (NumPy, torch, any DLPack or array-interface producer), zero-copy when possible."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        return _from_torch(x)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError):
            pass
    return np.asarray(x)


def _like_torch(arrays: list[np.ndarray]) -> list:
    import torch

    out = []
    for a in arrays:
        if a.dtype == ml_dtypes.bfloat16:
            out.append(torch.from_numpy(a.view(np.int16)).view(torch.bfloat16))
        else:
            out.append(torch.from_numpy(a))
    return out


class Session:
    """A loaded artifact. ``Session.__call__(*inputs)`` is the high-level API; the rest mirrors ByteIR's BRT."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.module: ByreModule | None = None
        self.artifact: Artifact | None = None
        self._weights: dict[int, np.ndarray] = {}
        self._steps: list = []

    # -- loading -----------------------------------------------------------------------------------
    def load(self, source, expected_sha256: str | None = None) -> "Session":
        art = read_artifact(source, expected_sha256=expected_sha256)
        bm = art.module
        registry = get_registry()
        devices = {"cpu"} | {p.device for p in registry.providers.values()}
        if self.device not in devices:
            raise ProviderError(f"device {self.device!r} has no installed provider; devices: {', '.join(sorted(devices))}")
        steps = []
        missing = []
        for s in bm.steps:
            if s.op == "copy":
                steps.append(("copy", None, s))
                continue
            provider = registry.callee_provider.get(s.callee)
            if provider is None:
                missing.append(s)
                continue
            kernel = bm.kernels[s.kernel].kernel if s.kernel else None
            try:
                fn = provider.load(s.callee, kernel, dict(s.attrs))
            except ProviderError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ProviderError(f"provider {provider.name!r} failed to load callee {s.callee!r} "
                                    f"(kernel {s.kernel}): {type(e).__name__}: {e}") from e
            steps.append(("compute", fn, s))
        if missing:
            made_with = bm.manifest.get("backends", {})
            lines = []
            for s in {m.callee: m for m in missing}.values():
                dist = made_with.get(s.backend, "?")
                hint = (f"install {dist.split()[0]} (the artifact was compiled with {dist})" if dist != "?"
                        else f"install the plugin that provides backend {s.backend!r}")
                lines.append(f"callee {s.callee!r} (compiled by backend {s.backend!r}): no installed provider; {hint}")
            raise ProviderError(f"{art.path or '<artifact>'}: " + "; ".join(lines))
        self._weights = {}
        for i, a in enumerate(bm.args):
            if a.kind == "weight":
                w = np.frombuffer(bm.weights[a.weight], dtype=a.spec.np_dtype).reshape(a.spec.shape)
                self._weights[i] = w
        self.module, self.artifact, self._steps = bm, art, steps
        rooted: set[int] = set()
        for b in bm.buffers:
            if b.kind == "arg" or (b.kind == "alias" and b.source in rooted):
                rooted.add(b.id)
        self._arg_rooted = [b for b in bm.buffers if b.id in rooted]
        self._workspaces: queue.SimpleQueue = queue.SimpleQueue()
        return self

    def _take_workspace(self) -> list:
        """An arena and the views into it of every intermediate buffer, reused across requests."""
        try:
            return self._workspaces.get_nowait()
        except queue.Empty:
            pass
        bm = self.module
        arena = np.empty(max(bm.arena_bytes, 1), dtype=np.uint8)
        views: list = [None] * len(bm.buffers)
        for b in bm.buffers:
            if b.kind == "alloc":
                views[b.id] = arena[b.arena_offset:b.arena_offset + b.spec.nbytes].view(b.spec.np_dtype).reshape(
                    b.spec.shape)
            elif b.kind == "alias" and views[b.source] is not None:
                views[b.id] = _view(views[b.source], b)
        return views

    def _require(self) -> ByreModule:
        if self.module is None:
            raise RuntimeError("Session has no artifact loaded; call load(path) first")
        return self.module

    # -- ByteIR-compatible queries ------------------------------------------------------------------
    def get_input_arg_offsets(self) -> list[int]:
        return self._require().inputs()

    def get_output_arg_offsets(self) -> list[int]:
        return self._require().outputs()

    def get_weight_arg_offsets(self) -> list[int]:
        return [i for i, a in enumerate(self._require().args) if a.kind == "weight"]

    def get_static_shape(self, offset: int) -> list[int]:
        return list(self._require().args[offset].spec.shape)

    def get_data_type(self, offset: int) -> str:
        return self._require().args[offset].spec.dtype

    def get_arg_name(self, offset: int) -> str:
        return self._require().args[offset].name

    def new_request_context(self, stream=None) -> "RequestContext":
        return RequestContext(self, stream)

    # -- high level --------------------------------------------------------------------------------
    def run(self, *inputs) -> list:
        """Run once; returns every output as a list (torch tensors when the inputs were torch tensors)."""
        bm = self._require()
        ins = bm.inputs()
        if len(inputs) != len(ins):
            names = ", ".join(bm.args[i].name for i in ins)
            raise InputError(f"expected {len(ins)} inputs ({names}), got {len(inputs)}")
        req = self.new_request_context()
        for off, x in zip(ins, inputs):
            req.bind_arg(off, x)
        req.finish_io_binding()
        req.run()
        req.sync()
        outs = [req.get_arg(o) for o in bm.outputs()]
        req.release()
        if inputs and all(type(x).__module__.startswith("torch") for x in inputs):
            return _like_torch(outs)
        return outs

    def profile(self, *inputs, repeat: int = 10, warmup: int = 2) -> list[dict]:
        """Time every step: runs the artifact ``warmup + repeat`` times and returns one row per step (in program
        order) with its callee, backend, kernel, the StableHLO ops it came from, its operand shapes and the median
        microseconds it took. Where time goes is the first question when a model is slower than a peer."""
        bm = self._require()
        if repeat < 1:
            raise InputError(f"profile: repeat must be >= 1, got {repeat}")
        if len(inputs) != len(bm.inputs()):
            names = ", ".join(bm.args[i].name for i in bm.inputs())
            raise InputError(f"expected {len(bm.inputs())} inputs ({names}), got {len(inputs)}")
        # the report lists the compiled clusters in the order of the compute steps (view-only ones have no callee)
        computes = [c for c in bm.report.get("clusters", []) if c.get("callee")]
        req = self.new_request_context()
        for off, x in zip(bm.inputs(), inputs):
            req.bind_arg(off, x)
        req.finish_io_binding()
        times: list[list[float]] = [[] for _ in self._steps]
        try:
            for it in range(warmup + repeat):
                if it < warmup:
                    req.run()
                else:
                    req._run_timed(times)
        finally:
            req.release()
        rows = []
        n_compute = sum(1 for k, _, _ in self._steps if k == "compute")
        ci = 0
        for i, ((kind, _, s), ts) in enumerate(zip(self._steps, times)):
            ops: list[str] = []
            if kind == "compute":
                if len(computes) == n_compute:  # an artifact without its report has no op names
                    ops = list(computes[ci]["ops"])
                ci += 1
            rows.append({"step": i, "op": s.op, "callee": s.callee or "copy", "backend": s.backend or "runtime",
                         "kernel": s.kernel, "ops": ops,
                         "shapes": [list(bm.buffers[o].spec.shape) for o in s.operands],
                         "median_us": statistics.median(ts) * 1e6})
        return rows

    def __call__(self, *inputs):
        """Run once; one output comes back as itself, several as a tuple."""
        outs = self.run(*inputs)
        return outs[0] if len(outs) == 1 else tuple(outs)


class RequestContext:
    """One execution's bindings and arena. Requests on one Session may run concurrently."""

    def __init__(self, session: Session, stream=None):
        self.session = session
        self.stream = stream
        self.module = session._require()
        self._args: dict[int, np.ndarray] = dict(session._weights)
        self._bound = False
        self._workspace: list | None = None

    def bind_arg(self, offset: int, value) -> None:
        bm = self.module
        if not 0 <= offset < len(bm.args):
            raise InputError(f"argument offset {offset} is out of range (0..{len(bm.args) - 1})")
        a = bm.args[offset]
        if a.kind == "weight":
            raise InputError(f"argument {offset} ({a.name}) is a weight; the session binds it")
        if isinstance(value, int):
            buf = (ctypes.c_uint8 * a.spec.nbytes).from_address(value)
            arr = np.ctypeslib.as_array(buf).view(a.spec.np_dtype).reshape(a.spec.shape)
        else:
            arr = as_numpy(value)
        if tuple(arr.shape) != a.spec.shape or arr.dtype != a.spec.np_dtype:
            role = "input" if a.kind == "input" else "output"
            raise InputError(f"{role} argument {offset} ({a.name}): expected {a.spec.dtype} "
                             f"{list(a.spec.shape)}, got {arr.dtype} {list(arr.shape)}")
        if a.kind == "output":
            if not (arr.flags.c_contiguous and arr.flags.writeable):
                raise InputError(f"output argument {offset} ({a.name}) must be a writable C-contiguous array")
        elif not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        self._args[offset] = arr

    def finish_io_binding(self) -> None:
        bm = self.module
        unbound = [f"{i} ({a.name})" for i, a in enumerate(bm.args) if a.kind == "input" and i not in self._args]
        if unbound:
            raise InputError(f"inputs not bound: {', '.join(unbound)}")
        for i, a in enumerate(bm.args):
            if a.kind == "output" and i not in self._args:
                self._args[i] = np.empty(a.spec.shape, dtype=a.spec.np_dtype)
        if self._workspace is None:
            self._workspace = self.session._take_workspace()
        views = list(self._workspace)
        for b in self.session._arg_rooted:  # argument buffers, and views of them, change per request
            if b.kind == "arg":
                views[b.id] = self._args[b.arg]
            else:
                views[b.id] = _view(views[b.source], b)
        self._views = views
        self._bound = True

    def release(self) -> None:
        """Give the request's arena back to the session for the next request (the context is done)."""
        if self._workspace is not None:
            self.session._workspaces.put(self._workspace)
            self._workspace = None
            self._bound = False

    def run(self) -> None:
        if not self._bound:
            raise RuntimeError("call finish_io_binding() before run()")
        v = self._views
        for kind, fn, s in self.session._steps:
            if kind == "copy":
                copy_into(v[s.operands[1]], v[s.operands[0]])
            else:
                fn([v[o] for o, e in zip(s.operands, s.effects) if e == READ],
                   [v[o] for o, e in zip(s.operands, s.effects) if e == WRITE])

    def _run_timed(self, times: list) -> None:
        """:meth:`run`, appending each step's seconds to ``times[step]`` (kept apart: ``run`` is the hot path)."""
        v = self._views
        clock = time.perf_counter
        for (kind, fn, s), acc in zip(self.session._steps, times):
            t0 = clock()
            if kind == "copy":
                copy_into(v[s.operands[1]], v[s.operands[0]])
            else:
                fn([v[o] for o, e in zip(s.operands, s.effects) if e == READ],
                   [v[o] for o, e in zip(s.operands, s.effects) if e == WRITE])
            acc.append(clock() - t0)

    def sync(self) -> None:
        """Host execution is synchronous; kept for API compatibility with stream-based providers."""

    def get_arg(self, offset: int) -> np.ndarray:
        return self._args[offset]


def load(source, device: str = "cpu", *, expected_sha256: str | None = None) -> Session:
    """Load a ``.byre`` file, its bytes or an :class:`Artifact` into a ready :class:`Session`."""
    return Session(device).load(source, expected_sha256=expected_sha256)


__all__ = ["Session", "RequestContext", "load", "as_numpy"]
