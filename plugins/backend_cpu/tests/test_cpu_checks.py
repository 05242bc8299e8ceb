"""``BYTEIR_CPU_CHECKS=1``: generated kernels check every index against its bounds and abort naming the op.

An out-of-bounds read cannot be written in valid StableHLO (gather and dynamic_slice clamp their indices), so
the failing kernel is a hand-written cluster with an unclamped ``tensor.extract``, compiled by the backend's
code generator and run through its provider, in a child process: the check aborts the process."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import byteir_core
from index_clamping import cases, in_while, program
from programs import MLP, mlp_numpy

OOB = textwrap.dedent('''
    import sys
    import numpy as np
    from byteir_core.dtypes import TensorSpec
    from byteir_core.interfaces import Cluster, Kernel
    from byteir_core.mlir import ir, new_context
    from byteir_backend_cpu.codegen import ENTRY, compile_to_shared_object
    from byteir_backend_cpu.provider import FORMAT, CpuProvider

    SRC = """func.func @main(%a: tensor<4xf32>, %i: tensor<i64>) -> tensor<f32> {
      %j = tensor.extract %i[] : tensor<i64>
      %k = arith.index_cast %j : i64 to index
      %v = tensor.extract %a[%k] : tensor<4xf32>
      %r = tensor.from_elements %v : tensor<f32>
      return %r : tensor<f32>
    }"""
    with new_context():
        m = ir.Module.parse(SRC)
    cluster = Cluster("cpu_c7", "cpu", m, [TensorSpec((4,), "f32"), TensorSpec((), "i64")],
                      [TensorSpec((), "f32")], ["tensor.extract"])
    so, _, _ = compile_to_shared_object(cluster)
    fn = CpuProvider().load("cpu.native", Kernel(FORMAT, so, ENTRY), {})
    a, out = np.arange(4, dtype=np.float32) * 10, np.zeros((), np.float32)
    for i in (3, int(sys.argv[1])):
        fn([a, np.array(i, np.int64)], [out])
        print(f"a[{i}] = {float(out)}", flush=True)
''')


def _run_oob(index: int, checks: bool) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "BYTEIR_CPU_CHECKS": "1" if checks else "0"}
    return subprocess.run([sys.executable, "-c", OOB, str(index)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_an_out_of_bounds_read_aborts_naming_the_op_and_kernel():
    r = _run_oob(4, checks=True)
    assert r.returncode != 0 and "a[3] = 30.0" in r.stdout and "a[4]" not in r.stdout, (r.stdout, r.stderr)
    assert "byteir cpu kernel cpu_c7 (BYTEIR_CPU_CHECKS=1): ERROR: Runtime op verification failed" in r.stderr
    assert "memref.load" in r.stderr and "out-of-bounds access" in r.stderr, r.stderr


def test_without_checks_the_same_read_goes_unnoticed():
    r = _run_oob(4, checks=False)
    assert r.returncode == 0 and "a[3] = 30.0" in r.stdout and "a[4] = " in r.stdout, (r.stdout, r.stderr)


def _compile(text, monkeypatch, checks: bool):
    monkeypatch.setenv("BYTEIR_CPU_CHECKS", "1" if checks else "0")
    return byteir_core.load(byteir_core.compile(text, target="cpu").to_bytes())


def test_checked_kernels_compute_the_same():
    """No false alarms where indices are data (clamped gathers and dynamic slices, at top level and in a while
    loop whose scatter is a generated loop), and the checked MLP gives the unchecked one's result."""
    mp = pytest.MonkeyPatch()
    try:
        x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
        np.testing.assert_allclose(_compile(MLP, mp, True)(x), mlp_numpy(x), rtol=1e-5, atol=1e-6)
        rng = np.random.default_rng(3)
        for op, case, nested in [("gather", "window2d", False), ("dynamic_slice", "2d", False),
                                 ("dynamic_update_slice", "whole_dim", True), ("scatter_add", "window2d", True)]:
            text = program(op, case, "i64")
            text = in_while(text) if nested else text
            checked, plain = _compile(text, mp, True), _compile(text, mp, False)
            for inputs, _ in cases(op, case, "i64", rng, n=6):
                np.testing.assert_array_equal(checked.run(*inputs)[0], plain.run(*inputs)[0])
    finally:
        mp.undo()


def test_checks_are_in_the_code_only_when_asked(monkeypatch):
    from byteir_core.mlir import ir, new_context

    from byteir_backend_cpu.codegen import lower_to_llvm_dialect
    from byteir_core.dtypes import TensorSpec
    from byteir_core.interfaces import Cluster

    src = """func.func @main(%a: tensor<8xf32>, %i: tensor<i32>) -> tensor<2xf32> {
      %s = stablehlo.dynamic_slice %a, %i, sizes = [2] : (tensor<8xf32>, tensor<i32>) -> tensor<2xf32>
      return %s : tensor<2xf32>
    }"""
    for checks, threads in [(False, False), (True, False), (True, True)]:
        with new_context():
            m = ir.Module.parse(src)
        cluster = Cluster("c", "cpu", m, [TensorSpec((8,), "f32"), TensorSpec((), "i32")], [TensorSpec((2,), "f32")],
                          ["stablehlo.dynamic_slice"])
        text = str(lower_to_llvm_dialect(cluster, threads=threads, checks=checks))
        assert ("@assert_msg" in text and "llvm.call @abort" in text) == checks


TEMPORARY = textwrap.dedent('''
    import numpy as np
    from byteir_core.dtypes import TensorSpec
    from byteir_core.interfaces import Cluster, Kernel
    from byteir_core.mlir import ir, new_context
    from byteir_backend_cpu.codegen import ENTRY, compile_to_shared_object
    from byteir_backend_cpu.provider import FORMAT, CpuProvider

    # %r adds a to its own uninitialized init (a bug): %r is a temporary of the kernel, then summed
    import sys
    SRC = """func.func @main(%a: tensor<4xf32>) -> tensor<f32> {
      %e = tensor.empty() : tensor<4xf32>
      FILL
      %r = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>],
                           iterator_types = ["parallel"]} ins(%a : tensor<4xf32>) outs(%e : tensor<4xf32>) {
      ^bb0(%x: f32, %acc: f32):
        %s = arith.addf %x, %acc : f32
        linalg.yield %s : f32
      } -> tensor<4xf32>
      %z = arith.constant 0.0 : f32
      %e2 = tensor.empty() : tensor<f32>
      %f = linalg.fill ins(%z : f32) outs(%e2 : tensor<f32>) -> tensor<f32>
      %t = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> ()>],
                           iterator_types = ["reduction"]} ins(%r : tensor<4xf32>) outs(%f : tensor<f32>) {
      ^bb0(%x: f32, %acc: f32):
        %s = arith.addf %x, %acc : f32
        linalg.yield %s : f32
      } -> tensor<f32>
      return %t : tensor<f32>
    }"""
    # "fixed": the temporary is zeroed before the sum reads it
    fill = ("%zero = arith.constant 0.0 : f32\\n%e0 = linalg.fill ins(%zero : f32) outs(%e : tensor<4xf32>) "
            "-> tensor<4xf32>") if sys.argv[1] == "fixed" else ""
    SRC = SRC.replace("FILL", fill)
    if fill:
        SRC = SRC.replace("outs(%e : tensor<4xf32>) {", "outs(%e0 : tensor<4xf32>) {")
    with new_context():
        m = ir.Module.parse(SRC)
    cluster = Cluster("c", "cpu", m, [TensorSpec((4,), "f32")], [TensorSpec((), "f32")], ["linalg.generic"])
    so, _, _ = compile_to_shared_object(cluster)
    fn = CpuProvider().load("cpu.native", Kernel(FORMAT, so, ENTRY), {})
    out = np.zeros((), np.float32)
    fn([np.ones(4, np.float32)], [out])
    print(float(out))
''')


@pytest.mark.parametrize("env", ["BYTEIR_POISON", "BYTEIR_CPU_CHECKS"])
def test_a_kernel_reading_its_own_unwritten_temporary_gives_nan(env):
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("BYTEIR_POISON", "BYTEIR_CPU_CHECKS")}
    r = subprocess.run([sys.executable, "-c", TEMPORARY, "buggy"], capture_output=True, text=True, timeout=300,
                       env={**base, env: "1"})
    assert r.returncode == 0 and r.stdout.strip() == "nan", (r.stdout, r.stderr)
    # the same kernel with its temporary written first is untouched by the poison (without poison the buggy one
    # reads whatever malloc left there, which may itself be a NaN: glibc writes a random key into freed chunks)
    r = subprocess.run([sys.executable, "-c", TEMPORARY, "fixed"], capture_output=True, text=True, timeout=300,
                       env={**base, env: "1"})
    assert r.returncode == 0 and r.stdout.strip() == "4.0", (r.stdout, r.stderr)


@pytest.mark.parametrize("ty,bits,np_type", [("f32", "0x7FC00000", np.uint32), ("f32", "0xFFFFFFFF", np.uint32),
                                             ("f32", "0x7F800001", np.uint32), ("f64", "0xFFF0000000000001", np.uint64),
                                             ("f16", "0xFE01", np.uint16), ("bf16", "0xFFC1", np.uint16)])
def test_nan_constants_keep_their_bits(ty, bits, np_type):
    """NaN constants reach llvmlite as LLVM 22 reads them (MLIR's LLVM prints +qnan, -nan(0x...), +snan(0x...),
    which llvmlite refused: any kernel holding a NaN constant failed to compile)."""
    text = f"""func.func @main(%x: tensor<4x{ty}>) -> tensor<4x{ty}> {{
      %c = stablehlo.constant dense<{bits}> : tensor<4x{ty}>
      %z = stablehlo.constant dense<0.0> : tensor<4x{ty}>
      %p = stablehlo.compare GT, %x, %z : (tensor<4x{ty}>, tensor<4x{ty}>) -> tensor<4xi1>
      %y = stablehlo.select %p, %c, %x : tensor<4xi1>, tensor<4x{ty}>
      return %y : tensor<4x{ty}>
    }}"""
    from byteir_core.dtypes import to_numpy

    x = np.array([1, -1, 2, -2], to_numpy(ty))
    art = byteir_core.compile(text, target="cpu")
    assert "reference" not in art.report["ops_per_backend"]
    got = byteir_core.load(art.to_bytes())(x).view(np_type)
    want = int(bits, 16)
    assert [int(v) for v in got[[0, 2]]] == [want, want]
    np.testing.assert_array_equal(got[[1, 3]], x[[1, 3]].view(np_type))


def test_a_checked_kernel_refuses_operands_of_other_shapes(monkeypatch):
    """The kernel reads its sizes as constants: a smaller buffer would be overrun without a bounds check firing."""
    from byteir_core.dtypes import TensorSpec
    from byteir_core.errors import ProviderError
    from byteir_core.interfaces import Cluster, Kernel
    from byteir_core.mlir import ir, new_context

    from byteir_backend_cpu.codegen import ENTRY, compile_to_shared_object
    from byteir_backend_cpu.provider import FORMAT, CpuProvider

    src = """func.func @main(%a: tensor<4x8xf32>, %s: tensor<f32>) -> tensor<4x8xf32> {
      %b = stablehlo.broadcast_in_dim %s, dims = [] : (tensor<f32>) -> tensor<4x8xf32>
      %r = stablehlo.add %a, %b : tensor<4x8xf32>
      return %r : tensor<4x8xf32>
    }"""
    specs = [TensorSpec((4, 8), "f32"), TensorSpec((), "f32")]
    out = np.zeros((4, 8), np.float32)
    for checks in (True, False):
        monkeypatch.setenv("BYTEIR_CPU_CHECKS", "1" if checks else "0")
        with new_context():
            m = ir.Module.parse(src)
        so, _, _ = compile_to_shared_object(Cluster("c3", "cpu", m, specs, specs[:1], ["stablehlo.add"]))
        fn = CpuProvider().load("cpu.native", Kernel(FORMAT, so, ENTRY), {})
        fn([np.ones((4, 8), np.float32), np.array(2, np.float32)], [out])
        np.testing.assert_array_equal(out, 3)
        if checks:
            with pytest.raises(ProviderError, match=r"compiled for operands \[\(4, 8\), \(\), \(4, 8\)\], got "
                                                    r"\[\(2, 8\), \(\), \(4, 8\)\]"):
                fn([np.ones((2, 8), np.float32), np.array(2, np.float32)], [out])
