"""For frontends whose producer already writes StableHLO (TensorFlow's XLA bridge, ``jax.export``): read its
versioned portable artifact into the core's context, and freeze the arguments that carry weights into
constants.

Both producers ship their own StableHLO, older or newer than ours; the portable artifact (VHLO bytecode) is the
form StableHLO promises to read across versions, so it is the only one these helpers take. When it cannot be
read the error names the producer's version and the range we read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..builtins.stablehlo_frontend import BYTECODE_MAGIC
from ..dtypes import to_numpy
from ..errors import FrontendError
from ..mlir import capture_diagnostics, diagnostics_to_text, ir, stablehlo_api
from .driver import entry_function


def supported_versions() -> str:
    """The StableHLO versions byteir reads, e.g. ``0.9.0 to 1.19.0``."""
    return f"{stablehlo_api.get_minimum_version()} to {stablehlo_api.get_current_version()}"


def producer_string(blob: bytes) -> str:
    """The producer an MLIR bytecode file names in its header (``MLIR23.0.0git``, ``StableHLO_v1.13.7``), or ''."""
    if not blob.startswith(BYTECODE_MAGIC) or len(blob) < 6:
        return ""
    end = blob.find(b"\x00", 5)  # magic, a one-byte version varint, then the NUL-terminated producer
    return blob[5:end].decode("ascii", "replace") if end > 5 else ""


def read_portable_artifact(context, blob: bytes, where: str, producer: str) -> ir.Module:
    """A StableHLO portable artifact (VHLO bytecode) -> a ``stablehlo`` module in ``context``.

    ``producer`` says who wrote it and which StableHLO version, e.g. ``"TensorFlow 2.21.0 (StableHLO 1.13.7)"``;
    a blob that cannot be read is a :class:`FrontendError` naming ``where``, that producer and our versions."""
    blob = bytes(blob)
    if not blob.startswith(BYTECODE_MAGIC):
        raise FrontendError(f"{where}: not a StableHLO portable artifact (MLIR bytecode starts with "
                            f"{BYTECODE_MAGIC!r}, this starts with {blob[:4]!r})")
    with context, ir.Location.unknown(), capture_diagnostics(context) as diags:
        try:
            return stablehlo_api.deserialize_portable_artifact(context, blob)
        except Exception as e:  # noqa: BLE001 -- the bindings raise plain exception types
            detail = diagnostics_to_text(e) if isinstance(e, ir.MLIRError) else f"{type(e).__name__}: {e}"
            detail = "\n  ".join([*diags, detail])
            header = producer_string(blob)
            raise FrontendError(
                f"{where}: cannot read the StableHLO portable artifact written by {producer}"
                f"{f' (bytecode producer {header!r})' if header else ''}; byteir reads StableHLO "
                f"{supported_versions()}. A producer newer than ours must target an older version when it "
                f"serializes (jax.export and TensorFlow pick a compatibility window); otherwise upgrade "
                f"byteir-core.\n  {detail.strip()}") from None


def dense_attr(value: np.ndarray, ttype: ir.RankedTensorType) -> ir.DenseElementsAttr:
    """``value`` as a dense attribute of exactly ``ttype`` (any element type byteir knows: bf16, float8, i1...)."""
    elem = str(ttype.element_type)
    shape = list(ttype.shape)
    arr = np.asarray(value)
    if tuple(arr.shape) != tuple(shape):
        raise FrontendError(f"a weight of shape {list(arr.shape)} cannot be bound to {ttype}")
    if elem == "i1":
        return ir.DenseElementsAttr.get(np.ascontiguousarray(arr.astype(bool)), type=ttype.element_type,
                                        shape=shape)
    arr = np.ascontiguousarray(arr.astype(to_numpy(elem), copy=False))
    bits = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))  # raw bits: the type says how to read them
    return ir.DenseElementsAttr.get(bits, type=ttype.element_type, shape=shape)


def freeze_arguments(module: ir.Module, values: Mapping[int, np.ndarray]) -> None:
    """Replace ``@main``'s arguments ``values`` names (by index) with ``stablehlo.constant`` ops holding those
    arrays, and drop them from its signature and argument attributes. The backends then see them as weights."""
    if not values:
        return
    main = entry_function(module)
    block = main.regions[0].blocks[0]
    ftype = ir.FunctionType(ir.TypeAttr(main.attributes["function_type"]).value)
    inputs = list(ftype.inputs)
    bad = sorted(i for i in values if not 0 <= i < len(inputs))
    if bad:
        raise FrontendError(f"@main has {len(inputs)} arguments; cannot freeze argument(s) {bad}")
    arg_attrs = list(main.attributes["arg_attrs"]) if "arg_attrs" in main.attributes else None
    with module.context:
        first = block.operations[0] if len(block.operations) else None
        for i in sorted(values):
            arg = block.arguments[i]
            ttype = ir.RankedTensorType(arg.type)
            attr = dense_attr(values[i], ttype)
            with ir.InsertionPoint(first) if first is not None else ir.InsertionPoint(block), arg.location:
                const = ir.Operation.create("stablehlo.constant", results=[ttype], attributes={"value": attr})
            arg.replace_all_uses_with(const.results[0])
        for i in sorted(values, reverse=True):
            block.erase_argument(i)
        keep = [i for i in range(len(inputs)) if i not in values]
        main.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get([inputs[i] for i in keep], list(ftype.results)))
        if arg_attrs is not None:
            main.attributes["arg_attrs"] = ir.ArrayAttr.get([arg_attrs[i] for i in keep])


def shapes_by_input(shapes, names: Sequence, where: str) -> list:
    """``input_shapes`` as the user gave them (one per input in order, or a dict by input name) as one entry per
    input, in order (None where the dict leaves an input out); a name that is not an input, or a list of the wrong
    length, is a :class:`FrontendError` listing the inputs."""
    listed = ", ".join(str(n) for n in names) or "unnamed"
    if isinstance(shapes, Mapping):
        unknown = [k for k in shapes if k not in names]
        if unknown:
            raise FrontendError(f"{where}: --input-shape names {', '.join(map(repr, unknown))}, which are not "
                                f"inputs; the inputs: {listed}")
        return [shapes.get(n) for n in names]
    shapes = list(shapes)
    if len(shapes) != len(names):
        raise FrontendError(f"{where}: --input-shape gives {len(shapes)} shape(s), it takes {len(names)} input(s): "
                            f"{listed} (name them: name=1x16)")
    return shapes


def drop_io_attributes(func, drop: Callable[[str], bool]) -> None:
    """Remove from a ``func.func``'s argument and result attributes every entry whose name ``drop`` accepts (a
    producer's annotations: ``jax.result_info``, ``tf_saved_model.index_path``, ...)."""
    for key in ("arg_attrs", "res_attrs"):
        if key not in func.attributes:
            continue
        kept = []
        for d in func.attributes[key]:
            d = ir.DictAttr(d)
            kept.append(ir.DictAttr.get({d[j].name: d[j].attr for j in range(len(d)) if not drop(d[j].name)}))
        func.attributes[key] = ir.ArrayAttr.get(kept)
