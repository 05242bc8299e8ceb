"""A check, in Python, of the MLIR bytecode of a ByRE module before MLIR's C++ reader sees it.

MLIR's bytecode reader trusts its input in places: a count it reads is used to size a vector before the
bytes it promises are looked at (a flipped bit asks for 2**60 entries: the process aborts or spins), a
top-level block that claims arguments dereferences an empty scope (SIGSEGV), and attributes that refer to
each other in a cycle send its deferred-parsing worklist round forever (a hang). A sha256 in the ByRE header
catches accidental damage; this check is for what a digest cannot catch (a file made with a valid digest,
or a ByRE 1.0/1.1 file, which has none). It walks the same structure the reader walks -- sections, string
table, dialects, op names, the attribute/type table, properties, the IR -- and refuses, with a
:class:`ByreFormatError`, anything a ByRE writer never produces:

* a bytecode version other than 6, unknown or duplicated sections, resources, dialect versions;
* a dialect other than builtin, func, memref and byre; an op other than those a ByRE module holds;
* strings that are not UTF-8 (the MLIR Python bindings abort the process on some of those);
* an attribute or type that is not in the builtin dialect's own bytecode encoding, or whose encoding does not
  decode exactly (indices in range, lengths within the entry, dense data as long as its type says);
* attributes or types that refer to themselves, directly or through others, or nest more than 64 deep;
* a count larger than the bytes left to hold it; a top-level block with arguments; values out of range.

What it accepts is parsed by MLIR in-process. It follows MLIR's builtin dialect bytecode encoding
(mlir/include/mlir/IR/BuiltinDialectBytecode.td), which MLIR keeps stable for compatibility.
"""

from __future__ import annotations

from ..errors import ByreFormatError

DIALECTS = {"builtin", "func", "memref", "byre"}
OPS = {"builtin.module", "func.func", "func.return", "memref.alloc", "byre.kernel", "byre.weight", "byre.alias",
       "byre.compute", "byre.copy"}
BYTECODE_VERSION = 6

# section ids (mlir/Bytecode/Encoding.h)
S_STRING, S_DIALECT, S_ATTRTYPE, S_ATTRTYPE_OFFSET, S_IR, S_RESOURCE, S_RESOURCE_OFFSET, S_DIALECT_VERSIONS, \
    S_PROPERTIES = range(9)
_REQUIRED = (S_STRING, S_DIALECT, S_ATTRTYPE, S_ATTRTYPE_OFFSET, S_IR, S_PROPERTIES)

# op encoding mask bits
HAS_ATTRS, HAS_RESULTS, HAS_OPERANDS, HAS_SUCCESSORS, HAS_REGIONS, HAS_USELISTS, HAS_PROPERTIES = \
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40

_MAX_DEPTH = 16  # region nesting; a ByRE module nests two deep (module > func)
MAX_NESTING = 64  # attributes and types within each other; a ByRE module's go about six deep


class _Bad(Exception):
    pass


class _Reader:
    __slots__ = ("b", "i", "end")

    def __init__(self, b: bytes, start: int = 0, end: int | None = None):
        self.b, self.i, self.end = b, start, len(b) if end is None else end

    def left(self) -> int:
        return self.end - self.i

    def empty(self) -> bool:
        return self.i >= self.end

    def byte(self) -> int:
        if self.i >= self.end:
            raise _Bad("ends in the middle of a value")
        v = self.b[self.i]
        self.i += 1
        return v

    def take(self, n: int) -> tuple[int, int]:
        if n > self.left():
            raise _Bad(f"asks for {n} bytes where {self.left()} remain")
        self.i += n
        return self.i - n, self.i

    def varint(self) -> int:
        first = self.byte()
        if first & 1:
            return first >> 1
        if first == 0:
            s, e = self.take(8)
            return int.from_bytes(self.b[s:e], "little")
        n = (first & -first).bit_length() - 1  # trailing zeros: extra bytes
        s, e = self.take(n)
        return int.from_bytes(bytes([first]) + self.b[s:e], "little") >> (n + 1)

    def signed(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def count(self, what: str, per: int = 1) -> int:
        """A count of things that take at least ``per`` bytes each of what remains."""
        n = self.varint()
        if n * per > self.left():
            raise _Bad(f"{what}: a count of {n} where only {self.left()} bytes remain")
        return n

    def index(self, limit: int, what: str) -> int:
        v = self.varint()
        if v >= limit:
            raise _Bad(f"{what} index {v} out of range (there are {limit})")
        return v

    def section(self) -> tuple[int, int, int]:
        sid_byte = self.byte()
        length = self.varint()
        sid = sid_byte & 0x7F
        if sid > S_PROPERTIES:
            raise _Bad(f"unknown section id {sid}")
        if sid_byte & 0x80:
            raise _Bad(f"section {sid} asks for alignment, which ByRE files never use")
        s, e = self.take(length)
        return sid, s, e


def check(body: bytes, where: str) -> None:
    """Refuse (``ByreFormatError``) MLIR bytecode that MLIR's reader must not be given."""
    try:
        _check(body)
    except _Bad as e:
        raise ByreFormatError(where, f"malformed MLIR bytecode (refused before parsing): {e}") from None
    except (IndexError, ValueError, OverflowError, RecursionError, MemoryError) as e:
        raise ByreFormatError(where, f"malformed MLIR bytecode (refused before parsing): {type(e).__name__}: "
                                     f"{e}") from None


def _check(b: bytes) -> None:
    r = _Reader(b)
    if b[:4] != b"ML\xefR":
        raise _Bad("no MLIR bytecode magic")
    r.i = 4
    version = r.varint()
    if version != BYTECODE_VERSION:
        raise _Bad(f"bytecode version {version}; ByRE files are version {BYTECODE_VERSION}")
    nul = b.find(b"\0", r.i)
    if nul < 0:
        raise _Bad("no producer string")
    r.i = nul + 1
    sections: dict[int, tuple[int, int]] = {}
    while not r.empty():
        sid, s, e = r.section()
        if sid in sections:
            raise _Bad(f"section {sid} twice")
        sections[sid] = (s, e)
    for sid in _REQUIRED:
        if sid not in sections:
            raise _Bad(f"section {sid} missing")
    if S_DIALECT_VERSIONS in sections:
        raise _Bad("a dialect version section, which ByRE files never have")
    if (S_RESOURCE in sections) != (S_RESOURCE_OFFSET in sections):
        raise _Bad("only one of the two resource sections")
    if S_RESOURCE in sections:
        s, e = sections[S_RESOURCE]
        os_, oe = sections[S_RESOURCE_OFFSET]
        if e != s or b[os_:oe] != b"\x01":  # empty: no resources, zero external groups
            raise _Bad("resources, which ByRE files never have")

    strings = _strings(b, *sections[S_STRING])
    dialects, opnames = _dialects(b, *sections[S_DIALECT], strings)
    attrs, types = _attr_type_table(b, *sections[S_ATTRTYPE_OFFSET], sections[S_ATTRTYPE], len(dialects))
    for kind, table in (("attribute", attrs), ("type", types)):
        for i, (d, custom, _s, _e) in enumerate(table):
            if dialects[d] != "builtin" or not custom:
                raise _Bad(f"{kind} {i} is not in the builtin dialect's bytecode encoding (dialect "
                           f"{dialects[d]!r}{'' if custom else ', as text'})")
    _Builtin(b, attrs, types, strings).check_all()
    nprops = _properties(b, *sections[S_PROPERTIES])
    _IR(b, sections[S_IR], opnames, len(attrs), len(types), nprops).run()


def _strings(b: bytes, s: int, e: int) -> list[str]:
    r = _Reader(b, s, e)
    n = r.count("string table")
    sizes = [r.varint() for _ in range(n)]
    end = e
    out = []
    for size in sizes:  # sizes are stored last-string-first
        if size < 1 or size > end - r.i:
            raise _Bad("string table: a string runs past its section")
        raw = b[end - size:end]
        if raw[-1:] != b"\0":
            raise _Bad("string table: a string is not NUL-terminated")
        try:
            out.append(raw[:-1].decode("utf-8"))
        except UnicodeDecodeError:
            raise _Bad(f"string table: string {n - 1 - len(out)} is not UTF-8: {raw[:40]!r}") from None
        end -= size
    if end != r.i:
        raise _Bad("string table: bytes between the sizes and the strings")
    out.reverse()
    return out


def _dialects(b: bytes, s: int, e: int, strings: list[str]) -> tuple[list[str], list[tuple[str, bool]]]:
    r = _Reader(b, s, e)
    dialects = []
    for _ in range(r.count("dialects")):
        v = r.varint()
        if v & 1:
            raise _Bad("a dialect version, which ByRE files never have")
        if v >> 1 >= len(strings):
            raise _Bad(f"dialect name index {v >> 1} out of range")
        name = strings[v >> 1]
        if name not in DIALECTS:
            raise _Bad(f"dialect {name!r}; a ByRE module uses only {', '.join(sorted(DIALECTS))}")
        dialects.append(name)
    expected = r.count("op names")
    opnames: list[tuple[str, bool]] = []
    while not r.empty():
        d = r.index(len(dialects), "dialect")
        for _ in range(r.count("op names of a dialect")):
            v = r.varint()  # string index, and whether the op was registered where it was written
            if v >> 1 >= len(strings):
                raise _Bad(f"op name index {v >> 1} out of range")
            name = f"{dialects[d]}.{strings[v >> 1]}"
            if name not in OPS:
                raise _Bad(f"op {name!r}, which a ByRE module never holds")
            opnames.append((name, bool(v & 1)))
    if len(opnames) != expected:
        raise _Bad(f"{len(opnames)} op names where {expected} are announced")
    return dialects, opnames


def _attr_type_table(b: bytes, s: int, e: int, data: tuple[int, int], ndialects: int):
    r = _Reader(b, s, e)
    nattrs = r.count("attributes")
    ntypes = r.count("types")
    ds, de = data
    offset = ds
    tables = []
    for n in (nattrs, ntypes):
        table: list[tuple[int, bool, int, int]] = []
        while len(table) < n:
            d = r.index(ndialects, "dialect")
            k = r.count("entries of a dialect")
            if len(table) + k > n:
                raise _Bad("attribute/type table: more entries than announced")
            for _ in range(k):
                v = r.varint()
                size, custom = v >> 1, bool(v & 1)
                if size > de - offset:
                    raise _Bad("attribute/type table: an entry runs past its section")
                table.append((d, custom, offset, offset + size))
                offset += size
        tables.append(table)
    if not r.empty():
        raise _Bad("attribute/type table: trailing bytes")
    if offset != de:
        raise _Bad("attribute/type section: bytes no entry covers")
    return tables[0], tables[1]


def _properties(b: bytes, s: int, e: int) -> int:
    if s == e:
        return 0
    r = _Reader(b, s, e)
    n = r.count("properties")
    for _ in range(n):
        r.take(r.varint())
    if not r.empty():
        raise _Bad("properties: trailing bytes")
    return n


# ---------------------------------------------------------------------------------------------------
# the builtin dialect's attribute and type encodings

# attribute codes
(A_ARRAY, A_DICT, A_STRING, A_STRING_TYPED, A_FLAT_SYMREF, A_SYMREF, A_TYPE, A_UNIT, A_INTEGER, A_FLOAT,
 A_CALLSITE_LOC, A_FILE_LOC, A_FUSED_LOC, A_FUSED_LOC_META, A_NAME_LOC, A_UNKNOWN_LOC, A_DENSE_RESOURCE,
 A_DENSE_ARRAY, A_DENSE, A_DENSE_STRING, A_SPARSE, A_DISTINCT, A_FILE_RANGE, A_AFFINE_MAP) = range(24)
_MAX_RANK = 64
# type codes
(T_INTEGER, T_INDEX, T_FUNCTION, T_BF16, T_F16, T_F32, T_F64, T_F80, T_F128, T_COMPLEX, T_MEMREF,
 T_MEMREF_SPACE, T_NONE, T_TENSOR, T_TENSOR_ENC, T_TUPLE, T_UNRANKED_MEMREF, T_UNRANKED_MEMREF_SPACE,
 T_UNRANKED_TENSOR, T_VECTOR, T_VECTOR_SCALABLE) = range(21)
# float8 and float4 types (parameterless; codes from MLIR's builtin bytecode encoding): the ones byteir's dtypes
# name
T_F8E5M2, T_F8E4M3FN, T_F8E5M2FNUZ, T_F8E4M3FNUZ, T_F4E2M1FN, T_F8E8M0FNU = 22, 24, 25, 26, 29, 32
_FLOAT_BITS = {T_BF16: 16, T_F16: 16, T_F32: 32, T_F64: 64, T_F80: 80, T_F128: 128,
               T_F8E5M2: 8, T_F8E4M3FN: 8, T_F8E5M2FNUZ: 8, T_F8E4M3FNUZ: 8, T_F4E2M1FN: 4, T_F8E8M0FNU: 8}
_MAX_DIM = 1 << 62


class _Builtin:
    """Decode every builtin attribute and type entry; record what each refers to; refuse cycles."""

    def __init__(self, b, attrs, types, strings):
        self.b, self.attrs, self.types, self.strings = b, attrs, types, strings
        self.attr_refs: list[list[tuple[str, int]]] = []
        self.type_refs: list[list[tuple[str, int]]] = []
        self.attr_code: list[int] = []
        self.type_info: list[tuple] = []  # per type: ("int", width) | ("float", bits) | ("shaped", dims, elem, ..)
        self.affine_dims: dict[int, int] = {}  # identity affine maps: attribute -> dimensions

    def check_all(self) -> None:
        # types first: attribute encodings depend on the widths of their types
        for i, (_d, _c, s, e) in enumerate(self.types):
            self.type_refs.append([])
            self.type_info.append(self._type(i, _Reader(self.b, s, e)))
        for i, (_d, _c, s, e) in enumerate(self.attrs):
            self.attr_refs.append([])
            r = _Reader(self.b, s, e)
            self.attr_code.append(self._attr(i, r))
            if not r.empty():
                raise _Bad(f"attribute {i}: trailing bytes in its entry")
        for t, info in enumerate(self.type_info):
            if len(info) == 4 and self.affine_dims.get(info[3]) != len(info[1]):
                raise _Bad(f"type {t}: a memref whose layout is not the identity map of its rank")
        self._no_cycles()

    # -- helpers
    def _tref(self, r, refs) -> int:
        v = r.index(len(self.types), "type")
        refs.append(("type", v))
        return v

    def _aref(self, r, refs) -> int:
        v = r.index(len(self.attrs), "attribute")
        refs.append(("attr", v))
        return v

    def _dims(self, r) -> list[int]:
        n = r.count("shape")
        if n > _MAX_RANK:
            raise _Bad(f"a shape of rank {n}")
        dims = [r.signed() for _ in range(n)]
        if any(d < -1 or d > _MAX_DIM for d in dims):
            raise _Bad(f"a shape {dims} with an impossible dimension")
        return dims

    def _type(self, i: int, r: _Reader) -> tuple:
        refs = self.type_refs[i]
        code = r.varint()
        if code == T_INTEGER:
            v = r.varint()
            width = v >> 2
            if not 1 <= width <= 1 << 16 or v & 3 == 3:
                raise _Bad(f"type {i}: integer width {width}")
            info = ("int", width)
        elif code == T_INDEX:
            info = ("int", 64)
        elif code in _FLOAT_BITS:
            info = ("float", _FLOAT_BITS[code])
        elif code == T_NONE:
            info = ("none",)
        elif code == T_FUNCTION:
            for _ in range(r.count("function inputs")):
                self._tref(r, refs)
            for _ in range(r.count("function results")):
                self._tref(r, refs)
            info = ("function",)
        elif code == T_COMPLEX:
            info = ("complex", self._tref(r, refs))
        elif code in (T_MEMREF, T_MEMREF_SPACE):
            if code == T_MEMREF_SPACE:
                raise _Bad(f"type {i}: a memref with a memory space, which ByRE files never have")
            dims = self._dims(r)
            elem = self._tref(r, refs)
            layout = r.index(len(self.attrs), "attribute")  # checked once the attributes are decoded
            refs.append(("attr", layout))
            info = ("shaped", dims, elem, layout)
        elif code == T_TENSOR:
            dims = self._dims(r)
            info = ("shaped", dims, self._tref(r, refs))
        else:
            raise _Bad(f"type {i}: builtin type code {code}, which ByRE files never hold")
        if not r.empty():
            raise _Bad(f"type {i}: trailing bytes in its entry")
        return info

    def _elem_bits(self, t: int, what: str) -> int:
        info = self.type_info[t]
        if info[0] == "complex" and self.type_info[info[1]][0] in ("int", "float"):
            return 2 * self.type_info[info[1]][1]
        if info[0] in ("int", "float"):
            return info[1]
        raise _Bad(f"{what}: element type {t} is not a number type")

    def _apint(self, r: _Reader, bits: int) -> None:
        if bits <= 8:
            r.byte()
        elif bits <= 64:
            r.varint()
        else:
            words = r.count("integer words")
            if words > (bits + 63) // 64:
                raise _Bad(f"an integer of {words} words for {bits} bits")
            for _ in range(words):
                r.varint()

    def _attr(self, i: int, r: _Reader) -> int:
        refs = self.attr_refs[i]
        code = r.varint()
        if code == A_ARRAY:
            for _ in range(r.count("array")):
                self._aref(r, refs)
        elif code == A_DICT:
            for _ in range(r.count("dictionary", 2)):
                self._aref(r, refs)  # name: a string attribute (checked once all are decoded)
                self._aref(r, refs)
        elif code == A_STRING:
            r.index(len(self.strings), "string")
        elif code == A_STRING_TYPED:
            r.index(len(self.strings), "string")
            self._tref(r, refs)
        elif code == A_FLAT_SYMREF:
            self._aref(r, refs)
        elif code == A_SYMREF:
            self._aref(r, refs)
            for _ in range(r.count("symbol reference")):
                self._aref(r, refs)
        elif code == A_TYPE:
            self._tref(r, refs)
        elif code in (A_UNIT, A_UNKNOWN_LOC):
            pass
        elif code == A_INTEGER:
            t = self._tref(r, refs)
            if self.type_info[t][0] != "int":
                raise _Bad(f"attribute {i}: an integer attribute of a non-integer type")
            self._apint(r, self.type_info[t][1])
        elif code == A_FLOAT:
            t = self._tref(r, refs)
            if self.type_info[t][0] != "float":
                raise _Bad(f"attribute {i}: a float attribute of a non-float type")
            self._apint(r, self.type_info[t][1])
        elif code == A_CALLSITE_LOC:
            self._aref(r, refs)
            self._aref(r, refs)
        elif code == A_FILE_LOC:
            self._aref(r, refs)
            r.varint()
            r.varint()
        elif code in (A_FUSED_LOC, A_FUSED_LOC_META):
            for _ in range(r.count("fused location")):
                self._aref(r, refs)
            if code == A_FUSED_LOC_META:
                self._aref(r, refs)
        elif code == A_NAME_LOC:
            self._aref(r, refs)
            self._aref(r, refs)
        elif code == A_DENSE_ARRAY:
            t = self._tref(r, refs)
            n = r.varint()
            size = r.varint()
            s, _e = r.take(size)
            bits = self._elem_bits(t, f"attribute {i}")
            if size * 8 != n * bits and not (bits == 1 and size == n):
                raise _Bad(f"attribute {i}: a dense array of {n} x {bits} bits holding {size} bytes")
        elif code == A_DENSE:
            t = self._tref(r, refs)
            info = self.type_info[t]
            if info[0] != "shaped" or any(d < 0 for d in info[1]):
                raise _Bad(f"attribute {i}: dense elements of a type without a static shape")
            n = 1
            for d in info[1]:
                n *= d
            bits = self._elem_bits(info[2], f"attribute {i}")
            size = r.varint()
            r.take(size)
            per = (bits + 7) // 8
            ok = size == n * per or size == per or (bits == 1 and size in ((n + 7) // 8, 1))
            if not ok:
                raise _Bad(f"attribute {i}: dense elements of {n} x {bits} bits holding {size} bytes")
        elif code == A_AFFINE_MAP:
            v = r.varint()
            if v & 3 or v >> 2 > _MAX_RANK:  # the compact form of an identity map: its dimension count << 2
                raise _Bad(f"attribute {i}: an affine map other than a memref's identity layout")
            self.affine_dims[i] = v >> 2
        else:
            raise _Bad(f"attribute {i}: builtin attribute code {code}, which ByRE files never hold")
        return code

    def _no_cycles(self) -> None:
        # dictionary names must be strings
        for i, code in enumerate(self.attr_code):
            if code == A_DICT:
                for k, (_kind, j) in enumerate(self.attr_refs[i]):
                    if k % 2 == 0 and self.attr_code[j] != A_STRING:
                        raise _Bad(f"attribute {i}: a dictionary key that is not a string")
        # iterative DFS over attributes and types together: no cycles, and no nesting deeper than MAX_NESTING
        # (MLIR's printer and verifier recurse through nested attributes: a deep enough chain overflows the stack)
        state: dict[tuple[str, int], int] = {}  # 1: on the stack, 2: done
        depth: dict[tuple[str, int], int] = {}
        table = {"attr": self.attr_refs, "type": self.type_refs}
        for root in [("type", i) for i in range(len(self.types))] + [("attr", i) for i in range(len(self.attrs))]:
            if root in state:
                continue
            stack = [(root, iter(table[root[0]][root[1]]))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    depth[node] = 1 + max((depth[c] for c in table[node[0]][node[1]]), default=0)
                    if depth[node] > MAX_NESTING:
                        raise _Bad(f"attributes and types nested more than {MAX_NESTING} deep")
                    stack.pop()
                    continue
                st = state.get(nxt)
                if st == 1:
                    kind = {"attr": "attribute", "type": "type"}
                    via = "directly" if nxt == node else f"through {kind[node[0]]} {node[1]}"
                    raise _Bad(f"{kind[nxt[0]]} {nxt[1]} refers to itself ({via}; MLIR's reader loops forever on "
                               f"that)")
                if st is None:
                    state[nxt] = 1
                    stack.append((nxt, iter(table[nxt[0]][nxt[1]])))


# ---------------------------------------------------------------------------------------------------
# the IR section


class _IR:
    def __init__(self, b, span, opnames, nattrs, ntypes, nprops):
        self.b, self.span, self.opnames = b, span, opnames
        self.nattrs, self.ntypes, self.nprops = nattrs, ntypes, nprops
        self.scopes: list[dict] = []  # value scopes: {"values": n, "next": [ids]}

    def run(self) -> None:
        r = _Reader(self.b, *self.span)
        nops, has_args = self._block_header_counts(r)
        if has_args:
            raise _Bad("the top-level block claims arguments (MLIR's reader crashes on that)")
        self.scopes.append({"values": 0, "next": [0]})
        self._ops(r, nops, region_values=0, depth=0)
        if not r.empty():
            raise _Bad("IR section: trailing bytes")

    def _block_header_counts(self, r: _Reader) -> tuple[int, bool]:
        v = r.varint()
        n = v >> 1
        if n * 2 > r.left():
            raise _Bad(f"a block of {n} ops where only {r.left()} bytes remain")
        return n, bool(v & 1)

    def _define(self, n: int) -> None:
        scope = self.scopes[-1]
        if scope["next"][-1] + n > scope["values"]:
            raise _Bad("more values defined than its region announces")
        scope["next"][-1] += n

    def _uselists(self, r: _Reader, nvalues: int) -> None:
        groups = r.count("use-list orders") if nvalues > 1 else 1
        for _ in range(groups):
            if nvalues > 1:
                if r.varint() >= nvalues:
                    raise _Bad("use-list order for a value that does not exist")
            n = r.varint() >> 1
            if n > r.left():
                raise _Bad("use-list order longer than its section")
            for _ in range(n):
                r.varint()

    def _ops(self, r: _Reader, nops: int, region_values: int, depth: int) -> None:
        for _ in range(nops):
            name, registered = self.opnames[r.index(len(self.opnames), "op name")]
            mask = r.byte()
            if mask & 0x80:
                raise _Bad(f"{name}: unknown bits in its encoding mask")
            r.index(self.nattrs, "location attribute")
            if mask & HAS_ATTRS:
                r.index(self.nattrs, "attribute")
            if mask & HAS_PROPERTIES:
                if registered:
                    r.index(self.nprops, "properties")
                else:
                    r.index(self.nattrs, "attribute")
            nresults = 0
            if mask & HAS_RESULTS:
                nresults = r.count("results")
                for _ in range(nresults):
                    r.index(self.ntypes, "type")
            if mask & HAS_OPERANDS:
                for _ in range(r.count("operands")):
                    r.index(self.scopes[-1]["values"], "value")
            if mask & HAS_SUCCESSORS:
                raise _Bad(f"{name} with successors, which ByRE ops never have")
            if mask & HAS_USELISTS:
                self._uselists(r, nresults)
            nregions, isolated = 0, False
            if mask & HAS_REGIONS:
                v = r.varint()
                nregions, isolated = v >> 1, bool(v & 1)
                if nregions > r.left():
                    raise _Bad(f"{name}: {nregions} regions where only {r.left()} bytes remain")
            if region_values and nresults:
                self._define(nresults)
            if nregions:
                if depth + 1 > _MAX_DEPTH:
                    raise _Bad("regions nested too deep")
                if isolated:
                    sid, s, e = r.section()
                    if sid != S_IR:
                        raise _Bad(f"{name}: an isolated region that is not an IR section")
                    self.scopes.append({"values": 0, "next": []})
                    sub = _Reader(self.b, s, e)
                    for _ in range(nregions):
                        self._region(sub, depth + 1)
                    if not sub.empty():
                        raise _Bad(f"{name}: trailing bytes in its region section")
                    self.scopes.pop()
                else:
                    for _ in range(nregions):
                        self._region(r, depth + 1)

    def _region(self, r: _Reader, depth: int) -> None:
        nblocks = r.count("blocks")
        if nblocks == 0:
            return
        nvalues = r.count("values")
        scope = self.scopes[-1]
        scope["next"].append(scope["values"])
        scope["values"] += nvalues
        for _ in range(nblocks):
            nops, has_args = self._block_header_counts(r)
            if has_args:
                nargs = r.count("block arguments")
                for _ in range(nargs):
                    v = r.varint()
                    if v >> 1 >= self.ntypes:
                        raise _Bad(f"block argument type index {v >> 1} out of range")
                    if v & 1:
                        r.index(self.nattrs, "location attribute")
                if r.byte():
                    self._uselists(r, nargs)
                self._define(nargs)
            self._ops(r, nops, nvalues, depth)
        scope["values"] -= nvalues
        scope["next"].pop()
