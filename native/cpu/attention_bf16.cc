// Attention with bf16 products (see attention_bf16.h for the contract and its roundings).
//
// vdpbf16ps multiplies 32-bit lanes that each hold a pair of bf16 values and adds both products to
// one f32 lane, so every product here is "rows of pairs times a matrix of pairs": a row's pair p
// (two adjacent values along the reduced dimension, one 32-bit broadcast) against row p of a matrix
// whose 32-bit lanes hold the matching pairs of each output column. All six products of the
// forward and backward passes are that one tile (pair_tile) over operands laid out for it:
//   scores (Q K^T, dout V^T): Q's rows as pairs along head_dim; keys transposed, d-pairs by key lanes
//   P V, dS K:               probability rows as pairs along keys; V / K rows interleaved by key pairs
//   dS^T Q, P^T dout:         dS / P transposed (pairs along queries); Q / dout interleaved by query pairs
// The work split and the causal bookkeeping follow the f32 kernels in kernels.cc: forward units of
// 32 queries of one head, backward units of one (sequence, kv head) in blocks of 32 queries.
#include "attention_bf16.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../core/env_switch.h"
#include "../core/threadpool.h"
#include "simd.h"

namespace sealkit::cpu {

#if SEALKIT_X86
// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 intrinsics
// (the reductions' extracts) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
namespace {

constexpr int64_t kQBlock = 32;          // forward: queries per unit
// Backward: queries per block. 32 against the f32 kernel's 64 (bench/ab.ts, two builds, 15 rounds,
// AMD Zen 5): SmolLM2's shape 1.041x, the tiny preset's 1.060x, one 64-token sequence 1.035x.
constexpr int64_t kQBlockBackward = 32;
constexpr int64_t kKeyTile = 32;         // keys per score tile: two vectors of 16 lanes
constexpr int kScoreRows = 8;            // score tile: 8 rows x 2 vectors = 16 accumulators

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Row i of a block's probabilities, exp(S[i][j] - shift[i]) for keys j < n0 + i, as bf16 pairs in
// pb (ld / 2 lanes a row, zero past the row's own key up to ld), and the sum of the unrounded exps in
// sums[i]. One pass with the bits of the three it replaced (exp_rows_shifted into S, a zero fill past
// each key, rows_to_pairs), the f32 probabilities never stored: the forward op 1.04x (SmolLM2's
// heads of 64) and 1.06x (the tiny preset's of 32; bench/ab.ts ATTN shapes, 11 rounds, Zen 5).
SEALKIT_BF16 void probabilities_to_pairs(const float* S, int64_t ld, int64_t rows, int64_t n0, const float* shift,
                                         uint32_t* pb, double* sums) {
  for (int64_t i = 0; i < rows; ++i) {
    uint32_t* out = pb + i * (ld / 2);
    const int64_t n = n0 + i;
    sums[i] = exp_row_sum512(S + i * ld, n, shift[i], [out](int64_t c, __m512 e, __mmask16) SEALKIT_BF16 {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c / 2), (__m256i)_mm512_cvtneps_pbh(e));
    });
    for (int64_t c = round_up(n, 16); c < ld; c += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c / 2), _mm256_setzero_si256());
  }
}

// ---- operands in the layouts vdpbf16ps reads ----------------------------------------------------
// Pairs of bf16 are stored as uint32_t (one lane); stores go through intrinsics, which may alias.

// out[r][0, n_pad / 2) = pairs of bf16(x[r][0, n)), zero past n; rows r in [0, rows); n_pad a
// multiple of 16.
SEALKIT_BF16 void rows_to_pairs(const float* x, int64_t ldx, int64_t rows, int64_t n, int64_t n_pad, uint32_t* out,
                                int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n_pad; c += 16) {
      const __m512 v = _mm512_maskz_loadu_ps(mask16(n - c), x + r * ldx + c);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * ldo + c / 2), (__m256i)_mm512_cvtneps_pbh(v));
    }
}

// out[p][j] = (bf16 Y[j][2p], bf16 Y[j][2p+1]) for p in [0, D / 2), j in [0, L_pad) (zero for
// j >= L): head_dim pairs by key lanes, ldo lanes apart. L_pad a multiple of 16, D of 16.
SEALKIT_BF16 void pairs_by_key(const float* Y, int64_t ys, int64_t L, int64_t L_pad, int64_t D, uint32_t* out,
                               int64_t ldo) {
  for (int64_t j0 = 0; j0 < L_pad; j0 += 16)
    for (int64_t d0 = 0; d0 < D; d0 += 32) {
      const __mmask16 lo = mask16(D - d0), hi = mask16(D - d0 - 16);
      __m512 r[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        const float* y = Y + (j0 + j) * ys + d0;
        r[j] = j0 + j < L ? _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, y + 16),
                                                                             _mm512_maskz_loadu_ps(lo, y)))
                          : _mm512_setzero_ps();
      }
      transpose16(r);  // r[p]: pair d0 / 2 + p of the 16 keys
      const int64_t pairs = std::min<int64_t>(16, (D - d0) / 2);
      for (int64_t p = 0; p < pairs; ++p)
        _mm512_storeu_ps(reinterpret_cast<float*>(out + (d0 / 2 + p) * ldo + j0), r[p]);
    }
}

// out[p][d] = (bf16 Y[2p][d], bf16 Y[2p+1][d]) for p in [0, pairs), d in [0, D) (rows >= L read as
// zero): rows interleaved by pairs, D lanes per pair row. D a multiple of 16.
SEALKIT_BF16 void rows_interleaved(const float* Y, int64_t ys, int64_t L, int64_t pairs, int64_t D, uint32_t* out) {
  // vcvtne2ps2bf16 puts row 2p's 16 values below row 2p+1's; this vpermw index interleaves them.
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i idx = _mm512_or_si512(lane, _mm512_slli_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(16)), 16));
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t a = 2 * p, b = 2 * p + 1;
    for (int64_t d = 0; d < D; d += 16) {
      const __m512 ya = a < L ? _mm512_loadu_ps(Y + a * ys + d) : _mm512_setzero_ps();
      const __m512 yb = b < L ? _mm512_loadu_ps(Y + b * ys + d) : _mm512_setzero_ps();
      const __m512i two = (__m512i)_mm512_cvtne2ps_pbh(yb, ya);
      _mm512_storeu_si512(out + p * D + d, _mm512_permutexvar_epi16(idx, two));
    }
  }
}

// out[j][q / 2] = (bf16 S[q][j], bf16 S[q+1][j]) for j in [0, keys), q in [0, q_pad) (zero for
// rows q >= rows): a score block transposed, pairs along queries, ldo lanes apart. keys and q_pad
// multiples of 16, S at least `keys` wide.
SEALKIT_BF16 void transposed_pairs(const float* S, int64_t ld, int64_t rows, int64_t keys, int64_t q_pad,
                                   uint32_t* out, int64_t ldo) {
  for (int64_t q0 = 0; q0 < q_pad; q0 += 16)
    for (int64_t j0 = 0; j0 < keys; j0 += 16) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) r[i] = q0 + i < rows ? _mm512_loadu_ps(S + (q0 + i) * ld + j0) : _mm512_setzero_ps();
      transpose16(r);  // r[j]: key j0 + j's 16 queries
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (j0 + j) * ldo + q0 / 2),
                            (__m256i)_mm512_cvtneps_pbh(r[j]));
    }
}

// ---- the one product tile --------------------------------------------------------------------------

enum class Epilogue { kScale, kRowScale, kAdd };

// For NR rows r and NV vectors v: acc = sum_{p < np} w[r * ldw + p] (a pair, broadcast) . y[p * ldy
// + 16 v ...] (16 lanes of pairs), p ascending; then out[r * ldo + 16 v ...] = acc * scale
// (kScale), = acc * row_scale[r] (kRowScale) or += acc (kAdd).
template <int NR, int NV, Epilogue E>
SEALKIT_BF16 SEALKIT_INLINE void pair_tile(const uint32_t* w, int64_t ldw, const uint32_t* y, int64_t ldy, int64_t np,
                                           float* out, int64_t ldo, float scale, const float* row_scale) {
  __m512 acc[NR][NV];
#pragma GCC unroll 32
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < np; ++p) {
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(y + p * ldy + v * 16);
#pragma GCC unroll 32
    for (int r = 0; r < NR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(w[r * ldw + p]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* o = out + r * ldo + v * 16;
      if constexpr (E == Epilogue::kScale) _mm512_storeu_ps(o, _mm512_mul_ps(acc[r][v], _mm512_set1_ps(scale)));
      if constexpr (E == Epilogue::kRowScale)
        _mm512_storeu_ps(o, _mm512_mul_ps(acc[r][v], _mm512_set1_ps(row_scale[r])));
      if constexpr (E == Epilogue::kAdd) _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc[r][v]));
    }
}

// S[t - t0][j] = scale * x_t . keys_j for rows t in [t0, t1) (xb: their pairs, P apart) and the
// 32-key chunks up to each 8-row tile's last row (kt: pairs_by_key, ldk lanes apart). Entries past a
// row's own key are computed and never used.
SEALKIT_BF16 void scores(const uint32_t* xb, int64_t P, const uint32_t* kt, int64_t ldk, int64_t t0, int64_t t1,
                         float scale, float* S, int64_t ld) {
  int64_t t = t0;
  for (; t + kScoreRows <= t1; t += kScoreRows)
    for (int64_t c = 0; c < t + kScoreRows; c += kKeyTile)
      pair_tile<kScoreRows, 2, Epilogue::kScale>(xb + (t - t0) * P, P, kt + c, ldk, P, S + (t - t0) * ld + c, ld, scale,
                                                 nullptr);
  for (; t < t1; ++t)
    for (int64_t c = 0; c <= t; c += kKeyTile)
      pair_tile<1, 2, Epilogue::kScale>(xb + (t - t0) * P, P, kt + c, ldk, P, S + (t - t0) * ld + c, ld, scale,
                                        nullptr);
}

// Rows per tile of the head_dim-wide products for NV vectors per row: 24 accumulators at 4.
template <int NV>
constexpr int kRowsFor = NV == 4 ? 4 : 8;

// out[t - t0][0, D) (=) sum_{j <= t} w[t - t0][j] y_j for rows t in [t0, t1): w holds probability
// (or dS) rows as key pairs, zero past each row's own key; y is rows_interleaved by key pairs. A
// tile runs to its last row's pair count. E: kRowScale (row_scale indexed by t - t0) or kScale.
template <int NV, Epilogue E>
SEALKIT_BF16 void causal_rows(const uint32_t* w, int64_t ldw, const uint32_t* y, int64_t D, int64_t t0, int64_t t1,
                              float* out, int64_t ldo, float scale, const float* row_scale) {
  constexpr int NR = kRowsFor<NV>;
  for (int64_t g = 0; g < D; g += 16 * NV) {
    int64_t t = t0;
    for (; t + NR <= t1; t += NR)
      pair_tile<NR, NV, E>(w + (t - t0) * ldw, ldw, y + g, D, (t + NR + 1) / 2, out + (t - t0) * ldo + g, ldo, scale,
                           row_scale ? row_scale + (t - t0) : nullptr);
    for (; t < t1; ++t)
      pair_tile<1, NV, E>(w + (t - t0) * ldw, ldw, y + g, D, (t + 2) / 2, out + (t - t0) * ldo + g, ldo, scale,
                          row_scale ? row_scale + (t - t0) : nullptr);
  }
}

// acc[j][0, D) += sum_{t in [t0, t1)} wT[j][t - t0] y_t for keys j in [0, t1): wT is a block's dS or
// P transposed (pairs along its queries, zero where t < j), y the block's rows interleaved by query
// pairs. A key tile starts at the pair holding its first key's query.
template <int NV>
SEALKIT_BF16 void causal_cols(const uint32_t* wT, int64_t ldw, const uint32_t* y, int64_t D, int64_t t0, int64_t t1,
                              float* acc) {
  constexpr int NR = kRowsFor<NV>;
  const int64_t pairs = (t1 - t0 + 1) / 2;
  auto first_pair = [&](int64_t j) { return std::max<int64_t>(0, j - t0) / 2; };
  for (int64_t g = 0; g < D; g += 16 * NV) {
    int64_t j = 0;
    for (; j + NR <= t1; j += NR) {
      const int64_t p0 = first_pair(j);
      pair_tile<NR, NV, Epilogue::kAdd>(wT + j * ldw + p0, ldw, y + p0 * D + g, D, pairs - p0, acc + j * D + g, D, 1.f,
                                         nullptr);
    }
    for (; j < t1; ++j) {
      const int64_t p0 = first_pair(j);
      pair_tile<1, NV, Epilogue::kAdd>(wT + j * ldw + p0, ldw, y + p0 * D + g, D, pairs - p0, acc + j * D + g, D, 1.f,
                                        nullptr);
    }
  }
}

// Dispatch on the vectors per head_dim group: 4 where head_dim is a multiple of 64, else 2 or 1.
template <typename F>
SEALKIT_BF16 SEALKIT_INLINE void with_nv(int64_t D, F&& f) {
  if (D % 64 == 0) f(std::integral_constant<int, 4>{});
  else if (D % 32 == 0) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, 1>{});
}

SEALKIT_BF16 float row_max(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(x[0]);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = mask16(n - i);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

// sum_d a[d] b[d] in 16 f32 lanes, folded in a fixed order.
SEALKIT_BF16 float dot16(const float* a, const float* b, int64_t D) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc);
  return _mm512_reduce_add_ps(acc);
}

// Asks for rows [t0, t1) (D floats each, `stride` apart) of a matrix in L2.
inline void ask_rows_l2(const float* x, int64_t stride, int64_t t0, int64_t t1, int64_t D) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t d = 0; d < D; d += 16) _mm_prefetch(reinterpret_cast<const char*>(x + t * stride + d), _MM_HINT_T1);
}

struct Scratch {
  std::vector<uint32_t> xb, yb, xi, yi, pb, pT, dsT, kt, vt, ki;
  std::vector<float> s, dp, dk, dv;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}
template <typename V>
auto* fit(V& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  return v.data();
}

// Where each (sequence, kv head)'s keys (pairs_by_key) and values (rows_interleaved) start in the
// forward pass's shared buffers: both take P lanes per padded key row.
struct KeyLayout {
  std::vector<int64_t> offset;  // per sequence, in padded key rows
  int64_t total = 0;
  explicit KeyLayout(const AttentionShape& s) : offset(static_cast<size_t>(s.n_seqs)) {
    for (int64_t i = 0; i < s.n_seqs; ++i) {
      offset[static_cast<size_t>(i)] = total;
      total += round_up(s.seq_len[i], kKeyTile);
    }
  }
  int64_t base(const AttentionShape& s, int64_t seq, int64_t kvh) const {
    const int64_t rows = offset[static_cast<size_t>(seq)] * s.kv_heads + kvh * round_up(s.seq_len[seq], kKeyTile);
    return rows * (s.head_dim / 2);
  }
};

SEALKIT_BF16 void forward_block(const AttentionShape& s, const float* q, const uint32_t* kt, const uint32_t* vi,
                                float* out, float* lse, int64_t seq, int64_t head, int64_t t0) {
  const int64_t D = s.head_dim, P = D / 2, start = s.seq_start[seq], L = s.seq_len[seq];
  const int64_t Lr = round_up(L, kKeyTile), t1 = std::min(L, t0 + kQBlock), rows = t1 - t0;
  const int64_t ld = round_up(t1, kKeyTile), out_stride = s.heads * D;
  Scratch& sc = scratch();
  uint32_t* xb = fit(sc.xb, kQBlock * P);
  float* S = fit(sc.s, kQBlock * ld);
  uint32_t* pb = fit(sc.pb, kQBlock * ld / 2);
  rows_to_pairs(q + (start + t0) * s.q_stride + head * D, s.q_stride, rows, D, D, xb, P);
  scores(xb, P, kt, Lr, t0, t1, static_cast<float>(s.scale), S, ld);
  float mx[kQBlock], inv[kQBlock];
  double sums[kQBlock];
  for (int64_t i = 0; i < rows; ++i) mx[i] = row_max(S + i * ld, t0 + i + 1);
  probabilities_to_pairs(S, ld, rows, t0 + 1, mx, pb, sums);
  for (int64_t i = 0; i < rows; ++i) {
    lse[(start + t0 + i) * s.heads + head] = static_cast<float>(static_cast<double>(mx[i]) + std::log(sums[i]));
    inv[i] = static_cast<float>(1.0 / sums[i]);
  }
  float* O = out + (start + t0) * out_stride + head * D;
  with_nv(D, [&](auto nv) SEALKIT_BF16 {
    causal_rows<decltype(nv)::value, Epilogue::kRowScale>(pb, ld / 2, vi, D, t0, t1, O, out_stride, 1.f, inv);
  });
}

// One (sequence, kv head): every query head of its group, in blocks of kQBlockBackward queries
// (heads, then query blocks, as the f32 kernel); dk and dv accumulate in f32 scratch and are written at the end.
SEALKIT_BF16 void backward_unit(const AttentionShape& s, const float* q, const float* k, const float* v,
                                const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv,
                                int64_t seq, int64_t kvh) {
  const int64_t D = s.head_dim, P = D / 2, start = s.seq_start[seq], L = s.seq_len[seq];
  const int64_t Lr = round_up(L, kKeyTile), group = s.heads / s.kv_heads, out_stride = s.heads * D;
  const float scale = static_cast<float>(s.scale);
  Scratch& sc = scratch();
  const float* K = k + start * s.kv_stride + kvh * D;
  const float* V = v + start * s.kv_stride + kvh * D;
  uint32_t* kt = fit(sc.kt, P * Lr);
  uint32_t* vt = fit(sc.vt, P * Lr);
  uint32_t* ki = fit(sc.ki, Lr / 2 * D);
  pairs_by_key(K, s.kv_stride, L, Lr, D, kt, Lr);
  pairs_by_key(V, s.kv_stride, L, Lr, D, vt, Lr);
  rows_interleaved(K, s.kv_stride, L, Lr / 2, D, ki);
  float* dK = fit(sc.dk, L * D);
  float* dV = fit(sc.dv, L * D);
  std::fill(dK, dK + L * D, 0.f);
  std::fill(dV, dV + L * D, 0.f);
  constexpr int64_t kPairsPad = kQBlockBackward / 2;  // transposed rows: a whole block's query pairs
  uint32_t* xb = fit(sc.xb, kQBlockBackward * P);
  uint32_t* yb = fit(sc.yb, kQBlockBackward * P);
  uint32_t* xi = fit(sc.xi, kPairsPad * D);
  uint32_t* yi = fit(sc.yi, kPairsPad * D);
  float* Pm = fit(sc.s, kQBlockBackward * Lr);
  float* dS = fit(sc.dp, kQBlockBackward * Lr);
  uint32_t* pb = fit(sc.pb, kQBlockBackward * Lr / 2);
  uint32_t* pT = fit(sc.pT, Lr * kPairsPad);
  uint32_t* dsT = fit(sc.dsT, Lr * kPairsPad);

  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const float* Q = q + start * s.q_stride + h * D;
    const float* dO = dout + start * out_stride + h * D;
    const float* O = out + start * out_stride + h * D;
    float* dQ = dq + start * s.q_stride + h * D;
    for (int64_t t0 = 0; t0 < L; t0 += kQBlockBackward) {
      const int64_t t1 = std::min(L, t0 + kQBlockBackward), rows = t1 - t0, ld = round_up(t1, kKeyTile);
      rows_to_pairs(Q + t0 * s.q_stride, s.q_stride, rows, D, D, xb, P);
      rows_to_pairs(dO + t0 * out_stride, out_stride, rows, D, D, yb, P);
      rows_interleaved(Q + t0 * s.q_stride, s.q_stride, rows, kPairsPad, D, xi);
      rows_interleaved(dO + t0 * out_stride, out_stride, rows, kPairsPad, D, yi);
      // The next block's rows of Q, dO and O (this head's, or the next head's first), asked for in
      // L2 while this block computes: each row is a few lines of a matrix kilobytes wide, which the
      // hardware prefetchers do not follow, and in a training step they come from memory. In-process
      // A/B (`seal bench train --ab-env`, AMD Zen 5): tiny preset 1.021x (41 repeats), its
      // attention_backward 1.92-1.99 -> 1.60-1.74 ms per step; SmolLM2-135M 1.003-1.009x (11-21
      // repeats), 51.5-53.2 -> 45.8-47.2 ms. Into L1 instead: 0.988x; dQ's rows asked for
      // ownership as well: level. The forward pass's next Q rows the same way: level.
      {
        int64_t nh = h, nt0 = t0 + kQBlockBackward;
        if (nt0 >= L) {
          nh = h + 1;
          nt0 = 0;
        }
        if (nh < (kvh + 1) * group) {
          const int64_t nt1 = std::min(L, nt0 + kQBlockBackward);
          ask_rows_l2(q + start * s.q_stride + nh * D, s.q_stride, nt0, nt1, D);
          ask_rows_l2(dout + start * out_stride + nh * D, out_stride, nt0, nt1, D);
          ask_rows_l2(out + start * out_stride + nh * D, out_stride, nt0, nt1, D);
        }
      }
      scores(xb, P, kt, Lr, t0, t1, scale, Pm, ld);
      scores(yb, P, vt, Lr, t0, t1, 1.f, dS, ld);
      float shift[kQBlockBackward];
      for (int64_t i = 0; i < rows; ++i) shift[i] = lse[(start + t0 + i) * s.heads + h];
      // P = exp(S - lse) (exp_rows_shifted's bits) and dS = scale P (dP - delta), both zero past the
      // row's own key, with dS also as bf16 pairs for dQ's product: one pass where there were three
      // (the backward op 1.03-1.04x, measured as the forward's above).
      const __m512 vscale = _mm512_set1_ps(scale);
      for (int64_t i = 0; i < rows; ++i) {
        float* p = Pm + i * ld;
        float* ds = dS + i * ld;
        uint32_t* dsb = pb + i * (ld / 2);
        const int64_t n = t0 + i + 1;
        const __m512 vs = _mm512_set1_ps(shift[i]);
        const __m512 delta = _mm512_set1_ps(dot16(dO + (t0 + i) * out_stride, O + (t0 + i) * out_stride, D));
        for (int64_t j = 0; j < ld; j += 16) {
          const __mmask16 m = mask16(n - j);
          const __m512 pj = m ? _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + j), vs)))
                              : _mm512_setzero_ps();
          const __m512 dsj = _mm512_maskz_mov_ps(
              m, _mm512_mul_ps(_mm512_mul_ps(vscale, pj), _mm512_sub_ps(_mm512_loadu_ps(ds + j), delta)));
          _mm512_storeu_ps(p + j, pj);
          _mm512_storeu_ps(ds + j, dsj);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dsb + j / 2), (__m256i)_mm512_cvtneps_pbh(dsj));
        }
      }
      transposed_pairs(dS, ld, rows, ld, kQBlockBackward, dsT, kPairsPad);
      transposed_pairs(Pm, ld, rows, ld, kQBlockBackward, pT, kPairsPad);
      with_nv(D, [&](auto nv) SEALKIT_BF16 {
        constexpr int NV = decltype(nv)::value;
        causal_rows<NV, Epilogue::kScale>(pb, ld / 2, ki, D, t0, t1, dQ + t0 * s.q_stride, s.q_stride, 1.f, nullptr);
        causal_cols<NV>(dsT, kPairsPad, xi, D, t0, t1, dK);
        causal_cols<NV>(pT, kPairsPad, yi, D, t0, t1, dV);
      });
    }
  }
  for (int64_t j = 0; j < L; ++j) {
    std::memcpy(dk + (start + j) * s.kv_stride + kvh * D, dK + j * D, D * sizeof(float));
    std::memcpy(dv + (start + j) * s.kv_stride + kvh * D, dV + j * D, D * sizeof(float));
  }
}

}  // namespace

namespace {
bool supported_at(Isa isa) { return isa == Isa::Avx512Bf16 && cpu_model().amd; }
}  // namespace

bool attention_bf16_supported() { return supported_at(active_isa()); }

bool attention_bf16_runs(const AttentionShape& s, Isa isa) {
  return s.bf16_products && supported_at(isa) && s.head_dim > 0 && s.head_dim % 16 == 0 &&
         switch_on("SEALKIT_ATTENTION_BF16");
}

void attention_bf16_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                            float* lse) {
  const KeyLayout layout(s);
  const int64_t P = s.head_dim / 2;
  thread_local std::vector<uint32_t> kt_buf, vi_buf;
  uint32_t* kt = fit(kt_buf, layout.total * s.kv_heads * P);
  uint32_t* vi = fit(vi_buf, layout.total * s.kv_heads * P);
  global_pool().run(s.n_seqs * s.kv_heads, [&](int64_t t, int) {
    const int64_t seq = t / s.kv_heads, kvh = t % s.kv_heads, L = s.seq_len[seq], Lr = round_up(L, kKeyTile);
    const int64_t at = s.seq_start[seq] * s.kv_stride + kvh * s.head_dim;
    pairs_by_key(k + at, s.kv_stride, L, Lr, s.head_dim, kt + layout.base(s, seq, kvh), Lr);
    rows_interleaved(v + at, s.kv_stride, L, Lr / 2, s.head_dim, vi + layout.base(s, seq, kvh));
  });
  const std::vector<AttentionUnit> units = attention_units(s, kQBlock);
  const int64_t group = s.heads / s.kv_heads;
  global_pool().run(static_cast<int64_t>(units.size()), [&](int64_t t, int) {
    const AttentionUnit& u = units[static_cast<size_t>(t)];
    const int64_t base = layout.base(s, u.seq, u.head / group);
    forward_block(s, q, kt + base, vi + base, out, lse, u.seq, u.head, u.t0);
  });
}

void attention_bf16_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                             const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  global_pool().run(s.n_seqs * s.kv_heads, [&](int64_t t, int) {
    backward_unit(s, q, k, v, out, lse, dout, dq, dk, dv, t / s.kv_heads, t % s.kv_heads);
  });
}

#pragma GCC diagnostic pop
#else
bool attention_bf16_supported() { return false; }
bool attention_bf16_runs(const AttentionShape&, Isa) { return false; }
void attention_bf16_forward(const AttentionShape&, const float*, const float*, const float*, float*, float*) {}
void attention_bf16_backward(const AttentionShape&, const float*, const float*, const float*, const float*,
                             const float*, const float*, float*, float*, float*) {}
#endif

}  // namespace sealkit::cpu
