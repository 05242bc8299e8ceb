"""Child process: a SavedModel signature -> StableHLO bytecode, with TensorFlow's converter
(``savedmodel_to_stablehlo``). It runs apart from the compiling process because the converter ends the process
(an LLVM fatal error) on some SavedModels, which no ``try`` can catch.

``python -m byteir_frontend_tf._convert DIR SIGNATURE TAGS``, then one request per line on stdin: the input
shapes in the converter's syntax (``1,16:?,3``; an empty line for the SavedModel's own). Each answer on stdout is
a status byte (``0`` ok, ``1`` failed), an 8-byte little-endian length, then the bytecode or the reason (UTF-8).
A SavedModel that cannot be opened at all is one line on stderr and exit 2.
"""

from __future__ import annotations

import os
import sys


def _meta_graph(path: str, tags: list[str]):
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            sm.ParseFromString(f.read())
    else:
        from google.protobuf import text_format

        with open(os.path.join(path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), sm)
    for mg in sm.meta_graphs:
        if sorted(mg.meta_info_def.tags) == sorted(tags):
            return mg, sm
    return None, sm


def _answer(ok: bool, payload: bytes) -> None:
    out = sys.stdout.buffer
    out.write(b"0" if ok else b"1")
    out.write(len(payload).to_bytes(8, "little"))
    out.write(payload)
    out.flush()


def main(argv: list[str]) -> int:
    path, signature, tags = argv
    tag_list = [t for t in tags.split(",") if t]
    try:
        mg, sm = _meta_graph(path, tag_list)
    except Exception as e:  # noqa: BLE001 -- a damaged saved_model.pb
        print(f"{path}: cannot read saved_model.pb ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    if mg is None:
        have = "; ".join(",".join(sorted(m.meta_info_def.tags)) or "(none)" for m in sm.meta_graphs)
        print(f"{path}: no meta graph with tags {tags!r}; it has: {have or 'none'} (--option tags=...)",
              file=sys.stderr)
        return 2
    if signature not in mg.signature_def:
        print(f"{path}: no signature {signature!r}; it has: {', '.join(sorted(mg.signature_def)) or 'none'} "
              f"(--option signature=...)", file=sys.stderr)
        return 2
    from tensorflow.compiler.mlir.tensorflow_to_stablehlo.python import pywrap_tensorflow_to_stablehlo as conv

    for line in sys.stdin:
        shapes = line.strip()
        try:
            data = conv.savedmodel_to_stablehlo(path, [signature], tag_list, shapes)
        except Exception as e:  # noqa: BLE001 -- the converter raises plain errors with MLIR diagnostics in them
            text = " ".join(str(e).split())
            _answer(False, f"{path}: TensorFlow's SavedModel converter failed: {text[:2000]}".encode())
            continue
        _answer(True, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
