"""Copy a list of ops into a standalone module ``@main(inputs) -> outputs`` (tensor semantics)."""

from __future__ import annotations

from typing import Sequence

from torch_mlir.dialects import func as func_d

from ..mlir import ir


def walk_nested(op, fn) -> None:
    """Call ``fn`` on every op nested in ``op``'s regions (not on ``op`` itself)."""
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                fn(inner.operation)
                walk_nested(inner.operation, fn)


def used_values(op) -> list:
    """Operands of ``op`` plus values its regions capture from outside ``op`` (e.g. ``stablehlo.if``)."""
    inside: set = set()
    captured: list = []

    def note_defs(o):
        for r in o.results:
            inside.add(r)
        for region in o.regions:
            for block in region.blocks:
                for a in block.arguments:
                    inside.add(a)

    note_defs(op)
    walk_nested(op, note_defs)

    def note_uses(o):
        for v in o.operands:
            if v not in inside and v not in captured:
                captured.append(v)

    walk_nested(op, note_uses)
    direct = list(op.operands)
    return direct + [v for v in captured if v not in direct]


def outline(ops: Sequence, inputs: Sequence, outputs: Sequence, context) -> ir.Module:
    """A new module in ``context`` whose ``@main`` takes ``inputs`` and returns ``outputs``.

    ``ops`` are top-level ops in program order; every value they use must be in ``inputs`` or defined by
    an earlier op of ``ops``.
    """
    with context, ir.Location.unknown():
        module = ir.Module.create()
        with ir.InsertionPoint(module.body):
            fn = func_d.FuncOp("main", ([v.type for v in inputs], [v.type for v in outputs]))
            entry = fn.add_entry_block()
        mapping = {old: new for old, new in zip(inputs, entry.arguments)}

        def remap(o):
            for i, v in enumerate(o.operands):
                if v in mapping:
                    o.operands[i] = mapping[v]

        with ir.InsertionPoint(entry):
            for op in ops:
                new = op.clone().operation
                remap(new)
                walk_nested(new, remap)
                for old, nv in zip(op.results, new.results):
                    mapping[old] = nv
            func_d.ReturnOp([mapping[v] for v in outputs])
    return module
