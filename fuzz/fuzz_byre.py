"""Fuzz the ByRE reader: bytes -> ``byteir_core.load`` (parse, verify, open providers, upload weights).

The first byte picks what the rest is: ``r`` the file as is (damage the integrity header must catch), ``b`` an
MLIR bytecode body and ``t`` a text body, each sealed with a correct header / digest line first (a file made
deliberately: what parsing itself must survive). Seeds are artifacts of a small program for the ``reference``
target (whose kernels are StableHLO portable artifacts, parsed again at load) in each form. Native-code artifacts (``cpu``) are not loaded: loading
one runs its code, which no reader can make safe (the README says to load only trusted artifacts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["byteir_core"]):
    import byteir_core
    import byteir_core.byre.container as container
    import byteir_core.byre.reader  # noqa: F401  (instrumented: imported here, before first use)
    import byteir_core.runtime.session  # noqa: F401
    from byteir_core.byre.format import BYRE_VERSION

NAME = "byre"

SEED_PROGRAM = """func.func @main(%x: tensor<4x16xf32>, %i: tensor<2xi32>) -> (tensor<4x8xf32>, tensor<2x16xf32>) {
  %w = stablehlo.constant dense<0.5> : tensor<16x8xf32>
  %d = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32>
  %t = stablehlo.tanh %d : tensor<4x8xf32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %a = stablehlo.slice %i [0:1] : (tensor<2xi32>) -> tensor<1xi32>
  %s = stablehlo.reshape %a : (tensor<1xi32>) -> tensor<i32>
  %g = stablehlo.dynamic_slice %x, %s, %c, sizes = [2, 16] : (tensor<4x16xf32>, tensor<i32>, tensor<i32>) -> tensor<2x16xf32>
  return %t, %g : tensor<4x8xf32>, tensor<2x16xf32>
}
"""


def seeds(d: Path) -> None:
    for t in ("reference", "asic_stub"):  # asic_stub: a second provider and device, when installed
        try:
            art = byteir_core.compile(SEED_PROGRAM, target=t)
        except byteir_core.ByteirError:
            continue
        sealed = art.to_bytes()
        (d / f"{t}.raw").write_bytes(b"r" + sealed)
        (d / f"{t}.body").write_bytes(b"b" + container.open_bytes(sealed, "<seed>", BYRE_VERSION).body)
        (d / f"{t}.text").write_bytes(b"t" + art.text(elide_payloads=False).encode())


def one_input(data: bytes) -> None:
    from harness import accept

    form, body = data[:1], data[1:]
    if form == b"b":
        data = container.wrap(body, BYRE_VERSION)
    elif form == b"t":
        data = container.wrap_text(body.decode("utf-8", errors="replace"), BYRE_VERSION)
    else:
        data = body
    accept(byteir_core.load, data)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from harness import main

    main(sys.modules[__name__])
