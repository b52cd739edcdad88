// Per-function ISA targets for the CPU kernels. The addon is compiled for baseline x86-64; wide
// kernels carry these target attributes and are chosen per call from active_isa().
#pragma once

#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#define SEALKIT_X86 1
#define SEALKIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define SEALKIT_AVX2 __attribute__((target("avx2,fma")))
#define SEALKIT_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
// The coded-weight kernel's byte permutes (vpermb, vpermt2b) on top of the bf16 pairs.
#define SEALKIT_CODED __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi")))
#define SEALKIT_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#endif
#define SEALKIT_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__)
namespace sealkit::cpu {
// Asks for p's cache line for ownership (PREFETCHW), ahead of a store to it. Spelled out: GCC emits
// PREFETCHW for __builtin_prefetch's write hint only for targets that declare it, not for baseline
// x86-64 (it emitted PREFETCHT0); CPUs without it run it as a NOP.
inline void prefetch_for_write(const void* p) { asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p))); }

// The first n of 16 lanes (none for n <= 0, all for n >= 16).
SEALKIT_AVX512 inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// The first n of 32 lanes.
SEALKIT_AVX512 inline __mmask32 mask32(int64_t n) {
  return n >= 32 ? __mmask32(0xffffffffu) : n <= 0 ? __mmask32(0) : __mmask32((1u << n) - 1);
}

// 16 floats (lanes outside m are zero and never read); bf16 (uint16_t bits) widened exactly.
SEALKIT_AVX512 inline __m512 load16_masked(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
SEALKIT_AVX512 inline __m512 load16_masked(const uint16_t* p, __mmask16 m) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

// GCC 12 flags the deliberately undefined pass-through operand inside its own shuffle intrinsics
// (_mm512_undefined_ps) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// In-register transpose: r[i] holds row i on entry and column i on exit.
SEALKIT_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 2) {  // interleave pairs of rows, 32-bit granules
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 4) {  // 64-bit granules: lane L of r[i+q] = rows i..i+3, column 4L+q
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
#pragma GCC unroll 16
  for (int q = 0; q < 4; ++q) {  // gather 128-bit lane L of the four row groups into column 4L+q
    const __m512 lo01 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x44), hi01 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xEE);
    const __m512 lo23 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x44);
    const __m512 hi23 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xEE);
    t[q] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
    t[4 + q] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
    t[8 + q] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
    t[12 + q] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}
#pragma GCC diagnostic pop

// exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k ln2 (ln2 split in two for accuracy), exp(r)
// by a degree-7 polynomial (Cephes expf coefficients). Inputs are clamped to the finite range; a
// NaN passes through the clamps (max/min return their second operand on NaN) and yields NaN.
constexpr float kExpHi = 88.3762626647949f, kExpLo = -88.3762626647949f;
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f, kP3 = 4.1665795894e-2f,
                kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

SEALKIT_AVX512 SEALKIT_INLINE __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(kExpHi), _mm512_max_ps(_mm512_set1_ps(kExpLo), x));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Lo), r);
  __m512 y = _mm512_set1_ps(kP0);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP1));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP2));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP3));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP4));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP5));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

// sum_{i < n} exp(x[i] - shift), each exp handed to put(i, e, m) as it is made: whole vectors with
// m = all lanes, the row's last partial vector with m its valid lanes (the others zero in e). The
// sum goes through float lanes for up to 8 vectors (128 elements) at a time, then into two vectors
// of double lanes, folded in a fixed order: converting every vector to double (two conversions, an
// extract and two adds: seven of the ~25 vector operations per vector, all competing for the two
// ports that run 512-bit arithmetic) made the short attention rows' exps cost about what their
// scores did. One body for every AVX-512 exp row (kernels.cc's rows; attention's probabilities,
// which put them straight into bf16 pairs), so they agree to the bit; always inlined, so a caller
// that drops the sum loses its arithmetic.
template <typename Put>
SEALKIT_AVX512 SEALKIT_INLINE double exp_row_sum512(const float* x, int64_t n, float shift, Put&& put) {
  const __m512 vs = _mm512_set1_ps(shift);
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  auto add_to_lanes = [&](__m512 f) SEALKIT_AVX512 {
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1)));
  };
  const int64_t whole = n / 16 * 16;
  int64_t i = 0;
  while (i < whole) {
    const int64_t end = i + 128 < whole ? i + 128 : whole;
    __m512 f = _mm512_setzero_ps();
    for (; i < end; i += 16) {
      const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
      f = _mm512_add_ps(f, e);
      put(i, e, __mmask16(0xffff));
    }
    add_to_lanes(f);
  }
  if (i < n) {
    const __mmask16 m = mask16(n - i);
    const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs)));
    add_to_lanes(e);
    put(i, e, m);
  }
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, _mm512_add_pd(s0, s1));
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// SwiGLU's forward on 16 lanes, silu(g) * u = g * sigmoid(g) * u with sigmoid = 1 / (1 + exp(-g)):
// the one arithmetic of every AVX-512 SwiGLU (kernels.cc's pass over whole arrays, the GEMM's fused
// gate/up tiles), so they agree to the bit. The sum is an explicitly rounded add: GCC would contract
// a plain one into an FMA with other bits.
SEALKIT_AVX512 SEALKIT_INLINE __m512 sigmoid512(__m512 g) {
  const __m512 e = exp512(_mm512_xor_ps(g, _mm512_set1_ps(-0.f)));
  return _mm512_div_ps(_mm512_set1_ps(1.f),
                       _mm512_add_round_ps(_mm512_set1_ps(1.f), e, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
SEALKIT_AVX512 SEALKIT_INLINE __m512 swiglu512(__m512 g, __m512 u) {
  return _mm512_mul_ps(_mm512_mul_ps(g, sigmoid512(g)), u);
}
// SwiGLU's backward pass on 16 lanes: dup = d * silu(g), dgate = d * u * sig * (1 + g * (1 - sig)),
// the one arithmetic of every AVX-512 SwiGLU backward (kernels.cc's pass over whole arrays, the
// GEMM's fused dact tiles). The sum is explicitly rounded, as above.
SEALKIT_AVX512 SEALKIT_INLINE void swiglu_backward512(__m512 g, __m512 u, __m512 d, __m512& dgate, __m512& dup) {
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512 s = sigmoid512(g);
  dup = _mm512_mul_ps(_mm512_mul_ps(d, g), s);
  const __m512 du = _mm512_mul_ps(_mm512_mul_ps(d, u), s);
  const __m512 slope =
      _mm512_add_round_ps(one, _mm512_mul_ps(g, _mm512_sub_ps(one, s)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  dgate = _mm512_mul_ps(du, slope);
}

// Horizontal sums of 16 vectors at once: lane 4L + m of the result is the sum of v[4m + L]'s 16
// lanes. The pairing is a fixed tree, the one a lane-by-lane fold would use (e with e + 8, then
// e + 4, e + 2, e + 1), done with 15 shuffles and 15 adds for all 16 sums instead of 15 scalar adds
// and a trip through memory for each.
SEALKIT_AVX512 SEALKIT_INLINE __m512 reduce16(const __m512 (&v)[16]) {
  __m512 w[8], u[4];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p)  // e + 8: 256-bit halves; w[p] = 8 partials of v[2p], then of v[2p + 1]
    w[p] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q)  // e + 4: 128-bit lanes; lane L of u[q] = 4 partials of v[4q + L]
    u[q] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * q], w[2 * q + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(w[2 * q], w[2 * q + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  // e + 2 and e + 1 inside the 128-bit lanes.
  const __m512 s0 = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s1 = _mm512_add_ps(_mm512_shuffle_ps(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_ps(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_ps(s0, s1, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_ps(s0, s1, _MM_SHUFFLE(3, 1, 3, 1)));
}
}  // namespace sealkit::cpu
#endif
