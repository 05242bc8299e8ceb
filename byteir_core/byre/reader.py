"""Reading and verifying ByRE files. Every problem is a :class:`ByreFormatError` naming the file."""

from __future__ import annotations

import json
import re

import numpy as np

from ..dtypes import TensorSpec
from ..errors import ByreFormatError
from ..interfaces import Kernel
from . import bytecode, container
from .format import (ARG_KINDS, BYRE_VERSION, HOST, READ, WRITE, Arg, Buffer, ByreModule, KernelEntry, Step, attr_to_py,
                     strings_are_utf8)

MAGIC = b"ML\xefR"  # MLIR bytecode; a ByRE 1.2 .byre starts with it too (see container.py)


def parse_version(v: str, where: str) -> tuple[int, int]:
    try:
        major, minor = (int(x) for x in v.split("."))
        return major, minor
    except ValueError:
        raise ByreFormatError(where, f"byre.version {v!r} is not MAJOR.MINOR") from None


def read_byre(data: bytes, where: str) -> ByreModule:
    """Parse and verify a ByRE module from the bytes of a ``.byre`` (bytecode) or ``.byre.mlir`` (text)."""
    return read_byre_file(data, where)[0]


def read_byre_file(data: bytes, where: str) -> tuple[ByreModule, container.Opened]:
    """:func:`read_byre`, and what the envelope said (``.integrity``: checked against a sha256 or not).

    In order: the 1.2 header or digest line (container.py), then the bytecode's structure in Python
    (bytecode.py), then -- for text, and for bytecode no digest vouches for -- a parse in a child process
    (probe.py), and only then MLIR in this process. Everything is a :class:`ByreFormatError` naming ``where``.
    """
    from ..mlir import diagnostics_to_text, ir, new_context

    opened = container.open_bytes(data, where, BYRE_VERSION)
    if opened.kind == "bytecode":
        bytecode.check(opened.body, where)
        source = opened.body
    else:
        source = opened.body.decode("utf-8")  # open_bytes decoded it once already
        if "byre.version" not in source:
            raise ByreFormatError(where, "not a ByRE artifact: no byre.version attribute")
        if not strings_are_utf8(source):
            raise ByreFormatError(where, "a string literal in the text is not UTF-8 once its escapes are applied")
        deep = text_nesting(source)
        if deep > bytecode.MAX_NESTING:
            raise ByreFormatError(where, f"brackets nested {deep} deep (MLIR's text parser recurses on each level; "
                                         f"a ByRE module nests fewer than {bytecode.MAX_NESTING})")
    if opened.kind == "text" or opened.integrity != container.VERIFIED:
        # MLIR's text parser (every registered dialect's syntax) cannot be checked ahead in Python as bytecode is
        _probe(opened, where)
    ctx = new_context()
    with ctx, ir.Location.unknown():
        try:
            module = ir.Module.parse(source)
        except ir.MLIRError as e:
            try:
                diag = diagnostics_to_text(e).replace(chr(10), "; ")
            except Exception:  # noqa: BLE001 -- a diagnostic quoting bytes that are not UTF-8
                diag = "(MLIR's diagnostic is not printable)"
            raise ByreFormatError(where, f"truncated or corrupted MLIR {opened.kind}: {diag}") from None
        except Exception as e:  # noqa: BLE001 -- the bindings raise a few plain types too
            raise ByreFormatError(where, f"unreadable MLIR: {_describe(e)}") from None
        reading = _Reading()
        try:
            return _from_module(module, where, reading), opened
        except ByreFormatError:
            raise
        except Exception as e:  # noqa: BLE001 -- whatever the bindings or a malformed value raise while reading
            raise ByreFormatError(where, f"cannot read {reading.what}: {_describe(e)}") from None


def _probe(opened: container.Opened, where: str) -> None:
    """Parse bytes no digest vouches for in a child first, so a crash or hang there is an error here."""
    from .probe import parse_in_child

    what = {container.LEGACY: "a ByRE 1.0/1.1 file", container.UNVERIFIED_TEXT: "text without a digest line"}.get(
        opened.integrity, "text")
    outcome, detail = parse_in_child(opened.body, opened.kind)
    if outcome == "ok":
        return
    if outcome == "refused":
        raise ByreFormatError(where, f"truncated or corrupted MLIR {opened.kind}: {detail.replace(chr(10), '; ')}")
    if outcome == "crashed":
        raise ByreFormatError(where, f"damaged: the MLIR reader crashed on it ({detail}) while checking {what} in a "
                                     f"child process")
    if outcome == "hung":
        raise ByreFormatError(where, f"damaged: the MLIR reader hung on it ({detail}) while checking {what} in a "
                                     f"child process")
    import warnings

    warnings.warn(f"{where}: could not check {what} in a child process ({detail}); parsing it here unchecked",
                  RuntimeWarning, stacklevel=4)


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|[\[\]{}()<>]|->')
_OPEN, _CLOSE = frozenset("[{(<"), frozenset("]})>")


def text_nesting(text: str) -> int:
    """How deep ``[`` ``{`` ``(`` ``<`` nest in MLIR text, outside string literals and comments."""
    depth = deepest = 0
    for m in _TOKEN.finditer(text):
        t = m.group()
        if t in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif t in _CLOSE:
            depth -= 1
    return deepest


class _Reading:
    """What the reader is looking at, for the message when the bindings raise something unexpected."""

    what = "the module's attributes"


def _describe(e: Exception) -> str:
    text = str(e)
    if "str_from_cstr" in text or isinstance(e, UnicodeError):
        return "a string in it is not UTF-8"
    return f"{type(e).__name__}: {text[:200]}"


def _loc(op) -> str:
    try:
        return str(op.location)
    except Exception:  # noqa: BLE001 -- a location naming a file that is not UTF-8
        return "<unprintable location>"


def _need(value, kind, where: str, what: str):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ByreFormatError(where, f"{what} must be {names}, got {type(value).__name__} {str(value)[:80]}")
    return value


def _from_module(module, where: str, reading: _Reading) -> ByreModule:
    top = module.operation.attributes
    reading.what = "byre.version"
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

    def get(name, kind, default=None):
        reading.what = name
        return _need(attr_to_py(top[name]), kind, where, name) if name in top else default

    manifest = get("byre.manifest", dict, {})
    try:
        report = json.loads(get("byre.report", str, "{}"))
    except json.JSONDecodeError as e:
        raise ByreFormatError(where, f"byre.report is not JSON: {e}") from None
    _need(report, dict, where, "byre.report")
    try:
        structure = json.loads(get("byre.structure", str, "{}"))
    except json.JSONDecodeError as e:
        raise ByreFormatError(where, f"byre.structure is not JSON: {e}") from None
    if not isinstance(structure, dict):
        raise ByreFormatError(where, "byre.structure is not a JSON object")
    kernels: dict[str, KernelEntry] = {}
    weights: dict[str, bytes] = {}
    entry = None
    for k, op in enumerate(module.body.operations):
        op = op.operation
        reading.what = f"top-level op {k}"
        name = op.name
        reading.what = f"{name} at {_loc(op)}"
        if name == "byre.kernel":
            a = op.attributes
            for need in ("sym_name", "backend", "format", "data"):
                if need not in a:
                    raise ByreFormatError(where, f"byre.kernel at {_loc(op)} lacks attribute {need!r}")
            sym = _need(attr_to_py(a["sym_name"]), str, where, f"byre.kernel at {_loc(op)}: sym_name")
            if sym in kernels:
                raise ByreFormatError(where, f"two byre.kernel ops named {sym!r}")
            kernels[sym] = KernelEntry(
                sym, _need(attr_to_py(a["backend"]), str, where, f"byre.kernel {sym}: backend"),
                Kernel(_need(attr_to_py(a["format"]), str, where, f"byre.kernel {sym}: format"),
                       _payload(a["data"], where, f"byre.kernel {sym}: data"),
                       _need(attr_to_py(a["entry"]), str, where, f"byre.kernel {sym}: entry")
                       if "entry" in a else "main"))
        elif name == "byre.weight":
            a = op.attributes
            if "sym_name" not in a or "value" not in a:
                raise ByreFormatError(where, f"byre.weight at {_loc(op)} lacks sym_name or value")
            sym = _need(attr_to_py(a["sym_name"]), str, where, f"byre.weight at {_loc(op)}: sym_name")
            if sym in weights:
                raise ByreFormatError(where, f"two byre.weight ops named {sym!r}")
            weights[sym] = _payload(a["value"], where, f"byre.weight {sym}: value")
        elif name == "func.func" and "byre.entry_point" in op.attributes:
            if entry is not None:
                raise ByreFormatError(where, "more than one function is marked byre.entry_point")
            entry = op
    if entry is None:
        raise ByreFormatError(where, "no entry function (a func.func with byre.entry_point)")

    arena_bytes = get("byre.arena_bytes", int, 0)
    if arena_bytes < 0:
        raise ByreFormatError(where, f"byre.arena_bytes is negative ({arena_bytes})")
    bm = ByreModule(args=[], buffers=[], steps=[], kernels=kernels, weights=weights, arena_bytes=arena_bytes,
                    arenas=_arenas(get("byre.arenas", dict), arena_bytes, where), manifest=manifest, report=report,
                    version=str(version), structure=structure)
    digest = get("byre.payload_sha256", str)
    reading.what = "the payloads"
    if digest is None:  # every ByRE writer since 1.0 records it: its absence is damage (or a hand-made module)
        raise ByreFormatError(where, "no byre.payload_sha256 attribute: the kernel and weight bytes cannot be checked")
    if digest != bm.payload_digest():
        raise ByreFormatError(where, "corrupted payload: kernel/weight bytes do not match byre.payload_sha256")
    _read_entry(entry, bm, where, reading)
    if "outputs" in structure:
        from ..runtime.structure import validate

        reading.what = "byre.structure"
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


def _payload(attr, where: str, what: str) -> bytes:
    """The bytes of a ``dense<...> : tensor<Nxi8>`` attribute (the shape and element type checked first)."""
    from ..mlir import ir

    if not isinstance(attr, ir.DenseIntElementsAttr):
        raise ByreFormatError(where, f"{what} must be a dense tensor<Nxi8>, got {str(attr)[:80]}")
    t = attr.type
    if not isinstance(t, ir.RankedTensorType) or t.rank != 1 or str(t.element_type) != "i8":
        raise ByreFormatError(where, f"{what} must be a dense tensor<Nxi8>, got {t}")
    if t.shape[0] == 0:
        return b""
    return np.asarray(attr).astype(np.int8, copy=False).reshape(-1).tobytes()


def _spec(t, where, what) -> TensorSpec:
    from ..mlir import ir

    if not isinstance(t, ir.MemRefType):
        raise ByreFormatError(where, f"{what} has type {t}, expected a memref")
    try:
        return TensorSpec.from_type(t)
    except TypeError as e:
        raise ByreFormatError(where, f"{what}: {e}") from None


def _read_entry(entry, bm: ByreModule, where: str, reading: _Reading) -> None:
    from ..mlir import ir

    reading.what = "the entry function"
    if len(entry.regions) != 1 or len(entry.regions[0].blocks) != 1:
        raise ByreFormatError(where, "the entry function must have one block")
    block = entry.regions[0].blocks[0]
    arg_attrs = entry.attributes["arg_attrs"] if "arg_attrs" in entry.attributes else None
    if arg_attrs is not None and (not isinstance(arg_attrs, ir.ArrayAttr)
                                  or len(arg_attrs) != len(block.arguments)):
        raise ByreFormatError(where, "the entry function's arg_attrs do not match its arguments")
    ids: dict = {}
    for i, a in enumerate(block.arguments):
        reading.what = f"entry argument {i}"
        d = _need(attr_to_py(arg_attrs[i]), dict, where, f"entry argument {i} attributes") if arg_attrs is not None \
            else {}
        name, kind = d.get("byre.argname"), d.get("byre.argtype")
        if not isinstance(name, str) or kind not in ARG_KINDS:
            raise ByreFormatError(where, f"entry argument {i} needs byre.argname and byre.argtype in {ARG_KINDS}")
        spec = _spec(a.type, where, f"entry argument {i} ({name})")
        weight = d.get("byre.weight")
        if weight is not None and not isinstance(weight, str):
            raise ByreFormatError(where, f"entry argument {i} ({name}): byre.weight must be a symbol name")
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
                raise ByreFormatError(where, f"{op.name} at {_loc(op)}: operand {k} is not a buffer of the "
                                             f"entry function")
            out.append(ids[v])
        return out

    def int_attr(a, key, what, default=None):
        v = attr_to_py(a[key]) if key in a else default
        return v if v is None else _need(v, int, where, what)

    for k, op in enumerate(block.operations):
        op = op.operation
        reading.what = f"op {k} of the entry function"
        name = op.name
        reading.what = f"{name} at {_loc(op)}"
        if name in ("memref.alloc", "byre.alias") and len(op.results) != 1:
            raise ByreFormatError(where, f"{name} at {_loc(op)} must have one result")
        if name == "memref.alloc":
            spec = _spec(op.results[0].type, where, f"memref.alloc at {_loc(op)}")
            a = op.attributes
            if len(op.operands):
                raise ByreFormatError(where, f"memref.alloc at {_loc(op)}: a ByRE buffer has a static shape, no "
                                             f"operands")
            off = int_attr(a, "byre.arena_offset", f"memref.alloc at {_loc(op)}: byre.arena_offset")
            device = _device(attr_to_py(a["byre.device"]) if "byre.device" in a else HOST, where,
                             f"memref.alloc at {_loc(op)}")
            arena = bm.arenas.get(device, 0)
            if off is None or off < 0 or off + spec.nbytes > arena:
                raise ByreFormatError(where, f"memref.alloc at {_loc(op)}: arena offset {off} does not fit "
                                             f"{spec.nbytes} bytes into the {device} arena of {arena}")
            ids[op.results[0]] = len(bm.buffers)
            bm.buffers.append(Buffer(len(bm.buffers), spec, "alloc", arena_offset=off, device=device))
        elif name == "byre.alias":
            srcs = operand_ids(op)
            if len(srcs) != 1:
                raise ByreFormatError(where, f"byre.alias at {_loc(op)} must have one operand")
            (src,) = srcs
            spec = _spec(op.results[0].type, where, f"byre.alias at {_loc(op)}")
            off = int_attr(op.attributes, "byte_offset", f"byre.alias at {_loc(op)}: byte_offset", 0)
            if off < 0 or off + spec.nbytes > bm.buffers[src].spec.nbytes:
                raise ByreFormatError(where, f"byre.alias at {_loc(op)}: view of {spec.nbytes} bytes at offset "
                                             f"{off} exceeds its source ({bm.buffers[src].spec.nbytes} bytes)")
            ids[op.results[0]] = len(bm.buffers)
            bm.buffers.append(Buffer(len(bm.buffers), spec, "alias", source=src, byte_offset=off,
                                     device=bm.buffers[src].device))
        elif name == "byre.compute":
            a = op.attributes
            if "callee" not in a:
                raise ByreFormatError(where, f"byre.compute at {_loc(op)} has no callee")
            callee = _need(attr_to_py(a["callee"]), str, where, f"byre.compute at {_loc(op)}: callee")
            if len(op.results) or len(op.regions):
                raise ByreFormatError(where, f"byre.compute {callee} at {_loc(op)} has results or regions")
            operands = operand_ids(op)
            effects = _need(attr_to_py(a["memory_effects"]) if "memory_effects" in a else [], list, where,
                            f"byre.compute {callee}: memory_effects")
            if len(effects) != len(operands) or any(isinstance(e, bool) or e not in (READ, WRITE) for e in effects):
                raise ByreFormatError(where, f"byre.compute {callee} at {_loc(op)}: "
                                             f"memory_effects {effects} must give read (1) or write (2) for each "
                                             f"of its {len(operands)} operands")
            kernel = attr_to_py(a["kernel"]) if "kernel" in a else None
            if kernel is not None and (not isinstance(kernel, str) or kernel not in bm.kernels):
                raise ByreFormatError(where, f"byre.compute at {_loc(op)} names kernel {kernel!r}, which the "
                                             f"file does not hold")
            devices = sorted({bm.buffers[b].device for b in operands})
            if len(devices) > 1:
                raise ByreFormatError(where, f"byre.compute {callee} at {_loc(op)} has operands "
                                             f"on devices {', '.join(devices)}; a compute runs on one device "
                                             f"(a byre.copy moves data between them)")
            if any(bm.args[bm.buffers[b].arg].kind != "output" for b, e in zip(operands, effects)
                   if e == WRITE and bm.buffers[b].kind == "arg"):
                raise ByreFormatError(where, f"byre.compute at {_loc(op)} writes an input or weight argument")
            backend = _need(attr_to_py(a["byre.backend"]) if "byre.backend" in a else "", str, where,
                            f"byre.compute {callee}: byre.backend")
            attrs = _need(attr_to_py(a["byre.attrs"]) if "byre.attrs" in a else {}, dict, where,
                          f"byre.compute {callee}: byre.attrs")
            bm.steps.append(Step("compute", operands, callee=callee, kernel=kernel, effects=effects, backend=backend,
                                 attrs=attrs))
        elif name == "byre.copy":
            operands = operand_ids(op)
            if len(operands) != 2 or bm.buffers[operands[0]].spec.nbytes != bm.buffers[operands[1]].spec.nbytes:
                raise ByreFormatError(where, f"byre.copy at {_loc(op)} needs (source, target) of equal size")
            bm.steps.append(Step("copy", operands))
        elif name == "func.return":
            pass
        else:
            raise ByreFormatError(where, f"unexpected op {name} at {_loc(op)} in the ByRE entry function")
