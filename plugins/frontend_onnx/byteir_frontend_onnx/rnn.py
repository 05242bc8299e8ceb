"""``RNN``, ``GRU`` and ``LSTM`` unrolled over a static sequence length, before import.

torch-mlir lowers these to a loop that writes each step with a ``slice_scatter`` at a loop-carried index, which
its StableHLO conversion refuses ("start is not constant"); reverse and bidirectional ones do not lower at all.
With a static sequence length each step becomes plain ops: the input projection of every step is one MatMul
(``X @ W^T + Wb``, all gates at once), then per step ``H @ R^T + Rb``, the gate slices, activations and the
state update, exactly as ONNX writes the equations (gate orders: LSTM ``iofc``, GRU ``zrh``; GRU's
``linear_before_reset``; LSTM's peepholes ``P`` in ``iof`` order; ``clip`` on every activation's input; both
``layout`` values; forward, reverse and bidirectional).

``sequence_lens`` shorter than the sequence is honoured for forward direction (the state stops, ``Y`` is zero
past each sequence's end). Left to the lowering (which reports them): a non-static sequence length,
``input_forget=1``, activations with explicit ``activation_alpha``/``beta``, an activation other than Sigmoid,
Tanh, Relu, Softsign or Softplus, and shorter sequences in a reverse direction.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .quantize import GraphBuilder

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "softsign": "Softsign", "softplus": "Softplus"}
_FLOATS = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}


def rewrite(n: onnx.NodeProto, info, consts: dict, inits: list):
    """The nodes replacing ``n`` (constants appended to ``inits``), or None to leave it."""
    if n.op_type not in GATES or n.domain not in ("", "ai.onnx"):
        return None
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    a = {k: (v.decode() if isinstance(v, bytes) else [x.decode() if isinstance(x, bytes) else x for x in v]
             if isinstance(v, list) else v) for k, v in a.items()}
    if a.get("input_forget", 0) or "activation_alpha" in a or "activation_beta" in a:
        return None
    ins = list(n.input) + [""] * 8
    xshape, xt = info(ins[0])
    if xshape is None or len(xshape) != 3 or xt not in _FLOATS:
        return None
    dt = _FLOATS[xt]
    layout = a.get("layout", 0)
    seq, batch = (xshape[1], xshape[0]) if layout else (xshape[0], xshape[1])
    hidden = a["hidden_size"] if "hidden_size" in a else None
    direction = a.get("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    kind, G = n.op_type, GATES[n.op_type]
    wshape = info(ins[1])[0]
    if wshape is None or hidden is None or wshape[1] != G * hidden:
        return None
    names = [ACTIVATIONS.get(s.lower()) for s in a.get("activations", DEFAULT_ACTIVATIONS[kind] * dirs)]
    per_dir = len(DEFAULT_ACTIVATIONS[kind])
    if None in names or len(names) != per_dir * dirs:
        return None
    lens = None
    if ins[4]:
        if ins[4] in consts and np.all(np.asarray(consts[ins[4]]) == seq):
            lens = None  # every sequence is whole
        elif direction == "forward":
            lens = ins[4]
        else:
            return None
    b = GraphBuilder(n.name or kind.lower(), inits)
    clip = a.get("clip")

    def act(name, x):
        if clip is not None:
            x = b.op("Clip", [x, b.const(np.array(-clip, dt), "lo"), b.const(np.array(clip, dt), "hi")])
        return b.op(name, [x])

    def i64(v):
        return b.const(np.array(v, np.int64), "i")

    def cols(x, lo, hi):  # x[..., lo:hi] on the last axis
        return b.op("Slice", [x, i64([lo]), i64([hi]), i64([-1])])

    def pick(x, d):  # x[d] of a [dirs, ...] tensor
        return b.op("Gather", [x, i64(d)], axis=0)

    x = ins[0] if not layout else b.op("Transpose", [ins[0]], perm=[1, 0, 2])  # [seq, batch, input]

    def state0(name):
        if not name:
            return None
        return name if not layout else b.op("Transpose", [name], perm=[1, 0, 2])  # [dirs, batch, hidden]

    h0, c0 = state0(ins[5]), state0(ins[6] if kind == "LSTM" else "")
    zeros = b.const(np.zeros((batch, hidden), dt), "zeros")
    if lens is not None:
        lens64 = b.cast(lens, TensorProto.INT64)
    ys, hs, cs = [], [], []
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        f, g, h = (names[d * per_dir:(d + 1) * per_dir] + [None, None])[:3]
        wt = b.op("Transpose", [pick(ins[1], d)], perm=[1, 0])  # [input, G*hidden]
        rt = b.op("Transpose", [pick(ins[2], d)], perm=[1, 0])  # [hidden, G*hidden]
        xp = b.op("MatMul", [x, wt])  # [seq, batch, G*hidden]: every step's input projection
        rb = None
        if ins[3]:
            bias = pick(ins[3], d)
            xp = b.op("Add", [xp, cols(bias, 0, G * hidden)])
            rb = cols(bias, G * hidden, 2 * G * hidden)
        if kind == "GRU":
            rt_zr, rt_h = cols(rt, 0, 2 * hidden), cols(rt, 2 * hidden, 3 * hidden)
            rb_zr = cols(rb, 0, 2 * hidden) if rb else None
            rb_h = cols(rb, 2 * hidden, 3 * hidden) if rb else None
        if kind == "LSTM" and ins[7]:
            p = pick(ins[7], d)
            pi, po, pf = cols(p, 0, hidden), cols(p, hidden, 2 * hidden), cols(p, 2 * hidden, 3 * hidden)
        else:
            pi = po = pf = None
        hcur = pick(h0, d) if h0 else zeros
        ccur = (pick(c0, d) if c0 else zeros) if kind == "LSTM" else None
        outs = [None] * seq
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            xt = b.op("Gather", [xp, i64(t)], axis=0)  # [batch, G*hidden]
            if kind == "GRU":
                hz = b.op("MatMul", [hcur, rt_zr])
                if rb_zr:
                    hz = b.op("Add", [hz, rb_zr])
                zr = b.op("Add", [cols(xt, 0, 2 * hidden), hz])
                z, r = act(f, cols(zr, 0, hidden)), act(f, cols(zr, hidden, 2 * hidden))
                if a.get("linear_before_reset", 0):
                    hh = b.op("MatMul", [hcur, rt_h])
                    if rb_h:
                        hh = b.op("Add", [hh, rb_h])
                    cand = b.op("Add", [cols(xt, 2 * hidden, 3 * hidden), b.op("Mul", [r, hh])])
                else:
                    hh = b.op("MatMul", [b.op("Mul", [r, hcur]), rt_h])
                    if rb_h:
                        hh = b.op("Add", [hh, rb_h])
                    cand = b.op("Add", [cols(xt, 2 * hidden, 3 * hidden), hh])
                ht = act(g, cand)
                # H = (1 - z) * ht + z * H_prev = ht + z * (H_prev - ht)
                hnew = b.op("Add", [ht, b.op("Mul", [z, b.op("Sub", [hcur, ht])])])
                cnew = None
            else:
                gates = b.op("MatMul", [hcur, rt])
                if rb:
                    gates = b.op("Add", [gates, rb])
                gates = b.op("Add", [xt, gates])
                if kind == "RNN":
                    hnew, cnew = act(f, gates), None
                else:
                    gi, go = cols(gates, 0, hidden), cols(gates, hidden, 2 * hidden)
                    gf, gc = cols(gates, 2 * hidden, 3 * hidden), cols(gates, 3 * hidden, 4 * hidden)
                    if pi:
                        gi = b.op("Add", [gi, b.op("Mul", [pi, ccur])])
                        gf = b.op("Add", [gf, b.op("Mul", [pf, ccur])])
                    it, ft, ct = act(f, gi), act(f, gf), act(g, gc)
                    cnew = b.op("Add", [b.op("Mul", [ft, ccur]), b.op("Mul", [it, ct])])
                    if po:
                        go = b.op("Add", [go, b.op("Mul", [po, cnew])])
                    hnew = b.op("Mul", [act(f, go), act(h, cnew)])
            if lens is not None:  # past a sequence's end: state kept, output zero
                live = b.op("Unsqueeze", [b.op("Less", [i64(t), lens64]), i64([1])])  # [batch, 1]
                outs[t] = b.op("Where", [live, hnew, zeros])
                hnew = b.op("Where", [live, hnew, hcur])
                if cnew is not None:
                    cnew = b.op("Where", [live, cnew, ccur])
            else:
                outs[t] = hnew
            hcur, ccur = hnew, cnew
        ys.append(b.op("Concat", [b.op("Unsqueeze", [o, i64([0, 1])]) for o in outs], axis=0))  # [seq,1,b,h]
        hs.append(b.op("Unsqueeze", [hcur, i64([0])]))
        if kind == "LSTM":
            cs.append(b.op("Unsqueeze", [ccur, i64([0])]))
    results = [b.op("Concat", ys, axis=1) if dirs > 1 else ys[0],
               b.op("Concat", hs, axis=0) if dirs > 1 else hs[0]]
    if kind == "LSTM":
        results.append(b.op("Concat", cs, axis=0) if dirs > 1 else cs[0])
    perms = ([2, 0, 1, 3], [1, 0, 2], [1, 0, 2])  # [seq,dirs,batch,h] -> [batch,seq,dirs,h]; [dirs,batch,h] -> ...
    for k, out in enumerate(n.output):
        if not out or k >= len(results):
            continue
        if layout:
            b.op("Transpose", [results[k]], out, perm=perms[k])
        else:
            b.op("Identity", [results[k]], out)
    return b.nodes
