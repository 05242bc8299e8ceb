"""Shardy (``sdy``) annotations out of a jax.export portable artifact, with jaxlib's own MLIR.

JAX lowers with Shardy, so some ops carry ``sdy.*`` attributes even on one device: every LAPACK / FFI custom call
has an ``sdy.sharding_rule``, ``with_sharding_constraint`` becomes ``sdy.sharding_constraint``, and a mesh
becomes ``sdy.mesh``. byteir's MLIR has no ``sdy`` dialect, so such an artifact does not even deserialize there
("dialect 'sdy' does not implement the bytecode interface"). On one device these say nothing about what is
computed: the artifact is read in jaxlib's context (which knows ``sdy``), the annotations removed, and it is
written back as a portable artifact of the same StableHLO version, so the core reads it as it reads any other.
jaxlib's MLIR objects never leave this module: only bytes cross to the core's context.
"""

from __future__ import annotations

from byteir_core.compiler.importing import producer_string
from byteir_core.errors import FrontendError

#: sdy ops that return their operand on one device
_IDENTITY_OPS = ("sdy.sharding_constraint", "sdy.reshard")
#: sdy ops that only declare something (meshes) and go once nothing refers to them
_DECLARATIONS = ("sdy.mesh",)


def mentions_shardy(blob: bytes) -> bool:
    """Cheap pre-check: the dialect's name appears in the bytecode's string table."""
    return b"sdy" in blob


def strip_shardy(blob: bytes, where: str) -> bytes:
    # jax's own context factory registers every dialect jax emits (sdy included); jax is pinned below 0.11
    from jax._src.interpreters import mlir as jax_mlir
    from jaxlib.mlir import ir as jir
    from jaxlib.mlir.dialects import stablehlo as jstablehlo

    version = producer_string(blob).removeprefix("StableHLO_v")
    ctx = jax_mlir.make_ir_context()
    with ctx, jir.Location.unknown():
        try:
            module = jstablehlo.deserialize_portable_artifact(ctx, blob)
        except Exception as e:  # noqa: BLE001 -- the bindings raise plain exception types
            raise FrontendError(f"{where}: JAX's own StableHLO cannot read its portable artifact: "
                                f"{type(e).__name__}: {e}") from None
        identities, declarations, others = [], [], []

        def visit(op):
            op = op.operation
            if op.name in _IDENTITY_OPS and len(op.operands) == 1 and len(op.results) == 1:
                identities.append(op)
            elif op.name in _DECLARATIONS:
                declarations.append(op)
            elif op.name.startswith("sdy."):
                others.append(op.name)
            else:
                for name in [n for n in _names(op.attributes) if n.startswith("sdy.")]:
                    del op.attributes[name]
                for key in ("arg_attrs", "res_attrs"):
                    if key in op.attributes and op.name == "func.func":
                        op.attributes[key] = jir.ArrayAttr.get([_without_sdy(jir.DictAttr(d))
                                                               for d in op.attributes[key]])
            return jir.WalkResult.ADVANCE

        module.operation.walk(visit)
        if others:
            raise FrontendError(f"{where}: uses Shardy op(s) {', '.join(sorted(set(others)))} (shard_map or a "
                                f"multi-device sharding); byteir compiles single-device programs")
        for op in identities:
            op.results[0].replace_all_uses_with(op.operands[0])
            op.erase()
        for op in declarations:
            op.erase()
        for name in [n for n in _names(module.operation.attributes) if n.startswith("sdy.")]:
            del module.operation.attributes[name]
        return bytes(jstablehlo.serialize_portable_artifact(module, version or
                                                            jstablehlo.get_current_version()))


def _without_sdy(d):
    from jaxlib.mlir import ir as jir

    return jir.DictAttr.get({d[i].name: d[i].attr for i in range(len(d)) if not d[i].name.startswith("sdy.")})


def _names(attributes) -> list[str]:
    """Attribute names of an op (the bindings iterate names in some versions, NamedAttributes in others)."""
    return [a if isinstance(a, str) else a.name for a in attributes]
