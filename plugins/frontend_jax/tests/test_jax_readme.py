"""The project README's JAX snippets run as written (Python blocks in order, then the shell block)."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def jax_section() -> str:
    """The project README's JAX section (from its heading to the next one of the same level)."""
    text = README.read_text()
    start = text.index("\n## JAX\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def test_readme_snippets_run(tmp_path):
    text = jax_section()
    python = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S))
    assert "byteir_core.compile" in python and "byteir compile" in shell
    r = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == ["['logits', 'norm']", "(2, 4)"]
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    r = subprocess.run(["bash", "-ec", shell], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "result['logits']: float32 [2, 4]" in r.stdout
