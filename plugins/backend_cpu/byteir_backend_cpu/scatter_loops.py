"""``stablehlo.scatter`` as an SCF loop on tensors, for scatters inside control flow (a loop body updating one
row per iteration: JAX's ``x.at[i].set(v)`` in a ``fori_loop``, TF's ``tensor_scatter_nd_update`` in a
``while_loop``).

A scatter at the top level of a cluster goes to the vectorized NumPy kernel of ``cpu_host`` (higher priority);
one nested in a ``while``/``if``/``case`` region can only run in generated code, so the cpu backend rewrites it
before Linalg lowering into

    scf.for %k = 0 to size(updates) iter_args(%acc = %input) {
      update index u = unflatten(%k); start index from tensor.extract of the indices; result index r
      %v = select(r inside the input, combine(%acc[r'], %updates[u]), %acc[r'])   (r' = r clamped into the input)
      tensor.insert %v into %acc[r']
    }

which applies the updates one by one in row-major order of the updates, exactly as ``hostops.run_scatter``
and the reference interpreter do (out-of-bounds update elements skipped). The update computation is one of
those :func:`hostops.scatter_plan` recognizes, as one ``arith`` op per element type.
"""

from __future__ import annotations

from byteir_core.mlir import ir

from .hostops import FLOATS, scatter_plan


def _collect(op, out: list) -> None:
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                inner = inner.operation
                _collect(inner, out)
                if inner.name == "stablehlo.scatter":
                    out.append(inner)


def _combine(combiner: str, elem: str, cur, upd):
    from torch_mlir.dialects import arith

    if combiner == "replace":
        return upd
    if elem in FLOATS:
        op = {"add": arith.AddFOp, "multiply": arith.MulFOp, "maximum": arith.MaximumFOp,
              "minimum": arith.MinimumFOp}[combiner]
    elif elem == "i1":  # booleans: add is or, multiply is and, max is or, min is and
        op = {"add": arith.OrIOp, "multiply": arith.AndIOp, "maximum": arith.OrIOp, "minimum": arith.AndIOp,
              "and": arith.AndIOp, "or": arith.OrIOp, "xor": arith.XOrIOp}[combiner]
    else:
        op = {"add": arith.AddIOp, "multiply": arith.MulIOp, "maximum": arith.MaxSIOp, "minimum": arith.MinSIOp,
              "and": arith.AndIOp, "or": arith.OrIOp, "xor": arith.XOrIOp}[combiner]
    return op(cur, upd).result


def _rewrite(op, plan: dict) -> None:
    from torch_mlir.dialects import arith, scf, tensor

    x, indices, updates = op.operands
    xt, it, ut = (ir.RankedTensorType(v.type) for v in (x, indices, updates))
    in_shape, idx_shape, upd_shape = list(xt.shape), list(it.shape), list(ut.shape)
    elem = str(xt.element_type)
    index = ir.IndexType.get()

    def const(v):
        return arith.ConstantOp(index, v).result

    with op.location, ir.InsertionPoint(op):
        total = 1
        for n in upd_shape:
            total *= n
        # The loop updates a fresh copy of the input: updating the input's own buffer in place conflicts, inside a
        # while body, with the copy-back that makes the body's results equivalent to its arguments
        # (control_flow.py), and one-shot bufferization gives up ("cannot avoid RaW conflict").
        from torch_mlir.dialects import bufferization

        init = bufferization.AllocTensorOp(xt, [], copy=x).result
        loop = scf.ForOp(const(0), const(total), const(1), [init])
    with op.location, ir.InsertionPoint(loop.body):
        acc = loop.inner_iter_args[0]
        # Update index: unflatten the induction variable (row-major).
        rest = loop.induction_variable
        u = [None] * len(upd_shape)
        for d in reversed(range(len(upd_shape))):
            n = const(upd_shape[d])
            u[d] = arith.RemUIOp(rest, n).result
            rest = arith.DivUIOp(rest, n).result
        uwd = plan["update_window_dims"]
        scatter_index = [u[d] for d in range(len(upd_shape)) if d not in uwd]
        ivd = plan["index_vector_dim"]
        full = [const(0) for _ in in_shape]

        def start(k):
            pos = list(scatter_index)
            if ivd < len(idx_shape):
                pos.insert(ivd, const(k))
            v = tensor.ExtractOp(indices, pos).result
            return arith.IndexCastOp(index, v).result

        for k, d in enumerate(plan["scatter_dims_to_operand_dims"]):
            full[d] = arith.AddIOp(full[d], start(k)).result
        for din, dstart in zip(plan["input_batching_dims"], plan["scatter_indices_batching_dims"]):
            full[din] = arith.AddIOp(full[din], scatter_index[dstart if dstart < ivd else dstart - 1]).result
        skipped = set(plan["inserted_window_dims"]) | set(plan["input_batching_dims"])
        window_dims = [d for d in range(len(in_shape)) if d not in skipped]
        for j, d in enumerate(window_dims):
            full[d] = arith.AddIOp(full[d], u[uwd[j]]).result
        inside = arith.ConstantOp(ir.IntegerType.get_signless(1), 1).result
        at = []
        for d, n in enumerate(in_shape):
            ge0 = arith.CmpIOp(arith.CmpIPredicate.sge, full[d], const(0)).result
            lt = arith.CmpIOp(arith.CmpIPredicate.slt, full[d], const(n)).result
            inside = arith.AndIOp(inside, arith.AndIOp(ge0, lt).result).result
            at.append(arith.MinSIOp(arith.MaxSIOp(full[d], const(0)).result, const(max(n - 1, 0))).result)
        # An update element outside the input is skipped: it rewrites, at a clamped in-bounds position, the value
        # already there (no branch, so the loop's tensor stays in place through bufferization).
        cur = tensor.ExtractOp(acc, at).result
        upd = tensor.ExtractOp(updates, u).result
        value = arith.SelectOp(inside, _combine(plan["combiner"], elem, cur, upd), cur).result
        scf.YieldOp([tensor.InsertOp(value, acc, at).result])
    op.results[0].replace_all_uses_with(loop.results[0])
    op.erase()


def scatters_to_loops(module) -> int:
    """Rewrite every recognized ``stablehlo.scatter`` in ``module`` (in place); returns how many."""
    found: list = []
    _collect(module.operation, found)
    n = 0
    with module.context:
        for op in found:
            plan = scatter_plan(op)
            if plan is None:
                raise ValueError("cpu backend: a scatter it does not recognize reached code generation")
            _rewrite(op, plan)
            n += 1
    return n
