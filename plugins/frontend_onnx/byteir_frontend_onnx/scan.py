"""``Scan`` unrolled over its static number of iterations, and ``Loop`` over a constant trip count, before import.

torch-mlir has no lowering for ``Scan`` (the newest function ops, ``LinearAttention`` among them, are defined with
it), so none of those models compiled. A Scan whose scan inputs have a static length ``T`` along their scan axes
becomes ``T`` copies of its body, in order:

- iteration ``t`` reads element ``t`` (or ``T-1-t`` for a reverse ``scan_input_directions``) of each scan input
  along its axis (``Gather`` with a scalar index, which drops the axis, as the body expects);
- the state values of one copy feed the next; the last copy's states are the Scan's state outputs;
- each scan output is the per-iteration values stacked along its ``scan_output_axes`` (``Unsqueeze`` +
  ``Concat``), in reverse order for a reverse ``scan_output_directions``.

Values the body reads from the enclosing graph are read from it directly; the body's own values get names
unique to their iteration. A body that itself holds a subgraph (a nested If/Loop/Scan), a dynamic length, or no
iterations at all leave the node as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .quantize import GraphBuilder

#: larger scans are left alone: unrolling copies the body this many times
MAX_ITERATIONS = 1024


def _has_subgraph(g: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node
               for a in n.attribute)


def _rank(v: onnx.ValueInfoProto) -> int | None:
    tt = v.type.tensor_type
    return len(tt.shape.dim) if v.type.HasField("tensor_type") and tt.HasField("shape") else None


def copy_body(body: onnx.GraphProto, rename: dict, prefix: str, nodes: list, inits: list) -> None:
    """Append a copy of ``body``'s initializers (to ``inits``) and nodes (to ``nodes``), every value it defines
    renamed under ``prefix``; ``rename`` maps the body's inputs to their values and gains the new names. Values
    read from the enclosing graph keep their names."""
    for init in body.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = f"{prefix}/{init.name}"
        rename[init.name] = copy.name
        inits.append(copy)
    for node in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(rename.get(x, x) if x else "" for x in node.input)
        del copy.output[:]
        for o in node.output:
            if o:
                rename[o] = f"{prefix}/{o}"
            copy.output.append(rename[o] if o else "")
        copy.name = f"{prefix}/{node.name or node.op_type}"
        nodes.append(copy)


def rewrite(n: onnx.NodeProto, info, inits: list) -> list[onnx.NodeProto] | None:
    """The nodes replacing Scan node ``n``, or None to leave it (``info(name)`` -> (static shape, elem type))."""
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    body: onnx.GraphProto = a["body"]
    m = int(a["num_scan_inputs"])
    n_state = len(n.input) - m
    k_out = len(body.output) - n_state
    if m < 1 or n_state < 0 or k_out < 0 or len(body.input) != n_state + m or _has_subgraph(body):
        return None
    in_axes = list(a.get("scan_input_axes", [0] * m))
    in_dirs = list(a.get("scan_input_directions", [0] * m))
    out_axes = list(a.get("scan_output_axes", [0] * k_out))
    out_dirs = list(a.get("scan_output_directions", [0] * k_out))
    steps = set()
    for j in range(m):
        shape, _ = info(n.input[n_state + j])
        if shape is None:
            return None
        if in_axes[j] < 0:
            in_axes[j] += len(shape)
        steps.add(shape[in_axes[j]])
    if len(steps) != 1:
        return None
    (count,) = steps
    if not 1 <= count <= MAX_ITERATIONS:
        return None
    for k in range(k_out):
        if out_axes[k] < 0:
            r = _rank(body.output[n_state + k])
            if r is None:
                return None
            out_axes[k] += r + 1

    b = GraphBuilder(n.name or f"Scan_{n.output[0]}", inits)
    state = list(n.input[:n_state])
    per_step: list[list[str]] = [[] for _ in range(k_out)]
    for t in range(count):
        rename = {body.input[i].name: state[i] for i in range(n_state)}
        for j in range(m):
            index = t if in_dirs[j] == 0 else count - 1 - t
            rename[body.input[n_state + j].name] = b.op(
                "Gather", [n.input[n_state + j], b.const(np.array(index, np.int64), "index")], axis=in_axes[j])
        copy_body(body, rename, f"{b.base}/t{t}", b.nodes, inits)
        state = [rename.get(o.name, o.name) for o in body.output[:n_state]]
        for k in range(k_out):
            per_step[k].append(rename.get(body.output[n_state + k].name, body.output[n_state + k].name))
    for i in range(n_state):
        if n.output[i]:
            b.op("Identity", [state[i]], n.output[i])
    for k in range(k_out):
        out = n.output[n_state + k] if n_state + k < len(n.output) else ""
        if not out:
            continue
        seq = per_step[k][::-1] if out_dirs[k] == 1 else per_step[k]
        axes = b.const(np.array([out_axes[k]], np.int64), "axes")
        parts = [b.op("Unsqueeze", [v, axes]) for v in seq]
        b.op("Concat", parts, out, axis=out_axes[k])
    return b.nodes


def _always_true(body: onnx.GraphProto) -> bool:
    """The body's condition output is its condition input passed through (directly or by Identity) or a constant
    true: the loop runs its full trip count."""
    name = body.output[0].name
    if name == body.input[1].name:
        return True
    for node in body.node:
        if name in node.output:
            if node.op_type == "Identity" and node.input[0] == body.input[1].name:
                return True
            if node.op_type == "Constant" and node.attribute:
                value = helper.get_attribute_value(node.attribute[0])
                if isinstance(value, onnx.TensorProto):
                    return bool(np.all(onnx.numpy_helper.to_array(value)))
    return False


def rewrite_loop(n: onnx.NodeProto, consts: dict, inits: list) -> list[onnx.NodeProto] | None:
    """``Loop`` with a constant trip count whose condition never turns false, unrolled: ``M`` copies of the body,
    each given its iteration number as a constant; the loop-carried values of one copy feed the next, and each
    scan output is the per-iteration values stacked along a new first axis."""
    body: onnx.GraphProto = helper.get_attribute_value(next(a for a in n.attribute if a.name == "body"))
    if not n.input[0] or n.input[0] not in consts or _has_subgraph(body) or len(body.input) < 2:
        return None
    if n.input[1] and not (n.input[1] in consts and bool(np.all(consts[n.input[1]]))):
        return None
    if not _always_true(body):
        return None
    count = int(np.asarray(consts[n.input[0]]).reshape(-1)[0])
    carried = len(n.input) - 2
    scans = len(body.output) - 1 - carried
    if not 1 <= count <= MAX_ITERATIONS or scans < 0 or len(body.input) != 2 + carried:
        return None
    b = GraphBuilder(n.name or f"Loop_{n.output[0]}", inits)
    state = list(n.input[2:])
    true = b.const(np.array(True), "cond")
    per_step: list[list[str]] = [[] for _ in range(scans)]
    for t in range(count):
        rename = {body.input[0].name: b.const(np.array(t, np.int64), "iteration"), body.input[1].name: true}
        rename.update({body.input[2 + i].name: state[i] for i in range(carried)})
        copy_body(body, rename, f"{b.base}/t{t}", b.nodes, inits)
        state = [rename.get(o.name, o.name) for o in body.output[1:1 + carried]]
        for k in range(scans):
            o = body.output[1 + carried + k].name
            per_step[k].append(rename.get(o, o))
    for i in range(carried):
        if i < len(n.output) and n.output[i]:
            b.op("Identity", [state[i]], n.output[i])
    axes = b.const(np.array([0], np.int64), "axes")
    for k in range(scans):
        out = n.output[carried + k] if carried + k < len(n.output) else ""
        if out:
            b.op("Concat", [b.op("Unsqueeze", [v, axes]) for v in per_step[k]], out, axis=0)
    return b.nodes


def rewrite_if(n: onnx.NodeProto, consts: dict, inits: list) -> list[onnx.NodeProto] | None:
    """``If`` with a constant condition: the branch it takes, inlined (its values renamed under the node)."""
    if not n.input or n.input[0] not in consts:
        return None
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    branch: onnx.GraphProto = a["then_branch" if bool(np.asarray(consts[n.input[0]]).reshape(-1)[0]) else
                                "else_branch"]
    if _has_subgraph(branch) or len(branch.output) != len(n.output):
        return None
    base = n.name or f"If_{n.output[0]}"
    rename: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    copy_body(branch, rename, base, nodes, inits)
    for out, mine in zip(branch.output, n.output):
        if mine:
            nodes.append(helper.make_node("Identity", [rename.get(out.name, out.name)], [mine], name=f"{base}/{mine}"))
    return nodes
