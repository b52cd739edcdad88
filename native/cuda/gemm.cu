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
//    accumulate). A is rounded to bf16 (round-to-nearest-even): into a scratch copy that a 3-stage
//    cp.async pipeline streams from (hgemm_pipe_kernel, when B is 16-byte aligned with ldb % 8 == 0,
//    i.e. every real weight), or while staging tiles in the simpler fallback kernel
//    (hgemm_bf16_kernel). That rounding (relative 2^-9 per element) is the accuracy cost:
//    results agree with the CPU (which widens B to f32 and keeps A in f32) to ~1e-3 relative to the
//    output's norm. SEALKIT_CUDA_EXACT_GEMM=1 routes bf16 B through the SIMT kernel instead (B
//    widened to f32 exactly, as on the CPU) when that accuracy matters more than speed.
//
// Both kernels handle ragged edges by zero-filling their shared-memory tiles and masking stores;
// beta == 0 never reads C (NaNs in C are ignored, as the contract requires).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit::cuda {
namespace {

// ================================ SIMT f32 kernel ================================================
// Tile BM x BN (128x128, or 128x32 / 32x128 for skinny products such as LoRA's rank-r factors, where
// a square tile would mostly compute padding), BK = 8, 256 threads on a 16 x 16 grid, each owning
// TM x TN outputs (rows ty*4 + i%4 + (i/4) * BM/2 when TM = 8, ty*TM + i otherwise; same for cols).
constexpr int kSBK = 8, kSThreads = 256, kSPad = 4;

template <int BM, int TM>
__device__ __forceinline__ int owned(int t, int i) {
  if constexpr (TM >= 4) return (i / 4) * (BM * 4 / TM) + t * 4 + (i % 4);
  else return t * TM + i;
}

template <int BM, int BN, bool TA, bool TB, bool BBF16>
__global__ void __launch_bounds__(kSThreads) sgemm_kernel(int64_t M, int64_t N, int64_t K, const float* __restrict__ A,
                                                          int64_t lda, const void* __restrict__ Bv, int64_t ldb,
                                                          float* __restrict__ C, int64_t ldc, float alpha, float beta) {
  constexpr int TM = BM / 16, TN = BN / 16;
  constexpr int kPerA = BM * kSBK / kSThreads, kPerB = BN * kSBK / kSThreads;
  __shared__ __align__(16) float As[2][kSBK][BM + kSPad];
  __shared__ __align__(16) float Bs[2][kSBK][BN + kSPad];
  const int tid = threadIdx.x;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM, n0 = static_cast<int64_t>(blockIdx.x) * BN;
  const float* Bf = static_cast<const float*>(Bv);
  const uint16_t* Bh = static_cast<const uint16_t*>(Bv);

  float ra[kPerA], rb[kPerB];
  auto load = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < kPerA; ++i) {
      const int e = tid + i * kSThreads;
      const int ml = TA ? e % BM : e / kSBK, kl = TA ? e / BM : e % kSBK;
      const int64_t m = m0 + ml, k = k0 + kl;
      ra[i] = (m < M && k < K) ? (TA ? A[k * lda + m] : A[m * lda + k]) : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kPerB; ++i) {
      const int e = tid + i * kSThreads;
      const int nl = TB ? e / kSBK : e % BN, kl = TB ? e % kSBK : e / BN;
      const int64_t n = n0 + nl, k = k0 + kl;
      float v = 0.0f;
      if (n < N && k < K) {
        const int64_t idx = TB ? n * ldb + k : k * ldb + n;
        v = BBF16 ? bf16_bits_to_f32(Bh[idx]) : Bf[idx];
      }
      rb[i] = v;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kPerA; ++i) {
      const int e = tid + i * kSThreads;
      const int ml = TA ? e % BM : e / kSBK, kl = TA ? e / BM : e % kSBK;
      As[buf][kl][ml] = ra[i];
    }
#pragma unroll
    for (int i = 0; i < kPerB; ++i) {
      const int e = tid + i * kSThreads;
      const int nl = TB ? e / kSBK : e % BN, kl = TB ? e % kSBK : e / BN;
      Bs[buf][kl][nl] = rb[i];
    }
  };

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

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
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[buf][k][owned<BM, TM>(ty, i)];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[buf][k][owned<BN, TN>(tx, j)];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (kt + 1 < nk) store(buf ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t m = m0 + owned<BM, TM>(ty, i);
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t n = n0 + owned<BN, TN>(tx, j);
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

// ================================ bf16 tensor-core kernel, pipelined =============================
// The fast path for bf16 weights: A is first converted to a bf16 copy [M][Kp] (Kp = K rounded up
// to 8, zero-padded; one cheap pass, transposing when trans_a), then both operands stream into a
// 3-stage shared-memory ring with cp.async (16-byte copies, zero-filled past the edges) while the
// tensor cores work on the previous stages. B is read in its stored orientation: [n][k] tiles when
// trans_b (the forward y = x W^T), [k][n] tiles with transposing ldmatrix otherwise (dx = dy W).
// Needs B 16-byte aligned with ldb % 8 == 0 (true for every weight matrix of a real model); other
// calls take hgemm_bf16_kernel above. Same numerics as that kernel: A rounded to bf16, f32 accumulate.
constexpr int kPStages = 3, kPBM = 128, kPBN = 128, kPBK = 32, kPThreads = 256;
constexpr int kPAStride = kPBK + 8;    // As[m][k] row: 80 bytes (ldmatrix rows hit distinct banks)
constexpr int kPBStrideT = kPBK + 8;   // Bs[n][k] row (trans_b)
constexpr int kPBStrideN = kPBN + 8;   // Bs[k][n] row (non-trans): 272 bytes
constexpr int kPAStage = kPBM * kPAStride;
constexpr int kPBStage = (kPBN * kPBStrideT > kPBK * kPBStrideN) ? kPBN * kPBStrideT : kPBK * kPBStrideN;
constexpr size_t kPSmem = size_t(kPStages) * (kPAStage + kPBStage) * sizeof(uint16_t);

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// A (f32, op(A) = A or A^T) -> bf16 [M][Kp], zero in columns K..Kp-1. 32x32 tiles through shared
// memory so both the read and the write are coalesced whatever the orientation.
__global__ void convert_a_kernel(const float* __restrict__ A, int64_t lda, bool trans_a, int64_t M, int64_t K,
                                 int64_t Kp, uint16_t* __restrict__ out) {
  __shared__ float tile[32][33];
  const int64_t m0 = int64_t(blockIdx.y) * 32, k0 = int64_t(blockIdx.x) * 32;
  const int tx = threadIdx.x, ty = threadIdx.y;  // 32 x 8
  for (int i = ty; i < 32; i += 8) {
    if (!trans_a) {  // A[m][k]: k contiguous
      const int64_t m = m0 + i, k = k0 + tx;
      tile[i][tx] = (m < M && k < K) ? A[m * lda + k] : 0.0f;
    } else {  // A[k][m]: m contiguous
      const int64_t k = k0 + i, m = m0 + tx;
      tile[tx][i] = (m < M && k < K) ? A[k * lda + m] : 0.0f;
    }
  }
  __syncthreads();
  for (int i = ty; i < 32; i += 8) {
    const int64_t m = m0 + i, k = k0 + tx;
    if (m < M && k < Kp) out[m * Kp + k] = f32_to_bf16_bits(tile[i][tx]);
  }
}

template <bool TB>
__global__ void __launch_bounds__(kPThreads, 2) hgemm_pipe_kernel(int64_t M, int64_t N, int64_t K,
                                                                   const uint16_t* __restrict__ A, int64_t lda,
                                                                   const uint16_t* __restrict__ B, int64_t ldb,
                                                                   float* __restrict__ C, int64_t ldc, float alpha,
                                                                   float beta) {
  extern __shared__ __align__(16) uint16_t psmem[];
  uint16_t* As = psmem;                              // [stage][m][kPAStride]
  uint16_t* Bs = psmem + kPStages * kPAStage;        // [stage][...]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t m0 = int64_t(blockIdx.y) * kPBM, n0 = int64_t(blockIdx.x) * kPBN;
  const int64_t nk = (K + kPBK - 1) / kPBK;

  auto load_stage = [&](int stage, int64_t kt) {
    const int64_t k0 = kt * kPBK;
    uint16_t* as = As + stage * kPAStage;
    uint16_t* bs = Bs + stage * kPBStage;
#pragma unroll
    for (int i = 0; i < 2; ++i) {  // A: 128 rows x 4 chunks of 8
      const int c = tid + i * kPThreads;
      const int r = c / 4, kc = (c % 4) * 8;
      const int64_t m = m0 + r, k = k0 + kc;
      const int64_t rem = (m < M) ? (K - k) : 0;  // zero-fill past K (and past a split's range)
      const int bytes = rem <= 0 ? 0 : (rem >= 8 ? 16 : static_cast<int>(rem) * 2);
      const uint16_t* src = bytes ? A + m * lda + k : A;
      cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(as + r * kPAStride + kc)), src, bytes);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = tid + i * kPThreads;
      if (TB) {  // B[n][k]: 128 n rows x 4 chunks of 8 k
        const int r = c / 4, kc = (c % 4) * 8;
        const int64_t n = n0 + r, k = k0 + kc;
        const int64_t rem = (n < N) ? (K - k) : 0;
        const int bytes = rem <= 0 ? 0 : (rem >= 8 ? 16 : static_cast<int>(rem) * 2);
        const uint16_t* src = bytes ? B + n * ldb + k : B;
        cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(bs + r * kPBStrideT + kc)), src, bytes);
      } else {  // B[k][n]: 32 k rows x 16 chunks of 8 n
        const int r = c / 16, nc = (c % 16) * 8;
        const int64_t k = k0 + r, n = n0 + nc;
        const int64_t rem = (k < K) ? (N - n) : 0;
        const int bytes = rem <= 0 ? 0 : (rem >= 8 ? 16 : static_cast<int>(rem) * 2);
        const uint16_t* src = bytes ? B + k * ldb + n : B;
        cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(bs + r * kPBStrideN + nc)), src, bytes);
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

  const int wm = warp / 4, wn = warp % 4;
#pragma unroll
  for (int st = 0; st < kPStages - 1; ++st) {
    if (st < nk) load_stage(st, st);
    cp_async_commit();
  }
  for (int64_t kt = 0; kt < nk; ++kt) {
    cp_async_wait<kPStages - 2>();
    __syncthreads();  // stage kt is in; every warp is done with the stage about to be refilled
    if (kt + kPStages - 1 < nk) load_stage(static_cast<int>((kt + kPStages - 1) % kPStages), kt + kPStages - 1);
    cp_async_commit();
    const int stage = static_cast<int>(kt % kPStages);
    const uint16_t* as = As + stage * kPAStage;
    const uint16_t* bs = Bs + stage * kPBStage;
#pragma unroll
    for (int ks = 0; ks < kPBK / 16; ++ks) {
      uint32_t af[4][4];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const uint16_t* p = as + (wm * 64 + mi * 16 + (lane % 16)) * kPAStride + ks * 16 + (lane / 16) * 8;
        ldmatrix_x4(static_cast<uint32_t>(__cvta_generic_to_shared(p)), af[mi][0], af[mi][1], af[mi][2], af[mi][3]);
      }
      uint32_t bfr[4][2];
#pragma unroll
      for (int pr = 0; pr < 2; ++pr) {
        if (TB) {
          const uint16_t* p = bs + (wn * 32 + pr * 16 + (lane % 8) + (lane / 16) * 8) * kPBStrideT + ks * 16 +
                              ((lane / 8) % 2) * 8;
          ldmatrix_x4(static_cast<uint32_t>(__cvta_generic_to_shared(p)), bfr[2 * pr][0], bfr[2 * pr][1],
                      bfr[2 * pr + 1][0], bfr[2 * pr + 1][1]);
        } else {
          // Bs[k][n]: matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15),
          // transposed on load into the col-major fragments the mma expects.
          const uint16_t* p = bs + (ks * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * kPBStrideN + wn * 32 + pr * 16 +
                              (lane / 16) * 8;
          ldmatrix_x4_trans(static_cast<uint32_t>(__cvta_generic_to_shared(p)), bfr[2 * pr][0], bfr[2 * pr][1],
                            bfr[2 * pr + 1][0], bfr[2 * pr + 1][1]);
        }
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16(acc[mi][ni], af[mi], bfr[ni][0], bfr[ni][1]);
    }
  }
  cp_async_wait<0>();

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

// Split-K partials: C = alpha * sum_z P[z] + beta * C, z in order (deterministic).
__global__ void splitk_reduce_kernel(const float* P, int splits, float* C, int64_t M, int64_t N, int64_t ldc,
                                     float alpha, float beta) {
  const int64_t n = M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int z = 0; z < splits; ++z) s += P[z * n + i];
    float* c = C + (i / N) * ldc + (i % N);
    *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
  }
}

template <int BM, int BN, bool TA, bool TB>
void launch_simt(const Gemm& g, cudaStream_t stream) {
  dim3 grid(static_cast<unsigned>((g.N + BN - 1) / BN), static_cast<unsigned>((g.M + BM - 1) / BM));
  if (g.B.dtype == DType::BF16)
    sgemm_kernel<BM, BN, TA, TB, true><<<grid, kSThreads, 0, stream>>>(g.M, g.N, g.K, g.A, g.lda, g.B.data, g.ldb,
                                                                        g.C, g.ldc, g.alpha, g.beta);
  else
    sgemm_kernel<BM, BN, TA, TB, false><<<grid, kSThreads, 0, stream>>>(g.M, g.N, g.K, g.A, g.lda, g.B.data, g.ldb,
                                                                         g.C, g.ldc, g.alpha, g.beta);
  SEALKIT_CUDA_LAUNCHED("sgemm_kernel");
}

enum class Kernel { Mma, Simt128x128, Simt128x32, Simt32x128 };

template <bool TA, bool TB>
void launch(const Gemm& g, cudaStream_t stream, Kernel kernel) {
  switch (kernel) {
    case Kernel::Mma: {
      dim3 grid(static_cast<unsigned>((g.N + kHBN - 1) / kHBN), static_cast<unsigned>((g.M + kHBM - 1) / kHBM));
      hgemm_bf16_kernel<TA, TB><<<grid, kHThreads, 0, stream>>>(g.M, g.N, g.K, g.A, g.lda,
                                                                static_cast<const uint16_t*>(g.B.data), g.ldb, g.C,
                                                                g.ldc, g.alpha, g.beta);
      SEALKIT_CUDA_LAUNCHED("hgemm_bf16_kernel");
      return;
    }
    case Kernel::Simt128x128: launch_simt<128, 128, TA, TB>(g, stream); return;
    case Kernel::Simt128x32: launch_simt<128, 32, TA, TB>(g, stream); return;
    case Kernel::Simt32x128: launch_simt<32, 128, TA, TB>(g, stream); return;
  }
}

void launch_any(const Gemm& g, cudaStream_t stream, Kernel kernel) {
  if (!g.trans_a && !g.trans_b) launch<false, false>(g, stream, kernel);
  else if (!g.trans_a && g.trans_b) launch<false, true>(g, stream, kernel);
  else if (g.trans_a && !g.trans_b) launch<true, false>(g, stream, kernel);
  else launch<true, true>(g, stream, kernel);
}

// The pipelined bf16 path (see hgemm_pipe_kernel): convert A once, then one launch, or split-K
// launches over 32-aligned K ranges (partials added in order) when the grid would be too small.
void gemm_bf16_pipelined(Ctx& ctx, const Gemm& g) {
  const int64_t Kp = (g.K + 7) / 8 * 8;
  auto* a16 = static_cast<uint16_t*>(
      ctx.scratch->get(kScratchGemmA, static_cast<size_t>(g.M * Kp) * sizeof(uint16_t), ctx.stream));
  {
    dim3 grid(static_cast<unsigned>((Kp + 31) / 32), static_cast<unsigned>((g.M + 31) / 32));
    convert_a_kernel<<<grid, dim3(32, 8), 0, ctx.stream>>>(g.A, g.lda, g.trans_a, g.M, g.K, Kp, a16);
    SEALKIT_CUDA_LAUNCHED("convert_a_kernel");
  }
  const uint16_t* b = static_cast<const uint16_t*>(g.B.data);
  auto kernel = g.trans_b ? hgemm_pipe_kernel<true> : hgemm_pipe_kernel<false>;
  SEALKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kPSmem)));
  const int64_t tiles = ((g.M + kPBM - 1) / kPBM) * ((g.N + kPBN - 1) / kPBN);
  const int64_t want = 3 * static_cast<int64_t>(ctx.sm_count);
  int64_t splits = 1;
  if (tiles < want && g.K >= 1024) {
    splits = std::min<int64_t>({(want + tiles - 1) / tiles, g.K / 256, 32});
    const int64_t cap = (int64_t(256) << 20) / (4 * g.M * g.N);
    splits = std::max<int64_t>(1, std::min(splits, cap));
  }
  dim3 grid(static_cast<unsigned>((g.N + kPBN - 1) / kPBN), static_cast<unsigned>((g.M + kPBM - 1) / kPBM));
  if (splits <= 1) {
    kernel<<<grid, kPThreads, kPSmem, ctx.stream>>>(g.M, g.N, g.K, a16, Kp, b, g.ldb, g.C, g.ldc, g.alpha, g.beta);
    SEALKIT_CUDA_LAUNCHED("hgemm_pipe_kernel");
    return;
  }
  int64_t chunk = (g.K + splits - 1) / splits;
  chunk = (chunk + 31) / 32 * 32;
  splits = (g.K + chunk - 1) / chunk;
  auto* partial = static_cast<float*>(
      ctx.scratch->get(kScratchGemmSplitK, static_cast<size_t>(splits * g.M * g.N) * sizeof(float), ctx.stream));
  for (int64_t z = 0; z < splits; ++z) {
    const int64_t k0 = z * chunk, kz = std::min(chunk, g.K - k0);
    // A K range [k0, k0 + kz) is the same rows (stride Kp) offset by k0; the kernel reads columns
    // below its K = kz only.
    kernel<<<grid, kPThreads, kPSmem, ctx.stream>>>(g.M, g.N, kz, a16 + k0, Kp, g.trans_b ? b + k0 : b + k0 * g.ldb,
                                                    g.ldb, partial + z * g.M * g.N, g.N, 1.0f, 0.0f);
    SEALKIT_CUDA_LAUNCHED("hgemm_pipe_kernel(split)");
  }
  splitk_reduce_kernel<<<blocks_for(g.M * g.N, 256), 256, 0, ctx.stream>>>(partial, static_cast<int>(splits), g.C, g.M,
                                                                          g.N, g.ldc, g.alpha, g.beta);
  SEALKIT_CUDA_LAUNCHED("splitk_reduce_kernel");
}

}  // namespace

void gemm(Ctx& ctx, const Gemm& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.B.dtype != DType::F32 && g.B.dtype != DType::BF16)
    throw std::invalid_argument(std::string("cuda gemm: B must be f32 or bf16, got ") + dtype_name(g.B.dtype));
  if ((g.M + 31) / 32 > 65535)
    throw std::invalid_argument("cuda gemm: M = " + std::to_string(g.M) + " is too large for one call");
  if (g.K <= 0) {
    scale_c_kernel<<<blocks_for(g.M * g.N, 256), 256, 0, ctx.stream>>>(g.C, g.M, g.N, g.ldc, g.beta);
    SEALKIT_CUDA_LAUNCHED("scale_c_kernel");
    return;
  }
  if (g.B.dtype == DType::BF16 && !exact_gemm_requested() && g.ldb % 8 == 0 &&
      reinterpret_cast<uintptr_t>(g.B.data) % 16 == 0) {
    gemm_bf16_pipelined(ctx, g);
    return;
  }
  Kernel kernel;
  int64_t bm = 128, bn = 128;
  if (g.B.dtype == DType::BF16 && !exact_gemm_requested()) kernel = Kernel::Mma;
  else if (g.N <= 32 && g.M > 32) { kernel = Kernel::Simt128x32; bn = 32; }
  else if (g.M <= 32 && g.N > 32) { kernel = Kernel::Simt32x128; bm = 32; }
  else kernel = Kernel::Simt128x128;

  // Split-K when the output has too few tiles to fill the GPU and K is long (LoRA's dA/dB with
  // K = tokens, decoding-size M): each split runs the same kernel on a K range into its own
  // partial buffer, then the partials are added in split order (deterministic) with alpha/beta.
  const int64_t tiles = ((g.M + bm - 1) / bm) * ((g.N + bn - 1) / bn);
  const int64_t want = 3 * static_cast<int64_t>(ctx.sm_count);
  int64_t splits = 1;
  if (tiles < want && g.K >= 1024) {
    splits = std::min<int64_t>({(want + tiles - 1) / tiles, g.K / 256, 32});
    const int64_t cap = (int64_t(256) << 20) / (4 * g.M * g.N);  // keep partials under 256 MiB
    splits = std::max<int64_t>(1, std::min(splits, cap));
  }
  if (splits <= 1) {
    launch_any(g, ctx.stream, kernel);
    return;
  }
  int64_t chunk = (g.K + splits - 1) / splits;
  chunk = (chunk + 31) / 32 * 32;
  splits = (g.K + chunk - 1) / chunk;
  auto* partial = static_cast<float*>(
      ctx.scratch->get(kScratchGemmSplitK, static_cast<size_t>(splits * g.M * g.N) * sizeof(float), ctx.stream));
  for (int64_t z = 0; z < splits; ++z) {
    const int64_t k0 = z * chunk;
    Gemm gz = g;
    gz.K = std::min(chunk, g.K - k0);
    gz.A = g.trans_a ? g.A + k0 * g.lda : g.A + k0;
    const int64_t boff = g.trans_b ? k0 : k0 * g.ldb;
    gz.B.data = static_cast<const char*>(g.B.data) + boff * static_cast<int64_t>(dtype_size(g.B.dtype));
    gz.C = partial + z * g.M * g.N;
    gz.ldc = g.N;
    gz.alpha = 1.0f;
    gz.beta = 0.0f;
    launch_any(gz, ctx.stream, kernel);
  }
  splitk_reduce_kernel<<<blocks_for(g.M * g.N, 256), 256, 0, ctx.stream>>>(partial, static_cast<int>(splits), g.C, g.M,
                                                                          g.N, g.ldc, g.alpha, g.beta);
  SEALKIT_CUDA_LAUNCHED("splitk_reduce_kernel");
}

}  // namespace sealkit::cuda
