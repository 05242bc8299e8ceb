"""Out-of-range start indices in the reference interpreter (the oracle the backends' clamping tests also compare
against): gather, dynamic_slice and dynamic_update_slice clamp as the StableHLO spec says, scatter skips update
elements that fall outside, for negative, huge and extreme i32/i64 indices and unsigned ones (cases in
``index_clamping.py``, checked against NumPy written from the spec); the backends' tests are
``plugins/backend_cpu/tests/test_cpu_index_clamping.py`` and
``plugins/backend_cuda/tests/test_cuda_index_clamping.py``."""

import numpy as np
import pytest

import byteir_core
from index_clamping import CASES, adversarial, assert_matches, cases, gather_spec, in_while, program


@pytest.mark.parametrize("idx_type", ["i32", "i64"])
@pytest.mark.parametrize("op,case", CASES)
def test_reference_follows_the_spec(op, case, idx_type):
    rng = np.random.default_rng(7)
    art = byteir_core.compile(program(op, case, idx_type), target="reference")
    assert set(art.report["ops_per_backend"]) == {"reference"}
    session = byteir_core.load(art.to_bytes())
    for inputs, want in cases(op, case, idx_type, rng, n=6):
        assert_matches(session.run(*inputs)[0], want, op, inputs)


@pytest.mark.parametrize("idx_type", ["i8", "i16"])
def test_reference_narrow_index_types(idx_type):
    rng = np.random.default_rng(8)
    for op, case in [("dynamic_slice", "2d"), ("gather", "window2d")]:
        session = byteir_core.load(byteir_core.compile(in_while(program(op, case, idx_type)), target="reference"))
        for inputs, want in cases(op, case, idx_type, rng, n=4):
            assert_matches(session.run(*inputs)[0], want, op, inputs)


def test_the_numpy_spec_clamps_whole_slices():
    """The spec helper itself, on hand-worked values: a 2x3 window of a 5x7 operand starting at (INT_MIN, 6)
    starts at (0, 4); at (3, INT_MAX) at (3, 4)."""
    x = np.arange(5 * 7 * 2, dtype=np.float32).reshape(5, 7, 2)
    idx = np.array([[-2 ** 31, 6], [3, 2 ** 31 - 1]], np.int32)
    got = gather_spec(x, idx, offset_dims=[1, 2, 3], collapsed_slice_dims=[], start_index_map=[0, 1],
                      index_vector_dim=1, slice_sizes=[2, 3, 2])
    np.testing.assert_array_equal(got[0], x[0:2, 4:7])
    np.testing.assert_array_equal(got[1], x[3:5, 4:7])
    assert adversarial("i32", 4)[:4] == [0, 1, 4, 5] and 2 ** 32 + 1 in adversarial("i64", 4)


@pytest.mark.parametrize("nested", [False, True], ids=["top", "in_while"])
@pytest.mark.parametrize("idx_type", ["ui8", "ui32", "ui64"])
@pytest.mark.parametrize("op,case", CASES)
def test_reference_unsigned_start_indices(op, case, idx_type, nested):
    """The interpreter reads unsigned start indices as signed (ui8 255 clamped to 0, not to dim - size); the
    reference backend converts them to i64 in its kernel (and passes unsigned arguments as bit patterns). On
    the cpu target too, where unsigned index ops fall back to reference."""
    text = program(op, case, idx_type)
    if nested:
        text = in_while(text)
    rng = np.random.default_rng(9)
    for target in ("reference", "cpu") if not nested and op == "gather" else ("reference",):
        art = byteir_core.compile(text, target=target)
        session = byteir_core.load(art.to_bytes())
        for inputs, want in cases(op, case, idx_type, rng, n=4):
            assert_matches(session.run(*inputs)[0], want, op, inputs)


def test_reference_rewrites_only_unsigned_start_indices():
    """The rewrite touches only programs with unsigned start indices (other kernels stay the cluster as written):
    an i32 gather is left alone, a ui64 one gets its indices capped and converted to i64, and still verifies."""
    from byteir_core.builtins.reference import _signed_start_indices
    from byteir_core.mlir import ir, new_context

    with new_context():
        m = ir.Module.parse(program("gather", "embedding", "i32"))
        assert not _signed_start_indices(m)
        assert "convert" not in str(m)
        m = ir.Module.parse(in_while(program("dynamic_slice", "2d", "ui64")))
        assert _signed_start_indices(m)
        assert m.operation.verify()
        text = str(m)
        assert text.count("stablehlo.convert") == 2 and text.count("stablehlo.minimum") == 2
