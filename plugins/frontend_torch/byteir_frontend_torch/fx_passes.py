"""Our FX preprocessing, run on torch.export / AOTAutograd graphs before torch-mlir imports them.

Each pass is a function ``(gm, ...) -> int`` that rewrites ``gm.graph`` in place and returns how many sites
it changed. They are small and tested one by one in ``tests/test_fx_passes.py``.

- :func:`rewrite_attention`: ``scaled_dot_product_attention`` and the matmul-softmax-matmul pattern ->
  ``torch.ops.byteir.flash_attn_fwd`` (one custom call a backend may claim; the core decomposes it back).
- :func:`simplify_views`: view/reshape chains collapsed, identity views and transpose pairs removed.
- :func:`fold_constants`: nodes computed only from weights, buffers and literals evaluated once, in torch.
"""

from __future__ import annotations

import math
import operator

import torch
from torch.fx import GraphModule, Node

from . import custom_ops

aten = torch.ops.aten

SDPA = {aten.scaled_dot_product_attention.default}
SOFTMAX = {aten.softmax.int, aten._softmax.default}
MATMUL = {aten.matmul.default, aten.bmm.default}
VIEWS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


def _val(n):
    return n.meta.get("val") if isinstance(n, Node) else None


def _shape(n):
    v = _val(n)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _set_meta(new: Node, like: Node) -> None:
    for key in ("val", "tensor_meta", "stack_trace", "nn_module_stack", "source_fn_stack"):
        if key in like.meta:
            new.meta[key] = like.meta[key]


def _fake_attn_meta(node: Node, q: Node) -> None:
    """meta['val'] for a flash_attn_fwd node and its getitem: (out like q, lse)."""
    qv = _val(q)
    if isinstance(qv, torch.Tensor):
        node.meta["val"] = (qv.new_empty(qv.shape), qv.new_empty(qv.shape[:-1], dtype=torch.float32))


# ---- attention ---------------------------------------------------------------------------------------------


def _emit_flash(graph, anchor: Node, q, k, v, mask, scale: float, causal: bool) -> Node:
    with graph.inserting_before(anchor):
        call = graph.call_function(custom_ops.FWD, (q, k, v, mask, float(scale), bool(causal)))
        _fake_attn_meta(call, q)
        call.meta["stack_trace"] = anchor.meta.get("stack_trace")
        out = graph.call_function(operator.getitem, (call, 0))
        _set_meta(out, anchor)
    return out


def _expand_kv(graph, anchor: Node, kv: Node, groups: int) -> Node:
    with graph.inserting_before(anchor):
        r = graph.call_function(aten.repeat_interleave.self_int, (kv, groups, 1))
        v = _val(kv)
        if isinstance(v, torch.Tensor):
            r.meta["val"] = v.repeat_interleave(groups, 1) if not hasattr(v, "fake_mode") else \
                v.new_empty((v.shape[0], v.shape[1] * groups, *v.shape[2:]))
    return r


def rewrite_attention(gm: GraphModule) -> int:
    """Attention -> ``byteir.flash_attn_fwd``. Returns the number of attention sites rewritten."""
    graph, count = gm.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in SDPA:
            count += _rewrite_sdpa(graph, node)
        elif node.target in MATMUL:
            count += _rewrite_matmul_softmax_matmul(graph, node)
    if count:
        graph.eliminate_dead_code()
        gm.recompile()
    return count


def _rewrite_sdpa(graph, node: Node) -> int:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
    a = dict(defaults)
    a.update(zip(names, node.args))
    a.update(node.kwargs)
    q, k, v, mask = a["query"], a["key"], a["value"], a["attn_mask"]
    qs, ks, vs = _shape(q), _shape(k), _shape(v)
    if a["dropout_p"] not in (0, 0.0) or qs is None or ks is None or vs is None or len(qs) != 4:
        return 0
    if a["is_causal"] and mask is not None:
        return 0
    if ks[1] != qs[1]:
        if not a["enable_gqa"] or qs[1] % ks[1]:
            return 0
        k = _expand_kv(graph, node, k, qs[1] // ks[1])
        v = _expand_kv(graph, node, v, qs[1] // ks[1])
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(qs[-1])
    if not isinstance(scale, (int, float)):
        return 0
    out = _emit_flash(graph, node, q, k, v, mask, scale, bool(a["is_causal"]))
    node.replace_all_uses_with(out)
    graph.erase_node(node)
    return 1


def _transposed_last_two(n) -> Node | None:
    """k when n is k^T over the last two dims (transpose or permute), else None."""
    if not isinstance(n, Node) or n.op != "call_function":
        return None
    shape = _shape(n)
    if shape is None:
        return None
    rank = len(shape)
    if n.target == aten.transpose.int:
        d0, d1 = (d % rank for d in n.args[1:3])
        return n.args[0] if {d0, d1} == {rank - 2, rank - 1} else None
    if n.target == aten.permute.default:
        perm = [d % rank for d in n.args[1]]
        return n.args[0] if perm == list(range(rank - 2)) + [rank - 1, rank - 2] else None
    return None


def _rewrite_matmul_softmax_matmul(graph, node: Node) -> int:
    """softmax((q @ k^T) * s [+ mask], -1) @ v -> flash_attn_fwd (4-D operands)."""
    p, v = node.args[0], node.args[1]
    if not (isinstance(p, Node) and p.target in SOFTMAX and len(p.users) == 1):
        return 0
    x, dim = p.args[0], p.args[1]
    if p.target == aten._softmax.default and p.args[2]:
        return 0  # half_to_float
    shape = _shape(p)
    if shape is None or len(shape) != 4 or dim % 4 != 3:
        return 0
    if _val(p).dtype != _val(v).dtype if isinstance(v, Node) and _val(v) is not None else True:
        return 0
    mask, scale = None, 1.0
    if isinstance(x, Node) and x.target == aten.add.Tensor and len(x.users) == 1:
        a, b = x.args[:2]
        if isinstance(a, Node) and a.target in MATMUL | {aten.mul.Tensor, aten.div.Tensor}:
            x, mask = a, b
        else:
            return 0
        if not isinstance(mask, Node) or _val(mask) is None or not _val(mask).is_floating_point():
            return 0
    if isinstance(x, Node) and x.target in (aten.mul.Tensor, aten.div.Tensor) and len(x.users) == 1:
        a, c = x.args[:2]
        if not isinstance(c, (int, float)):
            return 0
        scale = float(c) if x.target == aten.mul.Tensor else 1.0 / float(c)
        x = a
    if not (isinstance(x, Node) and x.target in MATMUL and len(x.users) == 1):
        return 0
    q, kt = x.args[:2]
    k = _transposed_last_two(kt)
    if k is None or len(kt.users) != 1:
        return 0
    if any(_shape(t) is None or len(_shape(t)) != 4 for t in (q, k, v)):
        return 0
    out = _emit_flash(graph, node, q, k, v, mask, scale, False)
    node.replace_all_uses_with(out)
    for dead in (node, p):
        if not dead.users:
            graph.erase_node(dead)
    return 1


# ---- slices ---------------------------------------------------------------------------------------------------


def normalize_slices(gm: GraphModule) -> int:
    """Slice bounds clamped to the dimension (``end=sys.maxsize`` means "to the end"): torch-mlir's StableHLO
    lowering of ``slice_scatter`` with an int64-max end allocates without bound (std::bad_alloc)."""
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in (aten.slice.Tensor, aten.slice_scatter.default):
            continue
        src_shape = _shape(node.args[0])
        if src_shape is None or not all(isinstance(d, int) for d in src_shape):
            continue
        names = ("dim", "start", "end", "step")
        first = 1 if node.target == aten.slice.Tensor else 2
        a = dict(zip(names, node.args[first:]))
        a.update({k: v for k, v in node.kwargs.items() if k in names})
        dim = a.get("dim", 0)
        size = src_shape[dim]
        start, end = a.get("start"), a.get("end")
        if not all(isinstance(x, (int, type(None))) for x in (start, end)):
            continue
        new_start = 0 if start is None else min(max(start + size if start < 0 else start, 0), size)
        new_end = size if end is None else min(max(end + size if end < 0 else end, 0), size)
        if (new_start, new_end) != (start, end):
            node.args = (*node.args[:first], dim, new_start, new_end, a.get("step", 1))
            node.kwargs = {}
            count += 1
    if count:
        gm.recompile()
    return count


# ---- views ---------------------------------------------------------------------------------------------------


def simplify_views(gm: GraphModule) -> int:
    """view(view(x)) -> view(x); a view to x's own shape -> x; transpose(transpose(x, a, b), a, b) -> x."""
    graph, count = gm.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or not node.users and node.target not in VIEWS:
            continue
        src = node.args[0] if node.args else None
        if node.target in VIEWS and isinstance(src, Node):
            if _shape(src) is not None and _shape(src) == _shape(node):
                node.replace_all_uses_with(src)
                count += 1
                continue
            if src.op == "call_function" and src.target in VIEWS:
                node.args = (src.args[0], *node.args[1:])
                count += 1
        elif node.target == aten.transpose.int and isinstance(src, Node) and src.target == aten.transpose.int:
            rank = len(_shape(node) or ())
            if rank and {d % rank for d in node.args[1:3]} == {d % rank for d in src.args[1:3]}:
                node.replace_all_uses_with(src.args[0])
                count += 1
    if count:
        graph.eliminate_dead_code()
        gm.recompile()
    return count


def gather_before_arithmetic(gm: GraphModule) -> int:
    """``gather(p - q, dim, idx)`` -> ``gather(p, dim, idx) - q`` (and ``+``) when ``q`` has size 1 along ``dim``
    and broadcasts to ``idx``'s shape: the same float operations on the elements gathered, instead of a whole
    ``p``-sized tensor computed for a gather to pick a few. Cross-entropy's forward is ``gather(x - max - lse)``:
    it wrote the 4 MB log-softmax of a 256 x 4000 logits tensor to read 256 values of it."""
    graph, count = gm.graph, 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target != aten.gather.default or node.kwargs.get("sparse_grad"):
                continue
            x, dim, idx = node.args[:3]
            if not (isinstance(x, Node) and isinstance(idx, Node) and x.op == "call_function"
                    and x.target in (aten.sub.Tensor, aten.add.Tensor) and not x.kwargs and len(x.args) == 2):
                continue
            p, q = x.args
            xs, ps, qs, ids = _shape(x), _shape(p), _shape(q), _shape(idx)
            if None in (xs, ps, qs, ids) or ps != xs or len(qs) != len(xs) or len(ids) != len(xs):
                continue
            d = dim % len(xs)
            if qs[d] != 1 or any(a not in (1, b) for a, b in zip(qs, ids)):
                continue
            pv, iv = _val(p), _val(idx)
            if _val(q).dtype != pv.dtype or _val(node).dtype != pv.dtype:
                continue
            with graph.inserting_before(node):
                picked = graph.call_function(aten.gather.default, (p, dim, idx))
                picked.meta["val"] = aten.gather.default(pv, dim, iv)
                out = graph.call_function(x.target, (picked, q))
            _set_meta(out, node)
            node.replace_all_uses_with(out)
            graph.erase_node(node)
            count += 1
            changed = True
    if count:
        graph.eliminate_dead_code()
        gm.recompile()
    return count


# ---- constants -----------------------------------------------------------------------------------------------

#: Never fold these (side effects, randomness, or not functional).
_NO_FOLD_NAMESPACES = {"byteir"}
#: Folding makes new tensors: stop at this many elements per result.
FOLD_MAX_ELEMENTS = 1 << 24


def fold_constants(gm: GraphModule, constants: dict[Node, torch.Tensor]) -> int:
    """Evaluate call_function nodes whose inputs are all known (``constants`` maps placeholders holding
    weights/buffers to their values; ``get_attr`` nodes count too). Their users then read a tensor literal."""
    known: dict[Node, object] = dict(constants)
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            try:
                known[node] = _get_attr(gm, node.target)
            except AttributeError:
                pass
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not _foldable(node):
            continue
        inputs = [a for a in node.all_input_nodes]
        if not inputs and node.target not in (aten.arange.default, aten.arange.start, aten.arange.start_step,
                                             aten.full.default, aten.ones.default, aten.zeros.default,
                                             aten.scalar_tensor.default):
            continue
        if not all(i in known for i in inputs):
            continue
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: known[n])
        try:
            with torch.no_grad():
                value = node.target(*args, **kwargs)
        except Exception:  # noqa: BLE001 -- not evaluable here (e.g. needs a device): leave it
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() > FOLD_MAX_ELEMENTS:
                continue
            known[node] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in value):
            known[node] = value
        else:
            continue
    # Rewire: every user outside the folded set reads the literal.
    for node, value in known.items():
        if node.op != "call_function" or not isinstance(value, torch.Tensor):
            continue
        # torch-mlir imports a list argument only when all its items are of one kind (all values or all
        # literals): users holding the node inside a list keep reading the node.
        live_users = [u for u in node.users if (u not in known or u.op == "output") and not _in_list(u, node)]
        if not live_users:
            continue
        literal = value.contiguous()
        for user in live_users:
            user.args, user.kwargs = torch.fx.node.map_arg(
                (user.args, user.kwargs), lambda n, node=node, lit=literal: lit if n is node else n)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return folded


def _in_list(user: Node, node: Node) -> bool:
    def walk(a, nested):
        if isinstance(a, (list, tuple)):
            return any(walk(x, True) for x in a)
        if isinstance(a, dict):
            return any(walk(x, nested) for x in a.values())
        return nested and a is node

    return any(walk(a, False) for a in (*user.args, *user.kwargs.values()))


def _foldable(node: Node) -> bool:
    t = node.target
    if t is operator.getitem:
        return True
    if not isinstance(t, torch._ops.OpOverload):
        return False
    if t.namespace in _NO_FOLD_NAMESPACES or t._schema.is_mutable:
        return False
    name = t._schema.name
    if any(word in name for word in ("rand", "dropout", "bernoulli", "normal", "uniform", "_assert", "empty")):
        return False
    return True


def _get_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def program_constants(prog) -> dict[Node, torch.Tensor]:
    """Placeholders of an ExportedProgram that hold parameters, buffers and lifted constants -> values."""
    sig = prog.graph_signature
    state = dict(prog.state_dict)
    state.update(getattr(prog, "constants", {}))
    by_name = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    out = {}
    for node in prog.graph_module.graph.nodes:
        if node.op == "placeholder" and node.name in by_name and by_name[node.name] in state:
            value = state[by_name[node.name]]
            if isinstance(value, torch.Tensor):
                out[node] = value.detach()
    return out
