// CPU kernels for generation with a KV cache: attention of new query rows against cached keys and
// values, and row gather/scatter (storing new k/v rows in the cache, picking the rows whose logits
// are needed).
#pragma once
#include <cstdint>

#include "../core/dtype.h"

namespace sealkit::cpu {

// Sequence s has q_len[s] new query rows starting at row q_start[s] of q/out, and its keys/values
// live in cache rows [kv_start[s], kv_start[s] + kv_len[s]) — the new tokens' rows already stored
// last. Query i of the sequence sits at position kv_len - q_len + i and attends causally to cache
// rows kv_start .. kv_start + kv_len - q_len + i. Query head h reads kv head h / (heads / kv_heads).
// The cache holds kv_dtype elements (f32, or bf16 to halve the bytes decoding reads); the
// arithmetic is f32 either way.
struct CachedAttentionShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  DType kv_dtype = DType::F32;
  int64_t q_stride = 0, kv_stride = 0;
  double scale = 0;
  const int32_t* q_start = nullptr;
  const int32_t* q_len = nullptr;
  const int32_t* kv_start = nullptr;
  const int32_t* kv_len = nullptr;
  int64_t n_seqs = 0;
  int64_t max_kv_len = 0;
};

// out [rows, heads*head_dim] (=)
void attention_cached_forward(const CachedAttentionShape& s, const float* q, const void* k_cache, const void* v_cache,
                              float* out);

// dst row i = src row rows[i]
void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                 int64_t dst_stride);
// dst row rows[i] = src row i
void scatter_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                  int64_t dst_stride);
// scatter_rows into a cache of dst_dtype elements (f32 or bf16, rounded to nearest even)
void store_cache_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, void* dst,
                      DType dst_dtype, int64_t dst_stride);

}  // namespace sealkit::cpu
