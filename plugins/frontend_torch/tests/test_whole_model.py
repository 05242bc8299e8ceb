"""byteir_core.compile(nn.Module, example_inputs) and `byteir compile model.pt2`, compared with eager."""

import subprocess
import sys

import byteir_core
import numpy as np
import pytest
import torch
from byteir_core.errors import FrontendError, UnsupportedOpError
from torch.export import Dim

import zoo

# Tolerances per dtype (max abs difference against eager, outputs of magnitude ~1).
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _leaves(x):
    return torch.utils._pytree.tree_leaves(x)


def _compile_and_compare(module, args, dtype=torch.float32):
    module.eval()
    art = byteir_core.compile(module, args, target="cpu")
    session = byteir_core.load(art.to_bytes())      # through the serialized artifact
    result = session(*args)
    with torch.no_grad():
        eager = module(*args)
    got, expected = _leaves(result), _leaves(eager)
    # the model's own structure comes back (MultiOut: a dict and a tensor in a tuple)
    assert torch.utils._pytree.tree_structure(result) == torch.utils._pytree.tree_structure(eager)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert isinstance(g, torch.Tensor), "torch in, torch out"
        assert g.shape == e.shape and g.dtype == e.dtype
        if e.dtype.is_floating_point:
            torch.testing.assert_close(g, e, **TOL[dtype])
        else:
            assert torch.equal(g, e)
    return art


CASES = zoo.CASES


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_matches_eager(name):
    torch.manual_seed(0)
    cls, make_args = CASES[name]
    module = cls()
    if name == "cnn-batchnorm":  # non-trivial running statistics
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    art = _compile_and_compare(module, make_args())
    assert "reference" not in art.report["ops_per_backend"], art.report["ops_per_backend"]


@pytest.mark.parametrize("cpu", [None, "x86-64-v3", "x86-64"], ids=["native", "avx2", "baseline"])
def test_bf16_mlp_matches_eager_within_bf16_tolerance(cpu, monkeypatch):
    """Also with kernels built for an AVX2 and a baseline x86-64 CPU (no bf16/f16 conversion instructions), so an
    AVX-512 machine runs the code those machines get."""
    if cpu:
        from byteir_backend_cpu.provider import host_isa

        if cpu == "x86-64-v3" and host_isa() and "avx2" not in host_isa():
            pytest.skip("kernels for x86-64-v3 need AVX2, which this CPU lacks")
        monkeypatch.setenv("BYTEIR_CPU", cpu)
    torch.manual_seed(0)
    module = zoo.MLP().to(torch.bfloat16)
    _compile_and_compare(module, (torch.randn(4, 16, dtype=torch.bfloat16),), dtype=torch.bfloat16)


def test_caller_inputs_are_not_modified_by_in_place_models():
    x = torch.randn(3, 4)
    before = x.clone()
    _compile_and_compare(zoo.InPlace(), (x,))
    assert torch.equal(x, before)


def test_attention_runs_as_one_custom_call_decomposed_for_cpu():
    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    q = torch.randn(1, 2, 8, 16)
    art = _compile_and_compare(Attn(), (q, torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)))
    assert any("byteir.flash_attn_fwd x1" in n for n in art.report["notes"]), art.report["notes"]


def test_exported_program_and_pt2_file_via_cli(tmp_path):
    torch.manual_seed(0)
    module = zoo.MLP().eval()
    x = torch.randn(4, 16)
    prog = torch.export.export(module, (x,))
    pt2 = tmp_path / "mlp.pt2"
    torch.export.save(prog, str(pt2))
    out = tmp_path / "mlp.byre"
    r = subprocess.run([sys.executable, "-m", "byteir_core.cli", "compile", str(pt2), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = byteir_core.load(str(out))(x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(got, module(x).numpy(), rtol=1e-4, atol=1e-5)
    # the ExportedProgram object itself is accepted too
    got2 = byteir_core.load(byteir_core.compile(prog, target="cpu"))(x)
    torch.testing.assert_close(got2, module(x).detach(), rtol=1e-4, atol=1e-5)


def test_missing_pt2_file_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "byteir_core.cli", "compile", str(tmp_path / "nope.pt2")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "nope.pt2: no such file" in r.stderr and "Traceback" not in r.stderr


def test_export_failure_names_the_module_and_why():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x - 1

    with pytest.raises(FrontendError) as ei:
        byteir_core.compile(DataDependent(), (torch.randn(3),))
    msg = str(ei.value)
    assert msg.startswith("torch.export failed for module DataDependent:")
    assert "data-dependent" in msg


def test_unsupported_aten_op_names_the_op_and_source_line():
    class Digamma(torch.nn.Module):
        def forward(self, x):
            return torch.digamma(x.abs() + 1) * 2

    with pytest.raises(FrontendError) as ei:
        byteir_core.compile(Digamma(), (torch.randn(3),))
    msg = str(ei.value)
    assert "aten.digamma" in msg and "test_whole_model.py" in msg


def test_missing_example_inputs_is_a_clear_error():
    with pytest.raises(FrontendError, match="needs example_inputs"):
        byteir_core.compile(zoo.MLP())


def test_dynamic_dims_reach_stablehlo_and_cpu_names_the_dynamic_argument():
    module = torch.nn.Linear(4, 3)
    from byteir_core.mlir import new_context
    from byteir_frontend_torch.exporting import to_stablehlo

    m = to_stablehlo(module, (torch.randn(2, 4),), {"dynamic_shapes": {"input": {0: Dim("batch")}}}, new_context())
    assert "tensor<?x4xf32>" in str(m)
    with pytest.raises(UnsupportedOpError) as ei:
        byteir_core.compile(module, (torch.randn(2, 4),), options={"dynamic_shapes": {"input": {0: Dim("batch")}}})
    assert "argument 0 (tensor<?x4xf32>) dim 0" in str(ei.value)


def test_fx_passes_option_validated():
    with pytest.raises(FrontendError, match="unknown fx pass"):
        byteir_core.compile(zoo.MLP(), (torch.randn(2, 16),), options={"fx_passes": ["nope"]})


def test_export_failure_carries_torch_exports_suggested_fix():
    class Specializes(torch.nn.Module):
        def forward(self, x):
            return x.reshape(2, 8) * 2  # pins the "dynamic" batch to 2

    with pytest.raises(FrontendError) as ei:
        byteir_core.compile(Specializes(), (torch.randn(2, 8),),
                            options={"dynamic_shapes": {"x": {0: Dim("batch")}}})
    msg = str(ei.value)
    assert "module Specializes" in msg and "suggested fix (from torch.export)" in msg and "batch = 2" in msg


@pytest.mark.slow
def test_readme_pytorch_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    pytest.importorskip("transformers")
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if 'backend="byteir"' in b]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    with torch.no_grad():
        expected = scope["model"].eval()(scope["ids"]).logits
    torch.testing.assert_close(scope["logits"], expected, rtol=1e-4, atol=1e-4)
    assert scope["loss"].item() > 0 and (tmp_path / "llama.byre").exists()
    assert all(p.grad is not None for p in scope["model"].parameters() if p.requires_grad)
