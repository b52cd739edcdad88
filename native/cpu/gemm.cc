// GEMM for the CPU backend (see kernels.h for the contract).
//
// f32 follows the usual packed-panel scheme: for each block of op(B) (KC x NC) the panel is packed
// once into NR-wide column strips (bf16 is widened to f32 here, so a bf16 weight is read once per
// pack), then tasks each take a block of rows of op(A), pack it into MR-tall row strips and sweep a
// register-blocked MR x NR micro-kernel over the B strips. Packing makes the micro-kernel's loads
// contiguous whatever the orientation and strides, and zero-pads edge strips so the kernel always
// computes a full tile and only the store is masked.
//
// Determinism: every element of C is produced by exactly one task, and its K reduction runs in a
// fixed order (KC blocks in sequence, k ascending inside a block). KC depends on the ISA only, so
// the bits depend on the ISA but never on the thread count or on how tasks are split.
//
// The addon is compiled for baseline x86-64; the wide kernels carry target attributes and are
// chosen per call from active_isa(). A future vdpbf16ps kernel adds a KernelSpec whose packers
// keep bf16 pairs (it would need its own packed-buffer element type).
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define SEALKIT_X86 1
#endif

namespace sealkit::cpu {
namespace {

// op(X)[r][c] = data[r * rs + c * cs]: one description for both orientations of A and B.
struct MatRef {
  const void* data;
  DType dtype;
  int64_t rs, cs;
};

inline float load_elem(const MatRef& m, int64_t idx) {
  return m.dtype == DType::BF16 ? bf16_to_f32(static_cast<const uint16_t*>(m.data)[idx])
                                : static_cast<const float*>(m.data)[idx];
}

// How a micro-kernel writes its tile: C = alpha * acc + beta * C, and C's old value is not read at
// all when load_c is false (beta == 0 on the first K block, so NaNs in C are ignored). Later K
// blocks use beta = 1 to add onto the partial result.
struct Epilogue {
  float alpha;
  float beta;
  bool load_c;
};

using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
                             const Epilogue& ep);

// One ISA's kernel. KC is part of the numerics (see the header comment); every other block size
// only shapes the work.
struct KernelSpec {
  int mr, nr;
  int64_t kc;
  MicroKernel micro;
};

// ---- packing ------------------------------------------------------------------------------------
// Both operands are packed over the whole K so a tile can run all its K blocks back to back while
// its slice of C stays in cache (C is read and written once per K block, and for the lm_head C is
// hundreds of megabytes).

// Rows [i0, i0+m) of op(A) -> ceil(m/MR) strips, each K x MR with element (i, k) at [k*MR + i];
// rows past m are zero.
void pack_a_strip(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t m, int64_t K, int mr_full,
                  float* dst) {
  const int mr = static_cast<int>(std::min<int64_t>(mr_full, m));
  const float* src = a + i0 * rs;
  if (cs == 1) {  // rows contiguous in k: read each row once, scatter into the strip
    for (int i = 0; i < mr; ++i) {
      const float* row = src + i * rs;
      for (int64_t k = 0; k < K; ++k) dst[k * mr_full + i] = row[k];
    }
    for (int i = mr; i < mr_full; ++i)
      for (int64_t k = 0; k < K; ++k) dst[k * mr_full + i] = 0.f;
  } else {  // transposed A: the MR values of one k are contiguous
    for (int64_t k = 0; k < K; ++k) {
      const float* col = src + k * cs;
      float* d = dst + k * mr_full;
      for (int i = 0; i < mr; ++i) d[i] = col[i * rs];
      for (int i = mr; i < mr_full; ++i) d[i] = 0.f;
    }
  }
}

// Columns [j0, j0+n) of op(B) -> one strip, K x NR with element (k, j) at [k*NR + j]; columns past
// n are zero. bf16 is widened here.
template <typename Src>
void pack_b_strip(const Src* b, int64_t rs, int64_t cs, int64_t j0, int64_t n, int64_t K, int nr_full, float* dst) {
  auto cvt = [](Src x) -> float {
    if constexpr (std::is_same_v<Src, uint16_t>) return bf16_to_f32(x);
    else return x;
  };
  const int nr = static_cast<int>(std::min<int64_t>(nr_full, n));
  const Src* src = b + j0 * cs;
  if (cs == 1) {  // row k of op(B) contiguous in n
    for (int64_t k = 0; k < K; ++k) {
      const Src* row = src + k * rs;
      float* d = dst + k * nr_full;
      for (int c = 0; c < nr; ++c) d[c] = cvt(row[c]);
      for (int c = nr; c < nr_full; ++c) d[c] = 0.f;
    }
  } else {  // transposed B (y = x W^T): column j of op(B) is row j of W, contiguous in k
    for (int c = 0; c < nr; ++c) {
      const Src* col = src + c * cs;
      for (int64_t k = 0; k < K; ++k) dst[k * nr_full + c] = cvt(col[k * rs]);
    }
    for (int c = nr; c < nr_full; ++c)
      for (int64_t k = 0; k < K; ++k) dst[k * nr_full + c] = 0.f;
  }
}

void pack_b_strip(const MatRef& b, int64_t j0, int64_t n, int64_t K, int nr_full, float* dst) {
  if (b.dtype == DType::BF16)
    pack_b_strip(static_cast<const uint16_t*>(b.data), b.rs, b.cs, j0, n, K, nr_full, dst);
  else
    pack_b_strip(static_cast<const float*>(b.data), b.rs, b.cs, j0, n, K, nr_full, dst);
}

// ---- micro-kernels ------------------------------------------------------------------------------
// Each computes the full MR x NR tile of (packed A strip) x (packed B strip) in registers and
// stores the top-left mr x nr of it through the epilogue. Loops over tile rows are fully unrolled
// so the accumulator arrays stay in registers (a runtime index would force them to memory).

constexpr int kScalarMr = 4, kScalarNr = 8;

void micro_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
                  const Epilogue& ep) {
  float acc[kScalarMr][kScalarNr] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < kScalarMr; ++i)
      for (int j = 0; j < kScalarNr; ++j) acc[i][j] += a[i] * b[j];
    a += kScalarMr;
    b += kScalarNr;
  }
  for (int i = 0; i < mr; ++i) {
    float* row = c + i * ldc;
    for (int j = 0; j < nr; ++j) {
      float v = ep.alpha * acc[i][j];
      row[j] = ep.load_c ? v + ep.beta * row[j] : v;
    }
  }
}

#if SEALKIT_X86

// AVX2 + FMA: 6 x 16 tile = 12 ymm accumulators + 2 for B + 1 broadcast, of 16 registers.
constexpr int kAvx2Mr = 6, kAvx2Nr = 16;

__attribute__((target("avx2,fma"))) void micro_avx2(int64_t kc, const float* a, const float* b, float* c,
                                                     int64_t ldc, int mr, int nr, const Epilogue& ep) {
  __m256 acc[kAvx2Mr][2];
#pragma GCC unroll 16
  for (int i = 0; i < kAvx2Mr; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 16
    for (int i = 0; i < kAvx2Mr; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kAvx2Mr;
    b += kAvx2Nr;
  }
  const __m256 alpha = _mm256_set1_ps(ep.alpha), beta = _mm256_set1_ps(ep.beta);
  if (nr == kAvx2Nr) {
#pragma GCC unroll 16
    for (int i = 0; i < kAvx2Mr; ++i) {
      if (i >= mr) break;
      float* row = c + i * ldc;
      __m256 v0 = _mm256_mul_ps(alpha, acc[i][0]), v1 = _mm256_mul_ps(alpha, acc[i][1]);
      if (ep.load_c) {
        v0 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(row), v0);
        v1 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(row + 8), v1);
      }
      _mm256_storeu_ps(row, v0);
      _mm256_storeu_ps(row + 8, v1);
    }
    return;
  }
  // Edge strip: lane masks for the nr valid columns (maskload/maskstore never touch the rest).
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
#pragma GCC unroll 16
  for (int i = 0; i < kAvx2Mr; ++i) {
    if (i >= mr) break;
    float* row = c + i * ldc;
    __m256 v0 = _mm256_mul_ps(alpha, acc[i][0]), v1 = _mm256_mul_ps(alpha, acc[i][1]);
    if (ep.load_c) {
      v0 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(row, m0), v0);
      v1 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(row + 8, m1), v1);
    }
    _mm256_maskstore_ps(row, m0, v0);
    _mm256_maskstore_ps(row + 8, m1, v1);
  }
}

// AVX-512: MR x 32 tile, two zmm per row. 14 rows use 28 accumulators + 2 for B + 1 broadcast
// of the 32 registers; measured against 8 and 12 rows on Zen 5 / Sapphire Rapids (see bench/gemm.ts).
constexpr int kAvx512Mr = 14, kAvx512Nr = 32;

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void micro_avx512(
    int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, const Epilogue& ep) {
  __m512 acc[kAvx512Mr][2];
#pragma GCC unroll 32
  for (int i = 0; i < kAvx512Mr; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 32
    for (int i = 0; i < kAvx512Mr; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kAvx512Mr;
    b += kAvx512Nr;
  }
  // Masked loads/stores touch only the nr valid columns (masked-off lanes never fault).
  const __mmask16 m0 = nr >= 16 ? __mmask16(0xffff) : __mmask16((1u << nr) - 1);
  const __mmask16 m1 = nr >= 32 ? __mmask16(0xffff) : nr <= 16 ? __mmask16(0) : __mmask16((1u << (nr - 16)) - 1);
  const __m512 alpha = _mm512_set1_ps(ep.alpha), beta = _mm512_set1_ps(ep.beta);
#pragma GCC unroll 32
  for (int i = 0; i < kAvx512Mr; ++i) {
    if (i >= mr) break;
    float* row = c + i * ldc;
    __m512 v0 = _mm512_mul_ps(alpha, acc[i][0]), v1 = _mm512_mul_ps(alpha, acc[i][1]);
    if (ep.load_c) {
      v0 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m0, row), v0);
      v1 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m1, row + 16), v1);
    }
    _mm512_mask_storeu_ps(row, m0, v0);
    _mm512_mask_storeu_ps(row + 16, m1, v1);
  }
}

#endif  // SEALKIT_X86

KernelSpec select_kernel() {
#if SEALKIT_X86
  switch (active_isa()) {
    case Isa::Avx512:
    case Isa::Avx512Bf16:
      return {kAvx512Mr, kAvx512Nr, 256, micro_avx512};
    case Isa::Avx2:
      return {kAvx2Mr, kAvx2Nr, 256, micro_avx2};
    case Isa::Scalar:
      break;
  }
#endif
  return {kScalarMr, kScalarNr, 256, micro_scalar};
}

// Sizes in floats. Packed A covers a chunk of rows over all K, the B panel a chunk of columns over
// all K; a task's rows of A over all K should stay in L2 while it sweeps its B strips.
constexpr int64_t kPackedABudget = int64_t(4) << 20;
constexpr int64_t kPanelBudget = int64_t(1) << 20;
constexpr int64_t kTaskABudget = int64_t(192) << 10;

// Largest multiple of `unit` whose product with `per` stays within `budget` (at least one unit),
// capped at `total` rounded up to the unit.
int64_t block_size(int64_t budget, int64_t per, int64_t unit, int64_t total) {
  const int64_t cap = (total + unit - 1) / unit * unit;
  return std::min(cap, std::max<int64_t>(unit, budget / per / unit * unit));
}

// Grow-only scratch that keeps its memory between calls (the packed operands are megabytes;
// allocating them per call would fault fresh pages every time).
struct Scratch {
  std::vector<float> a, b;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// C = beta * C (beta == 0 writes zeros): the whole result when K == 0 or alpha == 0.
template <typename T>
void scale_c(const GemmArgs<T>& g) {
  for (int64_t i = 0; i < g.M; ++i) {
    T* row = g.C + i * g.ldc;
    for (int64_t j = 0; j < g.N; ++j) row[j] = g.beta == T(0) ? T(0) : g.beta * row[j];
  }
}

void gemm_f32(const GemmArgs<float>& g) {
  if (g.B.dtype != DType::F32 && g.B.dtype != DType::BF16)
    throw std::invalid_argument("gemm<float>: B must be f32 or bf16");
  const KernelSpec ks = select_kernel();
  const int64_t M = g.M, N = g.N, K = g.K, mr = ks.mr, nr = ks.nr;
  const int64_t a_rs = g.trans_a ? 1 : g.lda, a_cs = g.trans_a ? g.lda : 1;
  const MatRef B{g.B.data, g.B.dtype, g.trans_b ? 1 : g.ldb, g.trans_b ? g.ldb : 1};

  ThreadPool& pool = global_pool();
  const int64_t threads = pool.threads();
  const int64_t m_chunk = block_size(kPackedABudget, K, mr, M);
  const int64_t n_chunk = block_size(kPanelBudget, K, nr, N);
  const int64_t m_group = block_size(kTaskABudget, K, mr, m_chunk);
  Scratch& sc = scratch();
  if (sc.a.size() < static_cast<size_t>(m_chunk * K)) sc.a.resize(m_chunk * K);
  if (sc.b.size() < static_cast<size_t>(n_chunk * K)) sc.b.resize(n_chunk * K);
  float* pa = sc.a.data();
  float* pb = sc.b.data();
  // Split a phase of `n` units into ~4 tasks per thread so the pool can balance them.
  auto tasks_for = [&](int64_t n) { return std::min<int64_t>(n, threads == 1 ? 1 : 4 * threads); };

  for (int64_t i0 = 0; i0 < M; i0 += m_chunk) {
    const int64_t m = std::min(m_chunk, M - i0), a_strips = (m + mr - 1) / mr;
    const int64_t at = tasks_for(a_strips), a_per = (a_strips + at - 1) / at;
    pool.run(at, [&](int64_t t, int) {
      for (int64_t s = t * a_per; s < std::min(a_strips, (t + 1) * a_per); ++s)
        pack_a_strip(g.A, a_rs, a_cs, i0 + s * mr, m - s * mr, K, ks.mr, pa + s * mr * K);
    });

    for (int64_t j0 = 0; j0 < N; j0 += n_chunk) {
      const int64_t n = std::min(n_chunk, N - j0), b_strips = (n + nr - 1) / nr;
      const int64_t bt = tasks_for(b_strips), b_per = (b_strips + bt - 1) / bt;
      pool.run(bt, [&](int64_t t, int) {
        for (int64_t s = t * b_per; s < std::min(b_strips, (t + 1) * b_per); ++s)
          pack_b_strip(B, j0 + s * nr, n - s * nr, K, ks.nr, pb + s * nr * K);
      });

      // Tasks: (row group) x (strip group). Each walks its strips; per strip all K blocks run back
      // to back over the group's rows, so the group's C tile stays in L1/L2 between K blocks and
      // the KC x NR slice of the B strip stays in L1 across the row strips.
      const int64_t n_rg = (m + m_group - 1) / m_group;
      const int64_t n_sg = std::min(b_strips, std::max<int64_t>(1, (tasks_for(n_rg * b_strips) + n_rg - 1) / n_rg));
      const int64_t sg_per = (b_strips + n_sg - 1) / n_sg;
      pool.run(n_rg * n_sg, [&](int64_t t, int) {
        const int64_t r0 = (t / n_sg) * m_group, r1 = std::min(m, r0 + m_group);
        const int64_t s0 = (t % n_sg) * sg_per, s1 = std::min(b_strips, s0 + sg_per);
        for (int64_t s = s0; s < s1; ++s) {
          const int cols = static_cast<int>(std::min(nr, n - s * nr));
          const float* bs = pb + s * nr * K;
          for (int64_t k0 = 0; k0 < K; k0 += ks.kc) {
            const int64_t kc = std::min(ks.kc, K - k0);
            const Epilogue ep{g.alpha, k0 == 0 ? g.beta : 1.f, k0 != 0 || g.beta != 0.f};
            for (int64_t r = r0; r < r1; r += mr) {
              const int rows = static_cast<int>(std::min(mr, r1 - r));
              ks.micro(kc, pa + r * K + k0 * mr, bs + k0 * nr, g.C + (i0 + r) * g.ldc + j0 + s * nr, g.ldc, rows,
                       cols, ep);
            }
          }
        }
      });
    }
  }
}

// The f64 reference: plain loops, k ascending, parallel over rows of C.
void gemm_f64(const GemmArgs<double>& g) {
  if (g.B.dtype != DType::F64) throw std::invalid_argument("gemm<double>: B must be f64");
  const double* B = static_cast<const double*>(g.B.data);
  parallel_for(g.M, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      double* row = g.C + i * g.ldc;
      for (int64_t j = 0; j < g.N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < g.K; ++k) {
          const double a = g.trans_a ? g.A[k * g.lda + i] : g.A[i * g.lda + k];
          const double b = g.trans_b ? B[j * g.ldb + k] : B[k * g.ldb + j];
          acc += a * b;
        }
        row[j] = g.beta == 0.0 ? g.alpha * acc : g.alpha * acc + g.beta * row[j];
      }
    }
  });
}

}  // namespace

template <typename T>
void gemm(const GemmArgs<T>& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 || g.alpha == T(0)) {  // BLAS semantics: A and B are not read
    scale_c(g);
    return;
  }
  if constexpr (std::is_same_v<T, float>) gemm_f32(g);
  else gemm_f64(g);
}

template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);

}  // namespace sealkit::cpu
