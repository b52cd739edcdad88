// This machine's compute and memory ceilings, for MFU figures in bench/run.ts.
//
//   fp32_fma   FP32 FMA throughput: 16 independent chains of vfmadd231ps on zmm (ymm without
//              AVX-512), 2 FLOP per lane per instruction.
//   bf16_dot   BF16 dot-product throughput: 16 independent chains of vdpbf16ps on zmm (skipped
//              without avx512_bf16): 32 bf16 pairs -> 16 fp32 lanes, 64 FLOP per instruction.
//   amx_bf16   (extra, where the CPU has AMX) TDPBF16PS tile throughput: 4 independent 16x16 fp32
//              accumulators, 16x16x32 bf16 MACs = 16384 FLOP per instruction. Reported for context:
//              oneDNN (PyTorch's bf16 matmul) uses AMX where it exists.
//   triad      STREAM triad a[i] = b[i] + s*c[i] over doubles, 24 bytes per element counted
//              (STREAM's convention: write-allocate traffic not counted).
//   read       read-only stream over one array of the same size (decoding's access: weights are
//              read, nothing is written), best of 1-8 interleaved parts per thread. On the 2-vCPU
//              EPYC VM this was written on the two moved independently: triad counted 37-50 GB/s
//              while reads reached 25-35 in some hours, reads 45 against a triad of 31 in another.
// Each is measured on 1 thread and on N threads (pthreads, all starting at a barrier); every
// figure is the best and the median of several trials. One JSON object on stdout. The streams'
// arrays sit on transparent huge pages where Linux offers them (MADV_HUGEPAGE), as the engine's
// weights and activations do, so the bandwidth is not measured through a page walk per 4 KiB (on
// the EPYC VM 4 KiB pages read ~2 % slower).
//
// Build: cc -O2 -march=native -pthread bench/peak.c -o peak   (bench/run.ts does this in a temp dir)
// Usage: peak [--threads N] [--trials K] [--ms M] [--stream-mib S]
//        peak --probe [--threads N] [--read-mib S]
//                                     quick machine-speed probe (FP32 FMA on N threads, ~0.1 s):
//                                     bench/run.ts runs it around every measurement to flag noise;
//                                     with --read-mib, also the read-only stream over S MiB (2
//                                     trials, ~0.2 s at 256), around decoding's runs: the memory
//                                     bandwidth of this VM moved 39-77 GB/s within an hour
//   core_round_trip_ns (both modes, N >= 2): a cache line handed back and forth between threads on
//              the first two CPUs the process may use, median ns per round trip. On the 2-vCPU EPYC
//              VM: ~190 while the vCPUs shared a cache, ~450-900 while the host kept them apart.
#define _GNU_SOURCE
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
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

static int has_amx_bf16(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0;  // AMX-BF16, AMX-TILE
  // Linux hands out the tile state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
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

typedef struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tilecfg_t;

__attribute__((target("amx-tile,amx-bf16"))) static double amx_bf16(long iters) {
  static _Alignas(64) uint16_t abuf[16 * 32], bbuf[16 * 32];
  static _Alignas(64) float cbuf[16 * 16];
  for (int i = 0; i < 16 * 32; i++) { abuf[i] = 0x3380; bbuf[i] = 0x3f80; }  // ~6e-8, 1.0
  tilecfg_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
  _tile_loadconfig(&cfg);
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  _tile_loadd(4, abuf, 64); _tile_loadd(5, abuf, 64);
  _tile_loadd(6, bbuf, 64); _tile_loadd(7, bbuf, 64);
  for (long n = 0; n < iters; n++) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, cbuf, 64);
  _tile_release();
  sink = cbuf[0];
  return (double)iters * 4 * 16 * 16 * 32 * 2;
}

typedef double (*kernel_fn)(long);

// ---------------------------------------------------------------- threads
// Only the workers meet at the barriers and each stamps its own start and end, so a descheduled
// main thread (N workers + main on N CPUs) cannot shorten the measured interval.

#define MAX_REPS 64

typedef struct {
  pthread_barrier_t *barrier;
  kernel_fn fn;
  long iters;
  // triad (a, b, c) and read-only stream (words, streams, fold); both split [lo, hi)
  double *a, *b, *c;
  const uint64_t *words;
  size_t lo, hi;
  int reps, streams;
  uint64_t fold;
  double t0[MAX_REPS], t1[MAX_REPS];
} job_t;

static void *compute_thread(void *p) {
  job_t *j = (job_t *)p;
  pthread_barrier_wait(j->barrier);
  j->t0[0] = now_s();
  j->fn(j->iters);
  j->t1[0] = now_s();
  return NULL;
}

// Span of repetition r over all workers: first start to last end.
static double span(const job_t *jobs, int threads, int r) {
  double lo = jobs[0].t0[r], hi = jobs[0].t1[r];
  for (int t = 1; t < threads; t++) {
    if (jobs[t].t0[r] < lo) lo = jobs[t].t0[r];
    if (jobs[t].t1[r] > hi) hi = jobs[t].t1[r];
  }
  return hi - lo;
}

// Runs fn(iters) on `threads` threads at once; returns aggregate FLOP/s.
static double run_compute(kernel_fn fn, double flops_per_iter, long iters, int threads) {
  static pthread_t tid[256];
  static job_t jobs[256];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)threads);
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){.barrier = &bar, .fn = fn, .iters = iters};
    pthread_create(&tid[t], NULL, compute_thread, &jobs[t]);
  }
  for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
  pthread_barrier_destroy(&bar);
  return (double)threads * (double)iters * flops_per_iter / span(jobs, threads, 0);
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
  double xs[MAX_REPS];
  for (int i = 0; i < trials; i++) xs[i] = run_compute(fn, flops_per_iter, iters, threads) / 1e9;
  return summarize(xs, trials);
}

// A stream's array: 64-byte aligned; from 2 MiB up, on a huge-page boundary with its whole huge
// pages advised MADV_HUGEPAGE (only advice: without THP the pages stay small). Free with free().
static void *stream_alloc(size_t bytes) {
  const size_t huge = (size_t)2 << 20;
  bytes = (bytes + 63) / 64 * 64;
  void *p = NULL;
  if (posix_memalign(&p, bytes >= huge ? huge : 64, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
  if (bytes >= huge) (void)madvise(p, bytes / huge * huge, MADV_HUGEPAGE);
#endif
  return p;
}

// ---------------------------------------------------------------- STREAM triad

static void *triad_thread(void *p) {
  job_t *j = (job_t *)p;
  double *restrict a = j->a, *restrict b = j->b, *restrict c = j->c;
  // First touch by the thread that will use the range.
  for (size_t i = j->lo; i < j->hi; i++) { a[i] = 0.0; b[i] = 1.0; c[i] = 2.0; }
  for (int r = 0; r < j->reps; r++) {
    pthread_barrier_wait(j->barrier);
    j->t0[r] = now_s();
    const double s = 3.0;
    for (size_t i = j->lo; i < j->hi; i++) a[i] = b[i] + s * c[i];
    j->t1[r] = now_s();
  }
  return NULL;
}

static stat_t measure_triad(size_t n, int threads, int trials) {
  size_t bytes = (n * sizeof(double) + 63) / 64 * 64;
  double *a = stream_alloc(bytes), *b = stream_alloc(bytes), *c = stream_alloc(bytes);
  if (!a || !b || !c) { fprintf(stderr, "peak: cannot allocate triad arrays\n"); exit(1); }
  static pthread_t tid[256];
  static job_t jobs[256];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)threads);
  int reps = trials + 1;  // the first pass is a warm-up
  if (reps > MAX_REPS) reps = MAX_REPS;
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){.barrier = &bar, .a = a, .b = b, .c = c, .lo = n * (size_t)t / (size_t)threads,
                      .hi = n * (size_t)(t + 1) / (size_t)threads, .reps = reps};
    pthread_create(&tid[t], NULL, triad_thread, &jobs[t]);
  }
  for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
  pthread_barrier_destroy(&bar);
  double xs[MAX_REPS];
  int k = 0;
  for (int r = 1; r < reps; r++) xs[k++] = 3.0 * sizeof(double) * (double)n / span(jobs, threads, r) / 1e9;
  sink = (float)a[n / 2];
  free(a); free(b); free(c);
  return summarize(xs, k);
}

// ---------------------------------------------------------------- read-only stream
// What decoding does with its weights: read a large array once, write nothing. Each thread reads
// its share as `streams` contiguous parts interleaved 256 bytes at a time (more parts engage more
// of the hardware prefetcher's streams), XOR-folding 64-bit words into 4 accumulators (integer
// ops, so the compiler may vectorise without reordering concerns). Reported: the stream count with
// the highest median, so the figure is the best this simple kernel finds, not one fixed pattern.

#define READ_BLOCK 32  // words per part per step: 256 bytes

// Words in each of a job's parts: whole blocks only, so a few words at the end go unread.
static size_t read_part_words(const job_t *j) {
  return (j->hi - j->lo) / (size_t)j->streams / READ_BLOCK * READ_BLOCK;
}

static void *read_thread(void *p) {
  job_t *j = (job_t *)p;
  const size_t block = READ_BLOCK, part = read_part_words(j);
  uint64_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
  for (int r = 0; r < j->reps; r++) {
    pthread_barrier_wait(j->barrier);
    j->t0[r] = now_s();
    for (size_t off = 0; off < part; off += block)
      for (int s = 0; s < j->streams; s++) {
        const uint64_t *q = j->words + j->lo + (size_t)s * part + off;
        for (size_t k = 0; k < block; k += 4) { x0 ^= q[k]; x1 ^= q[k + 1]; x2 ^= q[k + 2]; x3 ^= q[k + 3]; }
      }
    j->t1[r] = now_s();
  }
  j->fold = x0 ^ x1 ^ x2 ^ x3;
  return NULL;
}

static stat_t measure_read(size_t n_words, int threads, int trials) {
  uint64_t *a = stream_alloc(n_words * sizeof(uint64_t));
  if (!a) { fprintf(stderr, "peak: cannot allocate the read array\n"); exit(1); }
  for (size_t i = 0; i < n_words; i++) a[i] = i * 0x9E3779B97F4A7C15ull;
  static pthread_t tid[256];
  static job_t jobs[256];
  int reps = trials + 1;  // the first pass is a warm-up
  if (reps > MAX_REPS) reps = MAX_REPS;
  stat_t best = {0, 0, 0};
  const int stream_counts[] = {1, 2, 4, 8};
  for (int v = 0; v < 4; v++) {
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    size_t bytes_read = 0;
    for (int t = 0; t < threads; t++) {
      jobs[t] = (job_t){.barrier = &bar, .words = a, .lo = n_words * (size_t)t / (size_t)threads,
                             .hi = n_words * (size_t)(t + 1) / (size_t)threads, .streams = stream_counts[v], .reps = reps};
      pthread_create(&tid[t], NULL, read_thread, &jobs[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    pthread_barrier_destroy(&bar);
    for (int t = 0; t < threads; t++) {
      bytes_read += read_part_words(&jobs[t]) * (size_t)jobs[t].streams * sizeof(uint64_t);
      sink += (float)(jobs[t].fold & 1);
    }
    double xs[MAX_REPS];
    int k = 0;
    for (int r = 1; r < reps; r++) xs[k++] = (double)bytes_read / span(jobs, threads, r) / 1e9;
    stat_t s = summarize(xs, k);
    if (s.median > best.median) best = s;
  }
  free(a);
  return best;
}

// ---------------------------------------------------------------- core-to-core round trip
// Two threads hand one cache line back and forth: the time of a round trip says whether the two
// CPUs share a cache (a cloud host may place a VM's vCPUs on cores that do not, and move them).

#define RT_ROUNDS 20000

static _Atomic long rt_flag __attribute__((aligned(64)));

static int rt_cpus[2];

static int pin_to(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return pthread_setaffinity_np(pthread_self(), sizeof one, &one);
}

static void *rt_partner(void *unused) {
  (void)unused;
  pin_to(rt_cpus[1]);
  for (long i = 0; i < RT_ROUNDS; i++) {
    while (__atomic_load_n(&rt_flag, __ATOMIC_ACQUIRE) != 2 * i + 1) {}
    __atomic_store_n(&rt_flag, 2 * i + 2, __ATOMIC_RELEASE);
  }
  return NULL;
}

// Median nanoseconds per round trip over `trials` runs of RT_ROUNDS.
static double measure_round_trip(int trials) {
  double xs[MAX_REPS];
  // Both threads pinned, to the first two CPUs the process may use: unpinned, the scheduler
  // sometimes runs them on one CPU in turn.
  cpu_set_t saved;
  if (pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) != 0) return -1;
  int found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
    if (CPU_ISSET(c, &saved)) rt_cpus[found++] = c;
  if (found < 2 || pin_to(rt_cpus[0]) != 0) return -1;
  for (int t = 0; t < trials; t++) {
    __atomic_store_n(&rt_flag, 0, __ATOMIC_RELEASE);
    pthread_t th;
    if (pthread_create(&th, NULL, rt_partner, NULL) != 0) return -1;
    double t0 = now_s();
    for (long i = 0; i < RT_ROUNDS; i++) {
      __atomic_store_n(&rt_flag, 2 * i + 1, __ATOMIC_RELEASE);
      while (__atomic_load_n(&rt_flag, __ATOMIC_ACQUIRE) != 2 * i + 2) {}
    }
    xs[t] = (now_s() - t0) * 1e9 / RT_ROUNDS;
    pthread_join(th, NULL);
  }
  pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  return summarize(xs, trials).median;
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
  long probe_read_mib = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--probe")) probe = 1;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--trials") && i + 1 < argc) trials = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ms") && i + 1 < argc) ms = atof(argv[++i]);
    else if (!strcmp(argv[i], "--stream-mib") && i + 1 < argc) stream_mib = atol(argv[++i]);
    else if (!strcmp(argv[i], "--read-mib") && i + 1 < argc) probe_read_mib = atol(argv[++i]);
    else {
      fprintf(stderr, "usage: peak [--probe [--read-mib S]] [--threads N] [--trials K] [--ms M] [--stream-mib S]\n");
      return 2;
    }
  }
  if (threads < 1 || threads > 256) threads = 2;
  if (trials < 1) trials = 1;
  if (trials > MAX_REPS - 1) trials = MAX_REPS - 1;
  if (stream_mib < 1) stream_mib = 1;

  int avx512 = has_avx512f(), bf16 = has_avx512bf16(), avx2 = has_fma_avx2();
  int amx = probe ? 0 : has_amx_bf16();
  kernel_fn fma = avx512 ? fma_zmm : avx2 ? fma_ymm : NULL;
  if (probe) {
    if (!fma) { printf("{}\n"); return 0; }
    printf("{");
    const double rt = threads >= 2 ? measure_round_trip(3) : -1;
    if (rt > 0) printf("\"core_round_trip_ns\":%.1f,", rt);
    if (probe_read_mib > 0) {
      const size_t words = (size_t)probe_read_mib * 1024 * 1024 / sizeof(uint64_t);
      print_stat("read_gbs_nt", measure_read(words, threads, 2), 0);
    }
    print_stat("fp32_fma_gflops_nt", measure_compute(fma, threads, 5, 15), 1);
    printf("}\n");
    return 0;
  }
  const double rt = threads >= 2 ? measure_round_trip(5) : -1;  // -1: fewer than two CPUs allowed
  if (rt > 0) printf("{\"core_round_trip_ns\":%.1f,", rt);
  else printf("{");
  printf("\"threads\":%d,\"avx512f\":%s,\"avx512_bf16\":%s,\"amx_bf16\":%s,\"fma_width\":%d,", threads,
         avx512 ? "true" : "false", bf16 ? "true" : "false", amx ? "true" : "false", avx512 ? 512 : avx2 ? 256 : 0);
  if (fma) {
    print_stat("fp32_fma_gflops_1t", measure_compute(fma, 1, trials, ms), 0);
    print_stat("fp32_fma_gflops_nt", measure_compute(fma, threads, trials, ms), 0);
  }
  if (bf16) {
    print_stat("bf16_dot_gflops_1t", measure_compute(dpbf16_zmm, 1, trials, ms), 0);
    print_stat("bf16_dot_gflops_nt", measure_compute(dpbf16_zmm, threads, trials, ms), 0);
  }
  if (amx) {
    print_stat("amx_bf16_gflops_1t", measure_compute(amx_bf16, 1, trials, ms), 0);
    print_stat("amx_bf16_gflops_nt", measure_compute(amx_bf16, threads, trials, ms), 0);
  }
  size_t n = (size_t)stream_mib * 1024 * 1024 / sizeof(double);
  int stream_trials = trials < 5 ? trials : 5;
  printf("\"stream_array_mib\":%ld,", stream_mib);
  print_stat("triad_gbs_1t", measure_triad(n, 1, stream_trials), 0);
  print_stat("triad_gbs_nt", measure_triad(n, threads, stream_trials), 0);
  print_stat("read_gbs_1t", measure_read(n, 1, stream_trials), 0);
  print_stat("read_gbs_nt", measure_read(n, threads, stream_trials), 1);
  printf("}\n");
  return 0;
}
