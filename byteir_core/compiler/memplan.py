"""Static memory planning: every intermediate buffer gets a fixed offset in its device's per-request arena.

Liveness is measured in steps: a buffer lives from the step that writes it first to the last step that
touches it or any alias (view) of it. Buffers of one device whose lifetimes do not overlap share bytes (first
fit); each device has an arena of its own, since one device cannot address another's memory.
"""

from __future__ import annotations

from ..byre.format import HOST, Buffer, ByreModule

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(bm: ByreModule) -> int:
    """Set ``arena_offset`` on every ``alloc`` buffer of ``bm`` and ``bm.arenas`` (device -> bytes); return (and
    set as ``arena_bytes``) the size of the host arena."""
    root = {}
    for b in bm.buffers:
        root[b.id] = root[b.source] if b.kind == "alias" else b.id
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, step in enumerate(bm.steps):
        for operand in step.operands:
            r = root[operand]
            first.setdefault(r, i)
            last[r] = i
    by_device: dict[str, list[Buffer]] = {}
    for b in bm.buffers:
        if b.kind == "alloc":
            by_device.setdefault(b.device, []).append(b)
    arenas = {d: _first_fit(by_device[d], first, last) for d in sorted(by_device, key=lambda d: (d != HOST, d))}
    bm.arenas = arenas
    bm.arena_bytes = arenas.get(HOST, 0)
    return bm.arena_bytes


def _first_fit(allocs: list[Buffer], first: dict[int, int], last: dict[int, int]) -> int:
    """Offsets for ``allocs`` (one arena) in order of first use; returns the arena size."""
    allocs = sorted(allocs, key=lambda b: (first.get(b.id, 0), -b.spec.nbytes))
    live: list[tuple[int, int, int]] = []  # (offset, size, last step)
    arena = 0
    for b in allocs:
        start = first.get(b.id, 0)
        live = [x for x in live if x[2] >= start]
        size = _align(max(b.spec.nbytes, 1))
        offset = 0
        for off, sz, _ in sorted(live):
            if offset + size <= off:
                break
            offset = max(offset, off + sz)
        b.arena_offset = offset
        live.append((offset, size, last.get(b.id, start)))
        arena = max(arena, offset + size)
    return arena
