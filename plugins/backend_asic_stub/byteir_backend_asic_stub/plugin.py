"""A vendor backend in one file: copy it, rename ``asic_stub``, and replace the two marked parts.

The "chip" here runs StableHLO dot_general and convolution. Its "compiler" packs each cluster into a blob
(header + the cluster as a StableHLO portable artifact); its "driver" checks the header and runs the payload on
a simulator, the StableHLO reference interpreter. Everything else the target does not claim falls back to
``cpu`` and then to the core's ``reference`` backend, so one artifact mixes two backends.
"""

from __future__ import annotations

import struct

from byteir_core import hookimpl
from byteir_core.errors import ProviderError
from byteir_core.interfaces import Backend, Cluster, CompiledCluster, Kernel, Provider
from byteir_core.interpreter import Interpreter  # the StableHLO interpreter, our "simulator"
from byteir_core.mlir import ir

# Step 2: say which plugin API this file was written for; another major version is refused, not crashed.
BYTEIR_PLUGIN_API = "1.0"

NAME = "asic_stub"
CALLEE = f"{NAME}.run"  # what a byre.compute op calls; the provider below implements it
BLOB_FORMAT = "asic-stub-blob"  # the kernel format name carried in the artifact
MAGIC, BLOB_VERSION = b"ASICSTB1", 1
HEADER = struct.Struct("<8sHHH")  # magic, blob version, number of inputs, number of outputs

# Step 3: decide what the chip runs. Claim only what compile() really handles.
CLAIMED_OPS = {"stablehlo.dot_general", "stablehlo.convolution"}
SUPPORTED_TYPES = {"f32", "f16", "i8", "i32"}


def _supported_type(t) -> bool:
    return isinstance(t, ir.RankedTensorType) and t.has_static_shape and str(t.element_type) in SUPPORTED_TYPES


class AsicStubBackend(Backend):
    name = NAME
    device = NAME
    fallback = ("cpu",)  # what this target does not claim goes to cpu, and then to reference
    description = "template vendor backend: dot_general and convolution on a simulated chip"

    # Step 4: claims(op) is asked for every op of @main: return a priority (higher wins) or None.
    # It must be fast and must not raise.
    def claims(self, op) -> int | None:
        if op.name not in CLAIMED_OPS:
            return None
        values = list(op.operands) + list(op.results)
        return 10 if all(_supported_type(v.type) for v in values) else None

    # Step 5: compile(cluster) turns a run of claimed ops into one kernel. The cluster holds a standalone
    # module whose @main takes cluster.inputs and returns cluster.outputs (TensorSpec: shape + dtype).
    # A real vendor calls its own compiler here. Raise with a clear message if something cannot be done:
    # the driver reports the cluster, its ops and their source locations.
    def compile(self, cluster: Cluster) -> CompiledCluster:
        header = HEADER.pack(MAGIC, BLOB_VERSION, len(cluster.inputs), len(cluster.outputs))
        blob = header + cluster.portable_artifact()  # <- replace: your compiler's binary
        return CompiledCluster(callee=CALLEE, kernel=Kernel(BLOB_FORMAT, blob, entry="main"),
                               attrs={"num_ops": len(cluster.op_names)})


class AsicStubProvider(Provider):
    name = NAME
    device = NAME
    callees = (CALLEE,)
    description = "runs asic-stub blobs on the simulator (the StableHLO interpreter)"

    def __init__(self):
        self._simulator = Interpreter()  # <- replace: your device driver

    # Step 6: load() is called once per byre.compute when a Session loads the artifact. Validate the blob
    # here (a bad artifact is a load-time error, not a crash mid-run) and return fn(inputs, outputs).
    def load(self, callee, kernel, attrs):
        if kernel is None or kernel.format != BLOB_FORMAT:
            raise ProviderError(f"{callee}: expected a {BLOB_FORMAT} kernel, got {kernel.format if kernel else None}")
        if len(kernel.data) < HEADER.size:
            raise ProviderError(f"{callee}: blob of {len(kernel.data)} bytes is shorter than its header")
        magic, version, n_in, n_out = HEADER.unpack_from(kernel.data)
        if magic != MAGIC:
            raise ProviderError(f"{callee}: blob magic {magic!r} is not {MAGIC!r}: not an {NAME} kernel")
        if version > BLOB_VERSION:
            raise ProviderError(f"{callee}: blob version {version} is newer than this driver's {BLOB_VERSION}")
        if version < 1:
            raise ProviderError(f"{callee}: blob version {version} is invalid (versions start at 1)")
        program = self._simulator.load(kernel.data[HEADER.size:], callee)  # <- replace: load onto the device

        # Step 7: fn reads the input buffers and writes the output buffers in place. Several requests may
        # call it at once from different threads: keep per-call state local (the simulator takes a lock).
        def run(inputs, outputs):
            if len(inputs) != n_in or len(outputs) != n_out:
                raise ProviderError(f"{callee}: kernel takes {n_in} inputs and {n_out} outputs, "
                                    f"got {len(inputs)} and {len(outputs)}")
            program(inputs, outputs)

        return run


# Step 8: register both through the hooks. The backend compiles; the provider runs. They are separate so
# that a machine that only runs artifacts never needs the compiler side.
@hookimpl
def byteir_register_backends(register):
    register(AsicStubBackend())


@hookimpl
def byteir_register_providers(register):
    register(AsicStubProvider())
