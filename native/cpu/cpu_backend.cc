// The CPU backend: host memory and the kernels of native/cpu.
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "../core/huge_pages.h"
#include "../engine/backend.h"
#include "decode_kernels.h"
#include "kernels.h"
#include "misc_kernels.h"

namespace sealkit {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool concurrent_calls() const override { return true; }

  void* alloc(size_t bytes) override {
    if (bytes == 0) bytes = 64;
    // 64-byte alignment for vector loads (huge pages from 2 MiB up: huge_pages.h); calloc-like
    // zeroing.
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = huge_page_alloc(rounded);
    std::memset(p, 0, rounded);
    return p;
  }
  void release(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { if (bytes) std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { if (bytes) std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { if (bytes) std::memmove(dst, src, bytes); }
  void zero(void* p, size_t bytes) override { if (bytes) std::memset(p, 0, bytes); }

  void gemm(const Gemm& g) override { cpu::gemm<float>(g); }
  void gemm_with_update(const Gemm& g, const cpu::LowRankUpdate& u) override { cpu::gemm_with_update(g, u); }
  void gemm_group(const Gemm* gs, int n) override { cpu::gemm_group(gs, n); }
  void gemm_chains(const Gemm* gs, int n_chains, int chain_len) override {
    cpu::gemm_chains(gs, n_chains, chain_len);
  }
  void gate_up_swiglu(const Gemm& gate, const Gemm& up, float* act) override {
    cpu::gemm_gate_up_swiglu(gate, up, act, up.N);
  }
  bool takes_bf16_rows(DType dtype) const override { return cpu::gemm_reads_bf16_rows(dtype); }
  void gate_up_swiglu_bf16(const Gemm& gate, const Gemm& up, uint16_t* act) override {
    cpu::gemm_gate_up_swiglu(gate, up, nullptr, up.N, act);
  }
  void rmsnorm_forward_bf16(const float* x, const float* w, uint16_t* y, float* rstd, int64_t rows, int64_t dim,
                            double eps) override {
    cpu::rmsnorm_forward_bf16(x, w, y, rstd, rows, dim, eps);
  }
  void residual_rmsnorm_forward_bf16(float* x, const float* r, const float* w, uint16_t* y, float* rstd, int64_t rows,
                                     int64_t dim, double eps) override {
    cpu::residual_rmsnorm_forward_bf16(x, r, w, y, rstd, rows, dim, eps);
  }
  void gemm_swiglu_backward(const Gemm& g, const cpu::LowRankUpdate* u, const cpu::SwigluGrad& s) override {
    cpu::gemm_swiglu_backward(g, u, s);
  }
  void gemm_up_swiglu(const Gemm& up, const cpu::LowRankUpdate* u, const float* gate, float* act) override {
    cpu::gemm_up_swiglu(up, u, gate, act);
  }
  bool adds_update_on_tiles(const Gemm& g, const cpu::LowRankUpdate& u) const override {
    return cpu::gemm_update_on_tiles(g, u);
  }
  bool reads_packed_weight(int64_t rows, DType dtype, bool transposed) const override {
    return cpu::gemm_reads_packed_weight(rows, dtype, transposed);
  }
  std::unique_ptr<cpu::PackedWeight> pack_weight(WeightView w, int64_t rows, int64_t cols, bool transposed) override {
    return cpu::pack_weight(w, rows, cols, transposed);
  }
  bool codes_weights(size_t weight_bytes) const override { return cpu::coded_weights_wanted(weight_bytes); }
  std::unique_ptr<cpu::CodedWeight> code_weight(WeightView w, int64_t rows, int64_t cols, int64_t gemm_rows,
                                                const cpu::PackedWeight* packed) override {
    if (gemm_rows == 1) return cpu::code_weight(w, rows, cols);
    // Batched decoding reads the packed strips (cpu::few_rows_packed_on) at 2-16 rows.
    if (gemm_rows <= 16 && packed && cpu::few_rows_packed_on()) return cpu::code_packed_strips(*packed);
    return nullptr;
  }
  void embedding_forward(const int32_t* ids, int64_t n, WeightView table, int64_t dim, float* out) override {
    cpu::embedding_forward<float>(ids, n, table, dim, out);
  }
  void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim, float* dtable) override {
    cpu::embedding_backward<float>(ids, n, dout, dim, dtable);
  }
  void residual_rmsnorm_forward(float* x, const float* r, const float* w, float* y, float* rstd, int64_t rows,
                                int64_t dim, double eps) override {
    cpu::residual_rmsnorm_forward<float>(x, r, w, y, rstd, rows, dim, eps);
  }
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim,
                       double eps) override {
    cpu::rmsnorm_forward<float>(x, w, y, rstd, rows, dim, eps);
  }
  void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                        int64_t rows, int64_t dim) override {
    cpu::rmsnorm_backward<float>(x, w, rstd, dy, dx, dw, rows, dim);
  }
  void rope_forward(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                    const int32_t* positions, const float* inv_freq) override {
    cpu::rope_forward<float>(x, rows, row_stride, heads, head_dim, positions, inv_freq);
  }
  void rope_backward(float* dx, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                     const int32_t* positions, const float* inv_freq) override {
    cpu::rope_backward<float>(dx, rows, row_stride, heads, head_dim, positions, inv_freq);
  }
  void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                         float* lse) override {
    cpu::attention_forward<float>(s, q, k, v, out, lse);
  }
  void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                          const float* lse, const float* dout, float* dq, float* dk, float* dv) override {
    cpu::attention_backward<float>(s, q, k, v, out, lse, dout, dq, dk, dv);
  }
  void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) override {
    cpu::swiglu_forward<float>(gate, up, out, n);
  }
  void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                       int64_t n) override {
    cpu::swiglu_backward<float>(gate, up, dout, dgate, dup, n);
  }
  void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                     const float* grad_scale) override {
    cpu::cross_entropy<float>(logits, targets, rows, vocab, loss, grad_scale);
  }
  void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) override {
    cpu::adamw_step<float>(param, grad, m, v, n, p);
  }
  double sum_squares(const float* x, int64_t n) override { return cpu::sum_squares<float>(x, n); }
  void scale_inplace(float* x, int64_t n, float s) override { cpu::scale_inplace<float>(x, n, s); }
  double sum_squares_many(const OptimTensor* ts, int count) override { return cpu::sum_squares_many(ts, count); }
  void adamw_many(const OptimTensor* ts, int count, const AdamWParams& p, float grad_scale) override {
    cpu::adamw_many(ts, count, p, grad_scale);
  }
  void optimizer_step_groups(const OptimGroup* groups, int count, double max_grad_norm, double* norms) override {
    cpu::optimizer_groups(groups, count, max_grad_norm, norms);
  }
  bool optimizer_groups_fused(int count) const override { return cpu::optimizer_groups_per_task(count); }
  void axpy(float* y, const float* x, int64_t n, float a) override { cpu::axpy<float>(y, x, n, a); }
  void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) override {
    cpu::add_row_bias(out, bias, rows, cols);
  }
  void bias_backward(const float* dy, float* dbias, int64_t rows, int64_t cols) override {
    cpu::bias_backward(dy, dbias, rows, cols);
  }
  void dropout(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
               uint64_t seed) override {
    cpu::dropout(x, out, rows, cols, row_offset, p, seed);
  }
  void fill_normal(float* x, int64_t n, uint64_t seed, float std, float value) override {
    cpu::fill_normal(x, n, seed, std, value);
  }
  void fill_uniform(float* x, int64_t n, uint64_t seed, float bound) override { cpu::fill_uniform(x, n, seed, bound); }
  void upload_converted(void* dst, DType to, const void* src, const char* src_dtype, int64_t n) override {
    cpu::convert_tensor(dst, to, src, src_dtype, n);
  }
  void attention_cached_forward(const CachedAttentionShape& s, const float* q, const void* k_cache,
                                const void* v_cache, float* out) override {
    cpu::attention_cached_forward(s, q, k_cache, v_cache, out);
  }
  void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                   int64_t dst_stride) override {
    cpu::gather_rows(src, src_stride, rows, n, cols, dst, dst_stride);
  }
  void scatter_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                    int64_t dst_stride) override {
    cpu::scatter_rows(src, src_stride, rows, n, cols, dst, dst_stride);
  }
  bool supports_kv_cache(DType dtype) const override { return dtype == DType::F32 || dtype == DType::BF16; }
  void store_cache_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, void* dst,
                        DType dst_dtype, int64_t dst_stride) override {
    cpu::store_cache_rows(src, src_stride, rows, n, cols, dst, dst_dtype, dst_stride);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace sealkit
