"""Built-in frontend ``stablehlo``: MLIR text, MLIR bytecode, or a StableHLO portable artifact (VHLO).

Accepts a path (``.mlir``, ``.mlirbc``, ``.stablehlo``, ``.vhlo``, ``.bc``), ``bytes``, a ``str`` holding
MLIR text, or an ``ir.Module`` already in StableHLO.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FrontendError
from ..hookspecs import hookimpl
from ..interfaces import Frontend
from ..mlir import diagnostics_to_text, ir, module_to_bytecode, stablehlo_api

BYTEIR_PLUGIN_API = "1.0"

SUFFIXES = (".mlir", ".mlirbc", ".stablehlo", ".vhlo", ".bc")
BYTECODE_MAGIC = b"ML\xefR"


def _read(model) -> tuple[bytes | str, str]:
    """(content, where) for a path, bytes or text."""
    if isinstance(model, (str, os.PathLike)) and not _looks_like_text(model):
        path = Path(model)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise FrontendError(f"cannot read {path}: {e.strerror}") from None
        if data.startswith(BYTECODE_MAGIC):
            return data, str(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FrontendError(f"{path}: neither MLIR bytecode (magic {BYTECODE_MAGIC!r}) nor UTF-8 "
                                f"MLIR text") from None
        if not data.strip():
            raise FrontendError(f"{path} is empty ({len(data)} bytes): no MLIR module in it")
        if all(not ln.strip() or ln.lstrip().startswith("//") for ln in text.splitlines()):
            raise FrontendError(f"{path} is empty: only whitespace and // comments, no MLIR module in it")
        return text, str(path)
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<bytes>"
    return str(model), "<string>"


def _looks_like_text(model) -> bool:
    return isinstance(model, str) and ("\n" in model or "func.func" in model or "{" in model)


class StableHLOFrontend(Frontend):
    name = "stablehlo"
    description = "StableHLO as MLIR text, MLIR bytecode or a versioned portable artifact"

    def accepts(self, model) -> bool:
        if isinstance(model, ir.Module):
            return True
        if isinstance(model, (bytes, bytearray, memoryview)):
            return bytes(model[:4]) == BYTECODE_MAGIC
        if _looks_like_text(model):
            return True
        if isinstance(model, (str, os.PathLike)):
            return Path(model).suffix in SUFFIXES
        return False

    def to_stablehlo(self, model, example_inputs, options, context):
        if isinstance(model, ir.Module):
            if model.context is context:
                return model
            with context:  # bring it into the core's context
                return ir.Module.parse(module_to_bytecode(model))
        content, where = _read(model)
        with context, ir.Location.unknown():
            if isinstance(content, bytes):
                try:  # the version-safe route first: a portable artifact is VHLO bytecode
                    return stablehlo_api.deserialize_portable_artifact(context, content)
                except Exception:  # noqa: BLE001 -- not VHLO: plain bytecode of a stablehlo module
                    pass
            try:
                if isinstance(content, str) and where not in ("<string>", "<bytes>"):
                    return ir.Module.parseFile(where)
                return ir.Module.parse(content)
            except ir.MLIRError as e:
                msg = "\n".join(where + line[1:] if line.startswith("-:") else line  # "-": text without a file
                                for line in diagnostics_to_text(e).splitlines())
                if msg.startswith(where) and "\n" not in msg:  # one diagnostic that names the file: as compilers do
                    raise FrontendError(f"{msg} (not valid MLIR)") from None
                raise FrontendError(f"{where}: not valid MLIR:\n{msg}") from None
            except Exception as e:  # noqa: BLE001 -- the bindings raise plain types on some malformed bytecode
                kind = "bytecode" if isinstance(content, bytes) else "text"
                raise FrontendError(f"{where}: not valid MLIR {kind} ({type(e).__name__}: {e})") from None


@hookimpl
def byteir_register_frontends(register):
    register(StableHLOFrontend())
