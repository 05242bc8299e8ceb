"""The cuda tests run the kernels the compiler emits through Triton's interpreter on the host, which Triton
decides on when it is first imported: set it before any test module imports it."""

import os

os.environ["TRITON_INTERPRET"] = "1"

import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # cuda_check, shared by the test modules here
