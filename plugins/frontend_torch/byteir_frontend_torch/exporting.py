"""Whole-model path: nn.Module / ExportedProgram / ``.pt2`` -> torch.export -> our FX passes -> StableHLO.

What comes back: the model's own structure. The returned StableHLO carries, on ``@main``, each argument's name
(forward's parameter names, as torch.export's placeholders have them) and each result's name (dict keys,
dataclass/``ModelOutput`` fields, ``output{i}`` for tuple positions, ``a.b.0`` for nested ones) as
``byteir.name``, and on the module ``byteir.structure``: the tree of what the model returned (tensor, tuple,
list, dict, dataclass, namedtuple, ``None``), rebuilt by ``Session.__call__``.

Training mode: a module in training mode is compiled in **eval mode** by default (BatchNorm uses its running
statistics, Dropout is off), with a :class:`ByteirModeWarning` naming the module; the module's mode is restored
afterwards. ``options={"train": True}`` compiles training behaviour instead (BatchNorm's batch statistics): the
buffer updates it makes are then extra flat outputs named ``update:<buffer>`` (e.g. ``update:bn.running_mean``,
in ``Session.run``'s list), never part of the structured result. An ExportedProgram / ``.pt2`` keeps the mode it
was exported in, with its buffer updates named the same way. Random ops (dropout in training mode,
``torch.rand``, ...) cannot be compiled: they are one :class:`FrontendError` naming the op, its source line and
the fix, before lowering.

``options={"input_shapes": [[3, 16], ...]}`` (the CLI's ``--input-shape``) specializes a program with dynamic
dimensions to those static shapes before lowering.

torch's own log lines and deprecation warnings are kept quiet while we call into torch (:func:`quiet_torch`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import warnings
from collections import OrderedDict, defaultdict
from pathlib import Path

import torch
from byteir_core.errors import FrontendError
from torch import nn

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
    table[torch.ops.aten.scatter.value] = _one_hot_scatter
    table[torch.ops.aten.scatter.src] = _one_hot_scatter
    return table


def _one_hot_scatter(inp, dim, index, src):
    """``scatter`` that writes one element per row (index of length 1 along ``dim``, as wide as the input
    elsewhere: cross-entropy's backward, one-hot targets) as ``where(iota == index, src, inp)``: elementwise, so
    it fuses with what reads it. torch-mlir makes a general scatter of it, a host kernel that copies the whole
    input to write one element per row. Indices out of range select nothing, as the scatter skips them."""
    if any(not isinstance(d, int) for d in (*inp.shape, *index.shape)) or inp.dim() == 0:
        return NotImplemented
    dim = dim % inp.dim()
    if index.dim() != inp.dim() or index.shape[dim] != 1 or any(
            index.shape[d] != inp.shape[d] for d in range(inp.dim()) if d != dim):
        return NotImplemented
    if isinstance(src, torch.Tensor):
        if src.dim() != inp.dim() or any(src.shape[d] < index.shape[d] for d in range(inp.dim())):
            return NotImplemented
        src = src[tuple(slice(0, n) for n in index.shape)].to(inp.dtype)
    else:
        src = torch.scalar_tensor(src, dtype=inp.dtype)
    shape = [1] * inp.dim()
    shape[dim] = inp.shape[dim]
    positions = torch.arange(inp.shape[dim], dtype=index.dtype).view(shape)
    return torch.where(positions == index, src, inp)


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


class ByteirModeWarning(UserWarning):
    """A module in training mode was compiled in eval mode (``options={"train": True}`` compiles training)."""


@contextlib.contextmanager
def quiet_torch():
    """torch's log lines (e.g. torch.export.load's traceback of a file that is not an archive) and its
    ``LeafSpec`` FutureWarning, silenced while byteir calls into torch; the user's settings come back after."""
    names = ["torch", "torch_mlir"] + [n for n in list(logging.root.manager.loggerDict)
                                       if n.startswith(("torch.", "torch_mlir."))]
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        if logger.level < logging.ERROR:
            logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            # nn.LSTM/GRU's own weight list, which torch.export reports as if the user had assigned it
            warnings.filterwarnings("ignore", category=UserWarning, message=r"The tensor attributes "
                                    r"(self\.[\w.]*_flat_weights\[\d+\](, )?)+ were assigned during export")
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the user's line (the first frame outside byteir), counted
    from the caller of this function."""
    import byteir_core

    ours = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(byteir_core.__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(ours):
        frame, level = frame.f_back, level + 1
    return level


def load_pt2(path) -> torch.export.ExportedProgram:
    p = Path(path)
    if not p.exists():
        raise FrontendError(f"{p}: no such file")
    try:
        with quiet_torch():
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
    train = bool(options.get("train", False))
    modes = {m: m.training for m in model.modules()}
    sensitive = [] if train else _mode_sensitive(model)
    if sensitive:
        changed = ", ".join(sensitive[:3]) + (", ..." if len(sensitive) > 3 else "")
        warnings.warn(ByteirModeWarning(
            f"{_training_part(model)} is in training mode; compiled in eval mode (BatchNorm uses running "
            f"statistics, Dropout is off; this changes {changed}). Call .eval() to silence, or "
            f"options={{'train': True}} to compile training behaviour: buffer updates are then extra outputs "
            f"named like 'update:bn.running_mean' (Session.run), not part of the result"),
            stacklevel=_user_stacklevel())
    model.train(train)
    try:
        with quiet_torch():
            return torch.export.export(model, args, kwargs=options.get("example_kwargs"),
                                       dynamic_shapes=options.get("dynamic_shapes"),
                                       strict=bool(options.get("strict_export", False)))
    except Exception as e:  # noqa: BLE001 -- torch.export raises many types; all become one clear error
        raise FrontendError(export_failure(type(model).__name__, e)) from None
    finally:
        for m, training in modes.items():
            m.training = training


def _mode_sensitive(model) -> list[str]:
    """The submodules in training mode that compute differently in eval mode, as ``name (Class)``: torch's
    BatchNorm / InstanceNorm with running statistics, Dropout with p > 0, RNNs and attention with dropout, and
    modules of the user's own whose ``forward`` reads ``self.training``. A module in training mode with none
    (an MLP, a Linear) compiles the same either way, without a warning."""
    import inspect

    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.dropout import _DropoutNd
    from torch.nn.modules.instancenorm import _InstanceNorm

    found = []
    for name, m in model.named_modules():
        if not m.training:
            continue
        if isinstance(m, (_BatchNorm, _InstanceNorm)):
            hit = m.track_running_stats
        elif isinstance(m, _DropoutNd):
            hit = m.p > 0
        elif isinstance(m, (nn.RNNBase, nn.MultiheadAttention)):
            hit = m.dropout > 0
        elif type(m).__module__.split(".")[0] == "torch":
            hit = False
        else:
            try:
                hit = "training" in inspect.getsource(type(m).forward)
            except (OSError, TypeError):  # no source (a compiled or generated class): it may read the mode
                hit = True
        if hit:
            found.append(f"{type(model).__name__}{'.' + name if name else ''} ({type(m).__name__})")
    return found


def _training_part(model) -> str:
    """The module (or its first submodule) in training mode, as the user knows it."""
    if model.training:
        return type(model).__name__
    name, sub = next((n, m) for n, m in model.named_modules() if m.training)
    return f"{type(model).__name__}.{name} ({type(sub).__name__})"


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
        with quiet_torch():  # (its deep copy of the output spec is what warns about LeafSpec)
            prog = prog.run_decompositions(decomposition_table())
    except Exception as e:  # noqa: BLE001
        raise FrontendError(f"decomposing the exported program failed: {_first_line(e)}") from None
    gm = prog.graph_module
    stats["normalize-slices"] = fx_passes.normalize_slices(gm)
    if "simplify-views" in wanted:
        stats["simplify-views"] = fx_passes.simplify_views(gm)
    stats["gather-before-arithmetic"] = fx_passes.gather_before_arithmetic(gm)
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
        with quiet_torch():
            stats = {"normalize-slices": fx_passes.normalize_slices(model.gm),
                     "simplify-views": fx_passes.simplify_views(model.gm),
                     "gather-before-arithmetic": fx_passes.gather_before_arithmetic(model.gm),
                     "fold-constants": fx_passes.fold_constants(model.gm, {})}
            return import_graph(model.gm, context)

    prog = export(model, example_inputs, options)
    with quiet_torch():
        if options.get("input_shapes"):
            prog = specialize(prog, options["input_shapes"])
        prog, stats = prepare(prog, options)
        refuse_random_ops(prog.graph_module, trained=bool(options.get("train")) and not isinstance(
            model, (str, os.PathLike, torch.export.ExportedProgram)))
        outputs = OutputPlan(prog)
        in_names = user_input_names(prog)
        outputs.strip_constants(prog.graph_module)
        module = _import(prog, context)
    annotate(module, in_names, outputs.names, outputs.tree)
    return module


def _import(prog, context):
    from .importer import TorchLoweringError, probe_ops

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


# ---- static shapes for a dynamic program (--input-shape) ---------------------------------------------------


def specialize(prog: torch.export.ExportedProgram, shapes) -> torch.export.ExportedProgram:
    """``prog`` re-exported for these static shapes of its tensor inputs (one per ``@main`` argument), so that
    torch-mlir emits no shape computations; a shape the program cannot take is a :class:`FrontendError`."""
    from torch.export.graph_signature import InputKind, TensorArgument
    from torch.utils import _pytree as pytree

    user = [s for s in prog.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    tensors = [s for s in user if isinstance(s.arg, TensorArgument)]
    vals = {n.name: n.meta.get("val") for n in prog.graph.nodes if n.op == "placeholder"}
    names = ", ".join(s.arg.name for s in tensors)
    if len(shapes) != len(tensors):
        raise FrontendError(f"--input-shape gives {len(shapes)} shape(s); the program takes {len(tensors)} tensor "
                            f"input(s) ({names})")
    flat, shapes_it, static = [], iter(shapes), True
    for s in user:
        if not isinstance(s.arg, TensorArgument):
            flat.append(getattr(s.arg, "value", None))
            continue
        val, shape = vals[s.arg.name], [int(d) for d in next(shapes_it)]
        have = "x".join(str(d) if isinstance(d, int) else "?" for d in val.shape) or "scalar"
        if len(shape) != val.dim() or any(isinstance(d, int) and d != n for d, n in zip(val.shape, shape)):
            raise FrontendError(f"--input-shape for input {s.arg.name!r}: {'x'.join(map(str, shape)) or 'scalar'} "
                                f"does not fit its shape {have}")
        static = static and all(isinstance(d, int) for d in val.shape)
        flat.append(torch.zeros(shape, dtype=val.dtype, device=val.device))
    if static:
        return prog  # nothing to specialize (the shapes fit)
    args, kwargs = pytree.tree_unflatten(flat, prog.call_spec.in_spec)
    try:
        return torch.export.export(prog.module(), tuple(args), kwargs=kwargs or None, strict=False)
    except Exception as e:  # noqa: BLE001
        given = ",".join("x".join(map(str, s)) or "scalar" for s in shapes)
        raise FrontendError(f"--input-shape {given} does not fit the program's inputs ({names}): "
                            f"{_first_line(e)}") from None


# ---- random ops ---------------------------------------------------------------------------------------------


def refuse_random_ops(gm: torch.fx.GraphModule, trained: bool = False) -> None:
    """Random ops (training-mode dropout, ``torch.rand``, ``bernoulli``, ...) have no lowering to any backend: one
    :class:`FrontendError` naming each, where the user wrote it, and the fix."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) \
                and torch.Tag.nondeterministic_seeded in node.target.tags:
            op = node.target._schema.name.replace("::", ".")
            where = _module_of(node)
            found.append(f"{op}{f' in {where}' if where else ''} at {user_source_line(node)}")
    if not found:
        return
    dropout = any("dropout" in f for f in found)
    if trained:
        fix = "compile without options={'train': True} (eval mode turns Dropout off), or remove the random op"
    elif dropout:
        fix = ("call model.eval() before torch.export (Dropout is then off), or remove the dropout "
               "(e.g. Dropout(p=0))")
    else:
        fix = "call model.eval() before torch.export if it is dropout, else compute the random values outside " \
              "the model and pass them in as an input"
    raise FrontendError("byteir cannot compile random ops (no backend generates random numbers): "
                        + "; ".join(dict.fromkeys(found)) + f"\n  fix: {fix}")


def _module_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    fqn, cls = list(stack.values())[-1]
    cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
    return f"{fqn} ({cls_name})" if fqn else cls_name


def user_source_line(node) -> str:
    """The innermost frame of a node's stack trace that is the user's (outside torch): ``file:line (code)``."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)', trace)
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    mine = [f for f in frames if not os.path.abspath(f[0]).startswith(torch_dir)]
    if not mine:
        from .importer import source_line

        return source_line(node)
    file, line, code = mine[-1]
    return f"{file}:{line} ({code.strip()})"


# ---- names and structure ----------------------------------------------------------------------------------


def user_input_names(prog) -> list[str]:
    """The names of ``@main``'s arguments: torch.export's user-input placeholders, named after forward's
    parameters (``x``, ``attention_mask``; ``inputs_0`` for the items of a tuple argument)."""
    from torch.export.graph_signature import InputKind, TensorArgument

    return [s.arg.name for s in prog.graph_signature.input_specs
            if s.kind == InputKind.USER_INPUT and isinstance(s.arg, TensorArgument)]


class OutputPlan:
    """How ``@main``'s results map onto what the model returned.

    The graph's outputs are torch.export's output specs in order: buffer / input updates first (named
    ``update:<buffer or input>``), then the user's outputs, the leaves of ``call_spec.out_spec``. Tensor
    leaves become results; constant leaves (``None``, ints) are taken out of the graph and kept in the tree.
    """

    def __init__(self, prog):
        from torch.export.graph_signature import ConstantArgument, OutputKind

        out_node = next(n for n in prog.graph.nodes if n.op == "output")
        values = list(out_node.args[0])
        specs = prog.graph_signature.output_specs
        if len(values) != len(specs):
            raise FrontendError(f"torch.export's program has {len(values)} outputs but {len(specs)} output specs")
        self.kept: list[int] = []  # positions of the graph's outputs that stay results
        self.names: list = []
        user_leaves = []
        for pos, (v, spec) in enumerate(zip(values, specs)):
            if spec.kind == OutputKind.USER_OUTPUT:
                if isinstance(v, torch.fx.Node):
                    user_leaves.append({"leaf": len(self.kept)})
                    self.kept.append(pos)
                    self.names.append(None)
                else:
                    const = spec.arg.value if isinstance(spec.arg, ConstantArgument) else v
                    user_leaves.append({"none": True} if const is None else {"const": _jsonable(const)})
            else:
                self.kept.append(pos)
                self.names.append(f"update:{spec.target}")
        self.n_graph_outputs = len(values)
        leaves = iter(user_leaves)
        self.tree = self._tree(prog.call_spec.out_spec, leaves, [])
        if next(leaves, None) is not None:
            raise FrontendError("torch.export's output spec does not match its program's outputs")
        unnamed = iter(range(len(self.names)))  # a single tensor (or what cannot be named): output0, ...
        self.names = [n if n is not None else f"output{next(unnamed)}" for n in self.names]

    def _tree(self, spec, leaves, path: list[str]) -> dict:
        if spec is None or spec.is_leaf():
            leaf = next(leaves)
            if "leaf" in leaf and path:
                self.names[leaf["leaf"]] = ".".join(path)
            return leaf
        kids = list(spec.children()) if hasattr(spec, "children") else list(spec.children_specs)
        t, ctx = spec.type, spec.context
        if isinstance(ctx, type) and issubclass(ctx, tuple) and hasattr(ctx, "_fields"):
            t = ctx  # a namedtuple: the node's type is collections.namedtuple, its context the class

        def at(key, i):  # a top-level tuple position reads output{i}
            return path + [f"output{key}" if not path and isinstance(key, int) else str(key)]

        if not isinstance(t, type):
            return {"tuple": [self._tree(k, leaves, at(i, i)) for i, k in enumerate(kids)]}
        if t is tuple or t is list:
            return {"tuple" if t is tuple else "list": [self._tree(k, leaves, at(i, i)) for i, k in enumerate(kids)]}
        if t in (dict, OrderedDict, defaultdict):
            keys = ctx[1] if t is defaultdict else ctx  # defaultdict's context: [default_factory, keys]
            return {"dict": [[_jsonable(key), self._tree(k, leaves, at(key, i))]
                             for i, (key, k) in enumerate(zip(keys, kids))]}
        fields, nones = _field_names(t, ctx, len(kids))
        if fields is None:  # a container we cannot name: its values in order
            return {"tuple": [self._tree(k, leaves, at(i, i)) for i, k in enumerate(kids)]}
        pairs = [[f, self._tree(k, leaves, at(f, i))] for i, (f, k) in enumerate(zip(fields, kids))]
        pairs += [[f, {"none": True}] for f in nones]
        return {"object": f"{t.__module__}:{t.__qualname__}", "fields": pairs}

    def strip_constants(self, gm: torch.fx.GraphModule) -> None:
        """Keep only the results (constant outputs live in the tree; torch-mlir cannot return them)."""
        if len(self.kept) == self.n_graph_outputs:
            return
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        values = list(out_node.args[0])
        out_node.args = (tuple(values[p] for p in self.kept),)
        gm.recompile()


def _field_names(t, ctx, n: int):
    """(field names in flattening order, fields that were None) of a pytree node of class ``t``, or (None, [])."""
    if hasattr(t, "_fields") and issubclass(t, tuple):  # namedtuple
        return list(t._fields), []
    if isinstance(ctx, (list, tuple)) and len(ctx) == 2 and all(isinstance(c, list) for c in ctx) \
            and len(ctx[0]) == n:  # torch.export.register_dataclass: [flat names, None names]
        return list(ctx[0]), list(ctx[1])
    if isinstance(ctx, (list, tuple)) and len(ctx) == n and all(isinstance(c, str) for c in ctx):
        return list(ctx), []  # transformers' ModelOutput and other keyed containers
    return None, []


def _jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def annotate(module, in_names: list[str], out_names: list[str | None], tree: dict) -> None:
    """Names on ``@main``'s arguments and results (``byteir.name``) and the output tree (``byteir.structure``),
    as the core reads them. Names are left off when the counts do not match (the core then numbers them)."""
    from byteir_core.compiler.driver import n_results, set_io_names
    from byteir_core.mlir import ir

    set_io_names(module, in_names, out_names)
    if len(out_names) == n_results(module):
        with module.context:
            module.operation.attributes["byteir.structure"] = ir.StringAttr.get(json.dumps({"outputs": tree}))


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
