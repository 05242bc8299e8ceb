"""ONNX -> StableHLO: checks and fixes at the ONNX level, then torch-mlir's ONNX importer and pipelines.

The path, in order (each step's failure is one :class:`~byteir_core.errors.FrontendError` naming the file and,
where there is one, the node by name, op_type and index):

1. **load**: a path (weights in files beside it are read last, see 6), bytes or a ``ModelProto``. A truncated or
   malformed protobuf is refused here.
2. **check**: opsets (newer than the installed onnx knows is refused), every node's inputs defined by a graph
   input, an initializer or an earlier node (a graph with a cycle, or a name nothing defines, is named here),
   unnamed nodes get ``<op_type>_<index>`` so every later message can name them.
3. **version**: a model older than opset :data:`UPGRADE_BELOW` is converted to :data:`UPGRADE_TO` with onnx's
   own version converter (torch-mlir's ONNX lowerings are written against the newer op definitions).
4. **shapes**: ``input_shapes`` pins graph inputs (by name or position); onnx's shape inference runs in strict
   mode, so inconsistent shapes are an error naming the node.
5. **unsupported ops**: nodes whose op is unknown to onnx (an unknown domain or op_type) are listed, all of them
   at once, before any lowering; if lowering then fails, each distinct kind of node is lowered on its own and
   every one that fails is listed in the same way (``BYTEIR_ONNX_PROBE=0`` skips this and reports the whole
   model's failure: faster, less precise; the conformance runner uses it).
6. **import + lower**: external data (weights in files beside the model, for models over protobuf's 2 GB limit)
   is loaded only now, after all graph-level work, so nothing above serializes the weights;
   ``torch-onnx-to-torch-backend-pipeline`` then ``torch-backend-to-stablehlo-backend-pipeline``.

``@main``'s arguments and results carry the graph's input and output names (``byteir.name``).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from byteir_core.errors import FrontendError
from byteir_core.mlir import capture_diagnostics, diagnostics_to_text, ir, register_torch_dialects, run_pipeline

from .worker import lower_model

#: Models whose default-domain opset is below this are converted (onnx.version_converter) to UPGRADE_TO first.
UPGRADE_BELOW = 13
UPGRADE_TO = 17

ONNX_PIPELINE = "torch-onnx-to-torch-backend-pipeline"
#: torch-mlir's ONNX pipeline without its two shape-refinement rounds, each of which parses torch-mlir's shape
#: library again (0.09 s per round, most of a small model's compile). ONNX's shape inference has already typed
#: every value; when the converted module is fully static this is all that is needed, and a failure falls back
#: to the full pipeline.
ONNX_PIPELINE_STATIC = ("func.func(convert-torch-onnx-to-torch{allow-non-finites=true}),"
                        "func.func(torch-decompose-complex-ops),func.func(canonicalize),"
                        "func.func(torch-scalarize-shapes),torch-refine-public-return,func.func(canonicalize),"
                        "func.func(torch-decompose-complex-ops),func.func(canonicalize)")
STABLEHLO_PIPELINE = "torch-backend-to-stablehlo-backend-pipeline{allow-non-finites=true}"

#: Probing a failed model: at most this many distinct kinds of node are lowered one by one.
MAX_PROBES = 300


class OnnxModelError(FrontendError):
    """The ONNX file or graph itself is wrong (not a protobuf, a cycle, a missing input, bad shapes)."""

    def __init__(self, message: str, where: str = "", node: str = ""):
        super().__init__(message)
        self.where = where
        self.node = node


@dataclass
class UnsupportedNode:
    """One kind of ONNX node byteir cannot take: ``op_type`` in ``domain`` at ``opset``, with every node of it."""

    op_type: str
    domain: str
    opset: int
    nodes: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def count(self) -> int:
        return len(self.nodes)

    def describe(self) -> str:
        shown = ", ".join(self.nodes[:4]) + (f" and {self.count - 4} more" if self.count > 4 else "")
        dom = self.domain or "ai.onnx"
        return (f"{self.op_type} (domain {dom}, opset {self.opset}) x{self.count} at node(s) {shown}"
                + (f": {self.reason}" if self.reason else ""))


class OnnxUnsupportedError(FrontendError):
    """Every kind of ONNX node the importer or the lowering cannot take, listed at once (``ops``)."""

    def __init__(self, where: str, ops: list[UnsupportedNode]):
        self.where = where
        self.ops = ops
        lines = [f"{where}: {len(ops)} kind(s) of ONNX node cannot be compiled "
                 f"({sum(o.count for o in ops)} node(s) in all):"]
        lines += [f"  - {o.describe()}" for o in ops]
        super().__init__("\n".join(lines))


# ---- 1. load ----------------------------------------------------------------------------------------------


def describe_source(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if isinstance(model, (bytes, bytearray, memoryview)):
        return f"<ONNX bytes, {len(model)} B>"
    return "<onnx.ModelProto>"


def load(model) -> tuple[onnx.ModelProto, str | None, str]:
    """(a private copy of the model without its external data, the folder external data is read from, a name
    for messages)."""
    where = describe_source(model)
    base = None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise OnnxModelError(f"{where}: no such ONNX file", where)
        data = path.read_bytes()
        base = str(path.resolve().parent)
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto, None, where
    else:
        raise OnnxModelError(f"expected an ONNX file path, bytes or onnx.ModelProto, got {type(model).__name__}")
    if not data:
        raise OnnxModelError(f"{where}: the file is empty (0 bytes), not an ONNX model", where)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 -- google.protobuf.message.DecodeError and friends
        raise OnnxModelError(f"{where}: not a valid ONNX protobuf (truncated or malformed: {_first_line(e)})",
                             where) from None
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise OnnxModelError(f"{where}: parses as protobuf but holds no ONNX graph (truncated, or not an ONNX "
                             f"model)", where)
    return proto, base, where


# ---- 2. check ---------------------------------------------------------------------------------------------


def default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1 if proto.ir_version < 3 else 0


def node_label(node: onnx.NodeProto, index: int) -> str:
    return f"'{node.name}' ({node.op_type}, node #{index})"


def check(proto: onnx.ModelProto, where: str) -> None:
    """Opsets, names and order, in place: unnamed nodes are named; an unsorted acyclic graph is sorted."""
    newest = onnx.defs.onnx_opset_version()
    imports = {imp.domain or "": imp.version for imp in proto.opset_import}
    uses_default = any(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    if uses_default and "" not in imports and "ai.onnx" not in imports:
        raise OnnxModelError(f"{where}: the model imports no opset for the default ONNX domain (opset_import "
                             f"lists {sorted(imports) or 'nothing'})", where)
    v = default_opset(proto)
    if v > newest:
        raise OnnxModelError(f"{where}: opset {v} is newer than the installed onnx {onnx.__version__} knows "
                             f"(up to opset {newest}); upgrade onnx or export with opset <= {newest}", where)
    if v < 1 and uses_default:
        raise OnnxModelError(f"{where}: opset {v} is not an ONNX opset", where)
    g = proto.graph
    taken = {n.name for n in g.node if n.name}
    for i, n in enumerate(g.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)
    for i, n in enumerate(g.node):
        if n.domain not in ("", "ai.onnx") and n.domain not in imports:
            raise OnnxModelError(f"{where}: node {node_label(n, i)} uses domain {n.domain!r}, which the model "
                                 f"does not import (opset_import: {', '.join(d or 'ai.onnx' for d in imports)})",
                                 where, n.name)
    _order(g, where)


def _order(g: onnx.GraphProto, where: str) -> None:
    """Every node input defined before use; a graph in another order but without a cycle is sorted."""
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    defined |= {t.name for t in g.sparse_initializer}
    producers = {}
    for i, n in enumerate(g.node):
        for o in n.output:
            if o:
                producers[o] = i
    nodes = list(g.node)
    for i, n in enumerate(nodes):
        for k, name in enumerate(n.input):
            if name not in defined and name not in producers:
                raise OnnxModelError(f"{where}: input {k} ({name!r}) of node {node_label(n, i)} is not a graph "
                                     f"input, an initializer or any node's output (a missing initializer?)",
                                     where, n.name)
    # Kahn's algorithm over node indices
    deps = [{producers[x] for x in _all_inputs(n) if x in producers} for n in nodes]
    users = defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    pending = [len(d) for d in deps]
    ready = [i for i, c in enumerate(pending) if c == 0]
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in users[i]:
            pending[u] -= 1
            if pending[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        stuck = [i for i in range(len(nodes)) if pending[i] > 0]
        cycle = _a_cycle(stuck, deps)
        path = " -> ".join(node_label(nodes[i], i) for i in cycle)
        raise OnnxModelError(f"{where}: the graph has a cycle: {path}", where, nodes[cycle[0]].name)
    if order != sorted(order):
        sorted_nodes = [nodes[i] for i in order]
        del g.node[:]
        g.node.extend(sorted_nodes)


def _all_inputs(n: onnx.NodeProto):
    """A node's inputs and the outer names its subgraphs (If/Loop/Scan bodies) read."""
    yield from (x for x in n.input if x)
    for a in n.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            yield from _outer_names(sub)


def _outer_names(g: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads but does not define (values of the enclosing graph)."""
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    used = set()
    for n in g.node:
        used |= set(_all_inputs(n))
    return used - defined - {""}


def _a_cycle(stuck: list[int], deps: list[set[int]]) -> list[int]:
    stuck_set = set(stuck)
    start = stuck[0]
    seen: dict[int, int] = {}
    path = [start]
    cur = start
    while cur not in seen:
        seen[cur] = len(path) - 1
        nxt = next(j for j in sorted(deps[cur]) if j in stuck_set)
        path.append(nxt)
        cur = nxt
    loop = path[seen[cur]:]
    return list(reversed(loop))


def check_external_data(proto: onnx.ModelProto, base: str | None, where: str) -> None:
    """Every weight stored outside the model (``data_location: EXTERNAL``) is in a file that exists, inside
    the model's folder, and long enough."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    for t in proto.graph.initializer:
        if not uses_external_data(t):
            continue
        info = ExternalDataInfo(t)
        if base is None:
            raise OnnxModelError(f"{where}: initializer {t.name!r} keeps its data in the external file "
                                 f"{info.location!r}; compile the model from its path so byteir can find it",
                                 where)
        path = (Path(base) / info.location).resolve()
        if Path(base).resolve() not in path.parents:
            raise OnnxModelError(f"{where}: initializer {t.name!r}: external data location {info.location!r} "
                                 f"points outside the model's folder", where)
        if not path.is_file():
            raise OnnxModelError(f"{where}: initializer {t.name!r} keeps its data in {info.location!r}, which "
                                 f"is not in {base} (external data must be beside the model)", where)
        need = (info.offset or 0) + (info.length or 0)
        if info.length and path.stat().st_size < need:
            raise OnnxModelError(f"{where}: initializer {t.name!r}: {info.location!r} holds "
                                 f"{path.stat().st_size} bytes, the model reads up to byte {need} (truncated?)",
                                 where)


# ---- 3. version -------------------------------------------------------------------------------------------


def upgrade(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    v = default_opset(proto)
    if v >= UPGRADE_BELOW or not any(n.domain in ("", "ai.onnx") for n in proto.graph.node):
        return proto
    from onnx import version_converter

    if proto.ir_version < 4:  # IR 3 lists every initializer as a graph input too; the converter relies on it
        listed = {i.name for i in proto.graph.input}
        for t in proto.graph.initializer:
            if t.name not in listed:
                proto.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    try:
        out = version_converter.convert_version(proto, UPGRADE_TO)
    except Exception as e:  # noqa: BLE001
        raise OnnxModelError(f"{where}: opset {v} is older than byteir lowers directly (opset {UPGRADE_BELOW}+), "
                             f"and onnx's version converter could not convert it to opset {UPGRADE_TO}: "
                             f"{_first_line(e)}", where) from None
    return out


# ---- 4. shapes --------------------------------------------------------------------------------------------


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def pin_shapes(proto: onnx.ModelProto, shapes, where: str) -> None:
    """``shapes``: a list (one per graph input, in order) or a dict by input name."""
    inputs = graph_inputs(proto)
    names = [i.name for i in inputs]
    if isinstance(shapes, dict):
        unknown = [k for k in shapes if k not in names]
        if unknown:
            raise OnnxModelError(f"{where}: --input-shape names {', '.join(map(repr, unknown))}, which are not "
                                 f"inputs of the model; its inputs: {', '.join(names)}", where)
        pairs = [(i, shapes[i.name]) for i in inputs if i.name in shapes]
    else:
        shapes = list(shapes)
        if len(shapes) != len(inputs):
            raise OnnxModelError(f"{where}: --input-shape gives {len(shapes)} shape(s), the model has "
                                 f"{len(inputs)} input(s): {', '.join(names)} (name them: name=1x3x224x224)",
                                 where)
        pairs = list(zip(inputs, shapes))
    for vi, shape in pairs:
        tt = vi.type.tensor_type
        dims = tt.shape.dim
        if tt.HasField("shape") and len(dims) != len(shape):
            raise OnnxModelError(f"{where}: --input-shape for input {vi.name!r}: {list(shape)} has rank "
                                 f"{len(shape)}, the input has rank {len(dims)} ({_dims_text(dims)})", where)
        for k, (d, s) in enumerate(zip(dims, shape)):
            if d.HasField("dim_value") and d.dim_value != s:
                raise OnnxModelError(f"{where}: --input-shape for input {vi.name!r}: dimension {k} is "
                                     f"{d.dim_value} in the model, not {s}", where)
        tt.shape.Clear()
        for s in shape:
            tt.shape.dim.add().dim_value = int(s)


def _dims_text(dims) -> str:
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def infer_shapes(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # noqa: BLE001 -- onnx.shape_inference.InferenceError, onnx.checker errors
        text = " ".join(str(e).split())
        m = re.search(r"node name: ([^)]*)\)", text)
        node = m.group(1).strip() if m else ""
        label = ""
        if node:
            for i, n in enumerate(proto.graph.node):
                if n.name == node:
                    label = f" at node {node_label(n, i)}"
                    break
        raise OnnxModelError(f"{where}: inconsistent shapes or types{label}: {text}", where, node) from None


# ---- 5. unsupported ops, statically -----------------------------------------------------------------------


def unknown_ops(proto: onnx.ModelProto) -> list[UnsupportedNode]:
    """Nodes whose op has no definition anywhere: not in onnx's registry and not a model-local function."""
    local = {(f.domain, f.name) for f in proto.functions}
    imports = {imp.domain or "": imp.version for imp in proto.opset_import}
    found: dict[tuple, UnsupportedNode] = {}
    for i, n in enumerate(proto.graph.node):
        dom = "" if n.domain == "ai.onnx" else n.domain
        if (n.domain, n.op_type) in local:
            continue
        if onnx.defs.has(n.op_type, dom):
            continue
        key = (dom, n.op_type)
        if key not in found:
            known = dom in ("", "ai.onnx.ml", "ai.onnx.preview.training")
            reason = (f"onnx {onnx.__version__} defines no op {n.op_type!r} in this domain" if known
                      else f"domain {dom!r} is not an ONNX domain byteir knows (a vendor's custom op)")
            found[key] = UnsupportedNode(n.op_type, dom, imports.get(dom, 0), reason=reason)
        found[key].nodes.append(n.name)
    return list(found.values())


# ---- 6. import and lower ----------------------------------------------------------------------------------


def all_static(proto: onnx.ModelProto) -> bool:
    """Every value of the main graph has a known static shape (after shape inference)."""
    g = proto.graph
    typed = {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}
    for n in g.node:
        for o in n.output:
            if not o:
                continue
            v = typed.get(o)
            if v is None or not v.type.HasField("tensor_type") or not v.type.tensor_type.HasField("shape"):
                return False
            if not all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim):
                return False
    return all(o.name in typed for o in g.output)


def import_module(proto: onnx.ModelProto, context) -> ir.Module:
    """``proto`` (shapes inferred, external data loaded) -> torch-dialect ``@main`` in ``context``."""
    from torch_mlir.extras import onnx_importer

    # element types the importer has no entry for; :mod:`.native` lowers the casts to and from them
    onnx_importer.ELEM_TYPE_TO_IR_TYPE_CB.setdefault(onnx.TensorProto.FLOAT4E2M1, ir.Float4E2M1FNType.get)
    onnx_importer.ELEM_TYPE_TO_IR_TYPE_CB.setdefault(onnx.TensorProto.FLOAT8E8M0, ir.Float8E8M0FNUType.get)
    # 2-bit integers are carried as 4-bit ones (torch has no 2-bit dtype; see native.CARRIED)
    onnx_importer.ELEM_TYPE_TO_IR_TYPE_CB.setdefault(onnx.TensorProto.INT2, lambda: ir.IntegerType.get_signed(4))
    onnx_importer.ELEM_TYPE_TO_IR_TYPE_CB.setdefault(onnx.TensorProto.UINT2, lambda: ir.IntegerType.get_unsigned(4))
    register_torch_dialects(context)
    model_info = onnx_importer.ModelInfo(proto)
    module = model_info.create_module(context=context)
    imp = onnx_importer.NodeImporter.define_function(model_info.main_graph, module.operation)
    imp.import_all()
    for op in module.body.operations:
        op = op.operation
        if op.name == "func.func" and "sym_visibility" not in op.attributes:
            with context:
                op.attributes["sym_name"] = ir.StringAttr.get("main")
            break
    return module


def lower(module: ir.Module, fast: bool = False) -> None:
    onnx_pipeline = ONNX_PIPELINE_STATIC if fast else ONNX_PIPELINE
    for stage, pipeline in (("ONNX -> torch", onnx_pipeline), ("torch -> StableHLO", STABLEHLO_PIPELINE)):
        with capture_diagnostics(module.context) as diags:
            try:
                run_pipeline(module, pipeline)
            except ir.MLIRError as e:
                raise LoweringFailed(stage, diagnostics_to_text(e), diags) from None
            except Exception as e:  # noqa: BLE001
                raise LoweringFailed(stage, str(e), diags) from None


class LoweringFailed(Exception):
    def __init__(self, stage: str, text: str, diags: list[str]):
        lines = [ln for ln in (text + "\n" + "\n".join(diags)).splitlines() if ln.strip()]
        self.stage = stage
        self.lines = list(dict.fromkeys(lines))
        super().__init__(f"{stage}: " + "; ".join(self.lines[:3]))

    def reason(self) -> str:
        """The first error line, without MLIR's op dump."""
        for ln in self.lines:
            if "error:" in ln or ": " in ln:
                text = ln.split("error:", 1)[-1] if "error:" in ln else ln.split(": ", 1)[-1]
                text = re.sub(r"\s*%\d+ = .*", "", text).strip()
                text = re.sub(r"'torch\.operator' that was explicitly marked illegal",
                              "the ONNX op (no lowering for it with these attributes/types)", text)
                return text[:300]
        return self.lines[0][:300] if self.lines else "lowering failed"


# ---- probing which nodes fail --------------------------------------------------------------------------


def _node_signature(n: onnx.NodeProto, types: dict) -> tuple:
    attrs = tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))[:200]) for a in n.attribute))
    return (n.domain, n.op_type, attrs, tuple(types.get(x, "") for x in n.input))


def _value_types(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = proto.graph
    out = {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}
    for t in g.initializer:
        if t.name not in out:
            out[t.name] = onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    return out


def single_node_model(proto: onnx.ModelProto, index: int) -> onnx.ModelProto | None:
    """Node ``index`` alone, with its constant inputs (initializers, Constant nodes) kept as initializers."""
    g = proto.graph
    n = g.node[index]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
        return None
    vis = _value_types(proto)
    inits = {t.name: t for t in g.initializer}
    consts = {}
    for m in g.node:
        if m.op_type == "Constant" and m.output and m.domain in ("", "ai.onnx"):
            consts[m.output[0]] = m
    inputs, initializers, nodes = [], [], []
    for x in n.input:
        if not x or any(v.name == x for v in inputs) or x in (t.name for t in initializers):
            continue
        if x in inits:
            initializers.append(inits[x])
        elif x in consts:
            nodes.append(consts[x])
        elif x in vis:
            inputs.append(vis[x])
        else:
            return None
    outputs = []
    for x in n.output:
        if x:
            if x not in vis:
                return None
            outputs.append(vis[x])
    nodes.append(n)
    graph = onnx.helper.make_graph(nodes, f"probe_{n.name}", inputs, outputs, initializer=initializers)
    m = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    m.functions.extend(proto.functions)
    return m


def probe(proto: onnx.ModelProto, base: str | None, answer=None) -> list[UnsupportedNode]:
    """Lower each distinct kind of node alone; the kinds that fail, each with every node of that kind.
    A model of one node (besides Constants) is its own probe: ``answer``, the whole model's, says why."""
    compute = [i for i, n in enumerate(proto.graph.node) if n.op_type != "Constant"]
    if answer is not None and len(compute) == 1 and not any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in proto.graph.node[compute[0]].attribute):
        n = proto.graph.node[compute[0]]
        dom = "" if n.domain == "ai.onnx" else n.domain
        imports = {imp.domain or "": imp.version for imp in proto.opset_import}
        return [UnsupportedNode(n.op_type, dom, imports.get(dom, 0), [n.name], answer_reason(answer))]
    imports = {imp.domain or "": imp.version for imp in proto.opset_import}
    vis = _value_types(proto)
    types = {k: str(v.type) for k, v in vis.items()}
    verdict: dict[tuple, str | None] = {}
    found: dict[tuple, UnsupportedNode] = {}
    for i, n in enumerate(proto.graph.node):
        if n.op_type == "Constant":
            continue
        sig = _node_signature(n, types)
        if sig not in verdict:
            if len(verdict) >= MAX_PROBES:
                break
            verdict[sig] = _probe_one(proto, i, base)
        reason = verdict[sig]
        if reason is not None:
            dom = "" if n.domain == "ai.onnx" else n.domain
            key = (dom, n.op_type, reason)
            if key not in found:
                found[key] = UnsupportedNode(n.op_type, dom, imports.get(dom, 0), reason=reason)
            found[key].nodes.append(n.name)
    return list(found.values())


def _probe_one(proto, index, base) -> str | None:
    m = single_node_model(proto, index)
    if m is None:
        return None  # cannot isolate it: do not blame it
    return answer_reason(lower_model(m, base))


def answer_reason(answer) -> str | None:
    """The one-line reason of a worker's answer, None when it lowered."""
    kind = answer[0]
    if kind == "ok":
        return None
    if kind == "failed":
        return LoweringFailed(answer[1], "", answer[2]).reason()
    if kind == "import":
        return f"the ONNX importer refused it: {answer[1]}"
    return answer[1]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


# ---- the whole path ---------------------------------------------------------------------------------------


def prepare(model, input_shapes=None) -> tuple[onnx.ModelProto, str | None, str]:
    """Steps 1-5 (no MLIR yet): the checked, upgraded, shape-inferred model without its external data."""
    proto, base, where = load(model)
    check(proto, where)
    check_external_data(proto, base, where)
    bad = unknown_ops(proto)
    if bad:
        raise OnnxUnsupportedError(where, bad)
    proto = upgrade(proto, where)
    if input_shapes:
        pin_shapes(proto, input_shapes, where)
    from .rewrites import legalize

    proto = expand(proto, where)
    proto = infer_shapes(proto, where)
    proto = fold(proto, base, where)
    if legalize(proto):
        proto = infer_shapes(proto, where)
    return proto, base, where


def expand(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Function ops torch-mlir cannot lower, and model-local functions, inlined (:mod:`.expand`). Before strict
    shape inference: onnx infers a function op's shapes through its body, which fails for some valid models
    (MeanVarianceNormalization at opset 13)."""
    from .expand import ExpandError, expand_functions

    try:
        return expand_functions(proto)
    except ExpandError as e:
        raise OnnxModelError(f"{where}: {e}", where) from None


def fold(proto: onnx.ModelProto, base: str | None, where: str) -> onnx.ModelProto:
    """Small constant subgraphs evaluated (:mod:`.expand`)."""
    import warnings

    from .expand import fold_constants

    try:
        folded = fold_constants(proto, base)
    except Exception as e:  # noqa: BLE001 -- folding is an optimization: the model lowers unfolded
        warnings.warn(f"{where}: constant folding skipped: {_first_line(e)}", stacklevel=2)
        return proto
    if folded is proto:
        return proto
    consts = {t.name: t for t in folded.graph.initializer}
    for out in folded.graph.output:  # an output folded to a constant has that constant's shape, not a symbol
        t = consts.get(out.name)
        if t is not None:
            out.type.tensor_type.ClearField("shape")
            out.type.tensor_type.shape.SetInParent()
            for d in t.dims:
                out.type.tensor_type.shape.dim.add().dim_value = d
    return infer_shapes(folded, where)


def to_stablehlo(model, options: dict, context) -> ir.Module:
    proto, base, where = prepare(model, options.get("input_shapes"))
    answer = lower_model(proto, base)
    if answer[0] == "timeout":  # probing would take as long again per kind of node
        raise FrontendError(f"{where}: {answer[1]}")
    if answer[0] != "ok":
        bad = probe(proto, base, answer) if os.environ.get("BYTEIR_ONNX_PROBE", "1") != "0" else []
        if bad:
            raise OnnxUnsupportedError(where, bad) from None
        if answer[0] == "failed":
            detail = "\n  ".join(answer[2][:12])
            probed = os.environ.get("BYTEIR_ONNX_PROBE", "1") != "0"
            raise FrontendError(f"{where}: lowering failed ({answer[1]})"
                                + (", though each node lowers alone" if probed else "") + f":\n  {detail}")
        raise FrontendError(f"{where}: {answer_reason(answer)}" + (
            " (BYTEIR_ONNX_PROBE=0: the nodes responsible were not looked for)"
            if os.environ.get("BYTEIR_ONNX_PROBE", "1") == "0" else ""))
    try:
        module = ir.Module.parse(answer[1], context)
    except ir.MLIRError as e:
        raise FrontendError(f"{where}: the lowered model does not parse back: {diagnostics_to_text(e)}") from None
    from byteir_core.compiler.driver import set_io_names

    from .native import narrow_boundary

    narrow_boundary(module, proto)
    set_io_names(module, [i.name for i in graph_inputs(proto)], [o.name for o in proto.graph.output])
    return module
