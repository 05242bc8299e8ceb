"""Write out what a cuda artifact carries, kernel by kernel: ``python -m byteir_backend_cuda.extract model.byre DIR``.

For every cuda program of the artifact: each Triton kernel's source (``<program>.<kernel>.py``), its PTX and
cubin per architecture (``<program>.<kernel>.sm_90.ptx`` / ``.cubin``: feed them to ``ptxas``, ``cuobjdump``,
``nvdisasm``), and the launch list (``<program>.launches.json``: kernel, grid, buffers; GEMM attributes)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from .program import FORMAT, Program, unb64


def extract(artifact, out_dir) -> list[Path]:
    from byteir_core.byre import read_artifact

    art = read_artifact(artifact)
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in art.module.kernels.values():
        if entry.kernel.format != FORMAT:
            continue
        program = Program.from_bytes(entry.kernel.data)
        for k in program.kernels:
            stem = f"{entry.name}.{k.name}"
            written.append(d / f"{stem}.py")
            written[-1].write_text(k.source)
            for b in k.binaries:
                written.append(d / f"{stem}.sm_{b.arch}.ptx")
                written[-1].write_text(b.ptx)
                written.append(d / f"{stem}.sm_{b.arch}.cubin")
                written[-1].write_bytes(unb64(b.cubin))
        launches = [{**asdict(launch), "kernel": program.kernels[launch.kernel].name if launch.kind == "triton"
                     else None} for launch in program.launches]
        written.append(d / f"{entry.name}.launches.json")
        written[-1].write_text(json.dumps({"scratch_bytes": program.scratch_bytes, "launches": launches,
                                           "buffers": [{k: v for k, v in asdict(b).items() if k != "data"}
                                                       for b in program.buffers]}, indent=1))
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m byteir_backend_cuda.extract MODEL.byre OUT_DIR", file=sys.stderr)
        return 2
    for p in extract(argv[0], argv[1]):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
