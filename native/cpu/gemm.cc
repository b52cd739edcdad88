// GEMM for the CPU backend (see kernels.h for the contract).
//
// f32 uses packed operands: rows of op(A) are packed into MR-tall strips and columns of op(B) into
// NR-wide strips (bf16 widened to f32 while packing, so a bf16 weight is read once per pack), each
// over the whole K. Packing makes the micro-kernel's loads contiguous whatever the orientation and
// strides, and zero-pads edge strips so the kernel always computes a full MR x NR tile and only its
// store is masked. A tile runs its K blocks (KC deep, sized for L1) back to back, so its slice of C
// is still in cache when the next block adds onto it. With AVX-512, up to 4 rows of the forward
// orientation (y = x W^T, decoding) skip packing and stream W directly (few_rows_avx512).
//
// Determinism: every element of C is produced by exactly one task and its K reduction runs in a
// fixed order (KC blocks in sequence, k ascending inside a block). The path and KC depend only on
// the ISA and the shape, so the bits never depend on the thread count or on how work is split.
//
// The addon is compiled for baseline x86-64; the wide kernels and packers carry target attributes
// and are chosen per call from active_isa(). A future vdpbf16ps kernel is another KernelSpec whose
// packers keep bf16 pairs (it would need its own packed-buffer element type).
#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define SEALKIT_X86 1
#define SEALKIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define SEALKIT_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace sealkit::cpu {
namespace {

// op(X)[r][c] = data[r * rs + c * cs]: one description for both orientations of A and B.
struct MatRef {
  const void* data;
  DType dtype;
  int64_t rs, cs;
};

// How a micro-kernel writes its tile: C = alpha * acc + beta * C, and C's old value is not read at
// all when load_c is false (beta == 0 on the first K block, so NaNs in C are ignored). Later K
// blocks use beta = 1 to add onto the partial result.
struct Epilogue {
  float alpha;
  float beta;
  bool load_c;
};

// Computes the MR x NR tile (packed A strip) x (packed B strip) over kc and stores its top-left
// rows x cols through the epilogue.
using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows, int cols,
                             const Epilogue& ep);
// Packs rows [i0, i0 + m) of op(A) (m may exceed MR: only the first MR are taken) into one strip.
using PackA = void (*)(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t m, int64_t K, float* dst);
// Packs columns [j0, j0 + n) of op(B) (first NR only) into one strip.
using PackB = void (*)(const MatRef& b, int64_t j0, int64_t n, int64_t K, float* dst);

// One ISA's kernel. KC is part of the numerics (see the header comment); every other block size
// only shapes the work.
struct KernelSpec {
  int mr, nr;
  int64_t kc;
  MicroKernel micro;
  PackA pack_a;
  PackB pack_b;
};

// ---- portable packing ---------------------------------------------------------------------------
// A strip is K x MR with element (i, k) at [k*MR + i]; a B strip is K x NR with element (k, j) at
// [k*NR + j]. Rows/columns past the matrix edge are zero.

template <int MR>
void pack_a_generic(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t m, int64_t K, float* dst) {
  const int mr = static_cast<int>(std::min<int64_t>(MR, m));
  const float* src = a + i0 * rs;
  if (cs == 1) {  // rows contiguous in k: read each row once, scatter into the strip
    for (int i = 0; i < mr; ++i) {
      const float* row = src + i * rs;
      for (int64_t k = 0; k < K; ++k) dst[k * MR + i] = row[k];
    }
    for (int i = mr; i < MR; ++i)
      for (int64_t k = 0; k < K; ++k) dst[k * MR + i] = 0.f;
  } else {  // transposed A: the MR values of one k are contiguous
    for (int64_t k = 0; k < K; ++k) {
      const float* col = src + k * cs;
      float* d = dst + k * MR;
      for (int i = 0; i < mr; ++i) d[i] = col[i * rs];
      for (int i = mr; i < MR; ++i) d[i] = 0.f;
    }
  }
}

template <typename Src>
inline float widen(Src x) {
  if constexpr (std::is_same_v<Src, uint16_t>) return bf16_to_f32(x);
  else return x;
}

// Columns [c_begin, NR) of the strip, from k = k_begin on (the SIMD packers hand their leftovers
// here).
template <int NR, typename Src>
void pack_b_part(const Src* b, int64_t rs, int64_t cs, int64_t j0, int64_t n, int64_t K, int64_t k_begin,
                 float* dst) {
  const int nr = static_cast<int>(std::min<int64_t>(NR, n));
  const Src* src = b + j0 * cs;
  if (cs == 1) {  // row k of op(B) contiguous in n
    for (int64_t k = k_begin; k < K; ++k) {
      const Src* row = src + k * rs;
      float* d = dst + k * NR;
      for (int c = 0; c < nr; ++c) d[c] = widen(row[c]);
      for (int c = nr; c < NR; ++c) d[c] = 0.f;
    }
  } else {  // transposed B (y = x W^T): column j of op(B) is row j of W, contiguous in k
    for (int c = 0; c < nr; ++c) {
      const Src* col = src + c * cs;
      for (int64_t k = k_begin; k < K; ++k) dst[k * NR + c] = widen(col[k * rs]);
    }
    for (int c = nr; c < NR; ++c)
      for (int64_t k = k_begin; k < K; ++k) dst[k * NR + c] = 0.f;
  }
}

template <int NR>
void pack_b_generic(const MatRef& b, int64_t j0, int64_t n, int64_t K, float* dst) {
  if (b.dtype == DType::BF16)
    pack_b_part<NR>(static_cast<const uint16_t*>(b.data), b.rs, b.cs, j0, n, K, 0, dst);
  else
    pack_b_part<NR>(static_cast<const float*>(b.data), b.rs, b.cs, j0, n, K, 0, dst);
}

// ---- micro-kernels ------------------------------------------------------------------------------
// Loops over tile rows are fully unrolled so the accumulator arrays stay in registers (a runtime
// index would force them to memory).

constexpr int kScalarMr = 4, kScalarNr = 8;

void micro_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows, int cols,
                  const Epilogue& ep) {
  float acc[kScalarMr][kScalarNr] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < kScalarMr; ++i)
      for (int j = 0; j < kScalarNr; ++j) acc[i][j] += a[i] * b[j];
    a += kScalarMr;
    b += kScalarNr;
  }
  for (int i = 0; i < rows; ++i) {
    float* row = c + i * ldc;
    for (int j = 0; j < cols; ++j) {
      const float v = ep.alpha * acc[i][j];
      row[j] = ep.load_c ? v + ep.beta * row[j] : v;
    }
  }
}

#if SEALKIT_X86

// AVX2 + FMA: 6 x 16 tile = 12 ymm accumulators + 2 for B + 1 broadcast, of 16 registers.
constexpr int kAvx2Mr = 6, kAvx2Nr = 16;

SEALKIT_AVX2 void micro_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows, int cols,
                             const Epilogue& ep) {
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
  // Lane masks for the valid columns (maskload/maskstore never touch the others).
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), lane);
  const __m256 alpha = _mm256_set1_ps(ep.alpha), beta = _mm256_set1_ps(ep.beta);
#pragma GCC unroll 16
  for (int i = 0; i < kAvx2Mr; ++i) {
    if (i >= rows) break;
    float* row = c + i * ldc;
    __m256 v0 = _mm256_mul_ps(alpha, acc[i][0]), v1 = _mm256_mul_ps(alpha, acc[i][1]);
    if (cols == kAvx2Nr) {
      if (ep.load_c) {
        v0 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(row), v0);
        v1 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(row + 8), v1);
      }
      _mm256_storeu_ps(row, v0);
      _mm256_storeu_ps(row + 8, v1);
    } else {
      if (ep.load_c) {
        v0 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(row, m0), v0);
        v1 = _mm256_fmadd_ps(beta, _mm256_maskload_ps(row + 8, m1), v1);
      }
      _mm256_maskstore_ps(row, m0, v0);
      _mm256_maskstore_ps(row + 8, m1, v1);
    }
  }
}

// AVX-512: 14 x 32 tile, two zmm per row: 28 accumulators + 2 for B + 1 broadcast of the 32
// registers. Measured against 8 x 32 and 12 x 32 (bench/gemm.ts): 14 rows was best or level.
constexpr int kAvx512Mr = 14, kAvx512Nr = 32;

SEALKIT_AVX512 void micro_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows,
                                 int cols, const Epilogue& ep) {
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
  // Masked loads/stores touch only the valid columns (masked-off lanes never fault).
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
  const __m512 alpha = _mm512_set1_ps(ep.alpha), beta = _mm512_set1_ps(ep.beta);
#pragma GCC unroll 32
  for (int i = 0; i < kAvx512Mr; ++i) {
    if (i >= rows) break;
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

// ---- AVX-512 packing ----------------------------------------------------------------------------
// The transposing cases (A row-major, B stored as W for y = x W^T) dominate packing time; they go
// through 16 x 16 register transposes instead of strided scalar stores.

// GCC 12 flags the deliberately undefined pass-through operand inside its own shuffle intrinsics
// (_mm512_undefined_ps) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// In-register transpose: r[i] holds row i on entry and column i on exit.
SEALKIT_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 2) {  // interleave pairs of rows, 32-bit granules
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 4) {  // 64-bit granules: lane L of r[i+q] = rows i..i+3, column 4L+q
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
#pragma GCC unroll 16
  for (int q = 0; q < 4; ++q) {  // gather 128-bit lane L of the four row groups into column 4L+q
    const __m512 lo01 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x44), hi01 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xEE);
    const __m512 lo23 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x44);
    const __m512 hi23 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xEE);
    t[q] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
    t[4 + q] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
    t[8 + q] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
    t[12 + q] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

SEALKIT_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
SEALKIT_AVX512 inline __m512 load16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

SEALKIT_AVX512 void pack_a_avx512(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t m, int64_t K,
                                  float* dst) {
  constexpr int MR = kAvx512Mr;
  if (cs != 1 && rs != 1) {
    pack_a_generic<MR>(a, rs, cs, i0, m, K, dst);
    return;
  }
  if (cs != 1) {  // transposed A (rs == 1): one masked copy of the strip's values per k
    const int mr = static_cast<int>(std::min<int64_t>(MR, m));
    const __mmask16 mask = __mmask16((1u << mr) - 1);
    const float* src = a + i0;
    for (int64_t k = 0; k < K; ++k)
      _mm512_mask_storeu_ps(dst + k * MR, __mmask16((1u << MR) - 1), _mm512_maskz_loadu_ps(mask, src + k * cs));
    return;
  }
  const int mr = static_cast<int>(std::min<int64_t>(MR, m));
  const float* src = a + i0 * rs;
  int64_t k0 = 0;
  for (; k0 + 16 <= K; k0 += 16) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = i < mr ? _mm512_loadu_ps(src + i * rs + k0) : _mm512_setzero_ps();
    transpose16(r);
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) _mm512_mask_storeu_ps(dst + (k0 + k) * MR, __mmask16((1u << MR) - 1), r[k]);
  }
  for (int64_t k = k0; k < K; ++k)
    for (int i = 0; i < MR; ++i) dst[k * MR + i] = i < mr ? src[i * rs + k] : 0.f;
}

template <typename Src>
SEALKIT_AVX512 void pack_b_avx512_t(const Src* b, int64_t rs, int64_t cs, int64_t j0, int64_t n, int64_t K,
                                    float* dst) {
  constexpr int NR = kAvx512Nr;
  const int nr = static_cast<int>(std::min<int64_t>(NR, n));
  if (cs == 1 && nr == NR) {  // op(B) rows contiguous: two vector copies (widening bf16) per k
    const Src* src = b + j0;
    for (int64_t k = 0; k < K; ++k) {
      _mm512_storeu_ps(dst + k * NR, load16(src + k * rs));
      _mm512_storeu_ps(dst + k * NR + 16, load16(src + k * rs + 16));
    }
    return;
  }
  if (cs == 1 || rs != 1) {  // edge strip of contiguous rows, or neither stride unit
    pack_b_part<NR>(b, rs, cs, j0, n, K, 0, dst);
    return;
  }
  const Src* src = b + j0 * cs;
  int64_t k0 = 0;
  for (; k0 + 16 <= K; k0 += 16) {
#pragma GCC unroll 2
    for (int h = 0; h < NR; h += 16) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c) r[c] = h + c < nr ? load16(src + (h + c) * cs + k0) : _mm512_setzero_ps();
      transpose16(r);
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) _mm512_storeu_ps(dst + (k0 + k) * NR + h, r[k]);
    }
  }
  if (k0 < K) pack_b_part<NR>(b, rs, cs, j0, n, K, k0, dst);
}

void pack_b_avx512(const MatRef& b, int64_t j0, int64_t n, int64_t K, float* dst) {
  if (b.dtype == DType::BF16)
    pack_b_avx512_t(static_cast<const uint16_t*>(b.data), b.rs, b.cs, j0, n, K, dst);
  else
    pack_b_avx512_t(static_cast<const float*>(b.data), b.rs, b.cs, j0, n, K, dst);
}

// ---- few rows: y = x W^T without packing ---------------------------------------------------------
// With a handful of rows (decoding) packing B costs more than the product: B is read once per call
// either way, so stream each row of W straight from memory against the few rows of A (in L1).
// Each C element is one K-ascending lane-wise dot product folded in a fixed order. Measured 2-5x
// faster than packing up to 4 rows; at 8 rows (two passes over W) packing wins again.
constexpr int64_t kFewRows = 4;

SEALKIT_AVX512 inline __m512 load16_masked(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
SEALKIT_AVX512 inline __m512 load16_masked(const uint16_t* p, __mmask16 m) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

SEALKIT_AVX512 inline float fold16(__m512 v) {
  alignas(64) float l[16];
  _mm512_store_ps(l, v);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) l[i] += l[i + w];
  return l[0];
}

// All MB rows of C, columns [n0, n1): four columns of W at a time against the MB rows of A.
template <int MB, typename Src>
SEALKIT_AVX512 void few_rows_avx512(const GemmArgs<float>& g, const Src* B, int64_t n0, int64_t n1) {
  constexpr int NB = 4;
  const int64_t K = g.K;
  for (int64_t n = n0; n < n1; n += NB) {
    const int nb = static_cast<int>(std::min<int64_t>(NB, n1 - n));
    __m512 acc[MB][NB];
#pragma GCC unroll 32
    for (int i = 0; i < MB; ++i)
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
      __m512 b[NB];
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) b[j] = j < nb ? load16_masked(B + (n + j) * g.ldb + k, m) : _mm512_setzero_ps();
#pragma GCC unroll 32
      for (int i = 0; i < MB; ++i) {
        const __m512 a = _mm512_maskz_loadu_ps(m, g.A + i * g.lda + k);
        for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
      }
    }
#pragma GCC unroll 32
    for (int i = 0; i < MB; ++i) {
      float* c = g.C + i * g.ldc + n;
      for (int j = 0; j < NB; ++j) {
        if (j >= nb) break;
        const float v = g.alpha * fold16(acc[i][j]);
        c[j] = g.beta == 0.f ? v : v + g.beta * c[j];
      }
    }
  }
}

template <typename Src>
void few_rows_avx512_src(const GemmArgs<float>& g, const Src* B) {
  parallel_for(g.N, 64, [&](int64_t n0, int64_t n1) {
    switch (g.M) {
      case 1: few_rows_avx512<1>(g, B, n0, n1); break;
      case 2: few_rows_avx512<2>(g, B, n0, n1); break;
      case 3: few_rows_avx512<3>(g, B, n0, n1); break;
      default: few_rows_avx512<4>(g, B, n0, n1); break;
    }
  });
}

void few_rows_avx512(const GemmArgs<float>& g) {
  if (g.B.dtype == DType::BF16) few_rows_avx512_src(g, static_cast<const uint16_t*>(g.B.data));
  else few_rows_avx512_src(g, static_cast<const float*>(g.B.data));
}
#pragma GCC diagnostic pop

#endif  // SEALKIT_X86

KernelSpec select_kernel(Isa isa) {
#if SEALKIT_X86
  switch (isa) {
    case Isa::Avx512:
    case Isa::Avx512Bf16:
      return {kAvx512Mr, kAvx512Nr, 256, micro_avx512, pack_a_avx512, pack_b_avx512};
    case Isa::Avx2:
      return {kAvx2Mr, kAvx2Nr, 256, micro_avx2, pack_a_generic<kAvx2Mr>, pack_b_generic<kAvx2Nr>};
    case Isa::Scalar:
      break;
  }
#endif
  return {kScalarMr, kScalarNr, 256, micro_scalar, pack_a_generic<kScalarMr>, pack_b_generic<kScalarNr>};
}

// ---- driver -------------------------------------------------------------------------------------
// Sizes in floats. Packed A covers a chunk of rows over all K, the B panel a chunk of columns over
// all K; a task's rows of packed A should stay in L2 while it sweeps its B strips.
constexpr int64_t kPackedABudget = int64_t(4) << 20;
constexpr int64_t kPanelBudget = int64_t(1) << 20;
constexpr int64_t kTaskABudget = int64_t(96) << 10;

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

void gemm_f32(const GemmArgs<float>& g) {
  if (g.B.dtype != DType::F32 && g.B.dtype != DType::BF16)
    throw std::invalid_argument("gemm<float>: B must be f32 or bf16");
  const Isa isa = active_isa();
#if SEALKIT_X86
  if (g.M <= kFewRows && g.trans_b && !g.trans_a && (isa == Isa::Avx512 || isa == Isa::Avx512Bf16)) {
    few_rows_avx512(g);
    return;
  }
#endif
  const KernelSpec ks = select_kernel(isa);
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
  // ~4 tasks per thread per phase lets the pool balance uneven tasks.
  auto tasks_for = [&](int64_t units) { return std::min<int64_t>(units, threads == 1 ? 1 : 4 * threads); };

  for (int64_t i0 = 0; i0 < M; i0 += m_chunk) {
    const int64_t m = std::min(m_chunk, M - i0), a_strips = (m + mr - 1) / mr;
    const int64_t at = tasks_for(a_strips), a_per = (a_strips + at - 1) / at;
    pool.run(at, [&](int64_t t, int) {
      for (int64_t s = t * a_per; s < std::min(a_strips, (t + 1) * a_per); ++s)
        ks.pack_a(g.A, a_rs, a_cs, i0 + s * mr, m - s * mr, K, pa + s * mr * K);
    });

    for (int64_t j0 = 0; j0 < N; j0 += n_chunk) {
      const int64_t n = std::min(n_chunk, N - j0), b_strips = (n + nr - 1) / nr;
      const int64_t bt = tasks_for(b_strips), b_per = (b_strips + bt - 1) / bt;
      pool.run(bt, [&](int64_t t, int) {
        for (int64_t s = t * b_per; s < std::min(b_strips, (t + 1) * b_per); ++s)
          ks.pack_b(B, j0 + s * nr, n - s * nr, K, pb + s * nr * K);
      });

      // Tasks: (row group) x (strip group). Per strip, all K blocks run back to back over the
      // group's rows: the group's C tile stays in L1/L2 between K blocks, and the KC x NR slice of
      // the B strip stays in L1 across the row strips.
      const int64_t n_rg = (m + m_group - 1) / m_group;
      const int64_t n_sg = std::min(b_strips, (tasks_for(n_rg * b_strips) + n_rg - 1) / n_rg);
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

// C = beta * C (beta == 0 writes zeros): the whole result when K == 0 or alpha == 0.
template <typename T>
void scale_c(const GemmArgs<T>& g) {
  for (int64_t i = 0; i < g.M; ++i) {
    T* row = g.C + i * g.ldc;
    for (int64_t j = 0; j < g.N; ++j) row[j] = g.beta == T(0) ? T(0) : g.beta * row[j];
  }
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
