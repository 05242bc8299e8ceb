"""StableHLO control flow (``while``, ``if``, ``case``) rewritten to SCF on tensors, before Linalg lowering.

``stablehlo-legalize-to-linalg`` in this build has no pattern for the control-flow ops and no StableHLO pass
turns them into SCF, so the cpu backend does it itself on its copy of the cluster module, just before code
generation. The region bodies are moved (not copied) into the new SCF ops; the StableHLO ops inside them are
then lowered by the usual pipeline, and one-shot bufferization handles ``scf.while``/``scf.if``/
``scf.index_switch`` on tensors.

- ``stablehlo.while(inits) cond {..} do {..}`` -> ``scf.while`` whose ``before`` region is the condition
  (its ``tensor<i1>`` result extracted to an ``i1`` for ``scf.condition``) and whose ``after`` region is the body.
- ``stablehlo.if(%p)`` -> ``scf.if`` on ``tensor.extract %p[]``.
- ``stablehlo.case(%i)`` with N branches -> ``scf.index_switch`` with cases 0..N-2 and branch N-1 as the default
  region, which is exactly StableHLO's rule that an index outside [0, N) runs the last branch.
"""

from __future__ import annotations

from byteir_core.mlir import ir

CONTROL_FLOW = ("stablehlo.while", "stablehlo.if", "stablehlo.case")


def _post_order(op, out: list) -> None:
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                _post_order(inner.operation, out)
    if op.name in CONTROL_FLOW:
        out.append(op)


def _extract_scalar(value):
    from torch_mlir.dialects import tensor

    return tensor.ExtractOp(value, []).result


def _move_body(src_block, dst_block, terminate) -> None:
    """Move every op of ``src_block`` except its ``stablehlo.return`` to the end of ``dst_block`` (which must be
    empty), replacing ``src_block``'s arguments by ``dst_block``'s; then ``terminate(return_operands)`` builds
    the new terminator at the end of ``dst_block``."""
    for old, new in zip(src_block.arguments, dst_block.arguments):
        old.replace_all_uses_with(new)
    ops = [o.operation for o in src_block.operations]
    ret = ops[-1]
    if ret.name != "stablehlo.return":
        raise ValueError(f"expected stablehlo.return at the end of a region, found {ret.name}")
    anchor = None
    for o in ops[:-1]:
        if anchor is None:
            _append(o, dst_block)
        else:
            o.move_after(anchor)
        anchor = o
    with ir.InsertionPoint(dst_block), ret.location:
        terminate(list(ret.operands))
    ret.erase()


def _append(op, block) -> None:
    """Move ``op`` to the end of ``block`` (which may be empty)."""
    ops = list(block.operations)
    if ops:
        op.move_after(ops[-1].operation)
        return
    # An empty block gives no anchor: put a placeholder op in, move before it, drop it.
    with ir.InsertionPoint(block), op.location:
        placeholder = ir.Operation.create("byteir.placeholder")
    op.move_before(placeholder)
    placeholder.erase()


def _rewrite_while(op) -> None:
    from torch_mlir.dialects import scf

    types = [r.type for r in op.results]
    with ir.InsertionPoint(op), op.location:
        w = scf.WhileOp(types, list(op.operands))
        before = w.before.blocks.append(*types)
        after = w.after.blocks.append(*types)
    cond_block, body_block = op.regions[0].blocks[0], op.regions[1].blocks[0]

    def condition(operands):
        scf.ConditionOp(_extract_scalar(operands[0]), list(before.arguments))

    _move_body(cond_block, before, condition)
    def yield_in_place(operands):
        # One-shot bufferization (as codegen runs it) requires every yielded tensor to be equivalent to its
        # iteration argument; writing each into its argument's buffer makes it so (copying where needed).
        from torch_mlir.dialects import bufferization

        scf.YieldOp([v if _updates_in_place(v, arg) else bufferization.MaterializeInDestinationOp(v.type, v, arg).result
                     for v, arg in zip(operands, after.arguments)])

    _move_body(body_block, after, yield_in_place)
    _replace(op, w)


def _updates_in_place(value, arg) -> bool:
    """True (after rewiring) when ``value`` is a scatter loop (scatter_loops.py) over a copy of ``arg`` that
    nothing else reads: the loop then updates ``arg``'s own buffer, which makes ``value`` equivalent to ``arg``
    without a copy in and a copy back per iteration. (With the copy-back, one-shot bufferization cannot run such
    a loop in place: "cannot avoid RaW conflict".)"""
    loop = value.owner
    if not isinstance(loop, (ir.Operation, ir.OpView)) or loop.operation.name != "scf.for":
        return False
    loop = loop.operation
    j = ir.OpResult(value).result_number
    init = loop.operands[3 + j]
    alloc = init.owner
    if not isinstance(alloc, (ir.Operation, ir.OpView)) or alloc.operation.name != "bufferization.alloc_tensor":
        return False
    alloc = alloc.operation
    if list(alloc.operands) != [arg] or len(list(arg.uses)) != 1 or len(list(init.uses)) != 1:
        return False
    loop.operands[3 + j] = arg
    alloc.erase()
    return True


def _rewrite_if(op) -> None:
    from torch_mlir.dialects import scf

    types = [r.type for r in op.results]
    with ir.InsertionPoint(op), op.location:
        new = scf.IfOp(_extract_scalar(op.operands[0]), types, has_else=True)
    _move_body(op.regions[0].blocks[0], new.then_block, lambda operands: scf.YieldOp(operands))
    _move_body(op.regions[1].blocks[0], new.else_block, lambda operands: scf.YieldOp(operands))
    _replace(op, new)


def _rewrite_case(op) -> None:
    from torch_mlir.dialects import arith, scf

    types = [r.type for r in op.results]
    n = len(op.regions)
    with ir.InsertionPoint(op), op.location:
        index = arith.IndexCastOp(ir.IndexType.get(), _extract_scalar(op.operands[0])).result
        new = scf.IndexSwitchOp(types, index, list(range(n - 1)))
    for i in range(n - 1):
        _move_body(op.regions[i].blocks[0], new.case_block(i), lambda operands: scf.YieldOp(operands))
    _move_body(op.regions[n - 1].blocks[0], new.default_block, lambda operands: scf.YieldOp(operands))
    _replace(op, new)


def _replace(old, new) -> None:
    for a, b in zip(old.results, new.results):
        a.replace_all_uses_with(b)
    old.erase()


_REWRITES = {"stablehlo.while": _rewrite_while, "stablehlo.if": _rewrite_if, "stablehlo.case": _rewrite_case}


def has_control_flow(module) -> bool:
    found: list = []
    for op in module.body.operations:
        _post_order(op.operation, found)
    return bool(found)


def control_flow_to_scf(module) -> int:
    """Rewrite every ``stablehlo.while/if/case`` in ``module`` (in place), innermost first; returns how many."""
    found: list = []
    for op in module.body.operations:
        _post_order(op.operation, found)
    with module.context:
        for op in found:
            _REWRITES[op.name](op)
    return len(found)
