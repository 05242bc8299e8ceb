"""The ByRE 1.2 integrity envelope: a header (``.byre``) or a first line (``.byre.mlir``) holding the format
version and a sha256 of the rest, checked before MLIR sees a byte (see docs/byre.md, "File layout").

``.byre`` (binary)::

    0      4  b"ML\\xefR"           MLIR bytecode magic
    4      1  0x0D                 MLIR bytecode version 6 (as a varint)
    5      n  producer, NUL-ended  b"ByRE 1.2 container: ..." (ASCII; the ByRE version is read from it)
    5+n    2  0x7F 0x01            an MLIR section header with an invalid section id: MLIR readers stop here
    7+n    8  body length          u64, little-endian
    15+n  32  sha256               of every byte of the file except these 32
    47+n   -  body                 MLIR bytecode of the ByRE module: what ByRE 1.0/1.1 wrote as the whole file

The first bytes are those of an MLIR bytecode file whose producer string names the ByRE version, so a ByRE
1.0/1.1 reader (or any MLIR tool) refuses a 1.2 file with MLIR's own note "produced by: ByRE 1.2 container:
... upgrade byteir-core" rather than by guessing. The layout is frozen for every ByRE 1.x.

``.byre.mlir`` (text)::

    // byre 1.2 sha256=<64 hex digits> bytes=<n>
    <n bytes of MLIR text: the rest of the file, which the sha256 is taken over>
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

from ..errors import ByreFormatError

MLIR_MAGIC = b"ML\xefR"
#: Bytecode version of the body (and, as a varint, byte 4 of the header).
BYTECODE_VERSION = 6
_CONTAINER_START = MLIR_MAGIC + bytes([BYTECODE_VERSION << 1 | 1]) + b"ByRE "
_PRODUCER_RE = re.compile(rb"ByRE (\d{1,4})\.(\d{1,4}) container(?:[\x20-\x7e]*)")
_STOP = b"\x7f\x01"  # section id 127 (invalid in every MLIR version), length 0
_MAX_PRODUCER = 200
_TEXT_LINE_RE = re.compile(r"// byre (\d{1,4})\.(\d{1,4}) sha256=([0-9a-f]{64}) bytes=(\d{1,15})\n")

#: What ``Artifact.integrity`` says about the bytes a module was read from.
VERIFIED = "sha256"  # a 1.2 header or digest line, checked
LEGACY = "none: ByRE 1.0/1.1 bytecode (no digest)"
UNVERIFIED_TEXT = "none: text without a '// byre' digest line"
BUILT = "in memory"  # not read from a file


def producer(version: str) -> bytes:
    return (f"ByRE {version} container: needs a reader that understands ByRE {version} "
            f"(upgrade byteir-core)").encode("ascii")


def wrap(body: bytes, version: str) -> bytes:
    """The ``.byre`` file for a body (MLIR bytecode, version 6)."""
    head = MLIR_MAGIC + bytes([BYTECODE_VERSION << 1 | 1]) + producer(version) + b"\0" + _STOP
    head += struct.pack("<Q", len(body))
    h = hashlib.sha256(head)
    h.update(body)
    return head + h.digest() + body


def wrap_text(text: str, version: str) -> bytes:
    """The ``.byre.mlir`` file: a digest line over the text that follows it."""
    rest = text.encode("utf-8")
    return f"// byre {version} sha256={hashlib.sha256(rest).hexdigest()} bytes={len(rest)}\n".encode() + rest


@dataclass
class Opened:
    kind: str  # "bytecode" | "text"
    body: bytes  # the MLIR bytecode or UTF-8 text to parse
    integrity: str  # VERIFIED | LEGACY | UNVERIFIED_TEXT
    version: tuple[int, int] | None = None  # from the header / digest line; None without one


def _check_version(version: tuple[int, int], newest: tuple[int, int], where: str, newest_text: str) -> None:
    if version > newest:
        from .. import __version__

        raise ByreFormatError(where, f"written as ByRE {version[0]}.{version[1]}, but this reader (byteir-core "
                                     f"{__version__}) understands ByRE up to {newest_text}; upgrade byteir-core")


def open_bytes(data: bytes, where: str, newest: str) -> Opened:
    """Check the envelope of a ``.byre`` / ``.byre.mlir`` file's bytes; return what is inside to parse.

    Every refusal is a :class:`ByreFormatError` naming ``where``; nothing here hands bytes to MLIR.
    """
    newest_v = tuple(int(x) for x in newest.split("."))
    if not data:
        raise ByreFormatError(where, "file is empty")
    if data.startswith(MLIR_MAGIC):
        return _open_binary(data, where, newest_v, newest)
    if _PRODUCER_RE.search(data[:5 + _MAX_PRODUCER]):
        raise ByreFormatError(where, f"damaged ByRE header: the file starts with {data[:5]!r}, not the magic "
                                     f"{_CONTAINER_START[:5]!r}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if data[:3] == MLIR_MAGIC[:3] or data[:1] == b"\x89":  # a damaged first bytes of a .byre
            raise ByreFormatError(where, "not a ByRE artifact, or its first bytes are damaged: it starts with "
                                         f"{data[:8]!r}, not the ByRE/MLIR bytecode magic 'ML\\xefR'") from None
        raise ByreFormatError(where, "not a ByRE artifact: neither MLIR bytecode (magic 'ML\\xefR') nor UTF-8 "
                                     f"text (byte {e.start} is not UTF-8)") from None
    return _open_text(text, data, where, newest_v, newest)


def _open_binary(data: bytes, where: str, newest_v, newest: str) -> Opened:
    if len(data) < 5 + _MAX_PRODUCER and data.find(b"\0", 5) < 0 and (
            _CONTAINER_START.startswith(data) or data.startswith(_CONTAINER_START)):
        raise ByreFormatError(where, f"truncated or corrupted: the file ends inside the ByRE header, after "
                                     f"{len(data)} bytes")
    if not data.startswith(_CONTAINER_START):
        # no 1.2 header: MLIR bytecode as ByRE 1.0/1.1 wrote it, with MLIR's own producer string
        nul = data.find(b"\0", 5, 5 + _MAX_PRODUCER)
        prod = data[5:nul] if nul > 0 else b""
        if len(data) > 4 and data[4] & 1 and prod.startswith(b"MLIR"):
            return Opened("bytecode", data, LEGACY)
        raise ByreFormatError(where, "damaged or not a ByRE artifact: it starts like MLIR bytecode but has neither "
                                     "the ByRE 1.2 header nor the producer string of a ByRE 1.0/1.1 file "
                                     f"(first bytes {data[:24]!r})")
    nul = data.find(b"\0", 5, 5 + _MAX_PRODUCER)
    m = _PRODUCER_RE.fullmatch(data[5:nul]) if nul > 0 else None
    if m is None:
        raise ByreFormatError(where, f"damaged ByRE header: the producer string {data[5:5 + 80]!r} is not "
                                     f"'ByRE MAJOR.MINOR container...'")
    version = (int(m.group(1)), int(m.group(2)))
    if version[0] > newest_v[0]:  # another major may lay its header out differently: refuse before reading it
        _check_version(version, newest_v, where, newest)
    at = nul + 1
    fixed = at + len(_STOP) + 8 + 32
    if len(data) < fixed:
        raise ByreFormatError(where, f"truncated or corrupted: {len(data)} bytes, shorter than the ByRE {version[0]}."
                                     f"{version[1]} header ({fixed} bytes)")
    if data[at:at + 2] != _STOP:
        raise ByreFormatError(where, f"damaged ByRE header: bytes {at}..{at + 1} are {data[at:at + 2]!r}, not "
                                     f"{_STOP!r}")
    (length,) = struct.unpack_from("<Q", data, at + 2)
    digest_at = at + 2 + 8
    if len(data) != fixed + length:
        what = "truncated or corrupted" if len(data) < fixed + length else "corrupted, bytes were added"
        raise ByreFormatError(where, f"{what}: the header says {fixed + length} bytes ({length} after the "
                                     f"header), the file has {len(data)}")
    h = hashlib.sha256(memoryview(data)[:digest_at])
    h.update(memoryview(data)[digest_at + 32:])
    if h.digest() != data[digest_at:digest_at + 32]:
        raise ByreFormatError(where, f"corrupted: its sha256 is {h.hexdigest()}, but its header records "
                                     f"{data[digest_at:digest_at + 32].hex()} (bytes were changed after it was "
                                     f"written)")
    _check_version(version, newest_v, where, newest)
    return Opened("bytecode", data[fixed:], VERIFIED, version)


def _open_text(text: str, data: bytes, where: str, newest_v, newest: str) -> Opened:
    if not text.startswith("// byre "):
        return Opened("text", data, UNVERIFIED_TEXT)
    nl = text.find("\n")
    first = text[:nl + 1] if nl >= 0 else text
    m = _TEXT_LINE_RE.fullmatch(first)
    if m is None:
        raise ByreFormatError(where, f"damaged digest line {first.rstrip()[:120]!r}: expected '// byre MAJOR.MINOR "
                                     f"sha256=<64 hex digits> bytes=<n>' (delete the line to load the text "
                                     f"unverified)")
    version = (int(m.group(1)), int(m.group(2)))
    if version[0] > newest_v[0]:
        _check_version(version, newest_v, where, newest)
    rest = data[len(first.encode("utf-8")):]
    want = int(m.group(4))
    if len(rest) != want:
        what = "truncated or shortened" if len(rest) < want else "lengthened"
        raise ByreFormatError(where, f"changed since it was written ({what}): its digest line says {want} bytes "
                                     f"follow it, {len(rest)} do (if you edited it by hand, delete the first line to "
                                     f"load it unverified)")
    got = hashlib.sha256(rest).hexdigest()
    if got != m.group(3):
        raise ByreFormatError(where, f"changed since it was written: the text after the first line has sha256 {got}, "
                                     f"the digest line records {m.group(3)} (if you edited it by hand, delete the "
                                     f"first line to load it unverified)")
    _check_version(version, newest_v, where, newest)
    return Opened("text", rest, VERIFIED, version)
