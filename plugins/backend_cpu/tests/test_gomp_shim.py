"""The LLVM OpenMP entry points our multithreaded kernels carry, written on GNU OpenMP (gomp_shim.py): the static
work-sharing split, driven from C with the team size and thread number faked, gives every iteration to exactly
one thread and marks the thread with the last one, for every bound type, increments both ways and chunked
schedules; __kmpc_fork_call passes the captured pointers through."""

import shutil
import subprocess

import pytest

from byteir_backend_cpu.gomp_shim import shim_object

HARNESS = r"""
#include <stdint.h>
#include <stdio.h>

typedef struct ident ident_t;
static int nth_ = 1, tid_ = 0;
int omp_get_num_threads(void) { return nth_; }
int omp_get_thread_num(void) { return tid_; }
int omp_get_max_threads(void) { return 3; }  /* the team __kmpc_fork_call asks for */
void GOMP_barrier(void) {}
/* the team run one thread after another */
void GOMP_parallel(void (*fn)(void *), void *data, unsigned n, unsigned flags) {
  (void)flags;
  nth_ = (int)n;
  for (tid_ = 0; tid_ < nth_; tid_++) fn(data);
  nth_ = 1; tid_ = 0;
}

void __kmpc_for_static_init_4(ident_t *, int32_t, int32_t, int32_t *, int32_t *, int32_t *, int32_t *, int32_t,
                              int32_t);
void __kmpc_for_static_init_4u(ident_t *, int32_t, int32_t, int32_t *, uint32_t *, uint32_t *, int32_t *, int32_t,
                               int32_t);
void __kmpc_for_static_init_8(ident_t *, int32_t, int32_t, int32_t *, int64_t *, int64_t *, int64_t *, int64_t,
                              int64_t);
void __kmpc_for_static_init_8u(ident_t *, int32_t, int32_t, int32_t *, uint64_t *, uint64_t *, int64_t *, int64_t,
                               int64_t);
void __kmpc_fork_call(ident_t *, int32_t, void (*)(int32_t *, int32_t *, ...), ...);

static int hits[4096];

/* the loop each thread runs, as the OpenMP translation emits it (for a chunked schedule: by stride) */
#define CHECK(NAME, T, ST)                                                                                     \
  static int check_##NAME(int nth, int sched, T lo, T hi, ST incr, ST chunk) {                                 \
    int lasts = 0, trip = 0;                                                                                   \
    for (T i = lo; incr > 0 ? i <= hi : i >= hi; i += incr) trip++;                                            \
    for (int k = 0; k < 4096; k++) hits[k] = 0;                                                                \
    for (int t = 0; t < nth; t++) {                                                                            \
      T l = lo, u = hi; ST stride = 1; int32_t last = 0;                                                       \
      nth_ = nth; tid_ = t;                                                                                    \
      __kmpc_for_static_init_##NAME(0, t, sched, &last, &l, &u, &stride, incr, chunk);                         \
      lasts += last;                                                                                           \
      for (;;) { /* the bounds as iteration numbers (k-th iteration: lo + k * incr) */                          \
        ST first = (ST)(l - lo) / incr, end = (ST)(u - lo) / incr;                                             \
        if (first >= trip) break;                                                                              \
        for (ST k = first; k <= end && k < trip; k++)                                                          \
          hits[k]++;                                                                                           \
        if (sched != 33) break;                                                                                \
        l += (T)stride; u += (T)stride;                                                                        \
      }                                                                                                        \
    }                                                                                                          \
    nth_ = 1; tid_ = 0;                                                                                        \
    for (int k = 0; k < trip; k++)                                                                             \
      if (hits[k] != 1) return 1;                                                                              \
    return lasts != (trip > 0);                                                                                \
  }

CHECK(4, int32_t, int32_t)
CHECK(4u, uint32_t, int32_t)
CHECK(8, int64_t, int64_t)
CHECK(8u, uint64_t, int64_t)

static void micro(int32_t *gtid, int32_t *btid, void *a, void *b) {
  (void)btid;
  ((int *)a)[*gtid] += 1;
  ((int *)b)[*gtid] += 10;
}

int main(void) {
  int bad = 0, cases = 0;
  int nths[] = {1, 2, 3, 7};
  for (int n = 0; n < 4; n++) {
    int nth = nths[n];
    for (int trip = 0; trip <= 20; trip++) {
      for (int sched = 33; sched <= 34; sched++) {
        int chunk = sched == 33 ? 2 : 0;
        bad += check_4(nth, sched, 5, 5 + trip - 1, 1, chunk);
        bad += check_4(nth, sched, 40, 40 - 3 * (trip - 1), -3, chunk);
        bad += check_8(nth, sched, -7, -7 + 2 * (trip - 1), 2, chunk);
        bad += check_8(nth, sched, 0, -(int64_t)(trip - 1), -1, chunk);
        if (trip) {
          bad += check_4u(nth, sched, 3, 3 + (uint32_t)trip - 1, 1, chunk);
          bad += check_8u(nth, sched, 0, (uint64_t)trip - 1, 1, chunk);
          bad += check_8u(nth, sched, 100, 100 - 4 * ((uint64_t)trip - 1), -4, chunk);
        }
        cases += trip ? 7 : 4;
      }
    }
  }
  int a[8] = {0}, b[8] = {0};
  __kmpc_fork_call(0, 2, (void (*)(int32_t *, int32_t *, ...))micro, a, b);
  if (!(a[0] == 1 && a[1] == 1 && a[2] == 1 && b[2] == 10 && a[3] == 0)) bad++;
  printf("%d %d\n", cases, bad);
  return 0;
}
"""


def test_static_split_gives_every_iteration_to_one_thread_and_fork_passes_captures(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: the cpu backend needs one to link kernels")
    (tmp_path / "shim.o").write_bytes(shim_object(cc))
    (tmp_path / "harness.c").write_text(HARNESS)
    exe = tmp_path / "harness"
    r = subprocess.run([cc, "-O1", "-o", str(exe), str(tmp_path / "harness.c"), str(tmp_path / "shim.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cases, bad = map(int, out.stdout.split())
    assert cases == 4 * 21 * 2 * 7 - 4 * 2 * 3 and bad == 0, out.stdout
