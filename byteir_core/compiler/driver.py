"""The pipeline driver: model -> StableHLO -> hlo pass groups -> partition -> backends -> ByRE artifact."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
import warnings
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..byre import Artifact
from ..byre.format import HOST, READ, WRITE, Arg, Buffer, ByreModule, KernelEntry, Step
from ..dtypes import TensorSpec
from ..errors import (ByteirTargetWarning, FrontendError, NoFrontendError, OptionError, PassGroupError,
                      TargetError, UnsupportedOpError)
from ..interfaces import Cluster
from ..mlir import capture_diagnostics, diagnostics_to_text, ir, new_context, run_pipeline
from ..plugins import Registry, get_registry
from .memplan import plan_memory
from .outline import outline, used_values
from .partition import (check_target, fallback_chain, form_clusters, location_of, merge_consumer_clusters,
                        missing_distribution, ops_per_backend, partition_by_capability, target_device)

#: Constants bigger than this (and not splats) become weights: arguments of the entry function whose values
#: travel in the artifact, instead of being copied into every cluster that uses them.
WEIGHT_MIN_BYTES = 1024


class _Stages:
    """Per-stage wall time and optional IR dumps."""

    def __init__(self, dump_dir: str | None, progress: Callable[[str], None] | None):
        self.times: dict[str, float] = {}
        self.dump_dir = Path(dump_dir) if dump_dir else None
        self.progress = progress
        self.n = 0
        if self.dump_dir:
            self.dump_dir.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn, *args):
        if self.progress:
            self.progress(name)
        t0 = time.perf_counter()
        out = fn(*args)
        self.times[name] = round(time.perf_counter() - t0, 6)
        return out

    def dump(self, name: str, text: Callable[[], str]) -> None:
        """Write ``text()`` when dumping (printing IR with weights is costly: do it only when asked)."""
        if self.dump_dir:
            self.n += 1
            (self.dump_dir / f"{self.n:02d}-{name.replace(':', '-')}.mlir").write_text(text())


def _distribution_of(registry: Registry, backend: str) -> str:
    p = registry.plugin_of("backend", backend)
    return f"{p.distribution} {p.version}" if p else "?"


def choose_frontend(model, frontend: str | None, registry: Registry):
    if frontend:
        if frontend not in registry.frontends:
            raise FrontendError(f"unknown frontend {frontend!r}; installed: {', '.join(registry.frontends)}")
        return registry.frontends[frontend]
    for fe in registry.frontends_in_order():
        try:
            if fe.accepts(model):
                return fe
        except Exception:  # noqa: BLE001 -- accepts() must not raise; a plugin that does is skipped
            continue
    what = str(model) if isinstance(model, (str, Path)) and len(str(model)) < 200 else type(model).__name__
    broken = [f"{p.name} ({p.distribution}): {p.status_text()}" for p in registry.plugins
              if p.status in ("failed", "incompatible")]
    raise NoFrontendError(f"no installed frontend accepts {what}; installed frontends: "
                          f"{', '.join(registry.frontends)} (see `byteir list-plugins`)"
                          + (f"; plugins that failed to load: {'; '.join(broken)}" if broken else ""))


def entry_function(module) -> Any:
    funcs = [op.operation for op in module.body.operations if op.operation.name == "func.func"]
    for f in funcs:
        if ir.StringAttr(f.attributes["sym_name"]).value == "main":
            return f
    public = [f for f in funcs if "sym_visibility" not in f.attributes
              or ir.StringAttr(f.attributes["sym_visibility"]).value == "public"]
    if len(public) == 1:
        public[0].attributes["sym_name"] = ir.StringAttr.get("main", module.context)
        return public[0]
    names = [ir.StringAttr(f.attributes["sym_name"]).value for f in funcs]
    raise FrontendError(f"no entry function: expected @main or a single public function, found {names or 'none'}")


def select_pass_groups(registry: Registry, names: Sequence[str] | None, stage: str = "hlo"):
    groups = [g for g in registry.pass_groups.values() if g.stage == stage]
    if names is None:
        chosen = [g for g in groups if g.default]
    else:
        unknown = [n for n in names if n not in registry.pass_groups]
        if unknown:
            raise PassGroupError(f"unknown pass group(s) {', '.join(unknown)}; available: "
                                 f"{', '.join(sorted(registry.pass_groups))}")
        chosen = [registry.pass_groups[n] for n in names if registry.pass_groups[n].stage == stage]
    return sorted(chosen, key=lambda g: g.order)


def run_pass_group(module, group) -> None:
    with capture_diagnostics(module.context) as diags:
        try:
            if group.pipeline is not None:
                run_pipeline(module, group.pipeline)
            else:
                group.run(module)
        except Exception as e:  # noqa: BLE001
            detail = diagnostics_to_text(e) if isinstance(e, ir.MLIRError) else f"{type(e).__name__}: {e}"
            extra = ("\n" + "\n".join(diags)) if diags else ""
            raise PassGroupError(f"pass group {group.name!r} failed: {detail}{extra}") from None
    if not module.operation.verify():
        raise PassGroupError(f"pass group {group.name!r} left an invalid module")


def refine_arguments(module, shapes) -> None:
    """Give @main's arguments static types: ``shapes`` is one shape per argument, in order, or a dict by
    argument name (``byteir.name``; arguments left out keep their types, which must then be static)."""
    main = entry_function(module)
    block = main.regions[0].blocks[0]
    if isinstance(shapes, dict):
        names = _names(main, "arg_attrs", "input", len(block.arguments))
        unknown = [k for k in shapes if k not in names]
        if unknown:
            raise FrontendError(f"--input-shape names {', '.join(map(repr, unknown))}, which are not inputs; "
                                f"the inputs: {', '.join(names)}")
        shapes = [shapes.get(n) for n in names]
    elif len(shapes) != len(block.arguments):
        raise FrontendError(f"--input-shape gives {len(shapes)} shapes, @main takes {len(block.arguments)} arguments")
    types = []
    for i, (a, shape) in enumerate(zip(block.arguments, shapes)):
        t = ir.RankedTensorType(a.type)
        if shape is None:
            types.append(str(t))
            continue
        if len(shape) != t.rank or any(d != s for d, s in zip(t.shape, shape) if not ir.ShapedType.is_dynamic_size(d)):
            raise FrontendError(f"--input-shape for argument {i}: {list(shape)} does not fit its type {a.type}")
        with module.context, ir.Location.unknown():
            types.append(str(ir.RankedTensorType.get(list(shape), t.element_type)))
    run_pipeline(module, "stablehlo-refine-arguments{types='" + ",".join(types) + "'},stablehlo-refine-shapes")


def _owner_op(v):
    """The ``ir.Operation`` defining ``v``, or None for a block argument."""
    owner = v.owner
    return owner.operation if isinstance(owner, (ir.Operation, ir.OpView)) else None


def dense_bytes(attr, spec: TensorSpec) -> bytes:
    """The bytes of a dense constant as ``spec``'s NumPy dtype holds them, splats expanded. MLIR's NumPy view of
    a bf16 or float8 attribute is not an array of its values (an ``object`` scalar), so those are read from the
    attribute's text: its hex blob, or its values (hex bit patterns for NaN and inf)."""
    want = spec.np_dtype
    arr = np.asarray(ir.DenseElementsAttr(attr))
    if arr.dtype == object or arr.dtype.itemsize != want.itemsize:
        text = str(attr)
        inner = text[text.index("<") + 1:text.rindex("> :")].strip()
        bits = np.dtype(f"<u{want.itemsize}")
        if inner.startswith('"0x'):
            arr = np.frombuffer(bytes.fromhex(inner[3:-1]), dtype=bits).view(want)
        else:
            toks = [t.strip() for t in inner.replace("[", " ").replace("]", " ").split(",") if t.strip()]
            arr = np.array([np.array(int(t, 16), bits) if t.lower().startswith("0x")
                            else np.array(float(t)).astype(want).view(bits) for t in toks], bits).view(want)
    n = int(np.prod(spec.shape))
    if arr.size == 1 and n != 1:  # a splat
        arr = np.broadcast_to(arr.reshape(()), spec.shape)
    return np.ascontiguousarray(arr.astype(want, copy=False)).tobytes()


def _is_weight(const_op) -> bool:
    attr = const_op.attributes["value"]
    t = ir.RankedTensorType(const_op.results[0].type)
    if str(t.element_type) == "bf16" or not isinstance(attr, ir.DenseElementsAttr) or attr.is_splat:
        return False
    return TensorSpec.from_type(t).nbytes > WEIGHT_MIN_BYTES


def compile(model, example_inputs: Sequence[Any] | None = None, *, target: str = "cpu",
            frontend: str | None = None, pass_groups: Sequence[str] | None = None,
            output: str | Path | None = None, dump_dir: str | Path | None = None,
            input_shapes: Sequence[Sequence[int]] | dict | None = None, options: dict | None = None,
            progress: bool | Callable[[str], None] | None = None) -> Artifact:
    """Compile ``model`` into a ByRE artifact: the public :func:`byteir_core.compile` documents every argument."""
    registry = get_registry()
    options = dict(options or {})
    check_target(target, registry)
    fe = choose_frontend(model, frontend, registry)
    unknown = sorted(set(options) - set(fe.options))
    if unknown:
        known = "; ".join(f"{k}: {d}" for k, d in fe.options.items()) or "none"
        raise OptionError(f"unknown option(s) {', '.join(map(repr, unknown))} for frontend {fe.name!r}; its "
                          f"options: {known}")
    from ..progress import progress_for

    with progress_for(progress, "byteir: compiling") as report:
        return _compile(model, example_inputs, registry, fe, target, pass_groups, output, dump_dir, input_shapes,
                        options, report)


def _compile(model, example_inputs, registry, fe, target, pass_groups, output, dump_dir, input_shapes, options,
             progress) -> Artifact:
    stages = _Stages(str(dump_dir) if dump_dir else None, progress)
    ctx = new_context()
    if input_shapes and "input_shapes" in fe.options:  # a frontend that can specialize before lowering
        options = {**options, "input_shapes": _shape_arg(input_shapes)}
    module = stages.run(f"frontend:{fe.name}", fe.to_stablehlo, model, example_inputs, options, ctx)
    if not isinstance(module, ir.Module) or module.context is not ctx:
        raise FrontendError(f"frontend {fe.name!r} must return an ir.Module built in the context it was given")
    entry_function(module)
    stages.dump(f"frontend-{fe.name}", lambda: str(module))
    if input_shapes:
        stages.run("refine-arguments", refine_arguments, module, input_shapes)
    structure = _structure(module, n_results(module))

    groups = select_pass_groups(registry, pass_groups)
    for g in groups:
        stages.run(f"hlo:{g.name}", run_pass_group, module, g)
        stages.dump(f"hlo-{g.name}", lambda: str(module))

    decomposed = stages.run("decompose-custom-calls", decompose_unclaimed, module, target, registry)
    if decomposed:
        stages.dump("decompose-custom-calls", lambda: str(module))
    try:
        bm, part_report = stages.run("partition+codegen", _lower_to_byre, module, target, registry, stages)
    except UnsupportedOpError as e:
        dynamic = dynamic_arguments(module)
        if dynamic:  # say which argument and dimension make the shapes dynamic
            e.dynamic_arguments = dynamic
            e.args = (str(e) + "\n  dynamic dimensions in the entry function (the ops above need static "
                      "shapes): " + "; ".join(dynamic) + "\n  give static shapes: static example inputs, or one "
                      "shape per argument, e.g. --input-shape " + _shape_hint(module) + " with your sizes for "
                      "the dynamic dims (input_shapes= in Python)",)
        raise
    if decomposed:
        part_report.setdefault("notes", []).append(
            f"decomposed into StableHLO (no backend of {target!r} claims them): "
            + ", ".join(f"{n} x{c}" for n, c in sorted(Counter(decomposed).items())))
    stages.run("memory-plan", plan_memory, bm)
    opts_hash = hashlib.sha256(json.dumps(
        {"target": target, "frontend": fe.name, "pass_groups": [g.name for g in groups],
         "input_shapes": _shape_arg(input_shapes or []), "options": options},
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    from .. import __version__

    bm.manifest = {
        "byteir_core": __version__,
        "plugins": registry.versions(),
        "backends": {b: _distribution_of(registry, b) for b in sorted({s.backend for s in bm.steps if s.backend})},
        "target": target,
        "frontend": fe.name,
        "pipeline": [g.name for g in groups],
        "options_hash": opts_hash,
    }
    if os.environ.get("SOURCE_DATE_EPOCH", "").strip():
        bm.manifest["created"] = _source_date(os.environ["SOURCE_DATE_EPOCH"])
    bm.structure = structure
    bm.report = {**part_report, "stage_seconds": stages.times, "arena_bytes": bm.arena_bytes, "arenas": bm.arenas}
    _warn_if_target_missing(target, registry, bm.report)
    art = Artifact(bm)
    stages.dump("byre", art.text)  # for reading: payloads elided
    if stages.dump_dir:  # for re-entering: the loadable artifact itself
        (stages.dump_dir / f"{stages.n:02d}-byre.byre").write_bytes(art.to_bytes())
    if output is not None:
        art.save(output)
    return art


def _source_date(value: str) -> str:
    try:
        when = datetime.datetime.fromtimestamp(int(value.strip()), datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise OptionError(f"SOURCE_DATE_EPOCH={value!r} is not a Unix time in seconds") from None
    return when.isoformat(timespec="seconds")


def _warn_if_target_missing(target: str, registry: Registry, report: dict) -> None:
    """A well-known target that is not installed compiles for the host: say so where the user looks."""
    dist = missing_distribution(target, registry)
    if dist is None:
        return
    ran = ", ".join(f"{b} x{sum(ops.values())} (device {registry.backends[b].device})"
                    for b, ops in report["ops_per_backend"].items())
    warnings.warn(ByteirTargetWarning(
        f"target {target!r} is not installed (pip install {dist}): this artifact runs its ops on "
        f"{ran or 'no backend'} instead"), stacklevel=5)  # the line that called byteir_core.compile


def _shape_arg(shapes):
    """input_shapes as plain lists: one per argument, or a dict by argument name."""
    if isinstance(shapes, dict):
        return {str(k): [int(d) for d in v] for k, v in shapes.items()}
    return [[int(d) for d in s] for s in shapes]


def _shape_hint(module) -> str:
    """An --input-shape value of the right form for @main: its static dims, and 1 for each dynamic one."""
    parts = []
    for a in entry_function(module).regions[0].blocks[0].arguments:
        t = a.type
        if isinstance(t, ir.RankedTensorType):
            parts.append("x".join("1" if t.is_dynamic_dim(d) else str(t.shape[d]) for d in range(t.rank)) or "scalar")
    return ",".join(parts)


def n_results(module) -> int:
    return len(ir.FunctionType(ir.TypeAttr(entry_function(module).attributes["function_type"]).value).results)


def dynamic_arguments(module) -> list[str]:
    """'argument i (name) dim d' for each dynamic dimension of @main's arguments."""
    main = entry_function(module)
    out = []
    for i, arg in enumerate(main.regions[0].blocks[0].arguments):
        t = arg.type
        if isinstance(t, ir.RankedTensorType) and not t.has_static_shape:
            dims = [str(d) for d in range(t.rank) if t.is_dynamic_dim(d)]
            out.append(f"argument {i} ({t}) dim {', '.join(dims)}")
    return out


def decompose_unclaimed(module, target: str, registry: Registry) -> list[str]:
    """``byteir.*`` custom calls that no backend of the target's chain claims, decomposed into StableHLO."""
    from ..builtins.custom_calls import byteir_calls, decompose

    if not byteir_calls(module):
        return []
    chain, _ = fallback_chain(target, registry)
    backends = [b for b in registry.backends.values() if set(b.serves()) & set(chain)]

    def unclaimed(op, name):
        for b in backends:
            try:
                if b.claims(op) is not None:
                    return False
            except Exception:  # noqa: BLE001 -- a claim that raises is a "no"
                continue
        return True

    return decompose(module, unclaimed)


def _lower_to_byre(module, target: str, registry: Registry, stages: _Stages) -> tuple[ByreModule, dict]:
    main = entry_function(module)
    block = main.regions[0].blocks[0]
    body = [op.operation for op in block.operations]
    ret = body[-1]
    body = body[:-1]
    ctx = module.context

    weights_ops = [op for op in body if op.name == "stablehlo.constant" and _is_weight(op)]
    small_consts = {op for op in body if op.name == "stablehlo.constant" and op not in weights_ops}
    compute_ops = [op for op in body if op.name != "stablehlo.constant"]
    part = partition_by_capability(compute_ops, target, registry)
    max_ops = {n: b.max_cluster_ops for n, b in registry.backends.items()}
    starts = lambda op, b: registry.backends[b].starts_cluster(op)  # noqa: E731
    clusters = form_clusters(compute_ops, part.assignment, max_ops, starts=starts)
    in_body = set(compute_ops)
    clusters = merge_consumer_clusters(
        clusters, lambda op: [o for o in map(_owner_op, used_values(op)) if o in in_body], max_ops, starts=starts,
        is_view=lambda ops: len(ops) == 1 and ops[0].name == "stablehlo.reshape")

    # Entry signature: inputs, outputs, weights. Arguments live on the target's device, weights on the device
    # of their first consumer (placed when a cluster first reads them).
    bm = ByreModule(args=[], buffers=[], steps=[], kernels={}, weights={})
    buf_of: dict = {}
    arg_device = target_device(target, registry)
    unplaced: set[int] = set()  # weights no cluster has read yet

    def new_buffer(spec, kind, **kw) -> int:
        bm.buffers.append(Buffer(len(bm.buffers), spec, kind, **kw))
        return len(bm.buffers) - 1

    def add_arg(name, kind, spec, weight=None) -> int:
        bm.args.append(Arg(name, kind, spec, weight))
        return new_buffer(spec, "arg", arg=len(bm.args) - 1, device=arg_device)

    def root(buf: int) -> int:
        while bm.buffers[buf].kind == "alias":
            buf = bm.buffers[buf].source
        return buf

    copied: dict[tuple[int, str], int] = {}

    def on_device(buf: int, device: str) -> int:
        """``buf`` as a step on ``device`` reads it: itself, or a copy on ``device`` (one per buffer and device,
        reused by later readers)."""
        r = root(buf)
        if r in unplaced:
            bm.buffers[r].device = device
            unplaced.discard(r)
        if bm.buffers[r].device == device:
            return buf
        if (buf, device) not in copied:
            copied[(buf, device)] = new_buffer(bm.buffers[buf].spec, "alloc", device=device)
            bm.steps.append(Step("copy", [buf, copied[(buf, device)]]))
        return copied[(buf, device)]

    results = list(ret.operands)
    in_names = _names(main, "arg_attrs", "input", len(block.arguments))
    out_names = _names(main, "res_attrs", "output", len(results), taken=set(in_names))
    for what, values in (("argument", block.arguments), ("result", results)):
        for i, v in enumerate(values):  # no op left to refuse them: a program that returns an argument as it is
            if isinstance(v.type, ir.ShapedType) and not ir.ShapedType(v.type).has_static_shape:
                raise TargetError(f"@main's {what} {i} has the dynamic type {v.type}: byteir compiles static shapes; "
                                  f"give them with static example inputs or --input-shape {_shape_hint(module)} "
                                  f"(your sizes for the dynamic dims; input_shapes= in Python)")
    for a, name in zip(block.arguments, in_names):
        buf_of[a] = add_arg(name, "input", TensorSpec.from_type(a.type))
    out_buf = [add_arg(name, "output", TensorSpec.from_type(v.type)) for name, v in zip(out_names, results)]
    for k, op in enumerate(weights_ops):
        wname = f"w{k}"
        v = op.results[0]
        bm.weights[wname] = dense_bytes(op.attributes["value"], TensorSpec.from_type(v.type))
        buf_of[v] = add_arg(wname, "weight", TensorSpec.from_type(v.type), wname)
        unplaced.add(buf_of[v])

    weight_bufs = {buf_of[op.results[0]] for op in weights_ops}
    first_return = {}
    for j, v in enumerate(results):
        first_return.setdefault(v, j)

    cluster_report = []
    compiled_once: dict = {}
    building: dict = {}  # kernel name -> (cluster name, ops) for kernels still building on a pool
    for ci, (backend_name, ops) in enumerate(clusters):
        op_set = set(ops)
        inputs: list = []
        needed_consts: list = []
        for op in ops:
            for v in used_values(op):
                owner = _owner_op(v)
                if owner is not None and owner in op_set:
                    continue
                if owner is not None and owner in small_consts:
                    if owner not in needed_consts:
                        needed_consts.append(owner)
                elif v not in inputs:
                    inputs.append(v)
        outputs = []
        for op in ops:
            for r in op.results:
                if r in first_return or any(u.owner.operation not in op_set for u in r.uses):
                    outputs.append(r)
        # A lone reshape is a view: no kernel, no copy.
        if len(ops) == 1 and ops[0].name == "stablehlo.reshape" and len(inputs) == 1 and not needed_consts:
            src = buf_of[inputs[0]]
            r = ops[0].results[0]
            b = bm.buffers[src]
            if (r in first_return and b.kind == "alloc" and inputs[0] not in first_return
                    and len(list(inputs[0].uses)) == 1 and b.device == bm.buffers[out_buf[first_return[r]]].device):
                # The reshaped value is only returned: its producer writes straight into the output.
                out = out_buf[first_return[r]]
                bm.buffers[src] = Buffer(src, b.spec, "alias", source=out, byte_offset=0, device=b.device)
                buf_of[r] = out
            else:
                buf_of[r] = new_buffer(TensorSpec.from_type(r.type), "alias", source=src, byte_offset=0)
            cluster_report.append({"name": f"alias{ci}", "backend": "byre.alias", "ops": ["stablehlo.reshape"]})
            continue
        in_specs = [TensorSpec.from_type(v.type) for v in inputs]
        out_specs = [TensorSpec.from_type(v.type) for v in outputs]
        cmod = outline(needed_consts + ops, inputs, outputs, ctx)
        name = f"{backend_name}_c{ci}"
        cluster = Cluster(name, backend_name, cmod, in_specs, out_specs, [o.name for o in ops],
                          tuple(i for i, v in enumerate(inputs) if buf_of.get(v) in weight_bufs))
        backend = registry.backends[backend_name]
        t0 = time.perf_counter()
        # Identical clusters (a transformer's layers) are compiled once and share one kernel in the artifact.
        memo_key = (backend_name, cluster.constant_inputs, str(cmod))
        memo = compiled_once.get(memo_key)
        try:
            compiled = memo[0] if memo else backend.compile(cluster)
        except Exception as e:  # noqa: BLE001
            locs = ", ".join(sorted({location_of(o) for o in ops})[:3])
            raise TargetError(f"backend {backend_name!r} failed to compile cluster {name} "
                              f"({len(ops)} ops: {', '.join(sorted(set(cluster.op_names)))}; at {locs}): "
                              f"{type(e).__name__}: {e}") from e
        stages.times[f"codegen:{backend_name}"] = round(
            stages.times.get(f"codegen:{backend_name}", 0.0) + time.perf_counter() - t0, 6)
        kernel_name = memo[1] if memo else None
        if compiled.kernel is not None and not memo:
            kernel_name = f"k{len(bm.kernels)}_{backend_name}"
            bm.kernels[kernel_name] = KernelEntry(kernel_name, backend_name, compiled.kernel)
            if isinstance(compiled.kernel.data, Future):
                building[kernel_name] = (name, ops)
        if not memo:
            compiled_once[memo_key] = (compiled, kernel_name)
        device = backend.device
        operands = [on_device(buf_of[v], device) for v in inputs]
        for v, spec in zip(outputs, out_specs):
            if v in first_return and bm.buffers[out_buf[first_return[v]]].device == device:
                buf_of[v] = out_buf[first_return[v]]
            else:  # an output on another device gets the result through the final copy
                buf_of[v] = new_buffer(spec, "alloc", device=device)
            operands.append(buf_of[v])
        bm.steps.append(Step("compute", operands, callee=compiled.callee, kernel=kernel_name,
                             effects=[READ] * len(inputs) + [WRITE] * len(outputs), backend=backend_name,
                             attrs=dict(compiled.attrs)))
        cluster_report.append({"name": name, "backend": backend_name, "callee": compiled.callee,
                               "ops": [o.name for o in ops], "kernel": kernel_name,
                               "compile_s": round(time.perf_counter() - t0, 4),
                               **({"same_as_earlier_cluster": True} if memo else {})})

    _wait_for_kernels(bm, building, stages)

    # Results not written in place by their producer (arguments, weights, views, duplicates) are copied.
    for j, v in enumerate(results):
        if v not in buf_of:  # a small constant returned directly: carry it as a weight
            op = _owner_op(v)
            wname = f"w{len(bm.weights)}"
            bm.weights[wname] = dense_bytes(op.attributes["value"], TensorSpec.from_type(v.type))
            buf_of[v] = add_arg(wname, "weight", TensorSpec.from_type(v.type), wname)
        if buf_of[v] != out_buf[j]:
            bm.steps.append(Step("copy", [buf_of[v], out_buf[j]]))
    for b in bm.buffers:  # weights only returned stay with the arguments; a view lives where its source does
        if b.id in unplaced:
            b.device = arg_device
        elif b.kind == "alias":
            b.device = bm.buffers[b.source].device  # sources come first: arguments, then earlier buffers

    report = {
        "target": target,
        "fallback_chain": part.chain,
        "notes": part.notes,
        "ops_per_backend": ops_per_backend(part.assignment),
        "ops": [{"op": op.name, "backend": part.assignment[op], "loc": location_of(op)} for op in compute_ops],
        "clusters": cluster_report,
        "weights": len(bm.weights),
        **_device_report(bm),
    }
    return bm, report


def _wait_for_kernels(bm: ByreModule, building: dict, stages: _Stages) -> None:
    """Kernels a backend builds in the background (``Kernel.data`` a Future): wait, and put their bytes in."""
    t0 = time.perf_counter()
    for kname, (cname, ops) in building.items():
        entry = bm.kernels[kname]
        try:
            data = entry.kernel.data.result()
        except Exception as e:  # noqa: BLE001
            for other in building:  # do not leave builds running for an artifact that will not be written
                bm.kernels[other].kernel.data.cancel()
            locs = ", ".join(sorted({location_of(o) for o in ops})[:3])
            raise TargetError(f"backend {entry.backend!r} failed to compile cluster {cname} ({len(ops)} ops: "
                              f"{', '.join(sorted({o.name for o in ops}))}; at {locs}): {type(e).__name__}: {e}") \
                from e
        entry.kernel = dataclasses.replace(entry.kernel, data=data)
    if building:
        backend = bm.kernels[next(iter(building))].backend
        key = f"codegen:{backend}"
        stages.times[key] = round(stages.times.get(key, 0.0) + time.perf_counter() - t0, 6)


def set_io_names(module, in_names: Sequence[str | None], out_names: Sequence[str | None]) -> None:
    """For frontends: name ``@main``'s arguments and results (``byteir.name``, which the artifact, ``byteir
    inspect`` and ``Session``'s inputs by name use). A ``None`` leaves that one unnamed (numbered); a list whose
    length is not the number of arguments (results) is ignored. Other argument/result attributes are kept."""
    main = entry_function(module)
    ftype = ir.FunctionType(ir.TypeAttr(main.attributes["function_type"]).value)
    with module.context:
        for key, names, n in (("arg_attrs", in_names, len(ftype.inputs)), ("res_attrs", out_names,
                                                                         len(ftype.results))):
            if len(names) != n or not any(names):
                continue
            old = main.attributes[key] if key in main.attributes else None
            dicts = []
            for i, name in enumerate(names):
                entries = {}
                if old is not None:
                    d = ir.DictAttr(old[i])
                    entries = {d[j].name: d[j].attr for j in range(len(d))}
                if name:
                    entries["byteir.name"] = ir.StringAttr.get(name)
                dicts.append(ir.DictAttr.get(entries))
            main.attributes[key] = ir.ArrayAttr.get(dicts)


def _names(main, attr: str, prefix: str, n: int, taken: set | None = None) -> list[str]:
    """The names a frontend gave @main's arguments or results (``byteir.name``), else ``input{i}`` /
    ``output{i}``; made unique (a repeated name gets ``_1``, ``_2``, ...)."""
    attrs = main.attributes[attr] if attr in main.attributes else None
    taken = set(taken or ())
    out = []
    for i in range(n):
        name = f"{prefix}{i}"
        if attrs is not None:
            d = ir.DictAttr(attrs[i])
            for key in ("byteir.name", "byre.argname"):
                if key in d:
                    name = ir.StringAttr(d[key]).value or name
        base, k = name, 0
        while name in taken or (name.startswith("w") and name[1:].isdigit()):  # w{k} names the weights
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out.append(name)
    return out


def _structure(module, n_outputs: int) -> dict:
    """The frontend's ``byteir.structure`` (the model's output tree), checked against the results."""
    if "byteir.structure" not in module.operation.attributes:
        return {}
    from ..runtime.structure import validate

    text = ir.StringAttr(module.operation.attributes["byteir.structure"]).value
    try:
        structure = json.loads(text)
    except json.JSONDecodeError as e:
        raise FrontendError(f"the frontend's byteir.structure is not JSON: {e}") from None
    if "outputs" in structure:
        from ..errors import ByreFormatError

        try:
            validate(structure["outputs"], n_outputs, "<frontend>")
        except ByreFormatError as e:
            raise FrontendError(f"the frontend's byteir.structure does not fit @main: {e.problem}") from None
    return structure


def _device_report(bm: ByreModule) -> dict:
    """Compute steps per device, and every copy between devices: where data crosses, and how much."""
    devices = Counter(bm.step_device(s) for s in bm.steps if s.op == "compute")
    copies = [{"src_device": bm.buffers[s.operands[0]].device, "dst_device": bm.buffers[s.operands[1]].device,
               "bytes": bm.buffers[s.operands[0]].spec.nbytes} for s in bm.steps if s.op == "copy"]
    return {"devices": dict(sorted(devices.items(), key=lambda kv: (kv[0] != HOST, kv[0]))),
            "copies": [c for c in copies if c["src_device"] != c["dst_device"]]}


def optimize(model, pass_groups: Sequence[str] | None = None, *, frontend: str | None = None,
             example_inputs=None, input_shapes=None) -> str:
    """The StableHLO text after the named ``hlo`` pass groups (all default groups when None)."""
    registry = get_registry()
    ctx = new_context()
    fe = choose_frontend(model, frontend, registry)
    module = fe.to_stablehlo(model, example_inputs, {}, ctx)
    entry_function(module)
    if input_shapes:
        refine_arguments(module, input_shapes)
    for g in select_pass_groups(registry, pass_groups):
        run_pass_group(module, g)
    return str(module)
