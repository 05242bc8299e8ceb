"""The ``byteir`` command. It parses arguments and calls the public API, nothing more."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings
import zipfile
from pathlib import Path

from .errors import ByteirError, ByteirTargetWarning, OptionError

EXIT_ERROR = 1


def _console(stderr=False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _shapes(text: str | None):
    """``1x3x224x224,4`` -> [[1, 3, 224, 224], [4]] (one per input, in order; ``scalar`` for rank 0), or
    ``input=1x3x224x224,mask=1x128`` -> {"input": [1, 3, 224, 224], "mask": [1, 128]} (by input name)."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    named = ["=" in p for p in parts]
    if any(named) and not all(named):
        raise ByteirError(f"--input-shape {text!r}: give every shape by name (name=1x3x224x224,...) or none")
    out: list | dict = {} if all(named) else []
    for part in parts:
        name, _, dims = part.rpartition("=")
        try:
            shape = [] if dims in ("", "scalar") else [int(d) for d in dims.split("x")]
        except ValueError:
            raise ByteirError(f"--input-shape: {part!r} is not like 1x3x224x224 or name=1x3x224x224") from None
        if isinstance(out, dict):
            if not name or name in out:
                raise ByteirError(f"--input-shape: {part!r}: " + ("an empty name" if not name else
                                                                  f"{name!r} is given twice"))
            out[name] = shape
        else:
            out.append(shape)
    return out


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return n


def cmd_compile(args) -> int:
    import byteir_core

    console = _console(stderr=True)
    out = Path(args.output or Path(args.model).with_suffix(".byre").name)
    if args.cpu:
        os.environ["BYTEIR_CPU"] = args.cpu  # read by the cpu backend's code generator
    if args.gpu_arch:
        os.environ["BYTEIR_CUDA_ARCHS"] = args.gpu_arch  # read by the cuda backend
    t0 = time.perf_counter()
    with console.status("compiling") as status, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ByteirTargetWarning)
        try:
            art = byteir_core.compile(
                args.model, target=args.target, frontend=args.frontend, output=out, dump_dir=args.dump_dir,
                pass_groups=args.pass_groups.split(",") if args.pass_groups else None,
                input_shapes=_shapes(args.input_shape), options=_options(args.option),
                progress=lambda s: status.update(f"compiling: {s}"))
        except OSError as e:  # the model is read by the frontend (a FrontendError): this is a file written
            if args.dump_dir and _touches(e, Path(args.dump_dir)):
                raise _write_error("--dump-dir", args.dump_dir, e) from None
            if _touches(e, out):
                raise _write_error("-o", out, e) from None
            raise
    dt = time.perf_counter() - t0
    console.print(f"wrote {out} ({out.stat().st_size} bytes) in {dt:.2f} s, target {args.target}")
    for w in caught:  # ours where the user looks, after the line they read; anything else as Python shows it
        if issubclass(w.category, ByteirTargetWarning):
            from rich.text import Text

            console.print(Text.assemble(("warning:", "yellow"), " ", str(w.message)))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if args.verbose:
        _print_report(console, art.report)
    return 0


def _options(pairs) -> dict:
    """``--option key=value`` (repeatable) as frontend options; a value that reads as JSON (a number, a list,
    true/false) is taken as that, anything else as a string."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--option {pair!r}: expected KEY=VALUE, e.g. --option signature=serving_default")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _write_error(option: str, path, e: OSError) -> ByteirError:
    """``cannot write -o x.byre: Permission denied`` (and the path the system named, where it is another)."""
    reason = e.strerror or str(e)
    if e.filename is not None and Path(os.path.abspath(e.filename)) in Path(os.path.abspath(path)).parents:
        if isinstance(e, FileExistsError) and not os.path.isdir(e.filename):
            reason = f"{e.filename} is a file, not a directory"
        else:
            reason += f" ({e.filename})"
    return ByteirError(f"cannot write {option} {path}: {reason}")


def _touches(e: OSError, path: Path) -> bool:
    """Whether ``e`` is about ``path``, a directory on the way to it, or a file beside it (a temporary)."""
    if e.filename is None:
        return False
    where, target = Path(os.path.abspath(e.filename)), Path(os.path.abspath(path))
    return where == target or where in target.parents or where.parent == target.parent or target in where.parents


def _print_report(console, report: dict) -> None:
    from rich.table import Table

    console.print(f"fallback chain: {' -> '.join(report.get('fallback_chain', []))}")
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    if set(report.get("devices", {})) - {"cpu"} or report.get("copies"):
        console.print("steps per device: " + ", ".join(f"{d} {n}" for d, n in report["devices"].items())
                      + "; arenas: " + ", ".join(f"{d} {n} bytes" for d, n in report.get("arenas", {}).items()))
        crossings: dict[tuple[str, str], list[int]] = {}
        for c in report.get("copies", []):
            acc = crossings.setdefault((c["src_device"], c["dst_device"]), [0, 0])
            acc[0] += 1
            acc[1] += c["bytes"]
        for (src, dst), (n, nbytes) in crossings.items():
            console.print(f"copies {src} -> {dst}: {n} ({nbytes} bytes per run)")
    t = Table(title="ops per backend")
    t.add_column("backend")
    t.add_column("op")
    t.add_column("count", justify="right")
    for backend, ops in report.get("ops_per_backend", {}).items():
        for op, n in ops.items():
            t.add_row(backend, op, str(n))
    console.print(t)
    s = Table(title="stage times")
    s.add_column("stage")
    s.add_column("seconds", justify="right")
    for stage, sec in report.get("stage_seconds", {}).items():
        s.add_row(stage, f"{sec:.4f}")
    console.print(s)


def cmd_run(args) -> int:
    import numpy as np

    import byteir_core

    console = _console()
    session = byteir_core.load(args.artifact, expected_sha256=args.sha256)
    offsets = session.get_input_arg_offsets()
    if args.inputs:
        try:
            npz = np.load(args.inputs)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            why = getattr(e, "strerror", None) or str(e)
            if "pickle" in why:  # numpy's word for any file that is neither .npz nor .npy
                why = "not an .npz file"
            raise ByteirError(f"cannot read --inputs {args.inputs}: {why}") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):  # one .npy array
            raise ByteirError(f"cannot read --inputs {args.inputs}: a single .npy array, not an .npz; save the "
                              f"inputs with np.savez(f, input0=...)")
        with npz:
            keys = list(npz.keys())
            names = [session.get_arg_name(o) for o in offsets]
            positional = [f"arr_{i}" for i in range(len(names))]
            if all(n in npz for n in names):
                inputs = [npz[n] for n in names]
            elif sorted(keys) == sorted(positional):  # np.savez(f, x, y): by position, arr_0 first
                inputs = [npz[k] for k in positional]
            else:
                raise ByteirError(f"{args.inputs} holds {keys}; the artifact's inputs are {names} (save the "
                                  f"arrays under those names, or positionally: np.savez(f, *arrays))")
    else:
        rng = np.random.default_rng(args.seed)
        inputs = [_random(rng, session.get_static_shape(o), session.get_data_type(o)) for o in offsets]
    t0 = time.perf_counter()
    outs = session.run(*inputs)  # the first call: the outputs printed, and the warm-up
    first = time.perf_counter() - t0
    times = _time_runs(session, inputs, args.repeat)
    for i, (o, v) in enumerate(zip(session.get_output_arg_offsets(), outs)):
        arr = np.asarray(v)
        as64 = np.asarray(arr, dtype=np.float64)
        total, l2 = (float(as64.sum()), float(np.sqrt((as64 * as64).sum()))) if arr.size else (0.0, 0.0)
        console.print(f"output {i} {session.get_arg_name(o)}: {arr.dtype} {list(arr.shape)} "
                      f"sum={total:.6g} l2={l2:.6g}")
    console.print(f"warm median {_ms(statistics.median(times))} over {len(times)} runs "
                  f"(min {_ms(min(times))}; first call {_ms(first)})")
    if args.profile:
        _print_profile(console, session.profile(*inputs, repeat=args.profile), args.top)
    if args.output:
        try:
            np.savez(args.output, **{session.get_arg_name(o): np.asarray(v)
                                     for o, v in zip(session.get_output_arg_offsets(), outs)})
        except OSError as e:
            raise _write_error("--output", args.output, e) from None
        console.print(f"wrote {args.output}")
    return 0


def _time_runs(session, inputs, repeat: int | None) -> list[float]:
    """Seconds of each warm run: ``repeat`` of them, or (None) at least 5 and 0.2 s, at most 1000 runs or 10 s."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        session.run(*inputs)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if repeat is not None:
            if len(times) >= repeat:
                return times
        elif len(times) >= 1000 or t1 - start >= 10 or (len(times) >= 5 and t1 - start >= 0.2):
            return times


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1e-3 else f"{seconds * 1e3:.3f} ms"


def _print_profile(console, rows: list[dict], top: int) -> None:
    from rich.table import Table

    total = sum(r["median_us"] for r in rows) or 1.0
    by_backend: dict[str, list] = {}
    for r in rows:
        acc = by_backend.setdefault(r["backend"], [0, 0.0])
        acc[0] += 1
        acc[1] += r["median_us"]
    console.print(f"profile: {len(rows)} steps, {total / 1e3:.3f} ms in steps (sum of per-step medians)")
    for b, (n, us) in sorted(by_backend.items(), key=lambda kv: -kv[1][1]):
        console.print(f"  {b}: {n} steps, {us / 1e3:.3f} ms ({100 * us / total:.0f}%)")
    # the numbers first and never squeezed; the long text columns last, cut to what the console has left
    cells = [(str(r["step"]), r["backend"], f"{r['median_us']:.1f}", f"{100 * r['median_us'] / total:.1f}",
              r["callee"], ",".join(o.replace("stablehlo.", "") for o in dict.fromkeys(r["ops"])),
              " ".join("x".join(map(str, s)) or "scalar" for s in r["shapes"]))
             for r in sorted(rows, key=lambda r: -r["median_us"])[:top]]
    heads = ("step", "backend", "µs", "%", "callee", "ops", "shapes")
    natural = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    for ncols in (7, 6, 5):  # drop shapes, then ops, rather than squeeze everything
        free = console.width - (3 * ncols + 1) - sum(natural[:4])  # borders and padding: 3 a column, 1 more
        if free >= 8 * (ncols - 4) or ncols == 5:
            break
    flex = _share(max(free, 3 * (ncols - 4)), natural[4:ncols])
    t = Table(title=f"slowest {min(top, len(rows))} steps")
    for i, h in enumerate(heads[:ncols]):
        w = natural[i] if i < 4 else flex[i - 4]
        t.add_column(h, justify="right" if h in ("step", "µs", "%") else "left", no_wrap=True,
                     overflow="ellipsis", min_width=w if i < 4 else None, max_width=w)
    for c in cells:
        t.add_row(*c[:ncols])
    console.print(t)


def _share(room: int, wants: list[int]) -> list[int]:
    """Widths for columns wanting ``wants`` in ``room``: the narrow ones get all they want, the rest share."""
    out = list(wants)
    left = list(range(len(wants)))
    while left:
        fair = room // len(left)
        narrow = [i for i in left if wants[i] <= fair]
        if not narrow:
            for k, i in enumerate(left):
                out[i] = max(1, fair + (1 if k < room % len(left) else 0))
            return out
        for i in narrow:
            room -= wants[i]
            left.remove(i)
    return out


def _random(rng, shape, dtype):
    import numpy as np

    from .dtypes import to_numpy

    dt = to_numpy(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dt, np.integer):
        return rng.integers(0, 8, size=shape).astype(dt)
    return rng.standard_normal(size=shape).astype(dt)


def cmd_inspect(args) -> int:
    from .byre import read_artifact

    console = _console()
    art = read_artifact(args.artifact)
    summary = art.summary()
    summary["sha256"] = art.sha256()
    if args.extract:
        d = Path(args.extract)
        ext = {"ptx": ".ptx", "cubin": ".cubin", "elf-shared-object": ".so", "stablehlo-portable": ".vhlo.mlirbc",
               "npz-operands": ".npz"}
        written = []
        try:
            d.mkdir(parents=True, exist_ok=True)
            for k in art.module.kernels.values():
                p = d / f"{k.name}{ext.get(k.kernel.format, '.' + k.kernel.format.replace('/', '_') + '.bin')}"
                p.write_bytes(k.kernel.data)
                written.append(str(p))
        except OSError as e:
            raise _write_error("--extract", d, e) from None
        summary["extracted"] = written
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    if not args.summary_only:
        console.print(art.text(), markup=False)
    m = summary["manifest"]
    console.print(f"ByRE {summary['byre_version']}  sha256 {summary['sha256']}")
    when = f" at {m['created']}" if m.get("created") else ""  # recorded only with SOURCE_DATE_EPOCH
    console.print(f"made by byteir-core {m.get('byteir_core')} for target {m.get('target')}{when}"
                  f" (frontend {m.get('frontend')}, pipeline {','.join(m.get('pipeline', []))})")
    console.print(f"plugins: {', '.join(f'{k} ({v})' for k, v in m.get('plugins', {}).items())}")
    for kind in ("inputs", "outputs"):
        console.print(f"{kind}: " + ", ".join(f"{x['name']}: {x['type']}" for x in summary[kind]))
    for b, ops in summary["ops_per_backend"].items():
        console.print(f"backend {b}: {sum(ops.values())} ops ({', '.join(f'{k} x{v}' for k, v in ops.items())})")
    console.print(f"steps: {summary['steps']}")
    console.print(f"weights: {summary['weights']['count']} ({summary['weights']['bytes']} bytes); "
                  + (f"arena: {summary['arena_bytes']} bytes" if set(summary["arenas"]) <= {"cpu"} else
                     "arenas: " + ", ".join(f"{d} {n} bytes" for d, n in summary["arenas"].items())))
    for k in summary["kernels"]:
        console.print(f"kernel {k['name']}: {k['backend']}, {k['format']}, {k['bytes']} bytes")
    for p in summary.get("extracted", []):
        console.print(f"extracted {p}")
    return 0


def cmd_opt(args) -> int:
    from .compiler.driver import optimize

    groups = args.pass_groups.split(",") if args.pass_groups else None
    text = optimize(args.input, groups, frontend=args.frontend, input_shapes=_shapes(args.input_shape))
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            raise _write_error("-o", args.output, e) from None
    else:
        sys.stdout.write(text)
    return 0


def cmd_list_plugins(args) -> int:
    from .plugins import get_registry

    reg = get_registry()
    rows = [p.as_dict() for p in reg.plugins]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    t = Table(title="byteir plugins")
    for col in ("name", "distribution", "registers", "status"):
        t.add_column(col)
    for p in reg.plugins:
        style = {"ok": "green", "disabled": "dim"}.get(p.status, "red")
        t.add_row(p.name, f"{p.distribution} {p.version}", "\n".join(p.registers) or "-",
                  f"[{style}]{p.status_text()}[/{style}]")
    _console().print(t)
    return 0


def cmd_cache(args) -> int:
    from .cache import CompileCache

    cache = CompileCache()
    if args.action == "clear":
        n = cache.clear()
        print(f"removed {n} cached artifact(s) from {cache.dir}")
        return 0
    entries = cache.entries()
    if args.json:
        print(json.dumps([{"key": e.key, "path": str(e.path), "bytes": e.size, "mtime": e.mtime, "label": e.label}
                          for e in entries], indent=2))
        return 0
    print(f"{cache.dir}: {len(entries)} artifact(s), {sum(e.size for e in entries)} bytes")
    for e in entries:
        when = datetime.datetime.fromtimestamp(e.mtime).isoformat(timespec="seconds")
        print(f"  {e.key[:16]}  {e.size:>10}  {when}  {e.label}")
    return 0


def _installed_targets() -> str:
    from .compiler.partition import WELL_KNOWN_TARGETS, _targets, target_names
    from .plugins import get_registry

    reg = get_registry()
    served = _targets(reg)
    names = target_names(reg)  # what a user names: cpu_blas is a backend serving cpu, not a target
    text = "targets installed here: " + ", ".join(t for t in names if t in served)
    missing = [t for t in names if t not in served]  # the well-known ones whose plugin is not installed
    if missing:
        text += "; also " + ", ".join(f"{t} (not installed: pip install {WELL_KNOWN_TARGETS[t]}; until then its ops "
                                      f"run on the host)" for t in missing)
    members = sorted(set(served) - set(names))
    return text + (f"; a single backend may also be named: {', '.join(members)}" if members else "")


def _installed_frontends() -> str:
    from .plugins import get_registry

    return "frontends installed here: " + ", ".join(get_registry().frontends)


def _installed_pass_groups() -> str:
    from .plugins import get_registry

    groups = sorted((g for g in get_registry().pass_groups.values() if g.stage == "hlo"), key=lambda g: g.order)
    text = "hlo pass groups installed here, in the order they run: " + ", ".join(g.name for g in groups)
    others = [g.name for g in groups if not g.default]
    return text + (f" (run only when named: {', '.join(others)})" if others else "")


class _HelpFormatter(argparse.HelpFormatter):
    """Fills ``{targets}``, ``{frontends}`` and ``{pass_groups}`` from the plugin registry, loaded only when such a
    help is printed (``byteir --version`` and the other commands stay fast); never splits a name at a hyphen."""

    INSTALLED = {"{targets}": _installed_targets, "{frontends}": _installed_frontends,
                 "{pass_groups}": _installed_pass_groups}

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        for token, fill in self.INSTALLED.items():
            if text and token in text:
                text = text.replace(token, fill())
        return text

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = {"formatter_class": _HelpFormatter}
    ap = argparse.ArgumentParser(prog="byteir", description="byteir model compiler: StableHLO in, ByRE out", **fmt)
    ap.add_argument("--version", action="version", version=f"byteir-core {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")

    model = ("the model: StableHLO as .mlir text, MLIR bytecode (.mlirbc) or a portable artifact (.stablehlo, "
             ".vhlo), or what an installed frontend reads (a saved torch.export .pt2 for torch)")
    frontend = "read the model with this frontend; {frontends} (default: the first that accepts the model's file)"
    groups = ("comma-separated hlo pass groups to run, e.g. legalize,fold-constants; {pass_groups} (default: every "
              "default group)")
    shapes = ("static shapes for the inputs, comma-separated, dims joined by x, 'scalar' for rank 0: one per "
              "input in order, e.g. 1x3x224x224,4x16, or by input name, e.g. input=1x3x224x224,mask=1x128 "
              "(needed for programs with dynamic dims)")

    c = sub.add_parser("compile", help="compile a model into a .byre artifact", **fmt)
    c.add_argument("model", help=model)
    c.add_argument("-o", "--output", metavar="PATH", help="output path: .byre for bytecode, .byre.mlir for text "
                   "(default: the model's name with .byre, in the current directory); missing folders are made")
    c.add_argument("--target", default="cpu", metavar="NAME",
                   help="where the ops run (default %(default)s; an op none of its backends can run falls back "
                   "to reference); {targets}")
    c.add_argument("--frontend", metavar="NAME", help=frontend)
    c.add_argument("--pass-groups", metavar="A,B", help=groups)
    c.add_argument("--input-shape", metavar="SHAPES", help=shapes)
    c.add_argument("--dump-dir", metavar="DIR", help="write the IR after every stage to DIR (made if missing)")
    c.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a frontend option (repeatable), e.g. signature=serving_default for a SavedModel; "
                   "`byteir list-plugins` and an unknown key's error list each frontend's options")
    c.add_argument("--cpu", help="CPU the native kernels are compiled for (target cpu): an LLVM CPU name such as "
                   "x86-64-v3 (AVX2), x86-64-v4 (AVX-512), znver4, skylake-avx512, or native; default: this "
                   "machine's (env BYTEIR_CPU)")
    c.add_argument("--gpu-arch", help="GPU architectures the cuda kernels are compiled for (target cuda), e.g. "
                   "sm_80,sm_90; default: this machine's GPU, else sm_80 and sm_90 (env BYTEIR_CUDA_ARCHS)")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="print the compile report: fallback chain, ops per backend, devices, copies, stage times")
    c.set_defaults(fn=cmd_compile)

    r = sub.add_parser("run", help="run a .byre artifact (random inputs unless --inputs)", **fmt)
    r.add_argument("artifact", help="a .byre or .byre.mlir artifact, as `byteir compile` writes it")
    r.add_argument("--inputs", metavar="NPZ", help=".npz with one array per input, under the input's name "
                   "(input0, ... as `byteir inspect` lists them) or saved positionally (np.savez(f, x, y): arr_0, ...)")
    r.add_argument("--output", metavar="NPZ", help="write the outputs to this .npz, under the output names")
    r.add_argument("--seed", type=int, default=0,
                   help="seed of the random inputs, when --inputs is not given (default %(default)s)")
    r.add_argument("--sha256", metavar="HEX", help="refuse to run unless the file has this sha256 (64 hex digits)")
    r.add_argument("--profile", type=int, nargs="?", const=10, default=0, metavar="N",
                   help="then time every step over N runs (default 10) and print the slowest")
    r.add_argument("--repeat", type=_positive, metavar="N",
                   help="after the first call (the warm-up, whose outputs are printed) time N more runs and print "
                   "their median; default: at least 5 runs and 0.2 s, at most 1000 runs or 10 s")
    r.add_argument("--top", type=int, default=15, metavar="N", help="rows of the --profile table (default 15)")
    r.set_defaults(fn=cmd_run)

    i = sub.add_parser("inspect", help="print the textual ByRE and a summary", **fmt)
    i.add_argument("artifact", help="a .byre or .byre.mlir artifact")
    i.add_argument("--json", action="store_true", help="print the summary as JSON instead (no textual ByRE)")
    i.add_argument("--summary-only", action="store_true", help="skip the textual ByRE")
    i.add_argument("--extract", metavar="DIR", help="write every carried kernel binary to DIR (made if missing)")
    i.set_defaults(fn=cmd_inspect)

    o = sub.add_parser("opt", help="print the StableHLO after the given pass groups", **fmt)
    o.add_argument("input", help=model)
    o.add_argument("--pass-groups", metavar="A,B", help=groups)
    o.add_argument("--frontend", metavar="NAME", help=frontend)
    o.add_argument("--input-shape", metavar="SHAPES", help=shapes)
    o.add_argument("-o", "--output", metavar="PATH", help="write the StableHLO text here instead of to stdout")
    o.set_defaults(fn=cmd_opt)

    lp = sub.add_parser("list-plugins", help="installed plugins and their status", **fmt)
    lp.add_argument("--json", action="store_true", help="print the rows as JSON")
    lp.set_defaults(fn=cmd_list_plugins)

    ca = sub.add_parser("cache", help="list or clear the compile cache (BYTEIR_CACHE_DIR)", **fmt)
    ca.add_argument("action", choices=("ls", "clear"), help="ls: list the cached artifacts; clear: remove them all")
    ca.add_argument("--json", action="store_true", help="with ls: print the entries as JSON")
    ca.set_defaults(fn=cmd_cache)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ByteirError as e:
        from rich.text import Text

        # the message may hold brackets ("expected f32 [4, 16]"): never read it as markup
        _console(stderr=True).print(Text.assemble(("error:", "red"), " ", str(e)))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
