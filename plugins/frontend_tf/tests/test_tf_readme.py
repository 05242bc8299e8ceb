"""The project README's TensorFlow section runs as written: its Python block, then its shell block."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def tf_section() -> str:
    text = README.read_text()
    start = text.index("\n## TensorFlow and Keras\n")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_tf_snippets_run(tmp_path):
    text = tf_section()
    (python,) = re.findall(r"```python\n(.*?)```", text, re.S)
    (shell,) = re.findall(r"```sh\n(.*?)```", text, re.S)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    r = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "['logits', 'probs']"
    r = subprocess.run(["bash", "-ec", shell], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "features" not in r.stderr and "output 0" in r.stdout and "[8, 4]" in r.stdout, r.stdout
