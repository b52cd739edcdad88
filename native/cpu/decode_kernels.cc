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
SEALKIT_AVX512 void cached_unit_avx512(const CachedAttentionShape& s, const float* q, const float* kc, const float* vc,
                                       float* out, int64_t seq, int64_t kvh, std::vector<float>& scores,
                                       std::vector<float>& acc) {
  cached_unit(s, q, kc, vc, out, seq, kvh, scores, acc);
}
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
