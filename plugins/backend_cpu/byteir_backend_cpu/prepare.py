"""Rewrites the cpu backend applies to its copy of a cluster before code generation (``codegen.py``).

Each rewrite turns an op that ``stablehlo-legalize-to-linalg`` (or LLVM) in this build cannot lower into ops it
can: control flow into SCF (``control_flow.py``), scatter into an SCF loop (``scatter_loops.py``), ``cbrt``
into ``power`` plus a Newton step, batch norm into elementwise math, optimization barriers dropped
(``expand.py``). The cluster the driver handed over is never modified: the rewrites work on a copy.
"""

from __future__ import annotations

import dataclasses

from byteir_core.interfaces import Cluster
from byteir_core.mlir import clone_module, ir

from .control_flow import CONTROL_FLOW, control_flow_to_scf
from .expand import EXPANDED, expand_ops
from .scatter_loops import scatters_to_loops

NEEDS_REWRITE = frozenset(CONTROL_FLOW) | frozenset(EXPANDED) | {"stablehlo.scatter"}


def _walk_names(op, out: set) -> None:
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                out.add(inner.operation.name)
                _walk_names(inner.operation, out)


def prepare_cluster(cluster: Cluster) -> Cluster:
    """The cluster itself when nothing needs rewriting, else a copy with a rewritten module."""
    names: set = set()
    _walk_names(cluster.module.operation, names)
    if not names & NEEDS_REWRITE:
        return cluster
    module = clone_module(cluster.module)
    with module.context, ir.Location.unknown():
        if names & set(EXPANDED):
            expand_ops(module)
        if "stablehlo.scatter" in names:
            scatters_to_loops(module)
        if names & set(CONTROL_FLOW):
            control_flow_to_scf(module)
    if not module.operation.verify():
        raise ValueError("cpu backend: rewriting the cluster left an invalid module")
    return dataclasses.replace(cluster, module=module)
