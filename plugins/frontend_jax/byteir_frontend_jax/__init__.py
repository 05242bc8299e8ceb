"""byteir's JAX frontend: ``jax.jit`` functions, ``jax.export.Exported`` and serialized exports -> StableHLO."""

__version__ = "0.1.0"
