"""The memory plans of real models pass byteir_core.runtime.debug.check_memory_plan: no two buffers live at one
step share arena bytes (unless one views the other), no arena buffer is read before it is written. Checked on
the transformers models of the frontend tests (LLaMA, GPT-2, BERT, fp32 and bf16) and its zoo of nn.Modules,
compiled for cpu; and each runs with BYTEIR_POISON=1 (arenas and kernel temporaries NaN-filled) to the same
result as without."""

import os
import sys

import numpy as np
import pytest

import byteir_core
from byteir_core.runtime.debug import check_memory_plan

torch = pytest.importorskip("torch")
pytest.importorskip("byteir_frontend_torch")

pytestmark = pytest.mark.slow

ZOO_DIR = os.path.join(os.path.dirname(__file__), "..", "plugins", "frontend_torch", "tests")


def _zoo():
    sys.path.insert(0, ZOO_DIR)
    try:
        import zoo
    finally:
        sys.path.remove(ZOO_DIR)
    return zoo.CASES


def _transformer(name, dtype):
    pytest.importorskip("transformers")
    import transformer_models

    model, args = getattr(transformer_models, name)()
    return model.to(dtype), args


def _check(model, args, monkeypatch):
    model = model.eval()
    monkeypatch.setenv("BYTEIR_POISON", "1")  # kernels' temporaries too (read when compiling)
    art = byteir_core.compile(model, args, target="cpu")
    problems = check_memory_plan(art.module)
    assert problems == [], "\n".join(problems[:20])
    poisoned = byteir_core.load(art.to_bytes()).run(*args)
    monkeypatch.delenv("BYTEIR_POISON")
    plain = byteir_core.load(art.to_bytes()).run(*args)
    for p, q in zip(poisoned, plain):
        p, q = np.asarray(p.float() if p.dtype == torch.bfloat16 else p), \
            np.asarray(q.float() if q.dtype == torch.bfloat16 else q)
        assert not np.isnan(p).any()
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["llama", "gpt2", "bert"])
def test_transformer_plans_are_sound(name, dtype, monkeypatch):
    torch.manual_seed(0)
    _check(*_transformer(name, getattr(torch, dtype)), monkeypatch)


@pytest.mark.parametrize("name", ["mlp", "cnn-batchnorm", "lstm", "transformer-encoder-layer",
                                  "in-place-and-aliasing", "multiple-outputs", "int64-inputs"])
def test_zoo_plans_are_sound(name, monkeypatch):
    torch.manual_seed(0)
    cls, make_args = _zoo()[name]
    _check(cls(), make_args(), monkeypatch)
