#include "decode_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "simd.h"

namespace sealkit::cpu {
namespace {

// One (sequence, kv head): all query rows of the sequence, every query head of the group. The key
// and value rows of the group are read once per query row and shared by the group's heads.
SEALKIT_INLINE void cached_unit(const CachedAttentionShape& s, const float* q, const float* kc, const float* vc, float* out,
                                int64_t seq, int64_t kvh, std::vector<float>& scores, std::vector<float>& acc) {
  const int64_t D = s.head_dim, group = s.heads / s.kv_heads, out_stride = s.heads * D;
  const int64_t q0 = s.q_start[seq], nq = s.q_len[seq], kv0 = s.kv_start[seq], nkv = s.kv_len[seq];
  const float scale = static_cast<float>(s.scale);
  scores.resize(static_cast<size_t>(nkv));
  acc.resize(static_cast<size_t>(D));
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t n = nkv - nq + i + 1;  // keys visible to this query
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      const float* qr = q + (q0 + i) * s.q_stride + h * D;
      float m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const float* kr = kc + (kv0 + j) * s.kv_stride + kvh * D;
        float dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qr[d] * kr[d];
        scores[static_cast<size_t>(j)] = dot * scale;
        m = std::max(m, dot * scale);
      }
      double sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        float e = std::exp(scores[static_cast<size_t>(j)] - m);
        scores[static_cast<size_t>(j)] = e;
        sum += e;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const float w = scores[static_cast<size_t>(j)];
        const float* vr = vc + (kv0 + j) * s.kv_stride + kvh * D;
        for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += w * vr[d];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* o = out + (q0 + i) * out_stride + h * D;
      for (int64_t d = 0; d < D; ++d) o[d] = acc[static_cast<size_t>(d)] * inv;
    }
  }
}

void cached_unit_generic(const CachedAttentionShape& s, const float* q, const float* kc, const float* vc, float* out,
                         int64_t seq, int64_t kvh, std::vector<float>& scores, std::vector<float>& acc) {
  cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
}
#ifdef SEALKIT_X86
SEALKIT_AVX2 void cached_unit_avx2(const CachedAttentionShape& s, const float* q, const float* kc, const float* vc,
                                   float* out, int64_t seq, int64_t kvh, std::vector<float>& scores,
                                   std::vector<float>& acc) {
  cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
}

// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 intrinsics
// (_mm512_undefined_ps) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// Most 16-float chunks of a head row the AVX-512 unit keeps in registers (head_dim <= 256).
constexpr int64_t kMaxChunks = 16;

// AVX-512: the plain loops above do not vectorise (a float dot product is a chain of dependent adds
// the compiler may not reorder). Here a query row stays in registers; each key's products are
// summed over the head's 16-float chunks into one vector, 16 keys' vectors are reduced together
// (reduce16), then exp, max and sum run on whole vectors and P.V accumulates 16 lanes of head_dim
// at a time. Sums run in f32 in a fixed order (the softmax denominator in double), so bits depend on
// the ISA, never on the thread count.
SEALKIT_AVX512 void cached_unit_avx512(const CachedAttentionShape& s, const float* q, const float* kc, const float* vc,
                                       float* out, int64_t seq, int64_t kvh, std::vector<float>& scores,
                                       std::vector<float>& acc) {
  const int64_t D = s.head_dim, group = s.heads / s.kv_heads, out_stride = s.heads * D;
  if (D > 16 * kMaxChunks) return cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
  const int64_t q0 = s.q_start[seq], nq = s.q_len[seq], kv0 = s.kv_start[seq], nkv = s.kv_len[seq];
  const int nd = static_cast<int>((D + 15) / 16);
  const __mmask16 tail = mask16(D - 16 * (nd - 1));
  const __m512 scale = _mm512_set1_ps(static_cast<float>(s.scale));
  scores.resize(static_cast<size_t>((nkv + 15) / 16 * 16));
  float* sc = scores.data();
  const float* K = kc + kv0 * s.kv_stride + kvh * D;
  const float* V = vc + kv0 * s.kv_stride + kvh * D;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t n = nkv - nq + i + 1;  // keys visible to this query
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      const float* qr = q + (q0 + i) * s.q_stride + h * D;
      __m512 qv[kMaxChunks];
      for (int c = 0; c < nd; ++c) qv[c] = _mm512_maskz_loadu_ps(c == nd - 1 ? tail : __mmask16(0xffff), qr + 16 * c);
      // Scores, 16 keys at a time; key t of a block goes to v[4 (t % 4) + t / 4] so that lane t of
      // reduce16's result is its sum.
      __m512 mx = _mm512_set1_ps(-INFINITY);
      for (int64_t j0 = 0; j0 < n; j0 += 16) {
        __m512 v[16];
        for (int t = 0; t < 16; ++t) {
          const int64_t j = j0 + t;
          __m512 p = _mm512_setzero_ps();
          if (j < n) {
            const float* kr = K + j * s.kv_stride;
            p = _mm512_mul_ps(qv[0], _mm512_maskz_loadu_ps(nd == 1 ? tail : __mmask16(0xffff), kr));
            for (int c = 1; c < nd; ++c)
              p = _mm512_fmadd_ps(qv[c], _mm512_maskz_loadu_ps(c == nd - 1 ? tail : __mmask16(0xffff), kr + 16 * c), p);
          }
          v[4 * (t % 4) + t / 4] = p;
        }
        const __mmask16 live = mask16(n - j0);
        const __m512 r = _mm512_mul_ps(reduce16(v), scale);
        _mm512_storeu_ps(sc + j0, r);
        mx = _mm512_mask_max_ps(mx, live, mx, r);
      }
      const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
      __m512d sum0 = _mm512_setzero_pd(), sum1 = _mm512_setzero_pd();
      for (int64_t j0 = 0; j0 < n; j0 += 16) {
        const __m512 e = _mm512_maskz_mov_ps(mask16(n - j0), exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + j0), m)));
        _mm512_storeu_ps(sc + j0, e);
        sum0 = _mm512_add_pd(sum0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        sum1 = _mm512_add_pd(sum1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
      }
      // P.V: two keys per step into two accumulator sets (halves the FMA dependency chains).
      __m512 o0[kMaxChunks], o1[kMaxChunks];
      for (int c = 0; c < nd; ++c) o0[c] = o1[c] = _mm512_setzero_ps();
      int64_t j = 0;
      for (; j + 2 <= n; j += 2) {
        const __m512 p0 = _mm512_set1_ps(sc[j]), p1 = _mm512_set1_ps(sc[j + 1]);
        const float* v0 = V + j * s.kv_stride;
        const float* v1 = v0 + s.kv_stride;
        for (int c = 0; c < nd; ++c) {
          const __mmask16 mk = c == nd - 1 ? tail : __mmask16(0xffff);
          o0[c] = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(mk, v0 + 16 * c), o0[c]);
          o1[c] = _mm512_fmadd_ps(p1, _mm512_maskz_loadu_ps(mk, v1 + 16 * c), o1[c]);
        }
      }
      if (j < n) {
        const __m512 p0 = _mm512_set1_ps(sc[j]);
        const float* v0 = V + j * s.kv_stride;
        for (int c = 0; c < nd; ++c)
          o0[c] = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(c == nd - 1 ? tail : __mmask16(0xffff), v0 + 16 * c), o0[c]);
      }
      const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(sum0, sum1))));
      float* o = out + (q0 + i) * out_stride + h * D;
      for (int c = 0; c < nd; ++c)
        _mm512_mask_storeu_ps(o + 16 * c, c == nd - 1 ? tail : __mmask16(0xffff), _mm512_mul_ps(_mm512_add_ps(o0[c], o1[c]), inv));
    }
  }
}
#pragma GCC diagnostic pop
#endif

}  // namespace

void attention_cached_forward(const CachedAttentionShape& s, const float* q, const float* k_cache, const float* v_cache,
                              float* out) {
  const int64_t units = s.n_seqs * s.kv_heads;
  auto fn = cached_unit_generic;
#ifdef SEALKIT_X86
  if (active_isa() >= Isa::Avx512) fn = cached_unit_avx512;
  else if (active_isa() >= Isa::Avx2) fn = cached_unit_avx2;
#endif
  global_pool().run(units, [&](int64_t u, int) {
    thread_local std::vector<float> scores, acc;
    fn(s, q, k_cache, v_cache, out, u / s.kv_heads, u % s.kv_heads, scores, acc);
  });
}

void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                 int64_t dst_stride) {
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(dst + i * dst_stride, src + static_cast<int64_t>(rows[i]) * src_stride, static_cast<size_t>(cols) * 4);
}

void scatter_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                  int64_t dst_stride) {
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(dst + static_cast<int64_t>(rows[i]) * dst_stride, src + i * src_stride, static_cast<size_t>(cols) * 4);
}

}  // namespace sealkit::cpu
