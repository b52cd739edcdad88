// Fused softmax cross-entropy, in place (semantics: native/cpu/kernels.h). One block per row: a
// single online pass finds the row's max and sum of exponentials (each thread keeps a running
// (max, sum) pair, sum in double as on the CPU; pairs are merged through the block in a fixed
// tree), then, when gradients are wanted, a second pass overwrites the logits with
// exp(x - max) * (grad_scale / sum), minus grad_scale at the target — the CPU's formulation.
#include <cfloat>

#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ void merge(float& m, double& s, float m2, double s2) {
  const float mm = fmaxf(m, m2);
  if (mm == -INFINITY) return;  // both empty
  s = s * exp(static_cast<double>(m) - mm) + s2 * exp(static_cast<double>(m2) - mm);
  m = mm;
}

__global__ void cross_entropy_kernel(float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                                     const float* grad_scale) {
  __shared__ float sm[32];
  __shared__ double ss[32];
  __shared__ float row_max;
  __shared__ double row_sum;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* x = logits + r * vocab;
    const int32_t t = targets[r];
    const float g = grad_scale ? grad_scale[r] : 0.0f;
    if (t < 0) {  // no target: loss 0 and, with gradients, a zero row
      if (threadIdx.x == 0) loss[r] = 0.0f;
      if (grad_scale)
        for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) x[c] = 0.0f;
      continue;
    }
    float m = -INFINITY;
    double s = 0.0;
    for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
      const float v = x[c];
      if (v > m) {
        s = s * static_cast<double>(expf(m - v)) + 1.0;
        m = v;
      } else if (m != -INFINITY) {  // (-inf, -inf) would give NaN; such a value adds nothing
        s += static_cast<double>(expf(v - m));
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
      merge(m, s, m2, s2);
    }
    if (lane == 0) { sm[warp] = m; ss[warp] = s; }
    __syncthreads();
    if (warp == 0) {
      m = lane < nwarps ? sm[lane] : -INFINITY;
      s = lane < nwarps ? ss[lane] : 0.0;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const double s2 = __shfl_xor_sync(0xffffffffu, s, o);
        merge(m, s, m2, s2);
      }
      if (lane == 0) {
        row_max = m;
        row_sum = s;
        loss[r] = static_cast<float>(static_cast<double>(m) + log(s) - static_cast<double>(x[t]));
      }
    }
    __syncthreads();
    if (grad_scale) {
      if (g == 0.0f) {
        for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) x[c] = 0.0f;
      } else {
        const float mx = row_max;
        const float k = static_cast<float>(static_cast<double>(g) / row_sum);
        for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
          const float p = expf(x[c] - mx) * k;
          x[c] = c == t ? p - g : p;
        }
      }
    }
    __syncthreads();  // sm/ss/row_max/row_sum are reused by the next row
  }
}

}  // namespace

void cross_entropy(Ctx& ctx, float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* loss,
                   const float* grad_scale) {
  if (rows <= 0 || vocab <= 0) return;
  cross_entropy_kernel<<<blocks_for(rows, 1, 65535), kThreads, 0, ctx.stream>>>(logits, targets, rows, vocab, loss,
                                                                                grad_scale);
  SEALKIT_CUDA_LAUNCHED("cross_entropy_kernel");
}

}  // namespace sealkit::cuda
