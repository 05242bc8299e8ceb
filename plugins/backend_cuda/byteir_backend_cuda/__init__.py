"""byteir's CUDA backend: see :mod:`byteir_backend_cuda.plugin`."""
