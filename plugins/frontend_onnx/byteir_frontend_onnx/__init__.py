"""byteir's ONNX frontend: ONNX models to StableHLO (:mod:`.importer`), and an ``onnx.backend`` (:mod:`.backend`).

    byteir compile model.onnx -o model.byre --target cpu --input-shape input=1x3x224x224
    byteir_core.compile("model.onnx")            # or bytes (frontend="onnx"), or an onnx.ModelProto
"""

__version__ = "0.3.0"
