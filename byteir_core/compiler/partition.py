"""Capability-based partitioning: each op of ``@main`` goes to a backend of the target's fallback chain.

For each op, the first target in the chain that has a backend claiming the op wins; among that target's
backends the highest claim priority wins. Consecutive ops of one backend form a cluster.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..errors import PluginLoadError, TargetError, UnsupportedOp, UnsupportedOpError
from ..interfaces import Backend
from ..plugins import Registry

#: Targets that later plugins provide, with the distribution that provides each. Naming one that is not
#: installed falls back to ``reference`` instead of failing, so ``--target cpu`` works with only the core
#: installed; the report notes it and the compile warns (:class:`ByteirTargetWarning`), naming what to install.
WELL_KNOWN_TARGETS = {"cpu": "byteir-backend-cpu", "cuda": "byteir-backend-cuda"}
REFERENCE = "reference"


def target_names(registry: Registry) -> list[str]:
    """What a user names as a target: every backend that is not a member of another target (``cpu_blas`` and
    ``cpu_host`` serve ``cpu``), every target a backend serves, and the well-known ones (which fall back to the
    host with a warning when not installed)."""
    names = {t for b in registry.backends.values() for t in getattr(b, "targets", ())}
    names |= {b.name for b in registry.backends.values() if not getattr(b, "targets", ())}
    return sorted(names | set(WELL_KNOWN_TARGETS))


def check_target(target, registry: Registry) -> None:
    """Raise :class:`TargetError` for a target nothing serves, listing the valid ones (and the close match)."""
    served = _targets(registry)
    if isinstance(target, str) and target not in served:
        broken = next((p for p in registry.plugins if p.name == target and p.status in ("failed", "incompatible")),
                      None)
        if broken is not None:  # installed, but it did not load: say why instead of "not installed"
            raise PluginLoadError(broken.name, f"{broken.status_text()}; it provides target {target!r} "
                                  f"({broken.distribution} {broken.version}; `byteir list-plugins` shows every plugin)")
    if isinstance(target, str) and (target in served or target in WELL_KNOWN_TARGETS):
        return
    import difflib

    names = target_names(registry)
    members = sorted(set(served) - set(names))
    guess = {"gpu": "cuda", "nvidia": "cuda", "host": "cpu", "x86": "cpu", "x86_64": "cpu"}.get(
        str(target).lower()) or next(iter(difflib.get_close_matches(str(target), names, n=1)), None)
    raise TargetError(f"unknown target {target!r}" + (f" (did you mean {guess!r}?)" if guess else "")
                      + f"; targets: {', '.join(names)}"
                      + (f" (a single backend may also be named: {', '.join(members)})" if members else ""))


def fallback_chain(target: str, registry: Registry) -> tuple[list[str], list[str]]:
    """(chain of target names ending in ``reference``, notes for the report)."""
    check_target(target, registry)
    served = _targets(registry)
    notes = []
    chain: list[str] = []
    queue = [target]
    while queue:
        t = queue.pop(0)
        if t in chain:
            continue
        chain.append(t)
        members = served.get(t, [])
        if not members:
            install = f" (pip install {WELL_KNOWN_TARGETS[t]})" if t in WELL_KNOWN_TARGETS else ""
            notes.append(f"no installed backend serves target {t!r}{install}; its ops fall back to "
                         f"{'the rest of the chain' if t != REFERENCE else 'nothing'}")
        for b in members:
            queue.extend(b.fallback)
    if REFERENCE in chain:
        chain.remove(REFERENCE)
    chain.append(REFERENCE)
    return chain, notes


def missing_distribution(target: str, registry: Registry) -> str | None:
    """The distribution to install when ``target`` is a well-known target no installed backend serves."""
    if target in WELL_KNOWN_TARGETS and not _targets(registry).get(target):
        return WELL_KNOWN_TARGETS[target]
    return None


def target_device(target: str, registry: Registry) -> str:
    """Where a program compiled for ``target`` takes its arguments and leaves its results: the device of the
    backend named like the target, else of the first backend serving it, else the host."""
    backend = registry.backends.get(target) or next(
        (b for b in registry.backends.values() if target in b.serves()), None)
    return backend.device if backend is not None else "cpu"


def _targets(registry: Registry) -> dict[str, list[Backend]]:
    served: dict[str, list[Backend]] = defaultdict(list)
    for b in registry.backends.values():
        for t in b.serves():
            served[t].append(b)
    return served


def location_of(op) -> str:
    """``file:line:col`` for a file location; the location's own text (torch's source lines, names) otherwise."""
    from ..mlir import location_text

    loc = location_text(op.location)
    return loc[4:-1] if loc.startswith("loc(") and loc.endswith(")") else loc


def _claim(backend: Backend, op) -> int | None:
    try:
        return backend.claims(op)
    except Exception:  # noqa: BLE001 -- a plugin's claim that raises is treated as "no"
        return None


def _has_dynamic_shape(op) -> bool:
    from ..mlir import ir

    return any(isinstance(v.type, ir.ShapedType) and not v.type.has_static_shape
               for v in list(op.operands) + list(op.results))


@dataclass
class Partition:
    chain: list[str]
    assignment: dict = field(default_factory=dict)  # op -> backend name
    notes: list[str] = field(default_factory=list)


def partition_by_capability(ops, target: str, registry: Registry) -> Partition:
    """Assign every op in ``ops`` (not constants) to a backend, or raise one error listing every gap."""
    chain, notes = fallback_chain(target, registry)
    served = _targets(registry)
    part = Partition(chain, notes=notes)
    missing: dict[str, list] = defaultdict(list)
    for op in ops:
        chosen = None
        for t in chain:
            best = None
            for b in served.get(t, []):
                p = _claim(b, op)
                if p is not None and (best is None or p > best[0]):
                    best = (p, b.name)
            if best:
                chosen = best[1]
                break
        if chosen is None:
            missing[op.name].append(op)
        else:
            part.assignment[op] = chosen
    if missing:
        gaps = []
        for name, found in missing.items():
            could = sorted({b.name for b in registry.backends.values() if _claim(b, found[0]) is not None})
            dynamic = any(_has_dynamic_shape(o) for o in found)
            gaps.append(UnsupportedOp(name, len(found), [location_of(o) for o in found], could,
                                      "dynamic shapes: give static ones with --input-shape" if dynamic else ""))
        raise UnsupportedOpError(target, chain, gaps)
    return part


def form_clusters(ops, assignment: dict, max_ops: dict[str, int | None] | None = None,
                  starts=None) -> list[tuple[str, list]]:
    """Maximal runs of consecutive ops assigned to the same backend, in program order, each at most
    ``max_ops[backend]`` ops long. A reshape inside a run whose result only other backends (or the return)
    read becomes its own cluster after the run: a view, instead of a copy the run writes out. ``starts(op,
    backend)`` True begins a new cluster at ``op`` (:meth:`Backend.starts_cluster`)."""
    max_ops = max_ops or {}
    clusters: list[tuple[str, list]] = []
    deferred: list = []  # reshapes only other backends read: views of their own, after the current run

    def flush():
        for r in deferred:
            clusters.append((assignment[r], [r]))
        deferred.clear()

    for op in ops:
        b = assignment[op]
        limit = max_ops.get(b)
        if clusters and clusters[-1][0] == b and (limit is None or len(clusters[-1][1]) < limit) and \
                not (starts is not None and starts(op, b)):
            if getattr(op, "name", None) == "stablehlo.reshape" and _read_only_elsewhere(op, b, assignment):
                deferred.append(op)  # inside the run it would be copied out as a cluster result
                continue
            clusters[-1][1].append(op)
        else:
            flush()
            clusters.append((b, [op]))
    flush()
    return clusters


def merge_consumer_clusters(clusters: list[tuple[str, list]], producers, max_ops: dict[str, int | None] | None = None,
                            starts=None, is_view=None) -> list[tuple[str, list]]:
    """Clusters of :func:`form_clusters` joined across other backends' clusters when nothing between them is in
    the way: a cluster that reads values another cluster of its backend computes, and reads nothing computed
    after that cluster, moves up into it.

    Program order splits a backward graph's elementwise work at every GEMM: in a SwiGLU backward the ops after
    ``dot(dY * silu(g), W)`` do not use that product, yet the run stopped at it, and the first kernel wrote out
    the gate, its sigmoid and ``dY * up`` for the second to read back. Joined, they are one kernel with the two
    results the GEMMs need. ``producers(op)`` lists the ops whose results ``op`` reads; a cluster holding an op
    that ``starts(op, backend)`` (a library call with its epilogue) and ``is_view(ops)`` clusters (a lone
    reshape: an alias, no kernel) are neither moved nor joined; ``max_ops`` caps the size as in
    :func:`form_clusters`. Dependencies keep their order: the moved ops only read what is computed by then."""
    max_ops = max_ops or {}
    out: list[tuple[str, list]] = []
    where: dict = {}  # op -> index of its cluster in ``out``
    frozen: list[bool] = []  # clusters nothing joins

    def fixed(b, ops):
        return (is_view is not None and is_view(ops)) or (starts is not None and any(starts(o, b) for o in ops))

    for b, ops in clusters:
        mine = set(ops)
        read = {where[p] for op in ops for p in producers(op) if p not in mine and p in where}
        is_fixed = fixed(b, ops)
        target = None
        if read and not is_fixed:
            limit = max_ops.get(b)
            j = max(read)  # the last cluster it reads from: it cannot move above that one
            if out[j][0] == b and not frozen[j] and (limit is None or len(out[j][1]) + len(ops) <= limit):
                target = j
        if target is None:
            out.append((b, list(ops)))
            frozen.append(is_fixed)
            target = len(out) - 1
        else:
            out[target][1].extend(ops)
        for op in ops:
            where[op] = target
    return out


def _read_only_elsewhere(op, backend: str, assignment: dict) -> bool:
    users = [getattr(u.owner, "operation", u.owner) for u in op.results[0].uses]
    return bool(users) and all(assignment.get(u, None) != backend for u in users)


def ops_per_backend(assignment: dict) -> dict[str, dict[str, int]]:
    out: dict[str, Counter] = defaultdict(Counter)
    for op, b in assignment.items():
        out[b][op.name] += 1
    return {b: dict(sorted(c.items())) for b, c in sorted(out.items())}
