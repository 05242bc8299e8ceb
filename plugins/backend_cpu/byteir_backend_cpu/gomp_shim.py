"""The LLVM OpenMP entry points our multithreaded kernels call (``__kmpc_*``), implemented on GNU OpenMP.

MLIR's OpenMP translation emits calls into the LLVM/Intel OpenMP runtime: ``__kmpc_fork_call`` to start a
parallel region, ``__kmpc_for_static_init_*`` to split a work-sharing loop among the team, ``__kmpc_barrier``.
PyTorch, and oneDNN's build this backend uses, run on GNU OpenMP (libgomp), whose idle workers spin for about
10 ms after each region: a second runtime in the process would run its threads against them. So each
multithreaded kernel carries these few functions, written on libgomp's ``GOMP_parallel`` and ``omp_*`` calls
(linked in, hidden), and every parallel region in the process runs on the one libgomp pool.

The static schedule splits like the LLVM runtime's (``kmp_sched.cpp``): unchunked (34), iterations in
contiguous blocks, the first ``trip % threads`` threads one more; chunked (33), round-robin chunks.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading

from byteir_core.errors import TargetError

SOURCE = r"""
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct ident ident_t;
typedef void (*kmpc_micro)(int32_t *, int32_t *, ...);

extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern void GOMP_barrier(void);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

#define MAX_ARGS 16

struct fork { kmpc_micro fn; int32_t argc; void *a[MAX_ARGS]; };

static void run_fork(void *p) {
  struct fork *f = (struct fork *)p;
  int32_t gtid = omp_get_thread_num(), btid = gtid;
  void **a = f->a;
  switch (f->argc) {
  case 0: f->fn(&gtid, &btid); break;
  case 1: f->fn(&gtid, &btid, a[0]); break;
  case 2: f->fn(&gtid, &btid, a[0], a[1]); break;
  case 3: f->fn(&gtid, &btid, a[0], a[1], a[2]); break;
  case 4: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3]); break;
  case 5: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4]); break;
  case 6: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5]); break;
  case 7: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6]); break;
  case 8: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]); break;
  case 9: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]); break;
  case 10: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]); break;
  case 11: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]); break;
  case 12: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]); break;
  case 13: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12]);
    break;
  case 14: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12],
                 a[13]); break;
  case 15: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12],
                 a[13], a[14]); break;
  default: f->fn(&gtid, &btid, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12],
                 a[13], a[14], a[15]); break;
  }
}

extern int omp_get_max_threads(void);

/* The team: the calling thread's OpenMP setting (torch.set_num_threads; 1 in a forked child, where the
   provider sets it: libgomp's pool does not survive fork), capped by BYTEIR_NUM_THREADS */
static unsigned thread_cap(void) {
  static int cap = -1;
  int n = omp_get_max_threads();
  if (cap < 0) {
    const char *e = getenv("BYTEIR_NUM_THREADS");
    int c = e ? atoi(e) : 0;
    cap = c > 0 ? c : 0;
  }
  return (unsigned)(cap && cap < n ? cap : n);
}

void __kmpc_fork_call(ident_t *loc, int32_t argc, kmpc_micro fn, ...) {
  struct fork f;
  va_list ap;
  (void)loc;
  if (argc > MAX_ARGS) abort();  /* never emitted: the translation passes one aggregate of the captures */
  f.fn = fn;
  f.argc = argc;
  va_start(ap, fn);
  for (int32_t i = 0; i < argc; i++) f.a[i] = va_arg(ap, void *);
  va_end(ap);
  GOMP_parallel(run_fork, &f, thread_cap(), 0);
}

int32_t __kmpc_global_thread_num(ident_t *loc) { (void)loc; return omp_get_thread_num(); }

void __kmpc_barrier(ident_t *loc, int32_t gtid) { (void)loc; (void)gtid; GOMP_barrier(); }

void __kmpc_for_static_fini(ident_t *loc, int32_t gtid) { (void)loc; (void)gtid; }

/* T: the bounds' type; UT: its unsigned form (trip counts); ST: the stride, increment and chunk (signed, as in
   LLVM's kmp.h, for the unsigned variants too) */
#define STATIC_INIT(NAME, T, UT, ST)                                                                           \
  void NAME(ident_t *loc, int32_t gtid, int32_t sched, int32_t *plast, T *plower, T *pupper, ST *pstride,      \
            ST incr, ST chunk) {                                                                               \
    int64_t nth = omp_get_num_threads(), tid = omp_get_thread_num();                                           \
    T lower = *plower, upper = *pupper;                                                                        \
    UT trip;                                                                                                   \
    (void)loc; (void)gtid;                                                                                     \
    if (incr == 1) trip = (UT)(upper - lower) + 1;                                                             \
    else if (incr == -1) trip = (UT)(lower - upper) + 1;                                                       \
    else if (incr > 0) trip = (UT)(upper - lower) / (UT)incr + 1;                                              \
    else trip = (UT)(lower - upper) / (UT)(-incr) + 1;                                                         \
    if ((incr > 0 && upper < lower) || (incr < 0 && upper > lower)) trip = 0;                                  \
    if (sched == 33 && chunk > 0) { /* static, chunked */                                                      \
      ST span = chunk * incr;                                                                                  \
      *pstride = span * (ST)nth;                                                                               \
      *plower = lower + (T)(span * (ST)tid);                                                                   \
      *pupper = *plower + (T)(span - incr);                                                                    \
      if (plast) *plast = trip ? (int32_t)(tid == (int64_t)(((trip - 1) / (UT)chunk) % (UT)nth)) : 0;           \
      return;                                                                                                  \
    }                                                                                                          \
    if (nth == 1 || trip == 0) {                                                                               \
      if (plast) *plast = trip != 0;                                                                           \
      *pstride = trip ? (ST)trip * incr : incr;                                                                \
      return;                                                                                                  \
    }                                                                                                          \
    if (trip < (UT)nth) {                                                                                      \
      if ((UT)tid < trip) *pupper = *plower = lower + (T)((ST)tid * incr);                                     \
      else { *plower = upper + (T)incr; *pupper = upper; }                                                     \
      if (plast) *plast = (UT)tid == trip - 1;                                                                 \
    } else {                                                                                                   \
      UT small = trip / (UT)nth, extras = trip % (UT)nth;                                                      \
      UT first = (UT)tid * small + ((UT)tid < extras ? (UT)tid : extras);                                      \
      *plower = lower + (T)((ST)first * incr);                                                                 \
      *pupper = *plower + (T)((ST)(small + ((UT)tid < extras ? 1 : 0)) * incr - incr);                        \
      if (plast) *plast = tid == nth - 1;                                                                      \
    }                                                                                                          \
    *pstride = (ST)trip * incr;                                                                                \
  }

STATIC_INIT(__kmpc_for_static_init_4, int32_t, uint32_t, int32_t)
STATIC_INIT(__kmpc_for_static_init_4u, uint32_t, uint32_t, int32_t)
STATIC_INIT(__kmpc_for_static_init_8, int64_t, uint64_t, int64_t)
STATIC_INIT(__kmpc_for_static_init_8u, uint64_t, uint64_t, int64_t)
"""

_lock = threading.Lock()
_object: bytes | None = None


def shim_object(cc: str) -> bytes:
    """The shim compiled by ``cc`` to a position-independent object (once per process), its functions hidden
    so that each kernel binds its own calls to its own copy."""
    global _object
    with _lock:
        if _object is None:
            with tempfile.TemporaryDirectory(prefix="byteir-gomp-shim-") as d:
                src, obj = os.path.join(d, "shim.c"), os.path.join(d, "shim.o")
                with open(src, "w") as f:
                    f.write(SOURCE)
                r = subprocess.run([cc, "-O2", "-fPIC", "-fvisibility=hidden", "-c", "-o", obj, src],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise TargetError(f"compiling the OpenMP shim of the cpu kernels failed ({cc}): "
                                      f"{r.stderr.strip()}")
                with open(obj, "rb") as f:
                    _object = f.read()
        return _object
