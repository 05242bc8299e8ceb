"""``Resize`` as per-axis linear maps, before import (torch-mlir lowers no ONNX ``Resize`` to StableHLO).

Resize is separable: along each resized axis every output element is a fixed weighted sum of input elements
along that axis, whatever the mode (nearest, linear, cubic, antialiased), coordinate transformation, ``roi`` or
aspect-ratio policy. With static shapes and constant ``scales``/``sizes``/``roi``, each axis's weights are a
constant ``[out, in]`` matrix. It is computed with the ONNX reference implementation's own 1-D kernel
(``onnx.reference``), applied to the identity, so the coefficients, neighbour choice, edge clamping and
``exclude_outside`` renormalization are the specification's, not a re-derivation. Then, axis by axis:

- **nearest** (each row one-hot): ``Gather`` of the chosen input indices: exact, for every element type;
- **linear/cubic** on floats: ``MatMul`` with the weight matrix (the axis brought last, or next-to-last, by
  ``Transpose`` when it is neither);
- **tf_crop_and_resize**: outputs whose source lies outside the ``roi`` take ``extrapolation_value``
  (``Where``), after each axis, as the reference does.

A Resize whose operands are not constants, whose shapes are not static, or whose linear/cubic input is not a
float stays as it is (and is reported by the lowering if it fails there).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def constant_values(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    g = proto.graph
    out = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _coeff_fn(attrs: dict):
    from onnx.reference.ops import op_resize as R

    mode = attrs.get("mode", "nearest")
    antialias = attrs.get("antialias", 0)
    a = attrs.get("cubic_coeff_a", -0.75)
    if mode == "nearest":
        if antialias:
            return None
        nearest = attrs.get("nearest_mode", "round_prefer_floor")
        return lambda x, scale: R._nearest_coeffs(x, mode=nearest)
    if mode == "cubic":
        fn = R._cubic_coeffs_antialias if antialias else R._cubic_coeffs
        return lambda x, scale: fn(x, scale, A=a)
    if mode == "linear":
        return R._linear_coeffs_antialias if antialias else R._linear_coeffs
    return None


def _plan(shape, attrs, roi, scales, sizes):
    """Per resized axis: (axis, scale, output length, axis roi or None), as onnx.reference's _interpolate_nd
    derives them; None where that cannot be done statically."""
    r = len(shape)
    axes = [a % r for a in attrs.get("axes", range(r))]
    full_scales = [1.0] * r
    full_sizes = list(shape)
    if sizes is not None and sizes.size:
        for i, d in enumerate(axes):
            full_sizes[d] = int(sizes[i])
        full_scales = [full_sizes[i] / shape[i] for i in range(r)]
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            s = pick(full_scales[d] for d in axes)
            full_scales = [s if i in axes else 1.0 for i in range(r)]
            full_sizes = [int(s * shape[i] + 0.5) if i in axes else shape[i] for i in range(r)]
    elif scales is not None and scales.size:
        for i, d in enumerate(axes):
            full_scales[d] = float(scales[i])
        full_sizes = [int(full_scales[i] * shape[i]) for i in range(r)]
    else:
        return None
    full_roi = None
    if roi is not None and roi.size:
        full_roi = [0.0] * r + [1.0] * r
        for i, d in enumerate(axes):
            full_roi[d] = float(roi[i])
            full_roi[r + d] = float(roi[len(axes) + i])
    plan = []
    for d in axes:
        axis_roi = None if full_roi is None else [full_roi[d], full_roi[d + r]]
        if (math.isclose(full_scales[d], 1.0) and full_sizes[d] == shape[d]
                and (axis_roi is None or (math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0)))):
            continue
        plan.append((d, full_scales[d], full_sizes[d], axis_roi))
    return plan, full_sizes


def _weights(n_in, scale, n_out, fn, roi, attrs):
    """``[n_out, n_in]`` weights and the ``[n_out]`` extrapolated mask of one axis, from the reference kernel."""
    from onnx.reference.ops import op_resize as R

    kw = dict(roi=roi, coordinate_transformation_mode=attrs.get("coordinate_transformation_mode", "half_pixel"),
              exclude_outside=bool(attrs.get("exclude_outside", 0)))
    w = R._interpolate_1d_along_axis(np.eye(n_in), 1, scale, n_out, fn, extrapolation_value=0.0, **kw)
    probe = R._interpolate_1d_along_axis(np.ones((1, n_in)), 1, scale, n_out, fn, extrapolation_value=np.nan, **kw)
    return np.asarray(w, np.float64).T, np.isnan(probe[0])


def rewrite_resize(proto: onnx.ModelProto, n: onnx.NodeProto, consts: dict, shape, elem, out_shape, inits):
    """The nodes replacing Resize ``n`` (appending constants to ``inits``), or None to leave it."""
    if n.domain not in ("", "ai.onnx") or len(n.output) != 1 or shape is None or out_shape is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
    ins = list(n.input) + [""] * (4 - len(n.input))
    vals = []
    for name in ins[1:4]:
        if not name:
            vals.append(None)
        elif name in consts:
            vals.append(np.asarray(consts[name]))
        else:
            return None  # computed at run time
    roi, scales, sizes = vals
    fn = _coeff_fn(attrs)
    if fn is None:
        return None
    try:
        planned = _plan(list(shape), attrs, roi, scales, sizes)
    except (ImportError, AttributeError):  # onnx.reference's kernel moved: leave the node to the lowering
        return None
    if planned is None:
        return None
    plan, full_sizes = planned
    if list(full_sizes) != list(out_shape):
        return None  # shape inference disagrees: leave it
    mode = attrs.get("mode", "nearest")
    if mode != "nearest" and elem not in _FLOATS:
        return None
    np_dtype = helper.tensor_dtype_to_np_dtype(elem)
    base, rank = n.name or "resize", len(shape)
    nodes, cur = [], n.input[0]
    extrap = attrs.get("extrapolation_value", 0.0)
    for k, (axis, scale, n_out, axis_roi) in enumerate(plan):
        try:
            w, outside = _weights(shape[axis], scale, n_out, fn, axis_roi, attrs)
        except (ImportError, AttributeError, TypeError):
            return None
        last = k == len(plan) - 1 and not outside.any()
        out = n.output[0] if last else f"{base}/axis{axis}"
        one_hot = np.all((w == 0) | (w == 1)) and np.all(w.sum(axis=1) == 1)
        if mode == "nearest" or one_hot:
            if not one_hot:
                return None
            idx = f"{base}/axis{axis}_index"
            inits.append(numpy_helper.from_array(w.argmax(axis=1).astype(np.int64), idx))
            nodes.append(helper.make_node("Gather", [cur, idx], [out], name=f"{base}/gather{axis}", axis=axis))
        else:
            nodes.extend(_matmul_along(cur, out, w.astype(np_dtype), axis, rank, f"{base}/axis{axis}", inits))
        cur = out
        if outside.any():
            mask, value = f"{base}/axis{axis}_outside", f"{base}/extrapolation_value"
            bshape = [1] * rank
            bshape[axis] = n_out
            inits.append(numpy_helper.from_array(outside.reshape(bshape), mask))
            if not any(t.name == value for t in inits):
                inits.append(numpy_helper.from_array(np.array(extrap, np_dtype), value))
            out = n.output[0] if k == len(plan) - 1 else f"{base}/axis{axis}_extrapolated"
            nodes.append(helper.make_node("Where", [mask, value, cur], [out], name=f"{base}/extrapolate{axis}"))
            cur = out
    if not plan:
        nodes.append(helper.make_node("Identity", [n.input[0]], [n.output[0]], name=base))
    return nodes


def _matmul_along(x, out, w, axis, rank, base, inits):
    """``out`` = ``x`` with axis ``axis`` mapped through ``w`` ``[out, in]``."""
    if axis == rank - 1:
        wt = f"{base}/weights_t"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), wt))
        return [helper.make_node("MatMul", [x, wt], [out], name=f"{base}/matmul")]
    wn = f"{base}/weights"
    inits.append(numpy_helper.from_array(w, wn))
    if axis == rank - 2:  # [out, in] @ [..., in, last] broadcasts over the leading axes
        return [helper.make_node("MatMul", [wn, x], [out], name=f"{base}/matmul")]
    perm = [d for d in range(rank) if d != axis] + [axis]
    inv = [perm.index(d) for d in range(rank)]
    wt = f"{base}/weights_t"
    inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), wt))
    return [helper.make_node("Transpose", [x], [f"{base}/moved"], name=f"{base}/move", perm=perm),
            helper.make_node("MatMul", [f"{base}/moved", wt], [f"{base}/mapped"], name=f"{base}/matmul"),
            helper.make_node("Transpose", [f"{base}/mapped"], [out], name=f"{base}/back", perm=inv)]
