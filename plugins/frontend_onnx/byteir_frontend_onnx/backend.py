"""byteir as an ``onnx.backend``: ONNX's conformance machinery (and any code written against the interface)
runs models through byteir.

    import byteir_frontend_onnx.backend as backend
    rep = backend.prepare(model, device="CPU")       # compiles for --target cpu ("CUDA": --target cuda)
    outputs = rep.run([x])                           # or rep.run({"input": x}); outputs by index or by name

A model whose inputs have symbolic dimensions is compiled once per distinct set of input shapes, on first use
(the shapes are pinned by input name, like ``--input-shape``).

**Shape operands given as inputs.** A compiled artifact has static shapes, so an op whose *shape operand* (the
axes of a Reduce, the shape of a Reshape or Expand, the starts/ends of a Slice, the pads of a Pad, the sizes of
a Resize, ...; :data:`SHAPE_OPERANDS`) is a graph input rather than an initializer is compiled for the values
it is run with: those small integer inputs become constants and the model is compiled once per distinct set of
their values (as for shapes above). Exported models keep such operands as initializers, so this mostly
concerns hand-built graphs such as ONNX's own node tests.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

_TARGETS = {DeviceType.CPU: "cpu", DeviceType.CUDA: "cuda"}

#: (op_type -> input positions) that ONNX defines as shape operands: values a static compile must know.
SHAPE_OPERANDS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Squeeze": (1,),
    "Unsqueeze": (1,), "Split": (1,), "TopK": (1,), "Range": (0, 1, 2), "OneHot": (1,), "ConstantOfShape": (0,),
    "Resize": (1, 2, 3), "Upsample": (1,), "CumSum": (1,), "CumProd": (1,), "Trilu": (1,), "CenterCropPad": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    "NonMaxSuppression": (2, 3, 4), "Compress": (1,), "MelWeightMatrix": (0, 1, 2), "DFT": (1, 2), "STFT": (1, 2, 3),
    "BlackmanWindow": (0,), "HammingWindow": (0,), "HannWindow": (0,), "Col2Im": (1, 2), "MaxUnpool": (2,),
    "AffineGrid": (1,), "Loop": (0, 1), "If": (0,),
}
#: A shape operand input with more elements than this is not specialized (it is data, not a shape).
MAX_SPECIALIZED_ELEMENTS = 64


def device_of(target: str) -> str:
    return {"cpu": "CPU", "cuda": "CUDA"}.get(target, target.upper())


def target_of(device: str) -> str:
    try:
        return _TARGETS[Device(device).type]
    except Exception:  # noqa: BLE001 -- an unknown device string
        raise ValueError(f"device {device!r}: byteir's onnx backend runs on 'CPU' or 'CUDA'") from None



def as_array(x) -> np.ndarray:
    """An input as a NumPy array; a ``TensorProto`` (as ONNX's test data gives some) is decoded with its own
    element type (bfloat16, float8 and int4 come back as ml_dtypes arrays)."""
    if isinstance(x, onnx.TensorProto):
        return onnx.numpy_helper.to_array(x)
    return np.asarray(x)

class ByteirRep(BackendRep):
    """A prepared model: compiled artifacts by input shapes, and the graph's input and output names."""

    def __init__(self, model: onnx.ModelProto, target: str):
        from .importer import graph_inputs

        self.model = model
        self.target = target
        self.inputs = graph_inputs(model)
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in model.graph.output]
        self._sessions: dict[tuple, tuple] = {}
        feeds_shape = _feeding_shapes(model.graph)
        #: the graph inputs compiled as constants of the values they are run with
        self.specialized = [i for i, vi in enumerate(self.inputs) if vi.name in feeds_shape]
        if all(_static(vi) for vi in self.inputs) and not self.specialized:
            self._sessions[()] = self._compile(None, {})

    def _compile(self, shapes, values: dict):
        import byteir_core

        model = self.model
        if values:  # shape operands as constants: an initializer each, no longer a graph input
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            kept = [vi for vi in model.graph.input if vi.name not in values]
            del model.graph.input[:]
            model.graph.input.extend(kept)
            for name, arr in values.items():
                model.graph.initializer.append(onnx.numpy_helper.from_array(arr, name))
            if shapes:
                shapes = {k: v for k, v in shapes.items() if k not in values}
        art = byteir_core.compile(model, target=self.target, frontend="onnx", progress=False,
                                  input_shapes=shapes or None)
        keep = [i for i in range(len(self.inputs)) if self.inputs[i].name not in values]
        return byteir_core.load(art), keep

    def _arrays(self, inputs) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise ValueError(f"missing input(s) {', '.join(missing)}; the model's inputs: "
                                 f"{', '.join(self.input_names)}")
            inputs = [inputs[n] for n in self.input_names]
        elif isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{len(inputs)} input(s) given, the model takes {len(self.input_names)}: "
                             f"{', '.join(self.input_names)}")
        return [as_array(x) for x in inputs]

    def run(self, inputs, **kwargs):
        arrays = self._arrays(inputs)
        if () in self._sessions:
            session, keep = self._sessions[()]
        else:
            values = {self.input_names[i]: arrays[i] for i in self.specialized
                      if arrays[i].size <= MAX_SPECIALIZED_ELEMENTS}
            key = (tuple(a.shape for a in arrays),
                   tuple((k, v.dtype.str, v.tobytes()) for k, v in sorted(values.items())))
            if key not in self._sessions:
                shapes = {n: list(a.shape) for n, a in zip(self.input_names, arrays)}
                self._sessions[key] = self._compile(shapes, values)
            session, keep = self._sessions[key]
        outs = session.run(*[arrays[i] for i in keep])
        return namedtupledict("Outputs", _field_names(self.output_names))(*outs)


def _feeding_shapes(g: onnx.GraphProto) -> set[str]:
    """The values a shape operand is computed from: the operands themselves and, through the nodes that compute
    them (``Cast``, ``Sub``, ``Ceil`` ...), everything they read (a window's size cast and decremented before a
    ``Range``)."""
    producer = {o: n for n in g.node for o in n.output if o}
    todo = [n.input[k] for n in g.node if n.domain in ("", "ai.onnx")
            for k in SHAPE_OPERANDS.get(n.op_type, ()) if k < len(n.input) and n.input[k]]
    seen: set[str] = set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        node = producer.get(v)
        if node is not None:
            todo.extend(x for x in node.input if x)
    return seen


def _static(vi: onnx.ValueInfoProto) -> bool:
    tt = vi.type.tensor_type
    return tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


def _field_names(names: list[str]) -> list[str]:
    """namedtuple field names from output names (which may hold '.', ':' and the like)."""
    out = []
    for i, n in enumerate(names):
        f = "".join(c if c.isalnum() or c == "_" else "_" for c in n)
        if not f or f[0].isdigit() or f[0] == "_" or f in out:
            f = f"output_{i}_{f}".rstrip("_")
        out.append(f)
    return out


class ByteirBackend(Backend):
    """``onnx.backend.base.Backend`` over byteir: ``prepare`` compiles, ``run`` runs the compiled artifact."""

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> ByteirRep:
        if isinstance(model, (str, bytes)):
            from .importer import load

            model = load(model)[0]
        return ByteirRep(model, target_of(device))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one node: ``inputs`` (arrays, by position or by name) become the graph's inputs; the outputs'
        types come from ``outputs_info`` ([(np dtype, shape)]) or from shape inference."""
        if isinstance(inputs, dict):
            arrays = [as_array(inputs[n]) for n in node.input if n]
        else:
            arrays = [as_array(x) for x in inputs]
        names = [n for n in node.input if n]
        if len(names) != len(arrays):
            raise ValueError(f"node {node.name or node.op_type} takes {len(names)} input(s), {len(arrays)} given")
        g_inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype),
                                                       list(a.shape)) for n, a in zip(names, arrays)]
        if outputs_info:
            g_outputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)),
                                                            list(shape))
                         for n, (dt, shape) in zip(node.output, outputs_info)]
        else:
            g_outputs = [onnx.ValueInfoProto(name=n) for n in node.output if n]
        opset = kwargs.get("opset_version") or onnx.defs.onnx_opset_version()
        imports = [onnx.helper.make_opsetid("", opset)]
        if node.domain not in ("", "ai.onnx"):
            imports.append(onnx.helper.make_opsetid(node.domain, 1))
        graph = onnx.helper.make_graph([node], f"run_node_{node.op_type}", g_inputs, g_outputs)
        model = onnx.helper.make_model(graph, opset_imports=imports)
        if not outputs_info:
            model = onnx.shape_inference.infer_shapes(model)
            inferred = {v.name: v for v in model.graph.value_info}
            for o in model.graph.output:
                if not o.type.HasField("tensor_type") and o.name in inferred:
                    o.CopyFrom(inferred[o.name])
        return cls.prepare(model, device).run(arrays)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            target = target_of(device)
        except ValueError:
            return False
        if target == "cpu":
            return True
        try:
            from byteir_core.plugins import get_registry

            if "cuda" not in get_registry().backends:
                return False
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # noqa: BLE001 -- no CuPy, no driver, no device
            return False


prepare = ByteirBackend.prepare
run_model = ByteirBackend.run_model
run_node = ByteirBackend.run_node
supports_device = ByteirBackend.supports_device
is_compatible = ByteirBackend.is_compatible
