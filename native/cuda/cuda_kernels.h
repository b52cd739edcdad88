// Host-side entry points of the CUDA kernels (one .cu file per concept). CudaBackend
// (cuda_backend.cu) forwards each Backend method here. Every pointer is device memory; every launch
// goes on ctx.stream and is asynchronous unless the function returns a host value.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../engine/backend.h"

namespace sealkit::cuda {

// Growable device scratch buffers, one per purpose so that buffers needed at the same time never
// alias. Growing frees the old buffer after synchronising the stream (rare: sizes settle quickly).
enum ScratchSlot : int {
  kScratchGemmA = 0,    // bf16 copy of A for the pipelined bf16 GEMM
  kScratchGemmSplitK,   // split-K partial products
  kScratchAttnDelta,    // attention backward: rowsum(dO * O) per (row, head)
  kScratchSortKeys,     // embedding backward: sorted ids / token order
  kScratchSortTemp,     // embedding backward: CUB temporary storage
  kScratchColPartials,  // column reductions (bias/norm-weight gradients)
  kScratchReduce,       // sum_squares partials
  kScratchConvert,      // upload_converted staging
  kNumScratch
};

class ScratchPool {
 public:
  ScratchPool() = default;
  ~ScratchPool();
  ScratchPool(const ScratchPool&) = delete;
  ScratchPool& operator=(const ScratchPool&) = delete;
  void* get(ScratchSlot slot, size_t bytes, cudaStream_t stream);

 private:
  void* ptr_[kNumScratch] = {};
  size_t cap_[kNumScratch] = {};
};

struct Ctx {
  cudaStream_t stream = nullptr;
  ScratchPool* scratch = nullptr;
  int sm_count = 1;
};

// gemm.cu (kernels, dispatch and numerics)
void gemm(Ctx& ctx, const Gemm& g);

// elementwise.cu
void embedding_forward(Ctx& ctx, const int32_t* ids, int64_t n, WeightView table, int64_t dim, float* out);
void embedding_backward(Ctx& ctx, const int32_t* ids, int64_t n, const float* dout, int64_t dim, float* dtable);
void swiglu_forward(Ctx& ctx, const float* gate, const float* up, float* out, int64_t n);
void swiglu_backward(Ctx& ctx, const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                     int64_t n);
void scale_inplace(Ctx& ctx, float* x, int64_t n, float s);
void axpy(Ctx& ctx, float* y, const float* x, int64_t n, float a);
void add_row_bias(Ctx& ctx, float* out, const float* bias, int64_t rows, int64_t cols);
void bias_backward(Ctx& ctx, const float* dy, float* dbias, int64_t rows, int64_t cols);
void dropout(Ctx& ctx, const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
             uint64_t seed);
void fill_normal(Ctx& ctx, float* x, int64_t n, uint64_t seed, float std, float value);
void fill_uniform(Ctx& ctx, float* x, int64_t n, uint64_t seed, float bound);
void upload_converted(Ctx& ctx, void* dst, DType to, const void* host_src, const char* src_dtype, int64_t n);
void gather_rows(Ctx& ctx, const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                 float* dst, int64_t dst_stride);
void scatter_rows(Ctx& ctx, const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                  float* dst, int64_t dst_stride);

// norm_rope.cu
void rmsnorm_forward(Ctx& ctx, const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim,
                     double eps);
void rmsnorm_backward(Ctx& ctx, const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                      float* dw, int64_t rows, int64_t dim);
void rope(Ctx& ctx, float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
          const int32_t* positions, const float* inv_freq, bool inverse);

// attention.cu
void attention_forward(Ctx& ctx, const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse);
void attention_cached_forward(Ctx& ctx, const CachedAttentionShape& s, const float* q, const float* k_cache,
                              const float* v_cache, float* out);
void attention_backward(Ctx& ctx, const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv);

// cross_entropy.cu
void cross_entropy(Ctx& ctx, float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                   const float* grad_scale);

// optimizer.cu
void adamw_step(Ctx& ctx, float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p);
double sum_squares(Ctx& ctx, const float* x, int64_t n);

// Column sums used by bias_backward and rmsnorm_backward: out[c] += sum_r f(r, c) in a fixed order
// (see elementwise.cu).
void column_sum_add(Ctx& ctx, const float* a, const float* b, const float* row_scale, float* out, int64_t rows,
                    int64_t cols);

}  // namespace sealkit::cuda
