import os
import sys

import pytest

# the zoo module beside the tests (pytest runs with --import-mode=importlib)
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True, scope="session")
def _private_compile_cache(tmp_path_factory):
    """Every test session gets its own compile cache: no stale artifacts from (or into) the user's cache."""
    old = os.environ.get("BYTEIR_CACHE_DIR")
    os.environ["BYTEIR_CACHE_DIR"] = str(tmp_path_factory.mktemp("byteir-cache"))
    yield
    if old is None:
        os.environ.pop("BYTEIR_CACHE_DIR", None)
    else:
        os.environ["BYTEIR_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
