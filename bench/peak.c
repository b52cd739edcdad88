// This machine's compute and memory ceilings, for MFU figures in bench/run.ts.
//
//   fp32_fma   FP32 FMA throughput: 16 independent chains of vfmadd231ps on zmm (ymm without
//              AVX-512), 2 FLOP per lane per instruction.
//   bf16_dot   BF16 dot-product throughput: 16 independent chains of vdpbf16ps on zmm (skipped
//              without avx512_bf16): 32 bf16 pairs -> 16 fp32 lanes, 64 FLOP per instruction.
//   triad      STREAM triad a[i] = b[i] + s*c[i] over doubles, 24 bytes per element counted
//              (STREAM's convention: write-allocate traffic not counted).
// Each is measured on 1 thread and on N threads (pthreads, all starting at a barrier); every
// figure is the best and the median of several trials. One JSON object on stdout.
//
// Build: cc -O2 -march=native -pthread bench/peak.c -o peak   (bench/run.ts does this in a temp dir)
// Usage: peak [--threads N] [--trials K] [--ms M] [--stream-mib S]
//        peak --probe [--threads N]   quick machine-speed probe (FP32 FMA on N threads, ~0.1 s):
//                                     bench/run.ts runs it around every measurement to flag noise
#define _GNU_SOURCE
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// ---------------------------------------------------------------- CPU features

static int os_saves_zmm(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xe6) == 0xe6;  // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
}

static int has_avx512f(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return (b & (1u << 16)) && os_saves_zmm();
}

static int has_avx512bf16(void) {
  unsigned a, b, c, d;
  if (!has_avx512f() || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
  return (a & (1u << 5)) != 0;
}

static int has_fma_avx2(void) { return __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2"); }

// ---------------------------------------------------------------- compute kernels
// Each returns FLOPs done; the chains' sum goes to a volatile sink so nothing is elided.

static volatile float sink;

#define CHAINS 16

__attribute__((target("avx512f"))) static double fma_zmm(long iters) {
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps(0.001f * (float)i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (long n = 0; n < iters; n++) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
  sink = _mm512_reduce_add_ps(s);
  return (double)iters * CHAINS * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma_ymm(long iters) {
  __m256 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps(0.001f * (float)i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (long n = 0; n < iters; n++) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  sink = out[0] + out[7];
  return (double)iters * CHAINS * 8 * 2;
}

__attribute__((target("avx512f,avx512bf16"))) static double dpbf16_zmm(long iters) {
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_setzero_ps();
  // bf16 0x3f80 = 1.0 and 0x3380 ~ 6e-8: small products keep the accumulators finite.
  const __m512bh a = (__m512bh)_mm512_set1_epi16((short)0x3380);
  const __m512bh b = (__m512bh)_mm512_set1_epi16((short)0x3f80);
  for (long n = 0; n < iters; n++) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
  sink = _mm512_reduce_add_ps(s);
  return (double)iters * CHAINS * 64;
}

typedef double (*kernel_fn)(long);

// ---------------------------------------------------------------- threads

typedef struct {
  pthread_barrier_t *barrier;
  kernel_fn fn;
  long iters;
  // triad
  double *a, *b, *c;
  size_t lo, hi;
  int reps;
} job_t;

static void *compute_thread(void *p) {
  job_t *j = (job_t *)p;
  pthread_barrier_wait(j->barrier);
  j->fn(j->iters);
  pthread_barrier_wait(j->barrier);
  return NULL;
}

// Runs fn(iters) on `threads` threads at once; returns aggregate FLOP/s.
static double run_compute(kernel_fn fn, double flops_per_iter, long iters, int threads) {
  pthread_t tid[256];
  job_t jobs[256];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){.barrier = &bar, .fn = fn, .iters = iters};
    pthread_create(&tid[t], NULL, compute_thread, &jobs[t]);
  }
  pthread_barrier_wait(&bar);
  double t0 = now_s();
  pthread_barrier_wait(&bar);
  double dt = now_s() - t0;
  for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
  pthread_barrier_destroy(&bar);
  return (double)threads * (double)iters * flops_per_iter / dt;
}

typedef struct { double best, median; int trials; } stat_t;

static stat_t summarize(double *xs, int n) {
  qsort(xs, (size_t)n, sizeof(double), cmp_double);
  stat_t s = {.best = xs[n - 1], .median = n % 2 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]), .trials = n};
  return s;
}

static stat_t measure_compute(kernel_fn fn, int threads, int trials, double target_ms) {
  // Calibrate iterations on one thread so one trial lasts about target_ms.
  long iters = 1 << 16;
  const double flops_per_iter = fn(1);
  for (;;) {
    double t0 = now_s();
    fn(iters);
    double dt = now_s() - t0;
    if (dt > 0.02 || iters > (1L << 40)) {
      iters = (long)((double)iters * (target_ms / 1e3) / dt) + 1;
      break;
    }
    iters *= 4;
  }
  double xs[64];
  for (int i = 0; i < trials; i++) xs[i] = run_compute(fn, flops_per_iter, iters, threads) / 1e9;
  return summarize(xs, trials);
}

// ---------------------------------------------------------------- STREAM triad

static void *triad_thread(void *p) {
  job_t *j = (job_t *)p;
  double *restrict a = j->a, *restrict b = j->b, *restrict c = j->c;
  // First touch by the thread that will use the range.
  for (size_t i = j->lo; i < j->hi; i++) { a[i] = 0.0; b[i] = 1.0; c[i] = 2.0; }
  pthread_barrier_wait(j->barrier);
  for (int r = 0; r < j->reps; r++) {
    pthread_barrier_wait(j->barrier);
    const double s = 3.0;
    for (size_t i = j->lo; i < j->hi; i++) a[i] = b[i] + s * c[i];
    pthread_barrier_wait(j->barrier);
  }
  return NULL;
}

static stat_t measure_triad(size_t n, int threads, int trials) {
  double *a = aligned_alloc(64, ((n * sizeof(double)) + 63) / 64 * 64);
  double *b = aligned_alloc(64, ((n * sizeof(double)) + 63) / 64 * 64);
  double *c = aligned_alloc(64, ((n * sizeof(double)) + 63) / 64 * 64);
  if (!a || !b || !c) { fprintf(stderr, "peak: cannot allocate triad arrays\n"); exit(1); }
  pthread_t tid[256];
  job_t jobs[256];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
  int reps = trials + 1;  // the first pass is a warm-up
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){.barrier = &bar, .a = a, .b = b, .c = c, .lo = n * (size_t)t / (size_t)threads,
                      .hi = n * (size_t)(t + 1) / (size_t)threads, .reps = reps};
    pthread_create(&tid[t], NULL, triad_thread, &jobs[t]);
  }
  pthread_barrier_wait(&bar);  // initialised
  double xs[64];
  int k = 0;
  for (int r = 0; r < reps; r++) {
    pthread_barrier_wait(&bar);
    double t0 = now_s();
    pthread_barrier_wait(&bar);
    double dt = now_s() - t0;
    if (r > 0) xs[k++] = 3.0 * sizeof(double) * (double)n / dt / 1e9;
  }
  for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
  pthread_barrier_destroy(&bar);
  sink = (float)a[n / 2];
  free(a); free(b); free(c);
  return summarize(xs, k);
}

// ---------------------------------------------------------------- main

static void print_stat(const char *name, stat_t s, int last) {
  printf("\"%s\":{\"best\":%.2f,\"median\":%.2f,\"trials\":%d}%s", name, s.best, s.median, s.trials, last ? "" : ",");
}

int main(int argc, char **argv) {
  int threads = 2, trials = 7;
  double ms = 100;
  long stream_mib = 1024;
  int probe = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--probe")) probe = 1;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--trials") && i + 1 < argc) trials = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ms") && i + 1 < argc) ms = atof(argv[++i]);
    else if (!strcmp(argv[i], "--stream-mib") && i + 1 < argc) stream_mib = atol(argv[++i]);
    else { fprintf(stderr, "usage: peak [--probe] [--threads N] [--trials K] [--ms M] [--stream-mib S]\n"); return 2; }
  }
  if (threads < 1 || threads > 256) threads = 2;
  if (trials < 1) trials = 1;
  if (trials > 63) trials = 63;
  if (stream_mib < 1) stream_mib = 1;

  int avx512 = has_avx512f(), bf16 = has_avx512bf16(), avx2 = has_fma_avx2();
  kernel_fn fma = avx512 ? fma_zmm : avx2 ? fma_ymm : NULL;
  if (probe) {
    if (!fma) { printf("{}\n"); return 0; }
    printf("{");
    print_stat("fp32_fma_gflops_nt", measure_compute(fma, threads, 5, 15), 1);
    printf("}\n");
    return 0;
  }
  printf("{\"threads\":%d,\"avx512f\":%s,\"avx512_bf16\":%s,\"fma_width\":%d,", threads, avx512 ? "true" : "false",
         bf16 ? "true" : "false", avx512 ? 512 : avx2 ? 256 : 0);
  if (fma) {
    print_stat("fp32_fma_gflops_1t", measure_compute(fma, 1, trials, ms), 0);
    print_stat("fp32_fma_gflops_nt", measure_compute(fma, threads, trials, ms), 0);
  }
  if (bf16) {
    print_stat("bf16_dot_gflops_1t", measure_compute(dpbf16_zmm, 1, trials, ms), 0);
    print_stat("bf16_dot_gflops_nt", measure_compute(dpbf16_zmm, threads, trials, ms), 0);
  }
  size_t n = (size_t)stream_mib * 1024 * 1024 / sizeof(double);
  int stream_trials = trials < 5 ? trials : 5;
  printf("\"stream_array_mib\":%ld,", stream_mib);
  print_stat("triad_gbs_1t", measure_triad(n, 1, stream_trials), 0);
  print_stat("triad_gbs_nt", measure_triad(n, threads, stream_trials), 1);
  printf("}\n");
  return 0;
}
