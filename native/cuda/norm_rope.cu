// RMSNorm (forward/backward) and rotate-half RoPE (forward/backward) for the CUDA backend.
// Semantics: native/cpu/kernels.h. One block per row for the norm (block reductions with a fixed
// tree); the norm-weight gradient is a deterministic column sum (elementwise.cu).
#include <algorithm>

#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit::cuda {
namespace {

int norm_threads(int64_t dim) {
  int t = 32;
  while (t < 512 && t < dim) t *= 2;  // enough threads to cover a row, at most 512
  return t;
}

__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                                       int64_t dim, double eps) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * dim;
    double ss = 0;  // double, as on the CPU
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) ss += static_cast<double>(xr[c]) * xr[c];
    ss = block_sum(ss, red);
    const float rs = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
    if (threadIdx.x == 0) rstd[r] = rs;
    float* yr = y + r * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) yr[c] = w[c] * (xr[c] * rs);  // HF order
  }
}

// dx += rstd * w * dy - x * rstd^3 / dim * sum(dy * w * x)
__global__ void rmsnorm_backward_kernel(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                        int64_t rows, int64_t dim) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * dim;
    const float* dyr = dy + r * dim;
    double dot = 0;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) dot += static_cast<double>(dyr[c]) * w[c] * xr[c];
    dot = block_sum(dot, red);
    const double rsd = rstd[r];
    const float rs = static_cast<float>(rsd);
    const float coef = static_cast<float>(rsd * rsd * rsd * dot / static_cast<double>(dim));
    float* dxr = dx + r * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) dxr[c] += rs * w[c] * dyr[c] - coef * xr[c];
  }
}

// One thread per (row, head, pair i < head_dim/2). The angle is computed in f32 as on the CPU:
// (float)pos * inv_freq[i]; sincosf is the accurate (not the fast-math) version, so large
// positions keep full precision.
__global__ void rope_kernel(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                            const int32_t* positions, const float* inv_freq, bool inverse) {
  const int64_t half = head_dim / 2;
  const int64_t n = rows * heads * half;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t % half;
    const int64_t rh = t / half;
    const int64_t h = rh % heads, r = rh / heads;
    const float angle = static_cast<float>(positions[r]) * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    float* p = x + r * row_stride + h * head_dim;
    const float a = p[i], b = p[i + half];
    if (!inverse) {
      p[i] = a * c - b * s;
      p[i + half] = b * c + a * s;
    } else {
      p[i] = a * c + b * s;
      p[i + half] = b * c - a * s;
    }
  }
}

}  // namespace

void rmsnorm_forward(Ctx& ctx, const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim,
                     double eps) {
  if (rows <= 0 || dim <= 0) return;
  rmsnorm_forward_kernel<<<blocks_for(rows, 1, 65535), norm_threads(dim), 0, ctx.stream>>>(
      x, w, y, rstd, rows, dim, eps);
  SEALKIT_CUDA_LAUNCHED("rmsnorm_forward_kernel");
}

void rmsnorm_backward(Ctx& ctx, const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                      float* dw, int64_t rows, int64_t dim) {
  if (rows <= 0 || dim <= 0) return;
  rmsnorm_backward_kernel<<<blocks_for(rows, 1, 65535), norm_threads(dim), 0, ctx.stream>>>(x, w, rstd, dy, dx, rows,
                                                                                            dim);
  SEALKIT_CUDA_LAUNCHED("rmsnorm_backward_kernel");
  // dw[c] += sum_r dy[r, c] * x[r, c] * rstd[r]
  if (dw) column_sum_add(ctx, dy, x, rstd, dw, rows, dim);
}

void rope(Ctx& ctx, float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
          const int32_t* positions, const float* inv_freq, bool inverse) {
  const int64_t n = rows * heads * (head_dim / 2);
  if (n <= 0) return;
  rope_kernel<<<blocks_for(n, 256), 256, 0, ctx.stream>>>(x, rows, row_stride, heads, head_dim, positions, inv_freq,
                                                          inverse);
  SEALKIT_CUDA_LAUNCHED("rope_kernel");
}

}  // namespace sealkit::cuda
