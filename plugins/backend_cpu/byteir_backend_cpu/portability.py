"""Kernels that load on any x86-64 CPU they were compiled for: they carry every helper they call.

On a CPU without a bf16 (or f16) conversion instruction, LLVM lowers ``fptrunc float to bfloat`` and bf16/f16
arithmetic to compiler-rt style calls (``__truncsfbf2``, ``__truncdfbf2``, ``__truncdfhf2``, and on the x86-64
baseline ``__extendhfsf2``/``__truncsfhf2``) that the system's libgcc may not define (gcc 12 has no bf16 ones):
such a kernel fails to load, and only on some machines. Three measures:

* bf16 arithmetic runs in f32 (what LLVM's legalization does anyway) and every conversion from and to bf16
  becomes integer code in MLIR (:func:`expand_bf16_conversions`): it vectorizes and rounds alike on every CPU;
* the helpers LLVM may still call are defined in the kernel itself (:data:`HELPERS_IR`, hidden and weak);
* after linking, :func:`check_portable` refuses a kernel that needs a symbol outside libc/libm/libmvec and
  the OpenMP runtime, at compile time rather than at load time on another machine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from functools import lru_cache

from byteir_core.errors import TargetError
from byteir_core.mlir import ir, walk_ops

#: bf16 arithmetic and math in f32, each result truncated to bf16: the conversions are then expanded by
#: :func:`expand_bf16_conversions`. f16 math keeps its type (``extra-types``): LLVM handles it per CPU.
BF16_AS_F32 = ("func.func(arith-emulate-unsupported-floats{source-types=bf16 target-type=f32},"
               "math-extend-to-supported-types{extra-types=f16 target-type=f32})")


def expand_bf16_conversions(m) -> None:
    """Every scalar ``arith.truncf`` to bf16 and ``arith.extf`` from bf16 as integer code, so it vectorizes.

    Truncation (from f32 or f64) rounds to nearest even; a NaN becomes the quiet NaN ``0x7FC0`` with its sign
    (as ml_dtypes converts). Extension is a shift, in integers too: LLVM would otherwise fold
    ``maximum(fpext a, fpext b)`` (and floor, ceil, round ...) back to a bf16 operation, which the backend then
    legalizes with one ``__truncsfbf2`` call per element."""
    bf16, wide = ir.BF16Type.get(), (ir.F32Type.get(), ir.F64Type.get())
    todo = [op for op in walk_ops(m)
            if (op.name == "arith.truncf" and op.results[0].type == bf16 and op.operands[0].type in wide)
            or (op.name == "arith.extf" and op.operands[0].type == bf16 and op.results[0].type in wide)]
    for op in todo:
        with ir.InsertionPoint(op), op.location:
            x = op.operands[0]
            out = _from_bf16(x, op.results[0].type) if op.name == "arith.extf" else _to_bf16(x)
        op.results[0].replace_all_uses_with(out)
        op.erase()


def _from_bf16(x, to):
    from torch_mlir.dialects import arith

    i32 = ir.IntegerType.get_signless(32)
    bits = arith.shli(arith.extui(i32, arith.bitcast(ir.IntegerType.get_signless(16), x)), arith.constant(i32, 16))
    f = arith.bitcast(ir.F32Type.get(), bits)
    return f if to == f.type else arith.extf(to, f)


def _to_bf16(x):
    """From f64 the value is first rounded to f32 *to odd* (truncated, its last bit set if inexact), which
    makes the second rounding exact: f32 has more than 2 x 8 + 2 bits."""
    from torch_mlir.dialects import arith, math

    f32, i16, i32 = ir.F32Type.get(), ir.IntegerType.get_signless(16), ir.IntegerType.get_signless(32)
    c = arith.constant
    is_nan = arith.cmpf(arith.CmpFPredicate.UNO, x, x)
    if x.type == ir.F64Type.get():
        t = arith.truncf(f32, x)
        back = arith.extf(x.type, t)
        inexact = arith.cmpf(arith.CmpFPredicate.UNE, back, x)
        away = arith.cmpf(arith.CmpFPredicate.OGT, math.absf(back), math.absf(x))
        tb = arith.bitcast(i32, t)
        odd = arith.ori(arith.subi(tb, arith.extui(i32, away)), c(i32, 1))
        bits = arith.select(inexact, odd, tb)
    else:
        bits = arith.bitcast(i32, x)
    hi = arith.shrui(bits, c(i32, 16))
    bias = arith.addi(arith.andi(hi, c(i32, 1)), c(i32, 0x7FFF))
    rounded = arith.trunci(i16, arith.shrui(arith.addi(bits, bias), c(i32, 16)))
    nan = arith.ori(arith.andi(arith.trunci(i16, hi), c(i16, -0x8000)), c(i16, 0x7FC0))
    return arith.bitcast(ir.BF16Type.get(), arith.select(is_nan, nan, rounded))


#: The conversion helpers LLVM calls where the CPU lacks the instruction, with the semantics of the hardware
#: (F16C) and of ml_dtypes: round to nearest even, denormals kept, NaNs quiet with their sign (bf16: the quiet
#: NaN 0x7FC0; f16: the payload's top bits kept). Only integer and f32/f64 instructions, so a helper never calls
#: itself. ``weak hidden``: the kernel's own definition wins over any library's and is not exported.
HELPERS_IR = r"""
declare double @llvm.fabs.f64(double)

define internal i16 @byteir.bf16_from_f32_bits(i32 %b) {
  %abs = and i32 %b, 2147483647
  %is_nan = icmp ugt i32 %abs, 2139095040
  %hi = lshr i32 %b, 16
  %lsb = and i32 %hi, 1
  %bias = add i32 %lsb, 32767
  %sum = add i32 %b, %bias
  %r32 = lshr i32 %sum, 16
  %r = trunc i32 %r32 to i16
  %hi16 = trunc i32 %hi to i16
  %sign = and i16 %hi16, -32768
  %nan = or i16 %sign, 32704
  %out = select i1 %is_nan, i16 %nan, i16 %r
  ret i16 %out
}

define internal i16 @byteir.f16_from_f32_bits(i32 %b) {
  %abs = and i32 %b, 2147483647
  %hi = lshr i32 %b, 16
  %hi16 = trunc i32 %hi to i16
  %sign = and i16 %hi16, -32768
  %pay32 = lshr i32 %abs, 13
  %pay16 = trunc i32 %pay32 to i16
  %pay = and i16 %pay16, 1023
  %nan = or i16 %pay, 32256
  %rebiased = sub i32 %abs, 939524096
  %low = lshr i32 %rebiased, 13
  %lsb = and i32 %low, 1
  %bias = add i32 %lsb, 4095
  %sum = add i32 %rebiased, %bias
  %n32 = lshr i32 %sum, 13
  %normal = trunc i32 %n32 to i16
  %f = bitcast i32 %abs to float
  %s = fadd float %f, 0x3FE0000000000000
  %sb = bitcast float %s to i32
  %sub32 = sub i32 %sb, 1056964608
  %subnormal = trunc i32 %sub32 to i16
  %is_nan = icmp ugt i32 %abs, 2139095040
  %is_inf = icmp uge i32 %abs, 1199566848
  %is_normal = icmp uge i32 %abs, 947912704
  %finite = select i1 %is_normal, i16 %normal, i16 %subnormal
  %big = select i1 %is_inf, i16 31744, i16 %finite
  %mag = select i1 %is_nan, i16 %nan, i16 %big
  %out = or i16 %sign, %mag
  ret i16 %out
}

define internal i32 @byteir.f32_bits_rounded_to_odd(double %x) {
  %t = fptrunc double %x to float
  %back = fpext float %t to double
  %inexact = fcmp une double %back, %x
  %abs_back = call double @llvm.fabs.f64(double %back)
  %abs_x = call double @llvm.fabs.f64(double %x)
  %away = fcmp ogt double %abs_back, %abs_x
  %bits = bitcast float %t to i32
  %down = zext i1 %away to i32
  %toward_zero = sub i32 %bits, %down
  %odd = or i32 %toward_zero, 1
  %out = select i1 %inexact, i32 %odd, i32 %bits
  ret i32 %out
}

define weak hidden bfloat @__truncsfbf2(float %x) {
  %b = bitcast float %x to i32
  %r = call i16 @byteir.bf16_from_f32_bits(i32 %b)
  %out = bitcast i16 %r to bfloat
  ret bfloat %out
}

define weak hidden bfloat @__truncdfbf2(double %x) {
  %b = call i32 @byteir.f32_bits_rounded_to_odd(double %x)
  %r = call i16 @byteir.bf16_from_f32_bits(i32 %b)
  %out = bitcast i16 %r to bfloat
  ret bfloat %out
}

define weak hidden float @__extendbfsf2(bfloat %x) {
  %b = bitcast bfloat %x to i16
  %z = zext i16 %b to i32
  %s = shl i32 %z, 16
  %out = bitcast i32 %s to float
  ret float %out
}

define weak hidden half @__truncsfhf2(float %x) {
  %b = bitcast float %x to i32
  %r = call i16 @byteir.f16_from_f32_bits(i32 %b)
  %out = bitcast i16 %r to half
  ret half %out
}

define weak hidden half @__truncdfhf2(double %x) {
  %b = call i32 @byteir.f32_bits_rounded_to_odd(double %x)
  %r = call i16 @byteir.f16_from_f32_bits(i32 %b)
  %out = bitcast i16 %r to half
  ret half %out
}

define weak hidden float @__extendhfsf2(half %x) {
  %h = bitcast half %x to i16
  %z = zext i16 %h to i32
  %sign16 = and i32 %z, 32768
  %sign = shl i32 %sign16, 16
  %abs = and i32 %z, 32767
  %m = and i32 %z, 1023
  %e = lshr i32 %abs, 10
  %wide = shl i32 %abs, 13
  %normal = add i32 %wide, 939524096
  %inf_nan = add i32 %wide, 1879048192
  %has_payload = icmp ne i32 %m, 0
  %quiet = select i1 %has_payload, i32 4194304, i32 0
  %special = or i32 %inf_nan, %quiet
  %mf = uitofp i32 %m to float
  %sf = fmul float %mf, 0x3E70000000000000
  %subnormal = bitcast float %sf to i32
  %is_special = icmp eq i32 %e, 31
  %is_small = icmp eq i32 %e, 0
  %a = select i1 %is_special, i32 %special, i32 %normal
  %mag = select i1 %is_small, i32 %subnormal, i32 %a
  %bits = or i32 %sign, %mag
  %out = bitcast i32 %bits to float
  ret float %out
}
"""


def link_helpers(mod, context=None) -> None:
    """Add :data:`HELPERS_IR` to an optimized llvmlite module, right before instruction selection creates
    the calls to them (added earlier, the optimizer would drop them as unused). ``context``: the LLVM context
    ``mod`` lives in (None: llvmlite's global one)."""
    import llvmlite.binding as llvm

    helpers = llvm.parse_assembly(HELPERS_IR, context=context)
    helpers.triple, helpers.data_layout = mod.triple, mod.data_layout
    mod.link_in(helpers)


#: Weak references every shared object built by gcc carries (crt files); unresolved, they are null.
_CRT_WEAK = frozenset({"__cxa_finalize", "__gmon_start__", "_ITM_registerTMCloneTable",
                       "_ITM_deregisterTMCloneTable"})
#: GNU OpenMP (libgomp), which the provider loads before a multithreaded kernel. The ``__kmpc_*`` entry points of
#: LLVM's OpenMP runtime are not on the list: a kernel carries those it calls (gomp_shim.py), and one it lacks
#: fails here, at compile time.
_OPENMP_PREFIXES = ("GOMP_", "omp_")

_SHT_DYNSYM = 11


def undefined_symbols(so: bytes) -> list[str]:
    """The names an ELF64 little-endian shared object leaves to the dynamic loader (its undefined dynamic
    symbols, strong and weak), read from ``.dynsym``: no binutils needed."""
    if so[:4] != b"\x7fELF" or so[4:6] != b"\x02\x01":
        raise TargetError("cpu kernel: the linker did not produce an ELF64 little-endian shared object")
    shoff, = struct.unpack_from("<Q", so, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", so, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", so, shoff + k * shentsize) for k in range(shnum)]
    names = []
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != _SHT_DYNSYM:
            continue
        strtab = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name, _, _, shndx = struct.unpack_from("<IBBH", so, at)
            if shndx == 0 and name:  # SHN_UNDEF
                names.append(so[strtab + name:so.index(b"\0", strtab + name)].decode())
    return names


@lru_cache(maxsize=1)
def _system_libraries() -> tuple:
    return tuple(ctypes.CDLL(path) for path in map(ctypes.util.find_library, ("c", "m", "mvec")) if path)


@lru_cache(maxsize=None)
def _in_system_library(name: str) -> bool:
    for lib in _system_libraries():
        try:
            lib[name]
            return True
        except AttributeError:
            continue
    return False


def foreign_symbols(so: bytes) -> list[str]:
    """The undefined symbols of a kernel that neither libc, libm, libmvec nor the OpenMP runtime define."""
    return sorted(s for s in undefined_symbols(so) if s not in _CRT_WEAK and not s.startswith(_OPENMP_PREFIXES)
                  and not _in_system_library(s))


def check_portable(so: bytes, cluster: str) -> None:
    """Refuse a kernel that needs a symbol from a library other than libc/libm/libmvec/OpenMP: it would load
    only where that library happens to be, so fail now, on the compiling machine."""
    foreign = foreign_symbols(so)
    if foreign:
        raise TargetError(f"cpu kernel for cluster {cluster!r} calls {', '.join(foreign)}, which neither libc, "
                          "libm, libmvec nor the OpenMP runtime define: it would not load on every machine")
