#include "decode_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/dtype.h"
#include "../core/threadpool.h"
#include "simd.h"

namespace sealkit::cpu {
namespace {

// A cache element as f32: f32 caches as they are, bf16 ones (uint16_t bits) widened exactly.
SEALKIT_INLINE float kv_value(float x) { return x; }
SEALKIT_INLINE float kv_value(uint16_t x) { return bf16_to_f32(x); }

// One (sequence, kv head): all query rows of the sequence, every query head of the group. The key
// and value rows of the group are read once per query row and shared by the group's heads. Kv is
// the cache's element type (float, or uint16_t for bf16).
template <typename Kv>
SEALKIT_INLINE void cached_unit(const CachedAttentionShape& s, const float* q, const Kv* kc, const Kv* vc, float* out,
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
        const Kv* kr = kc + (kv0 + j) * s.kv_stride + kvh * D;
        float dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qr[d] * kv_value(kr[d]);
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
        const Kv* vr = vc + (kv0 + j) * s.kv_stride + kvh * D;
        for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += w * kv_value(vr[d]);
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* o = out + (q0 + i) * out_stride + h * D;
      for (int64_t d = 0; d < D; ++d) o[d] = acc[static_cast<size_t>(d)] * inv;
    }
  }
}

template <typename Kv>
void cached_unit_generic(const CachedAttentionShape& s, const float* q, const Kv* kc, const Kv* vc, float* out,
                         int64_t seq, int64_t kvh, std::vector<float>& scores, std::vector<float>& acc) {
  cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
}
#ifdef SEALKIT_X86
template <typename Kv>
SEALKIT_AVX2 void cached_unit_avx2(const CachedAttentionShape& s, const float* q, const Kv* kc, const Kv* vc,
                                   float* out, int64_t seq, int64_t kvh, std::vector<float>& scores,
                                   std::vector<float>& acc) {
  cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
}

// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 intrinsics
// (_mm512_undefined_ps) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// Asks for rows [r0, r1) of one head's slice of a cache (D elements per row, rows `stride`
// elements apart) to be brought into L2. Only a hint: it changes no result.
template <typename Kv>
SEALKIT_INLINE void prefetch_head_rows(const Kv* base, int64_t stride, int64_t D, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uintptr_t first = reinterpret_cast<uintptr_t>(base + r * stride);
    const uintptr_t last = first + static_cast<uintptr_t>(D) * sizeof(Kv) - 1;
    for (uintptr_t line = first & ~uintptr_t(63); line <= last; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T1);
  }
}

// The rows of the unit a thread will run next (prefetched while this one computes), or none.
template <typename Kv>
struct NextUnit {
  const Kv* k = nullptr;
  int64_t rows = 0;
};

// AVX-512: the plain loops above do not vectorise (a float dot product is a chain of dependent adds
// the compiler may not reorder). Here a query row stays in registers (ND 16-float chunks of the
// head, the last one masked); each key's products are summed over the chunks into one vector, 16
// keys' vectors are reduced together (reduce16), then exp, max and sum run on whole vectors; P.V
// then runs for several heads of the group at once, each value row loaded once and accumulated
// into every head's ND chunks, in registers (ND is a template parameter so that the chunk arrays
// never live in memory). Sums run in f32 in a fixed order (the softmax denominator
// in double), so bits depend on the ISA, never on the thread count. A bf16 cache is widened to f32
// as it is loaded (load16_masked), so it halves the bytes read and changes no arithmetic.
// Memory: the first head's score pass streams K from memory, the group's other heads find it in
// cache; while they compute, the unit's V rows are prefetched (spread over the score passes), and
// while P.V runs on them, the next unit's K rows are. Without this the loads and the arithmetic
// took turns (decode batch 8: 3.0-3.2 ms of attention per step against 2.2-2.3 with it, the
// cache in memory; 1.0 ms when it all sits in cache).
template <int ND, typename Kv>
SEALKIT_AVX512 void cached_unit_avx512_nd(const CachedAttentionShape& s, const float* q, const Kv* kc,
                                          const Kv* vc, float* out, int64_t seq, int64_t kvh,
                                          std::vector<float>& scores, NextUnit<Kv> next) {
  const int64_t D = s.head_dim, group = s.heads / s.kv_heads, out_stride = s.heads * D;
  const int64_t q0 = s.q_start[seq], nq = s.q_len[seq], kv0 = s.kv_start[seq], nkv = s.kv_len[seq];
  __mmask16 mk[ND];
#pragma GCC unroll 8
  for (int c = 0; c < ND; ++c) mk[c] = c == ND - 1 ? mask16(D - 16 * (ND - 1)) : __mmask16(0xffff);
  const __m512 scale = _mm512_set1_ps(static_cast<float>(s.scale));
  // Scores of every head of the group, one row of `ld` floats per head.
  const int64_t ld = (nkv + 15) / 16 * 16;
  scores.resize(static_cast<size_t>(group * ld));
  const Kv* K = kc + kv0 * s.kv_stride + kvh * D;
  const Kv* V = vc + kv0 * s.kv_stride + kvh * D;
  // Heads per P.V pass: their accumulators (HG x ND) fit the registers.
  constexpr int HG = ND >= 16 ? 1 : 16 / ND > 8 ? 8 : 16 / ND;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t n = nkv - nq + i + 1;  // keys visible to this query
    double inv_sum[64];
    for (int64_t g = 0; g < group; ++g) {
      const int64_t h = kvh * group + g;
      float* sc = scores.data() + g * ld;
      const float* qr = q + (q0 + i) * s.q_stride + h * D;
      __m512 qv[ND];
#pragma GCC unroll 8
      for (int c = 0; c < ND; ++c) qv[c] = _mm512_maskz_loadu_ps(mk[c], qr + 16 * c);
      // Scores, 16 keys at a time; key t of a block goes to v[4 (t % 4) + t / 4] so that lane t of
      // reduce16's result is its sum.
      __m512 mx = _mm512_set1_ps(-INFINITY);
      for (int64_t j0 = 0; j0 < n; j0 += 16) {
        // This block's share of V: rows [g n + j0, g n + j0 + 16) / group, so the group's passes
        // cover each row once (for the first query row; later ones find V in cache).
        if (i == 0)
          prefetch_head_rows(V, s.kv_stride, D, (g * n + j0) / group, std::min(n, (g * n + j0 + 16) / group));
        __m512 v[16];
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) {
          const Kv* kr = K + (j0 + t) * s.kv_stride;
          __m512 p = _mm512_setzero_ps();
          if (j0 + t < n) {
            p = _mm512_mul_ps(qv[0], load16_masked(kr, mk[0]));
#pragma GCC unroll 8
            for (int c = 1; c < ND; ++c) p = _mm512_fmadd_ps(qv[c], load16_masked(kr + 16 * c, mk[c]), p);
          }
          v[4 * (t % 4) + t / 4] = p;
        }
        const __m512 r = _mm512_mul_ps(reduce16(v), scale);
        _mm512_storeu_ps(sc + j0, r);
        mx = _mm512_mask_max_ps(mx, mask16(n - j0), mx, r);
      }
      const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
      __m512d sum0 = _mm512_setzero_pd(), sum1 = _mm512_setzero_pd();
      for (int64_t j0 = 0; j0 < n; j0 += 16) {
        const __m512 e = _mm512_maskz_mov_ps(mask16(n - j0), exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + j0), m)));
        _mm512_storeu_ps(sc + j0, e);
        sum0 = _mm512_add_pd(sum0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        sum1 = _mm512_add_pd(sum1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
      }
      inv_sum[g] = 1.0 / _mm512_reduce_add_pd(_mm512_add_pd(sum0, sum1));
    }
    // P.V for HG heads at a time: each value row is loaded once for all of them (the rows come
    // from memory; re-reading them per head made this loop latency-bound).
    for (int64_t g0 = 0; g0 < group; g0 += HG) {
      const int hg = static_cast<int>(std::min<int64_t>(HG, group - g0));
      __m512 o[HG][ND];
#pragma GCC unroll 8
      for (int g = 0; g < HG; ++g)
#pragma GCC unroll 8
        for (int c = 0; c < ND; ++c) o[g][c] = _mm512_setzero_ps();
      const float* sc = scores.data() + g0 * ld;
      // The next unit's K, spread over this pass's rows (the first query row's first pass).
      const bool spread = next.rows > 0 && i == 0 && g0 == 0;
      int64_t pf_hi = 0, pf_rem = 0;
      for (int64_t j = 0; j < n; ++j) {
        const Kv* vr = V + j * s.kv_stride;
        if (spread) {
          // Rows [j R / n, (j + 1) R / n) of its R = next.rows, stepped without a division. One
          // division per row had cost this kernel 6-9 % at SmolLM2's decoding shape with the cache
          // in L2 (19 % at the tiny preset's) and 2-5 % with it in memory (alternating calls in one
          // process); one per 16 rows, prefetching them together, was 3-4 % slower from memory.
          const int64_t lo = pf_hi;
          for (pf_rem += next.rows; pf_rem >= n; pf_rem -= n) ++pf_hi;
          prefetch_head_rows(next.k, s.kv_stride, D, lo, pf_hi);
        }
        __m512 vv[ND];
#pragma GCC unroll 8
        for (int c = 0; c < ND; ++c) vv[c] = load16_masked(vr + 16 * c, mk[c]);
#pragma GCC unroll 8
        for (int g = 0; g < HG; ++g) {
          if (g >= hg) break;
          const __m512 p = _mm512_set1_ps(sc[g * ld + j]);
#pragma GCC unroll 8
          for (int c = 0; c < ND; ++c) o[g][c] = _mm512_fmadd_ps(p, vv[c], o[g][c]);
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < HG; ++g) {
        if (g >= hg) break;
        const __m512 inv = _mm512_set1_ps(static_cast<float>(inv_sum[g0 + g]));
        float* o_row = out + (q0 + i) * out_stride + (kvh * group + g0 + g) * D;
#pragma GCC unroll 8
        for (int c = 0; c < ND; ++c) _mm512_mask_storeu_ps(o_row + 16 * c, mk[c], _mm512_mul_ps(o[g][c], inv));
      }
    }
  }
}

// head_dim up to 128 (8 chunks) in registers and groups of up to 64 heads; larger ones take the
// plain loops.
template <typename Kv>
SEALKIT_AVX512 void cached_unit_avx512(const CachedAttentionShape& s, const float* q, const Kv* kc, const Kv* vc,
                                       float* out, int64_t seq, int64_t kvh, std::vector<float>& scores,
                                       std::vector<float>& acc, NextUnit<Kv> next) {
  if (s.heads / s.kv_heads > 64) return cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
  switch ((s.head_dim + 15) / 16) {
    case 1: return cached_unit_avx512_nd<1, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    case 2: return cached_unit_avx512_nd<2, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    case 3: return cached_unit_avx512_nd<3, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    case 4: return cached_unit_avx512_nd<4, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    case 5: return cached_unit_avx512_nd<5, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    case 6: return cached_unit_avx512_nd<6, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    case 7: return cached_unit_avx512_nd<7, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    case 8: return cached_unit_avx512_nd<8, Kv>(s, q, kc, vc, out, seq, kvh, scores, next);
    default: return cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
  }
}
#pragma GCC diagnostic pop
#endif

template <typename Kv>
void attention_cached(const CachedAttentionShape& s, const float* q, const Kv* k_cache, const Kv* v_cache, float* out) {
  const int64_t units = s.n_seqs * s.kv_heads;
#ifdef SEALKIT_X86
  if (has_avx512(active_isa())) {
    // Each thread walks a contiguous run of units, so it knows the one it runs next and can
    // prefetch it; a slow thread's tail still goes to the others.
    parallel_streams(units, 1, [&](const StreamChunk& c) {
      thread_local std::vector<float> scores, acc;
      for (int64_t u = c.begin; u < c.end; ++u) {
        NextUnit<Kv> next;
        if (u + 1 < c.run_end) {
          const int64_t seq = (u + 1) / s.kv_heads, kvh = (u + 1) % s.kv_heads;
          next.k = k_cache + s.kv_start[seq] * s.kv_stride + kvh * s.head_dim;
          next.rows = s.kv_len[seq];
        }
        cached_unit_avx512(s, q, k_cache, v_cache, out, u / s.kv_heads, u % s.kv_heads, scores, acc, next);
      }
    });
    return;
  }
#endif
  auto fn = cached_unit_generic<Kv>;
#ifdef SEALKIT_X86
  if (active_isa() >= Isa::Avx2) fn = cached_unit_avx2<Kv>;
#endif
  global_pool().run(units, [&](int64_t u, int) {
    thread_local std::vector<float> scores, acc;
    fn(s, q, k_cache, v_cache, out, u / s.kv_heads, u % s.kv_heads, scores, acc);
  });
}

}  // namespace

void attention_cached_forward(const CachedAttentionShape& s, const float* q, const void* k_cache, const void* v_cache,
                              float* out) {
  switch (s.kv_dtype) {
    case DType::F32:
      return attention_cached(s, q, static_cast<const float*>(k_cache), static_cast<const float*>(v_cache), out);
    case DType::BF16:
      return attention_cached(s, q, static_cast<const uint16_t*>(k_cache), static_cast<const uint16_t*>(v_cache), out);
    default:
      throw std::invalid_argument(std::string("attention_cached_forward: a KV cache cannot hold ") + dtype_name(s.kv_dtype));
  }
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

void store_cache_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, void* dst,
                      DType dst_dtype, int64_t dst_stride) {
  if (dst_dtype == DType::F32) return scatter_rows(src, src_stride, rows, n, cols, static_cast<float*>(dst), dst_stride);
  if (dst_dtype != DType::BF16)
    throw std::invalid_argument(std::string("store_cache_rows: a KV cache cannot hold ") + dtype_name(dst_dtype));
  // A handful of rows per decode step: the scalar rounding is not worth vectorising.
  auto* out = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t* d = out + static_cast<int64_t>(rows[i]) * dst_stride;
    const float* r = src + i * src_stride;
    for (int64_t c = 0; c < cols; ++c) d[c] = f32_to_bf16(r[c]);
  }
}

}  // namespace sealkit::cpu
