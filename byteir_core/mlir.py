"""The one place that imports the MLIR bindings and makes contexts.

The bindings come from the ``torch-mlir`` wheel (upstream MLIR as ``torch_mlir.ir`` plus StableHLO in
``torch_mlir._mlir_libs._stablehlo``); importing them does not import torch. Plugins never create contexts:
they receive modules and contexts from the core, because MLIR objects from two contexts (or two binding
wheels) cannot meet.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import io
import os
import pkgutil
import re
import sys
import threading
from contextlib import contextmanager


@contextmanager
def _deep_binding():
    """Extension modules loaded inside are ``dlopen``-ed with ``RTLD_DEEPBIND``: bound to their own symbols."""
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        yield
    finally:
        sys.setdlopenflags(flags)


#: Native modules with an LLVM of their own that others import lazily (torch's Inductor and the CUDA backend
#: import Triton): loaded while TensorFlow's LLVM is in the global symbol scope, they are bound to their own.
_DEEP_WHEN_TENSORFLOW = frozenset({"triton._C.libtriton"})


class _DeepBindLoader(importlib.abc.Loader):
    """Wraps an extension module's loader: its ``dlopen`` runs with ``RTLD_DEEPBIND`` when TensorFlow is loaded."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        if "tensorflow" not in sys.modules:
            return self.inner.create_module(spec)
        with _deep_binding():
            return self.inner.create_module(spec)

    def exec_module(self, module):
        return self.inner.exec_module(module)


class _DeepBindFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`_DEEP_WHEN_TENSORFLOW` as the other finders do, with :class:`_DeepBindLoader`.
    Costs nothing until one of them is imported (Triton's import takes 0.13 s: not paid up front)."""

    def find_spec(self, name, path, target=None):
        if name not in _DEEP_WHEN_TENSORFLOW:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _DeepBindLoader):
                    spec.loader = _DeepBindLoader(spec.loader)
                return spec
        return None


def _load_bindings() -> None:
    """Import every native module of torch-mlir's bindings now, each bound to its own LLVM/MLIR symbols.

    TensorFlow loads its own LLVM with ``RTLD_GLOBAL``. A library loaded after it that looks symbols up in the
    global scope first registers LLVM's command-line options a second time, and LLVM ends the process
    ("Option 'print-inst-addrs' registered more than once"): ``import tensorflow`` before byteir did that.
    ``RTLD_DEEPBIND`` makes each torch-mlir library prefer its own symbols; all of them are loaded here (about
    10 ms), so no lazy import later runs without the flag. Triton, which others import lazily, gets the flag from
    :class:`_DeepBindFinder` when it is imported after TensorFlow ("Option 'bitcode-mdindex-threshold' registered
    more than once" otherwise)."""
    spec = importlib.util.find_spec("torch_mlir._mlir_libs")
    names = [f"torch_mlir._mlir_libs.{m.name}" for m in pkgutil.iter_modules(spec.submodule_search_locations)
             if m.name.startswith("_") and not m.ispkg and not m.name.startswith("_site_initialize")]
    with _deep_binding():
        for name in [*names, "torch_mlir.ir", "torch_mlir.passmanager"]:
            importlib.import_module(name)
    if not any(isinstance(f, _DeepBindFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _DeepBindFinder())


_load_bindings()

from torch_mlir import ir, passmanager  # noqa: E402,F401  (re-exported for plugins)
from torch_mlir._mlir_libs import _stablehlo as stablehlo_api  # noqa: E402

__all__ = [
    "ir",
    "passmanager",
    "stablehlo_api",
    "new_context",
    "run_pipeline",
    "diagnostics_to_text",
    "module_to_bytecode",
    "clone_module",
    "walk_ops",
    "register_torch_dialects",
]

_passes_lock = threading.Lock()
_passes_registered = False


def _register_passes_once() -> None:
    # Without this, 'stablehlo-legalize-to-linalg' and friends are unknown pipeline names (FACTS.md section 1).
    global _passes_registered
    with _passes_lock:
        if not _passes_registered:
            stablehlo_api.register_stablehlo_passes()
            # empty dialect modules, so wrapping a stablehlo/chlo/byre op no longer retries a failing import
            # each time (byteir_core._dialects)
            from torch_mlir._mlir_libs import _mlir

            _mlir.globals.append_dialect_search_prefix("byteir_core._dialects")
            _passes_registered = True


def new_context() -> ir.Context:
    """A context with StableHLO/CHLO registered and ``byre.*`` (unregistered) ops accepted."""
    _register_passes_once()
    ctx = ir.Context()
    stablehlo_api.register_dialect(ctx)
    # byre.* ops are not a registered dialect (IRDL cannot express byre.compute's mixed operand types,
    # FACTS.md section 3); our ByRE loader verifies their structure itself.
    ctx.allow_unregistered_dialects = True
    return ctx


@contextmanager
def capture_diagnostics(ctx: ir.Context):
    """Collect diagnostics emitted while the block runs; yields the list of strings."""
    messages: list[str] = []

    def handler(d):
        messages.append(_format_diagnostic(d))
        return True

    h = ctx.attach_diagnostic_handler(handler)
    try:
        yield messages
    finally:
        h.detach()


def location_text(loc) -> str:
    """``loc("model.mlir":2:26)`` as a compiler prints it: ``model.mlir:2:26``."""
    text = str(loc)
    m = re.fullmatch(r'loc\("([^"]*)":(\d+):(\d+)\)', text)
    return f"{m.group(1)}:{m.group(2)}:{m.group(3)}" if m else text


def _format_diagnostic(d) -> str:
    text = f"{location_text(d.location)}: {d.message}"
    for note in d.notes:
        text += f"\n  note: {location_text(note.location)}: {note.message}"
    return text


def diagnostics_to_text(exc: Exception) -> str:
    """Turn an ``MLIRError`` into readable lines (location: message), without a deep traceback."""
    diags = getattr(exc, "error_diagnostics", None)
    if diags:
        return "\n".join(_format_diagnostic(d) for d in diags)
    return str(exc)


def run_pipeline(module: ir.Module, pipeline: str) -> None:
    """Run a textual pass pipeline (``builtin.module(...)`` is added when missing) on ``module``."""
    _register_passes_once()
    if not pipeline.startswith("builtin.module("):
        pipeline = f"builtin.module({pipeline})"
    with module.context:
        pm = passmanager.PassManager.parse(pipeline)
        pm.run(module.operation)


def module_to_bytecode(module: ir.Module, version: int | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        module.operation.write_bytecode(buf)
    else:
        module.operation.write_bytecode(buf, desired_version=version)
    return buf.getvalue()


def walk_ops(root):
    """Every operation nested in ``root`` (a module or an op), depth first, as ``ir.Operation``; collect
    before mutating. MLIR walks (the native walk is about 100x faster than descending regions and blocks from
    Python, which took a few ms per small kernel module); the list is taken before the first op is yielded."""
    root = getattr(root, "operation", root)
    found: list = []

    def visit(op):
        found.append(op)
        return ir.WalkResult.ADVANCE

    root.walk(visit, ir.WalkOrder.PRE_ORDER)
    return iter(found[1:])  # the walk starts at the root itself


def clone_module(module: ir.Module) -> ir.Module:
    """A deep copy of ``module`` in the same context."""
    with module.context:
        return ir.Module.parse(module_to_bytecode(module))


def register_torch_dialects(context: ir.Context) -> None:
    """torch-mlir's ``torch`` and ``torch_c`` dialects in ``context``, once, for frontends that import into the
    torch dialect first (PyTorch via the FX importer, ONNX via the ONNX importer). Does not import torch."""
    from torch_mlir.dialects import torch as torch_d

    if getattr(context, "_byteir_torch_registered", False):
        return
    torch_d.register_dialect(context)
    # torch_c (TorchConversion) has no Python registration; running a pass that depends on it once on an
    # empty module loads it (a pass's dependent dialects), so the torch_c.* ops created by name are registered
    # ops and not unregistered look-alikes (core contexts accept unregistered ops for byre.*).
    with context, ir.Location.unknown():
        run_pipeline(ir.Module.create(), "torch-func-backend-type-conversion")
    context.get_dialect_descriptor("torch_c")
    try:
        context._byteir_torch_registered = True
    except AttributeError:
        pass
