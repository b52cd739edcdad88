// Measured compute ceilings (see peak.h).
#include "peak.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "kernels.h"
#include "simd.h"

namespace sealkit::cpu {

namespace {

constexpr int kChains = 16;

// Keeps a loop's result alive without a store the compiler could drop.
template <typename T>
void keep(const T& v) {
  asm volatile("" : : "m"(v) : "memory");
}

#if SEALKIT_X86
// Each loop returns the FLOPs it ran. The operands keep the accumulators finite: x * 0.999999 +
// 1e-7 converges, and bf16 6e-8 x 1.0 adds little.
SEALKIT_AVX512 double fma_zmm(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  keep(acc);
  return static_cast<double>(iters) * kChains * 16 * 2;
}

// AVX2 has 16 ymm registers: 16 chains and their two operands spilled (83 against 134 GFLOP/s a
// thread on Zen 5, below the f32 GEMM's 122). 12 chains still cover two FMA pipes of latency 4-5.
constexpr int kChainsYmm = 12;
SEALKIT_AVX2 double fma_ymm(int64_t iters) {
  __m256 acc[kChainsYmm];
  for (int i = 0; i < kChainsYmm; ++i) acc[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t n = 0; n < iters; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kChainsYmm; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  keep(acc);
  return static_cast<double>(iters) * kChainsYmm * 8 * 2;
}

SEALKIT_BF16 double dpbf16_zmm(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi16(static_cast<short>(0x3380));  // ~6e-8
  const __m512bh b = (__m512bh)_mm512_set1_epi16(static_cast<short>(0x3f80));  // 1.0
  for (int64_t n = 0; n < iters; ++n) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  keep(acc);
  return static_cast<double>(iters) * kChains * 16 * 2 * 2;
}

// Four 16 x 16 f32 accumulator tiles, each fed by its own pair of 16 x 32 bf16 tiles' products.
struct alignas(64) AmxConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
SEALKIT_AMX double amx_tiles(int64_t iters) {
  alignas(64) uint16_t a[16 * 32], b[16 * 32];
  alignas(64) float c[16 * 16];
  std::fill(a, a + 16 * 32, static_cast<uint16_t>(0x3380));
  std::fill(b, b + 16 * 32, static_cast<uint16_t>(0x3f80));
  AmxConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, a, 64);
  _tile_loadd(5, a, 64);
  _tile_loadd(6, b, 64);
  _tile_loadd(7, b, 64);
  for (int64_t n = 0; n < iters; ++n) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, 64);
  _tile_release();
  keep(c);
  return static_cast<double>(iters) * 4 * 16 * 16 * 32 * 2;
}
#endif

using Loop = double (*)(int64_t);

Loop loop_for(PeakKind kind) {
#if SEALKIT_X86
  switch (kind) {
    case PeakKind::Fp32Fma: return has_avx512(active_isa()) ? fma_zmm : fma_ymm;
    case PeakKind::Bf16Dot: return dpbf16_zmm;
    case PeakKind::AmxBf16: return amx_tiles;
  }
#endif
  (void)kind;
  return nullptr;
}

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

const char* peak_kind_name(PeakKind kind) {
  switch (kind) {
    case PeakKind::Fp32Fma: return "fp32_fma";
    case PeakKind::Bf16Dot: return "bf16_dot";
    case PeakKind::AmxBf16: return "amx_bf16";
  }
  return "?";
}

bool parse_peak_kind(const std::string& name, PeakKind& kind) {
  for (PeakKind k : {PeakKind::Fp32Fma, PeakKind::Bf16Dot, PeakKind::AmxBf16}) {
    if (name == peak_kind_name(k)) {
      kind = k;
      return true;
    }
  }
  return false;
}

std::string peak_unsupported(PeakKind kind) {
#if SEALKIT_X86
  const Isa isa = active_isa();
  switch (kind) {
    case PeakKind::Fp32Fma:
      return isa >= Isa::Avx2 ? "" : std::string("the f32 kernels run scalar code at ISA ") + isa_name(isa);
    case PeakKind::Bf16Dot:
      if (isa == Isa::Avx512Bf16) return "";
      return std::string("vdpbf16ps needs AVX512-BF16 (active ISA: ") + isa_name(isa) + ")";
    case PeakKind::AmxBf16:
      if (amx_tiles_on()) return "";
      return "the bf16 GEMMs do not run on AMX tiles here (no AMX-BF16, no permission for its state, or "
             "SEALKIT_AMX=0)";
  }
  return "unknown kind";
#else
  (void)kind;
  return "not an x86-64 CPU";
#endif
}

PeakMeasurement measure_peak(PeakKind kind, double trial_seconds, int trials) {
  const std::string why = peak_unsupported(kind);
  if (!why.empty()) throw std::invalid_argument(std::string("measure_peak(") + peak_kind_name(kind) + "): " + why);
  if (!(trial_seconds > 0) || trials < 1)
    throw std::invalid_argument("measure_peak: trial_seconds must be > 0 and trials >= 1");
  const Loop loop = loop_for(kind);
  // Iterations per share for about trial_seconds, from a short run on the caller's thread.
  constexpr int64_t kProbeIters = 1 << 12;
  const double t0 = seconds_now();
  loop(kProbeIters);
  const double probe = std::max(seconds_now() - t0, 1e-7);
  const int64_t iters =
      std::clamp<int64_t>(static_cast<int64_t>(trial_seconds / probe * kProbeIters), kProbeIters, int64_t{1} << 34);

  ThreadPool& pool = global_pool();
  const int threads = pool.threads();
  const size_t shares = static_cast<size_t>(threads);
  std::vector<double> start(shares), end(shares), flops(shares);
  std::vector<int> ran_on(shares);
  PeakMeasurement best;
  best.threads = threads;
  // A first, untimed run wakes the workers; then each trial counts only if every share ran on a
  // thread of its own (a share a late worker left to another thread ran after it, not beside it).
  for (int attempt = 0; attempt <= 3 * trials && best.trials < trials; ++attempt) {
    pool.run(threads, [&](int64_t i, int thread) {
      const size_t s = static_cast<size_t>(i);
      start[s] = seconds_now();
      flops[s] = loop(attempt == 0 ? kProbeIters : iters);
      end[s] = seconds_now();
      ran_on[s] = thread;
    });
    if (attempt == 0) continue;
    std::vector<int> seen(ran_on);
    std::sort(seen.begin(), seen.end());
    if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) continue;
    const double span = *std::max_element(end.begin(), end.end()) - *std::min_element(start.begin(), start.end());
    double total = 0;
    for (double f : flops) total += f;
    best.gflops = std::max(best.gflops, total / std::max(span, 1e-9) / 1e9);
    ++best.trials;
  }
  if (best.trials == 0)
    throw std::runtime_error(std::string("measure_peak(") + peak_kind_name(kind) +
                             "): no trial ran one share per thread on " + std::to_string(threads) + " threads");
  return best;
}

}  // namespace sealkit::cpu
