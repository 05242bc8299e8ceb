"""Every Triton kernel the cuda tests produced, compiled for sm_80 and sm_90 as an artifact carries them: the cubin is
a CUDA ELF for that architecture, and the carried PTX assembles with the ptxas Triton uses for the architecture.

Runs after the differential, attention and model tests of this folder (file order) and checks each distinct
kernel source they generated, plus a small set of its own so the check means something when run alone."""

import struct

import numpy as np
import pytest
from cuda_check import SEEN_KERNELS, assemble, compile_cuda, programs_of, ty

from byteir_backend_cuda import fusion
from byteir_backend_cuda.program import TritonKernel, unb64
from byteir_backend_cuda.triton_build import compile_kernels

EM_CUDA = 190
ARCHS = (80, 90)

OWN = [
    f"""func.func @main(%x: {ty((4, 5000), "bf16")}, %g: {ty((5000,), "bf16")}) -> {ty((4, 5000), "bf16")} {{
  %z = stablehlo.constant dense<0.0> : tensor<bf16>
  %sq = stablehlo.multiply %x, %x : {ty((4, 5000), "bf16")}
  %s = stablehlo.reduce(%sq init: %z) applies stablehlo.add across dimensions = [1] : ({ty((4, 5000), "bf16")}, tensor<bf16>) -> {ty((4,), "bf16")}
  %r = stablehlo.rsqrt %s : {ty((4,), "bf16")}
  %rb = stablehlo.broadcast_in_dim %r, dims = [0] : ({ty((4,), "bf16")}) -> {ty((4, 5000), "bf16")}
  %gb = stablehlo.broadcast_in_dim %g, dims = [1] : ({ty((5000,), "bf16")}) -> {ty((4, 5000), "bf16")}
  %y = stablehlo.multiply %x, %rb : {ty((4, 5000), "bf16")}
  %o = stablehlo.multiply %y, %gb : {ty((4, 5000), "bf16")}
  return %o : {ty((4, 5000), "bf16")}
}}""",
    """func.func @main(%x: tensor<3x4xi64>, %y: tensor<4x3xf16>) -> (tensor<4x3xi64>, tensor<4x3xi1>) {
  %t = stablehlo.transpose %x, dims = [1, 0] : (tensor<3x4xi64>) -> tensor<4x3xi64>
  %c = stablehlo.convert %y : (tensor<4x3xf16>) -> tensor<4x3xi64>
  %m = stablehlo.multiply %t, %c : tensor<4x3xi64>
  %z = stablehlo.constant dense<0> : tensor<4x3xi64>
  %p = stablehlo.compare GT, %m, %z : (tensor<4x3xi64>, tensor<4x3xi64>) -> tensor<4x3xi1>
  return %m, %p : tensor<4x3xi64>, tensor<4x3xi1>
}""",
]


def _own_kernels() -> list[TritonKernel]:
    out = []
    for text in OWN:
        for p in programs_of(compile_cuda(text)):
            out.extend(p.kernels)
    return out


def test_every_kernel_compiles_to_a_cubin_for_the_arch_and_its_ptx_assembles(tmp_path):
    kernels = {k.source: k for k in _own_kernels()}
    kernels.update(SEEN_KERNELS)
    todo = [TritonKernel(k.name, k.source, k.signature, k.constexprs, k.num_warps, k.num_stages)
            for k in kernels.values()]
    compile_kernels(todo, ARCHS)
    problems = []
    for i, k in enumerate(todo):
        assert sorted(b.arch for b in k.binaries) == list(ARCHS), k.name
        for b in k.binaries:
            cubin = unb64(b.cubin)
            machine, flags = struct.unpack_from("<H", cubin, 18)[0], struct.unpack_from("<I", cubin, 48)[0]
            # the SM version sits in e_flags' low byte (CUDA 12 ELF ABI) or the next one (CUDA 13's)
            if cubin[:4] != b"\x7fELF" or machine != EM_CUDA or b.arch not in (flags & 0xFF, (flags >> 8) & 0xFF):
                problems.append(f"{k.name} sm_{b.arch}: not a CUDA ELF for the arch (machine {machine}, "
                                f"flags {flags:#x})")
            try:
                assemble(b.ptx, b.arch, tmp_path / f"k{i}_{b.arch}")
            except AssertionError as e:
                problems.append(f"{k.name} sm_{b.arch}: {e}")
    assert not problems, "\n".join(problems)
    assert len(todo) >= len(OWN)


def test_an_artifact_carries_cubin_and_ptx_per_requested_arch(monkeypatch):
    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "sm_80")
    import byteir_core

    art = byteir_core.compile(OWN[1], target="cuda")
    (entry,) = [k for k in art.module.kernels.values() if k.backend == "cuda"]
    from byteir_backend_cuda.program import Program

    program = Program.from_bytes(entry.kernel.data)
    assert [b.arch for k in program.kernels for b in k.binaries] == [80] * len(program.kernels)
    assert all(".target sm_80" in b.ptx for k in program.kernels for b in k.binaries)


def test_gpu_arch_names_are_checked(monkeypatch):
    from byteir_backend_cuda.plugin import gpu_archs

    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "sm_90, sm_80,sm_90a")
    assert gpu_archs() == (90, 80)
    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "volta")
    with pytest.raises(ValueError, match="'volta' is not a GPU architecture"):
        gpu_archs()


def test_dense_bf16_constants_keep_their_bits():
    from byteir_core.dtypes import TensorSpec
    from byteir_core.mlir import ir, new_context

    x = (np.arange(300, dtype=np.float32) - 150.5).astype(TensorSpec((1,), "bf16").np_dtype)
    with new_context():
        big = ir.Attribute.parse(f'dense<"0x{x.view(np.uint16).astype("<u2").tobytes().hex()}"> : tensor<300xbf16>')
        small = ir.Attribute.parse("dense<[[1.5, -2.25], [3.0, 0x7F80]]> : tensor<2x2xbf16>")
        assert (fusion.dense_to_numpy(big, TensorSpec((300,), "bf16")) == x).all()
        got = fusion.dense_to_numpy(small, TensorSpec((2, 2), "bf16")).astype(np.float32)
    np.testing.assert_array_equal(got, [[1.5, -2.25], [3.0, np.inf]])


def test_extract_writes_each_kernels_source_ptx_cubin_and_the_launches(monkeypatch, tmp_path):
    import json

    import byteir_core
    from byteir_backend_cuda.extract import main

    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "sm_80")
    byteir_core.compile(OWN[1], target="cuda", output=tmp_path / "m.byre")
    assert main([str(tmp_path / "m.byre"), str(tmp_path / "out")]) == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert any(f.endswith(".py") for f in files) and any(f.endswith(".sm_80.ptx") for f in files)
    cubins = [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".sm_80.cubin")]
    assert cubins and all(p.read_bytes()[:4] == b"\x7fELF" for p in cubins)
    (launches,) = [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".launches.json")]
    assert json.loads(launches.read_text())["launches"][0]["kind"] == "triton"


def test_cuda_artifacts_are_byte_identical_across_compiles(monkeypatch):
    """Issue 14 finding 4, for the cuda target: kernels compiled to cubins for a named arch, twice, give the same
    file (no times, temp paths or build ids in the carried binaries)."""
    import byteir_core
    from programs import MLP

    monkeypatch.setenv("BYTEIR_CUDA_ARCHS", "sm_90")
    a, b = (byteir_core.compile(MLP, target="cuda").to_bytes() for _ in range(2))
    assert a == b
