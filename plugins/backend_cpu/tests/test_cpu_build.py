"""How kernels are built: on a pool of threads while the driver goes on (a failure there still names its
cluster), and contractions generated code runs (a matrix product inside a while loop) in a vectorizable order."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import byteir_core
from byteir_backend_cpu import codegen
from byteir_core.errors import TargetError

TWO_KERNELS = """func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %a = stablehlo.tanh %x : tensor<4x8xf32>
  %s = "stablehlo.sort"(%a) ({
  ^bb0(%p: tensor<f32>, %q: tensor<f32>):
    %lt = stablehlo.compare LT, %p, %q : (tensor<f32>, tensor<f32>) -> tensor<i1>
    stablehlo.return %lt : tensor<i1>
  }) {dimension = 1 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %e = stablehlo.exponential %s : tensor<4x8xf32>
  return %e : tensor<4x8xf32>
}"""


def test_a_kernel_build_that_fails_on_the_pool_names_its_cluster(monkeypatch):
    def fail(text, name, omp, unroll=None):
        raise TargetError(f"cpu codegen failed in LLVM: simulated for {name}")

    monkeypatch.setattr(codegen, "_build", fail)
    with pytest.raises(TargetError, match=r"backend 'cpu' failed to compile cluster cpu_c0 \(1 ops: stablehlo.tanh; "
                                          r"at .*simulated for cpu_c0"):
        byteir_core.compile(TWO_KERNELS, target="cpu")


def test_kernels_built_on_the_pool_run():
    art = byteir_core.compile(TWO_KERNELS, target="cpu")
    assert [s.callee for s in art.module.steps].count("cpu.native") == 2
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(art)(x), np.exp(np.sort(np.tanh(x), axis=1)), rtol=1e-6)


LOOP_DOT = """func.func @main(%h0: tensor<1x8x64xf32>, %w: tensor<64x64xf32>, %v: tensor<64x64xf32>) -> tensor<1x8x64xf32> {
  %c0 = stablehlo.constant dense<0> : tensor<i32>
  %c1 = stablehlo.constant dense<1> : tensor<i32>
  %n = stablehlo.constant dense<5> : tensor<i32>
  %r:2 = stablehlo.while(%i = %c0, %h = %h0) : tensor<i32>, tensor<1x8x64xf32>
   cond { %p = stablehlo.compare LT, %i, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
          stablehlo.return %p : tensor<i1> }
   do { %d = stablehlo.dot_general %h, %w, contracting_dims = [2] x [0] : (tensor<1x8x64xf32>, tensor<64x64xf32>) -> tensor<1x8x64xf32>
        %e = stablehlo.dot_general %h, %v, contracting_dims = [2] x [1] : (tensor<1x8x64xf32>, tensor<64x64xf32>) -> tensor<1x8x64xf32>
        %s = stablehlo.add %d, %e : tensor<1x8x64xf32>
        %t = stablehlo.tanh %s : tensor<1x8x64xf32>
        %i2 = stablehlo.add %i, %c1 : tensor<i32>
        stablehlo.return %i2, %t : tensor<i32>, tensor<1x8x64xf32> }
  return %r#1 : tensor<1x8x64xf32>
}"""


def test_kernels_with_control_flow_unroll_less():
    """LLVM's full unrolling of a while loop's vectorized body made an LSTM's kernel 20 times larger and slower
    to build: such kernels get a lower threshold, straight-line ones keep O3's."""
    from byteir_core.interfaces import Cluster

    loop = Cluster("c", "cpu", None, [], [], ["stablehlo.while"])
    flat = Cluster("c", "cpu", None, [], [], ["stablehlo.add", "stablehlo.tanh"])
    assert codegen.unroll_threshold(loop) == codegen.LOOP_UNROLL_THRESHOLD < codegen.unroll_threshold(flat)
    sizes = {}
    for cl in (loop, flat):
        from byteir_backend_cpu.prepare import prepare_cluster

        prepared = prepare_cluster(_cluster_of(LOOP_DOT))
        so = codegen._build(codegen.llvm_ir(codegen.lower_to_llvm_dialect(prepared)), "c", None,
                            codegen.unroll_threshold(cl))
        sizes[cl.op_names[0]] = len(so)
    assert sizes["stablehlo.while"] < sizes["stablehlo.add"], sizes


def _cluster_of(text):
    """The whole of a small program as one cpu cluster, as the driver would outline it."""
    from byteir_core.interfaces import Cluster
    from byteir_core.mlir import ir, new_context
    from byteir_core.dtypes import TensorSpec

    module = ir.Module.parse(text, new_context())
    main = module.body.operations[0]
    ftype = ir.FunctionType(ir.TypeAttr(main.attributes["function_type"]).value)
    ins = [TensorSpec.from_type(t) for t in ftype.inputs]
    outs = [TensorSpec.from_type(t) for t in ftype.results]
    return Cluster("c", "cpu", module, ins, outs, ["stablehlo.while"])


def test_contractions_in_a_loop_swap_only_when_a_row_of_b_streams(monkeypatch):
    """``h @ w`` (w read along its rows) gets the reduction loop moved out of the innermost place; ``h @ v.T``
    (both read along the reduction) keeps it innermost; the results match the interpreter."""
    swapped = []
    original = codegen._contraction_loops

    def spy(op):
        n = original(op)
        swapped.append(n)
        return n

    monkeypatch.setattr(codegen, "_contraction_loops", spy)
    art = byteir_core.compile(LOOP_DOT, target="cpu")
    assert art.report["ops_per_backend"].get("cpu", {}).get("stablehlo.while") == 1
    assert swapped.count(4) == 1, swapped  # h @ w only: h @ v.T stays as it was
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(s).astype(np.float32) * 0.2 for s in ((1, 8, 64), (64, 64), (64, 64))]
    expect = byteir_core.load(byteir_core.compile(LOOP_DOT, target="reference"))(*args)
    np.testing.assert_allclose(byteir_core.load(art)(*args), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_builds_kernels_on_a_pool_of_its_own():
    """The conformance runner forks workers after the parent has compiled: an executor inherited from the
    parent has no threads in the child, and a build queued on it would wait forever."""
    script = textwrap.dedent(f"""
        import os, numpy as np, byteir_core
        text = {TWO_KERNELS!r}
        byteir_core.compile(text, target="cpu")
        pid = os.fork()
        if pid == 0:
            art = byteir_core.compile(text.replace("tanh", "sine"), target="cpu")
            os._exit(0 if art.module.steps else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "child 0", r.stderr[-2000:]
