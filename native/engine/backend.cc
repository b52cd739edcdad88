// Default implementations of the optional Backend methods.
#include "backend.h"

#include <cmath>
#include <stdexcept>

namespace sealkit {

double Backend::sum_squares_many(const OptimTensor* ts, int count) {
  double total = 0;
  for (int i = 0; i < count; ++i) total += sum_squares(ts[i].grad, ts[i].n);
  return total;
}
void Backend::adamw_many(const OptimTensor* ts, int count, const AdamWParams& p, float grad_scale) {
  for (int i = 0; i < count; ++i) {
    const OptimTensor& t = ts[i];
    if (grad_scale != 1.0f) scale_inplace(t.grad, t.n, grad_scale);
    adamw_step(t.param, t.grad, t.m, t.v, t.n, p);
    zero(t.grad, static_cast<size_t>(t.n) * 4);
  }
}

void Backend::optimizer_step_groups(const OptimGroup* groups, int count, double max_grad_norm, double* norms) {
  for (int g = 0; g < count; ++g) {
    norms[g] = std::sqrt(sum_squares_many(groups[g].ts, groups[g].count));
    adamw_many(groups[g].ts, groups[g].count, groups[g].adam, cpu::clip_scale(norms[g], max_grad_norm));
  }
}

// Defaults of the bf16-row producers, for backends whose takes_bf16_rows says no.
void Backend::gate_up_swiglu_bf16(const Gemm&, const Gemm&, uint16_t*) {
  throw std::logic_error("the " + name() + " backend takes no bf16 rows (gate_up_swiglu_bf16)");
}
void Backend::rmsnorm_forward_bf16(const float*, const float*, uint16_t*, float*, int64_t, int64_t, double) {
  throw std::logic_error("the " + name() + " backend takes no bf16 rows (rmsnorm_forward_bf16)");
}
void Backend::residual_rmsnorm_forward_bf16(float*, const float*, const float*, uint16_t*, float*, int64_t, int64_t,
                                            double) {
  throw std::logic_error("the " + name() + " backend takes no bf16 rows (residual_rmsnorm_forward_bf16)");
}

// Defaults of the optional generation kernels, for backends that do not implement them yet.
void Backend::attention_cached_forward(const CachedAttentionShape&, const float*, const void*, const void*, float*) {
  throw std::runtime_error("the " + name() + " backend cannot generate yet (no KV-cache attention kernel)");
}
void Backend::gather_rows(const float*, int64_t, const int32_t*, int64_t, int64_t, float*, int64_t) {
  throw std::runtime_error("the " + name() + " backend cannot generate yet (no row gather kernel)");
}
void Backend::scatter_rows(const float*, int64_t, const int32_t*, int64_t, int64_t, float*, int64_t) {
  throw std::runtime_error("the " + name() + " backend cannot generate yet (no row scatter kernel)");
}
void Backend::store_cache_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                               void* dst, DType dst_dtype, int64_t dst_stride) {
  if (dst_dtype != DType::F32)
    throw std::runtime_error("the " + name() + " backend cannot keep a KV cache in " + dtype_name(dst_dtype));
  scatter_rows(src, src_stride, rows, n, cols, static_cast<float*>(dst), dst_stride);
}


}  // namespace sealkit
