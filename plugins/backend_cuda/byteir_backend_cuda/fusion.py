"""A cluster of the ``cuda`` target becomes one :class:`~byteir_backend_cuda.program.Program`.

1. Ops are grouped in program order: library ops (``dot_general`` -> GEMM launch, ``byteir.flash_attn_*`` ->
   attention kernels) stand alone; everything between them is fused greedily, a new group starting where a
   reduction of another (rows, columns) split begins.
2. Each group is written as one Triton kernel (codegen.py). Where a group cannot be one kernel the emitter names
   the op, the group is split before it and written again.
3. Values crossing groups live in buffers: the cluster's outputs, else scratch placed by liveness in one scratch
   area; non-splat constants travel in the payload.
"""

from __future__ import annotations

import math
import re

import numpy as np

from byteir_core.dtypes import TensorSpec
from byteir_core.mlir import ir

from .codegen import CannotFuse, Group, KernelEmitter, elem_type, owner_op, reducer_of, shape_of
from .gemm import dot_attrs
from .program import BufferDecl, Launch, Program, TritonKernel, b64

SCRATCH_ALIGN = 256
ATTENTION_CALLS = ("byteir.flash_attn_fwd", "byteir.flash_attn_bwd")


def custom_call_target(op) -> str | None:
    if op.name != "stablehlo.custom_call":
        return None
    return ir.StringAttr(op.attributes["call_target_name"]).value


def is_library(op) -> bool:
    return op.name in ("stablehlo.dot_general", "stablehlo.convolution", "stablehlo.scatter") or \
        custom_call_target(op) in ATTENTION_CALLS


def conv_args(op) -> dict:
    """``conv.conv_program``'s keyword arguments for a ``stablehlo.convolution``."""
    from byteir_core.mlir import stablehlo_api

    from .codegen import _attr_ints

    d = stablehlo_api.ConvDimensionNumbers(op.attributes["dimension_numbers"])
    n = len(d.input_spatial_dimensions)

    def ints(name, default):
        return _attr_ints(op, name) if name in op.attributes else default
    pad = [int(x) for x in np.asarray(ir.DenseIntElementsAttr(op.attributes["padding"])).reshape(-1)] \
        if "padding" in op.attributes else [0] * (2 * n)
    reversal = [bool(x) for x in ir.DenseBoolArrayAttr(op.attributes["window_reversal"])] \
        if "window_reversal" in op.attributes else None
    return {"input_dims": [d.input_batch_dimension, d.input_feature_dimension, *d.input_spatial_dimensions],
            "kernel_dims": [d.kernel_output_feature_dimension, d.kernel_input_feature_dimension,
                            *d.kernel_spatial_dimensions],
            "output_dims": [d.output_batch_dimension, d.output_feature_dimension, *d.output_spatial_dimensions],
            "strides": ints("window_strides", [1] * n), "padding": list(zip(pad[0::2], pad[1::2])),
            "rhs_dilation": ints("rhs_dilation", [1] * n), "lhs_dilation": ints("lhs_dilation", [1] * n),
            "feature_group_count": int(ir.IntegerAttr(op.attributes["feature_group_count"]).value),
            "batch_group_count": int(ir.IntegerAttr(op.attributes["batch_group_count"]).value),
            "window_reversal": reversal}


def value_spec(v) -> tuple[list[int], str]:
    return list(shape_of(v)), elem_type(v)


def attention_operands(op) -> dict:
    """The operands of a ``byteir.flash_attn_fwd/bwd`` call by role (``mask`` None when absent), its
    ``inputs`` in the order the attention programs take them, and its ``scale`` and ``causal``."""
    from byteir_core.builtins.custom_calls import attrs_of

    attrs = attrs_of(op)
    present = list(attrs["operand_present"])
    operands = list(op.operands)
    if custom_call_target(op) == "byteir.flash_attn_fwd":
        q, k, v = operands[:3]
        mask = operands[3] if len(present) > 3 and present[3] else None
        roles = {"q": q, "k": k, "v": v, "mask": mask, "inputs": [q, k, v] + ([mask] if mask is not None else [])}
    else:
        dout, q, k, v = operands[:4]
        mask = operands[4] if len(present) > 4 and present[4] else None
        out, lse = operands[-2:]
        roles = {"dout": dout, "q": q, "k": k, "v": v, "mask": mask, "out": out, "lse": lse,
                 "inputs": [dout, q, k, v] + ([mask] if mask is not None else []) + [out, lse]}
    return {**roles, "scale": attrs["scale"], "causal": attrs["causal"]}


def _reduce_split(op) -> tuple[int, int]:
    from .codegen import _attr_ints

    shape = shape_of(op.operands[0])
    dims = _attr_ints(op, "dimensions")
    return (math.prod(s for k, s in enumerate(shape) if k not in dims), math.prod(shape[k] for k in dims))


def _splat_value(attr):
    """A splat constant's value as a Python number (bf16 included, which NumPy cannot view)."""
    v = attr.get_splat_value()
    if isinstance(v, ir.FloatAttr):
        return ir.FloatAttr(v).value
    iv = ir.IntegerAttr(v)
    return bool(iv.value) if str(iv.type) == "i1" else iv.value


_NUMBER = re.compile(r"0x[0-9A-Fa-f]+|[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)")


def dense_to_numpy(attr, spec: TensorSpec) -> np.ndarray:
    """A dense constant's values (NumPy reads most element types from the attribute's buffer; bf16 it cannot, so
    those come from the printed form: hex bytes, or decimals that round-trip)."""
    if spec.dtype != "bf16":
        return np.asarray(attr)
    text = str(attr)
    if text.startswith('dense<"0x'):
        raw = bytes.fromhex(text[len('dense<"0x'):text.index('"', len('dense<"0x'))])
        return np.frombuffer(raw, dtype=spec.np_dtype).reshape(spec.shape if len(raw) > 2 else ())
    body = text[len("dense<"):text.rindex(">", 0, text.index(" : "))]
    bits = [int(t, 16) if t.startswith("0x") else
            int(np.array([float(t)], np.float32).astype(spec.np_dtype).view(np.uint16)[0])
            for t in _NUMBER.findall(body)]  # special values print as their bits
    values = np.array(bits, np.uint16).view(spec.np_dtype)
    return values.reshape(spec.shape) if values.size > 1 else values.reshape(())


def initial_groups(ops) -> list:
    """Library ops alone, the rest in maximal runs (a reduction of another split starts a new run)."""
    steps, cur, split = [], [], None
    for op in ops:
        if op.name == "stablehlo.constant":
            continue
        if is_library(op):
            if cur:
                steps.append(("fused", cur))
            steps.append(("library", [op]))
            cur, split = [], None
            continue
        if op.name == "stablehlo.reduce":
            s = _reduce_split(op)
            if split is not None and s != split and cur:
                steps.append(("fused", cur))
                cur = []
            split = s
        cur.append(op)
    if cur:
        steps.append(("fused", cur))
    return steps


class ProgramBuilder:
    def __init__(self, cluster):
        module = cluster.module
        main = next(op.operation for op in module.body.operations if op.operation.name == "func.func"
                    and ir.StringAttr(op.operation.attributes["sym_name"]).value == "main")
        block = main.regions[0].blocks[0]
        body = [op.operation for op in block.operations]
        self.ret = body[-1]
        self.ops = body[:-1]
        self.buffers: list[BufferDecl] = []
        self.value_buf: dict = {}
        self.splats: dict = {}
        for i, a in enumerate(block.arguments):
            self.value_buf[a] = self._add(BufferDecl("input", list(shape_of(a)), elem_type(a), index=i))
        self.outputs = list(self.ret.operands)
        for j, v in enumerate(self.outputs):
            if v not in self.value_buf:
                self.value_buf[v] = self._add(BufferDecl("output", list(shape_of(v)), elem_type(v), index=j))
        for op in self.ops:
            if op.name == "stablehlo.constant":
                attr = ir.DenseElementsAttr(op.attributes["value"])
                if attr.is_splat:
                    self.splats[op.results[0]] = _splat_value(attr)
        self.by_source: dict = {}  # kernel identity -> index in the program's kernels

    def _add(self, decl: BufferDecl) -> int:
        self.buffers.append(decl)
        return len(self.buffers) - 1

    def buffer_of(self, v) -> int:
        """The buffer holding ``v`` (made on first use: a constant's bytes, or scratch for an intermediate)."""
        if v in self.value_buf:
            return self.value_buf[v]
        op = owner_op(v)
        if op is not None and op.name == "stablehlo.constant":
            spec = TensorSpec.from_type(v.type)
            arr = dense_to_numpy(ir.DenseElementsAttr(op.attributes["value"]), spec)
            data = np.broadcast_to(arr, spec.shape).astype(spec.np_dtype, copy=False)
            self.value_buf[v] = self._add(BufferDecl("constant", list(spec.shape), spec.dtype,
                                                     data=b64(np.ascontiguousarray(data).tobytes())))
        else:
            self.value_buf[v] = self._add(BufferDecl("scratch", list(shape_of(v)), elem_type(v)))
        return self.value_buf[v]

    # -- groups -------------------------------------------------------------------------------------------
    def _uses_outside(self, group_ops: set, v) -> bool:
        if v in self.outputs:
            return True
        return any(getattr(u.owner, "operation", u.owner) not in group_ops for u in v.uses)

    def _group(self, ops) -> Group:
        members = set(ops)
        g = Group(list(ops))
        for op in ops:
            for o in op.operands:
                src = owner_op(o)
                if (src is None or src not in members) and o not in self.splats:
                    g.loads[o] = None
            for r in op.results:
                if self._uses_outside(members, r):
                    g.stores.append((r, None))
        return g

    def _emit_group(self, name: str, ops):
        """(KernelSpec) for ``ops`` as one kernel; raises CannotFuse."""
        g = self._group(ops)
        g.loads = {v: self.buffer_of(v) for v in g.loads}
        g.stores = [(v, self.buffer_of(v)) for v, _ in g.stores]
        decls = [(tuple(b.shape), b.dtype) for b in self.buffers]
        return KernelEmitter(name, g, self.splats, decls).generate()

    def build(self) -> Program:
        steps = initial_groups(self.ops)
        launches: list[tuple[Launch, list[int]]] = []  # launch, buffers it touches
        kernels: list[TritonKernel] = []
        i = 0
        while i < len(steps):
            kind, ops = steps[i]
            if kind == "library":
                launches.extend(self._library(ops[0], kernels))
                i += 1
                continue
            try:
                spec = self._emit_group(f"fused_{len(kernels)}", ops)
            except CannotFuse as e:
                at = ops.index(e.op) if e.op in ops else 0
                if len(ops) == 1:
                    raise ValueError(f"{ops[0].name}: {e}") from None
                at = at or 1  # the first op cannot be split off before itself: make it its own kernel
                steps[i:i + 1] = [("fused", ops[:at]), ("fused", ops[at:])]
                continue
            i += 1
            if spec is None:  # nothing to compute (empty outputs)
                continue
            launches.append(self._triton_launch(spec, kernels))
        scratch = self._plan_scratch(launches)
        return Program(self.buffers, [launch for launch, _ in launches], kernels, scratch)

    def _library(self, op, kernels) -> list:
        if op.name == "stablehlo.dot_general":
            bufs = [self.buffer_of(o) for o in op.operands] + [self.buffer_of(op.results[0])]
            return [(Launch("gemm", args=[{"buf": b} for b in bufs], attrs=dot_attrs(op)), bufs)]
        if op.name == "stablehlo.convolution":
            from . import conv

            lhs, rhs = op.operands
            sub = conv.conv_program(value_spec(lhs), value_spec(rhs), value_spec(op.results[0]), **conv_args(op))
            return self._splice(sub, [lhs, rhs], list(op.results), kernels)
        if op.name == "stablehlo.scatter":
            return self._scatter(op, kernels)
        return self._attention(op, kernels)

    def _scatter(self, op, kernels) -> list:
        """Two kernels: the operand copied into the result, then the updates added (atomically) or stored."""
        operand, indices, updates = op.operands
        out = self.buffer_of(op.results[0])
        decls = lambda: [(tuple(b.shape), b.dtype) for b in self.buffers]  # noqa: E731
        copy = Group([op], stores=[(operand, out)])
        if operand not in self.splats:
            copy.loads[operand] = self.buffer_of(operand)
        spec = KernelEmitter(f"scatter_init_{len(kernels)}", copy, self.splats, decls())._pointwise_kernel()
        spec2_group = Group([op], loads={indices: self.buffer_of(indices), updates: self.buffer_of(updates)})
        spec2 = KernelEmitter(f"scatter_{len(kernels)}", spec2_group, self.splats, decls()).scatter_kernel(op, out)
        return [self._triton_launch(k, kernels) for k in (spec, spec2) if k is not None]

    def _attention(self, op, kernels) -> list:
        """The fused attention kernels of a ``byteir.flash_attn_fwd/bwd`` call."""
        from . import attention

        a = attention_operands(op)
        spec = lambda v: value_spec(v) if v is not None else None  # noqa: E731
        res = [value_spec(r) for r in op.results]
        if custom_call_target(op) == "byteir.flash_attn_fwd":
            sub = attention.fwd_program(spec(a["q"]), spec(a["k"]), spec(a["v"]), spec(a["mask"]), *res,
                                        scale=a["scale"], causal=a["causal"])
        else:
            sub = attention.bwd_program(spec(a["dout"]), spec(a["q"]), spec(a["k"]), spec(a["v"]), spec(a["mask"]),
                                        spec(a["out"]), spec(a["lse"]), *res, scale=a["scale"], causal=a["causal"])
        return self._splice(sub, a["inputs"], list(op.results), kernels)

    def _splice(self, sub: Program, ins: list, outs: list, kernels) -> list:
        """Splice a library op's own program into this one: its inputs/outputs are our buffers of ``ins`` and
        ``outs``, its scratch one region of ours, its kernels appended."""
        region = None
        remap = {}
        for j, b in enumerate(sub.buffers):
            if b.kind == "input":
                remap[j] = self.buffer_of(ins[b.index])
            elif b.kind == "output":
                remap[j] = self.buffer_of(outs[b.index])
            elif b.kind == "constant":
                remap[j] = self._add(b)
            else:
                if region is None:
                    region = self._add(BufferDecl("scratch", [max(sub.scratch_bytes, 1)], "ui8"))
                remap[j] = self._add(BufferDecl("scratch", b.shape, b.dtype, offset=b.offset))
                self.buffers[remap[j]].index = region  # placed relative to the region (see _plan_scratch)
        index = [self._kernel_index(k, kernels) for k in sub.kernels]
        out = []
        for launch in sub.launches:
            args = [{"buf": remap[a["buf"]]} if "buf" in a else a for a in launch.args]
            kernel = index[launch.kernel] if launch.kind == "triton" else launch.kernel
            touched = [a["buf"] for a in args if "buf" in a]
            if region is not None:
                touched.append(region)
            out.append((Launch(launch.kind, kernel=kernel, grid=launch.grid, args=args, attrs=launch.attrs),
                        touched))
        return out

    def _triton_launch(self, spec, kernels: list) -> tuple[Launch, list[int]]:
        """(launch, buffers it touches) of a written kernel, its kernel shared with an identical earlier one."""
        k = self._kernel_index(TritonKernel(spec.name, spec.source, dict(zip(
            [f"p{j}" for j in range(len(spec.params))], spec.param_types)), spec.constexprs,
            num_warps=spec.num_warps), kernels)
        return Launch("triton", kernel=k, grid=list(spec.grid), args=[{"buf": b} for b in spec.params]), \
            list(spec.params)

    def _kernel_index(self, kernel: TritonKernel, kernels: list) -> int:
        """Where ``kernel`` is in ``kernels``, appended if new: a transformer's layers share their kernels
        (compiled once, carried once)."""
        key = (kernel.source, kernel.name, kernel.num_warps, kernel.num_stages, repr(kernel.constexprs))
        k = self.by_source.get(key)
        if k is None:
            k = self.by_source[key] = len(kernels)
            kernels.append(kernel)
        return k

    def _plan_scratch(self, launches) -> int:
        """First-fit placement of scratch buffers by the launches that touch them (sub-program scratch moves
        with its region)."""
        first, last = {}, {}
        for i, (_, bufs) in enumerate(launches):
            for b in bufs:
                if self.buffers[b].kind == "scratch":
                    first.setdefault(b, i)
                    last[b] = i
        regions = [b for b, d in enumerate(self.buffers) if d.kind == "scratch" and d.index == -1]
        items = sorted((b for b in regions if b in first), key=lambda b: (first[b], -self._nbytes(b)))
        live: list[tuple[int, int, int]] = []
        total = 0
        for b in items:
            start = first.get(b, 0)
            live = [x for x in live if x[2] >= start]
            size = -(-max(self._nbytes(b), 1) // SCRATCH_ALIGN) * SCRATCH_ALIGN
            off = 0
            for o, s, _ in sorted(live):
                if off + size <= o:
                    break
                off = max(off, o + s)
            self.buffers[b].offset = off
            live.append((off, size, last.get(b, start)))
            total = max(total, off + size)
        for b, d in enumerate(self.buffers):  # sub-program scratch: relative to its region
            if d.kind == "scratch" and d.index != -1:
                d.offset += self.buffers[d.index].offset
                d.index = -1
        return total

    def _nbytes(self, b: int) -> int:
        d = self.buffers[b]
        return math.prod(d.shape) * TensorSpec(tuple(d.shape), d.dtype).np_dtype.itemsize


def build_program(cluster) -> Program:
    return ProgramBuilder(cluster).build()


__all__ = ["build_program", "initial_groups", "is_library", "reducer_of"]
