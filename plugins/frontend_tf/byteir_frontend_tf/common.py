"""What both TensorFlow paths do to the module they get: TensorFlow leftovers out, names and output tree in."""

from __future__ import annotations

import json
import re

from byteir_core.compiler.importing import drop_io_attributes
from byteir_core.errors import FrontendError
from byteir_core.mlir import ir, location_text, walk_ops

#: ops TensorFlow's exporters leave in StableHLO that mean nothing here: ``mhlo.copy`` (a copy XLA's buffer
#: assignment may want; a value in StableHLO) becomes its operand
_IDENTITIES = ("mhlo.copy",)
#: dialects whose attributes TensorFlow leaves on the module and @main (saved-model paths, versions, XLA hints)
_FOREIGN_ATTR_PREFIXES = ("tf.", "tf_saved_model.", "mhlo.", "jax.")
_OURS = ("stablehlo.", "chlo.", "func.")


def finish_module(module, what: str, in_names: list, out_names: list, tree, shape_hint: str = "") -> None:
    _drop_identities(module)
    _check_ops(module, what, shape_hint)
    _drop_foreign_attributes(module)
    from byteir_core.compiler.driver import n_results, set_io_names

    set_io_names(module, in_names, out_names)
    if tree is not None and len(out_names) == n_results(module):
        with module.context:
            module.operation.attributes["byteir.structure"] = ir.StringAttr.get(json.dumps({"outputs": tree}))


def _drop_identities(module) -> None:
    for op in list(walk_ops(module.operation)):
        if op.name in _IDENTITIES and len(op.operands) == 1 and len(op.results) == 1:
            op.results[0].replace_all_uses_with(op.operands[0])
            op.erase()


def _check_ops(module, what: str, shape_hint: str = "") -> None:
    """Every op left must be StableHLO (or CHLO/func): a TensorFlow op the converter kept is named here."""
    left: dict[str, list[str]] = {}
    for op in walk_ops(module.operation):
        name = op.name
        if name == "builtin.module" or name.startswith(_OURS):
            continue
        left.setdefault(name, []).append(_short_location(op.location))
    if not left:
        return
    listed = "\n".join(f"  - {name} x{len(locs)} at {locs[0]}" for name, locs in sorted(left.items()))
    dynamic = any(n.startswith(("tf.", "shape.")) for n in left)
    hint = ("\n  a dynamic dimension (the batch, most often) keeps TensorFlow ops in the program: pin it with "
            f"--input-shape {shape_hint or 'name=1x...'} with your sizes (input_shapes= in Python)") if dynamic else ""
    raise FrontendError(f"{what}: TensorFlow left ops that are not StableHLO:\n{listed}{hint}")


def _short_location(loc) -> str:
    """TensorFlow's locations nest call sites; the first TF node name in one is what the user recognises."""
    text = location_text(loc)
    names = [n.split("@", 1)[0] for n in re.findall(r'"([^"]+)"', text) if not n.endswith(":")]
    return f"TF node {names[0]!r}" if names else text[:160]


def _drop_foreign_attributes(module) -> None:
    from byteir_core.compiler.driver import entry_function

    main = entry_function(module)
    with module.context:
        for holder in (module.operation, main):
            for a in [a if isinstance(a, str) else a.name for a in holder.attributes]:
                if a.startswith(_FOREIGN_ATTR_PREFIXES):
                    del holder.attributes[a]
        drop_io_attributes(main, lambda name: name.startswith(_FOREIGN_ATTR_PREFIXES))


def structure_of(outputs, tf) -> tuple[dict | None, list]:
    """(the output tree over the flat results, in ``tf.nest.flatten`` order, and a name per result)."""
    names: list = []

    def tree(x, path: str):
        if isinstance(x, (tf.Tensor, tf.Variable)) or hasattr(x, "shape") and hasattr(x, "dtype"):
            names.append(path or None)
            return {"leaf": len(names) - 1}
        if isinstance(x, dict):
            return {"dict": [[str(k), tree(x[k], f"{path}.{k}" if path else str(k))] for k in sorted(x)]}
        if isinstance(x, (list, tuple)):
            kind = "list" if isinstance(x, list) else "tuple"
            return {kind: [tree(v, f"{path}.{i}" if path else f"output_{i}") for i, v in enumerate(x)]}
        if x is None:
            return {"none": True}
        if isinstance(x, (bool, int, float, str)):
            return {"const": x}
        raise FrontendError(f"the function returns a {type(x).__name__}, which byteir cannot describe")

    t = tree(outputs, "")
    return t, names
