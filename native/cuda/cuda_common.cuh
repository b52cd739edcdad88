// Shared by the CUDA sources: error checking, launch helpers, and device copies of the host-side
// numerics that must agree bit for bit with the CPU backend (the counter RNG of core/rng.h and the
// bf16/f16 conversions of core/dtype.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace sealkit::cuda {

// Every CUDA runtime call goes through this: a failure throws with the call, where it was made and
// the runtime's own words, so an error surfaces as a JS exception naming its origin.
[[noreturn]] inline void throw_cuda(cudaError_t err, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + call + " at " + file + ":" + std::to_string(line) + ": " +
                           cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

#define SEALKIT_CUDA_CHECK(call)                                                           \
  do {                                                                                     \
    cudaError_t sealkit_err_ = (call);                                                     \
    if (sealkit_err_ != cudaSuccess) ::sealkit::cuda::throw_cuda(sealkit_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports a bad launch configuration at once. Asynchronous faults surface at
// the next synchronising call; set SEALKIT_CUDA_SYNC=1 to synchronise after every kernel so they
// are attributed to the kernel that caused them (debugging only: it serialises host and device).
bool sync_every_kernel();
#define SEALKIT_CUDA_LAUNCHED(what)                                                         \
  do {                                                                                      \
    SEALKIT_CUDA_CHECK(cudaGetLastError());                                                 \
    if (::sealkit::cuda::sync_every_kernel()) {                                             \
      cudaError_t sealkit_err_ = cudaDeviceSynchronize();                                   \
      if (sealkit_err_ != cudaSuccess) ::sealkit::cuda::throw_cuda(sealkit_err_, what, __FILE__, __LINE__); \
    }                                                                                       \
  } while (0)

inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;  // kernels use grid-stride loops, so capping only changes the schedule
  return static_cast<unsigned>(b);
}

// ---- device copies of core/rng.h (keep in lockstep; test/backend-parity checks bit equality) ----
__device__ __forceinline__ uint32_t rng_mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
__device__ __forceinline__ uint32_t rng_u32(uint64_t seed, uint64_t counter) {
  uint32_t s_lo = static_cast<uint32_t>(seed), s_hi = static_cast<uint32_t>(seed >> 32);
  uint32_t c_lo = static_cast<uint32_t>(counter), c_hi = static_cast<uint32_t>(counter >> 32);
  uint32_t h = rng_mix32(c_hi + 0x9e3779b9u);
  h = rng_mix32(c_lo ^ h);
  h = rng_mix32(s_hi ^ h ^ 0x85ebca6bu);
  return rng_mix32(s_lo ^ h);
}
__device__ __forceinline__ float rng_uniform(uint64_t seed, uint64_t counter) {
  return static_cast<float>(rng_u32(seed, counter) >> 8) * (1.0f / 16777216.0f);
}
// Box-Muller in double exactly as the host does; CUDA's double log/cos/sqrt are within an ulp or
// two of glibc's, so after rounding to f32 the values agree except in rare last-bit cases.
__device__ __forceinline__ float rng_normal(uint64_t seed, uint64_t i) {
  double u1 = (static_cast<double>(rng_u32(seed, 2 * i) >> 8) + 1.0) * (1.0 / 16777217.0);
  double u2 = static_cast<double>(rng_u32(seed, 2 * i + 1) >> 8) * (1.0 / 16777216.0);
  return static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

// ---- device copies of core/dtype.h's conversions ----
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return __uint_as_float(u);
}

// Reads element i of a weight stored as f32 or bf16 (is_bf16 is uniform across a launch).
__device__ __forceinline__ float load_weight(const void* p, bool is_bf16, int64_t i) {
  return is_bf16 ? bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

// ---- reductions ----
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Block-wide sum with a fixed tree (deterministic). `smem` holds >= 32 T. All threads get the result.
template <typename T>
__device__ T block_sum(T v, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? smem[lane] : T(0);
  r = warp_sum(r);
  return r;
}

}  // namespace sealkit::cuda
