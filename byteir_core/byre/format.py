"""ByRE 1.2: the compiler's output and the runtime's input (see docs/byre.md).

In memory a ByRE program is a :class:`ByreModule` (plain Python data, no MLIR objects). On disk it is one
MLIR module -- bytecode (``.byre``) or text (``.byre.mlir``), behind a header or first line that holds the
version and a sha256 of the rest (:mod:`.container`) -- holding ``byre.kernel`` and ``byre.weight``
ops whose payloads are byte tensors, and an entry ``func.func`` whose body is a list of ``memref.alloc``,
``byre.alias``, ``byre.compute`` and ``byre.copy`` ops over memref arguments. Every buffer lives on one
device (``byre.device``, absent meaning ``cpu``); each device has its own per-request arena.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import TensorSpec
from ..interfaces import Kernel

BYRE_VERSION = "1.2"
HOST = "cpu"
ARG_KINDS = ("input", "output", "weight")
READ, WRITE = 1, 2


@dataclass
class Arg:
    name: str
    kind: str  # input | output | weight
    spec: TensorSpec
    weight: str | None = None  # symbol of the byre.weight that holds its value (kind == weight)


@dataclass
class Buffer:
    """A memref in the entry function: an argument, an arena allocation or an alias (view) of another."""

    id: int
    spec: TensorSpec
    kind: str  # arg | alloc | alias
    arg: int | None = None  # kind == arg: argument index
    arena_offset: int | None = None  # kind == alloc: byte offset in the request arena
    source: int | None = None  # kind == alias: buffer viewed
    byte_offset: int = 0  # kind == alias: offset into the source, in bytes
    device: str = HOST  # the runtime device whose memory holds it (an alias: its source's)


@dataclass
class Step:
    op: str  # compute | copy
    operands: list[int]  # buffer ids
    callee: str = ""
    kernel: str | None = None
    effects: list[int] = field(default_factory=list)  # READ/WRITE per operand (compute)
    backend: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class KernelEntry:
    name: str
    backend: str
    kernel: Kernel


@dataclass
class ByreModule:
    args: list[Arg]
    buffers: list[Buffer]
    steps: list[Step]
    kernels: dict[str, KernelEntry]
    weights: dict[str, bytes]
    arena_bytes: int = 0  # the host ("cpu") arena, as in ByRE 1.0
    arenas: dict[str, int] = field(default_factory=dict)  # device -> arena bytes, every device with allocations
    manifest: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    version: str = BYRE_VERSION
    #: How the flat outputs map back onto what the model returned (tuple, dict, dataclass, ...): see
    #: :mod:`byteir_core.runtime.structure`. Empty: one output comes back as itself, several as a tuple.
    structure: dict[str, Any] = field(default_factory=dict)

    def payload_digest(self) -> str:
        """sha256 over every kernel and weight payload, stored in the file to detect silent corruption."""
        h = hashlib.sha256()
        for name in sorted(self.kernels):
            h.update(name.encode() + b"\0" + self.kernels[name].kernel.data)
        for name in sorted(self.weights):
            h.update(name.encode() + b"\0" + self.weights[name])
        return h.hexdigest()

    def inputs(self) -> list[int]:
        return [i for i, a in enumerate(self.args) if a.kind == "input"]

    def outputs(self) -> list[int]:
        return [i for i, a in enumerate(self.args) if a.kind == "output"]

    def arg_devices(self) -> list[str]:
        """The device of each entry argument, by argument index."""
        devices = [HOST] * len(self.args)
        for b in self.buffers:
            if b.kind == "arg":
                devices[b.arg] = b.device
        return devices

    def devices(self) -> list[str]:
        """Every device a buffer lives on, host first."""
        return sorted({b.device for b in self.buffers} | {HOST}, key=lambda d: (d != HOST, d))

    def step_device(self, step: Step) -> str:
        """Where a compute step runs: the device of its operands (all on one, verified when read)."""
        return self.buffers[step.operands[0]].device if step.operands else HOST

    def all_arenas(self) -> dict[str, int]:
        """``arenas`` with the host entry taken from ``arena_bytes`` (the one field ByRE 1.0 code sets)."""
        rest = {d: n for d, n in self.arenas.items() if d != HOST}
        return {HOST: self.arena_bytes, **rest} if self.arena_bytes else rest


# ---------------------------------------------------------------------------------------------------
# Attribute text helpers


def _q(s: str) -> str:
    return json.dumps(s)  # MLIR string literals accept JSON's escapes for the characters we emit


def _attr(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v} : i64"
    if isinstance(v, float):
        return f"{v!r} : f64"
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_attr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_q(str(k))} = {_attr(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot put {type(v).__name__} into a ByRE attribute")


_STRING_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"|//[^\n]*')
_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)")
_SIMPLE_ESCAPES = {"n": b"\n", "t": b"\t", '"': b'"', "\\": b"\\"}


def strings_are_utf8(text: str) -> bool:
    """Whether every string literal in MLIR text (its own or as MLIR prints it) holds UTF-8 once its escapes
    (``\\XX`` hex bytes, ``\\n``, ``\\t``, ``\\"``, ``\\\\``) are applied; ``//`` comments are skipped."""
    for m in _STRING_LITERAL.finditer(text):
        body = m.group(1)
        if body is None or "\\" not in body:
            continue
        out = bytearray()
        at = 0
        for e in _ESCAPE.finditer(body):
            out += body[at:e.start()].encode("utf-8")
            esc = e.group(1)
            out += bytes([int(esc, 16)]) if len(esc) == 2 else _SIMPLE_ESCAPES.get(esc, esc.encode("utf-8"))
            at = e.end()
        out += body[at:].encode("utf-8")
        try:
            out.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def attr_to_py(a) -> Any:
    """An attribute as Python data. Only calls into the bindings that raise on bad input rather than abort the
    process: containers are indexed, never iterated (iterating one that holds a location aborts), and a
    dictionary's names are read only once its printed form shows them to be UTF-8 (reading one that is not
    aborts). What the bindings raise is the caller's to turn into a ByreFormatError."""
    from ..mlir import ir

    if isinstance(a, ir.StringAttr):
        return a.value
    if isinstance(a, ir.BoolAttr):
        return a.value
    if isinstance(a, ir.IntegerAttr):
        return a.value
    if isinstance(a, ir.FloatAttr):
        return a.value
    if isinstance(a, ir.ArrayAttr):
        return [attr_to_py(a[i]) for i in range(len(a))]
    if isinstance(a, ir.DictAttr):
        if not strings_are_utf8(str(a)):
            raise ValueError("a dictionary holds a string that is not UTF-8")
        names = [a[i].name for i in range(len(a))]
        return {name: attr_to_py(a[name]) for name in names}
    return str(a)


# ---------------------------------------------------------------------------------------------------
# Writing


#: Report fields that measure this compile (wall times) rather than describe the artifact: kept on the in-memory
#: artifact, never written, so the same input, target, options and versions give byte-identical files.
TIMING_FIELDS = ("stage_seconds", "compile_s")


def persistent_report(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k not in TIMING_FIELDS}
    if "clusters" in out:
        out["clusters"] = [{k: v for k, v in c.items() if k not in TIMING_FIELDS} for c in out["clusters"]]
    return out


def to_mlir_text(bm: ByreModule) -> str:
    """The module's text without payloads (kernels and weights get their data attached afterwards)."""
    lines = []
    top_attrs = {
        "byre.version": bm.version,
        "byre.manifest": bm.manifest,
        "byre.report": json.dumps(persistent_report(bm.report), sort_keys=True),
        "byre.arena_bytes": bm.arena_bytes,
        "byre.arenas": bm.all_arenas(),
        "byre.payload_sha256": bm.payload_digest(),
    }
    if bm.structure:
        top_attrs["byre.structure"] = json.dumps(bm.structure, sort_keys=True)
    attr_text = ", ".join(f"{k} = {_attr(v)}" for k, v in top_attrs.items())
    lines.append(f"module attributes {{{attr_text}}} {{")
    for name, ke in bm.kernels.items():
        lines.append(f'  "byre.kernel"() {{sym_name = {_q(name)}, backend = {_q(ke.backend)}, '
                     f'format = {_q(ke.kernel.format)}, entry = {_q(ke.kernel.entry)}}} : () -> ()')
    for name in bm.weights:
        lines.append(f'  "byre.weight"() {{sym_name = {_q(name)}}} : () -> ()')
    sig = []
    arg_devices = bm.arg_devices()
    for i, a in enumerate(bm.args):
        extra = f", byre.weight = {_q(a.weight)}" if a.weight else ""
        extra += _device_attr(arg_devices[i])
        sig.append(f"%arg{i}: {a.spec.memref_type()} {{byre.argname = {_q(a.name)}, "
                   f"byre.argtype = {_q(a.kind)}{extra}}}")
    lines.append(f"  func.func @main({', '.join(sig)}) attributes {{byre.entry_point}} {{")
    names = {}
    for b in bm.buffers:
        if b.kind == "arg":
            names[b.id] = f"%arg{b.arg}"
        elif b.kind == "alloc":
            names[b.id] = f"%b{b.id}"
            lines.append(f"    %b{b.id} = memref.alloc() {{byre.arena_offset = {b.arena_offset} : i64"
                         f"{_device_attr(b.device)}}} : {b.spec.memref_type()}")
        else:
            names[b.id] = f"%b{b.id}"
            src = bm.buffers[b.source]
            lines.append(f'    %b{b.id} = "byre.alias"({names[b.source]}) {{byte_offset = {b.byte_offset} : i64}}'
                         f" : ({src.spec.memref_type()}) -> {b.spec.memref_type()}")
    # allocations are printed first (all are planned statically); steps follow in order
    for s in bm.steps:
        operands = ", ".join(names[i] for i in s.operands)
        types = ", ".join(bm.buffers[i].spec.memref_type() for i in s.operands)
        if s.op == "compute":
            parts = [f"callee = {_q(s.callee)}"]
            if s.kernel:
                parts.append(f"kernel = {_q(s.kernel)}")
            parts.append("memory_effects = [" + ", ".join(f"{e} : i32" for e in s.effects) + "]")
            parts.append(f"byre.backend = {_q(s.backend)}")
            if s.attrs:
                parts.append(f"byre.attrs = {_attr(s.attrs)}")
            lines.append(f'    "byre.compute"({operands}) {{{", ".join(parts)}}} : ({types}) -> ()')
        else:
            lines.append(f'    "byre.copy"({operands}) : ({types}) -> ()')
    lines.append("    return")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _device_attr(device: str) -> str:
    """``, byre.device = "cuda"`` for a buffer off the host; nothing for the host (ByRE 1.0 readers' view)."""
    return "" if device == HOST else f", byre.device = {_q(device)}"


def to_mlir_module(bm: ByreModule, context):
    """Build the ByRE ``ir.Module`` in ``context``, payloads attached as dense byte tensors."""
    from ..mlir import ir

    with context, ir.Location.unknown():
        module = ir.Module.parse(to_mlir_text(bm))
        for op in module.body.operations:
            op = op.operation
            if op.name == "byre.kernel":
                name = ir.StringAttr(op.attributes["sym_name"]).value
                op.attributes["data"] = _bytes_attr(bm.kernels[name].kernel.data)
            elif op.name == "byre.weight":
                name = ir.StringAttr(op.attributes["sym_name"]).value
                op.attributes["value"] = _bytes_attr(bm.weights[name])
    return module


def _bytes_attr(data: bytes):
    from ..mlir import ir

    return ir.DenseElementsAttr.get(np.frombuffer(data, dtype=np.int8) if data else np.zeros(0, np.int8))
