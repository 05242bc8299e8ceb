"""FlashAttention kernels of the cuda backend, run through Triton's interpreter against float64 torch math of
the ``byteir.flash_attn_fwd``/``_bwd`` contract (scale, bottom-right causal, bool mask keeps / float mask adds,
broadcast masks, grouped-query heads); gradients against torch autograd of that math. Plus: every kernel
compiles to cubin + PTX for sm_80 and sm_90, and the PTX assembles with Triton's ptxas."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton: the kernels run on the host

import base64  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from byteir_backend_cuda import attention, triton_build  # noqa: E402
from byteir_backend_cuda.interpret import ProgramRunner  # noqa: E402
from byteir_backend_cuda.program import Program  # noqa: E402
from cuda_check import assemble  # noqa: E402

needs_interpreter = pytest.mark.usefixtures("bf16_dot")  # fails, never skips, without the interpreter

MLIR = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.bool: "i1",
        torch.float64: "f64"}
SMALL = dict(config=dict(BLOCK_M=16, BLOCK_N=16))  # several query and key blocks even on small shapes
SMALL_BWD = dict(config=dict(BLOCK_M_KV=16, BLOCK_N_KV=16, BLOCK_M_Q=16, BLOCK_N_Q=16))
# |got - want| <= atol + rtol * |want|
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=1e-2, atol=1e-2),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
TOL_BWD = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=2e-2, atol=2e-2),
           torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}


@pytest.fixture
def bf16_dot():
    """bf16 ``tl.dot`` in Triton's interpreter needs the provider's fix (triton_build._widen_bf16_dots), which
    ``interpreter_ready()`` installs: the attention programs run exactly as the cuda-interpret provider runs them."""
    assert triton_build.interpreter_ready() is None


def spec(t):
    return (list(t.shape), MLIR[t.dtype])


def reference(q, k, v, mask, scale, causal):
    """(out, lse) in float64: softmax(mask(q k^T * scale)) v. A row with no unmasked key gets out 0 and lse
    -inf, computed so that autograd sees no NaN either."""
    q, k, v = q.double(), k.double(), v.double()
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = q @ k.transpose(-1, -2) * scale
    sq, sk = s.shape[-2:]
    if causal:  # bottom-right aligned: row i sees keys j <= i + sk - sq
        s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(sk - sq), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    lse = torch.logsumexp(s, -1)
    empty = torch.isneginf(lse)[..., None]
    p = torch.softmax(torch.where(empty, 0.0, s), -1) * ~empty
    return p @ v, lse


def make_inputs(B, H, HKV, SQ, SK, D, DV, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, SQ, D, generator=g).to(dtype)
    k = torch.randn(B, HKV, SK, D, generator=g).to(dtype)
    v = torch.randn(B, HKV, SK, DV, generator=g).to(dtype)
    return q, k, v


def make_mask(kind, shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    if kind is None:
        return None
    if kind == "bool":
        return torch.rand(shape, generator=g) > 0.3
    m = torch.randn(shape, generator=g)
    m[torch.rand(shape, generator=g) > 0.8] = float("-inf")  # -inf entries mask like False
    return m.double() if kind == "float64" else m


def run_fwd(q, k, v, mask, scale, causal, **kw):
    B, H, SQ, _ = q.shape
    out = torch.full((B, H, SQ, v.shape[3]), float("nan"), dtype=q.dtype)
    lse = torch.full((B, H, SQ), float("nan"), dtype=torch.float32)
    prog = attention.fwd_program(spec(q), spec(k), spec(v), None if mask is None else spec(mask), spec(out),
                                 spec(lse), scale=scale, causal=causal, **kw)
    ProgramRunner(prog)([q, k, v] + ([] if mask is None else [mask]), [out, lse])
    return out, lse


def run_bwd(dout, q, k, v, mask, out, lse, scale, causal, **kw):
    dq, dk, dv = (torch.full_like(t, float("nan")) for t in (q, k, v))
    prog = attention.bwd_program(spec(dout), spec(q), spec(k), spec(v), None if mask is None else spec(mask),
                                 spec(out), spec(lse), spec(dq), spec(dk), spec(dv), scale=scale, causal=causal,
                                 **kw)
    ProgramRunner(prog)([dout, q, k, v] + ([] if mask is None else [mask]) + [out, lse], [dq, dk, dv])
    return dq, dk, dv


def close(got, want, **tol):
    torch.testing.assert_close(got.double(), want.double(), equal_nan=False, **tol)


# (B, H, H_kv, Sq, Sk, D, Dv, causal, mask kind, mask shape) -- mask shapes broadcast to [B,H,Sq,Sk]
FWD_CASES = {
    "plain": (1, 2, 2, 33, 33, 64, 64, False, None, None),
    "causal": (1, 2, 2, 33, 33, 64, 64, True, None, None),
    "causal_sq_lt_sk": (1, 1, 1, 17, 40, 40, 40, True, None, None),
    "causal_sq_gt_sk": (1, 1, 1, 40, 17, 40, 40, True, None, None),  # first 23 rows see no key
    "d40_dv24": (2, 1, 1, 20, 35, 40, 24, False, None, None),
    "gqa_causal_bool": (2, 4, 2, 24, 24, 40, 40, True, "bool", [1, 1, 24, 24]),
    "gqa4_float": (1, 4, 1, 18, 30, 32, 32, False, "float", [1, 4, 18, 30]),
    "bool_b11k": (2, 2, 2, 20, 36, 16, 16, False, "bool", [2, 1, 1, 36]),
    "bool_qk_rank2": (1, 2, 2, 20, 36, 16, 16, True, "bool", [20, 36]),
    "bool_full": (2, 2, 1, 20, 20, 16, 16, False, "bool", [2, 2, 20, 20]),
    "bool_rank1": (1, 2, 2, 20, 36, 16, 16, False, "bool", [36]),
    "float_1hq1": (1, 2, 2, 20, 36, 16, 16, False, "float", [1, 2, 20, 1]),
    "float_b11k_causal": (2, 2, 2, 30, 20, 16, 16, True, "float", [2, 1, 1, 20]),
    "f64_mask": (1, 2, 2, 20, 20, 16, 16, False, "float64", [20, 20]),
}


@needs_interpreter
@pytest.mark.parametrize("case", FWD_CASES)
def test_fwd_f32_matches_reference(case):
    B, H, HKV, SQ, SK, D, DV, causal, kind, mshape = FWD_CASES[case]
    q, k, v = make_inputs(B, H, HKV, SQ, SK, D, DV, torch.float32)
    mask = make_mask(kind, mshape)
    out, lse = run_fwd(q, k, v, mask, 0.3, causal, **SMALL)
    want_out, want_lse = reference(q, k, v, mask, 0.3, causal)
    close(out, want_out, **TOL[torch.float32])
    close(lse, want_lse.float(), **TOL[torch.float32])


@needs_interpreter
def test_fwd_default_blocks_and_numpy_buffers():
    """The block sizes fwd_config picks (one block here), with NumPy arrays as the program's buffers."""
    q, k, v = make_inputs(1, 2, 1, 70, 50, 40, 40, torch.float32)
    out = np.empty((1, 2, 70, 40), np.float32)
    lse = np.empty((1, 2, 70), np.float32)
    prog = attention.fwd_program(spec(q), spec(k), spec(v), None, ([1, 2, 70, 40], "f32"), ([1, 2, 70], "f32"),
                                 scale=0.125, causal=True)
    assert prog.kernels[0].constexprs["BLOCK_M"] == attention.fwd_config(40, "f32")["BLOCK_M"]
    ProgramRunner(prog)([q.numpy(), k.numpy(), v.numpy()], [out, lse])
    want_out, want_lse = reference(q, k, v, None, 0.125, True)
    close(torch.from_numpy(out), want_out, **TOL[torch.float32])
    close(torch.from_numpy(lse), want_lse, **TOL[torch.float32])


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("case", ["gqa_causal_bool", "gqa4_float", "plain"])
def test_fwd_half_matches_reference(dtype, case, bf16_dot):
    B, H, HKV, SQ, SK, D, DV, causal, kind, mshape = FWD_CASES[case]
    q, k, v = make_inputs(B, H, HKV, SQ, SK, D, DV, dtype)
    mask = make_mask(kind, mshape)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(dtype)  # a float mask of the data type
    out, lse = run_fwd(q, k, v, mask, 0.3, causal, **SMALL)
    assert out.dtype == dtype
    want_out, want_lse = reference(q, k, v, mask, 0.3, causal)
    close(out, want_out, **TOL[dtype])
    close(lse, want_lse, **TOL[dtype])


@needs_interpreter
@pytest.mark.parametrize("kind", ["bool", "float", "causal"])
def test_fwd_fully_masked_rows_give_zero_and_minus_inf(kind):
    """A row with no unmasked key: lse -inf and out 0, as the core's decomposition, FlashAttention and torch's
    SDPA give."""
    SQ, SK = 20, 18
    q, k, v = make_inputs(1, 2, 2, SQ, SK, 16, 16, torch.float32)
    mask, causal, empty_rows = None, False, [3, 17]
    if kind == "bool":
        mask = torch.ones(1, 2, SQ, SK, dtype=torch.bool)
        mask[:, :, empty_rows] = False
    elif kind == "float":
        mask = torch.zeros(1, 1, SQ, SK)
        mask[:, :, empty_rows] = float("-inf")
    else:
        causal, empty_rows = True, [0, 1]  # Sq > Sk: the first Sq - Sk rows sit above the diagonal
    out, lse = run_fwd(q, k, v, mask, 0.5, causal, **SMALL)
    assert torch.isneginf(lse[:, :, empty_rows]).all()
    assert (out[:, :, empty_rows] == 0).all()
    want_out, want_lse = reference(q, k, v, mask, 0.5, causal)
    close(out, want_out, **TOL[torch.float32])
    close(lse, want_lse.float(), **TOL[torch.float32])


def autograd_reference(dout, q, k, v, mask, scale, causal):
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    out, lse = reference(qd, kd, vd, mask, scale, causal)
    out.backward(dout.double())
    return out.detach(), lse.detach(), qd.grad, kd.grad, vd.grad


BWD_CASES = ["plain", "causal_sq_lt_sk", "causal_sq_gt_sk", "d40_dv24", "gqa_causal_bool", "gqa4_float",
             "bool_b11k", "float_b11k_causal"]


@needs_interpreter
@pytest.mark.parametrize("case", BWD_CASES)
def test_bwd_f32_matches_autograd(case):
    B, H, HKV, SQ, SK, D, DV, causal, kind, mshape = FWD_CASES[case]
    q, k, v = make_inputs(B, H, HKV, SQ, SK, D, DV, torch.float32)
    mask = make_mask(kind, mshape)
    dout = torch.randn(B, H, SQ, DV, generator=torch.Generator().manual_seed(7))
    out, lse, want_dq, want_dk, want_dv = autograd_reference(dout, q, k, v, mask, 0.3, causal)
    dq, dk, dv = run_bwd(dout, q, k, v, mask, out.float(), lse.float(), 0.3, causal, **SMALL_BWD)
    close(dq, want_dq, **TOL_BWD[torch.float32])
    close(dk, want_dk, **TOL_BWD[torch.float32])
    close(dv, want_dv, **TOL_BWD[torch.float32])


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_bwd_half_matches_autograd(dtype, bf16_dot):
    B, H, HKV, SQ, SK, D, DV, causal, kind, mshape = FWD_CASES["gqa_causal_bool"]
    q, k, v = make_inputs(B, H, HKV, SQ, SK, D, DV, dtype)
    mask = make_mask(kind, mshape)
    dout = torch.randn(B, H, SQ, DV, generator=torch.Generator().manual_seed(7)).to(dtype)
    out, lse, want_dq, want_dk, want_dv = autograd_reference(dout, q, k, v, mask, 0.3, causal)
    dq, dk, dv = run_bwd(dout, q, k, v, mask, out.to(dtype), lse.float(), 0.3, causal, **SMALL_BWD)
    assert dq.dtype == dk.dtype == dv.dtype == dtype
    close(dq, want_dq, **TOL_BWD[dtype])
    close(dk, want_dk, **TOL_BWD[dtype])
    close(dv, want_dv, **TOL_BWD[dtype])


@needs_interpreter
@pytest.mark.parametrize("kind", ["bool", "causal"])
def test_bwd_fully_masked_rows_have_zero_gradient(kind):
    """Rows with lse = -inf contribute nothing: their dq is 0 and dk/dv stay finite (no NaN)."""
    SQ, SK = 20, 18
    q, k, v = make_inputs(1, 2, 1, SQ, SK, 16, 16, torch.float32)
    mask, causal, empty_rows = None, False, [3, 17]
    if kind == "bool":
        mask = torch.ones(1, 1, SQ, SK, dtype=torch.bool)
        mask[:, :, empty_rows] = False
    else:
        causal, empty_rows = True, [0, 1]
    dout = torch.randn(1, 2, SQ, 16, generator=torch.Generator().manual_seed(7))
    out, lse, want_dq, want_dk, want_dv = autograd_reference(dout, q, k, v, mask, 0.5, causal)
    dq, dk, dv = run_bwd(dout, q, k, v, mask, out.float(), lse.float(), 0.5, causal, **SMALL_BWD)
    assert (dq[:, :, empty_rows] == 0).all()
    close(dq, want_dq, **TOL_BWD[torch.float32])
    close(dk, want_dk, **TOL_BWD[torch.float32])
    close(dv, want_dv, **TOL_BWD[torch.float32])


@needs_interpreter
def test_fwd_then_bwd_default_blocks():
    """The forward program's out/lse feed the backward program (the blocks bwd_config picks)."""
    q, k, v = make_inputs(1, 2, 1, 24, 40, 40, 24, torch.float32)
    dout = torch.randn(1, 2, 24, 24, generator=torch.Generator().manual_seed(3))
    out, lse = run_fwd(q, k, v, None, 0.2, True)
    dq, dk, dv = run_bwd(dout, q, k, v, None, out, lse, 0.2, True)
    _, _, want_dq, want_dk, want_dv = autograd_reference(dout, q, k, v, None, 0.2, True)
    for got, want in ((dq, want_dq), (dk, want_dk), (dv, want_dv)):
        close(got, want, **TOL_BWD[torch.float32])


@needs_interpreter
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_larger_shapes_default_blocks(dtype):
    q, k, v = make_inputs(2, 4, 2, 200, 260, 64, 64, dtype)
    mask = make_mask("bool", [2, 1, 1, 260])
    dout = torch.randn(2, 4, 200, 64, generator=torch.Generator().manual_seed(3)).to(dtype)
    out, lse = run_fwd(q, k, v, mask, 0.125, True)
    ref_out, ref_lse, want_dq, want_dk, want_dv = autograd_reference(dout, q, k, v, mask, 0.125, True)
    close(out, ref_out, **TOL[dtype])
    close(lse, ref_lse, **TOL[dtype])
    dq, dk, dv = run_bwd(dout, q, k, v, mask, out, lse, 0.125, True)
    for got, want in ((dq, want_dq), (dk, want_dk), (dv, want_dv)):
        close(got, want, **TOL_BWD[dtype])


@needs_interpreter
def test_empty_key_and_query_sequences():
    """Sk = 0: every row is empty (out 0, lse -inf, dq 0). Sq = 0: no query launch; dk, dv are written as 0."""
    q, k, v = make_inputs(1, 2, 1, 5, 0, 16, 16, torch.float32)
    out, lse = run_fwd(q, k, v, None, 1.0, False)
    assert (out == 0).all() and torch.isneginf(lse).all()
    dq, dk, dv = run_bwd(torch.ones_like(out), q, k, v, None, out, lse, 1.0, False)
    assert (dq == 0).all() and dk.numel() == dv.numel() == 0

    q, k, v = make_inputs(1, 2, 1, 0, 7, 16, 16, torch.float32)
    out, lse = run_fwd(q, k, v, None, 1.0, True)
    assert out.numel() == 0
    dq, dk, dv = run_bwd(out, q, k, v, None, out, lse, 1.0, True)
    assert (dk == 0).all() and (dv == 0).all()


# --- program layout -------------------------------------------------------------------------------------

def test_program_buffers_follow_the_convention():
    f16 = lambda s: (s, "f16")  # noqa: E731
    fwd = attention.fwd_program(f16([2, 4, 64, 40]), f16([2, 2, 80, 40]), f16([2, 2, 80, 40]),
                                ([2, 1, 1, 80], "i1"), f16([2, 4, 64, 40]), ([2, 4, 64], "f32"),
                                scale=0.1, causal=True)
    assert [(b.kind, b.index) for b in fwd.buffers] == [("input", 0), ("input", 1), ("input", 2), ("input", 3),
                                                        ("output", 0), ("output", 1)]
    (kernel,) = fwd.kernels
    assert kernel.constexprs["BLOCK_D"] == 64 and kernel.constexprs["MASK_KIND"] == 1
    assert kernel.signature["Mask"] == "*i1"
    launch = fwd.launches[0]
    assert launch.grid == [1, 4, 2] and len(launch.args) == len(kernel.signature)
    assert [a["value"] for a in launch.args[-4:]] == [80, 0, 0, 1]  # mask strides, 0 on broadcast dims

    bwd = attention.bwd_program(f16([2, 4, 64, 40]), f16([2, 4, 64, 40]), f16([2, 2, 80, 40]),
                                f16([2, 2, 80, 40]), None, f16([2, 4, 64, 40]), ([2, 4, 64], "f32"),
                                f16([2, 4, 64, 40]), f16([2, 2, 80, 40]), f16([2, 2, 80, 40]),
                                scale=0.1, causal=False)
    assert [(b.kind, b.index) for b in bwd.buffers] == [
        ("input", 0), ("input", 1), ("input", 2), ("input", 3), ("input", 4), ("input", 5),
        ("output", 0), ("output", 1), ("output", 2), ("scratch", -1)]
    assert bwd.buffers[-1].offset % 256 == 0 and bwd.scratch_bytes % 256 == 0
    assert bwd.scratch_bytes >= 4 * 2 * 4 * 64
    assert [bwd.kernels[x.kernel].name for x in bwd.launches] == ["attn_bwd_delta", "attn_bwd_dkdv",
                                                                   "attn_bwd_dq"]
    for x in bwd.launches:
        assert len(x.args) == len(bwd.kernels[x.kernel].signature)
    again = Program.from_bytes(bwd.to_bytes())
    assert again.kernels[1].source == bwd.kernels[1].source and again.launches == bwd.launches
    assert "@triton.jit" not in again.kernels[1].source


@pytest.mark.parametrize("bad, match", [
    (dict(k=([1, 3, 8, 16], "f32"), v=([1, 3, 8, 16], "f32")), "must divide"),
    (dict(k=([1, 4, 8, 16], "f16")), "one type"),
    (dict(mask=([1, 1, 5, 8], "i1")), "does not broadcast"),
    (dict(mask=([8], "i32")), "mask type"),
    (dict(lse=([1, 4, 8], "f16")), "lse"),
])
def test_bad_shapes_are_refused(bad, match):
    args = dict(q=([1, 4, 8, 16], "f32"), k=([1, 2, 8, 16], "f32"), v=([1, 2, 8, 16], "f32"), mask=None,
                out=([1, 4, 8, 16], "f32"), lse=([1, 4, 8], "f32"))
    assert attention.unsupported_reason(args["q"], args["k"], args["v"], args["mask"]) is None
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        attention.fwd_program(**args, scale=1.0, causal=False)
    if "lse" not in bad:
        assert re.search(match, attention.unsupported_reason(args["q"], args["k"], args["v"], args["mask"]))


# --- compilation ----------------------------------------------------------------------------------------

LIMIT_SHARED = {80: 166912, 90: 232448}  # max dynamic shared memory per block (bytes)


def test_kernels_compile_for_sm80_and_sm90(tmp_path, monkeypatch):
    """One fwd and one bwd configuration (f16, d=64, causal, with a bool / float mask): cubin is an ELF, the
    shared memory fits, and the PTX assembles with Triton's own ptxas."""
    plugin_root = str(Path(attention.__file__).resolve().parents[1])  # the compile worker imports the package
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [plugin_root, os.environ.get("PYTHONPATH")])))
    f16 = lambda s: (s, "f16")  # noqa: E731
    B, H, S, D = 2, 4, 256, 64
    fwd = attention.fwd_program(f16([B, H, S, D]), f16([B, 2, S, D]), f16([B, 2, S, D]), ([B, 1, 1, S], "i1"),
                                f16([B, H, S, D]), ([B, H, S], "f32"), scale=0.125, causal=True)
    bwd = attention.bwd_program(f16([B, H, S, D]), f16([B, H, S, D]), f16([B, 2, S, D]), f16([B, 2, S, D]),
                                ([1, 1, S, S], "f16"), f16([B, H, S, D]), ([B, H, S], "f32"),
                                f16([B, H, S, D]), f16([B, 2, S, D]), f16([B, 2, S, D]), scale=0.125,
                                causal=True)
    kernels = fwd.kernels + bwd.kernels
    triton_build.compile_kernels(kernels, archs=(80, 90))
    # Triton's own assemblers: `ptxas` (CUDA 12.x) below sm_90, `ptxas-blackwell` (CUDA 13.x) from sm_90 on --
    # the sm_90 PTX has a PTX ISA version only the latter reads
    for kernel in kernels:
        assert sorted(b.arch for b in kernel.binaries) == [80, 90], kernel.name
        for b in kernel.binaries:
            assert base64.b64decode(b.cubin)[:4] == b"\x7fELF", kernel.name
            assert 0 <= b.shared <= LIMIT_SHARED[b.arch], (kernel.name, b.arch, b.shared)
            assert b.num_warps == kernel.num_warps
            arch = "sm_90a" if b.arch == 90 else "sm_80"
            assert f".target {arch}" in b.ptx
            assert assemble(b.ptx, b.arch, tmp_path / f"{kernel.name}_{b.arch}.ptx")[:4] == b"\x7fELF"
