// LoRA's side-path GEMMs, where one side of the result is the adapter's rank r (T tokens, model
// widths in/out). The packed GEMM (gemm.cc) pads such a product to its 14 x 32 tile (half or more of
// every multiply-add wasted at r <= 16) and packs the large operand first.
//
// Narrow N (xa = x A^T in the forward pass, dxa = s dy B in the backward pass): op(B) is packed
// once (K x 16 or K x 32 floats, in L1/L2), and 8 rows of C at a time, each one or two zmm,
// accumulate broadcasts of op(A)'s elements, read where they lie, against the packed rows.
// Measured alone at SmolLM2-135M's shapes (T 1024, r 16; `npx tsx bench/gemm.ts --only-lowrank`):
// 1.4-2.7x the packed path's speed on 1 and 2 threads.
//
// Weight gradients over the tokens (dA = dxa^T x, r x in; dB = s dy^T xa, out x r): sums of outer
// products of two token-major matrices, computed as r x width tiles of 8 x 32 (dB as its
// transpose, xa^T dy): per token one row slice of the wide operand and 8 broadcasts of the narrow
// one, nothing packed, no column walked. Against the paths they replace (the packed GEMM for dA,
// narrow N walking dy down its columns for dB), at T 1024, r 16 (`bench/gemm.ts --only-lowrank`,
// 2 threads): dB 2.7x at out 576 and 1.9x at 1536, dA 1.9x at in 576 and 1.4x at 1536. Inside a
// training step, where both operands come from memory, the gain is much smaller. There each thread
// walks the tokens in blocks (128 for these figures, 64 now: kOuterTokens) over all its tiles (same
// bits: every chain continues from its stored partial sum), so the wide operand's rows are read
// close together rather than one column slice at a time: these calls took 10-20 % less time per
// step (2 alternating pairs each, Intel Xeon: SmolLM2-135M 159 -> 144 ms, tiny preset 3.9-4.2 ->
// 3.3-3.4 ms), still 2-3x their time on warm operands, as the wide operand (the layer's input,
// megabytes) comes from memory. Asking for the next block's rows while computing this one took
// another 15 % off them (tiny preset, three alternating pairs of profiled runs: 4.4-4.8 -> 3.8-4.4
// ms per step; SmolLM2-135M 198 -> 161 ms). Inside a tile, each token's rows are also asked for 32
// tokens ahead into L1 (kOuterPrefetchTokens: SmolLM2-135M 103-104 -> 80.5-81.2 ms per step), as the
// narrow GEMMs ask for their rows of op(A) 64 floats ahead (kNarrowPrefetchFloats: 65.5-66.6 ->
// 58.1-59.8 ms).
// Tried and dropped: tasks over chunks of tokens instead of columns (each chunk's rows back to back
// in memory, partial sums added in chunk order): level in steps, a quarter slower on warm operands.
//
// Projections that read one input (q, k, v; gate, up) run their adapters' xa and dA as one pass
// over that input (gemm_lowrank_group, through gemm_group): their op(B)s packed side by side, one
// vector of columns each, for xa; every part's row blocks per column slice of the input for dA.
// Profiled, that took the low-rank GEMMs from 5.67-6.0 to 5.23-5.36 ms per tiny step and from
// 206-212 to 182-189 ms per SmolLM2-135M step (alternating builds).
//
// Not here: y += s xa B^T and dx += dxa A (depth r). A register-blocked kernel for each ran at par
// or slower alone (they only stream C in and out: memory-bound either way); they ride on the base
// GEMM's tiles while those are in L1 (gemm_with_update in gemm.cc).
//
// Determinism: every element of C is produced by one task, as one k-ascending sum, then
// C = alpha * sum + beta * C (C not read when beta == 0). The path depends only on the shape, the
// orientation and the ISA, never on the thread count.
#include "gemm_lowrank.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/env_switch.h"
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

// Grow-only per-thread scratch, kept between calls (no allocation per step): narrow N's packed op(B),
// or the outer sums' running tile sums (one call uses it at a time).
std::vector<float>& scratch_floats() {
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

// GCC 12 flags the undefined pass-through operand inside its own shuffle and widening intrinsics
// as (maybe-)uninitialized; the warning is spurious (as in gemm.cc).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// op(B) (K x N, N <= 16 * groups) into K rows of 16 * groups floats, `ld` apart from dst (bf16
// widened exactly), columns past N zero. Rows of op(B) that lie in memory (dxa's B, out x r) are
// masked vector copies; op(B) = A^T (xa's A, stored r x in) goes through 16 x 16 register
// transposes. Element by element (a scalar loop testing the orientation per element), the packing
// took about as long as the product at SEAL's batch-1 sizes: `bench/ab.ts` on warm operands,
// 2 threads, 64 rows 1.23-1.66x faster with this packer (xa and dxa at widths 128-1536), 1024 rows
// 1.37-1.50x; in a profiled SmolLM2-135M 1 x 64 LoRA step these calls went from 12.8-14.2 to
// 9.1-10.2 ms (three alternating pairs of builds). Same values, so the same bits.
template <typename Src>
SEALKIT_AVX512 void pack_b_rows(const GemmArgs<float>& g, float* dst, int64_t ld, int64_t groups) {
  const Src* B = static_cast<const Src*>(g.B.data);
  const int64_t K = g.K, N = g.N;
  if (!g.trans_b) {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t v = 0; v < groups; ++v)
        _mm512_storeu_ps(dst + k * ld + 16 * v, load16_masked(B + k * g.ldb + 16 * v, mask16(N - 16 * v)));
    return;
  }
  for (int64_t v = 0; v < groups; ++v) {
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
      const __mmask16 km = mask16(K - k0);
      __m512 r[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        const int64_t col = 16 * v + j;
        r[j] = col < N ? load16_masked(B + col * g.ldb + k0, km) : _mm512_setzero_ps();
      }
      transpose16(r);  // r[kk] now holds op(B) row k0 + kk, columns 16v .. 16v + 15
      const int64_t kn = std::min<int64_t>(16, K - k0);
#pragma GCC unroll 16
      for (int kk = 0; kk < 16; ++kk) {
        if (kk >= kn) break;
        _mm512_storeu_ps(dst + (k0 + kk) * ld + 16 * v, r[kk]);
      }
    }
  }
}
#pragma GCC diagnostic pop

void pack_b_rows(const GemmArgs<float>& g, float* dst, int64_t ld, int64_t groups) {
  if (g.B.dtype == DType::BF16) pack_b_rows<uint16_t>(g, dst, ld, groups);
  else pack_b_rows<float>(g, dst, ld, groups);
}

// ---- narrow N ----------------------------------------------------------------------------------
constexpr int kNarrowNRows = 8;
// How far ahead (floats of each row) a block asks for its rows of op(A). In training steps these
// rows come from L2, L3 or the other core; profiled SmolLM2-135M steps (alternating): the narrow
// GEMMs 65.5-71.6 -> 58.1-64.8 ms per step at 64 or 128 ahead (256: level), tiny steps 2.10-2.27 ->
// 1.99-2.20 ms.
constexpr int64_t kNarrowPrefetchFloats = 64;
// Vectors of packed op(B) columns one block accumulates: 3 x 8 accumulators, 3 operands and a
// broadcast fit the 32 registers.
constexpr int kNarrowMaxVectors = 3;

// Where one 16-column vector of the packed op(B) lands: columns [0, n) of C rows ldc apart, through
// C = alpha * sum + beta * C. A single GEMM of N <= 32 is one or two of these (c, then c + 16); a
// group of GEMMs sharing op(A) (LoRA's xa for q, k, v) is one each.
struct NarrowOut {
  float* c;
  int64_t ldc, n;
  float alpha, beta;
};

// Rows [i0, i0 + rows) of every output (rows <= 8); bp holds op(B) as K rows of 16 * NV floats.
template <int NV>
SEALKIT_AVX512 void narrow_n_block(const ARef& a, int64_t K, const float* bp, const NarrowOut* out, int64_t i0,
                                   int rows) {
  constexpr int MB = kNarrowNRows, W = 16 * NV;
  const float* ap[MB];
  // Rows past the edge repeat the last row (in bounds); their sums are never stored.
  for (int i = 0; i < MB; ++i) ap[i] = a.p + (i0 + std::min(i, rows - 1)) * a.rs;
  __m512 acc[MB][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  const int64_t cs = a.cs;
  // Rows of op(A) contiguous in k (x, dy: tokens x width): each line of the 8 rows is asked for
  // kNarrowPrefetchFloats ahead, into L1, once per 16 k.
  const int64_t k_pf = cs == 1 ? K - kNarrowPrefetchFloats : 0;
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    if (k0 < k_pf) {
#pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) _mm_prefetch(reinterpret_cast<const char*>(ap[i] + k0 + kNarrowPrefetchFloats), _MM_HINT_T0);
    }
    const int64_t k1 = std::min(K, k0 + 16);
    for (int64_t k = k0; k < k1; ++k) {
      __m512 b[NV];
      for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(bp + k * W + 16 * v);
      const int64_t off = k * cs;
#pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) {
        const __m512 x = _mm512_set1_ps(ap[i][off]);
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(x, b[v], acc[i][v]);
      }
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int v = 0; v < NV; ++v) {
      const NarrowOut& o = out[v];
      store16(o.c + (i0 + i) * o.ldc, acc[i][v], mask16(o.n), o.alpha, o.beta);
    }
}

// All M rows, 8 at a time across the pool; op(A) is M x K.
template <int NV>
void narrow_n_rows(const ARef& a, int64_t M, int64_t K, const float* bp, const NarrowOut* out) {
  const int64_t blocks = (M + kNarrowNRows - 1) / kNarrowNRows;
  // At least 1024 / K row groups per task (~130k multiply-adds at r 16): smaller calls stay on the
  // caller's thread. At 4096 / K every such GEMM of a 64-token LoRA step (8 row groups) ran on one
  // thread; now those of depth 384 split (tiny 1 x 64 step 1.03-1.07x with the row kernels' grain
  // below, alternating runs; 512 / K, splitting depth 128 too, was no better).
  const int64_t grain = std::max<int64_t>(1, 1024 / std::max<int64_t>(1, K));
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kNarrowNRows;
      narrow_n_block<NV>(a, K, bp, out, i0, static_cast<int>(std::min<int64_t>(kNarrowNRows, M - i0)));
    }
  });
}

// Packed op(B) for one call: per-thread scratch of K rows of `width` floats.
float* narrow_scratch(int64_t K, int64_t width) {
  std::vector<float>& buf = scratch_floats();
  if (buf.size() < static_cast<size_t>(K * width)) buf.resize(K * width);
  return buf.data();
}

// Whether op(B) already lies as narrow_n's packing would lay it: K rows of 16 f32 columns, 16 floats
// apart (LoRA's B at rank 16, out x r, in dxa = s dy B), so the block reads it in place: SEAL's
// 16 x 20 inner-loop step 1.009x and 1.016x, a tiny 1 x 64 step 1.010x, 4 x 256 level
// (`seal bench train --ab-env`, AMD Zen 5 VM). The same floats, so the same bits.
bool packed_as_is(const GemmArgs<float>& g) {
  return !g.trans_b && g.B.dtype == DType::F32 && g.N == 16 && g.ldb == 16;
}

template <int NV>
void narrow_n(const GemmArgs<float>& g, const ARef& a) {
  const float* bp;
  if (NV == 1 && packed_as_is(g)) {
    bp = static_cast<const float*>(g.B.data);
  } else {
    float* packed = narrow_scratch(g.K, 16 * NV);
    pack_b_rows(g, packed, 16 * NV, NV);
    bp = packed;
  }
  NarrowOut out[NV];
  for (int v = 0; v < NV; ++v) out[v] = {g.C + 16 * v, g.ldc, g.N - 16 * v, g.alpha, g.beta};
  narrow_n_rows<NV>(a, g.M, g.K, bp, out);
}

// n GEMMs of N <= 16 on one op(A) (same M, K): each one's op(B) packed as one vector of columns side
// by side, then one pass over op(A). Per element the arithmetic of narrow_n<1>, so the same bits.
template <int NV>
void narrow_n_group(const GemmArgs<float>* gs, const ARef& a) {
  const int64_t K = gs[0].K;
  float* bp = narrow_scratch(K, 16 * NV);
  NarrowOut out[NV];
  for (int v = 0; v < NV; ++v) {
    pack_b_rows(gs[v], bp + 16 * v, 16 * NV, 1);
    out[v] = {gs[v].C, gs[v].ldc, gs[v].N, gs[v].alpha, gs[v].beta};
  }
  narrow_n_rows<NV>(a, gs[0].M, K, bp, out);
}

// ---- short sums of outer products --------------------------------------------------------------
// C = alpha * P + beta * C with P[r][v] = sum_k bc[k][r] * vec[k][v] (k ascending) for a short r
// (at most kLowRankMax) and long K: LoRA's weight gradients dA = dxa^T x (r x in) and, transposed,
// dB = dy^T xa (out x r = (xa^T dy)^T). Both operands are read row by row as they lie (tokens x
// width), so nothing is packed and no column is walked: each k loads one row slice of vec and
// broadcasts MB elements of bc's row. The result element (r, v) lands at c[r * c_r + v * c_v].
template <typename BcT, typename VecT>  // float, or uint16_t for a bf16 B (widened exactly)
struct OuterSum {
  const BcT* bc;
  int64_t ldbc;
  const VecT* vec;
  int64_t ldvec;
  int64_t R, V, K;
  float* c;
  int64_t c_r, c_v;
  float alpha, beta;
};

constexpr int kOuterRows = 8;

// GCC 12 flags the undefined pass-through operand inside its own widening intrinsics as
// (maybe-)uninitialized; the warning is spurious (as in gemm.cc).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// Tokens per block: each thread runs its tiles over one block of tokens before the next, so the
// rows of the wide operand it reads lie close together (a block's slices of them stay in L2 for
// the tiles that share them). A tile walking all the tokens alone strides down a whole column
// slice, a row (kilobytes) apart per token, which the hardware prefetchers follow poorly: in a
// training step, where that operand comes from memory, the calls ran at about a quarter of their
// in-cache speed (with the blocks, about two fifths; see the header for the figures). 64 against
// 128, with the next block's rows asked for one column tile at a time (profiled SmolLM2-135M steps,
// alternating): dB at out 1536 34.8-35.8 against 37.3-38.8 ms per step; 256 was slower (42.0-42.9);
// the tiny preset level.
constexpr int64_t kOuterTokens = 64;
// Inside a tile, each token's row slices of both operands are asked for this many tokens ahead,
// into L1. The rows lie a row of the wide operand apart (kilobytes), a stride the L1 prefetcher
// follows late, and in a training step the operands come from L2, L3 or the other core's cache.
// Profiled steps, alternating: the outer sums per SmolLM2-135M step 103-108 -> 76-86 ms, per tiny
// step 2.97-3.31 -> 2.61-2.65 ms (16 and 64 tokens ahead gave about the same for SmolLM2, less for
// the tiny preset); on warm operands (`bench/ab.ts`) level, 1.06-1.16x at out 1536.
constexpr int64_t kOuterPrefetchTokens = 32;

// One token's row slice of a column tile (its nv vectors of 16 inside the row), asked for in L1.
// A call of one token block (a 64-token sequence's dA or dB in SEAL's inner loop, chained on one
// thread: gemm_chains.cc) finds its operands cold: the wide one (the layer's saved input, the output
// gradient) and C (the gradient, where the last optimiser step left it). The tiles' own prefetch,
// kOuterPrefetchTokens rows ahead, left each column tile's first rows to wait on memory, and the
// tile's C was waited for at its end: those calls ran 2.2-3x slower than on the same operands in
// cache (rdtsc around each call in the tiny preset's 16-adapter step). So while a tile runs it asks,
// a row or a line per token, for every row of the column tile its task runs next (`lead_in`, from
// the first row block's tiles) and for the C of the tile that follows it (CLines); a task's first
// tile asks for its own first rows and C at the start (outer_sum). The calls then took 58 % of
// their time (all of them per step, rdtsc), and the 16-adapter LoRA step ran 1.075x faster
// (`seal bench train --adapters 16 --ab-env SEALKIT_OUTER_LEAD_IN=0`, 80 repeats, three runs of
// 0.929-0.930 without, AMD Zen 5; 1.057x with f32 weights; 1 x 64 level).
template <typename VecT>
SEALKIT_INLINE void lead_in_row(const VecT* row, int nv) {
  for (int v = 0; v < nv; ++v) _mm_prefetch(reinterpret_cast<const char*>(row + 16 * v), _MM_HINT_T0);
}

// The lines of C a tile stores (rows r0.. of the result's rows, columns v0..), asked for with
// intent to write: one 16-value vector of a row each where C is row-major (dA), one column's run of
// up to 8 rows each where it is transposed (dB, c_r == 1).
struct CLines {
  float* c = nullptr;
  int64_t c_r = 0, c_v = 0;
  int rows = 0, vectors = 0, cols = 0;
  int count() const { return c_r == 1 ? cols : rows * vectors; }
  void ask(int i) const {
    const float* p = c_r == 1 ? c + i * c_v : c + (i / vectors) * c_r + 16 * (i % vectors);
    prefetch_for_write(p);
  }
};
template <typename BcT, typename VecT>
CLines c_lines(const OuterSum<BcT, VecT>& o, int64_t r0, int64_t v0, int nv_max) {
  CLines l;
  l.c = o.c + r0 * o.c_r + v0 * o.c_v;
  l.c_r = o.c_r;
  l.c_v = o.c_v;
  l.rows = static_cast<int>(std::min<int64_t>(kOuterRows, o.R - r0));
  l.cols = static_cast<int>(std::min<int64_t>(16 * nv_max, o.V - v0));
  l.vectors = (l.cols + 15) / 16;
  return l;
}

// The tile's 8 x 16 NV sums over tokens [k0, k1): continued from `partial` (the tile's sums so
// far, MB x 16 NV floats) unless k0 == 0, and stored there unless k1 == K, where C gets them. Each
// accumulator continues its FMA chain from the stored value, so the blocks give the bits of one
// k-ascending chain over all tokens.
template <int NV, typename BcT, typename VecT>
SEALKIT_AVX512 void outer_sum_tile(const OuterSum<BcT, VecT>& o, int64_t r0, int64_t v0, int64_t k0, int64_t k1,
                                   float* partial, const VecT* lead_in = nullptr, int lead_nv = 0,
                                   const CLines* next_c = nullptr) {
  constexpr int MB = kOuterRows;
  const int rows = static_cast<int>(std::min<int64_t>(MB, o.R - r0));
  __mmask16 m[NV];
  for (int v = 0; v < NV; ++v) m[v] = mask16(o.V - v0 - 16 * v);
  // Rows past the edge repeat the last row (in bounds); their sums are never stored.
  int64_t ri[MB];
  for (int i = 0; i < MB; ++i) ri[i] = r0 + std::min(i, rows - 1);
  __m512 acc[MB][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = k0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(partial + (i * NV + v) * 16);
  const int64_t ldbc = o.ldbc, ldvec = o.ldvec;
  const BcT* bc = o.bc + k0 * ldbc;
  const VecT* vec = o.vec + k0 * ldvec + v0;
  // Rows kOuterPrefetchTokens ahead, into L1, while they lie within the operands.
  const int64_t k_pf = o.K - kOuterPrefetchTokens;
  // b_row[row_of(i)]: the narrow operand's value for tile row i. A whole tile reads b_row = bc + r0 at
  // constant offsets i; an edge tile goes through ri. With ri for every tile (as before), GCC kept
  // the eight indices in vector registers and moved each out every token: 8 extra instructions per
  // 16 FMAs. Warm operands (bench/ab.ts, 7 rounds, AMD Zen 5): TN 16x1536x1024, 1536x16x1024,
  // 384x16x1024, 16x128x1024, 576x16x1024 1.13-1.16x; LoRA steps (`seal bench --ab-env`, against a
  // temporary switch) tiny 1.006x (41 repeats), SmolLM2-135M 1.006x (11), 1 x 64 1.010x (61), 16
  // adapters level. The asm below stops GCC from turning each row's read back into its own
  // induction variable. Same arithmetic, same bits.
  auto tokens = [&](const BcT* b_row, auto row_of) SEALKIT_AVX512 {
    const VecT* v_row = vec;
    for (int64_t k = k0; k < k1; ++k, b_row += ldbc, v_row += ldvec) {
      if (k < k_pf) {
        const VecT* vp = v_row + kOuterPrefetchTokens * ldvec;
        for (int v = 0; v < NV; ++v)
          if (m[v]) _mm_prefetch(reinterpret_cast<const char*>(vp + 16 * v), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(b_row + kOuterPrefetchTokens * ldbc + row_of(0)), _MM_HINT_T0);
      }
      if (lead_in) lead_in_row(lead_in + (k - k0) * ldvec, lead_nv);
      if (next_c && k - k0 < next_c->count()) next_c->ask(static_cast<int>(k - k0));
      __m512 b[NV];
      for (int v = 0; v < NV; ++v) b[v] = load16_masked(v_row + 16 * v, m[v]);
      const BcT* bp = b_row;
      asm("" : "+r"(bp));
#pragma GCC unroll 16
      for (int i = 0; i < MB; ++i) {
        const __m512 x = _mm512_set1_ps(widen(bp[row_of(i)]));
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(x, b[v], acc[i][v]);
      }
    }
  };
  if (rows == MB) tokens(bc + r0, [](int i) { return int64_t{i}; });
  else tokens(bc, [&ri](int i) { return ri[i]; });
  if (k1 < o.K) {
#pragma GCC unroll 16
    for (int i = 0; i < MB; ++i)
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(partial + (i * NV + v) * 16, acc[i][v]);
    return;
  }
  // Rows and lanes indexed by constants only: a runtime index into acc would make GCC keep the
  // whole array in memory, storing every accumulator in every k step.
  if (o.c_v == 1) {
#pragma GCC unroll 16
    for (int i = 0; i < MB; ++i) {
      if (i >= rows) break;
      for (int v = 0; v < NV; ++v) store16(o.c + (r0 + i) * o.c_r + v0 + 16 * v, acc[i][v], m[v], o.alpha, o.beta);
    }
    return;
  }
  // Transposed result (dB = (xa^T dy)^T: c_r == 1): each vector of 16 columns, with 8 zero rows
  // below the tile's 8, is transposed in registers, so column j's sums land in the first lanes of one
  // register and store as one masked vector run of the result's row, with store16's arithmetic (the
  // bits of the element-by-element stores this replaced, which took a third of a 64-token dB's time:
  // TN 384x16x64 ran at 151 GFLOP/s on one Zen 5 thread against 230 for dA's 16x384x64).
  if (o.c_r == 1) {
    const __mmask16 row_mask = mask16(rows);
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      __m512 t[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) t[i] = i < MB ? acc[i][v] : _mm512_setzero_ps();
      transpose16(t);
      const int cols = static_cast<int>(std::min<int64_t>(16, o.V - v0 - 16 * v));
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        if (j >= cols) break;
        store16(o.c + r0 + (v0 + 16 * v + j) * o.c_v, t[j], row_mask, o.alpha, o.beta);
      }
    }
    return;
  }
  // Any other layout: element by element, with store16's arithmetic (alpha * sum, then fma).
  alignas(64) float sums[MB][16 * NV];
#pragma GCC unroll 16
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(sums[i] + 16 * v, acc[i][v]);
  const int cols = static_cast<int>(std::min<int64_t>(16 * NV, o.V - v0));
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) {
      float* c = o.c + (r0 + i) * o.c_r + (v0 + j) * o.c_v;
      const float s = o.alpha * sums[i][j];
      *c = o.beta != 0.f ? std::fma(o.beta, *c, s) : s;
    }
  }
}

// Asks for rows [k0, k1), columns [v0, v1) of a token-major operand in L2, line by line in address
// order.
template <typename VecT>
void prefetch_rows(const VecT* vec, int64_t ld, int64_t k0, int64_t k1, int64_t v0, int64_t v1) {
  for (int64_t k = k0; k < k1; ++k) {
    const char* p = reinterpret_cast<const char*>(vec + k * ld + v0);
    const char* end = reinterpret_cast<const char*>(vec + k * ld + v1);
    for (p = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63)); p < end; p += 64)
      _mm_prefetch(p, _MM_HINT_T1);
  }
}

// SEALKIT_OUTER_LEAD_IN=0 (read per call) turns the lead-in prefetches off, for benchmarks.
bool lead_in_on() { return switch_on("SEALKIT_OUTER_LEAD_IN"); }

// Runs `n` outer sums that share their wide operand (vec, ldvec, V and K; LoRA's dA for q, k, v
// read the same layer input) as one pass: each task walks its column slice of vec once per token
// block for every part's row blocks, instead of once per call. Every tile's chain is the one a
// call alone would run, so the bits are those of the calls one by one.
template <typename BcT, typename VecT>
void outer_sum(const OuterSum<BcT, VecT>* parts, int n) {
  constexpr int NV = 2, W = 16 * NV;
  const OuterSum<BcT, VecT>& o = parts[0];
  const int64_t col_blocks = (o.V + W - 1) / W;
  int64_t row_blocks = 0;  // over all parts
  for (int p = 0; p < n; ++p) row_blocks += (parts[p].R + kOuterRows - 1) / kOuterRows;
  float* partials = nullptr;
  if (o.K > kOuterTokens) {
    std::vector<float>& buf = scratch_floats();
    const size_t need = static_cast<size_t>(row_blocks * col_blocks * kOuterRows * W);
    if (buf.size() < need) buf.resize(need);
    partials = buf.data();
  }
  // ~64k multiply-adds per task at least: a small call stays on the caller's thread. A task owns
  // whole column tiles (every row block reads the same slice of the wide operand, so they run back
  // to back) and walks the tokens block by block.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, o.K * row_blocks * kOuterRows * W));
  // Each task asks for the next token block's rows of a column tile just before running this
  // block's tiles of that column: its tiles walk the wide operand down a column slice, one row
  // (kilobytes) apart per token, which the hardware prefetchers follow poorly when the operand comes
  // from memory (in training steps these calls took 15-20 % less time with it; on warm operands it
  // is level). Asked per column tile rather than for the task's whole slice at the block's start
  // (up to 384 KB at once for dB at out 1536), they took another 6-9 % off in SmolLM2-135M steps
  // (two alternating pairs: dB at out 1536 43.8-44.3 -> 39.9-40.3 ms per step; level at the tiny
  // preset, whose operands sit in L2).
  // The lead-ins (see lead_in_row) for calls of one token block; over several, prefetch_rows has
  // asked for each block's rows a block ahead.
  const bool lead_ins = o.K <= kOuterTokens && lead_in_on();
  // Vectors of column tile cb inside the rows.
  auto tile_vectors = [&](int64_t cb) { return static_cast<int>((std::min<int64_t>(W, o.V - cb * W) + 15) / 16); };
  parallel_for(col_blocks, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t k0 = 0; k0 < o.K; k0 += kOuterTokens) {
      const int64_t k1 = std::min(o.K, k0 + kOuterTokens);
      const int64_t lead = std::min(k1, k0 + kOuterPrefetchTokens);
      if (lead_ins && k0 == 0) {  // the task's first column tile: nothing ran before it to ask for its rows
        for (int64_t k = 0; k < lead; ++k) lead_in_row(o.vec + k * o.ldvec + c0 * W, tile_vectors(c0));
        for (int p = 0; p < n; ++p)
          for (int64_t k = 0; k < lead; ++k) _mm_prefetch(reinterpret_cast<const char*>(parts[p].bc + k * parts[p].ldbc), _MM_HINT_T0);
        const CLines first = c_lines(parts[0], 0, c0 * W, NV);
        for (int i = 0; i < first.count(); ++i) first.ask(i);
      }
      for (int64_t cb = c0; cb < c1; ++cb) {
        if (k1 < o.K)
          prefetch_rows(o.vec, o.ldvec, k1, std::min(o.K, k1 + kOuterTokens), cb * W, std::min(o.V, (cb + 1) * W));
        // The first rows of the task's next column tile in this token block (a next token block's
        // rows were asked for by prefetch_rows, into L2).
        const VecT* next = lead_ins && cb + 1 < c1 ? o.vec + k0 * o.ldvec + (cb + 1) * W : nullptr;
        int64_t rb_all = 0;
        for (int p = 0; p < n; ++p) {
          const OuterSum<BcT, VecT>& part = parts[p];
          for (int64_t r0 = 0; r0 < part.R; r0 += kOuterRows, ++rb_all) {
            float* partial = partials ? partials + (cb * row_blocks + rb_all) * kOuterRows * W : nullptr;
            // The C of the tile that runs next in this task: the next row block, the next part's
            // first, or the next column tile's first.
            CLines next_c;
            if (lead_ins) {
              if (r0 + kOuterRows < part.R) next_c = c_lines(part, r0 + kOuterRows, cb * W, NV);
              else if (p + 1 < n) next_c = c_lines(parts[p + 1], 0, cb * W, NV);
              else if (cb + 1 < c1) next_c = c_lines(parts[0], 0, (cb + 1) * W, NV);
            }
            outer_sum_tile<NV>(part, r0, cb * W, k0, k1, partial, rb_all == 0 ? next : nullptr,
                               next ? tile_vectors(cb + 1) : 0, next_c.c ? &next_c : nullptr);
          }
        }
      }
    }
  });
}

#pragma GCC diagnostic pop

#endif  // SEALKIT_X86

}  // namespace

#if SEALKIT_X86
namespace {

// f32 arithmetic (bf16 B widens exactly, as the f32 kernels do, except under AVX512-BF16, where bf16
// B multiplies in bf16 in gemm.cc and never comes here) under AVX-512, and the switch on.
bool lowrank_allowed(const GemmArgs<float>& g, Isa isa) {
  const bool f32_math = g.B.dtype == DType::F32 || (g.B.dtype == DType::BF16 && isa == Isa::Avx512);
  // SEALKIT_LOWRANK=0 (read per call) sends these shapes to the packed GEMM, for benchmarks.
  return f32_math && has_avx512(isa) && switch_on("SEALKIT_LOWRANK");
}

// op(A) = A^T and op(B) = B, both stored tokens x width: a weight gradient over the tokens.
bool weight_gradient(const GemmArgs<float>& g) {
  return g.trans_a && !g.trans_b && std::min(g.M, g.N) <= kLowRankMax;
}

// Most outer sums one pass runs together (q, k, v are three).
constexpr int kOuterMaxParts = 4;

// dA = alpha dxa^T x + beta dA (g: A = dxa stored tokens x r, B = x stored tokens x in) as an outer sum.
template <typename B_t>
OuterSum<float, B_t> weight_gradient_da(const GemmArgs<float>& g, const B_t* B) {
  return {g.A, g.lda, B, g.ldb, g.M, g.N, g.K, g.C, g.ldc, 1, g.alpha, g.beta};
}

}  // namespace
#endif

bool gemm_lowrank_runs(const GemmArgs<float>& g) {
#if SEALKIT_X86
  return lowrank_allowed(g, active_isa()) && (weight_gradient(g) || g.N <= kLowRankMax);
#else
  (void)g;
  return false;
#endif
}

bool gemm_lowrank(const GemmArgs<float>& g) {
#if SEALKIT_X86
  if (!gemm_lowrank_runs(g)) return false;
  if (weight_gradient(g)) {
    auto run = [&](const auto* B) {
      using B_t = std::remove_const_t<std::remove_pointer_t<decltype(B)>>;
      if (g.M <= g.N) {  // dA
        const OuterSum<float, B_t> o = weight_gradient_da(g, B);
        outer_sum(&o, 1);
      } else {  // dB, as (xa^T dy)^T
        const OuterSum<B_t, float> o{B, g.ldb, g.A, g.lda, g.N, g.M, g.K, g.C, 1, g.ldc, g.alpha, g.beta};
        outer_sum(&o, 1);
      }
    };
    if (g.B.dtype == DType::BF16) run(static_cast<const uint16_t*>(g.B.data));
    else run(static_cast<const float*>(g.B.data));
    return true;
  }
  const ARef a{g.A, g.trans_a ? 1 : g.lda, g.trans_a ? g.lda : 1};
  if (g.N <= 16) narrow_n<1>(g, a);
  else narrow_n<2>(g, a);
  return true;
#else
  (void)g;
  return false;
#endif
}

bool gemm_lowrank_group(const GemmArgs<float>* gs, int n) {
#if SEALKIT_X86
  if (n < 2) return false;
  const Isa isa = active_isa();
  const GemmArgs<float>& g0 = gs[0];
  bool outer = n <= kOuterMaxParts, narrow = n <= kNarrowMaxVectors;
  for (int i = 0; i < n; ++i) {
    const GemmArgs<float>& g = gs[i];
    if (g.M <= 0 || g.N <= 0 || g.K <= 0 || g.alpha == 0.f || !lowrank_allowed(g, isa)) return false;
    // dA = dxa^T x of projections reading one input: the same wide operand (B) in every call.
    outer = outer && weight_gradient(g) && g.M <= g.N && g.B.data == g0.B.data && g.B.dtype == g0.B.dtype &&
            g.ldb == g0.ldb && g.N == g0.N && g.K == g0.K;
    // xa = x A^T of projections reading one input: the same op(A), one vector of columns each.
    narrow = narrow && !weight_gradient(g) && g.N <= 16 && g.A == g0.A && g.lda == g0.lda &&
             g.trans_a == g0.trans_a && g.M == g0.M && g.K == g0.K;
  }
  if (outer) {
    auto run = [&](const auto* B) {
      using B_t = std::remove_const_t<std::remove_pointer_t<decltype(B)>>;
      OuterSum<float, B_t> parts[kOuterMaxParts];
      for (int i = 0; i < n; ++i) parts[i] = weight_gradient_da(gs[i], B);
      outer_sum(parts, n);
    };
    if (g0.B.dtype == DType::BF16) run(static_cast<const uint16_t*>(g0.B.data));
    else run(static_cast<const float*>(g0.B.data));
    return true;
  }
  if (narrow) {
    const ARef a{g0.A, g0.trans_a ? 1 : g0.lda, g0.trans_a ? g0.lda : 1};
    if (n == 2) narrow_n_group<2>(gs, a);
    else narrow_n_group<3>(gs, a);
    return true;
  }
  return false;
#else
  (void)gs;
  (void)n;
  return false;
#endif
}

}  // namespace sealkit::cpu
