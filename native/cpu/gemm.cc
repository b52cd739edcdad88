// GEMM for the CPU backend (see kernels.h for the contract).
//
// f32 uses packed operands: rows of op(A) are packed into MR-tall strips and columns of op(B) into
// NR-wide strips (bf16 widened to f32 while packing, so a bf16 weight is read once per pack), each
// over the whole K. Packing makes the micro-kernel's loads contiguous whatever the orientation and
// strides, and zero-pads edge strips so the kernel always computes a full MR x NR tile and only its
// store is masked (the AVX-512 kernel runs a partial last row strip through a kernel of just its
// rows, micro_avx512_rows). A tile runs its K blocks (KC deep, sized for L1) back to back, so its
// slice of C is still in cache when the next block adds onto it. With AVX-512, a few rows of the forward
// orientation (y = x W^T, decoding: up to 4, or 16 on the bf16 path) skip packing and stream W
// directly (few_rows_avx512, few_rows_bf16).
//
// Two entry points build on gemm: gemm_with_update adds a rank-r update (LoRA's side path) to each
// finished tile while it is in L1, through the micro-kernel the separate call would use (so the
// bits are that call's); gemm_group runs the few-rows GEMMs of one input (q, k, v; gate, up) as one
// dispatch over all their weights.
//
// A may also come as bf16 rows (GemmArgs::A_bf16, from scoring's norms and SwiGLU): the vdpbf16ps
// tiles then read each row's 32-bit words as their pairs, with no packing (kA16Kernels; the LM
// head's few-rows-many-columns path packs them once, by a transpose alone); every other path widens
// them to f32 first.
//
// Determinism: every element of C is produced by exactly one task and its K reduction runs in a
// fixed order (KC blocks in sequence, k ascending inside a block). The path and KC depend only on
// the ISA, B's dtype and the shape, so the bits never depend on the thread count or on how work is
// split.
//
// The addon is compiled for baseline x86-64; the wide kernels and packers carry target attributes
// and are chosen per call from active_isa().
//
// bf16 B under Isa::Avx512Bf16 (and only there) multiplies in bf16, as PyTorch's bf16 autocast does:
// op(A) is rounded to bf16 (round to nearest even by vcvtne2ps2bf16, which also flushes f32
// denormals to zero) while packing, B's bf16 values are packed as they are, and products (exact in
// f32) accumulate in f32. Both packed operands then hold pairs along K, (k, k+1) with k even, in one
// 32-bit slot (k in the low half; an odd K pads the last pair with zero), so the packed buffers keep
// their float element type and the driver counts depth in pairs. The product runs on AMX tiles
// (tdpbf16ps) where the CPU and OS offer them, else on vdpbf16ps (each adds a pair's odd product,
// then its even one, to the f32 accumulator); up to 16 rows of y = x W^T stream W unpacked, through
// AMX tiles at 2-16 rows where there are tiles (few_rows_amx_columns), else through vdpbf16ps. Measured on the Sapphire-Rapids-class VM this was written on, AMX runs the training
// shapes 3-7x faster than the f32 kernel, while vdpbf16ps (0.5/cycle there, against 2 FMA/cycle)
// runs them at 0.5-0.7x: it is only the fallback for avx512bf16 CPUs without AMX (AMD Zen 4/5, where
// it issues at the FMA rate, doubling the FLOPs; not measured here). f32 B, and bf16 B under every
// other ISA, take the f32 kernels unchanged (bf16 widened while packing).
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/env_switch.h"
#include "../core/huge_pages.h"
#include "../core/threadpool.h"
#include "kernels.h"

#include "coded_weight.h"
#include "gemm_lowrank.h"
#include "simd.h"

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace sealkit::cpu {
namespace {

// op(X)[r][c] = data[r * rs + c * cs]: one description for both orientations of A and B.
struct MatRef {
  const void* data;
  DType dtype;
  int64_t rs, cs;
};

// Calls f(line) for every 64-byte cache line that [p, p + bytes) touches.
template <typename F>
inline void for_each_line(const void* p, int64_t bytes, F f) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t line = first & ~uintptr_t(63); line < first + bytes; line += 64) f(reinterpret_cast<const char*>(line));
}

// The source lines of one B strip (columns [j0, j0 + n) of op(B) over all K), to prefetch into L2 a
// part at a time while the strip before it runs: the LM head's 56 MB of weights come from memory,
// and the task that packs a strip would otherwise wait on every line of it.
struct StripSource {
  const char* base = nullptr;
  int64_t runs = 0, stride = 0, bytes = 0;  // `runs` contiguous runs of `bytes`, `stride` apart

  StripSource() = default;
  StripSource(const MatRef& b, int64_t j0, int64_t n, int64_t K) {
    const int64_t es = static_cast<int64_t>(dtype_size(b.dtype));
    base = static_cast<const char*>(b.data) + j0 * b.cs * es;
    if (b.rs == 1) runs = n, stride = b.cs * es, bytes = K * es;  // columns contiguous in k
    else runs = K, stride = b.rs * es, bytes = n * es;             // rows of op(B) (cs == 1)
  }
  // A strip packed ahead of time (PackedWeight): `depth` rows of `nr` floats, contiguous.
  StripSource(const float* strip, int64_t depth, int64_t nr)
      : base(reinterpret_cast<const char*>(strip)), runs(depth), stride(nr * 4), bytes(nr * 4) {}
  // Part i of `parts`: its share of the runs, every cache line each touches.
  void prefetch(int64_t i, int64_t parts) const {
    for (int64_t r = i * runs / parts, end = (i + 1) * runs / parts; r < end; ++r)
      for_each_line(base + r * stride, bytes, [](const char* line) { __builtin_prefetch(line, 0, 2); });
  }
};

#if SEALKIT_X86
// Asks for the lines of a rows x cols tile of C (rows ldc apart) for ownership, a tile's product
// ahead of its store (prefetch_for_write).
inline void prefetch_tile_for_write(const float* c, int64_t ldc, int rows, int cols) {
  for (int i = 0; i < rows; ++i, c += ldc)
    for_each_line(c, cols * static_cast<int64_t>(sizeof(float)), [](const char* line) { prefetch_for_write(line); });
}
// The lines a fused SwiGLU-gradient tile reads (gate, up) and writes (dgate, dup), asked for as its
// product starts: the epilogue then finds them in cache instead of waiting on memory row by row.
// Without it the fused step was slower than the separate calls (in-process A/B, AMD Zen 5: the tiny
// preset's LoRA step 0.935-0.957x of the step with it, SmolLM2-135M's 0.967x). Where dgate and dup
// are streamed (`outputs` false) their lines are not asked for: an ownership read from memory for a
// line the non-temporal store then writes whole was bandwidth thrown away (SmolLM2-135M: these calls
// 85.7-86.7 -> 79.6-80.7 ms per step; the LoRA step 1.003-1.009x, `seal bench --ab-env`, 11 and 21
// repeats, AMD Zen 5).
inline void prefetch_swiglu_grad_tile(const SwigluGrad& s, int64_t at, int64_t ld, int rows, int cols, bool outputs) {
  const int64_t bytes = cols * static_cast<int64_t>(sizeof(float));
  for (int i = 0; i < rows; ++i) {
    for_each_line(s.gate + at + i * ld, bytes, [](const char* line) { _mm_prefetch(line, _MM_HINT_T0); });
    for_each_line(s.up + at + i * ld, bytes, [](const char* line) { _mm_prefetch(line, _MM_HINT_T0); });
  }
  if (!outputs) return;
  prefetch_tile_for_write(s.dgate + at, ld, rows, cols);
  prefetch_tile_for_write(s.dup + at, ld, rows, cols);
}
#endif

// How a micro-kernel writes its tile: C = alpha * acc + beta * C, and C's old value is not read at
// all when load_c is false (beta == 0 on the first K block, so NaNs in C are ignored). Later K
// blocks use beta = 1 to add onto the partial result.
struct Epilogue {
  float alpha;
  float beta;
  bool load_c;
  // Full 32-column rows at 64-byte-aligned addresses go out as non-temporal stores (the AVX-512
  // kernels' store_row32; other rows and kernels store normally): see kStreamCBytes.
  bool stream = false;
};

// Computes the MR x NR tile (packed A strip) x (packed B strip) over kc depth steps and stores its
// top-left rows x cols through the epilogue.
using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows, int cols,
                             const Epilogue& ep);
// Packs rows [i0, i0 + m) of op(A) (m may exceed MR: only the first MR are taken) into one strip.
using PackA = void (*)(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t m, int64_t K, float* dst);
// Packs columns [j0, j0 + n) of op(B) (first NR only) into one strip.
using PackB = void (*)(const MatRef& b, int64_t j0, int64_t n, int64_t K, float* dst);

// One ISA's kernel. KC is part of the numerics (see the header comment); every other block size
// only shapes the work. A depth step is one k, or one bf16 pair (k, k+1) when `pairs` (strips then
// hold ceil(K/2) steps rounded up to a multiple of pair_align, and kc counts pairs).
struct KernelSpec {
  int mr, nr;
  int64_t kc;
  MicroKernel micro;
  PackA pack_a;
  PackB pack_b;
  bool pairs = false;
  int64_t pair_align = 1;
  // Runs a strip's tile when fewer than mr of its rows are valid (null: `micro`, on zero padding).
  MicroKernel edge = nullptr;
};

// Depth steps of a packed strip of K (k, or bf16 pairs padded to a multiple of pair_align).
inline int64_t packed_depth(const KernelSpec& ks, int64_t K) {
  return ks.pairs ? ((K + 1) / 2 + ks.pair_align - 1) / ks.pair_align * ks.pair_align : K;
}

// Depth of packed_gemm's K blocks over Kd depth steps: ks.kc, or for pairs (vdpbf16ps, AMX) the
// fewest blocks of at most ks.kc, evened out (AMX, K = 1601: 816 padded pairs run as 3 x 272, not
// 384 + 384 + 48). Part of the numerics: every kernel that must give packed_gemm's bits uses it.
inline int64_t packed_kc_depth(const KernelSpec& ks, int64_t Kd) {
  if (!ks.pairs) return ks.kc;
  const int64_t blocks = (Kd + ks.kc - 1) / ks.kc;
  return ((Kd + blocks - 1) / blocks + ks.pair_align - 1) / ks.pair_align * ks.pair_align;
}

// op(B) of a GEMM as a MatRef.
inline MatRef b_ref(const GemmArgs<float>& g) {
  return MatRef{g.B.data, g.B.dtype, g.trans_b ? 1 : g.ldb, g.trans_b ? g.ldb : 1};
}

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

// Stores one row of a 32-column tile through the epilogue (C = alpha * (v0, v1) + beta * C, C read
// only when load_c), masked to the tile's valid columns (masked-off lanes never fault), or streamed
// past the caches when ep.stream and the row is two whole aligned lines. Shared by the f32,
// vdpbf16ps and AMX micro-kernels.
SEALKIT_AVX512 inline void store_row32(float* row, __m512 v0, __m512 v1, __mmask16 m0, __mmask16 m1, const Epilogue& ep) {
  const __m512 alpha = _mm512_set1_ps(ep.alpha);
  v0 = _mm512_mul_ps(alpha, v0);
  v1 = _mm512_mul_ps(alpha, v1);
  if (ep.load_c) {
    const __m512 beta = _mm512_set1_ps(ep.beta);
    v0 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m0, row), v0);
    v1 = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m1, row + 16), v1);
  }
  if (ep.stream && m1 == 0xffff && (reinterpret_cast<uintptr_t>(row) & 63) == 0) {  // m1 full: 32 columns
    _mm512_stream_ps(row, v0);
    _mm512_stream_ps(row + 16, v1);
    return;
  }
  _mm512_mask_storeu_ps(row, m0, v0);
  _mm512_mask_storeu_ps(row + 16, m1, v1);
}

// The first `rows` of an R-row tile's accumulators (two vectors per row: 32 columns, `cols` valid)
// stored through store_row32: the f32, vdpbf16ps and coded micro-kernels' epilogue.
template <int R>
SEALKIT_AVX512 SEALKIT_INLINE void store_tile32(const __m512 (&acc)[R][2], float* c, int64_t ldc, int rows, int cols,
                                                const Epilogue& ep) {
  const __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i) {
    if (i >= rows) break;
    store_row32(c + i * ldc, acc[i][0], acc[i][1], m0, m1, ep);
  }
}

// act = silu(gate) * up for the top-left rows x cols of two 32-column tiles (rows 32 floats apart),
// stored to C as store_row32 stores a tile (streamed when `stream`).
#pragma GCC diagnostic push  // the intrinsics' spurious uninitialized warning (see the packing below)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// act = silu(gate) * up for a tile whose up is in scratch (rows 32 floats apart) and whose gate's
// rows lie ldg apart (32: scratch too, gemm_gate_up_swiglu; ld_act: in memory like act,
// gemm_up_swiglu), stored as store_row32 stores a tile (streamed when `stream`). Lanes past cols are
// loaded as zeros and never stored.
SEALKIT_AVX512 void store_swiglu_tile(const float* gate, int64_t ldg, const float* up, float* act, int64_t ld_act,
                                      int rows, int cols, bool stream) {
  const __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
  const Epilogue ep{1.f, 0.f, false, stream};
  for (int i = 0; i < rows; ++i, gate += ldg, up += 32, act += ld_act)
    store_row32(act, swiglu512(_mm512_maskz_loadu_ps(m0, gate), _mm512_load_ps(up)),
                swiglu512(_mm512_maskz_loadu_ps(m1, gate + 16), _mm512_load_ps(up + 16)), m0, m1, ep);
}

// A finished tile (rows 32 floats apart, from scratch) copied to C as store_row32 stores one,
// streamed.
SEALKIT_AVX512 void stream_tile32(const float* tile, float* c, int64_t ldc, int rows, int cols) {
  const __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
  const Epilogue ep{1.f, 0.f, false, true};
  for (int i = 0; i < rows; ++i, tile += 32, c += ldc)
    store_row32(c, _mm512_load_ps(tile), _mm512_load_ps(tile + 16), m0, m1, ep);
}

// SwiGLU's gradients of a finished 32-column tile of dact (rows 32 apart, from scratch): element
// `at` of the arrays is the tile's first; rows ld apart.
// With `stream`, whole aligned vectors of dgate and dup go out as non-temporal stores (see
// kStreamCBytes; the caller fences).
SEALKIT_AVX512 void store_swiglu_grad_tile(const float* dact, const SwigluGrad& s, int64_t at, int64_t ld, int rows,
                                           int cols, bool stream) {
  for (int i = 0; i < rows; ++i, dact += 32, at += ld) {
    for (int h = 0; h < 2; ++h) {
      const __mmask16 m = mask16(cols - 16 * h);
      if (!m) break;
      const int64_t o = at + 16 * h;
      __m512 dg, du;
      swiglu_backward512(_mm512_maskz_loadu_ps(m, s.gate + o), _mm512_maskz_loadu_ps(m, s.up + o),
                         _mm512_load_ps(dact + 16 * h), dg, du);
      if (stream && m == 0xFFFF &&
          ((reinterpret_cast<uintptr_t>(s.dgate + o) | reinterpret_cast<uintptr_t>(s.dup + o)) & 63) == 0) {
        _mm512_stream_ps(s.dgate + o, dg);
        _mm512_stream_ps(s.dup + o, du);
        continue;
      }
      _mm512_mask_storeu_ps(s.dgate + o, m, dg);
      _mm512_mask_storeu_ps(s.dup + o, m, du);
    }
  }
}
#pragma GCC diagnostic pop

// AVX-512: 14 x 32 tile, two zmm per row: 28 accumulators + 2 for B + 1 broadcast of the 32
// registers. Measured against 8 x 32 and 12 x 32 (bench/gemm.ts): 14 rows was best or level.
constexpr int kAvx512Mr = 14, kAvx512Nr = 32;
constexpr int64_t kAvx512Kc = 256;

// The first R rows of a packed 14-row strip against a 32-column strip, of which the first `rows`
// are stored. R = 14 is the full tile (micro_avx512); smaller R run the last strip of a GEMM whose M
// is not a multiple of 14 (1024 tokens: 2 rows; the LM head's 256: 4) on its valid rows only, not
// on zero padding. Every element's arithmetic (k ascending, one FMA chain per accumulator) is the
// full tile's, so the bits do not change.
template <int R>
SEALKIT_AVX512 void micro_avx512_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows,
                                      int cols, const Epilogue& ep) {
  __m512 acc[R][2];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kAvx512Mr;
    b += kAvx512Nr;
  }
  store_tile32<R>(acc, c, ldc, rows, cols, ep);
}

// The full tile.
constexpr MicroKernel micro_avx512 = micro_avx512_rows<kAvx512Mr>;

// A partial strip (rows < MR) of a row-templated kernel: `Rows::kernel<R>` runs the first R rows of
// a strip. Kept apart from the full tile's kernel so its call takes no dispatch (one inside it
// measured 1-2 % slower on the tiny model's K = 128 shapes). Entry r - 1 of the table runs r rows.
template <typename Rows, size_t... R>
constexpr std::array<MicroKernel, sizeof...(R)> row_kernels(std::index_sequence<R...>) {
  return {Rows::template kernel<static_cast<int>(R) + 1>...};
}
template <typename Rows, int MR>
void micro_edge(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows, int cols,
                const Epilogue& ep) {
  static constexpr std::array<MicroKernel, MR - 1> table = row_kernels<Rows>(std::make_index_sequence<MR - 1>());
  const MicroKernel k = rows >= 1 && rows < MR ? table[rows - 1] : Rows::template kernel<MR>;
  k(kc, a, b, c, ldc, rows, cols, ep);
}

struct Avx512Rows {
  template <int R>
  static constexpr MicroKernel kernel = micro_avx512_rows<R>;
};
constexpr MicroKernel micro_avx512_edge = micro_edge<Avx512Rows, kAvx512Mr>;

// ---- AVX-512 packing ----------------------------------------------------------------------------
// The transposing cases (A row-major, B stored as W for y = x W^T) dominate packing time; they go
// through 16 x 16 register transposes instead of strided scalar stores.

// GCC 12 flags the deliberately undefined pass-through operand inside its own shuffle intrinsics
// (_mm512_undefined_ps) as (maybe-)uninitialized; the warning is spurious.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

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
// either way, so stream each row of W straight from memory against the few rows of A (in L1/L2).
// Work goes by blocks of W rows against groups of rows of A; the first group pulls the block from
// memory and later ones find it in L1, so W crosses the memory bus once per call. Each C element is
// one K-ascending lane-wise dot product (lane j takes k = j mod 16), its 16 lanes summed by a fixed
// tree (reduce16), whatever block or group it is in: the bits depend only on the ISA and the path.
//
// Row limits: a bf16 W (decoding at bf16 storage) runs the path up to 16 rows (2-16 of them on AMX
// tiles where the CPU has AMX: few_rows_amx_columns, further down; else 2-16 of them on the weight's
// packed strips where it has a packed copy: few_rows_strips). Under AVX512-BF16,
// measured on SmolLM2's LM head (K = 576), it is 1.5-2x faster than packing at 5-8 rows and level at
// 12-16; without it (f32 products), packing would widen the whole W to f32 on every call, and
// batch-8 decoding ran 2.0x faster on this path (152 -> 307 tokens/s, alternating pairs). An f32 W
// stays at 4 rows, so sequences of 5-16 tokens of an f32 model keep the packed kernel's summation
// order, the one every longer batch uses: a sequence scored alone then agrees with the same
// sequence inside a batch to ~1e-7, not just to f32 rounding of a different order
// (test/model.test.ts, mixed-adapter batches).
constexpr int64_t kFewRowsBf16 = 16;
constexpr int64_t kFewRowsF32 = 4;
// The vdpbf16ps kernel's blocks: 4 W rows against groups of up to 4 rows of A (16 accumulators).
constexpr int kFewRowsBlock = 4, kFewRowsGroup = 4;
// W rows per chunk of parallel_streams: each thread walks its own share of the rows in one run
// (prefetching across chunk ends), and chunks of 64 rows let an idle thread take over a slow one's
// tail. Against parallel_for's interleaved chunks, each of which restarted its prefetch stream,
// SmolLM2-135M decoding (2 threads, alternating pairs) ran 1.09x faster at batch 8 (median pair
// ratio of 8 pairs, every pair faster) and 1.08x at batch 1 (6 pairs).
constexpr int64_t kFewRowsChunk = 64;


// How far ahead of the block it multiplies a few-rows kernel prefetches W, and into which cache.
// The hardware prefetcher follows each row's stream only after a few misses; a block's rows are
// short (K elements), so it keeps starting late: each block prefetches the rows `rows` ahead (and a
// run's first block the rows before that distance, all at once). Two ways, each the faster on its
// own microarchitecture, so the default depends on the CPU:
//  - L2, far: 32 rows ahead into L2 (prefetcht1). The default everywhere but AMD Zen 5. On a Zen 4
//    VM (L1d 32 KiB; 2026-12-06, alternating runs of `seal bench decode`, SmolLM2-135M, 2 threads)
//    against the next block's rows with the non-temporal hint: batch 1 105-112 against 72-80
//    tokens/s (1.4x), batch 8 566-685 against 393-433 (1.5x); 16 rows ahead alike. Earlier on a Zen 4
//    VM: LM head at batch 1 28-33 GB/s against 16 with 2 blocks ahead into L1.
//  - NTA, near: the next block's rows (4 ahead) with the non-temporal hint (prefetchnta), into L1
//    without keeping them in the caches behind it. Decoding streams each weight once per token, far
//    more bytes than the caches hold, so lines kept in L2 (and, on AMD, cast out to L3 when L2
//    evicts them) are overhead. The default on AMD Zen 5 (family 1Ah): bench/decode-chain.ts
//    (SmolLM2-135M's GEMMs for one token, batch 1, bf16, 2 threads, Zen 5 VM, 5 alternating
//    rounds) 58.0 GB/s against 49.5 L2-far, 1.19x; 8-16 rows ahead with the same hint in between.
// SEALKIT_FEW_ROWS_NTA=1 forces NTA-near, =0 L2-far (same bits either way).
struct FewRowsAhead {
  int64_t rows;
  bool nta;
};
FewRowsAhead few_rows_ahead() {
  static const bool nta_by_default = cpu_model().amd && cpu_model().family >= 0x1a;
  return switch_on_or("SEALKIT_FEW_ROWS_NTA", nta_by_default) ? FewRowsAhead{4, true} : FewRowsAhead{32, false};
}

inline void prefetch_w(const void* p, bool nta) {
  if (nta) _mm_prefetch(static_cast<const char*>(p), _MM_HINT_NTA);
  else _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
}

// Every cache line of W rows [r0, r1).
template <typename Src>
inline void prefetch_w_rows(const Src* B, int64_t ldb, int64_t K, int64_t r0, int64_t r1, bool nta) {
  for (int64_t r = r0; r < r1; ++r) {
    const char* row = reinterpret_cast<const char*>(B + r * ldb);
    for (int64_t off = 0; off < K * static_cast<int64_t>(sizeof(Src)); off += 64) prefetch_w(row + off, nta);
  }
}

// Writes the MB x NB accumulators' sums to C rows [i0, i0 + MB), columns [n, n + nb), through alpha
// and beta: 16 accumulators per reduce16, so every element is summed by the same tree.
template <int MB, int NB>
SEALKIT_AVX512 SEALKIT_INLINE void store_few_rows(const GemmArgs<float>& g, const __m512 (&acc)[MB][NB], int64_t i0,
                                                  int64_t n, int nb) {
  constexpr int F = MB * NB;
#pragma GCC unroll 2
  for (int base = 0; base < F; base += 16) {
    __m512 v[16];
#pragma GCC unroll 16
    for (int f = 0; f < 16; ++f)
      v[4 * (f % 4) + f / 4] = base + f < F ? acc[(base + f) / NB][(base + f) % NB] : _mm512_setzero_ps();
    if constexpr (NB == 4) {
      // Four rows of four columns: row base / 4 + r's sums are 128-bit lane r, written as one masked
      // vector (16 scalar read-modify-writes cost about as much as the block's reduction).
      alignas(64) float xs[16];
      _mm512_store_ps(xs, _mm512_mul_ps(_mm512_set1_ps(g.alpha), reduce16(v)));
      const __mmask8 m = __mmask8((1u << nb) - 1);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        if (base / 4 + r >= MB) break;
        float* c = g.C + (i0 + base / 4 + r) * g.ldc + n;
        __m128 x = _mm_load_ps(xs + 4 * r);
        if (g.beta != 0.f) x = _mm_mask3_fmadd_ps(_mm_set1_ps(g.beta), _mm_maskz_loadu_ps(m, c), x, 0xf);
        _mm_mask_storeu_ps(c, m, x);
      }
      continue;
    }
    alignas(64) float sums[16];
    _mm512_store_ps(sums, reduce16(v));  // sums[f] = accumulator base + f's sum
    for (int f = 0; f < 16 && base + f < F; ++f) {
      const int i = (base + f) / NB, j = (base + f) % NB;
      if (j >= nb) continue;
      float* c = g.C + (i0 + i) * g.ldc + n + j;
      const float x = g.alpha * sums[f];
      *c = g.beta == 0.f ? x : x + g.beta * *c;
    }
  }
}

// The vdpbf16ps kernel's driver: columns [n0, n1) of all rows, block by block, group by group (the
// first group also prefetches). `kernel` has a member template run<MB>(i0, n, nb, prefetch) whose
// prefetches stop at its n1 (the end of this thread's run of chunks, which may lie past this
// chunk's), and prefetch_rows. `warm`: the previous chunk of this run ended at n0, so its blocks have
// prefetched this one's first rows. Measured (with the f32-product kernel of the time, 16 k per
// pass) against blocks of 2 W rows x groups of 8 rows: level or slightly faster at 5-16 rows.
template <typename Kernel>
inline void few_rows_columns(int64_t M, int64_t n0, int64_t n1, bool warm, const Kernel& kernel) {
  // The blocks' own prefetches run kernel.ahead.rows ahead; at the start of a run the rows before
  // that distance are requested here, all at once, so the first blocks do not wait out the memory
  // latency row by row.
  if (!warm) kernel.prefetch_rows(n0, std::min(kernel.n1, n0 + kernel.ahead.rows));
  for (int64_t n = n0; n < n1; n += kFewRowsBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kFewRowsBlock, n1 - n));
    for (int64_t i0 = 0; i0 < M; i0 += kFewRowsGroup) {
      const bool first = i0 == 0;
      switch (std::min<int64_t>(kFewRowsGroup, M - i0)) {
        case 1: kernel.template run<1>(i0, n, nb, first); break;
        case 2: kernel.template run<2>(i0, n, nb, first); break;
        case 3: kernel.template run<3>(i0, n, nb, first); break;
        default: kernel.template run<4>(i0, n, nb, first); break;
      }
    }
  }
}

// ---- few rows in f32 products (AVX-512; a bf16 W is widened in registers) --------------------------
// Groups of up to 8 rows of A: one group up to 4 rows, against blocks of 4 W rows (16
// accumulators); 5-16 rows as one or two even groups of 4-8, against blocks of 3 W rows (24
// accumulators). Each W vector loaded (and widened) then feeds up to 8 FMAs, and the loop carries
// few enough instructions besides the FMAs to keep them issuing: K runs 32 at a time, one 64-byte
// line of a bf16 row, with the row pointers and the prefetch row fixed per block and a masked pass
// only for K's tail. A bf16 half-line widens in one vpermw that puts bf16 j in the high half of lane
// j (zero below): exact, and lane j still takes k = j mod 16, so the bits are those of the earlier
// kernel (4 W rows x groups of 4 rows, 16 k per pass, vpmovzxwd + shift per 16 k and W row; checked
// on 6,912 shapes). Against it on a 2-vCPU Intel Xeon with AVX-512 but no AVX512-BF16 (bench/gemv.ts,
// 576-wide bf16 W, 2 threads, 2 alternating runs): 8 rows 126-127 -> 184-197 GFLOP/s with W in
// cache, 97-98 -> 122-127 with W in memory; 16 rows 1.45-1.5x in cache; 4 rows 1.3x in cache; from
// memory, 1-4 rows are level (bandwidth-bound). SmolLM2-135M batch-8 decoding (2 alternating pairs
// of `seal bench decode --profile`): 280 / 232 -> 355 / 313 tokens/s.
constexpr int kFewRowsWideGroup = 8;

// One pass over k .. k + 32 (Full: all 32 in range; else the tail, K - k < 32 of them).
template <int MB, int NB, bool Full, typename Src>
SEALKIT_AVX512 SEALKIT_INLINE void few_rows_pass(const float* A, int64_t lda, const Src* const (&w)[NB], int64_t k,
                                                 int64_t left, __m512i idx_lo, __m512i idx_hi,
                                                 __m512 (&acc)[MB][NB]) {
  for (int half = 0; half < 2; ++half) {
    const __mmask16 m = Full ? __mmask16(0xffff) : mask16(left - 16 * half);
    if (!Full && m == 0) break;  // no step past K: the old 16-k kernel ran none either
    __m512 b[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      if constexpr (std::is_same_v<Src, uint16_t>) {
        const __m512i line = Full ? _mm512_loadu_si512(w[j] + k) : _mm512_maskz_loadu_epi16(mask32(left), w[j] + k);
        b[j] = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, half ? idx_hi : idx_lo, line));
      } else {
        b[j] = _mm512_maskz_loadu_ps(m, w[j] + k + 16 * half);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MB; ++i) {
      const __m512 a = _mm512_maskz_loadu_ps(m, A + i * lda + k + 16 * half);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
    }
  }
}

// Rows [i0, i0 + MB) of C, columns [n, n + nb) (nb <= NB): the block of W rows against MB rows of
// A. `pf`: the first of the NB rows to prefetch while passing (null: none).
template <int MB, int NB, typename Src>
SEALKIT_AVX512 void few_rows_block(const GemmArgs<float>& g, const Src* B, int64_t i0, int64_t n, int nb,
                                   const Src* pf, bool nta) {
  const int64_t K = g.K, lda = g.lda, ldb = g.ldb;
  const float* A = g.A + i0 * lda;
  const Src* w[NB];
  // Rows past nb repeat the block's last row (read, never stored), so the passes have no branches.
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) w[j] = B + (n + std::min(j, nb - 1)) * ldb;
  __m512 acc[MB][NB];
#pragma GCC unroll 32
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  // Dword lane j of idx_lo holds word index j in its high half (bf16 j of the line), idx_hi j + 16.
  const __m512i idx_lo = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 16);
  const __m512i idx_hi = _mm512_add_epi32(idx_lo, _mm512_set1_epi32(16 << 16));
  constexpr int64_t kLine = 64 / sizeof(Src);  // elements per cache line
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    if (pf) {
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j)
        for (int64_t l = 0; l < 32; l += kLine) prefetch_w(pf + j * ldb + k + l, nta);
    }
    few_rows_pass<MB, NB, true>(A, lda, w, k, 32, idx_lo, idx_hi, acc);
  }
  if (k < K) few_rows_pass<MB, NB, false>(A, lda, w, k, K - k, idx_lo, idx_hi, acc);
  store_few_rows<MB, NB>(g, acc, i0, n, nb);
}

// Columns [n0, n1) of all rows; prefetches stay below run_end (see few_rows_columns).
template <typename Src>
void few_rows_f32_columns(const GemmArgs<float>& g, const Src* B, int64_t n0, int64_t n1, int64_t run_end, bool warm,
                          FewRowsAhead ahead) {
  if (!warm) prefetch_w_rows(B, g.ldb, g.K, n0, std::min(run_end, n0 + ahead.rows), ahead.nta);
  const int64_t M = g.M;
  const int64_t groups = (M + kFewRowsWideGroup - 1) / kFewRowsWideGroup;
  const int64_t group = (M + groups - 1) / groups;  // 1-4 rows: one group; 5-16: even groups of 4-8
  const int nb_max = group <= 4 ? 4 : 3;
  for (int64_t n = n0; n < n1; n += nb_max) {
    const int nb = static_cast<int>(std::min<int64_t>(nb_max, n1 - n));
    const Src* pf = n + ahead.rows + nb_max <= run_end ? B + (n + ahead.rows) * g.ldb : nullptr;
    for (int64_t i0 = 0; i0 < M; i0 += group, pf = nullptr) {
      const int64_t mb = std::min(group, M - i0);
      if (nb_max == 4) {
        switch (mb) {
          case 1: few_rows_block<1, 4>(g, B, i0, n, nb, pf, ahead.nta); break;
          case 2: few_rows_block<2, 4>(g, B, i0, n, nb, pf, ahead.nta); break;
          case 3: few_rows_block<3, 4>(g, B, i0, n, nb, pf, ahead.nta); break;
          default: few_rows_block<4, 4>(g, B, i0, n, nb, pf, ahead.nta); break;
        }
      } else {
        switch (mb) {
          case 4: few_rows_block<4, 3>(g, B, i0, n, nb, pf, ahead.nta); break;
          case 5: few_rows_block<5, 3>(g, B, i0, n, nb, pf, ahead.nta); break;
          case 6: few_rows_block<6, 3>(g, B, i0, n, nb, pf, ahead.nta); break;
          case 7: few_rows_block<7, 3>(g, B, i0, n, nb, pf, ahead.nta); break;
          default: few_rows_block<8, 3>(g, B, i0, n, nb, pf, ahead.nta); break;
        }
      }
    }
  }
}

// Few rows of y_i = x W_i^T for n GEMMs sharing x (one, or a projection group) in one dispatch:
// all the W_i's rows, end to end, split across the pool. `columns(i, lo, hi, run_hi, warm)` runs
// rows [lo, hi) of W_i, prefetching below run_hi. Each element's arithmetic does not depend on where
// the chunks fall, so a group has the bits of its GEMMs run one by one.
template <typename Columns>
void few_rows_streams(const GemmArgs<float>* gs, int n, const Columns& columns) {
  int64_t total = 0;
  for (int i = 0; i < n; ++i) total += gs[i].N;
  parallel_streams(total, kFewRowsChunk, [&](const StreamChunk& c) {
    int64_t offset = 0;
    for (int i = 0; i < n; offset += gs[i].N, ++i) {
      const int64_t lo = std::max(c.begin, offset) - offset, hi = std::min(c.end, offset + gs[i].N) - offset;
      if (lo >= hi) continue;
      // Prefetches stay within this GEMM's W; the chunk before was warm for it only if it ended
      // inside it.
      const int64_t run_hi = std::min(c.run_end, offset + gs[i].N) - offset;
      const bool warm = c.continues && c.begin > offset;
      columns(i, lo, hi, run_hi, warm);
    }
  });
}

void few_rows_avx512(const GemmArgs<float>* gs, int n) {
  const FewRowsAhead ahead = few_rows_ahead();
  few_rows_streams(gs, n, [&](int i, int64_t lo, int64_t hi, int64_t run_hi, bool warm) {
    const GemmArgs<float>& g = gs[i];
    if (g.B.dtype == DType::BF16)
      few_rows_f32_columns(g, static_cast<const uint16_t*>(g.B.data), lo, hi, run_hi, warm, ahead);
    else
      few_rows_f32_columns(g, static_cast<const float*>(g.B.data), lo, hi, run_hi, warm, ahead);
  });
}

// ---- AVX512-BF16: vdpbf16ps on bf16 pairs (bf16 B only) -------------------------------------------
// The f32 AVX-512 kernel's 14 x 32 tile, stepping over K two at a time: per pair step, 2 loads of B,
// 14 broadcasts of A pairs and 28 vdpbf16ps (each 16 lanes x 2 products). Packing rounds A with
// vcvtne2ps2bf16 and copies B's bf16 bits; a packed slot (float-typed storage) holds one pair.
constexpr int kBf16Mr = 14, kBf16Nr = 32;
// Pairs per K block at most (576 k), blocks evened out (packed_gemm): up to a 36 KiB slice of the B
// strip, reused across row strips, and a 16 KiB slice of the A strip. On AMD Zen 5 (bench/ab.ts, 15
// rounds, SmolLM2's training shapes with the LoRA update on the tiles) 1.01-1.05x against blocks of
// 128 pairs; 64 pairs was 0.95-0.97x, 384 unevened about as 288 evened. K = 576 runs as one block.
constexpr int64_t kBf16Kc = 288;

SEALKIT_BF16 inline __m512bh as_bh(__m512 x) { return (__m512bh)_mm512_castps_si512(x); }
SEALKIT_BF16 inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

// A pair of A as a vdpbf16ps operand: a packed slot (float storage) or a 32-bit word of a bf16 row
// (GemmArgs::A_bf16), broadcast; a broadcast never alters the bits.
SEALKIT_BF16 SEALKIT_INLINE __m512bh broadcast_pair(const float* a) { return as_bh(_mm512_set1_ps(*a)); }
SEALKIT_BF16 SEALKIT_INLINE __m512bh broadcast_pair(const uint16_t* a) {
  uint32_t w;
  std::memcpy(&w, a, sizeof w);
  return as_bh(_mm512_set1_epi32(static_cast<int>(w)));
}

// The vdpbf16ps tile over kp pair steps: row i's pair at a[i * row_step] for the first step, then
// depth_step further on per step (a packed strip: 1 and 14 slots; bf16 rows: lda and 2 elements).
// A bf16 row's word k/2 holds (k, k + 1) exactly as a packed slot does, so both read the same pairs.
template <int R, typename A>
SEALKIT_BF16 SEALKIT_INLINE void bf16_tile(int64_t kp, const A* a, int64_t row_step, int64_t depth_step, const float* b,
                                           float* c, int64_t ldc, int rows, int cols, const Epilogue& ep) {
  __m512 acc[R][2];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kp; ++p) {
    const __m512bh b0 = as_bh(_mm512_loadu_ps(b)), b1 = as_bh(_mm512_loadu_ps(b + 16));
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const __m512bh ai = broadcast_pair(a + i * row_step);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
    a += depth_step;
    b += kBf16Nr;
  }
  store_tile32<R>(acc, c, ldc, rows, cols, ep);
}

// The first R rows of a packed 14-row strip, as micro_avx512_rows: R = 14 is the full tile; smaller R
// run a GEMM's last strip on its valid rows only (1024 tokens: 2 rows, the LM head's 256: 4), with
// each element's products and order those of the full tile, so the same bits.
template <int R>
SEALKIT_BF16 void micro_bf16_rows(int64_t kp, const float* a, const float* b, float* c, int64_t ldc, int rows, int cols,
                                  const Epilogue& ep) {
  bf16_tile<R>(kp, a, 1, kBf16Mr, b, c, ldc, rows, cols, ep);
}

// The same tile on R bf16 rows of A (lda elements apart; lda and the first pair even, so every word
// is aligned): no packed strip, the same products in the same order, so the same bits.
template <int R>
SEALKIT_BF16 void micro_bf16_rows_a16(int64_t kp, const uint16_t* a, int64_t lda, const float* b, float* c, int64_t ldc,
                                      int rows, int cols, const Epilogue& ep) {
  bf16_tile<R>(kp, a, lda, 2, b, c, ldc, rows, cols, ep);
}
using MicroKernelA16 = void (*)(int64_t kp, const uint16_t* a, int64_t lda, const float* b, float* c, int64_t ldc,
                                int rows, int cols, const Epilogue& ep);
template <size_t... R>
constexpr std::array<MicroKernelA16, sizeof...(R)> a16_kernels(std::index_sequence<R...>) {
  return {micro_bf16_rows_a16<static_cast<int>(R) + 1>...};
}
// Entry r - 1 runs r rows; the last, the full tile.
constexpr std::array<MicroKernelA16, kBf16Mr> kA16Kernels = a16_kernels(std::make_index_sequence<kBf16Mr>());

constexpr MicroKernel micro_bf16 = micro_bf16_rows<kBf16Mr>;

// A partial strip (rows < 14) of the vdpbf16ps kernel (micro_edge). Against the full tile on zero
// padding (bench/ab.ts, Zen 5, 15-21 rounds): the LM head, 256 x 49152 x 576 NT and its input
// gradient (a last strip of 4 rows), 1.04x and 1.03x; 1024-row shapes (2 rows) 1.00-1.03x.
struct Bf16Rows {
  template <int R>
  static constexpr MicroKernel kernel = micro_bf16_rows<R>;
};
constexpr MicroKernel micro_bf16_edge = micro_edge<Bf16Rows, kBf16Mr>;

// 32 consecutive floats (n of them valid, the rest read as zero) rounded to 16 bf16 pairs.
SEALKIT_BF16 inline __m512 round_pairs32(const float* p, int64_t n) {
  const __m512 lo = _mm512_maskz_loadu_ps(mask16(n), p), hi = _mm512_maskz_loadu_ps(mask16(n - 16), p + 16);
  return _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));  // lo's 16 bf16, then hi's
}

// The strip's values of one k (the first `mr` of 16, rs apart; zero past them).
SEALKIT_BF16 inline __m512 load_col16(const float* p, int64_t rs, int mr) {
  if (rs == 1) return _mm512_maskz_loadu_ps(mask16(mr), p);
  alignas(64) float t[16] = {};
  for (int i = 0; i < mr; ++i) t[i] = p[i * rs];
  return _mm512_load_ps(t);
}

// Pair p of 16 rows of a transposed A (row i's k at src[i * rs + k * cs], the first mr rows valid):
// rounds k = 2p and 2p + 1 (zero past K) together and interleaves their bf16 halves into pairs.
alignas(64) constexpr uint16_t kInterleave[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                  8,  24, 9,  25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
SEALKIT_BF16 inline __m512 round_col_pair(const float* src, int64_t rs, int64_t cs, int64_t p, int64_t K, int mr) {
  const __m512 e = 2 * p < K ? load_col16(src + 2 * p * cs, rs, mr) : _mm512_setzero_ps();
  const __m512 o = 2 * p + 1 < K ? load_col16(src + (2 * p + 1) * cs, rs, mr) : _mm512_setzero_ps();
  const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(o, e);  // e's 16 bf16, then o's
  return _mm512_castsi512_ps(_mm512_permutexvar_epi16(_mm512_load_si512(kInterleave), h));
}

// Pair steps [p0, p0 + 16) of a 14-row A strip from r, one register per row holding its 16 pairs
// (rows past the strip zero): transposed, then the first KP - p0 steps stored MR slots apart.
SEALKIT_BF16 SEALKIT_INLINE void store_strip_pairs(__m512 (&r)[16], int64_t p0, int64_t KP, float* dst) {
  const __mmask16 strip = __mmask16((1u << kBf16Mr) - 1);
  transpose16(r);
  const int64_t np = std::min<int64_t>(16, KP - p0);
#pragma GCC unroll 16
  for (int p = 0; p < 16; ++p) {
    if (p >= np) break;
    _mm512_mask_storeu_ps(dst + (p0 + p) * kBf16Mr, strip, r[p]);
  }
}

// Packs op(A) rows [i0, i0 + min(m, MR)) as ceil(K/2) pair steps of MR slots.
SEALKIT_BF16 void pack_a_bf16(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t m, int64_t K, float* dst) {
  constexpr int MR = kBf16Mr;
  const int mr = static_cast<int>(std::min<int64_t>(MR, m));
  const int64_t KP = (K + 1) / 2;
  const __mmask16 strip = __mmask16((1u << MR) - 1);
  const float* src = a + i0 * rs;
  if (cs == 1) {  // rows contiguous in k: round 32 k of each row to 16 pairs, transpose the pairs
    for (int64_t p0 = 0; p0 < KP; p0 += 16) {
      const int64_t nk = K - 2 * p0;
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) r[i] = i < mr ? round_pairs32(src + i * rs + 2 * p0, nk) : _mm512_setzero_ps();
      store_strip_pairs(r, p0, KP, dst);
    }
    return;
  }
  // Transposed A: one k's values of the strip are rs apart (contiguous when rs == 1). Round the two
  // k of a pair together, then interleave their bf16 halves into pairs.
  for (int64_t p = 0; p < KP; ++p) _mm512_mask_storeu_ps(dst + p * MR, strip, round_col_pair(src, rs, cs, p, K, mr));
}

// Packs rows [i0, i0 + min(m, MR)) of A given as bf16 rows (GemmArgs::A_bf16: lda elements apart, K
// and lda even) as pack_a_bf16 packs their f32 values: a row's 32-bit words are its pairs already,
// so only the transpose is left. (A bf16 denormal goes in as it is where packing f32 would flush it
// to zero; vdpbf16ps reads denormals as zero either way.)
SEALKIT_BF16 void pack_a_bf16_rows(const uint16_t* a, int64_t lda, int64_t i0, int64_t m, int64_t K, float* dst) {
  const int mr = static_cast<int>(std::min<int64_t>(kBf16Mr, m));
  const int64_t KP = K / 2;
  const uint16_t* src = a + i0 * lda;
  for (int64_t p0 = 0; p0 < KP; p0 += 16) {
    const __mmask32 km = mask32(K - 2 * p0);
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      r[i] = i < mr ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(km, src + i * lda + 2 * p0)) : _mm512_setzero_ps();
    store_strip_pairs(r, p0, KP, dst);
  }
}

// x rounded to bf16 as pack_a_bf16 rounds it (round_pairs32: the same instruction, so the same
// values): round_to_bf16's kernel.
SEALKIT_BF16 void round_to_bf16_avx512(const float* x, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) _mm512_storeu_si512(dst + i, _mm512_castps_si512(round_pairs32(x + i, 32)));
  if (i < n) _mm512_mask_storeu_epi16(dst + i, mask32(n - i), _mm512_castps_si512(round_pairs32(x + i, n - i)));
}

// act = silu(gate) * up for a fused gate/up tile (both in scratch, rows 32 floats apart; lanes past
// cols loaded as zeros and never stored), stored as bf16 rows ld elements apart: store_swiglu_tile's
// values rounded as round_to_bf16 rounds them. A row that is one whole aligned line is streamed
// when `stream` (see kStreamCBytes; the caller fences).
SEALKIT_BF16 void store_swiglu_tile_bf16(const float* gate, const float* up, uint16_t* act, int64_t ld, int rows,
                                         int cols, bool stream) {
  const __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
  const __mmask32 m = mask32(cols);
  for (int i = 0; i < rows; ++i, gate += 32, up += 32, act += ld) {
    const __m512 lo = swiglu512(_mm512_maskz_loadu_ps(m0, gate), _mm512_load_ps(up));
    const __m512 hi = swiglu512(_mm512_maskz_loadu_ps(m1, gate + 16), _mm512_load_ps(up + 16));
    const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    if (stream && cols == 32 && (reinterpret_cast<uintptr_t>(act) & 63) == 0)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(act), v);
    else
      _mm512_mask_storeu_epi16(act, m, v);
  }
}

// Packs op(B) columns [j0, j0 + min(n, NR)) as ceil(K/2) pair steps of NR slots (bf16 B only).
SEALKIT_BF16 void pack_b_bf16(const MatRef& b, int64_t j0, int64_t n, int64_t K, float* dst) {
  constexpr int NR = kBf16Nr;
  const int nr = static_cast<int>(std::min<int64_t>(NR, n));
  const int64_t KP = (K + 1) / 2;
  const uint16_t* base = static_cast<const uint16_t*>(b.data);
  if (b.cs == 1) {  // rows k of op(B) contiguous in n (dx = dy W): interleave rows 2p and 2p+1
    alignas(64) static constexpr uint16_t kLo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                     37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                     11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    alignas(64) static constexpr uint16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21,
                                                     53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58,
                                                     27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
    const __m512i lo = _mm512_load_si512(kLo), hi = _mm512_load_si512(kHi);
    const __mmask32 cm = mask32(nr);
    const uint16_t* src = base + j0;
    for (int64_t p = 0; p < KP; ++p) {
      const __m512i e = _mm512_maskz_loadu_epi16(cm, src + 2 * p * b.rs);
      const __m512i o = 2 * p + 1 < K ? _mm512_maskz_loadu_epi16(cm, src + (2 * p + 1) * b.rs) : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + p * NR, _mm512_permutex2var_epi16(e, lo, o));
      _mm512_storeu_si512(dst + p * NR + 16, _mm512_permutex2var_epi16(e, hi, o));
    }
    return;
  }
  if (b.rs != 1) {  // neither stride unit (the public orientations never do this): one pair at a time
    for (int64_t p = 0; p < KP; ++p)
      for (int c = 0; c < NR; ++c) {
        uint32_t v = 0;
        if (c < nr) {
          const uint16_t* col = base + (j0 + c) * b.cs;
          v = col[2 * p * b.rs];
          if (2 * p + 1 < K) v |= uint32_t(col[(2 * p + 1) * b.rs]) << 16;
        }
        std::memcpy(dst + p * NR + c, &v, sizeof v);
      }
    return;
  }
  // Columns of op(B) contiguous in k (y = x W^T, B stored as W): a pair is one 32-bit word of a W
  // row, so 16 rows x 16 words go through the f32 register transpose.
  const uint16_t* src = base + j0 * b.cs;
  for (int64_t p0 = 0; p0 < KP; p0 += 16) {
    const __mmask32 km = mask32(K - 2 * p0);
    const int64_t np = std::min<int64_t>(16, KP - p0);
#pragma GCC unroll 2
    for (int h = 0; h < NR; h += 16) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c)
        r[c] = h + c < nr ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(km, src + (h + c) * b.cs + 2 * p0))
                          : _mm512_setzero_ps();
      transpose16(r);
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) {
        if (p >= np) break;
        _mm512_storeu_ps(dst + (p0 + p) * NR + h, r[p]);
      }
    }
  }
}

// Few rows with bf16 W: A's rows are rounded to pairs once (`ap`, rows `aps` slots apart, zero past
// K), then each W row's bf16 pairs stream straight into vdpbf16ps, in few_rows_columns' blocks of 4
// W rows x groups of up to 4 rows (the f32-product kernel's 8-row groups were measured only on a CPU
// without AVX512-BF16).

// One pass of 32 k (a bf16 line of each W row): B is masked to K's tail when Tail; A's rounded rows
// are zero-padded to whole lines, so they need no mask.
template <int MB, int NB, bool Tail>
SEALKIT_BF16 SEALKIT_INLINE void few_rows_bf16_pass(const float* A, int64_t aps, const uint16_t* const (&w)[NB],
                                                    int64_t k, __mmask32 m, __m512 (&acc)[MB][NB]) {
  __m512bh b[NB];
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) b[j] = as_bh(Tail ? _mm512_maskz_loadu_epi16(m, w[j] + k) : _mm512_loadu_si512(w[j] + k));
#pragma GCC unroll 32
  for (int i = 0; i < MB; ++i) {
    const __m512bh a = as_bh(_mm512_loadu_ps(A + i * aps + k / 2));
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a, b[j]);
  }
}

// Rows [i0, i0 + MB) of C, columns [n, n + nb): the block of W rows against MB rounded rows of A.
// The row pointers and the prefetch rows are fixed per block and only K's tail runs masked, so the
// loop carries little besides its loads and vdpbf16ps (the per-k pointer arithmetic and row-count
// branches it replaced kept it front-end bound: 8 rows at 33 % of the vdpbf16ps peak with W in L2
// on Zen 5). Rows past nb repeat the block's last row (read, never stored); each accumulator sees the
// same products in the same order as before, so the bits are unchanged.
template <int MB>
SEALKIT_BF16 void few_rows_bf16(const GemmArgs<float>& g, const float* ap, int64_t aps, int64_t i0, int64_t n, int nb,
                                int64_t n1, bool prefetch, FewRowsAhead ahead) {
  constexpr int NB = kFewRowsBlock;
  const int64_t K = g.K, ldb = g.ldb;
  const uint16_t* B = static_cast<const uint16_t*>(g.B.data);
  const float* A = ap + i0 * aps;
  const uint16_t* w[NB];
  const uint16_t* pf[NB];
  // The group's first block prefetches the NB rows ahead.rows ahead, if all lie before n1.
  const bool pf_on = prefetch && n + ahead.rows + NB <= n1;
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) {
    w[j] = B + (n + std::min(j, nb - 1)) * ldb;
    pf[j] = B + (n + ahead.rows + j) * ldb;
  }
  __m512 acc[MB][NB];
#pragma GCC unroll 32
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  if (pf_on) {
    for (; k + 32 <= K; k += 32) {
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) prefetch_w(pf[j] + k, ahead.nta);
      few_rows_bf16_pass<MB, NB, false>(A, aps, w, k, 0, acc);
    }
    if (k < K)
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) prefetch_w(pf[j] + k, ahead.nta);
  } else {
    for (; k + 32 <= K; k += 32) few_rows_bf16_pass<MB, NB, false>(A, aps, w, k, 0, acc);
  }
  if (k < K) few_rows_bf16_pass<MB, NB, true>(A, aps, w, k, mask32(K - k), acc);
  store_few_rows<MB, NB>(g, acc, i0, n, nb);
}

struct FewRowsBf16 {
  const GemmArgs<float>& g;
  const float* ap;
  int64_t aps, n1;
  FewRowsAhead ahead;
  template <int MB>
  void run(int64_t i0, int64_t n, int nb, bool prefetch) const {
    few_rows_bf16<MB>(g, ap, aps, i0, n, nb, n1, prefetch, ahead);
  }
  void prefetch_rows(int64_t r0, int64_t r1) const {
    prefetch_w_rows(static_cast<const uint16_t*>(g.B.data), g.ldb, g.K, r0, r1, ahead.nta);
  }
};

SEALKIT_BF16 void round_rows_bf16(const GemmArgs<float>& g, float* ap, int64_t aps) {
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t k = 0; k < aps * 2; k += 32)
      _mm512_storeu_ps(ap + i * aps + k / 2, round_pairs32(g.A + i * g.lda + k, g.K - k));
}

// ---- few rows on coded weights (coded_weight.h; AVX512-BF16 + VBMI) --------------------------------
// The rows path above, reading W's 12-bit coded rows instead of its bf16 rows: each group of 64
// elements (96 bytes) is rebuilt in registers into the two 32-element bf16 vectors the rows path
// loads, which then meet the same rounded rows of A in the same vdpbf16ps order (k ascending, K's
// tail masked alike) and the same reduce16, so every C element has the rows path's bits. Decoding
// at batch 1 reads 3/4 of the bytes: on the Zen 5 VM a 230 MB weight streamed 1.32x faster (the
// same GB/s), while a 2 MB one, in L2, ran 0.8x (hence coded_weights_wanted's rule).

// Group g's low bytes and codes as elements [64 g, 64 g + 32) (a) and [64 g + 32, 64 g + 64) (b):
// each code becomes its high byte through the table (vpermb: the code's nibble, the other nibble
// ignored because the table repeats every 16 entries), then low and high bytes interleave into
// bf16 words (vpermt2b).
// Byte indices for vpermt2b: group byte i (low byte) and high-byte vector byte i (index 64 + i) into
// word i, for the group's first 32 elements (from 0) and its last 32 (from 32).
constexpr std::array<uint8_t, 64> coded_interleave(int from) {
  std::array<uint8_t, 64> idx{};
  for (int i = 0; i < 32; ++i) {
    idx[static_cast<size_t>(2 * i)] = static_cast<uint8_t>(from + i);
    idx[static_cast<size_t>(2 * i + 1)] = static_cast<uint8_t>(64 + i);
  }
  return idx;
}
alignas(64) constexpr std::array<uint8_t, 64> kCodedToA = coded_interleave(0), kCodedToB = coded_interleave(32);

// The decoding's constants in registers, made inside the kernels (never a local of baseline code,
// whose stack is not aligned for them).
struct CodedDecode {
  __m512i table, to_a, to_b;
};

SEALKIT_CODED SEALKIT_INLINE CodedDecode coded_decode_setup(const CodedWeight& cw) {
  return CodedDecode{_mm512_load_si512(cw.table), _mm512_load_si512(kCodedToA.data()),
                     _mm512_load_si512(kCodedToB.data())};
}

SEALKIT_CODED SEALKIT_INLINE void coded_decode_group(const CodedDecode& d, const uint8_t* grp, __m512i& a,
                                                     __m512i& b) {
  const __m512i lo = _mm512_loadu_si512(grp);
  const __m512i codes = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(grp + 64)));
  const __m512i hi_a = _mm512_permutexvar_epi8(codes, d.table);
  const __m512i hi_b = _mm512_permutexvar_epi8(_mm512_srli_epi16(codes, 4), d.table);
  a = _mm512_permutex2var_epi8(lo, d.to_a, hi_a);
  b = _mm512_permutex2var_epi8(lo, d.to_b, hi_b);
}

// Escaped elements of a group half (mask bit t: element t), in element order, take their high
// bytes from the row's escape list. Rare (coding gives up past 1 in kCodedMaxEscapeRatio).
SEALKIT_CODED __attribute__((noinline)) __m512i coded_patch(__m512i w, uint32_t mask, const uint8_t*& esc) {
  alignas(64) uint16_t words[32];
  _mm512_store_si512(words, w);
  for (; mask; mask &= mask - 1) {
    const int t = __builtin_ctz(mask);
    words[t] = static_cast<uint16_t>((words[t] & 0xffu) | (static_cast<unsigned>(*esc++) << 8));
  }
  return _mm512_load_si512(words);
}

// A decoded group's escaped elements (code 15) patched from esc, which moves past them.
SEALKIT_CODED SEALKIT_INLINE void coded_patch_group(const uint8_t* grp, __m512i& a, __m512i& b, const uint8_t*& esc) {
  const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(grp + 64));
  const __m256i lo = _mm256_set1_epi8(0x0f), hi = _mm256_set1_epi8(static_cast<char>(0xf0));
  const uint32_t ea = _mm256_cmpeq_epi8_mask(_mm256_and_si256(codes, lo), lo);
  const uint32_t eb = _mm256_cmpeq_epi8_mask(_mm256_and_si256(codes, hi), hi);
  if (ea) a = coded_patch(a, ea, esc);
  if (eb) b = coded_patch(b, eb, esc);
}

// coded_decode_group, then (Escapes) the escaped elements patched from esc, which moves past them.
template <bool Escapes>
SEALKIT_CODED SEALKIT_INLINE void coded_decode(const CodedDecode& d, const uint8_t* grp, __m512i& a, __m512i& b,
                                               const uint8_t*& esc) {
  coded_decode_group(d, grp, a, b);
  if constexpr (Escapes) coded_patch_group(grp, a, b, esc);
}

// Rows [i0, i0 + MB) of C, columns [n, n + nb): few_rows_bf16's block on coded rows. Escapes: some
// row of the block has escaped elements, so each row's groups that hold some (its escape_groups
// bits) are patched. Until 2026-12-07 every group of such a block compared its 64 codes with code 15;
// 36-71 % of SmolLM2-135M's blocks hold an escape (random weights, by K), and with the comparisons
// skipped outright (results wrong) batch-1 decoding ran 1.062-1.066x faster (`seal bench decode
// --ab-env`, 12 repeats x 3, Zen 5). The bits against the comparisons, one thread on a weight in L2
// (the arithmetic exposed; a temporary harness, 41 alternating rounds): 1.086x at 576 x 576, 1.100x at
// 1536 x 576, 1.192x at 576 x 1536. Decoding in process: 1.037x and 1.043x while it ran at 200-215
// tokens/s, and within the noise of the VM's slow states, when the memory hides the arithmetic. The
// strips' kernel (batch 2-16) keeps the comparisons: skipping them there measured level.
template <int MB, bool Escapes>
SEALKIT_CODED void few_rows_coded(const GemmArgs<float>& g, const CodedWeight& cw, const float* ap, int64_t aps,
                                  int64_t i0, int64_t n, int nb, int64_t n1, bool prefetch, FewRowsAhead ahead) {
  constexpr int NB = kFewRowsBlock;
  const int64_t K = g.K, rb = cw.row_bytes;
  const CodedDecode d = coded_decode_setup(cw);
  const float* A = ap + i0 * aps;
  const uint8_t* w[NB];
  const uint8_t* esc[NB];
  const uint64_t* esc_groups[NB];
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) {
    const int64_t r = n + std::min(j, nb - 1);
    w[j] = cw.data + r * rb;
    esc[j] = cw.escapes.data() + cw.escape_start[static_cast<size_t>(r)];
    esc_groups[j] = cw.escape_groups.data() + r * cw.escape_group_words;
  }
  // The block ahead.rows rows on, contiguous: each group asks for its share, 6 lines (4 x 96 bytes).
  const bool pf_on = prefetch && n + ahead.rows + NB <= n1;
  const char* pf = reinterpret_cast<const char*>(cw.data + (n + ahead.rows) * rb);
  __m512 acc[MB][NB];
#pragma GCC unroll 32
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += kCodedGroup) {
    if (pf_on)
#pragma GCC unroll 6
      for (int l = 0; l < 6; ++l) prefetch_w(pf + (k / kCodedGroup) * (NB * kCodedGroupBytes) + 64 * l, ahead.nta);
    __m512i wa[NB], wb[NB];
    const int64_t group = k / kCodedGroup;
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      const uint8_t* grp = w[j] + group * kCodedGroupBytes;
      coded_decode_group(d, grp, wa[j], wb[j]);
      if constexpr (Escapes)
        if ((esc_groups[j][group / 64] >> (group % 64)) & 1u) coded_patch_group(grp, wa[j], wb[j], esc[j]);
    }
    // The two halves as two of the rows path's 32-k passes; a half that reaches past K is masked as
    // its tail pass, one wholly past K skipped.
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const int64_t kh = k + 32 * h;
      if (kh >= K) break;
      // Past K a group holds zero bytes, code 0: finite values against A's zero padding, +-0 products
      // that leave the sums as they are, but masked to zeros as the rows path loads them all the same.
      __m512bh b[NB];
      const bool tail = K - kh < 32;
      const __mmask32 m = mask32(K - kh);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) {
        const __m512i v = h == 0 ? wa[j] : wb[j];
        b[j] = as_bh(tail ? _mm512_maskz_mov_epi16(m, v) : v);
      }
#pragma GCC unroll 32
      for (int i = 0; i < MB; ++i) {
        const __m512bh a = as_bh(_mm512_loadu_ps(A + i * aps + kh / 2));
#pragma GCC unroll 4
        for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a, b[j]);
      }
    }
  }
  store_few_rows<MB, NB>(g, acc, i0, n, nb);
}

constexpr int64_t kCodedRowsAheadNta = 8;

struct FewRowsCoded {
  const GemmArgs<float>& g;
  const CodedWeight& cw;
  const float* ap;
  int64_t aps, n1;
  FewRowsAhead ahead;
  template <int MB>
  void run(int64_t i0, int64_t n, int nb, bool prefetch) const {
    if (cw.escape_start[static_cast<size_t>(n + nb)] != cw.escape_start[static_cast<size_t>(n)])
      few_rows_coded<MB, true>(g, cw, ap, aps, i0, n, nb, n1, prefetch, ahead);
    else
      few_rows_coded<MB, false>(g, cw, ap, aps, i0, n, nb, n1, prefetch, ahead);
  }
  void prefetch_rows(int64_t r0, int64_t r1) const {
    const char* p = reinterpret_cast<const char*>(cw.data + r0 * cw.row_bytes);
    for (int64_t off = 0; off < (r1 - r0) * cw.row_bytes; off += 64) prefetch_w(p + off, ahead.nta);
  }
};

// The coded copy a GEMM may read instead of B (GemmArgs::coded_b): coded from this very B, for
// y = x W^T, of B's rows or (strips) of its packed strips in this GEMM's K blocks, and the switch on.
const CodedWeight* usable_coded_weight(const GemmArgs<float>& g, bool strips) {
  const CodedWeight* cw = g.coded_b;
  if (!cw || cw->source != g.B.data || !g.trans_b || g.B.dtype != DType::BF16 || cw->N != g.N || cw->K != g.K ||
      cw->ldb != g.ldb || cw->strips != strips)
    return nullptr;
  if (strips && cw->segment_groups != packed_strip_kc_depth(g.K)) return nullptr;
  return coded_weights_supported() && coded_weights_on() ? cw : nullptr;
}

// ---- AMX-BF16: tile products on the same pairs (bf16 B, CPUs with AMX) -----------------------------
// Where the CPU has AMX (and the OS grants the tile state), the bf16 path runs on tdpbf16ps instead
// of vdpbf16ps: a 32 x 32 tile of C in four 16 x 16 f32 tile registers, K in blocks of 16 pairs
// (32 k), two A tiles and two B tiles loaded per block. The numerics are the same contract (A
// rounded to bf16, exact bf16 products, f32 accumulation; the order of additions inside a tile
// product is the hardware's, fixed for a given CPU). B strips are the vdpbf16ps strips (pair p of
// the 32 columns in one 128-byte row; a B tile is 16 pair rows x 16 columns of it); A strips hold,
// per block of 16 pairs, the 32 rows one after another (a row's 16 pairs = one 64-byte tile row).
// Strips are padded with zero pairs to whole blocks.
constexpr int kAmxMr = 32, kAmxNr = kBf16Nr;
// Most pairs per K block (the driver evens the blocks out, multiples of 16): the model's K = 576
// (288 pairs) runs as one block, 1536 as two of 384. Fewer, deeper blocks measured faster than
// L1-sized ones (128-256 pairs): every block boundary drains the tile pipeline and moves C.
constexpr int64_t kAmxKc = 384;
constexpr int64_t kAmxBlock = 16;

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-7 all 16 rows x 64 bytes. The configuration is per-thread state; nothing else in the
// process configures tiles, so each thread loads it once and keeps it.
SEALKIT_AMX inline void amx_configure() {
  thread_local bool ready = false;
  if (ready) return;
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
  ready = true;
}

SEALKIT_AMX void micro_amx(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows, int cols,
                           const Epilogue& ep) {
  amx_configure();
  // A full tile with alpha = 1 accumulates in place: the tiles start from C (when beta = 1, as on
  // every K block after the first) or zero, and go straight back to C. Not when C is streamed
  // (ep.stream, see kStreamCBytes): a tile store is an ordinary store, each of whose lines is first
  // read from memory; through store_row32 the rows go out non-temporal, C is written without being
  // read. AMX Xeon (2 vCPUs; alpha = 1 leaves the bits as they were), `seal bench forward|train
  // --ab-env SEALKIT_STREAM_STORES=0`: scoring 1.20x (9 repeats), the LoRA step 1.09x (7); the LM
  // head alone (bench/ab.ts, builds alternated both ways) 1.22-1.28x.
  const bool direct = rows == kAmxMr && cols == kAmxNr && ep.alpha == 1.f && (!ep.load_c || ep.beta == 1.f) && !ep.stream;
  if (direct && ep.load_c) {
    _tile_loadd(0, c, ldc * 4);
    _tile_loadd(1, c + 16, ldc * 4);
    _tile_loadd(2, c + 16 * ldc, ldc * 4);
    _tile_loadd(3, c + 16 * ldc + 16, ldc * 4);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t p = 0; p < kc; p += kAmxBlock) {
    const float* ab = a + p * kAmxMr;  // rows 0-15, then rows 16-31, 64 bytes each
    const float* bb = b + p * kAmxNr;  // 16 pair rows of 32 columns, 128 bytes each
    if (p + kAmxBlock < kc) {  // the next block's 2 KiB of A and of B into L1 (measured 10-20% faster)
#pragma GCC unroll 32
      for (int l = 0; l < 32; ++l) {
        _mm_prefetch(reinterpret_cast<const char*>(ab + kAmxBlock * kAmxMr) + 64 * l, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(bb + kAmxBlock * kAmxNr) + 64 * l, _MM_HINT_T0);
      }
    }
    _tile_loadd(4, ab, 64);
    _tile_loadd(5, ab + 16 * kAmxBlock, 64);
    _tile_loadd(6, bb, 128);
    _tile_loadd(7, bb + 16, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  if (direct) {
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c + 16, ldc * 4);
    _tile_stored(2, c + 16 * ldc, ldc * 4);
    _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
    return;
  }
  alignas(64) float t[kAmxMr * kAmxNr];
  _tile_stored(0, t, kAmxNr * 4);
  _tile_stored(1, t + 16, kAmxNr * 4);
  _tile_stored(2, t + 16 * kAmxNr, kAmxNr * 4);
  _tile_stored(3, t + 16 * kAmxNr + 16, kAmxNr * 4);
  const __mmask16 m0 = mask16(cols), m1 = mask16(cols - 16);
  for (int i = 0; i < rows; ++i) store_row32(c + i * ldc, _mm512_load_ps(t + i * kAmxNr), _mm512_load_ps(t + i * kAmxNr + 16), m0, m1, ep);
}

// Packs op(A) rows [i0, i0 + min(m, 32)) as blocks of 16 pairs, each 32 rows x 16 pairs.
SEALKIT_BF16 void pack_a_amx(const float* a, int64_t rs, int64_t cs, int64_t i0, int64_t m, int64_t K, float* dst) {
  constexpr int MR = kAmxMr;
  const int mr = static_cast<int>(std::min<int64_t>(MR, m));
  const int64_t blocks = (K + 2 * kAmxBlock - 1) / (2 * kAmxBlock);
  const float* src = a + i0 * rs;
  if (cs == 1) {  // rows contiguous in k: a row's 32 k of a block round straight to its 16 pairs
    for (int64_t kb = 0; kb < blocks; ++kb) {
      float* d = dst + kb * MR * kAmxBlock;
      for (int i = 0; i < MR; ++i)
        _mm512_storeu_ps(d + i * kAmxBlock,
                         i < mr ? round_pairs32(src + i * rs + 2 * kAmxBlock * kb, K - 2 * kAmxBlock * kb)
                                : _mm512_setzero_ps());
    }
    return;
  }
  // Transposed A: 16 pairs x 16 rows at a time, then the f32 transpose puts each row's pairs together.
  for (int64_t kb = 0; kb < blocks; ++kb) {
    float* d = dst + kb * MR * kAmxBlock;
    for (int g = 0; g < MR; g += 16) {
      __m512 r[16];
      for (int q = 0; q < 16; ++q) r[q] = round_col_pair(src + g * rs, rs, cs, kb * kAmxBlock + q, K, mr - g);
      transpose16(r);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(d + (g + i) * kAmxBlock, r[i]);
    }
  }
}

// The vdpbf16ps B strip, zero pairs appended to a whole number of blocks.
SEALKIT_BF16 void pack_b_amx(const MatRef& b, int64_t j0, int64_t n, int64_t K, float* dst) {
  pack_b_bf16(b, j0, n, K, dst);
  const int64_t kp = (K + 1) / 2, kd = (kp + kAmxBlock - 1) / kAmxBlock * kAmxBlock;
  std::memset(dst + kp * kAmxNr, 0, sizeof(float) * (kd - kp) * kAmxNr);
}

// ---- AMX few rows: y = x W^T for up to 16 rows of x (decoding's batches) ----------------------------
// With AMX, the few-rows GEMMs of 2-16 rows (kAmxFewRowsMin) run as tile products in which W itself
// is the A operand: a tile of W is 16 of its rows x 32 k (one 64-byte line of each row), loaded
// straight from W with the row stride, and x, rounded to bf16 once per call, is the B operand (per
// block of 16 pairs, pair row p holds pair p of each of x's rows: 16 columns, zero past M). C's tile
// is then y^T for 16 W rows x all rows of x, so W is read once per call whatever M is, and the
// multiply costs nothing next to W's stream. vdpbf16ps issues at half the FMA rate on Intel, so
// there batch-8 decoding was bound by the dot products, not by W's bytes. The numerics are the bf16
// contract (x rounded, exact products, f32 sums; inside a tile product in the hardware's order, the
// 32-k blocks in sequence), the same on every thread count and chunking.
constexpr int64_t kAmxFewRowsMin = 2;
// W rows per block: two tiles of 16, each with its own accumulator.
constexpr int64_t kAmxFewRowsBlock = 32;

// x's rows rounded to bf16 pairs as B tiles: block kb (32 k) at xb + 256 kb, its pair row p the 16
// slots from 16 p, slot m = pair 16 kb + p of row m (zero past M and past K).
SEALKIT_AMX void pack_x_tiles(const GemmArgs<float>& g, float* xb, int64_t blocks) {
  for (int64_t kb = 0; kb < blocks; ++kb) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int m = 0; m < 16; ++m)
      r[m] = m < g.M ? round_pairs32(g.A + m * g.lda + 32 * kb, g.K - 32 * kb) : _mm512_setzero_ps();
    transpose16(r);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) _mm512_storeu_ps(xb + kb * 256 + p * 16, r[p]);
  }
}

// A tile of W that is not whole (fewer than 16 rows left, or K's last 32 k) goes through `stage`:
// its rows and k copied, zeros elsewhere, so no load reads past W.
inline const uint16_t* stage_w_tile(uint16_t* stage, const uint16_t* w, int64_t ldb, int64_t rows, int64_t k) {
  std::memset(stage, 0, 16 * 32 * sizeof(uint16_t));
  for (int64_t r = 0; r < rows; ++r) std::memcpy(stage + r * 32, w + r * ldb, k * sizeof(uint16_t));
  return stage;
}

// Where a tile of rows [0, rows) of W at w, k [0, min(32, k_left)), loads from: W itself (row stride
// ldb) when whole, else `stage` (64 bytes a row). (_tile_loadd takes its tile number as a literal:
// unoptimised builds paste it into the assembly.)
struct TileSource {
  const void* p;
  int64_t stride;
};
inline TileSource w_tile_source(const uint16_t* w, int64_t ldb, int64_t rows, int64_t k_left, uint16_t* stage) {
  if (rows == 16 && k_left >= 32) return {w, ldb * static_cast<int64_t>(sizeof(uint16_t))};
  return {stage_w_tile(stage, w, ldb, rows, std::min<int64_t>(32, k_left)), 64};
}

// W rows [n, n + nb) (nb <= 32) against all of x: y rows 0..M-1, columns [n, n + nb), through alpha
// and beta. Each block of k also asks for the same line of the next block's rows (below pf_hi).
SEALKIT_AMX void few_rows_amx_block(const GemmArgs<float>& g, const float* xb, int64_t n, int64_t nb, int64_t pf_hi,
                                    bool nta) {
  const uint16_t* W = static_cast<const uint16_t*>(g.B.data);
  const int64_t K = g.K, ldb = g.ldb, blocks = (K + 31) / 32;
  const uint16_t* w0 = W + n * ldb;
  const uint16_t* w1 = w0 + 16 * ldb;
  const int64_t rows0 = std::min<int64_t>(16, nb), rows1 = nb - rows0;
  const int64_t pf_rows = std::clamp<int64_t>(pf_hi - (n + kAmxFewRowsBlock), 0, kAmxFewRowsBlock);
  const uint16_t* pf = W + (n + kAmxFewRowsBlock) * ldb;
  alignas(64) uint16_t stage[16 * 32];
  _tile_zero(0);
  _tile_zero(1);
  for (int64_t kb = 0; kb < blocks; ++kb) {
    for (int64_t r = 0; r < pf_rows; ++r) prefetch_w(pf + r * ldb + 32 * kb, nta);
    _tile_loadd(4, xb + kb * 256, 64);
    const TileSource a0 = w_tile_source(w0 + 32 * kb, ldb, rows0, K - 32 * kb, stage);
    _tile_loadd(2, a0.p, a0.stride);
    _tile_dpbf16ps(0, 2, 4);
    if (rows1 > 0) {
      const TileSource a1 = w_tile_source(w1 + 32 * kb, ldb, rows1, K - 32 * kb, stage);
      _tile_loadd(3, a1.p, a1.stride);
      _tile_dpbf16ps(1, 3, 4);
    }
  }
  alignas(64) float t[2][16 * 16];
  _tile_stored(0, t[0], 64);
  if (rows1 > 0) _tile_stored(1, t[1], 64);
  for (int j = 0; j < (rows1 > 0 ? 2 : 1); ++j) {
    __m512 r[16];  // r[i]: W row i of the tile against x's 16 columns; transposed, r[m] is y row m's
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(t[j] + i * 16);
    transpose16(r);
    const __mmask16 mask = mask16(j == 0 ? rows0 : rows1);
    for (int64_t m = 0; m < g.M; ++m) {
      float* c = g.C + m * g.ldc + n + 16 * j;
      __m512 y = _mm512_mul_ps(_mm512_set1_ps(g.alpha), r[m]);
      if (g.beta != 0.f) y = _mm512_fmadd_ps(_mm512_set1_ps(g.beta), _mm512_maskz_loadu_ps(mask, c), y);
      _mm512_mask_storeu_ps(c, mask, y);
    }
  }
}

// Rows [lo, hi) of W, prefetching below run_hi; `warm`: the chunk before prefetched this one's first
// block.
SEALKIT_AMX void few_rows_amx_columns(const GemmArgs<float>& g, const float* xb, int64_t lo, int64_t hi, int64_t run_hi,
                                      bool warm, bool nta) {
  amx_configure();
  if (!warm)
    prefetch_w_rows(static_cast<const uint16_t*>(g.B.data), g.ldb, g.K, lo, std::min(run_hi, lo + kAmxFewRowsBlock), nta);
  for (int64_t n = lo; n < hi; n += kAmxFewRowsBlock)
    few_rows_amx_block(g, xb, n, std::min(kAmxFewRowsBlock, hi - n), run_hi, nta);
}

#pragma GCC diagnostic pop

#endif  // SEALKIT_X86

KernelSpec select_kernel(Isa isa) {
#if SEALKIT_X86
  switch (isa) {
    case Isa::Avx512:
    case Isa::Avx512Bf16:
      return {kAvx512Mr, kAvx512Nr, kAvx512Kc, micro_avx512, pack_a_avx512, pack_b_avx512, false, 1, micro_avx512_edge};
    case Isa::Avx2:
      return {kAvx2Mr, kAvx2Nr, 256, micro_avx2, pack_a_generic<kAvx2Mr>, pack_b_generic<kAvx2Nr>};
    case Isa::Scalar:
      break;
  }
#endif
  return {kScalarMr, kScalarNr, 256, micro_scalar, pack_a_generic<kScalarMr>, pack_b_generic<kScalarNr>};
}

#if SEALKIT_X86
// The vdpbf16ps kernel: bf16 B under AVX512-BF16 where AMX is not used.
constexpr KernelSpec kBf16Spec{kBf16Mr, kBf16Nr, kBf16Kc, micro_bf16, pack_a_bf16, pack_b_bf16, true, 1, micro_bf16_edge};
// The AMX kernel: bf16 B under AVX512-BF16 where the CPU has AMX (use_amx).
constexpr KernelSpec kAmxSpec{kAmxMr, kAmxNr, kAmxKc, micro_amx, pack_a_amx, pack_b_amx, true, kAmxBlock};
#endif

bool packed_weights_on() { return switch_on("SEALKIT_PACKED_WEIGHTS"); }
bool stream_stores_on() { return switch_on("SEALKIT_STREAM_STORES"); }

// ---- driver -------------------------------------------------------------------------------------
// Sizes in floats. Packed A covers a chunk of rows over all K, the B panel a chunk of columns over
// all K; a task's rows of packed A should stay in L2 while it sweeps its B strips.
constexpr int64_t kPackedABudget = int64_t(4) << 20;
constexpr int64_t kPanelBudget = int64_t(1) << 20;
constexpr int64_t kTaskABudget = int64_t(96) << 10;
// Packed A up to this size (1 MB: the LM head's 256 rows at K = 576, or at a K slab's depth) stays in
// each core's L2 across all of B, so one task can run a B strip against every row: the task then packs
// its own strips, one at a time, just before using them (see packed_gemm).
constexpr int64_t kLocalBABudget = int64_t(256) << 10;
// A B panel up to this size (256 KB: tiny models' projections) stays in L2 next to a task's rows of
// A, so each task can pack its own rows and run them against all of B (see packed_gemm). Larger
// panels measured slower that way (SmolLM2's 576 x 192: 5 %).
constexpr int64_t kLocalAPanelBudget = int64_t(64) << 10;
// Depth of the K slabs a long-K GEMM runs as, in packed depth steps (k on the f32 kernels, bf16
// pairs on the vdpbf16ps ones: 512 or 1,024 k), a multiple of the f32 kernels' K blocks (256 steps);
// K up to twice this runs unsplit. A shallower slab lets a task's row group of
// packed A (kTaskABudget) hold more rows, so each B strip, read from L3, feeds more tiles: at
// K = 1536 (SmolLM2's down projection and the gate/up input gradient) a group held 56 rows at depth
// 1536 and 182 at 512. Against 1024 (bench/ab.ts, 2 threads, warm operands, 11-15 rounds):
// 1024 x 576 x 1536 NT and NN 1.05-1.10x, 256-512 rows 1.13-1.15x, TN weight gradients at K 1024-2048
// 1.01-1.08x, the LM head's input gradient (K 49,152) 0.97-1.05x; a SmolLM2-135M LoRA step 1.013x.
// Counted in pairs, the same depth keeps K = 1,536 unsplit on the vdpbf16ps kernels: against 512-k
// slabs there (AMD Zen 5, 15 rounds) 1024 x 576 x 1536 NT and NN 1.07-1.17x, with the LoRA update on
// the tiles 1.14-1.17x; the LM head's input gradient level (0.996x).
constexpr int64_t kSlabSteps = 512;
constexpr int64_t kAmxSlabsOver = 8;
// A C of at least this many bytes (more than the cores' L2 together) is written with non-temporal
// stores where each tile is written once: a normal store to a line not in cache first reads it from
// memory (read for ownership) and its tile's last stores wait on those reads; streaming skips both,
// and C would not stay in cache for its reader anyway. SmolLM2's LM head (50 MB of logits per
// sequence) 1.13x (bench/ab.ts --packed-b, Zen 5, 9 rounds; the other forward shapes level); whole
// steps (`seal bench --ab-env SEALKIT_STREAM_STORES=0`, 9 repeats each): scoring 1.02-1.03x (0.5 %
// of it from shapes other than the LM head), LoRA step 1.02-1.04x. Tiny models' C (at most 1.5 MB)
// stays below: streamed, its reader would fetch from memory what it finds in L2 (0.99-1.00x).
constexpr int64_t kStreamCBytes = int64_t(2) << 20;

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
  std::vector<float> u, v;  // a fused low-rank update's packed U and V
  // What a task packs for itself (never the caller's a or b): one B strip, or a row group's A and U.
  std::vector<float> own, own_u;
  // A fused gate/up pair's AMX B strips, packed per call where no packed weight serves.
  std::vector<float> pair;
  // GemmArgs::A_bf16 widened to f32 for a path that does not read bf16 rows.
  std::vector<float> a_wide;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

bool local_packing_allowed() { return switch_on("SEALKIT_LOCAL_PACK"); }

#if SEALKIT_X86
// AMX-BF16 for the bf16 path: the CPU has AMX-TILE and AMX-BF16 (CPUID.7.0:EDX bits 24 and 22) and
// Linux grants this process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, once). Setting
// SEALKIT_AMX=0 in the environment (read per call) falls back to vdpbf16ps, for tests and benchmarks.
bool amx_available() {
  static const bool ok = [] {
#if defined(__linux__)
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    if (!(edx & (1u << 22)) || !(edx & (1u << 24))) return false;
    constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
    unsigned long perm = 0;
    return syscall(SYS_arch_prctl, kArchGetXcompPerm, &perm) == 0 && (perm & (1ul << kXfeatureXtiledata));
#else
    return false;
#endif
  }();
  return ok;
}

bool use_amx() {
  return amx_available() && switch_on("SEALKIT_AMX");
}

// Whether few rows of bf16 W (M of them) run on AMX tiles (few_rows_amx_columns) rather than
// vdpbf16ps. SEALKIT_AMX_FEW_ROWS=0 (read per call) keeps them on vdpbf16ps, for tests and benchmarks.
bool use_amx_few_rows(int64_t M) {
  return M >= kAmxFewRowsMin && use_amx() && switch_on("SEALKIT_AMX_FEW_ROWS");
}

// ---- few rows from packed strips (AVX512-BF16, 2-16 rows) ----------------------------------------
// Batched decoding's GEMMs (2-16 rows of x, a bf16 W with a packed copy) read W's vdpbf16ps strips
// instead of its rows, through the packed GEMM's own micro-kernel (micro_bf16_rows at the batch's
// row count) and K blocks: per pair of k, a strip's 32 columns are two vectors and each row of x one
// broadcast pair, so 2 x M vdpbf16ps take M + 2 loads and no sums across lanes, and each thread
// streams one contiguous strip after another. The rows path instead runs blocks of 4 W rows x
// groups of 4 rows of x, a reduce16 per block and group, the second group re-reading the block.
// Each C element is then what the packed GEMM computes for it, so batched decoding has the bits of
// the same rows scored in a longer batch. One row stays on the rows path, which streams faster alone.
// Measured (Zen 5, 2 threads, in-process A/B of whole generations, `seal bench decode --gen-batch B
// --ab-env SEALKIT_FEW_ROWS_PACKED=0`, 8 repeats): SmolLM2-135M batch 8 1.20x (968 against 811
// tokens/s; another run, on a quieter bus, 1.03x), batch 2 1.20x, 4 1.11x, 12 1.05-1.09x, 14
// 1.19-1.24x, 16 1.08x; the tiny preset's 16 prompts under 16 adapters level. A prototype of the
// kernel ran 8 rows at 1,010 GFLOP/s with W in L2 (93 % of the vdpbf16ps peak) where the rows
// path ran 546-680.
constexpr int64_t kFewRowsPackedMax = 16;
// Strips per chunk of parallel_streams (64 columns, as kFewRowsChunk's 64 rows).
constexpr int64_t kFewRowsPackedChunk = 2;

// Strips [s0, s1) of one GEMM (its packed weight pw) against x's rows packed as A strips of `per`
// rows (ap, one after another, Kd pair steps of kBf16Mr slots each), in packed_gemm's K blocks.
void few_rows_strips(const GemmArgs<float>& g, const PackedWeight& pw, const float* ap, int64_t per, int64_t s0,
                     int64_t s1) {
  const int64_t Kd = packed_depth(kBf16Spec, g.K), kc_depth = packed_kc_depth(kBf16Spec, Kd);
  for (int64_t s = s0; s < s1; ++s) {
    const float* strip = pw.strips + s * pw.strip_stride;
    const int64_t col = s * kBf16Nr;
    const int cols = static_cast<int>(std::min<int64_t>(kBf16Nr, g.N - col));
    for (int64_t k0 = 0; k0 < Kd; k0 += kc_depth) {
      const Epilogue ep{g.alpha, k0 == 0 ? g.beta : 1.f, k0 != 0 || g.beta != 0.f};
      for (int64_t r = 0; r < g.M; r += per) {
        const int rows = static_cast<int>(std::min(per, g.M - r));
        micro_bf16_edge(std::min(kc_depth, Kd - k0), ap + (r / per) * Kd * kBf16Mr + k0 * kBf16Mr,
                        strip + k0 * kBf16Nr, g.C + r * g.ldc + col, g.ldc, rows, cols, ep);
      }
    }
  }
}

const PackedWeight* usable_packed_weight(const GemmArgs<float>& g, const KernelSpec& ks);

// Whether M rows under AVX512-BF16 read a bf16 W's packed strips when it has them: not where bf16
// GEMMs run on AMX tiles (their packed copies hold AMX's strips, and 2-16 rows have their own tile
// kernel). SEALKIT_FEW_ROWS_PACKED=0 (read per call) keeps them on W's rows, for tests and benchmarks.
bool use_few_rows_packed(int64_t M) {
  return M >= 2 && M <= kFewRowsPackedMax && !use_amx() && switch_on("SEALKIT_FEW_ROWS_PACKED");
}

// The same from W's coded strips (coded_weight.h; AVX512-VBMI): each pair step's 64 bf16 words are
// rebuilt in registers (coded_decode_group, escapes patched) into the two vectors micro_bf16_rows
// loads from the packed strip, then the same vdpbf16ps in the same order, so the same bits; 3/4 of
// the bytes. R rows (1-14) of a packed A strip against one coded strip's K block of kp pair steps;
// esc: the block's escaped high bytes (Escapes: it has some).
template <int R, bool Escapes>
SEALKIT_CODED void micro_bf16_coded_rows(int64_t kp, const float* a, const uint8_t* b, const CodedWeight& cw,
                                         const uint8_t* esc, float* c, int64_t ldc, int rows, int cols,
                                         const Epilogue& ep, uintptr_t pf, bool nta) {
  const CodedDecode d = coded_decode_setup(cw);
  __m512 acc[R][2];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kp; ++p, b += kCodedGroupBytes) {
    if (pf) {  // the stream ahead: 2 lines per 96-byte step cover it
      prefetch_w(reinterpret_cast<const char*>(pf + p * kCodedGroupBytes), nta);
      prefetch_w(reinterpret_cast<const char*>(pf + p * kCodedGroupBytes + 64), nta);
    }
    __m512i w0, w1;
    coded_decode<Escapes>(d, b, w0, w1, esc);
    const __m512bh b0 = as_bh(w0), b1 = as_bh(w1);
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const __m512bh ai = as_bh(_mm512_set1_ps(a[i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
    a += kBf16Mr;
  }
  store_tile32<R>(acc, c, ldc, rows, cols, ep);
}

using CodedMicro = void (*)(int64_t, const float*, const uint8_t*, const CodedWeight&, const uint8_t*, float*, int64_t,
                            int, int, const Epilogue&, uintptr_t, bool);
template <bool Escapes, size_t... R>
constexpr std::array<CodedMicro, sizeof...(R)> coded_micro_table(std::index_sequence<R...>) {
  return {micro_bf16_coded_rows<static_cast<int>(R) + 1, Escapes>...};
}

// How far ahead in a thread's stream of coded strips the first row group's pass prefetches (into
// L1 with the non-temporal hint where decoding takes it, else into L2). The packed strips' path
// leaves their stream to the hardware prefetcher; the coded one, with a quarter fewer bytes per
// step, waited on memory. SmolLM2-135M batch 8 on the Zen 5 VM (seal bench decode --ab-env, 10
// repeats each, against none): 2 KiB 1.075, 4 KiB 1.187, 8 KiB 1.255-1.342, 16 KiB 1.228-1.287,
// 24 KiB 1.218, 32 KiB 1.268.
constexpr int64_t kCodedStripsAheadBytes = 16384;

// few_rows_strips on W's coded strips: strips [s0, s1) against x's rows packed as A strips of `per`.
void few_rows_coded_strips(const GemmArgs<float>& g, const CodedWeight& cw, const float* ap, int64_t per, int64_t s0,
                           int64_t s1, bool nta) {
  static constexpr auto plain = coded_micro_table<false>(std::make_index_sequence<kBf16Mr>());
  static constexpr auto escapes = coded_micro_table<true>(std::make_index_sequence<kBf16Mr>());
  const int64_t Kd = packed_depth(kBf16Spec, g.K), kc_depth = cw.segment_groups;
  // Prefetches stay inside the coded strips (addresses as integers: they may point past a run).
  const uintptr_t end = reinterpret_cast<uintptr_t>(cw.data) + static_cast<uintptr_t>(cw.row_bytes * ((g.N + 31) / 32));
  for (int64_t s = s0; s < s1; ++s) {
    const uint8_t* strip = cw.data + s * cw.row_bytes;
    const int64_t col = s * kBf16Nr;
    const int cols = static_cast<int>(std::min<int64_t>(kBf16Nr, g.N - col));
    for (int64_t k0 = 0, seg = 0; k0 < Kd; k0 += kc_depth, ++seg) {
      const Epilogue ep{g.alpha, k0 == 0 ? g.beta : 1.f, k0 != 0 || g.beta != 0.f};
      const uint32_t e0 = cw.escape_start[static_cast<size_t>(s * cw.segments + seg)];
      const uint32_t e1 = cw.escape_start[static_cast<size_t>(s * cw.segments + seg + 1)];
      for (int64_t r = 0; r < g.M; r += per) {
        const int rows = static_cast<int>(std::min(per, g.M - r));
        const int64_t kp = std::min(kc_depth, Kd - k0);
        const uintptr_t here = reinterpret_cast<uintptr_t>(strip + k0 * kCodedGroupBytes);
        const uintptr_t ahead = here + static_cast<uintptr_t>(kCodedStripsAheadBytes);
        const uintptr_t pf = r == 0 && ahead + static_cast<uintptr_t>(kp * kCodedGroupBytes) <= end ? ahead : 0;
        (e1 != e0 ? escapes : plain)[static_cast<size_t>(rows - 1)](
            kp, ap + (r / per) * Kd * kBf16Mr + k0 * kBf16Mr, strip + k0 * kCodedGroupBytes, cw,
            cw.escapes.data() + e0, g.C + r * g.ldc + col, g.ldc, rows, cols, ep, pf, nta);
      }
    }
  }
}

// Few rows of y_i = x W_i^T with bf16 W_i under AVX512-BF16, for n GEMMs sharing x (one, or a
// projection group): rounds x's rows to pairs once (in the caller's scratch), then streams all the
// W_i's rows, or their packed strips (few_rows_strips), in one dispatch.
void few_rows_bf16(const GemmArgs<float>* gs, int n) {
  const GemmArgs<float>& g = gs[0];
  if (use_amx_few_rows(g.M)) {
    const int64_t blocks = (g.K + 31) / 32;
    std::vector<float>& buf = scratch().a;
    if (buf.size() < static_cast<size_t>(blocks * 256)) buf.resize(blocks * 256);
    float* xb = buf.data();
    pack_x_tiles(g, xb, blocks);
    const bool nta = few_rows_ahead().nta;
    few_rows_streams(gs, n, [&](int i, int64_t lo, int64_t hi, int64_t run_hi, bool warm) {
      few_rows_amx_columns(gs[i], xb, lo, hi, run_hi, warm, nta);
    });
    return;
  }
  if (use_few_rows_packed(g.M)) {
    constexpr int kMaxGemms = 4;  // decoding's groups: q/k/v, gate/up
    const PackedWeight* pws[kMaxGemms];
    bool packed = n <= kMaxGemms;
    for (int i = 0; packed && i < n; ++i) packed = (pws[i] = usable_packed_weight(gs[i], kBf16Spec)) != nullptr;
    if (packed) {
      // x's rows as packed A strips, then all the GEMMs' strips end to end, split across the pool as
      // the rows path splits W's rows.
      std::vector<float>& buf = scratch().a;
      // Rows evened out over the fewest A strips (16 rows: 8 + 8, not 14 + 2, whose 2-row tile is
      // bound by vdpbf16ps' latency). Which strip a row is in does not change its bits.
      const int64_t Kd = packed_depth(kBf16Spec, g.K), a_strips = (g.M + kBf16Mr - 1) / kBf16Mr;
      const int64_t per = (g.M + a_strips - 1) / a_strips;
      const size_t need = static_cast<size_t>(a_strips * Kd * kBf16Mr);
      if (buf.size() < need) buf.resize(need);
      for (int64_t r = 0; r < a_strips; ++r)
        pack_a_bf16(g.A, g.lda, 1, r * per, std::min(per, g.M - r * per), g.K, buf.data() + r * Kd * kBf16Mr);
      int64_t first[kMaxGemms + 1] = {};
      for (int i = 0; i < n; ++i) first[i + 1] = first[i] + (gs[i].N + kBf16Nr - 1) / kBf16Nr;
      // The strips' coded copies where every GEMM of the group has one.
      const CodedWeight* cws[kMaxGemms];
      bool coded = true;
      for (int i = 0; coded && i < n; ++i) coded = (cws[i] = usable_coded_weight(gs[i], true)) != nullptr;
      const bool nta = few_rows_ahead().nta;
      parallel_streams(first[n], kFewRowsPackedChunk, [&](const StreamChunk& c) {
        for (int i = 0; i < n; ++i) {
          const int64_t lo = std::max(c.begin, first[i]), hi = std::min(c.end, first[i + 1]);
          if (lo >= hi) continue;
          if (coded) few_rows_coded_strips(gs[i], *cws[i], buf.data(), per, lo - first[i], hi - first[i], nta);
          else few_rows_strips(gs[i], *pws[i], buf.data(), per, lo - first[i], hi - first[i]);
        }
      });
      return;
    }
  }
  const int64_t aps = (g.K + 31) / 32 * 16;  // pair slots per row: whole 32-k blocks, zero-padded
  std::vector<float>& buf = scratch().a;
  if (buf.size() < static_cast<size_t>(g.M * aps)) buf.resize(g.M * aps);
  float* ap = buf.data();
  round_rows_bf16(g, ap, aps);
  const FewRowsAhead ahead = few_rows_ahead();
  // W's rows, or their coded copies where every GEMM of the group has one.
  constexpr int kMaxCoded = 4;
  const CodedWeight* cws[kMaxCoded];
  bool coded = n <= kMaxCoded;
  for (int i = 0; coded && i < n; ++i) coded = (cws[i] = usable_coded_weight(gs[i], false)) != nullptr;
  if (coded) {
    // With the non-temporal hint, 8 rows ahead rather than the next block (4): the coded rows are
    // 3/4 as long, so a block in flight carries fewer bytes. SmolLM2-135M batch 1 on the Zen 5 VM
    // (seal bench decode --ab-env, 10-12 repeats each): when this path came, against 4 ahead, 16
    // ahead 1.064-1.096, 12 1.028-1.092, 8 1.015-1.052, 24-48 0.93-0.99, so 16 was taken; on
    // 2026-12-07 (weights on huge pages since), against 16, 8 ahead 1.03-1.11 in 13 runs out of 13
    // (median 1.06; read probes 27-61 GB/s, vCPUs sharing a cache and apart), 6 and 10 alike, and
    // against 8: 6 0.93-1.00, 10 0.98-1.00, 12 0.97-0.98, 16 0.92-0.93.
    const FewRowsAhead coded_ahead{ahead.nta ? kCodedRowsAheadNta : ahead.rows, ahead.nta};
    few_rows_streams(gs, n, [&](int i, int64_t lo, int64_t hi, int64_t run_hi, bool warm) {
      few_rows_columns(g.M, lo, hi, warm, FewRowsCoded{gs[i], *cws[i], ap, aps, run_hi, coded_ahead});
    });
    return;
  }
  few_rows_streams(gs, n, [&](int i, int64_t lo, int64_t hi, int64_t run_hi, bool warm) {
    few_rows_columns(g.M, lo, hi, warm, FewRowsBf16{gs[i], ap, aps, run_hi, ahead});
  });
}
#endif

#if SEALKIT_X86
// y = x W^T with few enough rows to stream W unpacked (see "few rows" above).
bool takes_few_rows(const GemmArgs<float>& g, Isa isa) {
  return g.M <= (g.B.dtype == DType::BF16 ? kFewRowsBf16 : kFewRowsF32) && g.trans_b && !g.trans_a &&
         has_avx512(isa);
}
#endif

// The gate half of a fused gate/up pair (gemm_gate_up_swiglu): the gate weight's packed strips and
// its GEMM's alpha. packed_gemm, running the up projection with act as its C, then computes each
// tile of both products and stores silu(gate) * up.
struct GatePair {
  const float* strips;
  int64_t stride;
  float alpha;
  // Where act goes as bf16 rows (C's row stride) in place of C (gemm_gate_up_swiglu's act_bf16;
  // vdpbf16ps tiles only).
  uint16_t* act_bf16 = nullptr;
};
// The up projection's GEMM of gemm_up_swiglu: gate's result and act, strided like its C.
struct SwigluUp {
  const float* gate;
  float* act;
};
#if SEALKIT_X86
// A pair's tiles in scratch: the vdpbf16ps kernel's 14 x 32, or AMX's 32 x 32.
constexpr int kPairTileFloats = std::max(kBf16Mr, kAmxMr) * kBf16Nr;
#endif

// GEMMs of one A whose weights all come packed (gemm_group: scoring's q, k, v), run as one GEMM
// across their N's end to end: strip s of the whole comes from the weight whose columns it covers
// and its tiles go to that GEMM's C. Every part but the last covers whole strips.
struct ColumnGroup {
  static constexpr int kMax = 4;
  int n = 0;
  int64_t strip0[kMax + 1] = {};  // part i covers strips [strip0[i], strip0[i + 1])
  const float* strips[kMax] = {};
  int64_t stride[kMax] = {};
  float* C[kMax] = {};
  int64_t ldc[kMax] = {};

  int part(int64_t s) const {
    int i = 0;
    while (i + 1 < n && s >= strip0[i + 1]) ++i;
    return i;
  }
};

void gemm_f32(const GemmArgs<float>& g, const LowRankUpdate* update = nullptr);
void packed_gemm(const GemmArgs<float>& g, const KernelSpec& ks, const LowRankUpdate* update,
                 const float* pre_b = nullptr, int64_t pre_stride = 0, const GatePair* pair = nullptr,
                 const ColumnGroup* group = nullptr, const SwigluGrad* swiglu = nullptr,
                 const SwigluUp* swiglu_up = nullptr);

// g's packed weight, if it was packed from this very B (address, orientation, N, K, ldb) for a
// kernel with ks's strips (vdpbf16ps pairs, AMX's pairs padded to whole blocks, or f32 rows) and
// packed weights are on; else null, and B is packed per call.
const PackedWeight* usable_packed_weight(const GemmArgs<float>& g, const KernelSpec& ks) {
  const PackedWeight* pw = g.packed_b;
  return pw && pw->pair_align == ks.pair_align && pw->pairs == ks.pairs && pw->nr == ks.nr && packed_weights_on() &&
                 pw->source == g.B.data && pw->trans_b == g.trans_b && pw->N == g.N && pw->K == g.K && pw->ldb == g.ldb
             ? pw
             : nullptr;
}

#if SEALKIT_X86
// Whether gemm_f32 runs g on the vdpbf16ps packed kernel in a single K block: the GEMMs whose final
// tiles can carry more work while they are in L1 (gemm_gate_up_swiglu, gemm_swiglu_backward).
bool bf16_one_block(const GemmArgs<float>& g, Isa isa) {
  return isa == Isa::Avx512Bf16 && g.B.dtype == DType::BF16 && g.K > 0 && (g.K + 1) / 2 <= kBf16Kc &&
         !takes_few_rows(g, isa) && !use_amx();
}

// The same for the AMX kernel (K up to 768: one block of at most kAmxKc pairs).
bool amx_one_block(const GemmArgs<float>& g, Isa isa) {
  return isa == Isa::Avx512Bf16 && g.B.dtype == DType::BF16 && g.K > 0 && packed_depth(kAmxSpec, g.K) <= kAmxKc &&
         !takes_few_rows(g, isa) && use_amx();
}

// Columns [0, N) of n B's (op(bs[i]), K deep) packed as ks's strips into dsts[i], `stride` floats
// apart: one pool run for all of them.
void pack_b_strips(const KernelSpec& ks, const MatRef* bs, float* const* dsts, int n, int64_t N, int64_t K,
                   int64_t stride) {
  const int64_t strips = (N + ks.nr - 1) / ks.nr;
  parallel_for(n * strips, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t s = t % strips;
      ks.pack_b(bs[t / strips], s * ks.nr, N - s * ks.nr, K, dsts[t / strips] + s * stride);
    }
  });
}

// Whether gemm_f32 adds `u` on the tiles of its kernel ks (not AMX's): when the separate call would
// run micro_avx512 (or narrow_n, the same arithmetic: k ascending from zero, then C = scale * sum +
// C) in one K block, and the base tiles are its 14 x 32, the tile's update is that call's own
// micro-kernel on the same packed strips, so the bits cannot differ.
// With segments, each segment's own call is the separate call: none of them may stream V's rows.
bool update_on_tiles(const GemmArgs<float>& g, const LowRankUpdate& u, const KernelSpec& ks, Isa isa, bool amx) {
  bool few_rows = g.M <= kFewRowsF32;
  for (int i = 0; u.segments && i < u.n_segments; ++i) few_rows |= u.segments[i].rows <= kFewRowsF32;
  return has_avx512(isa) && !amx && ks.mr == kAvx512Mr && ks.nr == kAvx512Nr && u.rank <= kAvx512Kc &&
         !(few_rows && u.trans_v);
}

// The packed GEMM's kernel for a B multiplied in bf16 (dp_bf16: AMX tiles or vdpbf16ps) or in f32.
KernelSpec packed_kernel(Isa isa, bool dp_bf16, bool amx) {
  return !dp_bf16 ? select_kernel(isa) : amx ? kAmxSpec : kBf16Spec;
}
#endif

// An update gemm_with_update runs as the separate calls whatever the path: nothing to fuse into,
// or nothing to fuse (a segment of zero scale, whose separate call may skip its product).
bool update_idle(const GemmArgs<float>& g, const LowRankUpdate& u) {
  bool idle = g.K <= 0 || g.alpha == 0.f || u.rank <= 0 || (!u.segments && u.scale == 0.f);
  for (int i = 0; u.segments && i < u.n_segments; ++i) idle |= u.segments[i].scale == 0.f;
  return idle;
}

// Runs `update` as its own call after the base GEMM (paths that do not fuse it).
void finish_separately(const GemmArgs<float>& g, const LowRankUpdate* update) {
  for (int i = 0; update && i < update_calls(*update); ++i) gemm<float>(update_gemm(g, *update, i));
}

// Whether packed_gemm on kernel ks reads g's bf16 rows of A as they are (kA16Kernels): the
// vdpbf16ps kernel, with every pair one aligned 32-bit word (K, lda even; rows 4-byte aligned).
bool a16_native(const GemmArgs<float>& g, const KernelSpec& ks) {
#if SEALKIT_X86
  return g.A_bf16 && ks.micro == micro_bf16 && !g.trans_a && g.K % 2 == 0 && g.lda % 2 == 0 &&
         (reinterpret_cast<uintptr_t>(g.A_bf16) & 3) == 0;
#else
  (void)g, (void)ks;
  return false;
#endif
}

// g with its bf16 rows of A widened to f32 in `buf` (exactly: every bf16 value is an f32), for the
// paths that read f32 A.
GemmArgs<float> widen_a(const GemmArgs<float>& g, std::vector<float>& buf) {
  if (buf.size() < static_cast<size_t>(g.M * g.K)) buf.resize(g.M * g.K);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(g.K, 1));  // rows of ~16K values a task
  parallel_for(g.M, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t k = 0; k < g.K; ++k) buf[i * g.K + k] = bf16_to_f32(g.A_bf16[i * g.lda + k]);
  });
  GemmArgs<float> w = g;
  w.A = buf.data();
  w.lda = g.K;
  w.A_bf16 = nullptr;
  return w;
}

void gemm_f32(const GemmArgs<float>& g, const LowRankUpdate* update) {
  if (g.B.dtype != DType::F32 && g.B.dtype != DType::BF16)
    throw std::invalid_argument("gemm<float>: B must be f32 or bf16");
  if (g.A_bf16 && g.trans_a) throw std::invalid_argument("gemm<float>: A_bf16 is for op(A) = A (trans_a false)");
  const Isa isa = active_isa();
#if SEALKIT_X86
  // bf16 rows of A go as they are only to the vdpbf16ps packed kernel (not the few-rows or low-rank
  // paths, nor AMX): every other path reads them widened.
  const bool a16_here = g.A_bf16 && isa == Isa::Avx512Bf16 && g.B.dtype == DType::BF16 && !use_amx() &&
                        !takes_few_rows(g, isa) && !gemm_lowrank_runs(g) && a16_native(g, kBf16Spec);
#else
  const bool a16_here = false;
#endif
  if (g.A_bf16 && !a16_here) {
    gemm_f32(widen_a(g, scratch().a_wide), update);
    return;
  }
#if SEALKIT_X86
  // bf16 B under AVX512-BF16 multiplies in bf16 (A rounded); everything else in f32.
  const bool dp_bf16 = isa == Isa::Avx512Bf16 && g.B.dtype == DType::BF16;
  if (takes_few_rows(g, isa)) {
    if (dp_bf16) few_rows_bf16(&g, 1);
    else few_rows_avx512(&g, 1);
    finish_separately(g, update);
    return;
  }
  if (gemm_lowrank(g)) {  // LoRA side paths: one dimension is the rank
    finish_separately(g, update);
    return;
  }
  const bool amx = dp_bf16 && use_amx();
  const KernelSpec ks = packed_kernel(isa, dp_bf16, amx);
  const bool fuse = update && update_on_tiles(g, *update, ks, isa, amx);
#else
  const KernelSpec ks = select_kernel(isa);
  const bool fuse = false;
#endif
  if (update && !fuse) {
    gemm_f32(g);
    finish_separately(g, update);
    return;
  }
  const LowRankUpdate* fused = fuse ? update : nullptr;
  // A packed weight for this very B and kernel (see PackedWeight): B's strips are read from it.
  const PackedWeight* pw = usable_packed_weight(g, ks);
  const float* pre = pw ? pw->strips : nullptr;
  const int64_t pre_stride = pw ? pw->strip_stride : 0;
  // A long K (the LM head's input gradient: K = vocabulary) runs as slabs of K, one packed GEMM
  // each, C += from the second on: packed over all of K, the blocks shrink to a single B strip and
  // B is packed again for every row chunk (the SmolLM2 LM head ran at a third of the rate of the
  // other GEMMs). On the f32 kernels slabs are whole K blocks, so every tile sums its blocks in the
  // same order as unsplit: the same bits; the vdpbf16ps kernels even out their blocks within each
  // slab. AMX splits only a K longer than kAmxSlabsOver slabs (evening out its blocks within each
  // slab too): the LM head's input gradient (K = vocabulary), 256 x 576 x 49152 NN with a packed
  // weight, 1.23-1.25x (bench/ab.ts, builds alternated both ways, AMX Xeon); at K = 8192 slabs
  // were slower (0.68-0.86x), the unsplit GEMM's column chunks still holding 8 strips there.
  const int64_t slab_k = ks.pairs ? 2 * kSlabSteps : kSlabSteps;
  if (g.K > (ks.pair_align == 1 ? 2 : kAmxSlabsOver) * slab_k) {
    const size_t b_bytes = dtype_size(g.B.dtype);
    for (int64_t k0 = 0; k0 < g.K; k0 += slab_k) {
      GemmArgs<float> slab = g;
      slab.K = std::min(slab_k, g.K - k0);
      slab.A = g.A + k0 * (g.trans_a ? g.lda : 1);
      if (g.A_bf16) slab.A_bf16 = g.A_bf16 + k0;  // op(A) = A: its rows from column k0
      slab.B.data = static_cast<const char*>(g.B.data) + k0 * (g.trans_b ? 1 : g.ldb) * b_bytes;
      if (k0 > 0) slab.beta = 1;
      // The slab's first depth step in a packed weight's strips (k0 is even: pairs split evenly).
      const float* slab_pre = pre ? pre + (ks.pairs ? k0 / 2 : k0) * ks.nr : nullptr;
      packed_gemm(slab, ks, k0 + slab.K >= g.K ? fused : nullptr, slab_pre, pre_stride);
    }
    return;
  }
  packed_gemm(g, ks, fused, pre, pre_stride);
}

// The packed GEMM: A and B packed into strips (per row chunk and column chunk), then tasks of row
// groups x strip groups run the micro-kernel over every K block. `update` (AVX-512 tiles only) is
// added to each tile after its last K block. With pre_b, B comes packed (a PackedWeight, at this
// call's first depth step): strip s at pre_b + s * pre_stride, and no path packs B; so with a
// column group (whose parts say where each strip and tile is; g.C is then unused). With `swiglu`
// (one K block, gemm_swiglu_backward) each final tile of C goes to scratch and SwiGLU's gradients
// are stored from it; g.C is then unused too; so with `swiglu_up` (gemm_up_swiglu), act's tiles.
void packed_gemm(const GemmArgs<float>& g, const KernelSpec& ks, const LowRankUpdate* update, const float* pre_b,
                 int64_t pre_stride, const GatePair* pair, const ColumnGroup* group, const SwigluGrad* swiglu,
                 const SwigluUp* swiglu_up) {
  // A's bf16 rows (GemmArgs::A_bf16): read by the tiles as they are on the vdpbf16ps kernel (A is
  // then never packed), else widened to f32 first.
  const uint16_t* a16 = a16_native(g, ks) ? g.A_bf16 : nullptr;
  if (g.A_bf16 && !a16) {
    packed_gemm(widen_a(g, scratch().a_wide), ks, update, pre_b, pre_stride, pair, group, swiglu, swiglu_up);
    return;
  }
  // Whether this path packs A's bf16 rows after all (set below, for the mirror path).
  bool a16_packed = false;
  [[maybe_unused]] const bool fuse = update != nullptr;
  // Kd: depth steps of a packed strip (k, or bf16 pairs).
  const int64_t M = g.M, N = g.N, K = g.K, mr = ks.mr, nr = ks.nr;
  const int64_t Kd = packed_depth(ks, K), kc_depth = packed_kc_depth(ks, Kd);
  const int64_t a_rs = g.trans_a ? 1 : g.lda, a_cs = g.trans_a ? g.lda : 1;
  const MatRef B = b_ref(g);

  ThreadPool& pool = global_pool();
  const int64_t threads = pool.threads();
  const int64_t m_chunk = block_size(kPackedABudget, Kd, mr, M);
  const int64_t n_chunk = block_size(kPanelBudget, Kd, nr, N);
  const int64_t m_group = block_size(kTaskABudget, Kd, mr, m_chunk);
  Scratch& sc = scratch();
  // ~4 tasks per thread per phase lets the pool balance uneven tasks.
  auto tasks_for = [&](int64_t units) { return std::min<int64_t>(units, threads == 1 ? 1 : 4 * threads); };
  // A fused update: op(V) packed once (rank x N in 32-column strips), U with A's rows (14-row strips).
  [[maybe_unused]] float* pv = nullptr;
  const int64_t ur = fuse ? update->rank : 0;
#if SEALKIT_X86
  // With segments (a batch mixing adapters), one packed op(V) per segment, v_floats apart.
  const int64_t v_parts = fuse && update->segments ? update->n_segments : 1;
  const int64_t v_strips = fuse ? (N + kAvx512Nr - 1) / kAvx512Nr : 0, v_floats = v_strips * kAvx512Nr * ur;
  if (fuse) {
    if (sc.v.size() < static_cast<size_t>(v_parts * v_floats)) sc.v.resize(v_parts * v_floats);
    pv = sc.v.data();
  }
#else
  const int64_t v_parts = 1, v_strips = 0;  // updates fuse only into the AVX-512 tiles
#endif

  // Tiles written once and never read back (beta == 0, one K block, no update) stream their
  // stores when C is large (see kStreamCBytes); the fence below orders them before the task ends.
  [[maybe_unused]] const bool c_stream = g.beta == 0.f && !fuse && Kd <= kc_depth &&
                                         M * N * static_cast<int64_t>(sizeof(float)) >= kStreamCBytes &&
                                         stream_stores_on();
  // Fused-update tiles on the same rule stream too: the tile and its update are built in an L1
  // scratch tile (the bits of building them in C: the same two stores' arithmetic) and copied out
  // streamed, instead of C's lines being asked for ownership from memory, written and read back.
  // SmolLM2-135M LoRA step 1.007-1.025x (`seal bench train --ab-env`, four runs of 7-21 repeats, AMD
  // Zen 5); streaming only the forward's (NT) tiles gave 0.995x of streaming all, only the input
  // gradients' (NN) 1.001x. The tiny preset's C stays under the size. Not with AMX's 32-row tiles.
#if SEALKIT_X86
  const bool update_stream = fuse && g.beta == 0.f && Kd <= kc_depth && mr == kBf16Mr && nr == kBf16Nr && !swiglu &&
                             !swiglu_up && !pair && M * N * static_cast<int64_t>(sizeof(float)) >= kStreamCBytes &&
                             stream_stores_on();
#else
  [[maybe_unused]] const bool update_stream = false;
#endif
  // Tiles whose C is read back (beta != 0: LoRA's input gradients accumulate into one dx; or a fused
  // update not streamed, which loads the tile the base kernel just stored) ask for its lines for
  // ownership as their product starts: in a training step C comes from memory, and the read
  // otherwise waits at the tile's end. SmolLM2-135M LoRA step 1.02-1.04x, tiny 1.05x (`seal bench train --ab-env`,
  // 9-41 repeats, AMD Zen 5); for C only written (scoring) it was 0.99x, so not there.
  [[maybe_unused]] const bool c_prefetch = (g.beta != 0.f || fuse) && !update_stream;
  // The fused SwiGLU gradient's dgate and dup stream on the same rule (each as large as C). SmolLM2's
  // 1024 x 1536 each: the LoRA step 1.007-1.008x (`seal bench --ab-env`, 7 and 15 repeats, Zen 5);
  // the tiny preset's 1.5 MB, streamed, measured 0.993x (21 repeats), so theirs stay below.
  [[maybe_unused]] const bool swiglu_stream =
      (swiglu || swiglu_up) && M * N * static_cast<int64_t>(sizeof(float)) >= kStreamCBytes && stream_stores_on();
  // B strip s (of the whole GEMM): from the packed weight when there is one, else strip s_here of
  // the strips this path packed at `packed_here`.
  const bool b_packed = pre_b || group;  // no path packs B
  auto b_strip = [&](const float* packed_here, int64_t s, int64_t s_here) {
    if (group) {
      const int i = group->part(s);
      return group->strips[i] + (s - group->strip0[i]) * group->stride[i];
    }
    return pre_b ? pre_b + s * pre_stride : packed_here + s_here * nr * Kd;
  };
  // One packed B strip (columns [col, col + cols)) against rows [r0, r1) of the row chunk at i0: all
  // K blocks back to back, so the rows' C tile stays in L1/L2 between blocks and the block's KC x NR
  // slice of the strip stays in L1 across the row strips.
#if SEALKIT_X86
  // C += scale U op(V) on a finished tile (rows of U at u, columns from col; rows ld apart), by the
  // micro-kernel the update's separate call would run: every fused path's update. `row`: the tile's
  // first row in C. With segments, each segment's rows of the tile take its V and scale (a tile
  // may hold the end of one sequence and the start of the next); other rows get nothing. A
  // packed strip of U has its rows in the slots of each k, so rows [a, b) of it start at u + a.
  auto add_update = [&](const float* u, int64_t row, int64_t col, float* c, int64_t ld, int rows, int cols) {
    auto part = [&](const float* pv_part, float scale, int a, int b) {
      const Epilogue add{scale, 1.f, true};
      if (b - a < kAvx512Mr) micro_avx512_edge(ur, u + a, pv_part + col * ur, c + a * ld, ld, b - a, cols, add);
      else micro_avx512(ur, u, pv_part + col * ur, c, ld, rows, cols, add);
    };
    if (!update->segments) {
      part(pv, update->scale, 0, rows);
      return;
    }
    for (int i = 0; i < update->n_segments; ++i) {
      const LowRankSegment& sg = update->segments[i];
      const int64_t a = std::max(sg.row0, row), b = std::min(sg.row0 + sg.rows, row + rows);
      if (a < b) part(pv + i * v_floats, sg.scale, static_cast<int>(a - row), static_cast<int>(b - row));
    }
  };
#endif
  auto strip_tiles = [&](const float* a_rows, [[maybe_unused]] const float* u_rows, int64_t i0, int64_t r0, int64_t r1,
                         int64_t col, int cols, const float* bs, const StripSource* next = nullptr) {
    const int64_t calls = ((Kd + kc_depth - 1) / kc_depth) * ((r1 - r0 + mr - 1) / mr);
    int64_t call = 0;
    // Where the strip's tiles go: C, or its part's C in a column group.
    float* c_base = g.C + col;
    int64_t ldc = g.ldc;
    if (group) {
      const int i = group->part(col / nr);
      c_base = group->C[i] + (col - group->strip0[i] * nr);
      ldc = group->ldc[i];
    }
    for (int64_t k0 = 0; k0 < Kd; k0 += kc_depth) {
      const int64_t kc = std::min(kc_depth, Kd - k0);
      const Epilogue ep{g.alpha, k0 == 0 ? g.beta : 1.f, k0 != 0 || g.beta != 0.f,
                        c_stream && k0 + kc >= Kd};
      for (int64_t r = r0; r < r1; r += mr) {
        const int rows = static_cast<int>(std::min(mr, r1 - r));
        float* c = c_base + (i0 + r) * ldc;
#if SEALKIT_X86
        if (k0 == 0 && c_prefetch && !swiglu && !swiglu_up) prefetch_tile_for_write(c, ldc, rows, cols);
#endif
        // The tile's product over kc depth steps from step `from` into out: from A's bf16 rows where
        // they come as such, else from the packed strip.
        auto product = [&](const float* b, float* out, int64_t ld, const Epilogue& e, int64_t from = 0) {
#if SEALKIT_X86
          if (a16 && !a16_packed) {
            kA16Kernels[rows - 1](kc, a16 + (i0 + r) * g.lda + 2 * from, g.lda, b, out, ld, rows, cols, e);
            return;
          }
#endif
          (rows < mr && ks.edge ? ks.edge : ks.micro)(kc, a_rows + r * Kd + from * mr, b, out, ld, rows, cols, e);
        };
#if SEALKIT_X86
        if (swiglu) {  // one K block (gemm_swiglu_backward): dact's tile, its update, then the gradients'
          const int64_t at = (i0 + r) * ldc + col;  // the tile's first element in the SwiGLU arrays
          prefetch_swiglu_grad_tile(*swiglu, at, ldc, rows, cols, !swiglu_stream);
          alignas(64) float dact[kBf16Mr * kBf16Nr];
          product(bs, dact, nr, Epilogue{g.alpha, 0.f, false});
          if (fuse) {
            add_update(u_rows + r * ur, i0 + r, col, dact, nr, rows, cols);
          }
          store_swiglu_grad_tile(dact, *swiglu, at, ldc, rows, cols, swiglu_stream);
          if (next) next->prefetch(call++, calls);
          continue;
        }
        if (swiglu_up) {  // one K block (gemm_up_swiglu): up's tile and its update, then act's
          const int64_t at = (i0 + r) * ldc + col;
          for (int i = 0; i < rows; ++i)
            for_each_line(swiglu_up->gate + at + i * ldc, cols * static_cast<int64_t>(sizeof(float)),
                          [](const char* line) { _mm_prefetch(line, _MM_HINT_T0); });
          alignas(64) float up[kBf16Mr * kBf16Nr];
          product(bs, up, nr, Epilogue{g.alpha, 0.f, false});
          if (fuse) add_update(u_rows + r * ur, i0 + r, col, up, nr, rows, cols);
          store_swiglu_tile(swiglu_up->gate + at, ldc, up, swiglu_up->act + at, ldc, rows, cols, swiglu_stream);
          if (next) next->prefetch(call++, calls);
          continue;
        }
        if (pair) {  // one K block (gemm_gate_up_swiglu): both products' tiles, then act's
          alignas(64) float gate[kPairTileFloats], up[kPairTileFloats];
          product(pair->strips + col / nr * pair->stride, gate, nr, Epilogue{pair->alpha, 0.f, false});
          product(bs, up, nr, Epilogue{g.alpha, 0.f, false});
          if (pair->act_bf16)
            store_swiglu_tile_bf16(gate, up, pair->act_bf16 + (i0 + r) * ldc + col, ldc, rows, cols, c_stream);
          else
            store_swiglu_tile(gate, nr, up, c, ldc, rows, cols, c_stream);
          if (next) next->prefetch(call++, calls);
          continue;
        }
        if (update_stream) {  // one K block: the tile and its update in L1, then streamed to C
          alignas(64) float tile[kBf16Mr * kBf16Nr];
          product(bs, tile, nr, Epilogue{g.alpha, 0.f, false});
          if (next) next->prefetch(call++, calls);
          add_update(u_rows + r * ur, i0 + r, col, tile, nr, rows, cols);
          stream_tile32(tile, c, ldc, rows, cols);
          continue;
        }
#endif
        product(bs + k0 * nr, c, ldc, ep, k0);
        if (next) next->prefetch(call++, calls);
#if SEALKIT_X86
        if (fuse && k0 + kc >= Kd) {  // the tile is final: add the update while it is in L1
          add_update(u_rows + r * ur, i0 + r, col, c, ldc, rows, cols);
        }
#endif
      }
    }
#if SEALKIT_X86
    if (c_stream || swiglu_stream || update_stream) _mm_sfence();  // streamed stores are weakly ordered: visible before the pool's barrier
#endif
  };
  auto pack_a_strips = [&](float* a_dst, [[maybe_unused]] float* u_dst, int64_t i0, int64_t m, int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
#if SEALKIT_X86
      if (a16 && a16_packed) pack_a_bf16_rows(a16, g.lda, i0 + s * mr, m - s * mr, K, a_dst + s * mr * Kd);
#endif
      if (!a16) ks.pack_a(g.A, a_rs, a_cs, i0 + s * mr, m - s * mr, K, a_dst + s * mr * Kd);
#if SEALKIT_X86
      if (fuse) pack_a_avx512(update->U, update->ldu, 1, i0 + s * mr, m - s * mr, ur, u_dst + s * mr * ur);
#endif
    }
  };
  // Units [u0, u1) of the v_parts x v_strips packed strips of op(V) (each segment's, in order).
  auto pack_v_strips = [&]([[maybe_unused]] int64_t u0, [[maybe_unused]] int64_t u1) {
#if SEALKIT_X86
    for (int64_t t = u0; t < u1; ++t) {
      const int64_t part = t / v_strips, s = t % v_strips;
      const float* v = update->segments ? update->segments[part].V : update->V;
      const int64_t ldv = update->segments ? update->segments[part].ldv : update->ldv;
      const MatRef V{v, DType::F32, update->trans_v ? 1 : ldv, update->trans_v ? ldv : 1};
      pack_b_avx512(V, s * kAvx512Nr, N - s * kAvx512Nr, ur, pv + part * v_floats + s * kAvx512Nr * ur);
    }
#endif
  };
  // The shared packed A and U of a row chunk (allocated below, on the paths that share them).
  float* pa = nullptr;
  float* pu = nullptr;
  // One pool run packs whatever a phase shares, behind a single barrier: `b_strips` B strips of the
  // columns from j0 (n of them) into pb_dst, `a_strips` A (and U) strips of the rows from i0 (m of
  // them) into pa / pu, and V's strips when `with_v`. ~4 tasks per thread for each.
  auto pack_shared = [&](int64_t b_strips, int64_t j0, int64_t n, float* pb_dst, int64_t a_strips, int64_t i0,
                         int64_t m, bool with_v) {
    const int64_t v_units = v_parts * v_strips;
    // (A's bf16 rows need no packing; U's strips ride with A's.)
    const int64_t bt = tasks_for(b_strips), at = tasks_for(a16 && !a16_packed && !fuse ? 0 : a_strips);
    const int64_t vt = with_v ? tasks_for(v_units) : 0;
    if (bt + at + vt == 0) return;
    pool.run(bt + at + vt, [&](int64_t t, int) {
      if (t < bt) {
        for (int64_t s = even_share(t, b_strips, bt); s < even_share(t + 1, b_strips, bt); ++s)
          ks.pack_b(B, j0 + s * nr, n - s * nr, K, pb_dst + s * nr * Kd);
        return;
      }
      t -= bt;
      if (t < at) pack_a_strips(pa, pu, i0, m, even_share(t, a_strips, at), even_share(t + 1, a_strips, at));
      else pack_v_strips(even_share(t - at, v_units, vt), even_share(t - at + 1, v_units, vt));
    });
  };

  // Many rows against a B whose whole panel stays in L2 (tiny models' projections): B is packed once,
  // shared; each task packs its own rows of A (and U) just before running them against every B
  // strip, so A's packing overlaps the other threads' compute and its strips are read back from
  // L1/L2, not from a shared panel of megabytes. Same packing, blocks and micro-kernel calls per tile
  // as the shared path at the end: the same bits. Also on the vdpbf16ps pair kernels (sizes count
  // packed slots, one pair each): on AMD Zen 5, bench/ab.ts against the shared path, 15 rounds, tiny
  // shapes 1024 x 128 x 384 NN 1.67x, 1024 x 128 x 128 NT 1.20x; the tiny LoRA step 1.09x (7 pairs).
  // On AMX too (its K blocks are evened out over the whole depth before any path is chosen, so the
  // tiles are the same): `seal bench --ab-env SEALKIT_LOCAL_PACK=0` on an AMX Xeon, scoring 1.12x
  // (9 repeats), the LoRA step 1.03x (7), the tiny LoRA step 1.09x (41), with this and the next case.
  // SEALKIT_LOCAL_PACK=0 (read per call) turns this and the next case off, for tests and benchmarks.
  // B packed ahead (weights) takes this path at any panel size: every task then reads its strips
  // from the packed weight wherever it runs, and only A's packing moves, from a phase of its own
  // (memory-bound on both threads, then a barrier) into the tasks. SmolLM2's 1024 x 576 x 1536 and
  // 1024 x 576 x 576, NT and NN, 1.04-1.07x with or without the LoRA update (bench/ab.ts --packed-b,
  // Zen 5, 9 rounds; 1024 x 960 x 576 level); scoring ~1.01x, the LoRA step 1.012-1.014x (--ab-env).
  const int64_t all_a_strips = (M + mr - 1) / mr, all_b_strips = (N + nr - 1) / nr;
  if ((N * Kd <= kLocalAPanelBudget || b_packed) && M > N && all_a_strips >= 2 * threads &&
      local_packing_allowed()) {
    if (!b_packed && sc.b.size() < static_cast<size_t>(all_b_strips * nr * Kd)) sc.b.resize(all_b_strips * nr * Kd);
    float* pb_all = sc.b.data();
    pack_shared(b_packed ? 0 : all_b_strips, 0, N, pb_all, 0, 0, 0, true);
    // Row groups of whole strips: ~4 per thread, more where a group would outgrow the L2 budget of a
    // task's A, in a whole number of rounds of the threads and evened out (sizes one strip apart).
    // Groups of ceil(strips / tasks) left the last one short: SmolLM2's 74 strips (1024 rows) ran as
    // 7 x 10 + 4, so one thread's four tasks held 40 strips and the other's 34. Evened (bench/ab.ts
    // --packed-b, AMD Zen 5, 9-11 rounds): K = 576 shapes 1.08-1.10x (1024 x 576 x 576, x 960, x 192
    // NT and NN, with and without the LoRA update), tiny 1024 x 128/384 shapes 1.08x, K = 1536
    // 1.01x; with the general path's evening below, whole steps (`seal bench --ab-env`): scoring
    // 1.024x (9 repeats), the SmolLM2 LoRA step 1.012x (9), the tiny one 1.03x (21).
    const int64_t cap = std::max<int64_t>(1, m_group / mr);
    int64_t groups = std::max(tasks_for(all_a_strips), (all_a_strips + cap - 1) / cap);
    if (threads > 1) groups = std::min(all_a_strips, (groups + threads - 1) / threads * threads);
    const int64_t per = (all_a_strips + groups - 1) / groups;  // the largest group's strips
    pool.run(groups, [&](int64_t t, int) {
      Scratch& own = scratch();
      const int64_t s0 = even_share(t, all_a_strips, groups), s1 = even_share(t + 1, all_a_strips, groups);
      const int64_t r0 = s0 * mr, rows = std::min((s1 - s0) * mr, M - r0);
      if (own.own.size() < static_cast<size_t>(per * mr * Kd)) own.own.resize(per * mr * Kd);
      if (fuse && own.own_u.size() < static_cast<size_t>(per * mr * ur)) own.own_u.resize(per * mr * ur);
      pack_a_strips(own.own.data(), own.own_u.data(), r0, rows, 0, (rows + mr - 1) / mr);
      for (int64_t s = 0; s < all_b_strips; ++s)
        strip_tiles(own.own.data(), own.own_u.data(), r0, 0, rows, s * nr, static_cast<int>(std::min(nr, N - s * nr)),
                    b_strip(pb_all, s, s));
    });
    return;
  }

  // Packed A (and U) of a row chunk, shared by the tasks from here on.
  if (sc.a.size() < static_cast<size_t>(m_chunk * Kd)) sc.a.resize(m_chunk * Kd);
  pa = sc.a.data();
  if (fuse) {
    if (sc.u.size() < static_cast<size_t>(m_chunk * ur)) sc.u.resize(m_chunk * ur);
    pu = sc.u.data();
  }

  // The mirror case, few rows against many columns (the LM head: 256 tokens x 49,152 vocabulary
  // rows; its input gradient's K slabs): all of packed A fits in L2, so each task runs its B strips
  // against every row and packs each strip itself, just before using it, into its own scratch. B
  // then never makes the round trip through a shared panel of megabytes, and the GEMM has two
  // barriers, not two per column chunk. Only when B is the larger operand (with many rows the shared
  // panel is reused enough). Same bits, as above.
  if (M * Kd <= kLocalBABudget && N > M && all_b_strips >= 2 * threads && local_packing_allowed()) {
    // bf16 rows of A are packed here too (a transpose, once for all tasks): each of their tiles
    // read them from fourteen rows was slower than from the packed strip (the LM head 256 x 49152 x
    // 576 NT at 0.979x, AMD Zen 5), where the row groups' tiles gain from skipping the packing.
    a16_packed = a16 != nullptr;
    pack_shared(0, 0, 0, nullptr, all_a_strips, 0, M, true);
    // Tasks in whole rounds of the threads, of at least 8 strips where there are enough: a task's
    // first strip has nothing before it to prefetch it (the LM head's input gradient has 18 strips
    // per K slab; at ~4 tasks per thread a third of them waited on memory: bench/ab.ts on Zen 5, 15
    // rounds, 256 x 576 x 49152 NN 1.06-1.07x with bf16 W, 1.00-1.04x f32).
    const int64_t per_thread = threads == 1 ? 1 : std::clamp<int64_t>(all_b_strips / (8 * threads), 1, 4);
    const int64_t bt = std::min(all_b_strips, per_thread * threads);  // strips evened out over the tasks
    pool.run(bt, [&](int64_t t, int) {
      std::vector<float>& strip = scratch().own;
      if (!b_packed && strip.size() < static_cast<size_t>(nr * Kd)) strip.resize(nr * Kd);
      const int64_t s_end = even_share(t + 1, all_b_strips, bt);
      for (int64_t s = even_share(t, all_b_strips, bt); s < s_end; ++s) {
        if (!b_packed) ks.pack_b(B, s * nr, N - s * nr, K, strip.data());
        // The task's next strip (its source, or its packed weight) comes into L2 while this one runs
        // (bench/ab.ts on Zen 5, 15 rounds: the LM head 256 x 49152 x 576 NT 1.11x with bf16 W,
        // 1.03x f32; its input gradient 1.03x).
        const StripSource next = s + 1 == s_end ? StripSource()
                                 : b_packed     ? StripSource(b_strip(nullptr, s + 1, 0), Kd, nr)
                                                : StripSource(B, (s + 1) * nr, std::min(nr, N - (s + 1) * nr), K);
        strip_tiles(pa, pu, 0, 0, M, s * nr, static_cast<int>(std::min(nr, N - s * nr)), b_strip(strip.data(), s, 0),
                    next.runs ? &next : nullptr);
      }
    });
    return;
  }

  if (!b_packed && sc.b.size() < static_cast<size_t>(n_chunk * Kd)) sc.b.resize(n_chunk * Kd);
  float* pb = sc.b.data();
  for (int64_t i0 = 0; i0 < M; i0 += m_chunk) {
    const int64_t m = std::min(m_chunk, M - i0), a_strips = (m + mr - 1) / mr;
    for (int64_t j0 = 0; j0 < N; j0 += n_chunk) {
      const int64_t n = std::min(n_chunk, N - j0), b_strips = (n + nr - 1) / nr;
      // One packing run per column chunk, and only one barrier: the B strips, with the row
      // chunk's A strips (and U's) in the first column chunk and V's strips in the very first.
      // Small GEMMs (SEAL's inner loops) are mostly barriers, so every run saved counts.
      // (No B strips to pack when they come packed.)
      pack_shared(b_packed ? 0 : b_strips, j0, n, pb, j0 == 0 ? a_strips : 0, i0, m, i0 == 0 && j0 == 0);

      // Tasks: (row group) x (strip group); the group's rows of packed A stay in L2 across its strips.
      // Both kinds of group evened out in whole strips, and the tasks a whole number of rounds of
      // the threads where there are strips enough: row groups of m_group rows left the last one
      // short (SmolLM2's 1024 rows at K = 576: 336 x 3 + 16), and so did the threads' shares
      // (bench/ab.ts --packed-b, Zen 5, 9 rounds: 1024 x 1536 x 576 NT and NN 1.02-1.03x with the
      // LoRA update, 1024 x 3072 x 576 1.01x).
      const int64_t n_rg = (m + m_group - 1) / m_group;
      int64_t n_sg = std::min(b_strips, (tasks_for(n_rg * b_strips) + n_rg - 1) / n_rg);
      while ((n_rg * n_sg) % threads != 0 && n_sg < b_strips) ++n_sg;
      pool.run(n_rg * n_sg, [&](int64_t t, int) {
        const int64_t rg = t / n_sg, sg = t % n_sg;
        const int64_t r0 = even_share(rg, a_strips, n_rg) * mr, r1 = std::min(m, even_share(rg + 1, a_strips, n_rg) * mr);
        const int64_t s0 = even_share(sg, b_strips, n_sg), s1 = even_share(sg + 1, b_strips, n_sg);
        for (int64_t s = s0; s < s1; ++s)
          strip_tiles(pa, pu, i0, r0, r1, j0 + s * nr, static_cast<int>(std::min(nr, n - s * nr)),
                      b_strip(pb, j0 / nr + s, s));
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

bool few_rows_prefetch_nta() {
#if SEALKIT_X86
  return few_rows_ahead().nta;
#else
  return false;
#endif
}

bool amx_tiles_on() {
#if SEALKIT_X86
  return active_isa() == Isa::Avx512Bf16 && use_amx();
#else
  return false;
#endif
}

bool few_rows_amx_on() {
#if SEALKIT_X86
  return active_isa() == Isa::Avx512Bf16 && use_amx_few_rows(kAmxFewRowsMin);
#else
  return false;
#endif
}

bool few_rows_packed_on() {
#if SEALKIT_X86
  return active_isa() == Isa::Avx512Bf16 && use_few_rows_packed(2) && packed_weights_on();
#else
  return false;
#endif
}

template <typename T>
void gemm(const GemmArgs<T>& g) {
  if constexpr (!std::is_same_v<T, float>) {
    if (g.A_bf16) throw std::invalid_argument("gemm<double>: A_bf16 is for gemm<float>");
  }
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 || g.alpha == T(0)) {  // BLAS semantics: A and B are not read
    scale_c(g);
    return;
  }
  if constexpr (std::is_same_v<T, float>) gemm_f32(g);
  else gemm_f64(g);
}

int update_calls(const LowRankUpdate& u) { return u.segments ? u.n_segments : 1; }

GemmArgs<float> update_gemm(const GemmArgs<float>& g, const LowRankUpdate& u, int i) {
  GemmArgs<float> up;
  up.M = g.M; up.N = g.N; up.K = u.rank;
  up.A = u.U; up.lda = u.ldu;
  up.B = WeightView{u.V, DType::F32}; up.ldb = u.ldv; up.trans_b = u.trans_v;
  up.C = g.C; up.ldc = g.ldc;
  up.alpha = u.scale; up.beta = 1;
  if (u.segments) {
    const LowRankSegment& sg = u.segments[i];
    up.M = sg.rows;
    up.A = u.U + sg.row0 * u.ldu;
    up.B.data = sg.V;
    up.ldb = sg.ldv;
    up.C = g.C + sg.row0 * g.ldc;
    up.alpha = sg.scale;
  }
  return up;
}

bool gemm_update_on_tiles(const GemmArgs<float>& g, const LowRankUpdate& update) {
#if SEALKIT_X86
  // gemm_with_update's and gemm_f32's path decisions, in their order.
  if (g.M <= 0 || g.N <= 0 || update_idle(g, update)) return false;
  if (g.B.dtype != DType::F32 && g.B.dtype != DType::BF16) return false;
  const Isa isa = active_isa();
  if (takes_few_rows(g, isa) || gemm_lowrank_runs(g)) return false;
  const bool dp_bf16 = isa == Isa::Avx512Bf16 && g.B.dtype == DType::BF16, amx = dp_bf16 && use_amx();
  return update_on_tiles(g, update, packed_kernel(isa, dp_bf16, amx), isa, amx);
#else
  (void)g, (void)update;
  return false;
#endif
}

void gemm_with_update(const GemmArgs<float>& g, const LowRankUpdate& update) {
  if (g.M <= 0 || g.N <= 0) return;
  for (int i = 0; update.segments && i < update.n_segments; ++i) {
    const LowRankSegment& sg = update.segments[i];
    const int64_t end_before = i > 0 ? update.segments[i - 1].row0 + update.segments[i - 1].rows : 0;
    if (sg.row0 < end_before || sg.rows < 0 || sg.row0 + sg.rows > g.M)
      throw std::invalid_argument("gemm_with_update: segments must lie in C's rows, ascending and apart");
  }
  if (update_idle(g, update)) {
    gemm(g);
    finish_separately(g, &update);
    return;
  }
  gemm_f32(g, &update);
}

#if SEALKIT_X86
namespace {
// Many rows of GEMMs y_i = x W_i^T of one x whose bf16 weights all come packed for the vdpbf16ps
// kernel (scoring's q, k, v) run as one packed GEMM across their N's (ColumnGroup): x is packed once,
// and the narrow ones (k, v: N = 192) share the wide one's tasks. Each tile is computed exactly as
// its own GEMM computes it (same packed strips, K blocks and micro-kernel): the same bits. Returns
// false, touching nothing, where that does not hold. SEALKIT_GROUPED_GEMM=0 (read per call) turns
// it off.
bool packed_group(const GemmArgs<float>* gs, int n, Isa isa) {
  if (n < 2 || n > ColumnGroup::kMax || isa != Isa::Avx512Bf16) return false;
  const KernelSpec& ks = use_amx() ? kAmxSpec : kBf16Spec;
  const GemmArgs<float>& g0 = gs[0];
  ColumnGroup group;
  group.n = n;
  int64_t N = 0;
  for (int i = 0; i < n; ++i) {
    const GemmArgs<float>& g = gs[i];
    const bool fits = g.A == g0.A && g.A_bf16 == g0.A_bf16 && g.lda == g0.lda && g.M == g0.M && g.K == g0.K && !g.trans_a && g.trans_b &&
                      g.alpha == g0.alpha && g.alpha != 0.f && g.beta == 0.f && g.K > 0 && g.N > kLowRankMax &&
                      g.B.dtype == DType::BF16 && (i + 1 == n || g.N % kBf16Nr == 0) && !takes_few_rows(g, isa);
    if (!fits) return false;
    const PackedWeight* pw = usable_packed_weight(g, ks);
    if (!pw) return false;
    group.strip0[i] = N / kBf16Nr;
    group.strips[i] = pw->strips;
    group.stride[i] = pw->strip_stride;
    group.C[i] = g.C;
    group.ldc[i] = g.ldc;
    N += g.N;
  }
  group.strip0[n] = (N + kBf16Nr - 1) / kBf16Nr;
  // Not where gemm_f32 would split K into slabs.
  if (g0.K > 4 * kSlabSteps || !switch_on("SEALKIT_GROUPED_GEMM")) return false;
  GemmArgs<float> whole = g0;
  whole.N = N;
  whole.C = nullptr;
  whole.ldc = N;
  packed_gemm(whole, ks, nullptr, nullptr, 0, nullptr, &group);
  return true;
}
}  // namespace
#endif

void gemm_group(const GemmArgs<float>* gs, int n) {
#if SEALKIT_X86
  // One dispatch when every GEMM would stream its W through the same few-rows path on the same x.
  const Isa isa = active_isa();
  // (bf16 rows of A take the packed group or the calls one by one: the few-rows and low-rank passes
  // read f32 A.)
  bool a16 = false;
  for (int i = 0; i < n; ++i) a16 |= gs[i].A_bf16 != nullptr;
  bool shared = n > 1 && !a16;
  for (int i = 0; shared && i < n; ++i) {
    const GemmArgs<float>& g = gs[i];
    shared = g.M == gs[0].M && g.K == gs[0].K && g.A == gs[0].A && g.lda == gs[0].lda && g.M > 0 && g.N > 0 &&
             g.K > 0 && g.alpha != 0.f && g.B.dtype == gs[0].B.dtype && takes_few_rows(g, isa);
  }
  if (shared) {
    if (isa == Isa::Avx512Bf16 && gs[0].B.dtype == DType::BF16) few_rows_bf16(gs, n);
    else few_rows_avx512(gs, n);
    return;
  }
  if (packed_group(gs, n, isa)) return;
  // LoRA's side paths of one input (xa for q, k, v; their dA): one pass over the shared operand.
  bool lowrank = n > 1 && !a16;
  for (int i = 0; lowrank && i < n; ++i) lowrank = !takes_few_rows(gs[i], isa);
  if (lowrank && gemm_lowrank_group(gs, n)) return;
#endif
  for (int i = 0; i < n; ++i) gemm(gs[i]);
}

#if SEALKIT_X86
namespace {
// g's packed weight where a GEMM whose final tiles carry SwiGLU's work (gemm_swiglu_backward,
// gemm_up_swiglu) runs them fused, else null: where gemm_f32 would run the vdpbf16ps packed kernel on
// that weight in one K block, with the update (if any) on its tiles (an update that adds nothing runs
// as gemm_with_update runs it: after the GEMM), and the switch is on. The arithmetic of the separate
// calls, tile for tile.
const PackedWeight* fused_tiles_weight(const GemmArgs<float>& g, const LowRankUpdate* update, const char* on) {
  const Isa isa = active_isa();
  const bool fits = g.beta == 0.f && g.alpha != 0.f && bf16_one_block(g, isa) &&
                    (!update || (!update_idle(g, *update) && update_on_tiles(g, *update, kBf16Spec, isa, false))) &&
                    switch_on(on);
  return fits ? usable_packed_weight(g, kBf16Spec) : nullptr;
}
}  // namespace
#endif

namespace {
// act = silu(gate) * up over M rows of N, each array with its own row stride: one call where all
// three are contiguous, else a call per row (the fused SwiGLU paths' separate-call fallback).
void swiglu_forward_rows(const float* gate, int64_t ldg, const float* up, int64_t ldu, float* act, int64_t lda,
                         int64_t M, int64_t N) {
  if (ldg == N && ldu == N && lda == N) {
    swiglu_forward<float>(gate, up, act, M * N);
    return;
  }
  for (int64_t i = 0; i < M; ++i) swiglu_forward<float>(gate + i * ldg, up + i * ldu, act + i * lda, N);
}
}  // namespace

bool gemm_gate_up_swiglu(const GemmArgs<float>& gate, const GemmArgs<float>& up, float* act, int64_t ld_act,
                         uint16_t* act_bf16) {
  if (up.M <= 0 || up.N <= 0) return false;
#if SEALKIT_X86
  // Fused where both GEMMs would run the vdpbf16ps or the AMX packed kernel in one K block, of one A
  // (the shapes and arguments the bits of the separate calls then share): each tile of both
  // products, then act = silu(gate) * up is stored, not gate's and up's C (12.6 MB for SmolLM2's
  // 1,024 x 1,536 each, then read back by swiglu_forward). The strips come from the weights' packed
  // copies; on AMX, without them (SEALKIT_PACKED_WEIGHTS=0, weights that train), from strips
  // packed here for both in one pool run: AMX's products are fast enough that the step is bound by
  // C's traffic.
  const bool same = gate.A == up.A && gate.A_bf16 == up.A_bf16 && gate.lda == up.lda && gate.M == up.M && gate.N == up.N && gate.K == up.K &&
                    gate.trans_a == up.trans_a && gate.trans_b == up.trans_b && gate.beta == 0.f && up.beta == 0.f &&
                    gate.alpha != 0.f && up.alpha != 0.f && gate.K > 0 && gate.N > kLowRankMax;
  const Isa isa = active_isa();
  const bool on_bf16 = same && bf16_one_block(gate, isa) && bf16_one_block(up, isa);
  const bool on_amx = same && !on_bf16 && !act_bf16 && amx_one_block(gate, isa) && amx_one_block(up, isa);
  if ((on_bf16 || on_amx) && switch_on("SEALKIT_FUSED_GATE_UP")) {
    const KernelSpec& ks = on_amx ? kAmxSpec : kBf16Spec;
    GemmArgs<float> g = up;
    g.C = act;
    g.ldc = ld_act;
    const PackedWeight* pg = usable_packed_weight(gate, ks);
    const PackedWeight* pu = usable_packed_weight(up, ks);
    if (pg && pu) {
      const GatePair pair{pg->strips, pg->strip_stride, gate.alpha, act_bf16};
      packed_gemm(g, ks, nullptr, pu->strips, pu->strip_stride, &pair);
      return true;
    }
    if (on_amx) {
      const int64_t stride = ks.nr * packed_depth(ks, up.K), strips = (up.N + ks.nr - 1) / ks.nr;
      std::vector<float>& buf = scratch().pair;
      if (buf.size() < static_cast<size_t>(2 * strips * stride)) buf.resize(2 * strips * stride);
      float* const packed[2] = {buf.data(), buf.data() + strips * stride};
      const MatRef bs[2] = {b_ref(gate), b_ref(up)};
      pack_b_strips(ks, bs, packed, 2, up.N, up.K, stride);
      const GatePair pair{packed[0], stride, gate.alpha};
      packed_gemm(g, ks, nullptr, packed[1], stride, &pair);
      return true;
    }
  }
#endif
  gemm(gate);
  gemm(up);
  if (!act_bf16) {
    swiglu_forward_rows(gate.C, gate.ldc, up.C, up.ldc, act, ld_act, up.M, up.N);
    return false;
  }
  // act in f32 over up.C (each element reads its own up first), then its rows rounded as the fused
  // tiles round them.
  swiglu_forward_rows(gate.C, gate.ldc, up.C, up.ldc, up.C, up.ldc, up.M, up.N);
  parallel_for(up.M, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) round_to_bf16(up.C + i * up.ldc, act_bf16 + i * ld_act, up.N);
  });
  return false;
}

// Measured (2 threads, AMD Zen 5): the tiny preset's LoRA step 1.011-1.017x (three in-process A/B
// runs of 100 repeats, `seal bench train --ab-env SEALKIT_FUSED_SWIGLU_BACKWARD=0`), the call itself
// 1.49-1.54 ms per step against 1.99-2.02 for the GEMM and the separate pass (profiled, alternating);
// SmolLM2-135M's step 1.005-1.010x. The same fusion of SwiGLU's forward pass onto the up
// projection's GEMM in training (which must store up for the backward pass anyway, so it saves one
// read) measured level (0.992-1.003x) and was dropped.
bool gemm_swiglu_backward(const GemmArgs<float>& g, const LowRankUpdate* update, const SwigluGrad& s) {
  if (g.M <= 0 || g.N <= 0) return false;
#if SEALKIT_X86
  if (const PackedWeight* pw = fused_tiles_weight(g, update, "SEALKIT_FUSED_SWIGLU_BACKWARD")) {
    packed_gemm(g, kBf16Spec, update, pw->strips, pw->strip_stride, nullptr, nullptr, &s);
    return true;
  }
#endif
  if (update) gemm_with_update(g, *update);
  else gemm(g);
  if (g.ldc == g.N) {
    swiglu_backward<float>(s.gate, s.up, g.C, s.dgate, s.dup, g.M * g.N);
  } else {
    for (int64_t i = 0; i < g.M; ++i) {
      const int64_t o = i * g.ldc;
      swiglu_backward<float>(s.gate + o, s.up + o, g.C + o, s.dgate + o, s.dup + o, g.N);
    }
  }
  return false;
}

bool gemm_up_swiglu(const GemmArgs<float>& up, const LowRankUpdate* update, const float* gate, float* act) {
  if (up.M <= 0 || up.N <= 0) return false;
#if SEALKIT_X86
  if (const PackedWeight* pw = fused_tiles_weight(up, update, "SEALKIT_FUSED_UP_SWIGLU")) {
    const SwigluUp s{gate, act};
    packed_gemm(up, kBf16Spec, update, pw->strips, pw->strip_stride, nullptr, nullptr, nullptr, &s);
    return true;
  }
#endif
  if (update) gemm_with_update(up, *update);
  else gemm(up);
  swiglu_forward_rows(gate, up.ldc, up.C, up.ldc, act, up.ldc, up.M, up.N);
  return false;
}

PackedWeight::~PackedWeight() { weight_block_free(strips); }

bool gemm_reads_packed_weight(int64_t M, DType dtype, bool transposed) {
#if SEALKIT_X86
  // An f32 W: the f32 kernel of any ISA; a bf16 W: the vdpbf16ps kernel only.
  const Isa isa = active_isa();
  if (dtype != DType::F32 && (dtype != DType::BF16 || isa != Isa::Avx512Bf16)) return false;
  GemmArgs<float> g;
  g.M = M;
  g.B.dtype = dtype;
  g.trans_b = transposed;
  // The environment last (use_amx and the switches read it): decoding asks on every projection of
  // every token; one row streams W's rows, 2-16 rows its strips (few_rows_strips).
  const bool reads_packed = !takes_few_rows(g, isa) || (dtype == DType::BF16 && transposed && use_few_rows_packed(M));
  return reads_packed && packed_weights_on();
#else
  (void)M, (void)dtype, (void)transposed;
  return false;
#endif
}

bool gemm_reads_bf16_rows(DType dtype) {
#if SEALKIT_X86
  return dtype == DType::BF16 && active_isa() == Isa::Avx512Bf16 && !use_amx() && switch_on("SEALKIT_BF16_ROWS");
#else
  (void)dtype;
  return false;
#endif
}

int64_t packed_strip_kc_depth(int64_t K) {
#if SEALKIT_X86
  return packed_kc_depth(kBf16Spec, packed_depth(kBf16Spec, K));
#else
  (void)K;
  return 0;
#endif
}

std::unique_ptr<PackedWeight> pack_weight(WeightView w, int64_t rows, int64_t cols, bool transposed) {
#if SEALKIT_X86
  if (rows <= 0 || cols <= 0) return nullptr;
  // The kernel gemm_f32 picks for this B: for f32, the active ISA's f32 kernel; for bf16, AMX or
  // vdpbf16ps, under AVX512-BF16 only (elsewhere a bf16 W stays unpacked).
  const Isa isa = active_isa();
  if (w.dtype == DType::BF16 && isa != Isa::Avx512Bf16) return nullptr;
  if (w.dtype != DType::BF16 && w.dtype != DType::F32) return nullptr;
  const KernelSpec ks = w.dtype != DType::BF16 ? select_kernel(isa) : use_amx() ? kAmxSpec : kBf16Spec;
  auto pw = std::make_unique<PackedWeight>();
  pw->source = w.data;
  pw->trans_b = transposed;
  pw->N = transposed ? rows : cols;  // y = x W^T: op(B) = W^T [cols, rows]; dx = dy W: op(B) = W
  pw->K = transposed ? cols : rows;
  pw->ldb = cols;
  pw->nr = ks.nr;
  pw->pairs = ks.pairs;
  pw->pair_align = ks.pair_align;
  pw->strip_stride = packed_depth(ks, pw->K) * ks.nr;
  const int64_t strips = (pw->N + ks.nr - 1) / ks.nr;
  pw->bytes = static_cast<size_t>(strips * pw->strip_stride) * sizeof(float);
  pw->strips = static_cast<float*>(weight_block_alloc(pw->bytes));  // huge pages: huge_pages.h
  const MatRef B{w.data, w.dtype, transposed ? 1 : cols, transposed ? cols : 1};
  pack_b_strips(ks, &B, &pw->strips, 1, pw->N, pw->K, pw->strip_stride);
  return pw;
#else
  (void)w, (void)rows, (void)cols, (void)transposed;
  return nullptr;
#endif
}

void round_to_bf16(const float* x, uint16_t* dst, int64_t n) {
#if SEALKIT_X86
  if (active_isa() == Isa::Avx512Bf16) return round_to_bf16_avx512(x, dst, n);
#endif
  (void)x, (void)dst, (void)n;
  throw std::runtime_error("round_to_bf16: needs AVX512-BF16 (the rounding of the bf16-product kernels)");
}

template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);

}  // namespace sealkit::cpu
