"""Built-in ``hlo`` pass groups: run on StableHLO before partitioning, in ``order``.

The StableHLO passes this MLIR build exposes are limited (``stablehlo-aggressive-simplification`` and
``-folder`` are not registered in the wheel), so constant folding of whole ops is done by our own
``fold-constants`` group, which evaluates small all-constant ops with the reference interpreter.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..interfaces import PassGroup
from .constant_folding import arith_constants_to_stablehlo, fold_constants
from .resources import materialize_resources
from .layout import nhwc_convolutions
from .simplify import fold_conv_affine, rematerialize_broadcasts, simplify

BYTEIR_PLUGIN_API = "1.0"

GROUPS = [
    PassGroup("legalize", "hlo", 0,
              pipeline="func.func(chlo-legalize-to-stablehlo),func.func(stablehlo-legalize-deprecated-ops),"
                       "func.func(stablehlo-legalize-composite-to-call)",
              description="CHLO and deprecated StableHLO ops to current StableHLO"),
    PassGroup("arith-constants", "hlo", 5, run=arith_constants_to_stablehlo,
              description="tensor arith.constant ops to stablehlo.constant"),
    PassGroup("materialize-resources", "hlo", 6, run=materialize_resources,
              description="dense_resource constants (e.g. torch-mlir weights) to dense constants"),
    PassGroup("inline", "hlo", 10, pipeline="inline,symbol-dce",
              description="inline calls into @main and drop dead private functions"),
    PassGroup("shape-refinement", "hlo", 20,
              pipeline="stablehlo-refine-shapes,func.func(stablehlo-canonicalize-dynamism)",
              description="propagate static shapes from the arguments through the program"),
    PassGroup("canonicalize", "hlo", 30, pipeline="canonicalize",
              description="MLIR canonicalization patterns and op folders"),
    PassGroup("simplify", "hlo", 35, run=simplify,
              description="algebraic rewrites, e.g. x ** 2 -> x * x"),
    PassGroup("fold-constants", "hlo", 40, run=fold_constants,
              description="evaluate small ops whose operands are all constants"),
    PassGroup("fold-conv-affine", "hlo", 45, run=fold_conv_affine,
              description="per-channel scale and shift after a convolution (inference BatchNorm) folded into "
                          "its constant weights and one bias add"),
    PassGroup("nhwc-convolutions", "hlo", 47, run=nhwc_convolutions,
              description="2-D NCHW convolutions made channels-last, the transposes moved through the ops "
                          "between them until they cancel"),
    PassGroup("cse", "hlo", 50, pipeline="func.func(stablehlo-canonicalize-dynamism),cse,canonicalize",
              description="common subexpression elimination (and dynamic ops whose shapes folded to "
                          "constants made static)"),
    PassGroup("rematerialize", "hlo", 60, run=rematerialize_broadcasts,
              description="a broadcast used by several ops copied next to each (fused there, never written "
                          "out), identity broadcasts removed"),
]


@hookimpl
def byteir_register_pass_groups(register):
    for g in GROUPS:
        register(g)
