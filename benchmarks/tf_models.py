"""Keras models through byteir vs TensorFlow itself: compile time against XLA's own first call
(`tf.function(jit_compile=True)`), and the time per call of the compiled program against XLA and eager Keras.

Each measurement runs in its own fresh process (TensorFlow imported and the model built before the clock starts),
so no side warms the other's caches. Prints medians and ratios, and the CPU they were measured on.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/tf_models.py [--models mobilenet_v2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap

MODELS = {
    # name: (builder source, input shape)
    "mobilenet_v2": ("keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))", (1, 224, 224, 3)),
    "cnn_bn": ("keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(32, 3, padding='same'), "
               "keras.layers.BatchNormalization(), keras.layers.ReLU(), keras.layers.MaxPooling2D(), "
               "keras.layers.Conv2D(64, 3, padding='same', activation='relu'), keras.layers.GlobalAveragePooling2D(), "
               "keras.layers.Dense(10)])", (8, 64, 64, 3)),
    "lstm": ("keras.Sequential([keras.Input((32, 64)), keras.layers.LSTM(128, return_sequences=True), "
             "keras.layers.LSTM(128)])", (8, 32, 64)),
}

CHILD = textwrap.dedent("""
    import os, sys, time, json, statistics
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np, tensorflow as tf, keras
    keras.utils.set_random_seed(0)
    model = {builder}
    x = np.random.default_rng(0).standard_normal({shape}).astype(np.float32)
    mode, repeat = {mode!r}, {repeat}
    if mode == "byteir":
        import byteir_core
        t = time.perf_counter()
        art = byteir_core.compile(model, [x], target="cpu", progress=False)
        compile_s = time.perf_counter() - t
        sess = byteir_core.load(art)
        run = lambda: sess.run(x)
    elif mode == "xla":
        fn = tf.function(lambda a: model(a, training=False), jit_compile=True)
        xt = tf.constant(x)
        t = time.perf_counter()
        fn(xt).numpy()
        compile_s = time.perf_counter() - t
        run = lambda: fn(xt).numpy()
    else:
        xt = tf.constant(x)
        compile_s = 0.0
        run = lambda: model(xt, training=False).numpy()
    for _ in range(3):
        run()
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
    print(json.dumps({{"compile_s": compile_s, "ms": 1000 * statistics.median(times)}}))
""")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = fields.get("Flags", "")
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "baseline x86-64"
        return (f"{fields.get('Model name', platform.processor()).strip()} (family {fields.get('CPU family', '?').strip()}"
                f" model {fields.get('Model:', fields.get('Model', '?')).strip()}, {isa}), {os.cpu_count()} cores")
    except OSError:
        return platform.processor()


def measure(name: str, mode: str, repeat: int) -> dict:
    builder, shape = MODELS[name]
    src = CHILD.format(builder=builder, shape=shape, mode=mode, repeat=repeat)
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name} / {mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--repeat", type=int, default=50, help="timed calls per process (median)")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per side (compile time: median)")
    args = ap.parse_args()
    print(f"CPU: {cpu_name()}")
    print(f"{'model':<14}{'byteir compile s':>18}{'XLA first call s':>18}{'ratio':>8}"
          f"{'byteir ms':>11}{'XLA ms':>9}{'eager ms':>10}{'vs best':>9}")
    for name in args.models.split(","):
        res = {m: [measure(name, m, args.repeat) for _ in range(args.runs)] for m in ("byteir", "xla", "eager")}
        med = {m: {k: statistics.median(r[k] for r in rs) for k in ("compile_s", "ms")} for m, rs in res.items()}
        b, x, e = med["byteir"], med["xla"], med["eager"]
        print(f"{name:<14}{b['compile_s']:>18.2f}{x['compile_s']:>18.2f}{b['compile_s'] / x['compile_s']:>8.2f}"
              f"{b['ms']:>11.2f}{x['ms']:>9.2f}{e['ms']:>10.2f}{b['ms'] / min(x['ms'], e['ms']):>9.2f}")


if __name__ == "__main__":
    main()
