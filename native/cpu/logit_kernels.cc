#include "logit_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "../core/cpu_features.h"
#include "simd.h"

namespace sealkit::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

int64_t argmax_scalar(const float* x, int64_t n) {
  int64_t best = 0;
  float m = logit_key(x[0]);
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > m) {  // a NaN compares false: never taken
      m = x[i];
      best = i;
    }
  return best;
}

ScaledRange scale_scalar(const float* x, int64_t n, float scale, float* out) {
  ScaledRange r{kNegInf, kPosInf, false};
  for (int64_t i = 0; i < n; ++i) {
    const float v = logit_key(x[i]) * scale;
    out[i] = v;
    r.hi = std::max(r.hi, v);
    if (v != kNegInf) r.lo = std::min(r.lo, v);
    else r.masked = true;
  }
  return r;
}

void buckets_scalar(const float* w, int64_t n, float hi, float per, uint16_t last, uint16_t* bucket) {
  for (int64_t i = 0; i < n; ++i)
    bucket[i] = w[i] == kNegInf ? last : static_cast<uint16_t>(std::min<float>(last, (hi - w[i]) * per));
}

#if SEALKIT_X86
// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 intrinsics
// (_mm512_undefined_ps, reached here through the reductions and conversions) as
// (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// The max first (max_ps(x, m) returns m when x is NaN), then the first lane equal to it.
SEALKIT_AVX512 int64_t argmax_avx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(kNegInf);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = mask16(n - i);
    m = _mm512_mask_max_ps(m, lanes, _mm512_maskz_loadu_ps(lanes, x + i), m);
  }
  const float best = _mm512_reduce_max_ps(m);
  if (best == kNegInf) return 0;
  const __m512 b = _mm512_set1_ps(best);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = mask16(n - i);
    const __mmask16 hit = _mm512_mask_cmp_ps_mask(lanes, _mm512_maskz_loadu_ps(lanes, x + i), b, _CMP_EQ_OQ);
    if (hit) return i + __builtin_ctz(hit);
  }
  return 0;  // not reached: best is one of the elements
}

SEALKIT_AVX512 ScaledRange scale_avx512(const float* x, int64_t n, float scale, float* out) {
  const __m512 s = _mm512_set1_ps(scale), neg_inf = _mm512_set1_ps(kNegInf);
  __m512 hi = neg_inf, lo = _mm512_set1_ps(kPosInf);
  __mmask16 masked = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = mask16(n - i);
    const __m512 xi = _mm512_maskz_loadu_ps(lanes, x + i);
    const __mmask16 nan = _mm512_cmp_ps_mask(xi, xi, _CMP_UNORD_Q);
    const __m512 v = _mm512_mul_ps(_mm512_mask_mov_ps(xi, nan, neg_inf), s);
    _mm512_mask_storeu_ps(out + i, lanes, v);
    const __mmask16 is_neg_inf = _mm512_mask_cmp_ps_mask(lanes, v, neg_inf, _CMP_EQ_OQ);
    masked |= is_neg_inf;
    hi = _mm512_mask_max_ps(hi, lanes, v, hi);
    lo = _mm512_mask_min_ps(lo, lanes & ~is_neg_inf, v, lo);
  }
  return {_mm512_reduce_max_ps(hi), _mm512_reduce_min_ps(lo), masked != 0};
}

// (hi - w) * per is never NaN for w > -inf (hi - w is finite or +inf, per finite and >= 0, and
// +inf * 0 only arises for w = -inf, which takes `last`), so min_ps agrees with std::min.
SEALKIT_AVX512 void buckets_avx512(const float* w, int64_t n, float hi, float per, uint16_t last, uint16_t* bucket) {
  const __m512 h = _mm512_set1_ps(hi), p = _mm512_set1_ps(per), l = _mm512_set1_ps(static_cast<float>(last));
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = mask16(n - i);
    const __m512 wi = _mm512_maskz_loadu_ps(lanes, w + i);
    const __m512 d = _mm512_min_ps(_mm512_mul_ps(_mm512_sub_ps(h, wi), p), l);
    const __m512 b = _mm512_mask_mov_ps(d, _mm512_cmp_ps_mask(wi, neg_inf, _CMP_EQ_OQ), l);
    _mm256_mask_storeu_epi16(bucket + i, lanes, _mm512_cvtepi32_epi16(_mm512_cvttps_epi32(b)));
  }
}
#pragma GCC diagnostic pop

bool use_avx512() { return has_avx512(active_isa()); }
#endif

}  // namespace

int64_t argmax(const float* x, int64_t n) {
  if (n <= 0) return 0;
#if SEALKIT_X86
  if (use_avx512()) return argmax_avx512(x, n);
#endif
  return argmax_scalar(x, n);
}

ScaledRange scale_logits(const float* x, int64_t n, float scale, float* out) {
#if SEALKIT_X86
  if (use_avx512()) return scale_avx512(x, n, scale, out);
#endif
  return scale_scalar(x, n, scale, out);
}

void logit_buckets(const float* w, int64_t n, float hi, float per, uint16_t last, uint16_t* bucket) {
#if SEALKIT_X86
  if (use_avx512()) return buckets_avx512(w, n, hi, per, last, bucket);
#endif
  buckets_scalar(w, n, hi, per, last, bucket);
}

}  // namespace sealkit::cpu
