"""The runtime (BRT): load a ByRE artifact, bind inputs, run the steps through providers.

Every buffer lives on one device; each device's memory (a :class:`~byteir_core.interfaces.DeviceMemory`, NumPy
for the host) comes from the provider that runs that device's steps. The runtime never imports the compiler.
Loading an artifact that carries native code is running that code: load only artifacts you trust, and pin them
with ``expected_sha256`` (``byteir inspect`` prints it).
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
from ..byre.format import HOST, READ, WRITE, ByreModule, Step
from ..dtypes import copy_into
from ..errors import InputError, ProviderError
from ..interfaces import DeviceMemory, HostMemory, Provider
from ..plugins import get_registry
from . import debug

HOST_MEMORY = HostMemory()


class _Unreadable(Exception):
    """``x`` is not a host array: ``what`` it is, and ``why`` not (what to do instead)."""

    def __init__(self, what: str, why: str):
        super().__init__(f"{what}: {why}")
        self.what, self.why = what, why


#: DLPack device types (DLDeviceType) by number, to name a foreign array's device.
_DLPACK_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi", 10: "rocm",
                   11: "rocm_host", 12: "ext_dev", 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon",
                   17: "maia"}
_ON_THE_HOST = "this argument lives on the host: copy it there first (torch: x.cpu(), CuPy: x.get())"


def _from_torch(x) -> np.ndarray:
    import torch

    if x.dtype is not torch.bfloat16:
        # The common case, a dense CPU tensor: Tensor.numpy() is the zero-copy view DLPack gives, in a quarter of
        # the time (1.2 against 4.2 us; a training step binds ~90 tensors). It refuses what it cannot view (on a
        # GPU, sparse, conjugate or negative bit, a dtype NumPy lacks): those take the checks below.
        try:
            return x.detach().numpy()
        except (TypeError, RuntimeError):
            pass
    if x.device.type != "cpu":
        raise _Unreadable(f"a torch tensor on {x.device}", _ON_THE_HOST)
    if x.layout != torch.strided:
        raise _Unreadable(f"a torch tensor of layout {x.layout}", "pass a dense tensor (x.to_dense())")
    x = x.detach().resolve_conj().resolve_neg()  # a lazily negated/conjugated view: its data is not its value
    try:
        if x.dtype == torch.bfloat16:
            return np.from_dlpack(x.contiguous().view(torch.int16)).view(ml_dtypes.bfloat16)
        return np.from_dlpack(x)
    except (BufferError, TypeError, RuntimeError) as e:
        raise _Unreadable(f"a torch {str(x.dtype).removeprefix('torch.')} tensor", f"not readable as an array ({e})")


def _read_host(x: Any) -> np.ndarray:
    """:func:`as_numpy`, raising :class:`_Unreadable` for what is not a host array."""
    if x is None:
        raise _Unreadable("None", "pass an array")
    if isinstance(x, np.ndarray):
        if type(x) is np.ndarray:
            return x
        if isinstance(x, np.ma.MaskedArray) and np.ma.is_masked(x):
            raise _Unreadable("a masked array with masked elements", "fill them first (x.filled(value))")
        return np.asarray(x)  # subclasses as plain arrays (np.matrix stays 2-d when reshaped)
    if type(x).__module__.startswith("torch"):
        return _from_torch(x)
    device = getattr(x, "__dlpack_device__", None)
    if device is not None:
        try:
            kind, index = device()
        except Exception:  # noqa: BLE001 -- a broken producer: try the other protocols
            kind = 1
        if int(kind) != 1:
            name = _DLPACK_DEVICES.get(int(kind), f"DLPack device type {int(kind)}")
            raise _Unreadable(f"a {type(x).__name__} on {name}:{index}", _ON_THE_HOST)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError):
            pass
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:  # a ragged list, an object NumPy cannot read
        raise _Unreadable(f"a {type(x).__name__}", f"not readable as an array ({e})") from None
    if arr.dtype.kind not in "biufc" and arr.dtype != ml_dtypes.bfloat16:
        raise _Unreadable(f"a {type(x).__name__}" + (f" of {arr.dtype}" if arr.dtype.kind != "O" else ""),
                          "not a numeric array")
    return arr


def as_numpy(x: Any) -> np.ndarray:
    """A NumPy view of ``x`` (NumPy, torch, any DLPack or array-interface producer), zero-copy when possible.
    Raises InputError for what is not a numeric array on the host (None, a GPU tensor, a list of strings)."""
    try:
        return _read_host(x)
    except _Unreadable as e:
        raise InputError(str(e)) from None


def like_torch(arrays: list) -> list:
    """Host arrays as torch CPU tensors (zero-copy; bf16 through its bits); anything else is left as it is."""
    import torch

    out = []
    for a in arrays:
        if not isinstance(a, np.ndarray):
            out.append(a)
        elif a.dtype == ml_dtypes.bfloat16:
            out.append(torch.from_numpy(a.view(np.int16)).view(torch.bfloat16))
        else:
            out.append(torch.from_numpy(a))
    return out


def _provider_call(provider: Provider, what: str, call):
    """``call()``, a provider's failure turned into a ProviderError naming the provider and what it was doing."""
    try:
        return call()
    except ProviderError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ProviderError(f"provider {provider.name!r} failed to {what}: {type(e).__name__}: {e}") from e


class _Workspace:
    """One request's arenas and buffer views (and its host-bound arguments' device copies), pooled per session."""

    __slots__ = ("views", "arenas", "staging")

    def __init__(self, views: list, arenas: dict):
        self.views = views
        self.arenas = arenas  # kept alive with the views
        self.staging: dict[int, Any] = {}  # argument offset -> device array a host binding is copied through


class Session:
    """A loaded artifact. ``Session.__call__(*inputs)`` is the high-level API; the rest mirrors ByteIR's BRT.

    ``device`` None runs the artifact on the devices it was compiled for; a device name (or a provider's variant
    of one, e.g. ``"cuda-interpret"``) is handed to each provider's :meth:`~Provider.open`.
    """

    def __init__(self, device: str | None = None):
        self.device = device
        self.module: ByreModule | None = None
        self.artifact: Artifact | None = None
        self._weights: dict[int, Any] = {}
        self._steps: list = []
        self._memories: dict[str, DeviceMemory] = {HOST: HOST_MEMORY}
        self._device_memories: list[DeviceMemory] = []  # every memory but the host's: what sync() waits for
        self._lean = True  # host only: run() is the plain loop

    # -- loading -----------------------------------------------------------------------------------
    def load(self, source, expected_sha256: str | None = None) -> "Session":
        art = read_artifact(source, expected_sha256=expected_sha256)
        bm = art.module
        where = art.path or "<artifact>"
        registry = get_registry()
        self._check_device(bm, registry, where)
        providers = self._open_providers(bm, registry, where)
        memories = self._open_memories(bm, providers, registry, where)
        steps = [self._copy_step(bm, s, memories) if s.op == "copy" else
                 self._compute_step(bm, s, providers[s.callee]) for s in bm.steps]
        arg_devices = bm.arg_devices()
        self._weights = {}
        for i, a in enumerate(bm.args):
            if a.kind == "weight":  # uploaded once, shared by every request
                w = np.frombuffer(bm.weights[a.weight], dtype=a.spec.np_dtype).reshape(a.spec.shape)
                if arg_devices[i] != HOST:
                    mem = memories[arg_devices[i]]
                    host, w = w, mem.view(mem.allocate(max(a.spec.nbytes, 1)), 0, a.spec)
                    mem.from_host(host, w)
                self._weights[i] = w
        self.module, self.artifact, self._steps = bm, art, steps
        self._memories = memories
        self._device_memories = [memories[d] for d in bm.devices() if d != HOST]
        self._lean = not self._device_memories and all(kind in ("copy", "compute") for kind, _, _ in steps)
        self._poison = debug.poison_enabled()  # BYTEIR_POISON: arenas filled with NaNs before each run
        self._arg_devices = arg_devices
        self._step_memories = [tuple({id(memories[bm.buffers[o].device]): memories[bm.buffers[o].device]
                                      for o in s.operands if bm.buffers[o].device != HOST}.values())
                               for s in bm.steps]  # what profile() waits for around each step
        rooted: set[int] = set()
        for b in bm.buffers:
            if b.kind == "arg" or (b.kind == "alias" and b.source in rooted):
                rooted.add(b.id)
        self._arg_rooted = [b for b in bm.buffers if b.id in rooted]
        self._workspaces: queue.SimpleQueue = queue.SimpleQueue()
        return self

    def _check_device(self, bm: ByreModule, registry, where: str) -> None:
        """The device asked for must be installed and be one the artifact was compiled for."""
        if self.device is None:
            return
        known = {HOST} | {p.device for p in registry.providers.values()}
        base = next((d for d in sorted(known, key=len, reverse=True)
                     if self.device == d or self.device.startswith(d + "-")), None)
        if base is None:
            raise ProviderError(f"device {self.device!r} has no installed provider; devices: "
                                f"{', '.join(sorted(known))}")
        compiled = [d for d in bm.devices() if d != HOST] or [HOST]
        if base not in compiled:
            raise ProviderError(f"{where}: device {self.device!r} was asked for, but the artifact was compiled for "
                                f"{', '.join(compiled)} (target {bm.manifest.get('target', '?')}); compile it for "
                                f"that device, or load it with device=None")

    def _open_providers(self, bm: ByreModule, registry, where: str) -> dict[str, Provider]:
        """callee -> the opened provider that loads it; every callee nobody provides is named at once."""
        opened: dict[str, Provider] = {}
        by_callee: dict[str, Provider] = {}
        missing: list[Step] = []
        for s in bm.steps:
            if s.op != "compute" or s.callee in by_callee:
                continue
            provider = registry.callee_provider.get(s.callee)
            if provider is None:
                missing.append(s)
                continue
            device = bm.step_device(s)
            if bm.version != "1.0" and provider.device != device:  # ByRE 1.0 put every buffer on the host
                raise ProviderError(f"{where}: callee {s.callee!r} runs on device {provider.device!r} (provider "
                                    f"{provider.name!r}), but the artifact puts its operands on {device!r}")
            if provider.name not in opened:
                opened[provider.name] = _provider_call(provider, f"open device {self.device}",
                                                        lambda p=provider: p.open(self.device))
            by_callee[s.callee] = opened[provider.name]
        if missing:
            made_with = bm.manifest.get("backends", {})
            lines = []
            for s in {m.callee: m for m in missing}.values():
                dist = made_with.get(s.backend, "?")
                hint = (f"install {dist.split()[0]} (the artifact was compiled with {dist})" if dist != "?"
                        else f"install the plugin that provides backend {s.backend!r}")
                lines.append(f"callee {s.callee!r} (compiled by backend {s.backend!r}): no installed provider; {hint}")
            raise ProviderError(f"{where}: " + "; ".join(lines))
        return by_callee

    def _open_memories(self, bm: ByreModule, providers: dict[str, Provider], registry,
                       where: str) -> dict[str, DeviceMemory]:
        """device -> its memory: the host's, else that of the first provider running a step there."""
        memories: dict[str, DeviceMemory] = {HOST: HOST_MEMORY}
        for s in bm.steps:
            device = bm.step_device(s) if s.op == "compute" else HOST
            if device not in memories:
                p = providers[s.callee]
                memories[device] = _provider_call(p, "give its device memory", p.memory)
        for device in bm.devices():  # a device holding only arguments or copies (no step runs there)
            if device not in memories:
                p = next((p for p in registry.providers.values() if p.device == device), None)
                if p is None:
                    raise ProviderError(f"{where}: buffers live on device {device!r}, but no installed provider "
                                        f"runs that device (target {bm.manifest.get('target', '?')})")
                p = _provider_call(p, f"open device {self.device}", lambda p=p: p.open(self.device))
                memories[device] = _provider_call(p, "give its device memory", p.memory)
        return memories

    @staticmethod
    def _compute_step(bm: ByreModule, s: Step, provider: Provider) -> tuple:
        kernel = bm.kernels[s.kernel].kernel if s.kernel else None
        fn = _provider_call(provider, f"load callee {s.callee!r} (kernel {s.kernel})",
                            lambda: provider.load(s.callee, kernel, dict(s.attrs)))
        return ("stream" if provider.takes_stream else "compute", fn, s)

    @staticmethod
    def _copy_step(bm: ByreModule, s: Step, memories: dict[str, DeviceMemory]) -> tuple:
        """("copy", None, s) between host buffers (the plain loop's case), else ("transfer", fn(src, dst), s)."""
        src, dst = bm.buffers[s.operands[0]].device, bm.buffers[s.operands[1]].device
        if src == dst == HOST:
            return ("copy", None, s)
        smem, dmem = memories[src], memories[dst]
        # each transfer is fn(src, dst, stream): ordered on the request's stream like the kernels around it
        if src == dst:
            return ("transfer", smem.copy, s)
        if src == HOST:
            return ("transfer", dmem.from_host, s)
        if dst == HOST:
            return ("transfer", lambda a, b, stream: copy_into(b, smem.to_host(a, stream)), s)
        return ("transfer", lambda a, b, stream: dmem.from_host(smem.to_host(a, stream), b, stream), s)  # via host

    def _take_workspace(self) -> "_Workspace":
        """Arenas (one per device) and the views into them of every intermediate buffer, reused across requests."""
        try:
            return self._workspaces.get_nowait()
        except queue.Empty:
            pass
        bm = self.module
        mems = self._memories
        arenas = {d: mems[d].allocate(max(n, 1)) for d, n in bm.all_arenas().items()}
        views: list = [None] * len(bm.buffers)
        for b in bm.buffers:
            if b.kind == "alloc":
                views[b.id] = mems[b.device].view(arenas[b.device], b.arena_offset, b.spec)
            elif b.kind == "alias" and views[b.source] is not None:
                views[b.id] = mems[b.device].view(views[b.source], b.byte_offset, b.spec)
        return _Workspace(views, arenas)

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
            if isinstance(x, _PYTHON_VALUES):  # a value here; bind_arg would take an int for a raw pointer
                x = _python_value(off, bm.args[off], x)
            req.bind_arg(off, x)
        req.finish_io_binding()
        req.run()
        req.sync()
        outs = [req.get_arg(o) for o in bm.outputs()]
        like = req._imported[0] if req._imported else None  # the first device object the caller passed
        req.release()
        if not self._lean:
            outs = [self._to_caller(o, x, like) for o, x in zip(bm.outputs(), outs)]
        if inputs and all(type(x).__module__.startswith("torch") for x in inputs):
            return like_torch(outs)
        return outs

    def _to_caller(self, offset: int, x, like):
        """An output on a device goes back in the caller's kind when the caller passed device objects, else to
        the host (NumPy in, NumPy out)."""
        device = self._arg_devices[offset]
        if device == HOST:
            return x
        mem = self._memories[device]
        spec = self.module.args[offset].spec
        if like is not None:
            return mem.export(x, like, spec)
        return np.asarray(mem.to_host(x)).view(spec.np_dtype).reshape(spec.shape)

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
            if isinstance(x, _PYTHON_VALUES):
                x = _python_value(off, bm.args[off], x)
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
        n_compute = sum(1 for s in bm.steps if s.op == "compute")
        ci = 0
        for i, ((kind, _, s), ts) in enumerate(zip(self._steps, times)):
            ops: list[str] = []
            callee = s.callee
            if s.op == "compute":
                if len(computes) == n_compute:  # an artifact without its report has no op names
                    ops = list(computes[ci]["ops"])
                ci += 1
            else:
                src, dst = (bm.buffers[o].device for o in s.operands)
                callee = "copy" if src == dst else f"copy {src}->{dst}"
            rows.append({"step": i, "op": s.op, "callee": callee, "backend": s.backend or "runtime",
                         "kernel": s.kernel, "ops": ops,
                         "shapes": [list(bm.buffers[o].spec.shape) for o in s.operands],
                         "median_us": statistics.median(ts) * 1e6})
        return rows

    def __call__(self, *inputs, **named):
        """Run once and return what the model returns: its own structure (tensor, tuple, dict, dataclass) when
        the frontend recorded it, else one output as itself and several as a tuple. Inputs may be given by
        name (the artifact's input names, ``byteir inspect`` lists them)."""
        if named:
            inputs = self._by_name(inputs, named)
        outs = self.run(*inputs)
        tree = self._require().structure.get("outputs")
        if tree is not None:
            from .structure import rebuild

            return rebuild(tree, outs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _by_name(self, inputs: tuple, named: dict) -> tuple:
        bm = self._require()
        names = [bm.args[i].name for i in bm.inputs()]
        unknown = [k for k in named if k not in names]
        if unknown:
            raise InputError(f"unknown input name(s) {unknown}; the artifact's inputs are {names}")
        given = dict(zip(names, inputs))
        twice = [k for k in named if k in given]
        if twice:
            raise InputError(f"input(s) {twice} given both by position and by name")
        given.update(named)
        missing = [n for n in names if n not in given]
        if missing:
            raise InputError(f"missing input(s) {missing}; the artifact's inputs are {names}")
        return tuple(given[n] for n in names)


class RequestContext:
    """One execution's bindings and arenas. Requests on one Session may run concurrently.

    ``stream`` is handed to providers that take one (:attr:`Provider.takes_stream`) and waited for by
    :meth:`sync`; it means nothing on the host."""

    def __init__(self, session: Session, stream=None):
        self.session = session
        self.stream = stream
        self.module = session._require()
        self._args: dict[int, Any] = dict(session._weights)
        self._bound = False
        self._workspace: _Workspace | None = None
        self._imported: list = []  # caller objects a device took zero-copy: outputs go back in their kind
        self._host_outputs: dict[int, np.ndarray] = {}  # device outputs the caller bound host arrays to

    def bind_arg(self, offset: int, value) -> None:
        """Bind an input or output argument: an array (NumPy, torch, DLPack, or the argument's device's own kind,
        taken zero-copy), a raw host pointer (int), or a Python float/list/tuple of the argument's shape (inputs).
        Binding again after :meth:`finish_io_binding` rebinds for the next :meth:`run`."""
        bm = self.module
        if type(offset) is not int:
            if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)):
                raise InputError(f"argument offset must be an int (get_input_arg_offsets() lists them), got "
                                 f"{type(offset).__name__} {offset!r}")
            offset = int(offset)
        if not 0 <= offset < len(bm.args):
            raise InputError(f"argument offset {offset} is out of range (0..{len(bm.args) - 1})")
        a = bm.args[offset]
        if a.kind == "weight":
            raise InputError(f"argument {offset} ({a.name}) is a weight; the session binds it")
        if type(value) is not np.ndarray:
            if isinstance(value, (bool, np.bool_)) or (isinstance(value, _PYTHON_VALUES)
                                                        and not isinstance(value, int)):
                value = _python_value(offset, a, value)
            elif isinstance(value, int):
                _check_pointer(offset, a, value)
        device = self.session._arg_devices[offset]
        if device == HOST:
            self._args[offset] = _host_argument(offset, a, value)
        else:
            self._bind_on_device(offset, a, device, value)
        if self._bound:  # the views of the finished binding follow the new argument
            self._bind_views()

    def _bind_on_device(self, offset: int, a, device: str, value) -> None:
        """The device's own array zero-copy; else a host array copied through a device buffer: uploaded now for
        an input, downloaded after :meth:`run` for an output."""
        mem = self.session._memories[device]
        self._host_outputs.pop(offset, None)
        declared = _declared(value)
        if declared is not None and declared != (a.spec.np_dtype, a.spec.shape):
            # before the device takes it: an import may view or reshape it into the argument's type
            raise _mismatch(offset, a, *declared)
        arr = None if isinstance(value, int) else mem.import_array(value, a.spec)
        if arr is not None:
            try:
                dtype = np.dtype(arr.dtype)
            except TypeError:
                dtype = arr.dtype
            if tuple(arr.shape) != a.spec.shape or dtype != a.spec.np_dtype:
                raise _mismatch(offset, a, dtype, arr.shape)
            if a.kind == "output" and isinstance(arr, np.ndarray) and not arr.flags.writeable:
                raise InputError(f"output argument {offset} ({a.name}) must be a writable C-contiguous array")
            self._args[offset] = arr
            self._imported.append(value)
            return
        host = _host_argument(offset, a, value)
        staging = self._staging(offset, a, mem)
        if a.kind == "input":
            mem.from_host(host, staging, self.stream)
        else:
            self._host_outputs[offset] = host
        self._args[offset] = staging

    def _staging(self, offset: int, a, mem: DeviceMemory):
        ws = self._take_workspace()
        buf = ws.staging.get(offset)
        if buf is None:
            buf = ws.staging[offset] = mem.view(mem.allocate(max(a.spec.nbytes, 1)), 0, a.spec)
        return buf

    def _take_workspace(self) -> _Workspace:
        if self._workspace is None:
            self._workspace = self.session._take_workspace()
        return self._workspace

    def finish_io_binding(self) -> None:
        bm = self.module
        unbound = [f"{i} ({a.name})" for i, a in enumerate(bm.args) if a.kind == "input" and i not in self._args]
        if unbound:
            raise InputError(f"inputs not bound: {', '.join(unbound)}")
        mems = self.session._memories
        for i, a in enumerate(bm.args):
            if a.kind == "output" and i not in self._args:  # a fresh buffer: it is handed to the caller
                device = self.session._arg_devices[i]
                if device == HOST:
                    self._args[i] = np.empty(a.spec.shape, dtype=a.spec.np_dtype)
                else:
                    self._args[i] = mems[device].view(mems[device].allocate(max(a.spec.nbytes, 1)), 0, a.spec)
        self._bind_views()
        self._bound = True

    def _bind_views(self) -> None:
        mems = self.session._memories
        views = list(self._take_workspace().views)
        for b in self.session._arg_rooted:  # argument buffers, and views of them, change per request
            if b.kind == "arg":
                views[b.id] = self._args[b.arg]
            else:
                views[b.id] = mems[b.device].view(views[b.source], b.byte_offset, b.spec)
        self._views = views

    def release(self) -> None:
        """Give the request's arenas back to the session for the next request (the context is done)."""
        if self._workspace is not None:
            self.session._workspaces.put(self._workspace)
            self._workspace = None
            self._bound = False

    def run(self) -> None:
        if not self._bound:
            raise RuntimeError("call finish_io_binding() before run()")
        if self.session._poison:
            debug.poison_request(self)
        if not self.session._lean:
            return self._run_on_devices()
        v = self._views
        for kind, fn, s in self.session._steps:
            if kind == "copy":
                copy_into(v[s.operands[1]], v[s.operands[0]])
            else:
                fn([v[o] for o, e in zip(s.operands, s.effects) if e == READ],
                   [v[o] for o, e in zip(s.operands, s.effects) if e == WRITE])

    def _run_on_devices(self) -> None:
        """:meth:`run` for artifacts with device buffers or stream-taking providers (the host-only loop stays lean)."""
        v = self._views
        for kind, fn, s in self.session._steps:
            self._step(kind, fn, s, v)
        self._download_host_outputs()

    def _step(self, kind: str, fn, s, v: list) -> None:
        if kind == "copy":
            copy_into(v[s.operands[1]], v[s.operands[0]])
        elif kind == "transfer":
            fn(v[s.operands[0]], v[s.operands[1]], self.stream)
        else:
            ins = [v[o] for o, e in zip(s.operands, s.effects) if e == READ]
            outs = [v[o] for o, e in zip(s.operands, s.effects) if e == WRITE]
            if kind == "stream":
                fn(ins, outs, self.stream)
            else:
                fn(ins, outs)

    def _download_host_outputs(self) -> None:
        if self._host_outputs:
            self.sync()
            for offset, host in self._host_outputs.items():
                mem = self.session._memories[self.session._arg_devices[offset]]
                copy_into(host, mem.to_host(self._args[offset], self.stream))

    def _run_timed(self, times: list) -> None:
        """:meth:`run`, appending each step's seconds to ``times[step]`` (kept apart: ``run`` is the hot path).
        A step on a device is timed from an idle device to its own end: synchronized before and after."""
        v = self._views
        clock = time.perf_counter
        stream = self.stream
        for (kind, fn, s), acc, mems in zip(self.session._steps, times, self.session._step_memories):
            for m in mems:
                m.synchronize(stream)
            t0 = clock()
            self._step(kind, fn, s, v)
            for m in mems:
                m.synchronize(stream)
            acc.append(clock() - t0)
        self._download_host_outputs()

    def sync(self) -> None:
        """Wait for the request's work on every device (host execution is synchronous: nothing to wait for)."""
        for m in self.session._device_memories:
            m.synchronize(self.stream)

    def get_arg(self, offset: int):
        """The argument's array: a bound or fresh output, on its device (a host array bound to a device output
        is filled by :meth:`run`)."""
        host = self._host_outputs.get(offset)
        return self._args[offset] if host is None else host


def _role(a) -> str:
    return "input" if a.kind == "input" else "output"


def _expected(offset: int, a) -> str:
    return f"{_role(a)} argument {offset} ({a.name}): expected {a.spec.dtype} {list(a.spec.shape)}"


def _mismatch(offset: int, a, dtype, shape) -> InputError:
    return InputError(f"{_expected(offset, a)}, got {dtype} {list(shape)}")


#: Python values a session takes for an input of that shape (a scalar for a rank-0 input, nested lists).
_PYTHON_VALUES = (bool, int, float, list, tuple)
_FLOAT_TYPES = ("f16", "bf16", "f32", "f64")


def _python_value(offset: int, a, value) -> np.ndarray:
    """A Python scalar or (nested) list/tuple as an array of the argument's type, when its values convert
    without loss of kind: bools and ints into float inputs, bools and ints that fit into integer inputs, bools
    into i1. Floats into an integer input, or anything into an output, is an InputError."""
    kind = type(value).__name__
    if a.kind != "input":
        raise InputError(f"{_expected(offset, a)} (a writable C-contiguous array), got a Python {kind}")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{_expected(offset, a)}, got a Python {kind} that is not an array ({e})") from None
    got = f"a Python {kind} of {arr.dtype} {list(arr.shape)}"
    if arr.shape != a.spec.shape:
        raise InputError(f"{_expected(offset, a)}, got {got}")
    want, dtype = a.spec.np_dtype, a.spec.dtype
    if dtype in _FLOAT_TYPES:
        ok = arr.dtype.kind in "biuf"
    elif dtype == "i1":
        ok = arr.dtype.kind == "b"
    else:
        info = np.iinfo(want)
        ok = arr.dtype.kind in "biu" and (arr.size == 0 or (info.min <= arr.min() and arr.max() <= info.max))
    if not ok:
        raise InputError(f"{_expected(offset, a)}, got {got} (its values do not convert to {dtype}; pass an array "
                         f"of that type)")
    return arr.astype(want)


def _check_pointer(offset: int, a, value: int) -> None:
    """An int bound to an argument is a raw host address: refuse what cannot be one (a scalar meant as a value
    would be read as an address and crash the process)."""
    if not 4096 <= value < 2 ** 64:
        raise InputError(f"{_expected(offset, a)}, got the int {value}: an int is a raw host pointer here, and "
                         f"{value} is not an address; pass np.array({value}) for a value")


def _declared(value):
    """(NumPy dtype, shape) an array-like object declares (torch, CuPy, ...), or None when it declares none."""
    if isinstance(value, int) or not hasattr(value, "shape") or not hasattr(value, "dtype"):
        return None
    try:
        shape = tuple(int(n) for n in value.shape)
        dtype = value.dtype
        if type(value).__module__.startswith("torch"):
            name = str(dtype).removeprefix("torch.")
            dtype = ml_dtypes.bfloat16 if name == "bfloat16" else name
        return np.dtype(dtype).newbyteorder("="), shape  # the host path converts the other byte order
    except (TypeError, ValueError):  # a dtype NumPy does not name: the import decides
        return None


def _host_argument(offset: int, a, value) -> np.ndarray:
    """``value`` as a host array of the argument's shape and dtype (an int is a raw host pointer). Inputs that are
    strided, misaligned or in the other byte order are copied; outputs must be writable C-contiguous arrays."""
    if type(value) is np.ndarray:  # the common case, kept short: bind_arg is on every request's path
        arr = value
    elif isinstance(value, int):
        buf = (ctypes.c_uint8 * a.spec.nbytes).from_address(value)
        arr = np.ctypeslib.as_array(buf).view(a.spec.np_dtype).reshape(a.spec.shape)
    else:
        try:
            arr = _read_host(value)
        except _Unreadable as e:
            raise InputError(f"{_expected(offset, a)}, got {e.what}: {e.why}") from None
    spec = a.spec
    if arr.dtype != spec.np_dtype or arr.shape != spec.shape:
        if a.kind == "input" and arr.dtype.newbyteorder("=") == spec.np_dtype:
            arr = arr.astype(spec.np_dtype)  # the same type in the other byte order
        if arr.shape != spec.shape or arr.dtype != spec.np_dtype:
            raise _mismatch(offset, a, arr.dtype, arr.shape)
    flags = arr.flags
    if a.kind == "output":
        if not (flags.c_contiguous and flags.writeable and flags.aligned):
            raise InputError(f"output argument {offset} ({a.name}) must be a writable, aligned, C-contiguous array")
    elif not (flags.c_contiguous and flags.aligned):
        arr = np.require(arr, requirements="CA")
    return arr


def load(source, device: str | None = None, *, expected_sha256: str | None = None) -> Session:
    """Load a ``.byre`` file, its bytes or an :class:`Artifact` into a ready :class:`Session`."""
    return Session(device).load(source, expected_sha256=expected_sha256)


__all__ = ["Session", "RequestContext", "load", "as_numpy", "like_torch"]
