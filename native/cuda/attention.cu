// Causal grouped-query attention over packed variable-length sequences (contract:
// native/cpu/kernels.h), flash-style: scores are computed tile by tile in shared memory with an
// online softmax and never materialised; the forward pass saves the log-sum-exp per (row, head) and
// the backward pass recomputes the probabilities from it.
//
// All arithmetic is f32 (SIMT FMAs), so results match the CPU to float rounding (~1e-6 relative).
// Tiles: 256 threads; BQ = 64 queries (32 for head_dim > 128, to fit shared memory on sm_80) by
// BK = 32 keys; head_dim is padded with zeros to 64, 128 or 256 in shared memory. Thread (ty, tx)
// of a 16 x 16 grid owns score rows ty + 16*i and columns tx + 16*j, and output columns
// tx*4 + 64*c .. +3, so row statistics are reduced with 16-lane shuffles and every shared-memory
// read is a conflict-free float4 or a broadcast.
//
// Backward without atomics, deterministic: one kernel owns a key tile of one kv head and loops over
// the query heads of its group and the query tiles that can see it, accumulating dK and dV in
// registers; a second kernel owns a query tile of one head and accumulates dQ over key tiles. The
// second recomputes QK^T and dO V^T (7 tile products instead of 5) — the price of writing every
// gradient once, with "=" semantics and no atomic traffic.
#include <algorithm>
#include <string>

#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBK = 32;
constexpr int kPS = kBK + 4;  // row stride of probability tiles

struct Params {
  const float* q;
  const float* k;
  const float* v;
  const float* out;
  const float* lse;
  const float* dout;
  const float* delta;
  float* o;
  float* lse_out;
  float* dq;
  float* dk;
  float* dv;
  const int32_t* seq_start;  // query rows of sequence s start here ...
  const int32_t* seq_len;    // ... and number this many
  const int32_t* kv_start;   // its key/value rows (== seq_start/seq_len except for KV-cache attention)
  const int32_t* kv_len;
  int64_t q_stride, kv_stride, o_stride;
  int heads, kv_heads, head_dim, group;
  float scale;
  int tiles_per_seq;
  int max_len;  // delta is indexed per sequence: (s * max_len + i) * heads + h
};

// Loads rows [r0, r0 + n) of one head (row stride `stride`, head offset `col0`) into a shared tile
// [n][HD + 4], zero-filling rows at or past `valid` and columns at or past head_dim.
template <int HD>
__device__ __forceinline__ void load_rows(float* dst, const float* src, int64_t stride, int64_t col0, int64_t base_row,
                                          int r0, int n, int valid, int head_dim) {
  for (int e = threadIdx.x; e < n * HD; e += kThreads) {
    const int i = e / HD, d = e % HD;
    const int r = r0 + i;
    float x = 0.0f;
    if (r < valid && d < head_dim) x = src[(base_row + r) * stride + col0 + d];
    dst[i * (HD + 4) + d] = x;
  }
}

// s[ii][jj] = sum_d A[ty + 16 ii][d] * B[tx + 16 jj][d]   (A, B shared tiles of stride HD + 4)
template <int HD, int RQ>
__device__ __forceinline__ void tile_abt(const float* A, const float* B, int ty, int tx, float (&s)[RQ][2]) {
#pragma unroll
  for (int ii = 0; ii < RQ; ++ii) s[ii][0] = s[ii][1] = 0.0f;
#pragma unroll 4
  for (int d = 0; d < HD; d += 4) {
    float4 a[RQ], b[2];
#pragma unroll
    for (int ii = 0; ii < RQ; ++ii) a[ii] = *reinterpret_cast<const float4*>(A + (ty + 16 * ii) * (HD + 4) + d);
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) b[jj] = *reinterpret_cast<const float4*>(B + (tx + 16 * jj) * (HD + 4) + d);
#pragma unroll
    for (int ii = 0; ii < RQ; ++ii)
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        float t = s[ii][jj];
        t = fmaf(a[ii].x, b[jj].x, t);
        t = fmaf(a[ii].y, b[jj].y, t);
        t = fmaf(a[ii].z, b[jj].z, t);
        t = fmaf(a[ii].w, b[jj].w, t);
        s[ii][jj] = t;
      }
  }
}

// acc[ii][c*4 + e] += sum_j P[ty + 16 ii][j] * V[j][tx*4 + 64 c + e]   (P stride kPS, V stride HD + 4)
template <int HD, int RQ>
__device__ __forceinline__ void tile_pv(const float* P, const float* V, int ty, int tx, float (&acc)[RQ][HD / 16]) {
#pragma unroll 2
  for (int j = 0; j < kBK; j += 4) {
    float4 p[RQ];
#pragma unroll
    for (int ii = 0; ii < RQ; ++ii) p[ii] = *reinterpret_cast<const float4*>(P + (ty + 16 * ii) * kPS + j);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
#pragma unroll
      for (int c = 0; c < HD / 64; ++c) {
        const float4 v = *reinterpret_cast<const float4*>(V + (j + q) * (HD + 4) + tx * 4 + 64 * c);
#pragma unroll
        for (int ii = 0; ii < RQ; ++ii) {
          const float pj = q == 0 ? p[ii].x : q == 1 ? p[ii].y : q == 2 ? p[ii].z : p[ii].w;
          acc[ii][c * 4 + 0] = fmaf(pj, v.x, acc[ii][c * 4 + 0]);
          acc[ii][c * 4 + 1] = fmaf(pj, v.y, acc[ii][c * 4 + 1]);
          acc[ii][c * 4 + 2] = fmaf(pj, v.z, acc[ii][c * 4 + 2]);
          acc[ii][c * 4 + 3] = fmaf(pj, v.w, acc[ii][c * 4 + 3]);
        }
      }
    }
  }
}

// acc[jj][c*4 + e] += sum_i P[i][ty + 16 jj] * X[i][tx*4 + 64 c + e]   (P^T X over n query rows)
template <int HD>
__device__ __forceinline__ void tile_ptx(const float* P, const float* X, int n, int ty, int tx,
                                         float (&acc)[2][HD / 16]) {
#pragma unroll 2
  for (int i = 0; i < n; ++i) {
    const float p0 = P[i * kPS + ty], p1 = P[i * kPS + ty + 16];
#pragma unroll
    for (int c = 0; c < HD / 64; ++c) {
      const float4 x = *reinterpret_cast<const float4*>(X + i * (HD + 4) + tx * 4 + 64 * c);
      acc[0][c * 4 + 0] = fmaf(p0, x.x, acc[0][c * 4 + 0]);
      acc[0][c * 4 + 1] = fmaf(p0, x.y, acc[0][c * 4 + 1]);
      acc[0][c * 4 + 2] = fmaf(p0, x.z, acc[0][c * 4 + 2]);
      acc[0][c * 4 + 3] = fmaf(p0, x.w, acc[0][c * 4 + 3]);
      acc[1][c * 4 + 0] = fmaf(p1, x.x, acc[1][c * 4 + 0]);
      acc[1][c * 4 + 1] = fmaf(p1, x.y, acc[1][c * 4 + 1]);
      acc[1][c * 4 + 2] = fmaf(p1, x.z, acc[1][c * 4 + 2]);
      acc[1][c * 4 + 3] = fmaf(p1, x.w, acc[1][c * 4 + 3]);
    }
  }
}

__device__ __forceinline__ float row16_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float row16_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int HD, int BQ>
constexpr size_t fwd_smem() { return (size_t(BQ) + 2 * kBK) * (HD + 4) * 4 + size_t(BQ) * kPS * 4; }
template <int HD, int BQ>
constexpr size_t dq_smem() { return (2 * size_t(BQ) + 2 * kBK) * (HD + 4) * 4 + size_t(BQ) * kPS * 4; }
template <int HD, int BQ>
constexpr size_t dkv_smem() { return (2 * size_t(BQ) + 2 * kBK) * (HD + 4) * 4 + 2 * size_t(BQ) * kPS * 4 + 2 * size_t(BQ) * 4; }

// ---- forward: one block per (query tile of a sequence, head) ----
template <int HD, int BQ>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(Params p) {
  constexpr int RQ = BQ / 16;
  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;
  float* Ks = Qs + BQ * (HD + 4);
  float* Vs = Ks + kBK * (HD + 4);
  float* Ps = Vs + kBK * (HD + 4);

  // Query i of the sequence sits at position off + i and sees keys 0 .. off + i (off = 0 except
  // for KV-cache attention, where the cache holds kv_len - q_len earlier tokens).
  const int s = blockIdx.x / p.tiles_per_seq, tile = blockIdx.x % p.tiles_per_seq, h = blockIdx.y;
  const int len = p.seq_len[s], q0 = tile * BQ;
  if (q0 >= len) return;
  const int64_t start = p.seq_start[s], kstart = p.kv_start[s];
  const int klen = p.kv_len[s], off = klen - len;
  const int kvh = h / p.group;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  load_rows<HD>(Qs, p.q, p.q_stride, int64_t(h) * p.head_dim, start, q0, BQ, len, p.head_dim);

  float m[RQ], l[RQ], acc[RQ][HD / 16];
#pragma unroll
  for (int ii = 0; ii < RQ; ++ii) {
    m[ii] = -INFINITY;
    l[ii] = 0.0f;
#pragma unroll
    for (int c = 0; c < HD / 16; ++c) acc[ii][c] = 0.0f;
  }

  const int kend = min(klen, off + q0 + BQ);
  for (int k0 = 0; k0 < kend; k0 += kBK) {
    __syncthreads();  // previous tile's Ks/Vs/Ps are no longer read (and Qs is loaded on the first pass)
    load_rows<HD>(Ks, p.k, p.kv_stride, int64_t(kvh) * p.head_dim, kstart, k0, kBK, klen, p.head_dim);
    load_rows<HD>(Vs, p.v, p.kv_stride, int64_t(kvh) * p.head_dim, kstart, k0, kBK, klen, p.head_dim);
    __syncthreads();
    float sc[RQ][2];
    tile_abt<HD, RQ>(Qs, Ks, ty, tx, sc);
#pragma unroll
    for (int ii = 0; ii < RQ; ++ii) {
      const int qi = off + q0 + ty + 16 * ii;
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int kj = k0 + tx + 16 * jj;
        sc[ii][jj] = (kj <= qi && kj < klen) ? sc[ii][jj] * p.scale : -INFINITY;
      }
      const float mt = row16_max(fmaxf(sc[ii][0], sc[ii][1]));
      const float mn = fmaxf(m[ii], mt);
      float corr, p0, p1;
      if (mn == -INFINITY) {  // nothing visible yet in this row
        corr = 1.0f;
        p0 = p1 = 0.0f;
      } else {
        corr = expf(m[ii] - mn);
        p0 = expf(sc[ii][0] - mn);
        p1 = expf(sc[ii][1] - mn);
      }
      l[ii] = l[ii] * corr + row16_sum(p0 + p1);
      m[ii] = mn;
#pragma unroll
      for (int c = 0; c < HD / 16; ++c) acc[ii][c] *= corr;
      Ps[(ty + 16 * ii) * kPS + tx] = p0;
      Ps[(ty + 16 * ii) * kPS + tx + 16] = p1;
    }
    __syncthreads();
    tile_pv<HD, RQ>(Ps, Vs, ty, tx, acc);
  }

#pragma unroll
  for (int ii = 0; ii < RQ; ++ii) {
    const int qi = q0 + ty + 16 * ii;
    if (qi >= len) continue;
    const int64_t row = start + qi;
    const float inv = 1.0f / l[ii];
    if (tx == 0 && p.lse_out) p.lse_out[row * p.heads + h] = m[ii] + logf(l[ii]);
    float* o = p.o + row * p.o_stride + int64_t(h) * p.head_dim;
#pragma unroll
    for (int c = 0; c < HD / 64; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = tx * 4 + 64 * c + e;
        if (d < p.head_dim) o[d] = acc[ii][c * 4 + e] * inv;
      }
  }
}

// delta[row, h] = sum_d dout[row, h, d] * out[row, h, d]. Blocks are laid out like the other
// kernels (sequence tile x head) so only rows inside sequences are touched; one warp per row.
__global__ void attn_delta_kernel(Params p) {
  constexpr int kRows = 64;
  const int s = blockIdx.x / p.tiles_per_seq, tile = blockIdx.x % p.tiles_per_seq, h = blockIdx.y;
  const int len = p.seq_len[s];
  const int64_t start = p.seq_start[s];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int i = tile * kRows + warp; i < min(len, (tile + 1) * kRows); i += kThreads / 32) {
    const int64_t row = start + i;
    const float* a = p.out + row * p.o_stride + int64_t(h) * p.head_dim;
    const float* b = p.dout + row * p.o_stride + int64_t(h) * p.head_dim;
    float acc = 0.0f;
    for (int d = lane; d < p.head_dim; d += 32) acc = fmaf(a[d], b[d], acc);
    acc = warp_sum(acc);
    if (lane == 0) const_cast<float*>(p.delta)[(int64_t(s) * p.max_len + i) * p.heads + h] = acc;
  }
}

// ---- backward dQ: one block per (query tile, head) ----
template <int HD, int BQ>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(Params p) {
  constexpr int RQ = BQ / 16;
  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;
  float* dOs = Qs + BQ * (HD + 4);
  float* Ks = dOs + BQ * (HD + 4);
  float* Vs = Ks + kBK * (HD + 4);
  float* dSs = Vs + kBK * (HD + 4);

  const int s = blockIdx.x / p.tiles_per_seq, tile = blockIdx.x % p.tiles_per_seq, h = blockIdx.y;
  const int len = p.seq_len[s], q0 = tile * BQ;
  if (q0 >= len) return;
  const int64_t start = p.seq_start[s];
  const int kvh = h / p.group;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  load_rows<HD>(Qs, p.q, p.q_stride, int64_t(h) * p.head_dim, start, q0, BQ, len, p.head_dim);
  load_rows<HD>(dOs, p.dout, p.o_stride, int64_t(h) * p.head_dim, start, q0, BQ, len, p.head_dim);
  float lse[RQ], dl[RQ], acc[RQ][HD / 16];
#pragma unroll
  for (int ii = 0; ii < RQ; ++ii) {
    const int qi = q0 + ty + 16 * ii;
    lse[ii] = qi < len ? p.lse[(start + qi) * p.heads + h] : 0.0f;
    dl[ii] = qi < len ? p.delta[(int64_t(s) * p.max_len + qi) * p.heads + h] : 0.0f;
#pragma unroll
    for (int c = 0; c < HD / 16; ++c) acc[ii][c] = 0.0f;
  }

  const int kend = min(len, q0 + BQ);
  for (int k0 = 0; k0 < kend; k0 += kBK) {
    __syncthreads();
    load_rows<HD>(Ks, p.k, p.kv_stride, int64_t(kvh) * p.head_dim, start, k0, kBK, len, p.head_dim);
    load_rows<HD>(Vs, p.v, p.kv_stride, int64_t(kvh) * p.head_dim, start, k0, kBK, len, p.head_dim);
    __syncthreads();
    float sc[RQ][2], dp[RQ][2];
    tile_abt<HD, RQ>(Qs, Ks, ty, tx, sc);
    tile_abt<HD, RQ>(dOs, Vs, ty, tx, dp);
#pragma unroll
    for (int ii = 0; ii < RQ; ++ii) {
      const int qi = q0 + ty + 16 * ii;
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int kj = k0 + tx + 16 * jj;
        const bool vis = kj <= qi && qi < len;
        const float pr = vis ? expf(sc[ii][jj] * p.scale - lse[ii]) : 0.0f;
        dSs[(ty + 16 * ii) * kPS + tx + 16 * jj] = pr * (dp[ii][jj] - dl[ii]);
      }
    }
    __syncthreads();
    tile_pv<HD, RQ>(dSs, Ks, ty, tx, acc);
  }

#pragma unroll
  for (int ii = 0; ii < RQ; ++ii) {
    const int qi = q0 + ty + 16 * ii;
    if (qi >= len) continue;
    float* dq = p.dq + (start + qi) * p.q_stride + int64_t(h) * p.head_dim;
#pragma unroll
    for (int c = 0; c < HD / 64; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = tx * 4 + 64 * c + e;
        if (d < p.head_dim) dq[d] = acc[ii][c * 4 + e] * p.scale;
      }
  }
}

// ---- backward dK, dV: one block per (key tile, kv head), looping over the group's query heads ----
template <int HD, int BQ>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkv_kernel(Params p) {
  constexpr int RQ = BQ / 16;
  extern __shared__ __align__(16) float smem[];
  float* Ks = smem;
  float* Vs = Ks + kBK * (HD + 4);
  float* Qs = Vs + kBK * (HD + 4);
  float* dOs = Qs + BQ * (HD + 4);
  float* Ps = dOs + BQ * (HD + 4);
  float* dSs = Ps + BQ * kPS;
  float* lse_s = dSs + BQ * kPS;
  float* dl_s = lse_s + BQ;

  const int s = blockIdx.x / p.tiles_per_seq, tile = blockIdx.x % p.tiles_per_seq, kvh = blockIdx.y;
  const int len = p.seq_len[s], k0 = tile * kBK;
  if (k0 >= len) return;
  const int64_t start = p.seq_start[s];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  load_rows<HD>(Ks, p.k, p.kv_stride, int64_t(kvh) * p.head_dim, start, k0, kBK, len, p.head_dim);
  load_rows<HD>(Vs, p.v, p.kv_stride, int64_t(kvh) * p.head_dim, start, k0, kBK, len, p.head_dim);
  float dk[2][HD / 16], dv[2][HD / 16];
#pragma unroll
  for (int jj = 0; jj < 2; ++jj)
#pragma unroll
    for (int c = 0; c < HD / 16; ++c) dk[jj][c] = dv[jj][c] = 0.0f;

  const int qbegin = (k0 / BQ) * BQ;  // first query tile that can see this key tile
  for (int hi = 0; hi < p.group; ++hi) {
    const int h = kvh * p.group + hi;
    for (int q0 = qbegin; q0 < len; q0 += BQ) {
      __syncthreads();  // previous Qs/dOs/Ps/dSs no longer read
      load_rows<HD>(Qs, p.q, p.q_stride, int64_t(h) * p.head_dim, start, q0, BQ, len, p.head_dim);
      load_rows<HD>(dOs, p.dout, p.o_stride, int64_t(h) * p.head_dim, start, q0, BQ, len, p.head_dim);
      for (int i = threadIdx.x; i < BQ; i += kThreads) {
        const int qi = q0 + i;
        lse_s[i] = qi < len ? p.lse[(start + qi) * p.heads + h] : 0.0f;
        dl_s[i] = qi < len ? p.delta[(int64_t(s) * p.max_len + qi) * p.heads + h] : 0.0f;
      }
      __syncthreads();
      float sc[RQ][2], dp[RQ][2];
      tile_abt<HD, RQ>(Qs, Ks, ty, tx, sc);
      tile_abt<HD, RQ>(dOs, Vs, ty, tx, dp);
#pragma unroll
      for (int ii = 0; ii < RQ; ++ii) {
        const int il = ty + 16 * ii, qi = q0 + il;
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          const int jl = tx + 16 * jj, kj = k0 + jl;
          const bool vis = kj <= qi && qi < len;
          const float pr = vis ? expf(sc[ii][jj] * p.scale - lse_s[il]) : 0.0f;
          Ps[il * kPS + jl] = pr;
          dSs[il * kPS + jl] = pr * (dp[ii][jj] - dl_s[il]);
        }
      }
      __syncthreads();
      const int n = min(BQ, len - q0);  // rows past the sequence have P = dS = 0: skip them
      tile_ptx<HD>(Ps, dOs, n, ty, tx, dv);
      tile_ptx<HD>(dSs, Qs, n, ty, tx, dk);
    }
  }

#pragma unroll
  for (int jj = 0; jj < 2; ++jj) {
    const int kj = k0 + ty + 16 * jj;
    if (kj >= len) continue;
    float* dkr = p.dk + (start + kj) * p.kv_stride + int64_t(kvh) * p.head_dim;
    float* dvr = p.dv + (start + kj) * p.kv_stride + int64_t(kvh) * p.head_dim;
#pragma unroll
    for (int c = 0; c < HD / 64; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = tx * 4 + 64 * c + e;
        if (d < p.head_dim) {
          dkr[d] = dk[jj][c * 4 + e] * p.scale;
          dvr[d] = dv[jj][c * 4 + e];
        }
      }
  }
}

template <typename Kernel>
void launch_kernel(Kernel kernel, size_t smem, dim3 grid, cudaStream_t stream, const Params& p, const char* name) {
  SEALKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, kThreads, smem, stream>>>(p);
  SEALKIT_CUDA_LAUNCHED(name);
}

Params make_params(const AttentionShape& s) {
  if (s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0)
    throw std::invalid_argument("cuda attention: heads must be a positive multiple of kv_heads");
  if (s.head_dim <= 0 || s.head_dim > 256)
    throw std::invalid_argument("cuda attention: head_dim " + std::to_string(s.head_dim) + " is not in [1, 256]");
  Params p{};
  p.seq_start = p.kv_start = s.seq_start;
  p.seq_len = p.kv_len = s.seq_len;
  p.q_stride = s.q_stride;
  p.kv_stride = s.kv_stride;
  p.o_stride = s.heads * s.head_dim;
  p.heads = static_cast<int>(s.heads);
  p.kv_heads = static_cast<int>(s.kv_heads);
  p.head_dim = static_cast<int>(s.head_dim);
  p.group = static_cast<int>(s.heads / s.kv_heads);
  p.scale = static_cast<float>(s.scale);
  p.max_len = static_cast<int>(s.max_seq_len);
  return p;
}

template <int HD, int BQ>
void forward_impl(Ctx& ctx, Params p, int64_t n_seqs, int64_t max_len) {
  p.tiles_per_seq = static_cast<int>((max_len + BQ - 1) / BQ);
  dim3 grid(static_cast<unsigned>(n_seqs * p.tiles_per_seq), static_cast<unsigned>(p.heads));
  launch_kernel(attn_fwd_kernel<HD, BQ>, fwd_smem<HD, BQ>(), grid, ctx.stream, p, "attn_fwd_kernel");
}

template <int HD, int BQ>
void backward_impl(Ctx& ctx, Params p, const AttentionShape& s) {
  p.tiles_per_seq = static_cast<int>((s.max_seq_len + kBK - 1) / kBK);
  dim3 grid_kv(static_cast<unsigned>(s.n_seqs * p.tiles_per_seq), static_cast<unsigned>(s.kv_heads));
  launch_kernel(attn_bwd_dkv_kernel<HD, BQ>, dkv_smem<HD, BQ>(), grid_kv, ctx.stream, p, "attn_bwd_dkv_kernel");
  p.tiles_per_seq = static_cast<int>((s.max_seq_len + BQ - 1) / BQ);
  dim3 grid_q(static_cast<unsigned>(s.n_seqs * p.tiles_per_seq), static_cast<unsigned>(s.heads));
  launch_kernel(attn_bwd_dq_kernel<HD, BQ>, dq_smem<HD, BQ>(), grid_q, ctx.stream, p, "attn_bwd_dq_kernel");
}

}  // namespace

void attention_forward(Ctx& ctx, const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse) {
  if (s.n_seqs <= 0 || s.max_seq_len <= 0) return;
  Params p = make_params(s);
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = out;
  p.lse_out = lse;
  if (s.head_dim <= 64) forward_impl<64, 64>(ctx, p, s.n_seqs, s.max_seq_len);
  else if (s.head_dim <= 128) forward_impl<128, 64>(ctx, p, s.n_seqs, s.max_seq_len);
  else forward_impl<256, 32>(ctx, p, s.n_seqs, s.max_seq_len);
}

// KV-cache attention (generation): the forward kernel with queries offset into their sequence's
// cache. The query-tile count is bounded by max_kv_len (q_len <= kv_len); tiles past a sequence's
// q_len exit at once. No log-sum-exp is kept.
void attention_cached_forward(Ctx& ctx, const CachedAttentionShape& s, const float* q, const float* k_cache,
                              const float* v_cache, float* out) {
  if (s.n_seqs <= 0 || s.max_kv_len <= 0) return;
  AttentionShape a;
  a.heads = s.heads; a.kv_heads = s.kv_heads; a.head_dim = s.head_dim;
  a.q_stride = s.q_stride; a.kv_stride = s.kv_stride; a.scale = s.scale;
  a.n_seqs = s.n_seqs; a.max_seq_len = s.max_kv_len;
  Params p = make_params(a);
  p.seq_start = s.q_start;
  p.seq_len = s.q_len;
  p.kv_start = s.kv_start;
  p.kv_len = s.kv_len;
  p.q = q;
  p.k = k_cache;
  p.v = v_cache;
  p.o = out;
  p.lse_out = nullptr;
  if (s.head_dim <= 64) forward_impl<64, 64>(ctx, p, s.n_seqs, s.max_kv_len);
  else if (s.head_dim <= 128) forward_impl<128, 64>(ctx, p, s.n_seqs, s.max_kv_len);
  else forward_impl<256, 32>(ctx, p, s.n_seqs, s.max_kv_len);
}

void attention_backward(Ctx& ctx, const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  if (s.n_seqs <= 0 || s.max_seq_len <= 0) return;
  Params p = make_params(s);
  p.q = q;
  p.k = k;
  p.v = v;
  p.out = out;
  p.lse = lse;
  p.dout = dout;
  p.dq = dq;
  p.dk = dk;
  p.dv = dv;
  // delta holds n_seqs x max_seq_len x heads values, indexed by (sequence, position, head).
  const int64_t rows_bound = s.n_seqs * s.max_seq_len;
  p.delta = static_cast<float*>(
      ctx.scratch->get(kScratchAttnDelta, static_cast<size_t>(rows_bound * s.heads) * sizeof(float), ctx.stream));
  {
    Params pd = p;
    pd.tiles_per_seq = static_cast<int>((s.max_seq_len + 63) / 64);
    dim3 grid(static_cast<unsigned>(s.n_seqs * pd.tiles_per_seq), static_cast<unsigned>(s.heads));
    attn_delta_kernel<<<grid, kThreads, 0, ctx.stream>>>(pd);
    SEALKIT_CUDA_LAUNCHED("attn_delta_kernel");
  }
  if (s.head_dim <= 64) backward_impl<64, 64>(ctx, p, s);
  else if (s.head_dim <= 128) backward_impl<128, 64>(ctx, p, s);
  else backward_impl<256, 32>(ctx, p, s);
}

}  // namespace sealkit::cuda
