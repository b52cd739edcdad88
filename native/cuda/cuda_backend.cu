// The CUDA backend: device memory on one GPU and the kernels of native/cuda, behind the Backend
// interface the decoder is written against (native/engine/backend.h).
//
// Ordering: every kernel and copy goes on one stream owned by the backend, so kernels run in call
// order. upload/download synchronise that stream before returning (the host buffer is free to reuse
// and downloaded data is complete), which is all the synchronisation the decoder needs.
// Threads: the model calls its backend from engine threads and from the JS thread (one call at a
// time); each entry point makes the backend's device current on the calling thread first.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "../engine/backend.h"
#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit {
namespace cuda {

bool sync_every_kernel() {
  static const bool on = [] {
    const char* e = std::getenv("SEALKIT_CUDA_SYNC");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return on;
}

ScratchPool::~ScratchPool() {
  for (void*& p : ptr_)
    if (p) cudaFree(p);  // destructor: errors cannot be reported, and the context may be going away
}

void* ScratchPool::get(ScratchSlot slot, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) bytes = 16;
  if (cap_[slot] >= bytes) return ptr_[slot];
  size_t cap = std::max(bytes, cap_[slot] + cap_[slot] / 2);  // grow geometrically
  cap = (cap + 255) / 256 * 256;
  if (ptr_[slot]) {
    SEALKIT_CUDA_CHECK(cudaStreamSynchronize(stream));  // queued kernels may still use the old buffer
    SEALKIT_CUDA_CHECK(cudaFree(ptr_[slot]));
    ptr_[slot] = nullptr;
    cap_[slot] = 0;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, cap);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("CUDA backend: cannot allocate " + std::to_string(cap) + " bytes of scratch: " +
                             cudaGetErrorString(err));
  }
  ptr_[slot] = p;
  cap_[slot] = cap;
  return p;
}

}  // namespace cuda

namespace {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    SEALKIT_CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    SEALKIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    if (prop.major < 8)
      throw std::runtime_error("CUDA backend: device " + std::to_string(device_) + " (" + prop.name + ") has compute capability " +
                               std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                               "; sealkit's kernels need 8.0 or newer (Ampere, Hopper)");
    name_ = std::string("cuda:") + std::to_string(device_) + " (" + prop.name + ")";
    SEALKIT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ctx_.stream = stream_;
    ctx_.scratch = &scratch_;
    ctx_.sm_count = prop.multiProcessorCount;
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);  // errors cannot be thrown from a destructor
    cudaStreamDestroy(stream_);      // scratch_ is freed after this body, on the same device
  }

  std::string name() const override { return name_; }

  // ---- memory ----
  void* alloc(size_t bytes) override {
    on_device();
    if (bytes == 0) bytes = 256;
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw std::runtime_error("CUDA backend: cudaMalloc(" + std::to_string(bytes) + " bytes) failed: " +
                               cudaGetErrorString(err) + " (" + std::to_string(free_b >> 20) + " MiB free of " +
                               std::to_string(total_b >> 20) + " MiB)");
    }
    SEALKIT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));  // contract: zero-initialised
    return p;
  }
  void release(void* p) override {
    if (!p) return;
    on_device();
    SEALKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));  // queued kernels may still read it
    SEALKIT_CUDA_CHECK(cudaFree(p));
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    on_device();
    SEALKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    SEALKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    on_device();
    SEALKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    SEALKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    on_device();
    SEALKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* p, size_t bytes) override {
    if (!bytes) return;
    on_device();
    SEALKIT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
  }
  void synchronize() override {
    on_device();
    SEALKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // ---- kernels ----
  void gemm(const Gemm& g) override {
    // takes_bf16_rows says no here, so the model never hands over bf16 rows of A.
    if (g.A_bf16) throw std::invalid_argument("cuda gemm: A as bf16 rows (Gemm::A_bf16) is a CPU path");
    on_device();
    cuda::gemm(ctx_, g);
  }
  void embedding_forward(const int32_t* ids, int64_t n, WeightView table, int64_t dim, float* out) override {
    on_device();
    cuda::embedding_forward(ctx_, ids, n, table, dim, out);
  }
  void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t dim, float* dtable) override {
    on_device();
    cuda::embedding_backward(ctx_, ids, n, dout, dim, dtable);
  }
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim,
                       double eps) override {
    on_device();
    cuda::rmsnorm_forward(ctx_, x, w, y, rstd, rows, dim, eps);
  }
  void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                        int64_t rows, int64_t dim) override {
    on_device();
    cuda::rmsnorm_backward(ctx_, x, w, rstd, dy, dx, dw, rows, dim);
  }
  void rope_forward(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                    const int32_t* positions, const float* inv_freq) override {
    on_device();
    cuda::rope(ctx_, x, rows, row_stride, heads, head_dim, positions, inv_freq, false);
  }
  void rope_backward(float* dx, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                     const int32_t* positions, const float* inv_freq) override {
    on_device();
    cuda::rope(ctx_, dx, rows, row_stride, heads, head_dim, positions, inv_freq, true);
  }
  void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                         float* lse) override {
    on_device();
    cuda::attention_forward(ctx_, s, q, k, v, out, lse);
  }
  void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                          const float* lse, const float* dout, float* dq, float* dk, float* dv) override {
    on_device();
    cuda::attention_backward(ctx_, s, q, k, v, out, lse, dout, dq, dk, dv);
  }
  void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) override {
    on_device();
    cuda::swiglu_forward(ctx_, gate, up, out, n);
  }
  void swiglu_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                       int64_t n) override {
    on_device();
    cuda::swiglu_backward(ctx_, gate, up, dout, dgate, dup, n);
  }
  void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                     const float* grad_scale) override {
    on_device();
    cuda::cross_entropy(ctx_, logits, targets, rows, vocab, loss, grad_scale);
  }
  void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) override {
    on_device();
    cuda::adamw_step(ctx_, param, grad, m, v, n, p);
  }
  double sum_squares(const float* x, int64_t n) override {
    on_device();
    return cuda::sum_squares(ctx_, x, n);
  }
  void scale_inplace(float* x, int64_t n, float s) override {
    on_device();
    cuda::scale_inplace(ctx_, x, n, s);
  }
  void axpy(float* y, const float* x, int64_t n, float a) override {
    on_device();
    cuda::axpy(ctx_, y, x, n, a);
  }
  void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) override {
    on_device();
    cuda::add_row_bias(ctx_, out, bias, rows, cols);
  }
  void bias_backward(const float* dy, float* dbias, int64_t rows, int64_t cols) override {
    on_device();
    cuda::bias_backward(ctx_, dy, dbias, rows, cols);
  }
  void dropout(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
               uint64_t seed) override {
    on_device();
    cuda::dropout(ctx_, x, out, rows, cols, row_offset, p, seed);
  }
  void fill_normal(float* x, int64_t n, uint64_t seed, float std, float value) override {
    on_device();
    cuda::fill_normal(ctx_, x, n, seed, std, value);
  }
  void fill_uniform(float* x, int64_t n, uint64_t seed, float bound) override {
    on_device();
    cuda::fill_uniform(ctx_, x, n, seed, bound);
  }
  void upload_converted(void* dst, DType to, const void* src, const char* src_dtype, int64_t n) override {
    on_device();
    cuda::upload_converted(ctx_, dst, to, src, src_dtype, n);
  }

  // ---- generation ----
  // f32 caches only (supports_kv_cache keeps the Backend default); the model never asks for more.
  void attention_cached_forward(const CachedAttentionShape& s, const float* q, const void* k_cache,
                                const void* v_cache, float* out) override {
    if (s.kv_dtype != DType::F32)
      throw std::invalid_argument(std::string("cuda attention_cached_forward: the KV cache must be f32, not ") +
                                  dtype_name(s.kv_dtype));
    on_device();
    cuda::attention_cached_forward(ctx_, s, q, static_cast<const float*>(k_cache), static_cast<const float*>(v_cache),
                                   out);
  }
  void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                   int64_t dst_stride) override {
    on_device();
    cuda::gather_rows(ctx_, src, src_stride, rows, n, cols, dst, dst_stride);
  }
  void scatter_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols, float* dst,
                    int64_t dst_stride) override {
    on_device();
    cuda::scatter_rows(ctx_, src, src_stride, rows, n, cols, dst, dst_stride);
  }

 private:
  // The current device is per host thread; engine threads start on device 0.
  void on_device() {
    int cur = -1;
    SEALKIT_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != device_) SEALKIT_CUDA_CHECK(cudaSetDevice(device_));
  }

  int device_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cuda::ScratchPool scratch_;
  cuda::Ctx ctx_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear, so a later retry starts clean
    throw std::runtime_error(std::string("no CUDA device: cudaGetDeviceCount returned ") +
                             (err != cudaSuccess ? std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")"
                                                 : std::string("0 devices")));
  }
  if (device < 0 || device >= count)
    throw std::runtime_error("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                             " device(s) present)");
  return std::make_unique<CudaBackend>(device);
}

}  // namespace sealkit
