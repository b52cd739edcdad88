// GEMMs with a narrow result (N at most kLowRankMax, or M for A^T B): LoRA side paths where one
// side of the result is the adapter's rank. See gemm_lowrank.cc.
#pragma once

#include "kernels.h"

namespace sealkit::cpu {

constexpr int64_t kLowRankMax = 32;

// Computes g (f32 A, f32 B or bf16 B widened, any orientation) when the active ISA has AVX-512
// (bf16 B: AVX-512 without BF16) and N is at most kLowRankMax, or M is with op(A) = A^T and
// op(B) = B; returns false, touching nothing, for every other call.
bool gemm_lowrank(const GemmArgs<float>& g);

}  // namespace sealkit::cpu
