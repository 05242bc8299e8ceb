"""Reading and verifying ByRE files. Every problem is a :class:`ByreFormatError` naming the file."""

from __future__ import annotations

import json

import numpy as np

from ..dtypes import TensorSpec
from ..errors import ByreFormatError
from ..interfaces import Kernel
from .format import ARG_KINDS, BYRE_VERSION, HOST, READ, WRITE, Arg, Buffer, ByreModule, KernelEntry, Step, attr_to_py

MAGIC = b"ML\xefR"


def parse_version(v: str, where: str) -> tuple[int, int]:
    try:
        major, minor = (int(x) for x in v.split("."))
        return major, minor
    except ValueError:
        raise ByreFormatError(where, f"byre.version {v!r} is not MAJOR.MINOR") from None


def read_byre(data: bytes, where: str) -> ByreModule:
    """Parse and verify a ByRE module from the bytes of a ``.byre`` (bytecode) or ``.byre.mlir`` (text)."""
    from ..mlir import diagnostics_to_text, ir, new_context

    if not data:
        raise ByreFormatError(where, "file is empty")
    if not data.startswith(MAGIC):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ByreFormatError(where, "not a ByRE artifact: neither MLIR bytecode (magic 'ML\\xefR') "
                                         "nor UTF-8 text") from None
        if "byre.version" not in text:
            raise ByreFormatError(where, "not a ByRE artifact: no byre.version attribute")
    ctx = new_context()
    with ctx, ir.Location.unknown():
        try:
            module = ir.Module.parse(data if data.startswith(MAGIC) else data.decode("utf-8"))
        except ir.MLIRError as e:
            kind = "bytecode" if data.startswith(MAGIC) else "text"
            raise ByreFormatError(where, f"truncated or corrupted MLIR {kind}: "
                                         f"{diagnostics_to_text(e).replace(chr(10), '; ')}") from None
        except Exception as e:  # noqa: BLE001 -- the bindings raise a few plain types too
            raise ByreFormatError(where, f"unreadable MLIR: {e}") from None
        return _from_module(module, where)


def _from_module(module, where: str) -> ByreModule:
    top = module.operation.attributes
    if "byre.version" not in top:
        raise ByreFormatError(where, "not a ByRE artifact: the module has no byre.version attribute")
    version = attr_to_py(top["byre.version"])
    major, minor = parse_version(str(version), where)
    if (major, minor) > parse_version(BYRE_VERSION, where):
        # a newer minor is refused too: its new attributes (1.1: devices) may change where buffers live
        from .. import __version__

        raise ByreFormatError(where, f"written as ByRE {version}, but this reader (byteir-core {__version__}) "
                                     f"understands ByRE up to {BYRE_VERSION}; upgrade byteir-core")
    if major < 1:
        raise ByreFormatError(where, f"ByRE {version} predates 1.0 and is not supported")

    def get(name, default=None):
        return attr_to_py(top[name]) if name in top else default

    manifest = get("byre.manifest", {})
    try:
        report = json.loads(get("byre.report", "{}"))
    except json.JSONDecodeError as e:
        raise ByreFormatError(where, f"byre.report is not JSON: {e}") from None
    try:
        structure = json.loads(get("byre.structure", "{}"))
    except json.JSONDecodeError as e:
        raise ByreFormatError(where, f"byre.structure is not JSON: {e}") from None
    if not isinstance(structure, dict):
        raise ByreFormatError(where, "byre.structure is not a JSON object")
    kernels: dict[str, KernelEntry] = {}
    weights: dict[str, bytes] = {}
    entry = None
    for op in module.body.operations:
        op = op.operation
        if op.name == "byre.kernel":
            a = op.attributes
            for need in ("sym_name", "backend", "format", "data"):
                if need not in a:
                    raise ByreFormatError(where, f"byre.kernel at {op.location} lacks attribute {need!r}")
            name = attr_to_py(a["sym_name"])
            kernels[name] = KernelEntry(name, attr_to_py(a["backend"]), Kernel(
                attr_to_py(a["format"]), _payload(a["data"]),
                attr_to_py(a["entry"]) if "entry" in a else "main"))
        elif op.name == "byre.weight":
            a = op.attributes
            if "sym_name" not in a or "value" not in a:
                raise ByreFormatError(where, f"byre.weight at {op.location} lacks sym_name or value")
            weights[attr_to_py(a["sym_name"])] = _payload(a["value"])
        elif op.name == "func.func" and "byre.entry_point" in op.attributes:
            if entry is not None:
                raise ByreFormatError(where, "more than one function is marked byre.entry_point")
            entry = op
    if entry is None:
        raise ByreFormatError(where, "no entry function (a func.func with byre.entry_point)")

    arena_bytes = int(get("byre.arena_bytes", 0))
    bm = ByreModule(args=[], buffers=[], steps=[], kernels=kernels, weights=weights, arena_bytes=arena_bytes,
                    arenas=_arenas(get("byre.arenas"), arena_bytes, where), manifest=manifest, report=report,
                    version=str(version), structure=structure)
    digest = get("byre.payload_sha256")
    if digest is not None and digest != bm.payload_digest():
        raise ByreFormatError(where, "corrupted payload: kernel/weight bytes do not match byre.payload_sha256")
    _read_entry(entry, bm, where)
    if "outputs" in structure:
        from ..runtime.structure import validate

        validate(structure["outputs"], len(bm.outputs()), where)
    return bm


def _arenas(arenas, arena_bytes: int, where: str) -> dict[str, int]:
    """``byre.arenas`` (device -> bytes); a ByRE 1.0 file has only the host arena, ``byre.arena_bytes``."""
    if arenas is None:
        return {HOST: arena_bytes} if arena_bytes else {}
    if not isinstance(arenas, dict) or not all(isinstance(n, int) and n >= 0 for n in arenas.values()):
        raise ByreFormatError(where, f"byre.arenas must map device names to byte counts, got {arenas!r}")
    if arenas.get(HOST, 0) != arena_bytes:
        raise ByreFormatError(where, f"byre.arenas gives the host arena {arenas.get(HOST, 0)} bytes, but "
                                     f"byre.arena_bytes says {arena_bytes}")
    return dict(arenas)


def _device(device, where: str, what: str) -> str:
    if not isinstance(device, str) or not device:
        raise ByreFormatError(where, f"{what}: byre.device must be a device name, got {device!r}")
    return device


def _payload(attr) -> bytes:
    return np.asarray(attr).astype(np.int8, copy=False).tobytes()


def _spec(t, where, what) -> TensorSpec:
    from ..mlir import ir

    if not isinstance(t, ir.MemRefType):
        raise ByreFormatError(where, f"{what} has type {t}, expected a memref")
    try:
        return TensorSpec.from_type(t)
    except TypeError as e:
        raise ByreFormatError(where, f"{what}: {e}") from None


def _read_entry(entry, bm: ByreModule, where: str) -> None:
    block = entry.regions[0].blocks[0]
    arg_attrs = entry.attributes["arg_attrs"] if "arg_attrs" in entry.attributes else None
    ids: dict = {}
    for i, a in enumerate(block.arguments):
        d = attr_to_py(arg_attrs[i]) if arg_attrs is not None else {}
        name, kind = d.get("byre.argname"), d.get("byre.argtype")
        if name is None or kind not in ARG_KINDS:
            raise ByreFormatError(where, f"entry argument {i} needs byre.argname and byre.argtype in {ARG_KINDS}")
        spec = _spec(a.type, where, f"entry argument {i} ({name})")
        weight = d.get("byre.weight")
        if kind == "weight":
            if weight not in bm.weights:
                raise ByreFormatError(where, f"weight argument {i} ({name}) names byre.weight {weight!r}, "
                                             f"which the file does not hold")
            if len(bm.weights[weight]) != spec.nbytes:
                raise ByreFormatError(where, f"weight {weight!r} holds {len(bm.weights[weight])} bytes, argument "
                                             f"{i} ({name}: {spec}) needs {spec.nbytes}")
        bm.args.append(Arg(name, kind, spec, weight))
        ids[a] = len(bm.buffers)
        bm.buffers.append(Buffer(len(bm.buffers), spec, "arg", arg=i,
                                 device=_device(d.get("byre.device", HOST), where, f"entry argument {i} ({name})")))

    def operand_ids(op):
        out = []
        for k, v in enumerate(op.operands):
            if v not in ids:
                raise ByreFormatError(where, f"{op.name} at {op.location}: operand {k} is not a buffer of the "
                                             f"entry function")
            out.append(ids[v])
        return out

    for op in block.operations:
        op = op.operation
        name = op.name
        if name == "memref.alloc":
            spec = _spec(op.results[0].type, where, f"memref.alloc at {op.location}")
            a = op.attributes
            off = attr_to_py(a["byre.arena_offset"]) if "byre.arena_offset" in a else None
            device = _device(attr_to_py(a["byre.device"]) if "byre.device" in a else HOST, where,
                             f"memref.alloc at {op.location}")
            arena = bm.arenas.get(device, 0)
            if off is None or off < 0 or off + spec.nbytes > arena:
                raise ByreFormatError(where, f"memref.alloc at {op.location}: arena offset {off} does not fit "
                                             f"{spec.nbytes} bytes into the {device} arena of {arena}")
            ids[op.results[0]] = len(bm.buffers)
            bm.buffers.append(Buffer(len(bm.buffers), spec, "alloc", arena_offset=off, device=device))
        elif name == "byre.alias":
            (src,) = operand_ids(op)
            spec = _spec(op.results[0].type, where, f"byre.alias at {op.location}")
            off = attr_to_py(op.attributes["byte_offset"]) if "byte_offset" in op.attributes else 0
            if off < 0 or off + spec.nbytes > bm.buffers[src].spec.nbytes:
                raise ByreFormatError(where, f"byre.alias at {op.location}: view of {spec.nbytes} bytes at offset "
                                             f"{off} exceeds its source ({bm.buffers[src].spec.nbytes} bytes)")
            ids[op.results[0]] = len(bm.buffers)
            bm.buffers.append(Buffer(len(bm.buffers), spec, "alias", source=src, byte_offset=off,
                                     device=bm.buffers[src].device))
        elif name == "byre.compute":
            a = op.attributes
            if "callee" not in a:
                raise ByreFormatError(where, f"byre.compute at {op.location} has no callee")
            operands = operand_ids(op)
            effects = attr_to_py(a["memory_effects"]) if "memory_effects" in a else []
            if len(effects) != len(operands) or any(e not in (READ, WRITE) for e in effects):
                raise ByreFormatError(where, f"byre.compute {attr_to_py(a['callee'])} at {op.location}: "
                                             f"memory_effects {effects} must give read (1) or write (2) for each "
                                             f"of its {len(operands)} operands")
            kernel = attr_to_py(a["kernel"]) if "kernel" in a else None
            if kernel is not None and kernel not in bm.kernels:
                raise ByreFormatError(where, f"byre.compute at {op.location} names kernel {kernel!r}, which the "
                                             f"file does not hold")
            devices = sorted({bm.buffers[b].device for b in operands})
            if len(devices) > 1:
                raise ByreFormatError(where, f"byre.compute {attr_to_py(a['callee'])} at {op.location} has operands "
                                             f"on devices {', '.join(devices)}; a compute runs on one device "
                                             f"(a byre.copy moves data between them)")
            if any(bm.args[bm.buffers[b].arg].kind != "output" for b, e in zip(operands, effects)
                   if e == WRITE and bm.buffers[b].kind == "arg"):
                raise ByreFormatError(where, f"byre.compute at {op.location} writes an input or weight argument")
            bm.steps.append(Step("compute", operands, callee=attr_to_py(a["callee"]), kernel=kernel,
                                 effects=effects,
                                 backend=attr_to_py(a["byre.backend"]) if "byre.backend" in a else "",
                                 attrs=attr_to_py(a["byre.attrs"]) if "byre.attrs" in a else {}))
        elif name == "byre.copy":
            operands = operand_ids(op)
            if len(operands) != 2 or bm.buffers[operands[0]].spec.nbytes != bm.buffers[operands[1]].spec.nbytes:
                raise ByreFormatError(where, f"byre.copy at {op.location} needs (source, target) of equal size")
            bm.steps.append(Step("copy", operands))
        elif name == "func.return":
            pass
        else:
            raise ByreFormatError(where, f"unexpected op {name} at {op.location} in the ByRE entry function")
