"""A ``tf.function`` or Keras model -> StableHLO, through TensorFlow's XLA bridge.

The function is traced at static shapes (the example inputs, else its signature with ``input_shapes`` pinning
the unknown dimensions) under ``jit_compile=True``, and TensorFlow writes the program as a StableHLO portable
artifact (``experimental_get_compiler_ir(...)(stage="stablehlo_serialized")``): versioned bytecode that the
core reads whatever StableHLO version TensorFlow ships. TensorFlow passes the variables the function reads as
trailing arguments of ``@main``, in ``captured_inputs`` order; their current values are frozen into constants,
so the compiled artifact takes the model's inputs only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from byteir_core.errors import FrontendError

from .common import finish_module, structure_of

# "EagerPyFunc (No registered 'EagerPyFunc' OpKernel for XLA_CPU_JIT devices ...)"
_NO_XLA_KERNEL = re.compile(r"(\w+) \(No registered '(\w+)' OpKernel for XLA")
_CREATED_AT = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
#: what the user wrote, for the TF ops that most often stop XLA
_OP_SOURCES = {"EagerPyFunc": "tf.py_function", "PyFunc": "tf.numpy_function", "PyFuncStateless":
               "tf.numpy_function"}


def _tf():
    import tensorflow as tf

    return tf


def describe(model) -> str:
    """``Keras model 'mlp'`` / ``tf.function 'fwd'``: how errors name the model."""
    import keras

    if isinstance(model, keras.Model):
        return f"Keras model {model.name!r}"
    name = getattr(model, "__name__", None) or getattr(model, "name", None) or type(model).__name__
    return f"tf.function {name!r}"


def _traceable(model, tf):
    """(python callable to wrap in a fresh tf.function, its declared input specs or None, input names)."""
    import keras

    if isinstance(model, keras.Model):
        if keras.backend.backend() != "tensorflow":
            raise FrontendError(f"{describe(model)} runs on Keras' {keras.backend.backend()!r} backend; the tf "
                                f"frontend compiles Keras on the TensorFlow backend (KERAS_BACKEND=tensorflow), "
                                f"and a JAX-backend model goes through the jax frontend as a function")
        n = len(model.inputs) if getattr(model, "inputs", None) else None

        def call(*xs):
            return model(xs[0] if len(xs) == 1 else list(xs), training=False)

        specs = None
        names = None
        if n:
            specs = [tf.TensorSpec(t.shape, t.dtype) for t in model.inputs]
            names = [_strip_port(t.name) for t in model.inputs]
        return call, specs, names
    if isinstance(model, tf.types.experimental.ConcreteFunction):
        args, kwargs = model.structured_input_signature
        flat = [s for s in tf.nest.flatten(args) if isinstance(s, tf.TensorSpec)]
        keys = sorted(kwargs)  # a SavedModel signature takes keyword arguments only
        flat += [kwargs[k] for k in keys]
        names = [s.name for s in flat[:len(flat) - len(keys)]] + keys

        def call(*xs):
            n = len(xs) - len(keys)
            return model(*xs[:n], **dict(zip(keys, xs[n:])))

        return call, flat, names
    signature = getattr(model, "input_signature", None)
    specs = list(tf.nest.flatten(signature)) if signature is not None else None
    names = [s.name for s in specs] if specs is not None else _argument_names(model.python_function)
    return model.python_function, specs, names


def _argument_names(fn) -> list[str] | None:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _strip_port(name: str) -> str:
    return name.split(":", 1)[0]


def _specs(tf, declared, example_inputs, names, shapes, what: str):
    """Static TensorSpecs to trace with: the example inputs' shapes, else the declared ones with ``shapes``
    pinning them (one per input, or a dict by input name)."""
    if example_inputs is not None:
        if not isinstance(example_inputs, (list, tuple)):
            example_inputs = [example_inputs]
        specs = []
        for i, x in enumerate(example_inputs):
            try:
                t = tf.convert_to_tensor(x)
            except (TypeError, ValueError) as e:
                raise FrontendError(f"{what}: example input {i} is not a tensor TensorFlow can take "
                                    f"({type(x).__name__}: {e})") from None
            specs.append(tf.TensorSpec(t.shape, t.dtype))
        if declared is not None and len(declared) != len(specs):
            raise FrontendError(f"{what} takes {len(declared)} input(s), {len(specs)} example input(s) given")
        for i, (s, d) in enumerate(zip(specs, declared or [])):
            if d.dtype != s.dtype or not d.shape.is_compatible_with(s.shape):
                raise FrontendError(f"{what}: example input {i} is {s.dtype.name}{list(s.shape)}, the function "
                                    f"declares {d.dtype.name}{d.shape.as_list()}")
    elif declared is not None:
        specs = list(declared)
    else:
        raise FrontendError(f"{what} has no input signature: give example inputs "
                            f"(byteir_core.compile(fn, example_inputs)) or declare input_signature=[tf.TensorSpec(...)]")
    if shapes:
        specs = _pin(tf, specs, names, shapes, what)
    dynamic = [(i, s) for i, s in enumerate(specs) if not s.shape.is_fully_defined()]
    if dynamic:
        listed = "; ".join(f"{_label(names, i)} is {s.shape.as_list()}" for i, s in dynamic)
        hint = ",".join("x".join(str(d or 1) for d in s.shape.as_list()) or "scalar" for s in specs)
        raise FrontendError(f"{what}: TensorFlow's XLA bridge compiles static shapes only, and {listed}. Give "
                            f"example inputs, or pin the unknown dimensions: --input-shape {hint} "
                            f"(input_shapes= in Python) with your sizes")
    return specs


def _label(names, i: int) -> str:
    return f"input {i} ({names[i]!r})" if names and i < len(names) and names[i] else f"input {i}"


def _pin(tf, specs, names, shapes, what: str):
    from byteir_core.compiler.importing import shapes_by_input

    known = list(names) if names and len(names) == len(specs) else [f"input{i}" for i in range(len(specs))]
    shapes = shapes_by_input(shapes, known, what)
    out = []
    for i, (s, shape) in enumerate(zip(specs, shapes)):
        if shape is None:
            out.append(s)
            continue
        if not s.shape.is_compatible_with(shape):
            raise FrontendError(f"{what}: --input-shape for {_label(names, i)}: {list(shape)} does not fit "
                                f"its shape {s.shape.as_list()}")
        out.append(tf.TensorSpec(shape, s.dtype, name=s.name))
    return out


def unsupported_op_error(e: Exception, what: str) -> FrontendError | None:
    """TensorFlow's "Detected unsupported operations" as an error naming each TF op, the function, where the
    user created it, and the fix."""
    text = str(e)
    ops = sorted({m.group(2) for m in _NO_XLA_KERNEL.finditer(text)})
    if not ops:
        return None
    named = ", ".join(f"{op} ({_OP_SOURCES[op]})" if op in _OP_SOURCES else op for op in ops)
    sites = [f"{f}:{line} in {fn}" for f, line, fn in _CREATED_AT.findall(text)]
    where = f"\n  created at: {sites[-1]}" if sites else ""
    return FrontendError(f"{what}: TensorFlow op(s) {named} cannot be compiled by XLA (no XLA kernel; strings, "
                         f"Python callbacks and some resource ops have none){where}\n  move them out of the "
                         f"compiled function: run them before or after it, on its inputs or outputs")


def to_stablehlo(model, example_inputs: Sequence | None, options: dict, context):
    tf = _tf()
    what = describe(model)
    fn, declared, names = _traceable(model, tf)
    specs = _specs(tf, declared, example_inputs, names, options.get("input_shapes"), what)
    compiled = tf.function(fn, jit_compile=True)
    try:
        concrete = compiled.get_concrete_function(*specs)
        blob = compiled.experimental_get_compiler_ir(*specs)(stage="stablehlo_serialized")
    except FrontendError:
        raise
    except Exception as e:  # noqa: BLE001 -- tracing runs the user's code; XLA's refusals are plain errors
        err = unsupported_op_error(e, what)
        if err is not None:
            raise err from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FrontendError(f"{what}: TensorFlow could not trace or lower it at "
                            f"{', '.join(f'{s.dtype.name}{s.shape.as_list()}' for s in specs)}: "
                            f"{type(e).__name__}: {first}") from None
    captured = list(concrete.captured_inputs)
    weights = _read_captured(tf, captured, what)

    from byteir_core.compiler.importing import freeze_arguments, read_portable_artifact

    module = read_portable_artifact(context, blob, what, f"TensorFlow {tf.__version__} (StableHLO "
                                                         f"{_stablehlo_version()})")
    from byteir_core.compiler.driver import entry_function

    n_args = len(entry_function(module).regions[0].blocks[0].arguments)
    if n_args != len(specs) + len(weights):
        raise FrontendError(f"{what}: TensorFlow's @main takes {n_args} arguments, expected {len(specs)} inputs "
                            f"and {len(weights)} captured variables (a TensorFlow version whose calling convention "
                            f"byteir-frontend-tf does not know)")
    freeze_arguments(module, {len(specs) + i: w for i, w in enumerate(weights)})
    outputs = concrete.structured_outputs
    tree, out_names = structure_of(outputs, tf)
    finish_module(module, what, list(names or []), out_names, tree)
    return module


def _stablehlo_version() -> str:
    """The StableHLO version TensorFlow's bridge writes (1.13.7 for TensorFlow 2.21)."""
    try:
        from tensorflow.compiler.mlir.stablehlo import stablehlo

        return stablehlo.get_current_version()
    except (ImportError, AttributeError):
        return "unknown"


def _read_captured(tf, captured, what: str) -> list[np.ndarray]:
    """The captured tensors' values: a variable's current value (read through its handle), or the constant."""
    values = []
    for i, c in enumerate(captured):
        if c.dtype == tf.resource:
            dtype = _variable_dtype(c)
            if dtype is None:
                raise FrontendError(f"{what}: captured input {i} is a resource that is not a variable "
                                    f"(a table or iterator?); XLA cannot take it")
            values.append(tf.raw_ops.ReadVariableOp(resource=c, dtype=dtype).numpy())
        else:
            values.append(np.asarray(c))
    return values


def _variable_dtype(handle):
    """The dtype of the variable behind an eager resource handle (its handle data), or None."""
    try:
        data = handle._handle_data  # noqa: SLF001 -- TensorFlow's own record of a handle's dtype and shape
        if data is not None and data.is_set and data.shape_and_type:
            from tensorflow.python.framework import dtypes

            return dtypes.as_dtype(data.shape_and_type[0].dtype)
    except AttributeError:
        pass
    return None
