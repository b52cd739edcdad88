// The project's random numbers: a counter-based generator, value = f(seed, counter). Being
// stateless it splits across threads without changing the stream (any thread count gives the same
// bits), and the same function is implemented in TypeScript (lib/util/rng.ts) with 32-bit integer
// arithmetic so both sides draw identical streams.
#pragma once
#include <cmath>
#include <cstdint>

namespace sealkit {

// A 32-bit avalanche mix (the "lowbias32" finaliser).
inline uint32_t rng_mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

inline uint32_t rng_u32(uint64_t seed, uint64_t counter) {
  uint32_t s_lo = static_cast<uint32_t>(seed), s_hi = static_cast<uint32_t>(seed >> 32);
  uint32_t c_lo = static_cast<uint32_t>(counter), c_hi = static_cast<uint32_t>(counter >> 32);
  uint32_t h = rng_mix32(c_hi + 0x9e3779b9u);
  h = rng_mix32(c_lo ^ h);
  h = rng_mix32(s_hi ^ h ^ 0x85ebca6bu);
  return rng_mix32(s_lo ^ h);
}

// Uniform in [0, 1) with 24 bits (exactly representable in f32).
inline float rng_uniform(uint64_t seed, uint64_t counter) {
  return static_cast<float>(rng_u32(seed, counter) >> 8) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller from counters 2i and 2i+1 (computed in double for accuracy).
inline float rng_normal(uint64_t seed, uint64_t i) {
  double u1 = (static_cast<double>(rng_u32(seed, 2 * i) >> 8) + 1.0) * (1.0 / 16777217.0);  // (0, 1]
  double u2 = static_cast<double>(rng_u32(seed, 2 * i + 1) >> 8) * (1.0 / 16777216.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

}  // namespace sealkit
