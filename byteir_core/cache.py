"""An on-disk cache of compiled ByRE artifacts, shared by processes (``BYTEIR_CACHE_DIR``).

Keys are sha256 hex digests the caller computes from everything the artifact depends on; :func:`make_key`
adds what every entry depends on (byteir-core and plugin versions). Entries are written atomically (temp file
+ rename), so concurrent processes never read half an artifact; a corrupt entry is removed and recompiled.
``byteir cache ls|clear`` manages it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".byre"


def cache_dir() -> Path:
    env = os.environ.get("BYTEIR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("byteir"))
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "byteir"


def make_key(*parts) -> str:
    """sha256 over ``parts`` (bytes, str or JSON-able) plus the installed core and plugin versions."""
    from . import __version__
    from .plugins import get_registry

    h = hashlib.sha256()
    # BYTEIR_* settings can change what plugins emit (BYTEIR_CPU: the CPU kernels are compiled for): all of
    # them but the cache's own location are part of every key
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("BYTEIR_") and k != "BYTEIR_CACHE_DIR"}
    for p in (__version__, json.dumps(get_registry().versions(), sort_keys=True), env, *parts):
        if isinstance(p, (bytes, bytearray, memoryview)):
            data = bytes(p)
        elif isinstance(p, str):
            data = p.encode()
        else:
            data = json.dumps(p, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@dataclass
class Entry:
    key: str
    path: Path
    size: int
    mtime: float
    label: str


class CompileCache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.dir = Path(directory) if directory is not None else cache_dir()

    def _path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a lowercase hex digest, got {key!r}")
        return self.dir / (key + SUFFIX)

    def get(self, key: str):
        """The cached :class:`~byteir_core.byre.Artifact`, or None (a corrupt entry is deleted)."""
        from .byre import read_artifact
        from .errors import ByteirError

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            art = read_artifact(path)
        except ByteirError:
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used
        return art

    def put(self, key: str, artifact, label: str = "") -> Path:
        path = self._path(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        data = artifact.to_bytes()
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if label:
            meta = path.with_suffix(".json")
            meta.write_text(json.dumps({"label": label, "created": time.time()}))
        return path

    def entries(self) -> list[Entry]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob("*" + SUFFIX)):
            if p.name.startswith(".tmp-"):
                continue
            st = p.stat()
            label = ""
            meta = p.with_suffix(".json")
            if meta.exists():
                try:
                    label = json.loads(meta.read_text()).get("label", "")
                except (OSError, ValueError):
                    pass
            out.append(Entry(p.stem, p, st.st_size, st.st_mtime, label))
        return sorted(out, key=lambda e: e.mtime, reverse=True)

    def clear(self) -> int:
        n = 0
        if not self.dir.is_dir():
            return 0
        for p in list(self.dir.glob("*" + SUFFIX)) + list(self.dir.glob("*.json")):
            p.unlink(missing_ok=True)
            n += p.suffix == SUFFIX
        return n
