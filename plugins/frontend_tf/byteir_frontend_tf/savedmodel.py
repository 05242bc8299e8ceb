"""A SavedModel directory (its serving signature) -> StableHLO, with TensorFlow's own converter
(``savedmodel_to_stablehlo``), which inlines the variables as constants.

The converter runs in a child process (:mod:`._convert`): on some SavedModels it ends the process it runs in. It
answers with MLIR bytecode of a ``stablehlo`` module (not a portable artifact: the converter has no versioned
form), which the core's MLIR reads when the bytecode format allows; an unreadable one is an error naming both
MLIR versions. An input with an unknown dimension (the batch) is pinned by ``input_shapes``; without it the
dimension stays ``?`` and the converter keeps TensorFlow or shape ops around it, which is reported with the
``--input-shape`` to give.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from byteir_core.errors import FrontendError
from byteir_core.mlir import capture_diagnostics, ir

from .common import finish_module

TIMEOUT_S = 900


def _dir(path: str) -> str:
    p = Path(path)
    return str(p.parent if p.is_file() else p)


class ConverterFailed(FrontendError):
    """TensorFlow's converter refused or crashed on a SavedModel it could open."""


class Converter:
    """One child process for one SavedModel signature; :meth:`convert` asks it for the bytecode at some input
    shapes (TensorFlow is imported once however many times it is asked)."""

    def __init__(self, path: str, signature: str, tags: str):
        self.path, self.signature = path, signature
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        self.proc = subprocess.Popen([sys.executable, "-m", "byteir_frontend_tf._convert", path, signature, tags],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def convert(self, shapes: str) -> bytes:
        try:
            self.proc.stdin.write(shapes.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it ended already: read why below
        head = self._read(9)
        if len(head) == 9:
            body = self._read(int.from_bytes(head[1:], "little"))
            if head[:1] == b"0":
                return body
            raise ConverterFailed(body.decode("utf-8", "replace"))
        self._failed()

    def _read(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = self.proc.stdout.read(left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _failed(self):
        try:
            err = self.proc.communicate(timeout=TIMEOUT_S)[1].decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise FrontendError(f"{self.path}: TensorFlow's SavedModel converter did not answer in {TIMEOUT_S} s") \
                from None
        code = self.proc.returncode
        if code == 2:
            raise FrontendError(err.strip().splitlines()[-1])
        # a crash: LLVM's "LLVM ERROR:" / "error:" lines say why
        reasons = [ln.strip() for ln in err.splitlines() if "error" in ln.lower()][-3:]
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        raise ConverterFailed(f"{self.path}: TensorFlow's SavedModel converter crashed ({how}) on signature "
                              f"{self.signature!r}" + "".join(f"\n  {r}" for r in reasons))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


def _index_names(main, key: str, n: int) -> list:
    names = [None] * n
    if key in main.attributes:
        for i, d in enumerate(main.attributes[key]):
            d = ir.DictAttr(d)
            if "tf_saved_model.index_path" in d:
                path = ir.ArrayAttr(d["tf_saved_model.index_path"])
                names[i] = ".".join(ir.StringAttr(p).value if isinstance(p, ir.StringAttr) or
                                    str(p).startswith('"') else str(p) for p in path) or None
    return names


def _parse(data: bytes, context, where: str):
    with context, ir.Location.unknown(), capture_diagnostics(context) as diags:
        try:
            return ir.Module.parse(data)
        except Exception as e:  # noqa: BLE001
            from byteir_core.compiler.importing import producer_string

            import torch_mlir

            detail = "\n  ".join([*diags, f"{type(e).__name__}: {e}"])
            raise FrontendError(f"{where}: cannot read the StableHLO bytecode TensorFlow's converter wrote (its MLIR "
                                f"{producer_string(data)!r}; byteir reads with torch-mlir "
                                f"{getattr(torch_mlir, '__version__', '')} MLIR)\n  {detail}") from None


def _arguments(module):
    from byteir_core.compiler.driver import entry_function

    main = entry_function(module)
    args = main.regions[0].blocks[0].arguments
    types = [ir.RankedTensorType(a.type) for a in args]
    return main, types


def _shape_string(types, names, shapes, where: str) -> str:
    from byteir_core.compiler.importing import shapes_by_input

    shapes = shapes_by_input(shapes, [n if n else f"input{i}" for i, n in enumerate(names)], where)
    parts = []
    for t, name, shape in zip(types, names, shapes):
        dims = [None if t.is_dynamic_dim(d) else t.shape[d] for d in range(t.rank)]
        if shape is None:
            parts.append(",".join("?" if d is None else str(d) for d in dims))
            continue
        if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
            raise FrontendError(f"{where}: --input-shape for input {name!r}: {list(shape)} does not fit its type {t}")
        parts.append(",".join(str(s) for s in shape))
    return ":".join(parts)


def _hint(types, names) -> str:
    return " ".join(f"{n}=" + ("x".join("1" if t.is_dynamic_dim(d) else str(t.shape[d]) for d in range(t.rank))
                               or "scalar") for t, n in zip(types, names))


def to_stablehlo(path: str, options: dict, context):
    where = _dir(path)
    signature = options.get("signature", "serving_default")
    tags = options.get("tags", "serve")
    what = f"SavedModel {where} (signature {signature!r})"
    conv = Converter(where, signature, tags)
    try:
        try:
            first = conv.convert("")
        except ConverterFailed as e:
            return _through_the_xla_bridge(where, signature, tags, options, context, e)
        module = _parse(first, context, what)
        main, types = _arguments(module)
        in_names = _index_names(main, "arg_attrs", len(types))
        shapes = options.get("input_shapes")
        if shapes and any(not t.has_static_shape for t in types):
            module = _parse(conv.convert(_shape_string(types, in_names, shapes, what)), context, what)
            main, types = _arguments(module)
    finally:
        conv.close()
    from byteir_core.compiler.driver import n_results

    out_names = _index_names(main, "res_attrs", n_results(module))
    finish_module(module, what, in_names, out_names, None, shape_hint=_hint(types, in_names))
    return module


def _through_the_xla_bridge(where: str, signature: str, tags: str, options: dict, context, failed: FrontendError):
    """When the converter fails (it crashes on a ``tf.Module`` saved with ``tf.saved_model.save`` whose variables
    Keras made), load the SavedModel here and compile its signature function as a ``tf.function`` would be."""
    from .importer import _tf, to_stablehlo as function_to_stablehlo

    tf = _tf()
    try:
        loaded = tf.saved_model.load(where, tags=[t for t in tags.split(",") if t])
        fn = loaded.signatures[signature]
    except Exception as e:  # noqa: BLE001
        raise FrontendError(f"{failed}\n  and loading it in TensorFlow failed too: {type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    try:
        return function_to_stablehlo(fn, None, {k: v for k, v in options.items() if k == "input_shapes"}, context)
    except FrontendError as e:
        raise FrontendError(f"{failed}\n  and compiling its signature function through XLA failed too: {e}") \
            from None
