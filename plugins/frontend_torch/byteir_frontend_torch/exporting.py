"""Whole-model path: nn.Module / ExportedProgram / ``.pt2`` -> torch.export -> our FX passes -> StableHLO."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from byteir_core.errors import FrontendError

from . import custom_ops  # noqa: F401  (registers torch.ops.byteir.*)
from . import fx_passes
from .importer import import_program

#: Passes run by default, in order; ``options={"fx_passes": [...]}`` picks a subset.
DEFAULT_PASSES = ("rewrite-attention", "simplify-views", "fold-constants")


def decomposition_table() -> dict:
    """torch-mlir's decompositions for StableHLO, minus the attention decompositions: attention is ours to
    rewrite (``byteir.flash_attn_fwd``) and the core decomposes what no backend claims."""
    from torch_mlir.fx import get_decomposition_table

    from torch._decomp import decomposition_table as torch_table

    table = dict(get_decomposition_table())
    for op in (torch.ops.aten.scaled_dot_product_attention.default,):
        table.pop(op, None)
    # Backward ops torch-mlir cannot lower to StableHLO, whose PyTorch decompositions it can (training CNNs).
    for op in (torch.ops.aten.max_pool2d_with_indices_backward.default,):
        if op in torch_table:
            table.setdefault(op, torch_table[op])
    table[torch.ops.aten.convolution_backward.default] = _grouped_convolution_backward
    table[torch.ops.aten.slice_scatter.default] = _slice_scatter_as_concatenate
    return table


def _slice_scatter_as_concatenate(inp, src, dim=0, start=None, end=None, step=1):
    """slice_scatter with step 1 as a concatenation of the kept parts and ``src`` (torch-mlir makes a general
    scatter of it, which runs as an element-by-element host kernel; a concatenate is generated code)."""
    if step != 1 or any(not isinstance(d, int) for d in inp.shape):
        return NotImplemented
    dim = dim % inp.dim()
    size = inp.shape[dim]
    start = 0 if start is None else (start + size if start < 0 else start)
    end = size if end is None else (end + size if end < 0 else end)
    start, end = max(0, min(start, size)), max(0, min(end, size))
    if end - start != src.shape[dim]:
        return NotImplemented
    parts = []
    if start > 0:
        parts.append(torch.ops.aten.slice.Tensor(inp, dim, 0, start))
    parts.append(src)
    if end < size:
        parts.append(torch.ops.aten.slice.Tensor(inp, dim, end, size))
    return torch.cat(parts, dim) if len(parts) > 1 else src.clone()


def _grouped_convolution_backward(grad, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding,
                                  groups, mask):
    """Grouped convolution_backward (torch-mlir lowers only groups=1) as one ungrouped call per group."""
    if groups == 1 or transposed:
        return NotImplemented
    aten = torch.ops.aten
    gx, gw, go = x.shape[1] // groups, w.shape[0] // groups, grad.shape[1] // groups
    dxs, dws = [], []
    for g in range(groups):
        dx, dw, _ = aten.convolution_backward.default(
            grad[:, g * go:(g + 1) * go], x[:, g * gx:(g + 1) * gx], w[g * gw:(g + 1) * gw], None, stride, padding,
            dilation, False, output_padding, 1, [mask[0], mask[1], False])
        dxs.append(dx)
        dws.append(dw)
    dx = torch.cat(dxs, 1) if mask[0] else None
    dw = torch.cat(dws, 0) if mask[1] else None
    db = grad.sum(dim=[0, *range(2, grad.dim())]) if mask[2] else None
    return dx, dw, db


def load_pt2(path) -> torch.export.ExportedProgram:
    p = Path(path)
    if not p.exists():
        raise FrontendError(f"{p}: no such file")
    try:
        return torch.export.load(str(p))
    except Exception as e:  # noqa: BLE001
        raise FrontendError(f"{p}: not a loadable torch.export program (torch {torch.__version__}): "
                            f"{_first_line(e)}") from None


def export(model, example_inputs, options: dict) -> torch.export.ExportedProgram:
    if isinstance(model, (str, os.PathLike)):
        return load_pt2(model)
    if isinstance(model, torch.export.ExportedProgram):
        return model
    if not isinstance(model, torch.nn.Module):
        raise FrontendError(f"the torch frontend takes an nn.Module, an ExportedProgram or a .pt2 file, "
                            f"not {type(model).__name__}")
    if example_inputs is None:
        raise FrontendError(f"compiling {type(model).__name__} needs example_inputs (a tuple of tensors)")
    args = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    try:
        return torch.export.export(model, args, kwargs=options.get("example_kwargs"),
                                   dynamic_shapes=options.get("dynamic_shapes"),
                                   strict=bool(options.get("strict_export", False)))
    except Exception as e:  # noqa: BLE001 -- torch.export raises many types; all become one clear error
        raise FrontendError(export_failure(type(model).__name__, e)) from None


def export_failure(module_name: str, e: Exception) -> str:
    """One message: which module, why (torch.export's own words, shortened), and its suggested fix."""
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    why = lines[0] if lines else type(e).__name__
    fix = ""
    m = re.search(r"Suggested fixes?:\s*\n(.*?)(?:\n\s*\n|$)", text, re.S)
    if m:
        fix = "\n  suggested fix (from torch.export):\n    " + "\n    ".join(
            ln.strip() for ln in m.group(1).splitlines() if ln.strip())
    elif "register a pytree" in text or "not a known type" in text:
        fix = ("\n  hint: the module returns an object torch.export cannot flatten; return tensors, or turn off "
               "caches (e.g. transformers config.use_cache=False)")
    return f"torch.export failed for module {module_name}: {type(e).__name__}: {why}{fix}"


def prepare(prog: torch.export.ExportedProgram, options: dict) -> tuple[torch.export.ExportedProgram, dict]:
    """Our FX passes around torch-mlir's decompositions. Returns the program and {pass: sites changed}."""
    wanted = tuple(options.get("fx_passes", DEFAULT_PASSES))
    unknown = set(wanted) - set(DEFAULT_PASSES)
    if unknown:
        raise FrontendError(f"unknown fx pass(es) {sorted(unknown)}; known: {', '.join(DEFAULT_PASSES)}")
    stats = {}
    if "rewrite-attention" in wanted:
        stats["rewrite-attention"] = fx_passes.rewrite_attention(prog.graph_module)
    try:
        prog = prog.run_decompositions(decomposition_table())
    except Exception as e:  # noqa: BLE001
        raise FrontendError(f"decomposing the exported program failed: {_first_line(e)}") from None
    gm = prog.graph_module
    stats["normalize-slices"] = fx_passes.normalize_slices(gm)
    if "simplify-views" in wanted:
        stats["simplify-views"] = fx_passes.simplify_views(gm)
    if "fold-constants" in wanted:
        stats["fold-constants"] = fx_passes.fold_constants(gm, fx_passes.program_constants(prog))
    return prog, stats


class FxGraph:
    """A stateless FX graph, every tensor a placeholder (what AOTAutograd hands a backend): imported as is,
    without torch.export."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm


def to_stablehlo(model, example_inputs, options: dict, context):
    from .importer import import_graph

    if isinstance(model, FxGraph):
        stats = {"normalize-slices": fx_passes.normalize_slices(model.gm),
                 "simplify-views": fx_passes.simplify_views(model.gm),
                 "fold-constants": fx_passes.fold_constants(model.gm, {})}
        return import_graph(model.gm, context)
    from .importer import TorchLoweringError, probe_ops

    prog = export(model, example_inputs, options)
    prog, stats = prepare(prog, options)
    try:
        return import_program(prog, context)
    except TorchLoweringError as e:
        if e.ops:
            raise
        found = probe_ops(prog.graph_module)  # the error named no op: find it one op at a time
        if not found:
            raise
        listed = "; ".join(f"{op} at {', '.join(dict.fromkeys(lines))}" for op, lines in found.items())
        raise TorchLoweringError(f"torch-mlir cannot lower these PyTorch ops to StableHLO: {listed}\n  {e}",
                                 found) from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
