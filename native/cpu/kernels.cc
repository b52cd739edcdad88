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
#include <string>
#include <type_traits>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/env_switch.h"
#include "../core/threadpool.h"
#include "attention_bf16.h"
#include "kernels.h"
#include "simd.h"

namespace sealkit::cpu {
namespace {

// Elementwise work below this many items per task is not worth waking the pool for.
constexpr int64_t kGrain = 16384;
// Row-wise kernels (RMSNorm, RoPE: a few memory passes per element) split at a quarter of that: a
// small LoRA step (SEAL's inner loop, 64 tokens x 128 values) ran each on one thread while the
// other waited (these four were ~0.15 ms of a ~1.5 ms step); with the pool's workers spinning between
// runs a second task costs about a microsecond.
constexpr int64_t kRowGrain = 4096;

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

// sum_i a[i] * b[i] (* c[i] when c is non-null) in double, over 8 lanes folded in a fixed order:
// independent lanes avoid one long chain of dependent adds. The lanes are one vector of 8 doubles
// (as an 8-element array GCC kept them in 8 scalar registers, so RMSNorm's row sums ran one double
// at a time); each lane's operations are the array version's, so the bits are too.
template <typename T>
SEALKIT_INLINE double dot_f64(const T* a, const T* b, const T* c, int64_t n) {
  typedef double V __attribute__((vector_size(8 * sizeof(double))));
  typedef T VT __attribute__((vector_size(8 * sizeof(T))));
  V lane = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    VT va, vb;
    std::memcpy(&va, a + i, sizeof va);
    std::memcpy(&vb, b + i, sizeof vb);
    V x = __builtin_convertvector(va, V) * __builtin_convertvector(vb, V);
    if (c) {
      VT vc;
      std::memcpy(&vc, c + i, sizeof vc);
      x *= __builtin_convertvector(vc, V);
    }
    lane += x;
  }
  for (; i < n; ++i) lane[0] += static_cast<double>(a[i]) * b[i] * (c ? static_cast<double>(c[i]) : 1.0);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// ---- vectorised exp -------------------------------------------------------------------------------
// An exp-row routine writes out[i] = exp(x[i] - shift) * scale (when out is non-null) and returns
// sum_i exp(x[i] - shift) accumulated in double. out may alias x.
using ExpRowFn = double (*)(const float* x, float* out, int64_t n, float shift, float scale);
// A block's rows at once (attention's softmax): rows r in [0, rows), ld apart, row r holding n0 + r
// values, each replaced by exp(x - shift[r]) with its sum (exp-row's) into sums[r] when sums is
// non-null. One call per block: a call per row left each short row's latency chain exposed.
using ExpRowsFn = void (*)(float* x, int64_t ld, int64_t rows, int64_t n0, const float* shift, double* sums);

// ExpRowsFn through an exp-row routine, a call per row.
template <typename T>
void exp_rows_by_row(T* x, int64_t ld, int64_t rows, int64_t n0, const T* shift, double* sums,
                     double (*row)(const T*, T*, int64_t, T, T)) {
  for (int64_t r = 0; r < rows; ++r) {
    const double sum = row(x + r * ld, x + r * ld, n0 + r, shift[r], T(1));
    if (sums) sums[r] = sum;
  }
}

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

void exp_rows_f32_scalar(float* x, int64_t ld, int64_t rows, int64_t n0, const float* shift, double* sums) {
  exp_rows_by_row<float>(x, ld, rows, n0, shift, sums, exp_row_scalar<float>);
}

#if SEALKIT_X86
// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 intrinsics
// (_mm512_undefined_ps) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// The body (simd.h's exp_row_sum512 storing each exp to out, times scale when kScaled),
// always-inline so that exp_rows_avx512 runs a block's rows without a call per row.
template <bool kScaled>
SEALKIT_AVX512 SEALKIT_INLINE double exp_row_avx512_body(const float* x, float* out, int64_t n, float shift,
                                                         float scale) {
  const __m512 vscale = _mm512_set1_ps(scale);
  return exp_row_sum512(x, n, shift, [&](int64_t i, __m512 e, __mmask16 m) SEALKIT_AVX512 {
    if (!out) return;
    if (kScaled) e = _mm512_mul_ps(e, vscale);
    if (m == 0xffff) _mm512_storeu_ps(out + i, e);  // whole vectors (a constant here once inlined)
    else _mm512_mask_storeu_ps(out + i, m, e);
  });
}

SEALKIT_AVX512 double exp_row_avx512(const float* x, float* out, int64_t n, float shift, float scale) {
  return exp_row_avx512_body<true>(x, out, n, shift, scale);
}

SEALKIT_AVX512 void exp_rows_avx512(float* x, int64_t ld, int64_t rows, int64_t n0, const float* shift, double* sums) {
  if (sums) {
    for (int64_t r = 0; r < rows; ++r) sums[r] = exp_row_avx512_body<false>(x + r * ld, x + r * ld, n0 + r, shift[r], 1.f);
    return;
  }
  // No sums wanted (the backward pass): the sums' arithmetic is dead here and compiled away.
  for (int64_t r = 0; r < rows; ++r) exp_row_avx512_body<false>(x + r * ld, x + r * ld, n0 + r, shift[r], 1.f);
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

void exp_rows_avx2(float* x, int64_t ld, int64_t rows, int64_t n0, const float* shift, double* sums) {
  exp_rows_by_row<float>(x, ld, rows, n0, shift, sums, exp_row_avx2);
}
#pragma GCC diagnostic pop
#endif

ExpRowsFn exp_rows_f32(Isa isa) {
#if SEALKIT_X86
  switch (isa) {
    case Isa::Avx512:
    case Isa::Avx512Bf16: return exp_rows_avx512;
    case Isa::Avx2: return exp_rows_avx2;
    case Isa::Scalar: break;
  }
#endif
  return exp_rows_f32_scalar;
}

ExpRowFn exp_row_f32(Isa isa) {
#if SEALKIT_X86
  switch (isa) {
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
  explicit ExpRow(Isa isa)
      : f32(std::is_same_v<T, float> ? exp_row_f32(isa) : nullptr),
        f32_rows(std::is_same_v<T, float> ? exp_rows_f32(isa) : nullptr) {}
  ExpRowFn f32;
  ExpRowsFn f32_rows;
  double operator()(const T* x, T* out, int64_t n, T shift, T scale) const {
    if constexpr (std::is_same_v<T, float>) return f32(x, out, n, shift, scale);
    else return exp_row_scalar<T>(x, out, n, shift, scale);
  }
  // See ExpRowsFn.
  void rows(T* x, int64_t ld, int64_t rows, int64_t n0, const T* shift, double* sums) const {
    if constexpr (std::is_same_v<T, float>) f32_rows(x, ld, rows, n0, shift, sums);
    else exp_rows_by_row<T>(x, ld, rows, n0, shift, sums, exp_row_scalar<T>);
  }
};

// Runs CALL compiled for `isa` when T is float (the double reference stays on baseline code):
// each branch is a lambda carrying the target attribute and CALL's callees are always-inline, so
// GCC vectorises their loops for that ISA. Inside CALL, kW is the ISA's vector width in elements
// of T (what the attention tiles use as their lane count).
#if SEALKIT_X86
#define SEALKIT_DISPATCH(T, isa, CALL)                                              \
  do {                                                                              \
    if constexpr (std::is_same_v<T, float>) {                                       \
      if (has_avx512(isa)) {                                                        \
        [&]() SEALKIT_AVX512 {                                                      \
          [[maybe_unused]] constexpr int kW = 64 / sizeof(T);                       \
          CALL;                                                                     \
        }();                                                                        \
        break;                                                                      \
      }                                                                             \
      if ((isa) == Isa::Avx2) {                                                     \
        [&]() SEALKIT_AVX2 {                                                        \
          [[maybe_unused]] constexpr int kW = 32 / sizeof(T);                       \
          CALL;                                                                     \
        }();                                                                        \
        break;                                                                      \
      }                                                                             \
    }                                                                               \
    [[maybe_unused]] constexpr int kW = 16 / sizeof(T);                             \
    CALL;                                                                           \
  } while (0)
#else
#define SEALKIT_DISPATCH(T, isa, CALL)                                              \
  do {                                                                              \
    [[maybe_unused]] constexpr int kW = 16 / sizeof(T);                             \
    CALL;                                                                           \
  } while (0)
#endif

// max(x[0..n)), n >= 1, kept in 16 independent lanes of one vector (a running scalar max is a
// serial chain; written as a 16-element array, GCC kept it in 16 scalar registers). NaNs are
// skipped here (only a NaN x[0] is kept); they still reach the caller's exp sums. The last partial
// vector is read again as the row's last 16 elements (a maximum does not mind seeing an element
// twice) and the lanes are folded as a tree: a scalar tail and a lane-by-lane fold were serial
// chains of up to 30 compares per row, as long as the vector loop on the attention rows' few hundred
// scores (tiny preset, 2 threads: row maxima 0.066 ms of a layer's 0.55 ms forward before this).
template <typename T>
SEALKIT_INLINE T row_max(const T* x, int64_t n) {
  constexpr int64_t W = 16;
  typedef T V __attribute__((vector_size(W * sizeof(T))));
  typedef T H __attribute__((vector_size(W / 2 * sizeof(T))));
  typedef T Q __attribute__((vector_size(W / 4 * sizeof(T))));
  if (n < W) {
    T m = x[0];
    for (int64_t i = 1; i < n; ++i) m = m < x[i] ? x[i] : m;
    return m;
  }
  V lane = x[0] - V{};  // x[0] in every lane (x - 0 is x, the sign of a zero included)
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    V v;
    std::memcpy(&v, x + i, sizeof v);
    lane = lane < v ? v : lane;
  }
  if (i < n) {
    V v;
    std::memcpy(&v, x + n - W, sizeof v);
    lane = lane < v ? v : lane;
  }
  H lo, hi;
  std::memcpy(&lo, &lane, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&lane) + sizeof lo, sizeof hi);
  const H h = lo < hi ? hi : lo;
  Q qlo, qhi;
  std::memcpy(&qlo, &h, sizeof qlo);
  std::memcpy(&qhi, reinterpret_cast<const char*>(&h) + sizeof qlo, sizeof qhi);
  const Q q = qlo < qhi ? qhi : qlo;
  const T a = q[0] < q[2] ? q[2] : q[0], b = q[1] < q[3] ? q[3] : q[1];
  return a < b ? b : a;
}

}  // namespace

double exp_shifted(const float* x, float* out, int64_t n, float shift, float scale) {
  return exp_row_f32(active_isa())(x, out, n, shift, scale);
}

void exp_rows_shifted(float* x, int64_t ld, int64_t rows, int64_t n0, const float* shift, double* sums) {
  exp_rows_f32(active_isa())(x, ld, rows, n0, shift, sums);
}

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
        // A bf16 row widens in one vectorised loop (element by element through weight_at, the
        // dtype test in the loop kept it scalar: ~0.17 ms of a tiny-preset step's 1,024 rows).
        const uint16_t* src = static_cast<const uint16_t*>(table.data) + base;
        for (int64_t j = 0; j < dim; ++j) o[j] = bf16_to_f32(src[j]);
        continue;
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

// The rows' loops are always-inline and run through SEALKIT_DISPATCH, so they vectorise at the
// active ISA's width; compiled for baseline x86-64 they ran at SSE width. In a tiny LoRA step the
// norms then took 17 % less time (1.38-1.59 -> 1.17-1.26 ms per step, three alternating pairs of
// profiled runs); they mostly wait on memory (activations written long before the backward pass).
template <typename T>
SEALKIT_INLINE T rms_scale(const T* xr, int64_t dim, double eps) {
  const double ss = dot_f64<T>(xr, xr, nullptr, dim);
  return static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
}

template <typename T>
SEALKIT_INLINE void rmsnorm_forward_rows(const T* x, const T* w, T* y, T* rstd, int64_t b, int64_t e, int64_t dim,
                                         double eps) {
  for (int64_t r = b; r < e; ++r) {
    const T* xr = x + r * dim;
    const T rs = rms_scale<T>(xr, dim, eps);
    rstd[r] = rs;
    T* yr = y + r * dim;
    // HF order: normalise in the compute type, then multiply by the weight.
    for (int64_t j = 0; j < dim; ++j) yr[j] = w[j] * (xr[j] * rs);
  }
}

template <typename T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, double eps) {
  const Isa isa = active_isa();
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    SEALKIT_DISPATCH(T, isa, (rmsnorm_forward_rows<T>(x, w, y, rstd, b, e, dim, eps)));
  });
}

template <typename T>
void residual_rmsnorm_forward(T* x, const T* r, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, double eps) {
  const Isa isa = active_isa();
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    // axpy's arithmetic (x += 1 * r: the sum rounded once, however it is compiled), then the norm.
    for (int64_t i = b * dim; i < e * dim; ++i) x[i] += T(1) * r[i];
    SEALKIT_DISPATCH(T, isa, (rmsnorm_forward_rows<T>(x, w, y, rstd, b, e, dim, eps)));
  });
}

namespace {
#if SEALKIT_X86
// One row of rmsnorm_forward_bf16, 32 values a step: y = w * (x * rs) as rmsnorm_forward_rows forms
// it (two rounded products), stored as bf16 by round_to_bf16's instruction; f32 y is never stored.
SEALKIT_BF16 void norm_row_bf16(const float* xr, const float* w, float rs, int64_t dim, uint16_t* y16) {
  const __m512 vrs = _mm512_set1_ps(rs);
  for (int64_t j = 0; j < dim; j += 32) {
    const __mmask16 m0 = mask16(dim - j), m1 = mask16(dim - j - 16);
    const __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, w + j), _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, xr + j), vrs));
    const __m512 hi =
        _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, w + j + 16), _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, xr + j + 16), vrs));
    _mm512_mask_storeu_epi16(y16 + j, mask32(dim - j), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
}
#endif

// Rows [b, e) of rmsnorm_forward_bf16: rstd as rmsnorm_forward_rows forms it, then the row in one
// pass (norm_row_bf16).
void rmsnorm_rows_bf16(const float* x, const float* w, uint16_t* y, float* rstd, int64_t b, int64_t e, int64_t dim,
                       double eps, Isa isa) {
#if SEALKIT_X86
  for (int64_t i = b; i < e; ++i) {
    float rs = 0;
    SEALKIT_DISPATCH(float, isa, (rs = rms_scale<float>(x + i * dim, dim, eps)));
    rstd[i] = rs;
    norm_row_bf16(x + i * dim, w, rs, dim, y + i * dim);
  }
#else
  (void)x, (void)w, (void)y, (void)rstd, (void)b, (void)e, (void)dim, (void)eps, (void)isa;
#endif
}

// The ISA the bf16-row norms need, checked once per call (not inside the pool's tasks).
Isa bf16_rows_isa() {
  const Isa isa = active_isa();
  if (isa != Isa::Avx512Bf16) throw std::runtime_error("rmsnorm_forward_bf16: needs AVX512-BF16");
  return isa;
}
}  // namespace

void rmsnorm_forward_bf16(const float* x, const float* w, uint16_t* y, float* rstd, int64_t rows, int64_t dim,
                          double eps) {
  const Isa isa = bf16_rows_isa();
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(dim, 1)),
               [&](int64_t b, int64_t e) { rmsnorm_rows_bf16(x, w, y, rstd, b, e, dim, eps, isa); });
}

void residual_rmsnorm_forward_bf16(float* x, const float* r, const float* w, uint16_t* y, float* rstd, int64_t rows,
                                   int64_t dim, double eps) {
  const Isa isa = bf16_rows_isa();
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b * dim; i < e * dim; ++i) x[i] += 1.f * r[i];  // residual_rmsnorm_forward's add
    rmsnorm_rows_bf16(x, w, y, rstd, b, e, dim, eps, isa);
  });
}

template <typename T>
SEALKIT_INLINE void rmsnorm_backward_rows(const T* x, const T* w, const T* rstd, const T* dy, T* dx, int64_t b,
                                          int64_t e, int64_t dim) {
  for (int64_t r = b; r < e; ++r) {
    const T* xr = x + r * dim;
    const T* gr = dy + r * dim;
    const double dot = dot_f64(gr, w, xr, dim);
    const double rs = rstd[r];
    const T a = static_cast<T>(rs), c = static_cast<T>(rs * rs * rs * dot / static_cast<double>(dim));
    T* dxr = dx + r * dim;
    for (int64_t j = 0; j < dim; ++j) dxr[j] += a * w[j] * gr[j] - c * xr[j];
  }
}

// y_j = x_j r w_j with r = (mean(x^2) + eps)^-1/2 and dr/dx_j = -r^3 x_j / dim, so
// dx_j = r w_j dy_j - x_j r^3 / dim * sum_k dy_k w_k x_k  and  dw_j = sum_rows dy_j x_j r.
template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw, int64_t rows,
                      int64_t dim) {
  const Isa isa = active_isa();
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    SEALKIT_DISPATCH(T, isa, (rmsnorm_backward_rows<T>(x, w, rstd, dy, dx, b, e, dim)));
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
// The angle is formed in T like HF (float32 freqs for the engine); `inverse` rotates by -angle (the
// backward pass). Every call of a step rotates the same positions (q and k of every layer, forward
// and backward), so the cos/sin table of the last positions is kept per calling thread and reused
// while the positions and frequencies are unchanged (compared element by element, a few KB).
namespace {
template <typename T>
struct RopeTable {
  std::vector<int32_t> positions;
  std::vector<float> inv_freq;
  std::vector<T> cs;  // per row: cos[0..half), sin[0..half)

  const T* get(const int32_t* pos, int64_t rows, const float* freq, int64_t half) {
    const bool same_sizes = static_cast<int64_t>(positions.size()) == rows && static_cast<int64_t>(inv_freq.size()) == half;
    if (same_sizes && std::equal(positions.begin(), positions.end(), pos) &&
        std::equal(inv_freq.begin(), inv_freq.end(), freq))
      return cs.data();
    positions.assign(pos, pos + rows);
    inv_freq.assign(freq, freq + half);
    cs.resize(static_cast<size_t>(rows * 2 * half));
    parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(8 * half, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        T* row = cs.data() + r * 2 * half;
        for (int64_t i = 0; i < half; ++i) {
          const T angle = static_cast<T>(positions[r]) * static_cast<T>(inv_freq[i]);
          row[i] = std::cos(angle);
          row[half + i] = std::sin(angle);
        }
      }
    });
    return cs.data();
  }
};

template <typename T>
void rope_apply(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim, const int32_t* positions,
                const float* inv_freq, bool inverse) {
  const int64_t half = head_dim / 2;
  thread_local RopeTable<T> table;
  const T* cs = table.get(positions, rows, inv_freq, half);
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(heads * head_dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* cr = cs + r * 2 * half;
      for (int64_t h = 0; h < heads; ++h) {
        T* a = x + r * row_stride + h * head_dim;
        T* bb = a + half;
        for (int64_t i = 0; i < half; ++i) {
          const T c = cr[i], s = inverse ? -cr[half + i] : cr[half + i], av = a[i], bv = bb[i];
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
// Work is cut into blocks of kQBlock queries of one head. A block's scaled scores against all keys
// it can see go to a per-thread scratch (one row per query, at most seq_len long); the softmax runs
// per row, then the weighted sums. Everything is written as small register tiles over GCC vector
// types of W lanes, W = the ISA's vector width (kW of SEALKIT_DISPATCH), so one source vectorises
// for each ISA:
//  - scores: W keys at a time against a transposed copy of the keys ([chunk][d][lane]), so the
//    reduction over head_dim accumulates whole vectors and needs no horizontal sums;
//  - weighted sums (P V, dS K): kTile output rows times W columns, reading rows of V / K directly;
//  - the transposed sums (dk = dS^T Q, dv = P^T dout): accumulated transposed, head_dim rows by key
//    lanes, so each query's row of dS / P is a vector load and its row of Q / dout broadcasts
//    (combine_causal_cols_t); the unit writes dk and dv rows once, at its end.
// Causality is handled by zeroing each probability row past its query: tiles may then run over a
// few masked entries on the diagonal block without changing any sum.
// The softmax rows are short (a few hundred scores) and each is a chain of dependent reductions
// (max, exp sum, log), so a block runs each step for all its rows before the next (all maxima, then
// all exps in one exp_rows call): the rows' chains then overlap. With the row maximum in one vector
// (it had been compiled to 16 scalar registers) the softmax part of a tiny-preset layer's forward
// went from about 0.4 to 0.1-0.2 ms (timed by switching the parts off in turn, 2 threads).
namespace {

constexpr int64_t kQBlock = 32;
// The backward pass's blocks are larger: dk and dv are read, added to and written back once per
// block and head (combine_causal_cols_t), and those tiles' inner loops run over the block's queries.
// Per layer at the tiny preset's shape (4 x 256 tokens, 4 heads of 32, 2 kv heads; 2 threads,
// alternating builds) 64 took ~1.30 ms against ~1.45 at 32, 1.26-1.40 at 128 and 1.26-1.40 at 256,
// and SmolLM2's (9 heads of 64, 3 kv heads) 4.8-5.2 ms against 5.3-5.5 at 32 and 5.5-5.7 at 128.
// Swept again with the transposed dk/dv (in-process A/B against the previous kernels): 32 about as
// fast as 64, 128 slower at SmolLM2's shape (0.97-1.07x against 64's 1.06-1.14x).
constexpr int64_t kQBlockBackward = 64;
constexpr int kTile = 8;  // output rows per register tile (8 accumulators + 1 operand fit every ISA)

template <typename T, int W>
struct Vec {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
};
// Unaligned vector load/store (vectors travel by reference: these inline into code of any ISA).
template <typename T, int W>
SEALKIT_INLINE void vload(typename Vec<T, W>::type& v, const T* p) {
  std::memcpy(&v, p, sizeof v);
}
template <typename T, int W>
SEALKIT_INLINE void vstore(T* p, const typename Vec<T, W>::type& v) {
  std::memcpy(p, &v, sizeof v);
}

template <int W>
int64_t round_lanes(int64_t n) {
  return (n + W - 1) / W * W;
}

#if SEALKIT_X86
// transpose_rows for 16 float lanes and D a multiple of 16: 16 x 16 blocks through registers (the
// element loop stored one float per cache line of `out`; SmolLM2's backward spent ~4 % in it).
// Not inline: attention_forward_w calls it outside the AVX-512 dispatch.
SEALKIT_AVX512 void transpose_rows_avx512(const float* Y, int64_t ys, int64_t L, int64_t D, float* out) {
  for (int64_t c = 0; c * 16 < L; ++c) {
    const int64_t rows = std::min<int64_t>(16, L - c * 16);
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) r[j] = j < rows ? _mm512_loadu_ps(Y + (c * 16 + j) * ys + d0) : _mm512_setzero_ps();
      transpose16(r);
#pragma GCC unroll 16
      for (int d = 0; d < 16; ++d) _mm512_storeu_ps(out + (c * D + d0 + d) * 16, r[d]);
    }
  }
}

// out rows [0, L) (stride os, D values) = columns of inT (D rows of at least L rounded up to 16
// values, it apart), for D a multiple of 16: the inverse walk of transpose_rows_avx512.
SEALKIT_AVX512 void transpose_cols_out_avx512(const float* inT, int64_t it, int64_t L, int64_t D, float* out,
                                             int64_t os) {
  for (int64_t j0 = 0; j0 < L; j0 += 16) {
    const int64_t rows = std::min<int64_t>(16, L - j0);
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int d = 0; d < 16; ++d) r[d] = _mm512_loadu_ps(inT + (d0 + d) * it + j0);
      transpose16(r);
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j)
        if (j < rows) _mm512_storeu_ps(out + (j0 + j) * os + d0, r[j]);
    }
  }
}
#endif

// Y rows [0, L) (stride ys, D values) -> chunks of W rows, element (j, d) at
// [(j / W * D + d) * W + j % W]; rows past L are zero.
template <typename T, int W>
SEALKIT_INLINE void transpose_rows(const T* Y, int64_t ys, int64_t L, int64_t D, T* out) {
#if SEALKIT_X86
  if constexpr (std::is_same_v<T, float> && W == 16) {  // 16 float lanes: the AVX-512 dispatch
    if (D % 16 == 0) return transpose_rows_avx512(Y, ys, L, D, out);
  }
#endif
  for (int64_t c = 0; c * W < L; ++c) {
    T* o = out + c * D * W;
    for (int64_t jj = 0; jj < W; ++jj) {
      const int64_t j = c * W + jj;
      for (int64_t d = 0; d < D; ++d) o[d * W + jj] = j < L ? Y[j * ys + d] : T(0);
    }
  }
}

// r[i][0..W) = scale * X_i . (keys of one transposed chunk) for NR rows X_i = x + i*xs.
template <typename T, int W, int NR>
SEALKIT_INLINE void score_tile(const T* x, int64_t xs, const T* yt, int64_t D, T scale, T* r, int64_t ldr) {
  using V = typename Vec<T, W>::type;
  V acc[NR] = {};
  for (int64_t d = 0; d < D; ++d) {
    V y;
    vload<T, W>(y, yt + d * W);
    for (int i = 0; i < NR; ++i) acc[i] += x[i * xs + d] * y;
  }
  for (int i = 0; i < NR; ++i) {
    const V scaled = acc[i] * scale;
    vstore<T, W>(r + i * ldr, scaled);
  }
}

// Two adjacent key chunks at once (r[i][0..2W)): each broadcast of X feeds two FMAs. Only where
// vectors are 512-bit: 2 x NR accumulators need the 32 registers of AVX-512.
template <typename T, int W, int NR>
SEALKIT_INLINE void score_tile2(const T* x, int64_t xs, const T* yt, int64_t D, T scale, T* r, int64_t ldr) {
  using V = typename Vec<T, W>::type;
  V acc0[NR] = {}, acc1[NR] = {};
  for (int64_t d = 0; d < D; ++d) {
    V y0, y1;
    vload<T, W>(y0, yt + d * W);
    vload<T, W>(y1, yt + (D + d) * W);
    for (int i = 0; i < NR; ++i) {
      const T xi = x[i * xs + d];
      acc0[i] += xi * y0;
      acc1[i] += xi * y1;
    }
  }
  for (int i = 0; i < NR; ++i) {
    const V s0 = acc0[i] * scale, s1 = acc1[i] * scale;
    vstore<T, W>(r + i * ldr, s0);
    vstore<T, W>(r + i * ldr + W, s1);
  }
}

// S[t - t0][j] = scale * X_t . Y_j for t in [t0, t1) and every key chunk up to t's own (Yt from
// transpose_rows; entries past t inside its chunk, or in the next chunk when two run together, are
// computed, never used). Every entry is the same d-ascending sum however chunks are grouped.
template <typename T, int W>
SEALKIT_INLINE void block_scores(const T* X, int64_t xs, const T* Yt, int64_t D, int64_t t0, int64_t t1, T scale,
                                 T* S, int64_t ld) {
  for (int64_t c = 0; c * W < t1; ++c) {
    const T* yt = Yt + c * D * W;
    int64_t t = std::max<int64_t>(t0, c * W);
    if constexpr (W * sizeof(T) == 64) {
      if ((c + 1) * W < t1) {  // the next chunk is in the block's range too
        for (; t + kTile <= t1; t += kTile)
          score_tile2<T, W, kTile>(X + t * xs, xs, yt, D, scale, S + (t - t0) * ld + c * W, ld);
        for (; t < t1; ++t) score_tile2<T, W, 1>(X + t * xs, xs, yt, D, scale, S + (t - t0) * ld + c * W, ld);
        ++c;
        continue;
      }
    }
    for (; t + kTile <= t1; t += kTile)
      score_tile<T, W, kTile>(X + t * xs, xs, yt, D, scale, S + (t - t0) * ld + c * W, ld);
    for (; t < t1; ++t) score_tile<T, W, 1>(X + t * xs, xs, yt, D, scale, S + (t - t0) * ld + c * W, ld);
  }
}

// out_r = sum_{i < n} Wt[r*wr + i] * Y_i for NR output rows (out_r = out + r*os, Y_i = Y + i*ys),
// D columns, i ascending.
template <typename T, int W, int NR>
SEALKIT_INLINE void combine_tile(const T* Wt, int64_t wr, int64_t n, const T* Y, int64_t ys, int64_t D, T* out,
                                 int64_t os) {
  using V = typename Vec<T, W>::type;
  int64_t d = 0;
  if constexpr (W * sizeof(T) == 64) {  // two column vectors per pass: each weight feeds two FMAs
    for (; d + 2 * W <= D; d += 2 * W) {
      V acc0[NR] = {}, acc1[NR] = {};
      for (int64_t i = 0; i < n; ++i) {
        V y0, y1;
        vload<T, W>(y0, Y + i * ys + d);
        vload<T, W>(y1, Y + i * ys + d + W);
        for (int r = 0; r < NR; ++r) {
          const T w = Wt[r * wr + i];
          acc0[r] += w * y0;
          acc1[r] += w * y1;
        }
      }
      for (int r = 0; r < NR; ++r) {
        T* o = out + r * os + d;
        vstore<T, W>(o, acc0[r]);
        vstore<T, W>(o + W, acc1[r]);
      }
    }
  }
  for (; d + W <= D; d += W) {
    V acc[NR] = {};
    for (int64_t i = 0; i < n; ++i) {
      V y;
      vload<T, W>(y, Y + i * ys + d);
      for (int r = 0; r < NR; ++r) acc[r] += Wt[r * wr + i] * y;
    }
    for (int r = 0; r < NR; ++r) vstore<T, W>(out + r * os + d, acc[r]);
  }
  for (; d < D; ++d) {
    for (int r = 0; r < NR; ++r) {
      T acc = 0;
      for (int64_t i = 0; i < n; ++i) acc += Wt[r * wr + i] * Y[i * ys + d];
      out[r * os + d] = acc;
    }
  }
}

// Rows t in [t0, t1) of out (=) sum_{j <= t} S[t - t0][j] * Y_j (rows of S are zero past t, so a
// tile runs to its last row's count).
template <typename T, int W>
SEALKIT_INLINE void combine_causal_rows(int64_t t0, int64_t t1, const T* S, int64_t ld, const T* Y, int64_t ys,
                                        int64_t D, T* out, int64_t os) {
  int64_t t = t0;
  for (; t + kTile <= t1; t += kTile)
    combine_tile<T, W, kTile>(S + (t - t0) * ld, ld, t + kTile, Y, ys, D, out + t * os, os);
  for (; t < t1; ++t) combine_tile<T, W, 1>(S + (t - t0) * ld, ld, t + 1, Y, ys, D, out + t * os, os);
}

// outT[r][0, KV * W) += sum_{i < n} X[i * xs + r] * S[i * ld + 0, KV * W) for NR rows r (head_dim
// values), i ascending: the transposed product's tile, KV vectors of keys wide. Per query one row of
// S is KV vector loads and its row of X NR broadcasts, both contiguous.
template <typename T, int W, int KV, int NR>
SEALKIT_INLINE void cols_t_tile(const T* X, int64_t xs, const T* S, int64_t ld, int64_t n, T* outT, int64_t ot) {
  using V = typename Vec<T, W>::type;
  V acc[NR][KV] = {};
  for (int64_t i = 0; i < n; ++i) {
    V y[KV];
    for (int v = 0; v < KV; ++v) vload<T, W>(y[v], S + i * ld + v * W);
    for (int r = 0; r < NR; ++r) {
      const T x = X[i * xs + r];
      for (int v = 0; v < KV; ++v) acc[r][v] += x * y[v];
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < KV; ++v) {
      V old;
      vload<T, W>(old, outT + r * ot + v * W);
      old += acc[r][v];
      vstore<T, W>(outT + r * ot + v * W, old);
    }
}

// Keys j in [0, t1): outT[d][j] (+)= sum_{t in [t0, t1)} S[t - t0][j] * X_t[d], the transposed
// product for dk and dv, kept transposed (D rows, ot apart). ld must be a multiple of KV * W (the
// tiles read whole key vectors; S is zero past each query's own key). Queries before a tile's first
// key contribute zero, so a tile starts at its first key's query. Each element's sum is the one the
// row-major tiles this replaced formed (i ascending from the block's first contributing query, then
// added to the stored value; the extra masked terms add exact zeros), so the bits are too. Against
// those (8 keys x head_dim per tile, S broadcast along a column, dk/dv rows read and written per
// tile), attention's backward pass ran 1.08-1.16x faster at the tiny preset's shape and 1.07-1.12x
// at SmolLM2's (2 threads, the two builds' calls alternating in one process, median of 21-41 rounds).
template <typename T, int W>
SEALKIT_INLINE void combine_causal_cols_t(int64_t t0, int64_t t1, const T* S, int64_t ld, const T* X, int64_t xs,
                                          int64_t D, T* outT, int64_t ot) {
  // Two key vectors where vectors are 512-bit (2 x 8 accumulators fit the 32 registers), else one.
  constexpr int KV = W * sizeof(T) == 64 ? 2 : 1, NR = 8;
  for (int64_t j = 0; j < t1; j += KV * W) {
    const int64_t ts = std::max(t0, j), nq = t1 - ts;
    const T* w = S + (ts - t0) * ld + j;
    int64_t d = 0;
    for (; d + NR <= D; d += NR) cols_t_tile<T, W, KV, NR>(X + ts * xs + d, xs, w, ld, nq, outT + d * ot + j, ot);
    for (; d < D; ++d) cols_t_tile<T, W, KV, 1>(X + ts * xs + d, xs, w, ld, nq, outT + d * ot + j, ot);
  }
}

// Rows [0, L) of out (stride os, D values) = the columns of inT (D rows, it apart).
template <typename T, int W>
SEALKIT_INLINE void transpose_cols_out(const T* inT, int64_t it, int64_t L, int64_t D, T* out, int64_t os) {
#if SEALKIT_X86
  if constexpr (std::is_same_v<T, float> && W == 16) {
    if (D % 16 == 0) return transpose_cols_out_avx512(inT, it, L, D, out, os);
  }
#endif
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < D; ++d) out[j * os + d] = inT[d * it + j];
}

// sum_d a[d] * b[d] in W lanes (d mod W) folded in a fixed order: a serial sum is a chain of D
// dependent adds per row.
template <typename T, int W>
SEALKIT_INLINE T dot_lanes(const T* a, const T* b, int64_t D) {
  using V = typename Vec<T, W>::type;
  V acc = {};
  int64_t d = 0;
  for (; d + W <= D; d += W) {
    V x, y;
    vload<T, W>(x, a + d);
    vload<T, W>(y, b + d);
    acc += x * y;
  }
  T sum = 0;
  for (int l = 0; l < W; ++l) sum += acc[l];
  for (; d < D; ++d) sum += a[d] * b[d];
  return sum;
}

template <typename T>
struct AttnScratch {
  std::vector<T> s, dp, kt, vt;
  std::vector<T> dkt, dvt;  // the backward unit's dk and dv, transposed (combine_causal_cols_t)
  // Room for a block of `rows` queries' scores, ld apart (dp only for the backward pass).
  void fit_block(int64_t rows, int64_t ld, bool backward) {
    const size_t need = static_cast<size_t>(rows * ld);
    if (s.size() < need) s.resize(need);
    if (backward && dp.size() < need) dp.resize(need);
  }
};

template <typename T>
AttnScratch<T>& attn_scratch() {
  thread_local AttnScratch<T> s;
  return s;
}

// Where each (sequence, kv head)'s transposed keys start in the forward pass's shared buffer.
template <int W>
struct KeyLayout {
  std::vector<int64_t> offset;  // per sequence, in padded rows
  int64_t total = 0;
  explicit KeyLayout(const AttentionShape& s) : offset(s.n_seqs) {
    for (int64_t i = 0; i < s.n_seqs; ++i) {
      offset[i] = total;
      total += round_lanes<W>(s.seq_len[i]);
    }
  }
  int64_t base(const AttentionShape& s, int64_t seq, int64_t kvh) const {
    return (offset[seq] * s.kv_heads + kvh * round_lanes<W>(s.seq_len[seq])) * s.head_dim;
  }
};

// Forward for queries [t0, t0 + kQBlock) of one head of one sequence; kt: that sequence's
// transposed keys for the head's kv head.
template <typename T, int W>
SEALKIT_INLINE void attention_forward_block(const AttentionShape& s, const T* q, const T* kt, const T* v, T* out,
                                            T* lse, int64_t seq, int64_t head, int64_t t0,
                                            const ExpRow<T>& exp_row) {
  const int64_t D = s.head_dim, start = s.seq_start[seq], L = s.seq_len[seq];
  const int64_t kvh = head / (s.heads / s.kv_heads), t1 = std::min(L, t0 + kQBlock);
  const int64_t ld = round_lanes<W>(t1), out_stride = s.heads * D;
  AttnScratch<T>& sc = attn_scratch<T>();
  sc.fit_block(kQBlock, ld, false);
  T* S = sc.s.data();
  const T* Q = q + start * s.q_stride + head * D;
  const T* V = v + start * s.kv_stride + kvh * D;
  T* O = out + start * out_stride + head * D;
  block_scores<T, W>(Q, s.q_stride, kt, D, t0, t1, static_cast<T>(s.scale), S, ld);
  // All the block's row maxima first, then the exps: the rows are independent, and each row's
  // reductions are short serial chains, so running them back to back lets them overlap.
  T mx[kQBlock], inv[kQBlock];
  double sums[kQBlock];
  for (int64_t t = t0; t < t1; ++t) mx[t - t0] = row_max(S + (t - t0) * ld, t + 1);
  exp_row.rows(S, ld, t1 - t0, t0 + 1, mx, sums);
  for (int64_t t = t0; t < t1; ++t) {
    T* row = S + (t - t0) * ld;
    const int64_t n = t + 1;
    const T m = mx[t - t0];
    const double sum = sums[t - t0];
    std::fill(row + n, row + ld, T(0));
    lse[(start + t) * s.heads + head] = static_cast<T>(static_cast<double>(m) + std::log(sum));
    inv[t - t0] = static_cast<T>(1.0 / sum);
  }
  combine_causal_rows<T, W>(t0, t1, S, ld, V, s.kv_stride, D, O, out_stride);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t d = 0; d < D; ++d) O[t * out_stride + d] *= inv[t - t0];
}

// Backward for one (sequence, kv head): every query head of the group, all query blocks (of
// kQBlockBackward queries). With
// P = exp(S - lse), dP = dout V^T, dS = scale * P * (dP - rowsum(dout * out)):
// dq = dS K, dk = dS^T Q, dv = P^T dout. dk/dv rows are owned by this unit alone and accumulate in
// a fixed order (heads, then query blocks, then queries inside a tile), transposed in the thread's
// scratch until the unit writes them.
template <typename T, int W>
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
  const size_t t_size = static_cast<size_t>(round_lanes<W>(L) * D);
  if (sc.kt.size() < t_size) {
    sc.kt.resize(t_size);
    sc.vt.resize(t_size);
  }
  transpose_rows<T, W>(K, s.kv_stride, L, D, sc.kt.data());
  transpose_rows<T, W>(V, s.kv_stride, L, D, sc.vt.data());
  // Score rows and the transposed dk/dv rows hold whole tiles of keys (see combine_causal_cols_t).
  constexpr int64_t key_tile = W * sizeof(T) == 64 ? 2 * W : W;
  auto round_keys = [](int64_t n) { return (n + key_tile - 1) / key_tile * key_tile; };
  const int64_t lt = round_keys(L);
  const size_t dt_size = static_cast<size_t>(D * lt);
  if (sc.dkt.size() < dt_size) {
    sc.dkt.resize(dt_size);
    sc.dvt.resize(dt_size);
  }
  T* dKt = sc.dkt.data();
  T* dVt = sc.dvt.data();
  std::fill(dKt, dKt + dt_size, T(0));
  std::fill(dVt, dVt + dt_size, T(0));

  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    const T* Q = q + start * s.q_stride + h * D;
    const T* dO = dout + start * out_stride + h * D;
    const T* O = out + start * out_stride + h * D;
    T* dQ = dq + start * s.q_stride + h * D;
    for (int64_t t0 = 0; t0 < L; t0 += kQBlockBackward) {
      const int64_t t1 = std::min(L, t0 + kQBlockBackward), ld = round_keys(t1);
      sc.fit_block(kQBlockBackward, ld, true);
      T* P = sc.s.data();
      T* dS = sc.dp.data();
      block_scores<T, W>(Q, s.q_stride, sc.kt.data(), D, t0, t1, scale, P, ld);
      block_scores<T, W>(dO, out_stride, sc.vt.data(), D, t0, t1, T(1), dS, ld);
      T shift[kQBlockBackward];
      for (int64_t t = t0; t < t1; ++t) shift[t - t0] = lse[(start + t) * s.heads + h];
      exp_row.rows(P, ld, t1 - t0, t0 + 1, shift, nullptr);
      for (int64_t t = t0; t < t1; ++t) {
        T* p = P + (t - t0) * ld;
        T* ds = dS + (t - t0) * ld;
        const int64_t n = t + 1;
        const T delta = dot_lanes<T, W>(dO + t * out_stride, O + t * out_stride, D);
        for (int64_t j = 0; j < n; ++j) ds[j] = scale * p[j] * (ds[j] - delta);
        std::fill(p + n, p + ld, T(0));
        std::fill(ds + n, ds + ld, T(0));
      }
      combine_causal_rows<T, W>(t0, t1, dS, ld, K, s.kv_stride, D, dQ, s.q_stride);
      combine_causal_cols_t<T, W>(t0, t1, dS, ld, Q, s.q_stride, D, dKt, lt);
      combine_causal_cols_t<T, W>(t0, t1, P, ld, dO, out_stride, D, dVt, lt);
    }
  }
  transpose_cols_out<T, W>(dKt, lt, L, D, dK, s.kv_stride);
  transpose_cols_out<T, W>(dVt, lt, L, D, dV, s.kv_stride);
}

// The forward pass at lane count W: keys transposed once per call (shared by every head of a
// group and every query block), then one task per (sequence, head, query block).
template <typename T, int W>
void attention_forward_w(const AttentionShape& s, const T* q, const T* k, const T* v, T* out, T* lse, Isa isa) {
  const KeyLayout<W> layout(s);
  thread_local std::vector<T> kt_buf;
  const size_t kt_size = static_cast<size_t>(layout.total * s.kv_heads * s.head_dim);
  if (kt_buf.size() < kt_size) kt_buf.resize(kt_size);
  T* kt = kt_buf.data();
  global_pool().run(s.n_seqs * s.kv_heads, [&](int64_t t, int) {
    const int64_t seq = t / s.kv_heads, kvh = t % s.kv_heads;
    const T* K = k + s.seq_start[seq] * s.kv_stride + kvh * s.head_dim;
    transpose_rows<T, W>(K, s.kv_stride, s.seq_len[seq], s.head_dim, kt + layout.base(s, seq, kvh));
  });

  const std::vector<AttentionUnit> units = attention_units(s, kQBlock);
  const ExpRow<T> exp_row(isa);
  const int64_t group = s.heads / s.kv_heads;
  global_pool().run(static_cast<int64_t>(units.size()), [&](int64_t t, int) {
    const AttentionUnit& u = units[static_cast<size_t>(t)];
    const T* ktu = kt + layout.base(s, u.seq, u.head / group);
    SEALKIT_DISPATCH(T, isa, (attention_forward_block<T, W>(s, q, ktu, v, out, lse, u.seq, u.head, u.t0, exp_row)));
  });
}

}  // namespace

std::vector<AttentionUnit> attention_units(const AttentionShape& s, int64_t q_block) {
  std::vector<AttentionUnit> units;
  for (int64_t i = 0; i < s.n_seqs; ++i)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t t0 = 0; t0 < s.seq_len[i]; t0 += q_block) units.push_back({i, h, t0});
  return units;
}

// The lane count is fixed by the ISA before any work starts, so the transposed-key layout and the
// tiles that read it agree.
template <typename T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v, T* out, T* lse) {
  const Isa isa = active_isa();
  if constexpr (std::is_same_v<T, float>)
    if (attention_bf16_runs(s, isa)) return attention_bf16_forward(s, q, k, v, out, lse);
  SEALKIT_DISPATCH(T, isa, (attention_forward_w<T, kW>(s, q, k, v, out, lse, isa)));
}

template <typename T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const T* dout, T* dq, T* dk, T* dv) {
  const Isa isa = active_isa();
  if constexpr (std::is_same_v<T, float>)
    if (attention_bf16_runs(s, isa)) return attention_bf16_backward(s, q, k, v, out, lse, dout, dq, dk, dv);
  const ExpRow<T> exp_row(isa);
  global_pool().run(s.n_seqs * s.kv_heads, [&](int64_t t, int) {
    const int64_t seq = t / s.kv_heads, kvh = t % s.kv_heads;
    SEALKIT_DISPATCH(T, isa,
                     (attention_backward_unit<T, kW>(s, q, k, v, out, lse, dout, dq, dk, dv, seq, kvh, exp_row)));
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

#if SEALKIT_X86
// The float path's arithmetic a whole vector at a time (simd.h's sigmoid512, swiglu512): exp512 of
// -g (exp_row's exp with shift 0 and scale 1), sigmoid = 1 / (1 + e), the products in the scalar
// loops' order. The same bits as the chunked path, which ran its scalar loops at SSE width. A sum
// that follows a product is an explicitly rounded add: GCC contracts a plain vector a * b + c into
// one FMA, with other bits.
#pragma GCC diagnostic push  // the intrinsics' spurious uninitialized warning, as above
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
constexpr int kRoundNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

SEALKIT_AVX512 void swiglu_forward_avx512(const float* gate, const float* up, float* out, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; i += 16) {
    const __mmask16 m = mask16(e - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    _mm512_mask_storeu_ps(out + i, m, swiglu512(g, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

SEALKIT_AVX512 void swiglu_backward_avx512(const float* gate, const float* up, const float* dout, float* dgate,
                                           float* dup, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; i += 16) {
    const __mmask16 m = mask16(e - i);
    __m512 dg, du;
    swiglu_backward512(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i),
                       _mm512_maskz_loadu_ps(m, dout + i), dg, du);
    _mm512_mask_storeu_ps(dup + i, m, du);
    _mm512_mask_storeu_ps(dgate + i, m, dg);
  }
}
#pragma GCC diagnostic pop
#endif

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {
#if SEALKIT_X86
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx512(active_isa())) {
      parallel_for(n, kGrain, [&](int64_t b, int64_t e) { swiglu_forward_avx512(gate, up, out, b, e); });
      return;
    }
  }
#endif
  const ExpRow<T> exp_row(active_isa());
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
#if SEALKIT_X86
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx512(active_isa())) {
      parallel_for(n, kGrain, [&](int64_t b, int64_t e) { swiglu_backward_avx512(gate, up, dout, dgate, dup, b, e); });
      return;
    }
  }
#endif
  const ExpRow<T> exp_row(active_isa());
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
namespace {
template <typename T>
SEALKIT_INLINE void cross_entropy_row(T* x, int32_t target, int64_t vocab, T* loss, const T* grad_scale,
                                      const ExpRow<T>& exp_row) {
  constexpr int64_t kCeBlock = 2048;
  if (target < 0) {
    *loss = 0;
    if (grad_scale) std::fill(x, x + vocab, T(0));
    return;
  }
  T m = -std::numeric_limits<T>::infinity();
  double sum = 0;
  for (int64_t i0 = 0; i0 < vocab; i0 += kCeBlock) {
    const int64_t n = std::min(kCeBlock, vocab - i0);
    const T bm = row_max(x + i0, n);
    if (bm > m) {
      sum *= std::exp(static_cast<double>(m) - static_cast<double>(bm));
      m = bm;
    }
    sum += exp_row(x + i0, nullptr, n, m, T(1));
  }
  *loss = static_cast<T>(static_cast<double>(m) + std::log(sum) - static_cast<double>(x[target]));
  if (!grad_scale) return;
  const T gs = *grad_scale;
  if (gs == T(0)) {
    std::fill(x, x + vocab, T(0));
    return;
  }
  exp_row(x, x, vocab, m, static_cast<T>(static_cast<double>(gs) / sum));
  x[target] -= gs;
}
}  // namespace

template <typename T>
void cross_entropy(T* logits, const int32_t* targets, int64_t rows, int64_t vocab, T* loss, const T* grad_scale) {
  const Isa isa = active_isa();
  const ExpRow<T> exp_row(isa);
  parallel_for(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* gs = grad_scale ? grad_scale + r : nullptr;
      SEALKIT_DISPATCH(T, isa, cross_entropy_row<T>(logits + r * vocab, targets[r], vocab, loss + r, gs, exp_row));
    }
  });
}

// ---- optimiser and reductions ----------------------------------------------------------------------

#if SEALKIT_X86
// AdamW a whole vector at a time, with the scalar loop's operations in its order (sums after
// products as explicitly rounded adds, so GCC cannot contract them into FMAs): the same bits.
// SEAL's small LoRA steps have dozens of few-thousand-element tensors, which the baseline build ran
// at SSE width (the optimizer was a tenth of a tiny 1 x 64 step).
#pragma GCC diagnostic push  // the intrinsics' spurious uninitialized warning, as above
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// Each tensor is a few thousand elements of four arrays that a step touches once (param, m, v
// from memory, grad from the caches), too short for the hardware prefetcher to lock on: asking for
// each stream 1 KB ahead took the optimiser of a tiny 1 x 64 LoRA step from 0.10 to 0.07 ms
// (profiled, alternating builds, AMD Zen 5 VM). Same bits: prefetches are hints.
constexpr int64_t kAdamAhead = 256;
// With Clear, the step of adamw_many: the gradient is scaled by grad_scale on load (the bits of
// scaling it in place first) and zeroed after use, in the same pass (grad is then the caller's
// writable array: run_and_clear). Against a scaling pass and a zeroing pass of their own: 0.121-0.131
// -> 0.105-0.122 ms per tiny 1 x 64 step (profiled, alternating builds).
template <bool Clear>
SEALKIT_AVX512 void adamw_avx512(float* param, const float* grad, float* m, float* v, int64_t b, int64_t e, float decay,
                                 float b1, float b2, float c1, float c2, float step_size, float bc2_sqrt, float eps,
                                 float grad_scale = 1.0f) {
  const __m512 vdecay = _mm512_set1_ps(decay), vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2);
  const __m512 vc1 = _mm512_set1_ps(c1), vc2 = _mm512_set1_ps(c2), vstep = _mm512_set1_ps(step_size);
  const __m512 vbc2 = _mm512_set1_ps(bc2_sqrt), veps = _mm512_set1_ps(eps);
  for (int64_t i = b; i < e; i += 16) {
    const __mmask16 k = mask16(e - i);
    // The four streams asked for kAdamAhead floats ahead (hints: past e they do nothing).
    _mm_prefetch(reinterpret_cast<const char*>(param + i + kAdamAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(grad + i + kAdamAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(m + i + kAdamAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(v + i + kAdamAhead), _MM_HINT_T0);
    __m512 g = _mm512_maskz_loadu_ps(k, grad + i);
    if constexpr (Clear) {
      if (grad_scale != 1.0f) g = _mm512_mul_ps(g, _mm512_set1_ps(grad_scale));
      _mm512_mask_storeu_ps(const_cast<float*>(grad) + i, k, _mm512_setzero_ps());
    }
    const __m512 mi =
        _mm512_add_round_ps(_mm512_mul_ps(vb1, _mm512_maskz_loadu_ps(k, m + i)), _mm512_mul_ps(vc1, g), kRoundNearest);
    const __m512 vi = _mm512_add_round_ps(_mm512_mul_ps(vb2, _mm512_maskz_loadu_ps(k, v + i)),
                                          _mm512_mul_ps(_mm512_mul_ps(vc2, g), g), kRoundNearest);
    const __m512 denom = _mm512_add_round_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbc2), veps, kRoundNearest);
    const __m512 pi = _mm512_sub_round_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, param + i), vdecay),
                                          _mm512_div_ps(_mm512_mul_ps(vstep, mi), denom), kRoundNearest);
    _mm512_mask_storeu_ps(m + i, k, mi);
    _mm512_mask_storeu_ps(v + i, k, vi);
    _mm512_mask_storeu_ps(param + i, k, pi);
  }
}
#pragma GCC diagnostic pop
#endif

// AdamW's per-step scalars, in T, and elements [b, e) of one tensor.
template <typename T>
struct AdamWScalars {
  T decay, b1, b2, c1, c2, step_size, bc2_sqrt, eps;
  explicit AdamWScalars(const AdamWParams& p) {
    const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
    const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
    decay = static_cast<T>(1.0 - p.lr * p.weight_decay);
    b1 = static_cast<T>(p.beta1);
    b2 = static_cast<T>(p.beta2);
    c1 = static_cast<T>(1.0 - p.beta1);
    c2 = static_cast<T>(1.0 - p.beta2);
    step_size = static_cast<T>(p.lr / bc1);
    bc2_sqrt = static_cast<T>(std::sqrt(bc2));
    eps = static_cast<T>(p.eps);
  }
  void run(T* param, const T* grad, T* m, T* v, int64_t b, int64_t e, Isa isa) const {
#if SEALKIT_X86
    if constexpr (std::is_same_v<T, float>) {
      if (has_avx512(isa)) {
        adamw_avx512<false>(param, grad, m, v, b, e, decay, b1, b2, c1, c2, step_size, bc2_sqrt, eps);
        return;
      }
    }
#endif
    (void)isa;
    for (int64_t i = b; i < e; ++i) {
      const T g = grad[i];
      m[i] = b1 * m[i] + c1 * g;
      v[i] = b2 * v[i] + c2 * g * g;
      const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      param[i] = param[i] * decay - step_size * m[i] / denom;
    }
  }
  // adamw_many's step on [b, e): the gradient scaled by grad_scale, used, then zeroed.
  void run_and_clear(T* param, T* grad, T* m, T* v, int64_t b, int64_t e, Isa isa, T grad_scale) const {
#if SEALKIT_X86
    if constexpr (std::is_same_v<T, float>) {
      if (has_avx512(isa)) {  // one pass
        adamw_avx512<true>(param, grad, m, v, b, e, decay, b1, b2, c1, c2, step_size, bc2_sqrt, eps, grad_scale);
        return;
      }
    }
#endif
    if (grad_scale != T(1))
      for (int64_t j = b; j < e; ++j) grad[j] *= grad_scale;
    run(param, grad, m, v, b, e, isa);
    std::fill(grad + b, grad + e, T(0));
  }
};

template <typename T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWParams& p) {
  const AdamWScalars<T> s(p);
  const Isa isa = active_isa();
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { s.run(param, grad, m, v, b, e, isa); });
}

// Fixed tree: chunks of kSumChunk elements, each summed by dot_f64 (fixed lanes), then the chunk
// sums added in chunk order.
constexpr int64_t kSumChunk = 8192;

template <typename T>
double sum_squares(const T* x, int64_t n) {
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<double> part(chunks, 0.0);
  parallel_for(chunks, 8, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const int64_t i0 = c * kSumChunk;
      part[c] = dot_f64<T>(x + i0, x + i0, nullptr, std::min(kSumChunk, n - i0));
    }
  });
  double total = 0;
  for (double p : part) total += p;
  return total;
}

namespace {
// The tensors' elements as pieces of at most `piece` elements, each within one tensor, in order.
struct Piece {
  int tensor;
  int64_t begin, end;
};
std::vector<Piece> pieces_of(const OptimTensor* ts, int count, int64_t piece) {
  std::vector<Piece> out;
  for (int t = 0; t < count; ++t)
    for (int64_t b = 0; b < ts[t].n; b += piece) out.push_back({t, b, std::min(ts[t].n, b + piece)});
  return out;
}

// Floats ahead that each piece's stream asks for while summing: a step's gradients were written
// long before (the backward pass's first layers), as adamw_avx512's operands were.
constexpr int64_t kSumAhead = 256;

typedef double SquareLanes __attribute__((vector_size(8 * sizeof(double))));
// lane += the squares of at[0, 8), as doubles.
SEALKIT_INLINE void add_squares8(SquareLanes& lane, const float* at) {
  typedef float F8 __attribute__((vector_size(8 * sizeof(float))));
  F8 f;
  std::memcpy(&f, at, sizeof f);
  const SquareLanes d = __builtin_convertvector(f, SquareLanes);
  lane += d * d;
}

// dot_f64(x_p, x_p, nullptr, n_p) for P pieces at once, each with dot_f64's own lanes and order (so
// its bits): a piece's sum is a chain of dependent adds (n / 8 long), and a LoRA step's pieces are
// single tensors of a few thousand values, so one at a time the chains' latency dominated (the grad
// norm was 2-4 % of a tiny 1 x 64 step); P chains side by side overlap it: 0.060-0.065 -> 0.032-0.041
// ms per step with 4 (profiled, alternating builds, AMD Zen 5 VM). Always inline, so that
// SEALKIT_DISPATCH compiles it for the ISA: built for the baseline only, its 4 x 8 double lanes sat in
// SSE registers spilled to the stack. (A float's square is exact in double, so an FMA the compiler
// may form from `lane += d * d` keeps the bits.) Compiled for AVX-512, with the prefetch, SEAL's
// inner-loop shape (16 adapters x 20 tokens, tiny preset, f32): the norm's share of the step's
// samples 5.3 % -> 2.8 %, the step 1.025-1.027x (`seal bench train --ab-env`, AMD Zen 5 VM).
template <int P>
SEALKIT_INLINE void sum_squares_pieces(const float* const (&x)[P], const int64_t (&n)[P], double (&out)[P]) {
  SquareLanes lane[P] = {};
  int64_t most = 0;
  for (int p = 0; p < P; ++p) most = std::max(most, n[p]);
  // 16 floats (a line) a step, with a prefetch per line, as two 8-float adds in turn.
  for (int64_t i = 0; i + 16 <= most; i += 16)
    for (int p = 0; p < P; ++p) {
      if (i + 16 > n[p]) continue;
      __builtin_prefetch(x[p] + i + kSumAhead, 0, 3);
      add_squares8(lane[p], x[p] + i);
      add_squares8(lane[p], x[p] + i + 8);
    }
  for (int p = 0; p < P; ++p) {
    int64_t i = n[p] / 16 * 16;
    if (i + 8 <= n[p]) {
      add_squares8(lane[p], x[p] + i);
      i += 8;
    }
    for (; i < n[p]; ++i) lane[p][0] += static_cast<double>(x[p][i]) * x[p][i] * 1.0;
    const SquareLanes& l = lane[p];
    out[p] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  }
}
}  // namespace

double sum_squares_many(const OptimTensor* ts, int count) {
  // sum_squares's tree per tensor (its chunks summed in order), then the tensors in order.
  const std::vector<Piece> pieces = pieces_of(ts, count, kSumChunk);
  std::vector<double> part(pieces.size(), 0.0);
  constexpr int kGroup = 4;  // pieces per task, summed side by side
  const Isa isa = active_isa();
  const int64_t groups = (static_cast<int64_t>(pieces.size()) + kGroup - 1) / kGroup;
  global_pool().run(groups, [&](int64_t t, int) {
    const float* x[kGroup];
    int64_t n[kGroup];
    double out[kGroup];
    for (int p = 0; p < kGroup; ++p) {
      const size_t i = static_cast<size_t>(t * kGroup + p);
      x[p] = i < pieces.size() ? ts[pieces[i].tensor].grad + pieces[i].begin : nullptr;
      n[p] = i < pieces.size() ? pieces[i].end - pieces[i].begin : 0;
    }
    SEALKIT_DISPATCH(float, isa, (sum_squares_pieces<kGroup>(x, n, out)));
    for (int p = 0; p < kGroup && t * kGroup + p < static_cast<int64_t>(pieces.size()); ++p)
      part[static_cast<size_t>(t * kGroup + p)] = out[p];
  });
  double total = 0, tensor_sum = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    tensor_sum += part[i];
    if (i + 1 == pieces.size() || pieces[i + 1].tensor != pieces[i].tensor) {
      total += tensor_sum;
      tensor_sum = 0;
    }
  }
  return total;
}

void adamw_many(const OptimTensor* ts, int count, const AdamWParams& p, float grad_scale) {
  const AdamWScalars<float> s(p);
  const Isa isa = active_isa();
  const std::vector<Piece> pieces = pieces_of(ts, count, kGrain);
  global_pool().run(static_cast<int64_t>(pieces.size()), [&](int64_t i, int) {
    const Piece& c = pieces[static_cast<size_t>(i)];
    const OptimTensor& t = ts[c.tensor];
    s.run_and_clear(t.param, t.grad, t.m, t.v, c.begin, c.end, isa, grad_scale);
  });
}

bool optimizer_groups_per_task(int count) {
  const int threads = global_pool().threads();
  return threads > 1 && count >= 2 * threads && switch_on("SEALKIT_OPTIMIZER_TASKS");
}

void optimizer_groups(const OptimGroup* groups, int count, double max_grad_norm, double* norms) {
  const auto one = [&](int64_t g) {
    const OptimGroup& group = groups[g];
    norms[g] = std::sqrt(sum_squares_many(group.ts, group.count));
    adamw_many(group.ts, group.count, group.adam, clip_scale(norms[g], max_grad_norm));
  };
  if (!optimizer_groups_per_task(count)) {
    for (int g = 0; g < count; ++g) one(g);
    return;
  }
  global_pool().run(count, [&](int64_t g, int) {
    InlineRuns on_this_thread(true);
    one(g);
  });
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
  template void residual_rmsnorm_forward<T>(T*, const T*, const T*, T*, T*, int64_t, int64_t, double);          \
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
