"""On a real GPU (``make test-gpu``; deselected elsewhere by the ``gpu`` marker): the zoo compiled for the local
architecture and run by the CuPy provider against torch CUDA eager, NumPy in/out, a caller's stream, CUDA graph
replay and flash attention against torch's SDPA.

Needs CuPy (cupy-cuda12x/13x) and a CUDA build of torch beside byteir; fails, never skips, without them."""

import numpy as np
import pytest

import byteir_core

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def gpu(tmp_path_factory):
    from byteir_backend_cuda.gpu import gpu_problem

    why = gpu_problem()
    assert why is None, f"make test-gpu needs a GPU: {why}"
    assert torch.cuda.is_available(), "make test-gpu needs a CUDA build of torch"


TOL = {torch.float32: dict(rtol=1e-3, atol=1e-3), torch.float16: dict(rtol=2e-2, atol=2e-2),
       torch.bfloat16: dict(rtol=6e-2, atol=6e-2)}


def _zoo():
    import test_cuda_models as zoo

    return {"mlp": zoo.mlp, "gpt2": zoo.gpt2, "llama": zoo.llama, "bert": zoo.bert}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("name", ["mlp", "gpt2", "llama", "bert"])
def test_zoo_on_the_gpu_matches_torch_cuda_eager(name, dtype):
    import test_cuda_models as zoo

    torch.manual_seed(0)
    model, args = _zoo()[name]()
    model = model.to(dtype).eval()
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    art = byteir_core.compile(model, args, target="cuda")
    session = byteir_core.load(art.to_bytes(), device="cuda")
    cuda_args = tuple(a.cuda() for a in args)
    got = session.run(*cuda_args)[0]
    assert isinstance(got, torch.Tensor) and got.is_cuda  # torch CUDA in, torch CUDA out (DLPack, no copy)
    with torch.no_grad():
        want = zoo._main_output(model.cuda()(*cuda_args))
    torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])


def test_numpy_in_numpy_out_and_a_callers_stream():
    from programs import MLP, mlp_numpy

    art = byteir_core.compile(MLP, target="cuda")
    session = byteir_core.load(art.to_bytes(), device="cuda")
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    (y,) = session.run(x)
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, mlp_numpy(x), rtol=1e-4, atol=1e-5)
    stream = torch.cuda.Stream()
    req = session.new_request_context(stream=stream)
    req.bind_arg(session.get_input_arg_offsets()[0], torch.from_numpy(x).cuda())
    req.finish_io_binding()
    req.run()
    req.sync()
    out = req.get_arg(session.get_output_arg_offsets()[0])
    np.testing.assert_allclose(np.asarray(out.get() if hasattr(out, "get") else out), y, rtol=1e-6)
    req.release()


def test_cuda_graph_replays_give_the_eager_answer(monkeypatch):
    import test_cuda_models as zoo

    torch.manual_seed(0)
    model, args = zoo.llama()
    model = model.half().eval()
    art = byteir_core.compile(model, args, target="cuda")
    results = {}
    for graphs in ("0", "1"):
        monkeypatch.setenv("BYTEIR_CUDA_GRAPHS", graphs)
        session = byteir_core.load(art.to_bytes(), device="cuda")
        stream = torch.cuda.Stream()
        ids = args[0].cuda()
        with torch.cuda.stream(stream):
            outs = [session.run(ids)[0].clone() for _ in range(4)]  # eager, capture, replay, replay
        stream.synchronize()
        for o in outs[1:]:
            torch.testing.assert_close(o, outs[0], rtol=0, atol=0)
        results[graphs] = outs[0]
    torch.testing.assert_close(results["1"], results["0"], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_matches_sdpa(dtype, causal):
    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

    q, k, v = (torch.randn(2, 8, 256, 64, dtype=dtype) for _ in range(3))
    art = byteir_core.compile(Attn(), (q, k, v), target="cuda")
    assert art.report["ops_per_backend"]["cuda"].get("stablehlo.custom_call") == 1
    got = byteir_core.load(art.to_bytes(), device="cuda").run(q.cuda(), k.cuda(), v.cuda())[0]
    want = torch.nn.functional.scaled_dot_product_attention(q.cuda(), k.cuda(), v.cuda(), is_causal=causal)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
