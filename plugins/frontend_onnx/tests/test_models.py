"""The 9 real models shipped in the onnx wheel (onnx/backend/test/data/light), compiled for --target cpu and
checked against ONNX Runtime (rtol 1e-3, atol 2e-3).

The wheel's "light" models keep the real architectures but make every weight a ConstantOfShape of one value, so
their outputs are nearly uniform (or overflow). Each model is therefore also checked with seeded, varied weights:
convolution and fully-connected weights drawn zero-mean with variance 1/fan-in (activations stay of order one
through VGG-19's 19 layers), every rank-1 constant (bias, BatchNorm's scale, shift, mean, variance) its value times
a factor in [0.5, 1.5] (signs kept, variances positive); the logits before the final Softmax are compared as well
as the probabilities, and must be finite and not uniform."""

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx_models import ort_run

import byteir_core

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
          "vgg19", "zfnet512"]


def vary_weights(m: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Every ConstantOfShape with a constant shape becomes an initializer of varied values."""
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in m2.graph.initializer}
    keep = []
    for n in m2.graph.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits:
            shape = numpy_helper.to_array(inits[n.input[0]]).astype(np.int64).tolist()
            value = numpy_helper.to_array(n.attribute[0].t).reshape(-1)[0] if n.attribute else np.float32(0)
            if len(shape) >= 2:  # a weight: zero-mean, variance 1/fan-in
                fan_in = int(np.prod(shape[1:]))
                arr = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
            else:
                arr = (value * rng.uniform(0.5, 1.5, shape)).astype(np.float32)
            m2.graph.initializer.append(numpy_helper.from_array(arr, n.output[0]))
            continue
        keep.append(n)
    del m2.graph.node[:]
    m2.graph.node.extend(keep)
    return m2


def with_logits(m: onnx.ModelProto) -> onnx.ModelProto:
    """The last Softmax's input as a second graph output (the probabilities hide differences in the logits);
    DenseNet-121 ends in its logits already."""
    softmax = [n for n in m.graph.node if n.op_type == "Softmax"]
    if softmax:
        m.graph.output.append(onnx.ValueInfoProto(name=softmax[-1].input[0]))
    return onnx.shape_inference.infer_shapes(m)


def _input(m):
    inits = {t.name for t in m.graph.initializer}
    (inp,) = [i for i in m.graph.input if i.name not in inits]
    return inp.name, [d.dim_value for d in inp.type.tensor_type.shape.dim]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_light_model_matches_onnxruntime(name):
    shipped = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    in_name, shape = _input(shipped)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    for model in (shipped, with_logits(vary_weights(shipped))):
        want = ort_run(model, {in_name: x})
        got = byteir_core.load(byteir_core.compile(model, target="cpu", progress=False)).run(x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=2e-3, err_msg=name)
    logits = want[-1]
    assert np.isfinite(logits).all() and float(np.std(logits)) > 1e-3, "varied weights: finite, non-uniform logits"
