"""The model zoo for ``--target cuda``, run through Triton's interpreter on the host: MLP, a CNN with BatchNorm,
BERT, GPT-2 and LLaMA (transformers configs, random weights) against torch eager, fp32/fp16/bf16; and a LLaMA
training step under ``torch.compile(backend="byteir", options={"target": "cuda"})``.

Each test also asserts what ran where: everything on cuda."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cuda_check import compile_cuda, load_interpreted  # noqa: E402
from transformer_models import bert, gpt2, llama  # noqa: E402
from transformer_models import main_output as _main_output  # noqa: E402

pytestmark = pytest.mark.slow

# Max abs difference against eager, per dtype (reductions and GEMMs accumulate in fp32 on both sides; bf16/f16
# differ by where intermediate results are rounded).
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=1e-2, atol=1e-2),
       torch.bfloat16: dict(rtol=6e-2, atol=6e-2)}


def _on_cuda_only(art, allowed_elsewhere=()):
    per = art.report["ops_per_backend"]
    elsewhere = {op for b, ops in per.items() if b != "cuda" for op in ops}
    assert elsewhere <= set(allowed_elsewhere), per


def _run(model, args):
    art = compile_cuda(model, args)
    out = load_interpreted(art).run(*args)
    return art, out[0]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                               torch.nn.LayerNorm(64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
                               torch.nn.Softmax(-1)), (torch.randn(8, 32),)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("build", [mlp, gpt2, llama, bert], ids=["mlp", "gpt2", "llama", "bert"])
def test_model_matches_eager(build, dtype):
    torch.manual_seed(0)
    model, args = build()
    model = model.to(dtype).eval()
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    art, got = _run(model, args)
    _on_cuda_only(art)
    with torch.no_grad():
        want = _main_output(model(*args))
    torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])
    if build is not mlp:  # attention is one fused kernel pair, not its decomposition
        calls = art.report["ops_per_backend"]["cuda"].get("stablehlo.custom_call", 0)
        assert calls >= 2, art.report["ops_per_backend"]


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(y.flatten(1))


def test_cnn_with_batchnorm_runs_on_cuda_alone():
    """Convolution (implicit GEMM, BatchNorm folded into it), pooling and the head: one device, no copies."""
    torch.manual_seed(0)
    model = Cnn().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 8, 8)
    art, got = _run(model, (x,))
    per = art.report["ops_per_backend"]
    assert set(per) == {"cuda"} and {"stablehlo.convolution", "stablehlo.reduce_window"} <= set(per["cuda"]), per
    assert art.report["copies"] == []
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)


def test_llama_training_step_under_torch_compile(monkeypatch, tmp_path):
    """Forward and backward graphs (flash attention fwd/bwd included) compiled for cuda and interpreted: the loss
    and every gradient match eager's."""
    monkeypatch.setenv("BYTEIR_CUDA_INTERPRET", "1")
    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "none")
    monkeypatch.setenv("BYTEIR_CACHE_DIR", str(tmp_path))
    from byteir_frontend_torch import dynamo

    torch.manual_seed(0)
    model, (ids,) = llama()
    ref_model = transformers.LlamaForCausalLM(model.config)
    ref_model.load_state_dict(model.state_dict())
    dynamo.compile_log.clear()
    compiled = torch.compile(model, backend="byteir", options={"target": "cuda", "strict": True})
    loss = compiled(ids, labels=ids).loss
    loss.backward()
    ref = ref_model(ids, labels=ids).loss
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
    kinds = {e["kind"] for e in dynamo.compile_log}
    assert {"forward", "backward"} <= kinds
    for e in dynamo.compile_log:  # the backward's scatter-adds (embedding, cross-entropy) included
        per = e["report"]["ops_per_backend"]
        assert set(per) == {"cuda"}, per
    bwd = [e for e in dynamo.compile_log if e["kind"] == "backward"][0]["report"]["ops_per_backend"]["cuda"]
    assert bwd.get("stablehlo.custom_call", 0) >= 2  # flash_attn_bwd per layer
