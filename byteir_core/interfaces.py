"""The objects a plugin registers through the hooks in :mod:`byteir_core.hookspecs`.

A plugin subclasses :class:`Frontend`, :class:`Backend` or :class:`Provider` (or builds a
:class:`PassGroup`) and hands instances to the ``register`` callable its hook receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .dtypes import TensorSpec, copy_into

#: The plugin API this core implements. A plugin module sets ``BYTEIR_PLUGIN_API = "1.0"``; a different
#: major version is refused (listed as ``incompatible``) and a missing one is assumed to be this version.
PLUGIN_API_VERSION = "1.0"

#: Stages a pass group can run in, in pipeline order.
STAGES = ("hlo", "linalg", "byre")


class Frontend:
    """Turns a model (a file path, an object, bytes) into a StableHLO module with an entry ``@main``.

    Frontends translate; they do not optimise (that is what pass groups are for).
    """

    name: str = ""
    description: str = ""
    #: The ``options`` keys this frontend reads, each with a one-line description. ``compile`` refuses any
    #: other key (``OptionError`` listing these), so a typo never passes silently. A frontend that lists
    #: ``input_shapes`` receives ``--input-shape`` / ``input_shapes=`` there too, to specialize before lowering.
    options: dict[str, str] = {}

    def accepts(self, model: Any) -> bool:
        """True when this frontend can read ``model``. Must be cheap and must not raise."""
        raise NotImplementedError

    def to_stablehlo(self, model: Any, example_inputs: Sequence[Any] | None, options: dict,
                     context) -> Any:
        """Return an ``ir.Module`` created in ``context`` (never in a context of your own).

        Raise :class:`byteir_core.errors.FrontendError` with the file, node or op that is wrong.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class PassGroup:
    """A named group of passes run at one stage, in ``order`` (lower first).

    Exactly one of ``pipeline`` (an MLIR textual pipeline nested under ``builtin.module``) or ``run`` (a
    Python callable taking the ``ir.Module`` and rewriting it in place) must be given.
    ``default`` groups run unless the user drops them; others only when named.
    """

    name: str
    stage: str
    order: int
    pipeline: str | None = None
    run: Callable[[Any], None] | None = None
    default: bool = True
    description: str = ""

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"pass group {self.name!r}: stage {self.stage!r} is not one of {STAGES}")
        if (self.pipeline is None) == (self.run is None):
            raise ValueError(f"pass group {self.name!r}: give exactly one of pipeline= or run=")


@dataclass(frozen=True)
class Kernel:
    """Code a backend produced for one cluster; carried inside the ByRE artifact as a resource.

    ``format`` says what ``data`` is: ``stablehlo-portable`` (a versioned StableHLO artifact),
    ``elf-shared-object``, ``ptx``, ``cubin``, or a vendor's own name. ``entry`` is the symbol to call.

    ``data`` may also be a :class:`concurrent.futures.Future` of those bytes: a backend that builds its code
    on a pool of threads returns at once, and the driver waits for every kernel (raising what a build raised,
    with the cluster named) before it writes the artifact. So a model's kernels build in parallel.
    """

    format: str
    data: bytes
    entry: str = "main"


@dataclass
class Cluster:
    """A connected piece of the program assigned to one backend.

    ``module`` is a standalone ``ir.Module`` whose ``@main`` takes ``inputs`` and returns ``outputs``
    (tensor semantics). ``op_names`` lists the ops it holds, in order.
    """

    name: str
    backend: str
    module: Any
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    op_names: list[str]
    #: Indices into ``inputs`` of the artifact's weights: their values never change while the artifact is
    #: loaded, so a provider may transform them once (prepack a GEMM's or convolution's weights).
    constant_inputs: tuple[int, ...] = ()

    def text(self) -> str:
        return str(self.module)

    def portable_artifact(self) -> bytes:
        """The cluster as a versioned StableHLO portable artifact (readable by later StableHLO)."""
        from .mlir import stablehlo_api

        return stablehlo_api.serialize_portable_artifact_str(
            str(self.module), stablehlo_api.get_current_version())


@dataclass
class CompiledCluster:
    """What :meth:`Backend.compile` returns: the runtime callee and the kernel it runs.

    ``attrs`` are extra string/int/float attributes put on the ``byre.compute`` op and handed back to the
    provider's :meth:`Provider.load`.
    """

    callee: str
    kernel: Kernel | None = None
    attrs: dict[str, str | int | float] = field(default_factory=dict)


class Backend:
    """Claims ops for a target and compiles clusters of them.

    - ``name`` is the backend's name; it is also a target name (``--target NAME``).
    - ``targets`` lists further targets this backend serves (e.g. a GEMM library backend joining ``cuda``).
    - ``fallback`` lists, in order, the targets that take the ops this target's backends do not claim. The
      built-in ``reference`` backend always ends every chain.
    - ``device`` is the runtime device its kernels run on (``cpu``, ``cuda``, a vendor's name).
    - ``max_cluster_ops`` caps how many consecutive ops one cluster holds.
    """

    name: str = ""
    device: str = "cpu"
    targets: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()
    description: str = ""
    #: The most ops one cluster may hold (None: no limit). A library-call backend that runs one op per kernel
    #: (a BLAS GEMM, say) sets 1.
    max_cluster_ops: int | None = None

    def claims(self, op) -> int | None:
        """Priority (higher wins) with which this backend takes ``op`` (an ``ir.Operation``), or None."""
        raise NotImplementedError

    def starts_cluster(self, op) -> bool:
        """Whether ``op`` (claimed by this backend) must begin a new cluster: a library backend that fuses an
        epilogue into each call (convolution + bias + ReLU) says yes for the library op, so each cluster is one
        call and the ops after it."""
        return False

    def compile(self, cluster: Cluster) -> CompiledCluster:
        raise NotImplementedError

    def serves(self) -> tuple[str, ...]:
        return (self.name, *self.targets)


KernelFn = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], None]


class DeviceMemory:
    """The memory of one runtime device: how the session allocates, views and moves its buffers.

    The runtime never looks inside a device array; it only hands arrays back to the memory that made them and
    to the device's providers. :class:`HostMemory` (NumPy) is the memory of device ``cpu``; a plugin whose
    chip has memory of its own returns its own subclass from :meth:`Provider.memory`.
    """

    device: str = "cpu"

    def allocate(self, nbytes: int) -> Any:
        """A flat byte buffer of ``nbytes`` on the device (the session's arenas, weights and staging buffers)."""
        raise NotImplementedError

    def view(self, buffer, byte_offset: int, spec: TensorSpec) -> Any:
        """A typed array (``spec.shape``, ``spec.np_dtype``) viewing ``buffer`` from ``byte_offset``, without
        copying; ``buffer`` is one :meth:`allocate` returned or itself a view."""
        raise NotImplementedError

    def from_host(self, host: np.ndarray, dst, stream=None) -> None:
        """Copy the host array ``host`` into the device array ``dst`` (equal nbytes), ordered on ``stream`` (the
        request's; None: finished before returning, as for weights at load time)."""
        raise NotImplementedError

    def to_host(self, src, stream=None) -> np.ndarray:
        """A new host array with ``src``'s shape and bytes, once the work queued on ``stream`` has written them. The session views it with the argument's element
        type, so a device library without that type (CuPy has no bfloat16) may return another of its width."""
        raise NotImplementedError

    def copy(self, src, dst, stream=None) -> None:
        """Copy between two arrays of this device (equal nbytes), ordered on ``stream`` (the request's)."""
        raise NotImplementedError

    def import_array(self, x, spec: TensorSpec) -> Any | None:
        """A zero-copy array of this device over the caller's object ``x`` (a CuPy array, a torch tensor on the
        device, any DLPack producer) when ``x`` lives on this device, else None (the session then uploads a
        host copy). The result must have ``spec``'s shape and dtype; the session checks."""
        return None

    def export(self, array, like, spec: TensorSpec | None = None) -> Any:
        """Hand the output ``array`` back in the caller's kind: ``like`` is one of the caller's inputs that
        :meth:`import_array` took (a torch tensor asks for a torch tensor back), or None; ``spec`` is the
        output's shape and element type."""
        return array

    def synchronize(self, stream) -> None:
        """Wait until the work queued on ``stream`` (None: the device's default stream) has finished."""


class HostMemory(DeviceMemory):
    """Host memory as NumPy arrays: the memory of device ``cpu``, and the default of every provider, so a
    simulator (or a chip that shares host memory) needs nothing more."""

    device = "cpu"

    def allocate(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, dtype=np.uint8)

    def view(self, buffer: np.ndarray, byte_offset: int, spec: TensorSpec) -> np.ndarray:
        raw = buffer.reshape(-1).view(np.uint8)[byte_offset:byte_offset + spec.nbytes]
        return raw.view(spec.np_dtype).reshape(spec.shape)

    def from_host(self, host: np.ndarray, dst: np.ndarray, stream=None) -> None:
        copy_into(dst, host)

    def to_host(self, src: np.ndarray, stream=None) -> np.ndarray:
        return np.array(src, copy=True)

    def copy(self, src: np.ndarray, dst: np.ndarray, stream=None) -> None:
        copy_into(dst, src)

    def import_array(self, x, spec: TensorSpec) -> np.ndarray | None:
        from .runtime.session import as_numpy  # the runtime's reading of NumPy, torch CPU and DLPack objects

        try:
            arr = as_numpy(x)
        except (TypeError, ValueError):  # not host memory (InputError is a ValueError: a torch CUDA tensor)
            return None
        return arr if arr.flags.c_contiguous else None  # a strided view: the session copies it (or refuses it)

    def export(self, array: np.ndarray, like, spec: TensorSpec | None = None) -> Any:
        if like is not None and type(like).__module__.startswith("torch"):
            from .runtime.session import like_torch

            return like_torch([array])[0]
        return array


class Provider:
    """Executes ByRE callees on a device.

    :meth:`load` is called once per ``byre.compute`` when a Session loads an artifact and returns a function
    ``fn(inputs, outputs)`` that reads the input buffers and writes the output buffers in place. That function
    may be called from several threads at once (one per request): keep per-call state local.

    The buffers are arrays of the provider's device, made by its :meth:`memory` (NumPy arrays for ``cpu``).
    """

    name: str = ""
    device: str = "cpu"
    callees: tuple[str, ...] = ()
    description: str = ""
    #: True when the fn returned by :meth:`load` takes a third argument, the request's stream (what the caller
    #: gave ``Session.new_request_context(stream)``, None by default): ``fn(inputs, outputs, stream)``.
    takes_stream: bool = False

    def open(self, device: str | None) -> "Provider":
        """Called once per Session for each provider the artifact uses, with the device the user asked for
        (None: as compiled; e.g. ``"cuda"``, or a variant such as ``"cuda-interpret"``). Returns the provider
        that loads this session's callees (default: ``self``). Raise :class:`~byteir_core.errors.ProviderError`
        with one line (``no CUDA driver / GPU found: ...``) when the device cannot be used."""
        return self

    def memory(self) -> DeviceMemory:
        """The memory of this provider's device (asked of the provider :meth:`open` returned). Providers of one
        device must agree on it: the session takes it from the first of them. Default: host memory."""
        return HostMemory()

    def load(self, callee: str, kernel: Kernel | None, attrs: dict) -> KernelFn:
        raise NotImplementedError

    def allocate(self, nbytes: int) -> np.ndarray:
        """A byte buffer of ``nbytes`` on this provider's device (host memory for ``cpu``).

        Kept for older providers; the session allocates through :meth:`memory`."""
        return np.empty(nbytes, dtype=np.uint8)
