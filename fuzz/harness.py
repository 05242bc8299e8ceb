"""Shared pieces of byteir's fuzz harnesses (atheris, i.e. libFuzzer driving Python).

Each harness module defines ``NAME``, ``seeds(dir)`` (writes a starting corpus) and ``one_input(data)``, which
feeds the bytes to a public entry point and lets only the errors byteir documents through (``ByteirError``).
Anything else escaping is a finding: atheris stops, prints the traceback and writes the input to the artifact
folder; a crash or hang inside native code (MLIR, torch) is caught by libFuzzer the same way.

Run one: ``python fuzz/run.py byre --runs 1000000`` (see fuzz/run.py).
"""

from __future__ import annotations

import sys


def accept(fn, data: bytes) -> None:
    """Call ``fn(data)``; a documented byteir error is an accepted answer to bad input, anything else is not."""
    from byteir_core.errors import ByteirError

    try:
        fn(data)
    except ByteirError:
        pass


def main(module) -> None:
    """The libFuzzer entry: ``python fuzz/fuzz_X.py [libFuzzer flags] CORPUS_DIR``."""
    import atheris

    atheris.Setup(sys.argv, lambda data: module.one_input(data))
    atheris.Fuzz()
