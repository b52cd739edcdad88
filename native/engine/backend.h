// The backend interface: memory and kernels on one device. The decoder (model.h) is written once
// against this interface; the CPU backend forwards to native/cpu/kernels.h, the CUDA backend to
// native/cuda. Activations are always f32; weights may be f32 or bf16 (WeightView). Every pointer
// passed to a kernel — including the int32 index arrays — lives in the backend's own memory.
// Kernel semantics (shapes, "=" versus "+=" outputs) are those documented in native/cpu/kernels.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "../core/dtype.h"
#include "../cpu/coded_weight.h"
#include "../cpu/decode_kernels.h"
#include "../cpu/kernels.h"

namespace sealkit {

using cpu::AdamWParams;
using cpu::AttentionShape;
using cpu::CachedAttentionShape;
using cpu::OptimGroup;
using cpu::OptimTensor;
using Gemm = cpu::GemmArgs<float>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Whether two threads may call this backend at once, each with its own buffers (the CPU backend:
  // its kernels keep no state but per-thread scratch). Only then does a model run the two lanes of
  // a split training pass at once (Model::split_point); else one after the other.
  virtual bool concurrent_calls() const { return false; }

  // ---- memory (device memory; zero-initialised on alloc) ----
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void synchronize() {}

  // ---- kernels ----
  virtual void gemm(const Gemm& g) = 0;
  // gs[0..n) one by one (cpu::gemm_group's contract); a backend may run them as one launch.
  virtual void gemm_group(const Gemm* gs, int n) {
    for (int i = 0; i < n; ++i) gemm(gs[i]);
  }
  // Independent chains of GEMMs, gs chain by chain (cpu::gemm_chains' contract: chains write
  // disjoint memory; within a chain, in order). This default runs them one by one.
  virtual void gemm_chains(const Gemm* gs, int n_chains, int chain_len) {
    for (int i = 0; i < n_chains * chain_len; ++i) gemm(gs[i]);
  }
  // gemm(g), then C += u.scale * u.U op(u.V) (cpu::gemm_with_update's contract). This default is the
  // two calls; a backend that can add the update inside the first overrides it.
  virtual void gemm_with_update(const Gemm& g, const cpu::LowRankUpdate& u) {
    gemm(g);
    for (int i = 0; i < cpu::update_calls(u); ++i) gemm(cpu::update_gemm(g, u, i));
  }
  // Whether gemm_with_update(g, u) adds u inside the GEMM (cpu::gemm_update_on_tiles); the default
  // runs the separate calls.
  virtual bool adds_update_on_tiles(const Gemm& g, const cpu::LowRankUpdate& u) const {
    (void)g, (void)u;
    return false;
  }
  // The MLP's gate and up projections of one input and SwiGLU on them, act = silu(gate.C) * up.C
  // (cpu::gemm_gate_up_swiglu's contract; C and act contiguous, ldc == N). gate.C and up.C are
  // scratch, unspecified afterwards: a backend that fuses the three may never write them. This
  // default runs the three calls.
  virtual void gate_up_swiglu(const Gemm& gate, const Gemm& up, float* act) {
    gemm(gate);
    gemm(up);
    swiglu_forward(gate.C, up.C, act, up.M * up.N);
  }
  // Whether a forward pass may hand the projections of weights of `dtype` (GEMMs of more than 16
  // rows) bf16 rows in place of f32 ones (Gemm::A_bf16), from the producers below, with the bits of
  // the f32 path: where the GEMM rounds its A to bf16 anyway and reads such rows without packing.
  // Default: no (the producers below then throw).
  virtual bool takes_bf16_rows(DType dtype) const {
    (void)dtype;
    return false;
  }
  // gate_up_swiglu with act as bf16 rows (cpu::gemm_gate_up_swiglu's act_bf16).
  virtual void gate_up_swiglu_bf16(const Gemm& gate, const Gemm& up, uint16_t* act);
  // rmsnorm_forward and residual_rmsnorm_forward with y as bf16 rows (cpu::rmsnorm_forward_bf16's
  // contract).
  virtual void rmsnorm_forward_bf16(const float* x, const float* w, uint16_t* y, float* rstd, int64_t rows,
                                    int64_t dim, double eps);
  virtual void residual_rmsnorm_forward_bf16(float* x, const float* r, const float* w, uint16_t* y, float* rstd,
                                             int64_t rows, int64_t dim, double eps);
  // SwiGLU's backward pass on a GEMM's result: gemm(g), or gemm_with_update(g, *u) where u is not
  // null, then swiglu_backward(s.gate, s.up, g.C, s.dgate, s.dup) (cpu::gemm_swiglu_backward's
  // contract; the four arrays strided like C). g.C is scratch, unspecified afterwards: a backend
  // that fuses them may never write it. This default runs the calls (C contiguous, ldc == N).
  virtual void gemm_swiglu_backward(const Gemm& g, const cpu::LowRankUpdate* u, const cpu::SwigluGrad& s) {
    if (u) gemm_with_update(g, *u);
    else gemm(g);
    swiglu_backward(s.gate, s.up, g.C, s.dgate, s.dup, g.M * g.N);
  }
  // SwiGLU's forward pass on the up projection's GEMM: gemm(up), or gemm_with_update(up, *u) where u
  // is not null, then act = silu(gate) * up.C (cpu::gemm_up_swiglu's contract; gate and act strided
  // like up.C). up.C is scratch, unspecified afterwards: a backend that fuses them may never write it.
  // This default runs the calls (C contiguous, ldc == N).
  virtual void gemm_up_swiglu(const Gemm& up, const cpu::LowRankUpdate* u, const float* gate, float* act) {
    if (u) gemm_with_update(up, *u);
    else gemm(up);
    swiglu_forward(gate, up.C, act, up.M * up.N);
  }
  // Weights packed ahead of time for the GEMM (cpu::PackedWeight): whether a GEMM of `rows` rows
  // against a weight of this dtype and orientation (transposed: y = x W^T, else dx = dy W) would
  // read one, and making one, for Gemm::packed_b. The caller owns it and drops it when W changes.
  // The defaults: no backend needs one.
  virtual bool reads_packed_weight(int64_t rows, DType dtype, bool transposed) const {
    (void)rows, (void)dtype, (void)transposed;
    return false;
  }
  virtual std::unique_ptr<cpu::PackedWeight> pack_weight(WeightView w, int64_t rows, int64_t cols, bool transposed) {
    (void)w, (void)rows, (void)cols, (void)transposed;
    return nullptr;
  }
  // Weights coded in 12 bits for decoding's GEMMs (cpu::CodedWeight, same bits as the bf16 weights):
  // whether a model whose bf16 weights streamed per token total `weight_bytes` should code them, and
  // coding W [rows, cols] for y = x W^T GEMMs of `gemm_rows` rows, for Gemm::coded_b: its rows for
  // one row, its packed copy's strips (`packed`, Gemm::packed_b) for batched decoding; null where
  // that GEMM reads no coded copy. The caller owns it and drops it when W changes. The defaults: no
  // backend reads one.
  virtual bool codes_weights(size_t weight_bytes) const {
    (void)weight_bytes;
    return false;
  }
  virtual std::unique_ptr<cpu::CodedWeight> code_weight(WeightView w, int64_t rows, int64_t cols, int64_t gemm_rows,
                                                        const cpu::PackedWeight* packed) {
    (void)w, (void)rows, (void)cols, (void)gemm_rows, (void)packed;
    return nullptr;
  }
  virtual void embedding_forward(const int32_t* ids, int64_t n, WeightView table, int64_t dim, float* out) = 0;
  virtual void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim, float* dtable) = 0;
  virtual void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim,
                               double eps) = 0;
  // x += r, then rmsnorm_forward(x, ...) (cpu::residual_rmsnorm_forward's contract). This default
  // is the two calls.
  virtual void residual_rmsnorm_forward(float* x, const float* r, const float* w, float* y, float* rstd, int64_t rows,
                                        int64_t dim, double eps) {
    axpy(x, r, rows * dim, 1.0f);
    rmsnorm_forward(x, w, y, rstd, rows, dim, eps);
  }
  virtual void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                float* dw, int64_t rows, int64_t dim) = 0;
  virtual void rope_forward(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                            const int32_t* positions, const float* inv_freq) = 0;
  virtual void rope_backward(float* dx, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                             const int32_t* positions, const float* inv_freq) = 0;
  virtual void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                                 float* lse) = 0;
  virtual void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                                  const float* out, const float* lse, const float* dout, float* dq, float* dk,
                                  float* dv) = 0;
  virtual void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) = 0;
  virtual void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                               int64_t n) = 0;
  virtual void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                             const float* grad_scale) = 0;
  virtual void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) = 0;
  virtual double sum_squares(const float* x, int64_t n) = 0;
  virtual void scale_inplace(float* x, int64_t n, float s) = 0;
  // A whole optimiser step's tensors (cpu::sum_squares_many / adamw_many semantics). The defaults
  // call the ops above tensor by tensor; a backend may run each as one launch (the CPU does).
  virtual double sum_squares_many(const OptimTensor* ts, int count);
  virtual void adamw_many(const OptimTensor* ts, int count, const AdamWParams& p, float grad_scale);
  // An optimiser step of several groups (cpu::optimizer_groups semantics: per group its norm into
  // norms[g], the clip, AdamW). The default runs the groups one after another through
  // sum_squares_many and adamw_many; the CPU runs many small groups one per task.
  virtual void optimizer_step_groups(const OptimGroup* groups, int count, double max_grad_norm, double* norms);
  // Whether optimizer_step_groups runs these groups as one launch of its own (not through
  // sum_squares_many and adamw_many): the profiler then times it as one op.
  virtual bool optimizer_groups_fused(int count) const { (void)count; return false; }
  virtual void axpy(float* y, const float* x, int64_t n, float a) = 0;
  // y[i] += x[i] for the bias of a linear layer broadcast over rows: out[r, c] += bias[c].
  virtual void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) = 0;
  // dbias[c] += sum_r dy[r, c] (summed in row order: deterministic).
  virtual void bias_backward(const float* dy, float* dbias, int64_t rows, int64_t cols) = 0;
  // Inverted dropout with a counter-based mask: out = x * keep / (1 - p), keep decided by
  // hash(seed, row_offset + r, c), so the backward pass regenerates the same mask from the seed.
  virtual void dropout(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
                       uint64_t seed) = 0;
  // Fills with N(0, std) (or the constant `value` when std == 0) from the project PRNG stream `seed`.
  virtual void fill_normal(float* x, int64_t n, uint64_t seed, float std, float value) = 0;
  virtual void fill_uniform(float* x, int64_t n, uint64_t seed, float bound) = 0;
  // Converts a host tensor in f32/bf16/f16 into device storage of dtype `to` (f32 or bf16).
  virtual void upload_converted(void* dst, DType to, const void* host_src, const char* src_dtype, int64_t n) = 0;

  // ---- generation with a KV cache (semantics in native/cpu/decode_kernels.h) ----
  // Not pure: a backend without them reports that it cannot generate yet.
  virtual void attention_cached_forward(const CachedAttentionShape& s, const float* q, const void* k_cache,
                                        const void* v_cache, float* out);
  virtual void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                           float* dst, int64_t dst_stride);
  virtual void scatter_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                            float* dst, int64_t dst_stride);
  // Element types this backend's KV cache may hold (the default: f32 only), and scatter_rows into a
  // cache of one of them (the default handles f32 through scatter_rows).
  virtual bool supports_kv_cache(DType dtype) const { return dtype == DType::F32; }
  virtual void store_cache_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                                void* dst, DType dst_dtype, int64_t dst_stride);
};

std::unique_ptr<Backend> make_cpu_backend();
#ifdef SEALKIT_WITH_CUDA
// Throws when no usable GPU is present.
std::unique_ptr<Backend> make_cuda_backend(int device);
#endif

}  // namespace sealkit
