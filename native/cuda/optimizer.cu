// AdamW (PyTorch semantics, see native/cpu/kernels.h) and the sum of squares used for gradient
// clipping. sum_squares is deterministic: a fixed grid (a function of n only) reduces in double
// with a fixed tree, then one block adds the block partials in order.
#include <algorithm>
#include <cmath>

#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit::cuda {
namespace {

constexpr int kThreads = 256;

// Same scalars and operation order as the CPU (PyTorch's formulation): the bias corrections are
// folded into step_size = lr / bc1 and the denominator sqrt(v) / sqrt(bc2) + eps.
struct AdamConsts {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, decay, step_size, bc2_sqrt;
};

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, AdamConsts k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    const float mi = k.beta1 * m[i] + k.one_minus_beta1 * g;
    const float vi = k.beta2 * v[i] + k.one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
    param[i] = param[i] * k.decay - k.step_size * mi / denom;
  }
}

__global__ void sumsq_partials_kernel(const float* x, int64_t n, double* partials) {
  __shared__ double red[32];
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double v = x[i];
    s += v * v;
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sumsq_finish_kernel(const double* partials, int64_t count, double* out) {
  __shared__ double red[32];
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *out = s;
}

}  // namespace

void adamw_step(Ctx& ctx, float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) {
  if (n <= 0) return;
  AdamConsts k;
  k.beta1 = static_cast<float>(p.beta1);
  k.beta2 = static_cast<float>(p.beta2);
  k.one_minus_beta1 = static_cast<float>(1.0 - p.beta1);
  k.one_minus_beta2 = static_cast<float>(1.0 - p.beta2);
  k.eps = static_cast<float>(p.eps);
  k.decay = static_cast<float>(1.0 - p.lr * p.weight_decay);
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  k.step_size = static_cast<float>(p.lr / bc1);
  k.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  adamw_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(param, grad, m, v, n, k);
  SEALKIT_CUDA_LAUNCHED("adamw_kernel");
}

double sum_squares(Ctx& ctx, const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t blocks = std::min<int64_t>(1024, (n + kThreads * 8 - 1) / (kThreads * 8));
  auto* buf = static_cast<double*>(ctx.scratch->get(kScratchReduce, static_cast<size_t>(blocks + 1) * sizeof(double), ctx.stream));
  sumsq_partials_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, ctx.stream>>>(x, n, buf + 1);
  SEALKIT_CUDA_LAUNCHED("sumsq_partials_kernel");
  sumsq_finish_kernel<<<1, kThreads, 0, ctx.stream>>>(buf + 1, blocks, buf);
  SEALKIT_CUDA_LAUNCHED("sumsq_finish_kernel");
  double out = 0;
  SEALKIT_CUDA_CHECK(cudaMemcpyAsync(&out, buf, sizeof(double), cudaMemcpyDeviceToHost, ctx.stream));
  SEALKIT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return out;
}

}  // namespace sealkit::cuda
