// CPU kernels of the decoder other than GEMM (see kernels.h for the contract).
//
// Every kernel is a template over T (float for the engine, double for the finite-difference
// reference). Parallel work is split so that each output element is written by one task, with its
// reductions in a fixed order: the bits never depend on the thread count.
//
// Precision choices in the float path:
//  - row reductions that are cheap next to their row (RMSNorm mean of squares and its backward dot,
//    softmax and cross-entropy exp sums, AdamW's scalars, sum_squares) accumulate in double;
//  - attention dot products (q.k, dout.v, dout.out) and the P.V / dq / dk / dv sums accumulate in
//    float, ordered and vectorised along head_dim or along a block of keys;
//  - exp over float rows uses a vectorised Cephes-style polynomial (<= 2 ulp) on AVX2/AVX-512 and
//    std::exp otherwise, so softmax results differ across ISAs in the last bits (never across
//    thread counts).
//
// The addon is compiled for baseline x86-64. The hot float loops are written once as always-inline
// templates and instantiated inside functions carrying AVX2 / AVX-512 target attributes, so GCC
// vectorises the same source for each ISA; active_isa() picks one per call.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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
#define SEALKIT_INLINE inline __attribute__((always_inline))

namespace sealkit::cpu {
namespace {

// Elementwise work below this many items per task is not worth waking the pool for.
constexpr int64_t kGrain = 16384;

template <typename T>
T weight_at(WeightView w, int64_t i) {
  if constexpr (std::is_same_v<T, double>) {
    return static_cast<const double*>(w.data)[i];
  } else {
    return w.dtype == DType::BF16 ? bf16_to_f32(static_cast<const uint16_t*>(w.data)[i])
                                  : static_cast<const float*>(w.data)[i];
  }
}

template <typename T>
void check_weight(WeightView w, const char* what) {
  const bool ok = std::is_same_v<T, double> ? w.dtype == DType::F64 : (w.dtype == DType::F32 || w.dtype == DType::BF16);
  if (!ok) throw std::invalid_argument(std::string(what) + ": unsupported weight dtype " + dtype_name(w.dtype));
}

// ---- vectorised exp -------------------------------------------------------------------------------
// exp_rows: out[i] = exp(x[i] - shift) * scale (when out is non-null) and returns
// sum_i exp(x[i] - shift) accumulated in double. out may alias x.
using ExpRowFn = double (*)(const float* x, float* out, int64_t n, float shift, float scale);

template <typename T>
double exp_row_scalar(const T* x, T* out, int64_t n, T shift, T scale) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T e = std::exp(x[i] - shift);
    sum += e;
    if (out) out[i] = e * scale;
  }
  return sum;
}

double exp_row_f32_scalar(const float* x, float* out, int64_t n, float shift, float scale) {
  return exp_row_scalar<float>(x, out, n, shift, scale);
}

#if SEALKIT_X86
// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 intrinsics
// (_mm512_undefined_ps) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k ln2 (ln2 split in two for accuracy), exp(r)
// by a degree-7 polynomial (Cephes expf coefficients). Inputs are clamped to the finite range; a
// NaN passes through the clamps (max/min return their second operand on NaN) and yields NaN.
constexpr float kExpHi = 88.3762626647949f, kExpLo = -88.3762626647949f;
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f, kP3 = 4.1665795894e-2f,
                kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

SEALKIT_AVX512 SEALKIT_INLINE __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(kExpHi), _mm512_max_ps(_mm512_set1_ps(kExpLo), x));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Lo), r);
  __m512 y = _mm512_set1_ps(kP0);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP1));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP2));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP3));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP4));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kP5));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

SEALKIT_AVX512 double exp_row_avx512(const float* x, float* out, int64_t n, float shift, float scale) {
  const __m512 vs = _mm512_set1_ps(shift), vscale = _mm512_set1_ps(scale);
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs)));
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    if (out) _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(e, vscale));
  }
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, _mm512_add_pd(s0, s1));
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

SEALKIT_AVX2 SEALKIT_INLINE __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(kExpHi), _mm256_max_ps(_mm256_set1_ps(kExpLo), x));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Lo), r);
  __m256 y = _mm256_set1_ps(kP0);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP1));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP2));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP3));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP4));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kP5));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

SEALKIT_AVX2 double exp_row_avx2(const float* x, float* out, int64_t n, float shift, float scale) {
  const __m256 vs = _mm256_set1_ps(shift), vscale = _mm256_set1_ps(scale);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (int64_t i = 0; i < n; i += 8) {
    const int left = static_cast<int>(std::min<int64_t>(8, n - i));
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane);
    const __m256 e = _mm256_and_ps(_mm256_castsi256_ps(m), exp256(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vs)));
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    if (out) _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(e, vscale));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(s0, s1));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}
#pragma GCC diagnostic pop
#endif

ExpRowFn exp_row_f32() {
#if SEALKIT_X86
  switch (active_isa()) {
    case Isa::Avx512:
    case Isa::Avx512Bf16: return exp_row_avx512;
    case Isa::Avx2: return exp_row_avx2;
    case Isa::Scalar: break;
  }
#endif
  return exp_row_f32_scalar;
}

// The exp-row routine for T: vectorised for float, std::exp for the double reference.
template <typename T>
struct ExpRow {
  ExpRowFn f32 = std::is_same_v<T, float> ? exp_row_f32() : nullptr;
  double operator()(const T* x, T* out, int64_t n, T shift, T scale) const {
    if constexpr (std::is_same_v<T, float>) return f32(x, out, n, shift, scale);
    else return exp_row_scalar<T>(x, out, n, shift, scale);
  }
};

// Runs body<Isa>() compiled for the active ISA when T is float (the double reference stays on
// baseline code). Each wrapper carries the target attribute; body is always-inline, so GCC
// vectorises its loops for that ISA.
#if SEALKIT_X86
#define SEALKIT_DISPATCH(T, CALL)                                                   \
  do {                                                                              \
    if constexpr (std::is_same_v<T, float>) {                                       \
      const Isa isa_ = active_isa();                                                \
      if (isa_ == Isa::Avx512 || isa_ == Isa::Avx512Bf16) {                        \
        [&]() SEALKIT_AVX512 { CALL; }();                                           \
        break;                                                                      \
      }                                                                             \
      if (isa_ == Isa::Avx2) {                                                      \
        [&]() SEALKIT_AVX2 { CALL; }();                                             \
        break;                                                                      \
      }                                                                             \
    }                                                                               \
    CALL;                                                                           \
  } while (0)
#else
#define SEALKIT_DISPATCH(T, CALL) CALL
#endif

}  // namespace

// ---- embedding -------------------------------------------------------------------------------------

template <typename T>
void embedding_forward(const int32_t* ids, int64_t n, WeightView table, int64_t dim, T* out) {
  check_weight<T>(table, "embedding_forward");
  parallel_for(n, std::max<int64_t>(1, kGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t base = static_cast<int64_t>(ids[i]) * dim;
      T* o = out + i * dim;
      if constexpr (std::is_same_v<T, float>) {
        if (table.dtype == DType::F32) {
          std::memcpy(o, static_cast<const float*>(table.data) + base, dim * sizeof(float));
          continue;
        }
      }
      for (int64_t j = 0; j < dim; ++j) o[j] = weight_at<T>(table, base + j);
    }
  });
}

// Split by columns, not tokens: every task walks all tokens in order over its columns, so repeated
// ids accumulate in token order whatever the thread count.
template <typename T>
void embedding_backward(const int32_t* ids, int64_t n, const T* dout, int64_t dim, T* dtable) {
  const int64_t col_grain = std::max<int64_t>(16, kGrain / std::max<int64_t>(n, 1));
  parallel_for(dim, col_grain, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; ++i) {
      T* d = dtable + static_cast<int64_t>(ids[i]) * dim;
      const T* g = dout + i * dim;
      for (int64_t j = c0; j < c1; ++j) d[j] += g[j];
    }
  });
}

// ---- RMSNorm -------------------------------------------------------------------------------------

template <typename T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, double eps) {
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * dim;
      double ss = 0;
      for (int64_t j = 0; j < dim; ++j) ss += static_cast<double>(xr[j]) * xr[j];
      const T rs = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
      rstd[r] = rs;
      T* yr = y + r * dim;
      // HF order: normalise in the compute type, then multiply by the weight.
      for (int64_t j = 0; j < dim; ++j) yr[j] = w[j] * (xr[j] * rs);
    }
  });
}

// y_j = x_j r w_j with r = (mean(x^2) + eps)^-1/2 and dr/dx_j = -r^3 x_j / dim, so
// dx_j = r w_j dy_j - x_j r^3 / dim * sum_k dy_k w_k x_k  and  dw_j = sum_rows dy_j x_j r.
template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw, int64_t rows,
                      int64_t dim) {
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * dim;
      const T* gr = dy + r * dim;
      double dot = 0;
      for (int64_t j = 0; j < dim; ++j) dot += static_cast<double>(gr[j]) * w[j] * xr[j];
      const double rs = rstd[r];
      const T a = static_cast<T>(rs), c = static_cast<T>(rs * rs * rs * dot / static_cast<double>(dim));
      T* dxr = dx + r * dim;
      for (int64_t j = 0; j < dim; ++j) dxr[j] += a * w[j] * gr[j] - c * xr[j];
    }
  });
  if (!dw) return;
  // dw: each task owns a column range and sums the rows in order (double accumulators).
  parallel_for(dim, std::max<int64_t>(16, kGrain / std::max<int64_t>(rows, 1)), [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(c1 - c0, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * dim;
      const T* gr = dy + r * dim;
      const double rs = rstd[r];
      for (int64_t j = c0; j < c1; ++j) acc[j - c0] += static_cast<double>(gr[j]) * xr[j] * rs;
    }
    for (int64_t j = c0; j < c1; ++j) dw[j] += static_cast<T>(acc[j - c0]);
  });
}

// ---- RoPE ------------------------------------------------------------------------------------------
// The angle is formed in T like HF (float32 freqs for the engine) and each row's cos/sin are
// computed once and shared by its heads. `inverse` rotates by -angle (the backward pass).
namespace {
template <typename T>
void rope_apply(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int32_t* positions,
                const float* inv_freq, bool inverse) {
  const int64_t half = head_dim / 2;
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(heads * head_dim, 1)), [&](int64_t b, int64_t e) {
    std::vector<T> cs(2 * half);
    for (int64_t r = b; r < e; ++r) {
      for (int64_t i = 0; i < half; ++i) {
        const T angle = static_cast<T>(positions[r]) * static_cast<T>(inv_freq[i]);
        cs[i] = std::cos(angle);
        cs[half + i] = inverse ? -std::sin(angle) : std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        T* a = x + r * row_stride + h * head_dim;
        T* bb = a + half;
        for (int64_t i = 0; i < half; ++i) {
          const T c = cs[i], s = cs[half + i], av = a[i], bv = bb[i];
          a[i] = av * c - bv * s;
          bb[i] = bv * c + av * s;
        }
      }
    }
  });
}
}  // namespace

template <typename T>
void rope_forward(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int32_t* positions,
                  const float* inv_freq) {
  rope_apply(x, rows, row_stride, heads, head_dim, positions, inv_freq, false);
}

// The rotation is orthogonal, so the gradient goes through its transpose: rotation by -angle.
template <typename T>
void rope_backward(T* dx, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                   const int32_t* positions, const float* inv_freq) {
  rope_apply(dx, rows, row_stride, heads, head_dim, positions, inv_freq, true);
}

// ---- attention -------------------------------------------------------------------------------------
// Work is cut into blocks of kQBlock queries of one head. For a block the scaled scores against
// all visible keys go to a per-thread scratch row (at most seq_len long), the softmax runs per row,
// and the weighted sums follow. Scores are computed kKBlock keys at a time against a transposed copy
// of those keys, so the inner loop runs along keys with no horizontal reduction.
namespace {

constexpr int64_t kQBlock = 32;
constexpr int64_t kKBlock = 16;

template <typename T>
struct AttnScratch {
  std::vector<T> s, dp, yt, acc;
  void fit(int64_t ld, int64_t head_dim) {
    if (s.size() < static_cast<size_t>(kQBlock * ld)) {
      s.resize(kQBlock * ld);
      dp.resize(kQBlock * ld);
    }
    if (yt.size() < static_cast<size_t>(kKBlock * head_dim)) yt.resize(kKBlock * head_dim);
    if (acc.size() < static_cast<size_t>(head_dim)) acc.resize(head_dim);
  }
};

template <typename T>
AttnScratch<T>& attn_scratch() {
  thread_local AttnScratch<T> s;
  return s;
}

// R[t - t0][j] = scale * X_t . Y_j for queries t in [t0, t1) and keys j <= t (the rest of each
// kKBlock chunk is also written, never read). X_t = X + t*xs, Y_j = Y + j*ys, D values each.
template <typename T>
SEALKIT_INLINE void causal_products(const T* X, int64_t xs, const T* Y, int64_t ys, int64_t D, int64_t t0, int64_t t1,
                                    T scale, T* R, int64_t ldr, T* yt) {
  for (int64_t j0 = 0; j0 < t1; j0 += kKBlock) {
    const int64_t jn = std::min(kKBlock, t1 - j0);
    for (int64_t jj = 0; jj < kKBlock; ++jj) {
      const T* y = Y + (j0 + jj) * ys;
      for (int64_t d = 0; d < D; ++d) yt[d * kKBlock + jj] = jj < jn ? y[d] : T(0);
    }
    for (int64_t t = std::max(t0, j0); t < t1; ++t) {
      const T* x = X + t * xs;
      T acc[kKBlock] = {};
      for (int64_t d = 0; d < D; ++d) {
        const T xv = x[d];
        for (int64_t jj = 0; jj < kKBlock; ++jj) acc[jj] += xv * yt[d * kKBlock + jj];
      }
      T* r = R + (t - t0) * ldr + j0;
      for (int64_t jj = 0; jj < kKBlock; ++jj) r[jj] = acc[jj] * scale;
    }
  }
}

// acc[0..D) = sum_{j < n} w[j] * Y_j (j ascending).
template <typename T>
SEALKIT_INLINE void weighted_rows(const T* w, int64_t n, const T* Y, int64_t ys, int64_t D, T* acc) {
  for (int64_t d = 0; d < D; ++d) acc[d] = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T wj = w[j];
    const T* y = Y + j * ys;
    for (int64_t d = 0; d < D; ++d) acc[d] += wj * y[d];
  }
}

struct AttnUnit {
  int64_t seq, head, t0;  // forward: one query block of one head
};

template <typename T>
SEALKIT_INLINE void attention_forward_block(const AttentionShape& s, const T* q, const T* k, const T* v, T* out,
                                            T* lse, const AttnUnit& u, const ExpRow<T>& exp_row) {
  const int64_t D = s.head_dim, start = s.seq_start[u.seq], L = s.seq_len[u.seq];
  const int64_t kvh = u.head / (s.heads / s.kv_heads), t0 = u.t0, t1 = std::min(L, t0 + kQBlock);
  const int64_t ld = (t1 + kKBlock - 1) / kKBlock * kKBlock, out_stride = s.heads * D;
  AttnScratch<T>& sc = attn_scratch<T>();
  sc.fit(ld, D);
  const T* Q = q + start * s.q_stride + u.head * D;
  const T* K = k + start * s.kv_stride + kvh * D;
  const T* V = v + start * s.kv_stride + kvh * D;
  causal_products(Q, s.q_stride, K, s.kv_stride, D, t0, t1, static_cast<T>(s.scale), sc.s.data(), ld, sc.yt.data());
  for (int64_t t = t0; t < t1; ++t) {
    T* row = sc.s.data() + (t - t0) * ld;
    const int64_t n = t + 1;
    T m = row[0];
    for (int64_t j = 1; j < n; ++j) m = std::max(m, row[j]);
    const double sum = exp_row(row, row, n, m, T(1));
    lse[(start + t) * s.heads + u.head] = static_cast<T>(static_cast<double>(m) + std::log(sum));
    weighted_rows(row, n, V, s.kv_stride, D, sc.acc.data());
    const T inv = static_cast<T>(1.0 / sum);
    T* o = out + (start + t) * out_stride + u.head * D;
    for (int64_t d = 0; d < D; ++d) o[d] = sc.acc[d] * inv;
  }
}

// Backward for one (sequence, kv head): every query head of the group, all query blocks. With
// P = exp(S - lse), dP = dout V^T, dS = scale * P * (dP - rowsum(dout * out)):
// dq = dS K, dk = dS^T Q, dv = P^T dout. dk/dv rows are owned by this unit alone.
template <typename T>
SEALKIT_INLINE void attention_backward_unit(const AttentionShape& s, const T* q, const T* k, const T* v, const T* out,
                                            const T* lse, const T* dout, T* dq, T* dk, T* dv, int64_t seq,
                                            int64_t kvh, const ExpRow<T>& exp_row) {
  const int64_t D = s.head_dim, start = s.seq_start[seq], L = s.seq_len[seq], group = s.heads / s.kv_heads;
  const int64_t out_stride = s.heads * D;
  const T scale = static_cast<T>(s.scale);
  AttnScratch<T>& sc = attn_scratch<T>();
  const T* K = k + start * s.kv_stride + kvh * D;
  const T* V = v + start * s.kv_stride + kvh * D;
  T* dK = dk + start * s.kv_stride + kvh * D;
  T* dV = dv + start * s.kv_stride + kvh * D;
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < D; ++d) dK[j * s.kv_stride + d] = dV[j * s.kv_stride + d] = 0;

  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const T* Q = q + start * s.q_stride + h * D;
    const T* dO = dout + start * out_stride + h * D;
    const T* O = out + start * out_stride + h * D;
    T* dQ = dq + start * s.q_stride + h * D;
    for (int64_t t0 = 0; t0 < L; t0 += kQBlock) {
      const int64_t t1 = std::min(L, t0 + kQBlock), ld = (t1 + kKBlock - 1) / kKBlock * kKBlock;
      sc.fit(ld, D);
      T* P = sc.s.data();
      T* dS = sc.dp.data();
      causal_products(Q, s.q_stride, K, s.kv_stride, D, t0, t1, scale, P, ld, sc.yt.data());
      causal_products(dO, out_stride, V, s.kv_stride, D, t0, t1, T(1), dS, ld, sc.yt.data());
      for (int64_t t = t0; t < t1; ++t) {
        T* p = P + (t - t0) * ld;
        T* ds = dS + (t - t0) * ld;
        const int64_t n = t + 1;
        exp_row(p, p, n, lse[(start + t) * s.heads + h], T(1));
        T delta = 0;
        const T* o = O + t * out_stride;
        const T* g = dO + t * out_stride;
        for (int64_t d = 0; d < D; ++d) delta += g[d] * o[d];
        for (int64_t j = 0; j < n; ++j) ds[j] = scale * p[j] * (ds[j] - delta);
        weighted_rows(ds, n, K, s.kv_stride, D, dQ + t * s.q_stride);
      }
      for (int64_t j = 0; j < t1; ++j) {
        T* dk_row = dK + j * s.kv_stride;
        T* dv_row = dV + j * s.kv_stride;
        for (int64_t t = std::max(t0, j); t < t1; ++t) {
          const T ds = dS[(t - t0) * ld + j], p = P[(t - t0) * ld + j];
          const T* qt = Q + t * s.q_stride;
          const T* gt = dO + t * out_stride;
          for (int64_t d = 0; d < D; ++d) {
            dk_row[d] += ds * qt[d];
            dv_row[d] += p * gt[d];
          }
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* out, T* lse) {
  std::vector<AttnUnit> units;
  for (int64_t i = 0; i < s.n_seqs; ++i)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t t0 = 0; t0 < s.seq_len[i]; t0 += kQBlock) units.push_back({i, h, t0});
  const ExpRow<T> exp_row;
  global_pool().run(static_cast<int64_t>(units.size()), [&](int64_t t, int) {
    SEALKIT_DISPATCH(T, attention_forward_block<T>(s, q, k, v, out, lse, units[t], exp_row));
  });
}

template <typename T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const T* dout, T* dq, T* dk, T* dv) {
  const ExpRow<T> exp_row;
  global_pool().run(s.n_seqs * s.kv_heads, [&](int64_t t, int) {
    const int64_t seq = t / s.kv_heads, kvh = t % s.kv_heads;
    SEALKIT_DISPATCH(T, attention_backward_unit<T>(s, q, k, v, out, lse, dout, dq, dk, dv, seq, kvh, exp_row));
  });
}

// ---- SwiGLU ----------------------------------------------------------------------------------------
// silu(g) = g * sigmoid(g), sigmoid(g) = 1 / (1 + exp(-g)); exp(-g) overflowing to inf gives the
// right limit 0. d silu/dg = sig * (1 + g * (1 - sig)).
namespace {
constexpr int64_t kChunk = 256;

// sig[i] = sigmoid(g[i]) for a chunk, through the vectorised exp in the float path.
template <typename T>
void sigmoid_chunk(const T* g, int64_t n, T* sig, const ExpRow<T>& exp_row) {
  for (int64_t i = 0; i < n; ++i) sig[i] = -g[i];
  exp_row(sig, sig, n, T(0), T(1));
  for (int64_t i = 0; i < n; ++i) sig[i] = T(1) / (T(1) + sig[i]);
}
}  // namespace

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {
  const ExpRow<T> exp_row;
  parallel_for((n + kChunk - 1) / kChunk, std::max<int64_t>(1, kGrain / kChunk), [&](int64_t b, int64_t e) {
    T sig[kChunk];
    for (int64_t c = b; c < e; ++c) {
      const int64_t i0 = c * kChunk, m = std::min(kChunk, n - i0);
      sigmoid_chunk(gate + i0, m, sig, exp_row);
      for (int64_t i = 0; i < m; ++i) out[i0 + i] = gate[i0 + i] * sig[i] * up[i0 + i];
    }
  });
}

template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* dout, T* dgate, T* dup, int64_t n) {
  const ExpRow<T> exp_row;
  parallel_for((n + kChunk - 1) / kChunk, std::max<int64_t>(1, kGrain / kChunk), [&](int64_t b, int64_t e) {
    T sig[kChunk];
    for (int64_t c = b; c < e; ++c) {
      const int64_t i0 = c * kChunk, m = std::min(kChunk, n - i0);
      sigmoid_chunk(gate + i0, m, sig, exp_row);
      for (int64_t i = 0; i < m; ++i) {
        const T g = gate[i0 + i], s = sig[i], d = dout[i0 + i];
        dup[i0 + i] = d * g * s;
        dgate[i0 + i] = d * up[i0 + i] * s * (T(1) + g * (T(1) - s));
      }
    }
  });
}

// ---- cross-entropy ---------------------------------------------------------------------------------
// One read of the row for max and sum: blocks of kCeBlock logits, the running sum (double) rescaled
// whenever a block raises the max. Then the gradient softmax * scale - onehot * scale is written
// over the logits with p = exp(x - max) / sum (better conditioned than exp(x - lse) in float).
template <typename T>
void cross_entropy(T* logits, const int32_t* targets, int64_t rows, int64_t vocab, T* loss, const T* grad_scale) {
  constexpr int64_t kCeBlock = 2048;
  const ExpRow<T> exp_row;
  parallel_for(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* x = logits + r * vocab;
      const int32_t target = targets[r];
      const T gs = grad_scale ? grad_scale[r] : T(0);
      if (target < 0) {
        loss[r] = 0;
        if (grad_scale) std::fill(x, x + vocab, T(0));
        continue;
      }
      T m = -std::numeric_limits<T>::infinity();
      double sum = 0;
      for (int64_t i0 = 0; i0 < vocab; i0 += kCeBlock) {
        const int64_t n = std::min(kCeBlock, vocab - i0);
        T bm = x[i0];
        for (int64_t i = 1; i < n; ++i) bm = std::max(bm, x[i0 + i]);
        if (bm > m) {
          sum *= std::exp(static_cast<double>(m) - static_cast<double>(bm));
          m = bm;
        }
        sum += exp_row(x + i0, nullptr, n, m, T(1));
      }
      loss[r] = static_cast<T>(static_cast<double>(m) + std::log(sum) - static_cast<double>(x[target]));
      if (!grad_scale) continue;
      if (gs == T(0)) {
        std::fill(x, x + vocab, T(0));
        continue;
      }
      exp_row(x, x, vocab, m, static_cast<T>(static_cast<double>(gs) / sum));
      x[target] -= gs;
    }
  });
}

// ---- optimiser and reductions ----------------------------------------------------------------------

template <typename T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWParams& p) {
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  const T decay = static_cast<T>(1.0 - p.lr * p.weight_decay), b1 = static_cast<T>(p.beta1),
          b2 = static_cast<T>(p.beta2), c1 = static_cast<T>(1.0 - p.beta1), c2 = static_cast<T>(1.0 - p.beta2);
  const T step_size = static_cast<T>(p.lr / bc1), bc2_sqrt = static_cast<T>(std::sqrt(bc2)),
          eps = static_cast<T>(p.eps);
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T g = grad[i];
      m[i] = b1 * m[i] + c1 * g;
      v[i] = b2 * v[i] + c2 * g * g;
      const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      param[i] = param[i] * decay - step_size * m[i] / denom;
    }
  });
}

// Fixed tree: chunks of kSumChunk elements, each summed into 8 double lanes then folded in a fixed
// order; the chunk sums are added in chunk order.
template <typename T>
double sum_squares(const T* x, int64_t n) {
  constexpr int64_t kSumChunk = 8192;
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<double> part(chunks, 0.0);
  parallel_for(chunks, 8, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const int64_t i0 = c * kSumChunk, i1 = std::min(n, i0 + kSumChunk);
      double lane[8] = {};
      int64_t i = i0;
      for (; i + 8 <= i1; i += 8)
        for (int l = 0; l < 8; ++l) lane[l] += static_cast<double>(x[i + l]) * x[i + l];
      for (; i < i1; ++i) lane[0] += static_cast<double>(x[i]) * x[i];
      part[c] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
  });
  double total = 0;
  for (double p : part) total += p;
  return total;
}

template <typename T>
void scale_inplace(T* x, int64_t n, T s) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] *= s;
  });
}

template <typename T>
void axpy(T* y, const T* x, int64_t n, T a) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] += a * x[i];
  });
}

#define SEALKIT_INSTANTIATE(T)                                                                                   \
  template void embedding_forward<T>(const int32_t*, int64_t, WeightView, int64_t, T*);                         \
  template void embedding_backward<T>(const int32_t*, int64_t, const T*, int64_t, T*);                          \
  template void rmsnorm_forward<T>(const T*, const T*, T*, T*, int64_t, int64_t, double);                       \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, int64_t);          \
  template void rope_forward<T>(T*, int64_t, int64_t, int64_t, int64_t, const int32_t*, const float*);          \
  template void rope_backward<T>(T*, int64_t, int64_t, int64_t, int64_t, const int32_t*, const float*);         \
  template void attention_forward<T>(const AttentionShape&, const T*, const T*, const T*, T*, T*);              \
  template void attention_backward<T>(const AttentionShape&, const T*, const T*, const T*, const T*, const T*,  \
                                      const T*, T*, T*, T*);                                                    \
  template void swiglu_forward<T>(const T*, const T*, T*, int64_t);                                             \
  template void swiglu_backward<T>(const T*, const T*, const T*, T*, T*, int64_t);                              \
  template void cross_entropy<T>(T*, const int32_t*, int64_t, int64_t, T*, const T*);                           \
  template void adamw_step<T>(T*, const T*, T*, T*, int64_t, const AdamWParams&);                               \
  template double sum_squares<T>(const T*, int64_t);                                                            \
  template void scale_inplace<T>(T*, int64_t, T);                                                               \
  template void axpy<T>(T*, const T*, int64_t, T);

SEALKIT_INSTANTIATE(float)
SEALKIT_INSTANTIATE(double)

}  // namespace sealkit::cpu
