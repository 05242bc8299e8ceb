"""Recognizing JAX inputs without importing jax (``byteir list-plugins`` and frontend choice stay fast)."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

#: MLIR bytecode: a file starting with it is the core's ``stablehlo`` frontend's, never ours
MLIR_MAGIC = b"ML\xefR"
#: suffixes of a serialized ``jax.export.Exported`` (``exported.serialize()`` written to a file)
SUFFIXES = (".jaxexport", ".bin")
#: vtable offset of ``Exported.mlir_module_serialized`` in jax's flatbuffer schema (field 13: 4 + 2 * 13).
#: The schema only ever appends fields, so this slot is stable across serialization versions.
_MLIR_FIELD_VTABLE_OFFSET = 30


def embedded_stablehlo(data: bytes) -> tuple[int, int] | None:
    """(start, end) of the StableHLO portable artifact inside a serialized ``jax.export.Exported`` flatbuffer, or
    None when ``data`` is not one. Walks the flatbuffer by hand: root table -> vtable -> the
    ``mlir_module_serialized`` byte vector, which must itself be MLIR bytecode. Never raises."""
    try:
        n = len(data)
        if n < 16 or data[:4] == MLIR_MAGIC:
            return None
        (table,) = struct.unpack_from("<I", data, 0)
        if not 4 <= table <= n - 4:
            return None
        (soff,) = struct.unpack_from("<i", data, table)
        vtable = table - soff
        if not 0 <= vtable <= n - 4:
            return None
        vt_size, _ = struct.unpack_from("<HH", data, vtable)
        if vt_size < _MLIR_FIELD_VTABLE_OFFSET + 2 or vtable + vt_size > n:
            return None
        (field,) = struct.unpack_from("<H", data, vtable + _MLIR_FIELD_VTABLE_OFFSET)
        if field == 0 or table + field > n - 4:
            return None
        pos = table + field
        vec = pos + struct.unpack_from("<I", data, pos)[0]
        if vec > n - 4:
            return None
        (length,) = struct.unpack_from("<I", data, vec)
        start, end = vec + 4, vec + 4 + length
        if end > n or data[start:start + 4] != MLIR_MAGIC:
            return None
        return start, end
    except (struct.error, TypeError, ValueError):
        return None


def is_serialized_export(model) -> bool:
    """A path (``.jaxexport`` / ``.bin``) or bytes holding a serialized ``jax.export.Exported``."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return embedded_stablehlo(bytes(model)) is not None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix.lower() not in SUFFIXES:
            return False
        if path.suffix.lower() == ".jaxexport":
            return True  # ours by name: a corrupt one gets our error, not "no frontend accepts"
        try:  # .bin is generic: only a file that really is a jax export
            return embedded_stablehlo(path.read_bytes()) is not None
        except OSError:
            return False
    return False


def _from_jax(obj) -> bool:
    mod = type(obj).__module__ or ""
    return mod == "jax" or mod.startswith(("jax.", "jaxlib"))


def is_exported(model) -> bool:
    return type(model).__name__ == "Exported" and _from_jax(model)


def is_jitted(model) -> bool:
    """A ``jax.jit`` function (a ``PjitFunction``, or what ``jax.jit`` returns in later versions)."""
    if "jax" not in sys.modules:  # a jitted function cannot exist without jax imported
        return False
    return callable(model) and hasattr(model, "lower") and hasattr(model, "trace") and _from_jax(model)
