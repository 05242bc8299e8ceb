"""Throwaway third-party plugin packages, written into a directory that goes on PYTHONPATH.

Each package is a module plus a ``*.dist-info`` folder with METADATA and ``entry_points.txt`` in the group
``byteir``: exactly what ``pip install`` leaves behind, so ``importlib.metadata`` finds it the same way.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


def install_plugin(site: Path, module: str, source: str, entry: str, dist: str | None = None,
                   version: str = "0.3.1") -> None:
    dist = dist or f"byteir-plugin-{entry}"
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[byteir]\n{entry} = {module}\n")


def run_python(site: Path, script: str, timeout: float = 180, **env_extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), **env_extra}
    for var in ("BYTEIR_PLUGINS", "BYTEIR_DISABLE_PLUGINS"):
        if var not in env_extra:
            env.pop(var, None)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=timeout)


def list_plugins(site: Path, **env_extra) -> dict:
    r = run_python(site, "import sys; from byteir_core.cli import main; sys.exit(main(['list-plugins', '--json']))",
                   **env_extra)
    assert r.returncode == 0, r.stderr
    return {p["name"]: p for p in json.loads(r.stdout)}
