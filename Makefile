# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast test-gpu fuzz bench-setup bench clean

setup: $(STAMP)

# torch first, pinned: a looser requirement would pull a multi-GB CUDA build (README, "Set-up: two commands").
$(STAMP): pyproject.toml $(addsuffix pyproject.toml,$(PLUGINS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' $(foreach p,$(PLUGINS),-e '$(p)[test]')
	touch $(STAMP)

demo: setup
	$(VENV)/bin/byteir list-plugins
	$(VENV)/bin/byteir compile examples/mlp.mlir -o out/mlp.byre --target cpu --verbose
	$(VENV)/bin/byteir run out/mlp.byre
	$(VENV)/bin/byteir compile examples/mlp.mlir -o out/mlp_asic.byre --target asic_stub --verbose
	$(VENV)/bin/byteir run out/mlp_asic.byre
	$(VENV)/bin/byteir inspect out/mlp_asic.byre --summary-only
	$(VENV)/bin/byteir compile examples/mlp.mlir -o out/mlp_cuda.byre --target cuda --gpu-arch sm_80,sm_90
	BYTEIR_CUDA_INTERPRET=1 $(VENV)/bin/byteir run out/mlp_cuda.byre
	$(PY) examples/torch_cnn.py

test: setup
	$(PY) -m pytest -q

# the quick loop: everything but the model-zoo sized tests
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not gpu"

# On a machine with an NVIDIA GPU: the cuda zoo, streams, CUDA graphs and flash attention against torch CUDA,
# then the GPU benchmark (byteir vs torch eager and Inductor, one process). It needs a Python whose torch is a
# CUDA build and which has CuPy (setup's .venv has the CPU torch): `make test-gpu GPU_PYTHON=python3` with
# byteir and its plugins installed there (pip install -e . -e plugins/backend_cuda ...).
GPU_PYTHON ?= $(PY)
test-gpu:
	$(GPU_PYTHON) -m pytest -q -m gpu plugins/backend_cuda/tests
	$(GPU_PYTHON) benchmarks/cuda_models.py

# Long fuzz runs (`make test` runs each harness briefly): FUZZ_RUNS executions per harness, findings written to
# out/fuzz/<harness>/ (keep each as a case under tests/fuzz_regressions/<harness>/ once fixed).
FUZZ_RUNS ?= 1000000
fuzz: setup
	$(PY) fuzz/run.py byre --runs $(FUZZ_RUNS)
	$(PY) fuzz/run.py stablehlo --runs $(FUZZ_RUNS)
	$(PY) fuzz/run.py pt2 --runs $(FUZZ_RUNS)
	$(PY) fuzz/run.py onnx --runs $(FUZZ_RUNS)

# the peers the CPU benchmark compares against (not needed for tests)
bench-setup: setup
	$(PY) -m pip install -q --disable-pip-version-check onnx onnxruntime iree-base-compiler iree-base-runtime

# OPENBLAS_CORETYPE/L2_SIZE (set on the shared dev machines for old OpenBLAS builds) pin NumPy's BLAS to
# slower kernels: unset them for the benchmark only, never for tests or CI.
bench: bench-setup
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/runtime_dispatch.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/cpu_models.py

clean:
	rm -rf $(VENV) out build *.egg-info
