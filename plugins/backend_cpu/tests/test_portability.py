"""Kernels carry what they call: built for this CPU, for AVX2 (x86-64-v3) and for the x86-64 baseline, every
dtype's kernel needs nothing beyond libc, libm, libmvec and the OpenMP runtime, and computes what ml_dtypes and
NumPy do; the conversion helpers LLVM calls on CPUs without the instruction round as ml_dtypes does."""

import ctypes
import shutil
import subprocess
import tempfile

import ml_dtypes
import numpy as np
import pytest

import byteir_core
from byteir_backend_cpu import codegen, portability
from byteir_core.dtypes import to_numpy
from byteir_core.errors import TargetError

FLOATS = ["f64", "f32", "f16", "bf16"]
INTS = ["i8", "i16", "i32", "i64"]
#: This machine's CPU, AVX2 and the x86-64 baseline (``cpu`` marker: BYTEIR_CPU, see conftest.py).
CPUS = [pytest.param(None, id="native"),
        *(pytest.param(c, marks=pytest.mark.cpu(c), id=c) for c in ("x86-64-v3", "x86-64"))]

rng = np.random.default_rng(7)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


def assert_same_floats(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Bit for bit, except that a NaN need only be a NaN of the same sign: NaN payloads differ between NumPy,
    F16C and libgcc. bf16 NaNs are compared bit for bit: ml_dtypes' quiet NaN with the sign is the kernels'."""
    assert got.dtype == want.dtype, what
    nan = np.isnan(want.astype(np.float64))
    assert np.array_equal(np.isnan(got.astype(np.float64)), nan), what
    assert np.array_equal(np.signbit(got.astype(np.float64)), np.signbit(want.astype(np.float64))), what
    exact = ~nan if got.dtype != ml_dtypes.bfloat16 else np.ones_like(nan)
    g, w = bits(got)[exact], bits(want)[exact]
    bad = np.flatnonzero(g != w)[:4]
    assert bad.size == 0, f"{what}: {want[exact][bad]} -> {[hex(b) for b in g[bad]]}, want {[hex(b) for b in w[bad]]}"


#: Specials, overflow and underflow of every float type, ties and near-ties of bf16 and f16, random values.
EDGES = np.concatenate([
    np.array([0.0, -0.0, 1.0, -1.0, 0.5, 1 / 3, -2.75, np.nan, -np.nan, np.inf, -np.inf, 65504.0, 65519.9, 65520.0,
              -1e5, 3.3895e38, 3.3962e38, 3.4e38, 1e39, -1e300, 2.0**-126, 1e-39, -1e-40, 1e-45, 2.0**-24, 2.0**-25,
              3 * 2.0**-26, 6e-8, -5.9e-8, 1e-50, 5e-324, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-8 + 2.0**-30,
              1 + 2.0**-8 - 2.0**-40, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-11 + 2.0**-40,
              -(1 + 2.0**-11 - 2.0**-45), 2.0**32 + 2.0**24 + 1, 255.0, -256.0]),
    rng.standard_normal(200) * 2.0 ** rng.integers(-30, 30, size=200)])


def program(n: int) -> tuple[str, list[tuple[str, str]]]:
    """Every float dtype converted to every other, every dtype multiplied and added, ints also converted to and
    from every float type: one @main, its ops all claimed by the cpu backend."""
    t = {d: f"tensor<{n}x{d}>" for d in FLOATS + INTS + ["i1"]}
    args = [f"%{d}: {t[d]}" for d in FLOATS + INTS + ["i1"]] + [f"%{d}_y: {t[d]}" for d in FLOATS + INTS + ["i1"]]
    lines, results = [], []

    def emit(name, expr, dtype):
        lines.append(f"  %{name} = {expr}")
        results.append((name, dtype))

    for s in FLOATS:
        for d in FLOATS:
            if s != d:
                emit(f"{s}_to_{d}", f"stablehlo.convert %{s} : ({t[s]}) -> {t[d]}", d)
    for d in FLOATS + INTS:
        emit(f"{d}_mul", f"stablehlo.multiply %{d}, %{d}_y : {t[d]}", d)
        emit(f"{d}_add", f"stablehlo.add %{d}_mul, %{d} : {t[d]}", d)
    emit("i1_and", f"stablehlo.and %i1, %i1_y : {t['i1']}", "i1")
    for i in INTS:
        for f in FLOATS:
            emit(f"{i}_to_{f}", f"stablehlo.convert %{i} : ({t[i]}) -> {t[f]}", f)
            emit(f"{f}_to_{i}", f"stablehlo.convert %{f}_y : ({t[f]}) -> {t[i]}", i)
    body = "\n".join(lines)
    ret = ", ".join(f"%{r}" for r, _ in results)
    types = ", ".join(t[d] for _, d in results)
    return f"func.func @main({', '.join(args)}) -> ({types}) {{\n{body}\n  return {ret} : {types}\n}}", results


def expected(inputs: dict, results) -> dict:
    """What ml_dtypes and NumPy compute: bf16 and f16 arithmetic rounds the exact f32 result to the type."""
    want = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for s in FLOATS:
            for d in FLOATS:
                if s != d:
                    want[f"{s}_to_{d}"] = inputs[s].astype(to_numpy(d))
        for d in FLOATS + INTS:
            x, y = inputs[d], inputs[d + "_y"]
            wide = np.float32 if d in ("f16", "bf16") else x.dtype
            mul = (x.astype(wide) * y.astype(wide)).astype(x.dtype)
            want[f"{d}_mul"] = mul
            want[f"{d}_add"] = (mul.astype(wide) + x.astype(wide)).astype(x.dtype)
        want["i1_and"] = inputs["i1"] & inputs["i1_y"]
        for i in INTS:
            for f in FLOATS:
                want[f"{i}_to_{f}"] = inputs[i].astype(to_numpy(f))
                want[f"{f}_to_{i}"] = inputs[f + "_y"].astype(to_numpy(i))
    return {name: want[name] for name, _ in results}


def nm_undefined(so: bytes) -> set[str]:
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(so)
        f.flush()
        out = subprocess.run(["nm", "-D", "--undefined-only", f.name], capture_output=True, text=True, check=True)
    return {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("cpu", CPUS)
def test_kernels_of_every_dtype_need_only_system_libraries_and_compute_what_numpy_does(cpu):
    text, results = program(len(EDGES))
    art = byteir_core.compile(text, target="cpu")
    assert set(art.report["ops_per_backend"]) == {"cpu"}, art.report["ops_per_backend"]
    kernels = [k.kernel.data for k in art.module.kernels.values() if k.kernel.format == "elf-shared-object"]
    assert kernels
    for so in kernels:
        undefined = set(portability.undefined_symbols(so))
        if shutil.which("nm"):
            assert undefined == nm_undefined(so)
        assert portability.foreign_symbols(so) == [], sorted(undefined)

    small = np.clip(np.nan_to_num(EDGES), -100, 100).round()  # exact in every type, fits every int
    inputs = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for d in FLOATS:
            inputs[d] = EDGES.astype(to_numpy(d))
            inputs[d + "_y"] = np.roll(small, 1).astype(to_numpy(d))
        for d in INTS:
            inputs[d] = small.astype(to_numpy(d))
            inputs[d + "_y"] = np.roll(small, 3).astype(to_numpy(d))
    inputs["i1"], inputs["i1_y"] = small > 0, np.roll(small, 5) > 0
    order = FLOATS + INTS + ["i1"]
    got = byteir_core.load(art.to_bytes()).run(*[inputs[d] for d in order], *[inputs[d + "_y"] for d in order])
    assert len(got) == len(results)
    for (name, _), g, w in zip(results, got, expected(inputs, results).values()):
        if np.issubdtype(w.dtype, np.integer) or w.dtype == bool:
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            assert_same_floats(g, w, f"{name} ({cpu or 'native'})")


def converter(src: str, dst: str, call: str | None = None) -> str:
    """An LLVM IR loop ``void <src>_to_<dst>(src *in, dst *out, i64 n)`` converting with ``fptrunc``/``fpext``,
    or by calling ``call`` (a helper LLVM never calls by itself)."""
    op = "fptrunc" if {"float": 4, "double": 8}.get(src, 2) > {"float": 4, "double": 8}.get(dst, 2) else "fpext"
    convert = f"call {dst} @{call}({src} %x)" if call else f"{op} {src} %x to {dst}"
    return f"""
define void @{src}_to_{dst}(ptr noalias %in, ptr noalias %out, i64 %n) {{
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  %pi = getelementptr {src}, ptr %in, i64 %i
  %x = load {src}, ptr %pi
  %y = {convert}
  %po = getelementptr {dst}, ptr %out, i64 %i
  store {dst} %y, ptr %po
  %next = add i64 %i, 1
  %more = icmp ult i64 %next, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}}
""" + (f"declare {dst} @{call}({src})\n" if call else "")


def all_f32_near_halfway() -> np.ndarray:
    """Every f32 whose low 16 bits are one of the patterns around bf16's and f16's rounding points (ties, one
    either side, zero, all ones), for every sign, exponent and high mantissa: all specials included."""
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    low = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    return (high[:, None] | low[None, :]).ravel().view(np.float32)


@pytest.mark.cpu("x86-64")
def test_conversion_helpers_round_like_ml_dtypes():
    """Built for the x86-64 baseline, which has no bf16 or f16 conversion instruction, every conversion is a
    call to the kernel's own helper; each is compared with ml_dtypes/NumPy on all 16-bit inputs and on f32/f64
    inputs around every rounding point."""
    ir = "".join([converter("float", "bfloat"), converter("double", "bfloat"), converter("float", "half"),
                  converter("double", "half"), converter("half", "float"),
                  converter("bfloat", "float", call="__extendbfsf2")])
    code, _ = codegen.object_from_llvm_ir(ir)
    so = codegen.link_shared_object(code, "conversion helpers")
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(so)
        f.flush()
        lib = ctypes.CDLL(f.name)

    def run(fn: str, x: np.ndarray, dtype) -> np.ndarray:
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape, dtype)
        getattr(lib, fn)(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(out.ctypes.data), ctypes.c_int64(x.size))
        return out

    f32 = all_f32_near_halfway()
    all16 = np.arange(1 << 16, dtype=np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        f64 = f32.astype(np.float64)
        f64 = np.concatenate([f64, np.nextafter(f64, np.inf), np.nextafter(f64, -np.inf), EDGES,
                              rng.standard_normal(1 << 16) * 2.0 ** rng.integers(-1100, 1000, size=1 << 16)])
        cases = [("float_to_bfloat", f32, ml_dtypes.bfloat16), ("double_to_bfloat", f64, ml_dtypes.bfloat16),
                 ("float_to_half", f32, np.float16), ("double_to_half", f64, np.float16),
                 ("half_to_float", all16.view(np.float16), np.float32),
                 ("bfloat_to_float", all16.view(ml_dtypes.bfloat16), np.float32)]
        for fn, x, dtype in cases:
            assert_same_floats(run(fn, x, dtype), x.astype(dtype), fn)


def test_a_kernel_calling_a_foreign_symbol_is_refused_when_linked():
    ir = "declare void @byteir_not_in_libc(ptr)\ndefine void @k(ptr %p) {\n  call void @byteir_not_in_libc(ptr %p)\n" \
         "  ret void\n}\n"
    code, _ = codegen.object_from_llvm_ir(ir)
    with pytest.raises(TargetError, match="cluster 'cpu_c7' calls byteir_not_in_libc, which neither libc"):
        codegen.link_shared_object(code, "cpu_c7")


@pytest.mark.parametrize("shape", [(3, 20001), (1, 40000), (5, 7, 1024), (70000,)])
def test_multithreaded_kernels_carry_their_openmp_entry_points(shape):
    """A kernel with parallel loops defines the LLVM OpenMP entry points it calls (__kmpc_*, written on GNU
    OpenMP) and needs only GOMP_*/omp_* from libgomp; rows split unevenly among the threads, a single row, and
    a 1-D loop all compute what NumPy does."""
    t = "tensor<" + "x".join(map(str, shape)) + "xf32>"
    text = f"""func.func @main(%x: {t}, %y: {t}) -> {t} {{
  %s = stablehlo.add %x, %y : {t}
  %e = stablehlo.exponential %s : {t}
  return %e : {t}
}}"""
    art = byteir_core.compile(text, target="cpu")
    (step,) = [s for s in art.module.steps if s.op == "compute"]
    assert step.attrs["openmp"] == 1
    (kernel,) = [k.kernel for k in art.module.kernels.values()]
    undefined = set(portability.undefined_symbols(bytes(kernel.data)))
    assert "GOMP_parallel" in undefined and not any(s.startswith("__kmpc_") for s in undefined), sorted(undefined)
    assert portability.foreign_symbols(bytes(kernel.data)) == []
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(art).run(x, y)[0], np.exp(x + y), rtol=2e-6)


@pytest.mark.parametrize("cpu", CPUS)
def test_vectorized_exp_is_within_an_ulp_and_exact_at_the_edges(cpu):
    """f32 exp in vector loops is an inlined polynomial (not libmvec, which leaves its fast path for a whole vector
    when one lane's result is subnormal: a masked softmax). Over the whole range, subnormal results included,
    it is within 1.01 ulp of the exact value; -inf gives 0, +inf and overflow inf, NaN NaN, 0 gives 1, and
    below -103.98 (half the smallest subnormal) it rounds to 0 as the exact value does."""
    n = 1 << 16
    text = f"""func.func @main(%x: tensor<{n}xf32>) -> tensor<{n}xf32> {{
  %y = stablehlo.exponential %x : tensor<{n}xf32>
  return %y : tensor<{n}xf32>
}}"""
    edges = np.array([-np.inf, np.inf, np.nan, -np.nan, 0.0, -0.0, 1e-8, -1e-8, -103.97, -103.98, -104.0, -105.0,
                      -87.33, -87.34, -87.0, -86.99, 88.72, 88.73, 89.0, 1e30, -1e30], np.float32)
    x = np.concatenate([rng.uniform(-110, 90, n - 3 * edges.size).astype(np.float32), edges, edges, edges])
    y = byteir_core.load(byteir_core.compile(text, target="cpu"))(x)
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
        want = exact.astype(np.float32)
    finite = np.isfinite(want) & (want != 0)
    ulps = np.abs(y[finite].astype(np.float64) - exact[finite]) / np.spacing(np.abs(want[finite]))
    assert ulps.max() <= 1.01, (x[finite][np.argmax(ulps)], ulps.max())
    assert_same_floats(y[~finite], want[~finite], "exp at its edges")


def test_boolean_memory_is_read_and_written_as_bytes():
    """``load i1``/``store i1`` become byte loads and stores with a trunc/zext (what they mean for 0/1 bytes), so
    the vectorizer reads a mask 16 bytes at a time; the kernel still computes a masked select right."""
    ir = """define void @f(ptr %m, ptr %o) {
  %a = load i1, ptr %m, align 1
  %p = getelementptr i1, ptr %o, i64 3
  store i1 %a, ptr %p, align 1
  store i1 true, ptr %o
  ret void
}"""
    out = codegen._i1_memory_as_bytes(ir)
    assert "load i1" not in out and "store i1" not in out and out.count("trunc i8") == 1 and out.count("zext i1") == 2
    codegen._llvmlite().parse_assembly(out).verify()
    text = """func.func @main(%m: tensor<3x40xi1>, %x: tensor<3x40xf32>) -> (tensor<3x40xf32>, tensor<3x40xi1>) {
  %z = stablehlo.constant dense<-1.0> : tensor<3x40xf32>
  %y = stablehlo.select %m, %x, %z : tensor<3x40xi1>, tensor<3x40xf32>
  %n = stablehlo.not %m : tensor<3x40xi1>
  return %y, %n : tensor<3x40xf32>, tensor<3x40xi1>
}"""
    m = rng.random((3, 40)) > 0.5
    x = rng.standard_normal((3, 40)).astype(np.float32)
    y, n = byteir_core.load(byteir_core.compile(text, target="cpu"))(m, x)
    np.testing.assert_array_equal(y, np.where(m, x, np.float32(-1)))
    np.testing.assert_array_equal(n, ~m)
