"""``@pytest.mark.cpu("x86-64")``: the test's kernels are built for that LLVM CPU (``BYTEIR_CPU``), whatever CPU
runs the tests, so a machine with AVX-512 (and AVX512-BF16) also runs the code an AVX2 or baseline machine gets."""

import pytest

from byteir_backend_cpu.codegen import ISA_FLAGS, LEVEL_ISA
from byteir_backend_cpu.provider import host_isa


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu(name): build the test's cpu kernels for LLVM CPU `name` (BYTEIR_CPU)")


@pytest.fixture(autouse=True)
def _kernels_for_the_marked_cpu(request, monkeypatch):
    marker = request.node.get_closest_marker("cpu")
    if marker is None:
        return
    cpu = marker.args[0]
    missing = {ISA_FLAGS[f] for f in LEVEL_ISA[cpu]} - host_isa()
    if host_isa() and missing:
        pytest.skip(f"kernels for {cpu} need {', '.join(sorted(missing))}, which this CPU lacks")
    monkeypatch.setenv("BYTEIR_CPU", cpu)
