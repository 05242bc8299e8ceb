"""A cluster that returns one buffer twice compiles and runs (it crashed the process in
buffer-results-to-out-params before each result got its own buffer: codegen._distinct_results)."""

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent('''
    import numpy as np
    import byteir_core
    # the two selects fold to the same value once lowered to linalg: the kernel returns one buffer twice
    SRC = """func.func @main(%a: tensor<3x6xf32>, %b: tensor<3x6xf32>) -> (tensor<3x6xf32>, tensor<3x6xf32>) {
      %t = stablehlo.constant dense<true> : tensor<3x6xi1>
      %z = stablehlo.constant dense<0.0> : tensor<3x6xf32>
      %0 = stablehlo.add %a, %b : tensor<3x6xf32>
      %1 = stablehlo.tanh %0 : tensor<3x6xf32>
      %2 = stablehlo.select %t, %1, %z : tensor<3x6xi1>, tensor<3x6xf32>
      %3 = stablehlo.select %t, %1, %a : tensor<3x6xi1>, tensor<3x6xf32>
      return %2, %3 : tensor<3x6xf32>, tensor<3x6xf32>
    }"""
    art = byteir_core.compile(SRC, target="cpu", progress=False)
    a = np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 6)
    b = np.linspace(0, 2, 18, dtype=np.float32).reshape(3, 6)
    first, second = byteir_core.load(art).run(a, b)
    want = np.tanh(a + b)
    np.testing.assert_allclose(first, want, rtol=1e-6)
    np.testing.assert_allclose(second, want, rtol=1e-6)
    first[...] = 0  # two buffers, not one
    assert np.abs(second).sum() > 1
    print("ok")
''')


def test_one_value_returned_twice_gets_two_buffers():
    r = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
