"""The ByRE format: an :class:`Artifact` wraps a :class:`ByreModule` and knows how to save and show it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..errors import ByreFormatError
from . import container
from .container import BYTECODE_VERSION  # noqa: F401  (the body's MLIR bytecode version; readers accept it back to 0)
from .format import BYRE_VERSION, Arg, Buffer, ByreModule, KernelEntry, Step, to_mlir_module, to_mlir_text
from .reader import MAGIC, read_byre, read_byre_file  # noqa: F401

__all__ = ["Artifact", "ByreModule", "Arg", "Buffer", "Step", "KernelEntry", "BYRE_VERSION", "read_artifact",
           "to_mlir_text"]


class Artifact:
    """A compiled program. ``save(path)`` writes bytecode (``.byre``) or text (``.byre.mlir``)."""

    def __init__(self, module: ByreModule, path: str | None = None):
        self.module = module  # treat as read-only: serialized bytes are cached
        self.path = path
        self._bytes: bytes | None = None
        self._file_sha256: str | None = None
        #: What vouched for the bytes it was read from: "sha256" (a ByRE 1.2 header or digest line, checked),
        #: "none: ..." (a ByRE 1.0/1.1 file, or text without a digest line), or "in memory" (never read).
        self.integrity: str = container.BUILT

    @property
    def manifest(self) -> dict:
        return self.module.manifest

    @property
    def report(self) -> dict:
        return self.module.report

    def to_bytes(self) -> bytes:
        """The ``.byre`` file: the ByRE 1.2 header (version, length, sha256) and the module's MLIR bytecode."""
        if self._bytes is None:
            from ..mlir import module_to_bytecode, new_context

            body = module_to_bytecode(to_mlir_module(self.module, new_context()), BYTECODE_VERSION)
            self._bytes = container.wrap(body, BYRE_VERSION)
        return self._bytes

    def to_text_file(self) -> bytes:
        """The ``.byre.mlir`` file: a ``// byre 1.2 sha256=... bytes=...`` line and the module's MLIR text."""
        return container.wrap_text(self.text(elide_payloads=False), BYRE_VERSION)

    def text(self, elide_payloads: bool = True) -> str:
        """The textual ByRE; payloads (kernels, weights) are elided unless asked for."""
        from ..mlir import new_context

        m = to_mlir_module(self.module, new_context())
        if elide_payloads:
            return m.operation.get_asm(large_elements_limit=16)
        return str(m)

    def sha256(self) -> str:
        """The hash to pin: of the file it was read from, else of its bytecode."""
        return self._file_sha256 or hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a failed or interrupted save leaves no half-written file behind."""
        path = Path(path)
        data = self.to_text_file() if path.name.endswith(".mlir") else self.to_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a saved artifact gets the usual permissions
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.path is None:  # the first place it was saved is where it lives
            self.path = str(path)
        return path

    def summary(self) -> dict:
        """Version, manifest, ops per backend, weight bytes, kernels, arena: what ``byteir inspect`` shows."""
        bm = self.module
        per_backend: dict[str, int] = {}
        per_device: dict[str, int] = {}
        for s in bm.steps:
            if s.op == "compute":
                per_backend[s.backend] = per_backend.get(s.backend, 0) + 1
                per_device[bm.step_device(s)] = per_device.get(bm.step_device(s), 0) + 1
        return {
            "path": self.path,
            "byre_version": bm.version,
            "integrity": self.integrity,
            "manifest": bm.manifest,
            "inputs": [{"name": a.name, "type": str(a.spec)} for a in bm.args if a.kind == "input"],
            "outputs": [{"name": a.name, "type": str(a.spec)} for a in bm.args if a.kind == "output"],
            "computes_per_backend": per_backend,
            "computes_per_device": per_device,
            "ops_per_backend": bm.report.get("ops_per_backend", {}),
            "steps": {"compute": sum(s.op == "compute" for s in bm.steps),
                      "copy": sum(s.op == "copy" for s in bm.steps),
                      "alias": sum(b.kind == "alias" for b in bm.buffers)},
            "weights": {"count": len(bm.weights), "bytes": sum(len(w) for w in bm.weights.values())},
            "kernels": [{"name": k.name, "backend": k.backend, "format": k.kernel.format,
                         "bytes": len(k.kernel.data)} for k in bm.kernels.values()],
            "arena_bytes": bm.arena_bytes,
            "arenas": bm.all_arenas(),
        }


def read_artifact(source, *, expected_sha256: str | None = None) -> Artifact:
    """Read a ``.byre`` / ``.byre.mlir`` file (or its bytes) and verify it: the 1.2 header's sha256 before MLIR
    parses anything, then the module (see docs/byre.md, "What the reader checks")."""
    if isinstance(source, Artifact):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), "<bytes>"
    else:
        where = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise ByreFormatError(where, f"cannot read: {e.strerror}") from None
    got = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None:
        if got != expected_sha256.lower():
            from ..errors import ArtifactIntegrityError

            raise ArtifactIntegrityError(f"{where}: sha256 is {got}, but {expected_sha256} was pinned")
    module, opened = read_byre_file(data, where)
    art = Artifact(module, None if where == "<bytes>" else where)
    art._file_sha256 = got
    art.integrity = opened.integrity
    if opened.kind == "bytecode" and opened.integrity == container.VERIFIED:
        art._bytes = data  # a 1.0/1.1 file or text is written back as ByRE 1.2 bytecode
    return art
