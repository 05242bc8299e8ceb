"""ONNX function ops inlined and constant subgraphs folded before import (byteir_frontend_onnx.expand), checked
against onnx's reference implementation (onnx.reference, the spec's own evaluator) and NumPy."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import byteir_core
from byteir_frontend_onnx.importer import prepare


def _model(nodes, inputs, outputs, inits=(), opset=23, functions=(), extra_opsets=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
                          functions=list(functions))
    m.ir_version = 10
    return m


def _f32(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _run(model, feeds):
    art = byteir_core.compile(model, target="cpu", progress=False)
    return byteir_core.load(art)(**feeds)


def decoder_block(s=6, h=16, heads=4, kv_heads=2):
    """RMSNormalization -> q/k/v projections -> Attention (causal, grouped-query: 4 query heads share 2 k/v heads)
    -> output projection -> residual add -> RMSNormalization -> SwiGLU-style MLP (Swish): a LLaMA layer in ONNX
    opset 23's own ops, every one of them a function op torch-mlir has no lowering for."""
    dk = h // heads
    w = {n: numpy_helper.from_array(_f32(shape, i + 1, 0.3), n) for i, (n, shape) in enumerate([
        ("wq", (h, h)), ("wk", (h, kv_heads * dk)), ("wv", (h, kv_heads * dk)), ("wo", (h, h)),
        ("w_gate", (h, 2 * h)), ("w_up", (h, 2 * h)), ("w_down", (2 * h, h))])}
    w["g1"] = numpy_helper.from_array(1 + _f32((h,), 9, 0.1), "g1")
    w["g2"] = numpy_helper.from_array(1 + _f32((h,), 10, 0.1), "g2")
    nodes = [
        helper.make_node("RMSNormalization", ["x", "g1"], ["n1"], name="norm1", axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["n1", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["n1", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["n1", "wv"], ["v"], name="v_proj"),
        helper.make_node("Attention", ["q", "k", "v"], ["a"], name="attn", is_causal=1, q_num_heads=heads,
                         kv_num_heads=kv_heads),
        helper.make_node("MatMul", ["a", "wo"], ["o"], name="o_proj"),
        helper.make_node("Add", ["x", "o"], ["r1"], name="residual1"),
        helper.make_node("RMSNormalization", ["r1", "g2"], ["n2"], name="norm2", axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["n2", "w_gate"], ["gate"], name="gate_proj"),
        helper.make_node("Swish", ["gate"], ["act"], name="act"),
        helper.make_node("MatMul", ["n2", "w_up"], ["up"], name="up_proj"),
        helper.make_node("Mul", ["act", "up"], ["mlp"], name="glu"),
        helper.make_node("MatMul", ["mlp", "w_down"], ["down"], name="down_proj"),
        helper.make_node("Add", ["r1", "down"], ["y"], name="residual2"),
    ]
    return _model(nodes, [_vi("x", [2, s, h])], [_vi("y", [2, s, h])], w.values(), opset=24)


def test_a_decoder_block_of_function_ops_matches_the_onnx_reference():
    m = decoder_block()
    x = _f32((2, 6, 16), 0)
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    got = _run(m, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_function_ops_are_inlined_and_shape_computations_folded_before_import():
    proto, _, _ = prepare(decoder_block())
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"RMSNormalization", "Attention", "Swish"}, ops
    # the bodies compute shapes at run time (Shape -> Gather -> Range ...); with static shapes these are folded
    # (ConstantOfShape is left, with a constant shape operand: materializing its result would only grow the file)
    assert not ops & {"Shape", "Size", "Range", "Gather"}, ops


def test_ops_torch_mlir_lowers_directly_keep_their_single_node():
    """LayerNormalization, Gelu and Softmax are functions too, but torch-mlir lowers them as one op each, which
    the backends then see as the fused patterns they are."""
    h = 8
    m = _model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], name="ln", axis=-1),
                helper.make_node("Gelu", ["n"], ["a"], name="gelu"),
                helper.make_node("Softmax", ["a"], ["y"], name="softmax", axis=-1)],
               [_vi("x", [3, h])], [_vi("y", [3, h])],
               [numpy_helper.from_array(1 + _f32((h,), 1, 0.1), "g"), numpy_helper.from_array(_f32((h,), 2), "b")])
    proto, _, _ = prepare(m)
    assert [n.op_type for n in proto.graph.node] == ["LayerNormalization", "Gelu", "Softmax"]
    x = _f32((3, h), 3)
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_allclose(_run(m, {"x": x}), want, rtol=1e-4, atol=1e-5)


def test_an_attribute_left_unset_takes_the_schemas_default_when_inlined():
    """MeanVarianceNormalization's ``axes`` defaults to [0, 2, 3]; onnx's inliner alone would drop it and
    normalize over every axis. Also: strict shape inference through this op's body fails at opset 13, so it is
    inlined before that inference."""
    m = _model([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn")],
               [_vi("x", [2, 3, 4, 5])], [_vi("y", [2, 3, 4, 5])], opset=13)
    x = _f32((2, 3, 4, 5), 4) * 3 + 1
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    want = (x - mean) / (np.sqrt((x ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean ** 2) + 1e-9)
    np.testing.assert_allclose(_run(m, {"x": x}), want, rtol=1e-4, atol=1e-5)


def test_losses_inline_through_each_other():
    """SoftmaxCrossEntropyLoss's body uses NegativeLogLikelihoodLoss, itself a function: expanded in rounds.
    ``ignore_index`` and per-class weights included."""
    m = _model([helper.make_node("SoftmaxCrossEntropyLoss", ["scores", "labels", "weights"], ["loss"], name="sce",
                                 reduction="mean", ignore_index=2)],
               [_vi("scores", [4, 5, 3]), _vi("labels", [4, 3], TensorProto.INT64), _vi("weights", [5])],
               [_vi("loss", [])], opset=13)
    feeds = {"scores": _f32((4, 5, 3), 5), "labels": np.random.default_rng(6).integers(0, 5, (4, 3)),
             "weights": np.abs(_f32((5,), 7)) + 0.5}
    (want,) = ReferenceEvaluator(m).run(None, feeds)
    np.testing.assert_allclose(_run(m, feeds), want, rtol=1e-4, atol=1e-5)


def test_model_local_functions_are_inlined():
    """A model-local function (as torch's dynamo exporter writes them), used twice with different inputs."""
    fn = helper.make_function("mylib", "ScaledTanh", ["a"], ["b"], [
        helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2.0))),
        helper.make_node("Mul", ["a", "two"], ["a2"]),
        helper.make_node("Tanh", ["a2"], ["b"])], [helper.make_opsetid("", 17)])
    m = _model([helper.make_node("ScaledTanh", ["x"], ["t"], name="st1", domain="mylib"),
                helper.make_node("ScaledTanh", ["t"], ["y"], name="st2", domain="mylib")],
               [_vi("x", [3, 4])], [_vi("y", [3, 4])], opset=17, functions=[fn],
               extra_opsets=[helper.make_opsetid("mylib", 1)])
    x = _f32((3, 4), 8)
    np.testing.assert_allclose(_run(m, {"x": x}), np.tanh(2 * np.tanh(2 * x)), rtol=1e-5, atol=1e-6)


def test_a_reshape_to_a_computed_shape_folds_and_compiles():
    """Reshape's target computed from the input's own shape (Shape -> Slice -> Concat), as exporters write a
    flatten of all but the batch dimension."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "zero", "one"], ["batch"], name="batch"),
        helper.make_node("Concat", ["batch", "minus1"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["f"], name="flatten"),
        helper.make_node("Relu", ["f"], ["y"], name="relu"),
    ]
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("zero", 0), ("one", 1),
                                                                              ("minus1", -1))]
    m = _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [2, 12])], inits, opset=17)
    proto, _, _ = prepare(m)
    assert [n.op_type for n in proto.graph.node] == ["Reshape", "Relu"]
    x = _f32((2, 3, 4), 9)
    np.testing.assert_allclose(_run(m, {"x": x}), np.maximum(x.reshape(2, 12), 0), rtol=1e-6)


@pytest.mark.parametrize("op", ["Attention", "RMSNormalization"])
def test_a_function_op_with_a_dynamic_batch_is_pinned_with_input_shape(op):
    """With a symbolic batch the folded shape computations depend on --input-shape; pinned, it compiles."""
    if op == "Attention":
        node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn")
        ins = [_vi(n, ["B", 2, 5, 4]) for n in "qkv"]
        feeds = {n: _f32((3, 2, 5, 4), i) for i, n in enumerate("qkv")}
        out = _vi("y", ["B", 2, 5, 4])
        inits = []
    else:
        node = helper.make_node("RMSNormalization", ["q", "g"], ["y"], name="rms", axis=-1)
        ins = [_vi("q", ["B", 5, 4])]
        feeds = {"q": _f32((3, 5, 4), 1)}
        out = _vi("y", ["B", 5, 4])
        inits = [numpy_helper.from_array(1 + _f32((4,), 2, 0.1), "g")]
    m = _model([node], ins, [out], inits)
    (want,) = ReferenceEvaluator(m).run(None, feeds)
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    art = byteir_core.compile(m, target="cpu", progress=False, input_shapes=shapes)
    np.testing.assert_allclose(byteir_core.load(art)(**feeds), want, rtol=1e-4, atol=1e-5)


def qdq_cnn():
    """A QDQ model as ONNX Runtime's quantization tool writes them: activations quantized to uint8 per tensor and
    dequantized again around each op, weights stored as int8 per output channel (DequantizeLinear axis=0), a
    blocked-int8 MatMul weight (block_size 4 along K) and an int8 QLinearMatMul head."""
    r = np.random.default_rng(12)
    w = r.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w_scale = (r.uniform(0.002, 0.01, 4)).astype(np.float32)
    fc = r.integers(-127, 128, (8, 6)).astype(np.int8)  # K=8 in blocks of 4 -> scales [2, 6]
    fc_scale = r.uniform(0.01, 0.05, (2, 6)).astype(np.float32)
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("w_q", w), ("w_scale", w_scale), ("w_zp", np.zeros(4, np.int8)), ("a_scale", np.float32(0.02)),
        ("a_zp", np.uint8(128)), ("fc_q", fc), ("fc_scale", fc_scale), ("y_scale", np.float32(0.05)),
        ("y_zp", np.int8(-3)), ("h_scale", np.float32(0.04)), ("h_zp", np.int8(1)),
        ("head_w", r.integers(-100, 100, (6, 5)).astype(np.int8)), ("head_w_scale", np.float32(0.03)),
        ("head_w_zp", np.int8(0)), ("out_scale", np.float32(0.5)), ("out_zp", np.int8(0)),
        ("pool_shape", np.array([1, 4, 2, 8], np.int64)))]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["xq"], name="quant_x"),
        helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xd"], name="dequant_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dequant_w", axis=0),
        helper.make_node("Conv", ["xd", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "pool_shape"], ["r4"], name="reshape"),  # [1,4,2,8]: K=8 last
        helper.make_node("DequantizeLinear", ["fc_q", "fc_scale"], ["fc"], name="dequant_fc", axis=0,
                         block_size=4),
        helper.make_node("MatMul", ["r4", "fc"], ["h"], name="fc"),
        helper.make_node("QuantizeLinear", ["h", "h_scale", "h_zp"], ["hq"], name="quant_h"),
        helper.make_node("QLinearMatMul", ["hq", "h_scale", "h_zp", "head_w", "head_w_scale", "head_w_zp",
                                           "out_scale", "out_zp"], ["y"], name="head"),
    ]
    return _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y", [1, 4, 2, 5], TensorProto.INT8)], inits, opset=21)


def test_a_quantized_model_computes_what_the_onnx_reference_computes():
    """Quantize/Dequantize (per tensor, per channel, blocked) and QLinearMatMul are rewritten to arithmetic;
    torch-mlir's quantized tensors never reach StableHLO. Integer outputs must be equal."""
    m = qdq_cnn()
    x = _f32((1, 3, 4, 4), 13)
    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    got = _run(m, {"x": x})
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)
    proto, _, _ = prepare(m)
    assert not {n.op_type for n in proto.graph.node} & {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul"}
