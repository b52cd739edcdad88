// A Backend that forwards every call to another one and times it, for `seal bench --profile`: per
// kind of call (an op, and for GEMMs its orientation, shape and weight type) the number of calls,
// the wall time and the FLOPs. The decoder runs unchanged on top of it, so results are the inner
// backend's bits. Each timed call ends with inner.synchronize(): on a GPU that serialises the
// stream (the profile then shows each kernel's own time, and the step runs slower than unprofiled).
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"

namespace sealkit {

struct OpTiming {
  std::string op;  // "gemm NT 1024x576x576 bf16", "attention_forward", ...
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;  // counted for GEMMs only (2 per multiply-add); 0 elsewhere
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  // The timings gathered since the last take, sorted by time (largest first); clears them.
  std::vector<OpTiming> take();

  std::string name() const override { return inner_->name(); }
  void* alloc(size_t bytes) override;
  void release(void* p) override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* p, size_t bytes) override;
  void synchronize() override { inner_->synchronize(); }

  void gemm(const Gemm& g) override;
  void gemm_group(const Gemm* gs, int n) override;
  void gemm_chains(const Gemm* gs, int n_chains, int chain_len) override;
  void gemm_with_update(const Gemm& g, const cpu::LowRankUpdate& u) override;
  void gate_up_swiglu(const Gemm& gate, const Gemm& up, float* act) override;
  bool takes_bf16_rows(DType dtype) const override { return inner_->takes_bf16_rows(dtype); }
  void gate_up_swiglu_bf16(const Gemm& gate, const Gemm& up, uint16_t* act) override;
  void rmsnorm_forward_bf16(const float* x, const float* w, uint16_t* y, float* rstd, int64_t rows, int64_t dim,
                            double eps) override;
  void residual_rmsnorm_forward_bf16(float* x, const float* r, const float* w, uint16_t* y, float* rstd, int64_t rows,
                                     int64_t dim, double eps) override;
  void gemm_swiglu_backward(const Gemm& g, const cpu::LowRankUpdate* u, const cpu::SwigluGrad& s) override;
  void gemm_up_swiglu(const Gemm& up, const cpu::LowRankUpdate* u, const float* gate, float* act) override;
  bool adds_update_on_tiles(const Gemm& g, const cpu::LowRankUpdate& u) const override {
    return inner_->adds_update_on_tiles(g, u);
  }
  bool reads_packed_weight(int64_t rows, DType dtype, bool transposed) const override {
    return inner_->reads_packed_weight(rows, dtype, transposed);
  }
  std::unique_ptr<cpu::PackedWeight> pack_weight(WeightView w, int64_t rows, int64_t cols, bool transposed) override;
  bool codes_weights(size_t weight_bytes) const override { return inner_->codes_weights(weight_bytes); }
  std::unique_ptr<cpu::CodedWeight> code_weight(WeightView w, int64_t rows, int64_t cols, int64_t gemm_rows,
                                                const cpu::PackedWeight* packed) override;
  void embedding_forward(const int32_t* ids, int64_t n, WeightView table, int64_t dim, float* out) override;
  void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim, float* dtable) override;
  void residual_rmsnorm_forward(float* x, const float* r, const float* w, float* y, float* rstd, int64_t rows,
                                int64_t dim, double eps) override;
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim,
                       double eps) override;
  void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                        int64_t rows, int64_t dim) override;
  void rope_forward(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                    const int32_t* positions, const float* inv_freq) override;
  void rope_backward(float* dx, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                     const int32_t* positions, const float* inv_freq) override;
  void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                         float* lse) override;
  void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                          const float* lse, const float* dout, float* dq, float* dk, float* dv) override;
  void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) override;
  void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                       int64_t n) override;
  void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                     const float* grad_scale) override;
  void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) override;
  double sum_squares(const float* x, int64_t n) override;
  void scale_inplace(float* x, int64_t n, float s) override;
  double sum_squares_many(const OptimTensor* ts, int count) override;
  void adamw_many(const OptimTensor* ts, int count, const AdamWParams& p, float grad_scale) override;
  void optimizer_step_groups(const OptimGroup* groups, int count, double max_grad_norm, double* norms) override;
  bool optimizer_groups_fused(int count) const override { return inner_->optimizer_groups_fused(count); }
  void axpy(float* y, const float* x, int64_t n, float a) override;
  void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) override;
  void bias_backward(const float* dy, float* dbias, int64_t rows, int64_t cols) override;
  void dropout(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
               uint64_t seed) override;
  void fill_normal(float* x, int64_t n, uint64_t seed, float std, float value) override;
  void fill_uniform(float* x, int64_t n, uint64_t seed, float bound) override;
  void upload_converted(void* dst, DType to, const void* host_src, const char* src_dtype, int64_t n) override;
  void attention_cached_forward(const CachedAttentionShape& s, const float* q, const void* k_cache,
                                const void* v_cache, float* out) override;
  void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                   int64_t dst_stride) override;
  void scatter_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                    int64_t dst_stride) override;
  bool supports_kv_cache(DType dtype) const override { return inner_->supports_kv_cache(dtype); }
  void store_cache_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, void* dst,
                        DType dst_dtype, int64_t dst_stride) override;

 private:
  // Runs fn on the inner backend, waits for it to finish, and books the time under `op`.
  template <typename Fn>
  auto timed(const std::string& op, double flops, Fn&& fn) -> decltype(fn());

  std::unique_ptr<Backend> inner_;
  std::map<std::string, OpTiming> stats_;
};

}  // namespace sealkit
