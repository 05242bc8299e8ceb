"""The on-disk compile cache (byteir_core.cache) and `byteir cache ls|clear`."""

import os
import stat

import byteir_core
import numpy as np
import pytest
from byteir_core.cache import CompileCache, cache_dir, make_key
from byteir_core.cli import main

from programs import MLP, mlp_numpy


@pytest.fixture
def art():
    return byteir_core.compile(MLP, target="reference")


def test_put_get_roundtrip_runs(tmp_path, art):
    cache = CompileCache(tmp_path)
    key = make_key("graph", {"shape": [4, 16]})
    assert cache.get(key) is None
    path = cache.put(key, art, label="mlp")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    back = cache.get(key)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(back)(x), mlp_numpy(x), rtol=1e-5, atol=1e-6)
    assert [e.label for e in cache.entries()] == ["mlp"]
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left behind


def test_keys_depend_on_every_part_and_on_installed_versions():
    assert make_key("a", 1) == make_key("a", 1)
    assert make_key("a", 1) != make_key("a", 2)
    assert make_key("ab", "c") != make_key("a", "bc")  # parts are length-delimited


def test_corrupt_entry_is_dropped_not_crashed_on(tmp_path, art):
    cache = CompileCache(tmp_path)
    key = make_key("x")
    path = cache.put(key, art)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert cache.get(key) is None
    assert not path.exists()


def test_bad_key_refused(tmp_path):
    with pytest.raises(ValueError, match="hex digest"):
        CompileCache(tmp_path).get("../../etc/passwd")


def test_env_var_moves_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BYTEIR_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_cli_ls_and_clear(tmp_path, monkeypatch, capsys, art):
    monkeypatch.setenv("BYTEIR_CACHE_DIR", str(tmp_path))
    CompileCache().put(make_key("one"), art, label="first model")
    assert main(["cache", "ls"]) == 0
    out = capsys.readouterr().out
    assert "1 artifact(s)" in out and "first model" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert CompileCache().entries() == []
    assert main(["cache", "ls", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
