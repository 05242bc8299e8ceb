"""FX graphs -> StableHLO, through torch-mlir's FX importer, in the context the core hands us.

Weights become StableHLO constants (dense attributes, as ByteIR does). ``torch.ops.byteir.*`` calls, which
the FX importer emits as ``torch.operator "byteir.<name>"``, are rewritten to ``stablehlo.custom_call
@byteir.<name>`` (with ``byteir_attrs``) before torch-mlir's pipelines run, so they survive to StableHLO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from byteir_core.errors import FrontendError
from byteir_core.mlir import capture_diagnostics, diagnostics_to_text, ir, run_pipeline, walk_ops

TORCH_PIPELINE = ("func.func(torch-match-quantized-custom-ops),"
                  "torchdynamo-export-to-torch-backend-pipeline{ extra-library=}")
STABLEHLO_PIPELINE = "torch-backend-to-stablehlo-backend-pipeline{allow-non-finites=true}"

#: Scalar attributes of each byteir custom op, by position after its tensor operands.
CUSTOM_OPS = {
    "byteir.flash_attn_fwd": {"tensors": 4, "attrs": ("scale", "causal")},
    "byteir.flash_attn_bwd": {"tensors": 7, "attrs": ("scale", "causal")},
}



class TorchLoweringError(FrontendError):
    """torch-mlir could not lower some ops; ``ops`` maps each aten op name to its source locations."""

    def __init__(self, message: str, ops: dict[str, list[str]]):
        super().__init__(message)
        self.ops = ops


@dataclass
class _Literals:
    """FxImporter hooks: tensors (weights, folded constants) as dense attributes, readable by later passes."""

    def __post_init__(self):
        from torch_mlir.extras.fx_importer import FxImporterHooks

        outer = self

        class Hooks(FxImporterHooks):
            def resolve_literal(self, gni, literal, info):
                return outer.literal(gni, literal)

        self.hooks = Hooks()

    @staticmethod
    def literal(gni, literal):
        if not isinstance(literal, torch.Tensor) or literal.numel() <= 1 or literal.dtype == torch.bool:
            return None  # (the importer hands bool tensors over as uint8)
        if literal.is_complex() or literal.is_quantized:
            return None
        t = literal.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            arr, elem = t.view(torch.int16).numpy().view(np.uint16), ir.BF16Type.get()
        else:
            arr, elem = t.numpy(), None
        if elem is not None:
            attr = ir.DenseElementsAttr.get(arr, type=elem, shape=list(t.shape))
        else:  # unsigned stays unsigned (torch's ui8), every other integer is signless as torch-mlir expects
            attr = ir.DenseElementsAttr.get(arr, shape=list(t.shape), signless=t.dtype != torch.uint8)
        vtype = gni._cc.tensor_to_vtensor_type(literal)
        return ir.Operation.create("torch.vtensor.literal", results=[vtype], attributes={"value": attr}).result


def register_torch_dialect(context) -> None:
    from byteir_core.mlir import register_torch_dialects

    register_torch_dialects(context)


class _ProgramView:
    """An ExportedProgram whose state dict also holds its constants and non-persistent buffers (FACTS §9)."""

    def __init__(self, prog):
        self._prog = prog
        state = dict(prog.state_dict)
        for name, value in getattr(prog, "constants", {}).items():
            state.setdefault(name, value)
        self.state_dict = state

    def __getattr__(self, item):
        return getattr(self._prog, item)


def import_program(prog, context) -> ir.Module:
    """An ExportedProgram (weights frozen as constants) -> StableHLO ``@main`` in ``context``."""
    from torch_mlir.extras.fx_importer import FxImporter

    register_torch_dialect(context)
    importer = FxImporter(context=context, hooks=_Literals().hooks)
    with context:
        importer.import_frozen_program(_ProgramView(prog), func_name="main")
    return lower_to_stablehlo(importer.module)


def import_graph(gm: torch.fx.GraphModule, context) -> ir.Module:
    """A stateless FX graph (every tensor a placeholder, e.g. from AOTAutograd) -> StableHLO ``@main``."""
    from torch_mlir.extras.fx_importer import FxImporter

    register_torch_dialect(context)
    importer = FxImporter(context=context, hooks=_Literals().hooks)
    with context:
        importer.import_stateless_graph(gm.graph, func_name="main")
    return lower_to_stablehlo(importer.module)


def lower_to_stablehlo(module: ir.Module) -> ir.Module:
    _rewrite_custom_ops(module)
    for name, pipeline in (("torch-backend", TORCH_PIPELINE), ("stablehlo", STABLEHLO_PIPELINE)):
        with capture_diagnostics(module.context) as diags:
            try:
                run_pipeline(module, pipeline)
            except ir.MLIRError as e:
                raise _lowering_error(name, diagnostics_to_text(e), diags) from None
            except Exception as e:  # noqa: BLE001
                raise _lowering_error(name, str(e), diags) from None
    return module


def _lowering_error(stage: str, text: str, diags: list[str]) -> TorchLoweringError:
    lines = [ln for ln in (text + "\n" + "\n".join(diags)).splitlines() if ln.strip()]
    ops: dict[str, list[str]] = {}
    for ln in lines:
        m = re.search(r"'(torch\.(?:aten|prims|operator)[\w.]*)'", ln)
        if m:
            op = m.group(1).removeprefix("torch.")
            named = re.search(r'name = "torch\.([\w.]+)"', ln)
            if op == "operator" and named:
                op = named.group(1)
            loc = ln.split(": error", 1)[0].split(": ", 1)[0] if ": " in ln else ""
            ops.setdefault(op, [])
            if loc and loc not in ops[op] and not loc.startswith("loc(unknown"):
                ops[op].append(loc)
    unique = list(dict.fromkeys(lines))
    detail = "\n  ".join(unique[:12]) + ("\n  ..." if len(unique) > 12 else "")
    if ops:
        listed = "; ".join(f"{op} at {', '.join(locs[:3]) or 'unknown location'}" for op, locs in ops.items())
        msg = f"torch-mlir cannot lower these PyTorch ops to StableHLO ({stage} pipeline): {listed}\n  {detail}"
    else:
        msg = f"torch-mlir failed in the {stage} pipeline:\n  {detail}"
    return TorchLoweringError(msg, ops)


# ---- torch.operator "byteir.*" -> stablehlo.custom_call -----------------------------------------------------


_TORCH_ELEM = {"si64": "i64", "si32": "i32", "si16": "i16", "si8": "i8", "ui8": "ui8", "i1": "i1"}


def _builtin_type(vtype) -> ir.Type:
    m = re.fullmatch(r"!torch\.vtensor<\[([\d,]*)\],(\w+)>", str(vtype))
    if not m:
        raise FrontendError(f"byteir custom op: operand of type {vtype} is not a ranked static tensor")
    dims = [d for d in m.group(1).split(",") if d]
    elem = _TORCH_ELEM.get(m.group(2), m.group(2))
    return ir.Type.parse(f"tensor<{'x'.join(dims + [elem])}>" if dims else f"tensor<{elem}>")


def _scalar(value) -> ir.Attribute:
    owner = value.owner
    owner = getattr(owner, "operation", owner)
    name = owner.name
    if name == "torch.constant.float":
        return ir.FloatAttr.get(ir.F64Type.get(), ir.FloatAttr(owner.attributes["value"]).value)
    if name == "torch.constant.bool":
        return ir.BoolAttr.get(ir.BoolAttr(owner.attributes["value"]).value)
    if name == "torch.constant.int":
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), ir.IntegerAttr(owner.attributes["value"]).value)
    raise FrontendError(f"byteir custom op: scalar argument comes from {name}, expected a constant")


def _rewrite_custom_ops(module: ir.Module) -> None:
    found = []
    for op in walk_ops(module):
        if op.name == "torch.operator":
            target = ir.StringAttr(op.attributes["name"]).value.removeprefix("torch.").removesuffix(".default")
            if target in CUSTOM_OPS:
                found.append((op, target))
    with module.context:
        for op, target in found:
            spec = CUSTOM_OPS[target]
            operands = list(op.operands)
            tensors, scalars = operands[:spec["tensors"]], operands[spec["tensors"]:]
            with ir.InsertionPoint(op), op.location:
                builtin_operands, present = [], []
                for v in tensors:
                    if str(v.type) == "!torch.none":
                        present.append(False)
                        continue
                    present.append(True)
                    builtin_operands.append(ir.Operation.create(
                        "torch_c.to_builtin_tensor", results=[_builtin_type(v.type)], operands=[v]).result)
                attrs = {name: _scalar(v) for name, v in zip(spec["attrs"], scalars)}
                attrs["operand_present"] = ir.ArrayAttr.get([ir.BoolAttr.get(p) for p in present])
                call = ir.Operation.create(
                    "stablehlo.custom_call", results=[_builtin_type(r.type) for r in op.results],
                    operands=builtin_operands,
                    attributes={"call_target_name": ir.StringAttr.get(target),
                                "byteir_attrs": ir.DictAttr.get(attrs)})
                for old, new in zip(op.results, call.results):
                    back = ir.Operation.create("torch_c.from_builtin_tensor", results=[old.type], operands=[new])
                    old.replace_all_uses_with(back.result)
            op.erase()


# ---- which op broke it -----------------------------------------------------------------------------------


def probe_ops(gm: torch.fx.GraphModule) -> dict[str, list[str]]:
    """Import each kind of op of ``gm`` on its own; {aten op: [source lines]} for those torch-mlir cannot lower.

    Used when a whole graph fails with an error that names no op (torch-mlir sometimes only reports the
    constants a failed conversion left behind)."""
    import operator

    from byteir_core.mlir import new_context

    bad: dict[str, list[str]] = {}
    verdict: dict[str, bool] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        name = node.target._schema.name.replace("::", ".")
        key = str(node.target)
        if key not in verdict:
            verdict[key] = _imports_alone(node, new_context, operator)
        if not verdict[key]:
            bad.setdefault(name, []).append(source_line(node))
    return bad


def _imports_alone(node, new_context, operator) -> bool:
    g = torch.fx.Graph()
    env = {}
    for inp in node.all_input_nodes:
        if not isinstance(inp.meta.get("val"), torch.Tensor):
            return True  # cannot be isolated: do not blame it
        ph = g.placeholder(inp.name)
        ph.meta = dict(inp.meta)
        env[inp] = ph
    new = g.node_copy(node, lambda n: env[n])
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        outs = []
        for i, v in enumerate(val):
            if isinstance(v, torch.Tensor):
                item = g.call_function(operator.getitem, (new, i))
                item.meta["val"] = v
                outs.append(item)
    elif isinstance(val, torch.Tensor):
        outs = [new]
    else:
        return True
    g.output(tuple(outs))
    try:
        import_graph(torch.fx.GraphModule(torch.nn.Module(), g), new_context())
    except FrontendError:
        return False
    except Exception:  # noqa: BLE001 -- the importer itself choked on this op alone
        return False
    return True


def source_line(node) -> str:
    """The user's source line of an FX node (last frame of its stack trace)."""
    trace = node.meta.get("stack_trace") or ""
    frames = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith("File ")]
    return frames[-1].replace("File ", "", 1) if frames else "unknown source line"
