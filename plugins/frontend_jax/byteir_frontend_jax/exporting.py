"""JAX -> StableHLO through ``jax.export``.

Every input becomes a ``jax.export.Exported`` (a jitted function is exported for the ``cpu`` platform with the
example arguments; a serialized export is deserialized). Its ``mlir_module_serialized`` is a StableHLO portable
artifact, which the core reads into its own context with its own StableHLO
(:func:`byteir_core.compiler.importing.read_portable_artifact`), so jaxlib's MLIR never meets ours.

The module's arguments are the flattened leaves of ``(args, kwargs)``, minus the ones jax found unused
(``module_kept_var_idx``), after a platform-index argument when the export is for several platforms. This module
makes the compiled artifact's inputs exactly the leaves, in order: the weight arguments the user names are frozen
into constants, a platform index is bound to ``cpu``, and the leaves jax dropped are put back as unused inputs.
Inputs are named by their pytree paths (``params['dense']['kernel']``), outputs by ``jax.result_info``, and the
output pytree is recorded (``byteir.structure``) so that a ``Session`` call returns the function's own structure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from byteir_core.compiler.driver import dynamic_arguments, entry_function, refine_arguments, set_io_names
from byteir_core.compiler.importing import (drop_io_attributes, freeze_arguments, producer_string,
                                            read_portable_artifact)
from byteir_core.errors import FrontendError
from byteir_core.mlir import ir, run_pipeline

from .detect import MLIR_MAGIC, embedded_stablehlo, is_exported, is_serialized_export
from .shardy import mentions_shardy, strip_shardy

#: custom calls jax emits that mean nothing on one device: each returns its operand unchanged there
_IDENTITY_ON_ONE_DEVICE = ("Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape")
_MAX_MESSAGE_LINES = 12
#: custom-call targets implemented inside jaxlib (LAPACK, DUCC FFT, GPU solvers, Python callbacks): the XLA runtime
#: runs them, no byteir backend can
_JAXLIB_RUNTIME_PREFIXES = ("lapack_", "ducc_", "cu_", "cusolver", "cublas", "cusparse", "hipsolver", "hipblas",
                            "hipsparse", "xla_python_", "xla_ffi_python_", "xla_ffi_partial_python_",
                            "mosaic", "tpu_custom_call", "tf.call_tf_function")
_SOURCE = re.compile(r'"([^"]+\.py)":(\d+)')
_PRIMITIVE = re.compile(r'^loc\((?:callsite\()?"([^"]+)"')


def _where_in_source(loc, function: str | None, callers: dict) -> str:
    """``lu at model.py:7`` from a jax location: the primitive, then the user's source line. An op in one of
    jax's private functions (``@inv``, ``@solve``) has no source line: its caller's call site does."""
    text = str(loc)
    prim = _PRIMITIVE.search(text)
    out = prim.group(1).rsplit("/", 1)[-1] if prim else "?"
    for _ in range(16):
        src = _SOURCE.search(text)
        if src:
            return f"{out} at {Path(src.group(1)).name}:{src.group(2)}"
        if function not in callers:
            break
        call_loc, function = callers[function][0]
        text = str(call_loc)
    return out


def _enclosing_function(op) -> str | None:
    p = op.parent
    while p is not None and p.name != "func.func":
        p = p.parent
    return ir.StringAttr(p.attributes["sym_name"]).value if p is not None else None


def to_stablehlo(model, example_inputs: Sequence[Any] | None, options: dict, context) -> ir.Module:
    weights = _weight_argnums(options.get("weights"))
    argnames: list[str] = []
    args = None if example_inputs is None else _as_args(example_inputs)
    import jax

    if is_serialized_export(model) or isinstance(model, (bytes, bytearray, memoryview, str, Path)):
        exported, where = _deserialize(model)
    elif is_exported(model):
        exported, where = model, f"jax.export.Exported of {model.fun_name!r}"
    elif callable(model):
        exported, where = _export(model, args)
        argnames = _positional_names(model)
    else:
        raise FrontendError(f"the jax frontend reads a jax.jit function (with example_inputs), a "
                            f"jax.export.Exported or a serialized export (.jaxexport / .bin); got "
                            f"{type(model).__name__}")
    _check_exported(exported, where)
    n_args = len(exported.in_tree.children()[0].children())
    bad = [i for i in weights if not 0 <= i < n_args]
    if bad:
        raise FrontendError(f"{where}: option weights={sorted(weights)} names argument(s) {bad}, but the function "
                            f"takes {n_args} positional argument(s)")
    if args is None and weights:
        raise FrontendError(f"{where}: option weights={sorted(weights)} freezes those arguments' values, so give "
                            f"the example inputs that hold them (example_inputs=(params, x, ...))")

    blob = bytes(exported.mlir_module_serialized)
    version = producer_string(blob).removeprefix("StableHLO_v") or "unknown"
    if mentions_shardy(blob):  # sdy attributes would not deserialize in our context (see .shardy)
        blob = strip_shardy(blob, where)
    module = read_portable_artifact(context, blob, where, f"jax.export (StableHLO {version}; read with JAX "
                                                          f"{jax.__version__})")
    with context, ir.Location.unknown():
        _bind_leaves(module, exported, args, weights, where, argnames)
        _strip_jax_only(module, where)
        if options.get("input_shapes") and dynamic_arguments(module):
            _specialize(module, options["input_shapes"], where)
    return module


def _specialize(module, shapes, where: str) -> None:
    """A shape-polymorphic export (``jax.export.symbolic_shape``) at the static shapes the user gave: the argument
    types refined, then each ``shape_assertion`` jax put in (``b >= 1``, ``a.shape[0] == b.shape[0]``) decided
    now that its operands are constants. A true one is removed (no backend runs this custom call); a false one is
    jax's own message, with the dimension values filled in."""
    try:
        refine_arguments(module, shapes)
        run_pipeline(module, "canonicalize")
    except FrontendError:
        raise
    except Exception as e:  # noqa: BLE001 -- MLIRError from refinement: shapes that contradict the program
        raise FrontendError(f"{where}: cannot specialize the shape-polymorphic export to input shapes {shapes}: "
                            f"{_short(e)}") from None
    assertions = []

    def visit(op):
        op = op.operation
        if op.name == "stablehlo.custom_call" and \
                ir.StringAttr(op.attributes["call_target_name"]).value == "shape_assertion":
            assertions.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    for op in assertions:
        values = [_constant_value(v) for v in op.operands]
        if any(v is None for v in values):
            continue  # still dynamic: the core reports the dynamic dimensions
        if not bool(values[0]):
            msg = ir.StringAttr(op.attributes["error_message"]).value if "error_message" in op.attributes else ""
            try:
                msg = msg.format(*[int(v) for v in values[1:]])
            except (IndexError, KeyError, ValueError):
                pass
            raise FrontendError(f"{where}: input shapes {shapes} break the export's shape constraints: {msg}")
        op.erase()


def _constant_value(value):
    owner = value.owner
    if not isinstance(owner, (ir.Operation, ir.OpView)) or owner.operation.name != "stablehlo.constant":
        return None
    return np.asarray(ir.DenseElementsAttr(owner.operation.attributes["value"])).reshape(-1)[0]


# -- inputs ---------------------------------------------------------------------------------------------------
def _weight_argnums(value) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    try:
        nums = [v for v in value]
    except TypeError:
        nums = None
    if nums is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in nums):
        raise FrontendError(f"option weights must be argument numbers (argnums) such as [0], got {value!r}")
    return set(nums)


def _as_args(example_inputs) -> tuple:
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    return (example_inputs,)  # one argument given as itself


def _describe_args(args: tuple) -> str:
    import jax

    def one(x):
        shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
        return f"{dtype}{list(shape)}" if shape is not None and dtype is not None else type(x).__name__

    return "(" + ", ".join(str(jax.tree_util.tree_map(one, a)) for a in args) + ")"


def _short(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) > _MAX_MESSAGE_LINES:
        lines = lines[:_MAX_MESSAGE_LINES] + ["..."]
    return f"{type(e).__name__}: " + "\n  ".join(lines) if lines else type(e).__name__


def _export(fn, args: tuple | None):
    import jax
    from jax import export as jexport

    from .detect import is_jitted

    name = getattr(fn, "__name__", None) or type(fn).__name__
    if args is None:
        raise FrontendError(f"JAX function {name!r}: tracing it needs example inputs, one per positional "
                            f"argument: byteir_core.compile(fn, (params, x), ...)")
    _exclude_our_frames()
    if not is_jitted(fn):
        # our own jit: keep_unused keeps every argument in the program, so the artifact takes all the leaves
        fn = jax.jit(fn, keep_unused=True)
    try:
        exported = jexport.export(fn, platforms=("cpu",))(*args)
    except Exception as e:  # noqa: BLE001 -- jax raises TypeError, ValueError, its own errors from user code
        raise FrontendError(f"JAX function {name!r} could not be traced and exported with example inputs "
                            f"{_describe_args(args)}:\n  {_short(e)}") from None
    return exported, f"JAX function {name!r}"


def _exclude_our_frames() -> None:
    """jax records the user's call stack in every op's location (and shows it in errors); byteir's frames between
    the user's call and jax.export are not the user's code. jax's own mechanism for libraries built on it leaves
    them out, so an error names the user's line, not ours."""
    try:
        from jax._src import source_info_util

        import byteir_core

        for mod in (byteir_core, __import__(__name__.rpartition(".")[0])):
            path = str(Path(mod.__file__).parent) + "/"
            if path not in getattr(source_info_util, "_exclude_paths", []):
                source_info_util.register_exclusion(path)
    except Exception:  # noqa: BLE001 -- private API: without it locations are only longer
        pass


def _deserialize(model):
    from jax import export as jexport

    if isinstance(model, (bytes, bytearray, memoryview)):
        data, where = bytes(model), "<bytes>"
    else:
        where = str(model)
        try:
            data = Path(model).read_bytes()
        except OSError as e:
            raise FrontendError(f"cannot read {where}: {e.strerror or e}") from None
    if data.startswith(MLIR_MAGIC):
        raise FrontendError(f"{where}: this is MLIR bytecode (StableHLO), not a serialized jax.export.Exported; "
                            f"compile it with --frontend stablehlo (or give it a .mlirbc suffix)")
    if embedded_stablehlo(data) is None:
        raise FrontendError(f"{where}: not a serialized jax.export.Exported (the bytes of exported.serialize()): "
                            f"{len(data)} bytes, no StableHLO module found in them (truncated or corrupted?)")
    try:
        exported = jexport.deserialize(bytearray(data))
    except Exception as e:  # noqa: BLE001 -- flatbuffers raises plain types on malformed data
        import jax

        raise FrontendError(f"{where}: JAX {jax.__version__} cannot deserialize this jax.export artifact "
                            f"(corrupted, or written by an incompatible JAX): {_short(e)}") from None
    return exported, where


def _check_exported(exported, where: str) -> None:
    if exported.nr_devices != 1:
        raise FrontendError(f"{where}: exported for {exported.nr_devices} devices; byteir compiles single-device "
                            f"programs (export it without a mesh / sharding over several devices)")
    if exported.ordered_effects:
        raise FrontendError(f"{where}: has ordered side effects {list(map(str, exported.ordered_effects))} "
                            f"(io_callback(ordered=True), jax.debug.print(ordered=True)); byteir compiles pure "
                            f"programs")


def _check_args_match(exported, args: tuple, where: str, names: dict[int, str]) -> None:
    """Example inputs given with an Exported must have its argument structure, shapes and dtypes."""
    import jax

    try:
        tree = jax.tree_util.tree_structure((args, {}))
    except Exception as e:  # noqa: BLE001
        raise FrontendError(f"{where}: example inputs are not a pytree of arrays: {_short(e)}") from None
    if tree != exported.in_tree:
        raise FrontendError(f"{where}: the example inputs' structure {tree} is not the exported function's "
                            f"{exported.in_tree}")
    leaves = jax.tree_util.tree_leaves((args, {}))
    for j, (x, aval) in enumerate(zip(leaves, exported.in_avals)):
        name = names[j]
        shape = tuple(getattr(x, "shape", np.shape(x)))
        dtype = getattr(x, "dtype", None)
        if shape != tuple(aval.shape) or (dtype is not None and np.dtype(dtype) != np.dtype(aval.dtype)
                                          and not _x64_narrowing(dtype, aval.dtype)):
            raise FrontendError(f"{where}: example input {name} is {dtype}{list(shape)}; the exported function "
                                f"takes {aval.dtype}{list(aval.shape)}")


def _x64_narrowing(given, want) -> bool:
    """float64 / int64 NumPy data where jax (without jax_enable_x64) traced float32 / int32."""
    given, want = np.dtype(given), np.dtype(want)
    return given.kind == want.kind and given.itemsize == 8 and want.itemsize == 4


# -- names, weights, dropped leaves ------------------------------------------------------------------------------
def _leaf_paths(in_tree, argnames: Sequence[str] = ()) -> list[str]:
    """Each flat leaf's pytree path: ``params['dense']['kernel']`` with the function's parameter names, else
    ``args[0]['dense']['kernel']``; ``kwargs['mask']``."""
    import jax

    dummy = in_tree.unflatten(list(range(in_tree.num_leaves)))
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]:
        if getattr(path[0], "idx", 0) == 0 and len(path) > 1 and getattr(path[1], "idx", None) is not None \
                and path[1].idx < len(argnames):
            out.append(argnames[path[1].idx] + jax.tree_util.keystr(tuple(path[2:])))
        else:
            out.append(("args" if getattr(path[0], "idx", 0) == 0 else "kwargs")
                       + jax.tree_util.keystr(tuple(path[1:])))
    return out


def _positional_names(fn) -> list[str]:
    """The names of ``fn``'s positional parameters (as jax names its arguments), or [] when unknown."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    names = []
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        names.append(p.name)
    return names


_NAME_LOC = re.compile(r'^loc\("((?:[^"\\]|\\.)*)"\)$')


def _loc_name(arg) -> str | None:
    """The name jax put in an argument's location (``params['dense']['kernel']``), if it is a plain name."""
    m = _NAME_LOC.match(str(arg.location))
    return m.group(1).replace('\\"', '"') if m else None


def _bind_leaves(module, exported, args: tuple | None, weights: set[int], where: str,
                 argnames: Sequence[str] = ()) -> None:
    main = entry_function(module)
    block = main.regions[0].blocks[0]
    n_leaves = exported.in_tree.num_leaves
    kept = list(exported.module_kept_var_idx)
    arg_trees = exported.in_tree.children()[0].children()
    first = np.cumsum([0] + [t.num_leaves for t in arg_trees])
    weight_leaves = {j for i in weights for j in range(first[i], first[i + 1])}

    # a platform-index argument precedes the leaves when the export is for several platforms
    has_platform = len(block.arguments) == len(kept) + 1 and len(exported.platforms) > 1
    if len(block.arguments) != len(kept) + has_platform:
        raise FrontendError(f"{where}: @main takes {len(block.arguments)} arguments; the export describes "
                            f"{len(kept)} array arguments (calling convention "
                            f"{exported.calling_convention_version}, platforms {list(exported.platforms)})")
    offset = int(has_platform)
    paths = _leaf_paths(exported.in_tree, argnames)
    names = {j: paths[j] for j in range(n_leaves)}
    for pos, j in enumerate(kept):
        names[j] = _loc_name(block.arguments[offset + pos]) or names[j]
    if args is not None:
        _check_args_match(exported, args, where, names)

    values: dict[int, np.ndarray] = {}
    if has_platform:
        platforms = [p.lower() for p in exported.platforms]
        values[0] = np.array(platforms.index("cpu") if "cpu" in platforms else 0, np.int32)
    if weights:
        import jax

        leaves = jax.tree_util.tree_leaves((args, {}))
        for pos, j in enumerate(kept):
            if j in weight_leaves:
                try:
                    values[offset + pos] = np.asarray(leaves[j])
                except Exception as e:  # noqa: BLE001 -- a ShapeDtypeStruct or a tracer has no value
                    raise FrontendError(f"{where}: weight {names[j]} has no value to freeze "
                                        f"({type(leaves[j]).__name__}): {_short(e)}") from None
    freeze_arguments(module, values)

    remaining = [j for j in range(n_leaves) if j not in weight_leaves]
    present = [j for j in kept if j not in weight_leaves]
    if present != remaining:  # jax dropped unused leaves: the artifact still takes them, in their place
        types = {j: ir.RankedTensorType.get(list(exported.in_avals[j].shape),
                                            _element_type(exported.in_avals[j].dtype)) for j in remaining}
        _take_all_leaves(module, present, remaining, types)
    result_names = []
    if "res_attrs" in main.attributes:
        for d in main.attributes["res_attrs"]:
            d = ir.DictAttr(d)
            result_names.append(ir.StringAttr(d["jax.result_info"]).value if "jax.result_info" in d else None)
    set_io_names(module, [names[j] for j in remaining], result_names)
    tree = _structure(exported.out_tree)
    if tree is not None and exported.out_tree.num_leaves == len(result_names or exported.out_avals):
        module.operation.attributes["byteir.structure"] = ir.StringAttr.get(json.dumps({"outputs": tree}))


def _element_type(dtype) -> ir.Type:
    from byteir_core.dtypes import to_mlir

    return ir.Type.parse(to_mlir(np.dtype(dtype)))


def _take_all_leaves(module, present: list[int], remaining: list[int], types: dict) -> None:
    """Make @main take every leaf in ``remaining``: a new @main with all of them calls the old one (now private)
    with those it uses; the core's ``inline`` pass group inlines the call."""
    old = entry_function(module)
    ftype = ir.FunctionType(ir.TypeAttr(old.attributes["function_type"]).value)
    results = list(ftype.results)
    callee = "_byteir_jax_main"
    old.attributes["sym_name"] = ir.StringAttr.get(callee)
    old.attributes["sym_visibility"] = ir.StringAttr.get("private")
    old_args = list(old.attributes["arg_attrs"]) if "arg_attrs" in old.attributes else None
    arg_attrs = [old_args[present.index(j)] if old_args is not None and j in present else ir.DictAttr.get({})
                 for j in remaining]
    attrs = {"sym_name": ir.StringAttr.get("main"),
             "function_type": ir.TypeAttr.get(ir.FunctionType.get([types[j] for j in remaining], results)),
             "arg_attrs": ir.ArrayAttr.get(arg_attrs)}
    if "res_attrs" in old.attributes:
        attrs["res_attrs"] = old.attributes["res_attrs"]
    with ir.Location.unknown(), ir.InsertionPoint.at_block_begin(module.body):
        new = ir.Operation.create("func.func", regions=1, attributes=attrs)
    block = new.regions[0].blocks.append(*[types[j] for j in remaining])
    with ir.Location.unknown(), ir.InsertionPoint(block):
        call = ir.Operation.create("func.call", results=results,
                                   operands=[block.arguments[remaining.index(j)] for j in present],
                                   attributes={"callee": ir.FlatSymbolRefAttr.get(callee)})
        ir.Operation.create("func.return", operands=list(call.results))


class _NoStructure(Exception):
    pass


def _structure(out_tree) -> dict | None:
    """The output pytree as a ``byteir.structure`` tree, or None when it holds a node Session cannot rebuild
    (a custom pytree such as a Flax State): the outputs are then flat."""
    import jax

    counter = iter(range(out_tree.num_leaves))

    def walk(td):
        if jax.tree_util.treedef_is_leaf(td) and td.num_nodes == 1 and td.num_leaves == 1:
            return {"leaf": next(counter)}
        typ, data = td.node_data()
        kids = [walk(k) for k in td.children()]
        if typ is type(None):
            return {"none": True}
        if typ is tuple:
            return {"tuple": kids}
        if typ is list:
            return {"list": kids}
        if typ is dict and all(isinstance(k, str) for k in data):
            return {"dict": [[k, t] for k, t in zip(data, kids)]}
        if issubclass(typ, tuple) and hasattr(typ, "_fields"):  # a namedtuple: rebuilt by keyword
            return {"object": f"{typ.__module__}:{typ.__qualname__}",
                    "fields": [[f, t] for f, t in zip(typ._fields, kids)]}
        raise _NoStructure(typ)

    try:
        return walk(out_tree)
    except _NoStructure:
        return None


# -- what jax emits that byteir does not need ----------------------------------------------------------------------
def _strip_jax_only(module, where: str) -> None:
    """Remove what only jax's runtime reads.

    * ``Sharding`` / ``SPMD*`` custom calls (``with_sharding_constraint``, ``shard_map``) are identities on one
      device; no byteir backend claims them, so each is replaced by its operand.
    * ``mhlo.num_partitions`` / ``mhlo.num_replicas`` / ``jax.uses_shape_polymorphism`` module attributes and
      ``jax.result_info`` / ``mhlo.sharding`` / ``mhlo.layout_mode`` argument and result attributes are XLA's; the
      names they carry are already in ``byteir.name``.
    """
    for key in ("mhlo.num_partitions", "mhlo.num_replicas"):
        if key in module.operation.attributes:
            n = ir.IntegerAttr(module.operation.attributes[key]).value
            if n != 1:
                raise FrontendError(f"{where}: {key} = {n}; byteir compiles single-device programs")
            del module.operation.attributes[key]
    if "jax.uses_shape_polymorphism" in module.operation.attributes:
        del module.operation.attributes["jax.uses_shape_polymorphism"]

    identities = []
    runtime_calls: dict[str, list] = {}
    callers: dict[str, list] = {}  # callee -> (location, calling function) of each func.call

    def visit(op):
        op = op.operation
        if op.name == "stablehlo.custom_call":
            target = ir.StringAttr(op.attributes["call_target_name"]).value
            if target in _IDENTITY_ON_ONE_DEVICE and len(op.operands) == 1 and len(op.results) == 1 \
                    and op.operands[0].type == op.results[0].type:
                identities.append(op)
            elif target.startswith(_JAXLIB_RUNTIME_PREFIXES):
                runtime_calls.setdefault(target, []).append((op.location, _enclosing_function(op)))
        elif op.name == "func.call":
            callers.setdefault(ir.FlatSymbolRefAttr(op.attributes["callee"]).value, []).append(
                (op.location, _enclosing_function(op)))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    if runtime_calls:
        parts = []
        for t, sites in sorted(runtime_calls.items()):
            places = sorted({_where_in_source(loc, fn, callers) for loc, fn in sites})
            parts.append(f"{t} x{len(sites)} ({', '.join(places[:3])}{', ...' if len(places) > 3 else ''})")
        raise FrontendError(
            f"{where}: calls kernels of jaxlib's own runtime, which no byteir backend has: {'; '.join(parts)}. "
            f"They come from jnp.linalg / jax.scipy.linalg (LAPACK), jnp.fft (DUCC) or host callbacks; express "
            f"the computation with jnp/lax ops that lower to plain StableHLO")
    for op in identities:
        op.results[0].replace_all_uses_with(op.operands[0])
        op.erase()

    jax_only = ("jax.result_info", "mhlo.sharding", "mhlo.layout_mode", "jax.global_constant")
    for f in module.body.operations:
        if f.operation.name == "func.func":
            drop_io_attributes(f.operation, jax_only.__contains__)
