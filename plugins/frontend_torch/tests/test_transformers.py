"""transformers models built from small configs (random weights, no hub) through byteir, against eager.

Marked slow (each compiles a whole model): they run in `make test` / CI; `make test-fast` skips them.
"""

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import byteir_core
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is a test dependency of the frontend "
                                   "(pip install byteir-frontend-torch[test])")

pytestmark = pytest.mark.slow

# Max abs difference of logits / hidden states against eager, per dtype.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}


from transformer_models import bert, gpt2, llama  # noqa: E402
from transformer_models import main_output as _main_output  # noqa: E402



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("build", [gpt2, llama, bert], ids=["gpt2", "llama", "bert"])
def test_whole_model_compile_matches_eager(build, dtype):
    torch.manual_seed(0)
    model, args = build()
    model = model.to(dtype).eval()
    art = byteir_core.compile(model, args, target="cpu")
    session = byteir_core.load(art.to_bytes())
    got = _main_output(session(*args))  # the model's own ModelOutput comes back
    with torch.no_grad():
        expected = _main_output(model(*args))
    assert got.dtype == dtype and got.shape == expected.shape
    torch.testing.assert_close(got.float(), expected.float(), **TOL[dtype])
    ops = art.report["ops_per_backend"]
    assert "reference" not in ops, ops
    assert any("byteir.flash_attn_fwd x2" in n for n in art.report["notes"]), "attention rewritten per layer"


def test_llama_trains_five_adamw_steps_with_torch_compile_like_eager():
    from byteir_frontend_torch import dynamo

    torch.manual_seed(0)
    model, (ids,) = llama()
    ref = copy.deepcopy(model)
    start = len(dynamo.compile_log)
    compiled = torch.compile(model, backend="byteir", options={"strict": True})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    losses, ref_losses = [], []
    for _ in range(5):
        loss = compiled(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_loss = ref(input_ids=ids, labels=ids).loss
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        losses.append(loss.item())
        ref_losses.append(ref_loss.item())
    assert losses[-1] < losses[0]  # it trains
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)
    kinds = [e["kind"] for e in dynamo.compile_log[start:]]
    assert "forward" in kinds and "backward" in kinds
    notes = " ".join(n for e in dynamo.compile_log[start:] for n in e["report"].get("notes", []))
    assert "byteir.flash_attn_fwd" in notes and "byteir.flash_attn_bwd" in notes


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_ddp_gloo_two_processes(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    port = _free_port()
    env = {**os.environ, "BYTEIR_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "BYTEIR_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", port, str(tmp_path / f"r{r}.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    for r in results:
        torch.testing.assert_close(torch.tensor(r["compiled"]), torch.tensor(r["eager"]), rtol=1e-5, atol=1e-6)
        assert r["max_param_diff"] < 1e-5
        assert "forward" in r["byteir_graphs"] and "backward" in r["byteir_graphs"]
    # gradients were all-reduced: both ranks hold the same parameters, although their data differed
    assert results[0]["compiled"] != results[1]["compiled"]
    assert abs(results[0]["param_checksum"] - results[1]["param_checksum"]) < 1e-9
