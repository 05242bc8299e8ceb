"""byteir.* custom calls: decomposed into StableHLO when no backend claims them, checked against NumPy."""

import byteir_core
import numpy as np
import pytest
from byteir_core.errors import TargetError

from programs import func


def _t(shape, elem="f32"):
    return f"tensor<{'x'.join([str(d) for d in shape] + [elem])}>"


def fwd_program(qs, ks, vs, scale, causal, mask=None, elem="f32"):
    args = [f"%q: {_t(qs, elem)}", f"%k: {_t(ks, elem)}", f"%v: {_t(vs, elem)}"]
    operands = ["%q", "%k", "%v"]
    types = [_t(qs, elem), _t(ks, elem), _t(vs, elem)]
    present = ["true", "true", "true"]
    if mask is not None:
        args.append(f"%m: {_t(*mask)}")
        operands.append("%m")
        types.append(_t(*mask))
        present.append("true")
    out_t, lse_t = _t(qs[:3] + [vs[3]], elem), _t(qs[:3])
    body = (f"  %o:2 = stablehlo.custom_call @byteir.flash_attn_fwd({', '.join(operands)}) {{byteir_attrs = "
            f"{{scale = {scale} : f64, causal = {str(causal).lower()}, operand_present = [{', '.join(present)}]}}}} "
            f": ({', '.join(types)}) -> ({out_t}, {lse_t})\n"
            f"  return %o#0, %o#1 : {out_t}, {lse_t}")
    return func(", ".join(args), f"{out_t}, {lse_t}", body)


def attention_numpy(q, k, v, scale, causal, mask=None):
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale
    sq, sk = s.shape[-2:]
    if causal:
        keep = np.tril(np.ones((sq, sk), bool), sk - sq)
        s = np.where(keep, s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    lse = np.log(e.sum(-1)) + m[..., 0]
    return np.einsum("bhqk,bhkd->bhqd", e / e.sum(-1, keepdims=True), v.astype(np.float64)), lse


@pytest.mark.parametrize("target", ["reference", "cpu"])
@pytest.mark.parametrize("causal,mask_kind", [(False, None), (True, None), (False, "bool"), (False, "float")])
def test_flash_attn_fwd_decomposition_matches_numpy(target, causal, mask_kind):
    rng = np.random.default_rng(0)
    qs, ks, vs = [1, 2, 4, 8], [1, 2, 6, 8], [1, 2, 6, 5]
    if causal:
        ks, vs = [1, 2, 4, 8], [1, 2, 4, 5]
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in (qs, ks, vs))
    mask, mask_t = None, None
    if mask_kind == "bool":
        mask = rng.random((1, 1, qs[2], ks[2])) > 0.3
        mask[..., 0] = True
        mask_t = ([1, 1, qs[2], ks[2]], "i1")
    elif mask_kind == "float":
        mask = rng.standard_normal((qs[2], ks[2])).astype(np.float32)
        mask_t = ([qs[2], ks[2]], "f32")
    art = byteir_core.compile(fwd_program(qs, ks, vs, 0.35, causal, mask_t), target=target)
    assert any("byteir.flash_attn_fwd x1" in n for n in art.report["notes"])
    args = [q, k, v] + ([mask] if mask is not None else [])
    out, lse = byteir_core.load(art)(*args)
    want_out, want_lse = attention_numpy(q, k, v, 0.35, causal, mask)
    np.testing.assert_allclose(out, want_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-4, atol=1e-5)


def test_flash_attn_bwd_decomposition_matches_numpy_gradients():
    rng = np.random.default_rng(1)
    shape = [1, 2, 5, 4]
    q, k, v, dout = (rng.standard_normal(shape) for _ in range(4))
    scale = 0.5
    out, lse = attention_numpy(q, k, v, scale, True)
    t = _t(shape, "f64")
    lse_t = _t(shape[:3])
    body = (f"  %g:3 = stablehlo.custom_call @byteir.flash_attn_bwd(%do, %q, %k, %v, %o, %l) {{byteir_attrs = "
            f"{{scale = {scale} : f64, causal = true, operand_present = [true, true, true, true, false, true, true]}}}}"
            f" : ({t}, {t}, {t}, {t}, {t}, {lse_t}) -> ({t}, {t}, {t})\n  return %g#0, %g#1, %g#2 : {t}, {t}, {t}")
    prog = func(f"%do: {t}, %q: {t}, %k: {t}, %v: {t}, %o: {t}, %l: {lse_t}", f"{t}, {t}, {t}", body)
    dq, dk, dv = byteir_core.load(byteir_core.compile(prog, target="cpu"))(dout, q, k, v, out,
                                                                        lse.astype(np.float32))

    # NumPy gradients of sum(out * dout), by the softmax rule
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    s = np.where(np.tril(np.ones((5, 5), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want_dv = np.einsum("bhqk,bhqd->bhkd", p, dout)
    dp = np.einsum("bhqd,bhkd->bhqk", dout, v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
    np.testing.assert_allclose(dv, want_dv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dq, np.einsum("bhqk,bhkd->bhqd", ds, k), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dk, np.einsum("bhqk,bhqd->bhkd", ds, q), rtol=1e-4, atol=1e-5)


def test_a_backend_that_claims_the_custom_call_keeps_it(tmp_path):
    from plugin_factory import install_plugin, run_python

    code = '''
from byteir_core import hookimpl
from byteir_core.interfaces import Backend, CompiledCluster, Kernel, Provider
BYTEIR_PLUGIN_API = "1.0"
class Fused(Backend):
    name = "fused"
    fallback = ("cpu",)
    def claims(self, op):
        if op.name == "stablehlo.custom_call" and "byteir.flash_attn_fwd" in str(op.attributes["call_target_name"]):
            return 100
        return None
    def compile(self, cluster):
        return CompiledCluster("fused.attn", None)
@hookimpl
def byteir_register_backends(register):
    register(Fused())
'''
    install_plugin(tmp_path, "fused_plugin", code, "fused")
    prog = fwd_program([1, 1, 2, 4], [1, 1, 2, 4], [1, 1, 2, 4], 0.5, False)
    r = run_python(tmp_path, f'''
import byteir_core
art = byteir_core.compile({prog!r}, target="fused")
print(sorted(art.report["ops_per_backend"]))
print(any("decomposed" in n for n in art.report["notes"]))
''')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["['fused']", "False"]


def test_an_unknown_byteir_custom_call_is_a_clear_error():
    body = ("  %o = stablehlo.custom_call @byteir.mystery(%x) : (tensor<4xf32>) -> tensor<4xf32>\n"
            "  return %o : tensor<4xf32>")
    with pytest.raises(TargetError, match="byteir.mystery.*no decomposition"):
        byteir_core.compile(func("%x: tensor<4xf32>", "tensor<4xf32>", body), target="cpu")


def test_fully_masked_rows_give_zero_and_finite_gradients_like_torch():
    """A query row with every key masked: out 0 and lse -inf forward (torch's SDPA gives 0 too), and gradients
    with no NaN backward; the other rows as usual."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    shape = [1, 1, 3, 4]
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    mask = np.ones((1, 1, 3, 3), bool)
    mask[0, 0, 1, :] = False
    art = byteir_core.compile(fwd_program(shape, shape, shape, 0.5, False, ([1, 1, 3, 3], "i1")), target="cpu")
    out, lse = byteir_core.load(art)(q, k, v, mask)
    want = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), attn_mask=torch.from_numpy(mask), scale=0.5)
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(out[0, 0, 1] == 0) and lse[0, 0, 1] == -np.inf and np.isfinite(lse[0, 0, [0, 2]]).all()

    t, lt, mt = _t(shape), _t(shape[:3]), _t([1, 1, 3, 3], "i1")
    body = (f"  %g:3 = stablehlo.custom_call @byteir.flash_attn_bwd(%do, %q, %k, %v, %m, %o, %l) {{byteir_attrs = "
            f"{{scale = 0.5 : f64, causal = false, operand_present = [true, true, true, true, true, true, true]}}}}"
            f" : ({t}, {t}, {t}, {t}, {mt}, {t}, {lt}) -> ({t}, {t}, {t})\n  return %g#0, %g#1, %g#2 : {t}, {t}, {t}")
    prog = func(f"%do: {t}, %q: {t}, %k: {t}, %v: {t}, %m: {mt}, %o: {t}, %l: {lt}", f"{t}, {t}, {t}", body)
    dout = rng.standard_normal(shape).astype(np.float32)
    dq, dk, dv = byteir_core.load(byteir_core.compile(prog, target="cpu"))(dout, q, k, v, mask, out, lse)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.from_numpy(mask),
                                                     scale=0.5).backward(torch.from_numpy(dout))
    for got, ref in ((dq, tq.grad), (dk, tk.grad), (dv, tv.grad)):
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_decomposed_attentions_share_no_broadcast_tensors():
    """Two attentions decomposed into StableHLO: CSE merges their scale and -inf broadcasts (and the broadcast
    mask) into one op each, which the first attention's softmax kernel then wrote out for the second to read
    (megabytes at a real sequence length). Copied back next to each user, both softmaxes are one same kernel
    that writes only the probabilities and the row statistics."""
    s, d = [1, 2, 8, 8], "tensor<1x2x8x8xf32>"
    mask_t = "tensor<1x1x8x8xi1>"
    attrs = "{byteir_attrs = {scale = 0.35 : f64, causal = false, operand_present = [true, true, true, true]}}"
    text = func(f"%q: {d}, %k: {d}, %v: {d}, %m: {mask_t}", d, f"""
  %a:2 = stablehlo.custom_call @byteir.flash_attn_fwd(%q, %k, %v, %m) {attrs} : ({d}, {d}, {d}, {mask_t}) -> ({d}, tensor<1x2x8xf32>)
  %b:2 = stablehlo.custom_call @byteir.flash_attn_fwd(%a#0, %k, %v, %m) {attrs} : ({d}, {d}, {d}, {mask_t}) -> ({d}, tensor<1x2x8xf32>)
  return %b#0 : {d}""")
    art = byteir_core.compile(text, target="cpu")
    native = [c for c in art.report["clusters"] if c["backend"] == "cpu"]
    first, second = native[:len(native) // 2], native[len(native) // 2:]
    assert len(first) == len(second) and all(c.get("same_as_earlier_cluster") for c in second), native
    assert [c["kernel"] for c in first] == [c["kernel"] for c in second]
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for _ in range(3))
    mask = rng.random((1, 1, 8, 8)) > 0.3
    mask[..., 0] = True
    want, _ = attention_numpy(attention_numpy(q, k, v, 0.35, False, mask)[0].astype(np.float32), k, v, 0.35, False,
                              mask)
    np.testing.assert_allclose(byteir_core.load(art)(q, k, v, mask), want, rtol=1e-4, atol=1e-5)
