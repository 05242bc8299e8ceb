"""How byteir uses the MLIR bindings: facts its passes' speed rests on."""

import importlib.abc
import sys

from byteir_core.mlir import ir, new_context


class _CountingFinder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.names: list[str] = []

    def find_spec(self, name, path, target=None):
        self.names.append(name)
        return None


def test_walking_stablehlo_ops_does_not_go_through_the_import_system_per_op():
    """The bindings look up a Python module for each op's dialect until one is found; the torch-mlir wheel has
    none for stablehlo, so every op wrapped cost a failed import (~80 us: DenseNet-121 spent 90 s of a 127 s
    compile there). byteir_core._dialects supplies empty modules, found once."""
    ctx = new_context()
    n = 500
    body = "".join(f"  %a{i} = stablehlo.add %x, %x : tensor<4xf32>\n" for i in range(n))
    m = ir.Module.parse(f"func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {{\n{body}  return %x : tensor<4xf32>\n}}",
                        ctx)
    block = m.body.operations[0].regions[0].blocks[0]
    assert sum(1 for _ in block.operations) == n + 1  # the first walk may load the (empty) module once
    finder = _CountingFinder()
    sys.meta_path.insert(0, finder)
    try:
        names = [op.operation.name for op in block.operations]
    finally:
        sys.meta_path.remove(finder)
    assert names.count("stablehlo.add") == n
    assert finder.names == [], finder.names[:5]
