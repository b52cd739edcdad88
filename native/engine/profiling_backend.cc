#include "profiling_backend.h"

#include <algorithm>
#include <type_traits>

namespace sealkit {

namespace {

// "NT 1024x576x576 bf16": op(A) and op(B) transposed or not, M x N x K, the weight's type.
std::string gemm_shape(const Gemm& g, const std::string& n) {
  std::string s;
  s += g.trans_a ? 'T' : 'N';
  s += g.trans_b ? 'T' : 'N';
  s += ' ' + std::to_string(g.M) + 'x' + n + 'x' + std::to_string(g.K) + ' ' + dtype_name(g.B.dtype);
  if (g.coded_b) s += " coded";  // given a 12-bit coded copy (read where the kernel takes it)
  if (g.A_bf16) s += ", A bf16 rows";
  return s;
}

double gemm_flops(const Gemm& g) { return 2.0 * static_cast<double>(g.M) * static_cast<double>(g.N) * g.K; }

}  // namespace

template <typename Fn>
auto ProfilingBackend::timed(const std::string& op, double flops, Fn&& fn) -> decltype(fn()) {
  struct Book {  // books the time on every exit, a throwing kernel's too
    ProfilingBackend& self;
    const std::string& op;
    double flops;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    ~Book() {
      OpTiming& t = self.stats_[op];
      t.calls += 1;
      t.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      t.flops += flops;
    }
  } book{*this, op, flops};
  if constexpr (std::is_void_v<decltype(fn())>) {
    fn();
    inner_->synchronize();
  } else {
    auto r = fn();
    inner_->synchronize();
    return r;
  }
}

std::vector<OpTiming> ProfilingBackend::take() {
  std::vector<OpTiming> out;
  out.reserve(stats_.size());
  for (auto& [op, t] : stats_) {
    out.push_back(t);
    out.back().op = op;
  }
  stats_.clear();
  std::sort(out.begin(), out.end(), [](const OpTiming& a, const OpTiming& b) { return a.seconds > b.seconds; });
  return out;
}

void* ProfilingBackend::alloc(size_t bytes) {
  return timed("alloc", 0, [&] { return inner_->alloc(bytes); });
}
void ProfilingBackend::release(void* p) {
  timed("release", 0, [&] { inner_->release(p); });
}
void ProfilingBackend::upload(void* dst, const void* host_src, size_t bytes) {
  timed("upload", 0, [&] { inner_->upload(dst, host_src, bytes); });
}
void ProfilingBackend::download(void* host_dst, const void* src, size_t bytes) {
  timed("download", 0, [&] { inner_->download(host_dst, src, bytes); });
}
void ProfilingBackend::copy(void* dst, const void* src, size_t bytes) {
  timed("copy", 0, [&] { inner_->copy(dst, src, bytes); });
}
void ProfilingBackend::zero(void* p, size_t bytes) {
  timed("zero", 0, [&] { inner_->zero(p, bytes); });
}

void ProfilingBackend::gemm(const Gemm& g) {
  timed("gemm " + gemm_shape(g, std::to_string(g.N)), gemm_flops(g), [&] { inner_->gemm(g); });
}
void ProfilingBackend::gemm_group(const Gemm* gs, int n) {
  std::string widths;
  double flops = 0;
  for (int i = 0; i < n; ++i) {
    widths += (i ? "+" : "(") + std::to_string(gs[i].N);
    flops += gemm_flops(gs[i]);
  }
  widths += ')';
  timed("gemm_group " + gemm_shape(gs[0], widths), flops, [&] { inner_->gemm_group(gs, n); });
}
// "gemm_chains 16 x [NT 64x16x128 f32, NT 64x128x16 f32]": the chain count and the first chain's GEMMs.
void ProfilingBackend::gemm_chains(const Gemm* gs, int n_chains, int chain_len) {
  std::string shapes;
  double flops = 0;
  for (int i = 0; i < n_chains * chain_len; ++i) {
    flops += gemm_flops(gs[i]);
    if (i < chain_len) shapes += (i ? ", " : "") + gemm_shape(gs[i], std::to_string(gs[i].N));
  }
  timed("gemm_chains " + std::to_string(n_chains) + " x [" + shapes + "]", flops,
        [&] { inner_->gemm_chains(gs, n_chains, chain_len); });
}
void ProfilingBackend::gate_up_swiglu(const Gemm& gate, const Gemm& up, float* act) {
  timed("gate_up_swiglu " + gemm_shape(up, std::to_string(gate.N) + "+" + std::to_string(up.N)),
        gemm_flops(gate) + gemm_flops(up), [&] { inner_->gate_up_swiglu(gate, up, act); });
}
namespace {
// An update's FLOPs on g's C (with segments, on their rows only) and its label: " r<rank>", and
// " x<n> segments" for a batch mixing adapters.
double update_flops(const Gemm& g, const cpu::LowRankUpdate& u) {
  int64_t rows = g.M;
  if (u.segments) {
    rows = 0;
    for (int i = 0; i < u.n_segments; ++i) rows += u.segments[i].rows;
  }
  return 2.0 * static_cast<double>(rows) * static_cast<double>(g.N) * static_cast<double>(u.rank);
}
std::string update_label(const cpu::LowRankUpdate& u) {
  return " r" + std::to_string(u.rank) + (u.segments ? " x" + std::to_string(u.n_segments) + " segments" : "");
}
}  // namespace

void ProfilingBackend::gemm_swiglu_backward(const Gemm& g, const cpu::LowRankUpdate* u, const cpu::SwigluGrad& s) {
  const double flops = gemm_flops(g) + (u ? update_flops(g, *u) : 0.0);
  timed(std::string(u ? "gemm+update" : "gemm") + "+swiglu_backward " + gemm_shape(g, std::to_string(g.N)) +
            (u ? update_label(*u) : ""),
        flops, [&] { inner_->gemm_swiglu_backward(g, u, s); });
}
void ProfilingBackend::gemm_up_swiglu(const Gemm& up, const cpu::LowRankUpdate* u, const float* gate, float* act) {
  timed(std::string(u ? "gemm+update" : "gemm") + "+swiglu " + gemm_shape(up, std::to_string(up.N)) +
            (u ? update_label(*u) : ""),
        gemm_flops(up) + (u ? update_flops(up, *u) : 0.0), [&] { inner_->gemm_up_swiglu(up, u, gate, act); });
}
void ProfilingBackend::gemm_with_update(const Gemm& g, const cpu::LowRankUpdate& u) {
  timed("gemm+update " + gemm_shape(g, std::to_string(g.N)) + update_label(u), gemm_flops(g) + update_flops(g, u),
        [&] { inner_->gemm_with_update(g, u); });
}
std::unique_ptr<cpu::PackedWeight> ProfilingBackend::pack_weight(WeightView w, int64_t rows, int64_t cols,
                                                                bool transposed) {
  return timed("pack_weight", 0, [&] { return inner_->pack_weight(w, rows, cols, transposed); });
}
std::unique_ptr<cpu::CodedWeight> ProfilingBackend::code_weight(WeightView w, int64_t rows, int64_t cols,
                                                                int64_t gemm_rows, const cpu::PackedWeight* packed) {
  return timed("code_weight", 0, [&] { return inner_->code_weight(w, rows, cols, gemm_rows, packed); });
}
void ProfilingBackend::embedding_forward(const int32_t* ids, int64_t n, WeightView table, int64_t dim, float* out) {
  timed("embedding_forward", 0, [&] { inner_->embedding_forward(ids, n, table, dim, out); });
}
void ProfilingBackend::embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim,
                                          float* dtable) {
  timed("embedding_backward", 0, [&] { inner_->embedding_backward(ids, n, dout, dim, dtable); });
}
void ProfilingBackend::gate_up_swiglu_bf16(const Gemm& gate, const Gemm& up, uint16_t* act) {
  timed("gate_up_swiglu_bf16 " + gemm_shape(up, std::to_string(gate.N) + "+" + std::to_string(up.N)),
        gemm_flops(gate) + gemm_flops(up), [&] { inner_->gate_up_swiglu_bf16(gate, up, act); });
}
void ProfilingBackend::rmsnorm_forward_bf16(const float* x, const float* w, uint16_t* y, float* rstd, int64_t rows,
                                            int64_t dim, double eps) {
  timed("rmsnorm_forward_bf16", 0, [&] { inner_->rmsnorm_forward_bf16(x, w, y, rstd, rows, dim, eps); });
}
void ProfilingBackend::residual_rmsnorm_forward_bf16(float* x, const float* r, const float* w, uint16_t* y,
                                                     float* rstd, int64_t rows, int64_t dim, double eps) {
  timed("residual_rmsnorm_forward_bf16", 0,
        [&] { inner_->residual_rmsnorm_forward_bf16(x, r, w, y, rstd, rows, dim, eps); });
}
void ProfilingBackend::residual_rmsnorm_forward(float* x, const float* r, const float* w, float* y, float* rstd,
                                                int64_t rows, int64_t dim, double eps) {
  timed("residual_rmsnorm_forward", 0, [&] { inner_->residual_rmsnorm_forward(x, r, w, y, rstd, rows, dim, eps); });
}
void ProfilingBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                                       int64_t dim, double eps) {
  timed("rmsnorm_forward", 0, [&] { inner_->rmsnorm_forward(x, w, y, rstd, rows, dim, eps); });
}
void ProfilingBackend::rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                        float* dw, int64_t rows, int64_t dim) {
  timed("rmsnorm_backward", 0, [&] { inner_->rmsnorm_backward(x, w, rstd, dy, dx, dw, rows, dim); });
}
void ProfilingBackend::rope_forward(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                                    const int32_t* positions, const float* inv_freq) {
  timed("rope_forward", 0, [&] { inner_->rope_forward(x, rows, row_stride, heads, head_dim, positions, inv_freq); });
}
void ProfilingBackend::rope_backward(float* dx, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                                     const int32_t* positions, const float* inv_freq) {
  timed("rope_backward", 0,
        [&] { inner_->rope_backward(dx, rows, row_stride, heads, head_dim, positions, inv_freq); });
}
void ProfilingBackend::attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                                         float* out, float* lse) {
  timed("attention_forward", 0, [&] { inner_->attention_forward(s, q, k, v, out, lse); });
}
void ProfilingBackend::attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                                          const float* out, const float* lse, const float* dout, float* dq,
                                          float* dk, float* dv) {
  timed("attention_backward", 0, [&] { inner_->attention_backward(s, q, k, v, out, lse, dout, dq, dk, dv); });
}
void ProfilingBackend::swiglu_forward(const float* gate, const float* up, float* out, int64_t n) {
  timed("swiglu_forward", 0, [&] { inner_->swiglu_forward(gate, up, out, n); });
}
void ProfilingBackend::swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate,
                                       float* dup, int64_t n) {
  timed("swiglu_backward", 0, [&] { inner_->swiglu_backward(gate, up, dout, dgate, dup, n); });
}
void ProfilingBackend::cross_entropy(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                                     const float* grad_scale) {
  timed("cross_entropy", 0, [&] { inner_->cross_entropy(logits, targets, rows, vocab, loss, grad_scale); });
}
void ProfilingBackend::adamw_step(float* param, const float* grad, float* m, float* v, int64_t n,
                                  const AdamWParams& p) {
  timed("adamw_step", 0, [&] { inner_->adamw_step(param, grad, m, v, n, p); });
}
double ProfilingBackend::sum_squares(const float* x, int64_t n) {
  return timed("sum_squares", 0, [&] { return inner_->sum_squares(x, n); });
}
void ProfilingBackend::scale_inplace(float* x, int64_t n, float s) {
  timed("scale_inplace", 0, [&] { inner_->scale_inplace(x, n, s); });
}
double ProfilingBackend::sum_squares_many(const OptimTensor* ts, int count) {
  return timed("sum_squares_many", 0, [&] { return inner_->sum_squares_many(ts, count); });
}
void ProfilingBackend::adamw_many(const OptimTensor* ts, int count, const AdamWParams& p, float grad_scale) {
  timed("adamw_many", 0, [&] { inner_->adamw_many(ts, count, p, grad_scale); });
}
// Groups the inner backend runs as one launch are timed as one op; otherwise the default runs them
// through this backend's own (timed) sum_squares_many and adamw_many.
void ProfilingBackend::optimizer_step_groups(const OptimGroup* groups, int count, double max_grad_norm,
                                             double* norms) {
  if (!inner_->optimizer_groups_fused(count)) {
    Backend::optimizer_step_groups(groups, count, max_grad_norm, norms);
    return;
  }
  timed("optimizer_step_groups", 0, [&] { inner_->optimizer_step_groups(groups, count, max_grad_norm, norms); });
}
void ProfilingBackend::axpy(float* y, const float* x, int64_t n, float a) {
  timed("axpy", 0, [&] { inner_->axpy(y, x, n, a); });
}
void ProfilingBackend::add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) {
  timed("add_row_bias", 0, [&] { inner_->add_row_bias(out, bias, rows, cols); });
}
void ProfilingBackend::bias_backward(const float* dy, float* dbias, int64_t rows, int64_t cols) {
  timed("bias_backward", 0, [&] { inner_->bias_backward(dy, dbias, rows, cols); });
}
void ProfilingBackend::dropout(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
                               uint64_t seed) {
  timed("dropout", 0, [&] { inner_->dropout(x, out, rows, cols, row_offset, p, seed); });
}
void ProfilingBackend::fill_normal(float* x, int64_t n, uint64_t seed, float std, float value) {
  timed("fill_normal", 0, [&] { inner_->fill_normal(x, n, seed, std, value); });
}
void ProfilingBackend::fill_uniform(float* x, int64_t n, uint64_t seed, float bound) {
  timed("fill_uniform", 0, [&] { inner_->fill_uniform(x, n, seed, bound); });
}
void ProfilingBackend::upload_converted(void* dst, DType to, const void* host_src, const char* src_dtype, int64_t n) {
  timed("upload_converted", 0, [&] { inner_->upload_converted(dst, to, host_src, src_dtype, n); });
}
void ProfilingBackend::attention_cached_forward(const CachedAttentionShape& s, const float* q, const void* k_cache,
                                                const void* v_cache, float* out) {
  timed("attention_cached_forward", 0, [&] { inner_->attention_cached_forward(s, q, k_cache, v_cache, out); });
}
void ProfilingBackend::gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                                   float* dst, int64_t dst_stride) {
  timed("gather_rows", 0, [&] { inner_->gather_rows(src, src_stride, rows, n, cols, dst, dst_stride); });
}
void ProfilingBackend::scatter_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n,
                                    int64_t cols, float* dst, int64_t dst_stride) {
  timed("scatter_rows", 0, [&] { inner_->scatter_rows(src, src_stride, rows, n, cols, dst, dst_stride); });
}
void ProfilingBackend::store_cache_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n,
                                        int64_t cols, void* dst, DType dst_dtype, int64_t dst_stride) {
  timed("store_cache_rows", 0,
        [&] { inner_->store_cache_rows(src, src_stride, rows, n, cols, dst, dst_dtype, dst_stride); });
}

}  // namespace sealkit
