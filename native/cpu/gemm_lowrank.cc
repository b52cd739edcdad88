// GEMMs whose result is at most kLowRankMax columns wide: three of LoRA's six side-path GEMMs per
// projection, where N is the adapter's rank r (T tokens, model widths in/out):
//   xa = x A^T (forward), dxa = s dy B and dB += s dy^T xa (backward).
// The packed GEMM (gemm.cc) pads such a product to its 14 x 32 tile (half or more of every
// multiply-add wasted at r <= 16) and packs the large operand first. Here op(B) is packed once
// (K x 16 or K x 32 floats, in L1/L2), and 8 rows of C at a time, each one or two zmm, accumulate
// broadcasts of op(A)'s elements, read where they lie, against the packed rows.
// Measured alone at SmolLM2-135M's shapes (T 1024, r 16; `npx tsx bench/gemm.ts --only-lowrank`):
// 1.4-2.7x the packed path's speed on 1 and 2 threads (least for dB at out 1536: it walks dy
// down its columns).
//
// Not here: the other three (y += s xa B^T and dx += dxa A, depth r; dA += dxa^T x, r rows of C).
// A register-blocked kernel for each ran at par or slower alone (the first two only stream C in
// and out: memory-bound either way; the third walks x down its columns). The first two now ride on
// the base GEMM's tiles while those are in L1 (gemm_with_update in gemm.cc); dA stays on the packed
// path.
//
// Determinism: every element of C is produced by one task, as one k-ascending sum, then
// C = alpha * sum + beta * C (C not read when beta == 0). The path depends only on the shape, the
// orientation and the ISA, never on the thread count.
#include "gemm_lowrank.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/threadpool.h"
#include "simd.h"

namespace sealkit::cpu {
namespace {

#if SEALKIT_X86

// op(A)[i][k] = p[i * rs + k * cs].
struct ARef {
  const float* p;
  int64_t rs, cs;
};

SEALKIT_AVX512 SEALKIT_INLINE void store16(float* c, __m512 acc, __mmask16 m, float alpha, float beta) {
  __m512 v = _mm512_mul_ps(_mm512_set1_ps(alpha), acc);
  if (beta != 0.f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, c), v);
  _mm512_mask_storeu_ps(c, m, v);
}

// Grow-only per-thread buffer for a packed op(B) (kept between calls: no allocation per step).
std::vector<float>& packed_b() {
  thread_local std::vector<float> buf;
  return buf;
}

inline float widen(float x) { return x; }
inline float widen(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// op(B) (K x N) into K rows of `width` floats (bf16 widened), columns past N zero.
template <typename Src>
void pack_b_rows(const GemmArgs<float>& g, int64_t width, float* dst) {
  const Src* B = static_cast<const Src*>(g.B.data);
  for (int64_t k = 0; k < g.K; ++k) {
    float* row = dst + k * width;
    for (int64_t j = 0; j < width; ++j)
      row[j] = j >= g.N ? 0.f : widen(g.trans_b ? B[j * g.ldb + k] : B[k * g.ldb + j]);
  }
}

void pack_b_rows(const GemmArgs<float>& g, int64_t width, float* dst) {
  if (g.B.dtype == DType::BF16) pack_b_rows<uint16_t>(g, width, dst);
  else pack_b_rows<float>(g, width, dst);
}

// ---- narrow N ----------------------------------------------------------------------------------
constexpr int kNarrowNRows = 8;

// Rows [i0, i0 + rows) of C (rows <= 8); bp holds op(B) as K rows of 16 * NV floats.
template <int NV>
SEALKIT_AVX512 void narrow_n_block(const GemmArgs<float>& g, const ARef& a, const float* bp, int64_t i0, int rows) {
  constexpr int MB = kNarrowNRows, W = 16 * NV;
  const float* ap[MB];
  // Rows past the edge repeat the last row (in bounds); their sums are never stored.
  for (int i = 0; i < MB; ++i) ap[i] = a.p + (i0 + std::min(i, rows - 1)) * a.rs;
  __m512 acc[MB][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  const int64_t cs = a.cs;
  for (int64_t k = 0; k < g.K; ++k) {
    __m512 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(bp + k * W + 16 * v);
    const int64_t off = k * cs;
#pragma GCC unroll 16
    for (int i = 0; i < MB; ++i) {
      const __m512 x = _mm512_set1_ps(ap[i][off]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(x, b[v], acc[i][v]);
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int v = 0; v < NV; ++v)
      store16(g.C + (i0 + i) * g.ldc + 16 * v, acc[i][v], mask16(g.N - 16 * v), g.alpha, g.beta);
}

template <int NV>
void narrow_n(const GemmArgs<float>& g, const ARef& a) {
  std::vector<float>& buf = packed_b();
  if (buf.size() < static_cast<size_t>(g.K * 16 * NV)) buf.resize(g.K * 16 * NV);
  pack_b_rows(g, 16 * NV, buf.data());
  const float* bp = buf.data();
  const int64_t blocks = (g.M + kNarrowNRows - 1) / kNarrowNRows;
  // ~16k multiply-adds per block row group keeps tiny calls on the caller's thread.
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.K));
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kNarrowNRows;
      narrow_n_block<NV>(g, a, bp, i0, static_cast<int>(std::min<int64_t>(kNarrowNRows, g.M - i0)));
    }
  });
}

#endif  // SEALKIT_X86

}  // namespace

bool gemm_lowrank(const GemmArgs<float>& g) {
#if SEALKIT_X86
  // bf16 B widens exactly, as the f32 kernels do, except under AVX512-BF16, where bf16 B multiplies
  // in bf16 (gemm.cc) and never comes here.
  const Isa isa = active_isa();
  const bool f32_math = g.B.dtype == DType::F32 || (g.B.dtype == DType::BF16 && isa == Isa::Avx512);
  if (!f32_math || (isa != Isa::Avx512 && isa != Isa::Avx512Bf16)) return false;
  // SEALKIT_LOWRANK=0 (read per call) sends these shapes to the packed GEMM, for benchmarks.
  if (const char* env = std::getenv("SEALKIT_LOWRANK"); env && std::strcmp(env, "0") == 0) return false;
  const ARef a{g.A, g.trans_a ? 1 : g.lda, g.trans_a ? g.lda : 1};
  if (g.N <= 16) narrow_n<1>(g, a);
  else if (g.N <= kLowRankMax) narrow_n<2>(g, a);
  else return false;
  return true;
#else
  (void)g;
  return false;
#endif
}

}  // namespace sealkit::cpu
