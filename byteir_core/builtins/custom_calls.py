"""``byteir.*`` custom calls, decomposed back into plain StableHLO when no backend of the target claims them.

Frontends rewrite patterns (attention) into one ``stablehlo.custom_call @byteir.<name>`` with its scalar
attributes in ``byteir_attrs``; a backend that has a fused kernel claims it, and for every other backend the
core calls :func:`decompose_unclaimed` before partitioning, so the op always runs somewhere.

Contracts (documented for backend authors in docs/writing-a-backend.md):

``byteir.flash_attn_fwd(q, k, v[, mask]) -> (out, lse)``
    q ``[B,H,Sq,D]``, k ``[B,H,Sk,D]``, v ``[B,H,Sk,Dv]``; ``mask`` (present when ``operand_present[3]``) is
    i1 (true keeps) or float (added), broadcastable to ``[B,H,Sq,Sk]``; attributes ``scale`` (f64) and
    ``causal`` (bool, bottom-right aligned as in flash-attention); ``lse`` f32 ``[B,H,Sq]``.
``byteir.flash_attn_bwd(dout, q, k, v[, mask], out, lse) -> (dq, dk, dv)``
"""

from __future__ import annotations

from ..mlir import ir, run_pipeline, walk_ops

PREFIX = "byteir."


def _tensor(shape, elem: str) -> str:
    return f"tensor<{'x'.join([str(d) for d in shape] + [elem])}>"


class _Writer:
    """Builds the body of a StableHLO function line by line, computing in f32."""

    def __init__(self):
        self.lines: list[str] = []
        self.n = 0

    def emit(self, rhs: str) -> str:
        name = f"%v{self.n}"
        self.n += 1
        self.lines.append(f"    {name} = {rhs}")
        return name

    def const(self, value: str, elem: str = "f32") -> str:
        return self.emit(f"stablehlo.constant dense<{value}> : tensor<{elem}>")

    def bcast(self, x: str, src_shape, dims, shape, elem="f32") -> str:
        return self.emit(f"stablehlo.broadcast_in_dim {x}, dims = [{', '.join(map(str, dims))}] : "
                         f"({_tensor(src_shape, elem)}) -> {_tensor(shape, elem)}")

    def scalar_bcast(self, value: str, shape, elem="f32") -> str:
        return self.bcast(self.const(value, elem), [], [], shape, elem)

    def convert(self, x: str, shape, src: str, dst: str) -> str:
        if src == dst:
            return x
        return self.emit(f"stablehlo.convert {x} : ({_tensor(shape, src)}) -> {_tensor(shape, dst)}")

    def binary(self, op: str, a: str, b: str, shape, elem="f32") -> str:
        return self.emit(f"stablehlo.{op} {a}, {b} : {_tensor(shape, elem)}")

    def unary(self, op: str, a: str, shape, elem="f32") -> str:
        return self.emit(f"stablehlo.{op} {a} : {_tensor(shape, elem)}")

    def dot(self, a, b, ashape, bshape, contract_a: int, contract_b: int, out_shape) -> str:
        return self.emit(
            f"stablehlo.dot_general {a}, {b}, batching_dims = [0, 1] x [0, 1], contracting_dims = "
            f"[{contract_a}] x [{contract_b}] : ({_tensor(ashape, 'f32')}, {_tensor(bshape, 'f32')}) -> "
            f"{_tensor(out_shape, 'f32')}")

    def reduce_last(self, x: str, shape, kind: str) -> str:
        init = self.const("0xFF800000" if kind == "maximum" else "0.0")
        out = shape[:-1]
        return self.emit(f"stablehlo.reduce({x} init: {init}) applies stablehlo.{kind} across dimensions = "
                         f"[{len(shape) - 1}] : ({_tensor(shape, 'f32')}, tensor<f32>) -> {_tensor(out, 'f32')}")

    def select(self, pred: str, a: str, b: str, shape) -> str:
        return self.emit(f"stablehlo.select {pred}, {a}, {b} : {_tensor(shape, 'i1')}, {_tensor(shape, 'f32')}")

    def compare(self, direction: str, a: str, b: str, shape, elem: str) -> str:
        return self.emit(f"stablehlo.compare {direction}, {a}, {b} : ({_tensor(shape, elem)}, "
                         f"{_tensor(shape, elem)}) -> {_tensor(shape, 'i1')}")


def _scores(w: _Writer, q, k, mask, mask_type, qs, ks, scale: float, causal: bool):
    """f32 scaled, masked scores [B,H,Sq,Sk]."""
    b, h, sq, _ = qs
    sk = ks[2]
    ss = [b, h, sq, sk]
    s = w.dot(q, k, qs, ks, 3, 3, ss)
    s = w.binary("multiply", s, w.scalar_bcast(repr(float(scale)), ss), ss)
    neg_inf = None
    if causal:
        rows = w.emit(f"stablehlo.iota dim = 0 : {_tensor([sq, sk], 'i64')}")
        cols = w.emit(f"stablehlo.iota dim = 1 : {_tensor([sq, sk], 'i64')}")
        shifted = w.binary("add", rows, w.scalar_bcast(str(sk - sq), [sq, sk], "i64"), [sq, sk], "i64")
        keep = w.compare("LE", cols, shifted, [sq, sk], "i64")
        keep = w.bcast(keep, [sq, sk], [2, 3], ss, "i1")
        neg_inf = w.scalar_bcast("0xFF800000", ss)
        s = w.select(keep, s, neg_inf, ss)
    if mask is not None:
        mshape, melem = mask_type
        dims = list(range(4 - len(mshape), 4))
        if melem == "i1":
            keep = w.bcast(mask, mshape, dims, ss, "i1")
            neg_inf = neg_inf or w.scalar_bcast("0xFF800000", ss)
            s = w.select(keep, s, neg_inf, ss)
        else:
            m = w.convert(mask, mshape, melem, "f32")
            s = w.binary("add", s, w.bcast(m, mshape, dims, ss), ss)
    return s, ss


def _flash_fwd(call, attrs) -> str:
    present = attrs["operand_present"]
    ts = [ir.RankedTensorType(v.type) for v in call.operands]
    qs, ks, vs = (list(t.shape) for t in ts[:3])
    elem = str(ts[0].element_type)
    mask_t = (list(ts[3].shape), str(ts[3].element_type)) if len(present) > 3 and present[3] else None
    w = _Writer()
    args = ["%q", "%k", "%v"] + (["%mask"] if mask_t else [])
    q = w.convert("%q", qs, elem, "f32")
    k = w.convert("%k", ks, str(ts[1].element_type), "f32")
    v = w.convert("%v", vs, str(ts[2].element_type), "f32")
    s, ss = _scores(w, q, k, "%mask" if mask_t else None, mask_t, qs, ks, attrs["scale"], attrs["causal"])
    rs = ss[:3]
    m = w.reduce_last(s, ss, "maximum")
    is_inf = w.compare("EQ", m, w.scalar_bcast("0xFF800000", rs), rs, "f32")
    m = w.select(is_inf, w.scalar_bcast("0.0", rs), m, rs)
    e = w.unary("exponential", w.binary("subtract", s, w.bcast(m, rs, [0, 1, 2], ss), ss), ss)
    l_ = w.reduce_last(e, ss, "add")
    # a row with no key left (all masked) gives 0, as torch's SDPA and FlashAttention do, not 0/0
    empty = w.compare("EQ", l_, w.scalar_bcast("0.0", rs), rs, "f32")
    denom = w.select(empty, w.scalar_bcast("1.0", rs), l_, rs)
    p = w.binary("divide", e, w.bcast(denom, rs, [0, 1, 2], ss), ss)
    os_ = qs[:3] + [vs[3]]
    o = w.dot(p, v, ss, vs, 3, 2, os_)
    o = w.convert(o, os_, "f32", elem)
    lse = w.binary("add", w.unary("log", l_, rs), m, rs)
    return _function(args, ts, w, [o, lse], [_tensor(os_, elem), _tensor(rs, "f32")])


def _flash_bwd(call, attrs) -> str:
    present = attrs["operand_present"]
    ts = [ir.RankedTensorType(v.type) for v in call.operands]
    has_mask = len(present) > 4 and present[4]
    names = ["%dout", "%q", "%k", "%v"] + (["%mask"] if has_mask else []) + ["%out", "%lse"]
    types = dict(zip(names, ts))
    shape = {n: list(t.shape) for n, t in types.items()}
    elem = {n: str(t.element_type) for n, t in types.items()}
    w = _Writer()
    f = {n: w.convert(n, shape[n], elem[n], "f32") for n in ("%dout", "%q", "%k", "%v", "%out")}
    mask_t = (shape["%mask"], elem["%mask"]) if has_mask else None
    qs, ks, vs = shape["%q"], shape["%k"], shape["%v"]
    s, ss = _scores(w, f["%q"], f["%k"], "%mask" if has_mask else None, mask_t, qs, ks, attrs["scale"],
                    attrs["causal"])
    rs = ss[:3]
    # rows with no key left have lse -inf: their probabilities are 0 (exp(-inf - -inf) would be NaN)
    lse_b = w.bcast("%lse", rs, [0, 1, 2], ss)
    dead = w.compare("EQ", lse_b, w.scalar_bcast("0xFF800000", ss), ss, "f32")
    p = w.unary("exponential", w.binary("subtract", s, lse_b, ss), ss)
    p = w.select(dead, w.scalar_bcast("0.0", ss), p, ss)
    os_ = shape["%dout"]
    dv = w.dot(p, f["%dout"], ss, os_, 2, 2, vs)
    dp = w.dot(f["%dout"], f["%v"], os_, vs, 3, 3, ss)
    delta = w.reduce_last(w.binary("multiply", f["%dout"], f["%out"], os_), os_, "add")
    ds = w.binary("subtract", dp, w.bcast(delta, rs, [0, 1, 2], ss), ss)
    ds = w.binary("multiply", w.binary("multiply", p, ds, ss), w.scalar_bcast(repr(float(attrs["scale"])), ss), ss)
    dq = w.dot(ds, f["%k"], ss, ks, 3, 2, qs)
    dk = w.dot(ds, f["%q"], ss, qs, 2, 2, ks)
    outs = [w.convert(dq, qs, "f32", elem["%q"]), w.convert(dk, ks, "f32", elem["%k"]),
            w.convert(dv, vs, "f32", elem["%v"])]
    return _function(names, ts, w, outs, [_tensor(qs, elem["%q"]), _tensor(ks, elem["%k"]),
                                          _tensor(vs, elem["%v"])])


def _function(args, types, w: _Writer, results, result_types) -> str:
    sig = ", ".join(f"{a}: {t}" for a, t in zip(args, types))
    body = "\n".join(w.lines)
    return (f"func.func private @__decomp({sig}) -> ({', '.join(result_types)}) {{\n{body}\n"
            f"    return {', '.join(results)} : {', '.join(result_types)}\n  }}")


DECOMPOSITIONS = {
    "byteir.flash_attn_fwd": _flash_fwd,
    "byteir.flash_attn_bwd": _flash_bwd,
}


def _attrs(call) -> dict:
    out = {"scale": 1.0, "causal": False, "operand_present": [True] * len(call.operands)}
    if "byteir_attrs" in call.attributes:
        d = ir.DictAttr(call.attributes["byteir_attrs"])
        for i in range(len(d)):
            na = d[i]
            a = na.attr
            if isinstance(a, ir.BoolAttr) or str(a) in ("true", "false"):
                out[na.name] = ir.BoolAttr(a).value
            elif isinstance(a, ir.FloatAttr) or str(a).endswith(": f64") or str(a).endswith(": f32"):
                out[na.name] = ir.FloatAttr(a).value
            elif na.name == "operand_present":
                out[na.name] = [ir.BoolAttr(x).value for x in ir.ArrayAttr(a)]
            else:
                out[na.name] = a
    return out


#: The attributes of a ``byteir.*`` call as Python values (``scale``, ``causal``, ``operand_present``, ...): what a
#: backend that claims the call reads.
attrs_of = _attrs


def byteir_calls(module) -> list:
    """(op, call target) of every ``byteir.*`` custom call in ``module``."""
    found = []
    for op in walk_ops(module):
        if op.name == "stablehlo.custom_call":
            name = ir.StringAttr(op.attributes["call_target_name"]).value
            if name.startswith(PREFIX):
                found.append((op, name))
    return found


def decompose(module, should=lambda op, name: True) -> list[str]:
    """Replace byteir custom calls (those ``should`` accepts) with StableHLO; returns the names replaced."""
    from ..errors import TargetError

    done = []
    calls = [(op, name) for op, name in byteir_calls(module) if should(op, name)]
    if not calls:
        return done
    ctx = module.context
    with ctx:
        for i, (op, name) in enumerate(calls):
            if name not in DECOMPOSITIONS:
                raise TargetError(f"custom call {name} at {op.location}: no backend of the target claims it "
                                  f"and the core has no decomposition for it (known: "
                                  f"{', '.join(sorted(DECOMPOSITIONS))})")
            text = DECOMPOSITIONS[name](op, _attrs(op)).replace("@__decomp", f"@__byteir_decomp_{i}")
            holder = ir.Module.parse(f"module {{\n  {text}\n}}")  # kept alive until its function is moved
            holder.body.operations[0].operation.move_before(module.body.operations[0])
            with ir.InsertionPoint(op), op.location:
                call = ir.Operation.create("func.call", results=[r.type for r in op.results],
                                           operands=list(op.operands),
                                           attributes={"callee": ir.FlatSymbolRefAttr.get(f"__byteir_decomp_{i}")})
            for old, new in zip(op.results, call.results):
                old.replace_all_uses_with(new)
            op.erase()
            done.append(name)
    run_pipeline(module, "inline,symbol-dce,canonicalize,cse")
    # CSE has just merged the decompositions' constant broadcasts (each attention's -inf and scale tensors) into
    # one op shared by all: copied back next to each user, so no cluster writes them out for another to read.
    from .simplify import rematerialize_broadcasts

    rematerialize_broadcasts(module)
    return done
