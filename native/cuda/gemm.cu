// GEMM for the CUDA backend: C[M,N] = alpha * op(A) op(B) + beta * C, row-major, any lda/ldb/ldc,
// all four orientations, B in f32 or bf16 (contract: native/cpu/kernels.h).
//
// Why no cuBLAS: the CUDA toolkit this project builds with (the pip-wheel subset of CUDA 13 that
// provides nvcc and cudart) carries no cuBLAS/cuBLASLt, and no package registry the project can
// reach provides a static cuBLAS, so `npm run build:cuda` could not link it. The two kernels below
// need nothing beyond cudart:
//
//  * f32 x f32 (and bf16 B in exact mode): a register-blocked SIMT kernel (128x128 tile, 8x8 per
//    thread, double-buffered shared memory) computing in plain f32 with FMA, k ascending. Results
//    agree with the CPU backend to ~1e-6 relative (only summation order and FMA rounding differ).
//  * f32 x bf16 (weights stored in bf16): tensor cores (mma.sync m16n8k16, bf16 inputs, f32
//    accumulate). A is rounded to bf16 (round-to-nearest-even) while it is staged in shared memory,
//    so no scratch copy of A is made. That rounding (relative 2^-9 per element) is the accuracy cost:
//    results agree with the CPU (which widens B to f32 and keeps A in f32) to ~1e-3 relative to the
//    output's norm. SEALKIT_CUDA_EXACT_GEMM=1 routes bf16 B through the SIMT kernel instead (B
//    widened to f32 exactly, as on the CPU) when that accuracy matters more than speed.
//
// Both kernels handle ragged edges by zero-filling their shared-memory tiles and masking stores;
// beta == 0 never reads C (NaNs in C are ignored, as the contract requires).
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit::cuda {
namespace {

// ================================ SIMT f32 kernel ================================================
constexpr int kSBM = 128, kSBN = 128, kSBK = 8, kSThreads = 256, kSPad = 4;

template <bool TA, bool TB, bool BBF16>
__global__ void __launch_bounds__(kSThreads) sgemm_kernel(int64_t M, int64_t N, int64_t K, const float* __restrict__ A,
                                                          int64_t lda, const void* __restrict__ Bv, int64_t ldb,
                                                          float* __restrict__ C, int64_t ldc, float alpha, float beta) {
  __shared__ __align__(16) float As[2][kSBK][kSBM + kSPad];
  __shared__ __align__(16) float Bs[2][kSBK][kSBN + kSPad];
  const int tid = threadIdx.x;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kSBM, n0 = static_cast<int64_t>(blockIdx.x) * kSBN;
  const float* Bf = static_cast<const float*>(Bv);
  const uint16_t* Bh = static_cast<const uint16_t*>(Bv);

  float ra[4], rb[4];
  auto load = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * kSThreads;
      {
        const int ml = TA ? e % kSBM : e / kSBK, kl = TA ? e / kSBM : e % kSBK;
        const int64_t m = m0 + ml, k = k0 + kl;
        ra[i] = (m < M && k < K) ? (TA ? A[k * lda + m] : A[m * lda + k]) : 0.0f;
      }
      {
        const int nl = TB ? e / kSBK : e % kSBN, kl = TB ? e % kSBK : e / kSBN;
        const int64_t n = n0 + nl, k = k0 + kl;
        float v = 0.0f;
        if (n < N && k < K) {
          const int64_t idx = TB ? n * ldb + k : k * ldb + n;
          v = BBF16 ? bf16_bits_to_f32(Bh[idx]) : Bf[idx];
        }
        rb[i] = v;
      }
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * kSThreads;
      {
        const int ml = TA ? e % kSBM : e / kSBK, kl = TA ? e / kSBM : e % kSBK;
        As[buf][kl][ml] = ra[i];
      }
      {
        const int nl = TB ? e / kSBK : e % kSBN, kl = TB ? e % kSBK : e / kSBN;
        Bs[buf][kl][nl] = rb[i];
      }
    }
  };

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  const int tx = tid % 16, ty = tid / 16;
  const int64_t nk = (K + kSBK - 1) / kSBK;
  load(0);
  store(0);
  __syncthreads();
  for (int64_t kt = 0; kt < nk; ++kt) {
    const int buf = static_cast<int>(kt & 1);
    if (kt + 1 < nk) load((kt + 1) * kSBK);
#pragma unroll
    for (int k = 0; k < kSBK; ++k) {
      float a[8], b[8];
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][k][64 + tx * 4]);
      a[0] = a0.x; a[1] = a0.y; a[2] = a0.z; a[3] = a0.w; a[4] = a1.x; a[5] = a1.y; a[6] = a1.z; a[7] = a1.w;
      b[0] = b0.x; b[1] = b0.y; b[2] = b0.z; b[3] = b0.w; b[4] = b1.x; b[5] = b1.y; b[6] = b1.z; b[7] = b1.w;
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (kt + 1 < nk) store(buf ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
      if (n >= N) continue;
      float* c = C + m * ldc + n;
      const float v = alpha * acc[i][j];
      *c = beta == 0.0f ? v : v + beta * *c;
    }
  }
}

// ================================ bf16 tensor-core kernel ========================================
constexpr int kHBM = 128, kHBN = 128, kHBK = 32, kHThreads = 256, kHStride = kHBK + 8;  // +8: ldmatrix bank spread

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <bool TA, bool TB>
__global__ void __launch_bounds__(kHThreads) hgemm_bf16_kernel(int64_t M, int64_t N, int64_t K,
                                                               const float* __restrict__ A, int64_t lda,
                                                               const uint16_t* __restrict__ B, int64_t ldb,
                                                               float* __restrict__ C, int64_t ldc, float alpha,
                                                               float beta) {
  // As[m][k], Bs[n][k]: k contiguous, which is what the mma's row (A) and col (B) operands want.
  __shared__ __align__(16) uint16_t As[2][kHBM][kHStride];
  __shared__ __align__(16) uint16_t Bs[2][kHBN][kHStride];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kHBM, n0 = static_cast<int64_t>(blockIdx.x) * kHBN;
  constexpr int kPer = kHBM * kHBK / kHThreads;  // 16 elements of each operand per thread and tile

  float ra[kPer];
  uint16_t rb[kPer];
  auto load = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = tid + i * kHThreads;
      {
        const int ml = TA ? e % kHBM : e / kHBK, kl = TA ? e / kHBM : e % kHBK;
        const int64_t m = m0 + ml, k = k0 + kl;
        ra[i] = (m < M && k < K) ? (TA ? A[k * lda + m] : A[m * lda + k]) : 0.0f;
      }
      {
        const int nl = TB ? e / kHBK : e % kHBN, kl = TB ? e % kHBK : e / kHBN;
        const int64_t n = n0 + nl, k = k0 + kl;
        rb[i] = (n < N && k < K) ? (TB ? B[n * ldb + k] : B[k * ldb + n]) : uint16_t(0);
      }
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = tid + i * kHThreads;
      {
        const int ml = TA ? e % kHBM : e / kHBK, kl = TA ? e / kHBM : e % kHBK;
        As[buf][ml][kl] = f32_to_bf16_bits(ra[i]);
      }
      {
        const int nl = TB ? e / kHBK : e % kHBN, kl = TB ? e % kHBK : e / kHBN;
        Bs[buf][nl][kl] = rb[i];
      }
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

  const int wm = warp / 4, wn = warp % 4;  // 2 x 4 warps, each a 64 x 32 tile
  const int64_t nk = (K + kHBK - 1) / kHBK;
  load(0);
  store(0);
  __syncthreads();
  for (int64_t kt = 0; kt < nk; ++kt) {
    const int buf = static_cast<int>(kt & 1);
    if (kt + 1 < nk) load((kt + 1) * kHBK);
#pragma unroll
    for (int ks = 0; ks < kHBK / 16; ++ks) {
      uint32_t af[4][4];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const uint16_t* p = &As[buf][wm * 64 + mi * 16 + (lane % 16)][ks * 16 + (lane / 16) * 8];
        ldmatrix_x4(static_cast<uint32_t>(__cvta_generic_to_shared(p)), af[mi][0], af[mi][1], af[mi][2], af[mi][3]);
      }
      uint32_t bfr[4][2];
#pragma unroll
      for (int pr = 0; pr < 2; ++pr) {
        const uint16_t* p = &Bs[buf][wn * 32 + pr * 16 + (lane % 8) + (lane / 16) * 8][ks * 16 + ((lane / 8) % 2) * 8];
        ldmatrix_x4(static_cast<uint32_t>(__cvta_generic_to_shared(p)), bfr[2 * pr][0], bfr[2 * pr][1],
                    bfr[2 * pr + 1][0], bfr[2 * pr + 1][1]);
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16(acc[mi][ni], af[mi], bfr[ni][0], bfr[ni][1]);
    }
    if (kt + 1 < nk) store(buf ^ 1);
    __syncthreads();
  }

  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t m = m0 + wm * 64 + mi * 16 + g + half * 8;
      if (m >= M) continue;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int64_t n = n0 + wn * 32 + ni * 8 + 2 * t + q;
          if (n >= N) continue;
          float* c = C + m * ldc + n;
          const float v = alpha * acc[mi][ni][half * 2 + q];
          *c = beta == 0.0f ? v : v + beta * *c;
        }
      }
    }
  }
}

// C = beta * C over an M x N block (K == 0: the product is empty).
__global__ void scale_c_kernel(float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  const int64_t n = M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float* c = C + (i / N) * ldc + (i % N);
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

bool exact_gemm_requested() {
  const char* e = std::getenv("SEALKIT_CUDA_EXACT_GEMM");
  return e && *e && std::strcmp(e, "0") != 0;
}

template <bool TA, bool TB>
void launch(const Gemm& g, cudaStream_t stream, bool use_mma) {
  const bool bf = g.B.dtype == DType::BF16;
  if (use_mma) {
    dim3 grid(static_cast<unsigned>((g.N + kHBN - 1) / kHBN), static_cast<unsigned>((g.M + kHBM - 1) / kHBM));
    hgemm_bf16_kernel<TA, TB><<<grid, kHThreads, 0, stream>>>(g.M, g.N, g.K, g.A, g.lda,
                                                              static_cast<const uint16_t*>(g.B.data), g.ldb, g.C,
                                                              g.ldc, g.alpha, g.beta);
    SEALKIT_CUDA_LAUNCHED("hgemm_bf16_kernel");
    return;
  }
  dim3 grid(static_cast<unsigned>((g.N + kSBN - 1) / kSBN), static_cast<unsigned>((g.M + kSBM - 1) / kSBM));
  if (bf)
    sgemm_kernel<TA, TB, true><<<grid, kSThreads, 0, stream>>>(g.M, g.N, g.K, g.A, g.lda, g.B.data, g.ldb, g.C, g.ldc,
                                                                g.alpha, g.beta);
  else
    sgemm_kernel<TA, TB, false><<<grid, kSThreads, 0, stream>>>(g.M, g.N, g.K, g.A, g.lda, g.B.data, g.ldb, g.C,
                                                                 g.ldc, g.alpha, g.beta);
  SEALKIT_CUDA_LAUNCHED("sgemm_kernel");
}

}  // namespace

void gemm(Ctx& ctx, const Gemm& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.B.dtype != DType::F32 && g.B.dtype != DType::BF16)
    throw std::invalid_argument(std::string("cuda gemm: B must be f32 or bf16, got ") + dtype_name(g.B.dtype));
  if ((g.M + kSBM - 1) / kSBM > 65535)
    throw std::invalid_argument("cuda gemm: M = " + std::to_string(g.M) + " is too large for one call");
  if (g.K <= 0) {
    scale_c_kernel<<<blocks_for(g.M * g.N, 256), 256, 0, ctx.stream>>>(g.C, g.M, g.N, g.ldc, g.beta);
    SEALKIT_CUDA_LAUNCHED("scale_c_kernel");
    return;
  }
  const bool use_mma = g.B.dtype == DType::BF16 && !exact_gemm_requested();
  if (!g.trans_a && !g.trans_b) launch<false, false>(g, ctx.stream, use_mma);
  else if (!g.trans_a && g.trans_b) launch<false, true>(g, ctx.stream, use_mma);
  else if (g.trans_a && !g.trans_b) launch<true, false>(g, ctx.stream, use_mma);
  else launch<true, true>(g, ctx.stream, use_mma);
}

}  // namespace sealkit::cuda
