// Element-wise and gather/scatter kernels of the CUDA backend: embedding, SwiGLU, scale/axpy, row
// bias and its gradient, dropout, random fills, and dtype conversion at upload. Semantics are those
// of native/cpu/kernels.h and misc_kernels.cc; the random kernels reproduce core/rng.h exactly, so
// a dropout mask or an initialisation is the same on both backends.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cstring>
#include <string>

#include "cuda_common.cuh"
#include "cuda_kernels.h"

namespace sealkit::cuda {
namespace {

constexpr int kThreads = 256;

// ---- embedding ----

__global__ void embedding_forward_kernel(const int32_t* ids, int64_t n, const void* table, bool bf16, int64_t dim,
                                         float* out) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t base = static_cast<int64_t>(ids[row]) * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) out[row * dim + c] = load_weight(table, bf16, base + c);
  }
}

// After a stable sort of (id, token) pairs, the first position of each run of equal ids owns that
// vocabulary row: it adds the run's token gradients in token order, exactly the CPU's order, so the
// result is deterministic and matches the CPU bit for bit. No atomics.
__global__ void embedding_backward_kernel(const int32_t* sorted_ids, const int32_t* order, int64_t n,
                                          const float* dout, int64_t dim, float* dtable) {
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    const int32_t id = sorted_ids[j];
    if (j > 0 && sorted_ids[j - 1] == id) continue;
    int64_t e = j + 1;
    while (e < n && sorted_ids[e] == id) ++e;
    float* dst = dtable + static_cast<int64_t>(id) * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      float acc = dst[c];
      for (int64_t q = j; q < e; ++q) acc += dout[static_cast<int64_t>(order[q]) * dim + c];
      dst[c] = acc;
    }
  }
}

__global__ void iota_kernel(int32_t* v, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    v[i] = static_cast<int32_t>(i);
}

// ---- SwiGLU ----

__device__ __forceinline__ float sigmoidf(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void swiglu_forward_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g * sigmoidf(g) * up[i];
  }
}

__global__ void swiglu_backward_kernel(const float* gate, const float* up, const float* dout, float* dgate,
                                       float* dup, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i], u = up[i], d = dout[i];
    const float s = sigmoidf(g);
    const float silu = g * s;
    dgate[i] = d * u * (s * (1.0f + g * (1.0f - s)));
    dup[i] = d * silu;
  }
}

// ---- small element-wise ops ----

__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= s;
}

__global__ void axpy_kernel(float* y, const float* x, int64_t n, float a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += a * x[i];
}

__global__ void add_row_bias_kernel(float* out, const float* bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] += bias[i % cols];
}

// Column sums, two passes with a fixed summation order (deterministic): pass 1 sums chunks of
// kColChunk rows per column in double, pass 2 adds the chunk partials in chunk order.
constexpr int64_t kColChunk = 64;

__global__ void column_partials_kernel(const float* a, const float* b, const float* row_scale, double* partials,
                                       int64_t rows, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * kColChunk, r1 = min(rows, r0 + kColChunk);
  double s = 0;
  for (int64_t r = r0; r < r1; ++r) {
    double v = a[r * cols + c];
    if (b) v *= b[r * cols + c];
    if (row_scale) v *= row_scale[r];
    s += v;
  }
  partials[blockIdx.y * cols + c] = s;
}

__global__ void column_finish_kernel(const double* partials, int64_t chunks, float* out, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  double s = 0;
  for (int64_t k = 0; k < chunks; ++k) s += partials[k * cols + c];
  out[c] += static_cast<float>(s);
}

// ---- random ----

__global__ void dropout_kernel(const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
                               float keep_scale, uint64_t seed) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    const uint64_t counter = static_cast<uint64_t>(row_offset + r) * static_cast<uint64_t>(cols) + static_cast<uint64_t>(c);
    const bool keep = rng_uniform(seed, counter) >= p;
    out[i] = keep ? x[i] * keep_scale : 0.0f;
  }
}

__global__ void fill_normal_kernel(float* x, int64_t n, uint64_t seed, float std, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = std == 0.0f ? value : value + std * rng_normal(seed, static_cast<uint64_t>(i));
}

__global__ void fill_uniform_kernel(float* x, int64_t n, uint64_t seed, float bound) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = (2.0f * rng_uniform(seed, static_cast<uint64_t>(i)) - 1.0f) * bound;
}

// ---- row gather / scatter (generation) ----

// dst[idx_dst(i)] row = src[idx_src(i)] row; exactly one of src_rows/dst_rows is non-null.
__global__ void move_rows_kernel(const float* src, int64_t src_stride, const int32_t* src_rows, int64_t n, int64_t cols,
                                 float* dst, int64_t dst_stride, const int32_t* dst_rows) {
  const int64_t total = n * cols;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / cols, c = t - i * cols;
    const int64_t rs = src_rows ? src_rows[i] : i, rd = dst_rows ? dst_rows[i] : i;
    dst[rd * dst_stride + c] = src[rs * src_stride + c];
  }
}

// ---- conversion ----

// src: raw little-endian host bytes staged on the device; kind 0 = F32, 1 = BF16, 2 = F16.
__global__ void convert_kernel(void* dst, bool to_bf16, const void* src, int kind, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float f;
    if (kind == 0) f = static_cast<const float*>(src)[i];
    else if (kind == 1) f = bf16_bits_to_f32(static_cast<const uint16_t*>(src)[i]);
    else f = f16_bits_to_f32(static_cast<const uint16_t*>(src)[i]);
    if (to_bf16) static_cast<uint16_t*>(dst)[i] = f32_to_bf16_bits(f);
    else static_cast<float*>(dst)[i] = f;
  }
}

}  // namespace

void embedding_forward(Ctx& ctx, const int32_t* ids, int64_t n, WeightView table, int64_t dim, float* out) {
  if (n <= 0 || dim <= 0) return;
  embedding_forward_kernel<<<blocks_for(n, 1, 65535), kThreads, 0, ctx.stream>>>(ids, n, table.data,
                                                                                 table.dtype == DType::BF16, dim, out);
  SEALKIT_CUDA_LAUNCHED("embedding_forward_kernel");
}

void embedding_backward(Ctx& ctx, const int32_t* ids, int64_t n, const float* dout, int64_t dim, float* dtable) {
  if (n <= 0 || dim <= 0) return;
  if (n > INT32_MAX / 2) throw std::runtime_error("embedding_backward: too many tokens for one call");
  // keys/values in (ids copy, sorted ids, order in, order out) = 4 arrays of n int32.
  auto* buf = static_cast<int32_t*>(ctx.scratch->get(kScratchSortKeys, static_cast<size_t>(n) * 4 * sizeof(int32_t), ctx.stream));
  int32_t* sorted_ids = buf;
  int32_t* order_in = buf + n;
  int32_t* order_out = buf + 2 * n;
  iota_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(order_in, n);
  SEALKIT_CUDA_LAUNCHED("iota_kernel");
  size_t temp_bytes = 0;
  SEALKIT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ids, sorted_ids, order_in, order_out,
                                                     static_cast<int>(n), 0, 32, ctx.stream));
  void* temp = ctx.scratch->get(kScratchSortTemp, std::max<size_t>(temp_bytes, 16), ctx.stream);
  // LSD radix sort is stable: equal ids keep token order, which the owner kernel relies on.
  SEALKIT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, sorted_ids, order_in, order_out,
                                                     static_cast<int>(n), 0, 32, ctx.stream));
  embedding_backward_kernel<<<blocks_for(n, 1, 65535), kThreads, 0, ctx.stream>>>(sorted_ids, order_out, n, dout,
                                                                                  dim, dtable);
  SEALKIT_CUDA_LAUNCHED("embedding_backward_kernel");
}

void swiglu_forward(Ctx& ctx, const float* gate, const float* up, float* out, int64_t n) {
  if (n <= 0) return;
  swiglu_forward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(gate, up, out, n);
  SEALKIT_CUDA_LAUNCHED("swiglu_forward_kernel");
}

void swiglu_backward(Ctx& ctx, const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                     int64_t n) {
  if (n <= 0) return;
  swiglu_backward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(gate, up, dout, dgate, dup, n);
  SEALKIT_CUDA_LAUNCHED("swiglu_backward_kernel");
}

void scale_inplace(Ctx& ctx, float* x, int64_t n, float s) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(x, n, s);
  SEALKIT_CUDA_LAUNCHED("scale_kernel");
}

void axpy(Ctx& ctx, float* y, const float* x, int64_t n, float a) {
  if (n <= 0) return;
  axpy_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(y, x, n, a);
  SEALKIT_CUDA_LAUNCHED("axpy_kernel");
}

void add_row_bias(Ctx& ctx, float* out, const float* bias, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  add_row_bias_kernel<<<blocks_for(rows * cols, kThreads), kThreads, 0, ctx.stream>>>(out, bias, rows, cols);
  SEALKIT_CUDA_LAUNCHED("add_row_bias_kernel");
}

void column_sum_add(Ctx& ctx, const float* a, const float* b, const float* row_scale, float* out, int64_t rows,
                    int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t chunks = (rows + kColChunk - 1) / kColChunk;
  if (chunks > 65535) throw std::runtime_error("column_sum_add: too many rows for one call");
  auto* partials = static_cast<double*>(
      ctx.scratch->get(kScratchColPartials, static_cast<size_t>(chunks * cols) * sizeof(double), ctx.stream));
  dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
  column_partials_kernel<<<grid, kThreads, 0, ctx.stream>>>(a, b, row_scale, partials, rows, cols);
  SEALKIT_CUDA_LAUNCHED("column_partials_kernel");
  column_finish_kernel<<<static_cast<unsigned>((cols + kThreads - 1) / kThreads), kThreads, 0, ctx.stream>>>(
      partials, chunks, out, cols);
  SEALKIT_CUDA_LAUNCHED("column_finish_kernel");
}

void bias_backward(Ctx& ctx, const float* dy, float* dbias, int64_t rows, int64_t cols) {
  column_sum_add(ctx, dy, nullptr, nullptr, dbias, rows, cols);
}

void dropout(Ctx& ctx, const float* x, float* out, int64_t rows, int64_t cols, int64_t row_offset, float p,
             uint64_t seed) {
  if (rows <= 0 || cols <= 0) return;
  const float keep_scale = 1.0f / (1.0f - p);  // computed on the host, as the CPU does
  dropout_kernel<<<blocks_for(rows * cols, kThreads), kThreads, 0, ctx.stream>>>(x, out, rows, cols, row_offset, p,
                                                                                keep_scale, seed);
  SEALKIT_CUDA_LAUNCHED("dropout_kernel");
}

void fill_normal(Ctx& ctx, float* x, int64_t n, uint64_t seed, float std, float value) {
  if (n <= 0) return;
  fill_normal_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(x, n, seed, std, value);
  SEALKIT_CUDA_LAUNCHED("fill_normal_kernel");
}

void fill_uniform(Ctx& ctx, float* x, int64_t n, uint64_t seed, float bound) {
  if (n <= 0) return;
  fill_uniform_kernel<<<blocks_for(n, kThreads), kThreads, 0, ctx.stream>>>(x, n, seed, bound);
  SEALKIT_CUDA_LAUNCHED("fill_uniform_kernel");
}

void gather_rows(Ctx& ctx, const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                 float* dst, int64_t dst_stride) {
  if (n <= 0 || cols <= 0) return;
  move_rows_kernel<<<blocks_for(n * cols, kThreads), kThreads, 0, ctx.stream>>>(src, src_stride, rows, n, cols, dst,
                                                                              dst_stride, nullptr);
  SEALKIT_CUDA_LAUNCHED("move_rows_kernel(gather)");
}

void scatter_rows(Ctx& ctx, const float* src, int64_t src_stride, const int32_t* rows, int64_t n, int64_t cols,
                  float* dst, int64_t dst_stride) {
  if (n <= 0 || cols <= 0) return;
  move_rows_kernel<<<blocks_for(n * cols, kThreads), kThreads, 0, ctx.stream>>>(src, src_stride, nullptr, n, cols, dst,
                                                                              dst_stride, rows);
  SEALKIT_CUDA_LAUNCHED("move_rows_kernel(scatter)");
}

void upload_converted(Ctx& ctx, void* dst, DType to, const void* host_src, const char* src_dtype, int64_t n) {
  const std::string s(src_dtype);
  if (to != DType::F32 && to != DType::BF16) throw std::invalid_argument("upload_converted: storage must be f32 or bf16");
  int kind;
  size_t src_size;
  if (s == "F32") { kind = 0; src_size = 4; }
  else if (s == "BF16") { kind = 1; src_size = 2; }
  else if (s == "F16") { kind = 2; src_size = 2; }
  else throw std::invalid_argument("upload_converted: unsupported source dtype " + s + " (F32, BF16, F16)");
  if (n <= 0) return;
  const size_t dst_size = dtype_size(to);
  if ((kind == 0 && to == DType::F32) || (kind == 1 && to == DType::BF16)) {  // same bits: plain copy
    SEALKIT_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, static_cast<size_t>(n) * src_size, cudaMemcpyHostToDevice, ctx.stream));
    SEALKIT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    return;
  }
  // Stage raw bytes in chunks (bounded scratch), convert on the device with dtype.h's rounding.
  const int64_t chunk = std::min<int64_t>(n, int64_t(1) << 24);
  void* stage = ctx.scratch->get(kScratchConvert, static_cast<size_t>(chunk) * src_size, ctx.stream);
  for (int64_t i0 = 0; i0 < n; i0 += chunk) {
    const int64_t m = std::min(chunk, n - i0);
    SEALKIT_CUDA_CHECK(cudaMemcpyAsync(stage, static_cast<const char*>(host_src) + i0 * src_size,
                                       static_cast<size_t>(m) * src_size, cudaMemcpyHostToDevice, ctx.stream));
    convert_kernel<<<blocks_for(m, kThreads), kThreads, 0, ctx.stream>>>(static_cast<char*>(dst) + i0 * dst_size,
                                                                        to == DType::BF16, stage, kind, m);
    SEALKIT_CUDA_LAUNCHED("convert_kernel");
  }
  // The host buffer may be freed once we return (e.g. an unmapped file); the copies above are
  // staged already, but synchronise so the call is complete in every respect.
  SEALKIT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

}  // namespace sealkit::cuda
