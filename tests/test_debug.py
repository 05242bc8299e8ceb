"""byteir_core.runtime.debug: BYTEIR_POISON and the memory-plan checker, on hand-built ByRE modules."""

import numpy as np
import pytest

import byteir_core
from byteir_core.byre import Artifact
from byteir_core.byre.format import READ, WRITE, Arg, Buffer, ByreModule, Step
from byteir_core.compiler.memplan import plan_memory
from byteir_core.dtypes import TensorSpec
from byteir_core.runtime.debug import check_memory_plan, main
from programs import MLP, func

SPEC = TensorSpec((4,), "f32")


@pytest.fixture(scope="module")
def double_kernel():
    """A reference kernel computing 2 * x for a tensor<4xf32>."""
    m = byteir_core.compile(func("%x: tensor<4xf32>", "tensor<4xf32>", "  %y = stablehlo.add %x, %x : "
                                 "tensor<4xf32>\n  return %y : tensor<4xf32>"), target="reference").module
    return next(iter(m.kernels.values()))


def _twice(kernel, steps) -> ByreModule:
    """y = ... through one arena buffer (2), with the given steps of the doubling kernel."""
    bm = ByreModule(args=[Arg("x", "input", SPEC), Arg("y", "output", SPEC)],
                    buffers=[Buffer(0, SPEC, "arg", arg=0), Buffer(1, SPEC, "arg", arg=1), Buffer(2, SPEC, "alloc")],
                    steps=[Step("compute", ops, callee="reference.stablehlo", kernel="k", effects=[READ, WRITE],
                                backend="reference") for ops in steps],
                    kernels={"k": kernel}, weights={})
    plan_memory(bm)
    return bm


def test_a_sound_plan_passes(double_kernel):
    bm = _twice(double_kernel, [[0, 2], [2, 1]])
    assert check_memory_plan(bm) == []
    x = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    np.testing.assert_array_equal(byteir_core.load(Artifact(bm))(x), 4 * x)


def test_poison_turns_a_read_of_unwritten_memory_into_nans(double_kernel, monkeypatch):
    """The wrong artifact reads buffer 2 (step 0) before writing it (step 1): each run returns 4x the previous
    request's input, plausible and wrong. With BYTEIR_POISON=1 it returns NaNs."""
    bm = _twice(double_kernel, [[2, 1], [0, 2]])
    assert any("step 0 (reference.stablehlo) reads buffer 2" in p and "before any step wrote" in p
               for p in check_memory_plan(bm))
    x1, x2 = np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([5.0, 6.0, 7.0, 8.0], np.float32)
    monkeypatch.delenv("BYTEIR_POISON", raising=False)
    s = byteir_core.load(Artifact(bm))
    s(x1)
    stale = s(x2)
    np.testing.assert_array_equal(stale, 4 * x1)  # the previous request's value: no sign of the bug
    monkeypatch.setenv("BYTEIR_POISON", "1")
    s = byteir_core.load(Artifact(bm))
    for x in (x1, x2):
        assert np.isnan(s(x)).all()
    monkeypatch.setenv("BYTEIR_POISON", "0")
    s = byteir_core.load(Artifact(bm))
    s(x1)
    np.testing.assert_array_equal(s(x2), 4 * x1)


def test_poison_leaves_correct_programs_correct(monkeypatch):
    monkeypatch.setenv("BYTEIR_POISON", "1")
    from programs import mlp_numpy

    art = byteir_core.compile(MLP, target="cpu")
    assert check_memory_plan(art.module) == []
    s = byteir_core.load(art.to_bytes())
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(s(x), mlp_numpy(x), rtol=1e-5, atol=1e-6)
    req = s.new_request_context()  # an output bound by the caller is poisoned too, then fully written
    out = np.zeros((4, 8), np.float32)
    req.bind_arg(s.get_input_arg_offsets()[0], x)
    req.bind_arg(s.get_output_arg_offsets()[0], out)
    req.finish_io_binding()
    req.run()
    req.release()
    np.testing.assert_allclose(out, mlp_numpy(x), rtol=1e-5, atol=1e-6)


def test_overlapping_live_buffers_are_reported(double_kernel):
    bufs = [Buffer(0, SPEC, "arg", arg=0), Buffer(1, SPEC, "arg", arg=1), Buffer(2, SPEC, "alloc"),
            Buffer(3, SPEC, "alloc"), Buffer(4, TensorSpec((2,), "f32"), "alias", source=3, byte_offset=8)]
    steps = [Step("compute", [0, 2], effects=[READ, WRITE]), Step("compute", [0, 3], effects=[READ, WRITE]),
             Step("compute", [2, 4, 1], effects=[READ, READ, WRITE])]
    bm = ByreModule(args=[Arg("x", "input", SPEC), Arg("y", "output", SPEC)], buffers=bufs, steps=steps,
                    kernels={}, weights={})
    plan_memory(bm)
    assert check_memory_plan(bm) == []
    bufs[3].arena_offset = bufs[2].arena_offset + 8  # 2 and 3 are both live at steps 1 and 2
    problems = check_memory_plan(bm)
    assert any(p.startswith("step 1: live buffers 2 [") and "and 3 [" in p for p in problems), problems
    assert any(p.startswith("step 2: live buffers") for p in problems), problems
    bufs[3].arena_offset = bm.arena_bytes - 8
    assert any(p.startswith("buffer 3 (16 bytes at") and "outside the" in p for p in check_memory_plan(bm))
    bufs[3].arena_offset = bufs[2].arena_offset
    bufs[4] = Buffer(4, TensorSpec((4,), "f32"), "alias", source=3, byte_offset=8)
    problems = check_memory_plan(bm)
    assert any("buffer 4 (alias of 3) covers bytes [8, 24) of a 16-byte source" in p for p in problems), problems


def test_an_alias_is_not_an_overlap_and_partial_writes_are_tracked():
    half = TensorSpec((2,), "f32")
    bufs = [Buffer(0, half, "arg", arg=0), Buffer(1, SPEC, "arg", arg=1), Buffer(2, SPEC, "alloc"),
            Buffer(3, half, "alias", source=2, byte_offset=0), Buffer(4, half, "alias", source=2, byte_offset=8)]
    steps = [Step("compute", [0, 3], effects=[READ, WRITE]), Step("copy", [2, 1])]
    bm = ByreModule(args=[Arg("x", "input", half), Arg("y", "output", SPEC)], buffers=bufs, steps=steps,
                    kernels={}, weights={})
    plan_memory(bm)
    problems = check_memory_plan(bm)  # the copy reads all of 2, but only its first half was written
    assert problems == ["step 1 (copy) reads buffer 2 (bytes [0, 16) of arena buffer 2) before any step wrote "
                        "them"], problems
    steps.insert(1, Step("compute", [0, 4], effects=[READ, WRITE]))
    assert check_memory_plan(bm) == []


def test_the_command_line_checks_artifact_files(tmp_path, capsys):
    art = byteir_core.compile(MLP, target="cpu")
    p = tmp_path / "mlp.byre"
    art.save(p)
    assert main([str(p)]) == 0
    assert "memory plan sound" in capsys.readouterr().out


def test_poison_reaches_device_arenas_through_their_memory():
    """A device array NumPy cannot write is filled through its memory's from_host, on the request's stream."""
    from types import SimpleNamespace

    from byteir_core.interfaces import DeviceMemory
    from byteir_core.runtime.debug import poison_request

    class Opaque:
        def __init__(self, n):
            self.data = np.zeros(n, np.uint8)

    class Memory(DeviceMemory):
        def __init__(self):
            self.calls = []

        def from_host(self, host, dst, stream=None):
            self.calls.append(stream)
            dst.data[:] = host

    mem = Memory()
    bm = ByreModule(args=[Arg("y", "output", SPEC)], buffers=[Buffer(0, SPEC, "arg", arg=0, device="dev"),
                                                              Buffer(1, SPEC, "alloc", device="dev")],
                    steps=[], kernels={}, weights={}, arenas={"dev": 64})
    arena, out = Opaque(64), Opaque(16)
    req = SimpleNamespace(session=SimpleNamespace(_memories={"dev": mem}, _arg_devices=["dev"]), module=bm,
                          stream="s1", _workspace=SimpleNamespace(arenas={"dev": arena}), _args={0: out})
    poison_request(req)
    assert mem.calls == ["s1", "s1"]
    assert (arena.data == 0xFF).all() and (out.data == 0xFF).all()
