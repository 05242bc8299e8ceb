"""Graph-level work before import: ONNX functions inlined, constant subgraphs folded.

**Functions.** Many of ONNX's newer ops (``Attention``, ``RMSNormalization``, ``RotaryEmbedding``, the losses,
...) are defined by ONNX as *functions*: a body of simpler ONNX ops, sometimes built for the node at hand (its
attributes and input types: a "context-dependent" function). torch-mlir's ONNX importer has no lowering for
these, so each such node is replaced by its body (built for the node, then inlined by onnx's own inliner) until
none is left: a body may use another function op (``SoftmaxCrossEntropyLoss`` uses
``NegativeLogLikelihoodLoss``). Model-local functions (``ModelProto.functions``, e.g. from torch's dynamo
exporter) are inlined as well. The ops expanded are :data:`EXPAND`: function ops torch-mlir cannot lower. Ops it
lowers directly (``LayerNormalization``, ``Gelu``, ``Softmax``, ...) keep their single node, so they reach the
backends as the fused patterns they are.

**Constants.** A function body computes shapes at run time (``Shape`` -> ``Gather`` -> ``Range`` ...), and so do
exporters. torch-mlir turns such values into scalar ``item`` reads it then cannot lower. With static shapes
these subgraphs are constant: onnxscript's constant folder (ONNX's reference semantics) evaluates them before
import, so torch-mlir sees constants. Folding is limited to small tensors (inputs up to
:data:`FOLD_INPUT_LIMIT` elements, results up to :data:`FOLD_OUTPUT_LIMIT`), so large weights stay as they are;
random ops are never folded.
"""

from __future__ import annotations

import onnx

#: ONNX function ops torch-mlir's ONNX importer has no lowering for (found by ONNX's node test cases: each
#: fails as a single node and passes once inlined).
EXPAND = frozenset({
    "AffineGrid", "Attention", "CausalConvWithState", "DynamicQuantizeLinear", "LinearAttention",
    "MeanVarianceNormalization", "NegativeLogLikelihoodLoss", "RMSNormalization", "RotaryEmbedding",
    "SoftmaxCrossEntropyLoss", "SwiGLU", "Swish",
})

#: rounds of inlining (a body's function ops are expanded in the next round)
MAX_ROUNDS = 8
FOLD_INPUT_LIMIT = 8192
FOLD_OUTPUT_LIMIT = 1 << 18


class ExpandError(Exception):
    """onnx's inliner refused a node (message names it)."""


#: the domain of the per-node functions built for inlining (gone once they are inlined)
LOCAL_DOMAIN = "byteir.inline"


def _expandable(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.domain in ("", "ai.onnx") and n.op_type in EXPAND]


def expand_functions(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with model-local functions and the :data:`EXPAND` ops inlined."""
    if proto.functions:
        proto = _inline(proto, "model-local functions")
    for _ in range(MAX_ROUNDS):
        if not _expandable(proto):
            break
        # types for context-dependent bodies; lenient, as strict inference can fail on a function op itself
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        _type_initializers(proto)
        g = proto.graph
        types = {v.name: v.type for v in list(g.input) + list(g.value_info) + list(g.output)}
        opset = {imp.domain or "": imp.version for imp in proto.opset_import}.get("", 1)
        built = [n.op_type for n in _expandable(proto)
                 if _to_local_function(proto, n, len(proto.functions), types, opset)]
        if not built:
            break
        proto = _inline(proto, ", ".join(dict.fromkeys(built)))
    return proto


def _inline(proto: onnx.ModelProto, what: str) -> onnx.ModelProto:
    from onnx import inliner

    try:
        out = inliner.inline_local_functions(proto, convert_version=True)
    except Exception as e:  # noqa: BLE001 -- the inliner's C++ assertion text
        raise ExpandError(f"inlining {what}: {' '.join(str(e).split())[:300]}") from None
    left = [n.name or n.op_type for n in out.graph.node if n.domain == LOCAL_DOMAIN]
    if left:
        raise ExpandError(f"inlining {what}: onnx's inliner left node(s) {', '.join(left[:5])}")
    keep = [imp for imp in out.opset_import if imp.domain != LOCAL_DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def _to_local_function(proto: onnx.ModelProto, n: onnx.NodeProto, index: int, types: dict, opset: int) -> bool:
    """Turn node ``n`` into a call of a model-local function holding its ONNX body, built for this node (its
    attributes, which inputs it has, their types); False when the op has no body at the model's opset.

    onnx's own schema inlining (``inline_schema_functions``) fails on a node that skips an optional input in the
    middle (``Attention(Q, K, V, "", past_key, past_value)``: "Type unknown for"), and drops attributes left
    at their defaults; building the body here handles both."""
    schema = onnx.defs.get_schema(n.op_type, opset, "")
    _spell_out_defaults(n, schema)
    body = None
    if schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if versions:
            in_types = [types[i].SerializeToString() if i in types else onnx.TypeProto().SerializeToString()
                        for i in n.input]
            raw = schema.get_context_dependent_function_with_opset_version(max(versions), n.SerializeToString(),
                                                                           in_types)
            body = onnx.FunctionProto.FromString(raw)
    elif schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        if versions:
            raw = schema.get_function_with_opset_version(max(versions))
            body = onnx.FunctionProto.FromString(raw) if isinstance(raw, bytes) else raw
    if body is None:
        return False
    body.name, body.domain = f"{n.op_type}_{index}", LOCAL_DOMAIN
    if not any(imp.domain == LOCAL_DOMAIN for imp in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(LOCAL_DOMAIN, 1))
    proto.functions.append(body)
    n.op_type, n.domain = body.name, LOCAL_DOMAIN
    return True


def _type_initializers(proto: onnx.ModelProto) -> None:
    """A ``value_info`` for each initializer: the inliner looks types up there and in the graph's inputs only
    ("Type unknown for <initializer>")."""
    g = proto.graph
    typed = {v.name for v in g.input} | {v.name for v in g.value_info}
    for t in g.initializer:
        if t.name not in typed:
            g.value_info.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def _spell_out_defaults(n: onnx.NodeProto, schema) -> None:
    """Give node ``n`` every attribute its schema has a default for. onnx's inliner drops a body's reference to
    an attribute the node leaves unset instead of using the schema's default (an unset ``axes`` of
    MeanVarianceNormalization, ``[0, 2, 3]``, became ReduceMean over every axis)."""
    have = {a.name for a in n.attribute}
    for name, attr in schema.attributes.items():
        default = attr.default_value
        if name not in have and default.type != onnx.AttributeProto.UNDEFINED:
            a = n.attribute.add()
            a.CopyFrom(default)
            a.name = name


def fold_constants(proto: onnx.ModelProto, base: str | None = None) -> onnx.ModelProto:
    """``proto`` with its small constant subgraphs evaluated (see the module text). External data stays where it
    is: ``base`` is the folder its files are found in, for the few small tensors folding reads."""
    import onnx_ir as oir
    from onnxscript import optimizer

    _castlike_to_cast(proto)
    model = oir.serde.deserialize_model(proto)
    if base:
        oir.external_data.set_base_dir(model.graph, base)
    result = optimizer.fold_constants(model, input_size_limit=FOLD_INPUT_LIMIT, output_size_limit=FOLD_OUTPUT_LIMIT)
    if not result.modified:
        return proto
    optimizer.remove_unused_nodes(model)
    return oir.serde.serialize_model(model)


def _castlike_to_cast(proto: onnx.ModelProto) -> None:
    """``CastLike(x, like)`` -> ``Cast(x, to=<like's type>)`` with its ``saturate``/``round_mode`` kept, in place,
    where the type of ``like`` is known. onnxscript's folder makes the same rewrite but drops those attributes, so
    a non-saturating float8 cast became a saturating one (a wrong result)."""
    g = proto.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
    elem.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type != "CastLike" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        to = elem.get(n.input[1])
        if not to:
            continue
        kept = [a for a in n.attribute if a.name in ("saturate", "round_mode")]
        del n.input[1:]
        n.op_type = "Cast"
        del n.attribute[:]
        n.attribute.extend([onnx.helper.make_attribute("to", to)] + kept)
