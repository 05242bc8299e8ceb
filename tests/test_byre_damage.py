"""Damaged, truncated and deliberately malformed .byre files: never a crash, a hang, a bare exception or a silent load.

Issue 13 (reliability, part 1): of 400 randomly damaged copies of an artifact, byteir_core.load killed the process
twice (SIGSEGV, SIGABRT inside MLIR's bytecode reader), raised a bare RuntimeError 16 times and loaded 2 whose bytes
had changed; a second run saw a load hang. This module repeats the experiment in CI time. Every file is loaded in a
child process (many per child, so a crash or a hang is seen and blamed on its case, and the rest go on in a new
child), and the outcome of each is one of: loaded, ByreFormatError, another exception ("bare"), crash, hang.
"""

import json
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from programs import MLP, mlp_numpy

import byteir_core
from byteir_core.byre import bytecode, container, probe, read_artifact
from byteir_core.errors import ByreFormatError

SEED = 13
WORKER = r"""
import json, sys
import byteir_core
from byteir_core.byre import probe, read_artifact
from byteir_core.errors import ByreFormatError
paths, how = json.load(open(sys.argv[1])), sys.argv[3]
probe.TIMEOUT_S = float(sys.argv[4])
with open(sys.argv[2], "a", buffering=1) as out:
    for i, p in enumerate(paths):
        out.write(json.dumps({"start": i}) + "\n")
        try:
            byteir_core.load(p) if how == "load" else read_artifact(p)
            r = {"i": i, "outcome": "loaded"}
        except ByreFormatError as e:
            r = {"i": i, "outcome": "ByreFormatError", "message": str(e)}
        except Exception as e:
            r = {"i": i, "outcome": "bare", "message": f"{type(e).__name__}: {str(e)[:300]}"}
        out.write(json.dumps(r) + "\n")
"""


def _run_chunk(paths, work, how, per_case_s, probe_timeout_s, results):
    todo = list(paths)
    n = 0
    while todo:
        n += 1
        cases, log = work / f"cases{n}.json", work / f"results{n}.jsonl"
        cases.write_text(json.dumps([str(p) for p in todo]))
        log.write_text("")
        p = subprocess.Popen([sys.executable, "-c", WORKER, cases, log, how, str(probe_timeout_s)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        size, last = 0, time.monotonic()
        hung = False
        while p.poll() is None:
            time.sleep(0.05)
            now_size = log.stat().st_size
            if now_size != size:
                size, last = now_size, time.monotonic()
            elif time.monotonic() - last > per_case_s:
                p.kill()
                hung = True
        p.wait()
        err = p.stderr.read().decode(errors="replace")[-300:]
        pending = None
        for line in log.read_text().splitlines():
            d = json.loads(line)
            if "start" in d:
                pending = d["start"]
            else:
                results[str(todo[d["i"]])] = d
                pending = None
        if pending is not None:
            results[str(todo[pending])] = {"outcome": "hang" if hung else "crash", "message": f"exit {p.returncode}",
                                           "stderr": err}
            todo = todo[pending + 1:]
        elif len([t for t in todo if str(t) in results]) < len(todo):
            raise AssertionError(f"the worker failed before its first case: {err}")
        else:
            todo = []


def run_in_children(paths, work, how="load", workers=2, per_case_s=30, probe_timeout_s=5.0) -> dict:
    """Load every path in child processes; {path: {"outcome": ..., "message": ...}}."""
    results: dict = {}
    chunks = [paths[i::workers] for i in range(workers)]
    threads = []
    for k, chunk in enumerate(chunks):
        d = work / f"w{k}"
        d.mkdir(exist_ok=True)
        threads.append(threading.Thread(target=_run_chunk, args=(chunk, d, how, per_case_s, probe_timeout_s,
                                                                 results)))
        threads[-1].start()
    for t in threads:
        t.join()
    assert set(results) == {str(p) for p in paths}
    return results


def damage(data: bytes, kind: str, rng: random.Random) -> bytes:
    d = bytearray(data)
    if kind == "flip":  # 1..8 bits anywhere
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del d[rng.randrange(1, len(d)):]
    elif kind == "insert":
        at = rng.randrange(len(d) + 1)
        d[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "head":  # the first 2 KB
        for _ in range(rng.randint(1, 16)):
            d[rng.randrange(min(2048, len(d)))] ^= 1 << rng.randrange(8)
    elif kind == "delete":
        at = rng.randrange(len(d))
        del d[at:at + rng.randint(1, 16)]
    elif kind == "bytes":  # 1..4 bytes set to anything
        for _ in range(rng.randint(1, 4)):
            d[rng.randrange(len(d))] = rng.randrange(256)
    return bytes(d)


def make_cases(data: bytes, kinds, n: int, out, prefix: str, seal=None) -> list:
    """``n`` damaged copies of ``data`` (``seal``: a function that wraps each in a valid header again)."""
    rng = random.Random(f"{SEED}-{prefix}")
    paths = []
    while len(paths) < n:
        kind = kinds[len(paths) % len(kinds)]
        bad = damage(data, kind, rng)
        if bad == data:
            continue
        p = out / f"{prefix}-{len(paths):03d}-{kind}.byre"
        p.write_bytes(seal(bad) if seal else bad)
        paths.append(p)
    return paths


def outcomes(results: dict) -> dict:
    counts: dict = {}
    for r in results.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


def trouble(results: dict, allowed) -> list:
    return [(p, r) for p, r in sorted(results.items()) if r["outcome"] not in allowed]


@pytest.fixture(scope="module")
def cpu_artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("damage")
    art = byteir_core.compile(MLP, target="cpu", output=d / "mlp.byre")
    return d / "mlp.byre", art


def body_of(path) -> bytes:
    data = path.read_bytes()
    return container.open_bytes(data, str(path), "1.2").body


def test_200_damaged_copies_are_all_refused(cpu_artifact, tmp_path):
    """The user's experiment: bits flipped, cut short, bytes inserted, the first 2 KB flipped. Each of the 200 copies
    is refused with a ByreFormatError naming it, before MLIR sees it: no crash, hang, bare exception or silent load."""
    path, _ = cpu_artifact
    paths = make_cases(path.read_bytes(), ["flip", "truncate", "insert", "head"], 200, tmp_path, "damaged")
    results = run_in_children(paths, tmp_path)
    print("damaged 1.2 files:", outcomes(results))
    assert trouble(results, {"ByreFormatError"}) == []
    for p, r in results.items():
        assert r["message"].startswith(f"{p}: "), r
    # refused by the envelope (magic, header, length, sha256): neither MLIR nor the structural check saw them
    assert not [r for r in results.values() if "corrupted MLIR" in r["message"] or "before parsing" in r["message"]]


def test_damaged_text_artifacts_are_refused(cpu_artifact, tmp_path):
    path, art = cpu_artifact
    text = art.save(tmp_path / "mlp.byre.mlir").read_bytes()
    paths = make_cases(text, ["flip", "truncate", "insert", "head"], 40, tmp_path, "text")
    paths = [p.rename(p.with_suffix(".byre.mlir")) for p in paths]
    results = run_in_children(paths, tmp_path, how="read", workers=1)
    print("damaged 1.2 text files:", outcomes(results))
    assert trouble(results, {"ByreFormatError"}) == []


def test_digest_valid_mutations_never_crash_or_hang(cpu_artifact, tmp_path):
    """What a digest cannot catch: the body changed, the header recomputed over it (a file made so on purpose). MLIR
    must still not crash or hang: the reader checks the bytecode's structure in Python before MLIR parses it and
    converts whatever the bindings raise. Every outcome is a ByreFormatError or a module that reads."""
    path, _ = cpu_artifact
    body = body_of(path)
    paths = make_cases(body, ["flip", "bytes", "truncate", "insert", "delete"], 200, tmp_path, "sealed",
                       seal=lambda b: container.wrap(b, "1.2"))
    results = run_in_children(paths, tmp_path, how="read")
    counts = outcomes(results)
    print("digest-valid mutated bodies:", counts)
    assert trouble(results, {"ByreFormatError", "loaded"}) == []
    refused_early = sum("refused before parsing" in r.get("message", "") for r in results.values())
    assert refused_early > 50, counts  # the structural check does the work, not MLIR


def test_a_byre_1_1_file_without_header_still_loads(cpu_artifact, tmp_path):
    """A ByRE 1.0/1.1 file is the bytecode alone (a 1.2 file's body); it loads -- parsed first in a child process,
    since no digest vouches for it -- and is written back as 1.2."""
    path, _ = cpu_artifact
    old = tmp_path / "old.byre"
    old.write_bytes(body_of(path))
    art = read_artifact(old)
    assert art.integrity == "none: ByRE 1.0/1.1 bytecode (no digest)"
    assert art.sha256() == __import__("hashlib").sha256(old.read_bytes()).hexdigest()
    assert art.to_bytes().startswith(b"ML\xefR\x0dByRE 1.2 container")
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(byteir_core.load(old)(x), mlp_numpy(x), rtol=1e-5, atol=1e-5)


def test_damaged_1_1_files_are_refused_not_crashed(cpu_artifact, tmp_path):
    """Headerless files have no digest: damage that keeps the module well formed can load (the cost of the old
    format), but nothing crashes, hangs or escapes as a bare exception."""
    path, _ = cpu_artifact
    paths = make_cases(body_of(path), ["flip", "truncate", "insert", "head", "bytes"], 40, tmp_path, "legacy")
    results = run_in_children(paths, tmp_path, how="read")
    print("damaged 1.1 files:", outcomes(results))
    assert trouble(results, {"ByreFormatError", "loaded"}) == []
    assert outcomes(results).get("ByreFormatError", 0) >= 30


def _sections(body: bytes) -> dict:
    r = bytecode._Reader(body)
    r.i = 4
    r.varint()
    r.i = body.index(b"\0", r.i) + 1
    out = {}
    while not r.empty():
        sid, s, e = r.section()
        out[sid] = (s, e)
    return out


def top_block_with_arguments(body: bytes) -> bytes:
    """The top-level block's header claims arguments: MLIR's reader dereferences an empty value scope (SIGSEGV)."""
    s, _ = _sections(body)[bytecode.S_IR]
    b = bytearray(body)
    assert b[s] & 1 and not b[s] & 2  # a one-byte varint: (ops << 1 | has_args) << 1 | 1
    b[s] |= 2
    return bytes(b)


def array_attribute_containing_itself(body: bytes) -> bytes:
    """An array attribute whose first element is itself: MLIR's deferred attribute worklist goes round forever."""
    secs = _sections(body)
    strings = bytecode._strings(body, *secs[bytecode.S_STRING])
    dialects, _ = bytecode._dialects(body, *secs[bytecode.S_DIALECT], strings)
    attrs, _ = bytecode._attr_type_table(body, *secs[bytecode.S_ATTRTYPE_OFFSET], secs[bytecode.S_ATTRTYPE],
                                         len(dialects))
    for i, (_d, _c, s, e) in enumerate(attrs):
        r = bytecode._Reader(body, s, e)
        if i < 64 and r.varint() == bytecode.A_ARRAY and r.varint() > 0 and body[r.i] & 1:
            b = bytearray(body)
            b[r.i] = i << 1 | 1
            return bytes(b)
    raise AssertionError("no array attribute to make cyclic")


@pytest.mark.parametrize("craft,found", [(top_block_with_arguments, "the top-level block claims arguments"),
                                         (array_attribute_containing_itself, "refers to itself")])
def test_what_crashed_or_hung_mlir_is_refused_before_it(cpu_artifact, tmp_path, craft, found):
    """The two MLIR reader failures found by fuzzing digest-valid bodies, made deterministically: with a valid 1.2
    header the structural check refuses them before MLIR parses a byte; a 1.1 file (no header) too."""
    path, _ = cpu_artifact
    bad = craft(body_of(path))
    for name, data in (("sealed.byre", container.wrap(bad, "1.2")), ("old.byre", bad)):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ByreFormatError, match=found) as e:
            byteir_core.load(p)
        assert str(p) in str(e.value)


@pytest.mark.parametrize("craft,said", [(top_block_with_arguments, r"the MLIR reader crashed on it \(SIGSEGV\)"),
                                        (array_attribute_containing_itself, r"the MLIR reader hung on it")])
def test_the_child_process_turns_a_crash_or_hang_into_an_error(cpu_artifact, tmp_path, monkeypatch, craft, said):
    """Without the structural check, a 1.1 file that crashes or hangs MLIR still only costs the child process that
    parses it first: this process gets a ByreFormatError saying what happened."""
    path, _ = cpu_artifact
    p = tmp_path / "old.byre"
    p.write_bytes(craft(body_of(path)))
    monkeypatch.setattr(bytecode, "check", lambda body, where: None)
    monkeypatch.setattr(probe, "TIMEOUT_S", 3.0)
    with pytest.raises(ByreFormatError, match=said) as e:
        read_artifact(p)
    assert str(p) in str(e.value) and "child process" in str(e.value)


def test_deeply_nested_text_is_refused_before_mlir(tmp_path):
    """Found by fuzzing: MLIR's text parser recurses once per bracket, and 200000 nested ones overflow its stack
    (SIGSEGV), digest line or not. The reader counts the nesting first."""
    n = 200_000
    text = 'module attributes {byre.version = "1.2", byre.x = ' + "[" * n + "]" * n + "} {\n}\n"
    for name, data in (("sealed.byre.mlir", container.wrap_text(text, "1.2")), ("bare.byre.mlir", text.encode())):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ByreFormatError, match=r"brackets nested 200001 deep"):
            read_artifact(p)


def test_digest_valid_text_mutations_never_crash_or_hang(cpu_artifact, tmp_path):
    """Text with a correct digest line over changed text: parsed in a child process first (MLIR's text parser,
    with every registered dialect's syntax, is not checked ahead in Python), so nothing escapes as a crash."""
    _, art = cpu_artifact
    lines = art.text(elide_payloads=False).split("\n")
    structure = [i for i, line in enumerate(lines) if "dense<" not in line and line.strip()]
    rng = random.Random(f"{SEED}-text-structure")
    paths = []
    for k in range(20):
        edited = list(lines)
        i = rng.choice(structure)
        edited[i] = damage(edited[i].encode(), rng.choice(["flip", "insert", "delete"]), rng).decode("utf-8", "replace")
        p = tmp_path / f"sealed-{k:02d}.byre.mlir"
        p.write_bytes(container.wrap_text("\n".join(edited), "1.2"))
        paths.append(p)
    results = run_in_children(paths, tmp_path, how="read")
    print("digest-valid mutated text:", outcomes(results))
    assert trouble(results, {"ByreFormatError", "loaded"}) == []
