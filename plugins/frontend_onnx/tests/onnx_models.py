"""Small ONNX models built in memory with onnx.helper (no downloads), for the frontend's tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(g, opset: int, ir_version: int = 8) -> onnx.ModelProto:
    """ir_version pinned: onnx's newest IR is newer than ONNX Runtime 1.31 reads."""
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    return m


def _rng(seed=0):
    return np.random.default_rng(seed)


def cnn(opset: int = 17, batch="N", seed: int = 0) -> onnx.ModelProto:
    """Conv(+bias) -> Relu -> MaxPool -> Flatten -> Gemm -> Softmax, on ``image`` [batch,3,8,8] -> ``probs``.
    ``batch`` a string keeps the batch dimension symbolic."""
    r = _rng(seed)
    w = numpy_helper.from_array((r.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "conv.weight")
    b = numpy_helper.from_array(r.standard_normal(4).astype(np.float32), "conv.bias")
    fw = numpy_helper.from_array((r.standard_normal((5, 64)) * 0.2).astype(np.float32), "fc.weight")
    fb = numpy_helper.from_array(r.standard_normal(5).astype(np.float32), "fc.bias")
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 5])],
                          initializer=[w, b, fw, fb])
    return _model(g, opset, 7 if opset < 15 else 8)


def two_outputs() -> onnx.ModelProto:
    """``x`` [2,3], ``y`` [2,3] -> ``sum.out`` = x + y, ``prod:out`` = x * y (names with '.' and ':')."""
    nodes = [helper.make_node("Add", ["x", "y"], ["sum.out"], name="add"),
             helper.make_node("Mul", ["x", "y"], ["prod:out"], name="mul")]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in "xy"],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3])
                           for n in ("sum.out", "prod:out")])
    return _model(g, 17)


def old_opset_bn() -> onnx.ModelProto:
    """An opset-7 model (BatchNormalization, MaxPool, Add): byteir converts it with onnx's version converter."""
    r = _rng(1)
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (
        ("scale", r.uniform(0.5, 1.5, 3)), ("bias", r.standard_normal(3)), ("mean", r.standard_normal(3)),
        ("var", r.uniform(0.5, 2.0, 3)), ("k", r.standard_normal((1, 3, 1, 1))))]
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"], name="bn",
                              epsilon=1e-5),
             helper.make_node("MaxPool", ["bn"], ["mp"], name="mp", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Add", ["mp", "k"], ["y"], name="add")]
    # IR version 3: every initializer is also a graph input, as exporters of that era wrote them
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])]
    inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    g = helper.make_graph(nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 3
    return m


def asymmetric_avgpool() -> onnx.ModelProto:
    """Inception v1's last pool: AveragePool 7x7 over 6x6 with pads [0,0,1,1] (padding not counted)."""
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool5", kernel_shape=[7, 7], pads=[0, 0, 1, 1],
                            strides=[1, 1])
    g = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])])
    return _model(g, 17)


def upsampler(mode: str, ctm: str, scales=None, sizes=None, opset: int = 19) -> onnx.ModelProto:
    """A decoder's upsampling path (U-Net, YOLO's neck): Conv -> Resize -> Concat with a skip -> Conv, on
    ``x`` [1,4,5,6]. ``scales`` or ``sizes`` for the Resize over H and W."""
    r = _rng(2)
    w1 = numpy_helper.from_array((r.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((r.standard_normal((3, 8, 1, 1)) * 0.3).astype(np.float32), "w2")
    skip = numpy_helper.from_array(r.standard_normal((1, 4, 10, 12)).astype(np.float32), "skip")
    inits = [w1, w2, skip]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array(scales, np.float32), "scales"))
        ins = ["c", "", "scales"]
    else:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        ins = ["c", "", "", "sizes"]
    extra = {"cubic_coeff_a": -0.5} if mode == "cubic" else {}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ins, ["up"], name="up", mode=mode, coordinate_transformation_mode=ctm,
                              **extra),
             helper.make_node("Concat", ["up", "skip"], ["cat"], name="cat", axis=1),
             helper.make_node("Conv", ["cat", "w2"], ["y"], name="conv2")]
    g = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 10, 12])], initializer=inits)
    return _model(g, opset)


def ort_run(model: onnx.ModelProto | str, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)
