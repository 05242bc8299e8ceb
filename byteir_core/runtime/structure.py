"""The model's own output structure, carried in the artifact (``byre.structure``) and rebuilt by ``Session``.

A frontend that knows what the model returned (a tensor, a tuple, a dict, a dataclass such as transformers'
``ModelOutput``) describes it as a JSON tree over the entry function's flat results and attaches it to the
StableHLO module as the string attribute ``byteir.structure`` (``{"outputs": TREE}``); the driver carries it into
the artifact. Trees:

``{"leaf": i}``                          the i-th flat output
``{"tuple": [T, ...]}``                  a tuple (``{"list": [...]}`` a list)
``{"dict": [[key, T], ...]}``            a dict, keys in the model's order
``{"object": "mod:Qual", "fields": [[key, T], ...]}``
                                         a dataclass/ModelOutput/namedtuple built with keyword arguments; a plain
                                         dict when that class cannot be imported where the artifact runs
``{"none": true}`` / ``{"const": v}``    a ``None`` or a Python scalar the model returned as is

Flat outputs no leaf names (a train-mode model's buffer updates) are left out of the structured result; they
are still in :meth:`Session.run`'s flat list, by name.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Sequence

from ..errors import ByreFormatError

_KINDS = ("leaf", "tuple", "list", "dict", "object", "none", "const")


def validate(tree: Any, n_outputs: int, where: str) -> None:
    """Raise :class:`ByreFormatError` unless ``tree`` is well formed over ``n_outputs`` flat outputs."""
    def bad(why: str):
        raise ByreFormatError(where, f"byre.structure: {why}")

    def walk(t):
        if not isinstance(t, dict) or len(t) < 1 or not any(k in t for k in _KINDS):
            bad(f"not a tree node: {str(t)[:80]}")
        if "leaf" in t:
            i = t["leaf"]
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_outputs:
                bad(f"leaf {i!r} is not an output index below {n_outputs}")
        elif "tuple" in t or "list" in t:
            items = t.get("tuple", t.get("list"))
            if not isinstance(items, list):
                bad("tuple/list items are not a list")
            for x in items:
                walk(x)
        elif "dict" in t or "object" in t:
            pairs = t.get("dict", t.get("fields"))
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                bad("dict/object entries are not [key, tree] pairs")
            for _, x in pairs:
                walk(x)

    walk(tree)


def _class_of(qualname: str):
    mod, _, name = qualname.partition(":")
    try:
        obj = sys.modules.get(mod) or importlib.import_module(mod)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:  # noqa: BLE001 -- not importable here: the caller gets a dict
        return None


def rebuild(tree: dict, flat: Sequence[Any]) -> Any:
    """The model's structure with ``flat``'s values in its leaves."""
    if "leaf" in tree:
        return flat[tree["leaf"]]
    if "tuple" in tree:
        return tuple(rebuild(t, flat) for t in tree["tuple"])
    if "list" in tree:
        return [rebuild(t, flat) for t in tree["list"]]
    if "dict" in tree:
        return {k: rebuild(t, flat) for k, t in tree["dict"]}
    if "object" in tree:
        fields = {k: rebuild(t, flat) for k, t in tree["fields"]}
        cls = _class_of(tree["object"])
        if cls is not None:
            try:
                return cls(**fields)
            except Exception:  # noqa: BLE001 -- a class whose constructor changed: keep the values
                pass
        return fields
    if "none" in tree:
        return None
    return tree.get("const")


def leaves(tree: dict) -> list[int]:
    """The flat output indices the tree uses, in order."""
    if "leaf" in tree:
        return [tree["leaf"]]
    kids = tree.get("tuple") or tree.get("list") or [t for _, t in tree.get("dict") or tree.get("fields") or []]
    return [i for t in kids for i in leaves(t)]
