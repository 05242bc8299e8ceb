"""``torch.compile(model, backend="byteir")``: a TorchDynamo backend, for inference and training.

Dynamo's graph gets our attention rewrite (``scaled_dot_product_attention`` -> ``byteir.flash_attn_fwd``, whose
autograd formula is ``byteir.flash_attn_bwd``); AOTAutograd then splits forward and backward (min-cut
rematerialization partitioner) and each graph is compiled by byteir on first call, for the shapes it is
called with (static shapes: a new shape compiles again). Artifacts are cached on disk
(:mod:`byteir_core.cache`).

Options (``torch.compile(..., options={...})``):

``target``     byteir target (default: ``cuda`` for CUDA tensors, else ``cpu``)
``strict``     raise instead of running unsupported pieces in eager (default False)
``fallback``   ``"eager"`` (default): pieces no installed backend supports run in eager, with one warning
``dump_dir``   write IR after every stage of every compile here
``cache``      use the on-disk compile cache (default True; ``BYTEIR_CACHE_DIR`` moves it)
``verbose``    print each compile's report
``progress``   a progress line per graph compile ("byteir: compiling forward graph (123 ops)") on stderr
               after a second: default when stderr is a terminal (``BYTEIR_PROGRESS=0/1`` overrides); True
               always, False never

An unknown option or target is an error (listing the valid ones) raised out of ``torch.compile``'s first call,
before anything runs: a typo never leaves the model running in eager.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import operator
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.fx import GraphModule, Node

from . import custom_ops
from .exporting import FxGraph, decomposition_table

#: One entry per graph byteir compiled (or took from the cache) in this process: kind, cached, the compile
#: report (ops per backend, notes). For tests and for users asking "what ran where".
compile_log: list[dict] = []

#: Each option with a one-line description (listed when an unknown one is given).
OPTIONS = {
    "target": "byteir target (default: cuda for CUDA tensors, else cpu)",
    "strict": "raise instead of running unsupported pieces in eager (default False)",
    "fallback": "'eager' (default) or 'none' (= strict)",
    "dump_dir": "write IR after every stage of every compile here",
    "cache": "use the on-disk compile cache (default True)",
    "verbose": "print each compile's report",
    "progress": "a progress line per graph compile (default: when stderr is a terminal; True/False)",
}
OPTION_NAMES = set(OPTIONS)


class ByteirCompileError(RuntimeError):
    """``strict=True`` and some ops of a graph cannot be compiled; ``ops`` lists them with source lines."""

    def __init__(self, message: str, ops: list[tuple[str, str]]):
        super().__init__(message)
        self.ops = ops


class ByteirFallbackWarning(UserWarning):
    """Some ops of a torch.compile graph run in eager because no installed byteir backend supports them."""


@dataclass(frozen=True)
class Options:
    target: str | None = None  # None: "cuda" when the graph's inputs are CUDA tensors, else "cpu"
    strict: bool = False
    fallback: str = "eager"
    dump_dir: str | None = None
    cache: bool = True
    verbose: bool = False
    progress: bool | None = None  # None: when stderr is a terminal

    @classmethod
    def parse(cls, options: dict | None) -> "Options":
        """The options, checked: an unknown key, fallback or target is an ``OptionError`` / ``TargetError``
        naming the valid ones (raised to the caller of ``torch.compile``'s first call, never sent to eager)."""
        import difflib

        from byteir_core.compiler.partition import check_target
        from byteir_core.errors import OptionError
        from byteir_core.plugins import get_registry

        options = dict(options or {})
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            guesses = [g for k in unknown for g in difflib.get_close_matches(k, OPTIONS, n=1)]
            hint = f" (did you mean {', '.join(map(repr, guesses))}?)" if guesses else ""
            known = "; ".join(f"{k}: {d}" for k, d in OPTIONS.items())
            raise OptionError(f"unknown byteir option(s) {', '.join(map(repr, unknown))}{hint}; options: {known}")
        if options.get("fallback", "eager") not in ("eager", "none"):
            raise OptionError(f"byteir option fallback={options['fallback']!r}: use 'eager' or 'none'")
        if options.get("progress") not in (None, True, False):
            raise OptionError(f"byteir option progress={options['progress']!r}: use True or False")
        if options.get("target") is not None:
            check_target(options["target"], get_registry())
        o = cls(**options)
        if o.fallback == "none":
            o = cls(**{**options, "strict": True})
        return o


# ---- the backend -------------------------------------------------------------------------------------------


def byteir_compile_fx(gm: GraphModule, example_inputs, options: dict | None = None, **kwargs):
    """The ``byteir`` TorchDynamo backend: ``torch.compile(model, backend="byteir", options={...})``."""
    from functorch.compile import min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    mode = kwargs.pop("mode", None)
    if mode not in (None, "default"):
        warnings.warn(f"byteir ignores torch.compile(mode={mode!r}); use options={{...}} (see "
                      f"byteir_frontend_torch.dynamo)", stacklevel=2)
    opts = Options.parse({**(options or {}), **kwargs})
    rewrite_sdpa_calls(gm)
    compiler = functools.partial(_graph_compiler, opts=opts)
    backend = aot_autograd(fw_compiler=functools.partial(compiler, kind="forward"),
                           bw_compiler=functools.partial(compiler, kind="backward"),
                           inference_compiler=functools.partial(compiler, kind="inference"),
                           partition_fn=min_cut_rematerialization_partition,
                           decompositions=decomposition_table(),
                           keep_inference_input_mutations=True)
    return backend(gm, example_inputs)


def byteir_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` through ``byteir.flash_attn_fwd`` (dropout keeps the original op)."""
    if (dropout_p and dropout_p > 0.0) or query.dim() != 4 or (is_causal and attn_mask is not None):
        return torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=enable_gqa)
    hq, hk = query.shape[1], key.shape[1]
    if hk != hq:
        key = key.repeat_interleave(hq // hk, dim=1)
        value = value.repeat_interleave(hq // hk, dim=1)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    return custom_ops.flash_attn_fwd(query, key, value, attn_mask, float(scale), bool(is_causal))[0]


_SDPA_TARGETS = {torch.nn.functional.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention}


def rewrite_sdpa_calls(gm: GraphModule) -> int:
    """In a Dynamo graph (torch-level calls), SDPA calls -> :func:`byteir_sdpa`."""
    n = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _SDPA_TARGETS:
            node.target = byteir_sdpa
            n += 1
    if n:
        gm.recompile()
    return n


def _graph_compiler(gm: GraphModule, example_inputs, *, opts: Options, kind: str):
    return CompiledGraph(gm, opts, kind)


# ---- one AOT graph ------------------------------------------------------------------------------------------


def _is_static(gm: GraphModule) -> bool:
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            v = node.meta.get("val")
            if isinstance(v, torch.SymInt) or (isinstance(v, torch.Tensor) and not all(
                    isinstance(d, int) for d in v.shape)):
                return False
    return True


def _source_line(node: Node) -> str:
    from .importer import source_line

    return source_line(node)


def _op_name(node: Node) -> str:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return t._schema.name.replace("::", ".")
    return getattr(t, "__name__", str(t))


class CompiledGraph:
    """Callable standing in for one AOT graph; compiles with byteir per input signature on first call."""

    def __init__(self, gm: GraphModule, opts: Options, kind: str):
        self.gm, self.opts, self.kind = gm, opts, kind
        self._lock = threading.Lock()
        self._by_signature: dict = {}
        self.static = _is_static(gm)
        self.fallback_ops: list[tuple[str, str]] = []
        # AOTAutograd's boxed convention: one list argument, which the callee clears to free inputs early. An
        # instance attribute, so that Dynamo's disable() wrapper (functools.wraps copies __dict__) keeps it;
        # positional calls are still accepted.
        self._boxed_call = True

    def __call__(self, *args):
        if len(args) == 1 and isinstance(args[0], list):
            boxed = args[0]
            args = tuple(boxed)
            boxed.clear()
        sig = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else ("scalar", a) for a in args)
        fn = self._by_signature.get(sig)
        if fn is None:
            with self._lock:
                fn = self._by_signature.get(sig)
                if fn is None:
                    fn = self._build(args)
                    try:
                        out = fn(*args)
                    except Exception as e:  # noqa: BLE001 -- the first run of what byteir built failed
                        if self.opts.strict or fn is self.gm:
                            raise
                        warnings.warn(_describe([(f"graph (running it: {_failure(e)})", "whole graph")],
                                                strict=False, kind=self.kind), ByteirFallbackWarning,
                                      stacklevel=2)
                        fn = self.gm
                        out = fn(*args)
                    self._by_signature[sig] = fn
                    return out
        return fn(*args)

    def _build(self, args):
        if self.static:
            gm, select = self.gm, None
        else:
            gm, select = _specialize(self.gm, args)
        gm, mutations = _extract_input_mutations(gm)
        fn = self._build_graph(gm, args, select)
        if not mutations:
            return fn

        def run_and_write_back(*a):
            out = list(fn(*a))
            n = len(out) - len(mutations)
            for (i, _), value in zip(mutations, out[n:]):
                # what the graph's copy_ did, e.g. BatchNorm running statistics
                a[i if select is None else select[i]].copy_(value)
            return out[:n]

        return run_and_write_back

    def _build_graph(self, gm, args, select):
        call_args = args if select is None else [args[i] for i in select]
        try:
            fn = _compile_whole(gm, call_args, self.opts, self.kind)
        except _Unsupported as u:
            ops = u.ops
            if self.opts.strict:
                raise ByteirCompileError(_describe(ops, strict=True, kind=self.kind), ops) from None
            warnings.warn(_describe(ops, strict=False, kind=self.kind), ByteirFallbackWarning, stacklevel=2)
            self.fallback_ops = ops
            fn = _compile_partitioned(gm, call_args, self.opts, self.kind, u.names)
        if select is None:
            return fn
        return lambda *a: fn(*[a[i] for i in select])


def _extract_input_mutations(gm: GraphModule) -> tuple[GraphModule, list[tuple[int, int]]]:
    """``copy_(input, value)`` epilogues (buffer updates AOTAutograd keeps in the graph, e.g. BatchNorm's running
    statistics) become extra outputs written back by the caller: torch-mlir cannot lower in-place copies into
    graph inputs. Returns the new graph and (input index, output index) pairs."""
    aten = torch.ops.aten
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    index = {n: i for i, n in enumerate(placeholders)}
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    copies = []
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is aten.copy_.default and n.args[0] in index and not n.users:
            dst, src = n.args[0], n.args[1]
            later_reads = [u for u in dst.users if u is not n and order[u] > order[n]]
            same = isinstance(src, Node) and getattr(src.meta.get("val"), "dtype", None) == \
                getattr(dst.meta.get("val"), "dtype", None)
            if not later_reads and same:
                copies.append(n)
    if not copies:
        return gm, []
    gm = GraphModule(gm, gm.graph)
    graph = torch.fx.Graph()
    env: dict = {}
    out_value = graph.graph_copy(gm.graph, env)
    outs = list(out_value) if isinstance(out_value, (tuple, list)) else [out_value]
    n_out = len(outs)
    mutations = []
    for c in copies:
        new_copy = env[c]
        mutations.append((index[c.args[0]], n_out + len(mutations)))
        outs.append(new_copy.args[1])
        graph.erase_node(new_copy)
    graph.output(tuple(outs))
    return GraphModule(gm, graph), mutations


def _specialize(gm: GraphModule, args) -> tuple[GraphModule, list[int]]:
    """A dynamic-shape graph retraced for this call's concrete shapes; SymInt inputs become constants and are
    dropped. Returns (static graph, indices of the call arguments it takes)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    static = make_fx(gm, tracing_mode="real")(*args)
    select = []
    placeholders = [n for n in static.graph.nodes if n.op == "placeholder"]
    for i, (node, a) in enumerate(zip(placeholders, args)):
        if isinstance(a, torch.Tensor):
            select.append(i)
            continue
        for user in list(node.users):  # the value is this call's: bake it in
            user.args, user.kwargs = torch.fx.node.map_arg((user.args, user.kwargs),
                                                           lambda n, node=node, a=a: a if n is node else n)
        static.graph.erase_node(node)
    static.graph.lint()
    static.recompile()
    return static, select


def _describe(ops, strict: bool, kind: str) -> str:
    listed = "\n".join(f"  - {name} at {where}" for name, where in ops)
    if strict:
        return f"byteir cannot compile these ops of the {kind} graph (strict=True):\n{listed}"
    if all(where == "whole graph" for _, where in ops):
        return (f"byteir failed on the {kind} graph, which runs in eager PyTorch instead (strict=True raises "
                f"this; please report it if it is byteir's fault):\n" + "\n".join(f"  - {name}" for name, _ in ops))
    return (f"byteir: these ops of the {kind} graph run in eager PyTorch (no installed backend supports "
            f"them); the rest is compiled:\n{listed}")


class _Unsupported(Exception):
    def __init__(self, ops: list[tuple[str, str]], names: set[str]):
        self.ops, self.names = ops, names


def _view_ops():
    aten = torch.ops.aten
    return {aten.view.default, aten._unsafe_view.default, aten.alias.default, aten.reshape.default,
            aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default}


def _strip_outputs(gm: GraphModule):
    """The graph outputs worth computing. Not compiled: outputs that are not tensors (None grads, ints); graph
    inputs returned as they are (a training forward graph returns the weights it saves for backward: compiled,
    each would be copied into a fresh buffer at every step); the same value returned twice (computed once);
    views of another value (``view``, ``alias``, ``unsqueeze``...: the value is computed and the view taken in
    PyTorch, no copy). Returns (the outputs kept, a template of the full output list, ...): each template
    entry ("tensor", index in the kept ones), ("input", argument index), ("view", op, base entry, args, kwargs)
    or ("const", value)."""
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    outs = out_node.args[0]
    single = not isinstance(outs, (tuple, list))
    outs = [outs] if single else list(outs)
    placeholders = {n: i for i, n in enumerate(n for n in gm.graph.nodes if n.op == "placeholder")}
    views = _view_ops()
    kept: list[Node] = []
    index: dict[Node, int] = {}

    def entry(o):
        if o in placeholders:
            return ("input", placeholders[o])
        if o.op == "call_function" and o.target in views and isinstance(o.args[0], Node) \
                and isinstance(o.args[0].meta.get("val"), torch.Tensor):
            return ("view", o.target, entry(o.args[0]), o.args[1:], dict(o.kwargs))
        if o not in index:
            index[o] = len(kept)
            kept.append(o)
        return ("tensor", index[o])

    template = []
    for o in outs:
        if isinstance(o, Node) and isinstance(o.meta.get("val"), torch.Tensor):
            template.append(entry(o))
        else:
            template.append(("const", o))
    return kept, template, single, out_node


def _fill(template, call_args, res) -> list:
    """The full output list from the kept outputs' values ``res`` and the call's arguments."""
    return [_entry_value(e, call_args, res) for e in template]


def _entry_value(e, call_args, res):
    # A module-level function, not a closure over ``res``: a recursive closure is a reference cycle, which kept
    # every call's outputs alive until the cyclic collector ran, so autograd could not steal a gradient
    # (AccumulateGrad copied it) and the arrays outlived the step.
    kind = e[0]
    if kind == "tensor":
        return res[e[1]]
    if kind == "input":
        return call_args[e[1]]
    if kind == "view":
        return e[1](_entry_value(e[2], call_args, res), *e[3], **e[4])
    return e[1]


def _graph_key(gm: GraphModule, args, opts: Options, kind: str) -> str:
    from byteir_core.cache import make_key

    consts = hashlib.sha256()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            v = getattr(gm, node.target, None)
            if isinstance(v, torch.Tensor):
                consts.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                              if v.numel() else b"")
    sig = [(tuple(a.shape), str(a.dtype)) if isinstance(a, torch.Tensor) else repr(a) for a in args]
    return make_key("torch.compile", kind, gm.code, sig, consts.hexdigest(), opts.target, torch.__version__)


def _compile_whole(gm: GraphModule, args, opts: Options, kind: str):
    import byteir_core
    from byteir_core import progress
    from byteir_core.cache import CompileCache
    from byteir_core.errors import OptionError, UnsupportedOpError

    from .importer import TorchLoweringError

    kept, template, single, out_node = _strip_outputs(gm)
    if not kept:  # nothing to compute: every output is an input, a view of one or a constant
        def passthrough(*call_args):
            full = _fill(template, call_args, [])
            return full[0] if single else full

        return passthrough
    g = GraphModule(gm, _copy_graph_with_outputs(gm, kept))
    tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    if len(tensor_pos) != len(args):
        raise _Unsupported([("non-tensor graph input", "AOT graph signature")], set())
    if opts.target is None:  # torch.compile(model.cuda(), backend="byteir") targets the GPU
        on_gpu = any(a.is_cuda for a in args if isinstance(a, torch.Tensor))
        opts = dataclasses.replace(opts, target="cuda" if on_gpu else "cpu")
    key = _graph_key(g, args, opts, kind)
    cache = CompileCache() if opts.cache else None
    art = cache.get(key) if cache else None
    cached = art is not None
    if art is None:
        n_ops = sum(1 for n in g.graph.nodes if n.op == "call_function")
        try:
            with progress.progress_for(opts.progress, f"byteir: compiling {kind} graph ({n_ops} ops)") as report:
                art = byteir_core.compile(FxGraph(g), list(args), target=opts.target, frontend="torch",
                                          dump_dir=opts.dump_dir, progress=report if report else False)
        except OptionError:
            raise  # the user's mistake, not an op to run in eager (targets are checked in Options.parse)
        except TorchLoweringError as e:
            from .importer import probe_ops

            names = set(e.ops) or set(probe_ops(g))  # the error may name no op: find it one op at a time
            if not names:
                raise _Unsupported([(f"graph ({_brief(e)})", "whole graph")], set()) from None
            ops = _nodes_for(g, names) or [(op, ", ".join(locs) or "unknown") for op, locs in e.ops.items()]
            raise _Unsupported(ops, names) from None
        except UnsupportedOpError as e:
            raise _Unsupported([(u.name, ", ".join(u.locations[:3])) for u in e.ops], set()) from None
        except Exception as e:  # noqa: BLE001 -- byteir (or a plugin) failing must not break the user's program
            if opts.strict:
                raise
            raise _Unsupported([(f"graph ({_failure(e)})", "whole graph")], set()) from None
        if cache:
            try:
                cache.put(key, art, label=f"torch.compile {kind} graph ({len(list(g.graph.nodes))} nodes)")
            except OSError as err:  # a read-only cache dir must not break compiling
                warnings.warn(f"byteir: cannot write the compile cache: {err}", stacklevel=2)
    compile_log.append({"kind": kind, "cached": cached, "key": key, "report": art.report})
    if opts.verbose:
        print(f"byteir: {kind} graph ({'from cache' if cached else 'compiled'}): {art.report['ops_per_backend']}")
    try:
        session = byteir_core.load(art)
    except Exception as e:  # noqa: BLE001 -- e.g. a provider that cannot load its kernels here
        if opts.strict:
            raise
        raise _Unsupported([(f"graph (loading the artifact: {_failure(e)})", "whole graph")], set()) from None

    def run(*call_args):
        xs = [a.detach().contiguous() if isinstance(a, torch.Tensor) else a for a in call_args]
        # no torch.set_num_threads(1) around it: the CPU backend's oneDNN runs on PyTorch's own OpenMP pool
        res = session(*xs)
        res = list(res) if isinstance(res, (list, tuple)) else [res]
        full = _fill(template, call_args, res)
        return full[0] if single else full

    return run


def _failure(e: Exception) -> str:
    """An exception as the fallback warning quotes it: ours by class and message, anything else (a plugin's or
    a library's bug) with the innermost frame it came from, so it can be reported."""
    from byteir_core.errors import ByteirError

    text = f"{type(e).__name__}: {_brief(e)}"
    if isinstance(e, ByteirError):
        return text
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    return text + (f" (raised at {frames[-1].filename}:{frames[-1].lineno})" if frames else "")


def _brief(e: Exception, lines: int = 4) -> str:
    text = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " / ".join(text[:lines])[:1500]


def _copy_graph_with_outputs(gm: GraphModule, kept: list[Node]) -> torch.fx.Graph:
    graph = torch.fx.Graph()
    env: dict = {}
    graph.graph_copy(gm.graph, env)
    graph.output(tuple(env[n] for n in kept))
    graph.eliminate_dead_code()
    return graph


def _nodes_for(gm: GraphModule, op_names: set[str]) -> list[tuple[str, str]]:
    """(aten op, source line) for each FX node whose op torch-mlir could not lower."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and _op_name(node) in op_names:
            found.append((_op_name(node), _source_line(node)))
    return found


# ---- partial compile: unsupported ops run in eager ---------------------------------------------------------


def _compile_partitioned(gm: GraphModule, args, opts: Options, kind: str, unsupported: set[str]):
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
    from torch.fx.passes.operator_support import OperatorSupportBase

    if not unsupported:  # nothing to cut around: the whole graph runs in eager
        return gm

    class Support(OperatorSupportBase):
        def is_node_supported(self, submodules, node: Node) -> bool:
            return node.op == "call_function" and _op_name(node) not in unsupported

    gm = GraphModule(gm, gm.graph)  # do not rewrite the caller's graph
    partitioner = CapabilityBasedPartitioner(gm, Support(), allows_single_node_partition=True)
    fused = partitioner.fuse_partitions(partitioner.propose_partitions())
    for name, sub in list(fused.named_children()):
        if isinstance(sub, GraphModule) and name.startswith("fused_"):
            setattr(fused, name, _LazySubgraph(sub, opts, kind))
    fused.recompile()
    return fused


class _LazySubgraph(torch.nn.Module):
    """A piece of a partitioned graph, compiled by byteir on first call (eager if even that piece fails)."""

    def __init__(self, gm: GraphModule, opts: Options, kind: str):
        super().__init__()
        self.gm, self.opts, self.kind = gm, opts, kind
        self._fns: dict = {}

    def forward(self, *args):
        sig = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else repr(a) for a in args)
        fn = self._fns.get(sig)
        if fn is None:
            try:
                fn = _compile_whole(self.gm, args, self.opts, self.kind)
            except _Unsupported:
                fn = self.gm
            self._fns[sig] = fn
        out = fn(*args)
        return tuple(out) if isinstance(out, list) else out
