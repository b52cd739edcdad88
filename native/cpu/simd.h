// Per-function ISA targets for the CPU kernels. The addon is compiled for baseline x86-64; wide
// kernels carry these target attributes and are chosen per call from active_isa().
#pragma once

#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#define SEALKIT_X86 1
#define SEALKIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define SEALKIT_AVX2 __attribute__((target("avx2,fma")))
#define SEALKIT_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define SEALKIT_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#endif
#define SEALKIT_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__)
namespace sealkit::cpu {
// The first n of 16 lanes (none for n <= 0, all for n >= 16).
SEALKIT_AVX512 inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// 16 floats (lanes outside m are zero and never read); bf16 (uint16_t bits) widened exactly.
SEALKIT_AVX512 inline __m512 load16_masked(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
SEALKIT_AVX512 inline __m512 load16_masked(const uint16_t* p, __mmask16 m) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
}  // namespace sealkit::cpu
#endif
